"""Label scoring's CPU speed-ups change no score: bf16 weight copies and grouped-query attention in place."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import torch

from dialoguellm.model import loading
from dialoguellm.prompts import PromptBuilder
from dialoguellm.scoring import engine


def _with_lora(model, seed=0):
    """A LoRA adapter with a non-zero update (a fresh one starts with B = 0 and changes nothing), frozen as
    ``loading.load_adapter`` leaves it for evaluation."""
    peft_model = loading.add_lora(model, 4, 8, 0.0, ["q_proj", "v_proj", "down_proj"])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            p.requires_grad_(False)
    return peft_model.eval()


def _scores(model, tokenizer, corpus, dtype, n=12):
    """Scores in ``eval.precision`` autocast: the path whose bf16 copies these tests check."""
    builder = PromptBuilder(tokenizer, "meld", context_turns=1)
    examples = builder.build_split(corpus["test"])[:n]
    return engine.score_examples(
        model,
        examples,
        builder.answer_ids,
        tokenizer.pad_token_id,
        4,
        dtype=dtype,
        progress=False,
        precision="autocast",
    )


@contextlib.contextmanager
def _no_copies(model, dtype="bf16", **_):
    yield model


def test_bf16_copies_give_bit_identical_scores(tiny_loaded, meld_corpus, monkeypatch):
    model = _with_lora(tiny_loaded.model)
    got = _scores(model, tiny_loaded.tokenizer, meld_corpus, "bf16")
    monkeypatch.setattr(engine, "bf16_weight_copies", _no_copies)
    want = _scores(model, tiny_loaded.tokenizer, meld_corpus, "bf16")  # autocast casts at every call
    np.testing.assert_array_equal(got, want)
    monkeypatch.undo()
    with engine.bf16_weight_copies(model, "bf16"):  # the copies were really in place
        base = model.get_base_model()
        assert base.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
        assert base.model.layers[0].self_attn.q_proj.lora_A["default"].weight.dtype == torch.bfloat16
        assert base.lm_head.weight.dtype == torch.bfloat16
        assert base.model.embed_tokens.weight.dtype == torch.float32  # looked up, not multiplied: untouched


def test_bf16_copies_are_undone_even_after_an_error(tiny_loaded):
    model = tiny_loaded.model
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as in SmolLM2 and LLaMA-style models
    trainable = model.model.layers[0].mlp.up_proj.weight
    model.requires_grad_(False)
    trainable.requires_grad_(True)
    before = dict(model.named_parameters(remove_duplicate=False))
    with pytest.raises(RuntimeError, match="inside"):
        with engine.bf16_weight_copies(model, "bf16"):
            assert model.lm_head.weight.dtype == torch.bfloat16
            assert model.lm_head.weight is not model.model.embed_tokens.weight
            assert model.model.layers[0].mlp.up_proj.weight is trainable  # trainable weights stay as they are
            raise RuntimeError("inside")
    after = dict(model.named_parameters(remove_duplicate=False))
    assert after.keys() == before.keys()
    assert all(after[name] is before[name] for name in before)  # the same Parameter objects, fp32
    assert model.lm_head.weight is model.model.embed_tokens.weight  # the tie is back
    with engine.bf16_weight_copies(model, "fp32"):  # fp32 scoring: nothing to copy
        assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32


def test_grouped_query_attention_gives_bit_identical_scores(tiny_loaded, meld_corpus, monkeypatch):
    model = tiny_loaded.model.eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA, as in SmolLM2
    seen = []
    from transformers.integrations import sdpa_attention

    real = sdpa_attention.use_gqa_in_sdpa
    monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", lambda *a: seen.append(real(*a)) or seen[-1])
    got = _scores(model, tiny_loaded.tokenizer, meld_corpus, "fp32")
    assert seen and all(seen)  # every attention call read the shared heads in place
    monkeypatch.setattr(engine, "grouped_query_attention", _no_copies)
    seen.clear()
    want = _scores(model, tiny_loaded.tokenizer, meld_corpus, "fp32")
    assert seen and not any(seen)  # transformers' default with a mask: repeat_kv
    np.testing.assert_array_equal(got, want)


def test_grouped_query_attention_switch_is_restored(tiny_loaded, monkeypatch):
    monkeypatch.setenv(engine.GQA_SWITCH, "0")
    with pytest.raises(RuntimeError):
        with engine.grouped_query_attention(tiny_loaded.model):
            assert os.environ[engine.GQA_SWITCH] == "1"
            raise RuntimeError("inside")
    assert os.environ[engine.GQA_SWITCH] == "0"
    monkeypatch.delenv(engine.GQA_SWITCH)
    with engine.grouped_query_attention(tiny_loaded.model):
        pass
    assert engine.GQA_SWITCH not in os.environ

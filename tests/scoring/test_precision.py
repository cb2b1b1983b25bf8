"""eval.precision: the default gives the same predictions whatever the batch; autocast does not promise it."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import synthetic_corpus

from dialoguellm.config import DEFAULT_PRECISION, EvalConfig, load_config
from dialoguellm.model import loading
from dialoguellm.prompts import PromptBuilder, select_demonstrations
from dialoguellm.scoring import engine, predictions

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / "benchmarks" / "results" / "precision_cpu.json"


@pytest.fixture(scope="module")
def bf16_lora(tiny_model_dir):
    """The tiny LLaMA with bf16 base weights (as the CPU default loads) and a non-zero fp32 LoRA update."""
    loaded = loading.load_model(tiny_model_dir, dtype="bf16")
    model = loading.add_lora(loaded.model, 4, 8, 0.0, ["q_proj", "v_proj", "down_proj"])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            p.requires_grad_(False)
    return model.eval(), loaded.tokenizer


@pytest.fixture(scope="module")
def examples_and_answers(bf16_lora):
    _, tok = bf16_lora
    corpus = synthetic_corpus("meld", sizes=(2, 2, 12))
    builder = PromptBuilder(
        tok, "meld", context_turns=2, demonstrations=select_demonstrations(corpus["train"], 1, seed=0)
    )
    examples = builder.build_split(corpus["test"])
    assert len({len(e.prompt_ids) for e in examples}) >= 3  # batches differ in padding
    return examples, builder.answer_ids


def _scores(model, tok, examples, answers, precision, batch_size, shuffled=False):
    """Scores in the examples' order, computed in batches of ``batch_size`` (shuffled: in a random order)."""
    order = list(range(len(examples)))
    if shuffled:
        random.Random(1).shuffle(order)
    got = engine.score_examples(
        model, [examples[i] for i in order], answers, tok.pad_token_id, batch_size, "bf16",
        progress=False, precision=precision, group_by_length=not shuffled,
    )  # fmt: skip
    out = np.empty_like(got)
    out[order] = got
    return out


def _ways(model, tok, examples, answers, precision):
    return {
        "batch16": _scores(model, tok, examples, answers, precision, 16),
        "batch1": _scores(model, tok, examples, answers, precision, 1),
        "batch5": _scores(model, tok, examples, answers, precision, 5),
        "batch48": _scores(model, tok, examples, answers, precision, 48),
        "shuffled16": _scores(model, tok, examples, answers, precision, 16, shuffled=True),
    }


def _spread(ways):
    base = ways["batch16"]
    return max(float(np.abs(s - base).max()) for s in ways.values())


def test_default_predictions_do_not_depend_on_batch_size_or_order(bf16_lora, examples_and_answers):
    model, tok = bf16_lora
    examples, answers = examples_and_answers
    ways = _ways(model, tok, examples, answers, DEFAULT_PRECISION)
    reference = _scores(model, tok, examples, answers, "fp32", 16)
    for name, scores in ways.items():
        np.testing.assert_array_equal(scores.argmax(1), ways["batch16"].argmax(1), err_msg=name)
        np.testing.assert_array_equal(scores.argmax(1), reference.argmax(1), err_msg=name)
    assert _spread(ways) < 1e-4  # the scores themselves move no more than fp32 rounding


def test_fp32_scores_move_with_the_batch_only_by_float_rounding_and_autocast_more(
    bf16_lora, examples_and_answers
):
    model, tok = bf16_lora
    examples, answers = examples_and_answers
    fp32 = _spread(_ways(model, tok, examples, answers, "fp32"))
    autocast = _spread(_ways(model, tok, examples, answers, "autocast"))
    assert fp32 < 1e-4
    assert autocast > 100 * fp32  # bf16 rounding: a score depends on its batch


def test_each_precision_computes_what_it_names(bf16_lora):
    model, _ = bf16_lora
    base = model.get_base_model()
    layer = base.model.layers[0]
    seen = {}
    hook = base.lm_head.register_forward_hook(lambda m, a, out: seen.update(head=(a[0].dtype, out.dtype)))
    ids = torch.tensor([[3, 4, 5, 6]])
    try:
        with engine.inference_context(model, "bf16", "fp32"):
            assert all(p.dtype == torch.float32 for p in model.parameters())
            assert base.model(input_ids=ids).last_hidden_state.dtype == torch.float32
            model(input_ids=ids)
            assert seen["head"] == (torch.float32, torch.float32)
        with engine.inference_context(model, "bf16", "autocast"):
            assert base.model(input_ids=ids).last_hidden_state.dtype == torch.bfloat16
            model(input_ids=ids)
            assert seen["head"][1] == torch.bfloat16
    finally:
        hook.remove()
    # Everything is put back: the bf16 base, the fp32 LoRA matrices, the head's own forward.
    assert base.model.embed_tokens.weight.dtype == torch.bfloat16
    assert layer.self_attn.q_proj.lora_A["default"].weight.dtype == torch.float32
    assert "forward" not in base.lm_head.__dict__
    with pytest.raises(ValueError, match="eval.precision"):
        with engine.inference_context(model, "bf16", "half"):
            pass


def test_fp32_parameters_keep_ties_and_restore_after_an_error(tiny_model_dir):
    model = loading.load_model(tiny_model_dir, dtype="bf16").model
    model.lm_head.weight = model.model.embed_tokens.weight  # tied, as in SmolLM2
    before = {n: (p, p.data_ptr()) for n, p in model.named_parameters(remove_duplicate=False)}
    with pytest.raises(RuntimeError, match="inside"):
        with engine.fp32_parameters(model):
            assert model.lm_head.weight is model.model.embed_tokens.weight
            assert model.lm_head.weight.dtype == torch.float32
            raise RuntimeError("inside")
    after = dict(model.named_parameters(remove_duplicate=False))
    assert all(after[n] is p and p.data_ptr() == data for n, (p, data) in before.items())  # the same memory
    assert model.lm_head.weight.dtype == torch.bfloat16


def test_generation_runs_the_head_in_the_precision_asked(bf16_lora, examples_and_answers):
    model, tok = bf16_lora
    examples, _ = examples_and_answers
    base = model.get_base_model()
    builder = PromptBuilder(tok, "meld", context_turns=2)
    for precision, want in (("fp32", torch.float32), ("autocast", torch.bfloat16)):
        seen: list = []
        hook = base.lm_head.register_forward_hook(lambda m, a, out, seen=seen: seen.append(out.dtype))
        try:
            frame = predictions.predict_by_generation(
                model, tok, builder, examples[:3], 3, 2, "bf16", False, precision=precision
            )
        finally:
            hook.remove()
        assert len(frame) == 3 and seen and set(seen) == {want}


def test_autocast_says_what_it_was_measured_to_cost(bf16_lora, caplog, monkeypatch):
    model, _ = bf16_lora
    monkeypatch.setattr(engine, "_AUTOCAST_NOTICE_SHOWN", False)
    with caplog.at_level(logging.WARNING, logger="dialoguellm.scoring.engine"):
        with engine.inference_context(model, "bf16", "autocast"):
            pass
        with engine.inference_context(model, "bf16", "autocast"):
            pass
    notices = [r.getMessage() for r in caplog.records if "eval.precision=autocast" in r.getMessage()]
    assert len(notices) == 1  # once per process
    assert engine.AUTOCAST_MEASURED["source"] in notices[0]


def test_every_profile_defaults_to_the_chosen_precision():
    assert EvalConfig().precision == DEFAULT_PRECISION
    for profile in ("cpu", "paper", "paper_r8"):
        assert load_config(profile).eval.precision == DEFAULT_PRECISION, profile
    with pytest.raises(ValueError, match="eval.precision"):
        load_config("cpu", {"eval.precision": "bf16"})


@pytest.mark.skipif(not RESULT.is_file(), reason="benchmarks/precision.py has not been run")
def test_the_default_and_the_autocast_notice_come_from_the_benchmark():
    result = json.loads(RESULT.read_text())
    assert result["split"] == "dev"
    assert result["chosen"] == DEFAULT_PRECISION
    assert result["meets_targets"][DEFAULT_PRECISION] is True
    autocast = result["pooled"]["autocast"]
    measured = engine.AUTOCAST_MEASURED
    assert measured["agreement_with_fp32"] == autocast["vs_fp32"]["agreement"]
    assert measured["agreement_across_batches"] == autocast["agreement_across_batches"]

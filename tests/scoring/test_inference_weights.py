"""Label scoring's CPU speed-up changes no score: grouped-query attention reads the shared heads in place."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest

from dialoguellm.prompts import PromptBuilder
from dialoguellm.scoring import engine


def _scores(model, tokenizer, corpus, dtype, n=12):
    """Label scores of the first ``n`` test prompts, as evaluation computes them (fp32)."""
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
    )


@contextlib.contextmanager
def _default_attention(model, dtype="bf16", **_):
    yield model


def test_grouped_query_attention_gives_bit_identical_scores(tiny_loaded, meld_corpus, monkeypatch):
    model = tiny_loaded.model.eval()
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA, as in SmolLM2
    seen = []
    from transformers.integrations import sdpa_attention

    real = sdpa_attention.use_gqa_in_sdpa
    monkeypatch.setattr(sdpa_attention, "use_gqa_in_sdpa", lambda *a: seen.append(real(*a)) or seen[-1])
    got = _scores(model, tiny_loaded.tokenizer, meld_corpus, "fp32")
    assert seen and all(seen)  # every attention call read the shared heads in place
    monkeypatch.setattr(engine, "grouped_query_attention", _default_attention)
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

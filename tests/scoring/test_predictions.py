"""Label scoring: batched, shared-prefix scoring equals scoring each label alone; generation never guesses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dialoguellm import calibration, metrics
from dialoguellm.prompts import PromptBuilder, PromptExample, select_demonstrations
from dialoguellm.scoring import engine, predictions


def _reference(model, prompt, answer):
    """Log-likelihood of one answer after one prompt, from one plain forward pass (no cache, no padding)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt) + list(answer)])).logits[0]
    logp = torch.log_softmax(logits.float(), -1)
    n = len(prompt)
    return sum(float(logp[n - 1 + k, answer[k]]) for k in range(len(answer)))


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_scoring_equals_separate_scoring(tiny_loaded, tiny_tokenizer, meld_corpus, batch_size):
    model, tok = tiny_loaded.model.eval(), tiny_loaded.tokenizer
    demos = select_demonstrations(meld_corpus["train"], 1, seed=0)
    builder = PromptBuilder(tok, "meld", context_turns="all", demonstrations=demos)
    examples = builder.build_split(meld_corpus["test"])
    assert len({len(e.prompt_ids) for e in examples}) > 1  # padding is exercised
    eos = tok.eos_token_id
    # Multi-token answers of different lengths, one a prefix of another.
    answers = [a for a in builder.answer_ids] + [[7, 8, 9, eos], [7, eos]]
    got = engine.score_examples(
        model, examples, answers, tok.pad_token_id, batch_size, dtype="fp32", progress=False
    )
    want = np.array([[_reference(model, e.prompt_ids, a) for a in answers] for e in examples])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_scoring_without_shared_prefix(tiny_loaded):
    model = tiny_loaded.model.eval()
    examples = [
        PromptExample(str(i), "meld", "", ids, 0)
        for i, ids in enumerate([[10, 11, 12], [13, 12], [9, 9, 9, 9]])
    ]
    answers = [[20, 5], [21, 22, 5]]
    got = engine.score_examples(model, examples, answers, 1, 2, dtype="fp32", progress=False)
    want = np.array([[_reference(model, e.prompt_ids, a) for a in answers] for e in examples])
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_common_prefix_keeps_one_token():
    assert engine.common_prefix_length([[1, 2, 3, 4], [1, 2, 3, 5]]) == 3
    assert engine.common_prefix_length([[1, 2, 3], [1, 2, 3, 4]]) == 2
    assert engine.common_prefix_length([[1], [2]]) == 0


def test_predictions_carry_probabilities(tiny_loaded, meld_corpus, tmp_path):
    builder = PromptBuilder(tiny_loaded.tokenizer, "meld", context_turns=1)
    examples = builder.build_split(meld_corpus["dev"])
    frame = predictions.predict(
        tiny_loaded.model, tiny_loaded.tokenizer, builder, examples, "score", 4, dtype="fp32", progress=False
    )
    probs = frame[[f"p_{label}" for label in builder.labels]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert (frame["pred_id"].to_numpy() == probs.argmax(axis=1)).all()
    assert frame["parsed"].all() and len(frame) == len(examples)
    metrics = predictions.metrics_of(frame, builder.labels)
    paths = predictions.save_predictions(frame, metrics, tmp_path, "dev_meld")
    assert pd.read_csv(paths["predictions"]).shape[0] == len(examples)
    assert set(pd.read_csv(paths["per_class"])["label"]) == set(builder.labels)


def test_generation_counts_unparsed_as_wrong(tiny_loaded, meld_corpus):
    builder = PromptBuilder(tiny_loaded.tokenizer, "meld", context_turns=1)
    examples = builder.build_split(meld_corpus["dev"])
    frame = predictions.predict(
        tiny_loaded.model,
        tiny_loaded.tokenizer,
        builder,
        examples,
        "generate",
        4,
        max_new_tokens=3,
        dtype="fp32",
        progress=False,
    )
    assert len(frame) == len(examples)
    unparsed = ~frame["parsed"]
    assert (frame.loc[unparsed, "pred_id"] == -1).all()
    metrics = predictions.metrics_of(frame, builder.labels)
    assert metrics["unparsed"] == int(unparsed.sum())
    correct = (frame["pred_id"] == frame["gold_id"]).sum()
    assert metrics["accuracy"] == pytest.approx(correct / len(frame))


def test_unknown_mode(tiny_loaded):
    with pytest.raises(ValueError, match="eval.mode"):
        predictions.predict(tiny_loaded.model, tiny_loaded.tokenizer, None, [], "vote")


def test_probabilities_normalise():
    p = predictions.probabilities(np.array([[-1.0, -2.0], [-1000.0, -1000.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1)
    assert p[1, 0] == pytest.approx(0.5)


def test_label_bias_fitted_on_dev_corrects_a_majority_lean():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 3, 400)
    loglik = rng.normal(0, 1, (400, 3))
    loglik[np.arange(400), gold] += 1.5  # informative scores ...
    loglik[:, 0] += 2.0  # ... pushed towards label 0
    labels = ["a", "b", "c"]
    raw = metrics.classification_metrics(gold, loglik.argmax(1), labels)["weighted_f1"]
    bias = calibration.fit_label_bias(loglik, gold, labels)
    fitted = metrics.classification_metrics(gold, (loglik + bias).argmax(1), labels)["weighted_f1"]
    assert bias[0] == 0 and fitted > raw + 0.1
    frame = pd.DataFrame({f"ll_{x}": loglik[:, j] for j, x in enumerate(labels)})
    frame["pred_id"] = loglik.argmax(1)
    adjusted = calibration.apply_label_bias(frame, labels, bias)
    assert (adjusted["pred_id"] == (loglik + bias).argmax(1)).all()
    assert (adjusted["pred_id_raw"] == frame["pred_id"]).all()


def test_length_normalised_scores_rank_by_mean_token_log_likelihood(tiny_loaded, meld_corpus):
    tok = tiny_loaded.tokenizer
    builder = PromptBuilder(tok, "meld", context_turns=1)
    examples = builder.build_split(meld_corpus["dev"])
    # The tiny tokenizer has one token per word: give the labels 2..8 tokens, as real tokenizers do.
    builder.answer_ids = [list(a[:-1]) + [7] * j + [a[-1]] for j, a in enumerate(builder.answer_ids)]
    lengths = np.array([len(a) for a in builder.answer_ids], dtype=float)
    assert len(set(lengths)) == len(lengths)
    args = (tiny_loaded.model, tok, builder, examples, 4, "fp32", False)
    summed = predictions.predict_by_scoring(*args)
    mean = predictions.predict_by_scoring(*args, length_normalise=True)
    ll_sum, ll_mean = (predictions.label_scores(f, builder.labels) for f in (summed, mean))
    np.testing.assert_allclose(ll_mean, ll_sum / lengths)
    assert (mean["pred_id"].to_numpy() == ll_mean.argmax(axis=1)).all()
    # A label of more tokens is no longer penalised for them: mean and sum differ in a crafted case.
    crafted = np.array([[-2.0, -3.0]])  # 2 tokens at -1 each vs 3 tokens at -1 each
    assert predictions.length_normalised(crafted, [[1, 2], [3, 4, 5]]).tolist() == [[-1.0, -1.0]]
    with pytest.raises(ValueError, match="at least one token"):
        predictions.length_normalised(crafted, [[1], []])


def test_calibration_on_another_score_scale_is_refused(tmp_path, caplog):
    import yaml

    from dialoguellm.config import config_from_dict

    run = tmp_path / "training"
    adapter = run / "adapter"
    adapter.mkdir(parents=True)
    trained = config_from_dict({"eval": {"calibrate": True, "length_normalise": False}}, source="test")
    settings = trained.to_dict()
    settings.pop("source")
    (run / "config.yaml").write_text(yaml.safe_dump(settings))
    # No calibration.json: a warning, and no biases.
    with caplog.at_level("WARNING", logger="dialoguellm.calibration"):
        assert calibration.load_calibration(adapter, trained) == {}
    assert [r.name for r in caplog.records] == ["dialoguellm.calibration"]
    assert "calibration.json" in caplog.text
    (adapter / "calibration.json").write_text('{"meld": [0, 1, 0, 0, 0, 0, 0]}')
    assert calibration.load_calibration(adapter, trained) == {"meld": [0, 1, 0, 0, 0, 0, 0]}
    other = config_from_dict({"eval": {"calibrate": True, "length_normalise": True}}, source="test")
    with pytest.raises(ValueError, match=r"calibration\.json.*summed.*eval\.length_normalise=False"):
        calibration.load_calibration(adapter, other)
    off = config_from_dict({"eval": {"calibrate": False, "length_normalise": True}}, source="test")
    assert calibration.load_calibration(adapter, off) == {}
    (adapter / "calibration.json").write_text('["not", "a", "mapping"]')
    with pytest.raises(ValueError, match="retrain or delete"):
        calibration.load_calibration(adapter, trained)

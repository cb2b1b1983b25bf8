"""Error analysis: confusion rows, failure-mode measures, error breakdown, example browser, prior correction
(fitted on dev only), and the figures drawn from saved tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from dialoguellm import calibration
from dialoguellm.analysis import error_analysis as analysis
from dialoguellm.labels import normalised_label_names
from dialoguellm.model import loading
from dialoguellm.plots import registry
from dialoguellm.scoring import predictions

MELD = list(normalised_label_names("meld"))  # neutral happiness surprise anger sadness disgust fear


def frame_from(
    gold: list[int],
    pred: list[int],
    probs: np.ndarray | None = None,
    dataset: str = "meld",
    ids: list[str] | None = None,
) -> pd.DataFrame:
    """A prediction frame in the layout of evaluate.predict_by_scoring (ids: MELD-like, 4 per dialogue)."""
    words = list(normalised_label_names(dataset))
    n = len(gold)
    if probs is None:
        probs = np.full((n, len(words)), 0.01)
        probs[np.arange(n), np.clip(pred, 0, None)] = 0.9
        probs /= probs.sum(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            "example_id": ids or [f"dia{i // 4}_utt{i % 4}" for i in range(n)],
            "dataset": dataset,
            "gold_id": gold,
            "pred_id": pred,
            "gold": [words[g] for g in gold],
            "pred": [words[p] if p >= 0 else "" for p in pred],
            "parsed": [p >= 0 for p in pred],
        }
    )
    for j, w in enumerate(words):
        frame[f"p_{w}"] = probs[:, j]
    return frame


def test_confusion_rows_sum_to_one_and_empty_rows_stay_zero():
    gold = [0, 0, 0, 1, 1, 3, 3, 3, 3]
    pred = [0, 0, 1, 1, 0, 5, 3, 3, 0]
    matrix = analysis.normalised_confusion(frame_from(gold, pred))
    assert list(matrix.index) == MELD and list(matrix.columns) == MELD
    support = np.bincount(gold, minlength=len(MELD))
    np.testing.assert_allclose(matrix.sum(axis=1).to_numpy()[support > 0], 1.0)
    assert (matrix.loc["fear"] == 0).all()  # no gold fear: nothing to normalise
    assert matrix.loc["neutral", "neutral"] == pytest.approx(2 / 3)
    assert matrix.loc["anger", "disgust"] == pytest.approx(1 / 4)


def test_unparsed_answers_get_their_own_column():
    matrix = analysis.normalised_confusion(frame_from([0, 0, 1, 1], [0, -1, 1, -1]))
    assert matrix.columns[-1] == analysis.UNPARSED
    assert matrix.loc["neutral", analysis.UNPARSED] == pytest.approx(0.5)
    np.testing.assert_allclose(matrix.sum(axis=1).to_numpy()[:2], 1.0)


def test_neutral_share_measures_over_prediction():
    share = analysis.neutral_share(frame_from([0, 1, 2, 3], [0, 0, 0, 3]))
    assert share["true_share"] == 0.25 and share["predicted_share"] == 0.75
    assert share["ratio"] == pytest.approx(3.0)


def test_close_pairs_count_both_directions_in_each_corpus():
    # anger (3) -> disgust (5) twice out of 4; disgust -> anger once out of 2; surprise (2) -> happiness (1).
    gold = [3, 3, 3, 3, 5, 5, 2, 1]
    pred = [5, 5, 3, 0, 3, 5, 1, 1]
    pairs = analysis.close_pair_confusions(frame_from(gold, pred)).set_index(["gold", "predicted"])
    assert pairs.loc[("anger", "disgust"), "count"] == 2
    assert pairs.loc[("anger", "disgust"), "share_of_gold"] == pytest.approx(0.5)
    assert pairs.loc[("disgust", "anger"), "share_of_gold"] == pytest.approx(0.5)
    assert pairs.loc[("surprise", "happiness"), "count"] == 1
    assert pairs["paper_pair"].all()
    # IEMOCAP's own labels: sadness/frustrated and happiness/excited are the paper's pairs there.
    words = list(normalised_label_names("iemocap"))
    iem = analysis.close_pair_confusions(
        frame_from([words.index("sadness")], [words.index("frustrated")], dataset="iemocap")
    ).set_index(["gold", "predicted"])
    assert iem.loc[("sadness", "frustrated"), "count"] == 1
    assert ("happiness", "excited") in iem.index


RECORD_IDS = ["u0", "u1", "u2", "u3"]  # the utterance ids of records()


def records() -> pd.DataFrame:
    """Two dialogues of MELD-like records (turns deliberately out of order in the table)."""
    rows = [
        ("d1", 1, "u1", "B", "two words here now", "dia1_utt1"),
        ("d1", 0, "u0", "A", "hi", "dia1_utt0"),
        ("d1", 2, "u2", "A", " ".join(["w"] * 20), "dia1_utt2"),
        ("d2", 0, "u3", "C", "one two three four five", "dia2_utt0"),
    ]
    return pd.DataFrame(
        [
            {"dataset": "meld", "split": "test", "dialogue_id": d, "turn": t, "utterance_id": u, "speaker": s,
             "text": x, "label": "neutral", "label_id": 0, "clip_id": c}
            for d, t, u, s, x, c in rows
        ]
    )  # fmt: skip


def test_attach_records_and_breakdown():
    frame = frame_from([0, 0, 0, 0], [0, 1, 0, 1], ids=RECORD_IDS)  # u0 right, u1 wrong, u2 right, u3 wrong
    merged = analysis.attach_records(frame, records(), context_turns=1, descriptions={"dia1_utt2": "a room"})
    by_id = merged.set_index("example_id")
    assert by_id.loc["u1", "context_words"] == 1  # "hi"
    assert by_id.loc["u2", "context_words"] == 4  # the previous turn only (z = 1)
    assert by_id.loc["u0", "context_length"] == "0 words"
    assert by_id.loc["u2", "utterance_length"] == "16+"
    assert by_id.loc["u2", "has_description"] and not by_id.loc["u1", "has_description"]
    table = analysis.error_breakdown(merged).set_index(["factor", "bucket"])
    assert table.loc[("turn_position", "0 (first)"), "n"] == 2  # u0 and u3
    assert table.loc[("turn_position", "0 (first)"), "accuracy"] == pytest.approx(0.5)
    assert table.loc[("description", "with description"), "accuracy"] == 1.0
    assert table.loc[("utterance_length", "4-7"), "accuracy"] == pytest.approx(0.0)  # u1, u3 both wrong
    # u0 (dialogue d1) and u3 (d2): two dialogues, so an interval; one dialogue alone has none.
    assert table.loc[("turn_position", "0 (first)"), "accuracy_95ci"].startswith("50.0 [")
    assert table.loc[("description", "with description"), "accuracy_95ci"].startswith("n/a")


def test_accuracy_at_coverage_carries_the_interval_of_the_rows_it_keeps():
    from dialoguellm.analysis import error_analysis_stage as stage

    rng = np.random.default_rng(5)
    gold, probs = biased_scores(400, rng)
    frame = frame_from(gold, probs.argmax(axis=1).tolist(), probs)
    intervals = stage.coverage_intervals(frame, probs, "synthetic")
    curve = calibration.coverage_curve(probs, np.asarray(gold))
    for c in stage.TRUST_COVERAGES:
        point, low, high = map(float, re.findall(r"[\d.]+", intervals[f"accuracy_at_{int(100 * c)}_95ci"]))
        assert point == pytest.approx(100 * calibration.accuracy_at_coverage(curve, c), abs=0.051)
        assert low < point < high


def test_attach_records_refuses_predictions_without_a_record():
    frame = frame_from([0], [0])
    frame["example_id"] = ["not_there"]
    with pytest.raises(ValueError, match="not_there"):
        analysis.attach_records(frame, records())


def test_confident_errors_lists_the_surest_wrong_predictions_first():
    probs = np.array(
        [
            [0.95, 0.05, 0, 0, 0, 0, 0],  # right, very sure: not an error
            [0.60, 0.40, 0, 0, 0, 0, 0],  # wrong (gold happiness), 0.60
            [0.10, 0.85, 0.05, 0, 0, 0, 0],  # wrong (gold neutral), 0.85
            [0.20, 0.10, 0.70, 0, 0, 0, 0],  # wrong (gold happiness), 0.70
        ]
    )
    frame = frame_from([0, 1, 0, 1], [0, 0, 1, 2], probs, ids=RECORD_IDS)
    merged = analysis.attach_records(frame, records())
    browser = analysis.confident_errors(merged, k=2, prompts={"u2": "PROMPT"})
    assert list(browser["example_id"]) == ["u2", "u3"]
    assert browser.iloc[0]["p_pred"] == pytest.approx(0.85) and browser.iloc[0]["p_gold"] == pytest.approx(
        0.10
    )
    assert browser.iloc[0]["prompt"] == "PROMPT" and browser.iloc[0]["top_labels"].startswith(
        "happiness 0.85"
    )


def biased_scores(n: int, rng: np.random.Generator) -> tuple[list[int], np.ndarray]:
    """A scorer that knows the label but adds a large bonus to neutral: it over-predicts neutral."""
    gold = rng.choice(len(MELD), size=n, p=[0.45, 0.2, 0.1, 0.1, 0.08, 0.04, 0.03])
    logits = rng.normal(0, 1.0, size=(n, len(MELD)))
    logits[np.arange(n), gold] += 2.0
    logits[:, 0] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return gold.tolist(), probs


def test_prior_correction_fitted_on_dev_reduces_neutral_over_prediction():
    rng = np.random.default_rng(0)
    dev = frame_from(*_with_pred(*biased_scores(2000, rng)))
    test = frame_from(*_with_pred(*biased_scores(2000, rng)))
    table, correction, corrected = analysis.prior_correction_report(dev, test)
    before, after = table.iloc[0], table.iloc[1]
    assert before["neutral_predicted_share"] > 0.7  # the scorer's bias
    gap_before = before["neutral_predicted_share"] - before["neutral_true_share"]
    gap_after = after["neutral_predicted_share"] - after["neutral_true_share"]
    assert abs(gap_after) < gap_before / 2
    assert after["weighted_f1"] > before["weighted_f1"] + 0.1
    # Every test number carries its 95% dialogue-bootstrap interval, around the point estimate.
    for row in (before, after):
        for metric in ("accuracy", "weighted_f1", "macro_f1"):
            point, low, high = map(float, re.findall(r"[\d.]+", row[f"{metric}_95ci"]))
            assert point == pytest.approx(100 * row[metric], abs=0.051) and low < point < high
    assert correction.offsets[0] == max(correction.offsets)  # neutral pushed down most
    # At the optimum, the mean corrected dev probability of every label is its dev frequency.
    fitted = correction.apply(dev)
    np.testing.assert_allclose(
        fitted[[f"p_{w}" for w in MELD]].mean().to_numpy(),
        np.bincount(dev["gold_id"], minlength=7) / 2000,
        atol=5e-3,
    )
    np.testing.assert_allclose(corrected[[f"p_{w}" for w in MELD]].sum(axis=1), 1.0)


def test_prior_correction_fits_the_scale_of_length_normalised_scores():
    """Scores divided by a token count (eval.length_normalise) are far flatter than log-probabilities; the
    correction fits that scale back instead of pushing the flat rows onto the majority label."""
    rng = np.random.default_rng(3)
    frames = []
    for _ in range(2):
        gold, probs = biased_scores(3000, rng)
        flat = np.log(probs) / 3.0  # a mean over three tokens
        soft = np.exp(flat) / np.exp(flat).sum(axis=1, keepdims=True)  # p_ columns: softmax of the ll_ ones
        frame = frame_from(gold, flat.argmax(axis=1).tolist(), soft)
        for j, w in enumerate(MELD):
            frame[f"ll_{w}"] = flat[:, j]
        frames.append(frame)
    dev, test = frames
    correction = calibration.PriorCorrection.fit(dev, MELD)
    assert correction.scale > 3  # the flat rows are sharpened, not left as they are
    # The same scores as log-probabilities (three times larger) get about a third of the scale (the L2 pull
    # towards 1, weight 1/3000, keeps it from being exact).
    exact = calibration.PriorCorrection.fit(dev.assign(**{f"ll_{w}": 3 * dev[f"ll_{w}"] for w in MELD}), MELD)
    assert correction.scale == pytest.approx(3 * exact.scale, rel=0.05)
    table, _, _ = analysis.prior_correction_report(dev, test)
    before, after = table.iloc[0], table.iloc[1]
    assert after["weighted_f1"] > before["weighted_f1"] + 0.1
    assert after["neutral_predicted_share"] < before["neutral_predicted_share"]
    assert correction.to_dict()["scale"] == correction.scale


def test_prior_correction_with_a_fixed_scale_fits_the_offsets_only():
    rng = np.random.default_rng(4)
    dev = frame_from(*_with_pred(*biased_scores(2000, rng)))
    free = calibration.PriorCorrection.fit(dev, MELD)
    for scale in (1.0, 2.5, 12.0):  # 12: sharp rows, where a full Newton step overshoots
        fixed = calibration.PriorCorrection.fit(dev, MELD, scale=scale)
        assert fixed.scale == scale
        # At the offsets' optimum for any fixed scale, each label's dev frequency minus its mean corrected
        # probability is balanced by the L2 term (weight 1/2000): the loss's gradient in the offsets is 0.
        gap = (
            np.bincount(dev["gold_id"], minlength=7) / 2000
            - fixed.apply(dev)[[f"p_{w}" for w in MELD]].mean()
        )
        np.testing.assert_allclose(gap.to_numpy() + 2 / 2000 * np.asarray(fixed.offsets), 0, atol=1e-6)
    assert calibration.PriorCorrection.fit(dev, MELD, scale=2.5).offsets != free.offsets
    at_free = calibration.PriorCorrection.fit(dev, MELD, scale=free.scale)
    np.testing.assert_allclose(at_free.offsets, free.offsets, atol=1e-6)  # fixing the optimum changes nothing


def _with_pred(gold: list[int], probs: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
    return gold, probs.argmax(axis=1).tolist(), probs


def test_prior_correction_never_reads_test():
    rng = np.random.default_rng(1)
    dev = frame_from(*_with_pred(*biased_scores(500, rng)))
    test = frame_from(*_with_pred(*biased_scores(500, rng)))
    _, correction, corrected = analysis.prior_correction_report(dev, test)
    # Scrambling the test gold labels changes neither the offsets nor a single corrected prediction.
    scrambled = test.assign(gold_id=np.random.default_rng(2).permutation(test["gold_id"].to_numpy()))
    _, correction2, corrected2 = analysis.prior_correction_report(dev, scrambled)
    assert correction2.offsets == correction.offsets
    assert (corrected2["pred_id"] == corrected["pred_id"]).all()
    # ...while different dev labels do change the offsets.
    other_dev = dev.assign(gold_id=np.zeros(len(dev), dtype=int))
    assert calibration.PriorCorrection.fit(other_dev).offsets != correction.offsets
    assert correction.to_dict()["fitted_on"] == "dev" and correction.n_fit == 500


def test_prior_correction_needs_label_probabilities():
    frame = frame_from([0, 1], [0, 1]).drop(columns=["p_fear"])
    with pytest.raises(ValueError, match="p_fear"):
        calibration.PriorCorrection.fit(frame, MELD)


@pytest.mark.slow
def test_figures_redraw_from_saved_tables(tmp_path):
    run = tmp_path / "run"
    rng = np.random.default_rng(3)
    test = frame_from(*_with_pred(*biased_scores(200, rng)))
    dev = frame_from(*_with_pred(*biased_scores(200, rng)))
    report, _, corrected = analysis.prior_correction_report(dev, test)
    analysis.save_table(analysis.normalised_confusion(test), run, "confusion_meld")
    analysis.save_table(analysis.normalised_confusion(corrected), run, "confusion_meld_corrected")
    analysis.save_table(report, run, "prior_correction")
    share = analysis.neutral_share(test)
    neutral = pd.DataFrame(
        [{"dataset": "meld", "true_share": share["true_share"], "predicted_share": share["predicted_share"],
          "corrected_share": analysis.neutral_share(corrected)["predicted_share"]}]
    )  # fmt: skip
    analysis.save_table(neutral, run, "neutral_share")
    analysis.save_table(analysis.close_pair_confusions(test), run, "close_pairs")
    merged = analysis.attach_records(
        test,
        pd.DataFrame(
            {"dataset": "meld", "dialogue_id": "d", "turn": range(200), "utterance_id": test["example_id"],
             "speaker": "A", "text": "a b c", "label": "neutral", "label_id": 0, "clip_id": None}
        ),
    )  # fmt: skip
    analysis.save_table(analysis.error_breakdown(merged), run, "error_breakdown")
    out = tmp_path / "figures"
    out.mkdir()
    written = {name: make(run, out) for name, make in registry.FIGURES.items()}
    assert written["prompt_probes"] is None  # no probe results in this run: nothing drawn, no error
    for name in ("confusion_prior_correction", "failure_modes", "error_breakdown", "prior_correction"):
        assert written[name] is not None and written[name].stat().st_size > 10_000, name


def test_find_predictions_reads_the_evaluation_stage_only(tmp_path):
    from dialoguellm.scoring.predictions import save_predictions

    test = frame_from([0, 1], [0, 0])
    dev = frame_from([1, 1], [1, 0])
    save_predictions(test, analysis.metrics_of(test), tmp_path / "evaluation", "meld_test")
    save_predictions(dev, analysis.metrics_of(dev), tmp_path / "evaluation", "meld_dev")
    # Another stage's predictions (the baselines) are not the evaluation's.
    save_predictions(test, analysis.metrics_of(test), tmp_path / "baselines", "meld_tfidf_lr_test")
    found = predictions.find_predictions(tmp_path)
    assert set(found) == {("meld", "test"), ("meld", "dev")}
    assert found[("meld", "test")].parent.name == "evaluation"
    back = predictions.read_predictions(found[("meld", "dev")])
    assert back["example_id"].tolist() == ["dia0_utt0", "dia0_utt1"] and back["pred_id"].tolist() == [1, 0]


def test_find_predictions_prefers_scored_predictions(tmp_path):
    from dialoguellm.scoring.predictions import save_predictions

    scored = frame_from([0, 1], [0, 0])
    generated = scored.drop(columns=[c for c in scored if c.startswith("p_")]).assign(
        output=["neutral", "joy"]
    )
    save_predictions(scored, analysis.metrics_of(scored), tmp_path / "evaluation", "meld_test")
    save_predictions(generated, analysis.metrics_of(generated), tmp_path / "evaluation", "meld_test_generate")
    assert predictions.find_predictions(tmp_path)[("meld", "test")].name == "meld_test_predictions.csv"


def test_calibrated_predictions_are_analysed_raw_and_corrected_from_raw_scores():
    from dialoguellm.calibration import apply_label_bias

    rng = np.random.default_rng(4)
    gold, probs = biased_scores(300, rng)
    frame = frame_from(gold, probs.argmax(axis=1).tolist(), probs)
    for j, w in enumerate(MELD):
        frame[f"ll_{w}"] = np.log(probs[:, j]) - 3.0  # log-likelihoods: the probabilities up to a constant
    calibrated = apply_label_bias(frame, MELD, [0, 2, 2, 2, 2, 2, 2])  # evaluation's eval.calibrate output
    assert (calibrated["pred_id"] != frame["pred_id"]).any()
    raw = predictions.uncalibrated(calibrated)
    assert (raw["pred_id"] == frame["pred_id"]).all() and "pred_id_raw" not in raw
    np.testing.assert_allclose(raw[[f"p_{w}" for w in MELD]], probs, atol=1e-9)
    # The prior correction reads the raw scores (ll_), so it is the same from either frame.
    correction = calibration.PriorCorrection.fit(frame)
    assert (correction.apply(calibrated)["pred_id"] == correction.apply(frame)["pred_id"]).all()
    table, _, _ = analysis.prior_correction_report(frame, raw, others={"calibrated": calibrated})
    assert list(table["variant"])[-1] == "calibrated" and len(table) == 3


@pytest.mark.slow
def test_dev_scoring_and_rebuilt_prompts_match_training_and_evaluation(tiny_model_dir):
    from tiny import synthetic_corpus

    from dialoguellm.config import load_config
    from dialoguellm.prompts import prepare_examples, prepare_split

    config = load_config(
        "cpu",
        {
            "model.name": tiny_model_dir,
            "model.dtype": "fp32",
            "data.datasets": ["meld"],
            "prompt.cutoff_len": 1024,
        },
    )
    corpora = {"meld": synthetic_corpus("meld")}
    loaded = loading.load_model(tiny_model_dir, "fp32")
    dev = prepare_split(config, loaded.tokenizer, corpora, "dev", 5)
    scored = predictions.score_prepared(loaded.model, loaded.tokenizer, dev, config, "dev", progress=False)
    assert len(scored["meld"]) == 5 and np.allclose(scored["meld"][[f"p_{w}" for w in MELD]].sum(axis=1), 1)
    # The browser's prompts are those evaluation built (same settings, same demonstration).
    reference = prepare_examples(config, loaded.tokenizer, corpora, ("test",)).examples["test"]["meld"]
    wanted = [e.example_id for e in reference[:3]]
    tokenizer = loading.load_tokenizer(config)
    prompts = analysis.rebuild_prompts(config, tokenizer, corpora, "meld", "test", wanted)
    assert prompts == {e.example_id: e.prompt for e in reference[:3]}


def test_baseline_prior_correction_reads_notebook_05s_saved_baselines(tmp_path):
    rng = np.random.default_rng(5)
    folder = tmp_path / "baselines"
    folder.mkdir()
    for split in ("dev", "test"):
        frame_from(*_with_pred(*biased_scores(300, rng))).to_csv(
            folder / f"meld_tfidf_lr_{split}_predictions.csv"
        )
    table = analysis.baseline_prior_correction(tmp_path, ["meld", "emorynlp"])  # no EmoryNLP files: skipped
    assert list(table["dataset"]) == ["meld", "meld"] and (table["model"] == "tfidf_lr").all()
    assert table.iloc[1]["neutral_predicted_share"] < table.iloc[0]["neutral_predicted_share"]
    assert analysis.baseline_prior_correction(tmp_path / "nothing", ["meld"]).empty

"""dialoguellm.stats: cluster-bootstrap intervals, paired differences, id -> dialogue rules, the CLI."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from dialoguellm import stats
from dialoguellm.labels import LABELS
from dialoguellm.metrics import classification_metrics
from dialoguellm.runs import REPO_DIR

MELD = list(LABELS["meld"])
INTERVAL_TEXT = re.compile(r"^-?\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]$")


def synthetic(
    n_dialogues: int, turns: int, p_correct: float, seed: int, correlated: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """gold, pred, dialogue of each row: ``turns`` turns per dialogue, 7 labels, each turn right with
    probability ``p_correct`` (``correlated``: the whole dialogue is right or wrong together)."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_dialogues), turns)
    gold = rng.choice(7, len(groups), p=[0.4, 0.2, 0.1, 0.1, 0.1, 0.05, 0.05])
    return gold, predict(gold, groups, p_correct, seed + 1000, correlated), groups


def predict(
    gold: np.ndarray, groups: np.ndarray, p_correct: float, seed: int, correlated: bool = False
) -> np.ndarray:
    """A system right on each turn with probability ``p_correct``, else a different label."""
    rng = np.random.default_rng(seed)
    right = rng.random(groups.max() + 1)[groups] if correlated else rng.random(len(gold))
    wrong = (gold + rng.integers(1, 7, len(gold))) % 7
    return np.where(right < p_correct, gold, wrong)


def width(result: stats.Interval | stats.PairedDifference) -> float:
    return result.high - result.low


# ------------------------------------------------------------------------------- point estimates


@pytest.mark.parametrize("seed", range(3))
def test_point_estimates_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 7, 400)
    pred = np.where(rng.random(400) < 0.5, gold, rng.integers(-1, 7, 400))  # -1: unparsed, always wrong
    pred[:4] = -1
    groups = rng.integers(0, 40, 400)
    ids = list(range(7))
    expected = {
        "accuracy": accuracy_score(gold, pred),
        "weighted_f1": f1_score(gold, pred, labels=ids, average="weighted", zero_division=0),
        "macro_f1": f1_score(gold, pred, labels=ids, average="macro", zero_division=0),
    }
    for metric, value in expected.items():
        got = stats.metric_interval(gold, pred, MELD, groups, metric=metric, n_resamples=200)
        assert got.estimate == pytest.approx(value, abs=1e-12)
        assert got.estimate == pytest.approx(classification_metrics(gold, pred, MELD)[metric], abs=1e-12)
        assert (got.n, got.n_groups) == (400, len(np.unique(groups)))


def test_resampled_confusion_equals_scoring_the_drawn_dialogues():
    """The shortcut (dialogue counts @ per-dialogue confusions) equals scoring the rows of the drawn dialogues."""
    gold, pred, groups = synthetic(30, 6, 0.5, seed=3)
    pred[::7] = -1
    per_dialogue = stats.dialogue_confusions(gold, pred, 7, groups)
    rng = np.random.default_rng(0)
    for _ in range(5):
        drawn = rng.integers(0, 30, 30)
        rows = np.concatenate([np.flatnonzero(groups == g) for g in drawn])
        counts = np.bincount(drawn, minlength=30).astype(float)
        summed = np.tensordot(counts, per_dialogue, axes=1)
        direct = classification_metrics(gold[rows], pred[rows], MELD)
        for metric in stats.METRICS:
            assert stats.metric_from_confusion(summed, metric) == pytest.approx(direct[metric], abs=1e-12)


# ---------------------------------------------------------------------------------------- intervals


@pytest.mark.parametrize("metric", stats.METRICS)
def test_interval_covers_point_estimate(metric):
    gold, pred, groups = synthetic(80, 8, 0.6, seed=1)
    result = stats.metric_interval(gold, pred, MELD, groups, metric=metric, n_resamples=2000)
    assert result.low < result.estimate < result.high
    assert 0 < width(result) < 0.2
    assert result.method == "BCa" and result.confidence == 0.95


def test_interval_shrinks_with_more_dialogues():
    gold, pred, groups = synthetic(50, 8, 0.6, seed=2)
    small = stats.metric_interval(gold, pred, MELD, groups)
    gold, pred, groups = synthetic(200, 8, 0.6, seed=2)
    large = stats.metric_interval(gold, pred, MELD, groups)
    # 4x the dialogues: about half the width (1/sqrt(4)).
    assert width(large) < 0.7 * width(small)
    assert width(large) > 0.3 * width(small)


def test_cluster_bootstrap_resamples_dialogues_not_turns():
    """Turns of a dialogue all right or all wrong: 10 turns carry the information of one, so the dialogue
    bootstrap is about sqrt(10) times wider than a bootstrap that treats the turns as independent."""
    gold, pred, groups = synthetic(60, 10, 0.6, seed=4, correlated=True)
    cluster = stats.metric_interval(gold, pred, MELD, groups, metric="accuracy")
    rows = stats.metric_interval(gold, pred, MELD, np.arange(len(gold)), metric="accuracy")
    assert cluster.estimate == rows.estimate
    assert (cluster.n_groups, rows.n_groups) == (60, 600)
    assert width(cluster) > 2 * width(rows)


def test_interval_is_deterministic_for_a_seed():
    gold, pred, groups = synthetic(40, 5, 0.6, seed=5)
    first = stats.metric_interval(gold, pred, MELD, groups, n_resamples=1000, seed=7)
    assert stats.metric_interval(gold, pred, MELD, groups, n_resamples=1000, seed=7) == first
    other = stats.metric_interval(gold, pred, MELD, groups, n_resamples=1000, seed=8)
    assert (other.low, other.high) != (first.low, first.high)
    assert (first.n_resamples, first.seed) == (1000, 7)


def test_meld_test_size_interval_is_fast():
    # The MELD test set's shape: 2,610 turns in 280 dialogues, 7 labels; the issue asks for ~10 s on one core.
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(280), rng.multinomial(2610 - 280, np.ones(280) / 280) + 1)
    gold = rng.integers(0, 7, 2610)
    pred = np.where(rng.random(2610) < 0.55, gold, rng.integers(-1, 7, 2610))
    start = time.perf_counter()
    result = stats.metric_interval(gold, pred, MELD, groups)
    assert time.perf_counter() - start < 10
    assert result.n_resamples == stats.DEFAULT_RESAMPLES >= 2000


def test_unknown_metric_and_bad_gold_are_refused():
    gold, pred, groups = synthetic(5, 3, 0.5, seed=0)
    with pytest.raises(ValueError, match="Unknown metric 'f1'"):
        stats.metric_interval(gold, pred, MELD, groups, metric="f1")
    with pytest.raises(ValueError, match="gold labels must be in 0..6"):
        stats.metric_interval(gold + 7, pred, MELD, groups)
    with pytest.raises(ValueError, match="one length"):
        stats.metric_interval(gold, pred[:-1], MELD, groups)
    with pytest.raises(ValueError, match="at least 2 dialogues"):
        stats.metric_interval(gold, pred, MELD, np.zeros_like(groups))


# ------------------------------------------------------------------------------ paired differences


def test_system_against_itself_differs_by_exactly_zero():
    gold, pred, groups = synthetic(50, 6, 0.6, seed=8)
    for metric in stats.METRICS:
        result = stats.paired_difference(gold, pred, pred, MELD, groups, metric=metric, n_resamples=2000)
        assert result.difference == 0.0 and result.low == 0.0 and result.high == 0.0
        assert result.p_value == 1.0
        assert result.verdict == stats.NO_DIFFERENCE


def test_known_difference_is_found():
    """A right on 80% of the turns, B on 60% (independently): true accuracy difference 0.2."""
    gold, pred_a, groups = synthetic(150, 8, 0.8, seed=9)
    pred_b = predict(gold, groups, 0.6, seed=10)
    result = stats.paired_difference(gold, pred_a, pred_b, MELD, groups, metric="accuracy")
    assert result.low > 0 and result.low < 0.2 < result.high
    assert result.difference == pytest.approx(result.a - result.b)
    assert result.p_value < 0.05
    assert result.verdict == "A higher"
    for metric in ("weighted_f1", "macro_f1"):
        assert stats.paired_difference(gold, pred_a, pred_b, MELD, groups, metric=metric).low > 0
    reverse = stats.paired_difference(gold, pred_b, pred_a, MELD, groups, metric="accuracy")
    assert reverse.high < 0 and reverse.verdict == "B higher"


def test_small_difference_is_no_measurable_difference():
    gold, pred_a, groups = synthetic(30, 5, 0.6, seed=11)
    fixed, broken = np.flatnonzero(pred_a != gold)[::10][:3], np.flatnonzero(pred_a == gold)[::10][:2]
    pred_b = pred_a.copy()
    pred_b[fixed] = gold[fixed]  # B is right on 3 more turns of 150 and wrong on 2 more: 1 turn ahead
    pred_b[broken] = (gold[broken] + 1) % 7
    result = stats.paired_difference(gold, pred_a, pred_b, MELD, groups, metric="accuracy")
    assert result.difference == pytest.approx(-1 / 150)
    assert result.low < 0 < result.high
    assert result.verdict == stats.NO_DIFFERENCE
    assert result.p_value > 0.05


def test_p_value_is_the_within_dialogue_swap_test():
    """With 4 dialogues scipy enumerates all 2**4 swaps; the p-value equals the brute-force one."""
    gold, pred_a, groups = synthetic(4, 5, 0.8, seed=12)
    pred_b = predict(gold, groups, 0.4, seed=13)
    result = stats.paired_difference(gold, pred_a, pred_b, MELD, groups, metric="macro_f1", n_resamples=100)
    null = []
    for swap in itertools.product([False, True], repeat=4):
        swapped = np.isin(groups, np.flatnonzero(swap))
        a, b = np.where(swapped, pred_b, pred_a), np.where(swapped, pred_a, pred_b)
        null.append(
            classification_metrics(gold, a, MELD)["macro_f1"]
            - classification_metrics(gold, b, MELD)["macro_f1"]
        )
    null = np.array(null)
    observed = result.difference
    tol = 1e-12
    expected = min(1.0, 2 * min((null <= observed + tol).mean(), (null >= observed - tol).mean()))
    assert result.p_value == pytest.approx(expected)


# --------------------------------------------------------------------------- ids, frames and files


@pytest.mark.parametrize(
    "example_id, dialogue",
    [
        ("dia12_utt3", "dia12"),
        ("dia0_utt0", "dia0"),
        ("s01_e02_c03_u004", "s01_e02_c03"),
        ("train_scene0003_u005", "train_scene0003"),
        ("Ses01F_impro01_F000", "Ses01F_impro01"),
        ("Ses01F_script01_1_M012", "Ses01F_script01_1"),
        ("Ses03M_impro05a_F003", "Ses03M_impro05a"),
        ("utt17", None),
        ("dia12", None),
        ("", None),
    ],
)
def test_dialogue_of(example_id, dialogue):
    assert stats.dialogue_of(example_id) == dialogue


def prediction_frame(gold, pred, groups, dataset="meld") -> pd.DataFrame:
    """A frame shaped like scoring.predictions.save_predictions writes (MELD ids dia<D>_utt<U>)."""
    labels = LABELS[dataset]
    turn = pd.Series(groups).groupby(groups).cumcount().to_numpy()
    return pd.DataFrame(
        {
            "example_id": [f"dia{g}_utt{t}" for g, t in zip(groups, turn, strict=True)],
            "dataset": dataset,
            "gold_id": gold,
            "pred_id": pred,
            "gold": [labels[i] for i in gold],
            "pred": [labels[i] if i >= 0 else "" for i in pred],
            "parsed": pred >= 0,
        }
    )


def test_frame_dialogues_prefers_a_dialogue_id_column():
    frame = prediction_frame(*synthetic(3, 2, 0.5, seed=0))
    assert list(stats.frame_dialogues(frame)) == ["dia0", "dia0", "dia1", "dia1", "dia2", "dia2"]
    frame["dialogue_id"] = ["x", "x", "x", "y", "y", "y"]
    assert list(stats.frame_dialogues(frame)) == ["x", "x", "x", "y", "y", "y"]


def test_unmappable_id_names_file_row_and_fix():
    frame = prediction_frame(*synthetic(3, 2, 0.5, seed=0))
    frame.loc[3, "example_id"] = "utterance-9"
    with pytest.raises(
        ValueError, match=r"runs/x\.csv, data row 4: example_id 'utterance-9'.*dialogue_id column"
    ):
        stats.frame_dialogues(frame, "runs/x.csv")


def test_frame_labels_from_dataset_or_score_columns():
    frame = prediction_frame(*synthetic(3, 2, 0.5, seed=0))
    assert stats.frame_labels(frame) == LABELS["meld"]
    scored = frame.drop(columns="dataset").assign(p_a=0.5, p_b=0.5)
    assert stats.frame_labels(scored) == ("a", "b")
    with pytest.raises(ValueError, match="several corpora"):
        stats.frame_labels(frame.assign(dataset=["meld"] * 3 + ["emorynlp"] * 3), "f.csv")
    with pytest.raises(ValueError, match="cannot tell the labels"):
        stats.frame_labels(frame.drop(columns="dataset"), "f.csv")


def test_frame_functions_agree_with_array_functions_and_ignore_row_order():
    gold, pred_a, groups = synthetic(40, 5, 0.7, seed=14)
    pred_b = predict(gold, groups, 0.5, seed=15)
    frame_a, frame_b = prediction_frame(gold, pred_a, groups), prediction_frame(gold, pred_b, groups)
    dialogues = np.array([f"dia{g}" for g in groups])
    assert stats.frame_interval(frame_a, "macro_f1", n_resamples=500) == stats.metric_interval(
        gold, pred_a, MELD, dialogues, "macro_f1", n_resamples=500
    )
    expected = stats.paired_difference(gold, pred_a, pred_b, MELD, dialogues, n_resamples=500)
    shuffled = frame_b.sample(frac=1, random_state=0)
    assert stats.frame_paired_difference(frame_a, shuffled, n_resamples=500) == expected


def test_mismatched_frames_are_refused():
    frame = prediction_frame(*synthetic(4, 3, 0.5, seed=16))
    with pytest.raises(ValueError, match=r"1 example_id\(s\) only in a\.csv .*dia3_utt2.*0 only in b\.csv"):
        stats.align_frames(frame, frame.iloc[:-1], ("a.csv", "b.csv"))
    with pytest.raises(ValueError, match="b.csv: example_id 'dia0_utt0' occurs more than once"):
        stats.align_frames(frame, pd.concat([frame, frame.iloc[:1]]), ("a.csv", "b.csv"))
    relabelled = frame.assign(gold_id=(frame["gold_id"] + 1) % 7)
    with pytest.raises(ValueError, match="disagree on the gold label of example_id 'dia0_utt0'"):
        stats.align_frames(frame, relabelled, ("a.csv", "b.csv"))
    with pytest.raises(ValueError, match="different label vocabularies"):
        stats.align_frames(frame, frame.assign(dataset="emorynlp"), ("a.csv", "b.csv"))


# ------------------------------------------------------------------------------------ command line


@pytest.fixture
def two_files(tmp_path):
    gold, pred_a, groups = synthetic(40, 5, 0.8, seed=17)
    pred_b = predict(gold, groups, 0.5, seed=18)
    path_a, path_b = tmp_path / "test_meld_predictions.csv", tmp_path / "other_predictions.csv"
    prediction_frame(gold, pred_a, groups).to_csv(path_a, index=False)
    prediction_frame(gold, pred_b, groups).sample(frac=1, random_state=1).to_csv(path_b, index=False)
    return path_a, path_b


def test_cli_interval_prints_percent_table_and_writes_json(two_files, tmp_path, capsys):
    out = tmp_path / "out" / "interval.json"
    assert (
        stats.main(
            [
                "interval",
                str(two_files[0]),
                "--metric",
                "weighted_f1",
                "--resamples",
                "500",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:5] == ["file", "metric", "n", "dialogues", "estimate"]
    assert len(lines) == 2 and "test_meld_predictions.csv weighted_f1 200 40" in " ".join(lines[1].split())
    record = json.loads(out.read_text())
    (result,) = record["results"]
    expected = stats.frame_interval(stats.read_predictions(two_files[0]), "weighted_f1", n_resamples=500)
    assert {k: result[k] for k in ("estimate", "low", "high", "n_groups")} == {
        "estimate": expected.estimate,
        "low": expected.low,
        "high": expected.high,
        "n_groups": 40,
    }
    assert INTERVAL_TEXT.match(result["interval"]) and str(expected) in lines[1]


def test_cli_paired_all_metrics(two_files, capsys):
    assert stats.main(["paired", *map(str, two_files), "--resamples", "500"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.split()[:1] and line.split()[0] in stats.METRICS]
    assert [r.split()[0] for r in rows] == list(stats.METRICS)
    assert all("A higher" in r for r in rows)


def test_cli_reports_mismatched_files(two_files, tmp_path, capsys):
    short = tmp_path / "short_predictions.csv"
    stats.read_predictions(two_files[1]).iloc[:-2].to_csv(short, index=False)
    assert stats.main(["paired", str(two_files[0]), str(short)]) == 2
    assert "not scored on the same utterances: 2 example_id(s) only in" in capsys.readouterr().err
    assert stats.main(["interval", str(tmp_path / "missing.csv")]) == 2
    assert "Prediction file not found" in capsys.readouterr().err


@pytest.mark.slow
def test_module_runs_as_a_script_without_heavy_imports(two_files):
    code = (
        "import sys; sys.argv = ['stats', 'interval', sys.argv[1], '--metric', 'accuracy', "
        "'--resamples', '200']; import dialoguellm.stats as s; heavy = {'torch', 'transformers'} & set(sys.modules); "
        "print('heavy:', sorted(heavy)); sys.exit(s.main())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(two_files[0])],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "heavy: []" in done.stdout
    assert "accuracy" in done.stdout
    done = subprocess.run(
        [sys.executable, "-m", "dialoguellm.stats", "interval", str(two_files[0]), "--resamples", "200"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    assert [line.split()[1] for line in done.stdout.strip().splitlines()[1:]] == list(stats.METRICS)

"""Metrics agree with scikit-learn, including unparsed predictions (-1) and absent classes."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from dialoguellm.metrics import classification_metrics, confusion, mean_sd

LABELS = ["neutral", "happiness", "surprise", "anger", "sadness", "disgust", "fear"]


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 7, 300)
    pred = np.where(rng.random(300) < 0.5, gold, rng.integers(-1, 7, 300))  # -1: unparsed, always wrong
    pred[:5] = -1
    got = classification_metrics(gold, pred, LABELS)
    ids = list(range(7))
    assert got["accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert got["weighted_f1"] == pytest.approx(
        f1_score(gold, pred, labels=ids, average="weighted", zero_division=0)
    )
    assert got["macro_f1"] == pytest.approx(
        f1_score(gold, pred, labels=ids, average="macro", zero_division=0)
    )
    p, r, f, s = precision_recall_fscore_support(gold, pred, labels=ids, zero_division=0)
    for i, label in enumerate(LABELS):
        assert got["per_class"][label]["precision"] == pytest.approx(p[i])
        assert got["per_class"][label]["recall"] == pytest.approx(r[i])
        assert got["per_class"][label]["f1"] == pytest.approx(f[i])
        assert got["per_class"][label]["support"] == s[i]
    assert got["confusion_matrix"] == confusion_matrix(gold, pred, labels=ids).tolist()


def test_class_never_predicted_or_absent():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 1, 0])  # class 2 never predicted; class 3.. absent from gold
    got = classification_metrics(gold, pred, LABELS)
    assert got["weighted_f1"] == pytest.approx(
        f1_score(gold, pred, labels=list(range(7)), average="weighted", zero_division=0)
    )
    assert got["per_class"]["surprise"]["precision"] == 0.0


def test_unparsed_is_wrong_not_a_label():
    got = classification_metrics([0, 1], [-1, -1], LABELS)
    assert got["accuracy"] == 0.0
    assert np.array(got["confusion_matrix"]).sum() == 0


def test_confusion_rejects_bad_gold():
    with pytest.raises(ValueError, match="gold labels"):
        confusion([0, 9], [0, 0], 7)


def test_mean_sd_over_seeds():
    runs = [
        {"accuracy": 0.5, "weighted_f1": 0.4, "macro_f1": 0.3},
        {"accuracy": 0.7, "weighted_f1": 0.6, "macro_f1": 0.1},
    ]
    out = mean_sd(runs)
    assert out["n_runs"] == 2
    assert out["accuracy"]["mean"] == pytest.approx(0.6)
    assert out["accuracy"]["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert mean_sd(runs[:1])["weighted_f1"]["sd"] == 0.0

"""Can the scores be trusted: expected calibration error, reliability bins and accuracy against coverage,
on probability matrices whose answers are known by construction, and the figure drawn from saved tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dialoguellm import calibration
from dialoguellm.plots import analysis as plots


def test_a_calibrated_model_has_no_calibration_error():
    # 100 rows at confidence 0.8 of which exactly 80 are right, 100 at 0.6 of which 60: calibrated.
    probs = np.array([[0.8, 0.2]] * 100 + [[0.6, 0.4]] * 100)
    gold = np.array([0] * 80 + [1] * 20 + [0] * 60 + [1] * 40)
    assert calibration.expected_calibration_error(probs, gold) == pytest.approx(0.0)
    table = calibration.reliability_table(probs, gold)
    full = table[table["count"] > 0]
    assert list(full["count"]) == [100, 100] and list(full["accuracy"]) == pytest.approx([0.6, 0.8])
    assert table["count"].sum() == 200 and len(table) == 10


def test_an_overconfident_model_has_the_gap_as_its_error():
    probs = np.array([[0.9, 0.1]] * 10)
    gold = np.array([0] * 5 + [1] * 5)  # 90% sure, 50% right
    assert calibration.expected_calibration_error(probs, gold) == pytest.approx(0.4)
    with pytest.raises(ValueError, match="probability matrix"):
        calibration.expected_calibration_error(probs[:3], gold)


def test_coverage_sets_the_least_confident_aside():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45], [0.4, 0.6]])
    gold = np.array([0, 1, 1, 0])  # the two confident ones are right, the two unsure ones wrong
    curve = calibration.coverage_curve(probs, gold)
    assert list(curve["accuracy"]) == pytest.approx([1.0, 1.0, 2 / 3, 0.5])
    assert list(curve["threshold"]) == pytest.approx([0.9, 0.8, 0.6, 0.55])
    assert calibration.accuracy_at_coverage(curve, 0.5) == 1.0
    assert calibration.accuracy_at_coverage(curve, 1.0) == 0.5


def test_trust_figure_draws_from_saved_tables(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=200)
    gold = rng.integers(0, 4, 200)
    rel, cov = [], []
    for variant in ("raw", "label biases (dev)"):
        keys = {"dataset": "meld", "variant": variant}
        rel.append(calibration.reliability_table(probs, gold).assign(**keys))
        cov.append(calibration.coverage_curve(probs, gold).assign(**keys))
    path = plots.plot_score_trust(pd.concat(rel), pd.concat(cov), tmp_path / "score_trust.png")
    assert path.stat().st_size > 10_000

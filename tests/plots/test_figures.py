"""`make figures` (``dialoguellm figures``) redraws every registered figure from the
committed run outputs in results/cpu, without a model or training, into the folder it is given."""

from __future__ import annotations

from pathlib import Path

import pytest

from dialoguellm import cli
from dialoguellm.plots.registry import FIGURES, INPUTS, missing_inputs

RESULTS = Path(__file__).resolve().parents[2] / "results" / "cpu"
FIGURES_DIR = RESULTS.parent.parent / "figures"
# What results/ never holds: the curated corpora (notebook 01) and SECEU scores (only with SECEU_DIR).
NEVER_IN_RESULTS = {"label_distribution", "video_description_coverage", "seceu_item_distances"}


def test_every_figure_names_its_inputs():
    assert set(INPUTS) == set(FIGURES)


@pytest.mark.slow
def test_make_figures_redraws_every_figure_whose_inputs_are_committed(tmp_path, capsys):
    before = sorted(p.name for p in RESULTS.rglob("*"))
    assert cli.main(["figures", "--out", str(tmp_path)]) == 0  # default source: results/cpu
    written = {p.stem for p in tmp_path.glob("*.png")}
    missing = missing_inputs(RESULTS)
    assert written == set(FIGURES) - set(missing), "a figure whose inputs are in results/cpu was not redrawn"
    assert {"training_loss", "confusion_matrices", "comparison_with_paper", "score_trust"} <= written
    for name in written:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000, name
    printed = capsys.readouterr().out
    for name, patterns in missing.items():
        assert f"not redrawn: {name}" in printed and patterns[0] in printed
    assert sorted(p.name for p in RESULTS.rglob("*")) == before, "make figures wrote into results/"
    # figures/ is what the code draws from results/cpu, pixel for pixel (PNG metadata aside)
    import numpy as np
    from matplotlib.image import imread

    for name in sorted(written):
        committed = FIGURES_DIR / f"{name}.png"
        assert committed.is_file(), f"figures/{name}.png is missing: run `make figures` and commit it"
        assert np.array_equal(imread(committed), imread(tmp_path / f"{name}.png")), (
            f"figures/{name}.png differs from what `make figures` draws from results/cpu; run it and commit"
        )


def test_missing_inputs_say_which_files_a_figure_needs(tmp_path):
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "metrics.json").write_text("{}")
    missing = missing_inputs(tmp_path)
    assert "training_loss" not in missing
    assert missing["score_trust"] == ["analysis/reliability.csv", "analysis/coverage.csv"]
    assert NEVER_IN_RESULTS <= set(missing)

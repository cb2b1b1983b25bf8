"""The README's two commands in either order: `make reproduce` writes only into its run folder (its figures
included), so `make test` passes after it, and neither changes a tracked file; the tracked figures/ changes
only by `make figures`, from results/cpu."""

from __future__ import annotations

import pytest
from checkout import figures_differing_from_results, tracked_state

from dialoguellm import cli
from dialoguellm.plots import figures_dir
from dialoguellm.runs import REPO_DIR, RunLayout


def test_a_runs_figures_go_to_its_own_folder(tmp_path):
    assert figures_dir(tmp_path) == RunLayout(tmp_path).figures.resolve()
    assert figures_dir(tmp_path, tmp_path / "mine") == (tmp_path / "mine").resolve()
    assert (tmp_path / "figures").is_dir()
    assert not figures_dir(tmp_path).is_relative_to(REPO_DIR / "figures")


@pytest.mark.slow
def test_reproduce_and_test_in_either_order_leave_tracked_files_alone(tmp_path, monkeypatch):
    before = tracked_state()
    if before is None:
        pytest.skip("not a git checkout")
    monkeypatch.setenv("DIALOGUELLM_PROGRESS", "text")
    # `make test` first: figures/ is what results/cpu draws
    assert figures_differing_from_results(tmp_path / "test_first") == []
    # `make reproduce`'s own code path with its defaults, on its cheapest stage that draws tracked figures
    # (notebook 02 imports the shipped descriptions: no model, no video)
    run = tmp_path / "run"
    assert cli.main(["reproduce", "--run-dir", str(run), "--only", "02"]) == 0
    drawn = {p.name for p in RunLayout(run).figures.glob("*.png")}
    assert {"video_description_coverage.png", "video_description_lengths.png"} <= drawn
    assert tracked_state() == before, "make reproduce changed tracked files"
    # then `make test` again: still passes
    assert figures_differing_from_results(tmp_path / "test_after") == []
    assert tracked_state() == before

"""A notebook records what its stage's library call returns (``Recorder.record_all``), so the calls must give
the committed records back from the committed run outputs: the keys, their order and the values."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dialoguellm import stats
from dialoguellm.analysis.seceu import seceu_records
from dialoguellm.evaluation.run import evaluation_records
from dialoguellm.experiments.stage import baseline_records, curve_records
from dialoguellm.io import read_json
from dialoguellm.runs import Recorder, RunLayout, TrainingLayout, load_record, load_run_config
from dialoguellm.training.loop import TrainResult, training_records

REPO = Path(__file__).resolve().parents[2]
RESULTS = RunLayout(REPO / "results" / "cpu")


def test_training_records_give_the_committed_record_back():
    committed = load_record(RESULTS.root, "03_training")
    layout = TrainingLayout(RESULTS.training)
    result = TrainResult(
        run_dir=layout.root,
        adapter_dir=Path(committed["adapter"]),
        best={"dev_weighted_f1": committed["best_dev_weighted_f1"]},
        history=[],
        seconds=0.0,
    )
    records = training_records(
        load_run_config(layout.root), read_json(layout.metrics), result, Path("figures") / committed["figure"]
    )
    assert records == committed
    assert list(records) == list(committed)


def test_evaluation_records_give_the_committed_record_back():
    committed = load_record(RESULTS.root, "04_evaluation")
    summary = read_json(RESULTS.evaluation() / "summary.json")
    files = list(RESULTS.evaluation_files(summary["split"]).values())
    intervals = stats.interval_table(files, n_resamples=50)
    intervals["file"] = [Path(f).name for f in intervals["file"]]
    figures = [Path("figures") / name for name in committed["figures"]]
    records = evaluation_records(summary, intervals, None, figures)
    assert list(records) == list(committed)
    # the intervals themselves are drawn again here with few resamples: their keys are the committed ones
    assert list(records.pop("intervals")) == list(committed.pop("intervals"))
    assert records == committed
    with_base = evaluation_records(summary, intervals, summary, figures)
    assert list(with_base)[-2:] == ["zero_shot_weighted_f1", "figures"]
    assert with_base["zero_shot_weighted_f1"] == with_base["weighted_f1"]


def test_record_minutes_counts_from_the_recorder(tmp_path, monkeypatch):
    rec = Recorder(tmp_path, "00_test")
    monkeypatch.setattr(rec, "started", rec.started - 90)
    assert rec.record_minutes() == pytest.approx(1.5, abs=0.02)
    assert load_record(tmp_path, "00_test") == {"minutes": rec.values["minutes"]}


def test_baseline_records_give_the_committed_record_back():
    committed = load_record(RESULTS.root, "05_ablations")
    table = pd.read_csv(RESULTS.baselines / "results.csv")
    assert baseline_records(table) == {"baselines": committed["baselines"]}


def test_seceu_records_without_the_files_give_the_committed_record_back():
    committed = load_record(RESULTS.root, "07_emotional_intelligence")
    assert committed["status"] == "skipped"  # the committed run had no SECEU files
    assert seceu_records(committed["mode"]) == committed
    assert list(seceu_records(committed["mode"])) == list(committed)


def test_curve_records_without_records_say_so():
    assert curve_records(None, None, None) == {"status": "no records"}

"""The committed experiment records (results/*/experiments/*) checked with pandas, as a reader would: every
arm and seed is scored on the same test utterances (an arm scored on the described lines only, on exactly
those of the plan's sample), the arms of one seed train on the same utterances except
what an arm drops itself, and every metric is a fraction recomputed from the stored predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dialoguellm.experiments import record
from dialoguellm.labels import normalised_label_names
from dialoguellm.metrics import classification_metrics

REPO = Path(__file__).resolve().parents[2]
FOLDERS = sorted(p.parent for p in REPO.glob("results/*/experiments/*/experiment.json"))
# experiments still running, committed so another machine continues them (`experiment run --resume-from`)
IN_PROGRESS = sorted(p.parent for p in REPO.glob("results/*/in_progress/*/experiment.json"))


def test_the_repository_commits_the_ablation_records():
    assert REPO / "results" / "cpu" / "experiments" / "ablations_cpu" in FOLDERS


@pytest.fixture(
    params=FOLDERS + IN_PROGRESS, ids=[f"{p.parents[1].name}/{p.name}" for p in FOLDERS + IN_PROGRESS]
)
def experiment(request):
    return record.load_plan(request.param), record.load_units(request.param)


def _scored_part(plan: dict, arm: str, test: dict) -> dict:
    """The plan's test sample, or the part of it an arm scored only (``arm.score_on: described``)."""
    if plan["arms"][arm].get("score_on", "all") == "all":
        return test
    keep = [i for i, flag in enumerate(test["described"]) if flag]
    return {k: [v[i] for i in keep] for k, v in test.items() if isinstance(v, list)}


@pytest.mark.parametrize("folder", FOLDERS, ids=[f"{p.parents[1].name}/{p.name}" for p in FOLDERS])
def test_a_finished_experiment_has_every_planned_unit(folder):
    assert len(record.load_units(folder)) == len(record.load_plan(folder)["units"]), (
        f"{folder} is missing records: an unfinished experiment belongs in results/cpu/in_progress/"
    )


def test_every_unit_is_scored_on_the_plans_test_sample(experiment):
    plan, units = experiment
    planned = [record.unit_name(*u) for u in plan["units"]]
    assert units and {record.unit_name(u.arm, u.seed, u.size) for u in units} <= set(planned)
    predictions = record.prediction_frame(units)
    for dataset, part in predictions.groupby("dataset"):
        test = plan["test"][dataset]
        for (arm, _, _), unit in part.groupby(
            ["arm", "seed", "size"], dropna=False
        ):  # size: a learning curve's
            expected = _scored_part(plan, arm, test)
            for column in ("example_id", "gold_id"):
                assert list(unit[column]) == expected[column], (dataset, arm, column)
    frame = record.sample_frame(units)
    frame["part"] = [plan["arms"][a].get("score_on", "all") for a in frame["arm"]]
    tests = frame[frame["split"] == "test"].groupby(["dataset", "part", "arm", "seed", "size"], dropna=False)[
        "example_id"
    ]
    assert tests.apply(tuple).groupby(level=["dataset", "part"]).nunique().eq(1).all()


def test_the_arms_of_a_seed_train_on_the_same_draw_except_what_they_drop(experiment):
    plan, units = experiment
    frame = record.sample_frame([u for u in units if u.seed is not None])
    base = plan["baseline"]
    # a learning curve: the arms of one seed and size (one size: size None throughout)
    for (seed, dataset, _), part in frame.groupby(["seed", "dataset", "size"], dropna=False):
        train = part[part["split"].isin(["train", "removed"])].groupby("arm")["example_id"].apply(frozenset)
        dev = part[part["split"] == "dev"].groupby("arm")["example_id"].apply(frozenset)
        assert dev.nunique() == 1, f"seed {seed}, {dataset}: the arms were selected on different dev samples"
        same_corpora = [
            a for a in train.index if plan["arms"][a]["datasets"] == plan["arms"][base]["datasets"]
        ]
        assert train[same_corpora].nunique() == 1, f"seed {seed}, {dataset}: {same_corpora} drew differently"
        # paired by construction: the draw (trained on + removed) is one for every arm
        assert train.nunique() == 1, f"seed {seed}, {dataset}: the arms' training draws differ"


def test_metrics_are_fractions_recomputed_from_the_predictions(experiment):
    _, units = experiment
    for unit in units:
        for dataset, p in unit.predictions.items():
            expected = classification_metrics(p.gold_id, p.pred_id, normalised_label_names(dataset))
            for metric in ("accuracy", "weighted_f1", "macro_f1"):
                assert 0 <= unit.metrics[dataset][metric] <= 1
                assert unit.metrics[dataset][metric] == pytest.approx(expected[metric], abs=1e-12)
            assert unit.metrics[dataset]["n"] == len(p.pred_id) and np.all(np.array(p.pred_id) >= -1)


def test_a_learning_curves_draws_are_nested_per_seed(experiment):
    plan, units = experiment
    if not plan.get("sizes"):
        pytest.skip("one training size: not a learning curve")
    frame = record.sample_frame([u for u in units if u.seed is not None])
    drawn = frame[frame["split"].isin(["train", "removed"])]
    for (seed, dataset, arm), part in drawn.groupby(["seed", "dataset", "arm"]):
        by_size = part.groupby("size")["example_id"].apply(frozenset)
        ordered = [by_size[s] for s in plan["sizes"] if s in by_size.index]
        nested = all(a < b for a, b in zip(ordered, ordered[1:], strict=False))
        assert nested, f"{arm}, seed {seed}, {dataset}: the sizes are not nested"

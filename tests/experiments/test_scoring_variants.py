"""Scoring variants (``arm.reuses``): an arm that scores another arm's adapter, seed by seed, with its own
prompt and eval settings; and resuming a plan that a release without a newer setting wrote."""

from __future__ import annotations

import copy

import pytest
import yaml
from test_experiments import TINY, _corpora

from dialoguellm.config import Config
from dialoguellm.experiments import record, runner, spec
from dialoguellm.runs import ExperimentLayout

VARIANT = {
    "description": "The trained adapter scored with and without its previous turn.",
    "profile": "cpu",
    "arms": [
        "base",
        {
            "arm": {"name": "test_z0", "label": "z = 0 at test only", "reuses": "base"},
            "prompt": {"context_turns": 0},
        },
    ],
    "baseline": "base",
    "seeds": [1],
    "samples": {"train_per_dataset": 8, "dev_per_dataset": 4, "test_per_dataset": 6, "sample_seed": 0},
    "set": {"eval.calibrate": False},
    "metrics": ["weighted_f1", "accuracy"],
}


def _write(tmp_path, content) -> str:
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


def test_a_variant_must_name_an_earlier_trained_arm_and_change_no_training_setting(tmp_path):
    experiment = spec.load_experiment(_write(tmp_path, VARIANT))
    assert experiment.arm("test_z0").reuses == "base" and experiment.arm("test_z0").tuned

    later = copy.deepcopy(VARIANT)
    later["arms"] = list(reversed(later["arms"]))
    with pytest.raises(ValueError, match="must be a trained arm listed before it"):
        spec.load_experiment(_write(tmp_path, later))

    trains = copy.deepcopy(VARIANT)
    trains["arms"][1]["train"] = {"lr": 1e-3}
    with pytest.raises(ValueError, match=r"sets train.lr = 0.001 .* may change only prompt.\* and eval.\*"):
        spec.load_experiment(_write(tmp_path, trains))

    untuned = copy.deepcopy(VARIANT)
    untuned["arms"][1]["arm"]["tuned"] = False
    with pytest.raises(ValueError, match="arm.reuses names the arm"):
        spec.load_experiment(_write(tmp_path, untuned))


def test_a_plan_written_before_a_setting_existed_still_resumes_but_no_other_change_does():
    defaults = runner._settings(Config())
    now = {"arms": {"base": copy.deepcopy(defaults) | {"tuned": True}}, "seeds": [1, 2]}
    planned = copy.deepcopy(now)
    assert runner.same_identity(planned, now)
    key = next(iter(defaults["prompt"]))
    del planned["arms"]["base"]["prompt"][key]  # an older release did not know this setting
    assert runner.same_identity(planned, now)  # ... and it holds its default now
    changed = copy.deepcopy(now)
    changed["arms"]["base"]["prompt"][key] = "something else"
    assert not runner.same_identity(planned, changed)  # a new setting away from its default: refused
    assert not runner.same_identity(now, changed)  # a changed value: refused
    assert not runner.same_identity(now, {**now, "seeds": [1, 2, 3]})  # another seed list: refused
    extra_arm = copy.deepcopy(now)
    extra_arm["arms"]["other"] = extra_arm["arms"]["base"]
    assert not runner.same_identity(now, extra_arm)  # a new arm: refused
    fewer = copy.deepcopy(now)
    del fewer["arms"]["base"]["prompt"][key]
    assert not runner.same_identity(now, fewer)  # a setting the plan has and the run lacks: refused


@pytest.mark.slow
def test_a_variant_scores_the_adapter_of_its_arm_on_the_same_ids(tiny_model_dir, tmp_path, monkeypatch):
    from dialoguellm.training import loop

    experiment = spec.load_experiment(
        _write(tmp_path, VARIANT), overrides={**TINY, "model.name": tiny_model_dir}
    )
    layout = ExperimentLayout(tmp_path / "run" / "experiments" / "variant")
    trained: list = []
    real = loop.train
    monkeypatch.setattr(
        loop, "train", lambda config, folder, *a, **k: trained.append(folder) or real(config, folder, *a, **k)
    )
    assert runner.run_experiment(experiment, _corpora(), layout, progress=False, command="t") == [
        "base.seed1",
        "test_z0.seed1",
    ]
    assert trained == [layout.training("base", 1)]  # the variant trained nothing
    assert not layout.training("test_z0", 1).exists()
    base, variant = record.load_units(layout.root)
    assert (
        variant.identity.adapter == base.identity.adapter
        and variant.identity.adapter_sha256 == base.identity.adapter_sha256
    )
    assert variant.identity.train_seconds == 0
    assert variant.samples == base.samples and variant.config["prompt"]["context_turns"] == 0
    assert record.load_plan(layout.root)["arms"]["test_z0"]["reuses"] == "base"

    # its records copied elsewhere without the adapters (a later session): the variant retrains its arm's adapter
    committed = ExperimentLayout(tmp_path / "results" / "variant")
    committed.units.mkdir(parents=True)
    committed.plan.write_bytes(layout.plan.read_bytes())
    committed.unit("base.seed1").write_bytes(layout.unit("base.seed1").read_bytes())
    moved = ExperimentLayout(tmp_path / "later" / "experiments" / "variant")
    assert runner.resume_from(committed.root, moved) == ["base.seed1"]
    assert runner.resume_from(committed.root, moved) == []  # nothing twice, nothing overwritten
    trained.clear()
    assert runner.run_experiment(experiment, _corpora(), moved, progress=False, command="t2") == [
        "test_z0.seed1"
    ]
    assert trained == [moved.training("base", 1)]


def test_resuming_from_copied_records_refuses_another_plan_and_a_folder_without_one(tmp_path):
    source, target = ExperimentLayout(tmp_path / "a"), ExperimentLayout(tmp_path / "b")
    with pytest.raises(FileNotFoundError, match=r"--resume-from .*no experiment.json there"):
        runner.resume_from(source.root, target)
    source.units.mkdir(parents=True)
    source.plan.write_text('{"identity": {"seeds": [1]}}')
    (source.units / "base.seed1.json").write_text("{}")
    assert runner.resume_from(source.root, target) == ["base.seed1"]
    assert target.plan.read_text() != "" and target.unit("base.seed1").read_text() == "{}"
    other = ExperimentLayout(tmp_path / "c")
    other.units.mkdir(parents=True)
    other.plan.write_text('{"identity": {"seeds": [1, 2]}}')
    with pytest.raises(ValueError, match="planned with other settings"):
        runner.resume_from(other.root, target)

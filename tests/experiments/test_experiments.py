"""Experiments (dialoguellm.experiments): the packaged experiment files, the docs' two-arm example run end to
end on a tiny random LLaMA (killed in the middle of a training and resumed), pairing by construction, and the
records and table it leaves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from dialoguellm.experiments import record, runner, spec, summary
from dialoguellm.runs import ExperimentLayout

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "model.dtype": "fp32", "model.num_threads": 1, "train.batch_size": 4, "train.micro_batch_size": 4,
    "train.grad_accum": 1, "train.max_steps": 2, "train.warmup_steps": 0, "train.save_every": 1,
    "prompt.cutoff_len": 1024, "eval.batch_size": 8,
}  # fmt: skip
ARMS = ["base", "context_z0", "context_z2", "kshot_0", "no_lora", "meld_only"]


def test_the_cpu_experiment_asks_the_papers_questions():
    experiment = spec.load_experiment("ablations_cpu")
    arms = {a.name: a for a in experiment.arms}
    assert list(arms) == ARMS and experiment.seeds == [1, 2, 3, 4, 5] and experiment.baseline == "base"
    assert (experiment.samples.train_per_dataset, experiment.samples.test_per_dataset) == (400, 500)
    base = arms["base"].config
    assert (base.prompt.context_turns, base.prompt.k_shot, arms["base"].tuned) == (1, 1, True)
    assert arms["context_z0"].config.prompt.context_turns == 0
    assert arms["kshot_0"].config.prompt.k_shot == 0  # the one config drives training and test prompts
    assert not arms["no_lora"].tuned and arms["no_lora"].config.prompt == base.prompt
    assert arms["meld_only"].config.data.datasets == ["meld"] and base.data.datasets == ["meld", "emorynlp"]
    names = [record.unit_name(u.arm.name, u.seed) for u in experiment.units()]
    assert all(u.size is None for u in experiment.units())  # one training size: no size in any name
    assert len(names) == 5 * 5 + 1 and names[0] == "no_lora.untrained" and names.count("base.seed3") == 1


def test_the_paper_experiment_changes_one_thing_per_arm():
    experiment = spec.load_experiment("ablations_paper")
    base = experiment.arm("base")
    assert base.config.model.name == "meta-llama/Llama-2-7b-hf" and experiment.seeds == [42, 43, 44, 45, 46]
    assert experiment.samples.test_per_dataset == 0 and experiment.samples.train_per_dataset == 0
    for arm in experiment.arms:
        p = arm.config.prompt
        changed = [
            k
            for k in ("context_turns", "k_shot", "use_video")
            if getattr(p, k) != getattr(base.config.prompt, k)
        ]
        changed += [] if arm.tuned else ["tuned"]
        assert len(changed) == (arm.name != "base"), f"{arm.name} changes {changed}"
    assert len(experiment.units()) == 8 * 5 + 1


def test_a_bad_experiment_file_is_refused_with_its_name_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    good = {"profile": "cpu", "arms": ["base"], "seeds": [1], "samples": {"test_per_dataset": 5}}
    for change, message in (
        ({"sed": 2}, r"bad\.yaml: unknown key"),
        ({"samples": {"split": "train"}}, "never train"),
        ({"baseline": "nope"}, "baseline 'nope' is not one of the arms"),
        ({"seeds": [1, 1]}, "without repeats"),
        ({"metrics": ["f2"]}, "metrics must be some of"),
        ({"arms": ["base", {"arm": {"label": "x"}}]}, "needs an 'arm:' block with at least a name"),
    ):
        bad.write_text(yaml.safe_dump({**good, **change}))
        with pytest.raises(ValueError, match=message):
            spec.load_experiment(bad)
    with pytest.raises(FileNotFoundError, match="Packaged experiments: ablations_cpu"):
        spec.load_experiment("no_such_experiment")


# ------------------------------------------------------------------------------- pairing, no model


def _corpora() -> dict:
    from tiny import synthetic_corpus

    # Six training dialogues per corpus; EmoryNLP's test copies two MELD training lines, so the overlap
    # removal of the two-corpus arms has something to drop.
    meld = synthetic_corpus("meld", sizes=(6, 2, 2))
    emory = synthetic_corpus("emorynlp", sizes=(6, 2, 2), seed=5)
    for i in (0, 1):
        emory["test"][i] = {
            **emory["test"][i],
            "text": meld["train"][i]["text"] + " and then some more words here",
        }
        meld["train"][i] = {**meld["train"][i], "text": emory["test"][i]["text"]}
    return {"meld": meld, "emorynlp": emory}


def test_every_arm_of_a_seed_draws_the_same_training_ids_but_what_it_drops():
    experiment = spec.load_experiment("ablations_cpu", overrides={"model.name": "unused"})
    experiment.samples = spec.Samples(12, 4, 6, "test", 0)
    corpora = _corpora()
    plan = runner.plan_samples(experiment, corpora)
    assert plan["train"]["1"]["meld"]["example_id"] != plan["train"]["2"]["meld"]["example_id"]  # per seed
    used = {}
    for arm in ("base", "context_z0", "meld_only"):
        config = runner.unit_config(experiment.arm(arm), 1, experiment)
        used[arm] = runner.unit_corpora(config, plan, 1, corpora, runner.removed_by_arm(config, corpora))
    ids = {
        arm: {d: [r["utterance_id"] for r in rows["train"]] for d, rows in u.items()}
        for arm, (u, _) in used.items()
    }
    removed = {arm: dropped for arm, (_, dropped) in used.items()}
    draw = plan["train"]["1"]["meld"]["example_id"]
    assert ids["base"] == ids["context_z0"] and removed["base"]["meld"], "the overlap removal dropped nothing"
    assert sorted(ids["base"]["meld"] + removed["base"]["meld"]) == sorted(draw)
    assert ids["meld_only"]["meld"] == draw and removed["meld_only"] == {
        "meld": []
    }  # no removal on one corpus
    assert set(ids["meld_only"]) == {"meld"}
    dev = {arm: [r["utterance_id"] for r in u["meld"]["dev"]] for arm, (u, _) in used.items()}
    assert dev["base"] == dev["meld_only"] == plan["dev"]["meld"]["example_id"]


# ------------------------------------------------------------------- the docs example, end to end


def docs_example() -> dict:
    """The two-arm example of docs/EXPERIMENTS.md (the YAML block after its ``example:two-arms`` marker)."""
    text = (REPO / "docs" / "EXPERIMENTS.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- example:two-arms -->\s*```yaml\n(.*?)```", text, re.S)
    assert block, "docs/EXPERIMENTS.md lost its two-arm example"
    return yaml.safe_load(block.group(1))


def test_the_docs_example_is_a_valid_experiment(tmp_path):
    path = tmp_path / "context.yaml"
    path.write_text(yaml.safe_dump(docs_example()))
    experiment = spec.load_experiment(path)
    assert [a.name for a in experiment.arms] == ["base", "no_context"]
    assert experiment.arm("no_context").config.prompt.context_turns == 0 and experiment.seeds == [1, 2]


@pytest.mark.slow
def test_the_docs_example_runs_is_killed_resumes_and_reports(tiny_model_dir, tmp_path, monkeypatch):
    from dialoguellm.training import loop

    example = docs_example()
    example["samples"] = {
        **example["samples"],
        "train_per_dataset": 8,
        "dev_per_dataset": 4,
        "test_per_dataset": 6,
    }
    path = tmp_path / "context.yaml"
    path.write_text(yaml.safe_dump(example))
    experiment = spec.load_experiment(path, overrides={**TINY, "model.name": tiny_model_dir})
    corpora, layout = _corpora(), ExperimentLayout(tmp_path / "run" / "experiments" / "context")

    # Killed in the middle of the second unit's training (after its step-1 checkpoint, before its end).
    real = kill_the_second_training(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        runner.run_experiment(experiment, corpora, layout, progress=False, command="run 1")
    assert sorted(p.name for p in layout.units.iterdir()) == ["base.seed1.json"]  # whole, nothing else
    assert (layout.training("no_context", 1) / "checkpoint").is_dir()

    monkeypatch.setattr(loop, "_evaluate_dev", real)
    resumed: list = []
    monkeypatch.setattr(loop, "train", _spy(loop.train, resumed))
    ran = runner.run_experiment(experiment, corpora, layout, progress=False, command="run 2")
    assert ran == ["no_context.seed1", "base.seed2", "no_context.seed2"] and resumed == [True, False, False]
    assert runner.run_experiment(experiment, corpora, layout, progress=False, command="run 3") == []
    assert record.load_plan(layout.root)["commands"] == ["run 1", "run 2", "run 3"]

    units = record.load_units(layout.root)
    _check_records(units, layout)
    _check_table(layout)
    other = spec.load_experiment(path, overrides={**TINY, "model.name": tiny_model_dir, "train.lr": 1e-3})
    with pytest.raises(ValueError, match="planned with other settings"):
        runner.run_experiment(other, corpora, layout, progress=False)


def kill_the_second_training(monkeypatch):
    """Make the second training of a run stop (KeyboardInterrupt) at its dev evaluation, after its checkpoints;
    returns the real dev evaluation, to put back."""
    from dialoguellm.training import loop

    real, calls = loop._evaluate_dev, []

    def killed_on_the_second_training(session):
        calls.append(session.run.root)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(session)

    monkeypatch.setattr(loop, "_evaluate_dev", killed_on_the_second_training)
    return real


def _spy(train, resumed: list):
    def spying(*args, **kwargs):
        resumed.append(kwargs.get("resume"))
        return train(*args, **kwargs)

    return spying


def _check_records(units: list[record.UnitRecord], layout: ExperimentLayout) -> None:
    assert [(u.arm, u.seed) for u in units] == [
        ("base", 1),
        ("no_context", 1),
        ("base", 2),
        ("no_context", 2),
    ]
    frame = record.sample_frame(units)
    for (dataset, split), part in frame.groupby(["dataset", "split"]):
        per_unit = part.groupby(["arm", "seed"])["example_id"].apply(tuple)
        if split in ("test", "dev"):  # the same for every arm and seed
            assert per_unit.nunique() == 1, (dataset, split)
        else:  # the same for the two arms of a seed, another draw for another seed
            by_seed = part.groupby(["seed", "arm"])["example_id"].apply(frozenset).unstack()
            assert (by_seed["base"] == by_seed["no_context"]).all(), (dataset, split)
            if split == "train":
                assert by_seed.loc[1, "base"] != by_seed.loc[2, "base"]
    for u in units:
        assert u.identity.adapter and Path(u.identity.adapter).is_dir() and u.identity.config_hash
        assert u.config["train"]["seed"] == u.seed and u.identity.train_seconds > 0
        for dataset, p in u.predictions.items():
            assert len(p.pred_id) == len(p.example_id) == 6 and p.example_id == u.samples[dataset]["test"]
            assert np.allclose(np.sum(p.label_scores, axis=1), 1, atol=1e-4)
            assert 0 <= u.metrics[dataset]["weighted_f1"] <= 1  # fractions
            accuracy = np.mean(np.array(p.pred_id) == np.array(p.gold_id))
            assert u.metrics[dataset]["accuracy"] == pytest.approx(accuracy)
        assert sorted(u.samples) == ["emorynlp", "meld"] and layout.unit(f"{u.arm}.seed{u.seed}").is_file()


def _check_table(layout: ExperimentLayout) -> None:
    from dialoguellm.report import experiment_table

    table = summary.summary_table(layout.root, n_resamples=200).set_index(["arm", "dataset"])
    row = table.loc[("no_context", "meld")]
    base = table.loc[("base", "meld")]
    assert row["delta_weighted_f1"] == pytest.approx(row["weighted_f1"] - base["weighted_f1"])
    assert row["delta_weighted_f1_per_seed"] and len(row["delta_weighted_f1_per_seed"]) == 2
    assert np.mean(row["delta_weighted_f1_per_seed"]) == pytest.approx(row["delta_weighted_f1"])
    assert row["delta_weighted_f1_covers"] == "training seeds, test dialogues"
    assert row["delta_weighted_f1_low"] <= row["delta_weighted_f1"] <= row["delta_weighted_f1_high"]
    text = experiment_table(layout.root, n_resamples=200)
    line = next(line for line in text.splitlines() if line.startswith("| z = 0 | meld |"))
    assert f"{100 * row['delta_weighted_f1']:+.1f} [" in line and "the same 6 test utterances" in text


# ------------------------------------------------------------------------- the overlap experiment


def _overlap_experiment(overrides=None) -> spec.Experiment:
    experiment = spec.load_experiment("overlap_removal", overrides=overrides or {"model.name": "unused"})
    experiment.samples = spec.Samples(6, 4, 6, "test", 0, include_overlap=True)
    experiment.seeds = [1, 2]
    return experiment


def test_the_overlap_experiment_pairs_its_arms_and_holds_every_overlapping_line():
    experiment, corpora = _overlap_experiment(), _corpora()
    assert [a.name for a in experiment.arms] == ["removed", "kept"] and experiment.baseline == "removed"
    plan = runner.plan_samples(experiment, corpora)
    test = plan["test"]["emorynlp"]
    flagged = [e for e, o in zip(test["example_id"], test["overlapping"], strict=True) if o]
    assert flagged == ["test0_0", "test0_1"] and len(test["example_id"]) == 6 + 2  # the sample + the overlap
    assert not any(plan["test"]["meld"]["overlapping"])
    matches = {corpora["meld"]["train"][i]["utterance_id"] for i in (0, 1)}  # the MELD lines they copy
    for seed in ("1", "2"):
        draw = set(plan["train"][seed]["meld"]["example_id"])
        assert matches <= draw and len(draw) >= 6 + 2
        trained = {}
        for arm in experiment.arms:
            config = runner.unit_config(arm, int(seed), experiment)
            used, dropped = runner.unit_corpora(
                config, plan, int(seed), corpora, runner.removed_by_arm(config, corpora)
            )
            trained[arm.name] = {r["utterance_id"] for r in used["meld"]["train"]}
            assert trained[arm.name] | set(dropped["meld"]) == draw  # one draw, minus what the arm drops
        assert matches <= trained["kept"] and not matches & trained["removed"]


def test_the_packaged_overlap_experiment_trains_every_line_of_each_arms_draw():
    # no step cap: a cap would cut the kept arm's one pass (its draw is the removed arm's plus the overlap)
    # short and leave the match of some overlapping test lines unseen; equal epochs, not equal steps
    experiment = spec.load_experiment("overlap_removal", overrides={"model.name": "unused"})
    for arm in experiment.arms:
        assert arm.config.train.max_steps == 0 and arm.config.train.epochs == 1, arm.name


def test_each_overlap_arm_drops_its_own_lines_when_the_runner_runs_them_in_turn(tmp_path, monkeypatch):
    # the runner caches what an arm drops; the two arms share their corpora, and the kept arm must not get the
    # removed arm's cached drops (a cache keyed by the corpora alone trained both arms on the same lines)
    experiment, corpora = _overlap_experiment(), _corpora()
    samples = runner.plan_samples(experiment, corpora)
    real, dropped = runner.unit_corpora, {}

    class Enough(Exception):
        pass

    def spy(config, *args, **kwargs):
        used, drops = real(config, *args, **kwargs)
        dropped[config.data.remove_cross_corpus_overlap] = drops
        raise Enough  # what the unit trains on is known: no training needed

    monkeypatch.setattr(runner, "unit_corpora", spy)
    cache: dict = {}
    layout = ExperimentLayout(tmp_path / "experiments" / "overlap_removal")
    # removed.seed1, then kept.seed1, with one cache as run_experiment does
    for unit in experiment.units()[:2]:
        with pytest.raises(Enough):
            runner.run_unit(experiment, unit, corpora, samples, layout, cache, False, "test", None)
    assert dropped[True]["meld"] and dropped[False] == {"meld": [], "emorynlp": []}


@pytest.mark.slow
def test_the_overlap_experiment_reports_a_difference_in_differences(tiny_model_dir, tmp_path):
    from dialoguellm.report import experiment_table

    experiment = _overlap_experiment({**TINY, "model.name": tiny_model_dir})
    layout = ExperimentLayout(tmp_path / "experiments" / "overlap_removal")
    corpora = _corpora()
    runner.run_experiment(experiment, corpora, layout, progress=False, command="test")
    matches = {corpora["meld"]["train"][i]["utterance_id"] for i in (0, 1)}
    for unit in record.load_units(layout.root):  # each arm trained on what it should, through the runner
        trained = set(unit.samples["meld"]["train"])
        assert (matches <= trained) if unit.arm == "kept" else not (matches & trained), unit.arm
    effect = summary.overlap_effect(layout.root, n_resamples=200).set_index("dataset")
    assert list(effect.index) == ["emorynlp"]  # MELD's test sample has no overlapping line
    row = effect.loc["emorynlp"]
    assert (row["overlapping"], row["rest"]) == (2, 6) and row["covers"] == "training seeds, test dialogues"
    assert row["did_low"] <= row["did_high"]
    text = experiment_table(layout.root, n_resamples=200)
    assert "difference in differences" in text and "| overlap kept in training | emorynlp | 2 / 6 |" in text
    from dialoguellm.experiments import stage

    recorded = stage.overlap_records(effect.reset_index(), layout.root)["effects"]["kept/emorynlp"]
    assert (recorded["overlapping"], recorded["rest"]) == (2, 6) and recorded["did"] == pytest.approx(
        row["did"], abs=1e-4
    )


CHILD = """
import sys
sys.path[:0] = [{tests!r}, {helpers!r}]
from test_experiments import TINY, _corpora
from dialoguellm.experiments import runner, spec
from dialoguellm.runs import ExperimentLayout
import time
from dialoguellm.training import loop
save, step = runner.save_unit, loop._optimizer_step
def save_then_slow_down(*args, **kwargs):
    # after the first record every optimiser step takes 5 s more, so the kill lands inside the next unit's
    # training on any machine, however loaded
    loop._optimizer_step = lambda session: (time.sleep(5), step(session))[1]
    return save(*args, **kwargs)
runner.save_unit = save_then_slow_down
experiment = spec.load_experiment({path!r}, overrides={{**TINY, "model.name": {model!r}}})
runner.run_experiment(experiment, _corpora(), ExperimentLayout({root!r}), progress=False, command="child")
"""


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_records(tiny_model_dir, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    example = docs_example()
    example["samples"] = {
        **example["samples"],
        "train_per_dataset": 8,
        "dev_per_dataset": 4,
        "test_per_dataset": 6,
    }
    path = tmp_path / "context.yaml"
    path.write_text(yaml.safe_dump(example))
    layout = ExperimentLayout(tmp_path / "experiments" / "context")
    script = CHILD.format(
        tests=str(Path(__file__).parent),
        helpers=str(Path(__file__).parents[1]),
        path=str(path),
        model=tiny_model_dir,
        root=str(layout.root),
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    deadline = time.time() + 600
    while not layout.unit("base.seed1").is_file() and child.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert child.poll() is None, "the child finished or failed before it could be killed"
    time.sleep(1.0)  # into the next unit, whose every step the child slowed down
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done = [p.name for p in layout.units.glob("*.json")]
    assert done == ["base.seed1.json"]
    experiment = spec.load_experiment(path, overrides={**TINY, "model.name": tiny_model_dir})
    ran = runner.run_experiment(experiment, _corpora(), layout, progress=False, command="resumed")
    assert "base.seed1" not in ran and len(ran) == 4 - len(done)
    units = record.load_units(layout.root)
    assert len(units) == 4 and record.load_plan(layout.root)["commands"] == ["child", "resumed"]
    _check_records(units, layout)


def test_the_cli_reports_the_committed_records_and_names_a_bad_experiment(capsys, tmp_path):
    from dialoguellm import cli

    assert cli.main(["experiment", "report", "ablations_cpu", "--run-dir", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    assert "| MELD-only training | meld | 5 |" in shown and "minus base [95% CI]" in shown
    assert cli.main(["experiment", "report", "no_such_experiment"]) == 2
    assert "Experiment not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("block", "name"), [("overlap", "overlap_removal"), ("probes", "probes_cpu"), ("scoring", "scoring_dev")]
)
def test_docs_evaluation_shows_each_committed_experiments_own_table(block, name, tmp_path):
    from tiny import synthetic_experiment_records

    from dialoguellm.report import GENERATED_DOCUMENTS, experiment_table, readme_block

    assert readme_block(block, tmp_path) == ""  # nothing committed: an empty block
    folder = synthetic_experiment_records(tmp_path / "experiments" / name, experiment=name)
    assert readme_block(block, tmp_path) == experiment_table(folder).strip()
    shown = [
        d for d in GENERATED_DOCUMENTS if f"<!-- {block}:start -->" in (REPO / d).read_text(encoding="utf-8")
    ]
    assert shown == ["docs/EVALUATION.md"]


def test_a_grid_split_by_seed_over_two_machines_merges_into_one(tmp_path, monkeypatch, capsys):
    # what is tested is which units each run takes and that resume_from merges them; a unit's work is faked
    from types import SimpleNamespace

    from dialoguellm import cli

    ran: list[tuple[str, str]] = []

    def fake_unit(experiment, unit, corpora, samples, layout, *rest):
        name = record.unit_name(unit.arm.name, unit.seed, None)
        ran.append((layout.root.parent.parent.name, name))
        layout.unit(name).parent.mkdir(parents=True, exist_ok=True)
        layout.unit(name).write_text("{}")
        return SimpleNamespace(metrics={}, identity=SimpleNamespace(train_seconds=0.0, score_seconds=0.0))

    monkeypatch.setattr(runner, "run_unit", fake_unit)
    experiment = spec.load_experiment("ablations_cpu", overrides={"model.name": "unused"})
    experiment.samples = spec.Samples(6, 4, 6, "test", 0)
    experiment.seeds = [1, 2, 3]
    corpora = _corpora()
    there = ExperimentLayout(tmp_path / "there" / "experiments" / "ablations_cpu")
    runner.run_experiment(experiment, corpora, there, progress=False, command="there", only_seeds=[3])
    assert {n for _, n in ran} == {f"{a}.seed3" for a in ARMS if a != "no_lora"}  # nothing scored once
    here = ExperimentLayout(tmp_path / "here" / "experiments" / "ablations_cpu")
    copied = runner.resume_from(there.root, here)
    ran.clear()
    runner.run_experiment(experiment, corpora, here, progress=False, command="here")
    assert len(copied) == 5 and not {n for _, n in ran} & set(copied)  # the copied units do not run again
    assert sorted(p.stem for p in here.units.iterdir()) == sorted(runner._name(u) for u in experiment.units())
    with pytest.raises(SystemExit, match=r"has seeds \[1, 2, 3\]; \[7\] not among them"):
        cli._seed_list("3,7", experiment)
    with pytest.raises(SystemExit, match="give seeds as integers"):
        cli._seed_list("three", experiment)

"""The prompt probes and the dev scoring checks as experiments (probes_cpu.yaml, scoring_dev.yaml): arms scored
on the described test lines only (``arm.score_on: described``), descriptions withheld from a video-aware
prompt (``arm.descriptions: withheld``), an arm compared with another than the baseline (``arm.against``), and
corrections cross-fitted on the scored sample (``corrections``). Existing experiments' plans do not change."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from test_experiments import TINY, _corpora

from dialoguellm.experiments import record, runner, spec, summary
from dialoguellm.runs import ExperimentLayout

# synthetic descriptions of three MELD test clips (tests/tiny.py names a clip dia<dialogue>_utt<turn>)
DESCRIBED_CLIPS = ("dia0_utt1", "dia0_utt3", "dia1_utt2")
DESCRIPTIONS = {
    "train": {},
    "dev": {},
    "test": {clip: f"A person frowns at the table ({clip})." for clip in DESCRIBED_CLIPS},
}

SPLIT = {
    "description": "The description probe in two arms.",
    "profile": "cpu",
    "arms": [
        "base",
        {
            "arm": {"name": "video_instruction", "reuses": "base", "descriptions": "withheld"},
            "prompt": {"use_video": True},
        },
        {
            "arm": {
                "name": "descriptions",
                "reuses": "base",
                "score_on": "described",
                "against": "video_instruction",
            },
            "prompt": {"use_video": True},
        },
    ],
    "baseline": "base",
    "seeds": [1, 2],
    "samples": {
        "train_per_dataset": 8,
        "dev_per_dataset": 4,
        "test_per_dataset": 4,
        "sample_seed": 0,
        "include_described": True,
    },
    "set": {"eval.calibrate": False},
    "metrics": ["weighted_f1", "accuracy"],
}


def _write(tmp_path, content, name="split.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


def _described_ids(corpora) -> set[str]:
    return {r["utterance_id"] for r in corpora["meld"]["test"] if r["clip_id"] in DESCRIBED_CLIPS}


# ------------------------------------------------------------------------------------ the files


def test_the_probe_experiment_changes_only_how_the_base_adapter_is_scored():
    experiment = spec.load_experiment("probes_cpu")
    base = experiment.arm("base").config
    assert experiment.baseline == "base" and experiment.samples.include_described
    assert experiment.samples.train_per_dataset == 1600  # the cpu profile's training size
    for arm in experiment.arms[1:]:
        if not arm.tuned:
            assert arm.name == "adapter_off" and arm.config.prompt == base.prompt
            continue
        assert arm.reuses == "base", arm.name  # a scoring variant: trains nothing
        changed = {k for k, v in arm.config.prompt.__dict__.items() if getattr(base.prompt, k) != v}
        assert changed and changed <= {"context_turns", "k_shot", "use_video", "cutoff_len"}, arm.name
        assert changed == set(arm.overrides["prompt"]), arm.name  # a probe changes only its own settings
        assert set(arm.overrides) == {"prompt"} and arm.config.train == base.train, arm.name
    instruction, described = experiment.arm("video_instruction"), experiment.arm("descriptions")
    assert not base.prompt.use_video  # the cpu adapter trains without descriptions
    assert instruction.config.prompt == described.config.prompt and described.config.prompt.use_video
    assert (instruction.descriptions, instruction.score_on, instruction.against) == ("withheld", "all", None)
    assert (described.descriptions, described.score_on, described.against) == (
        "shown",
        "described",
        "video_instruction",
    )
    names = [record.unit_name(u.arm.name, u.seed) for u in experiment.units()]
    assert names[0] == "adapter_off.untrained" and len(names) == 1 + 9 * 3


def test_the_paper_probes_take_the_video_instruction_and_the_descriptions_away_one_at_a_time():
    experiment = spec.load_experiment("probes_paper")
    base = experiment.arm("base")
    assert base.config.model.name == "meta-llama/Llama-2-7b-hf" and base.config.prompt.use_video
    assert experiment.seeds == [42, 43, 44, 45, 46] and experiment.samples.test_per_dataset == 0
    assert all(a.reuses == "base" for a in experiment.arms if a.tuned and a.name != "base")
    withheld, off = experiment.arm("descriptions_withheld"), experiment.arm("video_off")
    assert withheld.config.prompt == base.config.prompt  # the instruction kept, only the text withheld
    assert (withheld.descriptions, withheld.score_on, withheld.against) == ("withheld", "described", None)
    assert not off.config.prompt.use_video and off.against == "descriptions_withheld"
    assert off.descriptions == "shown" and off.score_on == "all"


def test_the_dev_scoring_experiment_reads_dev_only_and_names_its_corrections():
    experiment = spec.load_experiment("scoring_dev")
    assert experiment.samples.split == "dev" and experiment.samples.test_per_dataset == 0
    mean, summed = experiment.arms
    assert mean.config.eval.length_normalise and not summed.config.eval.length_normalise
    assert summed.reuses == "mean"
    assert experiment.corrections[0] == "none" and "prior vs prior(scale=1)" in experiment.corrections
    parsed = summary.Correction.parse("prior vs prior(scale=1)")
    assert (parsed.kind, parsed.scale, parsed.reference) == ("prior", None, "prior(scale=1)")
    assert summary.Correction.parse("label_bias(rows=200)").rows == 200
    for bad in ("prior(rows=3)", "label_bias(scale=2)", "biases"):
        with pytest.raises(ValueError, match="Unknown correction"):
            summary.Correction.parse(bad)


def test_bad_scoring_options_are_refused_with_the_file_and_arm(tmp_path):
    for change, message in (
        ({"against": "nope"}, "compared against 'nope', which is not one of the arms"),
        ({"score_on": "some"}, "arm.score_on is 'some'"),
        ({"descriptions": "hidden"}, "arm.descriptions is 'hidden'"),
        ({"reuses": None}, "withholds descriptions but trains its own adapter"),
    ):
        content = copy.deepcopy(SPLIT)
        content["arms"][1]["arm"] = {**content["arms"][1]["arm"], **change}
        if change.get("reuses", "") is None:
            del content["arms"][1]["arm"]["reuses"]
            content["arms"][2]["arm"]["reuses"] = "base"
        with pytest.raises(ValueError, match=message):
            spec.load_experiment(_write(tmp_path, content))
    bad = {**SPLIT, "corrections": ["prior(rows=2)"]}
    with pytest.raises(ValueError, match=r"split\.yaml: corrections: Unknown correction"):
        spec.load_experiment(_write(tmp_path, bad))


# ------------------------------------------------------------------------------------ the plan


def test_the_described_lines_join_the_test_sample_and_an_arm_is_scored_on_them_alone(tmp_path):
    experiment = spec.load_experiment(_write(tmp_path, SPLIT), overrides={"model.name": "unused"})
    corpora = _corpora()
    plan = runner.plan_samples(experiment, corpora, DESCRIPTIONS)
    meld, emory = plan["test"]["meld"], plan["test"]["emorynlp"]
    described = _described_ids(corpora)
    flagged = {e for e, f in zip(meld["example_id"], meld["described"], strict=True) if f}
    assert flagged == described and described <= set(meld["example_id"])
    assert not any(emory["described"])  # EmoryNLP has no video
    assert len(meld["example_id"]) == len(described) + 4  # every described line + the stratified 4 others
    assert len(emory["example_id"]) == 4
    chosen = runner.scored_sample(experiment.arm("descriptions"), meld)
    assert set(chosen["example_id"]) == described and len(chosen["position"]) == len(described)
    assert runner.scored_sample(experiment.arm("video_instruction"), meld) == meld


def test_existing_experiments_plan_as_before_even_with_descriptions(tmp_path):
    """ablations_cpu neither includes nor marks described lines, and its plan identity has no new key, so a
    grid planned by an older release resumes (runner.same_identity)."""
    experiment = spec.load_experiment("ablations_cpu", overrides={"model.name": "unused"})
    experiment.samples = spec.Samples(12, 4, 6, "test", 0)
    corpora = _corpora()
    plain, given = (
        runner.plan_samples(experiment, corpora),
        runner.plan_samples(experiment, corpora, DESCRIPTIONS),
    )
    assert plain == given and "described" not in plain["test"]["meld"]
    planned = runner.open_plan(experiment, ExperimentLayout(tmp_path / "a"), plain, "t")
    for arm in planned["identity"]["arms"].values():
        assert not {"score_on", "descriptions", "against", "reuses"} & set(arm)
    assert "corrections" not in planned


def test_an_arm_scored_on_described_lines_needs_descriptions(tmp_path):
    experiment = spec.load_experiment(_write(tmp_path, SPLIT), overrides={"model.name": "unused"})
    with pytest.raises(ValueError, match="no test line of meld, emorynlp has a video description"):
        runner.run_experiment(
            experiment, _corpora(), ExperimentLayout(tmp_path / "x"), progress=False, command="t"
        )


# -------------------------------------------------------------------------- corrections, no model


def test_a_cross_fitted_correction_never_fits_on_the_dialogue_it_corrects(monkeypatch):
    from dialoguellm import calibration

    rng = np.random.default_rng(0)
    dialogues = np.repeat([f"d{i}" for i in range(10)], 6)
    gold = rng.integers(0, 3, len(dialogues))
    scores = rng.normal(size=(len(dialogues), 3)) + 2.0 * np.eye(3)[gold]
    labels = ["a", "b", "c"]
    none = summary.Correction.parse("none")
    assert (summary.cross_fitted(scores, gold, dialogues, labels, none) == scores.argmax(axis=1)).all()
    seen: list = []
    real = calibration.fit_label_bias
    monkeypatch.setattr(
        calibration, "fit_label_bias", lambda s, g, lab: seen.append(len(g)) or real(s, g, lab)
    )
    summary.cross_fitted(scores, gold, dialogues, labels, summary.Correction.parse("label_bias(rows=12)"))
    assert seen == [12] * 5  # five folds, each fitted on 12 rows of the others
    fitted = summary.cross_fitted(scores, gold, dialogues, labels, summary.Correction.parse("prior"))
    assert fitted.shape == gold.shape and (fitted == gold).mean() > 0.5


# -------------------------------------------------------------------------- a tiny model, end to end


@pytest.mark.slow
def test_the_description_probe_in_two_arms_on_a_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    from dialoguellm.report import experiment_table

    experiment = spec.load_experiment(
        _write(tmp_path, SPLIT), overrides={**TINY, "model.name": tiny_model_dir}
    )
    corpora, layout = _corpora(), ExperimentLayout(tmp_path / "run" / "experiments" / "split")
    calls: list = []
    real = runner.predict_arm

    def spy(arm, dataset, splits, *args, **kwargs):
        calls.append((arm.name, dataset, list(kwargs["only"]), kwargs["descriptions"]))
        return real(arm, dataset, splits, *args, **kwargs)

    monkeypatch.setattr(runner, "predict_arm", spy)
    runner.run_experiment(experiment, corpora, layout, progress=False, command="t", descriptions=DESCRIPTIONS)
    described = _described_ids(corpora)
    by_arm = {(name, d): (only, shown) for name, d, only, shown in calls}
    assert by_arm[("video_instruction", "meld")][1] == {}  # the instruction without any description text
    assert by_arm[("descriptions", "meld")][1] == DESCRIPTIONS
    assert ("descriptions", "emorynlp") not in by_arm  # no described line there: not scored

    units = {(u.arm, u.seed): u for u in record.load_units(layout.root)}
    plan = record.load_plan(layout.root)
    assert plan["arms"]["descriptions"]["score_on"] == "described"
    assert plan["identity"]["arms"]["descriptions"]["against"] == "video_instruction"
    assert plan["identity"]["arms"]["video_instruction"]["descriptions"] == "withheld"
    for seed in (1, 2):
        desc, instr = units[("descriptions", seed)], units[("video_instruction", seed)]
        assert set(desc.samples["meld"]["test"]) == described and "emorynlp" not in desc.predictions
        assert instr.samples["meld"]["test"] == plan["test"]["meld"]["example_id"]
        assert desc.identity.adapter == units[("base", seed)].identity.adapter
        at = {e: i for i, e in enumerate(instr.predictions["meld"].example_id)}
        shown = np.array(desc.predictions["meld"].label_scores)
        withheld = np.array(
            [instr.predictions["meld"].label_scores[at[e]] for e in desc.predictions["meld"].example_id]
        )
        assert not np.allclose(shown, withheld)  # the description reached the prompts
        # EmoryNLP has no video: the video-aware arm's prompts are the base arm's
        assert np.allclose(
            instr.predictions["emorynlp"].label_scores,
            units[("base", seed)].predictions["emorynlp"].label_scores,
        )

    import test_experiment_records as committed  # the checks every committed record passes

    loaded = (plan, record.load_units(layout.root))
    committed.test_every_unit_is_scored_on_the_plans_test_sample(loaded)
    committed.test_the_arms_of_a_seed_train_on_the_same_draw_except_what_they_drop(loaded)
    committed.test_metrics_are_fractions_recomputed_from_the_predictions(loaded)

    table = summary.summary_table(layout.root, n_resamples=200).set_index(["arm", "dataset"])
    row = table.loc[("descriptions", "meld")]
    assert (row["n"], row["n_compared"], row["against"]) == (
        len(described),
        len(described),
        "video_instruction",
    )
    assert ("descriptions", "emorynlp") not in table.index
    own = [units[("descriptions", s)].metrics["meld"]["weighted_f1"] for s in (1, 2)]
    assert row["weighted_f1"] == pytest.approx(np.mean(own))
    from dialoguellm.labels import normalised_label_names
    from dialoguellm.metrics import classification_metrics

    labels = normalised_label_names("meld")
    per_seed = []
    for s in (1, 2):
        p = units[("video_instruction", s)].predictions["meld"]
        keep = [i for i, e in enumerate(p.example_id) if e in described]
        other = classification_metrics(np.array(p.gold_id)[keep], np.array(p.pred_id)[keep], labels)[
            "weighted_f1"
        ]
        per_seed.append(own[s - 1] - other)
    assert row["delta_weighted_f1"] == pytest.approx(np.mean(per_seed))  # on the described lines only
    assert table.loc[("video_instruction", "meld"), "against"] == "base"
    assert table.loc[("video_instruction", "meld"), "n_compared"] == len(plan["test"]["meld"]["example_id"])
    text = experiment_table(layout.root, n_resamples=200)
    assert "compared with (on n)" in text and f"video_instruction (on {len(described)})" in text


@pytest.mark.slow
def test_the_dev_scoring_experiment_on_a_tiny_model(tiny_model_dir, tmp_path):
    from dialoguellm.report import experiment_table

    content = yaml.safe_load(spec.experiment_path("scoring_dev").read_text())
    content["seeds"] = [1, 2]
    content["samples"] = {**content["samples"], "train_per_dataset": 8, "dev_per_dataset": 4}
    content["corrections"] = ["none", "label_bias", "prior vs prior(scale=1)", "prior(scale=1)"]
    experiment = spec.load_experiment(
        _write(tmp_path, content, "scoring_dev.yaml"), overrides={**TINY, "model.name": tiny_model_dir}
    )
    corpora, layout = _corpora(), ExperimentLayout(tmp_path / "experiments" / "scoring_dev")
    runner.run_experiment(experiment, corpora, layout, progress=False, command="t")
    units = record.load_units(layout.root)
    dev_ids = [r["utterance_id"] for r in corpora["meld"]["dev"]]
    assert all(u.samples["meld"]["test"] == dev_ids for u in units)  # the whole dev split, no test line
    table = summary.corrections_table(layout.root, n_resamples=200).set_index(
        ["arm", "dataset", "correction"]
    )
    assert len(table) == 2 * 2 * 4
    raw = summary.summary_table(layout.root, n_resamples=200).set_index(["arm", "dataset"])
    assert table.loc[("mean", "meld", "none"), "weighted_f1"] == pytest.approx(
        raw.loc[("mean", "meld"), "weighted_f1"]
    )
    fitted = table.loc[("summed", "meld", "prior")]
    assert fitted["reference"] == "prior(scale=1)" and fitted["against"] == "mean"
    assert fitted["delta_arm_low"] <= fitted["delta_arm_high"]
    assert table.loc[("mean", "meld", "label_bias"), "reference"] == "none"
    text = experiment_table(layout.root, n_resamples=200)
    assert "cross-fitted over 5 folds" in text and "| prior | " in text


def test_the_command_gives_an_experiment_that_needs_descriptions_the_packaged_ones(tmp_path, monkeypatch):
    """`dialoguellm experiment run probes_cpu` without --corpora-run scores the described arms with the 191
    packaged MELD test descriptions; an experiment that needs none (ablations_cpu) gets none, as before."""
    import dialoguellm.report
    from dialoguellm import cli

    given: dict = {}
    monkeypatch.setattr(runner, "experiment_corpora", lambda *a, **k: {})
    monkeypatch.setattr(
        runner,
        "run_experiment",
        lambda e, c, layout, descriptions=None, **k: given.update({e.name: descriptions}),
    )
    monkeypatch.setattr(dialoguellm.report, "experiment_table", lambda folder, *a, **k: "")
    for name in ("probes_cpu", "ablations_cpu"):
        assert cli.main(["experiment", "run", name, "--run-dir", str(tmp_path)]) == 0
    assert len(given["probes_cpu"]["test"]) == 191 and given["ablations_cpu"] is None


# ------------------------------------------------------------- what notebook 05 and the figure show


def test_notebook_05_shows_the_probe_records_or_says_how_to_make_them(tmp_path, monkeypatch):
    """``probes_source``: the run's own probes_cpu records, else the committed ones, else a sentence naming the
    command; ``probes_records`` records each arm against the arm it is compared with (fractions)."""
    from tiny import synthetic_experiment_records

    from dialoguellm.experiments import stage

    run = tmp_path / "run"
    monkeypatch.setattr(summary, "committed_folder", lambda name, results=None: tmp_path / "committed" / name)
    folder, note = stage.probes_source(run)
    assert folder is None and "no records yet" in note and "dialoguellm experiment run probes_cpu" in note
    assert stage.probes_records(None, None) == {"probes": {"status": "no records"}}
    committed = synthetic_experiment_records(tmp_path / "committed" / "probes_cpu", experiment="probes_cpu")
    folder, note = stage.probes_source(run)
    assert folder == committed and "not run here" in note and "finished" in note
    own = synthetic_experiment_records(run / "experiments" / "probes_cpu", experiment="probes_cpu", seed=1)
    folder, note = stage.probes_source(run)
    assert folder == own and "this run's own records" in note
    table = summary.summary_table(own, ["weighted_f1"], n_resamples=200)
    arms = stage.probes_records(table, own, tmp_path / "prompt_probes.png")["probes"]["arms"]
    assert len(arms) == 2 * 9 + 1  # every arm on both corpora; the descriptions on MELD only
    assert "against" not in arms["base/meld"] and arms["context_z0/meld"]["against"] == "base"
    described = arms["descriptions/meld"]
    assert described["against"] == "video_instruction" and described["n_compared"] == described["n"] == 14
    row = table.set_index(["arm", "dataset"]).loc[("descriptions", "meld")]
    assert described["delta_weighted_f1"] == round(row["delta_weighted_f1"], 4)
    assert described["delta_low"] <= described["delta_weighted_f1"] <= described["delta_high"]


def test_the_probe_figure_is_drawn_from_the_experiments_records_and_skipped_without_them(tmp_path):
    from tiny import synthetic_experiment_records

    from dialoguellm.plots import probes as probe_plots
    from dialoguellm.plots.registry import INPUTS, missing_inputs

    run = tmp_path / "run"
    assert probe_plots.probe_differences_from_run(run, tmp_path / "out") is None
    assert missing_inputs(run)["prompt_probes"] == ["experiments/probes_cpu/experiment.json"]
    assert INPUTS["prompt_probes"] == ("experiments/probes_cpu/experiment.json",)
    synthetic_experiment_records(run / "experiments" / "probes_cpu", experiment="probes_cpu")
    assert "prompt_probes" not in missing_inputs(run)
    path = probe_plots.probe_differences_from_run(run, tmp_path / "out")
    assert path == tmp_path / "out" / probe_plots.FIGURE and path.stat().st_size > 10_000

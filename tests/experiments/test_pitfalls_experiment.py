"""The pitfalls experiment: its files, the table from synthetic records (each row recomputed with sklearn),
and a tiny end-to-end run (a trained base, its checkpoint and a sampling variant) on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import f1_score
from test_experiments import TINY, _corpora

from dialoguellm.experiments import pitfalls as table
from dialoguellm.experiments import record, runner, spec
from dialoguellm.io import write_json
from dialoguellm.labels import LABELS
from dialoguellm.runs import ExperimentLayout

FAST = 300


def test_the_cpu_and_paper_files_ask_the_same_questions():
    cpu, paper = spec.load_experiment("pitfalls_cpu"), spec.load_experiment("pitfalls_paper")
    assert cpu.profile == "cpu" and paper.profile == "paper"
    for experiment in (cpu, paper):
        arms = {a.name: a for a in experiment.arms}
        assert experiment.baseline == "base" and len(experiment.seeds) >= 3
        assert {"greedy_exact", "greedy_edit", "demos7", "future", "checkpoint_1"} <= set(arms)
        assert all(a.reuses == "base" for n, a in arms.items() if n not in ("base", "future"))
        assert arms["future"].reuses is None and arms["future"].config.prompt.future_turns > 0
        assert arms["base"].config.train.keep_every_eval and arms["base"].config.prompt.future_turns == 0
        sampled = [a for n, a in arms.items() if n.startswith("sampled_random_")]
        assert len(sampled) >= 3 and len({a.config.eval.sampling_seed for a in sampled}) == len(sampled)
        assert all(a.config.eval.do_sample and a.config.eval.fallback == "random" for a in sampled)
        assert arms["greedy_edit"].config.eval.parser == "edit_distance"
        assert arms["demos7"].config.prompt.fixed_demonstrations == "dialoguellm"
        # every practice of the table has its arms
        for practice in table.PRACTICES:
            if practice.kind in ("arms",):
                assert practice.arm in arms and practice.against in arms


@pytest.mark.slow
def test_every_prompt_of_the_cpu_experiment_fits_its_arm_cutoff():
    """Each distinct prompt setting of pitfalls_cpu builds every test prompt of both corpora with the embedded
    model's tokenizer: DialogueLLM's seven demonstrations do not fit the training cutoff of 256 tokens (a run
    stopped on MELD dia2_utt0 with 255 + 4), so the demos7 arm lifts it, as the test script never truncates."""
    from dialoguellm.corpora.readers import load_corpora
    from dialoguellm.model.loading import load_tokenizer
    from dialoguellm.prompts.builder import builders_from_config, dialogue_index, rows_of

    experiment = spec.load_experiment("pitfalls_cpu")
    corpora = load_corpora(list(experiment.datasets))
    tokenizer = load_tokenizer(experiment.arms[0].config)
    checked = set()
    for arm in experiment.arms:
        prompt = arm.config.prompt
        if (key := repr(prompt)) in checked:
            continue
        checked.add(key)
        for dataset, builder in builders_from_config(tokenizer, corpora, arm.config).items():
            rows = rows_of(corpora[dataset]["test"])
            dialogues = dialogue_index(rows)
            for row in rows:
                builder.build(row, dialogues[row["dialogue_id"]])  # raises when a prompt cannot fit
    assert len(checked) >= 3  # the trained prompt, the seven demonstrations, the future turn


def _synthetic(folder: Path, seeds=(1, 2, 3), n: int = 60) -> Path:
    """A pitfalls folder with random predictions: base, checkpoints, generation variants; demos7 = base."""
    rng = np.random.default_rng(0)
    layout = ExperimentLayout(folder)
    test = {d: {"example_id": [f"{d}{i}" for i in range(n)], "dialogue_id": [f"{d}{i // 4}" for i in range(n)],
                "gold_id": rng.integers(0, len(LABELS[d]), n).tolist()} for d in ("meld", "emorynlp")}  # fmt: skip
    arms = ["base", "checkpoint_1", "checkpoint_2", "greedy_exact", "greedy_edit", "sampled_random_1",
            "sampled_random_2", "demos7", "future"]  # fmt: skip
    plan = {"format": record.FORMAT, "experiment": "pitfalls_cpu", "baseline": "base", "seeds": list(seeds),
            "metrics": ["weighted_f1"], "arms": {a: {"label": a, "group": "other", "tuned": True, "paper": None,
            "datasets": list(test), "context_turns": "1", "k_shot": 1} for a in arms},
            "units": [[a, s] for s in seeds for a in arms], "test": test}  # fmt: skip
    write_json(layout.plan, plan)
    identity = record.RunIdentity(None, "synthetic", None, "test", "3", {}, "synthetic", "test", 0.0, 0.0)
    base_preds = {}
    for s in seeds:
        for i, arm in enumerate(arms):
            predictions = {}
            for d, t in test.items():
                gold = np.array(t["gold_id"])
                if arm == "demos7":
                    pred = np.array(base_preds[(s, d)])
                else:
                    pred = np.where(
                        rng.random(n) < 0.3 + 0.05 * i, gold, 0
                    )  # the rest "neutral": the swap matters
                    if arm.startswith("greedy") or arm.startswith("sampled"):
                        pred = np.where(rng.random(n) < 0.2, -1, pred)
                if arm == "base":
                    base_preds[(s, d)] = pred.tolist()
                predictions[d] = record.Predictions(
                    t["example_id"], t["dialogue_id"], t["gold_id"], pred.tolist()
                )
            selection = {"checkpoint": 0, "dev_weighted_f1": float(rng.random())}
            record.save_unit(layout, record.UnitRecord(
                "pitfalls_cpu", arm, s, identity, {}, {d: {"test": t["example_id"]} for d, t in test.items()}, {},
                predictions, {}, selection=selection,
            ))  # fmt: skip
    return folder


def test_the_table_recomputes_from_the_records_with_sklearn(tmp_path):
    folder = _synthetic(tmp_path / "pitfalls_cpu")
    frame = table.pitfall_table(folder, n_resamples=FAST, overlap=tmp_path / "absent")
    units = record.load_units(folder)
    preds = record.prediction_frame(units)
    for d in ("meld", "emorynlp"):
        labels = list(range(len(LABELS[d])))
        rows = frame.set_index(["key", "dataset"])
        base = preds[(preds.arm == "base") & (preds.dataset == d)]
        swapped = [f1_score(g.pred_id, g.gold_id, labels=labels, average="weighted", zero_division=0)
                   - f1_score(g.gold_id, g.pred_id, labels=labels, average="weighted", zero_division=0)
                   for _, g in base.groupby("seed")]  # fmt: skip
        assert rows.loc[("swapped_f1", d), "effect"] == pytest.approx(np.mean(swapped))
        f1 = [f1_score(g.gold_id, g.pred_id, labels=labels, average="weighted", zero_division=0)
              for _, g in base.groupby("seed")]  # fmt: skip
        best = rows.loc[("best_of_seeds", d)]
        assert best["effect"] == pytest.approx(max(f1) - np.mean(f1)) and best["effect"] >= 0
        # demos7 predicts exactly as base: no effect, and the row says so
        same = rows.loc[("demos7", d)]
        assert same["effect"] == 0 and same["verdict"] == table.NO_EFFECT
        sampling = rows.loc[("sampling", d)]
        assert sampling["sampling_seeds"] == 2 and sampling["spread_low"] <= sampling["spread_high"]
        assert rows.loc[("select_within", d), "effect"] >= 0 and rows.loc[("select_over", d), "effect"] >= 0
        assert "not yet run" in rows.loc[("overlap", d), "note"]
        assert "training prompts cut" in rows.loc[("truncation", d), "note"]
    assert set(frame["verdict"]) <= {"inflates", "deflates", table.NO_EFFECT, "a count, not an arm", ""}


def test_the_verdict_names_the_direction_only_when_the_interval_excludes_zero():
    assert table.verdict(0.01, 0.03) == "inflates" and table.verdict(-0.03, -0.01) == "deflates"
    assert table.verdict(-0.01, 0.02) == table.NO_EFFECT and table.verdict(0.0, 0.02) == table.NO_EFFECT


PITFALLS = {
    "description": "A trained base, its first kept checkpoint, and sampling with a random fallback.",
    "profile": "cpu",
    "arms": [
        "base",
        {"arm": {"name": "checkpoint_1", "reuses": "base"}, "eval": {"checkpoint": 1}},
        {
            "arm": {"name": "sampled_random_1", "reuses": "base"},
            "eval": {
                "mode": "generate",
                "do_sample": True,
                "temperature": 0.7,
                "num_beams": 2,
                "parser": "first_label",
                "fallback": "random",
                "sampling_seed": 1,
                "max_new_tokens": 3,
            },
        },
    ],  # fmt: skip
    "baseline": "base",
    "seeds": [1],
    "samples": {"train_per_dataset": 8, "dev_per_dataset": 4, "test_per_dataset": 6, "sample_seed": 0},
    "set": {"eval.calibrate": False, "train.keep_every_eval": True, "train.eval_every": 1},
    "metrics": ["weighted_f1"],
}


@pytest.mark.slow
def test_a_tiny_pitfalls_run_scores_kept_checkpoints_and_sampled_generations(tiny_model_dir, tmp_path):
    path = tmp_path / "pitfalls_tiny.yaml"
    path.write_text(yaml.safe_dump(PITFALLS))
    experiment = spec.load_experiment(path, overrides={**TINY, "model.name": tiny_model_dir})
    layout = ExperimentLayout(tmp_path / "run" / "experiments" / "pitfalls_tiny")
    done = runner.run_experiment(experiment, _corpora(), layout, progress=False, command="t")
    assert done == ["base.seed1", "checkpoint_1.seed1", "sampled_random_1.seed1"]
    base, first, sampled = record.load_units(layout.root)
    kept = layout.training("base", 1) / "evals"
    assert sorted(p.name for p in kept.iterdir()) == ["eval1", "eval2"]  # max_steps 2, a dev evaluation each
    assert first.identity.adapter == str(kept / "eval1") and first.selection["checkpoint"] == 1
    assert base.selection["checkpoint"] == 0 and "dev_weighted_f1" in base.selection
    assert sampled.predictions["meld"].output is not None and min(sampled.predictions["meld"].pred_id) >= 0
    assert sampled.config["eval"]["sampling_seed"] == 1 and sampled.identity.train_seconds == 0
    frame = table.pitfall_table(layout.root, n_resamples=FAST, overlap=tmp_path / "absent")
    assert {"swapped_f1", "truncation", "overlap"} <= set(frame["key"])

    # a checkpoint that was not kept is refused with the fix
    missing = dict(PITFALLS, arms=PITFALLS["arms"][:1] + [{"arm": {"name": "checkpoint_9", "reuses": "base"},
                                                           "eval": {"checkpoint": 9}}])  # fmt: skip
    path.write_text(yaml.safe_dump(missing))
    other = spec.load_experiment(path, overrides={**TINY, "model.name": tiny_model_dir})
    with pytest.raises(ValueError, match="train.keep_every_eval"):
        runner.run_experiment(
            other, _corpora(), ExperimentLayout(tmp_path / "run2"), progress=False, command="t"
        )


def test_the_renderer_the_block_and_the_figure_read_the_same_table(tmp_path):
    from dialoguellm.plots.pitfalls import pitfalls_from_run
    from dialoguellm.report import pitfalls_table, readme_block, update_generated_blocks

    results = tmp_path / "results"
    doc = tmp_path / "PITFALLS.md"
    doc.write_text("# page\n\n<!-- pitfalls:start -->\n<!-- pitfalls:end -->\n")
    assert readme_block("pitfalls", results) == "" and update_generated_blocks(doc, results) == []
    folder = _synthetic(results / "experiments" / "pitfalls_cpu")
    text = pitfalls_table(results, n_resamples=FAST)
    assert text == pitfalls_table(folder, n_resamples=FAST)  # the results folder or the experiment folder
    assert "| the 7 fixed demonstrations" in text and table.NO_EFFECT in text and "(row 8)" in text
    assert update_generated_blocks(doc, results) == ["pitfalls"]
    assert "swapped" in doc.read_text() and update_generated_blocks(doc, results) == []
    # the README's short form: one row per practice, one column per corpus, from the same table
    summary = readme_block("pitfalls_summary", results)
    frame = table.pitfall_table(folder, n_resamples=FAST)
    assert summary.count("\n| ") == 1 + frame["short"].nunique()  # the header, then one row per practice
    swapped = frame[frame["key"] == "swapped_f1"].iloc[0]
    assert f"| {swapped['short']} | {100 * swapped['effect']:+.1f} [" in summary
    for word in ("inflates", "deflates"):  # a word only where the interval excludes 0
        assert summary.count(f"] {word}") == (frame["verdict"] == word).sum()
    cut = frame[frame["key"] == "truncation"]
    assert (" cut |" in summary) == (not cut.empty)
    figure = pitfalls_from_run(results, tmp_path / "figures")
    assert figure is not None and figure.stat().st_size > 10_000
    assert pitfalls_from_run(tmp_path / "empty", tmp_path / "figures") is None


def test_a_training_or_unit_started_before_the_new_settings_existed_still_resumes(tmp_path):
    """The settings this experiment added (prompt.future_turns, eval.parser, train.keep_every_eval, ...) are
    absent from folders an older release wrote; at their defaults they count as unchanged, elsewhere not."""
    from dialoguellm.config import Config, save_config
    from dialoguellm.training.checkpoints import check_same_config

    saved = tmp_path / "config.yaml"
    save_config(Config(), saved)
    text = saved.read_text()
    old = "\n".join(
        line
        for line in text.splitlines()
        if not line.strip().startswith(("future_turns", "keep_every_eval", "parser"))
    )
    saved.write_text(old + "\n")
    check_same_config(Config(), saved)  # resumes
    changed = Config()
    changed.prompt.future_turns = 1
    with pytest.raises(ValueError, match="prompt.future_turns"):
        check_same_config(changed, saved)
    marker = tmp_path / "unit"
    marker.mkdir()
    settings = runner._settings(Config())
    older = {s: {k: v for k, v in values.items() if k not in ("future_turns", "checkpoint")}
             if isinstance(values, dict) else values for s, values in settings.items()}  # fmt: skip
    write_json(marker / runner.JOB_FILE, older)
    runner._claim(marker, Config())  # the unit's training folder is still its own
    with pytest.raises(ValueError, match="other settings"):
        runner._claim(marker, changed)


COMMITTED = Path(__file__).resolve().parents[2] / "results" / "cpu" / "experiments" / "pitfalls_cpu"


@pytest.mark.skipif(
    not (COMMITTED / "experiment.json").is_file(), reason="make pitfalls has not been committed"
)
def test_the_committed_arm_rows_recompute_from_the_records_with_sklearn():
    """An auditor's check (docs/PITFALLS.md, "Recompute a row"): each arm-against-arm row's effect is the mean
    over training seeds of the weighted-F1 difference, recomputed here from the committed predictions."""
    frame = table.pitfall_table(COMMITTED, n_resamples=FAST)

    def wf1(arm, seed, dataset):
        p = json.loads((COMMITTED / "units" / f"{arm}.seed{seed}.json").read_text())["predictions"][dataset]
        return f1_score(p["gold_id"], p["pred_id"], average="weighted")

    checked = 0
    for practice in (p for p in table.PRACTICES if p.kind == "arms"):
        for dataset in ("meld", "emorynlp"):
            diffs = [wf1(practice.arm, s, dataset) - wf1(practice.against, s, dataset) for s in (1, 2, 3)]
            row = frame[(frame["key"] == practice.key) & (frame["dataset"] == dataset)].iloc[0]
            assert row["effect"] == pytest.approx(np.mean(diffs), abs=1e-9), (practice.key, dataset)
            checked += 1
    assert checked == 8  # generation, edit distance, the seven demonstrations, the future turn; two corpora

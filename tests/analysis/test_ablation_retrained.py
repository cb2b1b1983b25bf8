"""Retrained ablations (analysis.ablation_retrained): the packaged grid, and a tiny end-to-end grid (tiny
random LLaMA, synthetic corpora) that trains every arm x seed, resumes without redoing finished ones,
continues an interrupted training from its checkpoint, and summarises the one results file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dialoguellm.analysis import ablation_retrained as retrained

TINY = {
    "model.dtype": "fp32", "model.num_threads": 1,
    "data.train_per_dataset": 8, "data.dev_per_dataset": 4, "train.batch_size": 4,
    "train.micro_batch_size": 4, "train.grad_accum": 1, "train.max_steps": 2, "train.warmup_steps": 0,
    "train.save_every": 1, "prompt.cutoff_len": 1024, "eval.batch_size": 8,
}  # fmt: skip
ARMS = ["base", "context_z0", "context_z2", "kshot_0", "no_lora", "meld_only"]


def test_the_cpu_grid_asks_the_papers_questions():
    grid = retrained.load_grid("cpu")
    arms = {a.name: a for a in grid.arms}
    assert list(arms) == ARMS and grid.seeds == [1, 2, 3] and grid.test_per_dataset >= 500
    base = arms["base"].config
    assert (base.prompt.context_turns, base.prompt.k_shot, arms["base"].tuned) == (1, 1, True)
    assert arms["context_z0"].config.prompt.context_turns == 0
    assert arms["context_z2"].config.prompt.context_turns == 2
    assert arms["kshot_0"].config.prompt.k_shot == 0  # the one config drives training and test prompts
    assert not arms["no_lora"].tuned and arms["no_lora"].config.prompt == base.prompt
    assert arms["meld_only"].config.data.datasets == ["meld"] and base.data.datasets == ["meld", "emorynlp"]
    # The reduced size applies to every arm; everything else is the cpu profile.
    assert {a.config.data.train_per_dataset for a in grid.arms} == {400}
    assert base.train.lr == 3.0e-4 and base.model.name == "embedded"
    keys = [retrained.job_key(a, s) for a, s in grid.jobs()]
    assert len(keys) == 5 * 3 + 1 and keys[0] == "no_lora/untrained" and keys.count("base/seed3") == 1


PAPER_ARMS = ["base", "context_z0", "context_z2", "context_z3", "context_zall", "video_off", "kshot_0",
              "kshot_5", "no_lora"]  # fmt: skip


def test_the_paper_grid_asks_the_papers_questions():
    grid = retrained.load_grid("paper")
    arms = {a.name: a for a in grid.arms}
    assert list(arms) == PAPER_ARMS and grid.seeds == [42, 43, 44, 45, 46] and grid.test_per_dataset == 0
    base = arms["base"]
    assert base.config.model.name == "meta-llama/Llama-2-7b-hf" and base.config.data.train_per_dataset == 0
    # With the base arm (z = 1, k = 1, video on, LoRA), the arms cover each of the paper's comparisons.
    values: dict[str, set] = {"context": set(), "video": set(), "lora": set(), "k_shot": set()}
    for arm in grid.arms:
        p = arm.config.prompt
        values["context"].add(str(p.context_turns))
        values["video"].add(p.use_video)
        values["lora"].add(arm.tuned)
        values["k_shot"].add(p.k_shot)
        changed = [
            k
            for k in ("context_turns", "k_shot", "use_video")
            if getattr(p, k) != getattr(base.config.prompt, k)
        ] + (["tuned"] if not arm.tuned else [])
        assert len(changed) == (arm.name != "base"), f"{arm.name} changes {changed}"
    assert values == {
        "context": {"0", "1", "2", "3", "all"}, "video": {True, False}, "lora": {True, False}, "k_shot": {0, 1, 5},
    }  # fmt: skip
    assert {a.paper for a in grid.arms} <= set(retrained.ablation.paper_ablations()["arm"])
    assert len(grid.jobs()) == 8 * 5 + 1


def test_an_absent_iemocap_is_dropped_from_every_arm(monkeypatch):
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    with pytest.warns(UserWarning, match="(?i)iemocap"):
        grid = retrained.load_grid("paper")
    assert {tuple(a.config.data.datasets) for a in grid.arms} == {("meld", "emorynlp")}


def test_a_grid_without_the_base_arm_or_with_a_bad_key_is_refused(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text(yaml.safe_dump({"profile": "cpu", "arms": ["context_z0"], "seeds": [1]}))
    with pytest.raises(ValueError, match="must include 'base'"):
        retrained.load_grid(bad)
    bad.write_text(yaml.safe_dump({"profile": "cpu", "arms": ["base"], "seeds": [1], "sed": 2}))
    with pytest.raises(ValueError, match=r"g\.yaml: unknown key"):
        retrained.load_grid(bad)
    bad.write_text(yaml.safe_dump({"profile": "cpu", "arms": ["base"], "seeds": [1], "split": "train"}))
    with pytest.raises(ValueError, match="never train"):
        retrained.load_grid(bad)


def _tiny_grid(tmp_path: Path, tiny_model_dir: str, seeds=(1, 2)) -> retrained.Grid:
    path = tmp_path / "tiny.yaml"
    grid = {"profile": "cpu", "arms": ARMS, "seeds": list(seeds), "test_per_dataset": 6, "sample_seed": 0}
    path.write_text(yaml.safe_dump(grid))
    return retrained.load_grid(path, overrides={**TINY, "model.name": tiny_model_dir})


def _corpora() -> dict:
    from tiny import synthetic_corpus

    return {"meld": synthetic_corpus("meld"), "emorynlp": synthetic_corpus("emorynlp", seed=5)}


@pytest.mark.slow
def test_tiny_grid_runs_every_arm_and_seed_resumes_and_summarises(tiny_model_dir, tmp_path, monkeypatch):
    from dialoguellm.training import loop

    grid, corpora = _tiny_grid(tmp_path, tiny_model_dir), _corpora()
    out, work = tmp_path / "out", tmp_path / "work"
    # Interrupt the first training at its end-of-run dev evaluation (after its step-1 checkpoint).
    real = loop._evaluate_dev

    def interrupted(session):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(loop, "_evaluate_dev", interrupted)
    with pytest.raises(KeyboardInterrupt):
        retrained.run_grid(grid, corpora, out, work, progress=False, command="test run 1")
    partial = json.loads((out / "results.json").read_text())
    assert list(partial["runs"]) == ["no_lora/untrained"]  # written before the interruption, intact
    assert (work / "base/seed1/checkpoint").is_dir() and not (work / "base/seed1/metrics.json").exists()

    monkeypatch.setattr(loop, "_evaluate_dev", real)
    resumed = []
    monkeypatch.setattr(loop, "train", _spy(loop.train, resumed))
    done: list[str] = []
    results = retrained.run_grid(
        grid, corpora, out, work, progress=False, command="test run 2", on_saved=done.append
    )
    assert resumed[0] is True and not any(resumed[1:])  # base/seed1 continued from its checkpoint, once
    expected = {retrained.job_key(a, s) for a, s in grid.jobs()}
    assert set(results["runs"]) == expected and len(expected) == 5 * 2 + 1 and results["finished"]
    assert "no_lora/untrained" not in done  # finished before the interruption: not redone
    metrics = json.loads((work / "base/seed1/metrics.json").read_text())
    assert metrics["steps"] == 2

    # A finished grid: nothing is trained or scored again, the file keeps every run.
    stamp = {k: r["finished"] for k, r in results["runs"].items()}
    again = retrained.run_grid(
        grid, corpora, out, work, progress=False, command="test run 3", on_saved=done.append
    )
    assert len(done) == len(expected) - 1 and {k: r["finished"] for k, r in again["runs"].items()} == stamp
    saved = retrained.load_results(out)
    assert saved["commands"] == ["test run 1", "test run 2", "test run 3"]
    _check_results_file(saved, grid)
    table = retrained.summary_table(saved, n_resamples=200)
    _check_summary(table)
    _check_markdown(table, out, tmp_path / "results")

    # Another size is never mixed into this file.
    other = retrained.load_grid(
        grid.path, overrides={**TINY, "model.name": tiny_model_dir, "data.train_per_dataset": 6}
    )
    with pytest.raises(ValueError, match="results.json was written by a grid with other settings"):
        retrained.run_grid(other, corpora, out, work, progress=False)
    # ... nor is an adapter of another size reused from the work folder.
    with pytest.raises(ValueError, match="holds a training with other settings"):
        retrained.run_grid(other, corpora, tmp_path / "out2", work, progress=False)


def _spy(train, resumed: list):
    def spying(*args, **kwargs):
        resumed.append(kwargs.get("resume"))
        return train(*args, **kwargs)

    return spying


def _check_results_file(saved: dict, grid: retrained.Grid) -> None:
    assert {"environment", "command", "grid", "sample", "hardware", "model"} <= set(saved)
    assert set(saved["grid"]["arms"]) == set(ARMS)
    assert saved["grid"]["arms"]["kshot_0"]["config"]["prompt"]["k_shot"] == 0
    for sample in saved["sample"].values():
        assert len(sample["example_id"]) == len(sample["gold_id"]) == len(sample["dialogue_id"]) == 6
    for key, run in saved["runs"].items():
        assert run["score_seconds"] >= 0 and (run["train_seconds"] > 0) == run["trained"], key
        datasets = ["meld"] if run["arm"] == "meld_only" else ["meld", "emorynlp"]
        assert list(run["datasets"]) == datasets, key
        for dataset, scored in run["datasets"].items():
            gold, pred = np.array(saved["sample"][dataset]["gold_id"]), np.array(scored["pred_id"])
            assert scored["n"] == len(pred) == 6 and scored["accuracy"] == pytest.approx(
                (gold == pred).mean()
            )
            assert {"weighted_f1", "macro_f1"} <= set(scored)


def _check_summary(table: pd.DataFrame) -> None:
    rows = table.set_index(["arm", "dataset"])
    assert len(table) == 5 * 2 + 1
    assert rows.loc[("base", "meld"), "runs"] == 2 and np.isnan(
        rows.loc[("base", "meld"), "delta_weighted_f1"]
    )
    assert rows.loc[("no_lora", "meld"), "runs"] == 1 and np.isnan(
        rows.loc[("no_lora", "meld"), "accuracy_sd"]
    )
    for key in [
        ("context_z0", "meld"),
        ("kshot_0", "emorynlp"),
        ("no_lora", "emorynlp"),
        ("meld_only", "meld"),
    ]:
        row = rows.loc[key]
        assert row["delta_weighted_f1_low"] <= row["delta_weighted_f1"] <= row["delta_weighted_f1_high"]
        assert 0 <= row["delta_weighted_f1_p"] <= 1
    # Paired over the seeds: 2 seeds x 6 utterances (the untuned arm, scored once, beside each base seed).
    assert rows.loc[("context_z0", "meld"), "paired_utterances"] == 12
    assert rows.loc[("no_lora", "meld"), "paired_utterances"] == 12
    assert rows.loc[("context_z0", "meld"), "paper_weighted_f1"] == pytest.approx(67.94)
    assert rows.loc[("context_z0", "meld"), "paper_delta_weighted_f1"] == pytest.approx(67.94 - 71.90)
    assert np.isnan(rows.loc[("meld_only", "meld"), "paper_weighted_f1"])
    shown = retrained.display_table(table)
    assert (
        len(shown) == len(table) and shown["weighted F1 minus base [95% CI]"].str.contains(r"\[").sum() == 9
    )


def _check_markdown(table: pd.DataFrame, out: Path, results: Path) -> None:
    """The README's ablation table (``report.ablations_table``, read from a results copy) shows the summary."""
    from dialoguellm.report import ablations_table

    (results / "ablations_retrained").mkdir(parents=True)
    shutil.copy2(out / "results.json", results / "ablations_retrained" / "results.json")
    lines = ablations_table(results, n_resamples=200).splitlines()
    rows = [line.strip("| ").split(" | ") for line in lines if line.startswith("| ")][1:]
    assert len(rows) == len(table) and "the same 6 test utterances per corpus" in lines[0]
    for cells, (_, row) in zip(rows, table.iterrows(), strict=True):
        assert cells[:2] == [row["label"], row["dataset"]]
        assert cells[3].split(" ± ")[0] == f"{row['weighted_f1_mean']:.1f}"
        if np.isnan(row["delta_weighted_f1"]):
            assert cells[4:6] == ["-", "-"]
        else:
            verdict = row["delta_weighted_f1_verdict"]
            assert cells[4].startswith(f"{row['delta_weighted_f1']:+.1f} [")
            assert cells[5] == {"A higher": "arm higher", "B higher": "base higher"}.get(verdict, verdict)
        if np.isnan(row["paper_weighted_f1"]):  # no paper number: its note, or "-" without a paper row
            assert cells[6] == (row["paper_note"] or "-")
        else:
            assert cells[6].startswith(f"{row['paper_weighted_f1']:.1f} (")
    # The base arm's seeds, each with its own interval, and their mean ± sd (= the table's base row).
    spread = [line for line in lines if line.startswith("- ")]
    base = table[table["arm"] == "base"].set_index("dataset")
    assert [line.split(":")[0] for line in spread] == ["- meld", "- emorynlp"]
    for line in spread:
        row = base.loc[line[2:].split(":")[0]]
        assert line.count("seed ") == 2 and line.count("[") == 2
        assert line.endswith(f"mean ± sd {row['weighted_f1_mean']:.1f} ± {row['weighted_f1_sd']:.1f}")


def test_the_pooled_difference_pairs_each_seed_with_the_base_of_the_same_seed():
    sample = {"gold_id": [0, 1, 2, 0], "dialogue_id": ["a", "a", "b", "c"], "example_id": list("wxyz")}

    def run(arm, seed, pred):
        return {"arm": arm, "seed": seed, "datasets": {"meld": {"pred_id": pred}}}

    results = {
        "sample": {"meld": sample},
        "runs": {
            "base/seed1": run("base", 1, [0, 1, 2, 0]), "base/seed2": run("base", 2, [1, 1, 1, 1]),
            "z0/seed2": run("z0", 2, [0, 0, 0, 0]), "z0/seed1": run("z0", 1, [2, 2, 2, 2]),
            "u/untrained": run("u", None, [0, 1, 0, 1]),
        },
    }  # fmt: skip
    gold, arm, base, groups = retrained._pooled_pairs(results, "z0", "meld")
    assert list(arm) == [2, 2, 2, 2, 0, 0, 0, 0] and list(base) == [0, 1, 2, 0, 1, 1, 1, 1]
    assert list(gold) == [0, 1, 2, 0] * 2 and list(groups) == ["a", "a", "b", "c"] * 2
    _, untuned, base, _ = retrained._pooled_pairs(results, "u", "meld")
    assert list(untuned) == [0, 1, 0, 1] * 2 and list(base) == [0, 1, 2, 0, 1, 1, 1, 1]
    assert retrained._pooled_pairs(results, "absent", "meld") is None


@pytest.mark.slow
def test_the_paper_grid_runs_on_a_tiny_model_with_descriptions(tiny_model_dir, tmp_path):
    tiny = {
        **TINY,
        "model.name": tiny_model_dir,
        "model.quantization": "none",
        "data.datasets": ["meld", "emorynlp"],
    }
    grid = retrained.load_grid("paper", overrides=tiny)
    grid.seeds = grid.seeds[:1]  # one seed of the five: every arm trains and scores once
    described = {f"dia{d}_utt{t}": "Two people talk in a kitchen." for d in range(4) for t in range(4)}
    descriptions = {split: dict(described) for split in ("train", "dev", "test")}
    out, work = tmp_path / "out", tmp_path / "work"
    results = retrained.run_grid(
        grid, _corpora(), out, work, progress=False, command="paper grid", descriptions=descriptions
    )
    assert results["finished"] and len(results["runs"]) == 8 + 1
    assert results["identity"]["descriptions"] == {"dev": 16, "test": 16, "train": 16}
    saved = retrained.load_results(out)
    assert (
        saved["grid"]["arms"]["video_off"]["use_video"] is False
        and saved["grid"]["arms"]["base"]["use_video"]
    )
    table = retrained.summary_table(saved, n_resamples=100)
    assert set(table["arm"]) == set(PAPER_ARMS)
    row = table.set_index(["arm", "dataset"]).loc[("video_off", "meld")]
    assert row["paper_weighted_f1"] == pytest.approx(59.75) and row["paired_utterances"] == row["n"]
    # The same folder without the descriptions is another grid: refused, not mixed in.
    with pytest.raises(ValueError, match="other settings"):
        retrained.run_grid(grid, _corpora(), out, work, progress=False)

"""The README's results table is recomputed from the committed run outputs in results/, and the headline
table and the results export work on a small synthetic run folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from dialoguellm.labels import normalised_label_names
from dialoguellm.report import (
    CALIBRATED,
    GENERATED_DOCUMENTS,
    RAW,
    README_BLOCKS,
    UNTUNED,
    export_results,
    export_seeds,
    headline_systems,
    headline_table,
    readme_block,
    seeds_table,
)

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "cpu"
README = REPO / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
# Every generated block of every document (``make tables``): (document, block name) where the markers are.
SHOWN = [
    (document, block)
    for document in GENERATED_DOCUMENTS
    for block in README_BLOCKS
    if f"<!-- {block}:start -->" in (REPO / document).read_text(encoding="utf-8")
]


def _frame(n_dialogues: int, seed: int, calibrated: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    labels = normalised_label_names("meld")
    rows = []
    for d in range(n_dialogues):
        for u in range(int(rng.integers(2, 6))):
            gold = int(rng.integers(len(labels)))
            pred = gold if rng.random() < 0.6 else int(rng.integers(len(labels)))
            rows.append({"example_id": f"dia{d}_utt{u}", "dataset": "meld", "gold_id": gold, "pred_id": pred})
    frame = pd.DataFrame(rows)
    frame["gold"] = [labels[i] for i in frame["gold_id"]]
    frame["pred"] = [labels[i] for i in frame["pred_id"]]
    frame["parsed"] = True
    if calibrated:
        raw = frame["pred_id"].to_numpy().copy()
        flip = rng.random(len(raw)) < 0.2
        raw[flip] = 0
        frame["pred_id_raw"] = raw
    return frame


def _run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "evaluation").mkdir(parents=True)
    (run / "baselines").mkdir()
    (run / "training" / "adapter").mkdir(parents=True)
    ours = _frame(40, 1, calibrated=True)
    ours.to_csv(run / "evaluation" / "test_meld_predictions.csv", index=False)
    floor = ours[["example_id", "dataset", "gold_id", "gold", "parsed"]].assign(pred_id=0, pred="neutral")
    floor.to_csv(run / "baselines" / "meld_majority_test_predictions.csv", index=False)
    (run / "training" / "adapter" / "adapter_model.safetensors").write_bytes(b"weights are not results")
    (run / "training" / "config.yaml").write_text("model: {}\n")
    return run


def test_headline_numbers_are_sklearn_and_intervals_cover_them(tmp_path):
    run = _run(tmp_path)
    systems = headline_systems(run)
    ours = systems[CALIBRATED]["meld"]
    raw = systems[RAW]["meld"]
    assert (raw["pred_id"] == ours["pred_id_raw"]).all() and not (raw["pred_id"] == ours["pred_id"]).all()
    table = headline_table(run, n_resamples=500)
    for frame, name in ((ours, CALIBRATED), (raw, RAW)):
        acc = 100 * accuracy_score(frame["gold_id"], frame["pred_id"])
        wf1 = 100 * f1_score(frame["gold_id"], frame["pred_id"], average="weighted")
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = re.findall(r"([\d.]+) \[([\d.]+), ([\d.]+)\]", line)
        assert [float(c[0]) for c in cells] == [round(acc, 1), round(wf1, 1)]
        for estimate, low, high in cells:
            assert float(low) <= float(estimate) <= float(high)
    assert "floor: majority class" in table and "LLaMA 2-7B" in table
    assert "Paired differences" in table


def test_export_keeps_the_layout_and_no_weights(tmp_path):
    run = _run(tmp_path)
    out = tmp_path / "results"
    written = export_results(run, out)
    assert out / "evaluation" / "test_meld_predictions.csv" in written
    assert (out / "training" / "config.yaml").is_file()
    assert not (out / "training" / "adapter" / "adapter_model.safetensors").exists()
    assert headline_table(out, n_resamples=300) == headline_table(run, n_resamples=300)


def test_export_takes_the_figure_inputs(tmp_path):
    run = _run(tmp_path)
    for name in ("data/overlap.csv", "descriptions/descriptions.jsonl"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x\n")
    (run / "data" / "meld").mkdir()
    (run / "data" / "meld" / "test.parquet").write_bytes(b"corpora stay out")
    out = tmp_path / "results"
    export_results(run, out)
    for name in ("data/overlap.csv", "descriptions/descriptions.jsonl"):
        assert (out / name).is_file(), name
    assert not (out / "data" / "meld").exists()


def test_the_report_shows_the_baselines_and_the_retrained_ablations_notebook_05_recorded(tmp_path):
    import json

    from dialoguellm.report import run_report

    run = _run(tmp_path)
    record = {
        "baselines": {"meld/majority/test": {"accuracy": 48.1, "weighted_f1": 31.3},
                      "meld/majority/dev": {"accuracy": 1.0, "weighted_f1": 1.0}},
        "retrained_ablations": {"source": "results/cpu/experiments/ablations_cpu", "arms": {
            "base/meld": {"runs": 3, "weighted_f1": 0.40, "weighted_f1_sd": 0.015, "delta_weighted_f1": None,
                          "delta_low": None, "delta_high": None, "paper_weighted_f1": 0.719},
            "no_lora/meld": {"runs": 1, "weighted_f1": 0.20, "weighted_f1_sd": None, "delta_weighted_f1": -0.20,
                             "delta_low": -0.24, "delta_high": -0.16, "paper_weighted_f1": 0.2412},
        }},
    }  # fmt: skip
    (run / "records").mkdir()
    (run / "records" / "05_ablations.json").write_text(json.dumps(record))
    text = run_report(run)
    assert "| meld/majority | 48.1 | 31.3 |" in text and "meld/majority/dev" not in text
    assert "Retrained ablations (an adapter per arm and seed; results/cpu/experiments/ablations_cpu" in text
    assert "| base/meld | 3 | 40.0 ± 1.5 | - | 71.9 |" in text
    assert "| no_lora/meld | 1 | 20.0 | -20.0 [-24.0, -16.0] | 24.1 |" in text
    assert "Prompt probes" not in text  # notebook 05 recorded no probes


def test_the_report_shows_the_probe_records_notebook_05_showed(tmp_path):
    import json

    from tiny import synthetic_experiment_records

    from dialoguellm.report import run_report

    run = _run(tmp_path)
    (run / "records").mkdir()
    shown = {"probes": {"status": "shown", "source": "results/cpu/experiments/probes_cpu", "arms": {}}}
    (run / "records" / "05_ablations.json").write_text(json.dumps(shown))
    text = run_report(run)
    assert "Prompt probes: notebook 05 showed the records in results/cpu/experiments/probes_cpu" in text
    # a record of the retired hand-built probes (no status) says nothing
    (run / "records" / "05_ablations.json").write_text(json.dumps({"probes": {"base/meld": {"n": 500}}}))
    assert "Prompt probes" not in run_report(run)
    synthetic_experiment_records(run / "experiments" / "probes_cpu", experiment="probes_cpu")
    text = run_report(run)  # the run's own records: their table
    assert "probes_cpu (test sample" in text and "| z = 0 (test only) | meld | 40 | 3 |" in text


def test_export_takes_no_folder_that_no_stage_writes(tmp_path):
    run = _run(tmp_path)
    (run / "ablations").mkdir()
    (run / "ablations" / "results.csv").write_text("x\n")
    export_results(run, tmp_path / "results")
    assert not (tmp_path / "results" / "ablations").exists()


def test_the_untuned_model_is_compared_with_ours_when_notebook_04_scored_it(tmp_path):
    run = _run(tmp_path)
    (run / "evaluation_base").mkdir()
    untuned = _frame(40, 1, calibrated=False).assign(pred_id=0, pred="neutral")
    untuned.to_csv(run / "evaluation_base" / "test_meld_predictions.csv", index=False)
    table = headline_table(run, n_resamples=300)
    assert f"| {UNTUNED} |" in table and f"| {RAW} - {UNTUNED} | meld |" in table


def test_export_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        export_results(tmp_path, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.skipif(not RESULTS.is_dir(), reason="results/cpu is not in this checkout")
def test_readme_results_table_is_recomputed_from_committed_files():
    text = README.read_text(encoding="utf-8")
    assert START in text and END in text, "README.md lost its results markers"
    shown = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert shown == headline_table(RESULTS).strip(), (
        "README's results table differs from `dialoguellm summary --run-dir results/cpu`; "
        "paste the table it prints."
    )


def test_floors_are_compared_on_the_utterances_ours_were_scored_on(tmp_path):
    run = _run(tmp_path)
    ours = pd.read_csv(run / "evaluation" / "test_meld_predictions.csv", dtype={"example_id": str})
    sample = ours.iloc[: len(ours) // 2]  # a test sample, as with data.test_per_dataset
    sample.to_csv(run / "evaluation" / "test_meld_predictions.csv", index=False)
    table = headline_table(run, n_resamples=300)  # the floor file still covers the whole test set
    assert "floor: majority class" in table and "Paired differences" in table
    floor = headline_systems(run)["floor: majority class"]["meld"]
    assert sorted(floor["example_id"]) == sorted(sample["example_id"])


def _seeds_run(tmp_path: Path, seeds=(42, 43, 44)) -> Path:
    """What `dialoguellm train --all-seeds` + `evaluate --all-seeds --split test` leave in a run folder."""
    run = tmp_path / "seeds_run"
    for i, seed in enumerate(seeds):
        folder = run / "evaluation" / f"seed{seed}"
        folder.mkdir(parents=True)
        frame = _frame(30, 10, calibrated=True)  # every seed scores the same test utterances ...
        other = _frame(30, 10 + i, calibrated=True)  # ... and predicts its own labels
        size = min(len(frame), len(other))
        frame.loc[: size - 1, ["pred_id", "pred_id_raw"]] = other[["pred_id", "pred_id_raw"]].to_numpy()[
            :size
        ]
        frame["pred"] = [normalised_label_names("meld")[k] for k in frame["pred_id"]]
        frame.to_csv(folder / "test_meld_predictions.csv", index=False)
        (folder / "summary.json").write_text(json.dumps({"adapter_sha256": f"{seed:064d}"}))
        (run / f"training_seed{seed}").mkdir(parents=True)
        (run / f"training_seed{seed}" / "config.yaml").write_text(f"train: {{seed: {seed}}}\n")
        (run / f"training_seed{seed}" / "adapter").mkdir()
        (run / f"training_seed{seed}" / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    summary = {"seeds": list(seeds), "split": "test", "results": {}}
    (run / "evaluation" / "seeds_summary.json").write_text(json.dumps(summary))
    return run


def test_seeds_export_and_table_show_every_seed_with_its_interval_and_the_spread(tmp_path):
    run = _seeds_run(tmp_path)
    out = tmp_path / "results" / "seeds"
    written = export_seeds(run, out)
    assert out / "predictions.csv" in written and out / "training_seed43" / "config.yaml" in written
    assert (
        json.loads((out / "evaluation_seed43" / "summary.json").read_text())["adapter_sha256"] == f"{43:064d}"
    )
    assert not list(out.rglob("*.safetensors"))  # no weights
    table = pd.read_csv(out / "predictions.csv")
    assert list(table["seed"].unique()) == [42, 43, 44] and len(table) == sum(
        len(pd.read_csv(p)) for p in run.glob("evaluation/seed*/test_meld_predictions.csv")
    )
    text = seeds_table(out.parent, n_resamples=300)
    rows = [line for line in text.splitlines() if line.startswith("| meld")]
    assert [r.split(" | ")[1] for r in rows] == [RAW, CALIBRATED]
    labels = list(range(len(normalised_label_names("meld"))))
    for row, column in zip(rows, ("pred_id_raw", "pred_id"), strict=True):
        cells = row.strip("| ").split(" | ")
        values = []
        for seed, cell in zip((42, 43, 44), cells[2:5], strict=True):
            frame = pd.read_csv(run / "evaluation" / f"seed{seed}" / "test_meld_predictions.csv")
            values.append(100 * f1_score(frame["gold_id"], frame[column], labels=labels, average="weighted"))
            estimate, low, high = map(float, re.findall(r"-?\d+\.\d", cell))
            assert estimate == pytest.approx(values[-1], abs=0.051) and low <= estimate <= high
        assert cells[5] == f"{np.mean(values):.1f} ± {np.std(values, ddof=1):.1f}"
        estimate, low, high = map(float, re.findall(r"-?\d+\.\d", cells[6]))  # seeds and dialogues resampled
        assert estimate == pytest.approx(np.mean(values), abs=0.051) and low <= estimate <= high


def test_seeds_export_refuses_a_run_without_the_test_evaluation(tmp_path):
    run = _seeds_run(tmp_path)
    (run / "evaluation" / "seeds_summary.json").unlink()
    with pytest.raises(FileNotFoundError, match="evaluate --run-dir .* --all-seeds --split test"):
        export_seeds(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_results_keeps_the_ablations_and_seeds_other_commands_wrote(tmp_path):
    run = _run(tmp_path)
    out = tmp_path / "results"
    export_results(run, out)
    export_seeds(_seeds_run(tmp_path), out / "seeds")
    (out / "experiments" / "ablations_cpu").mkdir(parents=True)
    (out / "experiments" / "ablations_cpu" / "experiment.json").write_text("{}")
    (out / "stale.csv").write_text("a file no run writes")
    export_results(run, out)
    assert (out / "seeds" / "predictions.csv").is_file()
    assert (out / "experiments" / "ablations_cpu" / "experiment.json").read_text() == "{}"
    assert not (out / "stale.csv").exists() and (out / "evaluation" / "test_meld_predictions.csv").is_file()


@pytest.mark.slow
@pytest.mark.parametrize(("document", "block"), SHOWN, ids=[f"{d}:{b}" for d, b in SHOWN])
def test_every_generated_block_is_what_make_tables_writes_from_the_committed_files(document, block):
    """The seeds, ablation, pitfalls, overlap, probe and learning-curve tables a reader sees are what
    `make tables` prints from results/cpu now (each renderer recomputes from the committed records); a block
    whose records are not committed is empty."""
    start, end = f"<!-- {block}:start -->", f"<!-- {block}:end -->"
    text = (REPO / document).read_text(encoding="utf-8")
    assert text.count(start) == 1 and text.count(end) == 1, (
        f"{document} must hold one pair of {block} markers"
    )
    shown = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert shown == readme_block(block, RESULTS), (
        f"{document}'s {block} block differs from what `make tables` writes from results/cpu; run `make tables`."
    )


def test_the_readme_and_docs_show_the_generated_blocks_they_promise():
    assert {b for d, b in SHOWN if d == "README.md"} >= {
        "results",
        "seeds",
        "pitfalls_summary",
        "learning_curve",
    }
    assert {b for d, b in SHOWN if d == "docs/EVALUATION.md"} >= {"ablations", "overlap", "probes", "scoring"}
    assert ("docs/PITFALLS.md", "pitfalls") in SHOWN


def test_make_tables_rewrites_only_the_generated_blocks(tmp_path):
    from tiny import synthetic_experiment_records

    from dialoguellm.report import experiment_table, update_generated_blocks

    results = tmp_path / "results"
    synthetic_experiment_records(results / "experiments" / "ablations_cpu")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\nprose above\n<!-- ablations:start -->\nstale\n<!-- ablations:end -->\nprose below\n"
    )
    assert update_generated_blocks(readme, results) == ["ablations"]
    text = readme.read_text()
    assert text.startswith("# Title\n\nprose above\n<!-- ablations:start -->\n") and text.endswith(
        "-->\nprose below\n"
    )
    block = text.split("<!-- ablations:start -->\n", 1)[1].split("\n<!-- ablations:end -->", 1)[0]
    assert (
        block == experiment_table(results / "experiments" / "ablations_cpu")
        and "| MELD-only training |" in block
    )
    assert update_generated_blocks(readme, results) == []  # up to date: nothing rewritten
    readme.write_text("<!-- ablations:start -->\n")
    with pytest.raises(ValueError, match="must both be present"):
        update_generated_blocks(readme, results)

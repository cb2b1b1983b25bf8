"""Convert the retired ablation runner's one results file into experiment records (run once, committed):

    python -m dialoguellm.experiments.convert results/cpu/experiments/ablations_cpu

reads ``legacy_results.json`` in that folder (written by ``analysis.ablation_retrained``, 3 seeds x 5 arms +
no LoRA, every test prediction) and writes ``experiment.json`` and ``units/*.json`` beside it.

What the old file did not save is said in every record's ``notes``: label scores were not kept, and the
training and dev ids were not recorded; they are reconstructed here with the old runner's own rule (the
overlap removal of the arm's corpora, then a stratified draw with ``train.seed`` from what was left, the
same for dev), which is deterministic, so they are the ids that run used. Under that rule each arm drew its
training sample after its own removal: the MELD-only arm (no removal) drew from a longer MELD list and its
MELD training ids differ from the base arm's. The plan's ``pairing`` says so; new runs pair by construction.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dialoguellm.config import config_from_dict
from dialoguellm.corpora.readers import load_corpora_for
from dialoguellm.experiments.record import (
    FORMAT,
    Predictions,
    RunIdentity,
    UnitRecord,
    config_hash,
    save_unit,
)
from dialoguellm.experiments.runner import metrics_of
from dialoguellm.io import read_json, write_json
from dialoguellm.prompts import rows_of, sample_positions
from dialoguellm.runs import ExperimentLayout
from dialoguellm.training.loop import training_corpora

LEGACY_PAIRING = (
    "legacy: the retired runner drew each arm's training sample after the arm's own overlap removal, with "
    "train.seed; arms with the same corpora share their training ids, the MELD-only arm's MELD ids differ "
    "from the base arm's (new runs of this experiment pair every arm by construction)"
)


def legacy_ids(config_dict: Mapping[str, Any], corpora: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """dataset -> {train, dev} ids the retired runner's training used (its rule, deterministic)."""
    config = config_from_dict(copy.deepcopy(dict(config_dict)), source="legacy")
    cleaned, _ = training_corpora(config, {d: corpora[d] for d in config.data.datasets})
    out = {}
    for d in config.data.datasets:
        ids = {}
        for split, size in (("train", config.data.train_per_dataset), ("dev", config.data.dev_per_dataset)):
            rows = rows_of(cleaned[d][split])
            ids[split] = [
                str(rows[i]["utterance_id"]) for i in sample_positions(rows, size, config.train.seed)
            ]
        out[d] = ids
    return out


def convert(folder: str | Path, corpora: Mapping[str, Any] | None = None) -> list[Path]:
    """Write the plan and one record per arm x seed from ``<folder>/legacy_results.json``; the paths."""
    layout = ExperimentLayout(Path(folder))
    legacy = read_json(layout.legacy_results)
    grid, sample = legacy["grid"], legacy["sample"]
    arms = grid["arms"]
    corpora = corpora or load_corpora_for(
        config_from_dict(copy.deepcopy(arms["base"]["config"]), source="legacy")
    )
    plan = {
        "format": FORMAT, "experiment": "ablations_cpu", "file": grid["file"],
        "description": "The paper's ablations at CPU scale (converted from the retired runner's results file).",
        "profile": grid["profile"], "baseline": "base", "seeds": grid["seeds"],
        "samples": {"train_per_dataset": arms["base"]["config"]["data"]["train_per_dataset"],
                    "dev_per_dataset": arms["base"]["config"]["data"]["dev_per_dataset"],
                    "test_per_dataset": grid["test_per_dataset"], "split": grid["split"],
                    "sample_seed": grid["sample_seed"]},
        "set": grid["set"], "metrics": ["weighted_f1", "accuracy", "macro_f1"], "model": legacy["model"],
        "commands": [*legacy["commands"], "python -m dialoguellm.experiments.convert " + str(folder)],
        "pairing": LEGACY_PAIRING,
        "arms": {n: {k: a[k] for k in ("label", "group", "tuned", "paper", "datasets", "context_turns", "k_shot",
                                        "use_video")} for n, a in arms.items()},
        "units": [[r["arm"], r["seed"]] for r in legacy["runs"].values()],
        "test": sample,
    }  # fmt: skip
    written = [write_json(layout.plan, plan)]
    for run in legacy["runs"].values():
        written.append(save_unit(layout, _unit(run, arms[run["arm"]], legacy, corpora)))
    return written


def _unit(
    run: Mapping[str, Any], arm: Mapping[str, Any], legacy: Mapping[str, Any], corpora: Mapping
) -> UnitRecord:
    config = copy.deepcopy(arm["config"])
    if run["seed"] is not None:
        config["train"]["seed"] = run["seed"]
    env, sample = legacy["environment"], legacy["sample"]
    ids = (
        legacy_ids(config, corpora)
        if run["trained"]
        else {d: {"train": [], "dev": []} for d in run["datasets"]}
    )
    predictions = {
        d: Predictions(
            sample[d]["example_id"], sample[d]["dialogue_id"], sample[d]["gold_id"], scored["pred_id"]
        )
        for d, scored in run["datasets"].items()
    }
    _check_metrics(run, predictions)
    adapter = (
        f"runs/ablations_retrained/cpu/{run['arm']}/seed{run['seed']}/adapter" if run["trained"] else None
    )
    return UnitRecord(
        experiment="ablations_cpu", arm=run["arm"], seed=run["seed"],
        identity=RunIdentity(
            commit=env.get("git_commit"), config_hash=config_hash(config), adapter=adapter,
            hardware=legacy["hardware"], python=env["python"], packages=env["packages"], command=legacy["command"],
            finished=run["finished"], train_seconds=run["train_seconds"], score_seconds=run["score_seconds"],
        ),
        config=config,
        samples={d: {**ids[d], "test": sample[d]["example_id"]} for d in run["datasets"]},
        removed={}, predictions=predictions, metrics=metrics_of(predictions),
        notes=[
            "converted by `python -m dialoguellm.experiments.convert` from legacy_results.json (the retired "
            "analysis.ablation_retrained runner); label scores were not recorded by that runner",
            "training and dev ids reconstructed by the converter with the retired runner's sampling rule "
            "(overlap removal, then a stratified draw with train.seed), not recorded by the run itself",
        ],
    )  # fmt: skip


def _check_metrics(run: Mapping[str, Any], predictions: Mapping[str, Predictions]) -> None:
    """The recomputed fractions must equal what the old file stored (nothing lost in the conversion)."""
    for d, m in metrics_of(predictions).items():
        for key in ("accuracy", "weighted_f1", "macro_f1"):
            if abs(m[key] - run["datasets"][d][key]) > 1e-9:
                raise ValueError(
                    f"{run['arm']}/{run['seed']} {d}: {key} {m[key]} != stored {run['datasets'][d][key]}"
                )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dialoguellm.experiments.convert FOLDER``."""
    parser = argparse.ArgumentParser(
        prog="python -m dialoguellm.experiments.convert", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("folder", help="the experiment folder holding legacy_results.json")
    written = convert(parser.parse_args(argv).folder)
    print(f"wrote {len(written)} files, the plan and {len(written) - 1} unit records")
    return 0


if __name__ == "__main__":
    sys.exit(main())

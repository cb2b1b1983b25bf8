"""Notebook 05's steps beyond the probes (``analysis.probes``): the values it records of the baselines, and
which retrained-ablation records (the ``ablations_cpu`` experiment, ``dialoguellm.experiments``) it shows,
with what it records of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.experiments import summary as experiment_summary
from dialoguellm.experiments.record import load_plan, load_units
from dialoguellm.runs import ExperimentLayout, RunLayout


def baseline_records(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``corpus/baseline/split -> {accuracy, weighted_f1}`` in % (what notebook 05 records)."""
    return {
        f"{row.dataset}/{row.baseline}/{row.split}": {
            "accuracy": round(100 * row.accuracy, 2),
            "weighted_f1": round(100 * row.weighted_f1, 2),
        }
        for row in table.itertuples()
    }


def _rounded(value: Any) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


# ------------------------------------------------------------------------------ retrained ablations

RETRAINED_EXPERIMENT = "ablations_cpu"


def retrained_source(
    run: str | os.PathLike, experiment: str = RETRAINED_EXPERIMENT
) -> tuple[Path | None, str]:
    """Which records of the retrained-ablation experiment notebook 05's last section shows, and a sentence
    saying whose they are: the run folder's own (``<run>/experiments/<experiment>``, written by
    ``dialoguellm experiment run <experiment> --run-dir <run>``), else the repository's committed
    ``results/cpu/experiments/<experiment>``; (None, why) without either."""
    own = RunLayout(Path(run)).experiment(experiment)
    if own.plan.is_file():
        return own.root, f"Retrained ablations: this run's own records ({own.root})."
    committed = ExperimentLayout(experiment_summary.committed_folder(experiment))
    if committed.plan.is_file():
        plan, units = load_plan(committed.root), load_units(committed.root)
        state = "finished" if len(units) == len(plan["units"]) else "NOT finished (a partial grid)"
        return committed.root, (
            "Retrained ablations: not run here. Showing the repository's committed records "
            f"({committed.root}), {state}, made by `{plan['commands'][0]}` on {units[0].identity.hardware}. "
            "Run `make ablations` to reproduce them."
        )
    return None, (
        f"Retrained ablations: no records yet (neither this run's experiments/{experiment} nor the repository's "
        f"results/cpu/experiments/{experiment}). Run `make ablations` (about 2 hours on 2 cores)."
    )


def retrained_records(table: pd.DataFrame, source: Path) -> dict[str, Any]:
    """What notebook 05 records of the retrained grid (fractions, from ``experiments.summary.summary_table``):
    per arm and corpus, the mean over seeds and the difference from the base arm with its interval."""
    return {
        "source": str(source),
        "arms": {
            f"{row.arm}/{row.dataset}": {
                "runs": int(row.runs),
                "weighted_f1": _rounded(row.weighted_f1),
                "weighted_f1_sd": _rounded(row.weighted_f1_sd),
                "delta_weighted_f1": _rounded(row.delta_weighted_f1),
                "delta_low": _rounded(row.delta_weighted_f1_low),
                "delta_high": _rounded(row.delta_weighted_f1_high),
                "covers": row.delta_weighted_f1_covers or row.weighted_f1_covers,
                "paper_weighted_f1": None
                if pd.isna(row.paper_weighted_f1)
                else round(row.paper_weighted_f1 / 100, 4),
            }
            for row in table.itertuples()
        },
    }


# ------------------------------------------------------------------------------------- learning curve

CURVE_EXPERIMENT = "learning_curve_cpu"


def curve_source(run: str | os.PathLike, experiment: str = CURVE_EXPERIMENT) -> tuple[Path | None, str]:
    """Which learning-curve records notebook 09 shows, and a sentence saying whose they are: the run folder's
    own (``<run>/experiments/<experiment>``), else the repository's committed ``results/cpu/experiments/
    <experiment>``; (None, why) without either."""
    own = RunLayout(Path(run)).experiment(experiment)
    if own.plan.is_file() and any(own.units.glob("*.json")):
        return own.root, f"Learning curve: this run's own records ({own.root})."
    committed = ExperimentLayout(experiment_summary.committed_folder(experiment))
    if committed.plan.is_file() and any(committed.units.glob("*.json")):
        plan, units = load_plan(committed.root), load_units(committed.root)
        state = "finished" if len(units) == len(plan["units"]) else "NOT finished (a partial curve)"
        return committed.root, (
            "Learning curve: not run here. Showing the repository's committed records "
            f"({committed.root}), {state}, made by `{plan['commands'][0]}` on {units[0].identity.hardware}. "
            "Run `make learning-curve` to reproduce them."
        )
    return None, (
        f"Learning curve: no records yet (neither this run's experiments/{experiment} nor the repository's "
        f"results/cpu/experiments/{experiment}). Run `make learning-curve` (about 3.6 to 5.9 hours on 2 cores, "
        "resumable; dialoguellm/experiments/learning_curve_cpu.yaml says how that was estimated)."
    )


def curve_records(table: pd.DataFrame, source: Path) -> dict[str, Any]:
    """What notebook 09 records of a learning curve (fractions, from ``experiments.summary.curve_table``): per
    arm, size and corpus the mean over seeds with its interval, the difference from the baseline arm and the
    gain over the previous size."""
    return {
        "source": str(source),
        "rows": {
            f"{row.arm}/{'once' if pd.isna(row.size) else row.size}/{row.dataset}": {
                "runs": int(row.runs),
                "train_utterances": _rounded(row.train_utterances),
                "weighted_f1": _rounded(row.weighted_f1),
                "low": _rounded(row.weighted_f1_low),
                "high": _rounded(row.weighted_f1_high),
                "delta_weighted_f1": _rounded(row.delta_weighted_f1),
                "gain_weighted_f1": _rounded(row.gain_weighted_f1),
            }
            for row in table.itertuples()
        },
    }

"""Notebook 05's steps beyond the probes (``analysis.probes``): the values it records of the baselines, and
which retrained-ablation results (``analysis.ablation_retrained``) it shows, with what it records of them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.analysis import ablation_retrained
from dialoguellm.runs import RunLayout


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
    return None if pd.isna(value) else round(float(value), 2)


# ------------------------------------------------------------------------------ retrained ablations


def retrained_source(run: str | os.PathLike) -> tuple[Path | None, str]:
    """Which retrained-ablation results notebook 05's last section shows, and a sentence saying whose they
    are: the run folder's own (``<run>/ablations_retrained/results.json``, written by
    ``python -m dialoguellm.analysis.ablation_retrained --out <run>/ablations_retrained``), else the
    repository's committed ``results/cpu/ablations_retrained/results.json``; (None, why) without either."""
    own = ablation_retrained.results_path(RunLayout(Path(run)).ablations_retrained)
    if own.is_file():
        return own, f"Retrained ablations: this run's own results ({own})."
    committed = ablation_retrained.results_path(ablation_retrained.committed_results_dir())
    if committed.is_file():
        saved = ablation_retrained.load_results(committed)
        state = "finished" if saved.get("finished") else "NOT finished (a partial grid)"
        return committed, (
            "Retrained ablations: not run here. Showing the repository's committed results "
            f"({committed}), {state}, made by `{saved['command']}` on {saved.get('hardware', '?')} "
            f"(last written {saved.get('updated', '?')}). Run `make ablations` to reproduce them."
        )
    return None, (
        "Retrained ablations: no results yet (neither this run's ablations_retrained/ nor the repository's "
        "results/cpu/ablations_retrained/). Run `make ablations` (2 h 3 min on 2 cores)."
    )


def retrained_records(table: pd.DataFrame, source: Path) -> dict[str, Any]:
    """What notebook 05 records of the retrained grid (in %): per arm and corpus, the mean over seeds and
    the paired difference from the base arm with its interval."""
    return {
        "source": str(source),
        "arms": {
            f"{row.arm}/{row.dataset}": {
                "runs": int(row.runs),
                "weighted_f1": round(row.weighted_f1_mean, 2),
                "weighted_f1_sd": _rounded(row.weighted_f1_sd),
                "delta_weighted_f1": _rounded(row.delta_weighted_f1),
                "delta_low": _rounded(row.delta_weighted_f1_low),
                "delta_high": _rounded(row.delta_weighted_f1_high),
                "paper_weighted_f1": _rounded(row.paper_weighted_f1),
            }
            for row in table.itertuples()
        },
    }

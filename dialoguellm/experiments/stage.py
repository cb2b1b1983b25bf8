"""What notebooks show of the experiments and record of them: notebook 05's baselines, and which records of
the prompt probes (``probes_cpu``) and the retrained ablations (``ablations_cpu``) it shows, with what it
records of them; notebook 09's learning curve; notebook 06's view of the overlap experiment (``overlap_removal``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.experiments import summary as experiment_summary
from dialoguellm.experiments.record import load_plan, load_units
from dialoguellm.runs import ExperimentLayout, RunLayout


def baseline_records(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """What notebook 05 records of the baselines (``analysis.baselines.run_baselines``' table): ``baselines``,
    ``corpus/baseline/split -> {accuracy, weighted_f1}`` in %."""
    return {
        "baselines": {
            f"{row.dataset}/{row.baseline}/{row.split}": {
                "accuracy": round(100 * row.accuracy, 2),
                "weighted_f1": round(100 * row.weighted_f1, 2),
            }
            for row in table.itertuples()
        }
    }


def _rounded(value: Any) -> float | None:
    return None if pd.isna(value) else round(float(value), 4)


# ------------------------------------------------------------------------------ retrained ablations

RETRAINED_EXPERIMENT = "ablations_cpu"


def experiment_source(
    run: str | os.PathLike, experiment: str, title: str, how: str
) -> tuple[Path | None, str]:
    """Which records of ``experiment`` a notebook shows, and a sentence saying whose they are (opening with
    ``title``): the run folder's own (``<run>/experiments/<experiment>``, written by ``dialoguellm experiment
    run <experiment> --run-dir <run>``), else the repository's committed ``results/cpu/experiments/<experiment>``;
    (None, why) without either, ``how`` saying what makes them."""
    own = RunLayout(Path(run)).experiment(experiment)
    if own.plan.is_file() and any(own.units.glob("*.json")):
        return own.root, f"{title}: this run's own records ({own.root})."
    committed = ExperimentLayout(experiment_summary.committed_folder(experiment))
    if committed.plan.is_file() and any(committed.units.glob("*.json")):
        plan, units = load_plan(committed.root), load_units(committed.root)
        state = "finished" if len(units) == len(plan["units"]) else "NOT finished (partial)"
        return committed.root, (
            f"{title}: not run here. Showing the repository's committed records "
            f"({committed.root}), {state}, made by `{plan['commands'][0]}` on {units[0].identity.hardware}. "
            f"Run {how.split(' (')[0]} to reproduce them."
        )
    return None, (
        f"{title}: no records yet (neither this run's experiments/{experiment} nor the repository's "
        f"results/cpu/experiments/{experiment}). Run {how}."
    )


def retrained_source(
    run: str | os.PathLike, experiment: str = RETRAINED_EXPERIMENT
) -> tuple[Path | None, str]:
    """Which records of the retrained-ablation experiment notebook 05's last section shows, and a sentence
    saying whose they are (``experiment_source``)."""
    return experiment_source(
        run, experiment, "Retrained ablations", "`make ablations` (about 2 hours on 2 cores)"
    )


PROBES_EXPERIMENT = "probes_cpu"


def probes_source(run: str | os.PathLike, experiment: str = PROBES_EXPERIMENT) -> tuple[Path | None, str]:
    """Which records of the prompt-probe experiment (``probes_cpu``) notebook 05 shows, and a sentence saying
    whose they are (``experiment_source``)."""
    return experiment_source(
        run, experiment, "Prompt probes",
        "`dialoguellm experiment run probes_cpu` (about 2.5 hours on 2 cores, resumable: 3 cpu-size trainings, "
        "then every probe scores each seed's adapter; dialoguellm/experiments/probes_cpu.yaml)",
    )  # fmt: skip


def probes_records(
    table: pd.DataFrame | None, source: Path | None, figure: str | os.PathLike | None = None
) -> dict[str, Any]:
    """What notebook 05 records of the prompt probes, as ``probes``: ``status`` (``no records`` when
    ``source`` is None, the ``probes_source`` found none), else the records' folder, per arm and corpus the
    mean weighted F1 over seeds with its interval and the difference from the arm it is compared with
    (``against``, on ``n_compared`` utterances) with its interval (fractions, from
    ``experiments.summary.summary_table``), and the figure's file name."""
    if source is None or table is None:
        return {"probes": {"status": "no records"}}
    arms = {}
    for row in table.itertuples():
        arms[f"{row.arm}/{row.dataset}"] = {
            "runs": int(row.runs),
            "n": int(row.n),
            "weighted_f1": _rounded(row.weighted_f1),
            "low": _rounded(row.weighted_f1_low),
            "high": _rounded(row.weighted_f1_high),
        } | (
            {}
            if pd.isna(row.delta_weighted_f1)
            else {
                "against": row.against,
                "n_compared": int(row.n_compared),
                "delta_weighted_f1": _rounded(row.delta_weighted_f1),
                "delta_low": _rounded(row.delta_weighted_f1_low),
                "delta_high": _rounded(row.delta_weighted_f1_high),
                "covers": row.delta_weighted_f1_covers,
            }
        )
    return {
        "probes": {"status": "shown", "source": str(source), "arms": arms}
        | ({"figure": Path(figure).name} if figure is not None else {})
    }


def retrained_records(table: pd.DataFrame, source: Path) -> dict[str, Any]:
    """What notebook 05 records of the retrained grid, as ``retrained_ablations`` (fractions, from
    ``experiments.summary.summary_table``): per arm and corpus, the mean over seeds and the difference from the
    base arm with its interval."""
    return {"retrained_ablations": _retrained(table, source)}


def _retrained(table: pd.DataFrame, source: Path) -> dict[str, Any]:
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
    """Which learning-curve records notebook 09 shows (``experiment_source``)."""
    return experiment_source(
        run, experiment, "Learning curve",
        "`make learning-curve` (about 3.6 to 5.9 hours on 2 cores, resumable; "
        "dialoguellm/experiments/learning_curve_cpu.yaml says how that was estimated)",
    )  # fmt: skip


def curve_records(
    table: pd.DataFrame | None, source: Path | None, figure: str | os.PathLike | None = None
) -> dict[str, Any]:
    """What notebook 09 records of a learning curve: ``status`` (``no records`` when ``source`` is None, the
    ``curve_source`` found none), else the records' folder, per arm, size and corpus the mean over seeds with
    its interval, the difference from the baseline arm and the gain over the previous size (fractions, from
    ``experiments.summary.curve_table``) and the figure's file name."""
    if source is None or table is None:
        return {"status": "no records"}
    return {
        "status": "shown",
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
        **({"figure": Path(figure).name} if figure is not None else {}),
    }


# ------------------------------------------------------------------------------ the overlap experiment

OVERLAP_EXPERIMENT = "overlap_removal"
PITFALLS_EXPERIMENT = "pitfalls_cpu"  # the field's practices measured (experiments/pitfalls.py)
SCORING_EXPERIMENT = "scoring_dev"  # label ranking and the dev-fitted corrections (docs/EVALUATION.md)


def overlap_source(run: str | os.PathLike) -> tuple[Path | None, str]:
    """The overlap experiment's records notebook 06 shows (``experiment_source``)."""
    return experiment_source(
        run, OVERLAP_EXPERIMENT, "The overlap experiment",
        "`dialoguellm experiment run overlap_removal` (about 1 hour on 2 cores)",
    )  # fmt: skip


def overlap_records(effect: pd.DataFrame, source: Path) -> dict[str, Any]:
    """What notebook 06 records of ``experiments.summary.overlap_effect`` (fractions): per arm and corpus, the
    difference from the baseline on the overlapping lines, on the rest, and the difference in differences."""
    return {
        "source": str(source),
        "effects": {
            f"{row.arm}/{row.dataset}": {
                "overlapping": int(row.overlapping),
                "rest": int(row.rest),
                "did": _rounded(row.did),
                "did_ci": [_rounded(row.did_low), _rounded(row.did_high)],
                "verdict": row.did_verdict,
                "covers": row.covers,
            }
            for row in effect.itertuples()
        },
    }

"""`make figures`: the one registry of the project's figures. Each entry maps a figure to the producer that
redraws it from a finished run's saved results, ``(run folder, output folder) -> written path``, or None when
the run lacks its inputs (a stage that was not run). No model is loaded and nothing is retrained.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dialoguellm.plots import (
    ablation_retrained,
    analysis,
    corpora,
    evaluation,
    explore,
    learning_curve,
    pitfalls,
    probes,
    seceu,
    training,
)
from dialoguellm.runs import REPO_DIR

# The tracked figures the README shows: written only here, from saved results (by default results/cpu).
FIGURES_DIR = REPO_DIR / "figures"

FIGURES: dict[str, Callable[[Path, Path], Path | None]] = {
    "label_distribution": corpora.label_distribution_from_run,  # notebook 01
    "cross_corpus_overlap": corpora.overlap_figure_from_run,  # 01
    "video_description_coverage": corpora.coverage_figure_from_run,  # 02
    "video_description_lengths": corpora.lengths_figure_from_run,  # 02
    "training_loss": training.loss_curve_from_run,  # 03
    "confusion_matrices": evaluation.confusion_from_run,  # 04
    "comparison_with_paper": evaluation.comparison_from_run,  # 04
    "prompt_probes": probes.probe_differences_from_run,  # 05, dialoguellm experiment run probes_cpu
    "ablations_retrained": ablation_retrained.retrained_ablations_from_run,  # 05, make ablations
    "confusion_prior_correction": analysis.confusion_panels_from_run,  # 06
    "failure_modes": analysis.failure_modes_from_run,  # 06
    "error_breakdown": analysis.error_breakdown_from_run,  # 06
    "prior_correction": analysis.prior_correction_from_run,  # 06
    "score_trust": analysis.score_trust_from_run,  # 06
    "seceu_item_distances": seceu.item_distances_from_run,  # 07
    "emotion_timeline": explore.emotion_timeline_from_run,  # 08
    "learning_curve": learning_curve.learning_curve_from_run,  # 09, make learning-curve
    "pitfalls": pitfalls.pitfalls_from_run,  # 10, make pitfalls
}


# What each producer reads, as glob patterns below the run folder (every pattern must match): ``missing_inputs``
# says why a figure was not redrawn. results/cpu holds no corpora (label distribution, description
# coverage) and no SECEU scores without SECEU_DIR.
INPUTS: dict[str, tuple[str, ...]] = {
    "label_distribution": ("data/*/test.parquet",),
    "cross_corpus_overlap": ("data/overlap.csv",),
    "video_description_coverage": ("descriptions/descriptions.jsonl", "data/meld/test.parquet"),
    "video_description_lengths": ("descriptions/descriptions.jsonl",),
    "training_loss": ("training/metrics.json",),
    "confusion_matrices": ("evaluation/summary.json",),
    "comparison_with_paper": ("evaluation/summary.json",),
    "prompt_probes": ("experiments/probes_cpu/experiment.json",),
    "ablations_retrained": ("experiments/ablations_cpu/experiment.json",),
    "confusion_prior_correction": ("analysis/confusion_*_corrected.csv",),
    "failure_modes": ("analysis/neutral_share.csv", "analysis/close_pairs.csv"),
    "error_breakdown": ("analysis/error_breakdown.csv",),
    "prior_correction": ("analysis/prior_correction.csv",),
    "score_trust": ("analysis/reliability.csv", "analysis/coverage.csv"),
    "seceu_item_distances": ("seceu/seceu_*.json",),
    "emotion_timeline": ("analysis/explore_timeline.csv",),
    "learning_curve": (
        "experiments/learning_curve_cpu/experiment.json",
        "experiments/learning_curve_cpu/units/*.json",
    ),
    "pitfalls": ("experiments/pitfalls_cpu/experiment.json",),
}


def missing_inputs(run_dir: str | os.PathLike) -> dict[str, list[str]]:
    """``figure -> the input patterns the run lacks``, for every registered figure that cannot be redrawn."""
    run = Path(run_dir)
    missing = {name: [p for p in INPUTS[name] if not any(run.glob(p))] for name in FIGURES}
    return {name: patterns for name, patterns in missing.items() if patterns}


def regenerate(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw every registered figure from ``run_dir`` into ``out_dir`` (default: the tracked figures/); returns the
    files written (a figure whose inputs the run lacks is left as it is)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Run folder not found: {run_dir}. Run `make reproduce` first, or pass --run-dir."
        )
    out = Path(out_dir or FIGURES_DIR).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    written = [FIGURES[name](run_dir, out) for name in FIGURES]
    return [path for path in written if path is not None]

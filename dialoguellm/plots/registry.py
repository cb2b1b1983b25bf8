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
    figures_dir,
    seceu,
    training,
)

FIGURES: dict[str, Callable[[Path, Path], Path | None]] = {
    "label_distribution": corpora.label_distribution_from_run,  # notebook 01
    "cross_corpus_overlap": corpora.overlap_figure_from_run,  # 01
    "video_description_coverage": corpora.coverage_figure_from_run,  # 02
    "video_description_lengths": corpora.lengths_figure_from_run,  # 02
    "training_loss": training.loss_curve_from_run,  # 03
    "confusion_matrices": evaluation.confusion_from_run,  # 04
    "comparison_with_paper": evaluation.comparison_from_run,  # 04
    "ablation_results": analysis.ablation_results_from_run,  # 05
    "ablations_retrained": ablation_retrained.retrained_ablations_from_run,  # 05, make ablations
    "confusion_prior_correction": analysis.confusion_panels_from_run,  # 06
    "failure_modes": analysis.failure_modes_from_run,  # 06
    "error_breakdown": analysis.error_breakdown_from_run,  # 06
    "prior_correction": analysis.prior_correction_from_run,  # 06
    "score_trust": analysis.score_trust_from_run,  # 06
    "seceu_item_distances": seceu.item_distances_from_run,  # 07
    "emotion_timeline": explore.emotion_timeline_from_run,  # 08
}


def regenerate(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw every registered figure from ``run_dir`` into ``out_dir`` (default: figures/); returns the
    files written (a figure whose inputs the run lacks is left as it is)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Run folder not found: {run_dir}. Run `make reproduce` first, or pass --run-dir."
        )
    out = figures_dir(out_dir)
    written = [FIGURES[name](run_dir, out) for name in FIGURES]
    return [path for path in written if path is not None]

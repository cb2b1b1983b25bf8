"""`make figures`: rewrite every figure in figures/ from a finished run's saved results, without
retraining. Each entry maps a figure file to the function that draws it and the saved inputs it needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from dialoguellm import analysis_plots, data, eq, plots, plots_method, video_plots
from dialoguellm.labels import DATASETS
from dialoguellm.paths import figures_dir


def _label_distribution(run_dir: Path, out: Path) -> Path | None:
    curated = {
        name: data.load_curated(run_dir, name) for name in DATASETS if (run_dir / "data" / name).is_dir()
    }
    if not curated:
        return None
    return plots.plot_label_distribution(data.label_distribution(curated), out / "label_distribution.png")


def _seceu_item_distances(run_dir: Path, out: Path) -> Path | None:
    results = eq.load_results(run_dir / "eq") if (run_dir / "eq").is_dir() else []
    if not results:
        return None
    return eq.plot_item_distances(results, out / "seceu_item_distances.png")


# figure producers: (run folder, output folder) -> written path, or None when the run lacks the inputs
FIGURES: dict[str, Callable[[Path, Path], Path | None]] = {
    "label_distribution": _label_distribution,
    "video_description_coverage": video_plots.coverage_figure_from_run,
    "video_description_lengths": video_plots.lengths_figure_from_run,
    "training_loss": plots_method.loss_curve_from_run,
    "confusion_matrices": plots_method.confusion_from_run,
    "comparison_with_paper": plots_method.comparison_from_run,
    "seceu_item_distances": _seceu_item_distances,
    **analysis_plots.FIGURES,
}


def regenerate(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draw every registered figure from ``run_dir`` into ``out_dir`` (default: figures/)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(
            f"Run folder not found: {run_dir}. Run `make reproduce` first, or pass --run-dir."
        )
    out = figures_dir(out_dir)
    written = [FIGURES[name](run_dir, out) for name in FIGURES]
    return [path for path in written if path is not None]

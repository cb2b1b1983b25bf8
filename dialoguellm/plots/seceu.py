"""Figure of the SECEU test (notebook 07): each model's distance to the human standard scores, per item."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from dialoguellm.analysis.seceu import NORM_MEAN, SeceuResult, load_seceu_results
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout


def plot_item_distances(
    results: Sequence[SeceuResult], path: str | os.PathLike, human_pattern: Sequence[float] | None = None
) -> Path:
    """Per-item distance to the human standard scores, one line per model; the human template dashed."""
    with style_context():
        fig = Figure(figsize=(9, 4.8), layout="constrained")
        ax = fig.subplots()
        for result in results:
            numbers = np.arange(1, result.n_items + 1)
            ax.plot(
                numbers,
                result.distances,
                marker="o",
                markersize=3,
                label=f"{result.label} (SECEU {result.seceu:.2f}, EQ {result.eq:.0f})",
            )
        if human_pattern is not None:
            pattern = np.asarray(human_pattern, float)
            ax.plot(
                np.arange(1, len(pattern) + 1),
                pattern,
                color="#555555",
                linestyle="--",
                label="human template (item distances)",
            )
        ax.axhline(NORM_MEAN, color="#999999", linewidth=0.8, linestyle=":", label=f"human mean {NORM_MEAN}")
        ax.set_xlabel("SECEU item")
        ax.set_ylabel("distance to human standard scores")
        ax.set_ylim(bottom=0)
        ax.set_title("SECEU: per-item distance (lower is closer to people)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # Below the axes: with 40 items the lines fill the whole plot area.
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2, frameon=False)
        return save_figure(fig, path)


def item_distances_from_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """``make figures`` producer: the SECEU figure from a run's saved results (None without any)."""
    folder = RunLayout(Path(run_dir)).seceu
    results = load_seceu_results(folder) if folder.is_dir() else []
    if not results:
        return None
    return plot_item_distances(results, Path(out_dir) / "seceu_item_distances.png")

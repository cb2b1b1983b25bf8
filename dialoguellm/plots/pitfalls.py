"""The field-pitfalls figure (``make pitfalls``, notebook 10): each practice's effect on weighted F1 against the
package's way on the same utterances, with its 95% interval, one row per practice and a panel per corpus.

Input: ``experiments.pitfalls.pitfall_table`` of the ``pitfalls_cpu`` records (fractions; percent only here).
The producer ``pitfalls_from_run`` reads ``<run>/experiments/pitfalls_cpu`` and returns None when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.experiments import pitfalls as field
from dialoguellm.experiments.stage import PITFALLS_EXPERIMENT
from dialoguellm.plots import save_figure, style_context

FIGURE = "pitfalls.png"
COLORS = {"inflates": "#C44E52", "deflates": "#4C72B0", field.NO_EFFECT: "#9A9A9A"}


def plot_pitfalls(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One panel per corpus: each measured practice's effect (points of weighted F1) with its 95% interval,
    red where it inflates the number, blue where it deflates it, grey where the interval covers 0. Rows
    without an effect (a count, an experiment not run) are left out. ``table``: ``pitfall_table``."""
    measured = table[table["effect"].notna()]
    datasets = list(dict.fromkeys(measured["dataset"]))
    practices = list(dict.fromkeys(measured["key"]))
    with style_context():
        fig = Figure(figsize=(6.0 * max(len(datasets), 1), 0.45 * len(practices) + 1.6))
        axes = fig.subplots(1, max(len(datasets), 1), squeeze=False, sharey=True)[0]
        for ax, dataset in zip(axes, datasets, strict=False):
            part = measured[measured["dataset"] == dataset].set_index("key").reindex(practices)
            y = np.arange(len(practices))
            effect, low, high = (100 * part[c].to_numpy(dtype=float) for c in ("effect", "low", "high"))
            for verdict, color in COLORS.items():
                mask = (part["verdict"] == verdict).to_numpy()
                if mask.any():
                    ax.errorbar(effect[mask], y[mask], xerr=np.vstack([effect - low, high - effect])[:, mask],
                                fmt="o", color=color, capsize=3, label=verdict)  # fmt: skip
            ax.axvline(0, color="#555555", linewidth=0.8)
            ax.set_yticks(y, practices, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("effect on weighted F1 (points), 95% CI")
            ax.set_title(f"{dataset}: the practice minus the package's way", fontsize=9)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle("How the field's evaluation practices move weighted F1 (same adapters, same utterances)")
        fig.subplots_adjust(bottom=0.3 if len(practices) < 6 else 0.15)
        return save_figure(fig, path)


def pitfalls_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run has no pitfalls records)."""
    folder = Path(run_dir) / "experiments" / PITFALLS_EXPERIMENT
    if not (folder / "experiment.json").is_file():
        return None
    table = field.pitfall_table(folder)
    return plot_pitfalls(table, Path(out) / FIGURE) if table["effect"].notna().any() else None

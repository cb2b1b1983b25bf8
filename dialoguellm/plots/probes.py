"""The figure of notebook 05's prompt probes: every probe's paired difference from the base arm.

Input: ``analysis.probes.summarise``'s table (``<run>/probes/summary.csv``). A plot function draws what was
saved; it computes nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout

FIGURE = "prompt_probes.png"
MEASURED_COLOR = "#4C72B0"
COVERS_ZERO_COLOR = "#9A9A9A"


def plot_probe_differences(
    summary: pd.DataFrame, path: str | os.PathLike, metric: str = "weighted_f1"
) -> Path:
    """One panel per corpus: each probe's difference from the base arm in ``metric`` (points) with its paired
    95% dialogue-bootstrap interval; grey where the interval covers 0 (no measurable difference at this
    size), blue where it does not. The base arm's own value and interval are in the panel title."""
    probes = summary[summary[f"diff_{metric}"].notna()]
    datasets = list(dict.fromkeys(summary["dataset"]))
    with style_context():
        rows = max(len(probes[probes["dataset"] == d]) for d in datasets) if len(probes) else 1
        fig = Figure(figsize=(6.0 * len(datasets), 1.2 + 0.45 * rows))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            part = probes[probes["dataset"] == dataset].reset_index(drop=True)
            y = np.arange(len(part))[::-1]
            diff = part[f"diff_{metric}"].to_numpy(dtype=float)
            low = part[f"diff_{metric}_low"].to_numpy(dtype=float)
            high = part[f"diff_{metric}_high"].to_numpy(dtype=float)
            covers = (low <= 0) & (high >= 0)
            for yi, d, lo, hi, grey in zip(y, diff, low, high, covers, strict=True):
                color = COVERS_ZERO_COLOR if grey else MEASURED_COLOR
                ax.errorbar(d, yi, xerr=[[d - lo], [hi - d]], fmt="o", color=color, capsize=3)
            ax.axvline(0, color="#555555", linewidth=1)
            ax.set_yticks(y, part["probe"])
            ax.set_xlabel(f"{metric.replace('_', ' ')} minus base (points, 95% CI)")
            base = summary[(summary["dataset"] == dataset) & summary[f"diff_{metric}"].isna()]
            title = dataset
            if len(base):
                b = base.iloc[0]
                title += (
                    f": base {b[metric]:.1f} [{b[f'{metric}_low']:.1f}, {b[f'{metric}_high']:.1f}], "
                    f"n = {int(b['n']):,}"
                )
            ax.set_title(title, fontsize=10)
        fig.suptitle("Prompt probes: one adapter, prompts changed at test time (grey: interval covers 0)")
        return save_figure(fig, path)


def probe_differences_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run has no probe summary)."""
    path = RunLayout(Path(run_dir)).probes / "summary.csv"
    if not path.is_file():
        return None
    summary = pd.read_csv(path)
    return None if summary.empty else plot_probe_differences(summary, Path(out) / FIGURE)

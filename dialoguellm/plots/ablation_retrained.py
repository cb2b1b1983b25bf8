"""The retrained-ablation figure (``make ablations``, notebook 05's last section): every arm with its interval
beside the paper's value for the same question.

Input: ``experiments.summary.summary_table`` of the ``ablations_cpu`` experiment's records (fractions; percent
only here). The producer ``retrained_ablations_from_run`` reads ``<run>/experiments/ablations_cpu``, else the
committed ``results/cpu/experiments/ablations_cpu`` (``experiments.stage.retrained_source``), and returns
None when neither exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.experiments import summary as experiment_summary
from dialoguellm.experiments.stage import retrained_source
from dialoguellm.plots import save_figure, style_context

FIGURE = "ablations_retrained.png"
OURS_COLOR = "#4C72B0"
PAPER_COLOR = "#C44E52"
COVERS_ZERO_COLOR = "#9A9A9A"


def plot_retrained_ablations(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One row of panels per corpus. Left: each arm's weighted F1 (mean over seeds, with its 95% interval over
    seeds and test dialogues) beside the paper's value for the same arm (diamond, LLaMA 2-7B). Right: each
    arm's mean minus the base arm's with its 95% interval over seeds and test dialogues (grey where it covers
    0), beside the paper's arm minus its 1-shot row. ``table``: ``experiments.summary.summary_table``."""
    datasets = list(dict.fromkeys(table["dataset"]))
    with style_context():
        fig = Figure(figsize=(12.0, 3.6 * len(datasets) + 0.8))
        axes = fig.subplots(len(datasets), 2, squeeze=False, gridspec_kw={"hspace": 0.9, "wspace": 0.35})
        for (left, right), dataset in zip(axes, datasets, strict=True):
            part = table[table["dataset"] == dataset].reset_index(drop=True)
            _absolute_panel(left, part, dataset)
            _difference_panel(right, part, dataset)
        legend: dict[str, Any] = {}  # one entry per label over every difference panel
        for ax in axes[:, 1]:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=3, fontsize=8, frameon=False)
        model = table["model"].iloc[0] if len(table) else ""
        hardware = table["hardware"].iloc[0] if len(table) else ""
        fig.suptitle(f"Retrained ablations: {model} on {hardware}; the paper: LLaMA 2-7B")
        return save_figure(fig, path)


def _absolute_panel(ax, part: pd.DataFrame, dataset: str) -> None:
    x = np.arange(len(part))
    mean = 100 * part["weighted_f1"].to_numpy(dtype=float)
    err = np.vstack([mean - 100 * part["weighted_f1_low"], 100 * part["weighted_f1_high"] - mean])
    ax.bar(x, mean, color=OURS_COLOR, alpha=0.35, label="ours: mean over seeds")
    ax.errorbar(x, mean, yerr=err, fmt="none", color=OURS_COLOR, capsize=3)
    paper = part["paper_weighted_f1"]
    has = paper.notna().to_numpy()
    ax.scatter(x[has], paper[has], marker="D", color=PAPER_COLOR, zorder=3, label="paper (LLaMA 2-7B)")
    ax.set_xticks(x, part["label"], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("weighted F1 (%)")
    ax.set_title(
        f"{dataset}: test, {int(part['n'].iloc[0]):,} utterances (mean over seeds, 95% CI)", fontsize=9
    )


def _difference_panel(ax, part: pd.DataFrame, dataset: str) -> None:
    rows = part[part["delta_weighted_f1"].notna()].reset_index(drop=True)  # every arm but the baseline
    y = np.arange(len(rows))
    delta = 100 * rows["delta_weighted_f1"].to_numpy(dtype=float)
    low = 100 * rows["delta_weighted_f1_low"].to_numpy(dtype=float)
    high = 100 * rows["delta_weighted_f1_high"].to_numpy(dtype=float)
    err = np.vstack([delta - low, high - delta])
    covers = (low <= 0) & (high >= 0)  # no measurable difference at this size: grey, as in the probe figure
    for mask, color, label in (
        (~covers, OURS_COLOR, "ours: arm - base, 95% CI"),
        (covers, COVERS_ZERO_COLOR, "ours: interval covers 0"),
    ):
        if mask.any():
            ax.errorbar(delta[mask], y[mask], xerr=err[:, mask], fmt="o", color=color, capsize=3, label=label)
    paper = rows["paper_delta_weighted_f1"]
    has = paper.notna().to_numpy()
    ax.scatter(
        paper[has], y[has], marker="D", color=PAPER_COLOR, zorder=3, label="paper: arm - its 1-shot row"
    )
    ax.axvline(0, color="#555555", linewidth=0.8)
    ax.set_yticks(y, rows["label"], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("weighted F1 difference from base (points)")
    ax.set_title(f"{dataset}: paired difference from the base arm", fontsize=9)


def retrained_ablations_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when no records exist)."""
    folder, _ = retrained_source(run_dir)
    if folder is None:
        return None
    table = experiment_summary.summary_table(folder, ["weighted_f1"])
    return plot_retrained_ablations(table, Path(out) / FIGURE) if len(table) else None

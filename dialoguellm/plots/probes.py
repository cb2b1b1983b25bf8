"""The prompt-probe figure (notebook 05): each probe's difference in weighted F1 from the arm it is compared
with, per corpus, with its interval over seeds and test dialogues.

Input: ``experiments.summary.summary_table`` of the ``probes_cpu`` experiment's records (fractions; percent
only here). The producer ``probe_differences_from_run`` reads ``<run>/experiments/probes_cpu`` and returns
None when it holds no records.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.experiments import summary as experiment_summary
from dialoguellm.experiments.stage import PROBES_EXPERIMENT
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout

FIGURE = "prompt_probes.png"
MEASURED_COLOR = "#4C72B0"
COVERS_ZERO_COLOR = "#9A9A9A"


def plot_probe_differences(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One panel per corpus, one row per probe: the probe's mean weighted F1 over seeds minus the mean of the
    arm it is compared with (the baseline, or the arm its ``against`` names), on the ``n_compared`` test
    utterances both were scored on, with the 95% interval over training seeds and test dialogues as error
    bars; grey where the interval covers 0 (no measurable difference at this size). The baseline's own
    weighted F1 and interval are in the panel title. ``table``: ``experiments.summary.summary_table``."""
    labels = dict(zip(table["arm"], table["label"], strict=False))
    datasets = list(dict.fromkeys(table["dataset"]))
    probes = table[table["delta_weighted_f1"].notna()]
    rows = max((int((probes["dataset"] == d).sum()) for d in datasets), default=1)
    with style_context():
        fig = Figure(figsize=(6.5 * len(datasets), 1.4 + 0.5 * max(rows, 1)))
        axes = fig.subplots(1, len(datasets), squeeze=False, gridspec_kw={"wspace": 0.9})[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            part = probes[probes["dataset"] == dataset].reset_index(drop=True)
            y = np.arange(len(part))
            delta = 100 * part["delta_weighted_f1"].to_numpy(dtype=float)
            low = 100 * part["delta_weighted_f1_low"].to_numpy(dtype=float)
            high = 100 * part["delta_weighted_f1_high"].to_numpy(dtype=float)
            covers = (low <= 0) & (high >= 0)
            for yi, d, lo, hi, grey in zip(y, delta, low, high, covers, strict=True):
                color = COVERS_ZERO_COLOR if grey else MEASURED_COLOR
                ax.errorbar(d, yi, xerr=[[d - lo], [hi - d]], fmt="o", color=color, capsize=3)
            ax.axvline(0, color="#555555", linewidth=0.8)
            ticks = [
                f"{r.label}\nvs {labels.get(r.against, r.against) if r.against else 'base'}, n = {int(r.n_compared):,}"
                for r in part.itertuples()
            ]
            ax.set_yticks(y, ticks, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlabel("weighted F1 minus the compared arm (points, 95% CI)")
            ax.set_title(_base_title(table, dataset), fontsize=9)
        model = table["model"].iloc[0] if len(table) else ""
        fig.suptitle(
            f"Prompt probes{f' ({model})' if model else ''}: each seed's adapter re-prompted at test time "
            "(grey: interval covers 0)",
            fontsize=10,
        )
        return save_figure(fig, path)


def _base_title(table: pd.DataFrame, dataset: str) -> str:
    """The corpus with its baseline arm's weighted F1 (mean over seeds, 95% interval) and test size."""
    base = table[(table["dataset"] == dataset) & table["delta_weighted_f1"].isna()]
    if not len(base):
        return dataset
    b = base.iloc[0]
    return (
        f"{dataset}: {b['label']} {100 * b['weighted_f1']:.1f} "
        f"[{100 * b['weighted_f1_low']:.1f}, {100 * b['weighted_f1_high']:.1f}], "
        f"{len(b['seeds'])} seeds, n = {int(b['n']):,}"
    )


def probe_differences_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer: the run's ``experiments/probes_cpu`` (None when it has no records)."""
    layout = RunLayout(Path(run_dir)).experiment(PROBES_EXPERIMENT)
    if not layout.plan.is_file() or not any(layout.units.glob("*.json")):
        return None
    table = experiment_summary.summary_table(layout.root, ["weighted_f1"])
    if not table["delta_weighted_f1"].notna().any():
        return None
    return plot_probe_differences(table, Path(out) / FIGURE)

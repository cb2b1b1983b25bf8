"""The learning-curve figure (``make learning-curve``, notebook 09): weighted F1 against the number of training
utterances, one panel per corpus, LoRA with its 95% interval over seeds and test dialogues, TF-IDF + logistic
regression and the untuned model as the baselines.

Input: ``experiments.summary.curve_table`` of the ``learning_curve_cpu`` experiment's records (fractions; percent
only here). The producer ``learning_curve_from_run`` reads ``<run>/experiments/learning_curve_cpu`` and returns
None when it holds no records.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.experiments import summary as experiment_summary
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout

FIGURE = "learning_curve.png"
EXPERIMENT = "learning_curve_cpu"
COLORS = ("#4C72B0", "#DD8452", "#55A868", "#8172B3")
UNTUNED_COLOR = "#9A9A9A"


def plot_learning_curve(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One panel per corpus: each tuned arm's weighted F1 (mean over seeds, a band for its 95% interval over
    seeds and test dialogues) against the mean number of utterances it trained on (log x); an arm of another
    kind than the LLM (TF-IDF + logistic regression) dashed; an arm scored once (the untuned model) a
    horizontal line with its interval over dialogues. ``table``: ``experiments.summary.curve_table``."""
    datasets = list(dict.fromkeys(table["dataset"]))
    with style_context():
        fig = Figure(figsize=(5.2 * len(datasets), 4.2))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            _panel(ax, table[table["dataset"] == dataset], dataset)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
        fig.subplots_adjust(bottom=0.24, wspace=0.25)
        fig.suptitle("Learning curve: weighted F1 against training utterances per corpus (95% CI)")
        return save_figure(fig, path)


def _panel(ax, part: pd.DataFrame, dataset: str) -> None:
    curves = part[part["size"].notna()]
    arms = list(dict.fromkeys(curves["arm"]))
    for color, arm in zip(COLORS, arms, strict=False):
        rows = curves[curves["arm"] == arm].sort_values("train_utterances")
        x = rows["train_utterances"].to_numpy(dtype=float)
        style = "-" if rows["kind"].iloc[0] == "llm" else "--"
        ax.plot(x, 100 * rows["weighted_f1"], style, marker="o", color=color, label=rows["label"].iloc[0])
        ax.fill_between(
            x, 100 * rows["weighted_f1_low"], 100 * rows["weighted_f1_high"], color=color, alpha=0.2
        )
    for _, row in part[part["size"].isna()].iterrows():  # scored once: a line across the curve
        ax.axhline(100 * row["weighted_f1"], color=UNTUNED_COLOR, linestyle=":", label=row["label"])
        ax.axhspan(
            100 * row["weighted_f1_low"], 100 * row["weighted_f1_high"], color=UNTUNED_COLOR, alpha=0.15
        )
    ax.set_xscale("log")
    if len(curves):
        ticks = np.unique(np.round(curves["train_utterances"].to_numpy(dtype=float)))
        ax.set_xticks(ticks, [f"{t:,.0f}" for t in ticks], rotation=45, fontsize=8)
        ax.minorticks_off()
    ax.set_xlabel("training utterances of this corpus (log scale)")
    ax.set_ylabel("weighted F1 (%)")
    ax.set_title(f"{dataset}: test, {int(part['n'].iloc[0]):,} utterances", fontsize=9)


def learning_curve_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer: the run's ``experiments/learning_curve_cpu`` (None when it has no records)."""
    layout = RunLayout(Path(run_dir)).experiment(EXPERIMENT)
    if not layout.plan.is_file() or not any(layout.units.glob("*.json")):
        return None
    table = experiment_summary.curve_table(layout.root)
    return plot_learning_curve(table, Path(out) / FIGURE) if len(table) else None

"""Figures of the evaluation stage (notebook 04): confusion matrices, our numbers next to the paper's.

One function per figure, written with the packaged style (``dialoguellm.plots.style_context``) on the Agg
backend; notebooks display the written PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.evaluation.run import comparison_summaries, comparison_table
from dialoguellm.io import read_json
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout


def plot_confusion_matrices(results: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Row-normalised confusion matrices (gold rows, predicted columns), one panel per corpus."""
    names = list(results)
    with style_context():
        fig = Figure(figsize=(4.6 * len(names), 4.4))
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, name in zip(axes, names, strict=True):
            matrix = np.asarray(results[name]["confusion_matrix"], dtype=float)
            labels = results[name]["labels"]
            shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
            ax.imshow(shares, vmin=0, vmax=1, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
            ax.set_yticks(range(len(labels)), labels)
            for i in range(len(labels)):
                for j in range(len(labels)):
                    ax.text(
                        j,
                        i,
                        f"{shares[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(f"{name} test: weighted F1 {results[name]['weighted_f1']:.3f}")
            ax.grid(False)
        fig.tight_layout()
        return save_figure(fig, path)


def plot_comparison(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Weighted F1 per corpus: our run(s) next to the paper's rows (input: evaluate.comparison_table)."""
    datasets = list(dict.fromkeys(table["dataset"]))
    systems = list(dict.fromkeys(table["system"]))  # one row per system, shared by every panel
    row = {system: i for i, system in enumerate(systems)}
    with style_context():
        fig = Figure(figsize=(4.5 + 3.0 * len(datasets), 0.32 * len(systems) + 1.6), layout="constrained")
        axes = fig.subplots(1, len(datasets), sharey=True, squeeze=False)[0]
        for ax, name in zip(axes, datasets, strict=True):
            part = table[(table["dataset"] == name) & table["weighted_f1"].notna()]
            colours = ["tab:orange" if ours else "tab:grey" for ours in part["ours"]]
            ys = [row[system] for system in part["system"]]
            ax.barh(ys, part["weighted_f1"], color=colours)
            for y, value in zip(ys, part["weighted_f1"], strict=True):
                ax.text(value + 1, y, f"{value:.1f}", va="center", fontsize=8)
            ax.set_xlim(0, 100)
            ax.set_xlabel("weighted F1 (%)")
            ax.set_title(name)
        axes[0].set_yticks(range(len(systems)), systems)
        axes[0].invert_yaxis()
        fig.suptitle("Test weighted F1: ours (orange) next to the paper's Table 3 rows (grey)")
        return save_figure(fig, path)


def confusion_from_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """confusion_matrices.png from ``<run>/evaluation/summary.json`` (notebook 04)."""
    path = RunLayout(Path(run_dir)).evaluation() / "summary.json"
    if not path.is_file():
        return None
    return plot_confusion_matrices(read_json(path)["results"], Path(out) / "confusion_matrices.png")


def comparison_from_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """comparison_with_paper.png from ``<run>/evaluation[_base]/summary.json`` (notebook 04)."""
    run = RunLayout(Path(run_dir))
    if not (run.evaluation() / "summary.json").is_file():
        return None
    summaries = comparison_summaries(
        read_json(run.evaluation() / "summary.json"),
        read_json(run.evaluation(False) / "summary.json")
        if (run.evaluation(False) / "summary.json").is_file()
        else None,
    )
    return plot_comparison(comparison_table(summaries), Path(out) / "comparison_with_paper.png")

"""Figures of the training stage (notebook 03): the loss per optimiser step and dev weighted F1."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from dialoguellm.io import read_json
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout, TrainingLayout


def plot_loss_curve(
    losses: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]], path: str | os.PathLike
) -> Path:
    """Training loss per optimiser step (left) and dev weighted F1 at each evaluation (right)."""
    with style_context():
        fig = Figure(figsize=(9, 3.6))
        ax_loss, ax_dev = fig.subplots(1, 2)
        steps = [x["step"] for x in losses]
        values = [x["loss"] for x in losses]
        ax_loss.plot(steps, values, marker="." if len(steps) < 50 else None)
        ax_loss.set_xlabel("optimiser step")
        ax_loss.set_ylabel("answer-token loss")
        ax_loss.set_title("training loss")
        if history:
            ax_dev.plot([h["step"] for h in history], [h["dev_weighted_f1"] for h in history], marker="o")
        ax_dev.set_xlabel("optimiser step")
        ax_dev.set_ylabel("weighted F1")
        ax_dev.set_title("dev (model selection)")
        fig.tight_layout()
        return save_figure(fig, path)


# ---- producers for `make figures`: (run folder, output folder) -> written path, or None without inputs
def loss_curve_from_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """training_loss.png from ``<run>/training/metrics.json`` (notebook 03)."""
    path = TrainingLayout(RunLayout(Path(run_dir)).training).metrics
    if not path.is_file():
        return None
    metrics = read_json(path)
    return plot_loss_curve(metrics["losses"], metrics["history"], Path(out) / "training_loss.png")

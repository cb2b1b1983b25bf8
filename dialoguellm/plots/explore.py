"""Figures of notebook 08 (exploring one conversation): the emotion timeline, turns on x and every label's
probability as a heat map, the predicted label ringed and the gold label marked where it is known."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout

TIMELINE = "emotion_timeline.png"


def plot_emotion_timeline(frame: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Heat map of the label probabilities of each turn (columns: turns, rows: labels) from a prediction
    table (``dialoguellm.predict``'s columns: turn, speaker, predicted, p_<label>, optional gold)."""
    labels = [c[2:] for c in frame.columns if c.startswith("p_")]
    probs = frame[[f"p_{w}" for w in labels]].to_numpy(dtype=float).T
    n = len(frame)
    with style_context():
        fig = Figure(figsize=(max(5.5, 0.8 * n + 2.5), 0.42 * len(labels) + 2.2))
        ax = fig.subplots()
        image = ax.imshow(probs, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.grid(False)
        rows = {w: i for i, w in enumerate(labels)}
        ax.scatter(
            range(n), [rows[p] for p in frame["predicted"]], s=90, facecolors="none", edgecolors="#C44E52",
            linewidths=1.8, label="predicted",
        )  # fmt: skip
        if "gold" in frame:
            known = [(i, rows[g]) for i, g in enumerate(frame["gold"].fillna("")) if g in rows]
            if known:
                xs, ys = zip(*known, strict=True)
                ax.scatter(xs, ys, marker="x", s=40, color="#222222", label="gold")
        ax.set_yticks(range(len(labels)), labels)
        ticks = [
            f"{t}\n{textwrap.shorten(str(s), 12, placeholder='.')}"
            for t, s in zip(frame["turn"], frame["speaker"], strict=True)
        ]
        ax.set_xticks(np.arange(n), ticks, fontsize=8)
        ax.set_xlabel("turn and speaker")
        ax.set_title(title or "Emotion timeline: label probabilities per turn")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="probability")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.12, 1.0))
        return save_figure(fig, path)


def emotion_timeline_from_run(run_dir: str | os.PathLike, out: str | os.PathLike) -> Path | None:
    """``make figures`` producer: the timeline notebook 08 saved (``analysis/explore_timeline.csv``)."""
    path = RunLayout(Path(run_dir)).analysis / "explore_timeline.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return plot_emotion_timeline(frame, Path(out) / TIMELINE)

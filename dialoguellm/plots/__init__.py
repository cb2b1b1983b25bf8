"""Every figure of the project is written by one function here (or in a stage module using
``style_context``/``save_figure``), from saved results, with the packaged style and no display needed.

Figures are built on ``matplotlib.figure.Figure`` objects, never pyplot's global state, so they render the
same under papermill, pytest and a terminal. Notebooks show the written file, which is exactly what
figures/ holds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")  # headless and deterministic; notebooks display the saved PNG instead

import matplotlib.style  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dialoguellm.io import atomic_path  # noqa: E402

STYLE_FILE = "dialoguellm.mplstyle"


@contextmanager
def style_context() -> Iterator[None]:
    """Apply the packaged matplotlib style inside a ``with`` block."""
    with resources.as_file(resources.files("dialoguellm") / "styles" / STYLE_FILE) as style_path:
        with matplotlib.style.context(str(style_path)):
            yield


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save a figure atomically as PNG with no timestamp or version metadata, so reruns give equal files."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    return path


def plot_label_distribution(distribution: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Bar charts of label shares per split, one panel per dataset (input: ``data.label_distribution``)."""
    datasets = list(dict.fromkeys(distribution["dataset"]))
    with style_context():
        fig = Figure(figsize=(4.2 * len(datasets), 4.2))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, name in zip(axes, datasets, strict=True):
            part = distribution[distribution["dataset"] == name]
            table = part.pivot_table(index="normalised", columns="split", values="count", sort=False)
            table = table[[s for s in ("train", "dev", "test") if s in table.columns]]
            shares = table / table.sum(axis=0)
            order = shares.mean(axis=1).sort_values(ascending=False).index
            shares.loc[order].plot.bar(ax=ax, width=0.8)
            ax.set_title(f"{name}: {int(table.sum().sum()):,} utterances")
            ax.set_xlabel("")
            ax.set_ylabel("share of the split")
            ax.tick_params(axis="x", rotation=40)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        fig.suptitle("Label distribution per split (paper's normalised label words)")
        return save_figure(fig, path)

"""Figures: one module per stage (``corpora``, ``training``, ``evaluation``, ``analysis``, ``seceu``), one
registry of every figure ``make figures`` redraws (``registry``), and here the packaged style and the writer
they all use. A plot function takes saved results and draws; it never computes them.

Figures are built on ``matplotlib.figure.Figure`` objects, never pyplot's global state, so they render the
same under papermill, pytest and a terminal. Notebooks show the written file, which `make figures` draws
the same from the saved results.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless and deterministic; notebooks display the saved PNG instead

import matplotlib.style  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from dialoguellm.io import atomic_path  # noqa: E402
from dialoguellm.runs import RunLayout  # noqa: E402

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


def figures_dir(run: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Where a run's figures go: ``path``, else the run's own ``figures/`` (``RunLayout.figures``); created.

    A run never writes the tracked figures/: that folder is redrawn only from saved results by
    ``plots.registry.regenerate`` (`make figures`)."""
    chosen = Path(path or RunLayout(Path(run)).figures).expanduser().resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen

"""Where things live: the vendored corpora, run folders, figures. Never relative to the working directory
(notebooks run from notebooks/, tests from a temporary folder, the CLI from anywhere)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DATA_ENV = "DIALOGUELLM_DATA_DIR"
RUN_ENV = "DIALOGUELLM_RUN_DIR"


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding the raw corpora (``meld/``, ``emorynlp/``, ...).

    Order: the argument, then $DIALOGUELLM_DATA_DIR, then the copies vendored in this repository
    (``data/raw``).
    """
    chosen = path or os.environ.get(DATA_ENV) or REPO_DIR / "data" / "raw"
    chosen = Path(chosen).expanduser().resolve()
    if not chosen.is_dir():
        raise FileNotFoundError(
            f"Data folder not found: {chosen}. Pass DATA_DIR (or set ${DATA_ENV}) to the folder that holds "
            "meld/ and emorynlp/, or run from a checkout of the repository, which vendors them in data/raw."
        )
    return chosen


def run_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder a pipeline run writes to (curated data, checkpoints, results, records); created."""
    chosen = Path(path or os.environ.get(RUN_ENV) or REPO_DIR / "runs" / "manual").expanduser().resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def figures_dir(path: str | os.PathLike | None = None) -> Path:
    """Where figures go: the argument, else the repository's figures/ (what the README shows)."""
    chosen = Path(path or REPO_DIR / "figures").expanduser().resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


def shared_dir() -> Path | None:
    """The read-only ``../shared`` beside a development checkout, when present (tests skip without it)."""
    candidate = REPO_DIR.parent / "shared"
    return candidate if candidate.is_dir() else None

"""Test helpers about the checkout itself: the state of its tracked files, and whether the tracked figures/
are what `dialoguellm figures` draws from results/cpu (what `make test` requires after any run)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from dialoguellm.runs import REPO_DIR

RESULTS = REPO_DIR / "results" / "cpu"
FIGURES_DIR = REPO_DIR / "figures"


def tracked_state() -> dict[str, str] | None:
    """``path -> content hash`` of every tracked file git sees as changed (``git status --porcelain
    --untracked-files=no``), None outside a git checkout. Equal before and after a command: it changed no
    tracked file (a checkout already dirty while someone develops compares equal to itself)."""
    if shutil.which("git") is None or not (REPO_DIR / ".git").exists():
        return None
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=REPO_DIR,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    state = {}
    for line in status.splitlines():
        path = REPO_DIR / line[3:].split(" -> ")[-1]
        state[line] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
    return state


def figures_differing_from_results(out: Path) -> list[str]:
    """Redraw every figure from results/cpu into ``out`` and list those the tracked figures/ lacks or holds
    differently (pixel for pixel, PNG metadata aside); empty when figures/ is what `make figures` draws."""
    import numpy as np
    from matplotlib.image import imread

    from dialoguellm.plots.registry import regenerate

    differing = []
    for path in regenerate(RESULTS, out):
        committed = FIGURES_DIR / path.name
        if not committed.is_file() or not np.array_equal(imread(committed), imread(path)):
            differing.append(path.name)
    return differing

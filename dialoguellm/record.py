"""Headline values of a notebook, written to JSON so that tests and later stages can read them.

A small replacement for scrapbook (unmaintained, breaks on pandas 2): ``Recorder(run_dir, name)`` keeps
``<run_dir>/records/<name>.json`` up to date after every ``record`` call and shows the value in the
notebook.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dialoguellm.io import read_json, write_json


class Recorder:
    """Collects ``key -> value`` pairs of one notebook run into ``<run_dir>/records/<name>.json``."""

    def __init__(self, run_dir: str | os.PathLike, name: str):
        self.path = Path(run_dir) / "records" / f"{name}.json"
        self.values: dict[str, Any] = {}
        # A fresh run of the notebook starts a fresh record; stale keys from an earlier run never linger.
        write_json(self.path, self.values)

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` (JSON-serialisable), save, show it, and return it."""
        self.values[key] = value
        write_json(self.path, self.values)
        _display({key: value})
        return value


def load_record(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read the values a notebook recorded (``name`` is the notebook's file stem)."""
    return read_json(Path(run_dir) / "records" / f"{name}.json")


def _display(value: dict[str, Any]) -> None:
    try:
        from IPython.display import JSON, display

        display(JSON(value, expanded=True))
    except ImportError:  # outside Jupyter a print does
        print(value)

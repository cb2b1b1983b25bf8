"""Test helpers for the benchmark scripts: import one from benchmarks/ by name, check the provenance header
it writes, and the settings that make it run on the tiny model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TINY = ["--set", "model.dtype=fp32", "--set", "model.num_threads=1", "--set", "eval.max_new_tokens=2"]


def load(name: str):
    """benchmarks/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_provenance(result: dict, name: str, argv: list[str], threads: int | None = 1) -> None:
    """The result names the command that reproduces it (the script and exactly the arguments it ran with)
    and, for the benchmarks that load a model, the hardware, torch and the threads it ran with."""
    assert result["command"] == " ".join(["dialoguellm", "benchmark", name, *argv])
    if threads is not None:
        assert result["benchmark"] == name and result["torch_threads"] == threads
        assert "CPU cores" in result["hardware"] and result["torch"]

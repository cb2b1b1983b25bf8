"""Run the ordered notebooks with papermill: `make reproduce` (embedded default), the tests (tiny
parameters) and a paper run (the 7B profile) all go through ``run_notebooks``; nothing is edited by hand
between them. The commands are `dialoguellm reproduce [--run-dir runs/NAME] [--only 01 03]` (``reproduce``)
and `dialoguellm figures [--run-dir results/cpu] [--out DIR]` (``draw_figures``); `python -m
dialoguellm.pipeline SUBCOMMAND` remains a thin alias of `dialoguellm SUBCOMMAND`.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from dialoguellm.io import read_json, write_json
from dialoguellm.plots import figures_dir
from dialoguellm.runs import REPO_DIR, RunLayout, allocator_preloaded

NOTEBOOKS_DIR = REPO_DIR / "notebooks"
KERNEL_NAME = "dialoguellm"


def notebook_paths(notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR) -> list[Path]:
    """The pipeline's notebooks in order (``NN_name.ipynb``, sorted by name)."""
    paths = sorted(Path(notebooks_dir).glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"No notebooks named NN_*.ipynb in {notebooks_dir}.")
    return paths


def kernel_name() -> str:
    """The project's kernel when it is registered (`make install` does), else the current interpreter's."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    except NoSuchKernel:
        return "python3"
    # Only trust the registered kernel when it runs this very interpreter (another checkout's .venv would not).
    return KERNEL_NAME if Path(spec.argv[0]).resolve() == Path(sys.executable).resolve() else "python3"


def run_notebook(
    notebook: str | os.PathLike,
    run_dir: str | os.PathLike,
    parameters: Mapping[str, Any] | None = None,
    figures: str | os.PathLike | None = None,
    timeout: int | None = None,
) -> Path:
    """Execute one notebook with papermill; the executed copy goes to ``<run_dir>/notebooks/``.

    ``RUN_DIR`` and ``FIGURES_DIR`` are always injected (as absolute paths) so every stage writes into the
    same run folder, wherever the kernel's working directory is; the figures go to ``figures``, else the
    run's own ``figures/`` (never the tracked figures/, which only `dialoguellm figures` redraws).
    """
    import papermill as pm

    notebook = Path(notebook)
    run_dir = Path(run_dir).resolve()
    params = {"RUN_DIR": str(run_dir), "FIGURES_DIR": str(figures_dir(run_dir, figures))}
    params.update(parameters or {})
    _check_parameters(notebook, params)
    output = RunLayout(Path(run_dir)).notebooks / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
    with allocator_preloaded():  # the kernel starts with mimalloc for its memory (runs.allocator_environment)
        pm.execute_notebook(
            str(notebook),
            str(output),
            parameters=params,
            kernel_name=kernel_name(),
            cwd=str(notebook.parent),
            progress_bar=False,
            log_output=True,
            execution_timeout=timeout,
        )
    return output


def _check_parameters(notebook: Path, params: Mapping[str, Any]) -> None:
    """Refuse a parameter the notebook does not declare, or one of the wrong type, before running it."""
    import papermill as pm

    declared = pm.inspect_notebook(str(notebook))
    for name, value in params.items():
        if name not in declared:
            raise ValueError(
                f"{notebook.name} has no parameter {name!r}; its parameters are {', '.join(declared)}."
            )
        default = declared[name]["default"]
        expected = _literal_type(default)
        # bool is a subclass of int, but True for a count is a mistake, not a number
        wrong_bool = isinstance(value, bool) and expected is not None and bool not in expected
        if expected is not None and value is not None and (wrong_bool or not isinstance(value, expected)):
            raise TypeError(
                f"{notebook.name}: parameter {name} must be {' or '.join(t.__name__ for t in expected)} "
                f"(default {default}), "
                f"got {type(value).__name__} {value!r}."
            )
    if params.get("OVERRIDES"):
        from dialoguellm.config import check_overrides

        # Settings are checked here rather than minutes later inside the kernel.
        check_overrides(params["OVERRIDES"], f"{notebook.name}: parameter OVERRIDES")


def _literal_type(source: str) -> tuple[type, ...] | None:
    """The accepted types for a parameter whose default is ``source`` (None: anything goes)."""
    import ast

    try:
        value = ast.literal_eval(source)
    except (ValueError, SyntaxError):
        return None
    if value is None:
        return None
    if isinstance(value, bool):
        return (bool,)
    if isinstance(value, float):
        return (int, float)
    if isinstance(value, (list, tuple)):
        return (list, tuple)
    return (type(value),)


def source_fingerprint() -> str:
    """A hash of everything a stage's result depends on besides its notebook and parameters: the
    library's code and packaged files, the run configs and the vendored data."""
    digest = hashlib.sha256()
    # the package holds the code, the profiles and the vendored corpora; configs/ the accelerate configs
    roots = [REPO_DIR / "dialoguellm", REPO_DIR / "configs"]
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(REPO_DIR)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def stage_fingerprint(notebook: Path, params: Mapping[str, Any], previous: str, sources: str) -> str:
    """A stage is valid only for the same notebook, parameters, sources and the same earlier stages."""
    payload = json.dumps({"params": dict(params), "previous": previous, "sources": sources}, sort_keys=True)
    return hashlib.sha256(notebook.read_bytes() + payload.encode()).hexdigest()


def run_notebooks(
    run_dir: str | os.PathLike,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    only: Iterable[str] | None = None,
    figures: str | os.PathLike | None = None,
    notebooks_dir: str | os.PathLike = NOTEBOOKS_DIR,
) -> dict[str, Any]:
    """Run every notebook in order (or those whose name starts with a prefix in ``only``) into one run
    folder. ``parameters`` maps a notebook's stem to its overrides.

    A stage that finished before in the same run folder, for the same notebook, parameters, library code,
    configs, data and earlier stages, is skipped: a run killed part-way picks up where it stopped. A stage
    counts as finished only once ``<run_dir>/stages/<stem>.json`` exists, which is written (atomically)
    after its notebook completed. Writes ``<run_dir>/pipeline.json`` with the time of each stage and the
    peak memory of the kernels.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    selected = [
        p for p in notebook_paths(notebooks_dir) if not only or any(p.name.startswith(o) for o in only)
    ]
    # Every stage's parameters are checked before anything runs or any stage marker is touched, so a typo
    # in a late stage's parameters neither wastes the early stages nor marks a finished stage unfinished.
    for path in selected:
        _check_parameters(path, (parameters or {}).get(path.stem) or {})
    report: dict[str, Any] = {"run_dir": str(run_dir), "stages": []}
    sources = source_fingerprint()
    previous = ""
    for path in selected:
        params = dict((parameters or {}).get(path.stem) or {})
        fingerprint = stage_fingerprint(path, params, previous, sources)
        previous = fingerprint
        marker = RunLayout(run_dir).stage(path.stem)
        finished = _read_marker(marker)
        if finished is not None and finished.get("fingerprint") == fingerprint:
            print(f"[{datetime.now():%H:%M:%S}] {path.name}: finished earlier with the same inputs, skipped")
            report["stages"].append({**finished, "skipped": True})
            continue
        marker.unlink(missing_ok=True)  # anything after a changed stage is redone
        started = time.perf_counter()
        print(f"[{datetime.now():%H:%M:%S}] running {path.name} ...", flush=True)
        run_notebook(path, run_dir, params, figures=figures)
        seconds = time.perf_counter() - started
        stage = {"notebook": path.name, "seconds": round(seconds, 1), "fingerprint": fingerprint}
        write_json(marker, stage)
        report["stages"].append(stage)
        print(f"[{datetime.now():%H:%M:%S}] {path.name} done in {seconds / 60:.1f} min", flush=True)
        write_json(RunLayout(run_dir).pipeline_report, report)
    # Kernels run as child processes; RUSAGE_CHILDREN holds the largest of them (kilobytes on Linux).
    report["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2, 2)
    report["total_minutes"] = round(
        sum(s["seconds"] for s in report["stages"] if not s.get("skipped")) / 60, 1
    )
    write_json(RunLayout(run_dir).pipeline_report, report)
    return report


def _read_marker(marker: Path) -> dict[str, Any] | None:
    """A stage marker's content (None when the stage has none), or a ValueError naming the damaged file."""
    if not marker.is_file():
        return None
    try:
        content = read_json(marker)
    except ValueError as err:
        content = err
    if not isinstance(content, dict):
        raise ValueError(
            f"{marker} is not a stage marker (a JSON object with a fingerprint): {content}. Delete it to run "
            "that stage again."
        )
    return content


def _resumable_run(runs: Path) -> Path | None:
    """The latest run folder, if it has not finished every stage (so `make reproduce` continues it)."""
    latest = runs / "latest"
    if not latest.is_dir():
        return None
    done = {p.stem for p in RunLayout(latest).stages.glob("*.json")}
    return None if {p.stem for p in notebook_paths()} <= done else latest.resolve()


def reproduce(
    run_dir: str | os.PathLike | None = None, fresh: bool = False, only: Iterable[str] | None = None
) -> tuple[Path, dict[str, Any]]:
    """`dialoguellm reproduce` (`make reproduce`): every notebook on the embedded default into one run folder,
    by default continuing runs/latest when it did not finish, else a new runs/<timestamp> that runs/latest
    then points to. Everything it writes, figures included, stays inside the run folder."""
    runs = REPO_DIR / "runs"
    # papermill shows a kernel's text output in this terminal, not its widgets: ask for text progress bars
    os.environ.setdefault("DIALOGUELLM_PROGRESS", "text")
    chosen = Path(run_dir) if run_dir else None
    if chosen is None and not fresh:
        chosen = _resumable_run(runs)
        if chosen is not None:
            print(f"Continuing the unfinished run {chosen} (pass --fresh to start a new one).")
    if chosen is None:
        chosen = runs / datetime.now().strftime("%Y%m%d-%H%M%S")
    chosen.mkdir(parents=True, exist_ok=True)
    latest = runs / "latest"
    if not run_dir and latest.resolve() != chosen.resolve():
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(chosen.resolve().name)
    return chosen, run_notebooks(chosen, only=only)


def draw_figures(
    source: str | os.PathLike | None = None, out: str | os.PathLike | None = None
) -> tuple[list[Path], dict[str, list[str]]]:
    """`dialoguellm figures` (`make figures`): every registered figure redrawn from ``source`` (default: the
    committed results/cpu) into ``out`` (default: the tracked figures/); returns the files written and, for
    each figure not redrawn, the inputs ``source`` lacks."""
    from dialoguellm.plots.registry import missing_inputs, regenerate

    source = Path(source) if source else REPO_DIR / "results" / "cpu"
    return regenerate(source, out), missing_inputs(source)


if __name__ == "__main__":
    # `python -m dialoguellm.pipeline SUBCOMMAND ...` is a thin alias of `dialoguellm SUBCOMMAND ...`, run as
    # its own process: the command line stands above this module and is not imported from it.
    import subprocess

    sys.exit(subprocess.call([sys.executable, "-m", "dialoguellm.cli", *sys.argv[1:]]))

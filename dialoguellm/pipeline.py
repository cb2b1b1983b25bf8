"""Run the ordered notebooks with papermill: `make reproduce` (embedded default), the tests (tiny
parameters) and a paper run (the 7B profile) all go through ``run_notebooks``; nothing is edited by hand
between them.

    python -m dialoguellm.pipeline reproduce [--run-dir runs/NAME] [--only 01 03]
    python -m dialoguellm.pipeline figures [--run-dir runs/NAME]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from dialoguellm.io import write_json
from dialoguellm.paths import REPO_DIR, figures_dir

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
    same run folder, wherever the kernel's working directory is.
    """
    import papermill as pm

    notebook = Path(notebook)
    run_dir = Path(run_dir).resolve()
    params = {"RUN_DIR": str(run_dir), "FIGURES_DIR": str(figures_dir(figures))}
    params.update(parameters or {})
    _check_parameters(notebook, params)
    output = run_dir / "notebooks" / notebook.name
    output.parent.mkdir(parents=True, exist_ok=True)
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
        if expected is not None and value is not None and not isinstance(value, expected):
            raise TypeError(
                f"{notebook.name}: parameter {name} must be {' or '.join(t.__name__ for t in expected)} "
                f"(default {default}), "
                f"got {type(value).__name__} {value!r}."
            )


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


def run_notebooks(
    run_dir: str | os.PathLike,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    only: Iterable[str] | None = None,
    figures: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run every notebook in order (or those whose name starts with a prefix in ``only``) into one run
    folder. ``parameters`` maps a notebook's stem to its overrides. Writes ``<run_dir>/pipeline.json``
    with the time and peak memory of each stage."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    selected = [p for p in notebook_paths() if not only or any(p.name.startswith(o) for o in only)]
    report: dict[str, Any] = {"run_dir": str(run_dir), "stages": []}
    for path in selected:
        started = time.perf_counter()
        print(f"[{datetime.now():%H:%M:%S}] running {path.name} ...", flush=True)
        run_notebook(path, run_dir, (parameters or {}).get(path.stem), figures=figures)
        seconds = time.perf_counter() - started
        report["stages"].append({"notebook": path.name, "seconds": round(seconds, 1)})
        print(f"[{datetime.now():%H:%M:%S}] {path.name} done in {seconds / 60:.1f} min", flush=True)
        write_json(run_dir / "pipeline.json", report)
    # Kernels run as child processes; RUSAGE_CHILDREN holds the largest of them (kilobytes on Linux).
    report["peak_memory_gb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2, 2)
    report["total_minutes"] = round(sum(s["seconds"] for s in report["stages"]) / 60, 1)
    write_json(run_dir / "pipeline.json", report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dialoguellm.pipeline", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run all notebooks in order on the embedded default")
    rep.add_argument("--run-dir", help="run folder (default: runs/<timestamp>)")
    rep.add_argument("--only", nargs="*", help="notebook name prefixes to run, e.g. 01 03")
    fig = sub.add_parser("figures", help="rewrite figures/ from a finished run's saved results")
    fig.add_argument("--run-dir", help="run folder (default: runs/latest)")
    args = parser.parse_args(argv)

    runs = REPO_DIR / "runs"
    if args.command == "reproduce":
        run_dir = Path(args.run_dir) if args.run_dir else runs / datetime.now().strftime("%Y%m%d-%H%M%S")
        report = run_notebooks(run_dir, only=args.only)
        latest = runs / "latest"
        if not args.run_dir:
            if latest.is_symlink() or latest.exists():
                latest.unlink()
            latest.symlink_to(run_dir.resolve().name)
        print(
            f"Done: {report['total_minutes']} min, peak memory {report['peak_memory_gb']} GB. "
            f"Executed notebooks and results in {run_dir}; figures in {figures_dir()}."
        )
        return 0
    from dialoguellm.figures import regenerate

    written = regenerate(Path(args.run_dir) if args.run_dir else runs / "latest")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

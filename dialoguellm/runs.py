"""The run folder: its layout (``RunLayout``, the one place that names its parts), the one rule for finding a
trained adapter, the values a notebook records, and the provenance (software and hardware) saved with results.

A run folder, as ``make reproduce`` fills it (every writer and reader asks ``RunLayout`` for these paths)::

    <run>/data/<corpus>/             curated corpora (notebook 01)
    <run>/descriptions/...jsonl      video-description cache (notebook 02)
    <run>/training/                  config.yaml, metrics.json, environment.json, adapter/, checkpoint/ (03)
    <run>/evaluation[_base]/         <split>_<corpus>_predictions.csv, _metrics.json, _per_class.csv and
                                     summary.json of the test split (04)
    <run>/baselines/                 notebook 05's baselines
    <run>/experiments/<name>/        an experiment's plan, unit records, adapters (dialoguellm experiment run)
    <run>/analysis/                  notebook 06's tables
    <run>/seceu/                     notebook 07's results
    <run>/records/<notebook>.json    headline values of each notebook (``Recorder``)
    <run>/stages/ notebooks/ pipeline.json   what the pipeline ran, and when

Nothing here is relative to the working directory (notebooks run from notebooks/, tests from a temporary
folder, the CLI from anywhere).
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialoguellm.io import (
    baseline_stem,
    metrics_name,
    predictions_name,
    read_json,
    split_predictions,
    split_stem,
    write_json,
)

PACKAGE_DIR = Path(__file__).resolve().parent
# A checkout (or editable install) keeps runs/ and figures/ beside the package; an installed package has no
# repository, so those default to the working directory instead.
REPO_DIR = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else Path.cwd()
RUN_ENV = "DIALOGUELLM_RUN_DIR"
# Folders of a run that hold other stages' predictions (baselines, ablation arms), never the evaluation's.
NOT_EVALUATION = (
    "baselines",
    "experiments",
    "analysis",
    "notebooks",
    "records",
    "data",
    "zero_shot",
)


@dataclass(frozen=True)
class TrainingLayout:
    """The files of one training run (``RunLayout.training``, an ablation arm's seed folder, ...)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        """The resolved settings the run trained with."""
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        """Losses, dev history, best step, throughput (written when training ends)."""
        return self.root / "metrics.json"

    @property
    def environment(self) -> Path:
        """Package versions, git commit and hardware (``environment()``)."""
        return self.root / "environment.json"

    @property
    def data_report(self) -> Path:
        """What the training data was: the cross-corpus overlap removed (with the ids), description
        coverage per corpus and split, the corpora used."""
        return self.root / "data_report.json"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def adapter(self) -> Path:
        """The adapter with the best dev weighted F1, its dev predictions and calibration."""
        return self.root / "adapter"

    def kept_adapter(self, index: int) -> Path:
        """The adapter of the ``index``-th dev evaluation (1 = the first), kept with ``train.keep_every_eval``."""
        return self.root / "evals" / f"eval{int(index)}"

    @property
    def checkpoint(self) -> Path:
        """The last step's weights, optimiser and loop state (for ``resume``)."""
        return self.root / "checkpoint"


@dataclass(frozen=True)
class ExperimentLayout:
    """The files of one experiment run (``dialoguellm.experiments``): the plan, one record per arm x seed,
    and the adapters it trained."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def plan(self) -> Path:
        """``experiment.json``: the experiment's settings, resolved arms, units and samples."""
        return self.root / "experiment.json"

    @property
    def units(self) -> Path:
        """The folder of unit records (``units/<arm>.seed<k>.json``)."""
        return self.root / "units"

    def unit(self, name: str) -> Path:
        """One arm x seed's record (``record.unit_name``: ``base.seed1``, ``no_lora.untrained``)."""
        return self.units / f"{name}.json"

    def training(self, arm: str, seed: int, size: str | None = None) -> Path:
        """The training run of one arm x seed (``TrainingLayout``: adapter, checkpoint, metrics.json); in a
        learning curve one arm x size x seed (``size``: its file-name form, ``n100``)."""
        return self.root / "adapters" / arm / (f"{size}/seed{seed}" if size else f"seed{seed}")


@dataclass(frozen=True)
class RunLayout:
    """Where each stage of a pipeline run reads and writes, below ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def corpus(self, name: str) -> Path:
        """A curated corpus (``corpora.readers.save_curated``)."""
        return self.root / "data" / name

    @property
    def overlap(self) -> Path:
        """Notebook 01's cross-corpus overlap counts (``corpora.overlap.overlap_table``), CSV."""
        return self.root / "data" / "overlap.csv"

    @property
    def overlap_pairs(self) -> Path:
        """Notebook 01's matched utterance pairs (``corpora.overlap.matched_pairs``), CSV."""
        return self.root / "data" / "overlap_pairs.csv"

    @property
    def descriptions(self) -> Path:
        """The video-description cache (notebook 02)."""
        return self.root / "descriptions" / "descriptions.jsonl"

    @property
    def training(self) -> Path:
        """The training run of notebook 03 (config.yaml, metrics.json, adapter/, checkpoint/)."""
        return self.root / "training"

    @property
    def adapter(self) -> Path:
        """The adapter notebook 03 keeps (best dev weighted F1)."""
        return TrainingLayout(self.training).adapter

    def evaluation(self, adapter: bool = True) -> Path:
        """Notebook 04's results: with the adapter, or of the bare model (``evaluation_base``)."""
        return self.root / ("evaluation" if adapter else "evaluation_base")

    def evaluation_predictions(self, split: str, corpus: str, adapter: bool = True) -> Path:
        """Notebook 04's predictions of one corpus (``<split>_<corpus>_predictions.csv``, ``io.predictions_name``)."""
        return self.evaluation(adapter) / predictions_name(split_stem(split, corpus))

    def evaluation_metrics(self, split: str, corpus: str, adapter: bool = True) -> Path:
        """Their metrics (``<split>_<corpus>_metrics.json``, ``io.metrics_name``)."""
        return self.evaluation(adapter) / metrics_name(split_stem(split, corpus))

    def evaluation_files(self, split: str = "test", adapter: bool = True) -> dict[str, Path]:
        """``corpus -> predictions`` of every corpus notebook 04 scored on ``split`` (``io.split_predictions``)."""
        return split_predictions(self.evaluation(adapter), split)

    @property
    def baselines(self) -> Path:
        """Notebook 05's floors (``analysis.baselines``): results.csv, settings.json, one prediction file each."""
        return self.root / "baselines"

    def baseline_predictions(self, corpus: str, baseline: str, split: str) -> Path:
        """One baseline's predictions of a corpus and split (``<corpus>_<baseline>_<split>_predictions.csv``)."""
        return self.baselines / predictions_name(baseline_stem(corpus, baseline, split))

    def experiment(self, name: str) -> ExperimentLayout:
        """An experiment's records in this run (``dialoguellm experiment run NAME --run-dir``), read by
        notebook 05 and the reports before the repository's committed ones."""
        return ExperimentLayout(self.root / "experiments" / name)

    @property
    def analysis(self) -> Path:
        return self.root / "analysis"

    def analysis_predictions(self, corpus: str, split: str) -> Path:
        """Predictions notebook 06 scored itself when the run kept none (``<corpus>_<split>_predictions.csv``)."""
        return self.analysis / predictions_name(f"{corpus}_{split}")

    @property
    def seceu(self) -> Path:
        return self.root / "seceu"

    @property
    def records(self) -> Path:
        return self.root / "records"

    def record(self, notebook: str) -> Path:
        """The headline values a notebook recorded (``Recorder``)."""
        return self.records / f"{notebook}.json"

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def stage(self, notebook: str) -> Path:
        """The marker the pipeline writes once a notebook finished."""
        return self.stages / f"{notebook}.json"

    @property
    def figures(self) -> Path:
        """The figures the run's notebooks draw. A run writes only below its folder: the tracked figures/
        changes only by `dialoguellm figures` (`make figures`), from saved results."""
        return self.root / "figures"

    @property
    def notebooks(self) -> Path:
        """Executed copies of the notebooks."""
        return self.root / "notebooks"

    @property
    def pipeline_report(self) -> Path:
        return self.root / "pipeline.json"

    def written(self, path: Path, what: str, notebook: str) -> Path:
        """``path`` when a stage wrote it, else an error naming the notebook to run with this run folder."""
        if not path.is_file():
            raise FileNotFoundError(
                f"{what} not found: {path}. Run notebooks/{notebook}.ipynb with the same RUN_DIR."
            )
        return path


def run_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder a pipeline run writes to: the argument, else $DIALOGUELLM_RUN_DIR, else runs/manual; created."""
    chosen = Path(path or os.environ.get(RUN_ENV) or REPO_DIR / "runs" / "manual").expanduser().resolve()
    chosen.mkdir(parents=True, exist_ok=True)
    return chosen


# ------------------------------------------------------------------------------------------- adapters
def find_adapter(run: str | os.PathLike, required: bool = True) -> Path | None:
    """The LoRA adapter of a run: ``RunLayout.adapter`` (notebook 03's), else the shallowest folder with an
    ``adapter_config.json`` outside ``checkpoint/`` and ``experiments/``, the newest among equals.

    With ``required`` a run without one is an error that says what to run; otherwise None.
    """
    run = Path(run)
    if (RunLayout(run).adapter / "adapter_config.json").is_file():
        return RunLayout(run).adapter
    found = [
        p.parent
        for p in run.rglob("adapter_config.json")
        if not {"checkpoint", "experiments"} & set(p.relative_to(run).parts)
    ]
    found.sort(key=lambda p: (len(p.relative_to(run).parts), -p.stat().st_mtime))
    if found:
        return found[0]
    if required:
        raise FileNotFoundError(
            f"No trained LoRA adapter (adapter_config.json) in {run}. Run notebooks/03_training.ipynb with the "
            "same RUN_DIR first, or pass ADAPTER_DIR."
        )
    return None


def adapter_settings(adapter_dir: str | os.PathLike) -> Path:
    """The resolved config.yaml saved by the training run that produced ``adapter_dir`` (its folder or
    the folder above it)."""
    adapter_dir = Path(adapter_dir)
    for candidate in (adapter_dir / "config.yaml", adapter_dir.parent / "config.yaml"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No config.yaml beside the adapter {adapter_dir} (training saves one in the run folder); "
        "pass PROFILE to name the settings the adapter was trained with."
    )


def load_run_config(train_dir: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Any:
    """The resolved config a training run saved (``<train_dir>/config.yaml``), with dotted overrides."""
    from dialoguellm.config import config_from_dict, read_config_file

    path = TrainingLayout(Path(train_dir)).config
    if not path.is_file():
        raise FileNotFoundError(f"No config.yaml in {train_dir}; is it a training run folder (notebook 03)?")
    raw = read_config_file(path) or {}
    if isinstance(raw, dict):
        raw.pop("source", None)
    return config_from_dict(raw, source=str(path), overrides=dict(overrides or {}))


# -------------------------------------------------------------------------------------------- records
class Recorder:
    """Collects ``key -> value`` pairs of one notebook run into ``<run>/records/<name>.json`` (a small
    replacement for scrapbook, which is unmaintained and breaks on pandas 2); tests and later stages read it.

    A notebook holds no schema: each stage's library module returns what the stage records (``corpora.readers.
    curation_records``, ``evaluation.run.evaluation_records``, ...) and the notebook passes it to ``record_all``.
    """

    def __init__(self, run: str | os.PathLike, name: str):
        self.path = RunLayout(Path(run)).record(name)
        self.values: dict[str, Any] = {}
        self.started = time.time()  # the notebook makes its recorder first: its start (``record_minutes``)
        # A fresh run of the notebook starts a fresh record; stale keys from an earlier run never linger.
        write_json(self.path, self.values)

    def record(self, key: str, value: Any) -> Any:
        """Store ``value`` under ``key`` (JSON-serialisable), save, show it, and return it."""
        self.values[key] = value
        write_json(self.path, self.values)
        _display({key: value})
        return value

    def record_all(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``record`` every pair of ``values``, in order."""
        return {key: self.record(key, value) for key, value in values.items()}

    def record_minutes(self) -> float:
        """Record ``minutes``: the wall time since this recorder was made (the notebook's start), rounded."""
        return self.record("minutes", round((time.time() - self.started) / 60, 2))


def load_record(run: str | os.PathLike, name: str) -> dict[str, Any]:
    """Read the values a notebook recorded (``name`` is the notebook's file stem)."""
    return read_json(RunLayout(Path(run)).record(name))


def _display(value: dict[str, Any]) -> None:
    try:
        from IPython.display import JSON, display

        display(JSON(value, expanded=True))
    except ImportError:  # outside Jupyter a print does
        print(value)


# ----------------------------------------------------------------------------------------- provenance
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "scikit-learn",
    "bitsandbytes",
)


def environment() -> dict[str, Any]:
    """Package versions, git commit and hardware, saved beside every training and evaluation result."""
    import importlib.metadata as md

    import torch

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    hardware: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        hardware["gpu"] = torch.cuda.get_device_name(0)
    hardware["allocator"] = allocator_in_use()
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        hardware["memory_gb"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "python": platform.python_version(),
        "packages": versions,
        "git_commit": commit,
        "hardware": hardware,
    }


def hardware_summary(env: Mapping[str, Any]) -> str:
    """One line naming the hardware of an ``environment()``, e.g. '2 CPU cores (x86_64), no GPU'."""
    hw = env.get("hardware", {})
    gpu = hw.get("gpu") or "no GPU"
    return f"{hw.get('cpu_count')} CPU cores ({hw.get('processor')}), {gpu}"


def benchmark_command(name: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces a result of ``benchmarks/<name>.py``: ``dialoguellm benchmark <name>`` and its
    arguments (``argv``; the process's own arguments when None)."""
    return " ".join(["dialoguellm", "benchmark", name, *(sys.argv[1:] if argv is None else argv)])


def adapter_fingerprint(adapter: str | os.PathLike | None) -> str | None:
    """The sha256 of an adapter's weights (``adapter_model.safetensors``): which adapter a number came from,
    whatever folder it was copied to. None without an adapter or its weights file."""
    import hashlib

    weights = Path(adapter) / "adapter_model.safetensors" if adapter else None
    if weights is None or not weights.is_file():
        return None
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def benchmark_header(name: str, argv: Sequence[str] | None = None, **fields: Any) -> dict[str, Any]:
    """The provenance a benchmark's JSON opens with: the benchmark's name, the command that reproduces it
    (``benchmark_command``), the git commit, the script's own ``fields`` in the order given (model, adapter,
    split, ...) with the adapter's weights fingerprint (``adapter_fingerprint``) when an adapter is named, then
    the hardware (``hardware_summary``), torch's thread count and torch's version."""
    import torch

    env = environment()
    identity = {"git_commit": env.get("git_commit")}
    if fields.get("adapter"):
        identity["adapter_sha256"] = adapter_fingerprint(fields["adapter"])
    return {
        "benchmark": name,
        "command": benchmark_command(name, argv),
        **identity,
        **fields,
        "hardware": hardware_summary(env),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "allocator": allocator_in_use(),
    }


def hardware_description() -> str:
    """The machine that produced a number, by name: GPU name(s), else CPU model and usable core count."""
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return f"{len(names)} x {names[0]} (CUDA)"
    except ImportError:  # torch is a dependency; this only guards odd installs
        pass
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} CPU cores ({cpu})"


# ------------------------------------------------------------------------------------------ the allocator
ALLOCATOR_SWITCH = "DIALOGUELLM_ALLOCATOR"  # "system" keeps the C library's malloc for notebook kernels


def mimalloc_library() -> Path | None:
    """The shared library of the ``cmeel-mimalloc`` wheel (a dependency on Linux), or None where it is not
    installed.

    Training allocates tensors of a new size every step (the packed pass's length varies with its
    utterances), and glibc's malloc kept the freed memory fragmented: a training process grew to 4.8-5.2 GB
    over 100 steps of the cpu profile where mimalloc held 3.4 GB (probes, docs/SPEED.md).
    """
    import importlib.metadata as md

    try:
        files = md.files("cmeel-mimalloc") or []
    except md.PackageNotFoundError:
        return None
    for file in files:
        if file.name.startswith("libmimalloc.so"):
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    return None


# mimalloc's delay before it hands freed memory back to the system (ms); -1: never. By default (10 ms) it handed
# back a training step's activations between steps and took them again, page fault by page fault, in the next:
# 100 steps of the cpu profile took 240 s with it and 217 s without, holding 2.3 and 3.4 GB (glibc's malloc:
# 237 s, 4.8 GB; a probe on the idle 2-core machine, docs/SPEED.md).
PURGE_DELAY = ("MIMALLOC_PURGE_DELAY", "-1")


def allocator_environment(env: dict[str, str]) -> dict[str, str]:
    """``env`` with mimalloc preloaded (``LD_PRELOAD``) for the processes it starts, and its freed memory kept
    for reuse (``PURGE_DELAY``, unless ``env`` sets it), where the library is installed and
    ``DIALOGUELLM_ALLOCATOR`` is not "system"; unchanged otherwise."""
    library = mimalloc_library()
    if library is None or env.get(ALLOCATOR_SWITCH, "").lower() == "system":
        return env
    preload = [p for p in env.get("LD_PRELOAD", "").split() if p]
    if str(library) not in preload:
        env = {**env, "LD_PRELOAD": " ".join([str(library), *preload])}
    if PURGE_DELAY[0] not in env:
        env = {**env, PURGE_DELAY[0]: PURGE_DELAY[1]}
    return env


@contextlib.contextmanager
def allocator_preloaded() -> Iterator[None]:
    """While inside, the processes this one starts (notebook kernels) get ``allocator_environment``'s
    variables; this process's own environment is as it was on exit."""
    env = allocator_environment(dict(os.environ))
    before = {key: os.environ.get(key) for key, value in env.items() if os.environ.get(key) != value}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def reexec_with_allocator(command: Sequence[str] | None = None) -> None:
    """Start ``command`` (this program again: ``python -m dialoguellm.cli`` and its arguments) with
    ``allocator_environment``, replacing this process, when this process lacks it: the ``dialoguellm`` console
    script calls it first, so ``dialoguellm train`` and ``dialoguellm benchmark`` run on the allocator the
    notebooks' kernels get. Returns where nothing would change (already preloaded,
    ``DIALOGUELLM_ALLOCATOR=system``, no mimalloc), so it never loops."""
    env = allocator_environment(dict(os.environ))
    if env == dict(os.environ):
        return
    command = list(command or [sys.executable, "-m", "dialoguellm.cli", *sys.argv[1:]])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)


def allocator_in_use() -> str:
    """ "mimalloc" when this process runs with mimalloc preloaded (with its purge delay when set, e.g.
    "mimalloc, purge delay -1"), else "system"."""
    if "libmimalloc" not in os.environ.get("LD_PRELOAD", ""):
        return "system"
    delay = os.environ.get(PURGE_DELAY[0])
    return "mimalloc" if delay is None else f"mimalloc, purge delay {delay}"

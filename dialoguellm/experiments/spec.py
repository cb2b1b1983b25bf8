"""An experiment file read into typed settings (``Experiment``); errors name the file and the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dialoguellm.analysis.ablation import Arm, arm_from_mapping, load_arm
from dialoguellm.config import Config
from dialoguellm.corpora.readers import resolve_datasets
from dialoguellm.experiments import EXPERIMENTS_DIR
from dialoguellm.experiments.summary import Correction
from dialoguellm.metrics import METRICS

KEYS = ("description", "profile", "arms", "baseline", "seeds", "samples", "set", "metrics", "corrections")
SAMPLE_KEYS = (
    "train_per_dataset",
    "dev_per_dataset",
    "test_per_dataset",
    "split",
    "sample_seed",
    "include_overlap",
    "include_described",
)


@dataclass(frozen=True)
class Samples:
    """What every arm draws: training utterances per corpus (per seed; 0 = all), the dev sample that selects
    every adapter and the test sample every arm is scored on (both fixed by ``sample_seed``).

    ``include_overlap``: every training draw also holds each training line that matches a dev/test line of
    another corpus, and the test sample each test line that matches another corpus's training line (on top
    of the sizes above), so an arm that keeps the overlap has seen the match of every overlapping test line
    it is scored on, and the overlapping lines can be compared with the rest (``corpora.overlap``).

    ``include_described``: the test sample also holds every test line whose clip has a video description
    (a corpus of ``prompts.VIDEO_DATASETS``; the descriptions the run is given), on top of the sizes above, so
    an arm with ``score_on: described`` is scored on all of them; the plan marks them (``described``)."""

    train_per_dataset: int
    dev_per_dataset: int
    test_per_dataset: int
    split: str
    sample_seed: int
    include_overlap: bool = False
    include_described: bool = False


@dataclass
class Experiment:
    """One experiment file, resolved: its arms on the base profile, seeds, samples and metrics."""

    name: str
    path: Path
    description: str
    profile: str
    arms: list[Arm]
    baseline: str
    seeds: list[int]
    samples: Samples
    overrides: dict[str, Any]
    metrics: list[str]
    # corrections of the label scores the report fits on the scored sample, cross-fitted
    # (``summary.corrections_table``; for a dev experiment); each compared with the first, or the one it
    # names ("prior vs prior(scale=1)")
    corrections: list[str] = field(default_factory=list)

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        return next(a for a in self.arms if a.name == name)

    def units(self) -> list[tuple[Arm, int | None]]:
        """(arm, seed) in run order: an untuned arm once (seed None) first, then every arm of a seed before
        the next seed, so a run stopped early has each arm with as many seeds as possible."""
        first = [(a, None) for a in self.arms if not a.tuned]
        return first + [(a, s) for s in self.seeds for a in self.arms if a.tuned]

    @property
    def datasets(self) -> list[str]:
        """Every corpus some arm trains on, in first-seen order."""
        return list(dict.fromkeys(d for a in self.arms for d in a.config.data.datasets))


def experiment_path(name: str | os.PathLike) -> Path:
    """An experiment name (``ablations_cpu``: ``dialoguellm/experiments/ablations_cpu.yaml``) or a YAML path."""
    text = os.fspath(name)
    path = (
        Path(text) if text.endswith((".yaml", ".yml")) or os.sep in text else EXPERIMENTS_DIR / f"{text}.yaml"
    )
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"Experiment not found: {path}. Packaged experiments: {known}.")
    return path


def load_experiment(
    name: str | os.PathLike,
    profile: str | os.PathLike | Config | None = None,
    overrides: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike | None = None,
) -> Experiment:
    """Read an experiment file. ``profile`` replaces its base profile (tests pass a tiny one); ``overrides``
    (dotted keys, ``--set``) apply to every arm after the file's ``set``. An arm's IEMOCAP is dropped, with a
    warning, when neither ``$IEMOCAP_DIR`` nor ``run_dir`` has it (``corpora.readers.resolve_datasets``)."""
    path = experiment_path(name)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(raw) - set(KEYS))
    missing = [k for k in ("profile", "arms", "seeds", "samples") if k not in raw]
    if unknown or missing:
        raise ValueError(
            f"{path}: unknown key(s) {unknown} / missing key(s) {missing}; an experiment has {', '.join(KEYS)}."
        )
    samples = _samples(path, raw["samples"])
    seeds = [int(s) for s in raw["seeds"]]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list without repeats, not {raw['seeds']}.")
    every = {**(raw.get("set") or {}), **dict(overrides or {})}
    base = profile if profile is not None else raw["profile"]
    arms = [_arm(path, entry, base, every) for entry in raw["arms"]]
    for arm in arms:
        arm.config = resolve_datasets(arm.config, run_dir)
    names = [a.name for a in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: two arms share a name ({names}).")
    _check_reuses(path, arms)
    baseline = str(raw.get("baseline", names[0]))
    if baseline not in names:
        raise ValueError(f"{path}: baseline {baseline!r} is not one of the arms ({', '.join(names)}).")
    _check_scoring(path, arms, names)
    metrics = [str(m) for m in raw.get("metrics", METRICS)]
    if not metrics or set(metrics) - set(METRICS):
        raise ValueError(f"{path}: metrics must be some of {', '.join(METRICS)}, not {metrics}.")
    corrections = raw.get("corrections") or []
    try:
        corrections = [Correction.parse(c).spec for c in corrections]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: corrections: {err}") from None
    return Experiment(
        name=path.stem, path=path, description=str(raw.get("description", "")),
        profile=str(base if not isinstance(base, Config) else base.source), arms=arms, baseline=baseline,
        seeds=seeds, samples=samples, overrides=every, metrics=metrics, corrections=corrections,
    )  # fmt: skip


# what a scoring variant (``arm.reuses``) may not change: everything that makes the adapter it scores
TRAINING_SECTIONS = ("model", "lora", "data", "train")


def _check_reuses(path: Path, arms: list[Arm]) -> None:
    """A scoring variant names an earlier trained arm and changes nothing that made its adapter."""
    seen: dict[str, Arm] = {}
    for arm in arms:
        if arm.reuses is not None:
            target = seen.get(arm.reuses)
            if target is None or not target.tuned or target.reuses is not None:
                raise ValueError(
                    f"{path}: arm {arm.name!r} reuses {arm.reuses!r}, which must be a trained arm listed before it "
                    f"(trained arms before it: {', '.join(a.name for a in seen.values() if a.tuned and not a.reuses) or 'none'})."
                )
            mine, theirs = arm.config.to_dict(), target.config.to_dict()
            for section in TRAINING_SECTIONS:
                for key, value in mine[section].items():
                    if value != theirs[section][key]:
                        raise ValueError(
                            f"{path}: arm {arm.name!r} reuses the adapter of {arm.reuses!r} but sets {section}.{key} "
                            f"= {value!r} (theirs: {theirs[section][key]!r}); a scoring variant may change only "
                            "prompt.* and eval.* (how the adapter is scored). Make it a trained arm instead."
                        )
        seen[arm.name] = arm


def _check_scoring(path: Path, arms: list[Arm], names: list[str]) -> None:
    """``arm.against`` names another arm; descriptions are withheld only where nothing is trained with them
    (a scoring variant or an untuned arm: a trained arm would train with descriptions and be scored without)."""
    for arm in arms:
        if arm.against is not None and arm.against not in names:
            raise ValueError(
                f"{path}: arm {arm.name!r} is compared against {arm.against!r}, which is not one of the arms "
                f"({', '.join(names)})."
            )
        if arm.descriptions == "withheld" and arm.tuned and arm.reuses is None:
            raise ValueError(
                f"{path}: arm {arm.name!r} withholds descriptions but trains its own adapter (with them when "
                "prompt.use_video is on); make it a scoring variant (arm.reuses) or untuned (arm.tuned: false)."
            )


def _samples(path: Path, raw: Any) -> Samples:
    if not isinstance(raw, Mapping) or set(raw) - set(SAMPLE_KEYS):
        raise ValueError(
            f"{path}: samples must be a mapping with some of {', '.join(SAMPLE_KEYS)}, not {raw!r}."
        )
    split = str(raw.get("split", "test"))
    if split not in ("dev", "test"):
        raise ValueError(f"{path}: samples.split is {split!r}; arms are scored on dev or test, never train.")
    try:
        sizes = {k: int(raw.get(k, 0)) for k in ("train_per_dataset", "dev_per_dataset", "test_per_dataset")}
        sample_seed = int(raw.get("sample_seed", 0))
    except (TypeError, ValueError):
        raise ValueError(
            f"{path}: samples sizes and sample_seed must be integers, not {dict(raw)}."
        ) from None
    if min(sizes.values()) < 0:
        raise ValueError(f"{path}: sample sizes must be >= 0 (0 = all), not {sizes}.")
    flags = {k: raw.get(k, False) for k in ("include_overlap", "include_described")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{path}: samples.{key} must be true or false, not {value!r}.")
    return Samples(**sizes, split=split, sample_seed=sample_seed, **flags)


def _arm(path: Path, entry: Any, base: str | os.PathLike | Config, overrides: Mapping[str, Any]) -> Arm:
    """An arm named by file (``arms/<name>.yaml`` beside the experiment, else the packaged one) or inline."""
    if isinstance(entry, Mapping):
        return arm_from_mapping(entry, path, base, overrides)
    beside = path.parent / "arms" / f"{entry}.yaml"
    return load_arm(beside if beside.is_file() else str(entry), base, overrides)

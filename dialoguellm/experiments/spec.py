"""An experiment file read into typed settings (``Experiment``); errors name the file and the key."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

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
class TrainSize:
    """One training size of a learning curve, per corpus: ``count`` utterances (0 = the whole training split)
    or a ``fraction`` of each corpus's training split; ``seeds``: the experiment's seeds that train at this
    size (None: every seed). Written in an experiment file as ``100``, ``"1/16"``, ``all`` or
    ``{size: all, seeds: [1]}``."""

    count: int = 0
    fraction: Fraction | None = None
    seeds: tuple[int, ...] | None = None

    @property
    def label(self) -> str:
        """How records and tables name it: ``100``, ``1/16``, ``all``."""
        if self.fraction is not None and self.fraction < 1:
            return f"{self.fraction.numerator}/{self.fraction.denominator}"
        return str(self.count) if self.count else "all"

    def of(self, available: int) -> int:
        """The number of utterances this size draws from a split of ``available`` (at least 1)."""
        if self.fraction is not None:
            return min(available, max(1, int(self.fraction * available + Fraction(1, 2))))
        return available if self.count == 0 else min(self.count, available)


class Unit(NamedTuple):
    """One training run (or one scoring of an untuned arm) of an experiment: the arm, its seed (None: scored
    once) and, in a learning curve, its training size (None: the experiment has one size)."""

    arm: Arm
    seed: int | None
    size: TrainSize | None = None


@dataclass(frozen=True)
class Samples:
    """What every arm draws: training utterances per corpus (per seed; 0 = all), the dev sample that selects
    every adapter and the test sample every arm is scored on (both fixed by ``sample_seed``).

    ``train_sizes``: a learning curve (``train_per_dataset`` written as a list): every tuned arm trains at
    every size, and for one seed the draws are nested (``prompts.nested_sample_order``: each size holds the
    smaller ones). Empty (the default): one size, ``train_per_dataset``, drawn as before.

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
    train_sizes: tuple[TrainSize, ...] = ()

    def as_plan(self) -> dict[str, Any]:
        """The samples as the plan records them (``train_sizes`` only for a learning curve)."""
        out = {k: v for k, v in self.__dict__.items() if k != "train_sizes"}
        if self.train_sizes:
            out["train_per_dataset"] = [
                {"size": s.label, "seeds": list(s.seeds) if s.seeds else None} for s in self.train_sizes
            ]
        return out


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

    @property
    def sizes(self) -> list[TrainSize | None]:
        """The training sizes of a learning curve, smallest first; ``[None]`` for one size."""
        return list(self.samples.train_sizes) or [None]

    def size_seeds(self, size: TrainSize | None) -> list[int]:
        """The seeds that train at ``size``."""
        return [s for s in self.seeds if size is None or size.seeds is None or s in size.seeds]

    def units(self) -> list[Unit]:
        """Every unit in run order: an untuned arm once (seed None) first, then every arm of a seed (at every
        size, smallest first) before the next seed, so a run stopped early has each arm with as many seeds
        as possible (and a learning curve whole curves)."""
        first = [Unit(a, None) for a in self.arms if not a.tuned]
        return first + [
            Unit(a, s, size)
            for s in self.seeds
            for size in self.sizes
            if s in self.size_seeds(size)
            for a in self.arms
            if a.tuned
        ]

    def untuned_draw(self) -> tuple[int, TrainSize | None]:
        """The training draw an untuned arm's demonstrations come from: the first seed's (in a learning
        curve, the first seed's at the largest size, the largest pool)."""
        size = self.sizes[-1]
        return self.size_seeds(size)[0], size

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
    seeds = [int(s) for s in raw["seeds"]]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list without repeats, not {raw['seeds']}.")
    samples = _samples(path, raw["samples"], seeds)
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
            if (
                target is None
                or not target.tuned
                or target.reuses is not None
                or "llm" != target.kind
                or arm.kind != "llm"
            ):
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


def _samples(path: Path, raw: Any, seeds: list[int]) -> Samples:
    if not isinstance(raw, Mapping) or set(raw) - set(SAMPLE_KEYS):
        raise ValueError(
            f"{path}: samples must be a mapping with some of {', '.join(SAMPLE_KEYS)}, not {raw!r}."
        )
    split = str(raw.get("split", "test"))
    if split not in ("dev", "test"):
        raise ValueError(f"{path}: samples.split is {split!r}; arms are scored on dev or test, never train.")
    train = raw.get("train_per_dataset", 0)
    curve = _train_sizes(path, train, seeds) if isinstance(train, list) else ()
    try:
        sizes = {
            k: 0 if curve and k == "train_per_dataset" else int(raw.get(k, 0))
            for k in ("train_per_dataset", "dev_per_dataset", "test_per_dataset")
        }
        sample_seed = int(raw.get("sample_seed", 0))
    except (TypeError, ValueError):
        raise ValueError(
            f"{path}: samples sizes and sample_seed must be integers (train_per_dataset: an integer or a list "
            f"of sizes), not {dict(raw)}."
        ) from None
    if min(sizes.values()) < 0:
        raise ValueError(f"{path}: sample sizes must be >= 0 (0 = all), not {sizes}.")
    flags = {k: raw.get(k, False) for k in ("include_overlap", "include_described")}
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{path}: samples.{key} must be true or false, not {value!r}.")
    return Samples(**sizes, split=split, sample_seed=sample_seed, **flags, train_sizes=curve)


def _train_sizes(path: Path, entries: list, seeds: list[int]) -> tuple[TrainSize, ...]:
    """A learning curve's sizes: counts (``100``; ``0`` or ``all``: the whole split) or fractions (``"1/16"``,
    ``0.25``), each optionally ``{size: ..., seeds: [...]}``; of one kind, growing, without repeats."""
    fix = (
        'write samples.train_per_dataset as growing sizes, e.g. [100, 200, 400] or ["1/64", "1/32", all], '
        "an entry optionally {size: all, seeds: [1]}"
    )
    out = []
    for entry in entries:
        value, chosen = (
            (entry.get("size"), entry.get("seeds")) if isinstance(entry, Mapping) else (entry, None)
        )
        if isinstance(entry, Mapping) and set(entry) - {"size", "seeds"}:
            raise ValueError(
                f"{path}: samples.train_per_dataset entry {entry!r} has keys other than size, seeds; {fix}."
            )
        size = _train_size(value)
        if size is None:
            raise ValueError(f"{path}: samples.train_per_dataset entry {entry!r} is not a size; {fix}.")
        if chosen is not None:
            if not isinstance(chosen, list) or not chosen or not set(chosen) <= set(seeds):
                raise ValueError(
                    f"{path}: samples.train_per_dataset entry {entry!r}: seeds must be a non-empty list of the "
                    f"experiment's seeds ({seeds})."
                )
            size = TrainSize(size.count, size.fraction, tuple(int(s) for s in chosen))
        out.append(size)
    kinds = {s.fraction is not None for s in out if s.label != "all"}
    keys = [s.fraction if s.fraction is not None else (s.count or float("inf")) for s in out]
    if not out or len(kinds) > 1 or keys != sorted(keys) or len({s.label for s in out}) != len(out):
        raise ValueError(
            f"{path}: samples.train_per_dataset {entries!r} mixes counts and fractions, repeats a size or is "
            f"not growing; {fix}."
        )
    return tuple(out)


def _train_size(value: Any) -> TrainSize | None:
    if value == "all" or (isinstance(value, int) and not isinstance(value, bool) and value == 0):
        return TrainSize(0)
    if isinstance(value, int) and not isinstance(value, bool):
        return TrainSize(value) if value > 0 else None
    try:
        fraction = Fraction(str(value)) if isinstance(value, (str, float)) else None
    except (ValueError, ZeroDivisionError):
        return None
    if fraction is None or not 0 < fraction <= 1:
        return None
    return TrainSize(0, fraction) if fraction < 1 else TrainSize(0)


def _arm(path: Path, entry: Any, base: str | os.PathLike | Config, overrides: Mapping[str, Any]) -> Arm:
    """An arm named by file (``arms/<name>.yaml`` beside the experiment, else the packaged one) or inline."""
    if isinstance(entry, Mapping):
        return arm_from_mapping(entry, path, base, overrides)
    beside = path.parent / "arms" / f"{entry}.yaml"
    return load_arm(beside if beside.is_file() else str(entry), base, overrides)

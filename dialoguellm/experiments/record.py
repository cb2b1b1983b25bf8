"""The one result record of an experiment: one JSON file per arm x seed (``UnitRecord``), written atomically
when the unit is finished, beside the experiment's plan (``experiment.json``). docs/EXPERIMENTS.md documents
every field. Metrics are fractions (0..1) everywhere; only renderers print percent.

    from dialoguellm.experiments import record
    units = record.load_units("results/cpu/experiments/ablations_cpu")
    record.sample_frame(units)        # arm, seed, dataset, split, example_id: check the pairing with pandas
    record.prediction_frame(units)    # arm, seed, dataset, example_id, dialogue_id, gold_id, pred_id
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.io import atomic_path, read_json
from dialoguellm.runs import ExperimentLayout

FORMAT = 1


@dataclass
class RunIdentity:
    """Where a unit's numbers come from: the commit, the hash of its resolved config, the adapter it scored
    (None for an untuned arm), the hardware, Python and package versions, the command and the times."""

    commit: str | None
    config_hash: str
    adapter: str | None
    hardware: str
    python: str
    packages: dict[str, str]
    command: str
    finished: str
    train_seconds: float
    score_seconds: float
    adapter_sha256: str | None = None  # ``runs.adapter_fingerprint`` of the adapter (records before it: None)


@dataclass
class Predictions:
    """One corpus's test sample as the unit scored it, row i = one utterance: its id, dialogue and gold
    label, the predicted label id (-1: no label) and, when recorded, the score of every label."""

    example_id: list[str]
    dialogue_id: list[str]
    gold_id: list[int]
    pred_id: list[int]
    label_scores: list[list[float]] | None = None
    output: list[str] | None = None  # the generated text (eval.mode generate); None when labels were scored


@dataclass
class UnitRecord:
    """One arm x seed of an experiment (seed None: an untuned arm, scored once); in a learning curve one arm x
    size x seed (``size``: ``100``, ``1/16``, ``all``; None: the experiment has one size, or an arm scored once).

    ``samples``: dataset -> split -> the utterance ids the unit used (``train``: trained on, after what the
    arm removes; ``dev``: selected the adapter; ``test``: scored). ``removed``: dataset -> training ids of the
    seed's draw that the arm dropped (cross-corpus overlap), so ``train + removed`` is the seed's draw.
    ``metrics``: dataset -> {n, accuracy, weighted_f1, macro_f1} as fractions. ``notes``: anything a reader
    must know (e.g. ids reconstructed by a converter rather than recorded by the run)."""

    experiment: str
    arm: str
    seed: int | None
    identity: RunIdentity
    config: dict[str, Any]
    samples: dict[str, dict[str, list[str]]]
    removed: dict[str, list[str]]
    predictions: dict[str, Predictions]
    metrics: dict[str, dict[str, float]]
    notes: list[str] = field(default_factory=list)
    format: int = FORMAT
    size: str | None = None
    # the adapter's dev selection: which dev evaluation it is (``checkpoint``; 0 = the one dev chose), its
    # step and dev weighted F1 (mean and per corpus, from training's metrics.json); None for an untuned arm
    selection: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "record") -> UnitRecord:
        """A record read back; errors name the file and what is missing."""
        missing = [
            k
            for k in ("experiment", "arm", "seed", "identity", "samples", "predictions", "metrics")
            if k not in raw
        ]
        if missing or raw.get("format") != FORMAT:
            raise ValueError(
                f"{source}: not an experiment unit record of format {FORMAT} (missing {missing}, format "
                f"{raw.get('format')!r}); rerun `dialoguellm experiment run` or the converter that wrote it."
            )
        return cls(
            experiment=raw["experiment"], arm=raw["arm"], seed=raw["seed"], identity=RunIdentity(**raw["identity"]),
            config=raw.get("config", {}), samples=raw["samples"], removed=raw.get("removed", {}),
            predictions={d: Predictions(**p) for d, p in raw["predictions"].items()}, metrics=raw["metrics"],
            notes=list(raw.get("notes", [])), size=raw.get("size"), selection=raw.get("selection"),
        )  # fmt: skip


def size_slug(size: str) -> str:
    """A training size as a file name takes it: ``100`` -> ``n100``, ``1/16`` -> ``f1of16``, ``all``."""
    if size == "all":
        return size
    return f"f{size.replace('/', 'of')}" if "/" in size else f"n{size}"


def unit_name(arm: str, seed: int | None, size: str | None = None) -> str:
    """``base.seed1``; ``no_lora.untrained`` for an arm scored once; in a learning curve ``base.n100.seed1``."""
    at = "" if size is None or seed is None else f"{size_slug(size)}."
    return f"{arm}.{at}{'untrained' if seed is None else f'seed{seed}'}"


def config_hash(settings: Mapping[str, Any]) -> str:
    """A short hash of resolved settings (sorted JSON), naming a config in a record."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def save_unit(layout: ExperimentLayout, unit: UnitRecord) -> Path:
    """Write one unit's record atomically (a temporary file renamed over: never half a record), as compact
    JSON: thousands of ids and predictions, one per line, would make a committed record five times larger."""
    path = layout.unit(unit_name(unit.arm, unit.seed, unit.size))
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(unit.as_dict(), ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8"
        )
    return path


def load_units(folder: str | os.PathLike) -> list[UnitRecord]:
    """Every unit record of an experiment folder, in the plan's order when there is one."""
    layout = ExperimentLayout(Path(folder))
    if not layout.units.is_dir():
        raise FileNotFoundError(
            f"No experiment records in {layout.units}; run `dialoguellm experiment run NAME` first."
        )
    units = {p.stem: UnitRecord.from_dict(read_json(p), str(p)) for p in sorted(layout.units.glob("*.json"))}
    order = [unit_name(*u) for u in load_plan(folder).get("units", [])] if layout.plan.is_file() else []
    return [units[n] for n in order if n in units] + [u for n, u in units.items() if n not in order]


def load_plan(folder: str | os.PathLike) -> dict[str, Any]:
    """The experiment's plan (``experiment.json``): its settings, arms, units and samples."""
    path = ExperimentLayout(Path(folder)).plan
    if not path.is_file():
        raise FileNotFoundError(f"No experiment plan at {path}; run `dialoguellm experiment run NAME` first.")
    return read_json(path)


def sample_frame(units: Sequence[UnitRecord]) -> pd.DataFrame:
    """One row per (unit, dataset, split, utterance id): columns arm, seed, dataset, split, example_id
    (split ``removed``: training ids of the seed's draw the arm dropped), size (None but in a learning curve)."""
    rows = [
        (u.arm, u.seed, dataset, split, example_id, u.size)
        for u in units
        for dataset, splits in u.samples.items()
        for split, ids in {**splits, "removed": u.removed.get(dataset, [])}.items()
        for example_id in ids
    ]
    return pd.DataFrame(rows, columns=["arm", "seed", "dataset", "split", "example_id", "size"])


def prediction_frame(units: Sequence[UnitRecord]) -> pd.DataFrame:
    """Every prediction of every unit: arm, seed, dataset, example_id, dialogue_id, gold_id, pred_id, size."""
    frames = [
        pd.DataFrame(
            {
                "arm": u.arm,
                "seed": u.seed,
                "dataset": dataset,
                "example_id": p.example_id,
                "dialogue_id": p.dialogue_id,
                "gold_id": p.gold_id,
                "pred_id": p.pred_id,
                "size": u.size,
            }
        )  # fmt: skip
        for u in units
        for dataset, p in u.predictions.items()
    ]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

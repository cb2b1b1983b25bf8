"""Retrained ablations: one adapter per arm and seed, every one scored on the same test sample.

    python -m dialoguellm.analysis.ablation_retrained --config cpu      # or: make ablations
    python -m dialoguellm.analysis.ablation_retrained --config paper --run RUN_DIR   # the paper's grid

The grid file (``dialoguellm/profiles/ablations/cpu.yaml``, ``paper.yaml``) names the base profile, the
arms (``ablations/arms/*.yaml``, each overriding the base profile: ``analysis.ablation``), the seeds, the
test sample and the size. The paper grid is the paper's Tables 4/5 at full size (LLaMA 2-7B, 5 seeds, full
test sets; z in {0, 1, 2, 3, all}, video descriptions on/off, k in {0, 1, 5}, LoRA on/off; the base arm is
z = 1, k = 1, video on, LoRA); it needs ``--run`` for IEMOCAP and the video descriptions.

For every tuned arm and seed, ``training.loop.train`` trains an adapter (``train.seed`` = the seed) and
it is scored (label scoring, raw scores) on the grid's stratified test sample of every corpus the arm
trains on; the same utterances for every arm and seed (``sample_seed``). The untuned arm trains nothing and
is scored once. The paper asks the same questions of LLaMA 2-7B, one model per arm, 5 seeds (Tables 4, 5).

Output: ONE file, ``results/<config>/ablations_retrained/results.json`` (``--out``), rewritten atomically
after every arm x seed: the grid and each arm's resolved config, the environment, the command, the test
sample (example_id, dialogue, gold label), and per arm x seed the metrics, the per-utterance predictions
and the seconds spent. Adapters and checkpoints go to ``runs/ablations_retrained/<config>/`` (``--work``).
Resumable: a finished arm x seed is not redone, an interrupted training continues from its checkpoint, an
adapter already trained is only scored. ``summary_table`` turns the file into the table notebook 05 shows.

Size of the cpu grid: 400 training utterances per corpus, chosen to stay within 3 hours on 2 cores; the
committed results file took 2 h 3 min (docs/EVALUATION.md, "Retrained ablations", has the time per part and
why the first sizing, 1,000 per corpus, was dropped).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dialoguellm import stats
from dialoguellm.analysis import ablation
from dialoguellm.analysis.ablation import ARMS_DIR, Arm, load_arm, predict_arm
from dialoguellm.config import Config
from dialoguellm.corpora.readers import load_corpora_for, resolve_datasets
from dialoguellm.corpora.video import load_descriptions
from dialoguellm.io import read_json, write_json
from dialoguellm.labels import normalised_label_names
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.model.card import invocation
from dialoguellm.progress import progress_bar as tqdm
from dialoguellm.prompts import demonstration_exclusions, rows_of, sample_positions
from dialoguellm.runs import TrainingLayout, environment, hardware_description
from dialoguellm.training import loop

log = logging.getLogger(__name__)

GRIDS_DIR = ARMS_DIR.parent  # the grid files; their arms are in ARMS_DIR
RESULTS_FILE = "results.json"
FORMAT = 1
BASE_ARM = "base"
METRICS = ("accuracy", "weighted_f1", "macro_f1")
UNTRAINED = "untrained"  # the seed slot of an arm that trains nothing


# ------------------------------------------------------------------------------------------- the grid


@dataclass
class Grid:
    """What a retrained-ablation run does: the arms (resolved on the base profile + the size), the seeds and
    the test sample."""

    name: str
    path: Path
    profile: str
    arms: list[Arm]
    seeds: list[int]
    split: str
    test_per_dataset: int
    sample_seed: int
    overrides: dict[str, Any]

    def jobs(self) -> list[tuple[Arm, int | None]]:
        """(arm, seed) in run order: every arm of a seed before the next seed (so a run stopped early has
        each arm with as many seeds as possible); an untuned arm once (seed None), in the first round."""
        first = [(a, None) for a in self.arms if not a.tuned]
        return first + [(a, s) for s in self.seeds for a in self.arms if a.tuned]

    def settings(self) -> dict[str, Any]:
        """The grid as saved in the results file (each arm's resolved config included)."""
        return {
            "name": self.name,
            "file": str(self.path),
            "profile": self.profile,
            "seeds": list(self.seeds),
            "split": self.split,
            "test_per_dataset": self.test_per_dataset,
            "sample_seed": self.sample_seed,
            "set": dict(self.overrides),
            "arms": {
                a.name: {
                    "label": a.label, "group": a.group, "tuned": a.tuned, "paper": a.paper,
                    "file": str(a.path), "datasets": list(a.config.data.datasets), **a.settings(),
                    "config": _config_dict(a.config),
                }
                for a in self.arms
            },
        }  # fmt: skip


def _config_dict(config: Config) -> dict[str, Any]:
    settings = config.to_dict()
    settings.pop("source", None)  # where it came from (an absolute path) is not a setting
    return settings


def job_key(arm: Arm | str, seed: int | None) -> str:
    """The results file's key of one arm x seed: ``base/seed1``; ``no_lora/untrained`` for an untuned arm."""
    name = arm if isinstance(arm, str) else arm.name
    return f"{name}/{UNTRAINED if seed is None else f'seed{seed}'}"


def grid_path(config: str | os.PathLike) -> Path:
    """A grid name (``cpu``: ``profiles/ablations/cpu.yaml``) or a YAML path."""
    text = os.fspath(config)
    path = Path(text) if text.endswith((".yaml", ".yml")) or os.sep in text else GRIDS_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in GRIDS_DIR.glob("*.yaml")))
        raise FileNotFoundError(f"Retrained-ablation grid not found: {path}. Known grids: {known}.")
    return path


def arm_file(grid_file: Path, name: str) -> Path:
    """An arm of a grid: ``arms/<name>.yaml`` beside the grid file, else the packaged one."""
    beside = grid_file.parent / "arms" / f"{name}.yaml"
    return beside if beside.is_file() else ARMS_DIR / f"{name}.yaml"


GRID_KEYS = ("profile", "arms", "seeds", "split", "test_per_dataset", "sample_seed", "set")


def load_grid(
    config: str | os.PathLike = "cpu",
    profile: str | os.PathLike | Config | None = None,
    overrides: Mapping[str, Any] | None = None,
    run_dir: str | os.PathLike | None = None,
) -> Grid:
    """Read a grid file; ``profile`` replaces its base profile (tests pass a tiny one), ``overrides``
    (dotted keys) are applied after the grid's ``set``. Errors name the file and the key.

    An arm's IEMOCAP is dropped, with the warning that says so, when neither ``$IEMOCAP_DIR`` nor
    ``run_dir`` (notebook 01's curated copy) has it (``corpora.readers.resolve_datasets``)."""
    path = grid_path(config)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(raw) - set(GRID_KEYS))
    missing = [k for k in ("profile", "arms", "seeds") if k not in raw]
    if unknown or missing:
        raise ValueError(
            f"{path}: unknown key(s) {unknown} / missing key(s) {missing}; a grid has {', '.join(GRID_KEYS)}."
        )
    split = str(raw.get("split", "test"))
    if split not in ("dev", "test"):
        raise ValueError(f"{path}: split is {split!r}; ablations are scored on dev or test, never train.")
    seeds = [int(s) for s in raw["seeds"]]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"{path}: seeds must be a non-empty list without repeats, not {raw['seeds']}.")
    test_per_dataset = int(raw.get("test_per_dataset", 500))
    # The arms' saved configs say the test sample's size too (the sample itself is the grid's, one for all).
    every = {**(raw.get("set") or {}), "data.test_per_dataset": test_per_dataset, **dict(overrides or {})}
    base = profile if profile is not None else raw["profile"]
    arms = [load_arm(arm_file(path, name), base, every) for name in raw["arms"]]
    for arm in arms:
        arm.config = resolve_datasets(arm.config, run_dir)
    if BASE_ARM not in [a.name for a in arms]:
        raise ValueError(f"{path}: arms must include {BASE_ARM!r}, the arm every other is compared with.")
    return Grid(
        name=path.stem, path=path, profile=str(base if not isinstance(base, Config) else base.source),
        arms=arms, seeds=seeds, split=split, test_per_dataset=test_per_dataset,
        sample_seed=int(raw.get("sample_seed", 0)), overrides=every,
    )  # fmt: skip


def fixed_sample(grid: Grid, corpora: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """``dataset -> {position, example_id, dialogue_id, gold_id}``: the stratified sample of the grid's
    split that every arm and seed is scored on (``sample_seed``; the training seeds do not move it)."""
    datasets = dict.fromkeys(d for a in grid.arms for d in a.config.data.datasets)
    sample = {}
    for dataset in datasets:
        rows = rows_of(corpora[dataset][grid.split])
        positions = sample_positions(rows, grid.test_per_dataset, grid.sample_seed)
        sample[dataset] = {
            "position": positions,
            "example_id": [str(rows[i].get("utterance_id", i)) for i in positions],
            "dialogue_id": [str(rows[i]["dialogue_id"]) for i in positions],
            "gold_id": [int(rows[i]["label_id"]) for i in positions],
        }
    return sample


# ------------------------------------------------------------------------------------- results file


def results_path(out_dir: str | os.PathLike) -> Path:
    """The one results file of a grid run."""
    return Path(out_dir) / RESULTS_FILE


def _identity(
    grid: Grid, sample: Mapping[str, Any], descriptions: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Any]:
    """What must match for a results file to be resumed: the arms' configs, seeds, the test sample and, when
    there are any, the described clips per split (through JSON, so that it compares equal to what a file
    read back holds)."""
    identity: dict[str, Any] = {
        "arms": {a.name: _config_dict(a.config) | {"tuned": a.tuned} for a in grid.arms},
        "split": grid.split,
        "sample": {d: s["example_id"] for d, s in sample.items()},
    }
    if described_clips(descriptions):
        identity["descriptions"] = described_clips(descriptions)
    return json.loads(json.dumps(identity, default=str))


def described_clips(descriptions: Mapping[str, Mapping[str, str]] | None) -> dict[str, int]:
    """``split -> number of described clips`` (empty without descriptions)."""
    return {split: len(m) for split, m in sorted((descriptions or {}).items()) if m}


def open_results(
    grid: Grid,
    sample: Mapping[str, Any],
    out_dir: str | os.PathLike,
    command: str,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """The results so far (resuming ``out_dir``'s file when it was made by the same grid), else a new one.

    A file made with other settings or another sample is never mixed in: the error names it and the fix."""
    path = results_path(out_dir)
    identity = _identity(grid, sample, descriptions)
    if path.is_file():
        results = read_json(path)
        if results.get("format") != FORMAT or results.get("identity") != identity:
            raise ValueError(
                f"{path} was written by a grid with other settings, arms or test sample; pass another --out "
                "(or move the file away) to start afresh, or rerun with the settings it records."
            )
        results["commands"].append(command)
        return results
    return {
        "format": FORMAT,
        "command": command,
        "commands": [command],
        "grid": grid.settings(),
        "identity": identity,
        "environment": environment(),
        "hardware": hardware_description(),
        "model": loading.display_name(grid.arms[0].config.model.name),
        "sample": {d: {k: v for k, v in s.items() if k != "position"} for d, s in sample.items()},
        "runs": {},
        "started": _now(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def save_results(results: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write the results file atomically (``io.write_json``: a temporary file renamed over the old one)."""
    results["updated"] = _now()
    results["finished"] = all(job_key(a, s) in results["runs"] for a, s in _jobs_of(results))
    return write_json(results_path(out_dir), results)


def _jobs_of(results: Mapping[str, Any]) -> list[tuple[str, int | None]]:
    grid = results["grid"]
    return [(n, s) for n, a in grid["arms"].items() for s in (grid["seeds"] if a["tuned"] else [None])]


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A results file (or the folder holding one), checked for what the summary needs."""
    path = Path(path)
    path = results_path(path) if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(
            f"No retrained-ablation results at {path}; run `make ablations` "
            "(python -m dialoguellm.analysis.ablation_retrained --config cpu) first."
        )
    results = read_json(path)
    for key in ("grid", "sample", "runs", "environment", "command"):
        if key not in results:
            raise ValueError(f"{path}: no {key!r} entry; not a retrained-ablation results file.")
    return results


# ---------------------------------------------------------------------------------- one arm x seed


def job_config(arm: Arm, seed: int | None) -> Config:
    """The arm's config for one seed (``train.seed``); an untuned arm keeps the base profile's seed."""
    config = copy.deepcopy(arm.config)
    if seed is not None:
        config.train.seed = seed
    return config


def train_job(
    config: Config,
    corpora: Mapping[str, Any],
    folder: Path,
    progress: bool = True,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[Path, float]:
    """Train (or finish, or reuse) the adapter of one arm x seed in ``folder``; (adapter, the training's
    seconds as its metrics.json records them: all of it, across an interruption). ``descriptions``: split ->
    clip_id -> video description (``corpora.video.load_descriptions``), for arms with ``prompt.use_video``.

    A folder with metrics.json is a finished training and is reused; one with a checkpoint/ continues it."""
    layout = TrainingLayout(folder)
    _claim(folder, config)
    if not layout.metrics.is_file():
        used = {d: corpora[d] for d in config.data.datasets}
        loop.train(
            config,
            folder,
            used,
            descriptions,
            resume=layout.checkpoint.exists(),
            progress=progress,
            one_of_seeds=True,
        )
    return layout.adapter, float(read_json(layout.metrics)["seconds"])


JOB_FILE = "ablation_job.json"


def _claim(folder: Path, config: Config) -> None:
    """Mark ``folder`` as this arm x seed's training (its settings), or refuse one made with other settings:
    an adapter or checkpoint of another size or arm is never reused or continued."""
    settings = json.loads(json.dumps(_config_dict(config), default=str))
    marker = folder / JOB_FILE
    if marker.is_file():
        if read_json(marker) != settings:
            raise ValueError(
                f"{folder} holds a training with other settings ({marker}); pass another --work folder or "
                "delete that one to train afresh."
            )
        return
    if folder.exists() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty and has no {JOB_FILE}; pass another --work folder.")
    write_json(marker, settings)


def score_job(
    arm: Arm,
    config: Config,
    adapter: Path | None,
    corpora: Mapping[str, Any],
    sample: Mapping[str, Mapping[str, list]],
    split: str,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``dataset -> {n, accuracy, weighted_f1, macro_f1, pred_id}`` of one adapter (None: the bare model) on
    the fixed sample of every corpus the arm trains on, in the sample's order."""
    m = config.model
    loaded = loading.load_model(m.name, m.dtype, m.quantization, m.trust_remote_code)
    model = loading.load_adapter(loaded.model, adapter) if adapter is not None else loaded.model
    scored = {}
    exclude = demonstration_exclusions(config, corpora)
    for dataset in config.data.datasets:
        chosen = sample[dataset]
        splits = {s: rows_of(corpora[dataset][s]) for s in ("train", split)}
        frame = predict_arm(
            arm, dataset, splits, model, loaded.tokenizer, split=split, only=chosen["position"],
            descriptions=descriptions, batch_size=config.eval.batch_size, dtype=m.dtype,
            demo_seed=config.train.seed, exclude=exclude,
        )  # fmt: skip
        if list(frame["example_id"].astype(str)) != chosen["example_id"]:
            raise RuntimeError(f"{arm.name} on {dataset}: predictions are not in the sample's order.")
        pred = frame["pred_id"].to_numpy(dtype=int)
        metrics = classification_metrics(np.asarray(chosen["gold_id"]), pred, normalised_label_names(dataset))
        scored[dataset] = {**{k: metrics[k] for k in ("n", *METRICS)}, "pred_id": pred.tolist()}
    return scored


# ---------------------------------------------------------------------------------------- the run


def run_grid(
    grid: Grid,
    corpora: Mapping[str, Any],
    out_dir: str | os.PathLike,
    work_dir: str | os.PathLike,
    progress: bool = True,
    command: str | None = None,
    on_saved: Callable[[str], None] | None = None,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Train and score every arm x seed not yet in ``out_dir``'s results file; returns the results.

    The file is rewritten (atomically) after each arm x seed, so a run stopped at any point loses at most
    the arm x seed in progress, whose training continues from its last checkpoint in ``work_dir``.
    ``descriptions`` (split -> clip_id -> text) feed the prompts of arms with ``prompt.use_video``."""
    m = grid.arms[0].config.model
    loading.set_threads(m.num_threads)
    sample = fixed_sample(grid, corpora)
    results = open_results(grid, sample, out_dir, command or invocation(), descriptions)
    jobs = grid.jobs()
    todo = [(a, s) for a, s in jobs if job_key(a, s) not in results["runs"]]
    print(
        f"retrained ablations ({grid.name}): {len(jobs)} arm x seed, {len(jobs) - len(todo)} already in "
        f"{results_path(out_dir)}, {len(todo)} to run",
        flush=True,
    )
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="arm x seed", disable=not progress)
    for arm, seed in todo:
        key = job_key(arm, seed)
        bar.set_postfix_str(key)
        config = job_config(arm, seed)
        adapter, train_seconds = None, 0.0
        if arm.tuned:
            adapter, train_seconds = train_job(
                config, corpora, Path(work_dir) / arm.name / f"seed{seed}", progress, descriptions
            )
        start = time.time()
        scored = score_job(arm, config, adapter, corpora, sample, grid.split, descriptions)
        results["runs"][key] = {
            "arm": arm.name, "seed": seed, "trained": arm.tuned, "train_seconds": round(train_seconds, 1),
            "score_seconds": round(time.time() - start, 1), "finished": _now(), "datasets": scored,
        }  # fmt: skip
        save_results(results, out_dir)
        bar.update(1)
        summary = ", ".join(f"{d} weighted F1 {100 * s['weighted_f1']:.1f}" for d, s in scored.items())
        bar.write(f"{key}: {summary} (train {train_seconds:.0f} s, score {time.time() - start:.0f} s)")
        if on_saved is not None:
            on_saved(key)
    bar.close()
    if not todo:  # nothing ran: still record the command that found the grid finished
        save_results(results, out_dir)
    return results


# ------------------------------------------------------------------------------------------ summary


def _pooled_pairs(
    results: Mapping[str, Any], arm: str, dataset: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(gold, arm's predictions, base's predictions, dialogues), the seeds one after the other: arm seed s
    beside base seed s (an untuned arm, scored once, beside every base seed). None without a pair."""
    runs, sample = results["runs"], results["sample"][dataset]
    base = {r["seed"]: r for r in runs.values() if r["arm"] == BASE_ARM and dataset in r["datasets"]}
    mine = {r["seed"]: r for r in runs.values() if r["arm"] == arm and dataset in r["datasets"]}
    pairs = [(mine[None], base[s]) for s in sorted(base)] if None in mine else [
        (mine[s], base[s]) for s in sorted(set(mine) & set(base))
    ]  # fmt: skip
    if not pairs:
        return None
    k = len(pairs)
    return (
        np.tile(np.asarray(sample["gold_id"]), k),
        np.concatenate([a["datasets"][dataset]["pred_id"] for a, _ in pairs]),
        np.concatenate([b["datasets"][dataset]["pred_id"] for _, b in pairs]),
        np.tile(np.asarray(sample["dialogue_id"]), k),
    )


def _paper_values() -> tuple[pd.DataFrame, pd.Series]:
    paper = ablation.paper_ablations().set_index(["arm", "dataset"])
    default = paper.xs(ablation.PAPER_DEFAULT_ARM, level="arm")["weighted_f1"]  # the paper's own settings
    return paper, default


def summary_table(
    results: Mapping[str, Any], n_resamples: int = stats.DEFAULT_RESAMPLES, confidence: float = 0.95
) -> pd.DataFrame:
    """One row per arm and corpus, in %: mean and sd over seeds of accuracy, weighted and macro F1; the
    paired difference from the base arm in weighted F1 and accuracy with its dialogue-bootstrap interval and
    permutation p-value; the paper's value for the same question (LLaMA 2-7B) and its difference from the
    paper's 1-shot headline.

    The difference pools the seeds: the arm's predictions of seed s are paired with the base arm's of the
    same seed, the seeds' pairs are concatenated, and the bootstrap resamples whole dialogues (every seed's
    copy of a dialogue together, so seeds do not pass for independent utterances). ``verdict`` is "no
    measurable difference" when the interval covers 0.
    """
    paper, paper_default = _paper_values()
    rows = []
    for name, arm in results["grid"]["arms"].items():
        runs = [r for r in results["runs"].values() if r["arm"] == name]
        for dataset in arm["datasets"]:
            scored = [r["datasets"][dataset] for r in runs if dataset in r["datasets"]]
            if not scored:
                continue
            row: dict[str, Any] = {
                "arm": name, "label": arm["label"], "group": arm["group"], "dataset": dataset,
                "runs": len(scored), "seeds": "once (trains nothing)" if not arm["tuned"] else len(scored),
                "n": int(scored[0]["n"]),
            }  # fmt: skip
            for metric in METRICS:
                values = 100 * np.array([s[metric] for s in scored], dtype=float)
                row[f"{metric}_mean"] = float(values.mean())
                row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
            row.update(_difference_columns(results, name, dataset, n_resamples, confidence))
            key = (arm.get("paper"), dataset)
            has_paper = key in paper.index and pd.notna(paper.loc[key, "weighted_f1"])
            row["paper_accuracy"] = float(paper.loc[key, "accuracy"]) if has_paper else float("nan")
            row["paper_weighted_f1"] = float(paper.loc[key, "weighted_f1"]) if has_paper else float("nan")
            row["paper_delta_weighted_f1"] = (
                row["paper_weighted_f1"] - float(paper_default.get(dataset, float("nan")))
                if has_paper else float("nan")
            )  # fmt: skip
            row["paper_row"] = str(paper.loc[key, "paper_row"]) if key in paper.index else ""
            note = paper.loc[key, "note"] if key in paper.index else None
            row["paper_note"] = str(note) if isinstance(note, str) else ""
            rows.append(row)
    table = pd.DataFrame(rows)
    table["model"] = results.get("model", "")
    table["hardware"] = results.get("hardware", "")
    return table


def seed_intervals(
    results: Mapping[str, Any],
    arm: str = BASE_ARM,
    metric: str = "weighted_f1",
    n_resamples: int = stats.DEFAULT_RESAMPLES,
) -> pd.DataFrame:
    """Each seed of ``arm`` on each corpus with its own 95% dialogue-bootstrap interval (%, columns dataset,
    seed, estimate, low, high): the spread over seeds beside the spread the test sample alone gives."""
    rows = []
    for run in results["runs"].values():
        if run["arm"] != arm:
            continue
        for dataset, scored in run["datasets"].items():
            sample = results["sample"][dataset]
            interval = stats.metric_interval(
                sample["gold_id"], scored["pred_id"], normalised_label_names(dataset), sample["dialogue_id"],
                metric, n_resamples=n_resamples,
            )  # fmt: skip
            rows.append(
                {"dataset": dataset, "seed": run["seed"], "estimate": 100 * interval.estimate,
                 "low": 100 * interval.low, "high": 100 * interval.high}
            )  # fmt: skip
    columns = ["dataset", "seed", "estimate", "low", "high"]
    # by seed, the corpora in the order the runs scored them (MELD first)
    return pd.DataFrame(rows, columns=columns).sort_values("seed", kind="stable", ignore_index=True)


def _difference_columns(
    results: Mapping[str, Any], arm: str, dataset: str, n_resamples: int, confidence: float
) -> dict[str, Any]:
    """delta_<metric>, its low/high, p-value and verdict (arm minus base, %, pooled seeds); NaN for the base
    arm itself or without a base run."""
    out: dict[str, Any] = {}
    pairs = None if arm == BASE_ARM else _pooled_pairs(results, arm, dataset)
    for metric in ("weighted_f1", "accuracy"):
        if pairs is None:
            out |= {f"delta_{metric}": float("nan"), f"delta_{metric}_low": float("nan"),
                    f"delta_{metric}_high": float("nan"), f"delta_{metric}_p": float("nan"),
                    f"delta_{metric}_verdict": ""}  # fmt: skip
            continue
        gold, pred_arm, pred_base, groups = pairs
        d = stats.paired_difference(
            gold, pred_arm, pred_base, normalised_label_names(dataset), groups, metric=metric,
            n_resamples=n_resamples, confidence=confidence,
        )  # fmt: skip
        out |= {
            f"delta_{metric}": 100 * d.difference, f"delta_{metric}_low": 100 * d.low,
            f"delta_{metric}_high": 100 * d.high, f"delta_{metric}_p": d.p_value,
            f"delta_{metric}_verdict": d.verdict,
        }  # fmt: skip
    out["paired_utterances"] = 0 if pairs is None else len(pairs[0])
    return out


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The summary as text columns: "mean +- sd", the difference with its interval, the paper beside it."""

    def spread(mean: float, sd: float) -> str:
        return f"{mean:.1f}" if pd.isna(sd) else f"{mean:.1f} +- {sd:.1f}"

    def delta(row: pd.Series) -> str:
        if pd.isna(row["delta_weighted_f1"]):
            return ""
        text = f"{row['delta_weighted_f1']:+.1f} [{row['delta_weighted_f1_low']:+.1f}, {row['delta_weighted_f1_high']:+.1f}]"
        return text + (
            " (no measurable difference)" if row["delta_weighted_f1_verdict"] == stats.NO_DIFFERENCE else ""
        )

    return pd.DataFrame(
        {
            "arm": table["label"],
            "dataset": table["dataset"],
            "seeds": table["seeds"],
            "n": table["n"],
            "accuracy": [
                spread(m, s) for m, s in zip(table["accuracy_mean"], table["accuracy_sd"], strict=True)
            ],
            "weighted F1": [
                spread(m, s) for m, s in zip(table["weighted_f1_mean"], table["weighted_f1_sd"], strict=True)
            ],
            "macro F1": [
                spread(m, s) for m, s in zip(table["macro_f1_mean"], table["macro_f1_sd"], strict=True)
            ],
            "weighted F1 minus base [95% CI]": [delta(r) for _, r in table.iterrows()],
            "paper (LLaMA 2-7B) weighted F1": table["paper_weighted_f1"].round(2),
            "paper minus its 1-shot": table["paper_delta_weighted_f1"].round(2),
        }
    )


# ----------------------------------------------------------------------------------------------- CLI


def grid_corpora(
    grid: Grid, data_dir: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Every corpus an arm of the grid trains on: notebook 01's curated copies in ``run_dir`` when present,
    else the vendored copies (or ``data_dir``; IEMOCAP from ``$IEMOCAP_DIR``)."""
    corpora: dict[str, Any] = {}
    for arm in grid.arms:
        missing = [d for d in arm.config.data.datasets if d not in corpora]
        if missing:
            config = copy.deepcopy(arm.config)
            config.data.datasets = missing
            corpora |= load_corpora_for(config, run_dir, data_dir)
    return corpora


REPOSITORY = Path(__file__).resolve().parents[2]


def default_out(config: str) -> Path:
    """``results/<grid>/ablations_retrained`` of the repository checkout (of the working directory when the
    package is installed elsewhere)."""
    root = REPOSITORY if (REPOSITORY / "pyproject.toml").is_file() else Path.cwd()
    return root / "results" / Path(config).stem / "ablations_retrained"


def default_work(config: str) -> Path:
    """``runs/ablations_retrained/<grid>`` of the repository checkout (git-ignored: adapters, checkpoints)."""
    return default_out(config).parents[2] / "runs" / "ablations_retrained" / Path(config).stem


def committed_results_dir() -> Path:
    """Where the repository keeps the results of ``make ablations`` (``results/cpu/ablations_retrained``)."""
    return default_out("cpu")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dialoguellm.analysis.ablation_retrained --config cpu|paper [--run DIR] [--out DIR]
    [--work DIR]``."""
    parser = argparse.ArgumentParser(
        prog="python -m dialoguellm.analysis.ablation_retrained", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--config", default="cpu", help="grid name (cpu, paper: profiles/ablations) or a YAML path"
    )
    parser.add_argument(
        "--out", default=None, help="folder of results.json (default: results/<grid>/ablations_retrained)"
    )
    parser.add_argument(
        "--work", default=None, help="adapters and checkpoints (default: runs/ablations_retrained/<grid>)"
    )
    parser.add_argument("--data-dir", default=None, help="raw corpora folder (default: the vendored copies)")
    parser.add_argument(
        "--run", default=None, help="a run folder: notebook 01's corpora and notebook 02's video descriptions"
    )
    parser.add_argument("--summary", action="store_true", help="only print the summary of the results file")
    args = parser.parse_args(argv)
    grid = load_grid(args.config, run_dir=args.run)
    out = Path(args.out) if args.out else default_out(grid.name)
    if not args.summary:
        corpora = grid_corpora(grid, args.data_dir, args.run)
        work = Path(args.work) if args.work else default_work(grid.name)
        descriptions = load_descriptions(args.run) if args.run else None
        run_grid(grid, corpora, out, work, descriptions=descriptions)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(display_table(summary_table(load_results(out))).to_string(index=False))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())

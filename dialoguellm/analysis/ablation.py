"""Ablations: each of the paper's comparisons as a named arm, run with several seeds, beside the paper.

An arm is a small YAML file in ``dialoguellm/profiles/ablations/`` that overrides a base profile (``cpu``
or ``paper``) in the project's config format, plus an ``arm:`` block naming it:

    arm: {name: context_z0, group: context, label: "z = 0"}
    prompt: {context_turns: 0}

The groups are the paper's: context window z in {0, 1, 2, 3, all}; with and without video descriptions;
LoRA-tuned vs the same model untuned (``arm.tuned: false``); k-shot demonstrations k in {0, 1, 5}.

Two ways to run the grid:

- ``evaluate_arms`` (the CPU default, notebook 05): one trained adapter (notebook 03's) is evaluated under
  every arm's prompt settings, on a seeded sample of the evaluation split. Seeds vary the sample (the
  demonstrations stay those of training, drawn with ``train.seed``), so the spread says how much the sample
  alone moves a number; it is not a training spread. Arms whose settings coincide for a corpus (video arms on EmoryNLP, z = 1 when the base has
  z = 1) are evaluated once and reported under each name.
- ``train_and_evaluate_arms`` (the paper profile): every arm trains its own adapter for every seed with
  ``training.loop.train`` and is evaluated on the full split, as the paper's ablations were.

The retrained grid at CPU scale (an adapter per arm and seed, one fixed test sample, one resumable results
file, paired intervals) is ``analysis.ablation_retrained`` (``make ablations``); its arm files are in
``profiles/ablations/retrained/`` (groups "base" and "data" are its own).

``ablation_table`` puts mean +- sd of every arm beside the paper's value for the same arm
(``resources/paper_ablations.csv``, copied from the paper's Tables 4 and 5), with the model and hardware named.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from dialoguellm.config import PROFILES_DIR, Config, config_from_dict, resolve_config_path
from dialoguellm.corpora.labels import normalised_label_names
from dialoguellm.corpora.readers import resolve_datasets
from dialoguellm.io import atomic_path, read_json, write_json
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.progress import progress_bar as tqdm
from dialoguellm.prompts import VIDEO_DATASETS, builders_from_config, rows_of, sample_positions
from dialoguellm.runs import RunLayout
from dialoguellm.scoring.predictions import predict_by_scoring
from dialoguellm.training.loop import train

log = logging.getLogger(__name__)

ARMS_DIR = PROFILES_DIR / "ablations"
# "base" and "data" are the retrained grid's (ablation_retrained): the base arm itself, MELD-only training.
GROUPS: tuple[str, ...] = ("context", "video", "lora", "k_shot", "base", "data")
PAPER_FILE = "paper_ablations.csv"
ARM_KEYS = ("name", "group", "label", "tuned", "paper")


# ------------------------------------------------------------------------------------------------ arms


@dataclass
class Arm:
    """One ablation arm: its name, group, whether the adapter is used, and its resolved settings."""

    name: str
    group: str
    label: str
    tuned: bool
    config: Config
    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)
    paper: str | None = None  # the arm of resources/paper_ablations.csv that asks the same question

    def settings(self) -> dict[str, Any]:
        """The settings an arm is about (for tables): z, k, video, tuned."""
        p = self.config.prompt
        return {
            "context_turns": str(p.context_turns),
            "k_shot": p.k_shot,
            "use_video": p.use_video,
            "tuned": self.tuned,
        }


def arm_paths(arms_dir: str | os.PathLike = ARMS_DIR) -> list[Path]:
    """Every arm file, in group order (context, video, lora, k_shot), then by name."""
    paths = sorted(Path(arms_dir).glob("*.yaml"))
    if not paths:
        raise FileNotFoundError(f"No ablation arms (*.yaml) in {arms_dir}.")
    return sorted(paths, key=lambda p: (_group_rank(p), p.stem))


def _group_rank(path: Path) -> int:
    group = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("arm", {}).get("group")
    return GROUPS.index(group) if group in GROUPS else len(GROUPS)


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _base_settings(profile: str | os.PathLike | Config) -> tuple[dict[str, Any], str]:
    """The base settings as YAML-like dicts: a profile name, a YAML path (a run's saved config.yaml too)
    or a Config."""
    if isinstance(profile, Config):
        raw = profile.to_dict()
        source = raw.pop("source", "<config>")
        return raw, str(source)
    path = resolve_config_path(profile)
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    raw.pop("source", None)  # a run's saved config records where it came from; not a setting
    return raw, str(path)


def load_base(
    profile: str | os.PathLike | Config = "cpu", overrides: Mapping[str, Any] | None = None
) -> Config:
    """The base settings themselves (no arm applied): what every arm is compared with."""
    raw, source = _base_settings(profile)
    return config_from_dict(raw, source=source, overrides=dict(overrides or {}))


def load_arm(
    name_or_path: str | os.PathLike,
    profile: str | os.PathLike | Config = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> Arm:
    """Read an arm file (a name in dialoguellm/profiles/ablations or a path) on top of ``profile``.

    ``profile``: a profile name ("cpu", "paper"), a YAML path (e.g. the config.yaml a training run saved)
    or a Config. ``overrides`` are dotted keys applied last (``{"prompt.cutoff_len": 512}``), as in
    ``config.load_config``. Errors name the arm file and the key.
    """
    text = os.fspath(name_or_path)
    path = Path(text) if text.endswith((".yaml", ".yml")) or os.sep in text else ARMS_DIR / f"{text}.yaml"
    if not path.is_file():
        known = ", ".join(p.stem for p in arm_paths()) if ARMS_DIR.is_dir() else "none"
        raise FileNotFoundError(f"Ablation arm not found: {path}. Known arms: {known}.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err}).") from None
    meta = raw.pop("arm", None)
    if not isinstance(meta, dict) or "name" not in meta or "group" not in meta:
        raise ValueError(
            f"{path}: needs an 'arm:' block with at least name and group (one of {', '.join(GROUPS)})."
        )
    unknown = set(meta) - set(ARM_KEYS)
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) arm.{', arm.'.join(sorted(unknown))}; valid: {', '.join(ARM_KEYS)}."
        )
    if meta["group"] not in GROUPS:
        raise ValueError(f"{path}: arm.group is {meta['group']!r}; use one of {', '.join(GROUPS)}.")
    tuned = meta.get("tuned", True)
    if not isinstance(tuned, bool):
        raise ValueError(f"{path}: arm.tuned must be true or false, not {tuned!r}.")
    base, base_source = _base_settings(profile)
    config = config_from_dict(
        _deep_merge(base, raw), source=f"{base_source} + {path}", overrides=dict(overrides or {})
    )
    return Arm(
        name=str(meta["name"]),
        group=str(meta["group"]),
        label=str(meta.get("label", meta["name"])),
        tuned=tuned,
        config=config,
        path=path,
        overrides=raw,
        paper=meta.get("paper"),
    )


def load_arms(
    names: Sequence[str] | None = None,
    profile: str | os.PathLike | Config = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> list[Arm]:
    """The arms named (all of dialoguellm/profiles/ablations when ``names`` is empty), resolved on ``profile``."""
    paths = arm_paths() if not names else [n for n in names]
    arms = [load_arm(p, profile, overrides) for p in paths]
    seen: dict[str, Path] = {}
    for arm in arms:
        if arm.name in seen:
            raise ValueError(f"Two arms are named {arm.name!r}: {seen[arm.name]} and {arm.path}.")
        seen[arm.name] = arm.path
    return arms


def eval_key(arm: Arm, dataset: str) -> tuple:
    """What decides an arm's predictions on ``dataset`` when the adapter is fixed.

    Two arms with the same key give the same predictions (video settings are moot for corpora without
    video), so each key is evaluated once.
    """
    p = arm.config.prompt
    return (
        arm.tuned,
        str(p.context_turns),
        p.k_shot,
        p.use_video if dataset in VIDEO_DATASETS else None,
        p.template,
        p.style,
        p.cutoff_len,
    )


# --------------------------------------------------------------------------------------- run folder


# ------------------------------------------------------------------------------------------ evaluation


def _adapter_off(model: Any) -> contextlib.AbstractContextManager:
    """Context in which ``model`` runs without its LoRA adapter (the untuned arm)."""
    if hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return contextlib.nullcontext()  # a bare model is already untuned


def _metric_row(frame: pd.DataFrame, dataset: str) -> dict[str, Any]:
    m = classification_metrics(
        frame["gold_id"].to_numpy(), frame["pred_id"].to_numpy(), normalised_label_names(dataset)
    )
    return {
        "n": m["n"],
        "accuracy": m["accuracy"],
        "weighted_f1": m["weighted_f1"],
        "macro_f1": m["macro_f1"],
    }


def _described(
    splits: Any, split: str, only: Sequence[int], descriptions: Mapping[str, Mapping[str, str]] | None
) -> int:
    """How many sampled utterances have a video description (the only ones a video arm can change)."""
    table = (descriptions or {}).get(split, {})
    rows = rows_of(splits[split])
    return sum(1 for i in only if rows[i].get("clip_id") and table.get(rows[i]["clip_id"]))


def _row(
    arm: Arm, dataset: str, split: str, seed: int, frame: pd.DataFrame, shared: str = "", described: int = 0
) -> dict[str, Any]:
    return {
        "arm": arm.name,
        "group": arm.group,
        "label": arm.label,
        **arm.settings(),
        "dataset": dataset,
        "split": split,
        "seed": seed,
        **_metric_row(frame, dataset),
        "described_in_sample": described if dataset in VIDEO_DATASETS else 0,
        "same_predictions_as": shared,
    }


def predict_arm(
    arm: Arm,
    dataset: str,
    splits: Any,
    model: Any,
    tokenizer: Any,
    *,
    split: str,
    only: Sequence[int] | None,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    batch_size: int = 16,
    dtype: str = "bf16",
    demo_seed: int | None = None,
) -> pd.DataFrame:
    """Label-scoring predictions of one arm on one corpus (``only``: row positions of ``split``).

    Prompts follow the arm's settings; demonstrations come from the training split, drawn with
    ``demo_seed`` (default: the arm's ``train.seed``, as training and notebook 04 drew them). The untuned
    arm runs ``model`` with its adapter switched off. Scores are computed in the arm's ``eval.precision``.
    """
    if split == "train":
        raise ValueError("Ablations are evaluated on dev or test, never on the training split.")
    descriptions = descriptions or {}
    builder = builders_from_config(tokenizer, {dataset: splits}, arm.config, descriptions, seed=demo_seed)[
        dataset
    ]
    examples = builder.build_split(splits[split], descriptions.get(split, {}), only=only)
    with _adapter_off(model) if not arm.tuned else contextlib.nullcontext():
        return predict_by_scoring(
            model,
            tokenizer,
            builder,
            examples,
            batch_size,
            dtype,
            progress=False,
            length_normalise=arm.config.eval.length_normalise,
            precision=arm.config.eval.precision,
        )


def evaluate_arms(
    arms: Sequence[Arm],
    corpora: Mapping[str, Any],
    model: Any,
    tokenizer: Any,
    *,
    split: str = "test",
    per_dataset: int = 200,
    seeds: Sequence[int] = (42,),
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    batch_size: int = 16,
    dtype: str = "bf16",
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[tuple[str, str, int], pd.DataFrame]]:
    """Evaluate every arm with one (adapter-wrapped) model; returns (one row per arm, dataset and seed; the
    prediction frames by (arm, dataset, seed)).

    ``per_dataset`` utterances of ``split`` are drawn per corpus and seed (0 = all), stratified by label;
    every arm sees the same ones for a seed. ``descriptions`` maps a split name to its
    ``clip_id -> description`` map (MELD; ``corpora.video.load_descriptions``). Arms with the same
    ``eval_key`` are predicted once; their rows name the arm they share predictions with.
    """
    rows: list[dict[str, Any]] = []
    frames: dict[tuple[str, str, int], pd.DataFrame] = {}
    jobs = [(seed, dataset) for seed in seeds for dataset in corpora]
    bar = tqdm(total=len(jobs) * len(arms), desc="ablation arms", disable=not progress)
    # Rows as plain dicts once: every arm's prompt building (demonstrations, contexts) reads them again.
    as_rows = {d: {s: rows_of(corpora[d][s]) for s in ("train", split)} for d in corpora}
    for seed, dataset in jobs:
        splits = as_rows[dataset]
        only = sample_positions(splits[split], per_dataset, seed)
        described = _described(splits, split, only, descriptions)
        done: dict[tuple, tuple[pd.DataFrame, str]] = {}
        for arm in arms:
            key = eval_key(arm, dataset)
            if key in done:
                frame, shared = done[key]
            else:
                bar.set_postfix_str(f"{dataset} {arm.name} seed {seed}")
                frame = predict_arm(
                    arm, dataset, splits, model, tokenizer, split=split, only=only,
                    descriptions=descriptions, batch_size=batch_size, dtype=dtype,
                )  # fmt: skip
                done[key] = (frame, arm.name)
                shared = ""
            frames[(arm.name, dataset, seed)] = frame
            rows.append(_row(arm, dataset, split, seed, frame, shared, described))
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows), frames


def train_key(arm: Arm) -> str:
    """Arms with the same key train the same adapter (the paper profile's z = 1, k = 1, video, LoRA arms
    coincide); the untuned arm trains none."""
    settings = arm.config.to_dict()
    settings.pop("source", None)
    return yaml.safe_dump({"tuned": arm.tuned, **settings}, sort_keys=True)


def train_and_evaluate_arms(
    arms: Sequence[Arm],
    corpora: Mapping[str, Any],
    run_dir: str | os.PathLike,
    seeds: Sequence[int],
    *,
    split: str = "test",
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """The paper's grid: for every arm and seed, train an adapter with the arm's settings
    (``training.loop.train``; model selection on dev) and evaluate it on ``split`` of every corpus it
    trains on (``data.datasets``, all of which ``corpora`` must hold), sampled as the arm's
    ``data.test_per_dataset`` says (0 = all, the paper). Each adapter is written to
    ``<run_dir>/ablations/runs/<arm>/seed<seed>/``; arms with the same ``train_key`` share one. A run
    folder that already holds an adapter is reused, so an interrupted grid continues where it stopped.
    """
    rows = []
    trained: dict[tuple[str, int], Path] = {}
    for arm in arms:
        m = arm.config.model
        for seed in seeds:
            # An absent IEMOCAP (the paper grid lists it) is dropped with the warning that says so.
            config = resolve_datasets(copy.deepcopy(arm.config), run_dir)
            config.train.seed = seed
            key = (train_key(arm), seed)
            out = RunLayout(Path(run_dir)).ablations / "runs" / arm.name / f"seed{seed}"
            if arm.tuned and key not in trained:
                if not (out / "adapter" / "adapter_config.json").is_file():
                    train(config, out, {d: corpora[d] for d in config.data.datasets}, descriptions,
                          resume=(out / "checkpoint").exists(), progress=progress)  # fmt: skip
                trained[key] = out / "adapter"
            loaded = loading.load_model(m.name, m.dtype, m.quantization, m.trust_remote_code)
            model = loading.load_adapter(loaded.model, trained[key]) if arm.tuned else loaded.model
            for dataset in config.data.datasets:
                splits = corpora[dataset]
                only = sample_positions(splits[split], config.data.test_per_dataset, seed)
                frame = predict_arm(
                    arm, dataset, splits, model, loaded.tokenizer, split=split, only=only, demo_seed=seed,
                    descriptions=descriptions, batch_size=config.eval.batch_size, dtype=m.dtype,
                )  # fmt: skip
                rows.append(
                    _row(arm, dataset, split, seed, frame, "", _described(splits, split, only, descriptions))
                )
            del model, loaded
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- tables


SETTING_KEYS = ("context_turns", "k_shot", "use_video", "tuned")
PAPER_DEFAULT_ARM = "kshot_1"  # the paper's own settings: z = 1, k = 1, video descriptions, LoRA


def base_settings_of(config: Config) -> dict[str, Any]:
    """The settings (as ``Arm.settings``) of the base profile itself: the arm every other is compared with."""
    p = config.prompt
    return {
        "context_turns": str(p.context_turns),
        "k_shot": p.k_shot,
        "use_video": p.use_video,
        "tuned": True,
    }


def _is_base(row: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
    keys = [k for k in SETTING_KEYS if k != "use_video" or row["dataset"] in VIDEO_DATASETS]
    return all(str(row[k]) == str(base[k]) for k in keys)


def summarise(runs: pd.DataFrame, base: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Mean and sample sd (ddof 1; 0 for one seed) per arm and corpus, in %.

    With ``base`` (``base_settings_of(config)``), also the paired difference from the base arm: every arm of
    a seed is scored on the same utterances, so ``delta_*`` (arm minus base, per seed, then mean and sd) is
    far less noisy than comparing two means.
    """
    keys = ["arm", "group", "label", *SETTING_KEYS, "dataset", "split"]
    metrics = ("accuracy", "weighted_f1", "macro_f1")
    reference: dict[tuple[str, int], Mapping[str, Any]] = {}
    if base is not None:
        for row in runs.to_dict("records"):
            if _is_base(row, base):
                reference.setdefault((row["dataset"], row["seed"]), row)
    out = []
    for key, part in runs.groupby(keys, sort=False, dropna=False):
        row = dict(zip(keys, key, strict=True))
        row["seeds"] = len(part)
        row["n_per_seed"] = int(part["n"].iloc[0])
        for metric in metrics:
            values = 100 * part[metric].to_numpy(dtype=float)
            row[f"{metric}_mean"] = float(values.mean())
            row[f"{metric}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        refs = [reference.get((r["dataset"], r["seed"])) for r in part.to_dict("records")]
        for metric in ("accuracy", "weighted_f1"):
            if base is not None and all(refs):
                deltas = 100 * (part[metric].to_numpy(dtype=float) - np.array([r[metric] for r in refs]))
                row[f"delta_{metric}_mean"] = float(deltas.mean())
                row[f"delta_{metric}_sd"] = float(deltas.std(ddof=1)) if len(deltas) > 1 else 0.0
            else:
                row[f"delta_{metric}_mean"] = row[f"delta_{metric}_sd"] = float("nan")
        out.append(row)
    return pd.DataFrame(out)


def paper_ablations() -> pd.DataFrame:
    """The paper's value for each arm and corpus (accuracy and weighted F1, %), with the row it comes from."""
    text = (resources.files("dialoguellm") / "resources" / PAPER_FILE).read_text(encoding="utf-8")
    from io import StringIO

    return pd.read_csv(StringIO(text))


def ablation_table(summary: pd.DataFrame, model: str, hardware: str, note: str = "") -> pd.DataFrame:
    """Each arm beside the paper's value for the same arm and corpus (blank where the paper gives none).

    Columns: group, arm, label, dataset, ours_accuracy, ours_weighted_f1 (text "mean +- sd (n seeds)"),
    paper_accuracy, paper_weighted_f1, paper_row; ours_delta_weighted_f1 (paired difference from our base
    arm, when ``summarise`` was given one) beside paper_delta_weighted_f1 (the paper's arm minus its 1-shot
    headline); the numeric means and sds; model, hardware, note.
    """
    paper = paper_ablations()[["arm", "dataset", "accuracy", "weighted_f1", "paper_row"]]
    paper = paper.rename(columns={"accuracy": "paper_accuracy", "weighted_f1": "paper_weighted_f1"})
    table = summary.merge(paper, on=["arm", "dataset"], how="left")
    # The paper's effect of each arm: its value minus the paper's own settings (the 1-shot headline row).
    default = paper[paper["arm"] == PAPER_DEFAULT_ARM].set_index("dataset")["paper_weighted_f1"]
    table["paper_delta_weighted_f1"] = table["paper_weighted_f1"] - table["dataset"].map(default)

    def text(mean: float, sd: float, seeds: int) -> str:
        return f"{mean:.1f} +- {sd:.1f} ({seeds} seeds)" if seeds > 1 else f"{mean:.1f} (1 seed)"

    table["ours_accuracy"] = [
        text(m, s, n)
        for m, s, n in zip(table["accuracy_mean"], table["accuracy_sd"], table["seeds"], strict=True)
    ]
    table["ours_weighted_f1"] = [
        text(m, s, n)
        for m, s, n in zip(table["weighted_f1_mean"], table["weighted_f1_sd"], table["seeds"], strict=True)
    ]
    table["ours_delta_weighted_f1"] = [
        "" if pd.isna(m) else f"{m:+.1f} +- {s:.1f}"
        for m, s in zip(table["delta_weighted_f1_mean"], table["delta_weighted_f1_sd"], strict=True)
    ]
    table["paper_row"] = table["paper_row"].fillna("")
    table["model"] = model
    table["hardware"] = hardware
    table["note"] = note
    columns = [
        "group", "arm", "label", "dataset", "split", "context_turns", "k_shot", "use_video", "tuned",
        "ours_accuracy", "ours_weighted_f1", "paper_accuracy", "paper_weighted_f1", "paper_row",
        "ours_delta_weighted_f1", "paper_delta_weighted_f1",
        "accuracy_mean", "accuracy_sd", "weighted_f1_mean", "weighted_f1_sd", "macro_f1_mean", "macro_f1_sd",
        "delta_accuracy_mean", "delta_accuracy_sd", "delta_weighted_f1_mean", "delta_weighted_f1_sd",
        "seeds", "n_per_seed", "model", "hardware", "note",
    ]  # fmt: skip
    return table[columns]


def save_results(
    runs: pd.DataFrame, table: pd.DataFrame, run_dir: str | os.PathLike, settings: Mapping[str, Any]
) -> Path:
    """Write ``<run_dir>/ablations/``: runs.csv (per seed), results.csv (the table) and settings.json."""
    folder = RunLayout(Path(run_dir)).ablations
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in (("runs", runs), ("results", table)):
        with atomic_path(folder / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    write_json(folder / "settings.json", dict(settings))
    return folder


def load_ablation_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The table ``save_results`` wrote."""
    run = RunLayout(Path(run_dir))
    return pd.read_csv(run.written(run.ablations / "results.csv", "Ablation results", "05_ablations"))


def load_settings(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What the ablation run used (``<run_dir>/ablations/settings.json``)."""
    return read_json(RunLayout(Path(run_dir)).ablations / "settings.json")


# ----------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """``python -m dialoguellm.analysis.ablation --list`` / ``--show ARM`` (the resolved settings of an arm)."""
    parser = argparse.ArgumentParser(
        prog="python -m dialoguellm.analysis.ablation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", default="cpu", help="base profile the arms override (cpu or paper)")
    parser.add_argument("--list", action="store_true", help="list the arms and what they change")
    parser.add_argument("--show", metavar="ARM", help="print the resolved settings of one arm")
    args = parser.parse_args(argv)
    if args.show:
        arm = load_arm(args.show, args.profile)
        print(
            yaml.safe_dump(
                {"arm": {"name": arm.name, "group": arm.group, "tuned": arm.tuned}, **arm.config.to_dict()},
                sort_keys=False,
            )
        )
        return 0
    for arm in load_arms(profile=args.profile):
        print(f"{arm.group:8s} {arm.name:14s} {arm.label:28s} {arm.settings()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

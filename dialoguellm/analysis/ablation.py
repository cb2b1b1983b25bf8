"""Ablation arms: the paper's comparisons as named YAML files, one arm's predictions, the paper's values.

An arm is a small YAML file in ``dialoguellm/experiments/arms/`` (or the same mapping inline in an
experiment file) that overrides a base profile
(``cpu`` or ``paper``) in the project's config format, plus an ``arm:`` block naming it:

    arm: {name: context_z0, group: context, label: "z = 0", paper: context_z0}
    prompt: {context_turns: 0}

``arm.paper`` names the row of ``resources/paper_ablations.csv`` (the paper's Tables 4 and 5) that asks the
same question; ``arm.tuned: false`` is the untuned model with the same prompt; ``arm.kind: tfidf_lr`` (or
``majority``) a baseline of ``analysis.baselines`` fitted on the arm's training rows instead of the LLM. The grids that train and
score these arms (an adapter per arm and seed) are experiments (``dialoguellm/experiments/ablations_cpu.yaml``,
``make ablations``; ``ablations_paper.yaml``), run by ``dialoguellm experiment run``.

    python -m dialoguellm.analysis.ablation --list [--profile paper]    # every arm and what it changes
    python -m dialoguellm.analysis.ablation --show context_z0           # one arm's resolved settings
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from io import StringIO
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from dialoguellm.config import Config, config_from_dict, resolve_config_path
from dialoguellm.prompts import builders_from_config
from dialoguellm.scoring.predictions import generation_settings, predict_by_generation, predict_by_scoring

ARMS_DIR = Path(str(resources.files("dialoguellm") / "experiments" / "arms"))
# "base" is the arm every other is compared with; "data" changes the training corpora (MELD only).
GROUPS: tuple[str, ...] = ("base", "context", "video", "lora", "k_shot", "data", "other")
PAPER_FILE = "paper_ablations.csv"
ARM_KEYS = (
    "name",
    "group",
    "label",
    "tuned",
    "paper",
    "reuses",
    "kind",
    "score_on",
    "descriptions",
    "against",
)
SCORE_ON = ("all", "described")  # arm.score_on: every test utterance of the plan, or those with a description
DESCRIPTIONS = ("shown", "withheld")  # arm.descriptions: withheld = the prompt settings, no description text
# What an arm trains: the LLM with LoRA (its config), or a baseline of analysis.baselines fitted on the same
# training rows (a learning curve's floor); "tuned: false" is the LLM untuned.
KINDS = ("llm", "tfidf_lr", "majority")


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
    # a scoring variant: scores the adapter that arm ``reuses`` trained for the same seed (trains nothing);
    # its own settings change only how that adapter is scored (prompt at test time, eval.*)
    reuses: str | None = None
    kind: str = "llm"  # KINDS: the LLM, or a baseline of analysis.baselines fitted on the same rows
    # scored only on the test utterances with a video description ("described"; corpora without one are not
    # scored), with descriptions left out of its prompts ("withheld": a video-aware instruction, no text),
    # and compared with another arm than the experiment's baseline (``against``); defaults change nothing
    score_on: str = "all"
    descriptions: str = "shown"
    against: str | None = None

    def scoring(self) -> dict[str, Any]:
        """The scoring options and the kind of model that differ from their defaults (what a plan records of
        them, in its identity and its arm table alike)."""
        out: dict[str, Any] = {"reuses": self.reuses} if self.reuses else {}
        if self.score_on != "all":
            out["score_on"] = self.score_on
        if self.descriptions != "shown":
            out["descriptions"] = self.descriptions
        if self.against:
            out["against"] = self.against
        if self.kind != "llm":
            out["kind"] = self.kind
        return out

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
    """Every arm file, in ``GROUPS`` order, then by name."""
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


def load_arm(
    name_or_path: str | os.PathLike,
    profile: str | os.PathLike | Config = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> Arm:
    """Read an arm file (a name in dialoguellm/experiments/arms or a path) on top of ``profile``.

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
    return arm_from_mapping(raw, path, profile, overrides)


def arm_from_mapping(
    raw: Mapping[str, Any],
    path: Path,
    profile: str | os.PathLike | Config = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> Arm:
    """An arm from its mapping (an arm file's content, or an arm written inline in an experiment file;
    ``path`` names where it came from in errors): the ``arm:`` block plus config sections on ``profile``."""
    raw = dict(raw)
    meta = raw.pop("arm", None)
    if not isinstance(meta, dict) or "name" not in meta:
        raise ValueError(
            f"{path}: needs an 'arm:' block with at least a name (and a group: {', '.join(GROUPS)})."
        )
    meta = {"group": "other", **meta}
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
    reuses = meta.get("reuses")
    if reuses is not None and (not isinstance(reuses, str) or not tuned):
        raise ValueError(
            f"{path}: arm.reuses names the arm whose adapter this arm scores (a string, with tuned left true), "
            f"not {reuses!r}."
        )
    kind = meta.get("kind", "llm")
    if kind not in KINDS or (kind != "llm" and not tuned):
        raise ValueError(
            f"{path}: arm.kind is {kind!r}; use one of {', '.join(KINDS)} (a baseline is fitted per seed: "
            "no tuned: false)."
        )
    for key, allowed in (("score_on", SCORE_ON), ("descriptions", DESCRIPTIONS)):
        if meta.get(key, allowed[0]) not in allowed:
            raise ValueError(f"{path}: arm.{key} is {meta[key]!r}; use one of {', '.join(allowed)}.")
    against = meta.get("against")
    if against is not None and (not isinstance(against, str) or against == meta["name"]):
        raise ValueError(f"{path}: arm.against names another arm this arm is compared with, not {against!r}.")
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
        reuses=reuses,
        kind=kind,
        score_on=str(meta.get("score_on", "all")),
        descriptions=str(meta.get("descriptions", "shown")),
        against=against,
    )


def load_arms(
    names: Sequence[str] | None = None,
    profile: str | os.PathLike | Config = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> list[Arm]:
    """The arms named (every file of ``ARMS_DIR`` when ``names`` is empty), resolved on ``profile``."""
    paths = arm_paths() if not names else [n for n in names]
    arms = [load_arm(p, profile, overrides) for p in paths]
    seen: dict[str, Path] = {}
    for arm in arms:
        if arm.name in seen:
            raise ValueError(f"Two arms are named {arm.name!r}: {seen[arm.name]} and {arm.path}.")
        seen[arm.name] = arm.path
    return arms


# ------------------------------------------------------------------------------------------ scoring


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
    exclude: Mapping[str, Any],
) -> pd.DataFrame:
    """Predictions of one arm on one corpus (``only``: row positions of ``split``): label scoring, or with
    ``eval.mode: generate`` generated text parsed by ``eval.parser`` with ``eval.fallback``.

    Prompts follow the arm's settings; demonstrations come from the training split, drawn with
    ``demo_seed`` (default: the arm's ``train.seed``, as training and notebook 04 drew them), skipping
    ``exclude`` (``prompts.demonstration_exclusions`` of every corpus the arm trains on; required when it
    trains on several with the overlap removal; ``{}`` for none). ``model`` is
    scored as given (for an untuned arm, the bare model). Scores are computed in the arm's
    ``eval.precision``.
    """
    if split == "train":
        raise ValueError("Ablations are evaluated on dev or test, never on the training split.")
    descriptions = descriptions or {}
    builder = builders_from_config(
        tokenizer, {dataset: splits}, arm.config, descriptions, seed=demo_seed, exclude=exclude
    )[dataset]
    examples = builder.build_split(splits[split], descriptions.get(split, {}), only=only)
    e = arm.config.eval
    if e.mode == "generate":  # the field's way, for comparison (eval.* generation, parser and fallback)
        return predict_by_generation(
            model, tokenizer, builder, examples, batch_size, e.max_new_tokens, dtype, progress=False,
            generation=generation_settings(e), precision=e.precision, parser=e.parser, fallback=e.fallback,
            seed=e.sampling_seed,
        )  # fmt: skip
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


# --------------------------------------------------------------------------------------------- paper


PAPER_DEFAULT_ARM = "kshot_1"  # the paper's own settings: z = 1, k = 1, video descriptions, LoRA


def paper_ablations() -> pd.DataFrame:
    """The paper's value for each arm and corpus (accuracy and weighted F1, %), with the row it comes from."""
    text = (resources.files("dialoguellm") / "resources" / PAPER_FILE).read_text(encoding="utf-8")
    return pd.read_csv(StringIO(text))


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

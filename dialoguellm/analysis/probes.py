"""Prompt probes: one trained adapter, its prompts changed at test time.

The paper's ablations (its Tables 4 and 5) retrain the model once per arm: "does *training* with context
help?". A probe keeps notebook 03's adapter and changes only what the prompt shows when it is scored, or
switches the adapter off: "does the trained model *use* context?". That is a different question, with a
different answer; the retrained arms are the ablation experiments' (``dialoguellm/experiments/``).

Probes, each against the base arm (the adapter's own settings, e.g. z = 1, k = 1, no descriptions on the CPU
profile): context z in {0, 1, 2, 3, all}; demonstrations k in {0, 1, 5}; descriptions switched on (or off,
when the base uses them; MELD only, EmoryNLP has none); the adapter switched off (the untuned model, same
prompts). Five demonstrations, or a description, do not fit the 256 tokens of ``prompt.cutoff_len``, so the
k = 5 and descriptions-on probes alone raise it to 512 (``LONG_CUTOFF``). Switching descriptions on also
changes the instruction's wording ("Given the Video Description and Context ...") for every MELD prompt, so
that probe differs from the base on every utterance, not only on the described ones (``described``
counts those).

**The sample (one rule, every probe).** ``sample_positions(test split, per_dataset, sample_seed)``: of
each corpus's test split, ``per_dataset`` (default 500) utterances, stratified by gold label (proportional
allocation, largest remainders; ``prompts.preparation.sample_indices``), drawn with ``sample_seed``
(default 0); ``per_dataset = 0`` takes the full test set. Every probe scores these same utterances, so
each is compared with the base arm utterance by utterance: ``stats.frame_paired_difference`` (paired
dialogue bootstrap interval and permutation p-value), beside each probe's own weighted F1 and accuracy
with their dialogue-bootstrap intervals. A difference whose interval covers 0 is reported as "no
measurable difference at this size". Predictions are the raw argmax of the label scores (the paper's way;
notebook 04's dev-fitted biases were fitted on the base prompts only).

**What it costs, and what is not recomputed.** Scoring is fp32 and does not depend on the batch
(``eval.precision``, docs/PRECISION.md), so a prompt scores the same wherever it is scored:

- the base arm's scores are read from notebook 04's test predictions when notebook 04 scored with the same
  settings (``evaluation.run.scoring_settings``) and the same adapter (``base_source`` says which);
- a prompt two probes share is scored once (per adapter state); the descriptions probe runs on MELD only
  (the one corpus with descriptions; elsewhere its prompts would be the base arm's);
- ``prompt_costs`` counts every probe's tokens with the tokenizer alone, before any model is loaded.

Outputs (``RunLayout.probes``): ``summary.csv`` (one row per probe and corpus), ``predictions.csv`` (one
row per probe, corpus and utterance, with the label scores) and ``settings.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import stats
from dialoguellm.config import Config
from dialoguellm.corpora.readers import load_corpora_for
from dialoguellm.corpora.video import load_descriptions
from dialoguellm.evaluation.run import scoring_settings
from dialoguellm.io import read_json, read_predictions, write_json
from dialoguellm.model import loading
from dialoguellm.prompts import (
    VIDEO_DATASETS,
    PromptExample,
    builders_from_config,
    demonstration_exclusions,
    rows_of,
    sample_positions,
)
from dialoguellm.runs import RunLayout, find_adapter, hardware_description, load_run_config
from dialoguellm.scoring.engine import common_prefix_length
from dialoguellm.scoring.predictions import predict_by_scoring, probabilities

SAMPLE_SIZE = 500
SAMPLE_SEED = 0
BASE = "base"
NO_DIFFERENCE = "no measurable difference at this size"
CONTEXTS: tuple[int | str, ...] = (0, 1, 2, 3, "all")
SHOTS: tuple[int, ...] = (0, 1, 5)
# Five demonstrations (about 250 tokens) or a video description (about 280) do not fit 256 tokens: those two
# probes alone get this cutoff_len, else they would show nothing of what they probe.
LONG_CUTOFF = 512


# ------------------------------------------------------------------------------------------- probes


@dataclass(frozen=True)
class Probe:
    """One probe: what it changes in the base prompt settings, and whether the adapter stays on."""

    name: str
    group: str  # base, context, demonstrations, descriptions, adapter
    label: str
    prompt: Mapping[str, Any] = field(default_factory=dict)  # PromptConfig fields changed
    tuned: bool = True

    def settings(self, base: Config) -> Config:
        """The base settings with this probe's prompt changes."""
        return dataclasses.replace(base, prompt=dataclasses.replace(base.prompt, **dict(self.prompt)))


def all_probes(base: Config) -> list[Probe]:
    """The base arm, then every probe that differs from it (values equal to the base's are left out)."""
    p = base.prompt
    probes = [Probe(BASE, BASE, f"base (z = {p.context_turns}, k = {p.k_shot}, adapter on)")]
    for z in CONTEXTS:
        if str(z) != str(p.context_turns):
            probes.append(Probe(f"context_z{z}", "context", f"z = {z}", {"context_turns": z}))
    for k in SHOTS:
        if k != p.k_shot:
            change: dict[str, Any] = {"k_shot": k}
            if k == 5:
                change["cutoff_len"] = max(p.cutoff_len, LONG_CUTOFF)
            probes.append(Probe(f"kshot_{k}", "demonstrations", f"k = {k}", change))
    video = not p.use_video
    change = {"use_video": video}
    if video:  # a description alone is about 280 tokens (MELD, SmolLM2's tokenizer): 256 would always drop it
        change["cutoff_len"] = max(p.cutoff_len, LONG_CUTOFF)
    word = "on" if video else "off"
    probes.append(Probe(f"descriptions_{word}", "descriptions", f"descriptions {word}", change))
    probes.append(Probe("adapter_off", "adapter", "adapter off (untuned)", tuned=False))
    return probes


def select_probes(base: Config, names: Sequence[str] = ()) -> list[Probe]:
    """The base arm and the probes named (every probe when ``names`` is empty); unknown names are refused."""
    probes = all_probes(base)
    if not names:
        return probes
    known = {p.name: p for p in probes}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"Unknown probe(s) {', '.join(unknown)}; known for these settings: {', '.join(known)}."
        )
    return [known[BASE], *(known[n] for n in names if n != BASE)]


def applicable(probes: Sequence[Probe], dataset: str) -> list[Probe]:
    """The probes that can change a prompt of ``dataset``: the descriptions probe only where a corpus has
    video descriptions (``prompts.VIDEO_DATASETS``, MELD)."""
    return [p for p in probes if p.group != "descriptions" or dataset in VIDEO_DATASETS]


# --------------------------------------------------------------------------------------------- plan


@dataclass
class ProbePlan:
    """What a probe run uses: the adapter and its settings, the probes, corpora, sample and descriptions."""

    run: Path
    adapter_dir: Path
    settings: Config
    probes: list[Probe]
    corpora: dict[str, Any]
    descriptions: dict[str, dict[str, str]]
    split: str = "test"
    per_dataset: int = SAMPLE_SIZE
    sample_seed: int = SAMPLE_SEED
    positions: dict[str, list[int]] = field(default_factory=dict)
    # build_examples' prompts by (probe, corpus, tokenizer): the cost table and the scoring build each once
    built: dict[tuple[str, str, str, int], tuple[Any, list[PromptExample]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def probes_table(self) -> pd.DataFrame:
        """One row per probe: what it changes."""
        return pd.DataFrame(
            [
                {"probe": p.name, "group": p.group, "label": p.label, "tuned": p.tuned, **p.prompt}
                for p in self.probes
            ]
        )


def plan_probes(
    run: str | os.PathLike,
    probes: Sequence[str] = (),
    corpora: Sequence[str] = (),
    split: str = "test",
    per_dataset: int = SAMPLE_SIZE,
    sample_seed: int = SAMPLE_SEED,
    adapter_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
) -> ProbePlan:
    """The plan: notebook 03's adapter (or ``adapter_dir``) with the settings it was trained with, the probes
    named (all when empty), the corpora named (empty: those it trained on) and the sample (module docstring)."""
    if split == "train":
        raise ValueError("Probes are scored on dev or test, never on the training split.")
    run = Path(run)
    adapter = Path(adapter_dir) if adapter_dir else find_adapter(run)
    settings = load_run_config(adapter.parent)
    names = list(corpora) or list(settings.data.datasets)
    settings = dataclasses.replace(settings, data=dataclasses.replace(settings.data, datasets=names))
    loaded = load_corpora_for(settings, run, data_dir)
    positions = {name: sample_positions(loaded[name][split], per_dataset, sample_seed) for name in loaded}
    return ProbePlan(
        run, adapter, settings, select_probes(settings, probes), dict(loaded), load_descriptions(run),
        split, per_dataset, sample_seed, positions,
    )  # fmt: skip


def build_examples(
    plan: ProbePlan, probe: Probe, dataset: str, tokenizer: Any
) -> tuple[Any, list[PromptExample]]:
    """(builder, prompts) of one probe on one corpus's sample, built exactly as training and notebook 04 build
    them (demonstrations from the training split, drawn with ``train.seed``). Built once per plan, probe,
    corpus and tokenizer (the same files loaded twice count as one: name and vocabulary size)."""
    key = (probe.name, dataset, str(getattr(tokenizer, "name_or_path", id(tokenizer))), len(tokenizer))
    if key not in plan.built:
        settings = probe.settings(plan.settings)
        builder = builders_from_config(
            tokenizer,
            {dataset: plan.corpora[dataset]},
            settings,
            plan.descriptions,
            exclude=demonstration_exclusions(settings, plan.corpora),
        )[dataset]
        split = plan.corpora[dataset][plan.split]
        plan.built[key] = (
            builder,
            builder.build_split(split, plan.descriptions.get(plan.split, {}), only=plan.positions[dataset]),
        )
    return plan.built[key]


def prompt_costs(plan: ProbePlan, tokenizer: Any) -> pd.DataFrame:
    """Every probe's prompts counted with the tokenizer alone: mean tokens, the tokens after the prefix all
    its prompts share (what scoring runs per utterance; the shared prefix runs once), the answer tokens every
    prompt continues with, and the cost relative to the base arm (per-utterance tokens, which scoring time
    follows). ``to_score`` is what ``run_probes`` scores when it reuses notebook 04's base scores."""
    rows = []
    for dataset in plan.corpora:
        seen: set[tuple[bool, tuple[int, ...]]] = set()
        base_tokens = None
        for probe in applicable(plan.probes, dataset):
            builder, examples = build_examples(plan, probe, dataset, tokenizer)
            ids = [e.prompt_ids for e in examples]
            shared = common_prefix_length(ids)
            answers = sum(len(a) for a in builder.answer_ids)
            per_utterance = float(np.mean([len(i) - shared for i in ids])) + answers
            base_tokens = base_tokens or per_utterance
            keys = {(probe.tuned, tuple(i)) for i in ids}
            new = len(keys - seen)
            seen |= keys
            rows.append(
                {
                    "dataset": dataset,
                    "probe": probe.name,
                    "n": len(ids),
                    "mean_prompt_tokens": round(float(np.mean([len(i) for i in ids])), 1),
                    "shared_prefix": shared,
                    "tokens_per_utterance": round(per_utterance, 1),
                    "relative_cost": round(per_utterance / base_tokens, 2),
                    "to_score": 0 if probe.name == BASE else new,
                    "described": sum(bool(e.meta.get("has_description")) for e in examples),
                }
            )
    table = pd.DataFrame(rows)
    table["base_utterances"] = (table["to_score"] * table["relative_cost"]).round(0)
    return table


# ------------------------------------------------------------------------------------------ scoring


def base_source(plan: ProbePlan) -> dict[str, Path]:
    """Notebook 04's test predictions per corpus, where they can stand for the base arm's scores: same
    split, label scoring, the same adapter, the same ``scoring_settings`` (prompts, demonstrations, model,
    precision fp32, length normalisation) and every sampled utterance present. Else the corpus is absent."""
    folder = RunLayout(plan.run).evaluation()
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        return {}
    summary = read_json(summary_path)
    same = (
        summary.get("split") == plan.split
        and summary.get("mode") == "score"
        and summary.get("precision") == "fp32"
        and summary.get("scoring_settings") == _json_like(scoring_settings(plan.settings))
        and summary.get("adapter") is not None
        and Path(summary["adapter"]).resolve() == plan.adapter_dir.resolve()
    )
    if not same:
        return {}
    found = {}
    for dataset in plan.corpora:
        path = RunLayout(plan.run).evaluation_predictions(plan.split, dataset)
        if path.is_file():
            ids = set(read_predictions(path)["example_id"].astype(str))
            rows = rows_of(plan.corpora[dataset][plan.split])
            if all(str(rows[i]["utterance_id"]) in ids for i in plan.positions[dataset]):
                found[dataset] = path
    return found


def _json_like(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a saved summary."""
    import json

    return json.loads(json.dumps(value, default=str))


def _adapter_off(model: Any, tuned: bool) -> contextlib.AbstractContextManager:
    if tuned or not hasattr(model, "disable_adapter"):
        return contextlib.nullcontext()
    return model.disable_adapter()


@dataclass
class ProbeRun:
    """Per-utterance predictions of every probe (``predictions``) and how they were obtained."""

    predictions: pd.DataFrame
    scored: dict[str, int]  # "probe/corpus" -> prompts scored (0: reused)
    base_from: dict[str, str]  # corpus -> notebook 04's file the base scores were read from ("" = rescored)
    seconds: float
    model: str


def run_probes(
    plan: ProbePlan,
    model: Any,
    tokenizer: Any,
    *,
    reuse_base: bool = True,
    batch_size: int = 0,
    progress: bool = True,
) -> ProbeRun:
    """Score every probe on the plan's sample with ``model`` (the adapter loaded; ``adapter_off`` switches it
    off). Each distinct prompt is scored once (per adapter state); with ``reuse_base`` the base arm's scores
    come from notebook 04 where ``base_source`` allows."""
    started = time.time()
    s = plan.settings
    reused = base_source(plan) if reuse_base else {}
    frames, scored, base_from = [], {}, {}
    for dataset in plan.corpora:
        cache: dict[tuple[bool, tuple[int, ...]], np.ndarray] = {}
        base_from[dataset] = str(reused.get(dataset, ""))
        for probe in applicable(plan.probes, dataset):
            builder, examples = build_examples(plan, probe, dataset, tokenizer)
            keys = [(probe.tuned, tuple(e.prompt_ids)) for e in examples]
            if probe.name == BASE and dataset in reused:
                cache.update(zip(keys, _saved_scores(reused[dataset], examples, builder.labels), strict=True))
            todo = {key: e for key, e in zip(keys, examples, strict=True) if key not in cache}
            scored[f"{probe.name}/{dataset}"] = len(todo)
            if todo:
                with _adapter_off(model, probe.tuned):
                    frame = predict_by_scoring(
                        model, tokenizer, builder, list(todo.values()), batch_size or s.eval.batch_size,
                        s.model.dtype, progress, s.eval.length_normalise, s.eval.precision,
                    )  # fmt: skip
                scores = frame[[f"ll_{w}" for w in builder.labels]].to_numpy(dtype=float)
                cache.update(zip(todo, scores, strict=True))
            frames.append(
                _frame(plan, probe, dataset, builder.labels, examples, np.stack([cache[k] for k in keys]))
            )
    return ProbeRun(
        pd.concat(frames, ignore_index=True), scored, base_from, time.time() - started,
        loading.display_name(s.model.name),
    )  # fmt: skip


def _saved_scores(path: Path, examples: Sequence[PromptExample], labels: Sequence[str]) -> np.ndarray:
    """The ranked label scores (``ll_<label>``, untouched by calibration) of ``examples`` in notebook 04's file."""
    saved = read_predictions(path)
    saved.index = saved["example_id"].astype(str)
    return saved.loc[[e.example_id for e in examples], [f"ll_{w}" for w in labels]].to_numpy(dtype=float)


def _frame(
    plan: ProbePlan,
    probe: Probe,
    dataset: str,
    labels: Sequence[str],
    examples: Sequence[PromptExample],
    scores: np.ndarray,
) -> pd.DataFrame:
    rows = rows_of(plan.corpora[dataset][plan.split])
    pred = scores.argmax(axis=1)
    frame = pd.DataFrame(
        {
            "probe": probe.name,
            "example_id": [e.example_id for e in examples],
            "dialogue_id": [str(rows[i]["dialogue_id"]) for i in plan.positions[dataset]],
            "dataset": dataset,
            "gold_id": [e.label_id for e in examples],
            "pred_id": pred.astype(int),
            "gold": [labels[e.label_id] for e in examples],
            "pred": [labels[i] for i in pred],
            "described": [bool(e.meta.get("has_description")) for e in examples],
        }
    )
    probs = probabilities(scores)
    for j, word in enumerate(labels):
        frame[f"p_{word}"] = probs[:, j]
    for j, word in enumerate(labels):
        frame[f"ll_{word}"] = scores[:, j]
    return frame


# ------------------------------------------------------------------------------------------ summary


def summarise(
    predictions: pd.DataFrame,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    paired: Sequence[str] = ("weighted_f1",),
) -> pd.DataFrame:
    """One row per probe and corpus: n, accuracy and weighted F1 with 95% dialogue-bootstrap intervals (in %),
    and the paired difference from the base arm in each metric of ``paired`` (points, 95% interval,
    permutation p-value, verdict). A difference whose interval covers 0 reads "no measurable difference at
    this size". (Each paired metric costs a bootstrap and a permutation test: about a second per probe.)"""
    rows = []
    for (dataset, probe), frame in predictions.groupby(["dataset", "probe"], sort=False):
        base = predictions[(predictions["dataset"] == dataset) & (predictions["probe"] == BASE)]
        row: dict[str, Any] = {
            "dataset": dataset,
            "probe": probe,
            "n": len(frame),
            "dialogues": frame["dialogue_id"].nunique(),
        }
        row["described"] = int(frame["described"].sum())
        for metric in ("weighted_f1", "accuracy"):
            interval = stats.frame_interval(frame, metric, f"{probe}/{dataset}", n_resamples=n_resamples)
            row.update(
                {
                    metric: 100 * interval.estimate,
                    f"{metric}_low": 100 * interval.low,
                    f"{metric}_high": 100 * interval.high,
                }
            )
            if probe == BASE or metric not in paired:
                continue
            diff = stats.frame_paired_difference(frame, base, metric, (probe, BASE), n_resamples=n_resamples)
            row.update(
                {
                    f"diff_{metric}": 100 * diff.difference,
                    f"diff_{metric}_low": 100 * diff.low,
                    f"diff_{metric}_high": 100 * diff.high,
                    f"p_{metric}": diff.p_value,
                    f"verdict_{metric}": _verdict(diff),
                }
            )
        rows.append(row)
    return pd.DataFrame(rows)


def _verdict(diff: stats.PairedDifference) -> str:
    if diff.low <= 0 <= diff.high:
        return NO_DIFFERENCE
    return "higher than base" if diff.low > 0 else "lower than base"


def readable(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as a reader sees it: ``52.3 [49.8, 54.9]`` cells and the verdict."""

    def cell(row: pd.Series, key: str, signed: bool = False) -> str:
        if pd.isna(row.get(key)):
            return "-"
        fmt = "{:+.1f}" if signed else "{:.1f}"
        return f"{fmt.format(row[key])} [{fmt.format(row[key + '_low'])}, {fmt.format(row[key + '_high'])}]"

    return pd.DataFrame(
        {
            "corpus": summary["dataset"],
            "probe": summary["probe"],
            "n": summary["n"],
            "weighted F1 [95% CI]": [cell(r, "weighted_f1") for _, r in summary.iterrows()],
            "accuracy [95% CI]": [cell(r, "accuracy") for _, r in summary.iterrows()],
            "weighted F1 - base [95% CI]": [cell(r, "diff_weighted_f1", True) for _, r in summary.iterrows()],
            "p": [
                "-" if pd.isna(p) else f"{p:.3f}"
                for p in summary.get("p_weighted_f1", [np.nan] * len(summary))
            ],
            "verdict": summary.get("verdict_weighted_f1", pd.Series(["-"] * len(summary))).fillna("(base)"),
        }
    )


# ---------------------------------------------------------------------------------------- the stage


def save_probes(plan: ProbePlan, result: ProbeRun, summary: pd.DataFrame) -> Path:
    """Write ``summary.csv``, ``predictions.csv`` and ``settings.json`` into ``RunLayout.probes``."""
    folder = RunLayout(plan.run).probes
    folder.mkdir(parents=True, exist_ok=True)
    summary.to_csv(folder / "summary.csv", index=False)
    # 7 significant digits keep every argmax (scores differ far above that) at half the file size
    result.predictions.to_csv(folder / "predictions.csv", index=False, float_format="%.7g")
    write_json(
        folder / "settings.json",
        {
            "adapter": str(plan.adapter_dir),
            "split": plan.split,
            "per_dataset": plan.per_dataset,
            "sample_seed": plan.sample_seed,
            "sample_rule": "prompts.sample_positions(split, per_dataset, sample_seed): stratified by gold label",
            "probes": {p.name: {"group": p.group, "tuned": p.tuned, **p.prompt} for p in plan.probes},
            "base_settings": scoring_settings(plan.settings),
            "base_scores_from": result.base_from,
            "prompts_scored": result.scored,
            "seconds": round(result.seconds, 1),
            "model": result.model,
            "hardware": hardware_description(),
        },
    )
    return folder


def probe_stage(
    plan: ProbePlan, batch_size: int = 0, n_resamples: int = stats.DEFAULT_RESAMPLES
) -> tuple[ProbeRun, pd.DataFrame]:
    """Notebook 05's probe step on a ``plan_probes`` plan: load the model with the adapter once, score (the
    prompts ``prompt_costs`` built for the plan are reused), summarise, save."""
    m = plan.settings.model
    loading.set_threads(m.num_threads)
    loaded = loading.load_model(m.name, m.dtype, m.quantization, m.trust_remote_code)
    model = loading.load_adapter(loaded.model, plan.adapter_dir)
    result = run_probes(plan, model, loaded.tokenizer, batch_size=batch_size)
    summary = summarise(result.predictions, n_resamples)
    save_probes(plan, result, summary)
    return result, summary


def probe_records(
    plan: ProbePlan, result: ProbeRun, summary: pd.DataFrame, figure: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The values notebook 05 records about the probes (in %), and the file name of their ``figure``."""
    return {
        "probe_sample": {"split": plan.split, "per_dataset": plan.per_dataset, "seed": plan.sample_seed},
        "probe_base_from": result.base_from,
        "probe_minutes": round(result.seconds / 60, 2),
        "probes": {
            f"{r.probe}/{r.dataset}": {
                "n": int(r.n),
                "weighted_f1": round(r.weighted_f1, 2),
                "weighted_f1_ci": [round(r.weighted_f1_low, 2), round(r.weighted_f1_high, 2)],
                "accuracy": round(r.accuracy, 2),
                **(
                    {}
                    if r.probe == BASE
                    else {
                        "diff_weighted_f1": round(r.diff_weighted_f1, 2),
                        "diff_weighted_f1_ci": [
                            round(r.diff_weighted_f1_low, 2),
                            round(r.diff_weighted_f1_high, 2),
                        ],
                        "p_weighted_f1": round(r.p_weighted_f1, 4),
                        "verdict": r.verdict_weighted_f1,
                    }
                ),
            }
            for r in summary.itertuples()
        },
        **({"figure": Path(figure).name} if figure is not None else {}),
    }

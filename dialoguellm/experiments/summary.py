"""An experiment's numbers from its records, in fractions: each arm's mean over seeds and its difference
from the baseline arm, both with a 95% interval over seeds and test dialogues (``stats.seed_dialogue_bootstrap``),
the per-seed values, and the paper's value for the same question. Every renderer (README/docs table,
notebook display, figure) reads ``summary_table``; none computes a number itself.

The one estimator of "minus base": the difference of the arm means, mean_s metric(arm, s) - mean_s
metric(base, s), seed s of the arm paired with seed s of the base arm (the same training draw); an arm
scored once (untuned) against the mean of the base arm's seeds. Its interval resamples seeds, then the
test dialogues; ``covers`` says which of the two an interval resampled.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import stats
from dialoguellm.analysis import ablation
from dialoguellm.experiments.record import UnitRecord, load_plan, load_units
from dialoguellm.labels import normalised_label_names


def _runs(units: Sequence[UnitRecord], arm: str, dataset: str) -> dict[int | None, list[int]]:
    return {
        u.seed: u.predictions[dataset].pred_id for u in units if u.arm == arm and dataset in u.predictions
    }


def _paper_values() -> tuple[pd.DataFrame, pd.Series]:
    paper = ablation.paper_ablations().set_index(["arm", "dataset"])
    return paper, paper.xs(ablation.PAPER_DEFAULT_ARM, level="arm")["weighted_f1"]


def summary_table(
    folder: str | os.PathLike,
    metrics: Sequence[str] | None = None,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One row per arm and corpus (fractions): runs, n; per metric its mean over seeds, sd, interval
    (``<m>``, ``<m>_sd``, ``<m>_low``, ``<m>_high``, ``<m>_covers``) and, for every arm but the baseline, the
    difference from the baseline (``delta_<m>``, ``_low``, ``_high``, ``_verdict``, ``_per_seed``,
    ``_covers``); the paper's weighted F1 for the same question (percent, as the paper prints it)."""
    plan, units = load_plan(folder), load_units(folder)
    if plan.get("sizes"):
        raise ValueError(
            f"{folder} holds a learning curve (sizes {plan['sizes']}); read it with curve_table."
        )
    metrics = list(metrics or plan["metrics"])
    baseline, paper, paper_default = plan["baseline"], *_paper_values()
    rows = []
    for name, arm in plan["arms"].items():
        for dataset in arm["datasets"]:
            runs = _runs(units, name, dataset)
            if not runs:
                continue
            test = plan["test"][dataset]
            labels = normalised_label_names(dataset)
            row: dict[str, Any] = {
                "arm": name, "label": arm["label"], "group": arm["group"], "dataset": dataset, "tuned": arm["tuned"],
                "runs": len(runs), "seeds": [s for s in runs if s is not None], "n": len(test["example_id"]),
            }  # fmt: skip
            base_runs = _runs(units, baseline, dataset)
            for metric in metrics:
                own = stats.seed_dialogue_bootstrap(
                    test["gold_id"], [runs[s] for s in sorted(runs, key=str)], labels, test["dialogue_id"],
                    metric=metric, n_resamples=n_resamples, confidence=confidence,
                )  # fmt: skip
                row |= {metric: own.estimate, f"{metric}_low": own.low, f"{metric}_high": own.high,
                        f"{metric}_covers": ", ".join(own.covers),
                        f"{metric}_sd": float(np.std(own.per_seed, ddof=1)) if len(own.per_seed) > 1 else np.nan}  # fmt: skip
                row |= _difference(
                    test, labels, runs, base_runs, name == baseline, metric, n_resamples, confidence
                )
            row |= _paper_columns(arm.get("paper"), dataset, paper, paper_default)
            rows.append(row)
    table = pd.DataFrame(rows)
    first = units[0].identity if units else None
    table["model"] = plan.get("model") or (units[0].config.get("model", {}).get("name", "") if units else "")
    table["hardware"] = first.hardware if first else ""
    return table


def _difference(
    test: Mapping[str, Any], labels: Sequence[str], runs: Mapping, base_runs: Mapping, is_base: bool,
    metric: str, n_resamples: int, confidence: float,
) -> dict[str, Any]:  # fmt: skip
    """delta_<metric> columns: the arm's mean minus the baseline's, paired by seed (NaN for the baseline)."""
    if is_base or not base_runs:
        return {f"delta_{metric}{k}": v for k, v in
                (("", np.nan), ("_low", np.nan), ("_high", np.nan), ("_verdict", ""), ("_per_seed", []), ("_covers", ""))}  # fmt: skip
    seeds = sorted(s for s in base_runs if s in runs) if None not in runs else sorted(base_runs)
    mine = [runs[None]] if None in runs else [runs[s] for s in seeds]
    d = stats.seed_dialogue_bootstrap(
        test["gold_id"], mine, labels, test["dialogue_id"], [base_runs[s] for s in seeds], metric=metric,
        n_resamples=n_resamples, confidence=confidence,
    )  # fmt: skip
    per_seed = d.per_seed if len(mine) > 1 else ()
    return {
        f"delta_{metric}": d.estimate, f"delta_{metric}_low": d.low, f"delta_{metric}_high": d.high,
        f"delta_{metric}_verdict": d.verdict, f"delta_{metric}_per_seed": list(per_seed),
        f"delta_{metric}_covers": ", ".join(d.covers),
    }  # fmt: skip


def _paper_columns(key: str | None, dataset: str, paper: pd.DataFrame, default: pd.Series) -> dict[str, Any]:
    index = (key, dataset)
    has = index in paper.index and pd.notna(paper.loc[index, "weighted_f1"])
    note = paper.loc[index, "note"] if index in paper.index else None
    value = float(paper.loc[index, "weighted_f1"]) if has else np.nan
    return {
        "paper_weighted_f1": value,
        "paper_delta_weighted_f1": value - float(default.get(dataset, np.nan)) if has else np.nan,
        "paper_note": str(note) if isinstance(note, str) else "",
    }


def curve_table(
    folder: str | os.PathLike,
    metrics: Sequence[str] = ("weighted_f1",),
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """A learning curve's numbers (fractions): one row per arm, training size and corpus (an arm scored once:
    one row, size None) with ``runs``, ``seeds``, ``n`` (test utterances), ``train_utterances`` (the mean over
    the seeds of the corpus's rows trained on, after the overlap removal; NaN when scored once) and per metric
    the mean over seeds with its interval (``<m>``, ``_low``, ``_high``, ``_covers``, ``_sd``); for every tuned
    arm but the baseline, ``delta_<m>`` (and ``_low``, ``_high``, ``_verdict``, ``_covers``): its mean minus the
    baseline arm's at the same size, seed s paired with seed s (the same rows); ``gain_<m>`` (and ``_low``,
    ``_high``, ``_verdict``, ``_covers``): its mean minus its own at the previous size over the seeds both have (nested
    draws), the gain of one step of the curve. Intervals: ``stats.seed_dialogue_bootstrap``."""
    plan, units = load_plan(folder), load_units(folder)
    sizes: list[str | None] = list(plan.get("sizes") or [None])
    rows = []
    for name, arm in plan["arms"].items():
        for dataset in arm["datasets"]:
            test, labels = plan["test"][dataset], normalised_label_names(dataset)
            boot = {"n_resamples": n_resamples, "confidence": confidence}
            previous: dict | None = None
            for size in sizes if arm["tuned"] else [None]:
                mine = [u for u in units if u.arm == name and u.size == size and dataset in u.predictions]
                if not mine:
                    continue
                runs = {u.seed: u.predictions[dataset].pred_id for u in mine}
                trained = [len(u.samples[dataset]["train"]) for u in mine if u.seed is not None]
                row: dict[str, Any] = {
                    "arm": name, "label": arm["label"], "kind": arm.get("kind", "llm"), "tuned": arm["tuned"],
                    "dataset": dataset, "size": size, "runs": len(runs), "seeds": [s for s in runs if s is not None],
                    "n": len(test["example_id"]), "train_utterances": float(np.mean(trained)) if trained else np.nan,
                }  # fmt: skip
                base = {
                    u.seed: u.predictions[dataset].pred_id
                    for u in units
                    if u.arm == plan["baseline"] and u.size == size and dataset in u.predictions
                }
                for metric in metrics:
                    own = stats.seed_dialogue_bootstrap(
                        test["gold_id"], [runs[s] for s in sorted(runs, key=str)], labels, test["dialogue_id"],
                        metric=metric, **boot,
                    )  # fmt: skip
                    row |= {metric: own.estimate, f"{metric}_low": own.low, f"{metric}_high": own.high,
                            f"{metric}_covers": ", ".join(own.covers),
                            f"{metric}_sd": float(np.std(own.per_seed, ddof=1)) if len(own.per_seed) > 1 else np.nan}  # fmt: skip
                    is_base = name == plan["baseline"] or not arm["tuned"]
                    row |= _difference(test, labels, runs, base, is_base, metric, n_resamples, confidence)
                    row |= _gain(test, labels, runs, previous, metric, boot)
                previous = runs
                rows.append(row)
    return pd.DataFrame(rows)


def _gain(
    test: Mapping[str, Any], labels: Sequence[str], runs: Mapping, previous: Mapping | None, metric: str,
    boot: Mapping[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """gain_<metric> columns: the mean at this size minus the mean at the previous size, over the seeds both
    have (seed s paired with seed s: the smaller draw is a prefix of the larger); NaN at the first size."""
    seeds = sorted(s for s in runs if previous and s in previous)
    if not seeds:
        return {
            f"gain_{metric}{k}": v
            for k, v in (("", np.nan), ("_low", np.nan), ("_high", np.nan), ("_verdict", ""), ("_covers", ""))
        }
    d = stats.seed_dialogue_bootstrap(
        test["gold_id"], [runs[s] for s in seeds], labels, test["dialogue_id"], [previous[s] for s in seeds],
        metric=metric, **boot,
    )  # fmt: skip
    return {f"gain_{metric}": d.estimate, f"gain_{metric}_low": d.low, f"gain_{metric}_high": d.high,
            f"gain_{metric}_verdict": d.verdict, f"gain_{metric}_covers": ", ".join(d.covers)}  # fmt: skip


def overlap_effect(
    folder: str | os.PathLike,
    metric: str = "weighted_f1",
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """For an experiment planned with ``samples.include_overlap``: per arm (against the baseline) and corpus,
    the difference on the test lines that overlap another corpus's training split, on the rest, and the
    difference in differences (overlapping minus rest), each with its interval over seeds and dialogues
    (fractions). Empty when the plan marks no overlapping lines."""
    plan, units = load_plan(folder), load_units(folder)
    rows = []
    for name, arm in plan["arms"].items():
        if name == plan["baseline"]:
            continue
        for dataset in arm["datasets"]:
            test = plan["test"][dataset]
            inside = np.asarray(test.get("overlapping", []), dtype=bool)
            runs, base = _runs(units, name, dataset), _runs(units, plan["baseline"], dataset)
            if not inside.any() or inside.all() or not runs or not base:
                continue
            seeds = sorted(s for s in base if s in runs)
            a, b = np.array([runs[s] for s in seeds]), np.array([base[s] for s in seeds])
            gold, groups = np.asarray(test["gold_id"]), np.asarray(test["dialogue_id"])
            labels = normalised_label_names(dataset)
            options = {"metric": metric, "n_resamples": n_resamples, "confidence": confidence}
            row: dict[str, Any] = {"arm": name, "label": arm["label"], "dataset": dataset, "overlapping": int(inside.sum()),
                                   "rest": int((~inside).sum()), "seeds": seeds}  # fmt: skip
            for part, mask in (("overlapping", inside), ("rest", ~inside)):
                if len(np.unique(groups[mask])) < 2:
                    continue
                d = stats.seed_dialogue_bootstrap(
                    gold[mask], a[:, mask], labels, groups[mask], b[:, mask], **options
                )
                row |= {f"{part}_delta": d.estimate, f"{part}_low": d.low, f"{part}_high": d.high}
            did = stats.seed_dialogue_bootstrap(gold, a, labels, groups, b, inside=inside, **options)
            row |= {"did": did.estimate, "did_low": did.low, "did_high": did.high, "did_verdict": did.verdict,
                    "covers": ", ".join(did.covers)}  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


def committed_folder(name: str, results: str | os.PathLike | None = None) -> Path:
    """Where the repository keeps an experiment's records (``results/cpu/experiments/<name>``)."""
    root = Path(results) if results else Path(__file__).resolve().parents[2] / "results" / "cpu"
    return root / "experiments" / name

"""An experiment's numbers from its records, in fractions: each arm's mean over seeds and its difference
from the baseline arm, both with a 95% interval over seeds and test dialogues (``stats.seed_dialogue_bootstrap``),
the per-seed values, and the paper's value for the same question. Every renderer (README/docs table,
notebook display, figure) reads ``summary_table``; none computes a number itself.

The one estimator of "minus base": the difference of the arm means, mean_s metric(arm, s) - mean_s
metric(base, s), seed s of the arm paired with seed s of the base arm (the same training draw); an arm
scored once (untuned) against the mean of the base arm's seeds. Its interval resamples seeds, then the
test dialogues; ``covers`` says which of the two an interval resampled.

An arm compares with the baseline arm unless it names another (``arm.against``); an arm scored on part of
the test sample (``arm.score_on: described``) has its own metrics on that part, and its difference is taken
on the test ids both arms were scored on (``n_compared``).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import calibration, stats
from dialoguellm.analysis import ablation
from dialoguellm.experiments.record import UnitRecord, load_plan, load_units
from dialoguellm.labels import normalised_label_names


def _runs(units: Sequence[UnitRecord], arm: str, dataset: str) -> dict[int | None, list[int]]:
    return {
        u.seed: u.predictions[dataset].pred_id for u in units if u.arm == arm and dataset in u.predictions
    }


def _scored_ids(units: Sequence[UnitRecord], arm: str, dataset: str) -> list[str]:
    """The test ids an arm was scored on (every unit of an arm scores the same ids): the plan's test sample,
    or the part of it that ``arm.score_on`` names."""
    return next(
        (u.predictions[dataset].example_id for u in units if u.arm == arm and dataset in u.predictions), []
    )


def _restricted(
    test: Mapping[str, Any],
    ids: Sequence[str],
    *runs: Mapping[Any, Sequence[int]],
    scored: Sequence[Sequence[str]],
) -> tuple[dict[str, list], list[dict[Any, list[int]]]]:
    """The plan's test entry and each arm's predictions (scored on ``scored[i]``, in that order) cut to ``ids``
    (in the plan's order), so arms scored on different parts of the sample are compared on what they share."""
    position = {e: i for i, e in enumerate(test["example_id"])}
    keep = sorted(position[e] for e in ids)
    cut = {
        k: [v[i] for i in keep] for k, v in test.items() if isinstance(v, list) and len(v) == len(position)
    }
    wanted = [test["example_id"][i] for i in keep]
    out = []
    for own, order in zip(runs, scored, strict=True):
        at = {e: i for i, e in enumerate(order)}
        out.append({s: [p[at[e]] for e in wanted] for s, p in own.items()})
    return cut, out


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
    difference from the baseline, or the arm it names in ``against`` (``delta_<m>``, ``_low``, ``_high``,
    ``_verdict``, ``_per_seed``, ``_covers``), on the ``n_compared`` test ids both were scored on; the
    paper's weighted F1 for the same question (percent, as the paper prints it)."""
    plan, units = load_plan(folder), load_units(folder)
    if plan.get("sizes"):
        raise ValueError(
            f"{folder} holds a learning curve (sizes {plan['sizes']}); read it with curve_table."
        )
    metrics = list(metrics or plan["metrics"])
    baseline, paper, paper_default = plan["baseline"], *_paper_values()
    rows = []
    for name, arm in plan["arms"].items():
        against = arm.get("against", baseline)
        for dataset in arm["datasets"]:
            runs = _runs(units, name, dataset)
            if not runs:
                continue
            full, labels = plan["test"][dataset], normalised_label_names(dataset)
            ids, other_ids = _scored_ids(units, name, dataset), _scored_ids(units, against, dataset)
            raw, other = runs, _runs(units, against, dataset)
            test, (runs,) = _restricted(full, ids, raw, scored=[ids])
            shared = [e for e in ids if e in set(other_ids)]
            paired, (mine, base_runs) = _restricted(full, shared, raw, other, scored=[ids, other_ids])
            row: dict[str, Any] = {
                "arm": name, "label": arm["label"], "group": arm["group"], "dataset": dataset, "tuned": arm["tuned"],
                "runs": len(runs), "seeds": [s for s in runs if s is not None], "n": len(test["example_id"]),
                "against": "" if name == against else against, "n_compared": len(shared) if name != against else 0,
            }  # fmt: skip
            for metric in metrics:
                own = stats.seed_dialogue_bootstrap(
                    test["gold_id"], [runs[s] for s in sorted(runs, key=str)], labels, test["dialogue_id"],
                    metric=metric, n_resamples=n_resamples, confidence=confidence,
                )  # fmt: skip
                row |= {metric: own.estimate, f"{metric}_low": own.low, f"{metric}_high": own.high,
                        f"{metric}_covers": ", ".join(own.covers),
                        f"{metric}_sd": float(np.std(own.per_seed, ddof=1)) if len(own.per_seed) > 1 else np.nan}  # fmt: skip
                row |= _difference(
                    paired,
                    labels,
                    mine,
                    base_runs if shared else {},
                    name == against,
                    metric,
                    n_resamples,
                    confidence,
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


# --------------------------------------------------------------------- corrections fitted on the sample

CORRECTION_FOLDS = 5
# a record keeps each label's probability to 6 decimals: a smaller one reads as half that unit
SMALLEST_SCORE = 5e-7
_CORRECTION = re.compile(r"^(none|label_bias|prior)(?:\((rows|scale)=([0-9]*\.?[0-9]+)\))?$")


@dataclass(frozen=True)
class Correction:
    """A correction of the label scores fitted on the scored sample itself, cross-fitted (``corrections_table``):
    ``none`` (the raw argmax), ``label_bias`` (``calibration.fit_label_bias``: one bias per label maximising
    weighted F1; ``label_bias(rows=N)`` fits on N rows drawn from the other folds) or ``prior``
    (``calibration.PriorCorrection``: offsets and a scale by likelihood; ``prior(scale=S)`` fixes the scale)."""

    kind: str
    rows: int | None = None
    scale: float | None = None
    reference: str | None = None  # "A vs B": the correction A is compared with (default: the first listed)

    @classmethod
    def parse(cls, text: str) -> Correction:
        """``label_bias(rows=200)``; ``prior vs prior(scale=1)`` compares the first with the second."""
        own, _, against = str(text).partition(" vs ")
        if against:
            return dataclasses.replace(cls.parse(own), reference=cls.parse(against).name)
        found = _CORRECTION.match(str(text).replace(" ", ""))
        kind, key, value = found.groups() if found else (None, None, None)
        if not found or (key == "rows" and kind != "label_bias") or (key == "scale" and kind != "prior"):
            raise ValueError(
                f"Unknown correction {text!r}: use none, label_bias, label_bias(rows=N), prior or prior(scale=S)."
            )
        return cls(
            kind, int(float(value)) if key == "rows" else None, float(value) if key == "scale" else None
        )

    @property
    def spec(self) -> str:
        """How it was written: the name, and `` vs <reference>`` when it names one."""
        return self.name + (f" vs {self.reference}" if self.reference else "")

    @property
    def name(self) -> str:
        if self.rows is not None:
            return f"{self.kind}(rows={self.rows})"
        return f"{self.kind}(scale={self.scale:g})" if self.scale is not None else self.kind


def cross_fitted(
    scores: np.ndarray, gold: Sequence[int], dialogues: Sequence[str], labels: Sequence[str],
    correction: Correction, folds: int = CORRECTION_FOLDS, seed: int = 0,
) -> np.ndarray:  # fmt: skip
    """Predictions of ``scores`` (rows x labels, log scores) under ``correction``, each fold of whole dialogues
    corrected by a fit on the other folds only, so no utterance is scored by a fit that saw it or its dialogue."""
    if correction.kind == "none":
        return scores.argmax(axis=1)
    gold, dialogues = np.asarray(gold, dtype=int), np.asarray(dialogues)
    rng = np.random.default_rng(seed)
    unique = rng.permutation(np.unique(dialogues))
    fold_of = {d: i % folds for i, d in enumerate(unique)}
    fold = np.array([fold_of[d] for d in dialogues])
    pred = np.zeros(len(gold), dtype=int)
    for k in range(folds):
        held, fit = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        if not len(held):
            continue
        if correction.rows is not None and correction.rows < len(fit):
            fit = np.sort(rng.choice(fit, correction.rows, replace=False))
        if correction.kind == "label_bias":
            corrected = scores[held] + calibration.fit_label_bias(scores[fit], gold[fit], labels)
        else:
            scale, offsets = calibration.fit_prior(
                scores[fit], gold[fit], len(labels), scale=correction.scale
            )
            corrected = scale * scores[held] - offsets[None, :]
        pred[held] = corrected.argmax(axis=1)
    return pred


def corrections_table(
    folder: str | os.PathLike,
    corrections: Sequence[str] | None = None,
    metric: str = "weighted_f1",
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    folds: int = CORRECTION_FOLDS,
) -> pd.DataFrame:
    """Per arm, corpus and correction (the plan's ``corrections`` unless given; each compared with the one it
    names, ``"prior vs prior(scale=1)"``, else with the first listed):
    ``metric`` of the cross-fitted corrected predictions of every seed (``cross_fitted``, folds of the
    sample's dialogues, fold seed ``sample_seed``) with its interval over seeds and dialogues; the difference
    from its reference correction on the same arm (``delta_correction``) and from the same correction on the
    arm it is compared with (``delta_arm``), each paired by seed. Read from the records' label scores (their
    log; a probability under 5e-7 reads as 5e-7). Meant for a dev experiment (``samples.split: dev``): the
    corrections are fitted on the very sample they score, one fold at a time. Empty without corrections."""
    plan, units = load_plan(folder), load_units(folder)
    wanted = [
        Correction.parse(c) for c in (corrections if corrections is not None else plan.get("corrections", []))
    ]
    if not wanted:
        return pd.DataFrame()
    reference = {c.name: c.reference or wanted[0].name for c in wanted}
    fitted = {c.name: dataclasses.replace(c, reference=None) for c in wanted}
    fitted |= {r: Correction.parse(r) for r in reference.values() if r not in fitted}
    seed = int(plan["samples"].get("sample_seed", 0))
    options = {"metric": metric, "n_resamples": n_resamples, "confidence": confidence}
    preds: dict[tuple[str, str, str], dict[Any, np.ndarray]] = {}
    for u in units:
        for dataset, p in u.predictions.items():
            if p.label_scores is None:
                continue
            scores = np.log(np.clip(np.asarray(p.label_scores, dtype=float), SMALLEST_SCORE, None))
            labels = normalised_label_names(dataset)
            for c in fitted.values():
                preds.setdefault((u.arm, dataset, c.name), {})[u.seed] = cross_fitted(
                    scores, p.gold_id, p.dialogue_id, labels, c, folds, seed
                )
    rows = []
    for name, arm in plan["arms"].items():
        against = arm.get("against", plan["baseline"])
        for dataset in arm["datasets"]:
            ids = _scored_ids(units, name, dataset)
            if not ids or (name, dataset, wanted[0].name) not in preds:
                continue
            test, _ = _restricted(plan["test"][dataset], ids, scored=[])
            labels = normalised_label_names(dataset)
            for c in wanted:
                runs = preds[(name, dataset, c.name)]
                seeds = sorted(runs, key=str)
                own = stats.seed_dialogue_bootstrap(
                    test["gold_id"], [runs[s] for s in seeds], labels, test["dialogue_id"], **options
                )
                row: dict[str, Any] = {"arm": name, "label": arm["label"], "dataset": dataset, "correction": c.name,
                                       "n": len(ids), "seeds": [s for s in seeds if s is not None], metric: own.estimate,
                                       f"{metric}_low": own.low, f"{metric}_high": own.high, "covers": ", ".join(own.covers)}  # fmt: skip
                pairs = {"correction": preds[(name, dataset, reference[c.name])] if reference[c.name] != c.name else None,
                         "arm": preds.get((against, dataset, c.name)) if against != name and _scored_ids(units, against, dataset) == ids else None}  # fmt: skip
                for part, other in pairs.items():
                    common = [s for s in seeds if other and s in other]
                    if not common:
                        row |= {f"delta_{part}": np.nan, f"delta_{part}_low": np.nan, f"delta_{part}_high": np.nan, f"delta_{part}_verdict": ""}  # fmt: skip
                        continue
                    d = stats.seed_dialogue_bootstrap(test["gold_id"], [runs[s] for s in common], labels, test["dialogue_id"],
                                                      [other[s] for s in common], **options)  # fmt: skip
                    row |= {f"delta_{part}": d.estimate, f"delta_{part}_low": d.low, f"delta_{part}_high": d.high,
                            f"delta_{part}_verdict": d.verdict}  # fmt: skip
                row["reference"] = reference[c.name] if pairs["correction"] is not None else ""
                row["against"] = against if pairs["arm"] is not None else ""
                rows.append(row)
    return pd.DataFrame(rows)

"""Confidence intervals and paired tests for accuracy, weighted F1 and macro F1, resampling whole dialogues.

The turns of one dialogue are not independent (same speakers, same scene, the model sees the neighbouring
turns as context), so a bootstrap that resamples single utterances makes intervals too narrow. Here the
unit of resampling is the dialogue (a cluster bootstrap): a resample draws ``n_groups`` dialogues with
replacement and keeps all their turns.

Why it is cheap: every metric of the project (``dialoguellm.metrics.classification_metrics``) is a function
of the confusion matrix, and the confusion matrix of a resample is the sum of the per-dialogue matrices
weighted by how often each dialogue was drawn: ``counts @ per_dialogue_confusion``. Thousands of
resamples of the MELD test set (2,610 turns, 280 dialogues) are one matrix product. A prediction of -1
(generated text that named no label) counts as wrong: it sits in an extra "no label" column, so it lowers
the recall of its gold class and is no class's prediction, exactly as in ``classification_metrics``.

- ``metric_interval``: ``scipy.stats.bootstrap`` over dialogue indices (BCa by default; percentile when
  BCa is undefined, e.g. for a constant statistic).
- ``paired_difference``: two systems scored on the same utterances. The interval of metric(A) - metric(B)
  resamples the same dialogues for both; the p-value is ``scipy.stats.permutation_test`` with
  ``permutation_type="samples"`` on pairs (A's predictions on dialogue i, B's predictions on dialogue i):
  under the null hypothesis that the two systems are exchangeable, each dialogue's A and B predictions
  are swapped or not, independently. The interval and the p-value answer slightly different questions
  and can, at the margin, disagree; the verdict follows the interval.
- ``seed_dialogue_bootstrap``: the interval of an experiment's numbers (``dialoguellm.experiments``): an
  arm's mean over training seeds, the difference of two arms' means (seeds paired) or a difference in
  differences, resampling the seeds, then the test dialogues; ``covers`` names what an interval resampled.
- Frame helpers read prediction files as ``scoring.predictions.save_predictions`` writes them and find each
  row's dialogue (``dialogue_of`` documents the id rules).

Command line::

    python -m dialoguellm.stats interval runs/.../test_meld_predictions.csv [--metric weighted_f1]
    python -m dialoguellm.stats paired A_predictions.csv B_predictions.csv [--json out.json]
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from dialoguellm.io import predictions_name, read_predictions, split_stem, write_json
from dialoguellm.labels import LABELS
from dialoguellm.metrics import METRICS, metric_from_confusion

DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
NO_DIFFERENCE = "no measurable difference"


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Interval:
    """A metric's point estimate and its bootstrap interval (fractions in 0..1, not percent)."""

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float
    n: int  # utterances
    n_groups: int  # dialogues (the resampling unit)
    method: str
    n_resamples: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return format_interval(self.estimate, self.low, self.high)


@dataclass(frozen=True)
class PairedDifference:
    """metric(A) - metric(B) on the same utterances: paired bootstrap interval and permutation p-value."""

    metric: str
    a: float
    b: float
    difference: float
    low: float
    high: float
    p_value: float
    verdict: str  # "no measurable difference" when the interval covers 0, else "A higher" / "B higher"
    confidence: float
    n: int
    n_groups: int
    method: str
    test: str
    n_resamples: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return format_interval(self.difference, self.low, self.high)


def verdict_of(low: float, high: float) -> str:
    """The one verdict on a difference A - B: "no measurable difference" when its interval covers 0, else
    "A higher" or "B higher"."""
    return NO_DIFFERENCE if low <= 0 <= high else ("A higher" if low > 0 else "B higher")


def named_verdict(verdict: str, a: str, b: str) -> str:
    """A ``PairedDifference.verdict`` with the two systems named: "<a> higher", "<b> higher" or
    "no measurable difference"."""
    return {"A higher": f"{a} higher", "B higher": f"{b} higher"}.get(verdict, verdict)


def format_interval(estimate: float, low: float, high: float) -> str:
    """``52.3 [49.8, 54.9]``: percent with one decimal."""
    return f"{100 * estimate:.1f} [{100 * low:.1f}, {100 * high:.1f}]"


# ----------------------------------------------------------------------- confusion matrices -> metrics


def dialogue_confusions(
    gold: Sequence[int], pred: Sequence[int], n_labels: int, groups: Sequence[Any]
) -> np.ndarray:
    """Per-dialogue counts, shape (n_groups, n_labels, n_labels + 1): rows = gold, columns = predicted,
    the last column = no label (-1 or any id outside 0..n_labels-1). Dialogues in ``np.unique`` order."""
    gold = np.asarray(gold, dtype=int)
    pred = np.asarray(pred, dtype=int)
    groups = np.asarray(groups)
    if not (gold.shape == pred.shape == groups.shape) or gold.ndim != 1:
        raise ValueError(
            f"gold, pred and groups must be 1-D and of one length; got {gold.shape}, {pred.shape}, "
            f"{groups.shape}."
        )
    if len(gold) == 0:
        raise ValueError("No predictions to score: gold is empty.")
    if gold.min() < 0 or gold.max() >= n_labels:
        raise ValueError(
            f"gold labels must be in 0..{n_labels - 1} (one per label); found {gold.min()}..{gold.max()}."
        )
    _, group_index = np.unique(groups, return_inverse=True)
    column = np.where((pred >= 0) & (pred < n_labels), pred, n_labels)
    counts = np.zeros((group_index.max() + 1, n_labels, n_labels + 1))
    np.add.at(counts, (group_index, gold, column), 1)
    return counts


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")


def _resample_counts(indices: np.ndarray, n_groups: int) -> np.ndarray:
    """How often each group occurs in each resample: (..., m) group indices -> (..., n_groups) counts."""
    flat = indices.reshape(-1, indices.shape[-1])
    offsets = flat + n_groups * np.arange(len(flat))[:, None]
    counts = np.bincount(offsets.ravel(), minlength=len(flat) * n_groups).reshape(len(flat), n_groups)
    return counts.reshape(*indices.shape[:-1], n_groups).astype(float)


# ------------------------------------------------------------------------------------ scipy wrappers


def _rng_keyword(function: Callable, seed: int) -> dict[str, Any]:
    # scipy >= 1.15 takes `rng`; older releases (the dependency range starts at 1.11) `random_state`.
    name = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
    return {name: np.random.default_rng(seed)}


def _batch(n_resamples: int, n_groups: int) -> int:
    # Keep one batch of resampled indices near 16 MB, whatever the number of dialogues.
    return max(1, min(n_resamples, 2_000_000 // max(n_groups, 1)))


def _bootstrap_groups(
    statistic: Callable[[np.ndarray], np.ndarray],
    n_groups: int,
    confidence: float,
    n_resamples: int,
    seed: int,
    method: str,
) -> tuple[float, float, str]:
    """``scipy.stats.bootstrap`` over the dialogue indices 0..n_groups-1; (low, high, method used)."""
    if n_groups < 2:
        raise ValueError(
            "All rows belong to one dialogue: a dialogue bootstrap needs at least 2 dialogues (check the "
            "groups / dialogue_id values; with very few dialogues no interval is reliable)."
        )

    def on_indices(indices: np.ndarray, axis: int = -1) -> np.ndarray:
        return statistic(_resample_counts(np.moveaxis(np.asarray(indices), axis, -1), n_groups))

    kwargs = dict(
        n_resamples=n_resamples,
        batch=_batch(n_resamples, n_groups),
        vectorized=True,
        confidence_level=confidence,
    )
    with warnings.catch_warnings():
        # A constant statistic (a system against itself) makes BCa undefined; handled below.
        warnings.simplefilter("ignore", scipy_stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.bootstrap(
            (np.arange(n_groups),),
            on_indices,
            method=method,
            **kwargs,
            **_rng_keyword(scipy_stats.bootstrap, seed),
        )
    distribution = result.bootstrap_distribution
    if np.ptp(distribution) == 0:
        return float(distribution[0]), float(distribution[0]), method
    low, high = result.confidence_interval
    if np.isfinite(low) and np.isfinite(high):
        return float(low), float(high), method
    # BCa can fail (e.g. too few dialogues for the jackknife); the same resamples give a percentile interval.
    low, high = np.quantile(distribution, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high), "percentile (BCa undefined)"


# -------------------------------------------------------------------------------------- public API


def metric_interval(
    gold: Sequence[int],
    pred: Sequence[int],
    labels: Sequence[str],
    groups: Sequence[Any],
    metric: str = "weighted_f1",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    method: str = "BCa",
) -> Interval:
    """Bootstrap interval of ``metric`` ("accuracy", "weighted_f1" or "macro_f1"), resampling whole
    dialogues. ``groups``: the dialogue of each row (pass ``range(len(gold))`` for a row bootstrap).
    With few dialogues (a few dozen or less) any bootstrap interval is rough; at least 2 are required.
    ``method``: scipy's "BCa" (default), "percentile" or "basic". Deterministic for a given ``seed``."""
    _check_metric(metric)
    counts = dialogue_confusions(gold, pred, len(labels), groups)
    flat = counts.reshape(len(counts), -1)

    def statistic(weights: np.ndarray) -> np.ndarray:
        return metric_from_confusion((weights @ flat).reshape(*weights.shape[:-1], *counts.shape[1:]), metric)

    estimate = float(metric_from_confusion(counts.sum(axis=0), metric))
    low, high, used = _bootstrap_groups(statistic, len(counts), confidence, n_resamples, seed, method)
    return Interval(metric, estimate, low, high, confidence, len(gold), len(counts), used, n_resamples, seed)


def paired_difference(
    gold: Sequence[int],
    pred_a: Sequence[int],
    pred_b: Sequence[int],
    labels: Sequence[str],
    groups: Sequence[Any],
    *,
    metric: str = "weighted_f1",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    method: str = "BCa",
) -> PairedDifference:
    """metric(A) - metric(B) for two systems on the same utterances (row i of ``pred_a`` and ``pred_b`` is
    the same utterance, with gold ``gold[i]`` and dialogue ``groups[i]``).

    Interval: paired cluster bootstrap (each resample draws the same dialogues for A and B). p-value
    (two-sided): ``scipy.stats.permutation_test``, ``permutation_type="samples"``, swapping A's and B's
    predictions within each dialogue. ``verdict`` is "no measurable difference" when the interval covers 0.
    """
    _check_metric(metric)
    # A's dialogues are clusters 0..G-1, B's the same dialogues (same order) G..2G-1.
    both = np.concatenate([dialogue_confusions(gold, pred, len(labels), groups) for pred in (pred_a, pred_b)])
    n_groups = len(both) // 2
    flat = both.reshape(2 * n_groups, -1)
    shape = both.shape[1:]

    def score(weights: np.ndarray) -> np.ndarray:
        return metric_from_confusion((weights @ flat).reshape(*weights.shape[:-1], *shape), metric)

    def difference(weights: np.ndarray) -> np.ndarray:
        # The same dialogue weights for A (first n_groups clusters) and B (the rest).
        return score(np.concatenate([weights, np.zeros_like(weights)], axis=-1)) - score(
            np.concatenate([np.zeros_like(weights), weights], axis=-1)
        )

    point_a = float(metric_from_confusion(both[:n_groups].sum(axis=0), metric))
    point_b = float(metric_from_confusion(both[n_groups:].sum(axis=0), metric))
    low, high, used = _bootstrap_groups(difference, n_groups, confidence, n_resamples, seed, method)
    p_value = _permutation_p_value(score, n_groups, n_resamples, seed)
    verdict = verdict_of(low, high)
    return PairedDifference(
        metric,
        point_a,
        point_b,
        point_a - point_b,
        low,
        high,
        p_value,
        verdict,
        confidence,
        len(gold),
        n_groups,
        used,
        "paired permutation (A/B swapped within dialogues), two-sided",
        n_resamples,
        seed,
    )


def _permutation_p_value(
    score: Callable[[np.ndarray], np.ndarray], n_groups: int, n_resamples: int, seed: int
) -> float:
    """Two-sided p-value of score(A clusters) - score(B clusters) under within-dialogue A/B swaps.

    The data handed to scipy are cluster indices: sample x holds A's dialogues (0..G-1), sample y B's
    (G..2G-1); ``permutation_type="samples"`` exchanges x[i] and y[i] pair by pair. With 2**G <=
    n_resamples scipy enumerates every swap (an exact test)."""

    def statistic(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        x, y = np.moveaxis(np.asarray(x), axis, -1), np.moveaxis(np.asarray(y), axis, -1)
        return score(_resample_counts(x, 2 * n_groups)) - score(_resample_counts(y, 2 * n_groups))

    result = scipy_stats.permutation_test(
        (np.arange(n_groups), np.arange(n_groups, 2 * n_groups)),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        batch=_batch(n_resamples, n_groups),
        alternative="two-sided",
        **_rng_keyword(scipy_stats.permutation_test, seed),
    )
    return float(result.pvalue)


# ------------------------------------------------------------------ seeds and dialogues together

SEEDS_AND_DIALOGUES = ("training seeds", "test dialogues")
DIALOGUES_ONLY = ("test dialogues",)


@dataclass(frozen=True)
class SeedDialogueEstimate:
    """An arm's mean metric over seeds, or the difference of two arms' means, with a hierarchical bootstrap
    interval (fractions). ``covers`` names the sources of variation the interval resamples; ``per_seed``
    holds each seed's own value (for a difference: arm minus comparison on that seed)."""

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float
    covers: tuple[str, ...]
    per_seed: tuple[float, ...]
    seeds: int  # seeds resampled (1: only dialogues are)
    n: int  # utterances of the test sample
    n_groups: int  # its dialogues
    method: str
    n_resamples: int
    seed: int

    @property
    def verdict(self) -> str:
        """``verdict_of`` this interval."""
        return verdict_of(self.low, self.high)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "covers": list(self.covers), "per_seed": list(self.per_seed)}

    def __str__(self) -> str:
        return format_interval(self.estimate, self.low, self.high)


HIERARCHICAL_METHOD = "percentile; seeds with replacement, then the test dialogues with replacement"


def _seed_confusions(
    gold: np.ndarray, preds: Any, n_labels: int, group_index: np.ndarray, n_groups: int, rows: np.ndarray
) -> np.ndarray:
    """(seeds, dialogues, L * (L + 1)) per-dialogue confusion counts of each seed's predictions on the
    ``rows`` (a boolean mask); dialogues are ``group_index`` 0..n_groups-1, shared by every subset."""
    preds = np.atleast_2d(np.asarray(preds, dtype=int))
    if preds.shape[1] != len(gold):
        raise ValueError(f"Each seed needs one prediction per utterance: {preds.shape[1]} != {len(gold)}.")
    counts = np.zeros((len(preds), n_groups, n_labels, n_labels + 1))
    for s, pred in enumerate(preds):
        column = np.where((pred >= 0) & (pred < n_labels), pred, n_labels)
        np.add.at(counts[s], (group_index[rows], gold[rows], column[rows]), 1)
    return counts.reshape(len(preds), n_groups, -1)


def _draws(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n) counts: how often each of n units is drawn when n are drawn with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(float)


def _mean_over_seeds(
    confusions: np.ndarray, seed_weights: np.ndarray, dialogue_weights: np.ndarray, n_labels: int, metric: str
) -> np.ndarray:
    """(B,) the seed-weighted mean of each seed's metric on the dialogue-weighted test sample."""
    pooled = np.einsum("bg,sgk->bsk", dialogue_weights, confusions)
    per_seed = metric_from_confusion(pooled.reshape(*pooled.shape[:2], n_labels, n_labels + 1), metric)
    return (per_seed * seed_weights).sum(axis=-1) / seed_weights.sum(axis=-1)


def _dialogue_index(groups: Sequence[Any]) -> tuple[np.ndarray, int]:
    """Each utterance's dialogue as 0..G-1, and G; a dialogue bootstrap needs at least 2 dialogues."""
    _, group_index = np.unique(np.asarray(groups), return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    if n_groups < 2:
        raise ValueError("A dialogue bootstrap needs at least 2 dialogues; check the dialogue ids.")
    return group_index, n_groups


def seed_dialogue_bootstrap(
    gold: Sequence[int],
    preds_a: Sequence[Sequence[int]],
    labels: Sequence[str],
    groups: Sequence[Any],
    preds_b: Sequence[Sequence[int]] | None = None,
    *,
    inside: Sequence[bool] | None = None,
    metric: str = "weighted_f1",
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> SeedDialogueEstimate:
    """The mean of ``metric`` over A's seeds (``preds_a``: one row of predictions per training seed, all on
    the same test utterances), or with ``preds_b`` the difference mean(A) - mean(B), with a hierarchical
    bootstrap interval over the two sources of variation: each resample draws the seeds with replacement,
    then the test dialogues with replacement, and recomputes every drawn seed's metric on those dialogues.
    With ``inside`` (a mask of the utterances, and ``preds_b``) the difference in differences: (A - B on the
    utterances inside) - (A - B on the rest), both parts from the same seed and dialogue draws.

    Seeds are crossed with dialogues, not nested in them (every seed is scored on the same test sample), so
    one dialogue draw serves all drawn seeds: independent draws per seed would average the test sample's
    noise away. A and B are paired: row i of ``preds_a`` and ``preds_b`` is the same training seed (the same
    training sample) and the same seed draw serves both; an arm scored once (one row: an untuned model) has
    no seed variation and only its dialogues are resampled. With one row in every arm the interval covers
    the test dialogues only, and ``covers`` says so. Percentile interval; vectorised; deterministic in
    ``seed``."""
    _check_metric(metric)
    gold, n_labels = np.asarray(gold, dtype=int), len(labels)
    group_index, n_groups = _dialogue_index(groups)
    if inside is not None and preds_b is None:
        raise ValueError("A difference in differences needs two arms (preds_b).")
    everything = np.ones(len(gold), dtype=bool)
    parts = (
        [(everything, 1.0)]
        if inside is None
        else [(np.asarray(inside, dtype=bool), 1.0), (~np.asarray(inside, dtype=bool), -1.0)]
    )
    arms = []  # (confusions, sign): the estimate is the signed sum of the arms' means over seeds
    for rows, sign in parts:
        arms.append((_seed_confusions(gold, preds_a, n_labels, group_index, n_groups, rows), sign))
        if preds_b is not None:
            arms.append((_seed_confusions(gold, preds_b, n_labels, group_index, n_groups, rows), -sign))
    several = {len(c) for c, _ in arms if len(c) > 1}
    if len(several) > 1:
        raise ValueError(f"Paired arms need the same seeds; got {sorted(len(c) for c, _ in arms)} runs.")
    n_seeds = several.pop() if several else 1

    def value(seed_w: np.ndarray, dialogue_w: np.ndarray) -> np.ndarray:
        ones = np.ones((len(seed_w), 1))
        return sum(
            sign * _mean_over_seeds(c, seed_w if len(c) > 1 else ones, dialogue_w, n_labels, metric)
            for c, sign in arms
        )

    per_seed = sum(
        sign * metric_from_confusion(c.sum(axis=1).reshape(len(c), n_labels, n_labels + 1), metric)
        for c, sign in arms
    )
    estimate = float(value(np.ones((1, n_seeds)), np.ones((1, n_groups)))[0])
    rng = np.random.default_rng(seed)
    distribution = np.concatenate([
        value(_draws(n_seeds, size, rng) if n_seeds > 1 else np.ones((size, 1)), _draws(n_groups, size, rng))
        for size in _batches(n_resamples, max(n_seeds, 1) * max(n_groups, n_labels * (n_labels + 1)))
    ])  # fmt: skip
    low, high = np.quantile(distribution, [(1 - confidence) / 2, (1 + confidence) / 2])
    return SeedDialogueEstimate(
        metric, estimate, float(low), float(high), confidence,
        SEEDS_AND_DIALOGUES if n_seeds > 1 else DIALOGUES_ONLY, tuple(float(v) for v in np.atleast_1d(per_seed)),
        n_seeds, len(gold), n_groups, HIERARCHICAL_METHOD, n_resamples, seed,
    )  # fmt: skip


def seed_dialogue_statistic(
    gold: Sequence[int],
    systems: Sequence[Sequence[Sequence[int]]],
    labels: Sequence[str],
    groups: Sequence[Any],
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    name: str = "statistic",
    resample_seeds: bool = True,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> SeedDialogueEstimate:
    """Any statistic of several systems' per-seed confusion counts with the interval of
    ``seed_dialogue_bootstrap`` (seeds with replacement, then the test dialogues with replacement; one
    dialogue draw for every system and seed). For what a metric name cannot say: a score computed another
    way (swapped F1), the best of the seeds, the checkpoint a test score would choose.

    ``systems``: (S, R, N) predictions: S systems (checkpoints, or one system scored two ways), each with one
    row per training seed (the same R seeds, in the same order, in every system), on the same N utterances.
    ``statistic(counts, seed_weights)``: counts (B, S, R, L, L + 1) confusion counts of every system and seed
    on the resampled dialogues (rows gold, columns predicted, the last no label), seed_weights (B, R) how often
    each seed was drawn; returns (B,). ``per_seed`` holds the statistic on each seed alone.
    ``resample_seeds`` False keeps the seeds as they are (weights 1) and resamples the dialogues only, for a
    statistic about these seeds (the best of them: drawing a seed twice would ask about fewer seeds)."""
    gold, n_labels = np.asarray(gold, dtype=int), len(labels)
    group_index, n_groups = _dialogue_index(groups)
    every = np.ones(len(gold), dtype=bool)
    counts = np.stack([_seed_confusions(gold, p, n_labels, group_index, n_groups, every) for p in systems])
    if counts.ndim != 4:
        raise ValueError(f"systems must be (systems, seeds, utterances); got {np.shape(systems)}.")
    n_systems, n_seeds = counts.shape[:2]

    def value(seed_w: np.ndarray, dialogue_w: np.ndarray) -> np.ndarray:
        pooled = np.einsum("bg,srgk->bsrk", dialogue_w, counts)
        return statistic(pooled.reshape(len(dialogue_w), n_systems, n_seeds, n_labels, n_labels + 1), seed_w)

    whole = np.ones((1, n_groups))
    estimate = float(value(np.ones((1, n_seeds)), whole)[0])
    per_seed = tuple(float(value(np.eye(n_seeds)[[r]], whole)[0]) for r in range(n_seeds))
    rng, several = np.random.default_rng(seed), resample_seeds and n_seeds > 1
    distribution = np.concatenate([
        value(_draws(n_seeds, size, rng) if several else np.ones((size, n_seeds)), _draws(n_groups, size, rng))
        for size in _batches(n_resamples, n_systems * n_seeds * max(n_groups, n_labels * (n_labels + 1)))
    ])  # fmt: skip
    low, high = np.quantile(distribution, [(1 - confidence) / 2, (1 + confidence) / 2])
    return SeedDialogueEstimate(
        name, estimate, float(low), float(high), confidence,
        SEEDS_AND_DIALOGUES if several else DIALOGUES_ONLY, per_seed, n_seeds if several else 1, len(gold),
        n_groups, HIERARCHICAL_METHOD if several else "percentile; the test dialogues with replacement",
        n_resamples, seed,
    )  # fmt: skip


def _batches(n_resamples: int, width: int) -> list[int]:
    # Resamples in batches that keep the pooled confusions near 100 MB, however many seeds and dialogues.
    size = max(1, min(n_resamples, 20_000_000 // max(width * 8, 1)))
    return [min(size, n_resamples - start) for start in range(0, n_resamples, size)]


# ------------------------------------------------------------------------------- prediction frames

# example_id -> dialogue, one rule per id layout the package writes (dialoguellm.data).
DIALOGUE_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("MELD dia12_utt3 -> dia12", re.compile(r"^(dia\d+)_utt\d+$")),
    ("EmoryNLP s01_e02_c03_u004 -> s01_e02_c03", re.compile(r"^(s\d+_e\d+_c\d+)_u\d+$")),
    ("EmoryNLP TSV copy train_scene0003_u005 -> train_scene0003", re.compile(r"^(\w+_scene\d+)_u\d+$")),
    ("IEMOCAP Ses01F_impro01_F000 -> Ses01F_impro01", re.compile(r"^(Ses\d+[FM]_\w+?)_[FM]\d+$")),
)


def dialogue_of(example_id: str) -> str | None:
    """The dialogue an utterance id belongs to, by ``DIALOGUE_RULES`` (MELD ``dia12_utt3`` -> ``dia12``,
    EmoryNLP ``s01_e02_c03_u004`` -> ``s01_e02_c03``, IEMOCAP ``Ses01F_impro01_F000`` ->
    ``Ses01F_impro01``); None when no rule matches."""
    for _, pattern in DIALOGUE_RULES:
        match = pattern.match(str(example_id))
        if match:
            return match.group(1)
    return None


def frame_dialogues(frame: pd.DataFrame, source: str = "predictions") -> np.ndarray:
    """The dialogue of each row: the ``dialogue_id`` column when present, else ``dialogue_of(example_id)``.

    ``source`` names the frame in errors (a file path)."""
    if "dialogue_id" in frame:
        if frame["dialogue_id"].isna().any():
            row = int(np.flatnonzero(frame["dialogue_id"].isna().to_numpy())[0])
            raise ValueError(
                f"{source}, data row {row + 1}: empty dialogue_id; fill it in or drop the column."
            )
        return frame["dialogue_id"].astype(str).to_numpy()
    if "example_id" not in frame:
        raise ValueError(f"{source}: no dialogue_id or example_id column; add the dialogue of each row.")
    dialogues = [dialogue_of(e) for e in frame["example_id"]]
    for row, dialogue in enumerate(dialogues):
        if dialogue is None:
            rules = "; ".join(name for name, _ in DIALOGUE_RULES)
            raise ValueError(
                f"{source}, data row {row + 1}: example_id {frame['example_id'].iloc[row]!r} names no dialogue "
                f"(known layouts: {rules}). Add a dialogue_id column to the file, or pass groups= to "
                "metric_interval/paired_difference."
            )
    return np.asarray(dialogues)


def frame_labels(frame: pd.DataFrame, source: str = "predictions") -> tuple[str, ...]:
    """The label vocabulary of a prediction frame, in label_id order: the ``dataset`` column's corpus
    (``dialoguellm.labels``), else the ``p_<label>`` columns of a label-scoring frame."""
    if "dataset" in frame and len(frame):
        corpora = sorted(set(frame["dataset"].astype(str)))
        if len(corpora) > 1:
            raise ValueError(
                f"{source}: rows of several corpora ({', '.join(corpora)}); score one corpus at a time "
                "(filter on the dataset column)."
            )
        if corpora[0] in LABELS:
            return LABELS[corpora[0]]
    from_scores = tuple(c[2:] for c in frame.columns if c.startswith("p_"))
    if from_scores:
        return from_scores
    raise ValueError(
        f"{source}: cannot tell the labels (no known corpus in a dataset column, no p_<label> columns); "
        "pass labels to metric_interval/paired_difference directly."
    )


def _ids(frame: pd.DataFrame, source: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("gold_id", "pred_id") if c not in frame]
    if missing:
        raise ValueError(
            f"{source}: missing column(s) {', '.join(missing)}; expected a prediction file as written by "
            "dialoguellm.evaluate.save_predictions (example_id, dataset, gold_id, pred_id, ...)."
        )
    return frame["gold_id"].to_numpy(dtype=int), frame["pred_id"].to_numpy(dtype=int)


def frame_interval(
    frame: pd.DataFrame, metric: str = "weighted_f1", source: str = "predictions", **options: Any
) -> Interval:
    """``metric_interval`` of a prediction frame (dialogues from ``frame_dialogues``). ``options``:
    confidence, n_resamples, seed, method."""
    gold, pred = _ids(frame, source)
    return metric_interval(
        gold, pred, frame_labels(frame, source), frame_dialogues(frame, source), metric, **options
    )


def align_frames(
    frame_a: pd.DataFrame, frame_b: pd.DataFrame, sources: tuple[str, str] = ("A", "B")
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two frames on the same utterances in the same order (B reordered to A's example_id order).

    Raises ValueError naming what differs: a missing example_id column, repeated ids, ids in one file
    only, different gold labels or different label vocabularies."""
    for frame, source in ((frame_a, sources[0]), (frame_b, sources[1])):
        if "example_id" not in frame:
            raise ValueError(f"{source}: no example_id column; paired comparisons match rows by example_id.")
        repeated = frame["example_id"][frame["example_id"].duplicated()]
        if len(repeated):
            raise ValueError(
                f"{source}: example_id {repeated.iloc[0]!r} occurs more than once ({len(repeated)} repeats); "
                "one row per utterance is needed to pair two systems."
            )
    ids_a, ids_b = frame_a["example_id"].astype(str), frame_b["example_id"].astype(str)
    only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
    if only_a or only_b:
        raise ValueError(
            f"{sources[0]} and {sources[1]} are not scored on the same utterances: {len(only_a)} example_id(s) "
            f"only in {sources[0]} (first: {only_a[:3]}), {len(only_b)} only in {sources[1]} (first: {only_b[:3]}). "
            "Score both systems on the same split and sample."
        )
    if frame_labels(frame_a, sources[0]) != frame_labels(frame_b, sources[1]):
        raise ValueError(
            f"{sources[0]} and {sources[1]} use different label vocabularies; compare one corpus."
        )
    aligned_b = frame_b.set_index(ids_b).loc[ids_a.to_numpy()].reset_index(drop=True)
    aligned_a = frame_a.reset_index(drop=True)
    differs = aligned_a["gold_id"].to_numpy() != aligned_b["gold_id"].to_numpy()
    if differs.any():
        row = int(np.flatnonzero(differs)[0])
        raise ValueError(
            f"{sources[0]} and {sources[1]} disagree on the gold label of example_id {ids_a.iloc[row]!r} "
            f"({int(differs.sum())} utterance(s) in all); they were not made from the same data."
        )
    return aligned_a, aligned_b


def frame_paired_difference(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    metric: str = "weighted_f1",
    sources: tuple[str, str] = ("A", "B"),
    **options: Any,
) -> PairedDifference:
    """``paired_difference`` of two prediction frames, matched on example_id (``align_frames``)."""
    aligned_a, aligned_b = align_frames(frame_a, frame_b, sources)
    gold, pred_a = _ids(aligned_a, sources[0])
    _, pred_b = _ids(aligned_b, sources[1])
    return paired_difference(
        gold,
        pred_a,
        pred_b,
        frame_labels(aligned_a, sources[0]),
        frame_dialogues(aligned_a, sources[0]),
        metric=metric,
        **options,
    )


# ------------------------------------------------------------------------------------ command line


def interval_table(
    paths: Sequence[str | Path], metrics: Sequence[str] = METRICS, **options: Any
) -> pd.DataFrame:
    """One row per file and metric: file, metric, n, dialogues, estimate, low, high and ``interval`` text."""
    rows = []
    for path in paths:
        frame = read_predictions(path)
        for metric in metrics:
            result = frame_interval(frame, metric, source=str(path), **options)
            rows.append({"file": str(path), **result.as_dict(), "interval": str(result)})
    return pd.DataFrame(rows)


def paired_table(
    path_a: str | Path, path_b: str | Path, metrics: Sequence[str] = METRICS, **options: Any
) -> pd.DataFrame:
    """One row per metric: A, B, A - B with its interval, p-value and verdict."""
    frame_a, frame_b = read_predictions(path_a), read_predictions(path_b)
    rows = []
    for metric in metrics:
        result = frame_paired_difference(frame_a, frame_b, metric, (str(path_a), str(path_b)), **options)
        rows.append(
            {"file_a": str(path_a), "file_b": str(path_b), **result.as_dict(), "interval": str(result)}
        )
    return pd.DataFrame(rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dialoguellm.stats",
        description="Bootstrap intervals (resampling whole dialogues) and paired tests for prediction files.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    interval = commands.add_parser("interval", help="interval of each metric of one or more prediction files")
    interval.add_argument(
        "files", nargs="+", help=f"{predictions_name(split_stem('<split>', '<corpus>'))} file(s)"
    )
    paired = commands.add_parser("paired", help="A - B on the same utterances: paired interval and p-value")
    paired.add_argument("file_a")
    paired.add_argument("file_b")
    for sub in (interval, paired):
        sub.add_argument("--metric", action="append", choices=METRICS, help="repeatable; default: all three")
        sub.add_argument("--confidence", type=float, default=0.95)
        sub.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
        sub.add_argument("--seed", type=int, default=DEFAULT_SEED)
        sub.add_argument("--method", default="BCa", choices=("BCa", "percentile", "basic"))
        sub.add_argument("--json", metavar="OUT", help="also write the results to this JSON file")
    return parser


def _printable(table: pd.DataFrame, command: str) -> pd.DataFrame:
    ci = f"[{100 * table['confidence'].iloc[0]:g}% CI]"
    if command == "interval":
        shown = table[["file", "metric", "n", "n_groups", "interval"]].copy()
        shown["file"] = [Path(f).name for f in shown["file"]]
        return shown.rename(columns={"n_groups": "dialogues", "interval": f"estimate {ci}"})
    shown = table[["metric", "n", "n_groups", "interval", "p_value", "verdict"]].copy()
    shown.insert(1, "A", [f"{100 * v:.1f}" for v in table["a"]])
    shown.insert(2, "B", [f"{100 * v:.1f}" for v in table["b"]])
    shown["p_value"] = [f"{p:.4f}" for p in shown["p_value"]]
    return shown.rename(columns={"n_groups": "dialogues", "interval": f"A - B {ci}"})


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    args = _parser().parse_args(argv)
    options = {
        "confidence": args.confidence,
        "n_resamples": args.resamples,
        "seed": args.seed,
        "method": args.method,
    }
    metrics = args.metric or list(METRICS)
    try:
        if args.command == "interval":
            table = interval_table(args.files, metrics, **options)
        else:
            table = paired_table(args.file_a, args.file_b, metrics, **options)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "paired":
        print(f"A = {args.file_a}\nB = {args.file_b}")
    print(_printable(table, args.command).to_string(index=False))
    if args.json:
        record = {
            "command": ["python", "-m", "dialoguellm.stats", *(sys.argv[1:] if argv is None else argv)],
            "options": options,
        }
        write_json(args.json, {**record, "results": table.to_dict(orient="records")})
    return 0


if __name__ == "__main__":
    sys.exit(main())

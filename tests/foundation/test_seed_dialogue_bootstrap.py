"""stats.seed_dialogue_bootstrap: the interval over training seeds and test dialogues (property tests with
hypothesis, and what each source of variation does to it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dialoguellm import stats
from dialoguellm.metrics import classification_metrics

LABELS = ("a", "b", "c")


@st.composite
def scored_seeds(draw, max_seeds: int = 4):
    """(gold, predictions of A per seed, of B per seed, dialogues): 2..4 seeds, 4..12 dialogues."""
    n_seeds = draw(st.integers(2, max_seeds))
    n_dialogues = draw(st.integers(4, 12))
    turns = draw(st.lists(st.integers(1, 4), min_size=n_dialogues, max_size=n_dialogues))
    groups = np.repeat(np.arange(n_dialogues), turns)
    n = len(groups)
    labels = st.lists(st.integers(0, 2), min_size=n, max_size=n)
    gold = np.array(draw(labels))
    preds = [np.array([draw(labels) for _ in range(n_seeds)]) for _ in range(2)]
    return gold, preds[0], preds[1], groups


@settings(max_examples=40, deadline=None)
@given(scored_seeds(), st.sampled_from(stats.METRICS))
def test_the_estimate_is_the_mean_over_seeds_and_the_difference_of_the_means(data, metric):
    gold, a, b, groups = data
    per_seed = [classification_metrics(gold, p, LABELS)[metric] for p in a]
    own = stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, metric=metric, n_resamples=200)
    assert own.estimate == pytest.approx(np.mean(per_seed)) and own.per_seed == pytest.approx(per_seed)
    diff = stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, b, metric=metric, n_resamples=200)
    other = [classification_metrics(gold, p, LABELS)[metric] for p in b]
    assert diff.estimate == pytest.approx(np.mean(per_seed) - np.mean(other))
    assert diff.low <= diff.high and own.covers == stats.SEEDS_AND_DIALOGUES


@settings(max_examples=40, deadline=None)
@given(scored_seeds())
def test_swapping_the_arms_mirrors_the_difference_and_an_arm_against_itself_is_exactly_zero(data):
    gold, a, b, groups = data
    ab = stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, b, n_resamples=300, seed=3)
    ba = stats.seed_dialogue_bootstrap(gold, b, LABELS, groups, a, n_resamples=300, seed=3)
    assert (ba.estimate, ba.low, ba.high) == pytest.approx((-ab.estimate, -ab.high, -ab.low))
    same = stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, a, n_resamples=300)
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0) and same.verdict == stats.NO_DIFFERENCE


@settings(max_examples=40, deadline=None)
@given(scored_seeds(), st.integers(0, 2**16))
def test_the_same_data_twice_over_gives_the_same_interval(data, seed):
    """Metrics of a confusion matrix are invariant to scaling it: every dialogue's utterances twice over
    (same predictions) give every resample the same value, so the same estimate and interval."""
    gold, a, _, groups = data
    base = stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, n_resamples=300, seed=seed)
    doubled = stats.seed_dialogue_bootstrap(
        np.tile(gold, 2), np.tile(a, 2), LABELS, np.tile(groups, 2), n_resamples=300, seed=seed
    )
    assert (doubled.estimate, doubled.low, doubled.high) == pytest.approx(
        (base.estimate, base.low, base.high)
    )


@settings(max_examples=100, deadline=None)
@given(scored_seeds(), st.sampled_from(stats.METRICS))
def test_the_interval_contains_the_estimate(data, metric):
    gold, a, b, groups = data
    for result in (
        stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, metric=metric, n_resamples=500),
        stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, b, metric=metric, n_resamples=500),
    ):
        assert result.low <= result.estimate <= result.high


def _scored(rng, n_dialogues, turns, n_seeds, seed_spread):
    groups = np.repeat(np.arange(n_dialogues), turns)
    gold = rng.integers(0, 3, len(groups))
    preds = []
    for s in range(n_seeds):  # each seed right with its own probability: the spread between seeds
        right = rng.random(len(gold)) < 0.6 + seed_spread * (s - (n_seeds - 1) / 2)
        preds.append(np.where(right, gold, (gold + 1) % 3))
    return gold, np.array(preds), groups


def test_variation_between_seeds_widens_the_interval_and_one_seed_covers_only_dialogues():
    rng = np.random.default_rng(0)
    gold, preds, groups = _scored(rng, 60, 5, 5, 0.0)
    _, spread, _ = _scored(np.random.default_rng(0), 60, 5, 5, 0.08)
    calm = stats.seed_dialogue_bootstrap(gold, preds, LABELS, groups, metric="accuracy", n_resamples=2000)
    wild = stats.seed_dialogue_bootstrap(gold, spread, LABELS, groups, metric="accuracy", n_resamples=2000)
    assert wild.high - wild.low > 1.3 * (calm.high - calm.low)
    one = stats.seed_dialogue_bootstrap(gold, preds[:1], LABELS, groups, metric="accuracy", n_resamples=2000)
    assert one.covers == stats.DIALOGUES_ONLY and one.seeds == 1


def test_seeds_are_paired_and_a_seed_count_mismatch_is_refused():
    rng = np.random.default_rng(1)
    gold, preds, groups = _scored(rng, 30, 4, 3, 0.1)
    # B = A with one more right answer per seed: every seed's difference is positive and the same size, so
    # pairing by seed removes the seed spread from the difference.
    better = preds.copy()
    better[:, np.flatnonzero(preds[0] != gold)[:3]] = gold[np.flatnonzero(preds[0] != gold)[:3]]
    d = stats.seed_dialogue_bootstrap(
        gold, better, LABELS, groups, preds, metric="accuracy", n_resamples=2000
    )
    assert d.estimate > 0 and d.high - d.low < 0.05
    with pytest.raises(ValueError, match="same seeds"):
        stats.seed_dialogue_bootstrap(gold, preds, LABELS, groups, preds[:2])


@settings(max_examples=30, deadline=None)
@given(scored_seeds(), st.data())
def test_the_difference_in_differences_is_the_inside_difference_minus_the_outside_one(data, draw):
    gold, a, b, groups = data
    inside = np.array(draw.draw(st.lists(st.booleans(), min_size=len(gold), max_size=len(gold))))
    if inside.all() or not inside.any():
        inside[0], inside[-1] = True, False
    did = stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, b, inside=inside, n_resamples=200)

    def mean_difference(mask):
        return np.mean([
            classification_metrics(gold[mask], pa[mask], LABELS)["weighted_f1"]
            - classification_metrics(gold[mask], pb[mask], LABELS)["weighted_f1"]
            for pa, pb in zip(a, b, strict=True)
        ])  # fmt: skip

    assert did.estimate == pytest.approx(mean_difference(inside) - mean_difference(~inside))
    assert did.low <= did.high and len(did.per_seed) == len(a)
    with pytest.raises(ValueError, match="needs two arms"):
        stats.seed_dialogue_bootstrap(gold, a, LABELS, groups, inside=inside)

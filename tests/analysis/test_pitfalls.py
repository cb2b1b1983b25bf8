"""dialoguellm.analysis.pitfalls: the field's evaluation practices against the package's own, as pure functions."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from dialoguellm import stats
from dialoguellm.analysis import pitfalls
from dialoguellm.labels import LABELS, normalised_label_names
from dialoguellm.prompts.builder import context_of

MELD = list(LABELS["meld"])
REPO = Path(__file__).resolve().parents[2]
FAST = {"n_resamples": 400, "seed": 1}


def pairs_from_confusion(matrix: np.ndarray) -> tuple[list[int], list[int]]:
    """gold and pred lists whose confusion matrix (rows gold, columns pred) is ``matrix``."""
    gold, pred = [], []
    for g, row in enumerate(matrix):
        for p, count in enumerate(row):
            gold += [g] * int(count)
            pred += [p] * int(count)
    return gold, pred


@st.composite
def symmetric_confusions(draw, n_labels: int = 4) -> np.ndarray:
    upper = np.array(draw(st.lists(st.integers(0, 6), min_size=n_labels**2, max_size=n_labels**2)))
    upper = upper.reshape(n_labels, n_labels)
    matrix = np.triu(upper) + np.triu(upper, 1).T
    if matrix.sum() == 0:
        matrix[0, 0] = 1
    return matrix


# ------------------------------------------------------------------------------------ swapped F1


@settings(max_examples=60, deadline=None)
@given(symmetric_confusions())
def test_swapped_f1_equals_correct_f1_when_the_confusion_matrix_is_symmetric(matrix):
    gold, pred = pairs_from_confusion(matrix)
    labels = [f"l{i}" for i in range(len(matrix))]
    assert pitfalls.swapped_f1(gold, pred, labels) == pytest.approx(pitfalls.correct_f1(gold, pred, labels))


def test_swapped_f1_rewards_over_predicting_the_majority_class():
    # Gold: 6 neutral, 2 joy, 2 anger. The system says neutral for everything but one joy.
    gold = [0] * 6 + [1] * 2 + [3] * 2
    pred = [0] * 6 + [1, 0] + [0, 0]
    correct = pitfalls.correct_f1(gold, pred, MELD)
    swapped = pitfalls.swapped_f1(gold, pred, MELD)
    assert correct == pytest.approx(f1_score(gold, pred, average="weighted"))
    assert swapped == pytest.approx(f1_score(pred, gold, average="weighted"))
    assert swapped > correct


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(-1, 6), st.integers(0, 4)), min_size=1, max_size=60))
def test_swapped_f1_from_confusion_counts_equals_sklearn_swapped(rows):
    gold, pred, dialogue = (list(column) for column in zip(*rows, strict=True))
    counts = stats.dialogue_confusions(gold, pred, len(MELD), dialogue).sum(axis=0)
    from_counts = float(pitfalls.swapped_weighted_f1_from_confusion(counts))
    assert from_counts == pytest.approx(pitfalls.swapped_f1(gold, pred, MELD))


def test_swapped_f1_difference_is_paired_and_holds_its_point_estimate():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 8)
    gold = rng.choice(7, len(groups), p=[0.5, 0.2, 0.1, 0.08, 0.06, 0.03, 0.03])
    pred = np.where(rng.random(len(gold)) < 0.5, gold, 0)  # half right, the rest "neutral"
    gap = pitfalls.swapped_f1_difference(gold, pred, MELD, groups, **FAST)
    # recomputed with sklearn: f1_score(pred, gold) - f1_score(gold, pred)
    expected = f1_score(pred, gold, labels=range(7), average="weighted", zero_division=0) - f1_score(
        gold, pred, labels=range(7), average="weighted", zero_division=0
    )
    assert gap.estimate == pytest.approx(expected)
    assert gap.low <= gap.estimate <= gap.high
    assert gap.estimate > 0 and gap.verdict == "A higher"
    assert (gap.n, gap.n_groups, gap.covers) == (len(gold), 40, stats.DIALOGUES_ONLY)


def test_a_perfect_system_shows_no_swap_effect():
    groups = np.repeat(np.arange(10), 5)
    gold = np.arange(50) % 7
    gap = pitfalls.swapped_f1_difference(gold, gold, MELD, groups, **FAST)
    assert (gap.estimate, gap.low, gap.high) == (0.0, 0.0, 0.0)
    assert gap.verdict == stats.NO_DIFFERENCE


# ---------------------------------------------------------------------------- selection on test


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=12))
def test_choosing_on_test_is_never_below_choosing_on_dev_on_test(scores):
    dev, test = (list(column) for column in zip(*scores, strict=True))
    _, by_test = pitfalls.select_checkpoint(dev, test, by="test")
    index, by_dev = pitfalls.select_checkpoint(dev, test, by="dev")
    assert by_test >= by_dev
    assert by_test == max(test)
    assert index == dev.index(max(dev))  # earliest of tied best dev scores


def test_select_checkpoint_refuses_mismatched_or_unknown_input():
    with pytest.raises(ValueError, match="one per checkpoint"):
        pitfalls.select_checkpoint([0.1, 0.2], [0.3])
    with pytest.raises(ValueError, match="by must be"):
        pitfalls.select_checkpoint([0.1], [0.3], by="train")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=10))
def test_best_of_seeds_is_never_below_the_mean(scores):
    assert pitfalls.best_of_seeds(scores) >= pitfalls.mean_over_seeds(scores) - 1e-12
    if len(set(scores)) == 1:
        assert pitfalls.best_of_seeds(scores) == pytest.approx(pitfalls.mean_over_seeds(scores))


def test_best_of_seeds_needs_a_score():
    with pytest.raises(ValueError, match="one score per seed"):
        pitfalls.best_of_seeds([])


def synthetic_seeds(n_seeds: int, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(30), 6)
    gold = rng.choice(7, len(groups))
    preds = [
        np.where(rng.random(len(gold)) < 0.4 + 0.1 * s, gold, rng.choice(7, len(gold)))
        for s in range(n_seeds)
    ]
    return gold, preds, groups


def test_best_of_seeds_difference_is_max_minus_mean_and_never_negative():
    gold, preds, groups = synthetic_seeds(3)
    gap = pitfalls.best_of_seeds_difference(gold, preds, MELD, groups, **FAST)
    f1s = [pitfalls.correct_f1(gold, p, MELD) for p in preds]
    assert gap.estimate == pytest.approx(max(f1s) - np.mean(f1s))
    assert 0 <= gap.low <= gap.estimate <= gap.high
    assert gap.covers == stats.DIALOGUES_ONLY  # these seeds' best: only the dialogues are resampled


def test_selection_on_test_gap_is_zero_when_dev_picks_the_test_best():
    gold, preds, groups = synthetic_seeds(3)
    f1s = [pitfalls.correct_f1(gold, p, MELD) for p in preds]
    agrees = pitfalls.selection_on_test_difference(gold, preds, f1s, MELD, groups, **FAST)
    assert agrees.estimate == pytest.approx(0.0)
    assert agrees.low >= 0.0  # each resample's test choice is at least dev's fixed choice
    disagrees = pitfalls.selection_on_test_difference(gold, preds, [1.0, 0.0, 0.0], MELD, groups, **FAST)
    assert disagrees.estimate == pytest.approx(max(f1s) - f1s[0])
    with pytest.raises(ValueError, match="one each"):
        pitfalls.selection_on_test_difference(gold, preds, [1.0, 0.0], MELD, groups, **FAST)


def test_selection_over_seeds_and_checkpoints_takes_the_test_best_run():
    gold, preds, groups = synthetic_seeds(4)
    # 2 checkpoints x 2 seeds; dev prefers checkpoint 0 of seed 0, test the last prediction row
    grid = np.array([[preds[0], preds[1]], [preds[2], preds[3]]])
    f1 = np.array([[pitfalls.correct_f1(gold, p, MELD) for p in row] for row in grid])
    dev = [[0.9, 0.1], [0.2, 0.3]]
    within = pitfalls.selection_on_test_difference(gold, grid, dev, MELD, groups, **FAST)
    assert within.estimate == pytest.approx(np.mean(f1.max(axis=0) - f1[[0, 1], [0, 1]]))
    over = pitfalls.selection_over_runs_difference(gold, grid, dev, MELD, groups, **FAST)
    assert over.estimate == pytest.approx(f1.max() - f1[0, 0])
    assert over.low >= 0 and over.covers == stats.DIALOGUES_ONLY


# ------------------------------------------------------------------------------ text to label

short_words = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=pitfalls.INSTRUCTERC_MAX_SPAN
)


@settings(max_examples=100, deadline=None)
@given(st.lists(short_words, min_size=1, max_size=8, unique=True), st.data())
def test_edit_distance_mapping_returns_an_exact_label_unchanged(labels, data):
    i = data.draw(st.integers(0, len(labels) - 1))
    assert pitfalls.edit_distance_label(labels[i], labels) == i


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_edit_distance_mapping_gives_every_text_a_label(text):
    assert 0 <= pitfalls.edit_distance_label(text, MELD) < len(MELD)


def test_edit_distance_mapping_follows_instructerc():
    labels = ["neutral", "surprise", "fear", "sad", "joyful", "disgust", "angry"]  # InstructERC's MELD words
    # The first label word in the text wins, whatever follows it.
    assert pitfalls.edit_distance_label("I'd say joyful, not angry", labels) == 4
    # The longest label at one position ("sad" inside "sadness" is also a label word start).
    assert pitfalls.edit_distance_label("sadness", ["sad", "sadness"]) == 1
    # Case-sensitive: "Angry" is no span match, so the nearest label by edit distance is taken.
    assert pitfalls.edit_distance_label("Angry", labels) == 6
    # No emotion named at all still gets one: the label closest to the whole text.
    assert pitfalls.edit_distance_label("fearful", labels) == labels.index("fear")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=12), st.text(max_size=12), st.text(max_size=12))
def test_levenshtein_is_a_distance(a, b, c):
    assert pitfalls.levenshtein(a, a) == 0
    assert pitfalls.levenshtein(a, b) == pitfalls.levenshtein(b, a)
    assert pitfalls.levenshtein(a, c) <= pitfalls.levenshtein(a, b) + pitfalls.levenshtein(b, c)
    assert abs(len(a) - len(b)) <= pitfalls.levenshtein(a, b) <= max(len(a), len(b))


def test_levenshtein_known_values():
    assert pitfalls.levenshtein("kitten", "sitting") == 3
    assert pitfalls.levenshtein("", "fear") == 4
    assert pitfalls.levenshtein("anger", "angry") == 2


def test_random_fallback_only_fills_unparsed_answers_and_depends_on_the_seed():
    parsed = [0, None, 3, -1, None, 6] * 20
    filled = pitfalls.random_fallback(parsed, MELD, np.random.default_rng(0))
    assert [f for f, p in zip(filled, parsed, strict=True) if p is not None and p >= 0] == [
        p for p in parsed if p is not None and p >= 0
    ]
    assert all(0 <= f < len(MELD) for f in filled)
    again = pitfalls.random_fallback(parsed, MELD, np.random.default_rng(0))
    other = pitfalls.random_fallback(parsed, MELD, np.random.default_rng(1))
    assert filled == again and filled != other


def test_random_fallback_scores_one_weighted_f1_per_sampling_seed():
    gold = [0, 1, 2, 3] * 10
    parsed = [g if i % 2 else None for i, g in enumerate(gold)]
    scores = pitfalls.random_fallback_scores(gold, parsed, MELD, seeds=[0, 1, 2, 3])
    assert len(scores) == 4 and len(set(scores)) > 1
    # A random draw can only add correct answers, so accuracy never falls below counting them wrong (the
    # package); weighted F1 can fall, because each wrong draw lowers another class's precision.
    counted_wrong = [-1 if p is None else p for p in parsed]
    for seed in range(4):
        filled = pitfalls.random_fallback(parsed, MELD, np.random.default_rng(seed))
        assert np.mean(np.equal(filled, gold)) >= np.mean(np.equal(counted_wrong, gold))
    assert min(scores) < pitfalls.correct_f1(gold, counted_wrong, MELD) < max(scores)


# ---------------------------------------------------------------------------------- prompts


def test_truncation_counts_cut_only_sequences_longer_than_the_cutoff():
    counts = pitfalls.truncation_counts([10, 256, 257, 400], cutoff=256)
    assert counts == {"n": 4, "cutoff": 256, "cut": 2, "cut_share": 0.5, "max_tokens": 400}
    assert pitfalls.truncation_counts([], cutoff=256)["cut"] == 0
    with pytest.raises(ValueError, match="positive"):
        pitfalls.truncation_counts([1], cutoff=0)


def dialogue(n: int) -> list[dict]:
    turns = [{"utterance_id": f"u{t}", "turn": t, "text": f"line {t}"} for t in range(n)]
    return turns[::-1]  # any order: the windows sort by turn


def test_future_turns_are_the_next_k_in_order():
    turns = dialogue(8)
    row = next(r for r in turns if r["turn"] == 3)
    assert [r["turn"] for r in pitfalls.future_turns(row, turns, 2)] == [4, 5]
    assert [r["turn"] for r in pitfalls.future_turns(row, turns, 10)] == [4, 5, 6, 7]
    assert pitfalls.future_turns(row, turns, 0) == []
    with pytest.raises(ValueError, match="integer >= 0"):
        pitfalls.future_turns(row, turns, -1)


def test_surrounding_turns_is_the_bioserc_window_around_the_target():
    turns = sorted(dialogue(12), key=lambda r: r["turn"])
    row = turns[6]
    past, future = pitfalls.surrounding_turns(row, turns)
    assert [r["turn"] for r in past] == [1, 2, 3, 4, 5]
    assert [r["turn"] for r in future] == [7, 8, 9, 10, 11]
    assert past == context_of(row, turns, pitfalls.BIOSERC_WINDOW)
    assert pitfalls.surrounding_turns(row, turns, past=1, future=0) == (context_of(row, turns, 1), [])


def test_the_real_label_words_fit_instructerc_span_matching():
    # Every label word of the corpora is short enough for the span matcher (else only edit distance maps it).
    for corpus in LABELS:
        for word in (*LABELS[corpus], *normalised_label_names(corpus)):
            assert len(word) <= pitfalls.INSTRUCTERC_MAX_SPAN, (corpus, word)


# ------------------------------------------------------------------- the committed truncation counts

TRUNCATION = REPO / "benchmarks" / "results" / "truncation_counts.json"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not TRUNCATION.is_file(), reason="benchmarks/truncation_counts.py has not been run")
def test_committed_truncation_counts_grow_with_the_context_and_name_their_command():
    result = json.loads(TRUNCATION.read_text())
    assert result["command"] == "dialoguellm benchmark truncation_counts" and result["cutoff"] == 256
    for by_z in result["by_k_shot_and_context_turns"].values():
        for corpus in ("meld", "emorynlp"):
            for split in ("train", "dev", "test"):
                cut = [by_z[z][corpus][split]["cut"] for z in ("0", "1", "2", "3", "all")]
                assert cut == sorted(cut), (corpus, split, cut)  # more turns, never fewer cut


@pytest.mark.slow
@pytest.mark.skipif(not TRUNCATION.is_file(), reason="benchmarks/truncation_counts.py has not been run")
def test_one_committed_truncation_count_recomputes_from_the_real_corpus():
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_corpora
    from dialoguellm.model.loading import load_tokenizer

    bench = load_benchmark("truncation_counts")
    tokenizer = load_tokenizer(load_config("paper", overrides=bench.profile_overrides(2, 0)))
    corpora = load_corpora(["emorynlp"])
    counted = bench.split_counts(tokenizer, corpora, "emorynlp", "test", 2, 0, 256)
    committed = json.loads(TRUNCATION.read_text())["by_k_shot_and_context_turns"]["0"]["2"]["emorynlp"][
        "test"
    ]
    assert counted == committed


@pytest.mark.skipif(not TRUNCATION.is_file(), reason="benchmarks/truncation_counts.py has not been run")
def test_the_truncation_tables_of_docs_are_the_rendering_of_the_committed_counts():
    bench = load_benchmark("truncation_counts")
    by_k = json.loads(TRUNCATION.read_text())["by_k_shot_and_context_turns"]
    assert bench.markdown(by_k) in (REPO / "docs" / "PITFALLS.md").read_text()

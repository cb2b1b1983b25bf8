"""The field's evaluation practices as small pure functions, beside the practice this package follows.

Each function reproduces one practice found in the public code of a well-known ERC system (where, with the
commit and the quoted line: docs/PITFALLS.md), so that one set of predictions can be scored both ways and the
difference measured on the same utterances. None of them is used to report this package's own numbers.

- ``swapped_f1``: sklearn's ``f1_score`` with predictions and gold swapped (TodKat's scorer), against the
  correct ``weighted_f1``; ``swapped_weighted_f1_from_confusion`` is the same on confusion counts, for the
  dialogue bootstrap.
- ``select_checkpoint``: the checkpoint with the best dev score (this package) or the best test score
  (InstructERC's training loop evaluates its ``test.json`` every epoch and keeps the best).
- ``best_of_seeds`` against ``mean_over_seeds``.
- ``edit_distance_label``: free text to a label the InstructERC way (first label word found in the text,
  else the label at the smallest edit distance: never "no label"), against ``PromptBuilder.parse``.
- ``random_fallback``: a random label wherever the answer named none (DialogueLLM's test scripts).
- ``truncation_counts``: how many token sequences a fixed cutoff cuts (DialogueLLM trains at 256 tokens).
- ``surrounding_turns``: the past and future turns of a BiosERC-style window (future turns are what a live
  system cannot see).
- ``gap_interval`` and its uses (``swapped_f1_difference``, ``best_of_seeds_difference``,
  ``selection_on_test_difference``): paired dialogue-bootstrap intervals of these
  gaps from saved predictions (``dialoguellm.stats``'s resampling of whole dialogues).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from sklearn.metrics import f1_score

from dialoguellm import stats
from dialoguellm.metrics import classification_metrics, safe_div
from dialoguellm.prompts.builder import context_of

# InstructERC's span matcher looks at spans of 1..11 characters (``span_length < 12``): a longer label
# word never matches as a span and is only reachable by edit distance.
INSTRUCTERC_MAX_SPAN = 11
DIALOGUELLM_CUTOFF = 256  # CUTOFF_LEN of DialogueLLM's training scripts (prompt and answer together)
BIOSERC_WINDOW = 5  # BiosERC's --window default: 5 turns before and 5 after the target


# ------------------------------------------------------------------------------------ swapped F1


def swapped_f1(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> float:
    """Weighted F1 with sklearn's arguments swapped, ``f1_score(pred, gold, average="weighted")``: the
    practice of TodKat's released scorers (``metrics.f1_score(pred_list, grd_list, ...)``).

    Per-class F1 is symmetric in precision and recall, so the swap only changes the weights: each class
    counts by how often it was *predicted* instead of how often it occurs. A model that over-predicts its
    best class (neutral) is rewarded. Predictions outside ``0..len(labels)-1`` (no label) count wrong, as in
    ``classification_metrics``. Compare with ``correct_f1``."""
    label_ids = list(range(len(labels)))
    return float(f1_score(pred, gold, labels=label_ids, average="weighted", zero_division=0))


def correct_f1(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> float:
    """This package's weighted F1 (``classification_metrics``: sklearn's ``f1_score(gold, pred, average=
    "weighted")``, weights = gold support)."""
    return float(classification_metrics(gold, pred, labels)["weighted_f1"])


def swapped_weighted_f1_from_confusion(counts: np.ndarray) -> np.ndarray:
    """``swapped_f1`` of confusion counts shaped (..., L, L + 1) as ``stats.dialogue_confusions`` writes
    them (rows gold, columns predicted, last column no label), over the leading axes at once.

    Per-class F1 is computed as ``stats.metric_from_confusion`` does; the weights are the predicted counts
    (column sums) instead of the gold counts (row sums)."""
    n_labels = counts.shape[-2]
    labelled = counts[..., :n_labels]
    tp = np.diagonal(labelled, axis1=-2, axis2=-1)
    predicted = labelled.sum(axis=-2)
    precision = safe_div(tp, predicted)
    recall = safe_div(tp, counts.sum(axis=-1))
    f1 = safe_div(2 * precision * recall, precision + recall)
    return safe_div((f1 * predicted).sum(axis=-1), predicted.sum(axis=-1))


# ---------------------------------------------------------------------------- selection on test


def select_checkpoint(
    dev_scores: Sequence[float], test_scores: Sequence[float], by: Literal["dev", "test"] = "dev"
) -> tuple[int, float]:
    """(index, test score) of the checkpoint chosen by its ``dev`` score (this package: dev picks, test
    only reports) or by its ``test`` score (InstructERC's ``main_new.py`` scores its ``test.json`` after
    every epoch and keeps the best). Ties go to the earliest checkpoint.

    Choosing on test reports the maximum of several noisy test scores: never below the dev choice's test
    score, and above it whenever dev and test disagree on the best checkpoint."""
    dev, test = np.asarray(dev_scores, dtype=float), np.asarray(test_scores, dtype=float)
    if dev.shape != test.shape or dev.ndim != 1 or len(dev) == 0:
        raise ValueError(
            f"dev_scores and test_scores must be non-empty lists of one length (one per checkpoint); got "
            f"{dev.shape} and {test.shape}."
        )
    if by not in ("dev", "test"):
        raise ValueError(f"select_checkpoint: by must be 'dev' or 'test', not {by!r}.")
    index = int(np.argmax(dev if by == "dev" else test))
    return index, float(test[index])


def best_of_seeds(scores: Sequence[float]) -> float:
    """The best test score over training seeds: the number a paper reports when it keeps its luckiest
    seed (InstructERC users report a best seed of 67-68 against a mean of 65-66, docs/PITFALLS.md)."""
    values = _seed_scores(scores)
    return float(values.max())


def mean_over_seeds(scores: Sequence[float]) -> float:
    """The mean test score over training seeds: what this package reports (``metrics.mean_sd``)."""
    return float(_seed_scores(scores).mean())


def _seed_scores(scores: Sequence[float]) -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"Expected one score per seed (a non-empty list); got shape {values.shape}.")
    return values


# ------------------------------------------------------------------------------ text to label


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, each 1) between two strings."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def first_label_in_text(text: str, labels: Sequence[str]) -> int | None:
    """The label word that occurs first in ``text`` (case-sensitive; at one position the longest word of at
    most ``INSTRUCTERC_MAX_SPAN`` characters), as InstructERC's ``match_text`` finds it; None if none."""
    for start in range(len(text)):
        found = [
            i
            for i, label in enumerate(labels)
            if 0 < len(label) <= INSTRUCTERC_MAX_SPAN and text.startswith(label, start)
        ]
        if found:
            return max(found, key=lambda i: len(labels[i]))
    return None


def edit_distance_label(text: str, labels: Sequence[str]) -> int:
    """Map free text to a label id the InstructERC way (``main_new.py``): the first label word in the text
    (``first_label_in_text``), else the label at the smallest edit distance from the whole text (ties: the
    earlier label). Every text gets a label, so an answer that names no emotion still counts, right or
    wrong, where this package's ``PromptBuilder.parse`` returns None (counted wrong, never guessed)."""
    if not labels:
        raise ValueError("edit_distance_label needs at least one label.")
    text = text.strip()
    found = first_label_in_text(text, labels)
    if found is not None:
        return found
    distances = [levenshtein(text, label) for label in labels]
    return int(np.argmin(distances))


def random_fallback(
    parsed: Sequence[int | None], labels: Sequence[str], rng: np.random.Generator
) -> list[int]:
    """Every answer that named no label (None or -1) replaced by a label drawn uniformly at random: the
    practice of DialogueLLM's test scripts (``label = random.choice(random_list)``, an unseeded draw).

    The score then depends on the draw; report it over several ``rng`` seeds (``random_fallback_scores``).
    A draw can only add correct answers (accuracy rises or stays), but each wrong draw is a false positive of
    another class, so weighted F1 can move either way."""
    n = len(labels)
    if n == 0:
        raise ValueError("random_fallback needs at least one label.")
    return [int(rng.integers(n)) if p is None or not 0 <= p < n else int(p) for p in parsed]


def random_fallback_scores(
    gold: Sequence[int], parsed: Sequence[int | None], labels: Sequence[str], seeds: Sequence[int]
) -> list[float]:
    """Weighted F1 of ``random_fallback`` once per sampling seed (``numpy.random.default_rng(seed)``)."""
    return [
        correct_f1(gold, random_fallback(parsed, labels, np.random.default_rng(seed)), labels)
        for seed in seeds
    ]


# ---------------------------------------------------------------------------------- prompts


def truncation_counts(
    prompt_token_lengths: Sequence[int], cutoff: int = DIALOGUELLM_CUTOFF
) -> dict[str, Any]:
    """How many token sequences (prompt and answer together, as DialogueLLM tokenises its training text
    with ``truncation=True, max_length=256``) a cutoff cuts. A cut sequence loses its end, which is the
    answer: the example then trains on a prompt with a missing or partial label."""
    lengths = np.asarray(prompt_token_lengths, dtype=int)
    if lengths.ndim != 1:
        raise ValueError(f"Expected one token count per sequence; got shape {lengths.shape}.")
    if cutoff < 1:
        raise ValueError(f"cutoff must be a positive number of tokens, not {cutoff}.")
    cut = int((lengths > cutoff).sum())
    return {
        "n": int(len(lengths)),
        "cutoff": int(cutoff),
        "cut": cut,
        "cut_share": cut / len(lengths) if len(lengths) else 0.0,
        "max_tokens": int(lengths.max()) if len(lengths) else 0,
    }


def future_turns(row: Mapping[str, Any], dialogue: Sequence[Mapping[str, Any]], k: int) -> list[Mapping]:
    """The ``k`` utterances after ``row`` in its dialogue, in order: what a live system cannot see."""
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"future turns must be an integer >= 0, not {k!r}.")
    later = [r for r in dialogue if int(r["turn"]) > int(row["turn"])]
    later.sort(key=lambda r: int(r["turn"]))
    return later[:k]


def surrounding_turns(
    row: Mapping[str, Any],
    dialogue: Sequence[Mapping[str, Any]],
    past: int | str = BIOSERC_WINDOW,
    future: int = BIOSERC_WINDOW,
) -> tuple[list[Mapping], list[Mapping]]:
    """(past turns, future turns) of a BiosERC-style window (``flatten_conversation_mixed_by_surrounding``
    takes ``range(max(0, i - w), min(len(conv), i + w + 1))``: w turns before and w after). The past part
    is this package's ``context_of``; ``future=0`` is what the package's prompts show."""
    return context_of(row, dialogue, past), future_turns(row, dialogue, future)


# ------------------------------------------------------------------- paired intervals of the gaps


@dataclass(frozen=True)
class Gap:
    """A practice's score minus the package's score on the same utterances, with its dialogue-bootstrap
    interval (fractions, not percent). ``verdict`` says "no measurable difference" when it covers 0."""

    practice: float
    package: float
    difference: float
    low: float
    high: float
    verdict: str
    n: int
    n_dialogues: int
    method: str
    n_resamples: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return stats.format_interval(self.difference, self.low, self.high)


def gap_interval(
    gold: Sequence[int],
    preds: Sequence[Sequence[int]],
    labels: Sequence[str],
    groups: Sequence[Any],
    practice: Callable[[np.ndarray], np.ndarray],
    package: Callable[[np.ndarray], np.ndarray],
    *,
    confidence: float = 0.95,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    seed: int = stats.DEFAULT_SEED,
    method: str = "BCa",
) -> Gap:
    """practice(counts) - package(counts) with a paired interval: ``preds`` are S systems (seeds,
    checkpoints, or one system scored two ways) on the same utterances; each dialogue-bootstrap resample
    draws the same dialogues for all of them. ``practice`` and ``package`` map confusion counts shaped
    (..., S, L, L + 1) to (...) scores."""
    per_system = np.stack([stats.dialogue_confusions(gold, p, len(labels), groups) for p in preds])
    n_systems, n_groups = per_system.shape[:2]
    flat = per_system.reshape(n_systems, n_groups, -1)
    shape = per_system.shape[2:]

    def counts_of(weights: np.ndarray) -> np.ndarray:
        # (..., G) dialogue weights -> (..., S, L, L + 1) confusion counts of every system.
        return np.einsum("...g,sgf->...sf", weights, flat).reshape(*weights.shape[:-1], n_systems, *shape)

    def difference(weights: np.ndarray) -> np.ndarray:
        counts = counts_of(weights)
        return practice(counts) - package(counts)

    whole = per_system.sum(axis=1)
    point_practice, point_package = float(practice(whole)), float(package(whole))
    # The one dialogue bootstrap of the package (stats); it has no public form for a custom statistic yet.
    low, high, used = stats._bootstrap_groups(difference, n_groups, confidence, n_resamples, seed, method)
    verdict = stats.NO_DIFFERENCE if low <= 0 <= high else ("A higher" if low > 0 else "B higher")
    return Gap(
        point_practice,
        point_package,
        point_practice - point_package,
        low,
        high,
        stats.named_verdict(verdict, "practice", "package"),
        len(gold),
        n_groups,
        used,
        n_resamples,
        seed,
    )


def _weighted_f1(counts: np.ndarray) -> np.ndarray:
    return stats.metric_from_confusion(counts, "weighted_f1")


def swapped_f1_difference(
    gold: Sequence[int], pred: Sequence[int], labels: Sequence[str], groups: Sequence[Any], **options: Any
) -> Gap:
    """``swapped_f1`` minus the correct weighted F1 of one system, with its paired interval."""
    return gap_interval(
        gold,
        [pred],
        labels,
        groups,
        lambda c: swapped_weighted_f1_from_confusion(c[..., 0, :, :]),
        lambda c: _weighted_f1(c[..., 0, :, :]),
        **options,
    )


def best_of_seeds_difference(
    gold: Sequence[int],
    preds_by_seed: Sequence[Sequence[int]],
    labels: Sequence[str],
    groups: Sequence[Any],
    **options: Any,
) -> Gap:
    """Best-of-seeds weighted F1 minus the mean over seeds, on the same utterances. Each resample picks
    its own best seed, as a paper that keeps its luckiest seed would; the gap is >= 0 by construction, so
    its interval measures how much, not whether."""
    return gap_interval(
        gold,
        preds_by_seed,
        labels,
        groups,
        lambda c: _weighted_f1(c).max(axis=-1),
        lambda c: _weighted_f1(c).mean(axis=-1),
        **options,
    )


def selection_on_test_difference(
    gold: Sequence[int],
    preds_by_checkpoint: Sequence[Sequence[int]],
    dev_scores: Sequence[float],
    labels: Sequence[str],
    groups: Sequence[Any],
    **options: Any,
) -> Gap:
    """Test weighted F1 of the checkpoint chosen on test minus that of the one chosen on dev
    (``select_checkpoint``): dev's choice is fixed, test's is remade in every resample."""
    chosen, _ = select_checkpoint(dev_scores, [0.0] * len(dev_scores), by="dev")
    if len(preds_by_checkpoint) != len(dev_scores):
        raise ValueError(
            f"{len(preds_by_checkpoint)} checkpoints' predictions but {len(dev_scores)} dev scores; one each."
        )
    return gap_interval(
        gold,
        preds_by_checkpoint,
        labels,
        groups,
        lambda c: _weighted_f1(c).max(axis=-1),
        lambda c: _weighted_f1(c[..., chosen, :, :]),
        **options,
    )

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
- ``swapped_f1_difference``, ``best_of_seeds_difference``, ``selection_on_test_difference`` and
  ``selection_over_runs_difference``: these gaps from saved predictions with their interval over training
  seeds and test dialogues (``stats.seed_dialogue_statistic``). The measured table reads them through
  ``experiments.pitfalls``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from sklearn.metrics import f1_score

from dialoguellm import stats
from dialoguellm.metrics import classification_metrics, safe_div
from dialoguellm.prompts.answers import (  # noqa: F401 (the practices, beside the others here)
    INSTRUCTERC_MAX_SPAN,
    edit_distance_label,
    first_label_in_text,
    levenshtein,
    random_fallback,
)
from dialoguellm.prompts.builder import context_of, future_of

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
    """The ``k`` utterances after ``row`` in its dialogue, in order: what a live system cannot see (the
    prompts' ``prompt.future_turns``, ``prompts.builder.future_of``)."""
    return future_of(row, dialogue, k)


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
#
# Each gap is a ``stats.seed_dialogue_statistic``: its interval resamples the training seeds, then the test
# dialogues (one dialogue draw for every seed and checkpoint), as every other interval of the package.


def _weighted_f1(counts: np.ndarray) -> np.ndarray:
    return stats.metric_from_confusion(counts, "weighted_f1")


def _seed_mean(values: np.ndarray, seed_weights: np.ndarray) -> np.ndarray:
    """(B, R) per-seed values -> (B,) their mean with each seed counted as often as it was drawn."""
    return (values * seed_weights).sum(axis=-1) / seed_weights.sum(axis=-1)


def _by_seed(preds: Sequence[Sequence[int]] | Sequence[int]) -> np.ndarray:
    """One row of predictions per seed (a single row: one seed)."""
    return np.atleast_2d(np.asarray(preds, dtype=int))


def swapped_f1_difference(
    gold: Sequence[int],
    preds_by_seed: Sequence[Sequence[int]] | Sequence[int],
    labels: Sequence[str],
    groups: Sequence[Any],
    **options: Any,
) -> stats.SeedDialogueEstimate:
    """``swapped_f1`` minus the correct weighted F1, averaged over seeds (one row of predictions per seed,
    or one row), with its interval over seeds and dialogues."""

    def gap(counts: np.ndarray, seed_w: np.ndarray) -> np.ndarray:
        own = counts[:, 0]
        return _seed_mean(swapped_weighted_f1_from_confusion(own) - _weighted_f1(own), seed_w)

    return stats.seed_dialogue_statistic(
        gold,
        [_by_seed(preds_by_seed)],
        labels,
        groups,
        gap,
        name="swapped minus correct weighted_f1",
        **options,
    )


def best_of_seeds_difference(
    gold: Sequence[int],
    preds_by_seed: Sequence[Sequence[int]],
    labels: Sequence[str],
    groups: Sequence[Any],
    **options: Any,
) -> stats.SeedDialogueEstimate:
    """Best-of-seeds weighted F1 minus the mean over seeds, on the same utterances: a paper that keeps its
    luckiest seed. Each resample draws the test dialogues and picks its own best seed; the gap is >= 0 by
    construction, so its interval measures how much, not whether. The seeds are these seeds (a resample that
    drew one seed twice would ask about the best of fewer), so only the dialogues are resampled."""

    def gap(counts: np.ndarray, seed_w: np.ndarray) -> np.ndarray:
        f1 = _weighted_f1(counts[:, 0])
        return np.where(seed_w > 0, f1, -np.inf).max(axis=-1) - _seed_mean(f1, seed_w)

    return stats.seed_dialogue_statistic(
        gold, [_by_seed(preds_by_seed)], labels, groups, gap, name="best-of-seeds minus mean weighted_f1",
        resample_seeds=False, **options,
    )  # fmt: skip


def _dev_scores(dev_scores: Any, n_checkpoints: int, n_seeds: int) -> np.ndarray:
    dev = np.asarray(dev_scores, dtype=float)
    dev = dev[:, None] if dev.ndim == 1 else dev
    if dev.shape != (n_checkpoints, n_seeds):
        raise ValueError(
            f"{n_checkpoints} checkpoints x {n_seeds} seeds of predictions but dev scores shaped {dev.shape}; "
            "one each."
        )
    return dev


def _checkpoints(preds: Any) -> np.ndarray:
    """(K checkpoints, R seeds, N) from (K, R, N) or (K, N) (one seed)."""
    array = np.asarray(preds, dtype=int)
    return array[:, None, :] if array.ndim == 2 else array


def selection_on_test_difference(
    gold: Sequence[int],
    preds_by_checkpoint: Any,
    dev_scores: Any,
    labels: Sequence[str],
    groups: Sequence[Any],
    **options: Any,
) -> stats.SeedDialogueEstimate:
    """Within each run: test weighted F1 of the checkpoint chosen on test minus that of the checkpoint chosen
    on dev (``select_checkpoint``), averaged over seeds. ``preds_by_checkpoint``: (K, R, N) or (K, N) for one
    seed; ``dev_scores``: (K, R) or (K,). Dev's choice is fixed per seed; test's is remade in every resample."""
    preds = _checkpoints(preds_by_checkpoint)
    dev = _dev_scores(dev_scores, *preds.shape[:2])
    chosen = dev.argmax(axis=0)  # per seed; ties: the earliest checkpoint

    def gap(counts: np.ndarray, seed_w: np.ndarray) -> np.ndarray:
        f1 = _weighted_f1(counts)  # (B, K, R)
        by_dev = f1[:, chosen, np.arange(f1.shape[2])]
        return _seed_mean(f1.max(axis=1) - by_dev, seed_w)

    return stats.seed_dialogue_statistic(
        gold, list(preds), labels, groups, gap, name="test-chosen minus dev-chosen checkpoint weighted_f1",
        **options,
    )  # fmt: skip


def selection_over_runs_difference(
    gold: Sequence[int],
    preds_by_checkpoint: Any,
    dev_scores: Any,
    labels: Sequence[str],
    groups: Sequence[Any],
    **options: Any,
) -> stats.SeedDialogueEstimate:
    """Over every checkpoint of every seed at once: the test weighted F1 of the (seed, checkpoint) with the
    best test score minus that of the one with the best dev score (the practice of running several seeds and
    keeping the run that scores best on test). As for the best of seeds, the seeds are these seeds: only the
    test dialogues are resampled."""
    preds = _checkpoints(preds_by_checkpoint)
    dev = _dev_scores(dev_scores, *preds.shape[:2])

    def gap(counts: np.ndarray, seed_w: np.ndarray) -> np.ndarray:
        f1 = _weighted_f1(counts)  # (B, K, R)
        drawn = (seed_w > 0)[:, None, :]
        test_best = np.where(drawn, f1, -np.inf).reshape(len(f1), -1).max(axis=1)
        pick = np.where(drawn, dev[None], -np.inf).reshape(len(f1), -1).argmax(axis=1)
        return test_best - f1.reshape(len(f1), -1)[np.arange(len(f1)), pick]

    return stats.seed_dialogue_statistic(
        gold, list(preds), labels, groups, gap, name="test-chosen minus dev-chosen run weighted_f1",
        resample_seeds=False, **options,
    )  # fmt: skip

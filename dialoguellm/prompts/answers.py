"""Generated text back to a label: the package's parse and the field's ways (``eval.parser``), and what an
answer that names no label becomes (``eval.fallback``).

- ``exact``: ``PromptBuilder.parse``, the label word at the start of the answer, or the only label word in it;
  anything else names no label (-1, counted wrong, never guessed). The package's default.
- ``first_label``: the first label word found in the text (``first_label_in_text``; DialogueLLM's test scripts
  search the answer for label words, InstructERC's ``match_text`` takes the first span that is one).
- ``edit_distance``: InstructERC's ``main_new.py``: the first label word, else the label nearest to the whole
  text by edit distance (``edit_distance_label``): every text gets a label.
- fallback ``random``: a label drawn uniformly at random wherever none was found (DialogueLLM's test scripts,
  ``random.choice``; here seeded, ``random_fallback``).

Where each practice is found, with the quoted lines: docs/PITFALLS.md (rows 1 and 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# InstructERC's span matcher looks at spans of 1..11 characters (``span_length < 12``): a longer label
# word never matches as a span and is only reachable by edit distance.
INSTRUCTERC_MAX_SPAN = 11


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
    wrong, where ``PromptBuilder.parse`` returns None (counted wrong, never guessed)."""
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

    The score then depends on the draw; report it over several ``rng`` seeds. A draw can only add correct
    answers (accuracy rises or stays), but each wrong draw is a false positive of another class, so weighted
    F1 can move either way."""
    n = len(labels)
    if n == 0:
        raise ValueError("random_fallback needs at least one label.")
    return [int(rng.integers(n)) if p is None or not 0 <= p < n else int(p) for p in parsed]


def parse_answers(
    builder: Any, texts: Sequence[str], parser: str = "exact", fallback: str = "none", seed: int = 0
) -> list[int]:
    """Label ids of generated ``texts`` by ``parser`` (exact, first_label, edit_distance; module docstring),
    -1 where none was found, then ``fallback`` (none: keep -1; random: a label drawn with
    ``numpy.random.default_rng(seed)``, in the order of ``texts``)."""
    labels = list(builder.labels)
    if parser == "exact":
        parsed = [builder.parse(t) for t in texts]
    elif parser == "first_label":
        parsed = [first_label_in_text(t.strip().lower(), labels) for t in texts]
    elif parser == "edit_distance":
        parsed = [edit_distance_label(t.strip().lower(), labels) for t in texts]
    else:
        raise ValueError(f"eval.parser must be exact, first_label or edit_distance, not {parser!r}.")
    ids = [-1 if p is None else int(p) for p in parsed]
    if fallback == "random":
        return random_fallback(ids, labels, np.random.default_rng(seed))
    if fallback != "none":
        raise ValueError(f"eval.fallback must be none or random, not {fallback!r}.")
    return ids

"""From corpora to encoded prompts: the sample of each split a run uses, and its prompts (``Prepared``).

Training, evaluation, calibration, the ablations and the error analysis all build their prompts here, so
every stage reads exactly what the model was trained on.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dialoguellm.config import Config
from dialoguellm.prompts.builder import PromptBuilder, PromptExample, builders_from_config, rows_of


def sample_indices(n: int, k: int, seed: int, labels: Sequence[int] | None = None) -> list[int]:
    """``k`` of ``n`` row positions (all when k is 0 or >= n), stratified by label, deterministic in seed."""
    if k <= 0 or k >= n:
        return list(range(n))
    rng = random.Random(seed)
    if labels is None:
        return sorted(rng.sample(range(n), k))
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(int(lab), []).append(i)
    chosen: list[int] = []
    # Proportional allocation with largest remainders, so the sample keeps the split's label shares.
    quotas = {lab: k * len(idx) / n for lab, idx in by_label.items()}
    counts = {lab: int(q) for lab, q in quotas.items()}
    for lab in sorted(quotas, key=lambda x: quotas[x] - counts[x], reverse=True)[: k - sum(counts.values())]:
        counts[lab] += 1
    for lab, idx in sorted(by_label.items()):
        chosen += rng.sample(idx, counts[lab])
    return sorted(chosen)


def nested_sample_order(labels: Sequence[int], seed: int) -> list[int]:
    """All row positions in an order whose every prefix is a stratified sample: the first ``k`` positions hold
    each label within one row of its proportional share ``k * n_label / n``, for every ``k`` at once. Samples
    of growing size taken as prefixes are therefore nested (each contains the smaller ones), as a learning
    curve needs; ``sample_indices`` (largest remainders, one ``k``) is not, because its allocation and its
    random draws both change with ``k``.

    Each label's rows are shuffled with their own stream (``seed`` and the label), and the labels take turns
    by largest deficit ``(step + 1) * share - taken`` (ties to the smaller label id), a house-monotone
    allocation: growing ``k`` never takes a row back."""
    n = len(labels)
    by_label: dict[int, list[int]] = {}
    for i, lab in enumerate(labels):
        by_label.setdefault(int(lab), []).append(i)
    for lab, idx in by_label.items():
        random.Random(f"{seed}/{lab}").shuffle(idx)
    share = {lab: len(idx) / n for lab, idx in by_label.items()}
    taken = dict.fromkeys(by_label, 0)
    order: list[int] = []
    for step in range(n):
        lab = max(
            (lab for lab in sorted(by_label) if taken[lab] < len(by_label[lab])),
            key=lambda lab: (step + 1) * share[lab] - taken[lab],
        )
        order.append(by_label[lab][taken[lab]])
        taken[lab] += 1
    return order


def sample_positions(split: Any, k: int, seed: int) -> list[int]:
    """``k`` row positions of a split (all when ``k`` is 0 or >= its size), stratified by label and
    deterministic in ``seed`` (``sample_indices`` on the split's labels)."""
    rows = rows_of(split)
    return sample_indices(len(rows), k, seed, [r["label_id"] for r in rows])


@dataclass
class Prepared:
    """Prompt builders and encoded examples for every corpus and split used in a run."""

    builders: dict[str, PromptBuilder]
    examples: dict[str, dict[str, list[PromptExample]]]  # split -> corpus -> examples


def prepare_examples(
    config: Config,
    tokenizer: Any,
    corpora: Mapping[str, Any],
    splits: Sequence[str] = ("train", "dev"),
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> Prepared:
    """Build prompts for ``splits`` of each corpus, sampled as ``config.data`` says.

    ``descriptions``: ``split -> {clip_id: text}`` (``corpora.video.load_descriptions``); missing = none.
    """
    descriptions = descriptions or {}
    builders = builders_from_config(
        tokenizer, {name: corpora[name] for name in config.data.datasets}, config, descriptions
    )
    sizes = {
        "train": config.data.train_per_dataset,
        "dev": config.data.dev_per_dataset,
        "test": config.data.test_per_dataset,
    }
    examples: dict[str, dict[str, list[PromptExample]]] = {}
    for split in splits:
        examples[split] = {}
        for name in config.data.datasets:
            rows = rows_of(corpora[name][split])
            only = sample_indices(len(rows), sizes[split], config.train.seed, [r["label_id"] for r in rows])
            examples[split][name] = builders[name].build_split(rows, descriptions.get(split, {}), only=only)
    return Prepared(builders=builders, examples=examples)


def prepare_split(
    config: Config,
    tokenizer: Any,
    corpora: Mapping[str, Any],
    split: str,
    per_dataset: int,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> Prepared:
    """``prepare_examples`` for one split of the corpora at hand, with ``per_dataset`` utterances per corpus
    (stratified by label; 0 = all) instead of the config's size for that split."""
    import copy

    config = copy.deepcopy(config)
    setattr(config.data, f"{split}_per_dataset", per_dataset)
    config.data.datasets = [d for d in config.data.datasets if d in corpora]
    return prepare_examples(config, tokenizer, corpora, (split,), descriptions)

"""What training optimises and in what order: the answer-token loss of a micro-batch (through the scoring
engine's shared-prefix forward pass), the micro-batches of an epoch, and the learning-rate schedule.

- loss on the answer tokens only (the label word and the end-of-sequence token), averaged per token;
- dynamic padding and length grouping: micro-batches hold prompts of one corpus and similar length;
- the tokens shared by every prompt of a micro-batch (system message, instruction, demonstrations) are run
  once and their keys/values broadcast to the batch; gradients flow through them as usual;
- cosine decay to ``min_lr_ratio`` of the peak after a linear warm-up.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from dialoguellm.prompts import PromptExample
from dialoguellm.scoring.engine import (
    autocast_context,
    common_prefix_length,
    decoder_parts,
    encode_prefix,
    forward_hidden,
    packed_hidden,
)


def micro_batches(
    examples: Mapping[str, Sequence[PromptExample]], size: int, seed: int, group_by_length: bool = True
) -> list[tuple[str, list[int]]]:
    """One epoch of micro-batches ``(corpus, example positions)``, shuffled with ``seed``.

    Each micro-batch holds one corpus (its prompts share an instruction prefix); with length grouping,
    examples are sorted by length within chunks of 32 micro-batches before batching, so padding is small but
    the order stays random.
    """
    rng = random.Random(seed)
    batches: list[tuple[str, list[int]]] = []
    for name, items in examples.items():
        order = list(range(len(items)))
        rng.shuffle(order)
        if group_by_length:
            chunk = size * 32
            grouped = []
            for start in range(0, len(order), chunk):
                part = order[start : start + chunk]
                grouped += sorted(part, key=lambda i: len(items[i].prompt_ids))
            order = grouped
        batches += [(name, order[i : i + size]) for i in range(0, len(order), size)]
    rng.shuffle(batches)
    return batches


# ------------------------------------------------------------------------------------------- the loss
def tuner_layers(model: Any) -> list[Any]:
    """peft's adapter layers in ``model`` (``BaseTunerLayer``), whose input casting ``training_precision``
    turns off. A trainer lists them once per run and passes them in: walking the embedded model's ~700
    modules, twice per pass as peft's ``disable_input_dtype_casting`` does, took about 19 ms of a 1.1-s
    packed training step."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def training_precision(model: Any, dtype: str = "bf16", layers: Sequence[Any] | None = None) -> Iterator[Any]:
    """What a training micro-batch (forward and backward) runs inside: ``dtype``'s autocast, and for a 16-bit
    ``dtype`` peft's LoRA layers take their input as it comes instead of first copying it to their own fp32.

    Under autocast that copy buys nothing: LoRA's matrix products are lowered to 16 bits again right after,
    so each of the embedded model's 210 LoRA layers paid an fp32 copy of its input, dropout in fp32 and a cast
    back, forward and backward: dtype copies were 9.8% of a step's self CPU time with the copy and 1.1% without
    it, under the profiler on an idle machine (benchmarks/results/train_profile_cpu.json, paths ``before``
    and ``torch_dropout``). The forward pass gives the same loss bit for bit; dropout's
    mask and the gradients are rounded in 16 bits instead of 32 (benchmarks/train_peak.py compares both
    paths' losses on the same batches). LoRA weights and AdamW's state stay fp32. The switch is peft's
    ``cast_input_dtype_enabled`` (what ``peft.helpers.disable_input_dtype_casting`` sets), set on ``layers``
    (``tuner_layers(model)`` when not given) and restored on exit.
    """
    layers = (tuner_layers(model) if layers is None else list(layers)) if dtype in ("bf16", "fp16") else []
    before = [layer.cast_input_dtype_enabled for layer in layers]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    try:
        with autocast_context(model, dtype):
            yield model
    finally:
        for layer, enabled in zip(layers, before, strict=True):
            layer.cast_input_dtype_enabled = enabled


def answer_loss(
    model: Any,
    prompts: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
    pad_id: int,
    share_prefix: bool = True,
    stats: dict[str, int] | None = None,
) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the answer tokens of a micro-batch, and the number of answer tokens.

    The prompts' common prefix runs once (batch 1) and is broadcast; prompt+answer rows are left-padded so
    all answers end in the last column, and the output projection runs on the answer positions only (one 2-D
    product: no logits over the vocabulary for prompt tokens). ``stats``, when given, accumulates the
    tokens computed and the pad tokens among them (the trainer's padding-waste report).
    """
    p = common_prefix_length(prompts) if share_prefix else 0
    prefix = encode_prefix(model, list(prompts[0][:p]))
    suffixes = [list(q[p:]) + list(a) for q, a in zip(prompts, answers, strict=True)]
    hidden, s_max = forward_hidden(model, prefix, p, suffixes, pad_id)
    if stats is not None:
        _count_tokens(stats, p, suffixes, answers)
    total, n_tokens = _answer_cross_entropy(model, hidden, s_max, answers)
    return total / max(n_tokens, 1), n_tokens


def _count_tokens(
    stats: dict[str, int],
    prefix_len: int,
    suffixes: Sequence[Sequence[int]],
    answers: Sequence[Sequence[int]],
) -> None:
    """Add a micro-batch's tokens computed (its prefix once, its rows padded to the longest), the pad tokens
    among them and its answer tokens to ``stats`` (the trainer's padding-waste report)."""
    width = max(len(x) for x in suffixes)
    stats["tokens"] = stats.get("tokens", 0) + prefix_len + len(suffixes) * width
    stats["pad_tokens"] = stats.get("pad_tokens", 0) + sum(width - len(x) for x in suffixes)
    stats["answer_tokens"] = stats.get("answer_tokens", 0) + sum(len(a) for a in answers)


def _answer_cross_entropy(
    model: Any, hidden: torch.Tensor, s_max: int, answers: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the answers that fill the last columns of ``hidden`` (rows, columns, H), and
    the number of answer tokens."""
    a_max = max(len(a) for a in answers)
    # Column c predicts the token in column c + 1; an answer of n tokens fills the last n columns, so the
    # columns s_max - a_max - 1 ... s_max - 2 predict every answer token.
    picked = hidden[:, s_max - a_max - 1 : s_max - 1]
    targets = torch.full((len(answers), a_max), -100, dtype=torch.long, device=hidden.device)
    for row, a in enumerate(answers):
        targets[row, a_max - len(a) :] = torch.tensor(list(a), device=hidden.device)
    keep = targets.reshape(-1) != -100
    _, head = decoder_parts(model)
    logits = head(picked.reshape(-1, picked.shape[-1])[keep])
    loss = torch.nn.functional.cross_entropy(logits.float(), targets.reshape(-1)[keep], reduction="sum")
    return loss, int(keep.sum())


def packed_answer_loss(
    model: Any,
    batches: Sequence[tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]],
    weights: Sequence[float],
    pad_id: int,
    share_prefix: bool = True,
    stats: dict[str, int] | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Several micro-batches ``(prompts, answers)`` in one forward pass (``engine.packed_hidden``):
    (the sum of each micro-batch's ``answer_loss`` times its weight, each micro-batch's loss detached).

    The same function of the weights as one ``answer_loss`` per micro-batch accumulated with these weights:
    each micro-batch keeps its own shared prefix and its own mean over its answer tokens; only the number of
    forward passes changes (one instead of two per micro-batch). ``stats`` counts as ``answer_loss`` does.
    """
    groups, answer_lists = [], []
    for prompts, answers in batches:
        p = common_prefix_length(prompts) if share_prefix else 0
        suffixes = [list(q[p:]) + list(a) for q, a in zip(prompts, answers, strict=True)]
        groups.append((list(prompts[0][:p]), suffixes))
        answer_lists.append(answers)
        if stats is not None:
            _count_tokens(stats, p, suffixes, answers)
    hidden = packed_hidden(model, groups, pad_id)
    total = torch.zeros((), dtype=torch.float32, device=hidden[0].device)
    each = []
    for rows, answers, weight in zip(hidden, answer_lists, weights, strict=True):
        summed, n_tokens = _answer_cross_entropy(model, rows, rows.shape[1], answers)
        mean = summed / max(n_tokens, 1)
        each.append(mean.detach())
        total = total + mean * weight
    return total, each


class AnswerLoss(torch.nn.Module):
    """The loss of one forward call as a module: ``answer_loss`` of one micro-batch, or with ``packed``
    (``train.micro_batches_per_pass`` > 1) ``packed_answer_loss`` of several in one pass.

    DDP (``accelerate launch``) synchronises gradients through a module's forward; wrapping the loss, not the
    language model, keeps the shared-prefix pass inside that one call.
    """

    def __init__(self, model: Any, pad_id: int, share_prefix: bool = True, packed: bool = False):
        super().__init__()
        self.model = model
        self.pad_id = pad_id
        self.share_prefix = share_prefix
        self.packed = packed

    def forward(
        self,
        batches: Sequence[tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]],
        weights: Sequence[float],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(sum of each micro-batch's mean answer-token loss times its weight, the micro-batches' losses
        (detached), tensor of tokens computed, pad tokens, answer tokens)."""
        stats: dict[str, int] = {}
        if self.packed:
            total, each = packed_answer_loss(
                self.model, batches, weights, self.pad_id, self.share_prefix, stats
            )
        else:
            if len(batches) != 1:
                raise ValueError(f"one micro-batch per call without packing, not {len(batches)}")
            (prompts, answers), weight = batches[0], weights[0]
            loss, _ = answer_loss(self.model, prompts, answers, self.pad_id, self.share_prefix, stats)
            total, each = loss * weight, [loss.detach()]
        counts = torch.tensor([stats["tokens"], stats["pad_tokens"], stats["answer_tokens"]])
        return total, torch.stack(each), counts


# ----------------------------------------------------------------------------------------- schedules
def lr_factor(step: int, total: int, warmup: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if kind == "constant" or total <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

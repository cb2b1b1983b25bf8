"""Training against the CPU's matmul peak: the cpu profile's LoRA step, old paths and new, and the torch matmul
peak, interleaved in one run so that the load of a shared machine falls on all of them alike.

    nice -n 5 dialoguellm benchmark train_peak --micro-batches 7 --threads 2

Each round measures, in this order:

1. the torch matmul rate (``F.linear``, as ``nn.Linear`` calls it) at the embedded model's shapes, tokens x 576
   into 1536 (gate/up) and tokens x 1536 into 576 (down), bf16 and fp32, on 1 and 2 threads;
2. the old path's loss on the micro-batch with another dropout draw (no step): the noise scale their loss
   difference is read against;
3. one optimiser step of the cpu profile's 16 utterances (``train.batch_size``, one corpus) by each of nine
   paths, each a model of its own with the same LoRA initialisation and the same batches (they take turns to
   go first): the path before issue 30 (``engine.autocast_context``: bf16 autocast, peft copying every LoRA
   input to fp32, peft's ``nn.Dropout``), ``torch_dropout`` (the trainer's precision now,
   ``training.loss.training_precision``, with peft's ``nn.Dropout``: the same masks as before, so their
   losses are compared step by step), ``sdpa`` (that precision and ``model.dropout.SparseDropout``, the same
   dropout distribution drawn from other random numbers, so its loss is read against another dropout
   draw's), ``eager`` (``sdpa`` with ``model.attention: eager``: transformers' products and softmax instead
   of the SDPA kernel, the same masks, so its losses are compared with ``sdpa``'s step by step), ``now``
   (``model.attention: eager_fp32``, eager's products in fp32; the 16 in one micro-batch), ``now_halves``
   (``now`` in two micro-batches of 8, a pass each, gradients accumulated: 8 x 2), ``packed`` (the two
   micro-batches of 8 in one packed pass, ``train.micro_batches_per_pass: 2``: each its own prefix and mean,
   the loss of 8 x 2), ``fused`` (``packed`` with ``model.fused_lora``'s LoRA layers; the same masks as
   ``packed``, so their losses are compared step by step) and ``norms`` (``fused`` with
   ``model.fused_norm``'s RMSNorms and peft's layers listed once per run, ``training.loss.tuner_layers``: the
   cpu profile; the same operations forward); the paths before ``fused`` run peft's own LoRA forward and
   the paths before ``norms`` transformers' norms;
4. one optimiser step of the trainer's own, by the cpu profile on a model of its own (``epoch``): the
   ``train.grad_accum`` micro-batches of ``train.micro_batch_size`` that the trainer pairs into one step
   (``loop`` forms them so: possibly two corpora, each micro-batch its own prefix and width), the steps
   spread evenly over the real first epoch: the rate the whole epoch runs at, where 3. measures one corpus's
   first full batches;
5. the frozen base's linear products alone at the profile's shapes (``base_matmul_seconds``: its packed
   pass, forward and the activations' gradient, the model's own weights, nothing else): the bound a step
   could reach if everything but those products were free, printed as a fraction of the peak
   (``ceiling_fraction_of_peak``).

The micro-batches are the first full ones of the real first epoch (MELD and EmoryNLP training prompts,
1-shot, z = 1, length-grouped as the trainer groups them); round 0 is a warm-up and not counted.

FLOPs per micro-batch (``train_flops``) count the useful work only (no padding): the frozen base's linear
layers forward (2 x parameters per token) and backward for the activations but not its weights (2 x), the
LoRA matrices forward, backward and weight gradients (6 x theirs), attention scores and values over each
token's causal context (forward 4 x context x width per layer, backward twice that), the output projection
at the answer positions only, plus one more forward of the linear layers when activation checkpointing
recomputes them (the cpu profile has none). Training FLOP/s is printed as a fraction of the fastest 2-thread
matmul measured in the same rounds, of either dtype and shape (bf16 on a CPU with bf16 units; fp32 on one
without, where bf16 products are emulated), the bf16 peak recorded beside it. The paths multiply in what
the trainer would on this machine (``train.precision``, ``model.loading.training_dtype``). What else ran on
the machine is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from statistics import mean
from typing import Any, NamedTuple

import torch

from dialoguellm import prompts, runs
from dialoguellm.config import add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.model import loading
from dialoguellm.model.dropout import SparseDropout, replace_lora_dropout
from dialoguellm.model.fused_lora import use_peft_forward
from dialoguellm.model.fused_norm import use_transformers_norms
from dialoguellm.scoring import engine
from dialoguellm.training import loop
from dialoguellm.training import loss as training_loss

RESULTS = Path(__file__).resolve().parent / "results"


class Path_(NamedTuple):
    """One training path: the context its passes run in, whether LoRA's dropout is the sparse sampler
    (model.dropout.SparseDropout, what add_lora installs) or peft's own nn.Dropout, model.attention, in how many
    micro-batches it runs a round's utterances (2: two halves, as 8 x 2 runs 16), whether those run in one
    packed pass (train.micro_batches_per_pass) or a pass each, whether the LoRA layers are fused
    (model.fused_lora, what add_lora installs) or peft's own, and whether the RMSNorms are fused
    (model.fused_norm, what add_lora installs) with peft's layers listed once for the precision context
    (training.loss.tuner_layers, as the trainer lists them once per run) or transformers' norms with the
    layers found by a walk over the model in every pass."""

    context: Callable[[Any, str], contextlib.AbstractContextManager]
    sparse: bool
    attention: str
    passes: int
    packed: bool
    fused: bool
    norms: bool = False


precision = training_loss.training_precision
PATHS: dict[str, Path_] = {
    "before": Path_(
        engine.autocast_context, False, "sdpa", 1, False, False
    ),  # peft's fp32 copies, nn.Dropout
    "torch_dropout": Path_(precision, False, "sdpa", 1, False, False),  # today's precision, nn.Dropout
    "sdpa": Path_(precision, True, "sdpa", 1, False, False),  # and the sparse dropout sampler
    "eager": Path_(precision, True, "eager", 1, False, False),  # the same with model.attention eager
    "now": Path_(precision, True, "eager_fp32", 1, False, False),  # eager_fp32, the 16 in one micro-batch
    "now_halves": Path_(precision, True, "eager_fp32", 2, False, False),  # 8 x 2, a pass each
    "packed": Path_(precision, True, "eager_fp32", 2, True, False),  # 8 x 2 in one packed pass
    "fused": Path_(precision, True, "eager_fp32", 2, True, True),  # and fused LoRA layers
    "norms": Path_(precision, True, "eager_fp32", 2, True, True, True),  # and fused norms: the cpu profile
}
PROFILE = "norms"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


# ------------------------------------------------------------------------------------------- the peak
def matmul_rate(tokens: int, fan_in: int, fan_out: int, dtype: torch.dtype, threads: int) -> float:
    """GFLOP/s of ``F.linear`` on a (tokens, fan_in) input and a (fan_out, fan_in) weight, on ``threads``
    threads: the median of 5 timed runs of about 0.1 s each after a warm-up."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.randn(tokens, fan_in).to(dtype)
        w = torch.randn(fan_out, fan_in).to(dtype)
        torch.nn.functional.linear(x, w)
        start = time.perf_counter()
        torch.nn.functional.linear(x, w)
        reps = max(1, int(0.1 / max(time.perf_counter() - start, 1e-6)))
        rates = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(reps):
                torch.nn.functional.linear(x, w)
            rates.append(2 * tokens * fan_in * fan_out * reps / (time.perf_counter() - start) / 1e9)
        return sorted(rates)[2]
    finally:
        torch.set_num_threads(before)


def peak_round(tokens: int, hidden: int, intermediate: int) -> dict[str, float]:
    """``"<dtype> <threads>t <in>x<out>"`` -> GFLOP/s for bf16 and fp32, 1 and 2 threads, both MLP shapes."""
    out = {}
    for dtype_name, dtype in DTYPES.items():
        for threads in (1, 2):
            for fan_in, fan_out in ((hidden, intermediate), (intermediate, hidden)):
                key = f"{dtype_name} {threads}t {fan_in}x{fan_out}"
                out[key] = matmul_rate(tokens, fan_in, fan_out, dtype, threads)
    return out


def base_matmul_seconds(model: Any, sizes: Sequence[int]) -> float:
    """Seconds of the frozen base's linear products alone at a step's shapes: every layer's weights (the
    model's own, in their dtype) times a random input of each of ``sizes`` tokens (one per forward pass: the
    profile's packed pass holds both micro-batches' prefixes and padded rows), forward (``F.linear``) and
    backward for the activations (``dY @ W``). Nothing else of a step runs: the time a step could shrink to
    if everything but these products were free (an optimistic bound: no LoRA, attention, norms, optimiser)."""
    names = set(linear_parameters(model.config))  # q_proj ... down_proj, wrapped by LoRA or not
    weights = [
        getattr(m, "base_layer", m).weight for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in names
    ]
    sizes = [t for t in sizes if t]
    inputs = {(t, w.shape[1], w.dtype): None for t in sizes for w in weights}
    inputs = {key: torch.randn(key[0], key[1]).to(key[2]) for key in inputs}  # drawn before the clock starts
    start = time.perf_counter()
    with torch.no_grad():
        for tokens in sizes:
            for w in weights:
                y = torch.nn.functional.linear(inputs[tokens, w.shape[1], w.dtype], w)
                torch.mm(y, w)  # dX = dY @ W: the gradient's shape is the output's
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------------ the FLOPs
def linear_parameters(config: Any) -> dict[str, tuple[int, int]]:
    """(fan_in, fan_out) of each linear layer of one decoder layer of a LLaMA-shaped model."""
    h, i = config.hidden_size, config.intermediate_size
    head = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * head, config.num_key_value_heads * head
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def train_flops(
    config: Any,
    lora_r: int,
    targets: Sequence[str],
    prefix_len: int,
    suffix_lengths: Sequence[int],
    answer_tokens: int,
    checkpointing: bool = False,
) -> dict[str, float]:
    """FLOPs of one training micro-batch (forward + backward) on its useful tokens, by part (see the module
    docstring); ``"total"`` sums them."""
    shapes = linear_parameters(config)
    layers = config.num_hidden_layers
    base = layers * sum(a * b for a, b in shapes.values())
    lora = layers * sum(lora_r * (shapes[t][0] + shapes[t][1]) for t in targets if t in shapes)
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    width = config.num_attention_heads * head
    tokens = prefix_len + sum(suffix_lengths)
    # causal context of every useful token: 1..p for the prefix, p + 1 .. p + n for a row's n suffix tokens
    context = prefix_len * (prefix_len + 1) / 2 + sum(
        n * prefix_len + n * (n + 1) / 2 for n in suffix_lengths
    )
    parts = {
        "base_forward": 2.0 * base * tokens,
        "base_backward_activations": 2.0 * base * tokens,
        "recomputation": 2.0 * base * tokens if checkpointing else 0.0,
        "lora": 6.0 * lora * tokens,
        "attention": 12.0 * layers * width * context,
        "output_projection": 4.0 * config.vocab_size * config.hidden_size * answer_tokens,
    }
    parts["total"] = sum(parts.values())
    parts["tokens"] = tokens
    return parts


# ---------------------------------------------------------------------------------------- the training
class Trainee:
    """One training path: a fresh LoRA model, its AdamW, and the context its micro-batches run in."""

    def __init__(self, config: Any, path: str):
        self.config, self.path = config, path
        spec = PATHS[path]
        self.context, self.passes, self.packed = spec.context, spec.passes, spec.packed
        self.loaded = loading.load_model(
            config.model.name, config.model.dtype, config.model.quantization, attention=spec.attention
        )
        # what the trainer multiplies in on this machine (train.precision; auto: fp32 on a CPU without bf16
        # units), on fp32 copies of the same weights when that is fp32, as the trainer holds them for a run
        self.dtype, self.dtype_reason = loading.training_dtype(config.train.precision, config.model.dtype)
        if self.dtype == "fp32":
            self.loaded.model.to(torch.float32)
        loop.set_seed(config.train.seed)  # the same LoRA initialisation for every path
        lora = config.lora
        self.model = loading.add_lora(
            self.loaded.model, lora.r, lora.alpha, lora.dropout, lora.target_modules
        )
        if not spec.sparse:  # peft's own nn.Dropout back where add_lora installed SparseDropout
            replace_lora_dropout(self.model, SparseDropout, torch.nn.Dropout)
        if not spec.fused:  # peft's own LoRA forward back where add_lora installed the fused one
            use_peft_forward(self.model)
        if not spec.norms:  # transformers' own norms back where add_lora installed the fused ones
            use_transformers_norms(self.model)
        # listed once, as the trainer does (training_precision walks the model for them when not given)
        self.layers = training_loss.tuner_layers(self.model) if spec.norms else None
        self.model.train()  # once, as the trainer: a pass does not walk the model to set its mode
        params = [p for p in self.model.parameters() if p.requires_grad]
        t = config.train
        self.optimizer = torch.optim.AdamW(
            params, lr=t.lr, betas=tuple(t.adam_betas), weight_decay=t.weight_decay
        )
        self.checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in self.model.modules())

    def _context(self) -> contextlib.AbstractContextManager:
        """The context a pass of this path runs in."""
        if self.layers is None:
            return self.context(self.model, self.dtype)
        return self.context(self.model, self.dtype, self.layers)

    def loss(
        self, prepared: Any, batch: tuple[str, list[int]], seed: int, backward: bool = False
    ) -> torch.Tensor:
        """The micro-batch's training loss (dropout seeded with ``seed``), in this path's context, in this
        path's passes (their mean, as the trainer accumulates them); ``backward`` runs each pass's backward."""
        prompts, answers = prompts_and_answers(prepared, batch)
        torch.manual_seed(seed)
        parts = in_passes(list(range(len(prompts))), self.passes)
        if (
            self.packed
        ):  # the parts as micro-batches of one packed pass, each its own mean, weighted as accumulated
            with self._context():
                total, _ = training_loss.packed_answer_loss(
                    self.model,
                    [([prompts[j] for j in part], [answers[j] for j in part]) for part in parts],
                    [1.0 / len(parts)] * len(parts),
                    self.loaded.tokenizer.pad_token_id,
                )
                if backward:
                    total.backward()
            return total.detach()
        total = torch.zeros(())
        for part in parts:
            with self._context():
                loss, _ = training_loss.answer_loss(
                    self.model,
                    [prompts[j] for j in part],
                    [answers[j] for j in part],
                    self.loaded.tokenizer.pad_token_id,
                )
                if backward:
                    (loss / self.passes).backward()
            total = total + loss.detach() / self.passes
        return total

    def trainer_step(
        self, prepared: Any, micro_batches: Sequence[tuple[str, list[int]]], seed: int
    ) -> dict[str, float]:
        """One optimiser step as the trainer runs it (a packed path only): ``micro_batches`` (each ``(corpus,
        positions)``, its own prefix) in one packed pass, each its own mean, weighted as accumulated."""
        start = time.perf_counter()
        torch.manual_seed(seed)
        batches = [prompts_and_answers(prepared, mb) for mb in micro_batches]
        with self._context():
            total, _ = training_loss.packed_answer_loss(
                self.model, batches, [1.0 / len(batches)] * len(batches), self.loaded.tokenizer.pad_token_id
            )
            total.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"seconds": time.perf_counter() - start, "loss": float(total.detach())}

    def step(self, prepared: Any, batch: tuple[str, list[int]], seed: int) -> dict[str, float]:
        """Forward, backward and AdamW on one micro-batch (dropout seeded with ``seed``): seconds, loss."""
        start = time.perf_counter()
        loss = self.loss(prepared, batch, seed, backward=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"seconds": time.perf_counter() - start, "loss": float(loss)}


def epoch_steps(prepared: Any, config: Any, count: int) -> list[list[tuple[str, list[int]]]]:
    """``count`` optimiser steps of the real first epoch as the trainer forms them (``train.grad_accum``
    consecutive micro-batches of ``train.micro_batch_size``, seed ``train.seed``), evenly spread over it."""
    t = config.train
    micro = training_loss.micro_batches(
        prepared.examples["train"], t.micro_batch_size, t.seed, t.group_by_length
    )
    steps = [micro[i : i + t.grad_accum] for i in range(0, len(micro), t.grad_accum)]
    return [steps[round(k * (len(steps) - 1) / max(count - 1, 1))] for k in range(count)]


def in_passes(positions: list[int], passes: int) -> list[list[int]]:
    """``positions`` cut into ``passes`` consecutive parts (the first ones one longer when it does not divide)."""
    size = -(-len(positions) // passes)
    return [positions[i : i + size] for i in range(0, len(positions), size)]


def flops_key(passes: int) -> str:
    """Where a round keeps the FLOPs of a micro-batch run in ``passes`` passes (each pass its own prefix)."""
    return "flops" if passes == 1 else f"flops_in_{passes}_passes"


def prompts_and_answers(
    prepared: Any, batch: tuple[str, list[int]]
) -> tuple[list[list[int]], list[list[int]]]:
    """A micro-batch ``(corpus, example positions)`` of the training split as the loss takes it: (prompt ids,
    answer ids)."""
    name, idx = batch
    items = [prepared.examples["train"][name][j] for j in idx]
    return [e.prompt_ids for e in items], [prepared.builders[name].answer_ids[e.label_id] for e in items]


def batch_shape(prepared: Any, batch: tuple[str, list[int]]) -> tuple[int, list[int], int]:
    """(shared prefix length, suffix lengths with the answer, answer tokens) as ``answer_loss`` runs it."""
    prompts, answers = prompts_and_answers(prepared, batch)
    p = engine.common_prefix_length(prompts)
    suffixes = [len(q) - p + len(a) for q, a in zip(prompts, answers, strict=True)]
    return p, suffixes, sum(len(a) for a in answers)


def other_processes() -> list[str]:
    """The busiest other processes now (``ps``: CPU %, nice, command, cut to 120 characters)."""
    try:
        lines = subprocess.run(
            ["ps", "-eo", "pid,pcpu,ni,args", "--sort=-pcpu"], capture_output=True, text=True, timeout=10
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    own = str(os.getpid())
    return [" ".join(line.split()[1:])[:120] for line in lines if line.split()[0] != own][:6]


def fastest(rounds: list[dict[str, Any]], dtypes: Sequence[str]) -> str:
    """The 2-thread peak key ("<dtype> 2t <shape>") of one of ``dtypes`` with the largest mean over the counted
    rounds (round 0 excluded)."""
    keys = [k for k in rounds[0]["peak"] if k.split()[0] in dtypes and k.split()[1] == "2t"]
    return max(keys, key=lambda k: sum(r["peak"][k] for r in rounds[1:]))


def loss_difference(rounds: list[dict[str, Any]], a: str, b: str, how: Callable) -> float:
    """``how`` (mean or max) of |loss of path a - loss of path b| over the rounds, the warm-up included."""
    return how([abs(r[a]["loss"] - r[b]["loss"]) for r in rounds])


def summarise(rounds: list[dict[str, Any]], peak_key: str) -> dict[str, Any]:
    """Per path: tokens/s, GFLOP/s and the fraction of the peak over the counted rounds (round 0 excluded)."""
    counted = rounds[1:]
    peak = sum(r["peak"][peak_key] for r in counted) / len(counted)
    out: dict[str, Any] = {"peak_gflops": round(peak, 1), "peak": peak_key}

    def rate(timed: str, counts: str) -> dict[str, float]:
        """What ``timed``'s seconds and ``counts``' FLOP record of the counted rounds give."""
        seconds = sum(r[timed]["seconds"] for r in counted)
        tokens = sum(r[counts]["tokens"] for r in counted)
        flops = sum(r[counts]["total"] for r in counted)
        return {
            "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1),
            "gflops": round(flops / seconds / 1e9, 1),
            "fraction_of_peak": round(flops / seconds / 1e9 / peak, 3),
        }

    for path, spec in PATHS.items():
        # a prefix counts once per micro-batch (each runs its own, packed or not)
        out[path] = rate(path, flops_key(spec.passes))
    out["epoch"] = {"path": PROFILE, **rate("epoch", "epoch_flops")}
    # the bound: every useful FLOP of the profile's step in the time of the base's linear products alone at
    # the profile's shapes (its packed pass: both micro-batches' prefixes and rows as one product per weight)
    key = flops_key(PATHS[PROFILE].passes)
    base_seconds = sum(r["base_matmuls"]["seconds"] for r in counted)
    base_flops = sum(r[key]["base_forward"] + r[key]["base_backward_activations"] for r in counted)
    flops = sum(r[key]["total"] for r in counted)
    out["base_matmuls"] = {
        "path": PROFILE,
        "seconds": round(base_seconds, 2),
        "gflops": round(base_flops / base_seconds / 1e9, 1),
        "fraction_of_peak": round(base_flops / base_seconds / 1e9 / peak, 3),
        "ceiling_fraction_of_peak": round(flops / base_seconds / 1e9 / peak, 3),
        "share_of_profile": round(base_seconds / out[PROFILE]["seconds"], 3),
    }
    ratio = lambda a, b: round(out[a]["seconds"] / out[b]["seconds"], 3)  # noqa: E731
    out["speedup"] = ratio("before", "now")
    out["sparse_dropout_speedup"] = ratio("torch_dropout", "sdpa")
    out["eager_attention_speedup"] = ratio("sdpa", "eager")
    out["eager_fp32_speedup"] = ratio("sdpa", "now")
    # the same utterances in one micro-batch against two (the micro-batch of 16 against 8 x 2)
    out["one_pass_speedup"] = ratio("now_halves", "now")
    # 8 x 2 in one packed pass against a pass each; fused LoRA layers against peft's
    out["packed_speedup"] = ratio("now_halves", "packed")
    out["fused_lora_speedup"] = ratio("packed", "fused")
    out["fused_norms_speedup"] = ratio("fused", "norms")
    out["profile_speedup_over_halves"] = ratio("now_halves", PROFILE)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_options(parser)
    parser.add_argument("--micro-batches", type=int, default=7, help="rounds, the first a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training steps")
    parser.add_argument("--matmul-tokens", type=int, default=512, help="rows of the peak's matmuls")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "train_peak_cpu.json"))
    args = parser.parse_args(argv)

    config = config_from_options(args)
    torch.set_num_threads(args.threads)
    corpora = readers.load_corpora(config.data.datasets, args.data_dir)
    trainees = {path: Trainee(config, path) for path in PATHS}
    tokenizer = trainees["now"].loaded.tokenizer
    model_config = trainees["now"].loaded.model.config
    prepared = prompts.prepare_examples(config, tokenizer, corpora, ("train",))
    size = config.train.batch_size  # a round: one optimiser step's utterances, of one corpus
    epoch = training_loss.micro_batches(
        prepared.examples["train"], size, config.train.seed, config.train.group_by_length
    )
    batches = [b for b in epoch if len(b[1]) == size][: args.micro_batches]
    trainer_steps = epoch_steps(prepared, config, len(batches))
    epoch_trainee = Trainee(config, PROFILE)  # its own model: the paths' comparisons keep their batches
    out = Path(args.out)
    header = runs.benchmark_header("train_peak", argv, model=config.model.name)
    checkpointing = trainees["now"].checkpointing
    started = {"others_at_start": other_processes(), "load_average_at_start": os.getloadavg()}
    rounds: list[dict[str, Any]] = []
    for i, batch in enumerate(batches):
        busy = loading.busy_cores()
        peak = peak_round(args.matmul_tokens, model_config.hidden_size, model_config.intermediate_size)
        record: dict[str, Any] = {
            "round": i,
            "busy_cores_before": busy,
            "peak": {k: round(v, 1) for k, v in peak.items()},
        }
        for passes in sorted({spec.passes for spec in PATHS.values()}):
            parts = [
                train_flops(model_config, config.lora.r, config.lora.target_modules, *batch_shape(prepared, (batch[0], part)),
                            checkpointing)
                for part in in_passes(batch[1], passes)
            ]  # fmt: skip
            record[flops_key(passes)] = {k: sum(part[k] for part in parts) for k in parts[0]}
        # The scale of noise the paths' loss difference is read against: the same weights and batch, another
        # dropout draw (a lower bound of the seed-to-seed spread, which also varies initialisation and order).
        with torch.no_grad():
            record["before_other_dropout_loss"] = float(
                trainees["before"].loss(prepared, batch, seed=5000 + i)
            )
        order = list(PATHS)[i % len(PATHS) :] + list(PATHS)[: i % len(PATHS)]  # each path leads in turn
        for path in order:
            record[path] = trainees[path].step(prepared, batch, seed=1000 + i)
        parts = [
            train_flops(model_config, config.lora.r, config.lora.target_modules, *batch_shape(prepared, mb),
                        checkpointing)
            for mb in trainer_steps[i]
        ]  # fmt: skip
        record["epoch_flops"] = {k: sum(part[k] for part in parts) for k in parts[0]}
        record["epoch_step"] = [[name, idx] for name, idx in trainer_steps[i]]
        record["epoch"] = epoch_trainee.trainer_step(prepared, trainer_steps[i], seed=3000 + i)
        packed_tokens = sum(
            hp + len(hs) * max(hs)
            for hp, hs, _ in (batch_shape(prepared, (batch[0], part)) for part in in_passes(batch[1], 2))
        )
        record["base_matmuls"] = {"seconds": base_matmul_seconds(trainees[PROFILE].model, [packed_tokens])}
        rounds.append(record)
        print(
            f"round {i}: busy {busy if busy is None else round(busy, 2)} cores, bf16 2t peak "
            f"{max(v for k, v in peak.items() if k.startswith('bf16 2t')):.0f} GFLOP/s, "
            + ", ".join(
                f"{path} {record[path]['seconds']:.1f} s loss {record[path]['loss']:.5f}" for path in PATHS
            )
            + f", epoch step {record['epoch']['seconds']:.1f} s",
            flush=True,
        )
    # the peak: the fastest 2-thread matmul over the counted rounds, of either dtype and shape (the larger peak,
    # the stricter fraction): bf16 where the CPU has bf16 units, fp32 where it has none (there bf16 is emulated)
    peak_key = fastest(rounds, list(DTYPES))
    summary = summarise(rounds, peak_key)
    summary["bf16_2t_peak"] = fastest(rounds, ["bf16"])
    tokens = sum(r["flops"]["tokens"] for r in rounds[1:])
    flops = sum(r["flops"]["total"] for r in rounds[1:])
    result = {
        **header,
        "settings": {
            "micro_batch_size": size,
            "micro_batches_counted": len(batches) - 1,
            "training_threads": args.threads,
            "matmul_tokens": args.matmul_tokens,
            "lora_r": config.lora.r,
            "target_modules": list(config.lora.target_modules),
            "dtype": config.model.dtype,
            "training_dtype": epoch_trainee.dtype,
            "training_dtype_reason": epoch_trainee.dtype_reason,
            "activation_checkpointing": checkpointing,
        },
        "flops_per_useful_token": round(flops / tokens / 1e9, 4),
        "flops_assumed": "per useful (non-pad) token: base linear layers 2x params forward + 2x backward "
        "(activations only, frozen weights), LoRA 6x its params, attention 12 x context x width per layer, "
        "output projection 4 x vocab x hidden per answer token, +2x base params if checkpointing",
        "machine": {
            **started,
            "others_at_end": other_processes(),
            "load_average_at_end": os.getloadavg(),
        },
        "summary": summary,
        "peak_mean_gflops": {
            k: round(sum(r["peak"][k] for r in rounds[1:]) / (len(rounds) - 1), 1) for k in rounds[0]["peak"]
        },
        # precision: the same dropout masks (nn.Dropout, same seed), so only the arithmetic differs
        "loss_difference_max": loss_difference(rounds, "before", "torch_dropout", max),
        "loss_difference_mean": loss_difference(rounds, "before", "torch_dropout", mean),
        # eager attention: the same masks (SparseDropout, same seed), attention computed another way
        "eager_loss_difference_mean": loss_difference(rounds, "sdpa", "eager", mean),
        "eager_loss_difference_max": loss_difference(rounds, "sdpa", "eager", max),
        "eager_fp32_loss_difference_mean": loss_difference(rounds, "sdpa", "now", mean),
        "eager_fp32_loss_difference_max": loss_difference(rounds, "sdpa", "now", max),
        # the sparse sampler draws other masks: its difference is read against another draw's
        "sparse_dropout_loss_difference_mean": loss_difference(rounds, "torch_dropout", "sdpa", mean),
        # two passes of half: other masks (drawn per pass) and each half's own mean over its answer tokens
        "halves_loss_difference_mean": loss_difference(rounds, "now", "now_halves", mean),
        # one packed pass: other masks (drawn over the packed sequence), the same loss function
        "packed_loss_difference_mean": loss_difference(rounds, "now_halves", "packed", mean),
        # fused LoRA layers: the same masks, rounding only
        "fused_loss_difference_mean": loss_difference(rounds, "packed", "fused", mean),
        "fused_loss_difference_max": loss_difference(rounds, "packed", "fused", max),
        # fused norms: the same operations forward, the backward written out
        "norms_loss_difference_max": loss_difference(rounds, "fused", "norms", max),
        "dropout_noise_mean": mean(abs(r["before"]["loss"] - r["before_other_dropout_loss"]) for r in rounds),
        "rounds": rounds,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nFLOPs per useful token: {result['flops_per_useful_token']:.3f} GFLOP ({result['flops_assumed']})"
    )
    print("matmul GFLOP/s (mean over the counted rounds):")
    for k, v in result["peak_mean_gflops"].items():
        print(f"  {k:<22}{v:>8.1f}")
    print(
        f"\ntraining multiplies in {epoch_trainee.dtype} ({epoch_trainee.dtype_reason})\n"
        f"{'path':<15}{'tokens/s':>10}{'GFLOP/s':>10}{'of peak':>9}   (peak: {peak_key}, {summary['peak_gflops']})"
    )
    for path in PATHS:
        s = summary[path]
        print(
            f"{path:<15}{s['tokens_per_second']:>10.1f}{s['gflops']:>10.1f}{100 * s['fraction_of_peak']:>8.1f}%"
        )
    e = summary["epoch"]
    print(
        f"{'epoch':<15}{e['tokens_per_second']:>10.1f}{e['gflops']:>10.1f}{100 * e['fraction_of_peak']:>8.1f}%"
        f"   ({PROFILE} on the trainer's own steps, spread over the epoch: {len(batches) - 1} counted)"
    )
    bound = summary["base_matmuls"]
    print(
        f"the base's linear products alone at the {PROFILE} path's shapes: {bound['seconds']:.2f} s "
        f"({100 * bound['share_of_profile']:.0f}% of {PROFILE}'s time), {bound['gflops']:.1f} GFLOP/s "
        f"({100 * bound['fraction_of_peak']:.1f}% of the peak); a step reduced to them would reach "
        f"{100 * bound['ceiling_fraction_of_peak']:.1f}% of the peak"
    )
    print(
        f"speed-up now / before: {summary['speedup']}x: the sparse dropout sampler "
        f"{summary['sparse_dropout_speedup']}x (torch_dropout / sdpa), eager attention "
        f"{summary['eager_attention_speedup']}x (sdpa / eager), in fp32 {summary['eager_fp32_speedup']}x "
        f"(sdpa / now); one micro-batch against two {summary['one_pass_speedup']}x (now_halves / now); "
        f"8 x 2 in one packed pass {summary['packed_speedup']}x (now_halves / packed), fused LoRA layers "
        f"{summary['fused_lora_speedup']}x (packed / fused), fused norms {summary['fused_norms_speedup']}x "
        f"(fused / norms), all three {summary['profile_speedup_over_halves']}x\n"
        f"loss difference torch_dropout - before (same masks, precision only): mean "
        f"{result['loss_difference_mean']:.5f}, largest {result['loss_difference_max']:.5f}; another dropout "
        f"draw moves the loss by {result['dropout_noise_mean']:.5f} on average, the sparse sampler's other "
        f"masks by {result['sparse_dropout_loss_difference_mean']:.5f}; eager - sdpa (same masks, attention "
        f"only): mean {result['eager_loss_difference_mean']:.5f}, largest {result['eager_loss_difference_max']:.5f}; "
        f"now (eager_fp32) - sdpa: mean {result['eager_fp32_loss_difference_mean']:.5f}, largest "
        f"{result['eager_fp32_loss_difference_max']:.5f}; now_halves - now: mean "
        f"{result['halves_loss_difference_mean']:.5f}; packed - now_halves (other masks): mean "
        f"{result['packed_loss_difference_mean']:.5f}; fused - packed (same masks, rounding only): mean "
        f"{result['fused_loss_difference_mean']:.5f}, largest {result['fused_loss_difference_max']:.5f}; "
        f"norms - fused (same masks): largest {result['norms_loss_difference_max']:.5f}"
    )
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()

"""LoRA dropout on CPU: ``F.dropout`` (what peft's ``nn.Dropout`` runs) against ``model.dropout.sparse_dropout``
(what ``add_lora`` puts in its place), side by side in one run, at the embedded model's LoRA input shapes.

    nice -n 5 dialoguellm benchmark lora_dropout --rounds 7 --threads 1

Each LoRA layer's input, (micro-batch, tokens, 576), goes through the dropout, then LoRA's A matrix (576 -> r).
Every round times, for each shape and dtype (bf16, fp32) and each sampler, in an order that swaps every round:

- ``dropout``: the dropout alone (forward, no autograd);
- ``lora_a``: dropout and the A product forward and backward, the input and A requiring gradients, as in a
  training step (the dropout's backward included);

and, for scale, the base layer's own forward product 576 -> 1536 (``gate_proj``/``up_proj``, frozen) on the
same input. A timing is the mean of ``--reps`` calls; the table gives the median over the counted rounds (round
0 is a warm-up) and the ratio F.dropout / sparse. Both samplers draw the same distribution (the dropped
fraction of the sparse one is printed too); they differ in the random numbers drawn: one per element for
``F.dropout`` (``aten::bernoulli_``), about p per element for the sparse one. A JSON is written only with
``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from dialoguellm import runs
from dialoguellm.model import loading
from dialoguellm.model.dropout import sparse_dropout

HIDDEN, INTERMEDIATE = 576, 1536  # the embedded model (SmolLM2-135M)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SAMPLERS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "F.dropout": lambda x, p: F.dropout(x, p, training=True),
    "sparse": sparse_dropout,
}


def seconds_per_call(fn: Callable[[], Any], reps: int) -> float:
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def case_round(x: torch.Tensor, a: torch.Tensor, base: torch.Tensor, p: float, reps: int, flip: bool) -> dict:
    """One round of one case: seconds per call of each sampler's ``dropout`` and ``lora_a``, the base product."""
    out: dict[str, float] = {}
    grad_x = x.detach().clone().requires_grad_()
    grad_a = a.detach().clone().requires_grad_()
    names = list(SAMPLERS)[::-1] if flip else list(SAMPLERS)
    for name in names:
        sampler = SAMPLERS[name]

        def dropout_only(sampler=sampler) -> None:
            with torch.no_grad():
                sampler(x, p)

        def lora_a(sampler=sampler) -> None:
            F.linear(sampler(grad_x, p), grad_a).sum().backward()

        out[f"{name} dropout"] = seconds_per_call(dropout_only, reps)
        out[f"{name} lora_a"] = seconds_per_call(lora_a, reps)
    with torch.no_grad():
        out["base 576x1536"] = seconds_per_call(lambda: F.linear(x, base), reps)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds, the first a warm-up (at least 2)")
    parser.add_argument("--reps", type=int, default=20, help="calls per timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--micro-batches", default="8,16", help="micro-batch sizes, comma-separated")
    parser.add_argument("--tokens", type=int, default=120, help="tokens per row")
    parser.add_argument("--p", type=float, default=0.05, help="dropout probability (the paper's 0.05)")
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank r (A is r x 576)")
    parser.add_argument("--out", default=None, help="JSON result file (none written without it)")
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (round 0 is a warm-up)")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    header = runs.benchmark_header("lora_dropout", argv)
    cases: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for batch in (int(b) for b in args.micro_batches.split(",")):
        for dtype_name, dtype in DTYPES.items():
            x = torch.randn(batch, args.tokens, HIDDEN).to(dtype)
            a = (torch.randn(args.rank, HIDDEN) / HIDDEN**0.5).to(dtype)
            base = (torch.randn(INTERMEDIATE, HIDDEN) / HIDDEN**0.5).to(dtype)
            cases[f"{batch}x{args.tokens}x{HIDDEN} {dtype_name}"] = (x, a, base)
    fractions = {
        name: float((sparse_dropout(x, args.p) == 0).float().mean()) for name, (x, _, _) in cases.items()
    }

    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        busy = loading.busy_cores(0.2)
        record: dict[str, Any] = {"round": i, "busy_cores_before": busy}
        for name, (x, a, base) in cases.items():
            record[name] = case_round(x, a, base, args.p, args.reps, flip=i % 2 == 1)
        rounds.append(record)
        print(f"round {i}{' (warm-up)' if i == 0 else ''}: busy {busy if busy is None else round(busy, 2)} cores",
              flush=True)  # fmt: skip

    summary: dict[str, dict[str, float]] = {}
    for name in cases:
        timings = {k: statistics.median(r[name][k] for r in rounds[1:]) for k in rounds[0][name]}
        entry = {f"{k} ms": round(1e3 * v, 3) for k, v in timings.items()}
        for kind in ("dropout", "lora_a"):
            entry[f"{kind} ratio"] = round(timings[f"F.dropout {kind}"] / timings[f"sparse {kind}"], 2)
        entry["sparse dropped fraction"] = round(fractions[name], 5)
        summary[name] = entry

    print(
        f"\np = {args.p}, r = {args.rank}, {args.threads} thread(s), median of {args.rounds - 1} rounds x "
        f"{args.reps} calls; ms per call (ratio: F.dropout / sparse)"
    )
    head = f"{'input':<20}{'kind':<9}{'F.dropout':>11}{'sparse':>9}{'ratio':>7}{'base fwd':>10}"
    print(head)
    for name, entry in summary.items():
        for kind in ("dropout", "lora_a"):
            print(
                f"{name:<20}{kind:<9}{entry[f'F.dropout {kind} ms']:>11.3f}{entry[f'sparse {kind} ms']:>9.3f}"
                f"{entry[f'{kind} ratio']:>6.2f}x{entry['base 576x1536 ms']:>10.3f}"
            )
    print("dropped fraction of the sparse sampler: " + ", ".join(f"{k} {v['sparse dropped fraction']}"
                                                                  for k, v in summary.items()))  # fmt: skip
    result = {
        **header,
        "settings": {
            "p": args.p,
            "rank": args.rank,
            "tokens": args.tokens,
            "micro_batches": args.micro_batches,
            "rounds_counted": args.rounds - 1,
            "reps": args.reps,
        },
        "summary": summary,
        "rounds": rounds,
    }
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()

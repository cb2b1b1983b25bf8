"""Where a training step's CPU time goes: ``torch.profiler`` over a few micro-batches of each training path of
``benchmarks/train_peak.py`` (from the path before issue 30 to the cpu profile's), the operators' shares of self CPU time.

    nice -n 5 dialoguellm benchmark train_profile --micro-batches 4 --threads 2

The first micro-batch of each path is a warm-up and not profiled; the paths alternate micro-batch by
micro-batch. Writes ``benchmarks/results/train_profile_cpu.json`` (the 15 costliest operators of each path, and
the matrix products' time split into LoRA's, with an operand of side r, and the others).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from dialoguellm import prompts, runs
from dialoguellm.config import add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.training import loss as training_loss

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("train_peak", HERE / "train_peak.py")
train_peak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_peak)


def is_lora_product(shapes: list[list[int]], rank: int) -> bool:
    """Whether an ``aten::mm`` with these operand shapes is a LoRA product: one of its matrices has a side of
    the rank (x @ A^T, h @ B^T and their gradients); the base's products have sides of the model's widths and
    the token count. (A micro-batch of exactly ``rank`` tokens would be miscounted; the cpu profile's have more.)"""
    return any(len(s) == 2 and rank in s for s in shapes if s)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_options(parser)
    parser.add_argument("--micro-batches", type=int, default=4, help="per path, the first a warm-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "train_profile_cpu.json"))
    args = parser.parse_args(argv)

    config = config_from_options(args)
    torch.set_num_threads(args.threads)
    corpora = readers.load_corpora(config.data.datasets, args.data_dir)
    trainees = {path: train_peak.Trainee(config, path) for path in train_peak.PATHS}
    prepared = prompts.prepare_examples(config, trainees["now"].loaded.tokenizer, corpora, ("train",))
    size = config.train.batch_size  # one optimiser step's utterances, as train_peak's rounds
    epoch = training_loss.micro_batches(
        prepared.examples["train"], size, config.train.seed, config.train.group_by_length
    )
    batches = [b for b in epoch if len(b[1]) == size][: args.micro_batches]
    for trainee in trainees.values():  # warm-up
        trainee.step(prepared, batches[0], seed=1000)
    # operator -> [self CPU microseconds, calls], per path, summed over the profiled micro-batches
    totals: dict[str, dict[str, list[float]]] = {path: {} for path in trainees}
    # aten::mm split by its operands: a LoRA product has a dimension of the rank r (the base's do not)
    products: dict[str, dict[str, float]] = {path: {"lora": 0.0, "other": 0.0} for path in trainees}
    seconds = dict.fromkeys(trainees, 0.0)
    for i, batch in enumerate(batches[1:], start=1):
        for path in list(trainees) if i % 2 else list(trainees)[::-1]:
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                seconds[path] += trainees[path].step(prepared, batch, seed=1000 + i)["seconds"]
            for e in prof.key_averages(group_by_input_shape=True):  # an operator's shapes sum to its total
                entry = totals[path].setdefault(e.key, [0.0, 0])
                entry[0] += e.self_cpu_time_total
                entry[1] += e.count
                if e.key == "aten::mm":
                    kind = "lora" if is_lora_product(e.input_shapes, config.lora.r) else "other"
                    products[path][kind] += e.self_cpu_time_total
    result = {**runs.benchmark_header("train_profile", argv, model=config.model.name), "paths": {}}
    for path, ops in totals.items():
        total = sum(v[0] for v in ops.values())
        top = sorted(ops.items(), key=lambda kv: kv[1][0], reverse=True)[:15]
        result["paths"][path] = {
            "seconds": round(seconds[path], 2),
            "self_cpu_share": {k: round(v[0] / total, 4) for k, v in top},
            "calls": {k: v[1] for k, v in top},
            "mm_share": {k: round(v / total, 4) for k, v in products[path].items()},
        }
        print(f"\n{path}: {seconds[path]:.1f} s for {len(batches) - 1} micro-batches")
        for k, v in top[:10]:
            print(f"  {k:<60}{100 * v[0] / total:>6.1f}%{v[1]:>8}")
        print(
            f"  aten::mm: LoRA products {100 * products[path]['lora'] / total:.1f}%, the others (base linear "
            f"layers, output projection) {100 * products[path]['other'] / total:.1f}%"
        )
    out = Path(args.out)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()

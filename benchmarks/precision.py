"""Precision of label scoring: does a prediction depend on the arithmetic, the batch size or the batch order?

    dialoguellm benchmark precision --adapter runs/latest/training/adapter

On the dev splits of MELD and EmoryNLP (never test), the trained adapter scores every utterance in each
``eval.precision`` (``dialoguellm.scoring.engine.inference_context``): ``fp32`` (every weight computed in fp32, the
reference) and ``autocast`` (bf16 throughout, as training computes). Each precision runs four ways:

- ``batch16``: batches of 16 grouped by length (``eval.batch_size``, what evaluation does);
- ``shuffled16``: batches of 16 in a seeded random order (other neighbours, more padding);
- ``batch64``: batches of 64 grouped by length;
- ``batch1``: one utterance at a time, on a stratified subset (``--batch1-per-dataset``, default 300 per
  corpus: one at a time is slow, and all 2,063 would take longer than the rest together).

Every way and precision scores the same chunk of utterances before the next chunk starts, in an order that
rotates chunk by chunk, so a busy minute of the shared machine slows all of them alike; speeds are printed as
ratios to ``autocast``. Per corpus and pooled it reports each precision's agreement with ``fp32`` at
``batch16``, its agreement between ``batch16`` and each other way, the largest difference of the ranked
scores (the mean log-likelihood per token with ``eval.length_normalise``) and utterances/s, then picks the
cheapest precision that holds both targets (>= 99.5% with fp32, >= 99.5% across batches and orders). The JSON
(``--out``) is rewritten after every corpus of every way, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from dialoguellm import prompts, runs
from dialoguellm.config import EvalConfig, add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.labels import LABELS
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.scoring import engine, predictions

RESULTS = Path(__file__).resolve().parent / "results"
PRECISIONS = ("fp32", "autocast")
REFERENCE, BASELINE = "fp32", "autocast"
TARGET = 0.995
# name -> (batch size, grouped by length); batch1 runs on the subset only.
WAYS = {"batch16": (16, True), "shuffled16": (16, False), "batch64": (64, True), "batch1": (1, True)}


def stratified_subset(examples: list, k: int, seed: int) -> list[int]:
    """Positions of ``k`` examples stratified by gold label (all when k is 0 or more than there are)."""
    return prompts.sample_indices(len(examples), k, seed, [e.label_id for e in examples])


def score_chunk(model: Any, tok: Any, builder: Any, chunk: list, precision: str, way: str, seed: int, args):
    """Scores (N, L) of ``chunk`` in its own order, and the seconds they took, computed ``way``."""
    batch, grouped = WAYS[way]
    order = list(range(len(chunk)))
    if not grouped:
        random.Random(seed).shuffle(order)
    start = time.perf_counter()
    loglik = engine.score_examples(
        model,
        [chunk[i] for i in order],
        builder.answer_ids,
        tok.pad_token_id,
        batch,
        args.dtype,
        progress=False,
        precision=precision,
        group_by_length=grouped,
    )
    seconds = time.perf_counter() - start
    restored = np.empty_like(loglik)
    restored[order] = loglik
    return restored, seconds


def schedule(examples: dict, args) -> list[tuple[str, list[int]]]:
    """Chunks of (corpus, positions): each corpus in a seeded random order, corpora taking turns, so the
    utterances scored before any interruption are a random sample of both."""
    queues = {}
    for name, exs in examples.items():
        order = list(range(len(exs)))
        random.Random(f"{args.seed}:{name}").shuffle(order)
        queues[name] = [order[i : i + args.chunk] for i in range(0, len(order), args.chunk)]
    plan = []
    for round_ in range(max(len(q) for q in queues.values())):
        plan += [(name, q[round_]) for name, q in queues.items() if round_ < len(q)]
    return plan


def run_chunk(
    model, tok, builder, chunk: list, batch1: list, args, scores: dict, seconds: dict, c: int
) -> None:
    """Score one chunk every way in every precision (the order rotating), appending to ``scores``."""
    for way in args.ways:
        members = batch1 if way == "batch1" else chunk
        if not members:
            continue
        for k in range(len(args.precisions)):
            precision = args.precisions[(c + k) % len(args.precisions)]
            loglik, spent = score_chunk(model, tok, builder, members, precision, way, args.seed + c, args)
            if args.length_normalise:  # the scores evaluation ranks labels by
                loglik = predictions.length_normalised(loglik, builder.answer_ids)
            scores[way][precision].append(loglik)
            seconds[way][precision] += spent


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Share of equal argmax predictions and the largest score difference of two (N, L) score arrays."""
    if not len(a):
        return {"utterances": 0, "agreement": None, "max_abs_score_difference": None}
    return {
        "utterances": int(len(a)),
        "agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 5),
        "max_abs_score_difference": float(np.abs(a - b).max()),
    }


def corpus_entry(scores: dict, gold: np.ndarray, labels: list, precisions) -> dict:
    """Per precision: quality, agreement with fp32 and across ways, over the utterances scored so far.

    ``scores[way][precision]`` are (N, L) arrays in the order scored; ``batch1`` rows are the subset's rows of
    ``scores["batch1_base"]`` (the same utterances at batch16)."""
    entry: dict = {}
    base = scores["batch16"]
    for p in precisions:
        e: dict = {}
        metrics = classification_metrics(gold, base[p].argmax(1), labels)
        e["accuracy"] = round(metrics["accuracy"], 4)
        e["weighted_f1"] = round(metrics["weighted_f1"], 4)
        e["vs_fp32"] = compare(base[p], base[REFERENCE])
        for way in ("shuffled16", "batch64", "batch1"):
            if way in scores:
                reference = scores["batch1_base"][p] if way == "batch1" else base[p]
                e[f"{way}_vs_batch16"] = compare(scores[way][p], reference)
        entry[p] = e
    return entry


def pooled(per_corpus: dict, precisions) -> dict:
    """Agreements over both corpora together (weighted by utterances) and the largest differences."""
    out: dict = {}
    for p in precisions:
        e: dict = {}
        for key in ("vs_fp32", "shuffled16_vs_batch16", "batch64_vs_batch16", "batch1_vs_batch16"):
            parts = [c[p][key] for c in per_corpus.values() if c.get(p, {}).get(key, {}).get("utterances")]
            n = sum(x["utterances"] for x in parts)
            if parts and n:
                e[key] = {
                    "utterances": n,
                    "agreement": round(sum(x["agreement"] * x["utterances"] for x in parts) / n, 5),
                    "max_abs_score_difference": max(x["max_abs_score_difference"] for x in parts),
                }
        across = [e[k]["agreement"] for k in e if k != "vs_fp32"]
        e["agreement_across_batches"] = min(across) if across else None
        out[p] = e
    return out


def choose(pool: dict, speed: dict, precisions) -> dict:
    """The fastest precision (at batch16) that meets both targets, with each one's verdict."""
    verdict = {}
    for p in precisions:
        e = pool[p]
        with_fp32 = e.get("vs_fp32", {}).get("agreement")
        across = e.get("agreement_across_batches")
        verdict[p] = with_fp32 is not None and across is not None and min(with_fp32, across) >= TARGET
    meeting = [p for p in precisions if verdict[p] and speed.get(p)]
    chosen = max(meeting, key=lambda p: speed[p]) if meeting else None
    return {"meets_targets": verdict, "chosen": chosen}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_options(parser)
    parser.add_argument("--adapter", required=True, help="a trained LoRA adapter folder")
    parser.add_argument("--per-dataset", type=int, default=0, help="dev utterances per corpus (0 = all)")
    parser.add_argument(
        "--batch1-per-dataset",
        type=int,
        default=300,
        help="stratified dev utterances per corpus scored one at a time (0 = all of --per-dataset)",
    )
    parser.add_argument("--chunk", type=int, default=128, help="utterances per interleaved chunk")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=list(WAYS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order and the subset")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "precision_cpu.json"))
    args = parser.parse_args(argv)
    if "batch16" not in args.ways or REFERENCE not in args.precisions or BASELINE not in args.precisions:
        parser.error(
            "--ways needs batch16 and --precisions needs fp32 and autocast (the comparisons' anchors)"
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    config = config_from_options(args)
    loading.set_threads(config.model.num_threads)
    m = config.model
    args.dtype, args.length_normalise = m.dtype, config.eval.length_normalise
    loaded = loading.load_model(m.name, m.dtype, m.quantization)
    model = loading.load_adapter(loaded.model, args.adapter)
    tok = loaded.tokenizer
    corpora = readers.load_corpora_for(config, None, args.data_dir)
    config.data.dev_per_dataset = args.per_dataset
    prepared = prompts.prepare_examples(config, tok, corpora, ("dev",))
    examples = prepared.examples["dev"]
    subsets = {
        n: set(stratified_subset(ex, args.batch1_per_dataset, args.seed)) for n, ex in examples.items()
    }

    ways = [*args.ways, "batch1_base"] if "batch1" in args.ways else list(args.ways)
    scores = {n: {w: {p: [] for p in args.precisions} for w in ways} for n in examples}
    seconds = {w: dict.fromkeys(args.precisions, 0.0) for w in args.ways}
    done: dict = {n: [] for n in examples}
    plan = schedule(examples, args)
    started = time.time()
    result: dict = {}
    for c, (name, positions) in enumerate(plan):
        exs = examples[name]
        chunk = [exs[i] for i in positions]
        batch1 = [exs[i] for i in positions if i in subsets[name]]
        run_chunk(model, tok, prepared.builders[name], chunk, batch1, args, scores[name], seconds, c)
        if "batch1" in args.ways:  # the same utterances' batch16 scores, to compare with
            rows = [r for r, i in enumerate(positions) if i in subsets[name]]
            for p in args.precisions:
                scores[name]["batch1_base"][p].append(scores[name]["batch16"][p][-1][rows])
        done[name] += positions
        result = summarise(args, argv, config, examples, subsets, scores, seconds, done)
        result["chunks"] = f"{c + 1} of {len(plan)}"
        result["wall_seconds"] = round(time.time() - started, 1)
        write(result, args.out)
        print(f"chunk {c + 1}/{len(plan)}: {len(chunk)} {name} dev utterances, {time.time() - started:.0f} s")
    report(result, args.out)
    return result


def summarise(args, argv, config, examples, subsets, scores, seconds, done) -> dict:
    """The JSON of everything scored so far (``complete`` once every chunk ran)."""
    per_corpus = {}
    counts = dict.fromkeys(seconds, 0)
    for name, exs in examples.items():
        if not done[name]:
            continue
        width = len(LABELS[name])
        joined = {
            w: {p: np.concatenate(v) if v else np.zeros((0, width)) for p, v in by_p.items()}
            for w, by_p in scores[name].items()
        }
        gold = np.array([exs[i].label_id for i in done[name]])
        labels = list(LABELS[name])
        per_corpus[name] = corpus_entry(joined, gold, labels, args.precisions)
        per_corpus[name]["utterances"] = len(done[name])
        per_corpus[name]["dev_split_utterances"] = len(exs)
        per_corpus[name]["batch1_utterances"] = len(joined.get("batch1", {}).get(REFERENCE, []))
        for way in counts:
            counts[way] += len(joined[way][REFERENCE])
    speed = {
        way: {p: round(counts[way] / s, 2) if s else None for p, s in seconds[way].items()} for way in seconds
    }
    ratio = {
        way: {
            p: round(v / speed[way][BASELINE], 3) if v and speed[way][BASELINE] else None
            for p, v in s.items()
        }
        for way, s in speed.items()
    }
    pool = pooled(per_corpus, args.precisions)
    decision = choose(pool, speed.get("batch16", {}), args.precisions)
    complete = all(len(done[n]) == len(examples[n]) for n in examples)
    default = EvalConfig().precision
    return {
        **runs.benchmark_header(
            "precision", argv, complete=complete, model=config.model.name, adapter=args.adapter, split="dev"
        ),
        "settings": {
            "dtype": config.model.dtype,
            "length_normalise": config.eval.length_normalise,
            "chunk": args.chunk,
            "ways": {w: {"batch_size": WAYS[w][0], "grouped_by_length": WAYS[w][1]} for w in args.ways},
            "batch1_per_dataset": args.batch1_per_dataset,
            "batch1_note": "batch1 runs on a stratified subset of each corpus (seeded), compared with the same "
            "utterances at batch16",
            "target": TARGET,
        },
        "utterances_scored_per_way": counts,
        "seconds": {w: {p: round(s, 1) for p, s in v.items()} for w, v in seconds.items()},
        "utterances_per_second": speed,
        "speed_ratio_vs_autocast": ratio,
        "pooled": pool,
        "per_corpus": per_corpus,
        **decision,
        "config_default": default,
        "config_agrees": decision["chosen"] == default if complete else None,
    }


def write(result: dict, out: str) -> None:
    """Write the JSON atomically (a reader never sees half a file)."""
    from dialoguellm.io import write_json

    write_json(Path(out), result)


def report(result: dict, out: str) -> None:
    """Print the table docs/PRECISION.md shows (pooled over corpora; speed at batch16)."""
    speed, ratio = result["utterances_per_second"], result["speed_ratio_vs_autocast"]
    keys = ("vs_fp32", "shuffled16_vs_batch16", "batch64_vs_batch16", "batch1_vs_batch16")
    print(f"\n{'precision':<10}{'vs fp32':>9}{'shuf16':>9}{'bs64':>9}{'bs1':>9}{'max|diff|':>11}"
          f"{'utt/s':>8}{'ratio':>7}  (dev, both corpora)")  # fmt: skip
    for p, e in result["pooled"].items():
        cells = [e.get(k, {}).get("agreement") for k in keys]
        text = "".join(f"{100 * c:>8.2f}%" if c is not None else f"{'-':>9}" for c in cells)
        diff = e.get("vs_fp32", {}).get("max_abs_score_difference")
        s, r = speed.get("batch16", {}).get(p), ratio.get("batch16", {}).get(p)
        print(f"{p:<10}{text}{diff if diff is not None else float('nan'):>11.4f}"
              f"{s or float('nan'):>8.2f}{r or float('nan'):>7.3f}")  # fmt: skip
    print(f"meets targets: {result['meets_targets']}; chosen: {result['chosen']} "
          f"(config default: {result['config_default']}); complete: {result['complete']}")  # fmt: skip
    print(f"written to {out}")


if __name__ == "__main__":
    main()

"""Batch invariance of label scoring: does a prediction depend on the batch size or the batch order?

    dialoguellm benchmark precision --adapter runs/latest/training/adapter

On the dev splits of MELD and EmoryNLP (never test), the trained adapter scores every utterance in fp32, the
one arithmetic of label scoring (``dialoguellm.scoring.engine.inference_context``), four ways:

- ``batch16``: batches of 16 grouped by length (``eval.batch_size``, what evaluation does);
- ``shuffled16``: batches of 16 in a seeded random order (other neighbours, more padding);
- ``batch64``: batches of 64 grouped by length;
- ``batch1``: one utterance at a time, on a stratified subset (``--batch1-per-dataset``, default 300 per
  corpus: one at a time is slow, and all 2,063 would take longer than the rest together).

Every way scores the same chunk of utterances before the next chunk starts, in an order that rotates chunk by
chunk, so a busy minute of the shared machine slows all of them alike. Per corpus and pooled it reports the
agreement between ``batch16`` and each other way, the largest difference of the ranked scores (the mean
log-likelihood per token with ``eval.length_normalise``), dev accuracy and weighted F1 and utterances/s per
way, and whether the target holds (>= 99.5% across batches and orders). The JSON (``--out``) is rewritten
after every chunk, so an interrupted run keeps what it measured.

Until commit 78eb9d5 this benchmark also scored in bf16 autocast (``eval.precision: autocast``); its run at
commit 339d3f0 (the last with the option), ``benchmarks/results/precision_cpu.json``, is the measurement
behind the option's removal (docs/PRECISION.md). The default ``--out`` is another file, so it stays.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from dialoguellm import prompts, runs
from dialoguellm.config import add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.labels import LABELS
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.scoring import engine, predictions

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 0.995
# name -> (batch size, grouped by length); batch1 runs on the subset only.
WAYS = {"batch16": (16, True), "shuffled16": (16, False), "batch64": (64, True), "batch1": (1, True)}
OTHER_WAYS = ("shuffled16", "batch64", "batch1")


def stratified_subset(examples: list, k: int, seed: int) -> list[int]:
    """Positions of ``k`` examples stratified by gold label (all when k is 0 or more than there are)."""
    return prompts.sample_indices(len(examples), k, seed, [e.label_id for e in examples])


def score_chunk(model: Any, tok: Any, builder: Any, chunk: list, way: str, seed: int, args):
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
    """Score one chunk every way (the order rotating chunk by chunk), appending to ``scores``."""
    for k in range(len(args.ways)):
        way = args.ways[(c + k) % len(args.ways)]
        members = batch1 if way == "batch1" else chunk
        if not members:
            continue
        loglik, spent = score_chunk(model, tok, builder, members, way, args.seed + c, args)
        if args.length_normalise:  # the scores evaluation ranks labels by
            loglik = predictions.length_normalised(loglik, builder.answer_ids)
        scores[way].append(loglik)
        seconds[way] += spent


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Share of equal argmax predictions and the largest score difference of two (N, L) score arrays."""
    if not len(a):
        return {"utterances": 0, "agreement": None, "max_abs_score_difference": None}
    return {
        "utterances": int(len(a)),
        "agreement": round(float((a.argmax(1) == b.argmax(1)).mean()), 5),
        "max_abs_score_difference": float(np.abs(a - b).max()),
    }


def corpus_entry(scores: dict, gold: np.ndarray, labels: list) -> dict:
    """Quality at batch16 and its agreement with every other way, over the utterances scored so far.

    ``scores[way]`` are (N, L) arrays in the order scored; ``batch1`` rows are compared with
    ``scores["batch1_base"]`` (the same utterances at batch16)."""
    base = scores["batch16"]
    metrics = classification_metrics(gold, base.argmax(1), labels)
    entry: dict = {"accuracy": round(metrics["accuracy"], 4), "weighted_f1": round(metrics["weighted_f1"], 4)}
    for way in OTHER_WAYS:
        if way in scores:
            reference = scores["batch1_base"] if way == "batch1" else base
            entry[f"{way}_vs_batch16"] = compare(scores[way], reference)
    return entry


def pooled(per_corpus: dict) -> dict:
    """Agreements over both corpora together (weighted by utterances) and the largest differences."""
    out: dict = {}
    for key in (f"{way}_vs_batch16" for way in OTHER_WAYS):
        parts = [c[key] for c in per_corpus.values() if c.get(key, {}).get("utterances")]
        n = sum(x["utterances"] for x in parts)
        if parts and n:
            out[key] = {
                "utterances": n,
                "agreement": round(sum(x["agreement"] * x["utterances"] for x in parts) / n, 5),
                "max_abs_score_difference": max(x["max_abs_score_difference"] for x in parts),
            }
    across = [e["agreement"] for e in out.values()]
    out["agreement_across_batches"] = min(across) if across else None
    return out


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
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffled order and the subset")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "batch_invariance_cpu.json"))
    args = parser.parse_args(argv)
    if "batch16" not in args.ways:
        parser.error("--ways needs batch16 (what the other ways are compared with)")
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
    scores = {n: {w: [] for w in ways} for n in examples}
    seconds = dict.fromkeys(args.ways, 0.0)
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
            scores[name]["batch1_base"].append(scores[name]["batch16"][-1][rows])
        done[name] += positions
        result = summarise(args, argv, config, examples, scores, seconds, done)
        result["chunks"] = f"{c + 1} of {len(plan)}"
        result["wall_seconds"] = round(time.time() - started, 1)
        write(result, args.out)
        print(f"chunk {c + 1}/{len(plan)}: {len(chunk)} {name} dev utterances, {time.time() - started:.0f} s")
    report(result, args.out)
    return result


def summarise(args, argv, config, examples, scores, seconds, done) -> dict:
    """The JSON of everything scored so far (``complete`` once every chunk ran)."""
    per_corpus = {}
    counts = dict.fromkeys(seconds, 0)
    for name, exs in examples.items():
        if not done[name]:
            continue
        width = len(LABELS[name])
        joined = {w: np.concatenate(v) if v else np.zeros((0, width)) for w, v in scores[name].items()}
        gold = np.array([exs[i].label_id for i in done[name]])
        per_corpus[name] = corpus_entry(joined, gold, list(LABELS[name]))
        per_corpus[name]["utterances"] = len(done[name])
        per_corpus[name]["dev_split_utterances"] = len(exs)
        per_corpus[name]["batch1_utterances"] = len(joined.get("batch1", []))
        for way in counts:
            counts[way] += len(joined[way])
    speed = {way: round(counts[way] / s, 2) if s else None for way, s in seconds.items()}
    pool = pooled(per_corpus)
    across = pool["agreement_across_batches"]
    complete = all(len(done[n]) == len(examples[n]) for n in examples)
    return {
        **runs.benchmark_header(
            "precision", argv, complete=complete, model=config.model.name, adapter=args.adapter, split="dev"
        ),
        "settings": {
            "dtype": config.model.dtype,
            "precision": config.eval.precision,
            "length_normalise": config.eval.length_normalise,
            "chunk": args.chunk,
            "ways": {w: {"batch_size": WAYS[w][0], "grouped_by_length": WAYS[w][1]} for w in args.ways},
            "batch1_per_dataset": args.batch1_per_dataset,
            "batch1_note": "batch1 runs on a stratified subset of each corpus (seeded), compared with the same "
            "utterances at batch16",
            "target": TARGET,
        },
        "utterances_scored_per_way": counts,
        "seconds": {w: round(s, 1) for w, s in seconds.items()},
        "utterances_per_second": speed,
        "pooled": pool,
        "per_corpus": per_corpus,
        "meets_target": across is not None and across >= TARGET,
    }


def write(result: dict, out: str) -> None:
    """Write the JSON atomically (a reader never sees half a file)."""
    from dialoguellm.io import write_json

    write_json(Path(out), result)


def report(result: dict, out: str) -> None:
    """Print agreement with batch16 and speed per way (pooled over corpora)."""
    pool, speed = result["pooled"], result["utterances_per_second"]
    print(f"\n{'way':<12}{'vs batch16':>11}{'max|diff|':>11}{'utt/s':>8}  (dev, both corpora, fp32)")
    for way, s in speed.items():
        e = pool.get(f"{way}_vs_batch16", {})
        agree, diff = e.get("agreement"), e.get("max_abs_score_difference")
        cell = f"{100 * agree:>10.2f}%" if agree is not None else f"{'-':>11}"
        print(f"{way:<12}{cell}{diff if diff is not None else float('nan'):>11.2e}{s or float('nan'):>8.2f}")
    print(f"target >= {100 * TARGET:.1f}% across batches: {'met' if result['meets_target'] else 'NOT met'}; "
          f"complete: {result['complete']}")  # fmt: skip
    print(f"written to {out}")


if __name__ == "__main__":
    main()

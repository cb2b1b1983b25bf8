"""Inference weights and attention: ways to run the trained model for label scoring, side by side on dev.

    dialoguellm benchmark inference_weights --adapter runs/latest/training/adapter

On the embedded default (the cpu profile) and the dev splits of MELD and EmoryNLP (never test), the same
utterances are scored three ways in fp32, the one arithmetic of label scoring, interleaved chunk by chunk (the
order rotates) so that a slow minute of the machine hits all of them alike:

1. ``kv_heads_copied``: the LoRA adapter beside the bf16 base; attention copies the key/value heads once per
   query head (transformers' default with a mask);
2. ``gqa_in_place``: 1 plus grouped-query attention reading the shared heads in place
   (``engine.grouped_query_attention``): what evaluation does. It must give bit-identical scores to 1;
3. ``merged`` (tried, not adopted): the adapter folded into the base weights (peft ``merge_and_unload``) with
   2: one matrix product per layer instead of three, but the merged weights are bf16 like the base, and bf16
   keeps too few bits to hold the small LoRA update on top of a weight: the scores move.

Prints utterances/s and the speed ratio of each against 1, the largest score difference and the share of
predictions that agree with 1, and dev accuracy / weighted F1 per corpus (raw argmax, no biases), so speed
is never bought with quality. The JSON lands in benchmarks/results/ (``--out``).

Until commit 78eb9d5 the comparison ran in bf16 autocast (``eval.precision: autocast``, since removed) with a
fourth way, bf16 copies of the frozen fp32 LoRA weights; that run's file, without the provenance header, was
retired once this one ran (``git show f8baad8:benchmarks/results/inference_weights_cpu.json``; docs/SPEED.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import numpy as np

from dialoguellm import prompts, runs
from dialoguellm.config import add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.scoring import engine, predictions

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("kv_heads_copied", "gqa_in_place", "merged")
REFERENCE = "kv_heads_copied"


REAL = {"grouped_query_attention": engine.grouped_query_attention}


@contextlib.contextmanager
def nothing(model, **_):
    yield model


def speedups(variant: str) -> dict:
    """The scoring engine's speed-up contexts as ``variant`` runs them (no-ops where it does without)."""
    return {"grouped_query_attention": nothing if variant == REFERENCE else REAL["grouped_query_attention"]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_options(parser)
    parser.add_argument("--adapter", required=True, help="a trained LoRA adapter folder")
    parser.add_argument("--per-dataset", type=int, default=0, help="dev utterances per corpus (0 = all)")
    parser.add_argument("--chunk", type=int, default=128, help="utterances per interleaved chunk")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "inference_weights_fp32_cpu.json"))
    args = parser.parse_args(argv)

    config = config_from_options(args)
    threads = loading.set_threads(config.model.num_threads)
    m = config.model
    separate = loading.load_model(m.name, m.dtype, m.quantization)
    other = loading.load_model(m.name, m.dtype, m.quantization)
    adapter = loading.load_adapter(separate.model, args.adapter)
    merged = loading.contiguous_head_inputs(
        loading.load_adapter(other.model, args.adapter).merge_and_unload()
    )
    models = {v: merged if v == "merged" else adapter for v in VARIANTS}
    tok = separate.tokenizer
    corpora = readers.load_corpora_for(config, None, args.data_dir)
    config.data.dev_per_dataset = args.per_dataset
    prepared = prompts.prepare_examples(config, tok, corpora, ("dev",))

    seconds = dict.fromkeys(VARIANTS, 0.0)
    per_corpus: dict[str, dict] = {}
    for name, examples in prepared.examples["dev"].items():
        builder = prepared.builders[name]
        scores: dict[str, list[np.ndarray]] = {v: [] for v in VARIANTS}
        chunks = [examples[i : i + args.chunk] for i in range(0, len(examples), args.chunk)]
        for c, chunk in enumerate(chunks):
            for k in range(len(VARIANTS)):  # rotate the order chunk by chunk
                variant = VARIANTS[(c + k) % len(VARIANTS)]
                for name_, context in speedups(variant).items():
                    setattr(engine, name_, context)
                try:
                    start = time.perf_counter()
                    loglik = engine.score_examples(
                        models[variant],
                        chunk,
                        builder.answer_ids,
                        tok.pad_token_id,
                        config.eval.batch_size,
                        m.dtype,
                        desc=f"{name} dev ({variant})",
                        progress=False,
                    )
                    seconds[variant] += time.perf_counter() - start
                finally:
                    for name_, context in REAL.items():
                        setattr(engine, name_, context)
                scores[variant].append(loglik)
        gold = np.array([e.label_id for e in examples])
        ranked = {v: np.concatenate(scores[v]) for v in VARIANTS}
        if config.eval.length_normalise:  # the scores evaluation ranks labels by
            ranked = {v: predictions.length_normalised(s, builder.answer_ids) for v, s in ranked.items()}
        ref = ranked[REFERENCE]
        entry: dict = {"utterances": len(examples)}
        for variant in VARIANTS:
            ll = ranked[variant]
            metrics = classification_metrics(gold, ll.argmax(axis=1), builder.labels)
            entry[variant] = {
                "accuracy": round(metrics["accuracy"], 4),
                "weighted_f1": round(metrics["weighted_f1"], 4),
                "agreement_with_reference": round(float((ll.argmax(1) == ref.argmax(1)).mean()), 4),
                "max_abs_score_difference": float(np.abs(ll - ref).max()) if len(ll) else 0.0,
            }
        per_corpus[name] = entry
        print(f"{name}: {len(examples)} dev utterances scored {len(VARIANTS)} ways")

    total = sum(e["utterances"] for e in per_corpus.values())
    speed = {v: round(total / seconds[v], 2) for v in VARIANTS}
    ratios = {v: round(speed[v] / speed[REFERENCE], 3) for v in VARIANTS}
    exact = {
        "gqa_in_place": all(e["gqa_in_place"]["max_abs_score_difference"] == 0.0 for e in per_corpus.values())
    }
    result = {
        **runs.benchmark_header("inference_weights", argv, model=m.name, adapter=args.adapter, split="dev"),
        "settings": {
            "batch_size": config.eval.batch_size,
            "dtype": m.dtype,
            "precision": config.eval.precision,
            "length_normalise": config.eval.length_normalise,
            "chunk": args.chunk,
        },
        "reference": REFERENCE,
        "utterances": total,
        "seconds": {v: round(s, 2) for v, s in seconds.items()},
        "utterances_per_second": speed,
        "speed_ratio_vs_reference": ratios,
        "bit_identical_to_reference": exact,
        "adopted": "gqa_in_place",
        "per_corpus": per_corpus,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'weights':<22}{'utt/s':>8}{'ratio':>8}   (dev, {total} utterances, {threads} threads)")
    for v in VARIANTS:
        print(f"{v:<22}{speed[v]:>8.2f}{ratios[v]:>8.3f}")
    for name, entry in per_corpus.items():
        for v in VARIANTS:
            e = entry[v]
            print(
                f"{name:<9}{v:<22} acc {100 * e['accuracy']:5.1f}  wF1 {100 * e['weighted_f1']:5.1f}  "
                f"agree {100 * e['agreement_with_reference']:5.1f}%  max|diff| {e['max_abs_score_difference']:.4f}"
            )
    print(f"bit-identical to {REFERENCE}: {exact}")
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()

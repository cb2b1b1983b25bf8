"""Choose ``eval.length_normalise`` on the dev splits (never on test): summed vs mean label log-likelihood.

    dialoguellm benchmark length_normalisation --adapter runs/latest/training/adapter

Label scoring ranks the candidate labels by the log-likelihood of their tokens (the word and the end of
sequence). Summed, a label of two tokens ("neutral" + end) starts ahead of one of four ("sad", "ness", ...);
the paper's beam search ranks finished answers by the mean per token instead (length penalty 1.0). Which of
the two serves a given model is an empirical question, so this script answers it on the FULL dev split of
every corpus in ``data.datasets``, with the adapter (or bare model) evaluation will use:

- each dev utterance is scored once; the summed and the mean scores come from the same log-likelihoods;
- for each: accuracy and weighted F1 of the argmax, and weighted F1 with per-label biases fitted on the
  other folds of dev (``--folds``-fold cross-fitting, ``--repeats`` shuffles), which is what notebook 04
  reports when ``eval.calibrate`` is on, without scoring dev rows with biases fitted on themselves;
- the choice: the variant with the higher mean weighted F1 over the corpora (calibrated when the config
  calibrates, raw otherwise). The test split is not read;
- how many dev rows the biases need (``--fit-sizes``): weighted F1 on held-out dev rows with biases fitted on
  0 (none), 200, 500, 700 other dev rows, ``--fit-repeats`` shuffles (the cpu profile's
  ``eval.calibration_per_dataset`` cites it).

The JSON lands in benchmarks/results/ (``--out``); the cpu profile's ``eval.length_normalise`` cites it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from dialoguellm import calibration, prompts, runs
from dialoguellm.config import add_config_options, config_from_options
from dialoguellm.corpora import readers
from dialoguellm.metrics import classification_metrics
from dialoguellm.model import loading
from dialoguellm.scoring import engine, predictions

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("sum", "mean")


def cross_fitted_f1(
    scores: np.ndarray, gold: np.ndarray, labels, folds: int, repeats: int, seed: int
) -> list[float]:
    """Weighted F1 of argmax(scores + bias) where each row's bias was fitted on the other folds only."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        order = rng.permutation(len(gold))
        pred = np.zeros(len(gold), dtype=int)
        for held in np.array_split(order, folds):
            fit = np.setdiff1d(order, held)
            bias = calibration.fit_label_bias(scores[fit], gold[fit], labels)
            pred[held] = (scores[held] + bias).argmax(axis=1)
        out.append(classification_metrics(gold, pred, labels)["weighted_f1"])
    return out


def fit_size_curve(
    scores: np.ndarray, gold: np.ndarray, labels, sizes: list[int], repeats: int, seed: int
) -> dict[str, float]:
    """Weighted F1 on held-out dev rows of argmax(scores + bias), the bias fitted on ``size`` other dev rows
    (0 = no bias), the same held-out rows for every size within a repeat; mean over ``repeats`` shuffles."""
    rng = np.random.default_rng(seed)
    largest = max(sizes)
    out: dict[int, list[float]] = {s: [] for s in sizes}
    for _ in range(repeats):
        order = rng.permutation(len(gold))
        held = order[largest:]
        for size in sizes:
            bias = (
                calibration.fit_label_bias(scores[order[:size]], gold[order[:size]], labels) if size else 0.0
            )
            out[size].append(
                classification_metrics(gold[held], (scores[held] + bias).argmax(axis=1), labels)[
                    "weighted_f1"
                ]
            )
    return {str(s): round(float(np.mean(v)), 4) for s, v in out.items()}


def variant_scores(loglik: np.ndarray, answers) -> dict[str, np.ndarray]:
    return {"sum": loglik, "mean": predictions.length_normalised(loglik, answers)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_options(parser)
    parser.add_argument("--adapter", default=None, help="a trained LoRA adapter folder (default: none)")
    parser.add_argument("--per-dataset", type=int, default=0, help="dev utterances per corpus (0 = all)")
    parser.add_argument("--folds", type=int, default=5, help="folds of the cross-fitted calibration")
    parser.add_argument("--repeats", type=int, default=3, help="shuffles of the cross-fitting")
    parser.add_argument(
        "--fit-sizes",
        type=int,
        nargs="*",
        default=[0, 200, 500, 700],
        help="dev rows the label biases are fitted on, each scored on the same held-out dev rows (0 = none)",
    )
    parser.add_argument("--fit-repeats", type=int, default=20, help="shuffles of the fit-size curve")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=str(RESULTS / "length_normalisation_dev.json"))
    args = parser.parse_args(argv)
    if args.folds < 2 or args.repeats < 1:
        parser.error("--folds must be at least 2 and --repeats at least 1.")

    config = config_from_options(args)
    loading.set_threads(config.model.num_threads)
    loaded = loading.load_model(config.model.name, config.model.dtype, config.model.quantization)
    model = loading.load_adapter(loaded.model, args.adapter) if args.adapter else loaded.model
    corpora = readers.load_corpora_for(config, None, args.data_dir)
    config.data.dev_per_dataset = args.per_dataset
    prepared = prompts.prepare_examples(config, loaded.tokenizer, corpora, ("dev",))

    per_corpus: dict[str, dict] = {}
    for name, examples in prepared.examples["dev"].items():
        builder = prepared.builders[name]
        loglik = engine.score_examples(
            model,
            examples,
            builder.answer_ids,
            loaded.tokenizer.pad_token_id,
            config.eval.batch_size,
            config.model.dtype,
            desc=f"{name} dev: scoring",
            precision=config.eval.precision,
        )
        gold = np.array([e.label_id for e in examples])
        entry: dict = {
            "utterances": len(examples),
            "answer_tokens": dict(zip(builder.labels, map(len, builder.answer_ids), strict=True)),
        }
        for variant, scores in variant_scores(loglik, builder.answer_ids).items():
            m = classification_metrics(gold, scores.argmax(axis=1), builder.labels)
            crossed = cross_fitted_f1(
                scores, gold, builder.labels, args.folds, args.repeats, config.train.seed
            )
            entry[variant] = {
                "accuracy": round(m["accuracy"], 4),
                "weighted_f1": round(m["weighted_f1"], 4),
                "weighted_f1_cross_fitted_calibration": round(float(np.mean(crossed)), 4),
                "cross_fitted_repeats": [round(x, 4) for x in crossed],
            }
            if args.fit_sizes and max(args.fit_sizes) < len(examples):
                entry[variant]["held_out_weighted_f1_by_fit_size"] = fit_size_curve(
                    scores, gold, builder.labels, args.fit_sizes, args.fit_repeats, config.train.seed
                )
        per_corpus[name] = entry

    key = "weighted_f1_cross_fitted_calibration" if config.eval.calibrate else "weighted_f1"
    means = {v: round(float(np.mean([per_corpus[c][v][key] for c in per_corpus])), 4) for v in VARIANTS}
    chosen = max(VARIANTS, key=lambda v: means[v])  # ties keep "sum", the plain log-likelihood
    result = {
        **runs.benchmark_header(
            "length_normalisation", argv, split="dev", model=config.model.name, adapter=args.adapter
        ),
        "settings": {
            "context_turns": config.prompt.context_turns,
            "k_shot": config.prompt.k_shot,
            "dtype": config.model.dtype,
            "calibrate": config.eval.calibrate,
            "folds": args.folds,
            "repeats": args.repeats,
        },
        "per_corpus": per_corpus,
        "criterion": f"mean over corpora of {key}",
        "mean_over_corpora": means,
        "chosen": chosen,
        "eval.length_normalise": chosen == "mean",
        "config_agrees": bool(config.eval.length_normalise) == (chosen == "mean"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    print(f"\n{'corpus':<10}{'variant':<8}{'n':>6}{'acc':>8}{'wF1':>8}{'wF1 cal (cross-fit)':>22}   (dev)")
    for name, entry in per_corpus.items():
        for v in VARIANTS:
            r = entry[v]
            print(
                f"{name:<10}{v:<8}{entry['utterances']:>6}{100 * r['accuracy']:>8.1f}{100 * r['weighted_f1']:>8.1f}"
                f"{100 * r['weighted_f1_cross_fitted_calibration']:>22.1f}"
            )
    print(f"{result['criterion']}: " + ", ".join(f"{v} {100 * means[v]:.1f}" for v in VARIANTS))
    for name, entry in per_corpus.items():
        for v in VARIANTS:
            curve = entry[v].get("held_out_weighted_f1_by_fit_size")
            if curve:
                print(
                    f"{name} {v}: held-out dev wF1 by the number of dev rows the biases were fitted on: "
                    + ", ".join(f"{k}: {100 * x:.1f}" for k, x in curve.items())
                )
    print(
        f"chosen on dev: eval.length_normalise: {str(chosen == 'mean').lower()} "
        f"({'agrees with' if result['config_agrees'] else 'DIFFERS from'} the config {args.config})"
    )
    print(f"written to {out}")
    return result


if __name__ == "__main__":
    main()

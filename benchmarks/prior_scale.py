"""Re-check the prior correction's scale on dev only: dev weighted F1 per scale, never test.

    dialoguellm benchmark prior_scale --run runs/latest          # reads the run's saved dev predictions

Notebook 06's prior correction (``dialoguellm.calibration.PriorCorrection``) is corrected score =
scale * log p(label | prompt) - offset[label], offsets and scale fitted by dev likelihood. Whether a fitted
scale is better than offsets alone (scale 1) was first asked after a test result; this answers it on dev.
It reads the dev predictions training saved with the selected adapter (``training/adapter/dev_<corpus>_
predictions.csv``, the label log-likelihoods of every dev utterance it scored), so no model is run:

- for each scale in ``--scales`` (fixed; offsets fitted at that scale) and ``fitted`` (the scale fitted
  with the offsets, the current setting): dev weighted F1 of the corrected predictions, **cross-fitted**:
  dev dialogues are cut into ``--folds`` folds, each fold is corrected with offsets fitted on the others,
  so no utterance is scored by a correction fitted on itself. Each with its 95% dialogue-bootstrap interval;
- the paired difference ``fitted`` - scale 1 on the same dev utterances, with its interval and verdict;
- ``uncorrected``: the raw argmax, for reference.

The JSON lands in benchmarks/results/prior_scale_dev.json (``--out`` for another place); docs/EVALUATION.md
cites it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import runs, stats
from dialoguellm.analysis.error_analysis import dataset_of, label_words
from dialoguellm.calibration import PriorCorrection
from dialoguellm.runs import RunLayout, load_run_config
from dialoguellm.scoring.predictions import read_predictions

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SCALES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", required=True, help="a finished run folder (training/adapter/dev_*.csv)")
    parser.add_argument(
        "--scales", default=",".join(map(str, DEFAULT_SCALES)), help="fixed scales, comma-separated"
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-fitting folds of dev dialogues")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval")
    parser.add_argument(
        "--out", default=None, help="result JSON (default: benchmarks/results/prior_scale_dev.json)"
    )
    return parser.parse_args(argv)


def dev_frames(run: Path) -> dict[str, pd.DataFrame]:
    """The selected adapter's saved dev predictions of every corpus the run trained on."""
    datasets = load_run_config(RunLayout(run).training).data.datasets
    frames = {}
    for name in datasets:
        path = RunLayout(run).adapter / f"dev_{name}_predictions.csv"
        if not path.is_file():
            raise SystemExit(
                f"{path} not found: the run's training saves the selected adapter's dev predictions there; "
                "train with `dialoguellm train` (or pass another --run)."
            )
        frames[name] = read_predictions(path)
    return frames


def cross_fitted(dev: pd.DataFrame, scale: float | None, folds: int, seed: int = 0) -> pd.DataFrame:
    """``dev`` with each fold's predictions corrected by offsets (and scale, when None) fitted on the other
    folds; folds are whole dialogues, so no dialogue is corrected by a fit that saw it."""
    labels = label_words(dev, dataset_of(dev))
    dialogues = stats.frame_dialogues(dev)
    unique = np.random.default_rng(seed).permutation(np.unique(dialogues))
    fold_of = {d: i % folds for i, d in enumerate(unique)}
    fold = np.array([fold_of[d] for d in dialogues])
    parts = []
    for k in range(folds):
        held = fold == k
        correction = PriorCorrection.fit(dev[~held], labels, scale=scale)
        parts.append(correction.apply(dev[held]))
    return pd.concat(parts).loc[dev.index]


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def corpus_sweep(dev: pd.DataFrame, scales: list[float], folds: int, resamples: int) -> dict[str, Any]:
    """Dev weighted F1 (cross-fitted, with interval) per fixed scale and for the fitted one."""
    options = {"n_resamples": resamples}
    labels = label_words(dev, dataset_of(dev))
    variants: dict[str, pd.DataFrame] = {"uncorrected": dev}
    for scale in scales:
        variants[f"scale {scale:g}"] = cross_fitted(dev, scale, folds)
    variants["fitted"] = cross_fitted(dev, None, folds)
    rows = {
        name: _rounded(stats.frame_interval(frame, "weighted_f1", **options).as_dict())
        for name, frame in variants.items()
    }
    fitted_on_all = PriorCorrection.fit(dev, labels)
    diff = stats.frame_paired_difference(variants["fitted"], variants["scale 1"], "weighted_f1", **options)
    best = max((n for n in rows if n != "uncorrected"), key=lambda n: rows[n]["estimate"])
    return {
        "n": int(len(dev)),
        "scale_fitted_on_all_dev": round(fitted_on_all.scale, 4),
        "weighted_f1": rows,
        "fitted_minus_scale_1": _rounded(diff.as_dict()),
        "highest": best,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    scales = [float(s) for s in args.scales.split(",") if s.strip()]
    if 1.0 not in scales:
        scales.append(1.0)  # the offsets-only variant the fitted scale is compared with
    run = Path(args.run).expanduser().resolve()
    result = {
        "command": runs.benchmark_command("prior_scale", argv),
        "run": str(run),
        "split": "dev",
        "folds": args.folds,
        "note": "dev only; each fold corrected by a fit on the other folds (whole dialogues). Weighted F1 "
        "as fractions, 95% dialogue-bootstrap intervals.",
        "results": {
            name: corpus_sweep(frame, scales, args.folds, args.resamples)
            for name, frame in dev_frames(run).items()
        },
    }
    path = Path(args.out) if args.out else RESULTS / "prior_scale_dev.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, entry in result["results"].items():
        line = ", ".join(f"{k} {v['estimate']:.3f}" for k, v in entry["weighted_f1"].items())
        d = entry["fitted_minus_scale_1"]
        print(f"{name} dev weighted F1: {line}")
        print(
            f"  fitted - scale 1: {d['difference']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {d['verdict']}"
        )
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

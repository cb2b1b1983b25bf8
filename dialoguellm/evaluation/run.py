"""Evaluation of a trained adapter (or the bare model) on a split: predictions, metrics, the label biases
training fitted on dev (``calibration``), and the comparison with the paper's table.

Writes, under its output folder (``RunLayout.evaluation``): ``<split>_<corpus>_predictions.csv``,
``_metrics.json``, ``_per_class.csv`` and ``summary.json`` (with the provenance of the run).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.calibration import apply_label_bias, load_calibration
from dialoguellm.io import predictions_name, read_predictions, split_stem, write_json
from dialoguellm.model import loading
from dialoguellm.model.card import invocation, write_model_card
from dialoguellm.prompts import prepare_examples, rows_of
from dialoguellm.runs import (
    TrainingLayout,
    adapter_fingerprint,
    environment,
    hardware_summary,
    load_run_config,
)
from dialoguellm.scoring.predictions import metrics_of, predict, save_predictions
from dialoguellm.stats import METRICS, frame_interval


def evaluate_run(
    corpora: Mapping[str, Any],
    out_dir: str | os.PathLike,
    train_dir: str | os.PathLike | None = None,
    config: Any = None,
    split: str = "test",
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    mode: str | None = None,
    loaded: Any = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a trained adapter (``train_dir/adapter``), or the bare model when ``train_dir`` is None.

    Settings come from the run's saved config unless ``config`` is given. Writes, under ``out_dir``,
    ``<split>_<corpus>_predictions.csv``, ``_metrics.json``, ``_per_class.csv`` and ``summary.json``;
    returns the summary (per-corpus metrics, model, hardware, seconds).
    """
    start = time.time()
    if config is None:
        if train_dir is None:
            raise ValueError("Pass config= when evaluating a model without a training run.")
        config = load_run_config(train_dir)
    m = config.model
    loading.set_threads(m.num_threads)
    if loaded is None:
        loaded = loading.load_configured(m)
    model = loaded.model
    if train_dir is not None:
        model = loading.load_adapter(model, TrainingLayout(train_dir).adapter)
    prepared = prepare_examples(config, loaded.tokenizer, corpora, (split,), descriptions)
    mode = mode or config.eval.mode
    out = Path(out_dir)
    calibration = (
        load_calibration(TrainingLayout(train_dir).adapter, config)
        if train_dir is not None and mode == "score"
        else {}
    )
    results: dict[str, Any] = {}
    threads: dict[str, int] = {}
    for name, examples in prepared.examples[split].items():
        builder = prepared.builders[name]
        # Each corpus takes the cores free when it starts (model.num_threads 0), not those of the stage's start.
        threads[name] = loading.set_threads(m.num_threads)
        preds = predict(
            model,
            loaded.tokenizer,
            builder,
            examples,
            mode,
            config.eval.batch_size,
            config.eval.max_new_tokens,
            m.dtype,
            progress,
            config.eval.length_normalise,
            config.eval.precision,
            eval_config=config.eval,
        )
        preds, results[name] = _calibrated(
            preds, builder.labels, calibration.get(name) if mode == "score" else None
        )
        # The dialogue of each row: the model card's intervals resample whole dialogues (dialoguellm.stats).
        dialogue = {str(r["utterance_id"]): str(r["dialogue_id"]) for r in rows_of(corpora[name][split])}
        preds.insert(1, "dialogue_id", [dialogue.get(str(e), "") for e in preds["example_id"]])
        save_predictions(preds, results[name], out, split_stem(split, name))
    env = environment()
    summary = {
        "split": split,
        "mode": mode,
        "model": m.name,
        "adapter": str(TrainingLayout(train_dir).adapter) if train_dir is not None else None,
        "adapter_sha256": adapter_fingerprint(TrainingLayout(train_dir).adapter)
        if train_dir is not None
        else None,
        "hardware": hardware_summary(env),
        "environment": env,
        "seconds": time.time() - start,
        "calibrated": bool(calibration) and mode == "score",
        "length_normalised": bool(config.eval.length_normalise) and mode == "score",
        "precision": config.eval.precision,
        "threads": threads,
        # What decides a prompt's label scores besides the weights: two evaluations scored the same prompts
        # only when these are equal.
        "scoring_settings": scoring_settings(config),
        "results": results,
    }
    write_json(out / "summary.json", summary)
    if train_dir is not None and split == "test":
        adapter = TrainingLayout(train_dir).adapter
        write_model_card(adapter, test=card_results(out, summary, split))
    return summary


def scoring_settings(config: Any) -> dict[str, Any]:
    """The settings that decide an utterance's label scores besides the weights: the prompt settings, the
    demonstrations' seed, the model, its dtype and the scoring precision and length normalisation."""
    return {
        "prompt": dataclasses.asdict(config.prompt),
        "demonstration_seed": config.train.seed,
        "model": config.model.name,
        "dtype": config.model.dtype,
        "precision": config.eval.precision,
        "length_normalise": bool(config.eval.length_normalise),
    }


def card_results(
    out_dir: str | os.PathLike, summary: Mapping[str, Any], split: str = "test"
) -> dict[str, Any]:
    """The test metrics of an evaluation with their dialogue-bootstrap intervals (``stats.frame_interval``),
    as the model card shows them; a metric whose interval cannot be drawn (one dialogue) shows its value."""
    results = {}
    for name, metrics in summary["results"].items():
        frame = read_predictions(Path(out_dir) / predictions_name(split_stem(split, name)))
        entry: dict[str, Any] = {"n": metrics["n"], "calibrated": "label_bias" in metrics}
        for metric in METRICS:
            try:
                interval = frame_interval(frame, metric, source=split_stem(split, name))
                entry[metric] = {**interval.as_dict(), "text": str(interval)}
                entry["dialogues"] = interval.n_groups
            except ValueError:  # fewer than two dialogues: no interval, only the value
                entry[metric] = {"estimate": metrics[metric], "text": f"{100 * metrics[metric]:.1f}"}
        results[name] = entry
    return {"results": results, "command": invocation(), "hardware": summary["hardware"]}


def paper_results() -> pd.DataFrame:
    """The paper's Table 3 rows and peers (accuracy / weighted F1 in %), from the packaged data file."""
    with resources.as_file(resources.files("dialoguellm") / "resources" / "paper_results.csv") as path:
        return pd.read_csv(path)


def _calibrated(
    predictions: pd.DataFrame, labels: Sequence[str], bias: Sequence[float] | None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(predictions, metrics) after training's label biases, when there are any; the metrics keep the
    uncalibrated accuracy and F1 and the biases beside the calibrated ones."""
    metrics = metrics_of(predictions, labels)
    if bias is None:
        return predictions, metrics
    raw = {k: metrics[k] for k in ("accuracy", "weighted_f1", "macro_f1")}
    predictions = apply_label_bias(predictions, labels, bias)
    metrics = metrics_of(predictions, labels)
    metrics["uncalibrated"] = raw
    metrics["label_bias"] = list(map(float, bias))
    return predictions, metrics


def comparison_summaries(
    summary: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, Mapping[str, Any]]:
    """Notebook 04's summaries under the names the comparison shows: the adapter's, and the bare model's
    (``ZERO_SHOT``) when given."""
    name = loading.display_name(summary["model"])
    out = {f"ours: {name} + LoRA ({summary['mode']})": summary}
    if base is not None:
        out[f"ours: {name} without LoRA ({base['mode']})"] = base
    return out


def comparison_table(
    summaries: Mapping[str, Mapping[str, Any]], datasets: Sequence[str] | None = None
) -> pd.DataFrame:
    """Our runs (``label -> evaluate_run summary``) above the paper's rows, in %, one row per system and corpus.

    Columns: system, dataset, accuracy, weighted_f1, ours, source (for ours: model and hardware).
    """
    rows = []
    for label, summary in summaries.items():
        for name, result in summary["results"].items():
            if "uncalibrated" in result:  # the raw argmax too, so the dev-fitted correction is visible
                raw = result["uncalibrated"]
                rows.append(
                    {
                        "system": f"{label}, uncalibrated",
                        "dataset": name,
                        "accuracy": round(100 * raw["accuracy"], 2),
                        "weighted_f1": round(100 * raw["weighted_f1"], 2),
                        "ours": True,
                        "source": f"{summary['model']} on {summary['hardware']}",
                    }
                )
            rows.append(
                {
                    "system": label,
                    "dataset": name,
                    "accuracy": round(100 * result["accuracy"], 2),
                    "weighted_f1": round(100 * result["weighted_f1"], 2),
                    "ours": True,
                    "source": f"{summary['model']} on {summary['hardware']}",
                }
            )
    ours = pd.DataFrame(rows)
    paper = paper_results().assign(ours=False)
    table = pd.concat([ours, paper], ignore_index=True)
    names = (
        list(datasets)
        if datasets is not None
        else list(dict.fromkeys(ours["dataset"]))
        if len(ours)
        else None
    )
    if names is not None:
        table = table[table["dataset"].isin(names)]
    return table.reset_index(drop=True)


def evaluation_records(
    summary: Mapping[str, Any],
    intervals: pd.DataFrame,
    base: Mapping[str, Any] | None,
    figures: Sequence[str | os.PathLike],
) -> dict[str, Any]:
    """What notebook 04 records of an ``evaluate_run`` summary (fractions, 4 decimals): the model, hardware,
    mode and split, per corpus the size, accuracy, weighted and macro F1, unparsed answers and the weighted F1
    before the dev-fitted biases; the ``stats.interval_table`` intervals (``file/metric -> [low, high]``); the
    minutes; the bare model's weighted F1 when ``base`` (its summary) is given; the figures' file names."""
    results = summary["results"]
    return {
        "model": summary["model"],
        "hardware": summary["hardware"],
        "mode": summary["mode"],
        "split": summary["split"],
        "n": {name: r["n"] for name, r in results.items()},
        "accuracy": {name: round(r["accuracy"], 4) for name, r in results.items()},
        "weighted_f1": {name: round(r["weighted_f1"], 4) for name, r in results.items()},
        "macro_f1": {name: round(r["macro_f1"], 4) for name, r in results.items()},
        "intervals": {
            f"{r.file}/{r.metric}": [round(r.low, 4), round(r.high, 4)] for r in intervals.itertuples()
        },
        "unparsed": {name: r["unparsed"] for name, r in results.items()},
        "eval_minutes": round(summary["seconds"] / 60, 2),
        "calibrated": summary["calibrated"],
        "weighted_f1_uncalibrated": {
            name: round(r.get("uncalibrated", r)["weighted_f1"], 4) for name, r in results.items()
        },
        **(
            {"zero_shot_weighted_f1": {n: round(r["weighted_f1"], 4) for n, r in base["results"].items()}}
            if base is not None
            else {}
        ),
        "figures": [Path(f).name for f in figures],
    }


def results_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """Headline metrics of an ``evaluate_run`` summary, one row per corpus."""
    return pd.DataFrame(
        [
            {
                "dataset": name,
                "n": r["n"],
                "accuracy": r["accuracy"],
                "weighted_f1": r["weighted_f1"],
                "macro_f1": r["macro_f1"],
                "unparsed": r.get("unparsed", 0),
                "weighted_f1_uncalibrated": r.get("uncalibrated", {}).get("weighted_f1", r["weighted_f1"]),
                "accuracy_uncalibrated": r.get("uncalibrated", {}).get("accuracy", r["accuracy"]),
            }
            for name, r in summary["results"].items()
        ]
    ).set_index("dataset")

"""Error analysis of saved predictions: where the model fails, and one cheap mitigation.

Everything here reads prediction frames (``scoring.predictions``: example_id, dataset, gold_id, pred_id,
gold, pred, parsed, p_<label>), joined when needed to the curated records (``corpora.readers.load_curated``)
by ``example_id == utterance_id``. No model is run on test.

- ``normalised_confusion``: row-normalised confusion matrix (each gold row sums to 1).
- ``neutral_share``: the paper's first failure mode, over-prediction of neutral (predicted vs true share).
- ``close_pair_confusions``: the second, close emotions mistaken for each other (anger/disgust,
  surprise vs joy or excitement, sadness/frustration), in each corpus's own label set.
- ``error_breakdown``: accuracy by context length, turn position, utterance length, description presence.
- ``confident_errors``: the example browser, the wrong predictions the model was surest of.
- ``prior_correction_report``: the likelihood calibration (``calibration.PriorCorrection``, fitted on DEV
  predictions only), a mitigation the paper lacks, beside the uncorrected numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import stats
from dialoguellm.calibration import PriorCorrection
from dialoguellm.corpora.readers import split_frame
from dialoguellm.io import atomic_path, write_json
from dialoguellm.prompts import (
    builders_from_config,
    demonstration_exclusions,
    dialogue_index,
    previous_turns_text,
    rows_of,
)
from dialoguellm.runs import RunLayout
from dialoguellm.scoring.predictions import (
    check_frame,
    dataset_of,
    label_words,
    metrics_of,
    probability_matrix,
    read_predictions,
)

NEUTRAL = "neutral"
UNPARSED = "(unparsed)"

# Close pairs in the paper's label words, per corpus. The paper names anger/disgust, surprise vs
# joy/excitement and sadness/frustration; a corpus keeps the pairs its label set has. EmoryNLP has none of
# those labels, so its nearest pairs (Peaceful/Neutral, Joyful/Powerful) stand in, marked paper=False.
CLOSE_PAIRS: dict[str, list[tuple[str, str, bool]]] = {
    "meld": [("anger", "disgust", True), ("surprise", "happiness", True)],
    "iemocap": [
        ("sadness", "frustrated", True),
        ("happiness", "excited", True),
        ("anger", "frustrated", False),
    ],
    "emorynlp": [("peaceful", "neutral", False), ("happiness", "powerful", False)],
}

# Buckets of the error breakdown: (lower bound inclusive, name); the last bucket is open-ended.
TURN_BINS: list[tuple[int, str]] = [(0, "0 (first)"), (1, "1"), (2, "2-3"), (4, "4-7"), (8, "8+")]
UTTERANCE_BINS: list[tuple[int, str]] = [(0, "1-3 words"), (4, "4-7"), (8, "8-15"), (16, "16+")]
CONTEXT_BINS: list[tuple[int, str]] = [(0, "0 words"), (1, "1-10"), (11, "11-30"), (31, "31+")]
FACTORS: tuple[str, ...] = ("context_length", "turn_position", "utterance_length", "description")


# ------------------------------------------------------------------------------------------ basics


# ---------------------------------------------------------------------------- confusion and failure modes


def normalised_confusion(frame: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Confusion matrix with rows = gold, columns = predicted, each row divided by its gold count.

    A gold label with no examples keeps a row of zeros (there is nothing to normalise). Unparsed answers
    (pred_id -1, generate mode) get their own last column, so every non-empty row still sums to 1.
    """
    check_frame(frame)
    words = label_words(frame, dataset)
    n = len(words)
    gold = frame["gold_id"].to_numpy(dtype=int)
    pred = frame["pred_id"].to_numpy(dtype=int)
    counts = np.zeros((n, n + 1))
    pred_col = np.where((pred >= 0) & (pred < n), pred, n)
    np.add.at(counts, (gold, pred_col), 1)
    columns = [*words, UNPARSED]
    if counts[:, n].sum() == 0:
        counts, columns = counts[:, :n], words
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    out = pd.DataFrame(
        shares, index=pd.Index(words, name="gold"), columns=pd.Index(columns, name="predicted")
    )
    return out


def neutral_share(frame: pd.DataFrame, dataset: str | None = None, label: str = NEUTRAL) -> dict[str, Any]:
    """True and predicted share of ``label`` (neutral); ratio > 1 means it is over-predicted."""
    check_frame(frame)
    words = label_words(frame, dataset)
    if label not in words:
        raise ValueError(f"No {label!r} label in {words}.")
    j = words.index(label)
    n = len(frame)
    true = float((frame["gold_id"] == j).mean()) if n else float("nan")
    predicted = float((frame["pred_id"] == j).mean()) if n else float("nan")
    return {
        "n": n,
        "true_share": true,
        "predicted_share": predicted,
        "ratio": predicted / true if true else float("nan"),
        "neutral_recall": float(
            ((frame["gold_id"] == j) & (frame["pred_id"] == j)).sum() / max((frame["gold_id"] == j).sum(), 1)
        ),
    }


def close_pair_confusions(frame: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """For each close pair (a, b) of the corpus, both directions: how many gold-a were predicted b.

    Columns: dataset, gold, predicted, count, gold_support, share_of_gold (count / gold_support),
    paper_pair (whether the paper names the pair).
    """
    dataset = dataset or dataset_of(frame)
    if dataset is None:
        raise ValueError("close_pair_confusions needs the dataset name (no dataset column in the frame).")
    words = label_words(frame, dataset)
    gold = frame["gold_id"].to_numpy(dtype=int)
    pred = frame["pred_id"].to_numpy(dtype=int)
    rows = []
    for a, b, in_paper in CLOSE_PAIRS.get(dataset, []):
        ia, ib = words.index(a), words.index(b)
        for g, p, gi, pi in ((a, b, ia, ib), (b, a, ib, ia)):
            support = int((gold == gi).sum())
            count = int(((gold == gi) & (pred == pi)).sum())
            rows.append(
                {
                    "dataset": dataset,
                    "gold": g,
                    "predicted": p,
                    "count": count,
                    "gold_support": support,
                    "share_of_gold": count / support if support else float("nan"),
                    "paper_pair": in_paper,
                }
            )
    return pd.DataFrame(
        rows, columns=["dataset", "gold", "predicted", "count", "gold_support", "share_of_gold", "paper_pair"]
    )


# -------------------------------------------------------------------------------- errors by factor


def _bucket(values: Sequence[int], bins: Sequence[tuple[int, str]]) -> list[str]:
    lows = [lo for lo, _ in bins]
    names = [name for _, name in bins]
    idx = np.searchsorted(lows, np.asarray(values), side="right") - 1
    return [names[max(i, 0)] for i in idx]


def attach_records(
    frame: pd.DataFrame,
    records: Any,
    context_turns: int | str = 1,
    descriptions: Mapping[str, str] | None = None,
    shown: bool = True,
) -> pd.DataFrame:
    """Join predictions to their curated records and add the factors of the error breakdown.

    ``records``: the curated split the predictions were made on (Dataset, DataFrame or list of dicts); the
    whole split, so that the context of a sampled utterance is known. Adds turn, speaker, text,
    ``utterance_words``, ``context_words`` (words in the ``context_turns`` utterances before it, what the
    prompt shows before any trimming), ``has_description`` (None for corpora without video) and the bucket
    columns named in ``FACTORS``. ``descriptions`` is the ``clip_id -> text`` map of the split; ``shown``
    says whether the prompts carried them (prompt.use_video), which names the description buckets.
    """
    check_frame(frame)
    recs = split_frame(records)
    recs = recs.assign(context_text=previous_turns_text(recs, context_turns))
    keep = ["utterance_id", "dialogue_id", "turn", "speaker", "text", "clip_id", "context_text"]
    merged = frame.merge(
        recs[[c for c in keep if c in recs]].rename(columns={"utterance_id": "example_id"}),
        on="example_id",
        how="left",
        validate="one_to_one",
    )
    lost = merged["turn"].isna()
    if lost.any():
        raise ValueError(
            f"{int(lost.sum())} prediction(s) have no curated record (first: example_id "
            f"{merged.loc[lost, 'example_id'].iloc[0]!r}); pass the split the predictions were made on."
        )
    merged["turn"] = merged["turn"].astype(int)
    merged["utterance_words"] = merged["text"].str.split().str.len().astype(int)
    merged["context_words"] = merged["context_text"].str.split().str.len().fillna(0).astype(int)
    merged["correct"] = merged["gold_id"] == merged["pred_id"]
    merged["turn_position"] = _bucket(merged["turn"], TURN_BINS)
    merged["utterance_length"] = _bucket(merged["utterance_words"].clip(lower=1), UTTERANCE_BINS)
    merged["context_length"] = _bucket(merged["context_words"], CONTEXT_BINS)
    dataset = dataset_of(frame)
    if dataset == "meld" or descriptions:
        table = descriptions or {}
        merged["has_description"] = [
            bool(table.get(c)) if isinstance(c, str) else False for c in merged["clip_id"]
        ]
        with_label = "with description" if shown else "with description (not in prompt)"
        merged["description"] = np.where(merged["has_description"], with_label, "without")
    else:
        merged["has_description"] = None
        merged["description"] = "no video"
    return merged


def error_breakdown(merged: pd.DataFrame, factors: Sequence[str] = FACTORS) -> pd.DataFrame:
    """Accuracy and error rate per bucket of each factor (input: ``attach_records``).

    Columns: dataset, factor, bucket, order (bucket position), n, accuracy, accuracy_95ci (its 95%
    dialogue-bootstrap interval, percent), error_rate.
    """
    orders = {
        "turn_position": [n for _, n in TURN_BINS],
        "utterance_length": [n for _, n in UTTERANCE_BINS],
        "context_length": [n for _, n in CONTEXT_BINS],
        "description": ["with description", "with description (not in prompt)", "without", "no video"],
    }
    rows = []
    for factor in factors:
        if factor not in merged:
            raise ValueError(f"No column {factor!r}; call attach_records first.")
        for (dataset, bucket), part in merged.groupby(["dataset", factor], sort=False):
            acc = float(part["correct"].mean())
            rows.append(
                {
                    "dataset": dataset,
                    "factor": factor,
                    "bucket": bucket,
                    "order": orders[factor].index(bucket) if bucket in orders.get(factor, []) else 99,
                    "n": len(part),
                    "accuracy": acc,
                    "error_rate": 1 - acc,
                    **metric_intervals(part, f"{dataset}/{factor}={bucket}", ("accuracy",)),
                }
            )
    columns = ["dataset", "factor", "bucket", "order", "n", "accuracy", "accuracy_95ci", "error_rate"]
    out = pd.DataFrame(rows, columns=columns)
    return out.sort_values(["dataset", "factor", "order"]).reset_index(drop=True)


# --------------------------------------------------------------------------------- example browser


def confident_errors(
    merged: pd.DataFrame, k: int = 10, prompts: Mapping[str, str] | None = None, top: int = 3
) -> pd.DataFrame:
    """The ``k`` wrong predictions with the highest probability on the predicted label.

    ``merged``: ``attach_records`` output of a scored frame. ``prompts``: example_id -> prompt text (the
    prompt column of the frame is used when present). Columns: example_id, dataset, speaker, turn, text,
    gold, pred, p_pred, p_gold, top_labels ("label p; ..."), prompt.
    """
    words = label_words(merged)
    probs = probability_matrix(merged, words)
    wrong = merged["gold_id"].to_numpy() != merged["pred_id"].to_numpy()
    pred = merged["pred_id"].to_numpy(dtype=int)
    gold = merged["gold_id"].to_numpy(dtype=int)
    p_pred = np.where(pred >= 0, probs[np.arange(len(merged)), pred.clip(min=0)], np.nan)
    p_gold = probs[np.arange(len(merged)), gold]
    table = merged.assign(p_pred=p_pred, p_gold=p_gold)
    order = np.argsort(-np.nan_to_num(p_pred, nan=-1.0), kind="stable")
    chosen = [i for i in order if wrong[i]][:k]
    rows = []
    for i in chosen:
        row = table.iloc[i]
        ranked = np.argsort(-probs[i])[:top]
        prompt = row["prompt"] if "prompt" in table else (prompts or {}).get(str(row["example_id"]), "")
        rows.append(
            {
                "example_id": row["example_id"],
                "dataset": row["dataset"],
                "speaker": row.get("speaker", ""),
                "turn": row.get("turn", -1),
                "text": row.get("text", ""),
                "gold": words[gold[i]],
                "pred": words[pred[i]] if pred[i] >= 0 else UNPARSED,
                "p_pred": float(row["p_pred"]),
                "p_gold": float(row["p_gold"]),
                "top_labels": "; ".join(f"{words[j]} {probs[i, j]:.2f}" for j in ranked),
                "prompt": prompt or "",
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ prior correction


def prior_correction_report(
    dev: pd.DataFrame,
    test: pd.DataFrame,
    method: str = "likelihood",
    others: Mapping[str, pd.DataFrame] | None = None,
) -> tuple[pd.DataFrame, PriorCorrection, pd.DataFrame]:
    """Fit on ``dev``, apply to ``test`` (uncalibrated, see ``raw_frame``); returns (table, correction,
    corrected test frame).

    The table has one row per variant (uncorrected, prior-corrected, then any ``others``: name -> test frame,
    e.g. evaluation's own calibrated predictions) with accuracy, weighted F1, macro F1 and the predicted vs
    true neutral share on test.
    """
    dataset = dataset_of(test)
    correction = PriorCorrection.fit(dev, label_words(dev, dataset_of(dev)), method=method)
    corrected = correction.apply(test)
    rows = []
    variants = {
        "uncorrected": test,
        f"prior-corrected ({method}, fitted on dev)": corrected,
        **(others or {}),
    }
    for variant, frame in variants.items():
        m = metrics_of(frame, label_words(frame, dataset))
        row = {
            "dataset": dataset,
            "variant": variant,
            "n": m["n"],
            "accuracy": m["accuracy"],
            "weighted_f1": m["weighted_f1"],
            "macro_f1": m["macro_f1"],
            **metric_intervals(frame, variant),
        }
        if NEUTRAL in correction.labels:
            share = neutral_share(frame, dataset)
            row.update(
                neutral_true_share=share["true_share"], neutral_predicted_share=share["predicted_share"]
            )
        rows.append(row)
    return pd.DataFrame(rows), correction, corrected


def metric_intervals(
    frame: pd.DataFrame, source: str = "predictions", metrics: Sequence[str] = stats.METRICS
) -> dict[str, str]:
    """``{"accuracy_95ci": "53.8 [51.7, 56.1]", ...}``: each metric with its 95% dialogue-bootstrap interval
    (``stats.frame_interval``), in percent; "n/a" where the rows come from fewer than 2 dialogues."""
    if len(set(stats.frame_dialogues(frame, source))) < 2:
        return {f"{metric}_95ci": "n/a (fewer than 2 dialogues)" for metric in metrics}
    return {f"{metric}_95ci": str(stats.frame_interval(frame, metric, source)) for metric in metrics}


def baseline_prior_correction(
    run_dir: str | os.PathLike, datasets: Sequence[str], baseline: str = "tfidf_lr"
) -> pd.DataFrame:
    """The same correction on a baseline's saved dev and test predictions (notebook 05's
    ``<run_dir>/baselines``): does it help a classifier that is not an LLM? Empty when none were saved."""
    layout = RunLayout(Path(run_dir))
    reports = []
    for name in datasets:
        dev, test = (layout.baseline_predictions(name, baseline, split) for split in ("dev", "test"))
        if dev.is_file() and test.is_file():
            report, _, _ = prior_correction_report(read_predictions(dev), read_predictions(test))
            reports.append(report.assign(model=baseline))
    return pd.concat(reports, ignore_index=True) if reports else pd.DataFrame()


# ------------------------------------------------------------------------------- reading a run folder


def rebuild_prompts(
    config: Any,
    tokenizer: Any,
    corpora: Mapping[str, Any],
    dataset: str,
    split: str,
    example_ids: Sequence[str],
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """``example_id -> prompt text`` for a few utterances, built as training/evaluation built them (same
    settings, same demonstrations), so the example browser shows what the model read without re-running it."""
    descriptions = descriptions or {}
    builder = builders_from_config(
        tokenizer,
        {dataset: corpora[dataset]},
        config,
        descriptions,
        exclude=demonstration_exclusions(config, corpora),
    )[dataset]
    corpus = corpora[dataset]
    rows = rows_of(corpus[split])
    index = dialogue_index(rows)
    wanted = set(map(str, example_ids))
    return {
        str(r["utterance_id"]): builder.build(
            r, index[str(r["dialogue_id"])], descriptions.get(split, {})
        ).prompt
        for r in rows
        if str(r["utterance_id"]) in wanted
    }


# --------------------------------------------------------------------------------------- save / load


def save_table(table: pd.DataFrame, run_dir: str | os.PathLike, name: str) -> Path:
    """Write ``<run_dir>/analysis/<name>.csv`` atomically (figures are redrawn from these files)."""
    path = RunLayout(Path(run_dir)).analysis / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=True if table.index.name else False)
    return path


def save_json(data: Any, run_dir: str | os.PathLike, name: str) -> Path:
    """Write ``<run_dir>/analysis/<name>.json``."""
    return write_json(RunLayout(Path(run_dir)).analysis / f"{name}.json", data)

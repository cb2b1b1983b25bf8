"""Classification metrics, the paper's way: accuracy and weighted F1 (sklearn's ``average="weighted"``),
plus macro F1, per-class precision/recall/F1 and the confusion matrix.

Computed from the confusion matrix with numpy so nothing is hidden; the tests check every number against
scikit-learn. A prediction of -1 (generated text that named no label) counts as wrong: it lowers the
recall of its gold class and is no class's prediction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm.io import atomic_path, metrics_name, per_class_name, write_json


def confusion(gold: Sequence[int], pred: Sequence[int], n_labels: int) -> np.ndarray:
    """(n_labels, n_labels) counts, rows = gold, columns = predicted; predictions outside 0..n-1 are dropped
    from the matrix (they are still counted wrong in accuracy and recall)."""
    gold = np.asarray(gold, dtype=int)
    pred = np.asarray(pred, dtype=int)
    if gold.shape != pred.shape:
        raise ValueError(f"gold and pred differ in length: {gold.shape} vs {pred.shape}")
    if len(gold) and (gold.min() < 0 or gold.max() >= n_labels):
        raise ValueError(f"gold labels must be in 0..{n_labels - 1}")
    matrix = np.zeros((n_labels, n_labels), dtype=int)
    ok = (pred >= 0) & (pred < n_labels)
    np.add.at(matrix, (gold[ok], pred[ok]), 1)
    return matrix


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 where ``den`` is 0 (sklearn's zero_division=0), broadcasting as numpy does."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


METRICS: tuple[str, ...] = ("accuracy", "weighted_f1", "macro_f1")


def confusion_with_unparsed(gold: Sequence[int], pred: Sequence[int], n_labels: int) -> np.ndarray:
    """(n_labels, n_labels + 1) counts: rows = gold, columns = predicted, the last column = no label (-1 or
    any id outside 0..n_labels-1), so an unparsed answer lowers its gold class's recall."""
    gold = np.asarray(gold, dtype=int)
    pred = np.asarray(pred, dtype=int)
    counts = np.zeros((n_labels, n_labels + 1))
    column = np.where((pred >= 0) & (pred < n_labels), pred, n_labels)
    np.add.at(counts, (gold, column), 1)
    return counts


def metric_from_confusion(counts: np.ndarray, metric: str) -> np.ndarray:
    """``metric`` ("accuracy", "weighted_f1", "macro_f1") of confusion counts shaped (..., L, L + 1)
    (``confusion_with_unparsed``), over the leading axes at once. The project's one definition of each
    metric: weighted F1 is sklearn's ``average="weighted"`` (zero_division 0), macro F1 the plain mean over
    the L labels; the bootstrap (``stats``) calls it on thousands of resampled matrices at once."""
    if metric not in METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {', '.join(METRICS)}.")
    n_labels = counts.shape[-2]
    labelled = counts[..., :n_labels]
    support = counts.sum(axis=-1)  # gold counts, unparsed predictions included
    tp = np.diagonal(labelled, axis1=-2, axis2=-1)
    total = support.sum(axis=-1)
    if metric == "accuracy":
        return safe_div(tp.sum(axis=-1), total)
    precision = safe_div(tp, labelled.sum(axis=-2))
    recall = safe_div(tp, support)
    f1 = safe_div(2 * precision * recall, precision + recall)
    if metric == "macro_f1":
        return f1.mean(axis=-1)
    return safe_div((f1 * support).sum(axis=-1), total)


def classification_metrics(gold: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, weighted/macro F1 (``metric_from_confusion``), per-class P/R/F1/support and the confusion
    matrix (JSON-able)."""
    n = len(labels)
    gold = np.asarray(gold, dtype=int)
    pred = np.asarray(pred, dtype=int)
    matrix = confusion(gold, pred, n)
    counts = confusion_with_unparsed(gold, pred, n)
    support = counts.sum(axis=-1)
    tp = np.diag(matrix).astype(float)
    predicted = matrix.sum(axis=0).astype(float)
    precision = safe_div(tp, predicted)
    recall = safe_div(tp, support)
    f1 = safe_div(2 * precision * recall, precision + recall)
    return {
        "n": int(len(gold)),
        **{m: float(metric_from_confusion(counts, m)) if n else 0.0 for m in METRICS},
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": matrix.tolist(),
    }


def per_class_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The per-class block as a table (label, precision, recall, f1, support, predicted)."""
    return pd.DataFrame([{"label": k, **v} for k, v in metrics["per_class"].items()])


def save_metrics(metrics: Mapping[str, Any], folder: str | os.PathLike, name: str) -> dict[str, Path]:
    """``<name>_metrics.json`` and ``<name>_per_class.csv`` in ``folder``, written atomically."""
    folder = Path(folder)
    json_path = write_json(folder / metrics_name(name), dict(metrics))
    csv_path = folder / per_class_name(name)
    with atomic_path(csv_path) as tmp:
        per_class_frame(metrics).to_csv(tmp, index=False)
    return {"metrics": json_path, "per_class": csv_path}


def mean_sd(
    runs: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("accuracy", "weighted_f1", "macro_f1")
) -> dict:
    """Mean and sample standard deviation (ddof 1; 0 for a single run) of headline metrics over seeds."""
    out: dict[str, Any] = {"n_runs": len(runs)}
    for key in keys:
        values = np.array([float(r[key]) for r in runs])
        out[key] = {
            "mean": float(values.mean()) if len(values) else float("nan"),
            "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "values": values.tolist(),
        }
    return out

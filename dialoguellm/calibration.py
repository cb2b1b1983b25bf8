"""Calibration: moving a model's label scores toward the label frequencies it should predict, fitted on
DEV predictions only and applied unchanged to test. Two fits, one home:

- **label biases** (``eval.calibrate``): one additive bias per label chosen to maximise dev weighted F1
  (``fit_label_bias``), fitted after training (``fit_calibration``) and applied by evaluation
  (``load_calibration``, ``apply_label_bias``);
- **prior correction** (notebook 06): per-label log-prior offsets and one scale fitted by maximum likelihood
  of the dev gold labels (``PriorCorrection``), a smooth fit with one solution.

Both read the raw label scores of a prediction frame (``scoring.predictions.label_scores``); neither ever
reads a test label.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm.io import read_json, write_json
from dialoguellm.labels import LABELS, normalised_label_names
from dialoguellm.metrics import classification_metrics
from dialoguellm.prompts import Prepared
from dialoguellm.runs import load_run_config
from dialoguellm.scoring.predictions import (
    check_frame,
    label_scores,
    label_words,
    metrics_of,
    probabilities,
    score_prepared,
)

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------- label biases (dev F1)
def fit_label_bias(
    loglik: np.ndarray, gold: Sequence[int], labels: Sequence[str], rounds: int = 3, span: float = 4.0
) -> np.ndarray:
    """One additive bias per label maximising weighted F1 of ``argmax(loglik + bias)`` on these (dev) rows.

    Coordinate ascent over a grid; the first label's bias stays 0 (only differences matter). Fit on dev,
    applied unchanged to test, never tuned on the test split.
    """
    gold = np.asarray(gold, dtype=int)
    bias = np.zeros(loglik.shape[1])
    grid = np.linspace(-span, span, 81)

    def score(b: np.ndarray) -> float:
        return classification_metrics(gold, (loglik + b).argmax(axis=1), labels)["weighted_f1"]

    best = score(bias)
    for _ in range(rounds):
        improved = False
        for j in range(1, loglik.shape[1]):
            for value in grid:
                trial = bias.copy()
                trial[j] = value
                got = score(trial)
                if got > best + 1e-9:
                    best, bias, improved = got, trial, True
        if not improved:
            break
    return bias


def apply_label_bias(predictions: pd.DataFrame, labels: Sequence[str], bias: Sequence[float]) -> pd.DataFrame:
    """Predictions after adding ``bias`` to the log-likelihoods (the raw prediction kept as pred_id_raw)."""
    out = predictions.copy()
    adjusted = label_scores(out, labels) + np.asarray(bias, dtype=float)
    out["pred_id_raw"] = out["pred_id"]
    out["pred_id"] = adjusted.argmax(axis=1)
    out["pred"] = [labels[i] for i in out["pred_id"]]
    probs = probabilities(adjusted)
    for j, label in enumerate(labels):
        out[f"p_{label}"] = probs[:, j]
    return out


def label_bias_of(predictions: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """``fit_label_bias`` on a scored dev prediction frame (its raw label scores and gold labels)."""
    return fit_label_bias(label_scores(predictions, labels), predictions["gold_id"].to_numpy(), labels)


def calibration_reuses_selection(config: Any) -> bool:
    """Whether the label biases are fitted on the model-selection dev predictions (the same sample)."""
    return config.eval.calibration_per_dataset == config.data.dev_per_dataset


def fit_calibration(
    model: Any, tokenizer: Any, dev: Prepared, config: Any, folder: Path, progress: bool = True
) -> dict[str, list[float]]:
    """Label biases (``eval.calibrate``) fitted on the dev prompts ``dev`` (training prepares
    ``eval.calibration_per_dataset`` utterances per corpus with ``prompts.prepare_split``), scored with the
    selected adapter in ``folder``, whose weights are loaded into ``model`` first. Writes ``calibration.json`` (what evaluation applies to test) and ``calibration_dev.json`` (how
    many dev rows, weighted F1 before and after, in-sample) into ``folder``; returns the biases.

    Biases fitted on few rows follow that sample's noise (the experiment ``scoring_dev`` reports cross-fitted
    dev weighted F1 by the number of rows they were fitted on, ``label_bias(rows=N)``).
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"No selected adapter in {folder} to calibrate (adapter_model.safetensors).")
    set_peft_model_state_dict(model, load_file(str(weights)))
    predictions = score_prepared(model, tokenizer, dev, config, "dev", progress)
    calibration, report = {}, {"length_normalise": bool(config.eval.length_normalise), "corpora": {}}
    for name, preds in predictions.items():
        labels = normalised_label_names(name)
        bias = label_bias_of(preds, labels)
        calibration[name] = bias.tolist()
        raw = metrics_of(preds, labels)
        fitted = metrics_of(apply_label_bias(preds, labels, bias), labels)
        report["corpora"][name] = {
            "dev_utterances": len(preds),
            "weighted_f1_raw": raw["weighted_f1"],
            "weighted_f1_calibrated_in_sample": fitted["weighted_f1"],
        }
        log.info(
            "%s: label biases fitted on %d dev utterances (dev weighted F1 %.4f -> %.4f in sample)",
            name,
            len(preds),
            raw["weighted_f1"],
            fitted["weighted_f1"],
        )
    write_json(folder / "calibration_dev.json", report)
    write_json(folder / "calibration.json", calibration)
    return calibration


# --------------------------------------------------------------------------------------------- runs
def load_calibration(adapter_dir: str | os.PathLike, config: Any) -> dict[str, list[float]]:
    """The per-label biases training fitted on dev (``<adapter>/calibration.json``), when ``eval.calibrate``
    is on and the file exists; else {}.

    The biases only fit scores on the scale they were fitted on, so evaluating with another
    ``eval.length_normalise`` than the training run (its ``config.yaml`` beside the adapter) is refused.
    """
    folder = Path(adapter_dir)
    path = folder / "calibration.json"
    if not config.eval.calibrate:
        return {}
    if not path.is_file():
        log.warning(
            "eval.calibrate is on but %s has no calibration.json (trained without eval.calibrate, or "
            "training stopped before fitting it: resume it); reporting uncalibrated predictions.",
            folder,
        )
        return {}
    if (folder.parent / "config.yaml").is_file():
        trained = load_run_config(folder.parent).eval.length_normalise
        if bool(trained) != bool(config.eval.length_normalise):
            raise ValueError(
                f"{path} was fitted on {'length-normalised' if trained else 'summed'} label scores, but "
                f"this evaluation sets eval.length_normalise={config.eval.length_normalise}. Evaluate with "
                f"eval.length_normalise={trained} (the training run's value), or eval.calibrate=false."
            )
    calibration = read_json(path)
    problem = _calibration_problem(calibration)
    if problem:
        raise ValueError(
            f"{path} should map each corpus to a list of label biases ({problem}); retrain or delete it."
        )
    return calibration


def _calibration_problem(calibration: Any) -> str | None:
    """What is wrong with a parsed calibration.json, or None: one finite bias per label of a known corpus."""
    if not isinstance(calibration, dict):
        return f"found a JSON {type(calibration).__name__}"
    for name, biases in calibration.items():
        if name not in LABELS:
            return f"{name!r} is not a corpus; expected {', '.join(LABELS)}"
        if not isinstance(biases, list) or len(biases) != len(LABELS[name]):
            return f"{name!r} needs a list of {len(LABELS[name])} numbers, one per label"
        for bias in biases:
            if isinstance(bias, bool) or not isinstance(bias, (int, float)):
                return f"{name!r} holds {bias!r}, not a number"
            try:
                if not math.isfinite(bias):
                    return f"{name!r} holds {bias!r}, not a finite number"
            except OverflowError:
                return f"{name!r} holds an integer too large for a bias"
    return None


# ------------------------------------------------------------------------ prior correction (likelihood)
@dataclass
class PriorCorrection:
    """Per-class log-prior offsets: corrected score = scale * log p(label | prompt) - offset[label].

    Fitted on dev predictions only (``fit``), then applied unchanged to any other split (``apply``). The
    offsets and the one scale maximise the dev log-likelihood of the gold labels (a convex problem, solved by
    Newton's method; a small L2 term keeps offsets finite for a label dev lacks and the scale near 1). At that
    optimum (without the L2 term) the mean corrected probability of every label equals its dev frequency, so a
    label the model over-predicts (neutral) is pushed down by exactly the amount dev shows, and nothing is
    learnt from test. The scale matters for length-normalised scores (``eval.length_normalise``): a mean per
    token is a log-probability divided by 2-4 tokens, whose softmax is far too flat; matching the mean
    probabilities of such flat rows to the label frequencies pushed most predictions onto the majority label.
    """

    labels: list[str]
    offsets: list[float] = field(default_factory=list)
    scale: float = 1.0
    method: str = "likelihood"
    fitted_on: str = "dev"
    n_fit: int = 0

    @staticmethod
    def log_scores(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
        """The model's raw label scores: the saved log-likelihoods (ll_<label>) when present, else the log of
        the probabilities (equal up to a per-row constant, which no argmax or softmax sees)."""
        return label_scores(frame, labels)

    @classmethod
    def fit(
        cls,
        dev: pd.DataFrame,
        labels: Sequence[str] | None = None,
        method: str = "likelihood",
        l2: float | None = None,
        scale: float | None = None,
    ) -> PriorCorrection:
        """Fit the offsets on a DEV prediction frame (the only frame this method ever reads).

        ``l2`` (default 1 / number of dev rows) shrinks the offsets toward 0, so a label seen once or twice
        in a small dev sample cannot get an extreme offset; with a large dev split it fades away.
        ``scale`` fixes the scale (1.0: offsets only) instead of fitting it (the experiment ``scoring_dev``, ``prior(scale=S)``).
        """
        check_frame(dev)
        labels = list(labels or label_words(dev))
        if len(dev) == 0:
            raise ValueError("Cannot fit a prior correction on an empty dev prediction frame.")
        scores = cls.log_scores(dev, labels)
        gold = dev["gold_id"].to_numpy(dtype=int)
        if method != "likelihood":
            raise ValueError(f"Prior correction method must be 'likelihood', not {method!r}.")
        scale, offsets = fit_prior(scores, gold, len(labels), scale=scale, l2=l2)
        return cls(labels=labels, offsets=offsets.tolist(), scale=scale, method=method, n_fit=len(dev))

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` with corrected probabilities and predictions (gold untouched)."""
        check_frame(frame)
        scores = self.scale * self.log_scores(frame, self.labels) - np.asarray(self.offsets)[None, :]
        probs = probabilities(scores)
        pred = probs.argmax(axis=1)
        out = frame.copy()
        out["pred_id"] = pred.astype(int)
        out["pred"] = [self.labels[i] for i in pred]
        for j, word in enumerate(self.labels):
            out[f"p_{word}"] = probs[:, j]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "offsets": self.offsets,
            "scale": self.scale,
            "method": self.method,
            "fitted_on": self.fitted_on,
            "n_fit": self.n_fit,
        }


def fit_prior(
    scores: np.ndarray, gold: np.ndarray, n_labels: int, scale: float | None = None, l2: float | None = None
) -> tuple[float, np.ndarray]:
    """(scale, offsets) of ``PriorCorrection`` fitted on these (dev) rows' log scores: ``scale`` fixes the
    scale (1.0: offsets only) instead of fitting it; ``l2`` defaults to 1 / rows. Offsets are centred (only
    differences matter)."""
    scale, offsets = _fit_likelihood_offsets(
        scores, np.asarray(gold, dtype=int), n_labels, 1.0 / len(gold) if l2 is None else l2, scale
    )
    return scale, offsets - offsets.mean()


def _fit_likelihood_offsets(
    scores: np.ndarray, gold: np.ndarray, n: int, l2: float, fixed_scale: float | None = None
) -> tuple[float, np.ndarray]:
    """(a, b) minimising mean NLL of softmax(a * scores - b)[gold] + l2 (|b|^2 + (a - 1)^2), by Newton's
    method: the logits are linear in (a, b), so the problem is convex (~10 steps). With ``fixed_scale``,
    a stays at that value and only b is fitted."""
    onehot = np.eye(n)[gold]
    a, b = (1.0 if fixed_scale is None else float(fixed_scale)), np.zeros(n)
    for _ in range(100):
        p = probabilities(a * scores - b)
        ps = (p * scores).sum(axis=1, keepdims=True)  # expected score under p, per row
        # Gradients of the mean NLL: d/da = mean(E_p[s] - s_gold), d/db = mean(onehot - p).
        grad_a = float((ps[:, 0] - (onehot * scores).sum(axis=1)).mean()) + 2 * l2 * (a - 1)
        grad_b = (onehot - p).mean(axis=0) + 2 * l2 * b
        # Hessian (per row: J^T (diag p - p p^T) J with J = [s, -I]), averaged over rows.
        h_aa = float((p * scores**2).sum(axis=1).mean() - (ps[:, 0] ** 2).mean()) + 2 * l2
        h_ab = -(p * (scores - ps)).mean(axis=0)
        h_bb = (np.diag(p.mean(axis=0)) - p.T @ p / len(p)) + 2 * l2 * np.eye(n)
        hess = np.block([[np.array([[h_aa]]), h_ab[None, :]], [h_ab[:, None], h_bb]])
        step = np.linalg.solve(hess, np.concatenate([[grad_a], grad_b]))
        if fixed_scale is not None:  # b alone: its own block of the Hessian
            step = np.concatenate([[0.0], np.linalg.solve(h_bb, grad_b)])
        # Halve a step that raises the loss: a full Newton step can overshoot where the softmax is sharp
        # (a large fixed scale), and a convex loss always falls along a short enough Newton direction.
        before = _penalised_nll(scores, gold, a, b, l2)
        for _ in range(30):
            if _penalised_nll(scores, gold, a - step[0], b - step[1:], l2) <= before + 1e-12:
                break
            step = step / 2
        a, b = a - step[0], b - step[1:]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), b


def _penalised_nll(scores: np.ndarray, gold: np.ndarray, a: float, b: np.ndarray, l2: float) -> float:
    """The loss ``_fit_likelihood_offsets`` minimises."""
    logits = a * scores - b
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    nll = float((log_z - logits[np.arange(len(gold)), gold]).mean())
    return nll + l2 * (float((b**2).sum()) + (a - 1) ** 2)


# ------------------------------------------------------------------ can the scores be trusted (test)
def _confidence(probs: np.ndarray, gold: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(probability of the predicted label, whether it is right) per row."""
    probs = np.asarray(probs, dtype=float)
    gold = np.asarray(gold, dtype=int)
    if probs.ndim != 2 or len(probs) != len(gold):
        raise ValueError(
            f"Expected an (N, L) probability matrix for {len(gold)} gold labels, got {probs.shape}."
        )
    return probs.max(axis=1), probs.argmax(axis=1) == gold


def reliability_table(probs: np.ndarray, gold: Sequence[int], bins: int = 10) -> pd.DataFrame:
    """The reliability diagram's numbers: rows sorted into ``bins`` equal-width bins of their confidence
    (the predicted label's probability); per bin the count, mean confidence and accuracy (empty bins kept,
    with NaN). A calibrated model's accuracy equals its confidence in every bin."""
    confidence, correct = _confidence(probs, gold)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (lower, upper]; a confidence of exactly 0 cannot occur (it is a maximum over >= 2 labels).
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append(
            {
                "bin": b,
                "lower": edges[b],
                "upper": edges[b + 1],
                "count": n,
                "confidence": float(confidence[inside].mean()) if n else np.nan,
                "accuracy": float(correct[inside].mean()) if n else np.nan,
            }
        )
    return pd.DataFrame(rows)


def expected_calibration_error(probs: np.ndarray, gold: Sequence[int], bins: int = 10) -> float:
    """ECE: the mean over rows of |accuracy - confidence| of their bin (``reliability_table``), i.e. the
    bins' gaps weighted by their share of rows. 0 for a calibrated model; in [0, 1]."""
    table = reliability_table(probs, gold, bins)
    full = table[table["count"] > 0]
    total = full["count"].sum()
    return (
        float((full["count"] * (full["accuracy"] - full["confidence"]).abs()).sum() / total) if total else 0.0
    )


def coverage_curve(probs: np.ndarray, gold: Sequence[int]) -> pd.DataFrame:
    """Accuracy against coverage: keep the most confident k predictions (k = 1..N, set aside the least
    confident) and measure their accuracy. Columns: kept, coverage (k / N), accuracy, threshold (the lowest
    confidence kept). Ties in confidence are broken by row order, so the curve is deterministic."""
    confidence, correct = _confidence(probs, gold)
    order = np.argsort(-confidence, kind="stable")
    kept = np.arange(1, len(order) + 1)
    return pd.DataFrame(
        {
            "kept": kept,
            "coverage": kept / max(len(order), 1),
            "accuracy": np.cumsum(correct[order]) / kept,
            "threshold": confidence[order],
        }
    )


def accuracy_at_coverage(curve: pd.DataFrame, coverage: float) -> float:
    """The accuracy of the most confident ``coverage`` share of predictions (at least one row)."""
    k = max(1, int(round(coverage * len(curve))))
    return float(curve["accuracy"].iloc[k - 1])

"""Error analysis of saved predictions: where the model fails, and one cheap mitigation.

Everything here reads prediction frames in the layout of ``dialoguellm.evaluate.predict_by_scoring``
(example_id, dataset, gold_id, pred_id, gold, pred, parsed, p_<label>), joined when needed to the curated
records (``dialoguellm.data.load_curated``) by ``example_id == utterance_id``. No model is run.

- ``normalised_confusion``: row-normalised confusion matrix (each gold row sums to 1).
- ``neutral_share``: the paper's first failure mode, over-prediction of neutral (predicted vs true share).
- ``close_pair_confusions``: the second, close emotions mistaken for each other (anger/disgust,
  surprise vs joy or excitement, sadness/frustration), in each corpus's own label set.
- ``error_breakdown``: accuracy by context length, turn position, utterance length, description presence.
- ``confident_errors``: the example browser, the wrong predictions the model was surest of.
- ``PriorCorrection``: per-class log-prior offsets fitted on DEV predictions only and applied to test, a
  mitigation the paper lacks; ``prior_correction_report`` puts it beside the uncorrected numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm.io import atomic_path, read_json, write_json
from dialoguellm.labels import normalised_label_names
from dialoguellm.metrics import classification_metrics

RESULTS_DIR = "analysis"
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


def label_words(frame: pd.DataFrame, dataset: str | None = None) -> list[str]:
    """The label words of a prediction frame, in label-id order (from the corpus, else the p_ columns)."""
    dataset = dataset or _dataset_of(frame)
    if dataset is not None:
        return list(normalised_label_names(dataset))
    cols = [c[2:] for c in frame.columns if c.startswith("p_")]
    if not cols:
        raise ValueError("The prediction frame has no dataset column and no p_<label> columns.")
    return cols


def _dataset_of(frame: pd.DataFrame) -> str | None:
    if "dataset" not in frame or frame.empty:
        return None
    names = frame["dataset"].unique()
    if len(names) != 1:
        raise ValueError(f"The prediction frame mixes datasets {sorted(names)}; analyse one at a time.")
    return str(names[0])


def _check_frame(frame: pd.DataFrame) -> None:
    missing = [c for c in ("example_id", "gold_id", "pred_id") if c not in frame]
    if missing:
        raise ValueError(
            f"Prediction frame lacks column(s) {', '.join(missing)}; expected the layout of "
            "dialoguellm.evaluate.predict_by_scoring (example_id, dataset, gold_id, pred_id, ...)."
        )


def probability_matrix(frame: pd.DataFrame, words: Sequence[str]) -> np.ndarray:
    """The (N, L) label probabilities of a scored prediction frame (columns p_<label>)."""
    cols = [f"p_{w}" for w in words]
    missing = [c for c in cols if c not in frame]
    if missing:
        raise ValueError(
            f"Prediction frame lacks {', '.join(missing)}: label probabilities come from label scoring "
            "(eval.mode score); generate-mode predictions cannot be prior-corrected or ranked by confidence."
        )
    return frame[cols].to_numpy(dtype=float)


def raw_scores(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """(N, L) raw label scores of a scored frame: ``ll_<label>`` (the label log-likelihoods evaluation saves,
    never changed by a calibration), else ``log p_<label>``."""
    ll = [f"ll_{w}" for w in labels]
    if all(c in frame for c in ll):
        return frame[ll].to_numpy(dtype=float)
    # Probabilities can underflow to 0 for a label the model never considers; clip before the log.
    return np.log(np.clip(probability_matrix(frame, labels), 1e-12, None))


def raw_frame(frame: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """The uncalibrated predictions of a frame that evaluation calibrated (``eval.calibrate``: it keeps the
    raw prediction as ``pred_id_raw`` and the raw scores as ``ll_<label>``); other frames come back as they are."""
    if "pred_id_raw" not in frame:
        return frame
    words = label_words(frame, dataset)
    scores = raw_scores(frame, words)
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    out = frame.drop(columns=["pred_id_raw"]).assign(pred_id=frame["pred_id_raw"].astype(int))
    out["pred"] = [words[i] if i >= 0 else "" for i in out["pred_id"]]
    for j, word in enumerate(words):
        out[f"p_{word}"] = probs[:, j]
    return out


def metrics_of(frame: pd.DataFrame, dataset: str | None = None) -> dict[str, Any]:
    """Accuracy, weighted/macro F1 etc. of a prediction frame (``dialoguellm.metrics``)."""
    _check_frame(frame)
    return classification_metrics(
        frame["gold_id"].to_numpy(), frame["pred_id"].to_numpy(), label_words(frame, dataset)
    )


# ---------------------------------------------------------------------------- confusion and failure modes


def normalised_confusion(frame: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """Confusion matrix with rows = gold, columns = predicted, each row divided by its gold count.

    A gold label with no examples keeps a row of zeros (there is nothing to normalise). Unparsed answers
    (pred_id -1, generate mode) get their own last column, so every non-empty row still sums to 1.
    """
    _check_frame(frame)
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
    _check_frame(frame)
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
    dataset = dataset or _dataset_of(frame)
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
    from dialoguellm.baselines import previous_turns_text, split_frame

    _check_frame(frame)
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
    dataset = _dataset_of(frame)
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

    Columns: dataset, factor, bucket, order (bucket position), n, accuracy, error_rate.
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
                }
            )
    out = pd.DataFrame(rows, columns=["dataset", "factor", "bucket", "order", "n", "accuracy", "error_rate"])
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
        return raw_scores(frame, labels)

    @classmethod
    def fit(
        cls,
        dev: pd.DataFrame,
        labels: Sequence[str] | None = None,
        method: str = "likelihood",
        l2: float | None = None,
    ) -> PriorCorrection:
        """Fit the offsets on a DEV prediction frame (the only frame this method ever reads).

        ``l2`` (default 1 / number of dev rows) shrinks the offsets toward 0, so a label seen once or twice
        in a small dev sample cannot get an extreme offset; with a large dev split it fades away.
        """
        _check_frame(dev)
        labels = list(labels or label_words(dev))
        if len(dev) == 0:
            raise ValueError("Cannot fit a prior correction on an empty dev prediction frame.")
        scores = cls.log_scores(dev, labels)
        gold = dev["gold_id"].to_numpy(dtype=int)
        if method != "likelihood":
            raise ValueError(f"Prior correction method must be 'likelihood', not {method!r}.")
        scale, offsets = _fit_likelihood_offsets(
            scores, gold, len(labels), 1.0 / len(dev) if l2 is None else l2
        )
        offsets = offsets - offsets.mean()  # only differences matter; centred offsets read more easily
        return cls(labels=labels, offsets=offsets.tolist(), scale=scale, method=method, n_fit=len(dev))

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``frame`` with corrected probabilities and predictions (gold untouched)."""
        _check_frame(frame)
        scores = self.scale * self.log_scores(frame, self.labels) - np.asarray(self.offsets)[None, :]
        probs = _softmax(scores)
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


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def _fit_likelihood_offsets(
    scores: np.ndarray, gold: np.ndarray, n: int, l2: float
) -> tuple[float, np.ndarray]:
    """(a, b) minimising mean NLL of softmax(a * scores - b)[gold] + l2 (|b|^2 + (a - 1)^2), by Newton's
    method: the logits are linear in (a, b), so the problem is convex (~10 steps)."""
    onehot = np.eye(n)[gold]
    a, b = 1.0, np.zeros(n)
    for _ in range(100):
        p = _softmax(a * scores - b)
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
        a, b = a - step[0], b - step[1:]
        if np.abs(step).max() < 1e-8:
            break
    return float(a), b


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
    dataset = _dataset_of(test)
    correction = PriorCorrection.fit(dev, label_words(dev, _dataset_of(dev)), method=method)
    corrected = correction.apply(test)
    rows = []
    variants = {
        "uncorrected": test,
        f"prior-corrected ({method}, fitted on dev)": corrected,
        **(others or {}),
    }
    for variant, frame in variants.items():
        m = metrics_of(frame, dataset)
        row = {
            "dataset": dataset,
            "variant": variant,
            "n": m["n"],
            "accuracy": m["accuracy"],
            "weighted_f1": m["weighted_f1"],
            "macro_f1": m["macro_f1"],
        }
        if NEUTRAL in correction.labels:
            share = neutral_share(frame, dataset)
            row.update(
                neutral_true_share=share["true_share"], neutral_predicted_share=share["predicted_share"]
            )
        rows.append(row)
    return pd.DataFrame(rows), correction, corrected


def baseline_prior_correction(
    run_dir: str | os.PathLike, datasets: Sequence[str], baseline: str = "tfidf_lr"
) -> pd.DataFrame:
    """The same correction on a baseline's saved dev and test predictions (notebook 05's
    ``<run_dir>/baselines``): does it help a classifier that is not an LLM? Empty when none were saved."""
    folder = Path(run_dir) / "baselines"
    reports = []
    for name in datasets:
        dev, test = (folder / f"{name}_{baseline}_{split}_predictions.csv" for split in ("dev", "test"))
        if dev.is_file() and test.is_file():
            report, _, _ = prior_correction_report(read_predictions(dev), read_predictions(test))
            reports.append(report.assign(model=baseline))
    return pd.concat(reports, ignore_index=True) if reports else pd.DataFrame()


# ------------------------------------------------------------------------------- reading a run folder

# Folders of a run that hold other stages' predictions (baselines, ablation arms), never notebook 04's.
_NOT_EVALUATION = ("baselines", "ablations", RESULTS_DIR, "notebooks", "records", "data")


def find_predictions(
    run_dir: str | os.PathLike, folder: str | os.PathLike | None = None
) -> dict[tuple[str, str], Path]:
    """``(dataset, split) -> predictions CSV`` of the evaluation stage (notebook 04) in ``run_dir``.

    Looks for ``*_predictions.csv`` (``evaluate.save_predictions``) under ``folder`` (default: the whole run
    outside the baselines/ablations/analysis folders); the corpus is read from the file's dataset column and
    the split from its name (``..._dev_...`` / ``..._test_...``). For a pair, label-scoring predictions win
    over generate-mode ones (only they carry label probabilities), then the newest file.
    """
    run = Path(run_dir)
    root = Path(folder) if folder else run
    ranked: dict[tuple[str, str], tuple[tuple[bool, float], Path]] = {}
    for path in root.rglob("*_predictions.csv"):
        rel = path.relative_to(root).parts
        if folder is None and rel[0] in _NOT_EVALUATION:
            continue
        tokens = set(path.stem.replace("-", "_").split("_")) | set(rel[:-1])
        split = "test" if "test" in tokens else "dev" if "dev" in tokens else None
        if split is None:
            continue
        head = pd.read_csv(path, nrows=1)
        if "dataset" not in head or head.empty:
            continue
        # Label-scoring predictions (with p_<label> columns) win over generate-mode ones, then the newest.
        rank = (any(c.startswith("p_") for c in head.columns), path.stat().st_mtime)
        key = (str(head["dataset"].iloc[0]), split)
        if key not in ranked or rank > ranked[key][0]:
            ranked[key] = (rank, path)
    return {key: path for key, (_, path) in ranked.items()}


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A saved prediction frame (example_id read as text, so ids like '001' survive)."""
    return pd.read_csv(path, dtype={"example_id": str}, keep_default_na=False, na_values=[""])


def score_split(
    config: Any,
    model: Any,
    tokenizer: Any,
    corpora: Mapping[str, Any],
    split: str,
    per_dataset: int,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """Label-scoring predictions of ``model`` on ``split`` of each corpus, prompts exactly as in training
    and evaluation (``train.prepare_examples``), ``per_dataset`` utterances stratified by label (0 = all).
    Used for the dev predictions the prior correction is fitted on, when notebook 04 saved none."""
    import copy

    from dialoguellm.train import prepare_examples, score_prepared

    config = copy.deepcopy(config)
    setattr(config.data, f"{split}_per_dataset", per_dataset)
    config.data.datasets = [d for d in config.data.datasets if d in corpora]
    prepared = prepare_examples(config, tokenizer, corpora, (split,), descriptions)
    return score_prepared(model, tokenizer, prepared, config, split, progress)


def load_tokenizer(config: Any) -> Any:
    """The tokenizer of ``config.model`` alone (no weights), to rebuild prompts for reading."""
    from transformers import AutoTokenizer

    from dialoguellm.modeling import resolve_model_path

    folder, gguf_file = resolve_model_path(config.model.name)
    kwargs: dict[str, Any] = {"trust_remote_code": config.model.trust_remote_code}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    return AutoTokenizer.from_pretrained(folder, **kwargs)


def rebuild_prompts(
    config: Any,
    tokenizer: Any,
    corpus: Any,
    dataset: str,
    split: str,
    example_ids: Sequence[str],
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, str]:
    """``example_id -> prompt text`` for a few utterances, built as training/evaluation built them (same
    settings, same demonstrations), so the example browser shows what the model read without re-running it."""
    from dialoguellm.prompts import builders_from_config, dialogue_index, rows_of

    descriptions = descriptions or {}
    builder = builders_from_config(tokenizer, {dataset: corpus}, config, descriptions)[dataset]
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
    path = Path(run_dir) / RESULTS_DIR / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=True if table.index.name else False)
    return path


def load_table(run_dir: str | os.PathLike, name: str, index_col: int | None = None) -> pd.DataFrame | None:
    """A table ``save_table`` wrote, or None when the run has none."""
    path = Path(run_dir) / RESULTS_DIR / f"{name}.csv"
    return pd.read_csv(path, index_col=index_col) if path.is_file() else None


def save_json(data: Any, run_dir: str | os.PathLike, name: str) -> Path:
    """Write ``<run_dir>/analysis/<name>.json``."""
    return write_json(Path(run_dir) / RESULTS_DIR / f"{name}.json", data)


def load_json(run_dir: str | os.PathLike, name: str) -> Any:
    """Read ``<run_dir>/analysis/<name>.json``."""
    return read_json(Path(run_dir) / RESULTS_DIR / f"{name}.json")

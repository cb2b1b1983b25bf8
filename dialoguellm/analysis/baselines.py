"""Floors for every LLM number: majority class and TF-IDF + logistic regression.

Each baseline is fitted on the training split of a corpus, any setting is chosen on the dev split (the
regularisation strength C of the logistic regression, by dev weighted F1), and it is scored on dev and
test with the same metrics as the LLM (``dialoguellm.metrics``). The test split is only ever predicted,
never used for a choice.

- ``majority``: always the most frequent training label (MELD: neutral; test 48.1 % accuracy, 31.3 wF1).
- ``tfidf_lr``: TF-IDF of the utterance alone, multinomial logistic regression.
- ``tfidf_lr_context``: the same plus a second TF-IDF block for the previous ``z`` utterances of the
  dialogue (a separate vocabulary, so a context word is not confused with the same word in the utterance).

Predictions use the frame layout of ``dialoguellm.scoring.predictions.predict_by_scoring`` (example_id, dataset,
gold_id, pred_id, gold, pred, parsed, p_<label>), so the error analysis reads baselines and LLM alike.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm.corpora.readers import split_frame
from dialoguellm.io import atomic_path, write_json
from dialoguellm.labels import label_names, normalised_label_names
from dialoguellm.metrics import classification_metrics
from dialoguellm.prompts import previous_turns_text
from dialoguellm.runs import RunLayout

log = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("majority", "tfidf_lr", "tfidf_lr_context")
DEFAULT_C_GRID: tuple[float, ...] = (1.0, 3.0, 10.0)


@dataclass
class BaselineSettings:
    """What the baselines were run with (saved next to their results)."""

    context_turns: int = 2
    train_per_dataset: int = 0  # training utterances per corpus, a seeded random sample; 0 = all (tiny runs)
    seed: int = 0
    c_grid: list[float] = field(default_factory=lambda: list(DEFAULT_C_GRID))
    max_features: int = 50_000
    sublinear_tf: bool = True
    max_iter: int = 1000


# ---------------------------------------------------------------------------------------------- inputs


def _gold_ids(frame: pd.DataFrame, dataset: str) -> np.ndarray:
    if "label_id" in frame:
        return frame["label_id"].to_numpy(dtype=int)
    native = label_names(dataset)
    return np.array([native.index(lbl) for lbl in frame["label"]], dtype=int)


def prediction_frame(frame: pd.DataFrame, dataset: str, probs: np.ndarray) -> pd.DataFrame:
    """Predictions in the layout of ``scoring.predictions.predict_by_scoring`` (argmax of ``probs``, shape (N, L))."""
    words = normalised_label_names(dataset)
    if probs.shape != (len(frame), len(words)):
        raise ValueError(f"probabilities have shape {probs.shape}, expected ({len(frame)}, {len(words)}).")
    gold = _gold_ids(frame, dataset)
    pred = probs.argmax(axis=1)
    out = pd.DataFrame(
        {
            "example_id": frame["utterance_id"].astype(str).to_numpy(),
            "dataset": dataset,
            "gold_id": gold,
            "pred_id": pred.astype(int),
            "gold": [words[i] for i in gold],
            "pred": [words[i] for i in pred],
            "parsed": True,
        }
    )
    for j, word in enumerate(words):
        out[f"p_{word}"] = probs[:, j]
    return out


def score_frame(predictions: pd.DataFrame, dataset: str) -> dict[str, Any]:
    """Metrics of a prediction frame with the project's metrics (same as the LLM's)."""
    return classification_metrics(
        predictions["gold_id"].to_numpy(), predictions["pred_id"].to_numpy(), normalised_label_names(dataset)
    )


# ------------------------------------------------------------------------------------------- baselines


class MajorityBaseline:
    """Always predicts the most frequent training label (ties: the lowest label id)."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.label_id: int | None = None

    def fit(self, train: pd.DataFrame) -> MajorityBaseline:
        counts = np.bincount(_gold_ids(train, self.dataset), minlength=len(label_names(self.dataset)))
        self.label_id = int(counts.argmax())
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.label_id is None:
            raise RuntimeError("MajorityBaseline.fit must be called before predicting.")
        probs = np.zeros((len(frame), len(label_names(self.dataset))))
        probs[:, self.label_id] = 1.0
        return probs

    def describe(self) -> dict[str, Any]:
        return (
            {"label": normalised_label_names(self.dataset)[self.label_id]}
            if self.label_id is not None
            else {}
        )


class TfidfLogReg:
    """TF-IDF features of the utterance (and optionally its previous turns) + logistic regression.

    ``fit`` trains one model per C in ``c_grid`` on train and keeps the one with the best dev weighted F1.
    """

    def __init__(self, dataset: str, context_turns: int | str = 0, settings: BaselineSettings | None = None):
        self.dataset = dataset
        self.context_turns = context_turns
        self.settings = settings or BaselineSettings()
        self.vectorizers: list[Any] = []
        self.model: Any = None
        self.C: float | None = None
        self.dev_search: list[dict[str, float]] = []

    def _columns(self, frame: pd.DataFrame) -> list[list[str]]:
        cols = [frame["text"].astype(str).tolist()]
        if self.context_turns != 0:
            given = "context_text" in frame and self.context_turns == self.settings.context_turns
            cols.append(
                frame["context_text"].tolist() if given else previous_turns_text(frame, self.context_turns)
            )
        return cols

    def _features(self, frame: pd.DataFrame, fit: bool = False) -> Any:
        from scipy.sparse import hstack
        from sklearn.feature_extraction.text import TfidfVectorizer

        cols = self._columns(frame)
        if fit:
            self.vectorizers = [
                TfidfVectorizer(
                    sublinear_tf=self.settings.sublinear_tf, max_features=self.settings.max_features
                )
                for _ in cols
            ]
            blocks = [vec.fit_transform(col) for vec, col in zip(self.vectorizers, cols, strict=True)]
        else:
            blocks = [vec.transform(col) for vec, col in zip(self.vectorizers, cols, strict=True)]
        return hstack(blocks).tocsr() if len(blocks) > 1 else blocks[0]

    def fit(self, train: pd.DataFrame, dev: pd.DataFrame) -> TfidfLogReg:
        """Fit on ``train``; choose C on ``dev`` (weighted F1, ties to the smaller C)."""
        from sklearn.linear_model import LogisticRegression

        y_train = _gold_ids(train, self.dataset)
        if len(np.unique(y_train)) < 2:
            raise ValueError(
                f"{self.dataset} training split has a single label; a classifier cannot be fitted."
            )
        x_train = self._features(train, fit=True)
        x_dev = self._features(dev)
        words = normalised_label_names(self.dataset)
        best: tuple[float, Any, float] | None = None
        self.dev_search = []
        for c in self.settings.c_grid:
            # newton-cg: the same optimum as lbfgs here, and several times faster on sparse TF-IDF.
            model = LogisticRegression(C=c, solver="newton-cg", max_iter=self.settings.max_iter)
            model.fit(x_train, y_train)
            probs = self._full_proba(model, x_dev, len(words))
            dev_metrics = classification_metrics(_gold_ids(dev, self.dataset), probs.argmax(axis=1), words)
            self.dev_search.append(
                {
                    "C": c,
                    "dev_weighted_f1": dev_metrics["weighted_f1"],
                    "dev_accuracy": dev_metrics["accuracy"],
                }
            )
            if best is None or dev_metrics["weighted_f1"] > best[0]:
                best = (dev_metrics["weighted_f1"], model, c)
        assert best is not None, "c_grid is empty"
        _, self.model, self.C = best
        return self

    @staticmethod
    def _full_proba(model: Any, x: Any, n_labels: int) -> np.ndarray:
        # A label absent from training gets probability 0 (sklearn only knows the classes it saw).
        probs = np.zeros((x.shape[0], n_labels))
        probs[:, model.classes_] = model.predict_proba(x)
        return probs

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("TfidfLogReg.fit must be called before predicting.")
        return self._full_proba(self.model, self._features(frame), len(label_names(self.dataset)))

    def describe(self) -> dict[str, Any]:
        return {"C": self.C, "context_turns": self.context_turns, "dev_search": self.dev_search}


def make_baseline(name: str, dataset: str, settings: BaselineSettings | None = None) -> Any:
    """A fresh, unfitted baseline by name (one of ``BASELINES``)."""
    settings = settings or BaselineSettings()
    if name == "majority":
        return MajorityBaseline(dataset)
    if name == "tfidf_lr":
        return TfidfLogReg(dataset, 0, settings)
    if name == "tfidf_lr_context":
        if settings.context_turns == 0:
            raise ValueError("tfidf_lr_context needs context_turns > 0 (or 'all'); use tfidf_lr for none.")
        return TfidfLogReg(dataset, settings.context_turns, settings)
    raise ValueError(f"Unknown baseline {name!r}; choose from {', '.join(BASELINES)}.")


def fit_and_predict(
    name: str,
    dataset: str,
    train: Any,
    dev: Any,
    test: Any,
    settings: BaselineSettings | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit one baseline on ``train`` (any setting chosen on ``dev``) and predict ``test``: (label probabilities,
    shape (len(test), labels), what it chose). The splits are record lists or frames of curated rows; the
    experiment runner calls this for an arm of ``kind`` ``tfidf_lr`` on exactly the LoRA arm's rows."""
    if name == "tfidf_lr_context":
        raise ValueError(
            "tfidf_lr_context needs each row's previous turns from the whole split; fit it with run_baselines."
        )
    frames = [split_frame(part) for part in (train, dev, test)]
    model = make_baseline(name, dataset, settings)
    model.fit(frames[0]) if isinstance(model, MajorityBaseline) else model.fit(frames[0], frames[1])
    return model.predict_proba(frames[2]), model.describe()


@dataclass
class BaselineRun:
    """Results of the baselines on one or more corpora."""

    table: pd.DataFrame  # one row per (dataset, baseline, split)
    predictions: dict[tuple[str, str, str], pd.DataFrame]  # (dataset, baseline, split) -> frame
    fitted: dict[tuple[str, str], dict[str, Any]]  # (dataset, baseline) -> chosen settings
    settings: BaselineSettings


def run_baselines(
    corpora: Mapping[str, Any],
    baselines: Sequence[str] = BASELINES,
    settings: BaselineSettings | None = None,
    eval_splits: Sequence[str] = ("dev", "test"),
) -> BaselineRun:
    """Fit every baseline on each corpus's train split (C chosen on dev) and score ``eval_splits``.

    ``corpora`` maps a corpus name to its curated DatasetDict (``corpora.readers.load_curated``) or a mapping of split
    name to records.
    """
    settings = settings or BaselineSettings()
    rows: list[dict[str, Any]] = []
    predictions: dict[tuple[str, str, str], pd.DataFrame] = {}
    fitted: dict[tuple[str, str], dict[str, Any]] = {}
    for dataset, splits in corpora.items():
        train = split_frame(splits["train"])
        if 0 < settings.train_per_dataset < len(train):
            # Context comes from the whole split, so a sampled utterance keeps its real previous turns.
            train["context_text"] = previous_turns_text(train, settings.context_turns)
            train = train.sample(settings.train_per_dataset, random_state=settings.seed).reset_index(
                drop=True
            )
        dev = split_frame(splits["dev"])
        frames = {s: split_frame(splits[s]) for s in eval_splits}
        for name in baselines:
            model = make_baseline(name, dataset, settings)
            model.fit(train) if isinstance(model, MajorityBaseline) else model.fit(train, dev)
            fitted[(dataset, name)] = model.describe()
            for split, frame in frames.items():
                pred = prediction_frame(frame, dataset, model.predict_proba(frame))
                m = score_frame(pred, dataset)
                predictions[(dataset, name, split)] = pred
                rows.append(
                    {
                        "dataset": dataset,
                        "baseline": name,
                        "split": split,
                        "n": m["n"],
                        "accuracy": m["accuracy"],
                        "weighted_f1": m["weighted_f1"],
                        "macro_f1": m["macro_f1"],
                        "setting": _setting_text(name, model),
                    }
                )
            log.info("%s %s done", dataset, name)
    return BaselineRun(pd.DataFrame(rows), predictions, fitted, settings)


def _setting_text(name: str, model: Any) -> str:
    if name == "majority":
        return f"always '{model.describe()['label']}'"
    ctx = "" if model.context_turns == 0 else f", + previous {model.context_turns} turns"
    return f"C={model.C:g} (chosen on dev){ctx}"


# ------------------------------------------------------------------------------------------ save / load


def save_baselines(result: BaselineRun, run_dir: str | os.PathLike) -> Path:
    """Write ``<run_dir>/baselines/``: results.csv, settings.json and one predictions CSV per split."""
    folder = RunLayout(Path(run_dir)).baselines
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "results.csv") as tmp:
        result.table.to_csv(tmp, index=False)
    for (dataset, name, split), frame in result.predictions.items():
        with atomic_path(folder / f"{dataset}_{name}_{split}_predictions.csv") as tmp:
            frame.to_csv(tmp, index=False)
    write_json(
        folder / "settings.json",
        {
            "settings": asdict(result.settings),
            "fitted": {f"{d}/{n}": v for (d, n), v in result.fitted.items()},
            "note": "fitted on train; C chosen on dev weighted F1; test only predicted",
        },
    )
    return folder


def load_baseline_results(run_dir: str | os.PathLike) -> pd.DataFrame:
    """The table ``save_baselines`` wrote (``<run_dir>/baselines/results.csv``)."""
    run = RunLayout(Path(run_dir))
    return pd.read_csv(run.written(run.baselines / "results.csv", "Baseline results", "05_ablations"))

"""Predictions from scores: label scoring (the default), generate-and-parse (the paper's way, for
comparison), and the prediction frame both write and every later stage reads.

Label scoring reads the model's probability of every candidate answer: the log-likelihood of the label's
full token sequence (the word and the end-of-sequence token) after the prompt, or with
``eval.length_normalise`` its mean per token (how beam search ranks finished answers). The highest wins, so
every prediction is a valid label. Generation decodes greedily and parses the text with the same
PromptBuilder; text that names no label is counted as wrong, never replaced by a random label (the released
test script did that).

A prediction frame has one row per utterance: example_id, dataset, gold_id, pred_id, gold, pred, parsed, and
for label scoring ``p_<label>`` (probabilities) and ``ll_<label>`` (the scores labels were ranked by).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm.config import DEFAULT_PRECISION
from dialoguellm.io import (  # noqa: F401 (read_predictions: the frame's reader, beside its writer)
    atomic_path,
    predictions_name,
    read_predictions,
)
from dialoguellm.labels import normalised_label_names
from dialoguellm.metrics import classification_metrics, save_metrics
from dialoguellm.prompts import Prepared, PromptBuilder, PromptExample
from dialoguellm.prompts.answers import parse_answers
from dialoguellm.runs import NOT_EVALUATION
from dialoguellm.scoring.engine import generate_texts, score_examples

# The paper's generation settings (its test script): 4 beams, repetition penalty 1.15. It also sets
# temperature 0.7 and top-p 0.95, which only act when sampling; the script does not sample, so neither do we
# (and sampling would make a prediction a draw).
PAPER_GENERATION: dict[str, Any] = {"num_beams": 4, "repetition_penalty": 1.15, "do_sample": False}


def generation_settings(eval_config: Any) -> dict[str, Any]:
    """The ``model.generate`` settings of a config's ``eval`` section: sampling (temperature, top-p and top-k
    only when ``do_sample``, the only mode they act in), beams and repetition penalty. A setting at its
    default is left out, so the defaults give what generation always did: ``{"do_sample": False}`` (greedy;
    anything else the model's own generation config sets still applies)."""
    e = eval_config
    settings: dict[str, Any] = {"do_sample": bool(e.do_sample)}
    if e.num_beams != 1:
        settings["num_beams"] = int(e.num_beams)
    if e.repetition_penalty != 1.0:
        settings["repetition_penalty"] = float(e.repetition_penalty)
    if e.do_sample:
        settings |= {"temperature": float(e.temperature), "top_p": float(e.top_p), "top_k": int(e.top_k)}
    return settings


# ------------------------------------------------------------------------------------------ label scores
def length_normalised(loglik: np.ndarray, answers: Sequence[Sequence[int]]) -> np.ndarray:
    """Label log-likelihoods (N, L) divided by each answer's token count: the mean log-probability per token,
    the score beam search (length penalty 1.0) ranks finished answers by. Without it, a label of two tokens
    ("neutral" + end) starts ahead of one of four ("sad", "ness", ...) for no reason of meaning."""
    lengths = np.array([len(a) for a in answers], dtype=float)
    if (lengths <= 0).any():
        raise ValueError("Every answer needs at least one token to be length-normalised.")
    return loglik / lengths


def probabilities(loglik: np.ndarray) -> np.ndarray:
    """Normalise label scores into probabilities over the candidate labels (a softmax; rows sum to 1)."""
    shifted = loglik - loglik.max(axis=1, keepdims=True)
    expd = np.exp(shifted)
    return expd / expd.sum(axis=1, keepdims=True)


def probability_matrix(frame: pd.DataFrame, words: Sequence[str]) -> np.ndarray:
    """The (N, L) label probabilities of a scored prediction frame (columns p_<label>)."""
    cols = [f"p_{w}" for w in words]
    missing = [c for c in cols if c not in frame]
    if missing:
        raise ValueError(
            f"Prediction frame lacks {', '.join(missing)}: label probabilities come from label scoring "
            "(eval.mode score); generate-mode predictions cannot be calibrated or ranked by confidence."
        )
    return frame[cols].to_numpy(dtype=float)


def label_scores(frame: pd.DataFrame, labels: Sequence[str]) -> np.ndarray:
    """(N, L) raw label scores of a scored frame: ``ll_<label>`` (what labels were ranked by; never changed
    by a calibration), else ``log p_<label>`` (equal up to a per-row constant, which no argmax or softmax
    sees)."""
    ll = [f"ll_{w}" for w in labels]
    if all(c in frame for c in ll):
        return frame[ll].to_numpy(dtype=float)
    # Probabilities can underflow to 0 for a label the model never considers; clip before the log.
    return np.log(np.clip(probability_matrix(frame, labels), 1e-12, None))


def label_words(frame: pd.DataFrame, dataset: str | None = None) -> list[str]:
    """The label words of a prediction frame, in label-id order (from the corpus, else the p_ columns)."""
    dataset = dataset or dataset_of(frame)
    if dataset is not None:
        return list(normalised_label_names(dataset))
    cols = [c[2:] for c in frame.columns if c.startswith("p_")]
    if not cols:
        raise ValueError("The prediction frame has no dataset column and no p_<label> columns.")
    return cols


def dataset_of(frame: pd.DataFrame) -> str | None:
    """The one corpus a prediction frame holds (None for an empty frame or one without a dataset column)."""
    if "dataset" not in frame or frame.empty:
        return None
    names = frame["dataset"].unique()
    if len(names) != 1:
        raise ValueError(f"The prediction frame mixes datasets {sorted(names)}; analyse one at a time.")
    return str(names[0])


def check_frame(frame: pd.DataFrame) -> None:
    """Fail with the expected layout when a frame lacks the columns every reader needs."""
    missing = [c for c in ("example_id", "gold_id", "pred_id") if c not in frame]
    if missing:
        raise ValueError(
            f"Prediction frame lacks column(s) {', '.join(missing)}; expected the layout of "
            "dialoguellm.scoring.predictions.predict_by_scoring (example_id, dataset, gold_id, pred_id, ...)."
        )


# ------------------------------------------------------------------------------------------ predicting
def predict_by_scoring(
    model: Any,
    tokenizer: Any,
    builder: PromptBuilder,
    examples: Sequence[PromptExample],
    batch_size: int = 16,
    dtype: str = "bf16",
    progress: bool = True,
    length_normalise: bool = False,
    precision: str = DEFAULT_PRECISION,
) -> pd.DataFrame:
    """Label-scoring predictions: one row per example with gold, prediction and per-label probabilities.

    ``ll_<label>`` holds the score each label was ranked by: its log-likelihood, or with ``length_normalise``
    that divided by its token count (``length_normalised``); ``p_<label>`` is the softmax of those scores.
    """
    loglik = score_examples(
        model,
        examples,
        builder.answer_ids,
        tokenizer.pad_token_id,
        batch_size,
        dtype,
        desc=f"{builder.dataset}: scoring",
        progress=progress,
        precision=precision,
    )
    if length_normalise:
        loglik = length_normalised(loglik, builder.answer_ids)
    probs = probabilities(loglik) if len(examples) else loglik
    pred = loglik.argmax(axis=1) if len(examples) else np.zeros(0, dtype=int)
    frame = pd.DataFrame(
        {
            "example_id": [e.example_id for e in examples],
            "dataset": builder.dataset,
            "gold_id": [e.label_id for e in examples],
            "pred_id": pred.astype(int),
            "gold": [builder.labels[e.label_id] for e in examples],
            "pred": [builder.labels[i] for i in pred],
            "parsed": True,
        }
    )
    for j, label in enumerate(builder.labels):
        frame[f"p_{label}"] = probs[:, j] if len(examples) else []
    for j, label in enumerate(builder.labels):
        frame[f"ll_{label}"] = loglik[:, j] if len(examples) else []
    return frame


def predict_by_generation(
    model: Any,
    tokenizer: Any,
    builder: PromptBuilder,
    examples: Sequence[PromptExample],
    batch_size: int = 16,
    max_new_tokens: int = 8,
    dtype: str = "bf16",
    progress: bool = True,
    generation: Mapping[str, Any] | None = None,
    precision: str = DEFAULT_PRECISION,
    parser: str = "exact",
    fallback: str = "none",
    seed: int | None = None,
) -> pd.DataFrame:
    """Generation then parsing; unparsed outputs get ``pred_id = -1`` and count as wrong.

    Greedy by default; ``generation`` passes other settings to ``model.generate`` (``PAPER_GENERATION``: the
    released test script's beam search; ``generation_settings`` of a config). ``precision`` as in label
    scoring (``engine.inference_context``). ``parser`` and ``fallback`` as ``prompts.answers.parse_answers``
    (the defaults: the package's parse, no label counted wrong); ``seed`` seeds torch before generating (a
    sampled generation is a draw) and the random fallback (default 0)."""
    if seed is not None:
        import torch

        torch.manual_seed(seed)
    texts = generate_texts(
        model,
        tokenizer,
        [e.prompt_ids for e in examples],
        batch_size,
        max_new_tokens,
        dtype,
        generation,
        desc=f"{builder.dataset}: generating",
        progress=progress,
        precision=precision,
    )
    found = parse_answers(builder, texts, parser, "none")
    pred = parse_answers(builder, texts, parser, fallback, 0 if seed is None else seed)
    return pd.DataFrame(
        {
            "example_id": [e.example_id for e in examples],
            "dataset": builder.dataset,
            "gold_id": [e.label_id for e in examples],
            "pred_id": pred,
            "gold": [builder.labels[e.label_id] for e in examples],
            "pred": [builder.labels[p] if p >= 0 else "" for p in pred],
            "parsed": [p >= 0 for p in found],
            "output": texts,
        }
    )


def predict(
    model: Any,
    tokenizer: Any,
    builder: PromptBuilder,
    examples: Sequence[PromptExample],
    mode: str = "score",
    batch_size: int = 16,
    max_new_tokens: int = 8,
    dtype: str = "bf16",
    progress: bool = True,
    length_normalise: bool = False,
    precision: str = DEFAULT_PRECISION,
    eval_config: Any = None,
) -> pd.DataFrame:
    """Predictions in ``mode`` "score" (label scoring) or "generate" (text, then parse: greedy, the package's
    parse, unless ``eval_config``, a config's ``eval`` section, sets other decoding, ``parser`` or
    ``fallback``), computed in ``precision`` (``engine.inference_context``)."""
    if mode == "score":
        return predict_by_scoring(
            model, tokenizer, builder, examples, batch_size, dtype, progress, length_normalise, precision
        )
    if mode == "generate":
        e = eval_config
        drawn = e is not None and (e.do_sample or e.fallback == "random")
        return predict_by_generation(
            model, tokenizer, builder, examples, batch_size, max_new_tokens, dtype, progress,
            generation=generation_settings(e) if e is not None else None, precision=precision,
            parser=e.parser if e is not None else "exact", fallback=e.fallback if e is not None else "none",
            seed=e.sampling_seed if drawn else None,
        )  # fmt: skip
    raise ValueError(f"eval.mode must be score or generate, not {mode!r}.")


def score_prepared(
    model: Any, tokenizer: Any, prepared: Prepared, config: Any, split: str, progress: bool = True
) -> dict[str, pd.DataFrame]:
    """Label-scoring predictions of every corpus's ``split`` examples, with the config's batch size, dtype
    ``eval.length_normalise`` and ``eval.precision``."""
    return {
        name: predict_by_scoring(
            model,
            tokenizer,
            prepared.builders[name],
            examples,
            config.eval.batch_size,
            config.model.dtype,
            progress,
            config.eval.length_normalise,
            config.eval.precision,
        )
        for name, examples in prepared.examples[split].items()
    }


# ----------------------------------------------------------------------------------------- the frames
def metrics_of(frame: pd.DataFrame, labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of a prediction frame (``metrics.classification_metrics``; labels from its corpus unless
    given); unparsed rows (pred_id -1, generate mode) count as wrong and, with a ``parsed`` column, are
    counted as ``unparsed``."""
    check_frame(frame)
    result = classification_metrics(
        frame["gold_id"].to_numpy(), frame["pred_id"].to_numpy(), labels or label_words(frame)
    )
    if "parsed" in frame:
        result["unparsed"] = int((~frame["parsed"].astype(bool)).sum())
    return result


def uncalibrated(frame: pd.DataFrame, dataset: str | None = None) -> pd.DataFrame:
    """The uncalibrated predictions of a frame that evaluation calibrated (``eval.calibrate``: it keeps the
    raw prediction as ``pred_id_raw`` and the raw scores as ``ll_<label>``); other frames come back as they are."""
    if "pred_id_raw" not in frame:
        return frame
    words = label_words(frame, dataset)
    probs = probabilities(label_scores(frame, words))
    out = frame.drop(columns=["pred_id_raw"]).assign(pred_id=frame["pred_id_raw"].astype(int))
    out["pred"] = [words[i] if i >= 0 else "" for i in out["pred_id"]]
    for j, word in enumerate(words):
        out[f"p_{word}"] = probs[:, j]
    return out


def save_predictions(
    predictions: pd.DataFrame, metrics: Mapping[str, Any], folder: str | os.PathLike, name: str
) -> dict[str, Path]:
    """Write ``<name>_predictions.csv`` and ``<name>_metrics.json`` (+ per-class CSV) atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / predictions_name(name)
    with atomic_path(csv_path) as tmp:
        predictions.to_csv(tmp, index=False)
    paths = save_metrics(metrics, folder, name)
    paths["predictions"] = csv_path
    return paths


def find_predictions(
    run_dir: str | os.PathLike, folder: str | os.PathLike | None = None
) -> dict[tuple[str, str], Path]:
    """``(dataset, split) -> predictions CSV`` of the evaluation stage (notebook 04) in ``run_dir``.

    Looks for ``*_predictions.csv`` (``save_predictions``) under ``folder`` (default: the whole run outside
    the folders of other stages, ``runs.NOT_EVALUATION``); the corpus is read from the file's dataset column
    and the split from its name (``..._dev_...`` / ``..._test_...``). For a pair, label-scoring predictions
    win over generate-mode ones (only they carry label probabilities), then the newest file.
    """
    run = Path(run_dir)
    root = Path(folder) if folder else run
    ranked: dict[tuple[str, str], tuple[tuple[bool, float], Path]] = {}
    for path in root.rglob(predictions_name("*")):
        rel = path.relative_to(root).parts
        if folder is None and rel[0] in NOT_EVALUATION:
            continue
        tokens = set(path.stem.replace("-", "_").split("_")) | set(rel[:-1])
        split = "test" if "test" in tokens else "dev" if "dev" in tokens else None
        if split is None:
            continue
        head = pd.read_csv(path, nrows=1)
        if "dataset" not in head or head.empty:
            continue
        rank = (any(c.startswith("p_") for c in head.columns), path.stat().st_mtime)
        key = (str(head["dataset"].iloc[0]), split)
        if key not in ranked or rank > ranked[key][0]:
            ranked[key] = (rank, path)
    return {key: path for key, (_, path) in ranked.items()}

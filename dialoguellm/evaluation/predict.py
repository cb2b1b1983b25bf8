"""Predictions on a user's own conversations: ``dialoguellm predict`` and ``dialoguellm.predict``.

A file of turns comes in (CSV or JSONL; columns ``speaker`` and ``text``, optionally ``dialogue_id``,
``description`` (a clip's video description) and ``label`` (a gold label, to compare)); one row per turn
goes out with the predicted label, every label's probability and how many previous turns its prompt showed.

The prompts are the ones training and evaluation build (``prompts.PromptBuilder`` with the run's settings)
and the labels are scored by the one scoring engine (``scoring.predictions.predict_by_scoring``), so a
prediction here equals the one evaluation makes for the same turns. The label set is a corpus's (its
demonstrations, when the run uses k-shot prompts, come from that corpus's training split, and the run's
dev-fitted label biases apply) or the user's own words (scored zero-shot, without demonstrations or biases:
an adapter never saw those words as answers, and the output says so).
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.calibration import apply_label_bias, load_calibration
from dialoguellm.config import Config, load_config
from dialoguellm.evaluation.endpoint import PREFIX as ENDPOINT_PREFIX
from dialoguellm.io import atomic_path, csv_rows, read_text_file, text_lines
from dialoguellm.labels import DATASETS, label_names, normalised_label_names
from dialoguellm.model import loading
from dialoguellm.prompts import (
    PromptBuilder,
    PromptTooLongError,
    demonstration_exclusions,
    rows_of,
    select_demonstrations,
)
from dialoguellm.runs import adapter_settings, find_adapter, load_run_config
from dialoguellm.scoring.predictions import predict_by_scoring

log = logging.getLogger(__name__)

REQUIRED = ("speaker", "text")
OPTIONAL = ("dialogue_id", "description", "label")
FORMATS = ("csv", "json")


class InputError(ValueError):
    """A user's turns file or label list cannot be used; the message names the file, the row and the fix."""


# ------------------------------------------------------------------------------------------ reading turns
@dataclass
class Turns:
    """A user's conversation(s), checked: one dict per turn (dialogue_id, turn, speaker, text, ...)."""

    rows: list[dict[str, Any]]
    source: str

    @property
    def has_gold(self) -> bool:
        return any(r.get("label") for r in self.rows)

    @property
    def has_descriptions(self) -> bool:
        return any(r.get("description") for r in self.rows)


def read_turns(path: str | os.PathLike) -> Turns:
    """The turns of a CSV (header line) or JSONL (one JSON object per line) file, checked row by row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Turns file not found: {path}. Pass a .csv or .jsonl file of turns.")
    kind = path.suffix.lower().lstrip(".")
    if kind not in ("csv", "jsonl"):
        raise InputError(
            f"{path}: not a CSV or JSONL file (suffix {path.suffix or 'none'!r}). Save the turns as .csv with "
            "a header line (speaker,text[,dialogue_id,description,label]) or as .jsonl, one object per line."
        )
    text = read_text_file(path, error=InputError)
    records = _csv_records(path, text) if kind == "csv" else _jsonl_records(path, text)
    return turns_from_records(records, str(path))


def _csv_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = csv_rows(path, text, error=InputError)
    try:
        _, header = next(rows)
    except StopIteration:
        raise InputError(f"{path} is empty; it needs a header line and one row per turn.") from None
    header = [h.strip() for h in header]
    return [(line, dict(zip(header, fields, strict=False))) for line, fields in rows]


def _jsonl_records(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    records = []
    for line, raw in enumerate(text_lines(text), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise InputError(
                f"{path}, line {line}: not valid JSON ({err.msg}, column {err.colno}). Each line must be one "
                'object such as {"speaker": "Ann", "text": "Hi!"}.'
            ) from None
        if not isinstance(record, dict):
            raise InputError(f"{path}, line {line}: a JSON {type(record).__name__}, not an object.")
        records.append((line, record))
    return records


def turns_from_records(records: Any, source: str = "<turns>") -> Turns:
    """Check turns given as records: ``[(row number, dict), ...]``, a list of dicts or a DataFrame.

    Turns keep their order within each dialogue; a missing ``dialogue_id`` puts every turn in one dialogue.
    """
    if isinstance(records, pd.DataFrame):
        records = records.to_dict("records")
    numbered = [r if isinstance(r, tuple) else (i, r) for i, r in enumerate(records, start=1)]
    if not numbered:
        raise InputError(f"{source} holds no turns; give one row per turn (speaker, text).")
    columns = set().union(*(r.keys() for _, r in numbered))
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(
            f"{source}: no {' and no '.join(repr(c) for c in missing)} column (found: "
            f"{', '.join(sorted(map(str, columns))) or 'none'}). Every turn needs a speaker and a text."
        )
    rows, turn_of = [], {}
    for number, record in numbered:
        row = {key: _cell(record.get(key)) for key in REQUIRED + OPTIONAL}
        for key in REQUIRED:
            if not row[key]:
                raise InputError(f"{source}, row {number}: empty {key}. Fill it in or delete the row.")
        dialogue = row["dialogue_id"] or "1"
        turn_of[dialogue] = turn_of.get(dialogue, -1) + 1
        rows.append({**row, "dialogue_id": dialogue, "turn": turn_of[dialogue], "row": number})
    return Turns(rows=rows, source=source)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # missing, or NaN from pandas
        return ""
    return str(value).strip()


# --------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelSet:
    """The labels to score: a corpus's (``corpus`` set) or the user's own words (``corpus`` None)."""

    words: tuple[str, ...]
    corpus: str | None

    @property
    def name(self) -> str:
        return self.corpus or "custom"


def parse_labels(spec: str | Sequence[str] | None, default_corpus: str = "meld") -> LabelSet:
    """``"meld"`` (a corpus name) or ``"calm,angry,happy"`` / a list of words; None = ``default_corpus``.

    A user's list needs at least two distinct, non-empty words (compared case-insensitively)."""
    if spec is None:
        spec = default_corpus
    if isinstance(spec, str) and spec.strip().lower() in DATASETS:
        corpus = spec.strip().lower()
        return LabelSet(normalised_label_names(corpus), corpus)
    words = [w.strip() for w in (spec.split(",") if isinstance(spec, str) else spec)]
    if any(not w for w in words):
        raise InputError(f"Label list {spec!r} has an empty label (two commas in a row, or one at an end).")
    seen: dict[str, str] = {}
    for word in words:
        if word.lower() in seen:
            raise InputError(f"Label list {spec!r} names {word!r} twice; give each label once.")
        seen[word.lower()] = word
    if len(words) < 2:
        raise InputError(
            f"Label list {spec!r} has a single label; a prediction needs at least two to choose from "
            f"(or a corpus name: {', '.join(DATASETS)})."
        )
    return LabelSet(tuple(words), None)


def _gold_id(row: Mapping[str, Any], labels: LabelSet, source: str) -> int:
    """The index of a row's gold label in the label set (its word or the corpus's own name), -1 when absent."""
    gold = row.get("label") or ""
    if not gold:
        return -1
    names = [w.lower() for w in labels.words]
    native = [n.lower() for n in label_names(labels.corpus)] if labels.corpus else names
    for table in (names, native):
        if gold.lower() in table:
            return table.index(gold.lower())
    raise InputError(
        f"{source}, row {row['row']}: label {gold!r} is not one of {', '.join(labels.words)}. Correct it, "
        "leave it empty, or drop the label column."
    )


# ------------------------------------------------------------------------------------------ the model
@dataclass
class Predictor:
    """What predicts: the settings, the loaded model (with its adapter, if any) and where they came from."""

    config: Config
    loaded: Any
    model: Any
    adapter: Path | None


def load_predictor(
    run_dir: str | os.PathLike | None = None,
    model: str | None = None,
    config: str | Config | None = None,
    loaded: Any = None,
) -> Predictor:
    """The adapter of ``run_dir`` (``runs.find_adapter``) on its base model with its training settings,
    or the bare ``model`` ("embedded", a folder, a .gguf file or a hub id) with ``config``'s prompt
    settings (default: the ``cpu`` profile). ``loaded`` reuses an already loaded base model."""
    if (run_dir is None) == (model is None):
        raise InputError("Name the model: a trained run (--run-dir) or a bare model (--model), not both.")
    if model is not None and str(model).startswith(ENDPOINT_PREFIX):
        raise InputError(
            f"--model {model}: a chat endpoint answers with text, not the label probabilities predict reports. "
            f"Evaluate it with `dialoguellm evaluate --model {model}`, or predict with a local model."
        )
    adapter = None
    if run_dir is not None:
        adapter = find_adapter(run_dir)
        settings = load_run_config(adapter_settings(adapter).parent)
    else:
        settings = config if isinstance(config, Config) else load_config(config or "cpu")
        settings = copy.deepcopy(settings)
        settings.model.name = str(model)
    m = settings.model
    loading.set_threads(m.num_threads)
    if loaded is None:
        loaded = loading.load_configured(m)
    net = loading.load_adapter(loaded.model, adapter) if adapter is not None else loaded.model
    return Predictor(config=settings, loaded=loaded, model=net, adapter=adapter)


# ----------------------------------------------------------------------------------------- predicting
@dataclass
class Prediction:
    """One row per turn (``frame``) and what a reader must know about how it was made (``notes``)."""

    frame: pd.DataFrame
    labels: tuple[str, ...]
    model: str
    adapter: str | None
    calibrated: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the settings and notes, then one object per turn."""
        return {
            "model": self.model,
            "adapter": self.adapter,
            "labels": list(self.labels),
            "calibrated": self.calibrated,
            "notes": self.notes,
            "turns": json.loads(self.frame.to_json(orient="records")),
        }


def _builder(predictor: Predictor, labels: LabelSet, turns: Turns, notes: list[str]) -> PromptBuilder:
    """The run's prompt builder for this label set; demonstrations only for a corpus's labels."""
    p = predictor.config.prompt
    tokenizer = predictor.loaded.tokenizer
    demos: list[Any] = []
    if p.k_shot and labels.corpus:
        from dialoguellm.corpora.readers import load_corpora

        config = predictor.config
        joint = [labels.corpus] + [d for d in config.data.datasets if d != labels.corpus]
        corpora = load_corpora(joint if labels.corpus in config.data.datasets else [labels.corpus])
        corpus = corpora.get(labels.corpus)
        if corpus is None:
            notes.append(f"The {labels.corpus} corpus is not available here: prompts carry no demonstration.")
        else:
            # as training drew them: skipping what the run's cross-corpus overlap removal took out
            skip = demonstration_exclusions(config, corpora).get(labels.corpus, ())
            train = rows_of(corpus["train"])
            demos = select_demonstrations(train, p.k_shot, config.train.seed, p.context_turns, skip)
    elif p.k_shot:
        notes.append("Your own labels: prompts carry no demonstration (they come from a corpus's labels).")
    builder = PromptBuilder(
        tokenizer,
        labels.corpus or "custom",
        template=p.template,
        style=p.style,
        context_turns=p.context_turns,
        demonstrations=demos,
        use_video=p.use_video if labels.corpus else turns.has_descriptions,
        cutoff_len=p.cutoff_len,
        label_order=p.label_order if labels.corpus else "corpus",
        labels=None if labels.corpus else labels.words,
    )
    if turns.has_descriptions and not builder.use_video:
        notes.append("The descriptions are not shown: the run's prompts have none (prompt.use_video false).")
    return builder


def predict_turns(predictor: Predictor, turns: Turns, labels: LabelSet, progress: bool = True) -> Prediction:
    """Score every turn of ``turns`` against ``labels`` with ``predictor``'s model and prompt settings."""
    notes: list[str] = []
    builder = _builder(predictor, labels, turns, notes)
    dialogues: dict[str, list[dict[str, Any]]] = {}
    for row in turns.rows:
        dialogues.setdefault(row["dialogue_id"], []).append(row)
    descriptions = {f"turn{r['row']}": r["description"] for r in turns.rows if r["description"]}
    examples, golds = [], []
    for row in turns.rows:
        gold = _gold_id(row, labels, turns.source)
        golds.append(gold)
        prompt_row = {**row, "clip_id": f"turn{row['row']}", "label_id": max(gold, 0)}
        try:
            examples.append(builder.build(prompt_row, dialogues[row["dialogue_id"]], descriptions))
        except PromptTooLongError:
            raise InputError(
                f"{turns.source}, row {row['row']}: the turn is too long for the model's prompt budget "
                f"(prompt.cutoff_len={builder.cutoff_len} tokens). Shorten the text."
            ) from None
    c = predictor.config
    scored = predict_by_scoring(
        predictor.model,
        predictor.loaded.tokenizer,
        builder,
        examples,
        c.eval.batch_size,
        c.model.dtype,
        progress,
        c.eval.length_normalise,
    )
    calibrated = False
    if predictor.adapter is not None and labels.corpus:
        bias = load_calibration(predictor.adapter, c).get(labels.corpus)
        if bias is not None:
            scored = apply_label_bias(scored, builder.labels, bias)
            calibrated = True
            notes.append(f"The run's label biases for {labels.corpus}, fitted on its dev split, are applied.")
    if predictor.adapter is not None and not labels.corpus:
        notes.append(
            "Your own labels are scored zero-shot: the adapter was trained to answer with corpus labels, "
            "never with these words."
        )
    frame = _output_frame(turns, labels, scored, examples, golds)
    return Prediction(
        frame=frame,
        labels=builder.labels,
        model=c.model.name,
        adapter=str(predictor.adapter) if predictor.adapter else None,
        calibrated=calibrated,
        notes=notes,
    )


def _output_frame(
    turns: Turns, labels: LabelSet, scored: pd.DataFrame, examples: list[Any], golds: list[int]
) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "dialogue_id": [r["dialogue_id"] for r in turns.rows],
            "turn": [r["turn"] for r in turns.rows],
            "speaker": [r["speaker"] for r in turns.rows],
            "text": [r["text"] for r in turns.rows],
        }
    )
    if turns.has_gold:
        out["gold"] = [labels.words[g] if g >= 0 else "" for g in golds]  # the label set's word
    out["predicted"] = scored["pred"].to_numpy()
    out["probability"] = [scored[f"p_{p}"].iloc[i] for i, p in enumerate(scored["pred"])]
    for word in labels.words:
        out[f"p_{word}"] = scored[f"p_{word}"].to_numpy()
    out["context_turns"] = [e.meta["context_turns"] for e in examples]
    out["prompt_tokens"] = [len(e.prompt_ids) for e in examples]
    return out


def predict(
    turns: str | os.PathLike | pd.DataFrame | Sequence[Mapping[str, Any]],
    run_dir: str | os.PathLike | None = None,
    model: str | None = None,
    labels: str | Sequence[str] | None = None,
    config: str | Config | None = None,
    progress: bool = True,
    loaded: Any = None,
) -> Prediction:
    """Predict the emotion of every turn of a conversation file (CSV/JSONL), DataFrame or list of dicts.

    ``run_dir``: a trained run (its adapter and settings); or ``model``: a bare model. ``labels``: a corpus
    name (default: the run's first corpus) or your own words ("calm,angry,happy")."""
    checked = read_turns(turns) if isinstance(turns, (str, os.PathLike)) else turns_from_records(turns)
    if labels is not None:  # a bad label list fails before minutes of model loading
        parse_labels(labels)
    predictor = load_predictor(run_dir, model, config, loaded)
    label_set = parse_labels(labels, predictor.config.data.datasets[0])
    return predict_turns(predictor, checked, label_set, progress)


def write_prediction(prediction: Prediction, path: str | os.PathLike, fmt: str = "csv") -> Path:
    """Write the turns as CSV (the frame) or JSON (``Prediction.to_dict``), atomically."""
    if fmt not in FORMATS:
        raise InputError(f"Output format must be one of {', '.join(FORMATS)}, not {fmt!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if fmt == "csv":
            prediction.frame.to_csv(tmp, index=False)
        else:
            tmp.write_text(json.dumps(prediction.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path

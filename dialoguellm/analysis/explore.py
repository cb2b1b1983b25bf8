"""Notebook 08 as library steps: one conversation turn by turn (a test dialogue, or one typed in), its
predictions, and prompt probes that show how the context and the video description move them.

A probe changes one prompt setting of the run and predicts the same turns again with the same model: no
context (z = 0), the whole dialogue so far (z = all), and the video description added where the clip has
one. Each probe's predictions sit beside the run's own settings, so a changed label is visible turn by turn.
Tables are saved in ``RunLayout.analysis`` (``explore_*.csv``) so ``make figures`` redraws the timeline.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.analysis.error_analysis import save_table
from dialoguellm.corpora.readers import load_corpora, load_curated
from dialoguellm.corpora.video import load_descriptions
from dialoguellm.evaluation.predict import (
    LabelSet,
    Prediction,
    Predictor,
    Turns,
    load_predictor,
    parse_labels,
    predict_turns,
    turns_from_records,
)
from dialoguellm.prompts import rows_of
from dialoguellm.runs import RunLayout, find_adapter

PROBES: dict[str, dict[str, Any]] = {
    "no context (z = 0)": {"context_turns": 0},
    "whole dialogue (z = all)": {"context_turns": "all"},
    "with video description": {"use_video": True},
}


@dataclass
class Conversation:
    """The turns to explore, where they came from, and the label set they are scored against."""

    turns: Turns
    labels: LabelSet
    source: str


def test_dialogue(
    run: str | os.PathLike,
    corpus: str = "meld",
    dialogue_id: str | None = None,
    max_turns: int = 8,
    data_dir: str | os.PathLike | None = None,
) -> Conversation:
    """A dialogue of ``corpus``'s test split with its gold labels (and MELD's video descriptions, where the
    run has them): ``dialogue_id``, or the first with 4 to ``max_turns`` turns; at most ``max_turns`` turns."""
    layout = RunLayout(Path(run))
    corpora = (
        load_curated(run, corpus)
        if layout.corpus(corpus).is_dir()
        else load_corpora([corpus], data_dir)[corpus]
    )
    rows = rows_of(corpora["test"])
    dialogues: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        dialogues.setdefault(str(row["dialogue_id"]), []).append(row)
    if dialogue_id is None:
        dialogue_id = next(
            (d for d, t in dialogues.items() if 4 <= len(t) <= max_turns), next(iter(dialogues))
        )
    if str(dialogue_id) not in dialogues:
        raise ValueError(
            f"{corpus} test split has no dialogue {dialogue_id!r}; some it has: {', '.join(list(dialogues)[:5])}."
        )
    chosen = sorted(dialogues[str(dialogue_id)], key=lambda r: int(r["turn"]))[:max_turns]
    clips = load_descriptions(run).get("test", {}) if corpus == "meld" else {}
    records = [
        {
            "dialogue_id": str(dialogue_id),
            "speaker": r["speaker"],
            "text": r["text"],
            "label": r["label"],
            "description": clips.get(r.get("clip_id") or "", ""),
        }
        for r in chosen
    ]
    source = f"{corpus} test dialogue {dialogue_id}"
    return Conversation(turns_from_records(records, source), parse_labels(corpus), source)


def typed_conversation(
    turns: Sequence[Mapping[str, Any]], labels: str | Sequence[str] = "meld"
) -> Conversation:
    """A conversation typed into the notebook: ``[{"speaker": ..., "text": ...}, ...]`` (a ``label`` or
    ``description`` per turn optional), scored against a corpus's labels or your own words."""
    return Conversation(
        turns_from_records(list(turns), "CONVERSATION"), parse_labels(labels), "your conversation"
    )


def conversation(
    run: str | os.PathLike,
    typed: Sequence[Mapping[str, Any]] = (),
    corpus: str = "meld",
    dialogue_id: str | None = None,
    max_turns: int = 8,
    labels: str | Sequence[str] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Conversation:
    """The typed conversation when one is given, else a test dialogue of ``corpus``."""
    if typed:
        return typed_conversation(typed, labels or corpus)
    return test_dialogue(run, corpus, dialogue_id, max_turns, data_dir)


def predictor_for(run: str | os.PathLike, model: str | None = None) -> Predictor:
    """The run's adapter (notebook 03) when ``model`` is None, else the bare ``model``."""
    if model is None:
        find_adapter(run)  # a clear error naming notebook 03 when the run has no adapter
        return load_predictor(run_dir=run)
    return load_predictor(model=model)


def predict_conversation(predictor: Predictor, talk: Conversation, run: str | os.PathLike) -> Prediction:
    """The predictions of every turn with the run's prompt settings; the table saved for the timeline."""
    result = predict_turns(predictor, talk.turns, talk.labels, progress=False)
    save_table(result.frame, run, "explore_timeline")
    return result


def probe(predictor: Predictor, talk: Conversation, changes: Mapping[str, Any]) -> Prediction:
    """The same turns predicted with ``changes`` to the prompt settings (the model is shared, not reloaded)."""
    config = copy.deepcopy(predictor.config)
    for key, value in changes.items():
        setattr(config.prompt, key, value)
    return predict_turns(
        Predictor(config, predictor.loaded, predictor.model, predictor.adapter),
        talk.turns,
        talk.labels,
        False,
    )


def prompt_probes(
    predictor: Predictor, talk: Conversation, base: Prediction, run: str | os.PathLike
) -> pd.DataFrame:
    """One row per turn and probe: the probe's prediction and probability beside the run's own, whether it
    changed, and the gold label's probability when the gold is known. Saved as ``explore_probes``."""
    rows = []
    variants = {"as trained": base, **{name: probe(predictor, talk, c) for name, c in PROBES.items()}}
    for name, result in variants.items():
        for i, r in result.frame.iterrows():
            gold = r.get("gold", "")
            rows.append(
                {
                    "probe": name,
                    "turn": int(r["turn"]),
                    "speaker": r["speaker"],
                    "predicted": r["predicted"],
                    "probability": float(r["probability"]),
                    "changed": r["predicted"] != base.frame["predicted"].iloc[i],
                    "p_gold": float(r[f"p_{gold}"]) if gold else float("nan"),
                    "context_turns": int(r["context_turns"]),
                }
            )
    table = pd.DataFrame(rows)
    save_table(table, run, "explore_probes")
    return table


def probe_summary(probes: pd.DataFrame) -> pd.DataFrame:
    """Per probe: turns whose label changed, mean probability of the gold label, mean context shown."""
    return probes.groupby("probe", sort=False).agg(
        changed=("changed", "sum"),
        mean_p_gold=("p_gold", "mean"),
        mean_context_turns=("context_turns", "mean"),
    )


def explore_records(
    talk: Conversation, result: Prediction, probes: pd.DataFrame, figure: str | os.PathLike | None = None
) -> dict[str, Any]:
    """The headline values notebook 08 records, and the file name of its timeline ``figure``."""
    frame = result.frame
    known = frame[frame["gold"] != ""] if "gold" in frame else frame.iloc[0:0]
    summary = probe_summary(probes)
    return {
        "source": talk.source,
        "turns": len(frame),
        "labels": list(result.labels),
        "model": result.model,
        "adapter": result.adapter,
        "correct": int((known["gold"] == known["predicted"]).sum()) if len(known) else None,
        "with_gold": len(known),
        "changed_by_probe": {p: int(v) for p, v in summary["changed"].items() if p != "as trained"},
        **({"figure": Path(figure).name} if figure is not None else {}),
    }

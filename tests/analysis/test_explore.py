"""Notebook 08's steps on the tiny model: a test dialogue or a typed conversation, its predictions, the
timeline table and figure, and prompt probes that change the context shown (and only that)."""

from __future__ import annotations

import pandas as pd
import pytest
from tiny import TURNS, make_run, save_synthetic_corpus, synthetic_corpus

from dialoguellm.analysis import explore
from dialoguellm.plots import explore as plots
from dialoguellm.plots.registry import FIGURES
from dialoguellm.runs import RunLayout


@pytest.fixture()
def run(tmp_path, tiny_model_dir):
    run = make_run(tmp_path, tiny_model_dir)
    save_synthetic_corpus(run, synthetic_corpus("meld", sizes=(4, 2, 3), turns=5))
    return run


def test_a_test_dialogue_with_gold_labels_and_probes(run, tmp_path):
    talk = explore.conversation(run, corpus="meld", max_turns=4)
    assert talk.source == "meld test dialogue test0" and len(talk.turns.rows) == 4
    predictor = explore.predictor_for(run)
    result = explore.predict_conversation(predictor, talk, run)
    assert list(result.frame["gold"]) and set(result.frame["gold"]) <= set(talk.labels.words)
    probes = explore.prompt_probes(predictor, talk, result, run)
    assert len(probes) == 4 * (1 + len(explore.PROBES))
    no_context = probes[probes["probe"] == "no context (z = 0)"]
    assert list(no_context["context_turns"]) == [0, 0, 0, 0]
    everything = probes[probes["probe"] == "whole dialogue (z = all)"]
    assert list(everything["context_turns"]) == [0, 1, 2, 3]
    first = probes[probes["turn"] == 0]
    context_probes = first[
        first["probe"].isin(["as trained", "no context (z = 0)", "whole dialogue (z = all)"])
    ]
    assert not context_probes["changed"].any()  # nothing before the first turn: the same prompt
    assert not probes[probes["probe"] == "as trained"]["changed"].any()
    record = explore.explore_records(talk, result, probes)
    assert (
        record["turns"] == 4
        and record["with_gold"] == 4
        and set(record["changed_by_probe"]) == set(explore.PROBES)
    )
    assert (RunLayout(run).analysis / "explore_timeline.csv").is_file()
    path = FIGURES["emotion_timeline"](run, tmp_path)
    assert path.name == plots.TIMELINE and path.stat().st_size > 10_000


def test_a_typed_conversation_with_own_labels(run):
    talk = explore.conversation(run, typed=TURNS[:3], labels="happiness,anger,neutral")
    assert talk.labels.corpus is None and talk.source == "your conversation"
    result = explore.predict_conversation(explore.predictor_for(run), talk, run)
    assert set(result.frame["predicted"]) <= {"happiness", "anger", "neutral"} and "gold" not in result.frame
    saved = pd.read_csv(RunLayout(run).analysis / "explore_timeline.csv")
    assert len(saved) == 3


def test_unknown_dialogue_names_some_that_exist(run):
    with pytest.raises(ValueError, match="has no dialogue 'nope'; some it has: test0"):
        explore.conversation(run, dialogue_id="nope")

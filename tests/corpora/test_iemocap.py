"""The IEMOCAP loader on a synthetic tree in the official release layout."""

from __future__ import annotations

from collections import Counter

import pytest
from iemocap_synth import DIALOGUES_PER_SESSION, build_iemocap_tree, dialogue_names

from dialoguellm.corpora import readers


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    return readers.load_iemocap(build_iemocap_tree(tmp_path_factory.mktemp("iemocap")))


def test_splits_follow_sessions_and_the_fixed_dev_rule(iemocap):
    train_names = [n for s in range(1, 5) for n in dialogue_names(s)]
    dev = readers.iemocap_dev_dialogues(train_names)
    assert dev == sorted(train_names)[9::10]  # every 10th of sessions 1-4, by name
    assert set(iemocap["dev"]["dialogue_id"]) == set(dev)
    assert set(iemocap["train"]["dialogue_id"]) == set(train_names) - set(dev)
    assert set(iemocap["test"]["dialogue_id"]) == set(dialogue_names(5))


def test_six_classes_kept_noise_skipped(iemocap):
    test = iemocap["test"]
    assert len(test) == DIALOGUES_PER_SESSION * 6  # 8 labelled turns, xxx and sur dropped
    assert Counter(test["label"]) == {
        label: DIALOGUES_PER_SESSION for label in ("neu", "fru", "ang", "hap", "exc", "sad")
    }
    assert not any("XX" in u for split in iemocap.values() for u in split["utterance_id"])
    assert not any("BREATHING" in t or "LAUGHTER" in t for split in iemocap.values() for t in split["text"])


def test_records_are_in_time_order_with_turns(iemocap):
    dialogue = iemocap["test"].filter(lambda r: r["dialogue_id"] == "Ses05F_impro01")
    assert dialogue["turn"] == list(range(6))
    assert dialogue["start"] == sorted(dialogue["start"])
    assert dialogue["text"][0] == "Excuse me."
    assert dialogue["speaker"][:2] == ["Ses05_F", "Ses05_M"]
    assert dialogue["label_id"][0] == 2  # "neu" in ("hap", "sad", "neu", ...)


def test_load_corpora_skips_iemocap_without_a_folder(caplog):
    import logging

    with caplog.at_level(logging.INFO):
        corpora = readers.load_corpora(["emorynlp", "iemocap"], iemocap_dir=None)
    assert list(corpora) == ["emorynlp"]
    assert "IEMOCAP skipped" in caplog.text and "licensed" in caplog.text


def test_a_release_too_small_for_the_dev_rule_is_refused_naming_the_cause(tmp_path):
    release = build_iemocap_tree(tmp_path)
    for session in (1, 2, 3):  # 9 dialogues left in sessions 1-4: every 10th is none
        for folder in ("transcriptions", "EmoEvaluation"):
            (release / f"Session{session}" / "dialog" / folder / f"{dialogue_names(session)[0]}.txt").unlink()
    with pytest.raises(readers.CorpusError, match=r"dev split is empty: sessions 1-4 gave 9 dialogue\(s\)"):
        readers.load_iemocap(release)

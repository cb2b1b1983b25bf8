"""Baselines: majority class and TF-IDF + logistic regression, fitted on train, tuned on dev, scored on test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dialoguellm import prompts
from dialoguellm.analysis import baselines
from dialoguellm.corpora import readers
from dialoguellm.labels import LABELS
from dialoguellm.scoring import predictions


def corpus(split_texts: dict[str, list[tuple[str, str, str]]]) -> dict[str, pd.DataFrame]:
    """MELD-like splits from (dialogue_id, text, label) triples; turns numbered within each dialogue."""
    out = {}
    for split, triples in split_texts.items():
        rows, turns = [], {}
        for i, (dialogue, text, label) in enumerate(triples):
            turn = turns.get(dialogue, 0)
            turns[dialogue] = turn + 1
            rows.append(
                {"dataset": "meld", "split": split, "dialogue_id": dialogue, "turn": turn,
                 "utterance_id": f"{split}_{i}", "speaker": "A", "text": text, "label": label,
                 "label_id": LABELS["meld"].index(label), "clip_id": None}
            )  # fmt: skip
        out[split] = pd.DataFrame(rows)
    return out


WORDS = {"neutral": "okay fine", "joy": "great wonderful", "anger": "furious hate", "sadness": "cry miss"}


def keyword_corpus(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = np.random.default_rng(seed)
    labels = rng.choice(list(WORDS), size=n, p=[0.5, 0.2, 0.15, 0.15])
    return [(f"d{i // 4}", f"well {WORDS[lab].split()[i % 2]} then", lab) for i, lab in enumerate(labels)]


def test_previous_turns_text_stays_inside_the_dialogue_and_in_order():
    frame = pd.DataFrame(
        {
            "dialogue_id": ["a", "a", "b", "a"],
            "turn": [1, 0, 0, 2],
            "text": ["second", "first", "other", "third"],
        }
    )
    assert prompts.previous_turns_text(frame, 1) == ["first", "", "", "second"]
    assert prompts.previous_turns_text(frame, "all") == ["first", "", "", "first second"]
    assert prompts.previous_turns_text(frame, 0) == ["", "", "", ""]
    with pytest.raises(ValueError, match="context_turns"):
        prompts.previous_turns_text(frame, -1)


def test_tfidf_learns_keywords_and_majority_predicts_the_top_label():
    splits = corpus(
        {"train": keyword_corpus(300, 0), "dev": keyword_corpus(80, 1), "test": keyword_corpus(80, 2)}
    )
    run = baselines.run_baselines({"meld": splits}, baselines=["majority", "tfidf_lr"])
    table = run.table.set_index(["baseline", "split"])
    assert table.loc[("tfidf_lr", "test"), "accuracy"] == 1.0
    majority = run.predictions[("meld", "majority", "test")]
    assert set(majority["pred"]) == {"neutral"}
    assert table.loc[("majority", "test"), "accuracy"] == pytest.approx(
        (splits["test"]["label"] == "neutral").mean()
    )
    # The frame layout of evaluate.predict_by_scoring, so the error analysis reads it.
    frame = run.predictions[("meld", "tfidf_lr", "test")]
    assert list(frame.columns[:7]) == [
        "example_id",
        "dataset",
        "gold_id",
        "pred_id",
        "gold",
        "pred",
        "parsed",
    ]
    probs = predictions.probability_matrix(frame, predictions.label_words(frame))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert probs[:, [5, 6]].max() == 0  # disgust and fear never occur in training: probability 0


def test_context_baseline_reads_the_previous_turn():
    # The label is announced by the previous utterance; the utterance itself says nothing.
    def dialogues(n: int, seed: int) -> list[tuple[str, str, str]]:
        rng = np.random.default_rng(seed)
        out = []
        for d in range(n):
            label = str(rng.choice(["joy", "anger"]))
            out += [(f"d{d}", f"cue {WORDS[label]}", "neutral"), (f"d{d}", "so what now", label)]
        return out

    splits = corpus({"train": dialogues(150, 0), "dev": dialogues(40, 1), "test": dialogues(40, 2)})
    settings = baselines.BaselineSettings(context_turns=1, c_grid=[10.0])
    run = baselines.run_baselines({"meld": splits}, ["tfidf_lr", "tfidf_lr_context"], settings)
    acc = run.table[run.table["split"] == "test"].set_index("baseline")["accuracy"]
    assert acc["tfidf_lr_context"] == 1.0
    assert acc["tfidf_lr"] < 0.8  # "so what now" alone cannot tell joy from anger


def test_c_is_chosen_on_dev_and_test_labels_change_nothing(tmp_path):
    splits = corpus(
        {"train": keyword_corpus(200, 3), "dev": keyword_corpus(60, 4), "test": keyword_corpus(60, 5)}
    )
    noisy = dict(splits)
    labels = noisy["test"]["label"].sample(frac=1, random_state=0).to_numpy()
    noisy["test"] = noisy["test"].assign(label=labels, label_id=[LABELS["meld"].index(x) for x in labels])
    settings = baselines.BaselineSettings(c_grid=[0.1, 10.0])
    first = baselines.run_baselines({"meld": splits}, ["tfidf_lr"], settings)
    second = baselines.run_baselines({"meld": noisy}, ["tfidf_lr"], settings)
    assert first.fitted == second.fitted  # the same C, from the same dev scores
    a, b = first.predictions[("meld", "tfidf_lr", "test")], second.predictions[("meld", "tfidf_lr", "test")]
    assert (a["pred_id"] == b["pred_id"]).all()
    assert [s["C"] for s in first.fitted[("meld", "tfidf_lr")]["dev_search"]] == [0.1, 10.0]
    folder = baselines.save_baselines(first, tmp_path)
    assert (folder / "meld_tfidf_lr_test_predictions.csv").is_file()
    assert baselines.load_baseline_results(tmp_path).shape[0] == 2


def test_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="Unknown baseline 'bert'"):
        baselines.make_baseline("bert", "meld")


@pytest.mark.slow
def test_majority_and_tfidf_on_meld_test():
    """PAPER.md's measured floor: majority 48.1 / 31.3 on MELD test; TF-IDF + LR about 52.9 / 46.4."""
    meld = readers.load_meld()
    run = baselines.run_baselines(
        {"meld": meld},
        ["majority", "tfidf_lr"],
        baselines.BaselineSettings(c_grid=[10.0]),
        eval_splits=["test"],
    )
    table = run.table.set_index("baseline")
    assert round(100 * table.loc["majority", "accuracy"], 1) == 48.1
    assert round(100 * table.loc["majority", "weighted_f1"], 1) == 31.3
    assert 0.49 <= table.loc["tfidf_lr", "accuracy"] <= 0.55
    assert 0.44 <= table.loc["tfidf_lr", "weighted_f1"] <= 0.49

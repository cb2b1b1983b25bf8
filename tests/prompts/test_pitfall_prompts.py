"""The prompt hooks of the pitfalls experiment: turns after the target (prompt.future_turns) and the fixed
test demonstrations of DialogueLLM's released scripts (prompt.fixed_demonstrations); both off by default."""

from __future__ import annotations

import pytest
from tiny import synthetic_corpus

from dialoguellm.config import config_from_dict, load_config
from dialoguellm.labels import normalised_label_names
from dialoguellm.prompts import builders_from_config, dialogue_index, rows_of
from dialoguellm.prompts.builder import PromptBuilder, fixed_demonstrations, future_of


def _dialogue() -> list[dict]:
    return [
        {"utterance_id": f"u{t}", "dialogue_id": "d", "turn": t, "speaker": "Ross", "text": f"line{t} okay",
         "label_id": 0, "split": "test"}
        for t in range(5)
    ]  # fmt: skip


def test_the_default_prompt_shows_no_turn_after_the_target(tiny_tokenizer):
    assert load_config("cpu").prompt.future_turns == 0 and load_config("paper").prompt.future_turns == 0
    turns = _dialogue()
    example = PromptBuilder(tiny_tokenizer, "meld", context_turns=1, cutoff_len=1024).build(turns[2], turns)
    assert "line1" in example.prompt and "line3" not in example.prompt and "future_turns" not in example.meta


def test_future_turns_put_the_next_utterances_after_the_input(tiny_tokenizer):
    turns = _dialogue()
    builder = PromptBuilder(tiny_tokenizer, "meld", context_turns=1, future_turns=2, cutoff_len=1024)
    example = builder.build(turns[2], turns)
    text = example.prompt
    assert text.index("line1") < text.index("line2") < text.index("line3") < text.index("line4")
    assert "line0" not in text and "Following turns:" in text and example.meta["future_turns"] == 2
    last = builder.build(turns[4], turns)  # the last utterance has none after it
    assert "Following turns:" not in last.prompt and last.meta["future_turns"] == 0
    assert [r["turn"] for r in future_of(turns[1], turns, 10)] == [2, 3, 4]
    with pytest.raises(ValueError, match="integer >= 0"):
        PromptBuilder(tiny_tokenizer, "meld", future_turns=-1)


def test_a_long_prompt_drops_the_past_first_then_the_latest_future_turn(tiny_tokenizer):
    turns = _dialogue()
    builder = PromptBuilder(tiny_tokenizer, "meld", context_turns=2, future_turns=2, cutoff_len=1024)
    full = len(builder.build(turns[2], turns).prompt_ids)
    tight = PromptBuilder(tiny_tokenizer, "meld", context_turns=2, future_turns=2, cutoff_len=full - 1)
    example = tight.build(turns[2], turns)
    assert example.meta["context_turns"] == 1 and example.meta["future_turns"] == 2


def test_future_turns_reach_training_and_test_prompts_through_the_config(tiny_tokenizer):
    corpus = synthetic_corpus("meld")
    config = config_from_dict(
        {"prompt": {"future_turns": 1, "k_shot": 0, "context_turns": 0, "cutoff_len": 1024}}
    )
    builder = builders_from_config(tiny_tokenizer, {"meld": corpus}, config)["meld"]
    rows = rows_of(corpus["train"])
    first = min((r for r in rows if r["dialogue_id"] == rows[0]["dialogue_id"]), key=lambda r: r["turn"])
    index = dialogue_index(rows)
    nxt = next(r for r in index[first["dialogue_id"]] if r["turn"] == first["turn"] + 1)
    assert (
        nxt["text"].split()[0]
        in builder.build(first, index[first["dialogue_id"]]).prompt.split("Following")[1]
    )


@pytest.mark.parametrize("dataset", ["meld", "emorynlp"])
def test_the_fixed_demonstrations_are_the_seven_of_dialoguellms_test_scripts(dataset):
    demos = fixed_demonstrations("dialoguellm", dataset)
    assert len(demos) == 7 and all(d.context == [] for d in demos)
    words = normalised_label_names(dataset)
    labels = [words[d.row["label_id"]] for d in demos]
    # the scripts give one demonstration per label, in their order (MELD: neutral, fear, surprise, ...)
    assert sorted(labels) == sorted(words)
    if dataset == "meld":
        assert demos[0].row["text"] == "We can go into detail" and labels[:3] == [
            "neutral",
            "fear",
            "surprise",
        ]
    assert fixed_demonstrations("dialoguellm", "iemocap") == []  # its IEMOCAP script adds none
    with pytest.raises(ValueError, match="No fixed demonstrations"):
        fixed_demonstrations("instructerc", dataset)


def test_the_fixed_demonstration_prompt_replaces_the_drawn_ones(tiny_tokenizer):
    corpus = synthetic_corpus("meld")
    drawn = config_from_dict({"prompt": {"k_shot": 1, "cutoff_len": 2048}})
    fixed = config_from_dict(
        {"prompt": {"k_shot": 1, "cutoff_len": 2048, "fixed_demonstrations": "dialoguellm"}}
    )
    assert drawn.prompt.fixed_demonstrations == "none"
    a = builders_from_config(tiny_tokenizer, {"meld": corpus}, drawn)["meld"]
    b = builders_from_config(tiny_tokenizer, {"meld": corpus}, fixed)["meld"]
    assert len(a.demonstrations) == 1 and len(b.demonstrations) == 7
    rows = rows_of(corpus["test"])
    prompt = b.build(rows[0], dialogue_index(rows)[rows[0]["dialogue_id"]]).prompt
    assert "Poor Monica!" in prompt and prompt.count("<|im_start|>assistant") == 8  # 7 answers + the cue
    with pytest.raises(ValueError, match="prompt.fixed_demonstrations"):
        config_from_dict({"prompt": {"fixed_demonstrations": "seven"}})

"""Prompts: the paper's tuple, k-shot from train only, budget trimming, and the round trip to labels."""

from __future__ import annotations

import pytest
from tiny import synthetic_corpus

from dialoguellm.labels import normalised_label_names
from dialoguellm.prompts import (
    PromptBuilder,
    PromptTooLongError,
    context_of,
    dialogue_index,
    load_template,
    select_demonstrations,
)


def _builder(tok, dataset="meld", **kw):
    return PromptBuilder(tok, dataset, **kw)


def test_answer_round_trips_to_its_label(tiny_tokenizer):
    for dataset in ("meld", "emorynlp", "iemocap"):
        b = _builder(tiny_tokenizer, dataset)
        assert b.labels == normalised_label_names(dataset)
        for i in range(len(b.labels)):
            assert b.parse(b.answer_text(i)) == i
            assert b.parse(tiny_tokenizer.decode(b.answer_ids[i])) == i  # what generation would print


def test_parse_accepts_corpus_names_and_rejects_the_rest(tiny_tokenizer):
    b = _builder(tiny_tokenizer, "meld")
    assert b.parse("Joy!") == b.labels.index("happiness")
    assert b.parse("  The emotion is anger.") == b.labels.index("anger")
    assert b.parse("no idea") is None
    assert b.parse("maybe anger, maybe fear") is None  # ambiguous: never guessed
    assert b.parse("anger, or maybe fear") == b.labels.index("anger")  # the answer starts with a label


def test_prompt_holds_instruction_context_and_input(tiny_tokenizer, meld_corpus):
    rows = meld_corpus["train"]
    index = dialogue_index(rows)
    target = rows[3]  # turn 3 of dialogue 0
    for z, expected in ((0, []), (1, rows[2:3]), (2, rows[1:3]), ("all", rows[0:3])):
        b = _builder(tiny_tokenizer, context_turns=z)
        example = b.build(target, index[target["dialogue_id"]])
        assert b.instruction in example.prompt
        assert f"{target['speaker']}: {target['text']}" in example.prompt
        assert example.meta["context_turns"] == len(expected)
        assert context_of(target, index[target["dialogue_id"]], z) == expected
        for row in rows[:3]:
            assert (row["text"] in example.prompt) == (row in expected)
        assert example.label_id == target["label_id"]
        assert example.prompt_ids == tiny_tokenizer(example.prompt, add_special_tokens=False)["input_ids"]


def test_instruction_lists_the_paper_words(tiny_tokenizer):
    b = _builder(tiny_tokenizer, "emorynlp")
    assert "'happiness'" in b.instruction and "Joyful" not in b.instruction
    assert "Video" not in b.instruction  # EmoryNLP has no video
    assert "Video Description" in _builder(tiny_tokenizer, "meld").instruction


def test_video_description_only_when_present_and_enabled(tiny_tokenizer, meld_corpus):
    row = meld_corpus["test"][0]
    index = dialogue_index(meld_corpus["test"])
    descriptions = {row["clip_id"]: "A man frowns at a coffee cup."}
    on = _builder(tiny_tokenizer, use_video=True).build(row, index[row["dialogue_id"]], descriptions)
    off = _builder(tiny_tokenizer, use_video=False).build(row, index[row["dialogue_id"]], descriptions)
    assert "A man frowns" in on.prompt and on.meta["has_description"]
    assert "A man frowns" not in off.prompt


def test_demonstrations_come_from_train_and_follow_the_seed(tiny_tokenizer, meld_corpus):
    train = meld_corpus["train"]
    a = select_demonstrations(train, 2, seed=1)
    assert [d.row for d in a] == [d.row for d in select_demonstrations(train, 2, seed=1)]
    seeds = {tuple(d.row["utterance_id"] for d in select_demonstrations(train, 2, seed=s)) for s in range(6)}
    assert len(seeds) > 1
    with pytest.raises(ValueError, match="training split"):
        select_demonstrations(meld_corpus["dev"], 1, seed=1)
    b = _builder(tiny_tokenizer, demonstrations=a)
    example = b.build_split(meld_corpus["test"])[0]
    for demo in a:
        assert demo.row["text"] in example.prompt
        assert b.answer_text(demo.row["label_id"]) in example.prompt


def test_chat_or_plain_is_decided_by_the_tokenizer(tiny_tokenizer, plain_tokenizer, meld_corpus):
    chat = _builder(tiny_tokenizer)
    plain = _builder(plain_tokenizer)
    assert chat.style == "chat" and plain.style == "plain"
    assert "<|im_start|>assistant" in chat.build_split(meld_corpus["test"])[0].prompt
    assert plain.build_split(meld_corpus["test"])[0].prompt.rstrip().endswith("### Response:")
    with pytest.raises(ValueError, match="no chat template"):
        _builder(plain_tokenizer, style="chat")


def test_budget_trims_oldest_context_first_then_errors(tiny_tokenizer, meld_corpus):
    rows = meld_corpus["train"]
    index = dialogue_index(rows)
    target = rows[3]
    full = _builder(tiny_tokenizer, context_turns="all").build(target, index["train0"])
    size = len(full.prompt_ids)
    b = _builder(tiny_tokenizer, context_turns="all", cutoff_len=size + b_answer(tiny_tokenizer) - 3)
    trimmed = b.build(target, index["train0"])
    assert trimmed.meta["context_turns"] == 2
    assert rows[0]["text"] not in trimmed.prompt and rows[2]["text"] in trimmed.prompt
    tiny = _builder(tiny_tokenizer, context_turns="all", cutoff_len=20)
    with pytest.raises(PromptTooLongError, match=target["utterance_id"]):
        tiny.build(target, index["train0"])


def b_answer(tok):
    return _builder(tok).max_answer_len


def test_templates_are_package_data():
    assert "{labels}" in load_template("paper")["instruction"]
    with pytest.raises(FileNotFoundError, match="prompt.template"):
        load_template("nope")


def test_emorynlp_rows(tiny_tokenizer):
    corpus = synthetic_corpus("emorynlp")
    examples = _builder(tiny_tokenizer, "emorynlp").build_split(corpus["dev"])
    assert len(examples) == len(corpus["dev"]) and all(e.dataset == "emorynlp" for e in examples)


def test_budget_trims_the_demonstration_context_last(tiny_tokenizer, meld_corpus):
    from dialoguellm.prompts import make_builders

    def builder(cutoff):
        return make_builders(
            tiny_tokenizer, {"meld": meld_corpus}, context_turns="all", k_shot=1, seed=3, cutoff_len=cutoff
        )["meld"]

    rows = meld_corpus["test"]
    index = dialogue_index(rows)
    target = rows[0]  # first turn: the query has no context to trim
    roomy = builder(1024)
    demo = roomy.demonstrations[0]
    assert demo.context, "the seed must draw a demonstration with context for this test"
    full = roomy.build(target, index[target["dialogue_id"]])
    tight = builder(len(full.prompt_ids) + roomy.max_answer_len - 1)
    trimmed = tight.build(target, index[target["dialogue_id"]])
    assert len(trimmed.prompt_ids) < len(full.prompt_ids)
    assert demo.context[0]["text"] not in trimmed.prompt  # the demonstration's oldest turn went first
    assert demo.row["text"] in trimmed.prompt and target["text"] in trimmed.prompt
    assert tight.demonstrations[0].context == demo.context  # the builder's own demonstrations are untouched


def test_the_paper_profile_lists_the_labels_as_the_paper_and_cpu_keeps_the_corpus_order(tiny_tokenizer):
    """Issue 32 item 12. The paper's instruction lists ['happiness', 'anger', 'fear', 'sadness', 'disgust',
    'surprise', 'neutral']; the paper profiles use that order, the cpu profile (whose committed results were
    trained with it) the corpus's label_id order. Answers and label ids do not depend on the order."""
    from dialoguellm.config import load_config
    from dialoguellm.prompts import builders_from_config

    paper_words = "['happiness', 'anger', 'fear', 'sadness', 'disgust', 'surprise', 'neutral']"
    corpora = {"meld": synthetic_corpus("meld"), "emorynlp": synthetic_corpus("emorynlp")}
    for profile in ("paper", "paper_r8", "cpu"):
        config = load_config(profile, {"prompt.k_shot": 0, "prompt.use_video": False})
        builders = builders_from_config(tiny_tokenizer, corpora, config)
        meld, emory = builders["meld"], builders["emorynlp"]
        assert meld.labels == normalised_label_names("meld")  # ids unchanged
        listed = "[" + ", ".join(f"'{w}'" for w in normalised_label_names("meld")) + "]"
        if profile == "cpu":
            assert config.prompt.label_order == "corpus" and listed in meld.instruction
        else:
            assert config.prompt.label_order == "paper"
            assert meld.instruction == (
                f"Given the Context, detect the emotion of the input, and assign an accurate label from {paper_words}."
            )
            shown = emory.listed_labels("paper")
            assert sorted(shown) == sorted(emory.labels) and shown[-2:] == ["peaceful", "powerful"]
    with pytest.raises(ValueError, match="prompt.label_order"):
        load_config("cpu", {"prompt.label_order": "alphabetical"})


def test_the_readme_says_which_adapter_the_cpu_profile_keeps():
    """Issue 32 item 11: with one epoch and eval_every 0 the cpu profile evaluates dev once, so its adapter is
    the final one; the README must say so rather than claim a dev selection among several."""
    from pathlib import Path

    from dialoguellm.config import load_config

    train = load_config("cpu").train
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    if train.epochs == 1 and train.eval_every == 0:
        assert "the adapter kept is the final one" in " ".join(readme.split())


def test_nested_sample_order_prefixes_are_stratified_and_nested():
    """Every prefix of ``nested_sample_order`` is a stratified sample (each label within one row of its
    proportional share), so the learning curve's sizes are nested by construction."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dialoguellm.prompts import nested_sample_order

    @settings(max_examples=80, deadline=None)
    @given(labels=st.lists(st.integers(0, 6), min_size=1, max_size=300), seed=st.integers(0, 1000))
    def check(labels, seed):
        order = nested_sample_order(labels, seed)
        assert sorted(order) == list(range(len(labels)))
        assert order == nested_sample_order(labels, seed)
        n = len(labels)
        counts = {lab: labels.count(lab) for lab in set(labels)}
        taken = dict.fromkeys(counts, 0)
        for k, i in enumerate(order, start=1):
            taken[labels[i]] += 1
            for lab, total in counts.items():
                assert abs(taken[lab] - k * total / n) < 1 + 1e-9, (k, lab)

    check()
    other = nested_sample_order([0, 1] * 50, 2)
    assert other != nested_sample_order([0, 1] * 50, 1)

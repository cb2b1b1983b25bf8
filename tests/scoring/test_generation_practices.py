"""Generate mode's settings (eval.do_sample, temperature, top_p, top_k, num_beams, repetition_penalty,
sampling_seed), answer parsers (eval.parser) and the random fallback (eval.fallback); the defaults keep
greedy decoding, the package's parse and "no label = wrong"."""

from __future__ import annotations

import pytest

from dialoguellm.config import Config, config_from_dict
from dialoguellm.prompts import PromptBuilder, PromptExample
from dialoguellm.prompts.answers import parse_answers
from dialoguellm.scoring import predictions


def test_the_default_generation_is_greedy_and_sampling_settings_act_only_when_sampling():
    assert predictions.generation_settings(Config().eval) == {
        "do_sample": False
    }  # what generation always did
    e = config_from_dict({"eval": {"do_sample": True, "temperature": 0.7, "top_p": 0.95, "top_k": 40,
                                   "num_beams": 4, "repetition_penalty": 1.15}}).eval  # fmt: skip
    assert predictions.generation_settings(e) == {
        "do_sample": True, "num_beams": 4, "repetition_penalty": 1.15, "temperature": 0.7, "top_p": 0.95, "top_k": 40,
    }  # fmt: skip
    for bad in ({"parser": "regex"}, {"fallback": "majority"}, {"num_beams": 0}, {"top_p": 1.5}):
        with pytest.raises(ValueError, match="eval."):
            config_from_dict({"eval": bad})


TEXTS = ["sadness", "I think anger, maybe", "angr", "no idea", "joy"]  # joy: MELD's own name for happiness


def test_the_parsers_map_text_to_labels_as_their_practices_do(tiny_tokenizer):
    builder = PromptBuilder(tiny_tokenizer, "meld", context_turns=0)
    words = list(builder.labels)
    exact = parse_answers(builder, TEXTS, "exact")
    assert exact == [words.index("sadness"), words.index("anger"), -1, -1, words.index("happiness")]
    first = parse_answers(builder, TEXTS, "first_label")
    assert first[:4] == [words.index("sadness"), words.index("anger"), -1, -1]
    edit = parse_answers(builder, TEXTS, "edit_distance")
    assert edit[2] == words.index("anger") and min(edit) >= 0  # every text gets a label


def test_the_random_fallback_is_reproducible_with_its_seed(tiny_tokenizer):
    builder = PromptBuilder(tiny_tokenizer, "meld", context_turns=0)
    texts = ["no idea"] * 40 + ["sadness"]
    one = parse_answers(builder, texts, "exact", "random", seed=1)
    assert one == parse_answers(builder, texts, "exact", "random", seed=1)
    assert one != parse_answers(builder, texts, "exact", "random", seed=2)
    assert min(one) >= 0 and one[-1] == list(builder.labels).index("sadness")


def test_predict_by_generation_passes_the_settings_and_applies_parser_and_fallback(
    tiny_tokenizer, monkeypatch
):
    seen = {}

    def fake(model, tokenizer, prompts, batch_size, max_new_tokens, dtype, settings, **kwargs):
        seen.update(settings=settings, max_new_tokens=max_new_tokens)
        return ["no idea", "angr", "sadness"][: len(prompts)]

    monkeypatch.setattr(predictions, "generate_texts", fake)
    builder = PromptBuilder(tiny_tokenizer, "meld", context_turns=0)
    examples = [PromptExample(str(i), "meld", "p", [1, 2], 0) for i in range(3)]
    e = config_from_dict({"eval": {"do_sample": True, "num_beams": 4, "temperature": 0.7}}).eval
    frame = predictions.predict_by_generation(
        None, tiny_tokenizer, builder, examples, max_new_tokens=5, generation=predictions.generation_settings(e),
        parser="edit_distance", fallback="none", seed=3,
    )  # fmt: skip
    assert (
        seen["settings"]["num_beams"] == 4
        and seen["settings"]["temperature"] == 0.7
        and seen["max_new_tokens"] == 5
    )
    assert (frame["pred_id"] >= 0).all() and list(frame["output"]) == ["no idea", "angr", "sadness"]
    exact = predictions.predict_by_generation(None, tiny_tokenizer, builder, examples)
    assert list(exact["pred_id"])[:2] == [-1, -1] and list(exact["parsed"]) == [False, False, True]
    filled = predictions.predict_by_generation(
        None, tiny_tokenizer, builder, examples, fallback="random", seed=0
    )
    assert (filled["pred_id"] >= 0).all() and list(filled["parsed"]) == [False, False, True]

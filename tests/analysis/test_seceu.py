"""SECEU scoring (dialoguellm.analysis.seceu): the paper's formula and answer rules, both answer modes on a
tiny random LLaMA, the checksummed download against a local server, and clear errors on bad inputs.

The real SECEU files are research-use only and never copied here: tests on them read ../shared and skip
without it; everything else uses small invented items in the same JSON schema.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import http.server
import json
import math
import threading
from pathlib import Path

import numpy as np
import pytest
from tiny import SYNTHETIC_ITEMS, SYNTHETIC_STANDARD, shared_seceu_dir, write_seceu

from dialoguellm import runs
from dialoguellm.analysis import seceu as eq
from dialoguellm.model import loading
from dialoguellm.plots import seceu as seceu_plots


@pytest.fixture
def synthetic(tmp_path) -> eq.SeceuData:
    return eq.load_seceu(write_seceu(tmp_path / "seceu"))


# ------------------------------------------------------------------------------------------- formula
@pytest.mark.parametrize(("score", "expected"), [(2.31, 109), (2.63, 103), (2.01, 114), (2.79, 100)])
def test_eq_reproduces_the_papers_conversions(score, expected):
    assert round(eq.eq_from_score(score)) == expected


def test_share_below_is_the_normal_cdf():
    assert round(100 * eq.share_below_normal(2.31)) == 72  # DialogueLLM's reported 72%
    assert eq.share_below_normal(2.79) == pytest.approx(0.5)
    assert eq.share_below_normal(1.0) > eq.share_below_normal(3.0)


def test_paper_table_holds_numbers_that_convert():
    table = eq.paper_table()
    assert {"model", "seceu", "eq", "percent_below"} <= set(table.columns)
    row = table.set_index("model").loc["DialogueLLM"]
    assert (row["seceu"], row["eq"], row["percent_below"]) == (2.31, 109, 72)
    for _, r in table.dropna(subset=["eq"]).iterrows():
        # GPT-4's 117 is from an unrounded score (1.89 gives 116.4): within one point.
        assert abs(eq.eq_from_score(r["seceu"]) - r["eq"]) <= 1.0, r["model"]


def test_distance_score_and_pattern():
    standard = np.array([[4.0, 3.0, 2.0, 1.0], [2.5, 2.5, 2.5, 2.5]])
    answers = np.array([[4.0, 3.0, 2.0, 1.0], [5.0, 5.0, 0.0, 0.0]])
    assert eq.item_distances(answers, standard).tolist() == [0.0, 5.0]
    assert eq.seceu_score(answers, standard) == 2.5
    assert eq.pattern_similarity([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert eq.pattern_similarity([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(eq.pattern_similarity([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="shape"):
        eq.item_distances(answers[:1], standard)


# --------------------------------------------------------------------------------------------- parser
OPTIONS = ("Proud", "Bored", "Ashamed", "Relieved")


@pytest.mark.parametrize(
    ("text", "raw", "how"),
    [
        ("Proud: 5\nBored: 0\nAshamed: 1\nRelieved: 4", [5, 0, 1, 4], "named"),
        (
            '{"Emotion": [{"name": "Proud", "score": 6}, {"name": "Bored", "score": 0}, '
            '{"name": "Ashamed", "score": 1}, {"name": "Relieved", "score": 3}]}',
            [6, 0, 1, 3],
            "named",
        ),
        ("(1) 4; (2) 1; (3) 2; (4) 3", [4, 1, 2, 3], "numbered"),
        ("Proud (4), Bored (1), Ashamed (2), Relieved (3)", [4, 1, 2, 3], "named"),
        (
            "1. Proud - 5 points\n2. Bored - 0 points\n3. Ashamed - 1 point\n4. Relieved - 4 points",
            [5, 0, 1, 4],
            "named",
        ),
        ("I would say 2.5, 2.5, 2.5 and 2.5.", [2.5, 2.5, 2.5, 2.5], "four_numbers"),
        ("Mostly relieved - 7, somewhat proud - 3.", [3, 0, 0, 7], "partial"),
        ("I cannot judge feelings.", [0, 0, 0, 0], "none"),
        ("Proud: -2, Bored: 3, Ashamed: 5, Relieved: 4", [-2, 3, 5, 4], "named"),
        # The options echoed back without scores are not an answer (no option number read as a score).
        ("Options: (1) Proud; (2) Bored; (3) Ashamed; (4) Relieved.", [0, 0, 0, 0], "none"),
    ],
)
def test_parse_answer_crafted(text, raw, how):
    scores, found = eq.parse_answer(text, OPTIONS)
    assert found == how
    assert scores.tolist() == [float(v) for v in raw]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([5, 0, 1, 4], [5, 0, 1, 4]),  # already sums to 10
        ([2, 2, 2, 2], [2.5, 2.5, 2.5, 2.5]),  # rescaled
        ([-2, 3, 5, 4], [0, 50 / 18, 70 / 18, 60 / 18]),  # shifted by |min| = 2, then rescaled
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # no meaningful answer: kept as zeros
        ([-1, -1, -1, -1], [0, 0, 0, 0]),  # shifts to zeros: stays zeros
    ],
)
def test_normalise_follows_the_paper(raw, expected):
    assert eq.normalise_scores(raw) == pytest.approx(expected)


def test_normalise_refuses_bad_vectors():
    with pytest.raises(ValueError, match="4 scores"):
        eq.normalise_scores([1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        eq.normalise_scores([1, float("nan"), 3, 4])


def test_probabilities_to_scores_sum_to_ten():
    rng = np.random.default_rng(0)
    for row in rng.normal(scale=20, size=(50, 4)):
        scores = eq.probabilities_to_scores(row)
        assert scores.sum() == pytest.approx(10.0) and (scores >= 0).all()
    assert eq.probabilities_to_scores(
        [np.log(0.5), np.log(0.25), np.log(0.125), np.log(0.125)]
    ) == pytest.approx([5, 2.5, 1.25, 1.25])


# ------------------------------------------------------------------------------------------ bad inputs
def test_missing_folder_says_where_to_get_the_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="emotional-intelligence.github.io") as err:
        eq.load_seceu(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "SECEU_DIR" in str(err.value)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / eq.ITEMS_FILE).write_text("[]")
    with pytest.raises(FileNotFoundError, match=eq.STANDARD_FILE):
        eq.load_seceu(tmp_path / "half")
    assert eq.find_seceu_dir(tmp_path / "half") is None


def test_malformed_json_names_the_file(tmp_path):
    folder = write_seceu(tmp_path / "s")
    (folder / eq.ITEMS_FILE).write_text('[{"story": "x", "options": [')
    with pytest.raises(ValueError, match=rf"{eq.ITEMS_FILE}.*not valid JSON"):
        eq.load_seceu(folder)


def test_wrong_number_of_options_names_the_field(tmp_path):
    items = copy.deepcopy(SYNTHETIC_ITEMS)
    items[1]["options"] = items[1]["options"][:3]
    with pytest.raises(
        ValueError, match=r"seceu_items.json: field '\[1\].options' must list exactly 4 options"
    ):
        eq.load_seceu(write_seceu(tmp_path / "s", items=items))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"standard_scores": [[1, 2, 3, 4]]}, "standard_scores"),
        ({"standard_scores": [[1, 2, 3, 4], [1, 2, 3], [1, 2, 3, 4]]}, r"standard_scores\[1\]"),
        ({"human_pattern": [1.0, "two", 3.0]}, "human_pattern"),
        ({"population_std": 0}, "population_std"),
    ],
)
def test_bad_standard_file_names_the_field(tmp_path, change, field):
    standard = {**SYNTHETIC_STANDARD, **change}
    with pytest.raises(ValueError, match=rf"seceu_standard.json: field '{field}'"):
        eq.load_seceu(write_seceu(tmp_path / "s", standard=standard))


def test_reference_takers(synthetic):
    uniform, top = eq.reference_results(synthetic)
    assert uniform.answers.sum(axis=1) == pytest.approx([10.0] * 3)
    assert top.answers.tolist()[0] == [0, 0, 0, 10]  # humans' top option of the first invented item
    assert top.distances[0] == pytest.approx(np.linalg.norm([4.0, 0.5, 0.5, -5.0]))
    assert set(eq.seceu_table([uniform, top], with_paper=False)["source"]) == {
        "reference taker (no model; % from a normal approximation)"
    }


def test_load_and_limit(synthetic):
    assert len(synthetic) == 3 and synthetic.items[2].number == 3
    assert synthetic.standard_scores.shape == (3, 4)
    head = synthetic.head(2)
    assert len(head) == 2 and head.human_pattern.tolist() == [2.1, 2.8]
    with pytest.raises(ValueError, match="LIMIT"):
        synthetic.head(0)


# ------------------------------------------------------------------------------------------- download
@pytest.fixture
def local_server(tmp_path):
    """A plain http.server on 127.0.0.1 serving a tmp folder; yields (base_url, served folder)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/files", served
    finally:
        server.shutdown()
        server.server_close()


def test_download_checks_sums_and_writes_files(local_server, tmp_path):
    base, served = local_server
    write_seceu(served / "files")
    sums = {n: hashlib.sha256((served / "files" / n).read_bytes()).hexdigest() for n in eq.SHA256}
    folder = eq.download_seceu(tmp_path / "got", base_url=base, checksums=sums)
    assert len(eq.load_seceu(folder)) == 3
    assert sorted(p.name for p in folder.iterdir()) == sorted(sums)  # no temporary files left behind


def test_download_mismatch_keeps_nothing(local_server, tmp_path):
    base, served = local_server
    write_seceu(served / "files")
    # The module's recorded sums are those of the real files, so the invented ones must be refused.
    with pytest.raises(ValueError, match=rf"Checksum mismatch for {eq.ITEMS_FILE}.*not kept"):
        eq.download_seceu(tmp_path / "got", base_url=base)
    assert list((tmp_path / "got").iterdir()) == []


def test_download_missing_file_is_a_clear_error(local_server, tmp_path):
    base, _ = local_server
    with pytest.raises(OSError, match=r"Could not download http://127\.0\.0\.1.*seceu_items.json"):
        eq.download_seceu(tmp_path / "got", base_url=base)
    assert list((tmp_path / "got").iterdir()) == []


# ------------------------------------------------------------------------------------- model side
def _build_tiny_llama(folder: Path) -> Path:
    """A random 1-layer LLaMA with a byte-level tokenizer (no chat template), built offline."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir) -> Path:
    """The shared tiny LLaMA (tests/conftest.py) as a Path."""
    return Path(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_lm(tiny_dir):
    """(model, tokenizer) of the tiny LLaMA, tokenizer without chat template (plain-text prompts)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokenizer.chat_template = None  # plain-text path; the chat path is tested on a copy
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(tiny_dir), tokenizer


@pytest.mark.slow
def test_probability_mode_end_to_end(tiny_lm, synthetic, tmp_path):
    model, tokenizer = tiny_lm
    result = eq.score_model(model, tokenizer, synthetic, mode="probabilities", label="tiny", progress=False)
    assert result.answers.shape == (3, 4)
    assert result.answers.sum(axis=1) == pytest.approx([10.0] * 3)  # every item, never unparsed
    assert (result.answers > 0).all()
    assert result.seceu == pytest.approx(result.distances.mean())
    assert result.eq == pytest.approx(15 * (2.79 - result.seceu) / 0.822 + 100)
    summary = result.summary()
    assert summary["unparsed"] == 0 and summary["items"] == 3
    json.dumps(result.to_dict())  # results files are plain JSON
    table = eq.seceu_table([result])
    assert table.iloc[0]["model"] == "tiny" and "DialogueLLM" in set(table["model"])
    figure = seceu_plots.plot_item_distances([result], tmp_path / "d.png", synthetic.human_pattern)
    assert figure.stat().st_size > 5_000


@pytest.mark.slow
def test_option_log_probs_equal_full_sequence_scoring(tiny_lm, synthetic):
    """The cached, padded batch gives what scoring each prompt + option from scratch gives."""
    import torch

    model, tokenizer = tiny_lm
    got = eq.option_log_probs(model, tokenizer, synthetic.items, progress=False)
    assert got.shape == (3, 4) and np.isfinite(got).all() and (got < 0).all()
    for i, item in enumerate(synthetic.items):
        prompt = eq.build_prompt(item, tokenizer)
        prompt_ids = tokenizer(prompt)["input_ids"]
        for k, option in enumerate(item.options):
            option_ids = tokenizer(" " + option, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + option_ids])
            with torch.no_grad():
                log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
            targets = ids[0, 1:]
            expected = log_probs[torch.arange(len(targets)), targets][-len(option_ids) :].sum()
            assert got[i, k] == pytest.approx(float(expected), abs=1e-4), (i, k)


@pytest.mark.slow
def test_chat_template_is_used_when_present(tiny_lm, synthetic):
    model, tokenizer = tiny_lm
    chat = copy.deepcopy(tokenizer)
    chat.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    prompt = eq.build_prompt(synthetic.items[0], chat)
    assert prompt.startswith("<|user|>Story: Mara's kite") and prompt.endswith("<|assistant|>")
    assert "sum up to 10" in prompt and "(4) Relieved." in prompt
    plain = eq.build_prompt(synthetic.items[0], tokenizer)
    assert plain.startswith("Story: Mara's kite") and plain.endswith("Answer:")
    result = eq.score_model(model, chat, synthetic, mode="probabilities", limit=2, progress=False)
    assert result.answers.sum(axis=1) == pytest.approx([10.0, 10.0])


@pytest.mark.slow
def test_generate_mode_end_to_end(tiny_lm, synthetic):
    model, tokenizer = tiny_lm
    result = eq.score_model(model, tokenizer, synthetic, mode="generate", max_new_tokens=8, progress=False)
    assert len(result.texts) == 3 and len(result.parse) == 3
    for row, how in zip(result.answers, result.parse, strict=True):
        assert row.sum() == pytest.approx(0.0 if how == "none" else 10.0)


def test_generate_mode_applies_the_rules(monkeypatch, synthetic):
    texts = ["Proud: 6, Bored: 0, Ashamed: 0, Relieved: 4", "(1) -1 (2) 1 (3) 3 (4) 1", "no idea"]
    monkeypatch.setattr(eq, "generate_answers", lambda *args, **kwargs: texts)
    result = eq.score_model(None, None, synthetic, mode="generate", progress=False)
    assert result.parse == ["named", "numbered", "none"]
    assert result.answers.tolist()[0] == [6, 0, 0, 4]
    assert result.answers[1] == pytest.approx([0, 2.5, 5, 2.5])  # shifted by 1 to (0, 2, 4, 2), rescaled
    assert result.answers[2].tolist() == [0, 0, 0, 0]
    assert result.distances[2] == pytest.approx(np.linalg.norm(synthetic.standard_scores[2]))
    assert result.summary()["unparsed"] == 1
    with pytest.raises(ValueError, match="MODE must be one of"):
        eq.score_model(None, None, synthetic, mode="vibes")


# ------------------------------------------------------------------------------- the real SECEU files
@pytest.mark.shared
def test_real_files_load_and_match_the_recorded_checksums():
    folder = shared_seceu_dir()
    if folder is None:
        pytest.skip("../shared/data/seceu is absent (the SECEU files are research-use only, not in the repo)")
    for name, expected in eq.SHA256.items():
        assert eq.sha256_file(folder / name) == expected, name
    data = eq.load_seceu(folder)
    assert len(data) == 40 and all(len(item.options) == 4 for item in data.items)
    assert data.standard_scores.sum(axis=1) == pytest.approx([10.0] * 40, abs=0.011)
    assert (data.mean, data.sd) == (2.79, 0.822)
    perfect = eq.result_from_answers(data.standard_scores, data)
    assert perfect.seceu == 0.0 and perfect.eq == pytest.approx(15 * 2.79 / 0.822 + 100)
    uniform, top = eq.reference_results(data)
    # Spreading points pays: the uniform taker beats DialogueLLM's 2.31; all-in on the top option does not.
    assert uniform.seceu == pytest.approx(2.1238, abs=1e-4) and top.seceu == pytest.approx(7.0792, abs=1e-4)


def test_the_seceu_folder_is_only_one_the_user_names(tmp_path, monkeypatch):
    """No folder outside the ones a user gives (SECEU_DIR, $DIALOGUELLM_SECEU_DIR) is ever read."""
    monkeypatch.delenv(eq.SECEU_ENV, raising=False)
    assert eq.default_seceu_dir() is None
    with pytest.raises(FileNotFoundError, match="no SECEU_DIR given"):
        eq.load_seceu()
    monkeypatch.setenv(eq.SECEU_ENV, str(tmp_path))
    assert eq.default_seceu_dir() is None  # the folder lacks the files
    (tmp_path / eq.ITEMS_FILE).write_text("[]")
    assert eq.default_seceu_dir() == tmp_path


@pytest.mark.slow
def test_tuned_model_scores_through_peft_and_adapter_is_found(tiny_dir, synthetic, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    assert eq.adapter_for(run, str(tiny_dir))[0] is None
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokenizer.chat_template = None
    loading.add_lora(model, r=2, alpha=4, dropout=0.0, target_modules=["q_proj", "v_proj"]).save_pretrained(
        run / "adapter"
    )
    adapter, note = eq.adapter_for(run, str(tiny_dir))
    assert adapter == run / "adapter" and str(adapter) in note
    (run / "ablation" / "arm" / "adapter").mkdir(parents=True)  # a deeper, newer adapter loses
    (run / "ablation" / "arm" / "adapter" / "adapter_config.json").write_text("{}")
    assert runs.find_adapter(run) == run / "adapter"
    with pytest.raises(FileNotFoundError, match="adapter_config.json missing"):
        eq.adapter_for(run, str(tiny_dir), adapter_dir=tmp_path / "none")
    assert eq.adapter_for(run, str(tiny_dir), adapter_dir=run / "adapter")[0] == run / "adapter"
    other = _build_tiny_llama(tmp_path / "other")
    assert eq.adapter_for(run, str(other))[0] is None  # trained on another base: not applied
    tuned = loading.load_adapter(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    result = eq.score_model(tuned, tokenizer, synthetic, label="tiny + LoRA", progress=False)
    assert result.answers.sum(axis=1) == pytest.approx([10.0] * 3)
    saved = eq.save_result(result, tmp_path / "eq")
    assert saved.name == "seceu_tiny_LoRA.json"
    [back] = eq.load_seceu_results(tmp_path / "eq")
    assert back.label == "tiny + LoRA" and back.distances == pytest.approx(result.distances, abs=1e-4)


@pytest.mark.shared
def test_download_of_the_real_files_passes_the_recorded_checksums(local_server, tmp_path):
    import shutil

    folder = shared_seceu_dir()
    if folder is None:
        pytest.skip("../shared/data/seceu is absent (the SECEU files are research-use only, not in the repo)")
    base, served = local_server
    (served / "files").mkdir()
    for name in eq.SHA256:
        shutil.copyfile(folder / name, served / "files" / name)
    got = eq.download_seceu(tmp_path / "got", base_url=base)  # the module's own checksums
    assert len(eq.load_seceu(got)) == 40

"""The paper profile as the paper ran it (issue #17, part 2): its resolution (seeds, warm-up, three corpora
with IEMOCAP_DIR, a clear message without), the refusal of video without training descriptions, plain
prompts whose target tokenises as in the prompt under a SentencePiece tokenizer (LLaMA 2's kind), and the
paper's own code path end to end on CPU: 8-bit and 4-bit (NF4) loading, k-bit preparation, LoRA on
q_proj/v_proj, dev selection, evaluation by label scoring and by generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iemocap_synth import build_iemocap_tree
from tiny import save_synthetic_corpus, synthetic_corpus

from dialoguellm import cli
from dialoguellm.config import load_config
from dialoguellm.corpora import readers
from dialoguellm.prompts.builder import PromptBuilder, select_demonstrations
from dialoguellm.training.loop import check_description_coverage, warn_single_seed

# ---------------------------------------------------------------------------------------- resolution


def test_paper_profile_keeps_iemocap_with_its_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    tree = build_iemocap_tree(tmp_path)
    config = readers.resolve_datasets(load_config("paper"), iemocap_dir=tree)
    assert config.data.datasets == ["meld", "emorynlp", "iemocap"]
    monkeypatch.setenv("IEMOCAP_DIR", str(tree))
    config = readers.resolve_datasets(load_config("paper"))
    corpora = readers.load_corpora_for(config)
    assert sorted(corpora) == ["emorynlp", "iemocap", "meld"]
    assert len(corpora["iemocap"]["test"]) > 0


def test_paper_profile_without_iemocap_says_it_is_not_the_papers_setting(monkeypatch, caplog):
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    with pytest.warns(
        UserWarning, match=r"2 corpora \(meld, emorynlp\), not the paper's three.*NOT the paper's"
    ):
        config = readers.resolve_datasets(load_config("paper"))
    assert config.data.datasets == ["meld", "emorynlp"]
    assert load_config("paper").data.datasets[-1] == "iemocap"  # the profile itself is not changed
    assert readers.resolve_datasets(load_config("cpu")).data.datasets == [
        "meld",
        "emorynlp",
    ]  # nothing to say


def test_five_seeds_are_declared_and_one_run_says_it_trains_one(caplog):
    config = load_config("paper")
    assert len(config.eval.seeds) == 5
    with caplog.at_level("WARNING", logger="dialoguellm"):
        warn_single_seed(config)
    assert "eval.seeds lists 5 seeds" in caplog.text and "train.seed=42" in caplog.text
    assert "--set train.seed=$s" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="dialoguellm"):
        warn_single_seed(load_config("cpu"))
    assert caplog.text == ""


def test_video_without_training_descriptions_is_refused_with_the_fix():
    config = load_config("paper")
    coverage = {"train": {"meld": 0.0, "emorynlp": 0.0}, "dev": {"meld": 0.0, "emorynlp": 0.0}}
    with pytest.raises(ValueError, match=r"none of the meld training prompts.*prompt.use_video=false"):
        check_description_coverage(config, coverage)
    check_description_coverage(config, {"train": {"meld": 0.4}, "dev": {"meld": 0.0}})  # some: trains
    config.prompt.use_video = False
    check_description_coverage(config, coverage)  # video off: nothing to check


# ------------------------------------------------------------------------------- SentencePiece prompts


@pytest.fixture(scope="module")
def sp_tokenizer(sentencepiece_llama_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(sentencepiece_llama_dir)


def test_plain_prompt_target_tokenises_as_prompt_text_plus_answer(sp_tokenizer):
    corpus = synthetic_corpus("meld")
    demos = select_demonstrations(corpus["train"], 1, seed=0, context_turns=1)
    builder = PromptBuilder(sp_tokenizer, "meld", style="plain", demonstrations=demos, cutoff_len=1024)
    assert builder.style == "plain" and not sp_tokenizer.chat_template
    # The trap the fix avoids: a SentencePiece word alone starts with a space piece, after "\n" it does not.
    alone = [sp_tokenizer(builder.answer_text(i), add_special_tokens=False)["input_ids"] for i in range(7)]
    assert any(a != ids[:-1] for a, ids in zip(alone, builder.answer_ids, strict=True))
    rows = corpus["test"]
    example = builder.build(rows[1], [r for r in rows if r["dialogue_id"] == rows[1]["dialogue_id"]])
    for label_id, answer_ids in enumerate(builder.answer_ids):
        whole = sp_tokenizer(example.prompt + builder.answer_text(label_id))["input_ids"]
        assert example.prompt_ids + answer_ids[:-1] == whole, builder.labels[label_id]
        assert answer_ids[-1] == sp_tokenizer.eos_token_id
    # The demonstration's answer in the prompt is the same tokens the model is trained to produce.
    demo_answer = builder.answer_ids[demos[0].row["label_id"]][:-1]
    ids = example.prompt_ids
    assert any(ids[i : i + len(demo_answer)] == demo_answer for i in range(len(ids)))


# ------------------------------------------------------------------------------------ end to end on CPU


def _json_tail(out: str) -> dict:
    """The JSON the CLI prints last (training prints its overlap line before it)."""
    return json.loads(out[out.index("{\n") :])


E2E_SETTINGS = [
    "model.num_threads=1",
    "prompt.use_video=false",
    "prompt.cutoff_len=512",
    "data.train_per_dataset=8",
    "data.dev_per_dataset=4",
    "data.test_per_dataset=4",
    "train.epochs=1",
    "train.batch_size=4",
    "train.micro_batch_size=4",
    "train.grad_accum=1",
    "train.max_steps=2",
    "eval.batch_size=4",
    "eval.max_new_tokens=3",
]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory) -> Path:
    """A run folder holding synthetic MELD and EmoryNLP (notebook 01's layout), MELD train sharing a scene
    line with EmoryNLP test (so the overlap removal has something to take out)."""
    run = Path(tmp_path_factory.mktemp("paper_run"))
    meld, emory = synthetic_corpus("meld", sizes=(4, 2, 2), seed=1), synthetic_corpus("emorynlp", seed=7)
    emory["test"][0]["text"] = meld["train"][2]["text"] = "Could you please pass me the salt and the pepper"
    save_synthetic_corpus(run, meld)
    save_synthetic_corpus(run, emory)
    return run


@pytest.mark.parametrize(
    ("profile", "extra", "quantization"),
    [("paper", [], "8bit"), ("paper_r8", [], "8bit"), ("paper", ["model.quantization=4bit"], "4bit")],
    ids=["paper-8bit", "paper_r8-8bit", "qlora-4bit"],
)
@pytest.mark.slow
def test_paper_profile_end_to_end_in_kbit_on_cpu(
    profile, extra, quantization, paper_run, sentencepiece_llama_dir, monkeypatch, capsys
):
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    name = f"training_{profile}_{quantization}"
    settings = [f"model.name={sentencepiece_llama_dir}", *E2E_SETTINGS, *extra]
    options = [x for s in settings for x in ("--set", s)]
    with pytest.warns(UserWarning, match="not the paper's three"):
        code = cli.main(["train", "--config", profile, "--run-dir", str(paper_run), "--name", name, *options])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "cross-corpus overlap removed" in out and "meld 1 of 16" in out
    folder = paper_run / name
    saved = (folder / "config.yaml").read_text()
    assert f"quantization: {quantization}" in saved and "warmup_steps: 100" in saved
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["best"] is not None
    assert metrics["cross_corpus_overlap_removed"] == {"meld": 1, "emorynlp": 0}
    assert metrics["description_coverage"]["train"] == {"meld": 0.0, "emorynlp": 0.0}
    report = json.loads((folder / "data_report.json").read_text())
    assert report["datasets"] == ["meld", "emorynlp"]
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    adapter = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert (adapter["r"], adapter["lora_alpha"]) == ((8, 64) if profile == "paper_r8" else (4, 16))
    for mode in ("score", "generate"):
        out_dir = paper_run / f"evaluation_{name}_{mode}"
        args = [
            "evaluate",
            "--run-dir",
            str(paper_run),
            "--name",
            name,
            "--mode",
            mode,
            "--out",
            str(out_dir),
        ]
        assert cli.main(args) == 0, capsys.readouterr().err
        results = json.loads(capsys.readouterr().out)
        assert set(results) == {"meld", "emorynlp"}
        for scores in results.values():
            assert 0 <= scores["weighted_f1"] <= 1 and 0 <= scores["accuracy"] <= 1


def test_paper_profile_with_video_and_no_training_descriptions_stops(
    paper_run, sentencepiece_llama_dir, capsys
):
    settings = [
        f"model.name={sentencepiece_llama_dir}",
        *E2E_SETTINGS[:1],
        *E2E_SETTINGS[2:],
        "prompt.use_video=true",
    ]
    options = [x for s in settings for x in ("--set", s)]
    with pytest.warns(UserWarning):
        code = cli.main(
            ["train", "--config", "paper", "--run-dir", str(paper_run), "--name", "video", *options]
        )
    assert code == 2
    assert "prompt.use_video is true but none of the meld training prompts" in capsys.readouterr().err


@pytest.mark.parametrize(("quantization", "layer"), [("8bit", "Linear8bitLt"), ("4bit", "Linear4bit")])
def test_kbit_loading_on_cpu_quantises_the_base(quantization, layer, sentencepiece_llama_dir):
    from dialoguellm.model import loading

    loaded = loading.load_model(sentencepiece_llama_dir, "fp16", quantization)
    kinds = {type(m).__name__ for m in loaded.model.modules()}
    assert layer in kinds
    model = loading.add_lora(loaded.model, 8, 16, 0.0, ["q_proj", "v_proj"])
    ids = loaded.tokenizer("Input: Ross: okay", return_tensors="pt")["input_ids"]
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None for g in grads)


def test_kbit_refusal_names_the_reason(monkeypatch):
    from dialoguellm.model import loading

    monkeypatch.setattr(loading, "kbit_backend_problem", lambda q: "bitsandbytes 0.42 has no CPU backend")
    with pytest.raises(
        RuntimeError, match=r"model.quantization=8bit cannot load here: .*no CPU backend.*>= 0.48"
    ):
        loading.load_model("unused", "fp16", "8bit")


@pytest.mark.slow
def test_all_seeds_trains_one_adapter_per_seed_and_reports_mean_and_sd(
    paper_run, sentencepiece_llama_dir, capsys, caplog, monkeypatch
):
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    settings = [f"model.name={sentencepiece_llama_dir}", "model.quantization=none", "eval.seeds=[3, 4]"]
    options = [x for s in [*settings, *E2E_SETTINGS] for x in ("--set", s)]
    train = ["train", "--config", "paper", "--run-dir", str(paper_run), "--name", "seeds", "--all-seeds"]
    with caplog.at_level("WARNING", logger="dialoguellm"), pytest.warns(UserWarning):
        assert cli.main([*train, *options]) == 0, capsys.readouterr().err
    assert "eval.seeds lists" not in caplog.text  # every seed is trained: no single-seed warning
    trained = _json_tail(capsys.readouterr().out)
    assert set(trained) == {"3", "4"}
    for seed in (3, 4):
        assert f"seed: {seed}" in (paper_run / f"seeds_seed{seed}" / "config.yaml").read_text()
    a, b = (
        (paper_run / f"seeds_seed{s}" / "adapter" / "adapter_model.safetensors").read_bytes() for s in (3, 4)
    )
    assert a != b
    with pytest.warns(UserWarning):  # a second call with --resume finds both finished
        assert cli.main([*train, *options, "--resume"]) == 0
    assert all(v.get("skipped") for v in _json_tail(capsys.readouterr().out).values())
    out = paper_run / "seeds_eval"
    args = ["evaluate", "--run-dir", str(paper_run), "--name", "seeds", "--all-seeds", "--out", str(out)]
    assert cli.main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "seeds_summary.json").read_text())
    assert summary["seeds"] == [3, 4] and set(summary["results"]) == {"meld", "emorynlp"}
    meld = summary["results"]["meld"]["weighted_f1"]
    assert len(meld["values"]) == 2 and meld["mean"] == pytest.approx(sum(meld["values"]) / 2)
    assert (out / "seed3" / "test_meld_predictions.csv").is_file()
    for seed in (3, 4):  # each adapter scored with the demonstration it was trained with (its own train.seed)
        scored = json.loads((out / f"seed{seed}" / "summary.json").read_text())
        assert scored["scoring_settings"]["demonstration_seed"] == seed

"""Sharing an adapter: its folder holds a Hugging Face model card (front matter + config, data, licences,
test metrics with intervals, the command), loads with plain peft outside our loader with the same scores, and
exports as a merged safetensors model that reports how many dev predictions the merge changes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from tiny import synthetic_corpus, tiny_settings

from dialoguellm import cli
from dialoguellm.config import config_from_dict
from dialoguellm.evaluation import run as evaluation
from dialoguellm.model import loading
from dialoguellm.prompts import PromptBuilder
from dialoguellm.scoring import engine
from dialoguellm.training import loop


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """A tiny training run (train + evaluate on synthetic MELD), as `make reproduce` leaves one."""
    run = tmp_path_factory.mktemp("share")
    config = config_from_dict(tiny_settings(tiny_model_dir, epochs=3), source="test")
    corpus = {"meld": synthetic_corpus("meld", sizes=(4, 3, 4))}
    result = loop.train(config, run / "training", corpus, progress=False)
    evaluation.evaluate_run(corpus, run / "evaluation", train_dir=run / "training", progress=False)
    return run, result.adapter_dir, corpus


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.slow
def test_adapter_folder_holds_a_model_card(trained, tiny_model_dir):
    _, adapter, _ = trained
    text = (adapter / "README.md").read_text(encoding="utf-8")
    meta = front_matter(text)
    assert meta["library_name"] == "peft" and meta["base_model"] == tiny_model_dir
    assert "lora" in meta["tags"] and meta["license"] and meta["datasets"] == ["meld"]
    assert "GNU General Public License v3.0" in text  # MELD's licence, from its SOURCE.md
    assert "## Settings (resolved config)" in text and "target_modules" in text
    assert "## Intended use and limits" in text and "Trained with: `" in text
    # Evaluation wrote the test metrics with a dialogue-bootstrap interval: "xx.x [lo, hi]".
    summary = json.loads((trained[0] / "evaluation" / "summary.json").read_text())
    wf1 = 100 * summary["results"]["meld"]["weighted_f1"]
    row = next(line for line in text.splitlines() if line.startswith("| meld |"))
    assert f"{wf1:.1f} [" in row and "Test results" in text
    card = json.loads((adapter / "card.json").read_text())
    assert card["test"]["results"]["meld"]["dialogues"] == 4


@pytest.mark.slow
def test_plain_peft_loads_the_adapter_with_the_same_scores(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, adapter, corpus = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    plain = PeftModel.from_pretrained(base, str(adapter)).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ours = loading.load_adapter(loading.load_model(tiny_model_dir, dtype="fp32").model, adapter)
    builder = PromptBuilder(tokenizer, "meld", context_turns=0, use_video=False)
    examples = builder.build_split(corpus["meld"]["test"])
    scores = [
        engine.score_examples(m, examples, builder.answer_ids, 1, 8, "fp32", progress=False)
        for m in (plain, ours)
    ]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    base_only = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    untuned = engine.score_examples(base_only, examples, builder.answer_ids, 1, 8, "fp32", progress=False)
    assert np.abs(untuned - scores[0]).max() > 1e-3  # the adapter is really applied


@pytest.mark.slow
def test_merge_export_writes_safetensors_and_counts_changed_predictions(trained, tmp_path, capsys):
    run, _, _ = trained
    out = tmp_path / "merged"
    assert cli.main(["export", "--run-dir", str(run), "--merge", str(out), "--dev-sample", "12"]) == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    assert (out / "README.md").is_file() and (out / "tokenizer_config.json").is_file()
    report = json.loads((out / "merge_check.json").read_text())
    assert report["dev_utterances"] == 12 and 0 <= report["changed"] <= 12
    assert report["dtype"] == "fp32" and report["changed"] == 0  # fp32 merges exactly
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert "merge_check" in capsys.readouterr().out
    assert cli.main(["export", "--run-dir", str(run), "--merge", str(out)]) == 2  # never overwrites


def merge_case(tmp_path, dtype: str):
    """A run whose adapter bf16 merging cannot hold: the base's output projection has every weight offset by
    64 (the same for every vocabulary row, so no score moves: a softmax ignores a shift shared by all tokens),
    and a rank-1 LoRA update of 0.1 per weight on the row of one label (the base's least likely on a dev
    prompt), signed as that prompt's final hidden state, raises the label's logit there by about 5. In bf16,
    64 + 0.1 rounds back to 64 (bf16 numbers there are 0.25 apart and more), so the merged model is the base
    model; in fp32 the sum is kept. Returns the run and the boosted label."""
    import torch
    from tiny import build_tiny_model, build_tiny_tokenizer, save_synthetic_corpus

    from dialoguellm.config import save_config
    from dialoguellm.runs import RunLayout

    base = tmp_path / "base"
    tokenizer = build_tiny_tokenizer(chat=True)
    model = build_tiny_model(len(tokenizer)).eval()
    with torch.no_grad():
        model.lm_head.weight += 64.0
    model.save_pretrained(base, safe_serialization=True)
    tokenizer.save_pretrained(base)
    corpus = synthetic_corpus("meld", sizes=(4, 3, 2))
    run = tmp_path / f"run_{dtype}"
    save_synthetic_corpus(run, corpus)
    raw = tiny_settings(str(base))
    raw["model"]["dtype"] = dtype
    raw["lora"].update(r=1, alpha=1, target_modules=["lm_head"])
    save_config(config_from_dict(raw), RunLayout(run).training / "config.yaml")
    builder = PromptBuilder(tokenizer, "meld", context_turns=0, use_video=False)
    prompt = builder.build_split(corpus["dev"], only=[0])[0].prompt_ids
    with torch.no_grad():
        hidden = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states[-1][0, -1]
        label_logits = model.lm_head(hidden)[[tokenizer.convert_tokens_to_ids(w) for w in builder.labels]]
    boosted = builder.labels[int(label_logits.argmin())]
    peft_model = loading.add_lora(model, 1, 1, 0.0, ["lm_head"])
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:
                param.copy_(torch.sign(hidden)[None, :])
            elif "lora_B" in name:
                param.zero_()
                param[tokenizer.convert_tokens_to_ids(boosted), 0] = 0.1
    # Only the LoRA matrices: the base head is unchanged (peft would otherwise save lm_head in full).
    peft_model.save_pretrained(
        str(RunLayout(run).adapter), safe_serialization=True, save_embedding_layers=False
    )
    return run, boosted


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
def test_merge_warns_with_the_count_when_bf16_merging_changes_dev_predictions(tmp_path, caplog, dtype):
    import torch

    from dialoguellm.evaluation.export import merge_adapter
    from dialoguellm.prompts import prepare_split
    from dialoguellm.runs import RunLayout, load_run_config
    from dialoguellm.scoring.predictions import score_prepared

    run, boosted = merge_case(tmp_path, dtype)
    with caplog.at_level("WARNING", logger="dialoguellm.evaluation.export"):
        report = merge_adapter(run, tmp_path / "merged", dev_sample=12, progress=False)
    # Counted independently: the adapter on its base, and the exported folder loaded as a plain model.
    config = load_run_config(RunLayout(run).training)
    adapter_on_base = loading.load_model(config.model.name, dtype)
    dev = prepare_split(config, adapter_on_base.tokenizer, _corpora(run, config), "dev", 12)
    with_adapter = loading.load_adapter(adapter_on_base.model, RunLayout(run).adapter)
    before = score_prepared(with_adapter, adapter_on_base.tokenizer, dev, config, "dev", False)["meld"]
    merged = loading.load_model(str(tmp_path / "merged"), dtype)
    after = score_prepared(merged.model, merged.tokenizer, dev, config, "dev", False)["meld"]
    changed = int((before["pred_id"] != after["pred_id"]).sum())
    assert report["dev_utterances"] == len(before) == 12 and report["changed"] == changed
    assert json.loads((tmp_path / "merged" / "merge_check.json").read_text())["changed"] == changed
    warnings = [r.getMessage() for r in caplog.records if r.name == "dialoguellm.evaluation.export"]
    if dtype == "bf16":
        # The update was lost entirely: the merged head is the base head, bit for bit, and predicts as it.
        base_head = loading.load_model(config.model.name, dtype).model.lm_head.weight
        assert torch.equal(merged.model.lm_head.weight, base_head)
        assert changed > 0 and (before["pred"] == boosted).sum() > (after["pred"] == boosted).sum()
        assert warnings == [
            f"Merging changes {changed} of 12 dev predictions (bf16 weights round the merged sum); the merged "
            "model is not the evaluated adapter. Serve the adapter with peft for the evaluated predictions."
        ]
        card = (tmp_path / "merged" / "README.md").read_text(encoding="utf-8")
        assert f"Merging changed {changed} of 12 dev predictions (bf16 weights)" in card
    else:
        assert changed == 0 and warnings == []  # fp32 keeps the sum: the same update, merged exactly


def _corpora(run, config):
    from dialoguellm.corpora.readers import load_corpora_for

    return load_corpora_for(config, run)

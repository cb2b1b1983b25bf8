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

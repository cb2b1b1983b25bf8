"""benchmarks/eval_speed.py and train_speed.py run end to end on the tiny model (real MELD/EmoryNLP prompts)."""

from __future__ import annotations

import json

import pytest
from bench import TINY, assert_provenance, load

from dialoguellm import prompts
from dialoguellm.model import loading

# Every test here runs a benchmark script end to end (tiny models, but whole measurements).
pytestmark = pytest.mark.slow


def scoring_adapter(model_dir: str, folder) -> None:
    """A LoRA adapter on the tiny model whose update changes the scores (a fresh adapter has B = 0)."""
    import torch

    peft_model = loading.add_lora(loading.load_model(model_dir, dtype="fp32").model, 4, 8, 0.0, "all-linear")
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(folder)


def dev_only(monkeypatch) -> None:
    """Make any read of a split other than dev fail: the benchmarks measure on dev only."""
    real = prompts.prepare_examples

    def prepare(config, tokenizer, corpora, splits, *args, **kwargs):
        assert tuple(splits) == ("dev",)
        return real(config, tokenizer, corpora, splits, *args, **kwargs)

    monkeypatch.setattr(prompts, "prepare_examples", prepare)


def test_eval_speed_compares_three_ways(tiny_model_dir, tmp_path, monkeypatch):
    dev_only(monkeypatch)
    out = tmp_path / "eval.json"
    args = [
        "--set",
        f"model.name={tiny_model_dir}",
        *TINY,
        "--compare",
        "8",
        "--full",
        "12",
        "--out",
        str(out),
    ]
    result = load("eval_speed").main(args)
    assert_provenance(result, "eval_speed", args)
    saved = json.loads(out.read_text())
    assert saved == json.loads(json.dumps(result))
    for method in ("label_scoring", "greedy_generate", "paper_generate"):
        entry = saved["comparison_sample"][method]
        assert entry["utterances"] == 8 and entry["utterances_per_second"] > 0
    assert saved["comparison_sample"]["label_scoring"]["unparsed"] == 0  # scoring always answers
    assert saved["split"] == "dev" and saved["full_meld_dev"]["utterances"] == 12
    assert saved["targets_met"]["the full MELD dev set in under 77 s"] is False  # 12 is not the full dev set
    assert saved["settings"]["paper_generation"]["num_beams"] == 4


def test_train_speed_times_both_on_the_same_tokens(tiny_model_dir, tmp_path):
    out = tmp_path / "train.json"
    args = ["--set", f"model.name={tiny_model_dir}", *TINY, "--set", "data.train_per_dataset=48"]
    result = load("train_speed").main([*args, "--micro-batches", "3", "--out", str(out)])
    assert_provenance(result, "train_speed", [*args, "--micro-batches", "3", "--out", str(out)])
    ours, base = result["ours"], result["plain_trainer"]
    assert ours["real_tokens"] == base["real_tokens"] > 0  # the same examples
    assert base["tokens_computed"] == 2 * 8 * 256  # two timed micro-batches of 8, padded to the cutoff
    assert ours["tokens_computed"] < base["tokens_computed"]
    assert 0 <= ours["padding_waste"] < base["padding_waste"]
    assert result["speedup"] == pytest.approx(ours["tokens_per_second"] / base["tokens_per_second"], rel=0.01)


def test_inference_weights_compares_on_dev_and_finds_the_speedups_exact(
    tiny_model_dir, tmp_path, monkeypatch
):

    scoring_adapter(tiny_model_dir, tmp_path / "adapter")
    dev_only(monkeypatch)
    out = tmp_path / "weights.json"
    args = ["--set", f"model.name={tiny_model_dir}", *TINY, "--set", "model.dtype=bf16"]
    args += ["--adapter", str(tmp_path / "adapter"), "--per-dataset", "10", "--chunk", "4", "--out", str(out)]
    result = load("inference_weights").main(args)
    assert_provenance(result, "inference_weights", args)
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["split"] == "dev" and result["utterances"] == 20
    assert result["settings"]["precision"] == "fp32"
    assert result["bit_identical_to_reference"] == {"gqa_in_place": True}
    assert all(v > 0 for v in result["utterances_per_second"].values())
    assert result["speed_ratio_vs_reference"]["kv_heads_copied"] == 1.0
    for entry in result["per_corpus"].values():
        assert entry["kv_heads_copied"]["agreement_with_reference"] == 1.0
        assert entry["merged"]["max_abs_score_difference"] > 0  # bf16 merged weights do move the scores


def test_precision_checks_batch_invariance_on_dev_interleaved_and_writes_as_it_goes(
    tiny_model_dir, tmp_path, monkeypatch
):

    scoring_adapter(tiny_model_dir, tmp_path / "adapter")
    dev_only(monkeypatch)
    module = load("precision")
    written = []
    real_write = module.write
    monkeypatch.setattr(
        module, "write", lambda result, out: written.append(result) or real_write(result, out)
    )
    out = tmp_path / "precision.json"
    args = ["--set", f"model.name={tiny_model_dir}", *TINY, "--set", "model.dtype=bf16"]
    args += ["--adapter", str(tmp_path / "adapter"), "--per-dataset", "10", "--batch1-per-dataset", "4"]
    result = module.main([*args, "--chunk", "4", "--out", str(out)])
    assert_provenance(result, "precision", [*args, "--chunk", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert len(written) == 6 and not written[0]["complete"] and result["complete"]  # 3 chunks per corpus
    assert result["split"] == "dev" and set(result["per_corpus"]) == {"meld", "emorynlp"}
    assert result["settings"]["precision"] == "fp32"
    for entry in result["per_corpus"].values():
        assert entry["utterances"] == 10 and entry["batch1_utterances"] == 4
        assert 0 <= entry["weighted_f1"] <= 1
        for key in ("shuffled16_vs_batch16", "batch64_vs_batch16", "batch1_vs_batch16"):
            assert entry[key]["agreement"] == 1.0
            assert entry[key]["max_abs_score_difference"] < 1e-4  # fp32 rounding only
    assert result["utterances_scored_per_way"] == {
        "batch16": 20,
        "shuffled16": 20,
        "batch64": 20,
        "batch1": 8,
    }
    assert all(v > 0 for v in result["utterances_per_second"].values())
    assert result["pooled"]["agreement_across_batches"] == 1.0
    assert result["meets_target"] is True

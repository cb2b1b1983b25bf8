"""benchmarks/gpu_7b.py: the 7B GPU benchmark, run end to end at its --tiny size on CPU."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_7b.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_7b", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_peak_table_and_slug():
    bench = load_benchmark()
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0  # the PCIe card is slower than the SXM one
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert bench.peak_tflops("Some CPU") is None
    assert bench.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_7b_shape_is_llama2_7b():
    """The random model has LLaMA 2-7B's exact parameter count (built on the meta device: no memory)."""
    bench = load_benchmark()
    model = bench.build_random_model(bench.LLAMA2_7B, torch.device("meta"))
    assert sum(p.numel() for p in model.parameters()) == 6_738_415_616
    # FLOPs per token at 256 tokens: 6N dominates, the attention term is ~1%.
    n = 6_738_415_616 - 32000 * 4096
    fpt = bench.flops_per_token(n, 32, 4096, 256)
    assert fpt["model_6n"] == 6 * n + 12 * 32 * 4096 * 256
    assert fpt["lora_4n"] == 4 * n + 12 * 32 * 4096 * 256


@pytest.mark.slow
def test_tiny_run_writes_the_json(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--out-dir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(tmp_path.glob("gpu_7b_tiny_*.json"))
    assert len(files) == 1, proc.stdout
    result = json.loads(files[0].read_text())
    assert f"wrote {files[0]}" in proc.stdout
    assert "bf16 LoRA MFU (6N)" in proc.stdout  # the targets table

    assert result["device"] and result["versions"]["torch"] and result["versions"]["transformers"]
    settings = result["settings"]
    from dialoguellm.config import load_config

    paper = load_config("paper")
    assert (
        settings["lora"]["r"] == paper.lora.r
        and settings["lora"]["target_modules"] == paper.lora.target_modules
    )
    assert settings["micro_batch_size"] == paper.train.micro_batch_size
    assert settings["sequence_tokens"] == paper.prompt.cutoff_len

    dense = result["bf16_lora"]["dense"]
    assert dense["tokens_per_step"] == paper.train.micro_batch_size * paper.prompt.cutoff_len
    assert dense["tokens_per_s"] == pytest.approx(
        dense["tokens_per_step"] / dense["seconds_per_step"], rel=0.01
    )
    assert math.isfinite(dense["loss_last"]) and dense["loss_last"] > 0
    real = result["bf16_lora"]["real_shape"]
    assert real["examples_per_s"] > 0 and real["share_prefix"] is True  # bf16 LoRA: no checkpointing
    # LoRA on q_proj/v_proj only: r * (in + out) per target per layer.
    h, layers = settings["llama_config"]["hidden_size"], settings["llama_config"]["num_hidden_layers"]
    assert result["parameters"]["trainable"] == layers * 2 * paper.lora.r * (h + h)

    if torch.cuda.is_available():
        assert result["qlora"]["peak_gb"] > 0
    else:
        assert "CUDA" in result["qlora"]["skipped"]
        assert any("QLoRA skipped" in note for note in result["notes"])

    scoring = result["scoring"]
    assert scoring["examples"] > 0 and scoring["best_utterances_per_s"] > 0
    proj = result["projection"]
    assert proj["train_examples_per_epoch"] == 9989 + 7551 + 5810
    assert proj["test_utterances"] == 2610 + 984 + 1623
    assert proj["test_sets_seconds"] == pytest.approx(5217 / scoring["best_utterances_per_s"], rel=0.01)
    hours = 23350 * proj["epochs"] * proj["tokens_per_example"] / dense["tokens_per_s"] / 3600
    assert proj["train_hours_dense"] == pytest.approx(hours, rel=0.01)
    assert proj["full_run_hours"] >= proj["train_hours_real_shape"] > 0

    targets = {t["key"]: t for t in result["targets"]}
    assert set(targets) == {"bf16_lora_mfu_6n", "qlora_peak_gb", "full_run_hours", "test_sets_seconds"}
    assert all(t["met"] is None for t in targets.values())  # a tiny run is never judged against 7B targets

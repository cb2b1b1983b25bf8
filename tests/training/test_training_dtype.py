"""train.precision: what training multiplies in. ``auto`` keeps bf16 autocast where the CPU has bf16 units and
multiplies in fp32 elsewhere (a CPU without them runs bf16 products many times slower than fp32), on the same
weight values, and the run records what it used."""

from __future__ import annotations

import json

import pytest
import torch
from tiny import synthetic_corpus, tiny_settings

from dialoguellm.config import config_from_dict
from dialoguellm.model import loading
from dialoguellm.training import loop


@pytest.mark.parametrize(
    "precision, model_dtype, gpu, native, expected",
    [
        ("auto", "bf16", False, True, "bf16"),
        ("auto", "bf16", False, False, "fp32"),
        ("auto", "fp16", False, True, "bf16"),  # a CPU's 16-bit autocast is bf16
        ("auto", "fp16", False, False, "fp32"),
        ("auto", "fp32", False, True, "fp32"),
        ("auto", "fp16", True, False, "fp16"),  # a GPU keeps model.dtype's autocast
        ("auto", "bf16", True, False, "bf16"),
        ("bf16", "bf16", False, False, "bf16"),  # an explicit precision is taken as given
        ("fp32", "bf16", False, True, "fp32"),
        ("fp16", "fp16", True, True, "fp16"),
    ],
)
def test_auto_follows_the_device_and_the_cpus_bf16_units(
    monkeypatch, precision, model_dtype, gpu, native, expected
):
    monkeypatch.setattr(loading, "native_bf16_matmul", lambda: native)
    dtype, why = loading.training_dtype(precision, model_dtype, gpu)
    assert dtype == expected
    assert why.startswith("auto" if precision == "auto" else "train.precision")
    if precision == "auto" and not gpu and model_dtype != "fp32" and not native:
        assert "no bf16 matrix units" in why and torch.backends.cpu.get_cpu_capability() in why


@pytest.mark.parametrize(
    "machine, amx, avx512_bf16, onednn, expected",
    [
        ("x86_64", True, False, False, True),
        ("x86_64", False, True, False, True),
        ("x86_64", False, False, True, False),  # oneDNN's check admits AVX-512 without bf16 units: not on x86
        ("aarch64", False, False, True, True),
        ("aarch64", False, False, False, False),
    ],
)
def test_bf16_units_are_read_from_the_cpu(monkeypatch, machine, amx, avx512_bf16, onednn, expected):
    monkeypatch.setattr(loading.platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert loading.native_bf16_matmul() is expected


def test_an_unknown_precision_is_refused_with_the_key_and_the_values(tiny_model_dir):
    settings = tiny_settings(tiny_model_dir)
    settings["train"]["precision"] = "bf32"
    with pytest.raises(ValueError, match=r"train\.precision is 'bf32'; use auto, bf16, fp16, fp32"):
        config_from_dict(settings, source="test")


def _train(loaded, run_dir, precision: str) -> dict:
    """Four steps of the tiny LLaMA (bf16 weights) with ``train.precision``; the run's metrics.json."""
    settings = tiny_settings(loaded.source, epochs=1, eval_every=4)
    settings["model"]["dtype"] = "bf16"
    settings["train"]["precision"] = precision
    corpus = {"meld": synthetic_corpus("meld", sizes=(16, 2, 2), turns=4, seed=3)}
    loop.train(config_from_dict(settings, source="test"), run_dir, corpus, loaded=loaded, progress=False)
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_auto_without_bf16_units_trains_in_fp32_on_the_same_weights_and_says_so(
    tiny_model_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(loading, "native_bf16_matmul", lambda: False)
    loaded = loading.load_model(tiny_model_dir, dtype="bf16")
    weights = [(p, p.detach().clone()) for p in loaded.model.parameters()]
    auto = _train(loaded, tmp_path / "auto", "auto")
    assert auto["precision"]["train.precision"] == "auto"
    assert auto["precision"]["computed_in"] == "fp32"
    assert "no bf16 matrix units" in auto["precision"]["why"]
    # the caller's base model is bf16 again, value for value (fp32 copies only while training)
    for param, before in weights:
        assert param.dtype == torch.bfloat16 and torch.equal(param, before)
    # the same arithmetic as asking for fp32: the same losses, step by step
    fp32 = _train(loading.load_model(tiny_model_dir, dtype="bf16"), tmp_path / "fp32", "fp32")
    assert auto["precision"]["by_step"] == [
        {"step": 0, "computed_in": "fp32", "why": auto["precision"]["why"]}
    ]
    assert fp32["precision"] == {
        "train.precision": "fp32",
        "computed_in": "fp32",
        "why": "train.precision",
        "by_step": [{"step": 0, "computed_in": "fp32", "why": "train.precision"}],
    }
    assert [s["loss"] for s in fp32["losses"]] == [s["loss"] for s in auto["losses"]]
    # where the CPU has bf16 units, auto is bf16 autocast: other rounding, other losses
    monkeypatch.setattr(loading, "native_bf16_matmul", lambda: True)
    bf16 = _train(loading.load_model(tiny_model_dir, dtype="bf16"), tmp_path / "bf16", "auto")
    assert bf16["precision"]["computed_in"] == "bf16"
    assert [s["loss"] for s in bf16["losses"]] != [s["loss"] for s in auto["losses"]]


@pytest.mark.slow
def test_a_run_resumed_on_a_machine_without_bf16_units_warns_and_records_both(
    tiny_model_dir, tmp_path, monkeypatch, caplog
):
    from dialoguellm.training import checkpoints

    settings = tiny_settings(tiny_model_dir, epochs=2, save_every=2, eval_every=4)  # 8 steps of 4 rows
    settings["model"]["dtype"] = "bf16"
    config = config_from_dict(settings, source="test")
    corpus = {"meld": synthetic_corpus("meld", sizes=(16, 2, 2), turns=4, seed=3)}
    real_save = checkpoints.save_checkpoint

    def interrupted(model, optimizer, state, folder):
        real_save(model, optimizer, state, folder)
        if state["step"] == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loading, "native_bf16_matmul", lambda: True)  # started where bf16 is native
    monkeypatch.setattr(loop, "save_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        loop.train(config, tmp_path / "run", corpus, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    monkeypatch.setattr(loading, "native_bf16_matmul", lambda: False)  # resumed where it is not
    with caplog.at_level("WARNING", logger="dialoguellm.training.loop"):
        loop.train(config, tmp_path / "run", corpus, resume=True, progress=False)
    assert "resumed at step 4 on a machine that multiplies in fp32" in caplog.text
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())["precision"]
    assert record["computed_in"] == "fp32"
    assert [(r["step"], r["computed_in"]) for r in record["by_step"]] == [(0, "bf16"), (4, "fp32")]

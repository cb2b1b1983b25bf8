"""Profiles load, validate once and resolve to the paper's exact settings without loading weights (bad settings:
tests/bad_inputs/test_configs.py)."""

from __future__ import annotations

import yaml

from dialoguellm.config import PROFILES_DIR, describe, load_config, parse_overrides, save_config


def test_paper_profile_is_table_2():
    c = load_config("paper")
    assert c.model.name == "meta-llama/Llama-2-7b-hf"
    assert c.model.quantization == "8bit" and c.model.dtype in ("fp16", "bf16")
    assert c.model.trust_remote_code is False
    assert (c.lora.r, c.lora.alpha, c.lora.dropout) == (4, 16, 0.05)
    assert c.lora.target_modules == ["q_proj", "v_proj"]
    assert c.prompt.style == "plain" and c.prompt.template == "paper"
    assert (c.prompt.k_shot, c.prompt.context_turns, c.prompt.use_video, c.prompt.cutoff_len) == (
        1,
        1,
        True,
        256,
    )
    t = c.train
    assert t.lr == 3e-4 and t.epochs == 10
    assert (t.batch_size, t.micro_batch_size, t.grad_accum) == (128, 8, 16)
    assert t.adam_betas == [0.9, 0.95] and t.weight_decay == 0.1
    assert (t.scheduler, t.min_lr_ratio, t.max_grad_norm) == ("cosine", 0.1, 1.0)
    assert c.eval.mode == "score"


def test_r8_alternative_differs_only_in_rank_and_alpha():
    paper, r8 = load_config("paper").to_dict(), load_config("paper_r8").to_dict()
    assert (r8["lora"]["r"], r8["lora"]["alpha"]) == (8, 64)  # the released code's pair
    r8["lora"]["r"], r8["lora"]["alpha"] = 4, 16
    paper.pop("source"), r8.pop("source")
    assert paper == r8


def test_paper_profiles_as_the_paper_ran_them():
    for name in ("paper", "paper_r8"):
        c = load_config(name)
        assert c.train.warmup_steps == 100  # Table 2 is silent: the released code's 100
        assert c.eval.seeds == [42, 43, 44, 45, 46] and c.train.seed == c.eval.seeds[0]
        assert c.data.datasets == ["meld", "emorynlp", "iemocap"]
        assert c.data.remove_cross_corpus_overlap is True


def test_cpu_profile_uses_embedded_model():
    c = load_config("cpu")
    assert c.model.name == "embedded" and c.model.quantization == "none"
    assert c.data.test_per_dataset == 0  # full test sets


def test_every_cpu_line_is_commented():
    for line in (PROFILES_DIR / "cpu.yaml").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and line.startswith("  "):
            assert "#" in line, f"uncommented setting in cpu.yaml: {line!r}"


def test_overrides_and_round_trip(tmp_path):
    c = load_config(
        "cpu",
        parse_overrides(
            ["train.lr=1e-4", "lora.target_modules=[q_proj, v_proj]", "prompt.context_turns=all"]
        ),
    )
    assert (
        c.train.lr == 1e-4
        and c.lora.target_modules == ["q_proj", "v_proj"]
        and c.prompt.context_turns == "all"
    )
    path = save_config(c, tmp_path / "config.yaml")
    raw = yaml.safe_load(path.read_text())
    raw.pop("source")
    again = load_config(_write(tmp_path / "again.yaml", raw))
    assert again.to_dict() | {"source": None} == c.to_dict() | {"source": None}


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_every_setting_has_help():
    assert all(describe().values())


def test_validate_refuses_nan_in_a_config_built_in_python():
    """Files and --set refuse NaN when read; a Config built in code reaches validate with it."""
    import dataclasses

    import pytest

    from dialoguellm.config import validate

    config = load_config("cpu")
    for key in ("lr", "epochs", "weight_decay", "max_grad_norm"):
        bad = dataclasses.replace(config, train=dataclasses.replace(config.train, **{key: float("nan")}))
        with pytest.raises(ValueError, match=rf"train\.{key}"):
            validate(bad)
    validate(config)


def test_numbers_name_the_commit_and_the_adapter_weights_they_came_from(tmp_path):
    """Issue 32 item 13: a benchmark's header and an evaluation name the git commit and the sha256 of the
    adapter's weights, so two files made from copies of one adapter can be told to agree (and others not)."""
    import hashlib

    from dialoguellm import runs

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "adapter_model.safetensors").write_bytes(b"weights")
    assert runs.adapter_fingerprint(adapter) == hashlib.sha256(b"weights").hexdigest()
    assert runs.adapter_fingerprint(copy) == runs.adapter_fingerprint(adapter)
    assert runs.adapter_fingerprint(tmp_path) is None and runs.adapter_fingerprint(None) is None
    header = runs.benchmark_header("x", [], adapter=str(adapter), split="dev")
    assert header["adapter_sha256"] == runs.adapter_fingerprint(adapter)
    assert header["git_commit"] == runs.environment().get("git_commit")
    assert list(header)[:4] == ["benchmark", "command", "git_commit", "adapter_sha256"]
    assert "adapter_sha256" not in runs.benchmark_header("x", [], model="embedded")

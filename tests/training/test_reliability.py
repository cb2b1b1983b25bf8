"""Reruns are identical and interruptions lose nothing, on the tiny LLaMA: the same seed gives the same
predictions and metrics, and a training process killed with SIGKILL after a checkpoint resumes (``--resume``,
notebook 03's RESUME) and ends where an uninterrupted run ends."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from tiny import save_synthetic_corpus, synthetic_corpus, tiny_settings

from dialoguellm import cli
from dialoguellm.corpora import readers
from dialoguellm.runs import REPO_DIR
from dialoguellm.training import loop

# What a rerun must reproduce; the rest of metrics.json is timing and hardware.
REPRODUCED = ("best", "history", "losses", "steps")


def _reproduced(run_dir) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {key: metrics[key] for key in REPRODUCED}


def _adapter(run_dir) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def compare_runs(a, b) -> dict[str, dict]:
    """benchmarks/determinism.py's comparison of two run folders (the same check it runs on the embedded
    default): ``{output: {"identical": bool, "kind": "results" | "weights" | "other", "detail": str}}``."""
    spec = importlib.util.spec_from_file_location("determinism", REPO_DIR / "benchmarks" / "determinism.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare_runs(a, b)


@pytest.mark.slow
def test_same_seed_gives_identical_predictions_and_metrics(tiny_model_dir, tmp_path):
    # LoRA dropout on, so the check covers the random numbers drawn during training too.
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(tiny_settings(tiny_model_dir, dropout=0.1, epochs=2)))
    corpus = synthetic_corpus("meld", sizes=(4, 2, 2), seed=5)
    for name, seed in (("first", 0), ("again", 0), ("other seed", 1)):
        save_synthetic_corpus(tmp_path / name, corpus)
        args = ["--run-dir", str(tmp_path / name)]
        assert cli.main(["train", "--config", str(config_file), "--set", f"train.seed={seed}", *args]) == 0
        assert cli.main(["evaluate", *args]) == 0
    same = compare_runs(tmp_path / "first", tmp_path / "again")
    assert {"training losses", "adapter weights", "evaluation/test_meld_predictions.csv"} <= set(same)
    assert "evaluation/test_meld_metrics.json" in same and "training/adapter/dev_meld_predictions.csv" in same
    assert not [name for name, r in same.items() if not r["identical"]]
    # Another seed changes the run, so the comparison above is one that can fail.
    other = compare_runs(tmp_path / "first", tmp_path / "other seed")
    assert not other["training losses"]["identical"] and not other["adapter weights"]["identical"]


def _child_train(config_file, run, log):
    argv = [
        sys.executable,
        "-m",
        "dialoguellm.cli",
        "train",
        "--config",
        str(config_file),
        "--run-dir",
        str(run),
    ]
    return subprocess.Popen(argv, cwd=REPO_DIR, stdout=log, stderr=subprocess.STDOUT)


def _step(state_file) -> int:
    """The optimiser step of a checkpoint (0 while there is none, or while it is being replaced)."""
    try:
        return json.loads(state_file.read_text())["step"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_ends_like_an_uninterrupted_run(tiny_model_dir, tmp_path):
    # 64 optimiser steps of 4 prompts, a checkpoint after every step, dev evaluation every 16; dropout on, so
    # the resumed run also needs the random state the checkpoint saved.
    settings = tiny_settings(tiny_model_dir, dropout=0.1, epochs=8, eval_every=16, save_every=1)
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    corpus = synthetic_corpus("meld", sizes=(8, 2, 2), seed=7)
    full, cut = tmp_path / "full", tmp_path / "cut"
    for run in (full, cut):
        save_synthetic_corpus(run, corpus)

    with open(tmp_path / "child.log", "wb") as log:
        child = _child_train(config_file, cut, log)
        state = cut / "training" / "checkpoint" / "state.json"
        deadline = time.monotonic() + 120
        # Killed past the first dev evaluation (step 16), so the checkpoint also carries a best adapter.
        while time.monotonic() < deadline and child.poll() is None and _step(state) < 20:
            time.sleep(0.005)
        assert child.poll() is None, (
            "the child finished (or failed) before the kill: " + (tmp_path / "child.log").read_text()[-2000:]
        )
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    killed_at = _step(state)
    assert 20 <= killed_at < 64 and not (cut / "training" / "metrics.json").exists()

    argv = ["train", "--config", str(config_file), "--run-dir"]
    assert cli.main([*argv, str(cut), "--resume"]) == 0
    assert f"at step {killed_at}" in (cut / "training" / "train.log").read_text()  # resumed, not restarted
    assert cli.main([*argv, str(full)]) == 0

    resumed, uninterrupted = _reproduced(cut / "training"), _reproduced(full / "training")
    assert resumed["steps"] == uninterrupted["steps"] == 64
    assert [h["step"] for h in resumed["history"]] == [h["step"] for h in uninterrupted["history"]]
    for key in ("history", "losses"):
        for a, b in zip(resumed[key], uninterrupted[key], strict=True):
            assert a.keys() == b.keys()
            np.testing.assert_allclose([a[k] for k in a], [b[k] for k in b], rtol=1e-5, atol=1e-6)
    assert resumed["best"]["step"] == uninterrupted["best"]["step"]
    a, b = _adapter(cut / "training"), _adapter(full / "training")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_notebook_03_passes_resume_through():
    cells = json.loads((REPO_DIR / "notebooks" / "03_training.ipynb").read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code"]
    parameters = next(c for c in code if "parameters" in c.get("metadata", {}).get("tags", []))
    declared = {
        t.id: ast.literal_eval(s.value)
        for s in ast.parse("".join(parameters["source"])).body
        for t in s.targets
    }
    assert declared["RESUME"] is True  # an interrupted make reproduce continues by default
    calls = [
        node
        for cell in code
        for node in ast.walk(ast.parse("".join(cell["source"])))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "train"
    ]
    assert len(calls) == 1
    resume = {k.arg: ast.unparse(k.value) for k in calls[0].keywords}.get("resume")
    assert resume == "RESUME", "notebook 03 must pass its RESUME parameter to loop.train(resume=...)"


@pytest.mark.parametrize("flag, expected", [([], False), (["--resume"], True)])
def test_cli_passes_resume_through(monkeypatch, tmp_path, flag, expected):
    seen = {}

    def fake_train(config, run_dir, corpora, descriptions=None, resume=False, **kwargs):
        seen["resume"] = resume
        return loop.TrainResult(run_dir, run_dir / "adapter", {}, [], 0.0)

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(readers, "load_corpora_for", lambda *args, **kwargs: {})
    assert cli.main(["train", "--config", "cpu", "--run-dir", str(tmp_path), *flag]) == 0
    assert seen["resume"] is expected

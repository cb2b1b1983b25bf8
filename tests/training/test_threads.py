"""Threads: with model.num_threads 0 a training run samples the free cores again as it goes and records what
each stretch of steps used (issue 30: one reading at startup once held a whole run to 1 thread of 2)."""

from __future__ import annotations

import json

import torch
from tiny import synthetic_corpus, tiny_settings

from dialoguellm.config import config_from_dict
from dialoguellm.model import loading
from dialoguellm.training import loop


def _run(model_dir, run_dir, num_threads: int) -> list[dict]:
    """Train the tiny LLaMA for 4 steps (dev evaluation at the end only); the run's thread record."""
    settings = tiny_settings(model_dir, epochs=1, eval_every=4)
    settings["model"]["num_threads"] = num_threads
    corpus = {"meld": synthetic_corpus("meld", sizes=(4, 2, 2), turns=4, seed=3)}
    before = torch.get_num_threads()
    try:
        loop.train(config_from_dict(settings, source="test"), run_dir, corpus, progress=False)
    finally:
        torch.set_num_threads(before)
    return json.loads((run_dir / "metrics.json").read_text())["threads"]


def test_training_rechecks_threads_and_records_each_change(tiny_model_dir, tmp_path, monkeypatch):
    readings = iter([1.0] + [0.0] * 100)  # one core busy at startup, idle from the first re-check on
    monkeypatch.setattr(loading, "busy_cores", lambda seconds=0.3: next(readings))
    monkeypatch.setattr(loading.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(loop, "THREAD_RECHECK_STEPS", 2)
    assert _run(tiny_model_dir, tmp_path / "run", 0) == [
        {"step": 0, "stage": "start", "threads": 1},
        {"step": 2, "stage": "training", "threads": 2},
    ]


def test_a_thread_count_the_user_set_is_kept_for_the_whole_run(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "busy_cores", lambda seconds=0.3: 2.0)  # would say 1 thread if asked
    monkeypatch.setattr(loop, "THREAD_RECHECK_STEPS", 1)
    assert _run(tiny_model_dir, tmp_path / "run", 2) == [{"step": 0, "stage": "start", "threads": 2}]


def test_evaluation_takes_threads_per_corpus_and_records_them(tiny_model_dir, tmp_path, monkeypatch):
    from dialoguellm.evaluation import run as evaluation

    settings = tiny_settings(tiny_model_dir)
    settings["model"]["num_threads"] = 0
    settings["data"]["datasets"] = ["meld", "emorynlp"]
    corpora = {
        name: synthetic_corpus(name, sizes=(2, 2, 2), turns=3, seed=i)
        for i, name in enumerate(("meld", "emorynlp"))
    }
    readings = iter([1.0, 1.0, 0.0])  # the stage's start and MELD see a busy core; EmoryNLP an idle machine
    monkeypatch.setattr(loading, "busy_cores", lambda seconds=0.3: next(readings))
    monkeypatch.setattr(loading.os, "cpu_count", lambda: 2)
    before = torch.get_num_threads()
    try:
        summary = evaluation.evaluate_run(
            corpora, tmp_path / "eval", config=config_from_dict(settings, source="test"), split="dev",
            progress=False,
        )  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert summary["threads"] == {"meld": 1, "emorynlp": 2}

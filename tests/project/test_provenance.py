"""Provenance of the committed numbers (issue 32, item 13): the README's headline files come from one run at one
commit; every experiment record names its commit and, when tuned, its adapter's fingerprint; every benchmark
result names its commit and adapter."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "results" / "cpu"
# Folders of results/cpu that hold other runs than the headline's, each with its own record of where it came from.
OTHER_RUNS = ("experiments", "in_progress", "seeds")
RUN_FOLDER = re.compile(r"runs/(\d{8}-\d{6})")


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from ((f"{key}.{k}" if k else key, v) for k, v in _strings(item))
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield "", value


def _headline_files() -> list[Path]:
    return [p for p in sorted(RESULTS.rglob("*.json")) if p.relative_to(RESULTS).parts[0] not in OTHER_RUNS]


def test_the_headline_results_come_from_one_run_at_one_commit():
    runs_named, commits = {}, {}
    for path in _headline_files():
        data = json.loads(path.read_text(encoding="utf-8"))
        for key, text in _strings(data):
            for stamp in RUN_FOLDER.findall(text):
                runs_named.setdefault(stamp, []).append(str(path.relative_to(REPO)))
            if key.endswith("git_commit") and text:
                commits.setdefault(text, []).append(str(path.relative_to(REPO)))
    assert len(runs_named) == 1, f"results/cpu mixes runs: {runs_named}"
    assert len(commits) == 1, f"results/cpu mixes commits: {commits}"
    # the run the pipeline record names is the run the evaluation scored
    pipeline = json.loads((RESULTS / "pipeline.json").read_text())
    summary = json.loads((RESULTS / "evaluation" / "summary.json").read_text())
    assert RUN_FOLDER.search(pipeline["run_dir"]).group(1) == RUN_FOLDER.search(summary["adapter"]).group(1)


@pytest.mark.skipif(
    not (RESULTS / "seeds").is_dir(), reason="no seed spread committed (dialoguellm export-seeds)"
)
def test_the_seed_spread_names_one_commit_and_each_seeds_adapter():
    summary = json.loads((RESULTS / "seeds" / "seeds_summary.json").read_text())
    commits = set()
    for seed in summary["seeds"]:
        environment = json.loads(
            (RESULTS / "seeds" / f"training_seed{seed}" / "environment.json").read_text()
        )
        commits.add(environment["git_commit"])
        scored = json.loads((RESULTS / "seeds" / f"evaluation_seed{seed}" / "summary.json").read_text())
        assert re.fullmatch(r"[0-9a-f]{64}", scored.get("adapter_sha256") or ""), (
            f"seed {seed}: no adapter sha256"
        )
    assert len(commits) == 1 and re.fullmatch(r"[0-9a-f]{40}", commits.pop() or ""), "the seeds mix commits"


def _experiment_folders() -> list[Path]:
    return sorted(p.parent for p in RESULTS.glob("*/*/experiment.json"))


@pytest.mark.parametrize("folder", _experiment_folders(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_experiment_record_names_its_commit_and_adapter(folder):
    arms = json.loads((folder / "experiment.json").read_text())["arms"]
    for path in sorted((folder / "units").glob("*.json")):
        unit = json.loads(path.read_text())
        identity = unit["identity"]
        assert re.fullmatch(r"[0-9a-f]{40}", identity["commit"] or ""), f"{path}: no commit"
        # a tuned language-model arm names its adapter; a baseline arm (kind tfidf_lr) trains none
        if unit["seed"] is not None and arms[unit["arm"]].get("kind", "llm") == "llm":
            assert re.fullmatch(r"[0-9a-f]{64}", identity.get("adapter_sha256") or ""), (
                f"{path}: no adapter sha256"
            )


def test_every_benchmark_result_names_its_commit_and_adapter():
    files = sorted((REPO / "benchmarks" / "results").glob("*.json"))
    assert files, "no benchmark results committed"
    for path in files:
        data = json.loads(path.read_text())
        assert re.fullmatch(r"[0-9a-f]{40}", data.get("git_commit") or ""), f"{path}: no git_commit"
        if data.get("adapter"):
            assert re.fullmatch(r"[0-9a-f]{64}", data.get("adapter_sha256") or ""), (
                f"{path}: no adapter_sha256"
            )

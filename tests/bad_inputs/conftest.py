"""What every bad-input case shares: a run folder holding earlier stages' results (``finished_run``) and a
snapshot of its files (``written``) to check that a refused input left them exactly as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from unchanged import Written


@pytest.fixture
def finished_run(tmp_path) -> Path:
    """A run folder as earlier stages left it: curated MELD data, a finished training folder (config,
    metrics, checkpoint marker, adapter), evaluation results, a description cache and stage markers."""
    from tiny import save_synthetic_corpus, synthetic_corpus

    from dialoguellm.config import load_config, save_config
    from dialoguellm.corpora import video
    from dialoguellm.io import write_json

    run = tmp_path / "run"
    save_synthetic_corpus(run, synthetic_corpus("meld"))
    save_config(load_config("cpu"), run / "training" / "config.yaml")
    write_json(run / "training" / "metrics.json", {"best": {"dev_weighted_f1": 0.5}})
    write_json(run / "training" / "checkpoint" / "state.json", {"step": 2})
    (run / "training" / "adapter").mkdir()
    (run / "training" / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    write_json(run / "evaluation" / "test_meld_metrics.json", {"weighted_f1": 0.5})
    video.DescriptionCache(run).append(
        {"key": "test/dia0_utt0|import|x|p", "split": "test", "clip_id": "dia0_utt0", "status": "ok"}
        | {"describer": "import", "model": "x", "description": "a man waves"}
    )
    for stage in ("01_data_curation", "02_video_descriptions", "03_training"):
        write_json(run / "stages" / f"{stage}.json", {"notebook": f"{stage}.ipynb", "fingerprint": "x"})
        (run / "notebooks").mkdir(exist_ok=True)
        (run / "notebooks" / f"{stage}.ipynb").write_text("{}")
    return run


@pytest.fixture
def written(finished_run) -> Written:
    """The finished run's files, to check after a refused input."""
    return Written(finished_run)

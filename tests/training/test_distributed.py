"""Training under 2 CPU processes (torchrun, gloo): both ranks train, the global batch is the config's,
only rank 0 writes, and the adapter equals a single-process run with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_worker import TRAIN, config, corpus
from safetensors.torch import load_file

from dialoguellm.training import loop

TESTS = Path(__file__).resolve().parents[1]  # tests/, where ddp_worker.py lives


@pytest.mark.slow
def test_two_processes_match_one(tiny_model_dir, tmp_path):
    ddp_run, logs = tmp_path / "ddp", tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(TESTS / "ddp_worker.py"),
        tiny_model_dir,
        str(ddp_run),
        str(logs),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    ranks = [json.loads((logs / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    # process 0 keeps the single-process stream; process 1 draws its own dropout masks
    assert ranks[0]["torch_seed"] == TRAIN["seed"]
    assert ranks[1]["torch_seed"] == loop.process_seed(TRAIN["seed"], 1, 0) != TRAIN["seed"]
    cfg = config(tiny_model_dir)
    steps = json.loads((ddp_run / "metrics.json").read_text())["steps"]
    for r in ranks:  # each process runs grad_accum / 2 micro-batches per step
        assert len(r["micro_batches"]) == steps * cfg.train.grad_accum // 2
    per_step = [
        sum(r["micro_batches"][s * 2 : s * 2 + 2]) for s in range(steps) for r in ranks
    ]  # examples per process and step
    global_batch = [per_step[2 * s] + per_step[2 * s + 1] for s in range(steps)]
    assert max(global_batch) == cfg.train.batch_size  # full steps hold the configured global batch
    # only rank 0 wrote: one loop.log, one metrics.json, one adapter; rank 1 reports no best adapter
    assert ranks[1]["best"] is None and ranks[0]["best"] is not None
    assert (ddp_run / "adapter" / "adapter_model.safetensors").is_file()
    assert len(list(ddp_run.rglob("train.log"))) == 1

    single = loop.train(cfg, tmp_path / "single", corpus(), progress=False)
    a = load_file(str(ddp_run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(single.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=1e-3)
    ddp_losses = [e["loss"] for e in json.loads((ddp_run / "metrics.json").read_text())["losses"]]
    one_losses = [e["loss"] for e in json.loads((single.run_dir / "metrics.json").read_text())["losses"]]
    assert ddp_losses == pytest.approx(one_losses, rel=1e-4, abs=1e-5)

"""One process of the multi-process training test (tests/training/test_distributed.py), started by torchrun.

Trains the tiny model on a synthetic corpus with the library's own ``loop.train`` and records, outside
the run folder, which micro-batches this process ran. Usage: ``ddp_worker.py MODEL_DIR RUN_DIR LOG_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from tiny import synthetic_corpus

from dialoguellm.config import config_from_dict
from dialoguellm.training import loop
from dialoguellm.training import loss as training_loss

TRAIN = {
    "lr": 5e-3,
    "epochs": 2,
    "batch_size": 8,
    "micro_batch_size": 2,
    "grad_accum": 4,
    "weight_decay": 0.0,
    "warmup_steps": 0,
    "eval_every": 0,
    "seed": 0,
}


def config(model_dir: str):
    return config_from_dict(
        {
            "model": {"name": model_dir, "dtype": "fp32", "num_threads": 1},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "prompt": {"k_shot": 1, "context_turns": 1, "use_video": False},
            "data": {"datasets": ["meld"]},
            "train": TRAIN,
            "eval": {"batch_size": 8},
        },
        source="ddp test",
    )


def corpus():
    return {"meld": synthetic_corpus("meld", sizes=(4, 2, 2), turns=4, seed=5)}


def main(model_dir: str, run_dir: str, log_dir: str) -> None:
    seen: list[int] = []
    forward = training_loss.AnswerLoss.forward

    def counting(self, batches, weights):
        seen.extend(len(prompts) for prompts, _ in batches)
        return forward(self, batches, weights)

    training_loss.AnswerLoss.forward = counting
    result = loop.train(config(model_dir), run_dir, corpus(), progress=False)
    rank = int(os.environ.get("RANK", "0"))
    record = {
        "rank": rank,
        "world": loop.distributed_world(),
        "micro_batches": seen,
        "best": result.best,
        "torch_seed": torch.initial_seed(),  # the last seed this process set: its dropout stream
    }
    Path(log_dir, f"rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:4])

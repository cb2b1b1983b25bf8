"""Does lm-evaluation-harness, run on this package's ERC tasks, predict what this package's scorer predicts?

    dialoguellm benchmark harness_agreement --model embedded --limit 24

Runs the exact command ``dialoguellm lm-eval-command --split dev`` prints (lm-eval 0.4, ``hf`` backend, fp32)
on the first ``--limit`` dev utterances of MELD and EmoryNLP (never test), then this package's label scoring
of the same utterances in fp32 ranked by summed log-likelihood (``dialoguellm.interop.harness.package_scores``),
and writes per corpus the share of equal predictions and the largest log-likelihood difference once each
row's constant is taken out (lm-eval also scores the prompt's trailing newline; ``harness.agreement``).
tests/interop/test_harness.py checks the same on a tiny random model; this measures the embedded one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dialoguellm import runs
from dialoguellm.interop import harness
from dialoguellm.io import write_json

CORPORA = ("meld", "emorynlp")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--limit", type=int, default=24, help="dev utterances per corpus")
    parser.add_argument("--out", default="benchmarks/results/harness_agreement_cpu.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        command = harness.lm_eval_command(
            args.model, CORPORA, split="dev", limit=args.limit, output_path=scratch, batch_size=8
        )
        started = time.perf_counter()
        env = {**os.environ, "HF_DATASETS_CACHE": str(Path(scratch) / "hf_cache")}
        subprocess.run([sys.executable, "-m", "lm_eval", *command[1:]], check=True, env=env)
        lm_eval_seconds = time.perf_counter() - started
        results = {}
        for corpus in CORPORA:
            from_harness = harness.read_samples(scratch, f"{corpus}_erc_dev")
            results[corpus] = harness.agreement(
                from_harness, harness.package_scores(args.model, corpus, "dev", args.limit)
            )
    record = {
        **runs.benchmark_header("harness_agreement", argv, model=args.model),
        "lm_eval_command": harness.command_line(command).replace(scratch, "<scratch>"),
        "split": "dev",
        "limit_per_corpus": args.limit,
        "lm_eval_seconds": round(lm_eval_seconds, 1),
        "results": results,
    }
    write_json(args.out, record)
    print(record)


if __name__ == "__main__":
    main()

"""Determinism on the embedded default: the same small train + evaluate run twice, each in a fresh process.

    dialoguellm benchmark determinism                    # SmolLM2-135M, the cpu profile + SMALL (~3 min, 2 cores)
    dialoguellm benchmark determinism --model PATH --set train.max_steps=2   # another model or settings

Each run is ``dialoguellm train`` then ``dialoguellm evaluate`` (the CLI, so exactly what a user reruns) into
its own run folder, with the same profile, overrides and seed. Printed: one line per output (training losses
and dev history, the selected adapter's weights, the dev predictions it was selected on, each corpus's test
predictions and metrics, the settings files) saying whether the two runs are identical, bit for bit, with the
largest difference where they are not, then a verdict. Exit status 0 when predictions, metrics and adapter
weights are identical. The JSON lands in benchmarks/results/determinism.json.

Torch threads are fixed (``--threads``, default 1): the profile's automatic choice follows the machine's load,
and a different thread count may sum floating-point numbers in another order.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dialoguellm import runs
from dialoguellm.io import METRICS_SUFFIX, PER_CLASS_SUFFIX, PREDICTIONS_SUFFIX

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# Small enough for a few minutes on 2 CPU cores, large enough to train, select on dev and score every label.
SMALL = [
    "data.train_per_dataset=64",
    "data.dev_per_dataset=16",
    "eval.calibration_per_dataset=48",  # the label biases' own dev sample, fitted after training
    "data.test_per_dataset=32",
    "train.batch_size=8",
    "train.grad_accum=1",
    "train.max_steps=4",
    "train.warmup_steps=1",
    "train.eval_every=2",
    "train.save_every=2",
]
# What a rerun must reproduce in metrics.json (the rest is timing and throughput).
TRAINING_KEYS = ("best", "history", "losses", "steps")


def run_once(run_dir: Path, config: str, overrides: list[str]) -> float:
    """``dialoguellm train`` then ``dialoguellm evaluate`` into ``run_dir``, each a fresh process; seconds.
    Their output goes to ``run_dir/cli.log`` (its end is printed if a command fails)."""
    sets = [arg for pair in overrides for arg in ("--set", pair)]
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = {**os.environ, "DIALOGUELLM_PROGRESS": "text"}
    with open(run_dir / "cli.log", "wb") as log:
        for argv in (
            ["train", "--config", config, *sets, "--run-dir", str(run_dir)],
            ["evaluate", "--run-dir", str(run_dir)],
        ):
            command = [sys.executable, "-m", "dialoguellm.cli", *argv]
            if subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode:
                sys.exit(f"{' '.join(command)} failed:\n" + (run_dir / "cli.log").read_text()[-3000:])
    return time.perf_counter() - start


def _max_difference(a, b) -> float | None:
    """Largest absolute difference of two equally shaped numeric things (None: not comparable)."""
    try:
        x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return None
    return float(np.max(np.abs(x - y))) if x.shape == y.shape and x.size else None


def _json_detail(a: Path, b: Path) -> str:
    """Which top-level keys of two JSON objects differ, and how."""
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    if not (isinstance(ja, dict) and isinstance(jb, dict)):
        return ""
    parts = []
    for key in sorted(set(ja) | set(jb)):
        x, y = ja.get(key), jb.get(key)
        if x == y:
            continue
        if isinstance(x, list) and isinstance(y, list) and sorted(map(str, x)) == sorted(map(str, y)):
            parts.append(f"{key}: the same items in another order")
        else:
            parts.append(f"{key}: {x!r} vs {y!r}"[:160])
    return "; ".join(parts)


def kind_of(name: str) -> str:
    """``results`` (what the paper's tables are made of), ``weights``, or ``other`` (settings files)."""
    if name == "adapter weights":
        return "weights"
    if name.startswith("training ") or name.endswith((PREDICTIONS_SUFFIX, METRICS_SUFFIX, PER_CLASS_SUFFIX)):
        return "results"
    return "results" if Path(name).name in ("calibration.json", "calibration_dev.json") else "other"


def compare_runs(a: Path, b: Path) -> dict[str, dict]:
    """``{output: {"identical": bool, "kind": ..., "detail": str}}`` for two run folders of the same settings."""
    from safetensors.numpy import load_file

    out: dict[str, dict] = {}

    def note(name: str, identical: bool, detail: str = "") -> None:
        out[name] = {"identical": identical, "kind": kind_of(name), "detail": detail}

    ma, mb = (json.loads((r / "training" / "metrics.json").read_text()) for r in (a, b))
    for key in TRAINING_KEYS:
        diff = ""
        if key == "losses" and len(ma[key]) == len(mb[key]):
            d = _max_difference([x["loss"] for x in ma[key]], [x["loss"] for x in mb[key]])
            diff = f"max |loss difference| {d:.3g}" if d else ""
        note(f"training {key}", ma[key] == mb[key], diff)
    wa, wb = (load_file(str(r / "training" / "adapter" / "adapter_model.safetensors")) for r in (a, b))
    same_keys = wa.keys() == wb.keys()
    identical = same_keys and all(np.array_equal(wa[k], wb[k]) for k in wa)
    worst = max((_max_difference(wa[k], wb[k]) or 0.0 for k in wa), default=0.0) if same_keys else None
    note("adapter weights", identical, "" if identical else f"max |weight difference| {worst:.3g}")
    files = sorted(
        p.relative_to(a)
        for folder in ("training/adapter", "evaluation")
        for p in (a / folder).glob("*")
        if p.suffix in (".csv", ".json") and p.name != "summary.json"
    )
    for rel in files:
        fa, fb = a / rel, b / rel
        if not fb.is_file():
            note(str(rel), False, "missing in the second run")
            continue
        identical = fa.read_bytes() == fb.read_bytes()
        detail = ""
        if not identical and rel.suffix == ".csv":
            da, db = pd.read_csv(fa), pd.read_csv(fb)
            numeric = [c for c in da.columns if c in db.columns and da[c].dtype.kind == "f"]
            changed = int((da.get("pred_id") != db.get("pred_id")).sum()) if "pred_id" in da else 0
            d = _max_difference(da[numeric], db[numeric]) if numeric and len(da) == len(db) else None
            detail = f"{changed} predictions differ" + (f", max |score difference| {d:.3g}" if d else "")
        elif not identical and rel.suffix == ".json":
            detail = _json_detail(fa, fb)
        note(str(rel), identical, detail)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="cpu", help="profile or YAML path (default: cpu)")
    parser.add_argument(
        "--model", default=None, help="model.name instead of the profile's (e.g. a tiny model)"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="more overrides")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in both runs (0: automatic)")
    parser.add_argument("--work-dir", default=None, help="where the two run folders go (default: a temp dir)")
    parser.add_argument("--out", default=str(RESULTS / "determinism.json"), help="JSON result file")
    args = parser.parse_args(argv)

    overrides = [*SMALL, f"model.num_threads={args.threads}", *args.set]
    if args.model:
        overrides.append(f"model.name={args.model}")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="determinism-"))
    seconds = [run_once(work / name, args.config, overrides) for name in ("first", "second")]
    result = compare_runs(work / "first", work / "second")
    verdict = {
        kind: all(r["identical"] for r in result.values() if r["kind"] == kind)
        for kind in ("results", "weights", "other")
    }
    identical = verdict["results"] and verdict["weights"]
    print(f"\nDeterminism: {args.config} + {' '.join(overrides)}")
    print(f"two runs of train + evaluate, {seconds[0]:.0f} s and {seconds[1]:.0f} s, folders in {work}")
    for name, r in result.items():
        print(f"  {'identical' if r['identical'] else 'DIFFERENT'}  {name}  {r['detail']}".rstrip())
    n = {kind: sum(r["kind"] == kind for r in result.values()) for kind in verdict}
    print(
        f"=> predictions and metrics ({n['results']} outputs): {'identical' if verdict['results'] else 'DIFFER'}; "
        f"adapter weights: {'identical' if verdict['weights'] else 'DIFFER'}; "
        f"other files ({n['other']}): {'identical' if verdict['other'] else 'differ (see above)'}"
    )
    env = json.loads((work / "first" / "training" / "environment.json").read_text())
    record = {
        **runs.benchmark_header("determinism", argv, model=args.model or "the profile's"),
        "config": args.config,
        "overrides": overrides,
        "seconds": [round(s, 1) for s in seconds],
        "machine": env.get("hardware"),
        "identical": identical,
        "verdict": verdict,
        "outputs": result,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())

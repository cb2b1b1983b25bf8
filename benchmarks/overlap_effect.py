"""What the cross-corpus overlap does to test scores: the CPU profile trained with and without its removal.

    dialoguellm benchmark overlap_effect                # CPU profile, two trainings (~25 min each on 2 idle cores)
    dialoguellm benchmark overlap_effect --with-removal-from runs/RUN   # reuse a finished run as that arm
    dialoguellm benchmark overlap_effect --tiny --model PATH --out /tmp/x   # smoke test on a tiny model

MELD and EmoryNLP are cut from the same *Friends* episodes (``dialoguellm.corpora.overlap``). Two arms are
trained with the same profile and seed, ``data.remove_cross_corpus_overlap`` true (the default) and false,
each by ``dialoguellm train`` then ``dialoguellm evaluate`` on the test split (the CLI, in fresh processes;
an interrupted arm resumes from its checkpoint, a finished one is not run again). Each corpus's test split
is then cut in two: the **overlapping** utterances (>= 6 words, found exactly or nearly in another corpus's
*training* split: what a jointly trained model may have seen with its label) and **the rest**. For each arm,
corpus and part: test weighted F1 with its 95% dialogue-bootstrap interval (``dialoguellm.stats``), and the
paired difference without - with removal on the same utterances. If the leak inflates scores, the
difference is positive on the overlapping part and near zero on the rest.

``--with-removal-from RUN_DIR`` saves one training: the ``with_removal`` arm is a copy of RUN_DIR's
training/ and evaluation/ (e.g. the run of ``make reproduce``), made only when RUN_DIR's training/config.yaml
resolves to the very settings the arm would train with (every key but ``source``; a model folder compared by
its resolved path), else an error names the keys that differ. The JSON's ``arms`` says where each arm came from.

This reads the test split on purpose: it measures a data leak, and nothing is chosen from it. The JSON lands
in benchmarks/results/overlap_effect_cpu.json (``--out`` for another place; ``--tiny`` never writes there).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
ARMS = {"with_removal": True, "without_removal": False}
# A few steps on small samples: enough to exercise every part of the measurement in a minute.
TINY = [
    "data.train_per_dataset=16",
    "data.dev_per_dataset=8",
    "eval.calibration_per_dataset=8",
    "data.test_per_dataset=48",
    "train.batch_size=8",
    "train.grad_accum=1",
    "train.max_steps=2",
    "train.warmup_steps=0",
    "train.save_every=1",
    "model.num_threads=1",
    "prompt.k_shot=0",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="cpu", help="profile both arms train with (default: cpu)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override")
    parser.add_argument(
        "--run-dir", default=str(REPO / "runs" / "overlap_effect"), help="the arms' run folders"
    )
    parser.add_argument(
        "--out", default=None, help="result JSON (default: benchmarks/results/overlap_effect_cpu.json)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="smoke test: a few steps on small samples (--model)"
    )
    parser.add_argument("--model", default=None, help="model.name for both arms (a tiny model with --tiny)")
    parser.add_argument(
        "--with-removal-from",
        default=None,
        metavar="RUN_DIR",
        help="copy this finished run (training/ and evaluation/ on test) as the with_removal arm instead of "
        "training it; refused unless its settings equal the arm's",
    )
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples per interval")
    args = parser.parse_args(argv)
    if args.tiny and not args.model:
        parser.error("--tiny needs --model PATH (a small model folder, e.g. the tests' tiny LLaMA)")
    if args.tiny and not args.out:
        parser.error("--tiny needs --out: a smoke test never overwrites benchmarks/results")
    return args


def run_arm(run_dir: Path, config: str, overrides: list[str]) -> float:
    """Train (resuming an interrupted run) and evaluate on test, each in a fresh process; seconds spent.
    A finished step (metrics.json, the test summary) is not run again."""
    from dialoguellm.runs import RunLayout, TrainingLayout

    run_dir.mkdir(parents=True, exist_ok=True)
    training = TrainingLayout(RunLayout(run_dir).training)
    sets = [arg for pair in overrides for arg in ("--set", pair)]
    steps = []
    if not training.metrics.is_file():
        resume = ["--resume"] if training.checkpoint.exists() else []
        steps.append(["train", "--config", config, *sets, "--run-dir", str(run_dir), *resume])
    if not (RunLayout(run_dir).evaluation() / "summary.json").is_file():
        steps.append(["evaluate", "--run-dir", str(run_dir), "--split", "test"])
    start = time.perf_counter()
    env = {**os.environ, "DIALOGUELLM_PROGRESS": "text", "PYTHONPATH": str(REPO)}
    with open(run_dir / "cli.log", "ab") as log:
        for argv in steps:
            code = subprocess.run(
                [sys.executable, "-m", "dialoguellm.cli", *argv], cwd=REPO, stdout=log, stderr=log, env=env
            ).returncode
            if code:
                tail = (run_dir / "cli.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"dialoguellm {argv[0]} failed in {run_dir} (exit {code}):\n{tail}")
    return time.perf_counter() - start


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """A resolved config dict without what names a place rather than a setting: ``source`` goes, and a model
    given as a folder is compared by its resolved path (the same folder written two ways is one model)."""
    out = {k: v for k, v in settings.items() if k != "source"}
    name = str(out.get("model", {}).get("name", ""))
    if name and Path(name).expanduser().exists():
        out["model"] = {**out["model"], "name": str(Path(name).expanduser().resolve())}
    return out


def differing_settings(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{"section.key": (ours, theirs)}`` for every setting that differs between two resolved configs."""
    ours, theirs = _comparable(ours), _comparable(theirs)
    diff = {}
    for section in sorted(set(ours) | set(theirs)):
        a, b = ours.get(section, {}), theirs.get(section, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key, "<absent>") != b.get(key, "<absent>"):
                diff[f"{section}.{key}"] = (a.get(key, "<absent>"), b.get(key, "<absent>"))
    return diff


def copy_arm(source: Path, arm_dir: Path, settings: dict[str, Any], datasets: list[str]) -> None:
    """Copy a finished run's training/ and evaluation/ into ``arm_dir`` (recorded in copied_from.json), after
    checking that its saved settings resolve to ``settings`` and that it holds test predictions per corpus.
    An arm already copied from the same run (by this function or by hand) is left as it is and marked;
    nothing is copied when a check fails."""
    from dialoguellm.runs import RunLayout, TrainingLayout, load_run_config

    source = source.expanduser().resolve()
    training = TrainingLayout(RunLayout(source).training)
    evaluation = RunLayout(source).evaluation()
    needed = [training.config, training.metrics, evaluation / "summary.json"] + [
        evaluation / f"test_{name}_predictions.csv" for name in datasets
    ]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SystemExit(
            f"--with-removal-from {source}: not a finished, test-evaluated run; missing {', '.join(missing)} "
            "(train it with `dialoguellm train`, then `dialoguellm evaluate --run-dir RUN --split test`)."
        )
    split = json.loads((evaluation / "summary.json").read_text()).get("split")
    if split != "test":
        raise SystemExit(
            f"--with-removal-from {source}: {evaluation / 'summary.json'} is an evaluation on {split!r}, "
            "not test; run `dialoguellm evaluate --run-dir RUN --split test`."
        )
    saved = load_run_config(training.root).to_dict()
    diff = differing_settings(settings, saved)
    if diff:
        listed = "; ".join(f"{key}: arm {a!r}, run {b!r}" for key, a, b in ((k, *v) for k, v in diff.items()))
        raise SystemExit(
            f"--with-removal-from {source}: {training.config} differs from the with_removal arm's settings "
            f"in {len(diff)} key(s): {listed}. Train the arm (drop --with-removal-from) or pass the run's "
            "profile and --set overrides."
        )
    marker = arm_dir / "copied_from.json"
    if marker.is_file() and json.loads(marker.read_text()).get("run_dir") == str(source):
        return
    if arm_dir.exists() and any(arm_dir.iterdir()):
        # A copy made by hand (same settings, metrics and test predictions, byte for byte) is recorded as
        # a copy; anything else is a different run and is not overwritten.
        if not holds_copy_of(arm_dir, source, [p.relative_to(source) for p in needed]):
            raise SystemExit(
                f"{arm_dir} already holds a run that is not a copy of {source}; remove it or pass another "
                "--run-dir."
            )
    else:
        arm_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(training.root, RunLayout(arm_dir).training)
        shutil.copytree(evaluation, RunLayout(arm_dir).evaluation())
    marker.write_text(json.dumps({"run_dir": str(source)}, indent=2) + "\n", encoding="utf-8")


def holds_copy_of(arm_dir: Path, source: Path, files: list[Path]) -> bool:
    """Whether ``arm_dir`` holds each of ``files`` (paths relative to a run folder) exactly as ``source``."""
    return all(
        (arm_dir / f).is_file() and (arm_dir / f).read_bytes() == (source / f).read_bytes() for f in files
    )


def arm_origin(arm_dir: Path) -> dict[str, Any]:
    """Where an arm's results came from: trained here, or copied from a finished run (copied_from.json)."""
    marker = arm_dir / "copied_from.json"
    if marker.is_file():
        return {"origin": "copied", "from": json.loads(marker.read_text())["run_dir"]}
    return {"origin": "trained", "run_dir": str(arm_dir)}


def overlapping_test_ids(datasets: list[str]) -> dict[str, set[str]]:
    """Test utterance ids of each corpus found (exact or near) in another corpus's training split, on the
    full splits of the vendored corpora (the same files the arms read)."""
    from dialoguellm.corpora import overlap, readers

    corpora = readers.load_corpora(datasets)
    return overlap.leaked_evaluation_utterances(corpora, "test")


def part_scores(frame: Any, resamples: int) -> dict[str, Any]:
    """Weighted F1 (``estimate``) with its dialogue-bootstrap interval (None where fewer than 2 dialogues)."""
    from dialoguellm import stats

    if frame["dialogue_id" if "dialogue_id" in frame else "example_id"].nunique() < 2:
        return {"n": int(len(frame)), "estimate": None, "note": "fewer than 2 dialogues: no interval"}
    interval = stats.frame_interval(frame, "weighted_f1", n_resamples=resamples)
    return {"n": interval.n, "dialogues": interval.n_groups, **_rounded(interval.as_dict())}


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def compare(run_root: Path, datasets: list[str], resamples: int) -> dict[str, Any]:
    """Per corpus and part (overlapping, rest, all): each arm's weighted F1 and the paired difference."""
    from dialoguellm import stats
    from dialoguellm.io import read_predictions
    from dialoguellm.runs import RunLayout

    leaked = overlapping_test_ids(datasets)
    out: dict[str, Any] = {}
    for name in datasets:
        frames = {
            arm: read_predictions(RunLayout(run_root / arm).evaluation() / f"test_{name}_predictions.csv")
            for arm in ARMS
        }
        out[name] = {}
        for part in ("overlapping", "rest", "all"):
            chosen = {}
            for arm, frame in frames.items():
                inside = frame["example_id"].isin(leaked.get(name, set()))
                chosen[arm] = (
                    frame[inside] if part == "overlapping" else frame[~inside] if part == "rest" else frame
                )
            entry = {arm: part_scores(frame, resamples) for arm, frame in chosen.items()}
            if all(entry[arm]["estimate"] is not None for arm in ARMS):
                diff = stats.frame_paired_difference(
                    chosen["without_removal"], chosen["with_removal"], "weighted_f1", n_resamples=resamples
                )
                entry["without_minus_with"] = _rounded(diff.as_dict())
            out[name][part] = entry
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from dialoguellm import runs
    from dialoguellm.config import load_config, parse_overrides

    overrides = (TINY if args.tiny else []) + list(args.set)
    if args.model:
        overrides.append(f"model.name={args.model}")
    config = load_config(args.config, parse_overrides(overrides))
    run_root = Path(args.run_dir)
    seconds = {}
    if args.with_removal_from:
        with_removal = load_config(
            args.config, parse_overrides([*overrides, "data.remove_cross_corpus_overlap=true"])
        )
        copy_arm(
            Path(args.with_removal_from),
            run_root / "with_removal",
            with_removal.to_dict(),
            list(with_removal.data.datasets),
        )
    for arm, remove in ARMS.items():
        seconds[arm] = run_arm(
            run_root / arm, args.config, [*overrides, f"data.remove_cross_corpus_overlap={remove}"]
        )
        print(f"{arm}: this call spent {seconds[arm]:.0f} s ({run_root / arm})", flush=True)
    metrics = json.loads((run_root / "with_removal" / "training" / "metrics.json").read_text())
    result = {
        "command": runs.benchmark_command("overlap_effect", argv),
        "config": args.config,
        "overrides": overrides,
        "run_dir": str(run_root),
        "arms": {arm: arm_origin(run_root / arm) for arm in ARMS},
        "removed_from_training": metrics.get("cross_corpus_overlap_removed"),
        "seconds_this_call": {k: round(v, 1) for k, v in seconds.items()},
        # What each arm's training took when it ran (a rerun that finds an arm finished spends ~0 s on it).
        "training_seconds": {
            arm: json.loads((run_root / arm / "training" / "metrics.json").read_text()).get("seconds")
            for arm in ARMS
        },
        "note": "test split read to measure a leak; no setting is chosen from it. Overlapping = test utterances "
        "of >= 6 words found exactly or nearly in another corpus's full training split.",
        "results": compare(run_root, list(config.data.datasets), args.resamples),
    }
    path = Path(args.out) if args.out else RESULTS / "overlap_effect_cpu.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for name, parts in result["results"].items():
        for part, entry in parts.items():
            line = ", ".join(f"{arm} {entry[arm]['estimate']}" for arm in ARMS)
            print(f"{name} {part}: weighted F1 {line}", flush=True)
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()

"""The report of a finished run: its headline numbers as Markdown, read from what its notebooks recorded
and from its saved prediction files.

``dialoguellm summary [--run-dir runs/latest]`` prints it; the README's results table is
``headline_table`` of the committed run outputs in ``results/`` (``export_results`` copies them there), and a
test recomputes it from those files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm import stats
from dialoguellm.evaluation.run import paper_results
from dialoguellm.experiments.stage import (
    CURVE_EXPERIMENT,
    OVERLAP_EXPERIMENT,
    PITFALLS_EXPERIMENT,
    PROBES_EXPERIMENT,
    SCORING_EXPERIMENT,
)
from dialoguellm.experiments.stage import RETRAINED_EXPERIMENT as ABLATIONS_EXPERIMENT
from dialoguellm.io import read_json, read_predictions, split_predictions
from dialoguellm.labels import normalised_label_names
from dialoguellm.runs import ExperimentLayout, RunLayout


def _records(run_dir: Path) -> dict[str, dict[str, Any]]:
    folder = RunLayout(run_dir).records
    return {path.stem: read_json(path) for path in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines + [""]


def run_report(run_dir: str | os.PathLike) -> str:
    """Markdown tables of a run's stages, test results, baselines, prompt probes, retrained ablations, error
    analysis and SECEU."""
    run = RunLayout(Path(run_dir))
    records = _records(run.root)
    if not records:
        raise FileNotFoundError(f"No records in {run.records}: run `make reproduce` first.")
    out: list[str] = [f"Run folder: `{run.root.resolve().name}`", ""]
    if run.evaluation_files("test"):
        out += [headline_table(run.root), ""]
    if (run.root / SEEDS_DIR / "predictions.csv").is_file():
        out += [seeds_table(run.root), ""]
    has_ablations = run.experiment(ABLATIONS_EXPERIMENT).plan.is_file()
    if has_ablations:
        out += [ablations_table(run.root), ""]
    out += _stages(run)
    out += _evaluation(records.get("03_training", {}), records.get("04_evaluation", {}))
    out += _baselines(records.get("05_ablations", {}))
    out += _probes(run, records.get("05_ablations", {}))
    if not has_ablations:  # the results file itself is shown above
        out += _retrained(records.get("05_ablations", {}))
    out += _error_analysis(records.get("06_error_analysis", {}))
    out += _seceu(records.get("07_emotional_intelligence", {}))
    return "\n".join(out)


def _stages(run: RunLayout) -> list[str]:
    """Minutes per finished stage (every finished stage leaves a marker, also when the run was continued in
    several invocations) and the peak memory of the last invocation."""
    out: list[str] = []
    stages = [read_json(path) for path in sorted(run.stages.glob("*.json"))]
    if stages:
        rows = [[s["notebook"], f"{s['seconds'] / 60:.1f}"] for s in stages]
        out += _table(["stage", "minutes"], rows)
        out += [f"Total {sum(s['seconds'] for s in stages) / 60:.1f} min over {len(stages)} stages.", ""]
    if run.pipeline_report.is_file() and "peak_memory_gb" in (report := read_json(run.pipeline_report)):
        out += [
            f"Peak memory of a notebook kernel in the last invocation: {report['peak_memory_gb']} GB.",
            "",
        ]
    return out


def _evaluation(training: dict[str, Any], evaluation: dict[str, Any]) -> list[str]:
    """The model, hardware and times, and the test results per corpus (notebooks 03 and 04)."""
    if not evaluation:
        return []
    out = [
        f"Model: {evaluation.get('model')}; hardware: {evaluation.get('hardware')}; "
        f"{training.get('steps', '?')} training steps in {training.get('train_minutes', '?')} min; "
        f"evaluation ({evaluation.get('mode')}, {evaluation.get('split')}) in {evaluation.get('eval_minutes')} min.",
        "",
    ]
    rows = [
        [
            name,
            evaluation["n"][name],
            _pct(evaluation["accuracy"][name]),
            _pct(evaluation["weighted_f1"][name]),
            _pct(evaluation["macro_f1"][name]),
            _pct((evaluation.get("weighted_f1_uncalibrated") or {}).get(name)),
            _pct((evaluation.get("zero_shot_weighted_f1") or {}).get(name)),
        ]
        for name in evaluation.get("accuracy", {})
    ]
    header = ["test set", "n", "accuracy", "weighted F1", "macro F1", "weighted F1, uncalibrated"]
    return out + _table([*header, "weighted F1, untuned model"], rows)


def _baselines(record: dict[str, Any]) -> list[str]:
    """The baselines on the test sets (notebook 05; values in % already)."""
    rows = [
        [key.rsplit("/", 1)[0], f"{v['accuracy']:.1f}", f"{v['weighted_f1']:.1f}"]
        for key, v in record.get("baselines", {}).items()
        if key.endswith("/test")
    ]
    if not rows:
        return []
    return ["Baselines on the same test sets:", ""] + _table(
        ["corpus / baseline", "accuracy", "weighted F1"], rows
    )


def _retrained(record: dict[str, Any]) -> list[str]:
    """The retrained ablations notebook 05 recorded (fractions; an adapter per arm and seed): each arm's
    weighted F1 over seeds, its difference from the base arm and the paper's value, printed in percent."""
    retrained = record.get("retrained_ablations") or {}
    if not retrained.get("arms"):
        return []
    out = [f"Retrained ablations (an adapter per arm and seed; {retrained.get('source')}):", ""]
    rows = []
    for key, v in retrained["arms"].items():
        sd = "" if v.get("weighted_f1_sd") is None else f" ± {100 * v['weighted_f1_sd']:.1f}"
        diff = "-"
        if v.get("delta_weighted_f1") is not None:
            diff = (
                f"{_signed(v['delta_weighted_f1'])} [{_signed(v['delta_low'])}, {_signed(v['delta_high'])}]"
            )
        rows.append([key, v["runs"], f"{_pct(v['weighted_f1'])}{sd}", diff, _pct(v.get("paper_weighted_f1"))])
    header = ["arm / corpus", "runs", "weighted F1 (mean ± sd)", "minus base [95% CI]", "paper (LLaMA 2-7B)"]
    return out + _table(header, rows)


def _probes(run: RunLayout, record: dict[str, Any]) -> list[str]:
    """The prompt probes: the run's own ``probes_cpu`` records as ``experiment_table`` renders them, else
    which records notebook 05 showed (the repository's committed ones), else nothing."""
    own = run.experiment(PROBES_EXPERIMENT)
    if own.plan.is_file():
        return [experiment_table(own.root), ""]
    shown = record.get("probes") or {}
    if shown.get("status") != "shown":
        return []
    return [
        f"Prompt probes: notebook 05 showed the records in {shown['source']} "
        f"(`dialoguellm experiment report {PROBES_EXPERIMENT}` prints their table).",
        "",
    ]


def _error_analysis(analysis: dict[str, Any]) -> list[str]:
    """The neutral share before and after the prior correction, and the corrected scores (notebook 06)."""
    if not analysis.get("neutral_share"):
        return []
    rows = [
        [name, _pct(s["true"]), _pct(s["predicted"]), _pct(s.get("corrected"))]
        for name, s in analysis["neutral_share"].items()
    ]
    out = ["Neutral share on test (%):", ""] + _table(
        ["corpus", "true", "predicted", "prior-corrected"], rows
    )
    rows = [
        [key, _pct(v["accuracy"]), _pct(v["weighted_f1"])] for key, v in analysis["prior_correction"].items()
    ]
    return out + _table(["corpus / predictions", "accuracy", "weighted F1"], rows)


def _seceu(seceu: dict[str, Any]) -> list[str]:
    """SECEU scores per model (notebook 07), or why there are none."""
    if seceu.get("status") == "scored":
        rows = [[k, r["items"], r["seceu"], r["eq"], r["pattern_r"]] for k, r in seceu["results"].items()]
        return [f"SECEU ({seceu['mode']} mode):", ""] + _table(
            ["model", "items", "SECEU", "EQ", "pattern r"], rows
        )
    return [f"SECEU: {seceu.get('status')}", ""] if seceu else []


# ------------------------------------------------------------------------------------ the headline table

PAPER_HEADLINE = "DialogueLLM, 1-shot (headline)"
# The paper's rows the headline table shows beside ours (resources/paper_results.csv name -> shown as).
PAPER_ROWS = {
    PAPER_HEADLINE: "DialogueLLM, LLaMA 2-7B, 1-shot",
    "DialogueLLM without LoRA": "DialogueLLM without LoRA",
    "LLaMA 2-7B, no emotion tuning": "LLaMA 2-7B, no emotion tuning",
}
FLOORS = {"majority": "floor: majority class", "tfidf_lr": "floor: TF-IDF + LR"}
RAW = "ours, raw argmax"
CALIBRATED = "ours + dev-fitted biases"
UNTUNED = "the same model untuned (no adapter)"
CORPUS_ORDER = ("meld", "iemocap", "emorynlp")


def headline_systems(run_dir: str | os.PathLike) -> dict[str, dict[str, pd.DataFrame]]:
    """Test predictions of a run, per system and corpus: ours raw, ours with the dev-fitted biases (when
    evaluation applied them), the model without its adapter (notebook 04 with ``ZERO_SHOT``) and the floors
    of notebook 05. Each frame's ``pred_id`` is that system's."""
    run = RunLayout(Path(run_dir))
    systems: dict[str, dict[str, pd.DataFrame]] = {RAW: {}, CALIBRATED: {}, UNTUNED: {}}
    for corpus, path in run.evaluation_files("test").items():
        frame = read_predictions(path)
        if "pred_id_raw" in frame:
            systems[CALIBRATED][corpus] = frame
            systems[RAW][corpus] = frame.assign(pred_id=frame["pred_id_raw"])
        else:
            systems[RAW][corpus] = frame
    for corpus, path in run.evaluation_files("test", adapter=False).items():
        if corpus in systems[RAW]:
            systems[UNTUNED][corpus] = read_predictions(path)
    for name, title in FLOORS.items():
        for corpus in systems[RAW]:
            path = run.baseline_predictions(corpus, name, "test")
            if path.is_file():
                # the floors predict the whole test set; compare them on the utterances ours were scored on
                frame = read_predictions(path)
                ours = set(systems[RAW][corpus]["example_id"].astype(str))
                systems.setdefault(title, {})[corpus] = frame[frame["example_id"].astype(str).isin(ours)]
    return {name: frames for name, frames in systems.items() if frames}


def headline_table(run_dir: str | os.PathLike, n_resamples: int = stats.DEFAULT_RESAMPLES) -> str:
    """Markdown: accuracy and weighted F1 on each test set with 95% dialogue-bootstrap intervals for ours
    and the floors, the paper's 7B numbers beside them, and paired differences in weighted F1 between our
    predictions and the strongest floor (same utterances; "no measurable difference" where the interval
    covers 0). Deterministic (fixed bootstrap seed)."""
    systems = headline_systems(run_dir)
    if not systems:
        raise FileNotFoundError(
            f"No test predictions in {RunLayout(Path(run_dir)).evaluation()}: run notebook 04 first."
        )
    corpora = sorted(systems[RAW], key=lambda c: (CORPUS_ORDER + (c,)).index(c))
    header = ["system"] + [f"{c} {m}" for c in corpora for m in ("accuracy", "weighted F1")]
    rows = []
    for name, frames in systems.items():
        row = [name]
        for corpus in corpora:
            for metric in ("accuracy", "weighted_f1"):
                frame = frames.get(corpus)
                row.append(
                    "-"
                    if frame is None
                    else str(stats.frame_interval(frame, metric, f"{name}/{corpus}", n_resamples=n_resamples))
                )
        rows.append(row)
    paper = paper_results()
    for system, title in PAPER_ROWS.items():
        published = paper[paper["system"] == system].set_index("dataset")
        row = [f"the paper: {title} (published, no interval)"]
        for corpus in corpora:
            for metric in ("accuracy", "weighted_f1"):
                row.append(f"{published.loc[corpus, metric]:.1f}" if corpus in published.index else "-")
        rows.append(row)
    out = [
        "Test sets, percent, with 95% intervals from a bootstrap over dialogues (one training seed: the interval "
        "covers the test dialogues, not the seed). Raw argmax is the paper's way of predicting; the biases are "
        "fitted on dev (not in the paper).",
        "",
    ] + _table(header, rows)
    pairs = [(RAW, FLOORS["tfidf_lr"]), (CALIBRATED, FLOORS["tfidf_lr"]), (CALIBRATED, RAW), (RAW, UNTUNED)]
    rows = []
    for a, b in pairs:
        for corpus in corpora:
            if corpus in systems.get(a, {}) and corpus in systems.get(b, {}):
                cells = [
                    _diff(
                        stats.frame_paired_difference(
                            systems[a][corpus], systems[b][corpus], metric, (a, b), n_resamples=n_resamples
                        ),
                        a,
                        b,
                    )
                    for metric in ("accuracy", "weighted_f1")
                ]
                rows.append([f"{a} - {b}", corpus, *cells])
    if rows:
        out += ["Paired differences (same utterances; percent points, 95% interval):", ""]
        out += _table(["comparison", "test set", "accuracy", "weighted F1"], rows)
    return "\n".join(out).rstrip()


def _diff(diff: stats.PairedDifference, a: str, b: str) -> str:
    """``+5.9 [+3.5, +8.3]``, then the verdict with the systems named (``stats.named_verdict``)."""
    verdict = stats.named_verdict(diff.verdict, a, b)
    return f"{100 * diff.difference:+.1f} [{100 * diff.low:+.1f}, {100 * diff.high:+.1f}]: {verdict}"


# The small outputs of a run that the README's numbers rest on (copied by ``export_results``): every
# prediction, metric and record file, the resolved config and the environment, and the small inputs of the
# figures (``make figures`` redraws them from results/): no weights, no corpora.
RESULT_FILES = (
    "pipeline.json",
    "records/*.json",
    "data/overlap.csv",
    "descriptions/descriptions.jsonl",
    "stages/*.json",
    "training/config.yaml",
    "training/metrics.json",
    "training/environment.json",
    "training/data_report.json",
    "training/adapter/calibration*.json",
    "training/adapter/dev_*",
    "evaluation/*",
    "baselines/*",
    "analysis/*",
    "seceu/*.json",
    "seceu/*.csv",
)


# Folders of a results copy that other commands write (``make ablations``, ``export_seeds``): kept when a run
# is exported over the copy.
SEEDS_DIR = "seeds"
EXPERIMENTS_DIR = "experiments"  # RunLayout.experiment(name): dialoguellm experiment run --run-dir
KEPT_ON_EXPORT = (EXPERIMENTS_DIR, SEEDS_DIR)


def export_results(run_dir: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Copy a finished run's small outputs (``RESULT_FILES``) to ``out``, keeping the run folder's layout,
    so ``headline_table(out)`` and ``run_report(out)`` work on the copy. Replaces ``out`` whole, except the
    folders other commands wrote there (``KEPT_ON_EXPORT``: the retrained ablations, the seeds)."""
    run = Path(run_dir).resolve()
    if not RunLayout(run).evaluation().is_dir():
        raise FileNotFoundError(f"{run} has no evaluation/ folder: run `make reproduce` to the end first.")
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    written = []
    for pattern in RESULT_FILES:
        for path in sorted(run.glob(pattern)):
            if path.is_file():
                target = staging / path.relative_to(run)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
                written.append(out / path.relative_to(run))
    for name in KEPT_ON_EXPORT:
        if (out / name).exists():
            (out / name).rename(staging / name)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return written


# ------------------------------------------------------------------------------------------------ seeds

# What the seeds table needs of each test prediction (the label scores stay in the run folder).
SEED_COLUMNS = ("example_id", "dialogue_id", "dataset", "gold_id", "gold", "pred_id_raw", "pred_id")


def export_seeds(run_dir: str | os.PathLike, out: str | os.PathLike) -> list[Path]:
    """Copy what ``dialoguellm train --all-seeds`` and ``dialoguellm evaluate --all-seeds --split test`` wrote
    in ``run_dir`` to ``out`` (``results/cpu/seeds``): ``seeds_summary.json``, each seed's training
    ``config.yaml``, ``metrics.json`` and ``environment.json`` (as ``training_seed<S>/``), each seed's
    evaluation ``summary.json`` (as ``evaluation_seed<S>/``: the adapter's sha256, the scoring settings), and one
    ``predictions.csv`` with a row per seed and test utterance (``SEED_COLUMNS``; ``pred_id_raw`` is the raw
    argmax, ``pred_id`` the prediction with the dev-fitted biases). Replaces ``out`` whole."""
    run = Path(run_dir)
    evaluation = RunLayout(run).evaluation()
    summary_path = evaluation / "seeds_summary.json"
    if not summary_path.is_file():
        raise FileNotFoundError(
            f"{summary_path} is missing: run `dialoguellm train --all-seeds --run-dir {run}` and then "
            f"`dialoguellm evaluate --run-dir {run} --all-seeds --split test` first."
        )
    summary = read_json(summary_path)
    if summary.get("split") != "test":
        raise ValueError(f"{summary_path}: split {summary.get('split')!r}; export the test evaluation.")
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    frames = []
    for seed in summary["seeds"]:
        paths = list(split_predictions(evaluation / f"seed{seed}", "test").values())
        if not paths:
            raise FileNotFoundError(
                f"{evaluation / f'seed{seed}'} has no test predictions; rerun the evaluation."
            )
        for path in paths:
            frame = read_predictions(path)
            if "pred_id_raw" not in frame:  # evaluated without the biases: the prediction is the raw argmax
                frame["pred_id_raw"] = frame["pred_id"]
            frame["dialogue_id"] = stats.frame_dialogues(frame, str(path))
            frames.append(frame[list(SEED_COLUMNS)].assign(seed=seed))
        for name in ("config.yaml", "metrics.json", "environment.json"):
            source = run / f"training_seed{seed}" / name
            if source.is_file():
                (staging / source.parent.name).mkdir(exist_ok=True)
                shutil.copy2(source, staging / source.parent.name / name)
        scored = evaluation / f"seed{seed}" / "summary.json"  # the adapter's sha256 and the scoring settings
        if scored.is_file():
            (staging / f"evaluation_seed{seed}").mkdir(exist_ok=True)
            shutil.copy2(scored, staging / f"evaluation_seed{seed}" / "summary.json")
    table = pd.concat(frames, ignore_index=True)
    table[["seed", *SEED_COLUMNS]].to_csv(staging / "predictions.csv", index=False)
    shutil.copy2(summary_path, staging / "seeds_summary.json")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return sorted(p for p in out.rglob("*") if p.is_file())


def seeds_table(results_dir: str | os.PathLike, n_resamples: int = stats.DEFAULT_RESAMPLES) -> str:
    """Markdown: weighted F1 on each test set for every seed (each with its 95% dialogue-bootstrap interval)
    and the mean and sd over seeds, raw and with the dev-fitted biases, from ``<results_dir>/seeds``."""
    path = Path(results_dir) / SEEDS_DIR / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"No {path}: run `dialoguellm export-seeds` first.")
    table = read_predictions(path)
    seeds = list(dict.fromkeys(table["seed"].tolist()))
    corpora = sorted(set(table["dataset"]), key=lambda c: (CORPUS_ORDER + (c,)).index(c))
    header = ["test set", "system", *[f"seed {s}" for s in seeds], "mean ± sd over seeds",
              "mean [95% CI, seeds and dialogues]"]  # fmt: skip
    rows = []
    for corpus in corpora:
        part = table[table["dataset"] == corpus]
        first = part[part["seed"] == seeds[0]]
        for system, column in ((RAW, "pred_id_raw"), (CALIBRATED, "pred_id")):
            cells, values, preds = [], [], []
            for seed in seeds:
                frame = part[part["seed"] == seed]
                if list(frame["example_id"]) != list(first["example_id"]):
                    raise ValueError(
                        f"{path}: seed {seed} is not scored on the utterances of seed {seeds[0]} ({corpus})."
                    )
                interval = stats.frame_interval(
                    frame.assign(pred_id=frame[column]), "weighted_f1", f"{path} seed {seed}/{corpus}",
                    n_resamples=n_resamples,
                )  # fmt: skip
                cells.append(str(interval))
                values.append(100 * interval.estimate)
                preds.append(frame[column].to_numpy())
            sd = float(pd.Series(values).std(ddof=1)) if len(values) > 1 else 0.0
            both = stats.seed_dialogue_bootstrap(
                first["gold_id"].to_numpy(), preds, normalised_label_names(corpus), first["dialogue_id"].to_numpy(),
                n_resamples=n_resamples,
            )  # fmt: skip
            rows.append([corpus, system, *cells, f"{sum(values) / len(values):.1f} ± {sd:.1f}",
                         stats.format_interval(both.estimate, both.low, both.high)])  # fmt: skip
    out = [
        f"Weighted F1 of the same profile trained with {len(seeds)} seeds (percent): each seed with its 95% "
        "interval from a bootstrap over test dialogues; the mean over seeds with the sample standard deviation, "
        "and with a 95% interval that resamples the seeds, then the test dialogues (every source of variation "
        "of a rerun: the training seed and the test sample):",
        "",
    ]
    return "\n".join(out + _table(header, rows)).rstrip()


# --------------------------------------------------------------------------------- retrained ablations


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}"


def ablations_table(
    results_dir: str | os.PathLike,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    experiment: str = ABLATIONS_EXPERIMENT,
) -> str:
    """Markdown: each arm's weighted F1 (mean over seeds with its 95% interval), its difference from the
    baseline arm (the difference of the arm means, with its 95% interval), the per-seed differences, the
    verdict and the paper's value for the same question, from the experiment's records in
    ``<results_dir>/experiments/<experiment>`` (``experiments.summary.summary_table``; percent here only)."""
    return experiment_table(RunLayout(Path(results_dir)).experiment(experiment).root, n_resamples)


def experiment_table(folder: str | os.PathLike, n_resamples: int = stats.DEFAULT_RESAMPLES) -> str:
    """Markdown of one experiment folder's records (``ablations_table``; notebook 05 and
    ``dialoguellm experiment report`` show it as well): the one renderer of an experiment's table."""
    from dialoguellm.experiments import summary as experiment_summary

    if read_json(ExperimentLayout(Path(folder)).plan).get("sizes"):
        return learning_curve_table(folder, n_resamples)
    table = experiment_summary.summary_table(folder, ["weighted_f1"], n_resamples=n_resamples)
    plan = read_json(ExperimentLayout(Path(folder)).plan)
    if any(set(arm) & {"reuses", "against", "score_on", "descriptions"} for arm in plan["arms"].values()):
        return "\n\n".join(t for t in (_variants_table(table, plan), _corrections(folder, n_resamples)) if t)
    rows = []
    for _, r in table.iterrows():
        seeds = len(r["seeds"]) if r["tuned"] else "once (trains nothing)"
        sd = "" if pd.isna(r["weighted_f1_sd"]) else f", sd {100 * r['weighted_f1_sd']:.1f}"
        own = stats.format_interval(r["weighted_f1"], r["weighted_f1_low"], r["weighted_f1_high"]) + sd
        if pd.isna(r["delta_weighted_f1"]):
            diff, per_seed, verdict = "-", "-", "-"
        else:
            diff = f"{_signed(r['delta_weighted_f1'])} [{_signed(r['delta_weighted_f1_low'])}, {_signed(r['delta_weighted_f1_high'])}]"
            per_seed = ", ".join(_signed(v) for v in r["delta_weighted_f1_per_seed"]) or "-"
            verdict = stats.named_verdict(r["delta_weighted_f1_verdict"], "arm", "base")
        paper = r["paper_note"] or "-"  # e.g. "the paper finds z = 2 best but gives no number"
        if pd.notna(r["paper_weighted_f1"]):
            paper = f"{r['paper_weighted_f1']:.1f} ({r['paper_delta_weighted_f1']:+.1f})"
        rows.append([r["label"], r["dataset"], seeds, own, diff, per_seed, verdict, paper])
    header = [
        "arm", "test set", "seeds", "weighted F1, mean [95% CI]", "minus base [95% CI]", "minus base, per seed",
        "verdict", "paper, LLaMA 2-7B (minus its 1-shot)",
    ]  # fmt: skip
    n = int(table["n"].max()) if len(table) else 0
    out = [
        f"{plan.get('description') or plan['experiment']} An adapter per arm and seed, each scored on the same "
        f"{n} test utterances per "
        'corpus (weighted F1, percent). "minus base" is the difference of the arm means over seeds (seed s '
        "of an arm paired with seed s of the base arm; an untuned arm, scored once, against the base arm's "
        "mean); every 95% interval resamples the training seeds, then the test dialogues (an untuned arm's "
        "own interval only the dialogues):",
        "",
    ]
    return "\n".join(out + _table(header, rows) + _overlap_effect(folder, n_resamples)).rstrip()


def learning_curve_table(
    folder: str | os.PathLike, n_resamples: int = stats.DEFAULT_RESAMPLES, table: pd.DataFrame | None = None
) -> str:
    """Markdown of a learning curve's records (``experiments.summary.curve_table``; ``experiment_table``,
    notebook 09 and ``dialoguellm experiment report`` show it): per corpus, arm and training size the weighted
    F1 (mean over seeds), its difference from the baseline arm at the same size and its gain over the previous
    size, each with its 95% interval over seeds and test dialogues (percent here only). ``table``: a
    ``curve_table`` of ``folder`` already computed (weighted F1 at least), not recomputed."""
    from dialoguellm.experiments import summary as experiment_summary

    if table is None:  # notebook 09 passes the table it drew the figure from
        table = experiment_summary.curve_table(folder, ["weighted_f1"], n_resamples=n_resamples)
    baseline = read_json(ExperimentLayout(Path(folder)).plan)["baseline"]
    label = dict(zip(table["arm"], table["label"], strict=True)).get(baseline, baseline)

    def interval(r: pd.Series, column: str) -> str:
        if pd.isna(r[column]):
            return "-"
        return f"{_signed(r[column])} [{_signed(r[f'{column}_low'])}, {_signed(r[f'{column}_high'])}]"

    rows = []
    corpora = list(dict.fromkeys(table["dataset"]))  # per corpus, its arms in the plan's order
    for _, r in table.sort_values("dataset", key=lambda c: c.map(corpora.index), kind="stable").iterrows():
        once = pd.isna(r["size"])
        rows.append([
            r["dataset"], r["label"], "-" if once else r["size"],
            "-" if pd.isna(r["train_utterances"]) else f"{r['train_utterances']:,.0f}",
            "once (trains nothing)" if once else len(r["seeds"]),
            stats.format_interval(r["weighted_f1"], r["weighted_f1_low"], r["weighted_f1_high"]),
            interval(r, "delta_weighted_f1"),
            stats.named_verdict(r["delta_weighted_f1_verdict"], "arm", label) if r["delta_weighted_f1_verdict"] else "-",
            interval(r, "gain_weighted_f1"),
        ])  # fmt: skip
    header = ["test set", "arm", "size", "trained utterances", "seeds", "weighted F1, mean [95% CI]",
              f"minus {label} [95% CI]", "verdict", "gain over the previous size [95% CI]"]  # fmt: skip
    n = int(table["n"].max()) if len(table) else 0
    intro = (
        f"Learning curve: an adapter per size and seed, each scored on the same {n} test utterances per corpus "
        "(weighted F1, percent). For one seed the training draws are nested (each size holds the smaller ones); "
        f'"minus {label}" pairs seed s of an arm with seed s of {label} at the same size (the same training '
        'rows); "gain" is an arm\'s mean minus its mean at the previous size over the seeds both have. Every 95% '
        "interval resamples the training seeds, then the test dialogues (with one seed, the dialogues only):"
    )
    return "\n".join([intro, "", *_table(header, rows)]).rstrip()


GAIN_WORDS = {"A higher": "a measurable gain", "B higher": "a measurable loss"}


def _size_words(size: str) -> str:
    """A curve's size in a sentence: ``all`` is the whole training split, a number counts utterances."""
    return "the whole training split" if size == "all" else f"{size} utterances"


def learning_curve_summary(
    folder: str | os.PathLike, n_resamples: int = stats.DEFAULT_RESAMPLES, table: pd.DataFrame | None = None
) -> str:
    """Per corpus and tuned arm, the two things a user with a new corpus asks of a learning curve (the README's
    ``learning_curve`` block): from which training size on the arm stays above the baseline arm (every
    larger size's paired interval above 0), and what the last step of the curve adds (``gain`` at the
    largest size, with its interval and what it covers). ``table``: a ``curve_table`` already computed."""
    from dialoguellm.experiments import summary as experiment_summary

    if table is None:
        table = experiment_summary.curve_table(folder, ["weighted_f1"], n_resamples=n_resamples)
    baseline = read_json(ExperimentLayout(Path(folder)).plan)["baseline"]
    label = dict(zip(table["arm"], table["label"], strict=True)).get(baseline, baseline)
    sentences = []
    for dataset in dict.fromkeys(table["dataset"]):
        mine = table[
            (table["dataset"] == dataset)
            & table["tuned"]
            & (table["arm"] != baseline)
            & table["size"].notna()
        ]
        for arm in dict.fromkeys(mine["arm"]):
            rows = [r for _, r in mine[mine["arm"] == arm].iterrows()]
            above = [r["delta_weighted_f1_verdict"] == "A higher" for r in rows]
            start = next((i for i in range(len(rows)) if all(above[i:])), None)
            if start is not None:
                r = rows[start]
                delta = (
                    f"{_signed(r['delta_weighted_f1'])} [{_signed(r['delta_weighted_f1_low'])}, "
                    f"{_signed(r['delta_weighted_f1_high'])}] points"
                )
                if start == len(rows) - 1 and start > 0:  # the largest size only
                    passes = f"above {label} only at the largest size, {_size_words(r['size'])} ({delta})"
                else:
                    passes = f"above {label} from {_size_words(r['size'])} on ({delta} there)"
            elif any(above):
                sizes = ", ".join(str(r["size"]) for r, a in zip(rows, above, strict=True) if a)
                passes = f"above {label} at {sizes} utterances, but not at every larger size"
            else:
                passes = f"at no size above {label} (up to {_size_words(rows[-1]['size'])})"
            last = rows[-1]
            if len(rows) > 1 and pd.notna(last["gain_weighted_f1"]):
                gain = (
                    f"from {rows[-2]['size']} to {last['size']} it gains {_signed(last['gain_weighted_f1'])} "
                    f"[{_signed(last['gain_weighted_f1_low'])}, {_signed(last['gain_weighted_f1_high'])}] "
                    f"({GAIN_WORDS.get(last['gain_weighted_f1_verdict'], stats.NO_DIFFERENCE)}; "
                    f"{len(last['seeds'])} seed{'s' if len(last['seeds']) != 1 else ''}, interval over "
                    f"{last['gain_weighted_f1_covers']})"
                )
            else:
                gain = "one size only: no slope"
            sentences.append(f"- {dataset}: {last['label']} is {passes}; {gain}.")
    return "\n".join(sentences)


def _variants_table(table: pd.DataFrame, plan: dict[str, Any]) -> str:
    """``experiment_table`` of an experiment with scoring variants (arms that score another arm's adapter,
    on part of the test sample or against another arm than the baseline, e.g. ``probes_cpu``): each row
    says what it is compared with and on how many utterances."""
    labels = {name: arm["label"] for name, arm in plan["arms"].items()}
    rows = []
    for _, r in table.iterrows():
        seeds = len(r["seeds"]) if r["tuned"] else "once"
        own = stats.format_interval(r["weighted_f1"], r["weighted_f1_low"], r["weighted_f1_high"])
        against = r["against"] or plan["baseline"]
        if pd.isna(r["delta_weighted_f1"]):
            diff, compared, per_seed, verdict = "-", "-", "-", "-"
        else:
            diff = f"{_signed(r['delta_weighted_f1'])} [{_signed(r['delta_weighted_f1_low'])}, {_signed(r['delta_weighted_f1_high'])}]"
            compared = f"{labels.get(against, against)} (on {int(r['n_compared'])})"
            per_seed = ", ".join(_signed(v) for v in r["delta_weighted_f1_per_seed"]) or "-"
            verdict = stats.named_verdict(r["delta_weighted_f1_verdict"], "arm", "compared arm")
        rows.append([r["label"], r["dataset"], int(r["n"]), seeds, own, compared, diff, per_seed, verdict])
    header = ["arm", "set", "n", "seeds", "weighted F1, mean [95% CI]", "compared with (on n)",
              "difference [95% CI]", "per seed", "verdict"]  # fmt: skip
    out = [
        f"{plan['experiment']} ({plan['samples']['split']} sample; weighted F1, percent): {plan.get('description', '')} "
        "A scoring variant scores, seed by seed, the adapter another arm trained, and trains nothing. A "
        "difference is the arm's mean over seeds minus the compared arm's, on the utterances both were scored "
        "on; every 95% interval resamples the training seeds, then the dialogues.",
        "",
    ]
    return "\n".join(out + _table(header, rows)).rstrip()


def _corrections(folder: str | os.PathLike, n_resamples: int) -> str:
    """The corrections an experiment's plan names (``experiments.summary.corrections_table``), or ''."""
    from dialoguellm.experiments import summary as experiment_summary

    table = experiment_summary.corrections_table(folder, n_resamples=n_resamples)
    if table.empty:
        return ""

    def diff(r: pd.Series, part: str) -> str:
        if pd.isna(r[f"delta_{part}"]):
            return "-"
        return f"{_signed(r[f'delta_{part}'])} [{_signed(r[f'delta_{part}_low'])}, {_signed(r[f'delta_{part}_high'])}]"

    rows = [
        [r["label"], r["dataset"], r["correction"],
         stats.format_interval(r["weighted_f1"], r["weighted_f1_low"], r["weighted_f1_high"]),
         f"{diff(r, 'correction')} vs {r['reference']}" if r["reference"] else "-",
         f"{diff(r, 'arm')} vs {r['against']}" if r["against"] else "-"]
        for _, r in table.iterrows()
    ]  # fmt: skip
    header = ["arm", "set", "correction", "weighted F1 [95% CI]", "minus the reference correction [95% CI]",
              "minus the compared arm, same correction [95% CI]"]  # fmt: skip
    intro = (
        "Corrections of the label scores fitted on the scored sample itself, cross-fitted over "
        f"{experiment_summary.CORRECTION_FOLDS} folds of its dialogues (each fold corrected by a fit on the "
        "others; weighted F1, percent; intervals resample the training seeds, then the dialogues):"
    )
    return "\n".join([intro, "", *_table(header, rows)])


def _overlap_effect(folder: str | os.PathLike, n_resamples: int) -> list[str]:
    """The difference in differences of an experiment planned with ``samples.include_overlap`` (else [])."""
    from dialoguellm.experiments import summary as experiment_summary

    effect = experiment_summary.overlap_effect(folder, n_resamples=n_resamples)
    if effect.empty:
        return []

    def interval(r: pd.Series, part: str) -> str:
        if pd.isna(r.get(f"{part}_delta", float("nan"))):
            return "-"
        return f"{_signed(r[f'{part}_delta'])} [{_signed(r[f'{part}_low'])}, {_signed(r[f'{part}_high'])}]"

    rows = [
        [r["label"], r["dataset"], f"{r['overlapping']} / {r['rest']}", interval(r, "overlapping"),
         interval(r, "rest"), f"{_signed(r['did'])} [{_signed(r['did_low'])}, {_signed(r['did_high'])}]",
         stats.named_verdict(r["did_verdict"], "larger on overlapping lines", "larger on the rest")]
        for _, r in effect.iterrows()
    ]  # fmt: skip
    header = ["arm", "test set", "overlapping / other lines", "minus base, overlapping lines", "minus base, the rest",
              "difference in differences [95% CI]", "verdict"]  # fmt: skip
    intro = ("Effect on the test lines that overlap another corpus's training split against the rest (weighted "
             "F1, percent; intervals resample the training seeds, then the test dialogues):")  # fmt: skip
    return [intro, "", *_table(header, rows)]


# ---------------------------------------------------------------------------------- field pitfalls


def _pitfalls_records(
    results_dir: str | os.PathLike, n_resamples: int, experiment: str
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, int]]:
    """The pitfalls table (``experiments.pitfalls.pitfall_table``), the plan and the test utterances per corpus
    of ``<results_dir>/experiments/<experiment>`` or of the experiment folder ``results_dir`` itself."""
    from dialoguellm.experiments import pitfalls as field

    folder = Path(results_dir)
    if not (folder / "experiment.json").is_file():
        folder = RunLayout(folder).experiment(experiment).root
    plan = read_json(ExperimentLayout(folder).plan)
    n = {d: len(t["example_id"]) for d, t in plan["test"].items()}
    return field.pitfall_table(folder, n_resamples=n_resamples), plan, n


def pitfalls_table(
    results_dir: str | os.PathLike,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    experiment: str = PITFALLS_EXPERIMENT,
) -> str:
    """Markdown: each practice of the field (docs/PITFALLS.md) on each corpus, where it occurs, its effect
    on weighted F1 against the package's way on the same utterances with its 95% interval, and whether it
    inflates or deflates the number, from ``<results_dir>/experiments/<experiment>``
    (``experiments.pitfalls.pitfall_table``; percent here only). ``results_dir`` may also be the
    experiment folder itself."""
    table, _, n = _pitfalls_records(results_dir, n_resamples, experiment)
    rows = []
    for _, r in table.iterrows():
        if pd.isna(r["effect"]):
            effect = "-"
        else:
            effect = f"{_signed(r['effect'])} [{_signed(r['low'])}, {_signed(r['high'])}]"
        notes = [r["covers"] and f"interval over {r['covers']}", r["note"]]
        if r["sampling_seeds"]:
            notes.append(
                f"{r['sampling_seeds']} sampling seeds, each from {_signed(r['spread_low'])} to {_signed(r['spread_high'])}"
            )
        rows.append([r["practice"], f"{r['where']} (row {r['doc_row']})", r["dataset"], effect, r["verdict"] or "-",
                     "; ".join(n for n in notes if n) or "-"])  # fmt: skip
    header = ["practice (against the package's way)", "where (docs/PITFALLS.md)", "test set",
              "effect on weighted F1 [95% CI]", "verdict", "notes"]  # fmt: skip
    intro = (
        f"Each practice against this package's way on the same adapters and the same test utterances ({', '.join(f'{d} {k}' for d, k in n.items())}; "
        "weighted F1, percent points; a 95% interval resamples the training seeds, then the test dialogues, "
        'unless the notes say otherwise; "no measurable effect" when it covers 0):'
    )
    return "\n".join([intro, "", *_table(header, rows)]).rstrip()


def pitfalls_summary(
    results_dir: str | os.PathLike,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    experiment: str = PITFALLS_EXPERIMENT,
) -> str:
    """Markdown for the README: ``pitfalls_table`` in short, one row per practice, one column per corpus
    (the effect with its 95% interval, and inflates or deflates where the interval excludes 0; the truncation
    row its count)."""
    from dialoguellm.experiments.pitfalls import NO_EFFECT

    table, plan, n = _pitfalls_records(results_dir, n_resamples, experiment)
    datasets = list(plan["test"])
    cells: dict[str, dict[str, str]] = {}
    for _, r in table.iterrows():
        if pd.notna(r.get("cut")):  # the count of training prompts the cutoff cuts
            cell = f"{int(r['cut']):,} of {int(r['prompts']):,} cut"
        elif pd.isna(r["effect"]):
            cell = "-"
        else:
            word = "" if r["verdict"] == NO_EFFECT else f" {r['verdict']}"
            cell = f"{_signed(r['effect'])} [{_signed(r['low'])}, {_signed(r['high'])}]{word}"
        cells.setdefault(r["short"], {})[r["dataset"]] = cell
    rows = [[short, *(by.get(d, "-") for d in datasets)] for short, by in cells.items()]
    seeds = len(plan.get("seeds") or [])
    intro = (
        f"Each practice against this package's way on the same {seeds} adapters and test utterances "
        f"({', '.join(f'{d} {k}' for d, k in n.items())}): weighted F1, points, 95% interval over seeds and "
        "dialogues; an interval that covers 0 is no measurable effect."
    )
    return "\n".join([intro, "", *_table(["practice", *datasets], rows)]).rstrip()


# ------------------------------------------------------------------------------------ README blocks

README_BLOCKS = (
    "results", "seeds", "ablations", "pitfalls", "pitfalls_summary", "learning_curve", "overlap", "probes",
    "scoring",
)  # fmt: skip
# The documents with generated blocks (``make tables``): the README's headline, seeds, pitfalls in short and
# learning curve; the ablation, overlap, probe and scoring tables in docs/EVALUATION.md; the measured pitfalls in
# docs/PITFALLS.md.
GENERATED_DOCUMENTS = ("README.md", "docs/EVALUATION.md", "docs/PITFALLS.md")


# Where each block's inputs live in a results folder: a block whose folder is absent is left empty.
BLOCK_SOURCES = {
    "results": "evaluation", "seeds": "seeds", "ablations": "experiments/ablations_cpu",
    "pitfalls": f"experiments/{PITFALLS_EXPERIMENT}", "pitfalls_summary": f"experiments/{PITFALLS_EXPERIMENT}",
    "learning_curve": f"experiments/{CURVE_EXPERIMENT}",
    "overlap": f"experiments/{OVERLAP_EXPERIMENT}", "probes": f"experiments/{PROBES_EXPERIMENT}",
    "scoring": f"experiments/{SCORING_EXPERIMENT}",
}  # fmt: skip


def learning_curve_block(results_dir: str | os.PathLike, n_resamples: int = stats.DEFAULT_RESAMPLES) -> str:
    """The README's learning-curve sentences (``learning_curve_summary``) of the committed curve."""
    folder = Path(results_dir) / BLOCK_SOURCES["learning_curve"]
    plan = read_json(ExperimentLayout(folder).plan)
    n = {d: len(t["example_id"]) for d, t in plan["test"].items()}
    baseline = plan["arms"][plan["baseline"]].get("label", plan["baseline"])
    intro = (
        f"Learning curve (`make learning-curve`, [docs/EXPERIMENTS.md](docs/EXPERIMENTS.md)): LoRA on "
        f"{', '.join(plan.get('sizes') or [])} training utterances per corpus against {baseline} at each size; test "
        f"weighted F1 ({', '.join(f'{d} {k}' for d, k in n.items())} utterances), paired 95% intervals over seeds "
        "and dialogues:"
    )
    return "\n".join([intro, "", learning_curve_summary(folder, n_resamples)])


# The blocks that show one experiment's own table (docs/EVALUATION.md), rendered by ``experiment_table``
# (`dialoguellm experiment report NAME` prints the same).
EXPERIMENT_BLOCKS = ("overlap", "probes", "scoring")


def readme_block(name: str, results_dir: str | os.PathLike) -> str:
    """The generated text of one block (``<!-- NAME:start -->`` .. ``<!-- NAME:end -->``); empty when
    ``results_dir`` holds none of its inputs (``BLOCK_SOURCES``)."""
    source = Path(results_dir) / BLOCK_SOURCES[name]
    if not source.is_dir():
        return ""
    if name in EXPERIMENT_BLOCKS:  # as `dialoguellm experiment report NAME` prints it
        return experiment_table(source).strip()
    renderers = {
        "results": headline_table, "seeds": seeds_table, "ablations": ablations_table, "pitfalls": pitfalls_table,
        "pitfalls_summary": pitfalls_summary, "learning_curve": learning_curve_block,
    }  # fmt: skip
    return renderers[name](results_dir).strip()


def update_generated_blocks(document: str | os.PathLike, results_dir: str | os.PathLike) -> list[str]:
    """Rewrite every generated block ``document`` has (``README_BLOCKS`` between their markers) from
    ``results_dir`` (``make tables``); the names of the blocks that changed. Text outside the markers is never
    touched; the file is replaced atomically."""
    from dialoguellm.io import atomic_path

    path = Path(document)
    text = path.read_text(encoding="utf-8")
    changed = []
    for name in README_BLOCKS:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        if (start in text) != (end in text):
            raise ValueError(f"{path}: {start} and {end} must both be present (or neither).")
        if start not in text:  # the document shows no such table
            continue
        head, rest = text.split(start, 1)
        old, tail = rest.split(end, 1)
        block = readme_block(name, results_dir)
        new = "\n" + block + "\n" if block else "\n"
        if old != new:
            changed.append(name)
            text = head + start + new + end + tail
    if changed:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return changed

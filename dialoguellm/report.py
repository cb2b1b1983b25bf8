"""The report of a finished run: its headline numbers as Markdown, read from what its notebooks recorded.

``python -m dialoguellm.pipeline summary [--run-dir runs/latest]`` prints it; the README's results are
pasted from this output, so every number there names the command and run that produced it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dialoguellm.io import read_json
from dialoguellm.runs import RunLayout


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
    """Markdown tables of a run's stages, test results, baselines, ablations, error analysis and SECEU."""
    run = RunLayout(Path(run_dir))
    records = _records(run.root)
    if not records:
        raise FileNotFoundError(f"No records in {run.records}: run `make reproduce` first.")
    out: list[str] = [f"Run folder: `{run.root.resolve().name}`", ""]
    out += _stages(run)
    out += _evaluation(records.get("03_training", {}), records.get("04_evaluation", {}))
    out += _ablations(records.get("05_ablations", {}))
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


def _ablations(ablations: dict[str, Any]) -> list[str]:
    """The baselines on the test sets and each ablation arm (notebook 05; arm values are in % already)."""
    out: list[str] = []
    if ablations.get("baselines"):
        rows = [
            [key.rsplit("/", 1)[0], f"{v['accuracy']:.1f}", f"{v['weighted_f1']:.1f}"]
            for key, v in ablations["baselines"].items()
            if key.endswith("/test")
        ]
        out += ["Baselines on the same test sets:", ""]
        out += _table(["corpus / baseline", "accuracy", "weighted F1"], rows)
    if ablations.get("arms"):
        out += [
            f"Ablations ({ablations.get('mode')} mode, {ablations.get('per_dataset')} test utterances per corpus, "
            f"seeds {ablations.get('seeds')}; {ablations.get('model')}):",
            "",
        ]
        rows = [
            [
                key,
                f"{v['weighted_f1']:.1f} ± {v['weighted_f1_sd']:.1f}",
                "-" if v.get("delta_weighted_f1") is None else f"{v['delta_weighted_f1']:+.1f}",
                "-" if v.get("paper_weighted_f1") is None else v["paper_weighted_f1"],
            ]
            for key, v in ablations["arms"].items()
        ]
        out += _table(["arm / corpus", "weighted F1 (mean ± sd)", "difference from base arm", "paper"], rows)
    return out


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

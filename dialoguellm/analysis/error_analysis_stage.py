"""Notebook 06 as library steps: read notebook 04's predictions, measure the failure modes, browse the surest
mistakes, and fit the likelihood calibration on dev (``calibration.PriorCorrection``) to apply it to test.

Every table is saved in ``RunLayout.analysis`` as it is made, so ``make figures`` can redraw the figures
without the model. The only model run here scores dev utterances when no dev predictions were saved.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import calibration
from dialoguellm.analysis import error_analysis as ea
from dialoguellm.config import Config
from dialoguellm.corpora.readers import load_curated
from dialoguellm.corpora.video import load_descriptions
from dialoguellm.io import atomic_path, predictions_name
from dialoguellm.model import loading
from dialoguellm.prompts import prepare_split
from dialoguellm.runs import RunLayout, adapter_settings, find_adapter, load_run_config
from dialoguellm.scoring.predictions import (
    find_predictions,
    label_words,
    probability_matrix,
    read_predictions,
    score_prepared,
    uncalibrated,
)

CALIBRATED_VARIANT = "label bias for dev F1 (eval.calibrate, notebook 04)"


@dataclass
class AnalysisInputs:
    """What notebook 06 reads: test predictions (uncalibrated, and evaluation's calibrated ones when it made
    them), the settings and adapter they came from, the curated corpora and the video descriptions."""

    run: Path
    found: dict[tuple[str, str], Path]
    tests: dict[str, pd.DataFrame]
    calibrated: dict[str, pd.DataFrame]
    adapter_dir: Path
    settings: Config
    curated: dict[str, Any]
    descriptions: dict[str, dict[str, str]]
    confusions: dict[str, pd.DataFrame] = field(default_factory=dict)

    def sources(self) -> list[str]:
        """Where each prediction file came from, relative to the run when inside it."""
        return [
            f"{dataset} {split}: {path.relative_to(self.run) if path.is_relative_to(self.run) else path}"
            for (dataset, split), path in sorted(self.found.items())
        ]


def load_inputs(
    run: str | os.PathLike,
    predictions_dir: str | os.PathLike | None = None,
    adapter_dir: str | os.PathLike | None = None,
) -> AnalysisInputs:
    """Notebook 04's predictions in ``run`` (or ``predictions_dir``), with the settings of the adapter they
    came from (notebook 03's unless ``adapter_dir`` names it)."""
    run = Path(run)
    found = find_predictions(run, predictions_dir)
    saved = {dataset: read_predictions(path) for (dataset, split), path in found.items() if split == "test"}
    if not saved:
        raise FileNotFoundError(
            f"No test predictions ({predictions_name('*')}) in {predictions_dir or run}; run "
            "notebooks/04_evaluation.ipynb with the same RUN_DIR first, or pass PREDICTIONS_DIR."
        )
    adapter = Path(adapter_dir) if adapter_dir else find_adapter(run)
    return AnalysisInputs(
        run=run,
        found=found,
        # With eval.calibrate, notebook 04 saved calibrated predictions (the raw ones beside them): analyse the raw.
        tests={dataset: uncalibrated(frame, dataset) for dataset, frame in saved.items()},
        calibrated={dataset: frame for dataset, frame in saved.items() if "pred_id_raw" in frame},
        adapter_dir=adapter,
        settings=load_run_config(adapter_settings(adapter).parent),
        curated={name: load_curated(run, name) for name in saved},
        descriptions=load_descriptions(run),  # what exists; the prompts carried it only if use_video
    )


def confusion_tables(inputs: AnalysisInputs) -> dict[str, pd.DataFrame]:
    """Row-normalised confusion matrices of the test predictions, saved and kept on ``inputs``."""
    for name, frame in inputs.tests.items():
        inputs.confusions[name] = ea.normalised_confusion(frame, name)
        ea.save_table(inputs.confusions[name], inputs.run, f"confusion_{name}")
    return inputs.confusions


def failure_modes(inputs: AnalysisInputs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(neutral share per corpus, close-pair confusions); the pairs are saved."""
    neutral = pd.DataFrame(
        [{"dataset": name, **ea.neutral_share(frame, name)} for name, frame in inputs.tests.items()]
    )
    pairs = pd.concat(
        [ea.close_pair_confusions(frame, name) for name, frame in inputs.tests.items()], ignore_index=True
    )
    ea.save_table(pairs, inputs.run, "close_pairs")
    return neutral, pairs


def with_records(inputs: AnalysisInputs) -> dict[str, pd.DataFrame]:
    """Test predictions joined to their curated records, with the factors of the error breakdown (context
    counted with the training settings' z; descriptions only for MELD)."""
    prompt = inputs.settings.prompt
    return {
        name: ea.attach_records(
            frame,
            inputs.curated[name]["test"],
            prompt.context_turns,
            inputs.descriptions.get("test") if name == "meld" else None,
            shown=prompt.use_video,
        )
        for name, frame in inputs.tests.items()
    }


def breakdown_table(merged: Mapping[str, pd.DataFrame], run: str | os.PathLike) -> pd.DataFrame:
    """Accuracy per bucket of every factor and corpus (``error_analysis.error_breakdown``), saved."""
    breakdown = pd.concat([ea.error_breakdown(m) for m in merged.values()], ignore_index=True)
    ea.save_table(breakdown, run, "error_breakdown")
    return breakdown


def example_browser(inputs: AnalysisInputs, merged: Mapping[str, pd.DataFrame], k: int = 8) -> pd.DataFrame:
    """The ``k`` surest mistakes per corpus with the prompts the model read (rebuilt with the training
    settings and demonstrations; only the tokenizer is loaded), saved."""
    tokenizer = loading.load_tokenizer(inputs.settings)
    browsers = []
    for name, m in merged.items():
        worst = ea.confident_errors(m, k=k)
        prompts = ea.rebuild_prompts(
            inputs.settings,
            tokenizer,
            inputs.curated,
            name,
            "test",
            worst["example_id"],
            inputs.descriptions,
        )
        browsers.append(ea.confident_errors(m, k=k, prompts=prompts))
    browser = pd.concat(browsers, ignore_index=True)
    ea.save_table(browser, inputs.run, "confident_errors")
    return browser


def dev_predictions(inputs: AnalysisInputs, per_dataset: int = 60) -> tuple[dict[str, pd.DataFrame], str]:
    """(dev predictions per corpus, where they came from): saved by the run (training keeps the selected
    adapter's), else by an earlier run of notebook 06, else scored now on ``per_dataset`` stratified dev
    utterances per corpus with the adapter and prompts of the run (and saved for the next time)."""
    devs = {
        name: read_predictions(inputs.found[(name, "dev")])
        for name in inputs.tests
        if (name, "dev") in inputs.found
    }
    layout = RunLayout(inputs.run)
    for name in inputs.tests:
        earlier = layout.analysis_predictions(name, "dev")
        if name not in devs and earlier.is_file():
            devs[name] = read_predictions(earlier)
    missing = {name: inputs.curated[name] for name in inputs.tests if name not in devs}
    if not missing:
        saved = [
            str(inputs.found[(n, "dev")].relative_to(inputs.run))
            for n in inputs.tests
            if (n, "dev") in inputs.found
        ]
        return devs, "saved in the run: " + ", ".join(saved)
    m = inputs.settings.model
    loaded = loading.load_configured(m)
    model = loading.load_adapter(loaded.model, inputs.adapter_dir)
    dev = prepare_split(inputs.settings, loaded.tokenizer, missing, "dev", per_dataset, inputs.descriptions)
    scored = score_prepared(model, loaded.tokenizer, dev, inputs.settings, "dev")
    for name, frame in scored.items():
        with atomic_path(layout.analysis_predictions(name, "dev")) as tmp:
            frame.to_csv(tmp, index=False)
        devs[name] = frame
    return devs, f"scored here ({per_dataset or 'all'} per corpus)"


@dataclass
class PriorCorrectionResult:
    """The likelihood calibration of every corpus: the report rows, the fitted offsets, the confusion
    panels before and after, and the neutral shares with the corrected one added."""

    table: pd.DataFrame
    offsets: dict[str, dict[str, Any]]
    panels: dict[str, pd.DataFrame]
    neutral: pd.DataFrame


def prior_corrections(
    inputs: AnalysisInputs, devs: Mapping[str, pd.DataFrame], neutral: pd.DataFrame
) -> PriorCorrectionResult:
    """Fit the prior correction on each corpus's dev predictions, apply it to test, and report it beside the
    uncorrected predictions (and evaluation's label biases, when notebook 04 applied them); all saved."""
    reports, offsets, panels = [], {}, {}
    neutral = neutral.copy()
    for name, test in inputs.tests.items():
        others = {CALIBRATED_VARIANT: inputs.calibrated[name]} if name in inputs.calibrated else {}
        report, correction, corrected = ea.prior_correction_report(devs[name], test, others=others)
        reports.append(report)
        offsets[name] = correction.to_dict()
        panels[name] = inputs.confusions.get(name, ea.normalised_confusion(test, name))
        panels[f"{name}, prior-corrected"] = ea.normalised_confusion(corrected, name)
        ea.save_table(panels[f"{name}, prior-corrected"], inputs.run, f"confusion_{name}_corrected")
        if "neutral" in correction.labels:
            share = ea.neutral_share(corrected, name)["predicted_share"]
            neutral.loc[neutral["dataset"] == name, "corrected_share"] = share
    table = pd.concat(reports, ignore_index=True)
    ea.save_table(table, inputs.run, "prior_correction")
    ea.save_table(neutral, inputs.run, "neutral_share")
    ea.save_json(offsets, inputs.run, "prior_offsets")
    return PriorCorrectionResult(table, offsets, panels, neutral)


@dataclass
class TrustResult:
    """Calibration of the test probabilities: per corpus and variant (raw, with the dev-fitted label
    biases) the ECE and accuracy at a few coverages (``summary``), the reliability bins and the curve."""

    summary: pd.DataFrame
    reliability: pd.DataFrame
    coverage: pd.DataFrame


TRUST_COVERAGES = (1.0, 0.8, 0.5)


def score_trust(inputs: AnalysisInputs, bins: int = 10) -> TrustResult:
    """Expected calibration error, reliability bins and accuracy against coverage of the test predictions,
    before and (when notebook 04 applied them) after the dev-fitted label biases; the three tables saved
    (``reliability``, ``coverage``, ``calibration_error``) for ``make figures``."""
    summary, reliability, coverage = [], [], []
    for name, raw in inputs.tests.items():
        variants = {"raw": raw}
        if name in inputs.calibrated:
            variants["label biases (dev)"] = inputs.calibrated[name]
        for variant, frame in variants.items():
            probs = probability_matrix(frame, label_words(frame, name))
            gold = frame["gold_id"].to_numpy()
            keys = {"dataset": name, "variant": variant}
            bins_table = calibration.reliability_table(probs, gold, bins)
            curve = calibration.coverage_curve(probs, gold)
            reliability.append(bins_table.assign(**keys))
            coverage.append(curve.assign(**keys))
            summary.append(
                {
                    **keys,
                    "n": len(frame),
                    "ece": calibration.expected_calibration_error(probs, gold, bins),
                    "mean_confidence": float(probs.max(axis=1).mean()),
                    **{
                        f"accuracy_at_{int(100 * c)}": calibration.accuracy_at_coverage(curve, c)
                        for c in TRUST_COVERAGES
                    },
                    **coverage_intervals(frame, probs, f"{name}/{variant}"),
                }
            )
    result = TrustResult(
        pd.DataFrame(summary),
        pd.concat(reliability, ignore_index=True),
        pd.concat(coverage, ignore_index=True),
    )
    ea.save_table(result.summary, inputs.run, "calibration_error")
    ea.save_table(result.reliability, inputs.run, "reliability")
    ea.save_table(result.coverage, inputs.run, "coverage")
    return result


def coverage_intervals(frame: pd.DataFrame, probs: np.ndarray, source: str) -> dict[str, str]:
    """The 95% interval of each ``accuracy_at_<c>``: the most confident rows ``calibration.coverage_curve``
    keeps (same order, prediction = most probable label), through ``error_analysis.metric_intervals``."""
    order = np.argsort(-probs.max(axis=1), kind="stable")
    ranked = frame.iloc[order].assign(pred_id=probs.argmax(axis=1)[order])
    out = {}
    for c in TRUST_COVERAGES:
        kept = ranked.iloc[: max(1, int(round(c * len(frame))))]
        text = ea.metric_intervals(kept, source, ("accuracy",))["accuracy_95ci"]
        out[f"accuracy_at_{int(100 * c)}_95ci"] = text
    return out


def trust_records(trust: TrustResult) -> dict[str, Any]:
    """Notebook 06's record of the calibration: ECE and accuracy at 100/80/50% coverage per corpus and variant."""
    return {
        f"{r['dataset']}/{r['variant']}": {
            k: round(float(r[k]), 4)
            for k in ("ece", "mean_confidence", *(f"accuracy_at_{int(100 * c)}" for c in TRUST_COVERAGES))
        }
        for r in trust.summary.to_dict("records")
    }


def offsets_frame(offsets: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """The fitted log-prior offsets, one column per corpus and one row per label."""
    return pd.DataFrame({name: pd.Series(o["offsets"], index=o["labels"]) for name, o in offsets.items()})


def error_analysis_records(
    inputs: AnalysisInputs,
    neutral: pd.DataFrame,
    pairs: pd.DataFrame,
    prior: pd.DataFrame,
    dev_source: str,
    baseline_prior: pd.DataFrame,
    browser: pd.DataFrame,
    trust: TrustResult,
    figures: Sequence[str | os.PathLike],
    overlap_effect: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The headline values notebook 06 records: the failure modes, the prior correction (of the model and of
    a baseline), the calibration (``trust_records``), the figures' file names and the overlap experiment's
    effect (``experiments.stage.overlap_records``; None without its records)."""
    return {
        "datasets": sorted(inputs.tests),
        "neutral_share": {
            r.dataset: {
                "true": round(r.true_share, 4),
                "predicted": round(r.predicted_share, 4),
                "corrected": round(r.corrected_share, 4),
            }
            for r in neutral.itertuples()
        },
        "close_pairs": {
            f"{r.dataset}: {r.gold}->{r.predicted}": round(r.share_of_gold, 4)
            for r in pairs.itertuples()
            if r.gold_support
        },
        "prior_correction": {
            f"{r.dataset}/{r.variant.split(' ')[0]}": {
                "accuracy": round(r.accuracy, 4),
                "weighted_f1": round(r.weighted_f1, 4),
                "macro_f1": round(r.macro_f1, 4),
            }
            for r in prior.itertuples()
        },
        "dev_source": dev_source,
        "prior_correction_baseline": {
            f"{r.dataset}/{r.variant.split(' ')[0]}": round(r.weighted_f1, 4)
            for r in baseline_prior.itertuples()
        },
        "browser_examples": len(browser),
        "calibration": trust_records(trust),
        "figures": [Path(f).name for f in figures],
        "overlap_effect": overlap_effect,
    }

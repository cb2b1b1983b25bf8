"""Notebook 05 as library steps: the baselines, the ablation grid in either mode, and the values it records.

``plan_ablations`` decides what runs (which adapter, base settings, arms and corpora); ``run_ablations``
runs the grid (``"evaluate"``: notebook 03's adapter under every arm's prompt; ``"train"``: an adapter per
arm and seed, the paper's protocol); ``finish_ablations`` puts each arm beside the paper and saves it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.analysis import ablation, ablation_retrained
from dialoguellm.config import Config
from dialoguellm.corpora.video import load_descriptions
from dialoguellm.model import loading
from dialoguellm.runs import adapter_settings, find_adapter, hardware_description

MODES = ("evaluate", "train")


def baseline_records(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``corpus/baseline/split -> {accuracy, weighted_f1}`` in % (what notebook 05 records)."""
    return {
        f"{row.dataset}/{row.baseline}/{row.split}": {
            "accuracy": round(100 * row.accuracy, 2),
            "weighted_f1": round(100 * row.weighted_f1, 2),
        }
        for row in table.itertuples()
    }


@dataclass
class AblationPlan:
    """What an ablation run uses: the adapter (evaluate mode), base settings, arms, corpora, descriptions."""

    mode: str
    adapter_dir: Path | None
    base_settings: str | os.PathLike
    arms: list[ablation.Arm]
    settings: Config
    corpora: dict[str, Any]
    descriptions: dict[str, dict[str, str]]

    def arms_table(self) -> pd.DataFrame:
        """One row per arm: its group, name, label and the settings it changes."""
        return pd.DataFrame(
            [{"group": a.group, "arm": a.name, "label": a.label, **a.settings()} for a in self.arms]
        )


def plan_ablations(
    run: str | os.PathLike,
    curated: Mapping[str, Any],
    mode: str = "evaluate",
    profile: str | None = None,
    arms: Sequence[str] = (),
    corpora: Sequence[str] = (),
    adapter_dir: str | os.PathLike | None = None,
) -> AblationPlan:
    """The plan: in evaluate mode notebook 03's adapter (or ``adapter_dir``) and, unless ``profile`` names
    other base settings, the settings it was trained with; the arms named (all when empty); the curated
    corpora named (``corpora``; empty: those the settings train on)."""
    if mode not in MODES:
        raise ValueError(f"MODE must be 'evaluate' or 'train', not {mode!r}.")
    adapter = None
    if mode == "evaluate":
        adapter = Path(adapter_dir) if adapter_dir else find_adapter(run)
    base = profile if profile is not None else adapter_settings(adapter)
    settings = ablation.load_base(base)  # model, evaluation settings and the base arm's prompt
    chosen = {name: curated[name] for name in (corpora or settings.data.datasets) if name in curated}
    return AblationPlan(
        mode, adapter, base, ablation.load_arms(list(arms) or None, profile=base), settings, chosen,
        load_descriptions(run),
    )  # fmt: skip


@dataclass
class AblationRuns:
    """One row per arm, corpus and seed, and the words that say what produced them."""

    runs: pd.DataFrame
    model: str
    note: str


def run_ablations(
    plan: AblationPlan,
    run: str | os.PathLike,
    curated: Mapping[str, Any],
    split: str = "test",
    per_dataset: int = 24,
    seeds: Sequence[int] = (1, 2),
    batch_size: int = 0,
) -> AblationRuns:
    """Run the grid. Evaluate mode: the model is loaded once with the plan's adapter, and every arm scores
    the same ``per_dataset`` sampled utterances per corpus and seed. Train mode: every arm trains an adapter
    per seed and is evaluated on all the corpora its settings name (``plan.corpora`` applies to evaluate
    mode only)."""
    m = plan.settings.model
    loading.set_threads(m.num_threads)
    name = loading.display_name(m.name)
    if plan.mode == "train":
        runs = ablation.train_and_evaluate_arms(
            plan.arms, curated, run, seeds, split=split, descriptions=plan.descriptions
        )
        note = f"train mode: an adapter per arm and seed; sd over training seeds; {split} split"
        return AblationRuns(runs, f"{name} + LoRA trained per arm", note)
    loaded = loading.load_model(m.name, m.dtype, m.quantization, m.trust_remote_code)
    model = loading.load_adapter(loaded.model, plan.adapter_dir)
    runs, _ = ablation.evaluate_arms(
        plan.arms, plan.corpora, model, loaded.tokenizer, split=split, per_dataset=per_dataset, seeds=seeds,
        descriptions=plan.descriptions, batch_size=batch_size or plan.settings.eval.batch_size, dtype=m.dtype,
    )  # fmt: skip
    note = (
        f"evaluate mode: one adapter, {per_dataset or 'all'} {split} utterances per corpus and seed "
        "(stratified sample); sd over sample seeds"
    )
    return AblationRuns(runs, f"{name} + LoRA adapter of notebook 03", note)


def finish_ablations(
    plan: AblationPlan,
    result: AblationRuns,
    run: str | os.PathLike,
    split: str,
    per_dataset: int,
    seeds: Sequence[int],
) -> pd.DataFrame:
    """Each arm beside the paper (``ablation.ablation_table``), saved with the run's settings in
    ``RunLayout.ablations``; returns the table."""
    summary = ablation.summarise(result.runs, base=ablation.base_settings_of(plan.settings))
    hardware = hardware_description()
    table = ablation.ablation_table(summary, model=result.model, hardware=hardware, note=result.note)
    ablation.save_results(
        result.runs,
        table,
        run,
        {
            "mode": plan.mode,
            "base_settings": str(plan.base_settings),
            "adapter": str(plan.adapter_dir) if plan.adapter_dir else None,
            "split": split,
            "per_dataset": per_dataset,
            "seeds": list(seeds),
            "arms": {a.name: {"file": str(a.path), **a.settings()} for a in plan.arms},
            "model": result.model,
            "hardware": hardware,
        },
    )
    return table


def _rounded(value: Any) -> float | None:
    return None if pd.isna(value) else round(float(value), 2)


def ablation_records(
    plan: AblationPlan, result: AblationRuns, table: pd.DataFrame, per_dataset: int, seeds: Sequence[int]
) -> dict[str, Any]:
    """The headline values notebook 05 records (arm values in %)."""
    return {
        "mode": plan.mode,
        "model": result.model,
        "hardware": table["hardware"].iloc[0] if len(table) else hardware_description(),
        "seeds": list(seeds),
        "per_dataset": per_dataset,
        "arms": {
            f"{row.arm}/{row.dataset}": {
                "accuracy": round(row.accuracy_mean, 2),
                "accuracy_sd": round(row.accuracy_sd, 2),
                "weighted_f1": round(row.weighted_f1_mean, 2),
                "weighted_f1_sd": round(row.weighted_f1_sd, 2),
                "delta_weighted_f1": _rounded(row.delta_weighted_f1_mean),
                "paper_weighted_f1": None if pd.isna(row.paper_weighted_f1) else row.paper_weighted_f1,
            }
            for row in table.itertuples()
        },
    }


# ------------------------------------------------------------------------------ retrained ablations


def retrained_source(run: str | os.PathLike) -> tuple[Path | None, str]:
    """Which retrained-ablation results notebook 05's last section shows, and a sentence saying whose they
    are: the run folder's own (``<run>/ablations_retrained/results.json``, written by
    ``python -m dialoguellm.analysis.ablation_retrained --out <run>/ablations_retrained``), else the
    repository's committed ``results/cpu/ablations_retrained/results.json``; (None, why) without either."""
    own = ablation_retrained.results_path(Path(run) / "ablations_retrained")
    if own.is_file():
        return own, f"Retrained ablations: this run's own results ({own})."
    committed = ablation_retrained.results_path(ablation_retrained.committed_results_dir())
    if committed.is_file():
        saved = ablation_retrained.load_results(committed)
        state = "finished" if saved.get("finished") else "NOT finished (a partial grid)"
        return committed, (
            "Retrained ablations: not run here. Showing the repository's committed results "
            f"({committed}), {state}, made by `{saved['command']}` on {saved.get('hardware', '?')} "
            f"(last written {saved.get('updated', '?')}). Run `make ablations` to reproduce them."
        )
    return None, (
        "Retrained ablations: no results yet (neither this run's ablations_retrained/ nor the repository's "
        "results/cpu/ablations_retrained/). Run `make ablations` (about 2.6 hours on 2 cores)."
    )


def retrained_records(table: pd.DataFrame, source: Path) -> dict[str, Any]:
    """What notebook 05 records of the retrained grid (in %): per arm and corpus, the mean over seeds and
    the paired difference from the base arm with its interval."""
    return {
        "source": str(source),
        "arms": {
            f"{row.arm}/{row.dataset}": {
                "runs": int(row.runs),
                "weighted_f1": round(row.weighted_f1_mean, 2),
                "weighted_f1_sd": _rounded(row.weighted_f1_sd),
                "delta_weighted_f1": _rounded(row.delta_weighted_f1),
                "delta_low": _rounded(row.delta_weighted_f1_low),
                "delta_high": _rounded(row.delta_weighted_f1_high),
                "paper_weighted_f1": _rounded(row.paper_weighted_f1),
            }
            for row in table.itertuples()
        },
    }

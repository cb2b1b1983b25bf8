"""The measured table of the field's evaluation pitfalls, from the records of ``make pitfalls``
(``dialoguellm/experiments/pitfalls_cpu.yaml``; ``pitfalls_paper.yaml`` the same at the paper's size).

Each row is one practice of docs/PITFALLS.md on one corpus: where it occurs (project and file, as found there),
its effect on weighted F1 against this package's way on the same utterances (fractions), a 95% interval over
training seeds and test dialogues, and whether it inflates or deflates the number ("no measurable effect"
when the interval covers 0). How each row is measured:

- test-time practices are scoring variants (``arm.reuses``) of the trained ``base`` arm, compared with the
  arm they replace, seed by seed (``stats.seed_dialogue_bootstrap``): greedy generation with exact parsing
  against label scoring, edit-distance mapping against exact parsing, sampling with a random fallback against
  greedy generation with exact parsing (one variant per sampling seed; the row pools them and gives their
  spread), the seven fixed demonstrations against the trained prompt;
- future context is a trained arm (``prompt.future_turns``) against ``base``;
- report-side practices are computed from the records (``analysis.pitfalls``): swapped ``f1_score``
  arguments and the best of the seeds from ``base``; the checkpoint chosen on test against the one chosen on
  dev from the ``checkpoint_<N>`` variants (each scores the adapter kept at the N-th dev evaluation of
  ``base``'s training, ``train.keep_every_eval``; their dev scores are training's, copied into each record's
  ``selection``), within each run and over every run of every seed;
- 256-token truncation is a count (``benchmarks/results/truncation_counts.json``), not an arm: at this
  profile's z and k almost no training prompt is cut, so an arm would all but equal ``base``;
- joint training without the overlap removal is the ``overlap_removal`` experiment's ``kept`` arm against
  ``removed`` (not rerun here).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dialoguellm import stats
from dialoguellm.analysis import pitfalls
from dialoguellm.experiments.record import UnitRecord, load_plan, load_units
from dialoguellm.experiments.stage import OVERLAP_EXPERIMENT, PITFALLS_EXPERIMENT
from dialoguellm.io import read_json
from dialoguellm.labels import normalised_label_names

NO_EFFECT = "no measurable effect"
TRUNCATION_FILE = Path("benchmarks") / "results" / "truncation_counts.json"


@dataclass(frozen=True)
class Practice:
    """One row of the table: what the practice is, where it occurs (docs/PITFALLS.md row ``doc``), how it is
    measured (``kind``) and, for arm comparisons, the arm(s) of the practice against the arm it replaces."""

    key: str
    practice: str
    where: str
    doc: int
    kind: (
        str  # arms | sampling | swapped | best_of_seeds | select_within | select_over | truncation | overlap
    )
    arm: str = ""  # the practice's arm (sampling: the prefix of one arm per sampling seed)
    against: str = ""
    short: str = ""  # the practice in a few words (the README's table)


PRACTICES: tuple[Practice, ...] = (
    Practice("generate", "greedy generation, exact parsing (no label counted wrong), against label scoring",
             "DialogueLLM py/myllama-generate-test.py, InstructERC code/main_new.py (both generate)", 1, "arms",
             "greedy_exact", "base", "generation (greedy, exact parse) vs label scoring"),
    Practice("sampling", "sampling (temperature 0.7, top-p 0.95, top-k 40, repetition penalty 1.15) "
             "and a random label for unparsed answers, against greedy generation with exact parsing",
             "DialogueLLM py/myllama-generate-test.py (settings as written; no do_sample there)", 1, "sampling",
             "sampled_random", "greedy_exact", "sampling + random label vs greedy"),
    Practice("edit_distance", "free text mapped to the first or nearest label (edit distance), against exact "
             "parsing", "InstructERC code/main_new.py (match_text, optimize_output)", 6, "arms", "greedy_edit",
             "greedy_exact", "edit-distance mapping vs exact parse"),
    Practice("demos7", "the 7 fixed demonstrations of the test script, against the trained prompt",
             "DialogueLLM py/myllama-generate-test.py, -emory.py (generate_test_prompt)", 2, "arms", "demos7",
             "base", "7 fixed test demonstrations vs trained prompt"),
    Practice("future", "future turns in the context (trained and tested), against past only",
             "BiosERC src/reformat_data_ft_llm.py (window 5 before and after)", 9, "arms", "future", "base",
             "1 future turn vs past only"),
    Practice("select_within", "checkpoint chosen on test, against chosen on dev (within each run)",
             "InstructERC code/main_new.py (dev_file = test.json)", 5, "select_within",
             "checkpoint_", short="checkpoint chosen on test vs dev"),
    Practice("select_over", "run chosen on test over every checkpoint of every seed, against chosen on dev",
             "InstructERC code/main_new.py; users' seed reports (issue #15)", 5, "select_over",
             "checkpoint_", short="run chosen on test (every checkpoint and seed)"),
    Practice("best_of_seeds", "the best of the seeds, against their mean",
             "InstructERC issue tracker (#14, #15: best seed 67-68 against a mean of 65-66)", 7, "best_of_seeds",
             "base", short="best of the seeds vs their mean"),
    Practice("swapped_f1", "f1_score(pred, gold): predictions and gold swapped, against f1_score(gold, pred)",
             "TodKat src/DialogEvaluator_emory.py, _iemocap.py (MELD's fixed after issue #10)", 8, "swapped",
             "base", short="f1_score(pred, gold) vs (gold, pred)"),
    Practice("truncation", "256-token cutoff of prompt and answer in training (counts, not an effect)",
             "DialogueLLM py/myllama-train-mgpu-Emo.py (CUTOFF_LEN = 256)", 3, "truncation",
             short="256-token training cutoff"),
    Practice("overlap", "joint training without removing the shared Friends lines, against with (the "
             "overlap_removal experiment)", "InstructERC code/data_process_mixed.py", 10, "overlap", "kept",
             "removed", "joint training without overlap removal"),
)  # fmt: skip


def verdict(low: float, high: float) -> str:
    """``inflates`` (the interval is above 0), ``deflates`` (below 0) or ``no measurable effect``."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 <= high:
        return NO_EFFECT
    return "inflates" if low > 0 else "deflates"


def _runs(units: Sequence[UnitRecord], arm: str, dataset: str) -> dict[int | None, list[int]]:
    return {
        u.seed: u.predictions[dataset].pred_id for u in units if u.arm == arm and dataset in u.predictions
    }


def _row(practice: Practice, dataset: str, estimate: stats.SeedDialogueEstimate | None, **extra: Any) -> dict:
    row = {"key": practice.key, "practice": practice.practice, "short": practice.short or practice.practice,
           "where": practice.where, "doc_row": practice.doc,
           "dataset": dataset, "effect": np.nan, "low": np.nan, "high": np.nan, "verdict": "", "covers": "",
           "seeds": 0, "spread_low": np.nan, "spread_high": np.nan, "sampling_seeds": 0, "note": ""}  # fmt: skip
    if estimate is not None:
        row |= {"effect": estimate.estimate, "low": estimate.low, "high": estimate.high,
                "verdict": verdict(estimate.low, estimate.high), "covers": ", ".join(estimate.covers),
                "seeds": estimate.seeds}  # fmt: skip
    return row | extra


def pitfall_table(
    folder: str | os.PathLike,
    n_resamples: int = stats.DEFAULT_RESAMPLES,
    truncation: str | os.PathLike | None = None,
    overlap: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """One row per practice and corpus (fractions; module docstring): ``effect``, ``low``, ``high``,
    ``verdict``, ``covers``, ``seeds``; sampling rows also ``spread_low``/``spread_high`` (the least and most
    effect of one sampling seed) and ``sampling_seeds``. A practice whose arms are absent is left out.
    ``truncation``: the counts file (default: the repository's); ``overlap``: the overlap_removal records
    (default: beside ``folder``)."""
    folder = Path(folder)
    plan, units = load_plan(folder), load_units(folder)
    options = {"n_resamples": n_resamples}
    rows = []
    datasets = list(plan["test"])
    for practice in PRACTICES:
        for dataset in datasets:
            test = plan["test"][dataset]
            gold, groups, labels = test["gold_id"], test["dialogue_id"], normalised_label_names(dataset)
            row = _measure(practice, dataset, units, gold, groups, labels, options)
            if row is None and practice.kind == "truncation":
                row = _truncation_row(practice, dataset, plan, truncation)
            if row is None and practice.kind == "overlap":
                row = _overlap_row(practice, dataset, folder, overlap, n_resamples)
            if row is not None:
                rows.append(row)
    return pd.DataFrame(rows)


def _measure(
    practice: Practice, dataset: str, units: Sequence[UnitRecord], gold: Sequence[int], groups: Sequence[Any],
    labels: Sequence[str], options: Mapping[str, Any],
) -> dict[str, Any] | None:  # fmt: skip
    kind = practice.kind
    if kind == "arms":
        mine, theirs = _runs(units, practice.arm, dataset), _runs(units, practice.against, dataset)
        seeds = sorted(s for s in mine if s in theirs and s is not None)
        if not seeds:
            return None
        d = stats.seed_dialogue_bootstrap(gold, [mine[s] for s in seeds], labels, groups,
                                          [theirs[s] for s in seeds], **options)  # fmt: skip
        return _row(practice, dataset, d)
    if kind == "sampling":
        arms = sorted({u.arm for u in units if u.arm.startswith(practice.arm) and dataset in u.predictions})
        theirs = _runs(units, practice.against, dataset)
        pairs = [(a, s) for a in arms for s, _ in sorted(_runs(units, a, dataset).items()) if s in theirs]
        if not pairs:
            return None
        runs = {a: _runs(units, a, dataset) for a in arms}
        # every (sampling seed, training seed) pair counts as one seed of the resampling
        pooled = stats.seed_dialogue_bootstrap(gold, [runs[a][s] for a, s in pairs], labels, groups,
                                               [theirs[s] for _, s in pairs], **options)  # fmt: skip
        each = []
        for a in arms:
            seeds = [s for s in sorted(runs[a]) if s in theirs]
            each.append(np.mean([pitfalls.correct_f1(gold, runs[a][s], labels) - pitfalls.correct_f1(gold, theirs[s], labels)
                                 for s in seeds]))  # fmt: skip
        beams = sorted({int(u.config.get("eval", {}).get("num_beams", 1)) for u in units if u.arm in arms})
        return _row(practice, dataset, pooled, spread_low=float(min(each)), spread_high=float(max(each)),
                    sampling_seeds=len(arms), covers="training x sampling seeds, test dialogues",
                    note=f"beams: {', '.join(map(str, beams))}" if beams else "")  # fmt: skip
    base = _runs(units, practice.arm, dataset)
    seeds = sorted(s for s in base if s is not None)
    if kind == "swapped" and seeds:
        d = pitfalls.swapped_f1_difference(gold, [base[s] for s in seeds], labels, groups, **options)
        return _row(practice, dataset, d)
    if kind == "best_of_seeds" and len(seeds) > 1:
        d = pitfalls.best_of_seeds_difference(gold, [base[s] for s in seeds], labels, groups, **options)
        return _row(practice, dataset, d, note="the gap is >= 0 by construction")
    if kind in ("select_within", "select_over"):
        return _selection_row(practice, dataset, units, gold, groups, labels, options)
    return None


def checkpoint_grid(
    units: Sequence[UnitRecord], dataset: str, prefix: str = "checkpoint_"
) -> tuple[list[str], list[int], np.ndarray, np.ndarray]:
    """(checkpoint arms, seeds, predictions (K, R, N), dev weighted F1 (K, R)) of the checkpoint variants:
    every arm named ``<prefix><N>`` with a record for every seed; dev scores from each record's ``selection``
    (training's dev evaluation of that adapter: the mean over corpora, which the package selects on)."""
    by_arm: dict[str, dict[int, UnitRecord]] = {}
    for u in units:
        if u.arm.startswith(prefix) and dataset in u.predictions and u.seed is not None and u.selection:
            by_arm.setdefault(u.arm, {})[u.seed] = u
    arms = sorted(by_arm, key=lambda a: int(a[len(prefix) :]) if a[len(prefix) :].isdigit() else 0)
    seeds = sorted(set.intersection(*(set(v) for v in by_arm.values()))) if by_arm else []
    if len(arms) < 2 or not seeds:
        return arms, seeds, np.zeros((0, 0, 0), dtype=int), np.zeros((0, 0))
    preds = np.array([[by_arm[a][s].predictions[dataset].pred_id for s in seeds] for a in arms])
    dev = np.array([[float(by_arm[a][s].selection["dev_weighted_f1"]) for s in seeds] for a in arms])
    return arms, seeds, preds, dev


def _selection_row(
    practice: Practice, dataset: str, units: Sequence[UnitRecord], gold: Sequence[int], groups: Sequence[Any],
    labels: Sequence[str], options: Mapping[str, Any],
) -> dict[str, Any] | None:  # fmt: skip
    arms, seeds, preds, dev = checkpoint_grid(units, dataset, practice.arm)
    if preds.size == 0:
        return None
    how = (
        pitfalls.selection_on_test_difference
        if practice.kind == "select_within"
        else pitfalls.selection_over_runs_difference
    )
    d = how(gold, preds, dev, labels, groups, **options)
    return _row(
        practice, dataset, d, note=f"{len(arms)} checkpoints x {len(seeds)} seeds; >= 0 by construction"
    )


def _truncation_row(
    practice: Practice, dataset: str, plan: Mapping[str, Any], path: str | os.PathLike | None
) -> dict[str, Any] | None:
    """How many of the corpus's training prompts a 256-token cutoff cuts at the experiment's z and k."""
    file = Path(path) if path else Path(__file__).resolve().parents[2] / TRUNCATION_FILE
    if not file.is_file():
        return None
    base = plan["arms"].get("base", {})
    z, k = str(base.get("context_turns", "1")), int(base.get("k_shot", 1))
    counts = (
        read_json(file).get("by_k_shot_and_context_turns", {}).get(str(k), {}).get(z, {}).get(dataset, {})
    )
    entry = counts.get("train")
    if entry:
        note = f"{entry['cut']} of {entry['n']} training prompts cut at z = {z}, k = {k} ({file.name})"
        return _row(practice, dataset, None, note=note, verdict="a count, not an arm", cut=entry["cut"],
                    prompts=entry["n"])  # fmt: skip
    return None


def _overlap_row(
    practice: Practice, dataset: str, folder: Path, path: str | os.PathLike | None, n_resamples: int
) -> dict[str, Any] | None:
    """The overlap_removal experiment's kept-minus-removed difference, when its records exist."""
    other = Path(path) if path else folder.parent / OVERLAP_EXPERIMENT
    if not (other / "experiment.json").is_file():
        return _row(
            practice, dataset, None, note=f"not yet run: {OVERLAP_EXPERIMENT} has no records at {other}"
        )
    units = load_units(other)
    test = load_plan(other)["test"].get(dataset)
    mine, theirs = _runs(units, practice.arm, dataset), _runs(units, practice.against, dataset)
    seeds = sorted(s for s in mine if s in theirs and s is not None)
    if test is None or not seeds:
        return _row(practice, dataset, None, note=f"{OVERLAP_EXPERIMENT}: no paired records for {dataset}")
    d = stats.seed_dialogue_bootstrap(test["gold_id"], [mine[s] for s in seeds], normalised_label_names(dataset),
                                      test["dialogue_id"], [theirs[s] for s in seeds], n_resamples=n_resamples)  # fmt: skip
    return _row(practice, dataset, d, note=f"from {OVERLAP_EXPERIMENT} (its own test sample)")


def pitfalls_source(
    run: str | os.PathLike | None, experiment: str = PITFALLS_EXPERIMENT
) -> tuple[Path | None, str]:
    """Which pitfalls records notebook 10 shows, and a sentence saying whose: the run folder's own
    (``<run>/experiments/<experiment>``), else the repository's ``results/cpu/experiments/<experiment>``;
    (None, why) without either."""
    from dialoguellm.experiments.summary import committed_folder

    own = Path(run) / "experiments" / experiment if run else None
    if own is not None and (own / "experiment.json").is_file():
        return own, f"Measured: this run's own records ({own})."
    committed = committed_folder(experiment)
    if (committed / "experiment.json").is_file():
        plan, units = load_plan(committed), load_units(committed)
        state = "finished" if len(units) == len(plan["units"]) else "NOT finished (some arms x seeds missing)"
        return committed, f"Measured: the repository's committed records ({committed}), {state}."
    return None, (
        f"Not measured yet: neither this run's experiments/{experiment} nor the repository's "
        f"results/cpu/experiments/{experiment} exists. Run `make pitfalls` (resumable)."
    )

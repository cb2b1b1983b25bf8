"""Figures of the error analysis (notebook 06).

One function per figure, each drawing on a ``matplotlib.figure.Figure`` with the packaged style and
writing one PNG to ``path``. The ``*_from_run`` producers redraw them from the results the notebooks saved
(``RunLayout.analysis``), or return None when the run lacks them; the
registry (``plots.registry.FIGURES``) lists them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.analysis.error_analysis import FACTORS
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout

OURS_COLOR = "#4C72B0"
CORRECTED_COLOR = "#55A868"
TRUE_COLOR = "#8C8C8C"
CONFUSION_FIGURE = "confusion_prior_correction.png"
CONFUSION_TITLE = "Confusion matrices on test, before and after prior correction (each row sums to 1)"


def _datasets(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["dataset"]))


def plot_confusion_panels(
    confusions: Mapping[str, pd.DataFrame], path: str | os.PathLike, ncols: int | None = None, title: str = ""
) -> Path:
    """Row-normalised confusion matrices (gold rows sum to 1), one panel per entry, ``ncols`` per row.
    Input: ``{panel title: analysis.normalised_confusion(...)}``."""
    names = list(confusions)
    ncols = ncols or len(names)
    nrows = -(-len(names) // ncols)
    with style_context():
        fig = Figure(figsize=(4.8 * ncols + 1, 4.4 * nrows))
        axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"hspace": 0.6, "wspace": 0.5}).ravel()
        for ax in axes[len(names) :]:
            ax.set_visible(False)
        image = None
        for ax, name in zip(axes, names, strict=False):
            matrix = confusions[name]
            values = matrix.to_numpy(dtype=float)
            image = ax.imshow(values, vmin=0, vmax=1, cmap="Blues")
            ax.grid(False)
            for (i, j), v in np.ndenumerate(values):
                color = "white" if v > 0.6 else "black"
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
            ax.set_xticks(range(values.shape[1]), matrix.columns, rotation=45, ha="right")
            ax.set_yticks(range(values.shape[0]), matrix.index)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(name)
        if image is not None:
            fig.colorbar(image, ax=list(axes[: len(names)]), shrink=0.8, label="share of the gold label")
        fig.suptitle(title or "Confusion matrices (each row sums to 1)")
        return save_figure(fig, path)


def plot_failure_modes(neutral: pd.DataFrame, pairs: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Left: true vs predicted share of neutral (and after prior correction, when given). Right: share of
    each close-pair label predicted as its partner. Inputs: the neutral_share and close_pairs tables of
    notebook 06."""
    with style_context():
        fig = Figure(figsize=(11, 4.2))
        left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6], "wspace": 0.7})
        x = np.arange(len(neutral))
        series = [("true_share", "true", TRUE_COLOR), ("predicted_share", "predicted", OURS_COLOR)]
        if "corrected_share" in neutral and neutral["corrected_share"].notna().any():
            series.append(("corrected_share", "predicted, prior-corrected", CORRECTED_COLOR))
        width = 0.8 / len(series)
        for k, (col, name, color) in enumerate(series):
            left.bar(
                x + (k - (len(series) - 1) / 2) * width, 100 * neutral[col], width, color=color, label=name
            )
        left.set_xticks(x, neutral["dataset"])
        left.set_ylabel("share of utterances labelled neutral (%)")
        left.set_ylim(0, 100)
        left.set_title("Over-prediction of neutral")
        left.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(series))
        if len(pairs):
            names = [f"{r.dataset}: {r.gold} -> {r.predicted}" for r in pairs.itertuples()]
            colors = [OURS_COLOR if r.paper_pair else TRUE_COLOR for r in pairs.itertuples()]
            y = np.arange(len(pairs))
            right.barh(y, 100 * pairs["share_of_gold"].fillna(0), color=colors)
            right.set_yticks(y, names, fontsize=8)
            right.invert_yaxis()
            right.grid(axis="x", alpha=0.3)
            right.set_xlabel("% of the gold label predicted as its partner")
        right.set_title("Close pairs (grey: not named by the paper)")
        return save_figure(fig, path)


def plot_error_breakdown(breakdown: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Accuracy per bucket of context length, turn position, utterance length and description presence,
    one line per corpus (bucket sizes in the labels). Input: ``analysis.error_analysis.error_breakdown``."""
    present = set(breakdown["factor"])
    factors = [f for f in FACTORS if f in present] + sorted(present - set(FACTORS))
    with style_context():
        fig = Figure(figsize=(4.0 * len(factors), 3.8))
        axes = fig.subplots(1, len(factors), squeeze=False)[0]
        for ax, factor in zip(axes, factors, strict=True):
            part = breakdown[breakdown["factor"] == factor]
            buckets = list(dict.fromkeys(part.sort_values("order")["bucket"]))
            for dataset in _datasets(part):
                rows = part[part["dataset"] == dataset].set_index("bucket").reindex(buckets)
                ax.plot(range(len(buckets)), 100 * rows["accuracy"], marker="o", label=dataset)
            ax.set_xticks(range(len(buckets)), buckets, rotation=30, ha="right")
            ax.set_ylim(0, 100)
            ax.set_title(factor.replace("_", " "))
            ax.set_ylabel("accuracy (%)")
        axes[0].legend(fontsize=8)
        fig.suptitle("Accuracy by utterance and dialogue properties")
        return save_figure(fig, path)


def plot_prior_correction(report: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Accuracy, weighted F1 and macro F1 on test, uncorrected vs prior-corrected (offsets fitted on dev),
    one group of bars per corpus. Input: the prior_correction table of notebook 06."""
    metrics = ["accuracy", "weighted_f1", "macro_f1"]
    datasets = _datasets(report)
    with style_context():
        fig = Figure(figsize=(3.6 * len(datasets) + 3.5, 3.8))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, dataset in zip(axes, datasets, strict=True):
            part = report[report["dataset"] == dataset].reset_index(drop=True)
            x = np.arange(len(metrics))
            width = 0.8 / max(len(part), 1)
            colors = [OURS_COLOR, CORRECTED_COLOR, "#DD8452", "#8172B3"]
            for k, row in part.iterrows():
                color, label = colors[k % len(colors)], row["variant"]
                values = [100 * row[m] for m in metrics]
                ax.bar(x + (k - (len(part) - 1) / 2) * width, values, width, color=color, label=label)
            ax.set_xticks(x, [m.replace("_", " ") for m in metrics])
            ax.set_ylim(0, 100)
            ax.set_title(f"{dataset} test")
        axes[0].set_ylabel("%")
        axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.suptitle("Prior correction of label scores (offsets fitted on dev only)")
        return save_figure(fig, path)


def plot_score_trust(reliability: pd.DataFrame, coverage: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Per corpus, a reliability diagram (accuracy against confidence per bin, the diagonal = calibrated;
    marker area ~ rows in the bin) and accuracy against coverage (the least confident set aside), raw and
    with the dev-fitted label biases. Inputs: notebook 06's ``reliability`` and ``coverage`` tables."""
    datasets = _datasets(reliability)
    colors = {"raw": OURS_COLOR}
    with style_context():
        fig = Figure(figsize=(8.0, 3.8 * len(datasets)))
        axes = fig.subplots(len(datasets), 2, squeeze=False)
        for row, dataset in zip(axes, datasets, strict=True):
            rel, cov = row
            rel.plot([0, 1], [0, 1], color=TRUE_COLOR, lw=1, ls=":", label="calibrated")
            for variant, part in reliability[reliability["dataset"] == dataset].groupby(
                "variant", sort=False
            ):
                color = colors.get(variant, CORRECTED_COLOR)
                full = part[part["count"] > 0]
                rel.plot(
                    full["confidence"], full["accuracy"], color=color, marker=None, lw=1.2, label=variant
                )
                rel.scatter(
                    full["confidence"],
                    full["accuracy"],
                    s=8 + 200 * full["count"] / full["count"].sum(),
                    color=color,
                )
                curve = coverage[(coverage["dataset"] == dataset) & (coverage["variant"] == variant)]
                cov.plot(100 * curve["coverage"], 100 * curve["accuracy"], color=color, lw=1.4, label=variant)
            rel.set(
                xlim=(0, 1),
                ylim=(0, 1),
                xlabel="confidence (p of the predicted label)",
                ylabel="accuracy",
            )
            rel.set_title(f"{dataset} test: reliability")
            cov.set(
                xlim=(0, 100), ylim=(0, 100), xlabel="coverage (% most confident kept)", ylabel="accuracy (%)"
            )
            cov.set_title(f"{dataset} test: accuracy vs coverage")
            rel.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        return save_figure(fig, path)


# ------------------------------------------------------------------------------ redraw from saved results


def _read_csv(path: Path, **kwargs) -> pd.DataFrame | None:
    return pd.read_csv(path, **kwargs) if path.is_file() else None


def confusion_panels_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run lacks its inputs)."""
    run_dir, out = Path(run_dir), Path(out)
    folder = RunLayout(run_dir).analysis
    files = sorted(folder.glob("confusion_*_corrected.csv")) if folder.is_dir() else []
    if not files:
        return None
    confusions = {}
    for corrected in files:
        name = corrected.stem.removeprefix("confusion_").removesuffix("_corrected")
        confusions[name] = pd.read_csv(folder / f"confusion_{name}.csv", index_col=0)
        confusions[f"{name}, prior-corrected"] = pd.read_csv(corrected, index_col=0)
    return plot_confusion_panels(confusions, out / CONFUSION_FIGURE, ncols=2, title=CONFUSION_TITLE)


def failure_modes_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run lacks its inputs)."""
    run_dir, out = Path(run_dir), Path(out)
    neutral = _read_csv(RunLayout(run_dir).analysis / "neutral_share.csv")
    pairs = _read_csv(RunLayout(run_dir).analysis / "close_pairs.csv")
    if neutral is None or pairs is None:
        return None
    return plot_failure_modes(neutral, pairs, out / "failure_modes.png")


def _from_analysis_table(run_dir: Path, out: Path, name: str, plot: Any) -> Path | None:
    """``plot(<analysis>/<name>.csv, out/<name>.png)``, or None when the run saved no such table."""
    table = _read_csv(RunLayout(Path(run_dir)).analysis / f"{name}.csv")
    if table is None or table.empty:
        return None
    return plot(table, Path(out) / f"{name}.png")


def error_breakdown_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run lacks its inputs)."""
    return _from_analysis_table(run_dir, out, "error_breakdown", plot_error_breakdown)


def prior_correction_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run lacks its inputs)."""
    return _from_analysis_table(run_dir, out, "prior_correction", plot_prior_correction)


def score_trust_from_run(run_dir: Path, out: Path) -> Path | None:
    """``make figures`` producer (None when the run lacks its inputs)."""
    folder = RunLayout(Path(run_dir)).analysis
    reliability = _read_csv(folder / "reliability.csv")
    coverage = _read_csv(folder / "coverage.csv")
    if reliability is None or coverage is None or reliability.empty:
        return None
    return plot_score_trust(reliability, coverage, Path(out) / "score_trust.png")

"""Figures of the data stages: label shares and the cross-corpus overlap (notebook 01); description coverage,
lengths and a few clips' frames beside their descriptions (notebook 02). One function per figure, packaged
style, written to ``path``."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from dialoguellm.corpora import readers, video
from dialoguellm.labels import DATASETS
from dialoguellm.plots import save_figure, style_context
from dialoguellm.runs import RunLayout

SPLIT_ORDER = ("train", "dev", "test")


def plot_description_coverage(coverage: Mapping[str, Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """Bars of described vs all MELD clips per split (input: ``video.coverage_by_split``)."""
    splits = [s for s in SPLIT_ORDER if s in coverage] + sorted(set(coverage) - set(SPLIT_ORDER))
    with style_context():
        fig = Figure(figsize=(6.5, 3.8))
        ax = fig.subplots()
        totals = [coverage[s]["clips"] for s in splits]
        described = [coverage[s]["described"] for s in splits]
        ax.bar(splits, totals, color="#D0D0D0", label="clips in MELD")
        ax.bar(splits, described, color="#4C72B0", label="with a description")
        for i, (n, d) in enumerate(zip(totals, described, strict=True)):
            ax.annotate(
                f"{d:,} / {n:,} ({d / n:.1%})" if n else "0",
                (i, max(n, d)),
                ha="center",
                va="bottom",
                xytext=(0, 3),
                textcoords="offset points",
                fontsize=9,
            )
        ax.set_ylabel("MELD clips (utterances)")
        ax.set_ylim(0, max(totals + [1]) * 1.15)
        ax.set_title("Video description coverage per split")
        ax.legend(loc="upper right")
        return save_figure(fig, path)


def plot_description_lengths(lengths: Sequence[int], path: str | os.PathLike) -> Path:
    """Histogram of description lengths in words, with the median marked."""
    import numpy as np

    with style_context():
        fig = Figure(figsize=(6.5, 3.8))
        ax = fig.subplots()
        if len(lengths):
            ax.hist(lengths, bins=min(30, max(5, len(set(lengths)))), color="#4C72B0")
            median = float(np.median(lengths))
            ax.axvline(median, color="#C44E52", linestyle="--", label=f"median {median:.0f} words")
            ax.legend()
        ax.set_xlabel("words per description")
        ax.set_ylabel("descriptions")
        ax.set_title(f"Description length ({len(lengths):,} descriptions)")
        return save_figure(fig, path)


def plot_frames_with_descriptions(items: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """One row per clip: its sampled frames, then its description (wrapped, shortened).

    Each item has ``title`` (e.g. the clip uid), ``frames`` (PIL images) and ``description``.
    """
    n_cols = max(1, max((len(it["frames"]) for it in items), default=1)) + 2  # two columns for the text
    with style_context():
        fig = Figure(figsize=(2.2 * n_cols, 2.3 * max(1, len(items))))
        grid = fig.add_gridspec(max(1, len(items)), n_cols)
        for row, item in enumerate(items):
            for col, frame in enumerate(item["frames"]):
                ax = fig.add_subplot(grid[row, col])
                ax.imshow(frame)
                ax.set_axis_off()
                if col == 0:
                    ax.set_title(str(item["title"]), fontsize=9, loc="left")
            ax = fig.add_subplot(grid[row, n_cols - 2 :])
            ax.set_axis_off()
            text = textwrap.shorten(str(item["description"]), width=420, placeholder=" ...")
            ax.text(
                0, 1, textwrap.fill(text, width=52), va="top", ha="left", fontsize=7, transform=ax.transAxes
            )
        fig.suptitle("Sampled frames and their descriptions")
        return save_figure(fig, path)


def coverage_figure_from_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """``make figures`` producer: the coverage figure from a run's description cache and curated MELD
    (None when the run has neither)."""
    run_dir = Path(run_dir)
    if not video.cache_path(run_dir).is_file() or not RunLayout(run_dir).corpus("meld").is_dir():
        return None
    coverage = video.coverage_by_split(readers.load_curated(run_dir, "meld"), run_dir)
    return plot_description_coverage(coverage, Path(out_dir) / "video_description_coverage.png")


def lengths_figure_from_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """``make figures`` producer: the description-length figure from a run's cache (None without one)."""
    if not video.cache_path(run_dir).is_file():
        return None
    return plot_description_lengths(
        video.description_lengths(run_dir), Path(out_dir) / "video_description_lengths.png"
    )


def plot_label_distribution(distribution: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Bar charts of label shares per split, one panel per dataset (input: ``corpora.readers.label_distribution``)."""
    datasets = list(dict.fromkeys(distribution["dataset"]))
    with style_context():
        fig = Figure(figsize=(4.2 * len(datasets), 4.2))
        axes = fig.subplots(1, len(datasets), squeeze=False)[0]
        for ax, name in zip(axes, datasets, strict=True):
            part = distribution[distribution["dataset"] == name]
            table = part.pivot_table(index="normalised", columns="split", values="count", sort=False)
            table = table[[s for s in ("train", "dev", "test") if s in table.columns]]
            shares = table / table.sum(axis=0)
            order = shares.mean(axis=1).sort_values(ascending=False).index
            shares.loc[order].plot.bar(ax=ax, width=0.8)
            ax.set_title(f"{name}: {int(table.sum().sum()):,} utterances")
            ax.set_xlabel("")
            ax.set_ylabel("share of the split")
            ax.tick_params(axis="x", rotation=40)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
        fig.suptitle("Label distribution per split (paper's normalised label words)")
        return save_figure(fig, path)


def label_distribution_from_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """``make figures`` producer: label shares per split from a run's curated corpora (None without any)."""
    run = RunLayout(Path(run_dir))
    curated = {name: readers.load_curated(run.root, name) for name in DATASETS if run.corpus(name).is_dir()}
    if not curated:
        return None
    return plot_label_distribution(
        readers.label_distribution(curated), Path(out_dir) / "label_distribution.png"
    )


def plot_cross_corpus_overlap(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Heat map of the cross-corpus overlap (input: ``corpora.overlap.overlap_table``): for each (corpus,
    split) row, the share of its distinct >= 6-word utterances found, exactly or nearly, in each (other
    corpus, split) column; cells give the counts."""
    import numpy as np

    def order(key: tuple[str, str]) -> tuple[str, int]:
        return key[0], SPLIT_ORDER.index(key[1]) if key[1] in SPLIT_ORDER else len(SPLIT_ORDER)

    rows = sorted(set(zip(table["dataset"], table["split"], strict=True)), key=order)
    cols = sorted(set(zip(table["other_dataset"], table["other_split"], strict=True)), key=order)
    index = {key: r for r, key in enumerate(rows)}, {key: c for c, key in enumerate(cols)}
    share = np.full((len(rows), len(cols)), np.nan)
    with style_context():
        fig = Figure(figsize=(1.3 * len(cols) + 3, 0.55 * len(rows) + 2))
        ax = fig.subplots()
        for rec in table.itertuples():
            r, c = index[0][(rec.dataset, rec.split)], index[1][(rec.other_dataset, rec.other_split)]
            share[r, c] = rec.exact_or_near / rec.utterances if rec.utterances else 0.0
            ax.annotate(
                f"{rec.exact_or_near}/{rec.utterances}\n{rec.shared_episodes} ep.",
                (c, r),
                ha="center",
                va="center",
                fontsize=7,
            )
        image = ax.imshow(np.ma.masked_invalid(share), cmap="Reds", vmin=0, aspect="auto")
        fig.colorbar(image, ax=ax, label="share of the row's >= 6-word utterances")
        ax.set_xticks(range(len(cols)), [f"{d}\n{s}" for d, s in cols])
        ax.set_yticks(range(len(rows)), [f"{d} {s}" for d, s in rows])
        ax.grid(False)
        ax.set_xlabel("found in (exact or near; shared episodes below)")
        ax.set_title("Cross-corpus overlap: MELD and EmoryNLP share Friends episodes")
        return save_figure(fig, path)


def overlap_figure_from_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path | None:
    """``make figures`` producer: the overlap heat map from notebook 01's ``overlap.csv`` (None without it)."""
    path = RunLayout(Path(run_dir)).overlap
    if not path.is_file():
        return None
    return plot_cross_corpus_overlap(pd.read_csv(path), Path(out_dir) / "cross_corpus_overlap.png")

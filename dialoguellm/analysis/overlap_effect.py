"""What the cross-corpus overlap does to test scores, read from benchmarks/overlap_effect.py's JSON.

The benchmark trains the same profile twice, with and without removing from each corpus's training split what
another corpus's dev or test split holds, and scores both on test: per corpus and part (the overlapping test
utterances, the rest, all) each arm's weighted F1 with its 95% interval and the paired difference without -
with removal. This module only renders that file (notebook 06 shows it); it computes nothing new.

The wording rule: a difference whose interval covers 0 is "no measurable difference at this size"; a positive
one on the overlapping utterances is the amount by which the overlap inflates the score.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.stats import format_interval

RESULT_NAME = "overlap_effect_cpu.json"
COMMAND = "python benchmarks/overlap_effect.py"
ARMS = ("with_removal", "without_removal")
PARTS = ("overlapping", "rest", "all")
NO_DIFFERENCE = "no measurable difference at this size"


def default_result_path() -> Path:
    """benchmarks/results/overlap_effect_cpu.json of the source checkout this package runs from."""
    return Path(__file__).resolve().parents[2] / "benchmarks" / "results" / RESULT_NAME


def load_result(path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The benchmark's JSON, or None when the file does not exist (``missing_message`` says what makes it)."""
    path = Path(path) if path else default_result_path()
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); rerun `{COMMAND}` to rewrite it.") from None


def missing_message(path: str | os.PathLike | None = None) -> str:
    """What to run when the result file is absent."""
    path = Path(path) if path else default_result_path()
    return (
        f"{path} does not exist yet. `{COMMAND}` makes it (two trainings of the cpu profile, about 25 minutes "
        "each on 2 idle cores; `--with-removal-from runs/<name>` reuses the reproduce run as the with_removal "
        "arm when its settings match)."
    )


def _interval(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("estimate") is None:
        return (entry or {}).get("note", "no interval")
    return format_interval(entry["estimate"], entry["low"], entry["high"])


def verdict(diff: dict[str, Any] | None) -> str:
    """The wording of one without - with difference (percentage points)."""
    if not diff:
        return "not compared (too few dialogues)"
    if diff["low"] <= 0 <= diff["high"]:
        return NO_DIFFERENCE
    points = 100 * diff["difference"]
    if points > 0:
        return f"training with the overlap scores {points:.1f} points higher"
    return f"training with the overlap scores {-points:.1f} points lower"


def effect_table(result: dict[str, Any]) -> pd.DataFrame:
    """One row per corpus and part: utterances, each arm's weighted F1 [interval] and the paired difference
    without - with removal [interval] with its wording (all in percent)."""
    rows = []
    for corpus, parts in result["results"].items():
        for part in PARTS:
            entry = parts.get(part, {})
            diff = entry.get("without_minus_with")
            rows.append(
                {
                    "corpus": corpus,
                    "part": part,
                    "utterances": entry.get("with_removal", {}).get("n"),
                    **{f"{arm} weighted F1": _interval(entry.get(arm)) for arm in ARMS},
                    "without - with": format_interval(diff["difference"], diff["low"], diff["high"])
                    if diff
                    else "",
                    "reading": verdict(diff),
                }
            )
    return pd.DataFrame(rows)


def effect_summary(result: dict[str, Any]) -> list[str]:
    """One sentence per corpus on the overlapping utterances: inflated (by how much), or no measurable
    difference at this size; plus where the with_removal arm came from."""
    lines = []
    for corpus, parts in result["results"].items():
        diff = parts.get("overlapping", {}).get("without_minus_with")
        n = parts.get("overlapping", {}).get("with_removal", {}).get("n")
        if not diff:
            lines.append(f"{corpus}: too few overlapping test dialogues ({n} utterances) to compare.")
        elif diff["low"] <= 0 <= diff["high"]:
            lines.append(
                f"{corpus}, {n} overlapping test utterances: {NO_DIFFERENCE} "
                f"(without - with removal {format_interval(diff['difference'], diff['low'], diff['high'])})."
            )
        elif diff["difference"] > 0:
            lines.append(
                f"{corpus}, {n} overlapping test utterances: the overlap inflates weighted F1 by "
                f"{format_interval(diff['difference'], diff['low'], diff['high'])} points."
            )
        else:
            lines.append(
                f"{corpus}, {n} overlapping test utterances: training with the overlap scores lower, by "
                f"{format_interval(-diff['difference'], -diff['high'], -diff['low'])} points."
            )
    origin = result.get("arms", {}).get("with_removal")
    if origin and origin.get("origin") == "copied":
        lines.append(f"The with_removal arm is the finished run {origin['from']} (same settings, checked).")
    return lines

"""dialoguellm.analysis.overlap_effect renders benchmarks/overlap_effect.py's JSON with the wording rule."""

from __future__ import annotations

import json

import pytest

from dialoguellm.analysis import overlap_effect as oe


def arm(estimate: float, n: int = 100) -> dict:
    return {"n": n, "dialogues": 20, "estimate": estimate, "low": estimate - 0.05, "high": estimate + 0.05}


def diff(difference: float, low: float, high: float) -> dict:
    return {"difference": difference, "low": low, "high": high, "a": 0.5, "b": 0.5, "verdict": "?"}


def synthetic() -> dict:
    """MELD: the overlap inflates the overlapping part; EmoryNLP: no difference; one part too small."""
    return {
        "arms": {"with_removal": {"origin": "copied", "from": "/runs/reproduce"}, "without_removal": {}},
        "results": {
            "meld": {
                "overlapping": {
                    "with_removal": arm(0.50, 180),
                    "without_removal": arm(0.62, 180),
                    "without_minus_with": diff(0.12, 0.05, 0.19),
                },
                "rest": {
                    "with_removal": arm(0.52),
                    "without_removal": arm(0.515),
                    "without_minus_with": diff(-0.005, -0.02, 0.01),
                },
                "all": {
                    "with_removal": arm(0.52),
                    "without_removal": arm(0.53),
                    "without_minus_with": diff(0.01, -0.004, 0.024),
                },
            },
            "emorynlp": {
                "overlapping": {
                    "with_removal": arm(0.30, 60),
                    "without_removal": arm(0.27, 60),
                    "without_minus_with": diff(-0.03, -0.09, 0.02),
                },
                "rest": {
                    "with_removal": {"n": 1, "estimate": None, "note": "fewer than 2 dialogues: no interval"},
                    "without_removal": {
                        "n": 1,
                        "estimate": None,
                        "note": "fewer than 2 dialogues: no interval",
                    },
                },
                "all": {
                    "with_removal": arm(0.31),
                    "without_removal": arm(0.30),
                    "without_minus_with": diff(-0.04, -0.07, -0.01),
                },
            },
        },
    }


def test_table_shows_each_arm_with_its_interval_and_the_wording_rule():
    table = oe.effect_table(synthetic())
    assert list(table["part"]) == ["overlapping", "rest", "all"] * 2
    meld = table[table["corpus"] == "meld"].set_index("part")
    assert meld.loc["overlapping", "with_removal weighted F1"] == "50.0 [45.0, 55.0]"
    assert meld.loc["overlapping", "without_removal weighted F1"] == "62.0 [57.0, 67.0]"
    assert meld.loc["overlapping", "without - with"] == "12.0 [5.0, 19.0]"
    assert meld.loc["overlapping", "reading"] == "training with the overlap scores 12.0 points higher"
    assert meld.loc["rest", "reading"] == oe.NO_DIFFERENCE  # the interval covers 0
    assert meld.loc["all", "reading"] == oe.NO_DIFFERENCE
    emory = table[table["corpus"] == "emorynlp"].set_index("part")
    assert emory.loc["rest", "with_removal weighted F1"] == "fewer than 2 dialogues: no interval"
    assert emory.loc["rest", "reading"].startswith("not compared")
    assert emory.loc["all", "reading"] == "training with the overlap scores 4.0 points lower"


def test_summary_says_by_how_much_the_overlap_inflates_or_that_nothing_is_measurable():
    lines = oe.effect_summary(synthetic())
    assert lines[0] == (
        "meld, 180 overlapping test utterances: the overlap inflates weighted F1 by 12.0 [5.0, 19.0] points."
    )
    assert lines[1].startswith(
        "emorynlp, 60 overlapping test utterances: no measurable difference at this size"
    )
    assert "/runs/reproduce" in lines[2]


def test_missing_and_damaged_files_say_what_to_run(tmp_path):
    absent = tmp_path / "overlap_effect_cpu.json"
    assert oe.load_result(absent) is None
    assert "python benchmarks/overlap_effect.py" in oe.missing_message(absent) and str(
        absent
    ) in oe.missing_message(absent)
    absent.write_text("{not json")
    with pytest.raises(ValueError, match="rerun `python benchmarks/overlap_effect.py`"):
        oe.load_result(absent)
    absent.write_text(json.dumps(synthetic()))
    assert oe.load_result(absent) == synthetic()
    assert oe.default_result_path().parts[-3:] == ("benchmarks", "results", "overlap_effect_cpu.json")

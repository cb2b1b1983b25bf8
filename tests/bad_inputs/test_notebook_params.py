"""Notebook parameters of the wrong type or name, and OVERRIDES naming unknown or mistyped settings, are
refused before papermill starts a kernel: nothing runs, and the run folder's executed notebooks, stage
markers and results stay exactly as they were."""

from __future__ import annotations

import pytest

from dialoguellm import pipeline

NOTEBOOKS = {p.stem[:2]: p for p in pipeline.notebook_paths()}

# (case, notebook prefix, parameters, error, message)
CASES = [
    (
        "int given text",
        "01",
        {"EXAMPLE_DIALOGUES": "two"},
        TypeError,
        r"EXAMPLE_DIALOGUES must be int \(default 1\), got str",
    ),
    (
        "int given a bool",
        "01",
        {"EXAMPLE_DIALOGUES": True},
        TypeError,
        r"EXAMPLE_DIALOGUES must be int .*got bool True",
    ),
    (
        "int given a fraction",
        "05",
        {"BASELINE_TRAIN_PER_DATASET": 2.5},
        TypeError,
        r"05_ablations\.ipynb: parameter BASELINE_TRAIN_PER_DATASET must be int",
    ),
    (
        "list given a string",
        "05",
        {"BASELINE_C_GRID": "1.0"},
        TypeError,
        r"BASELINE_C_GRID must be list or tuple \(default \[1\.0, 3\.0, 10\.0\]\), got str",
    ),
    (
        "dict given a list",
        "03",
        {"OVERRIDES": ["train.lr=1e-4"]},
        TypeError,
        r"OVERRIDES must be dict \(default \{\}\), got list",
    ),
    (
        "bool given text",
        "03",
        {"RESUME": "yes"},
        TypeError,
        r"03_training\.ipynb: parameter RESUME must be bool \(default True\)",
    ),
    (
        "text given a number",
        "03",
        {"CONFIG": 7},
        TypeError,
        r"CONFIG must be str \(default \"cpu\"\), got int 7",
    ),
    (
        "unknown parameter",
        "03",
        {"EPOCHS": 2},
        ValueError,
        r"03_training\.ipynb has no parameter 'EPOCHS'; its parameters are RUN",
    ),
    (
        "override of an unknown setting",
        "03",
        {"OVERRIDES": {"train.learning_rate": 1e-4}},
        ValueError,
        r"03_training\.ipynb: parameter OVERRIDES: unknown key train\.learning_rate; valid keys in train: seed, lr",
    ),
    (
        "override of the wrong type",
        "04",
        {"OVERRIDES": {"data.test_per_dataset": "all"}},
        ValueError,
        r"04_evaluation\.ipynb: parameter OVERRIDES: data\.test_per_dataset: expected an integer, got 'all'",
    ),
    (
        "override without a section",
        "04",
        {"OVERRIDES": {"lr": 1e-4}},
        ValueError,
        r"parameter OVERRIDES: override 'lr' must be section\.key with a section of model, lora",
    ),
]


@pytest.mark.parametrize("case, prefix, params, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_parameter_is_refused_before_the_notebook_runs(
    finished_run, written, case, prefix, params, error, message
):
    with pytest.raises(error, match=message):
        pipeline.run_notebook(NOTEBOOKS[prefix], finished_run, params)
    written.assert_unchanged()


def test_make_reproduce_checks_every_stage_before_running_any(finished_run, written):
    # Stage 03 finished earlier; a typo in its parameters must neither run 01 and 02 again nor unmark 03.
    with pytest.raises(TypeError, match=r"03_training\.ipynb: parameter RESUME must be bool"):
        pipeline.run_notebooks(
            finished_run, {"03_training": {"RESUME": "yes"}}, figures=finished_run / "figures"
        )
    written.assert_unchanged()

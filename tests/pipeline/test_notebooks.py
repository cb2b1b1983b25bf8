"""Papermill executes every notebook in notebooks/ with tiny parameters, in order, in one temporary run
folder, and checks what each recorded. New notebooks are picked up by themselves (and must get tiny
parameters in tests/notebook_params.yaml)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from tiny import shared_seceu_dir, synthetic_experiment_records

from dialoguellm import pipeline
from dialoguellm.runs import load_record

PARAMS_FILE = Path(__file__).resolve().parents[1] / "notebook_params.yaml"
NOTEBOOKS = pipeline.notebook_paths()


def _fill(value: Any, resolve) -> Any:
    if isinstance(value, str):
        whole = re.fullmatch(r"\{(\w+)\}", value)
        if whole:  # a value that is only a placeholder takes the resolved object itself (None included)
            resolved = resolve(whole.group(1))
            return None if resolved is None else str(resolved)
        return re.sub(r"\{(\w+)\}", lambda m: str(resolve(m.group(1))), value)
    if isinstance(value, list):
        return [_fill(v, resolve) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, resolve) for k, v in value.items()}
    return value


@pytest.fixture(scope="session")
def notebook_run(tmp_path_factory, request):
    """Run all notebooks once; returns (run folder, {stem: error or None}, spec)."""
    from iemocap_synth import build_iemocap_tree

    spec = yaml.safe_load(PARAMS_FILE.read_text()) or {}
    run = tmp_path_factory.mktemp("run")
    cache: dict[str, Any] = {}

    def resolve(name: str) -> Any:
        if name not in cache:
            if name == "iemocap_dir":
                cache[name] = build_iemocap_tree(tmp_path_factory.mktemp("iemocap"))
            elif name == "tiny_model":
                cache[name] = request.getfixturevalue("tiny_model_dir")
            elif name == "seceu_dir":
                cache[name] = None if shared_seceu_dir() is None else str(shared_seceu_dir())
            elif name == "tmp":
                cache[name] = tmp_path_factory.mktemp("scratch")
            else:
                raise KeyError(f"unknown placeholder {{{name}}} in {PARAMS_FILE}")
        return cache[name]

    # Notebook 05 shows the prompt-probe and the retrained-ablation records; synthetic ones in the run's folder
    # (real ones are made in tests/experiments/test_experiments.py and test_probes_experiment.py) exercise it
    # and the figures it draws.
    synthetic_experiment_records(run / "experiments" / "probes_cpu", experiment="probes_cpu")
    synthetic_experiment_records(run / "experiments" / "ablations_cpu")
    # Notebook 09 and its figure read a learning curve's records: synthetic ones as well.
    synthetic_experiment_records(run / "experiments" / "learning_curve_cpu", experiment="learning_curve_cpu")
    errors: dict[str, Any] = {}
    for notebook in NOTEBOOKS:
        if notebook.stem not in spec:
            errors[notebook.stem] = f"{notebook.name} has no tiny parameters: add an entry to {PARAMS_FILE}"
            continue
        params = _fill(spec[notebook.stem].get("parameters") or {}, resolve)
        try:
            # no figures folder given: the run's own, as under `make reproduce`
            pipeline.run_notebook(notebook, run, params, timeout=600)
            errors[notebook.stem] = None
        except Exception as err:  # keep going: later notebooks report their own state
            errors[notebook.stem] = err
    return run, errors, spec


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_records(notebook, notebook_run):
    run, errors, spec = notebook_run
    assert errors[notebook.stem] is None, f"{notebook.name} failed: {errors[notebook.stem]}"
    record = load_record(run, notebook.stem)
    assert record, f"{notebook.name} recorded nothing"
    for key in spec[notebook.stem].get("expect_keys", []):
        assert key in record, f"{notebook.name} did not record {key!r}"
    executed = json.loads((run / "notebooks" / notebook.name).read_text())
    assert not [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_curation_notebook_counts(notebook_run):
    run, errors, _ = notebook_run
    assert errors["01_data_curation"] is None
    record = load_record(run, "01_data_curation")
    assert record["utterances"]["meld"] == {"train": 9989, "dev": 1109, "test": 2610}
    assert record["dialogues"]["emorynlp"] == {"train": 659, "dev": 89, "test": 79}
    assert record["utterances"]["iemocap"] == {"train": 11 * 6, "dev": 6, "test": 18}  # the synthetic tree
    assert record["test_labels"]["meld"]["fear"] == 50
    assert (run / "figures" / record["figure"]).stat().st_size > 10_000
    assert (run / "data" / "iemocap" / "test.parquet").is_file()


@pytest.mark.slow
def test_figures_regenerate_from_a_run(notebook_run, tmp_path):
    from dialoguellm.plots.registry import FIGURES, missing_inputs, regenerate

    run, errors, _ = notebook_run
    assert not any(errors.values())
    written = regenerate(run, tmp_path)
    missing = set(missing_inputs(run))
    # SECEU needs SECEU_DIR (the retrained ablations' input is the synthetic file notebook_run wrote)
    allowed: set[str] = set()
    if load_record(run, "07_emotional_intelligence").get("status") != "scored":  # no SECEU files here
        allowed |= {"seceu_item_distances"}
    allowed |= {"pitfalls"}  # `make pitfalls` writes its records; no notebook does
    assert missing <= allowed, f"the notebooks left no inputs for {missing - allowed}"
    assert {p.stem for p in written} == set(FIGURES) - missing, "a registered figure was not redrawn"
    for path in written:
        assert path.parent == tmp_path and path.stat().st_size > 10_000, path


@pytest.mark.slow
def test_the_notebooks_write_only_into_their_run_folder(notebook_run, tracked_at_start):
    from checkout import tracked_state

    run, errors, _ = notebook_run
    assert not any(errors.values())
    if tracked_at_start is None:
        pytest.skip("not a git checkout")
    assert tracked_state() == tracked_at_start, "a notebook run changed tracked files (figures/?)"
    assert len(list((run / "figures").glob("*.png"))) >= 10


def _code_cells(notebook: Path) -> list[dict]:
    return [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_shape(notebook):
    """Teaching first, one parameters cell of literals, no functions or classes, stored without outputs."""
    cells = json.loads(notebook.read_text())["cells"]
    assert cells[0]["cell_type"] == "markdown" and len("".join(cells[0]["source"])) > 300, (
        "open with what the paper did"
    )
    code = _code_cells(notebook)
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{notebook.name}: exactly one code cell must be tagged 'parameters'"
    names = set()
    for stmt in ast.parse("".join(tagged[0]["source"])).body:
        assert isinstance(stmt, ast.Assign), f"{notebook.name}: the parameters cell holds assignments only"
        ast.literal_eval(stmt.value)  # plain literals: papermill injects overrides after this cell
        names |= {t.id for t in stmt.targets}
    assert {"RUN_DIR", "FIGURES_DIR", "DATA_DIR"} <= names
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None, f"{notebook.name} has outputs"
        tree = ast.parse("".join(cell["source"]))
        defined = [
            n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        assert not defined, f"{notebook.name} defines {defined[0].name}: move it into the library"


@pytest.mark.slow
def test_run_summary_reports_every_stage(notebook_run):
    from dialoguellm.report import run_report as run_summary

    run, errors, _ = notebook_run
    assert not any(errors.values())
    text = run_summary(run)
    assert "| meld | 24 |" in text and "| emorynlp | 24 |" in text  # 04's tiny test sample
    assert "meld/majority | 48.1 | 31.3" in text  # the majority baseline on MELD's full test set
    # the probes as experiment_table renders the run's probes_cpu records (synthetic, 40 test lines per corpus)
    assert (
        "probes_cpu (test sample" in text
        and "| descriptions (described lines only) | meld | 14 | 3 |" in text
    )
    for section in ("Neutral share", "SECEU"):
        assert section in text


@pytest.mark.slow
def test_the_ablations_notebook_shows_the_probe_experiments_records(notebook_run):
    """Notebook 05 runs no probe: it shows the run's own probes_cpu records (synthetic here), draws their
    figure and records each arm against the arm it is compared with."""
    run, errors, _ = notebook_run
    assert errors["05_ablations"] is None
    probes = load_record(run, "05_ablations")["probes"]
    assert probes["status"] == "shown" and probes["source"] == str(run / "experiments" / "probes_cpu")
    assert (run / "figures" / probes["figure"]).stat().st_size > 10_000
    assert "base/meld" in probes["arms"] and "against" not in probes["arms"]["base/meld"]
    described = probes["arms"]["descriptions/meld"]
    assert described["against"] == "video_instruction" and described["n_compared"] == described["n"] < 40
    assert "descriptions/emorynlp" not in probes["arms"]  # EmoryNLP has no described lines
    assert not (run / "probes").exists()  # the hand-built probes' folder is gone


def test_run_summary_without_records_says_what_to_do(tmp_path):
    from dialoguellm.report import run_report as run_summary

    with pytest.raises(FileNotFoundError, match="run `make reproduce` first"):
        run_summary(tmp_path)


@pytest.mark.slow
def test_book_of_the_executed_notebooks(notebook_run, tmp_path):
    """``make book`` on this tiny run: a page per executed notebook with every figure it drew (test_book.py)."""
    from tiny import assert_book_complete

    from dialoguellm.interop import book

    run, errors, _ = notebook_run
    assert not any(errors.values())
    assert_book_complete(run, book.build_book(run, tmp_path / "book").parent)

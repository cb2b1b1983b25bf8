"""The papermill pipeline: stages run in order into one run folder, and a run stopped part-way continues
where it stopped, redoing only what is not finished or whose inputs changed."""

from __future__ import annotations

import io
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from dialoguellm import pipeline


def _notebook(path, body: str) -> None:
    nb = new_notebook(
        cells=[
            new_markdown_cell("A stage."),
            new_code_cell(
                'RUN_DIR = None\nFIGURES_DIR = None\nDATA_DIR = None\nFAIL_IF = ""',
                metadata={"tags": ["parameters"]},
            ),
            new_code_cell(body),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def stages(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    # each stage appends its name to a log, so we can see what ran; stage 02 fails while a flag file exists
    append = "pathlib.Path(RUN_DIR, 'log.txt').open('a').write('{}\\n')"
    _notebook(folder / "01_first.ipynb", "import pathlib\n" + append.format("01"))
    fail = "assert not (FAIL_IF and pathlib.Path(FAIL_IF).exists()), 'flag present'\n"
    _notebook(folder / "02_second.ipynb", "import pathlib\n" + fail + append.format("02"))
    return folder


def _log(run):
    return (run / "log.txt").read_text().split()


@pytest.mark.slow
def test_a_stopped_run_continues_where_it_stopped(stages, tmp_path):
    run, flag = tmp_path / "run", tmp_path / "flag"
    flag.touch()
    params = {"02_second": {"FAIL_IF": str(flag)}}
    with pytest.raises(Exception, match="flag present"):
        pipeline.run_notebooks(run, params, figures=tmp_path / "fig", notebooks_dir=stages)
    assert _log(run) == ["01"] and not (run / "stages" / "02_second.json").exists()
    flag.unlink()
    report = pipeline.run_notebooks(run, params, figures=tmp_path / "fig", notebooks_dir=stages)
    assert _log(run) == ["01", "02"]  # 01 was not run again
    assert [s.get("skipped", False) for s in report["stages"]] == [True, False]
    assert json.loads((run / "pipeline.json").read_text())["peak_memory_gb"] > 0
    # a changed parameter of 01 invalidates 01 and everything after it
    pipeline.run_notebooks(
        run, {**params, "01_first": {"FAIL_IF": "x"}}, figures=tmp_path / "fig", notebooks_dir=stages
    )
    assert _log(run) == ["01", "02", "01", "02"]


def test_progress_bars_are_text_lines_under_the_pipeline(monkeypatch):
    from tqdm.std import tqdm as text_tqdm

    from dialoguellm.progress import PROGRESS_ENV, progress_bar

    monkeypatch.setenv(PROGRESS_ENV, "text")
    out = io.StringIO()
    bar = progress_bar(range(3), desc="scoring", file=out)
    assert type(bar) is text_tqdm and bar.mininterval == 30.0
    assert list(bar) == [0, 1, 2] and "scoring" in out.getvalue()
    monkeypatch.delenv(PROGRESS_ENV)
    assert list(progress_bar(range(3), disable=True)) == [0, 1, 2]

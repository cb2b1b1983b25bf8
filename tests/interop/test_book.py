"""``make book`` (dialoguellm/interop/book.py): the README, docs/ and a run's executed notebooks as a static
site. Here on copies of the notebooks with figure outputs put in (no kernel); tests/pipeline/test_notebooks.py builds
the book of the notebooks its tiny run executed. ``tiny.assert_book_complete`` reads the HTML itself."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from tiny import assert_book_complete

from dialoguellm import pipeline
from dialoguellm.interop import book

pytest.importorskip("myst_nb")


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2))
    axes.plot([0, 1], [1, 0])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _fake_run(run: Path) -> Path:
    """Copies of the repository's notebooks as if executed: notebook k ends with k % 3 figures."""
    import nbformat

    (run / "notebooks").mkdir(parents=True)
    png = _png()
    for k, path in enumerate(pipeline.notebook_paths()):
        nb = nbformat.read(path, as_version=4)
        last = [c for c in nb.cells if c.cell_type == "code"][-1]
        last.outputs = [
            nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})
            for _ in range(k % 3)
        ]
        nbformat.write(nb, run / "notebooks" / path.name)
    return run


def test_without_executed_notebooks_it_says_what_to_run(tmp_path, capsys):
    assert book.main(["--run-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "make reproduce" in err and str(tmp_path / "notebooks") in err
    assert not (tmp_path / "book").exists()


@pytest.mark.slow
def test_book_has_every_notebook_page_and_figure(tmp_path):
    run = _fake_run(tmp_path / "run")
    index = book.build_book(run)
    assert index == run / "book" / "index.html"
    assert_book_complete(run, run / "book")
    assert sorted(p.name for p in run.iterdir()) == ["book", "notebooks"]  # nothing else written in the run

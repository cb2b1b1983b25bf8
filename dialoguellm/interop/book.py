"""``make book``: the README, docs/ and a run's executed notebooks (with their figures) as a static site.

    python -m dialoguellm.interop.book [--run-dir runs/latest] [--out RUN_DIR/book]

Sphinx with MyST-NB and the Sphinx Book Theme (the engine of Jupyter Book 1), all from PyPI and offline: the
notebooks are shown as executed by ``make reproduce`` (``RunLayout.notebooks``), never run again. The site
is staged in a temporary folder laid out like the repository (``index.md`` is the README, ``docs/``, the
executed ``notebooks/``), so the README's links land on the pages, and written to ``RUN_DIR/book`` (inside
the ignored run folder: building changes no tracked file) only once the build is complete.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dialoguellm.io import atomic_folder
from dialoguellm.runs import REPO_DIR, RunLayout

CONF = """# Written by dialoguellm.interop.book for one build.
project = "dialoguellm"
extensions = ["myst_nb"]
html_theme = "sphinx_book_theme"
html_title = "dialoguellm: DialogueLLM reproduced"
nb_execution_mode = "off"          # the notebooks are shown as make reproduce executed them
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
# Links to source files (dialoguellm/..., results/...) point outside the site; they stay plain text.
suppress_warnings = ["myst.xref_missing", "myst.header", "misc.highlighting_failure", "toc.not_included"]
html_theme_options = {{"show_toc_level": 2}}
html_show_sourcelink = False
root_doc = "index"
source_suffix = {{".md": "myst-nb", ".ipynb": "myst-nb"}}
html_context = {{"run": {run!r}}}
"""


def executed_notebooks(run_dir: str | os.PathLike) -> list[Path]:
    """The executed notebooks of a run folder, in order; an error naming what to run when there are none."""
    folder = RunLayout(Path(run_dir)).notebooks
    found = sorted(folder.glob("*.ipynb"))
    if not found:
        raise FileNotFoundError(
            f"No executed notebooks in {folder}: the book shows a finished run. Run `make reproduce` first "
            "(it writes runs/latest), or pass RUN_DIR=runs/<name> (make book RUN_DIR=...) for another run."
        )
    return found


def stage_sources(run_dir: str | os.PathLike, target: Path, repo_dir: Path = REPO_DIR) -> list[str]:
    """Lay the site's sources out in ``target``: README as ``index.md`` with a table of contents, docs/, the
    executed notebooks and ``conf.py``. Returns the pages in table-of-contents order."""
    notebooks = executed_notebooks(run_dir)
    (target / "docs").mkdir(parents=True)
    (target / "notebooks").mkdir()
    docs = sorted((repo_dir / "docs").glob("*.md"))
    for page in docs:
        shutil.copy2(page, target / "docs" / page.name)
    for notebook in notebooks:
        shutil.copy2(notebook, target / "notebooks" / notebook.name)
    pages = [f"notebooks/{n.stem}" for n in notebooks] + [f"docs/{d.stem}" for d in docs]
    toc = "\n".join(
        [
            "",
            "```{toctree}",
            ":caption: The notebooks (executed)",
            ":maxdepth: 1",
            "",
            *[p for p in pages if p.startswith("notebooks/")],
            "```",
            "",
            "```{toctree}",
            ":caption: Documentation",
            ":maxdepth: 1",
            "",
            *[p for p in pages if p.startswith("docs/")],
            "```",
            "",
        ]
    )
    readme = (repo_dir / "README.md").read_text(encoding="utf-8")
    (target / "index.md").write_text(readme + "\n" + toc, encoding="utf-8")
    (target / "conf.py").write_text(CONF.format(run=str(Path(run_dir).resolve())), encoding="utf-8")
    return pages


def build_book(
    run_dir: str | os.PathLike, out: str | os.PathLike | None = None, repo_dir: Path = REPO_DIR
) -> Path:
    """Build the site of ``run_dir`` into ``out`` (default ``RUN_DIR/book``); returns its ``index.html``."""
    out = Path(out) if out else RunLayout(Path(run_dir)).root / "book"
    with tempfile.TemporaryDirectory(prefix="dialoguellm-book-") as scratch:
        source = Path(scratch) / "source"
        stage_sources(run_dir, source, repo_dir)
        # MyST-NB keeps its image and cache folders beside the output folder, so both stay in scratch.
        html = Path(scratch) / "html"
        command = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(Path(scratch) / "doctrees")]
        built = subprocess.run([*command, str(source), str(html)], capture_output=True, text=True)
        if built.returncode != 0:
            raise RuntimeError(f"Sphinx could not build the book of {run_dir}:\n{built.stderr[-4000:]}")
        with atomic_folder(out) as final:
            shutil.copytree(html, final, dirs_exist_ok=True)
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", default=str(REPO_DIR / "runs" / "latest"), help="default: runs/latest")
    parser.add_argument("--out", default=None, help="default: RUN_DIR/book")
    args = parser.parse_args(argv)
    try:
        index = build_book(args.run_dir, args.out)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"dialoguellm book: {err}", file=sys.stderr)
        return 2
    print(f"The book: {index} (open it in a browser)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

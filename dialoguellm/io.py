"""Small file helpers shared by every stage: writes are atomic (temporary name, then rename), so an
interrupted run never leaves a half-written file that looks finished; reads of a user's text file
(``read_text_file``, ``text_lines``, ``csv_rows``) tell a damaged file (cut short, binary bytes, broken
quoting) apart from a valid one and raise the caller's error type naming the file and the line."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path``. The previous
    folder is moved aside first and removed only once the new one is in place; on error it stays as it was."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(path: str | os.PathLike) -> bool:
    """Undo a half-finished ``atomic_folder`` replacement: when ``path`` is missing but its previous version
    (``.<name>.old``) exists, because a kill came between the two renames, move it back. True if it did."""
    target = Path(path)
    old = target.with_name(f".{target.name}.old")
    if not target.exists() and old.is_dir():
        os.replace(old, target)
        return True
    return False


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(
            json.dumps(data, indent=2, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8"
        )
    return Path(path)


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in any error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    text = read_text_file(path, fix="Restore the file or write it again.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}"
        ) from None
    except RecursionError:  # a file of thousands of nested brackets: damage, not data
        raise ValueError(f"{path} is not valid JSON: nested too deeply. Restore the file.") from None


def _jsonable(value: Any) -> Any:
    # numpy scalars/arrays and Paths appear in results; write them as plain JSON values.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serialisable")


# ------------------------------------------------------------------------------------ reading text


def read_text_file(
    path: str | os.PathLike,
    error: type[Exception] = ValueError,
    fix: str = "Re-save it as UTF-8 (e.g. iconv -f cp1252 -t utf-8).",
    encoding: str = "utf-8-sig",
    fallback: str | None = None,
) -> str:
    """The text of a UTF-8 file (a leading BOM is dropped), or ``error`` naming the file and the line.

    A file that ends inside a multi-byte character was cut short (an interrupted download or copy); a NUL
    byte never occurs in a text file and means binary damage. ``fix`` ends the message of other encodings,
    unless a ``fallback`` encoding (e.g. Latin-1, which decodes any bytes) is given to read them instead.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        if err.reason == "unexpected end of data":  # only raised for an incomplete character at the very end
            raise error(
                f"{path}, line {line}: the file ends in the middle of a UTF-8 character, so it was cut short "
                "(an interrupted download or copy). Download or copy it again."
            ) from None
        if fallback is None:
            raise error(
                f"{path} is not UTF-8 text (line {line}, byte {err.start}: {err.reason}). {fix}"
            ) from None
        text = data.decode(fallback)
    nul = text.find("\x00")
    if nul >= 0:
        raise error(
            f"{path}, line {text.count(chr(10), 0, nul) + 1}: a NUL byte, which no text file holds: the file "
            "is damaged (binary data in it). Restore it from its source."
        )
    return text


def text_lines(text: str) -> list[str]:
    """Lines split at \\n, \\r\\n or \\r only. ``str.splitlines`` also splits at U+0085, U+2028 and
    form feeds, which occur inside utterances (a cp1252 ellipsis read as Latin-1) and would cut a line in two."""
    lines = _LINE_BREAK.split(text)
    return lines[:-1] if lines and lines[-1] == "" else lines


def csv_rows(
    path: str | os.PathLike, text: str, error: type[Exception] = ValueError
) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of a comma-separated ``text`` read from ``path``: first the header, then each row
    with the line it starts on. Blank lines are skipped.

    Raises ``error`` naming the row for what a damaged file shows: a quote never closed or followed by
    text, a row with fewer or more fields than the header (a file cut short, a stray delimiter), a row that
    repeats the header (two files joined), and a last row with no line break after it while the file has
    them (cut short inside an unquoted field, which would otherwise read as a shorter value).
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    start = 1
    last = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            what = (
                "a quoted field is never closed: its opening quote has no closing quote, or the file is cut "
                "short inside it"
                if "end of data" in str(err)
                else f"broken quoting ({err}): a quoted field is not closed where it should be, or a quote "
                "inside a field is not doubled"
            )
            raise error(
                f"{path}, row {start}: {what}. Fix the quotes of that row (a quote inside a quoted field is "
                'written twice: ""), or restore the file.'
            ) from None
        row, start = start, reader.line_num + 1
        if not fields:
            continue
        last = row
        if header is None:
            header = fields
            yield row, fields
            continue
        if fields == header:
            raise error(
                f"{path}, row {row}: repeats the header line, as if two files were joined. Delete that line "
                "(and check that the rows after it belong in this file)."
            )
        if len(fields) < len(header):
            raise error(
                f"{path}, row {row}: {len(fields)} field(s) where the header has {len(header)}. The row is cut "
                "short: the file ends early (an interrupted download), a line break splits the row, or a quote "
                "is not closed. Restore the file, or fix that row."
            )
        if len(fields) > len(header):
            raise error(f"{path}, row {row}: more fields than the header has; check the quoting of that row.")
        yield row, fields
    if last > 1 and text and text[-1] not in '\r\n"':
        raise error(
            f"{path}, row {last}: the file ends inside this row (no line break after it, unlike the lines "
            "before), so it looks cut short, e.g. by an interrupted download. Download it again; if the row is "
            "complete, end the file with a line break."
        )


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A saved prediction frame (``scoring.predictions.save_predictions``); example_id and dialogue_id are
    read as text, so ids like '001' survive."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Prediction file not found: {path}; pass a <split>_<corpus>_predictions.csv."
        )
    return pd.read_csv(
        path, dtype={"example_id": str, "dialogue_id": str}, keep_default_na=False, na_values=[""]
    )


# -------------------------------------------------------------------------------- result file names
# The one place that spells the names of the files a scored split leaves; ``runs.RunLayout`` builds its paths
# from these, and every other writer and reader asks one or the other (tests/project/test_file_names.py fails
# when a module spells them itself). The names on disk are those of every committed result: do not change them.
PREDICTIONS_SUFFIX = "_predictions.csv"
METRICS_SUFFIX = "_metrics.json"
PER_CLASS_SUFFIX = "_per_class.csv"


def split_stem(split: str, corpus: str) -> str:
    """``<split>_<corpus>``: the stem of a scored split's files (``test_meld``; ``*`` matches any)."""
    return f"{split}_{corpus}"


def baseline_stem(corpus: str, baseline: str, split: str) -> str:
    """``<corpus>_<baseline>_<split>``: the stem of a baseline's prediction file (``meld_tfidf_lr_test``)."""
    return f"{corpus}_{baseline}_{split}"


def predictions_name(stem: str) -> str:
    """``<stem>_predictions.csv``: a prediction frame (``scoring.predictions.save_predictions``); ``*`` as the
    stem gives the glob pattern of every one."""
    return stem + PREDICTIONS_SUFFIX


def metrics_name(stem: str) -> str:
    """``<stem>_metrics.json``: the metrics of a prediction frame (``metrics.save_metrics``)."""
    return stem + METRICS_SUFFIX


def per_class_name(stem: str) -> str:
    """``<stem>_per_class.csv``: the per-class table of those metrics (``metrics.save_metrics``)."""
    return stem + PER_CLASS_SUFFIX


def stem_of(path: str | os.PathLike) -> str:
    """The stem of a prediction, metrics or per-class file's name (``test_meld`` of ``test_meld_predictions.csv``);
    an error for any other file."""
    name = Path(path).name
    for suffix in (PREDICTIONS_SUFFIX, METRICS_SUFFIX, PER_CLASS_SUFFIX):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    raise ValueError(
        f"{path} is not a prediction, metrics or per-class file (no {PREDICTIONS_SUFFIX} ending)."
    )


def split_predictions(folder: str | os.PathLike, split: str) -> dict[str, Path]:
    """``corpus -> <folder>/<split>_<corpus>_predictions.csv``, every one there, in name order."""
    prefix = split_stem(split, "")
    paths = sorted(Path(folder).glob(predictions_name(split_stem(split, "*"))))
    return {stem_of(path)[len(prefix) :]: path for path in paths}

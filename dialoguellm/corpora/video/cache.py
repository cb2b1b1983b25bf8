"""The append-only description cache (``DescriptionCache``, one JSON line per result) and what reads
it: ``load_descriptions`` (``split -> {clip_id: text}``, what the prompts read), coverage and lengths."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.corpora import readers
from dialoguellm.corpora.video.clips import ClipRef, FrameError, clip_refs, sample_frames
from dialoguellm.runs import RunLayout

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------- cache
def cache_path(run_dir_or_cache: str | os.PathLike) -> Path:
    """The cache file of a run folder (``<run>/descriptions/descriptions.jsonl``), or the path itself if it
    names a ``.jsonl`` file."""
    p = Path(run_dir_or_cache)
    return p if p.suffix == ".jsonl" else RunLayout(p).descriptions


def cache_key(split: str, clip_id: str, describer: str, model: str, prompt_id: str) -> str:
    """The identity of one description: which clip, made by what, with which prompt."""
    return f"{split}/{clip_id}|{describer}|{model}|{prompt_id}"


def _cache_record_problem(rec: Any) -> str | None:
    """What makes ``rec`` (one parsed cache line) unusable, or None: the fields ``describe_clips`` writes and
    the readers use, with their types, so a damaged line is refused when read rather than failing later."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("key"), str) or rec.get("status") not in ("ok", "failed"):
        return "needs a text 'key' and a 'status' of ok or failed"
    for name in ("split", "clip_id", "describer", "model"):
        if not isinstance(rec.get(name), (str, type(None))):
            return f"field {name!r} is not text"
    if rec["status"] == "ok":
        if not all(isinstance(rec.get(name), str) for name in ("split", "clip_id", "description")):
            return "an ok record needs text 'split', 'clip_id' and 'description'"
        if not rec["description"].strip() or "\x00" in rec["description"]:
            return "an empty or damaged description"
    return None


class DescriptionCache:
    """Append-only JSONL of description results; the last record of a key wins.

    Each result is one line written with a single ``os.write`` on an ``O_APPEND`` descriptor, so a killed
    process leaves whole lines plus at most one torn last line. A torn last line is ignored when reading
    and cut off before the next append, so that clip is simply described again. Successful keys are never
    written twice by ``describe_clips``, so the file has no duplicates.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = cache_path(path)
        self.records: dict[str, dict[str, Any]] = {}
        self._torn_at: int | None = None
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Read the file again (missing file: empty cache)."""
        self.records = {}
        self._torn_at = None
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            self._torn_at = complete
            log.warning(
                "%s: ignoring a torn last line (%d bytes) left by an interrupted run",
                self.path,
                len(data) - complete,
            )
        for n, line in enumerate(data[:complete].split(b"\n")[:-1], start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
                rec = None
            problem = _cache_record_problem(rec)
            if problem:
                raise ValueError(
                    f"{self.path}, line {n}: not a valid cache record ({problem}). The cache is append-only and "
                    "only its last line can be torn by a crash; delete that line (or the file, to describe "
                    "everything again)."
                )
            self.records[rec["key"]] = rec

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line and remember it."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._torn_at is not None:
                with open(self.path, "r+b") as fh:
                    fh.truncate(self._torn_at)
                self._torn_at = None
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(line)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            finally:
                os.close(fd)
            self.records[record["key"]] = record

    def status(self, key: str) -> str | None:
        """``"ok"``, ``"failed"`` or None (never tried)."""
        rec = self.records.get(key)
        return rec["status"] if rec else None

    def ok_records(self) -> list[dict[str, Any]]:
        """The latest successful record of every key, in file order."""
        return [r for r in self.records.values() if r["status"] == "ok"]


# ------------------------------------------------------------------------------------------- reading
SPLITS = ("train", "dev", "test")


def _cached_descriptions(
    source: str | os.PathLike, describer: str | None = None, model: str | None = None
) -> dict[tuple[str, str], str]:
    """``(split, clip_id) -> description`` of a cache, the latest record of a clip winning."""
    path = cache_path(source)
    if not path.is_file():
        return {}
    out: dict[tuple[str, str], str] = {}
    for rec in DescriptionCache(path).ok_records():
        if describer is not None and rec.get("describer") != describer:
            continue
        if model is not None and rec.get("model") != model:
            continue
        out.pop((rec["split"], rec["clip_id"]), None)  # re-insert so "latest wins" also orders the dict
        out[(rec["split"], rec["clip_id"])] = rec["description"]
    return out


def load_descriptions(
    source: str | os.PathLike, describer: str | None = None, model: str | None = None
) -> dict[str, dict[str, str]]:
    """The one description loader: ``split -> {clip_id: description}`` (every split of ``SPLITS`` present,
    empty when the cache has none or there is no cache).

    ``source`` is a run folder (its ``RunLayout.descriptions`` is read) or the cache file. MELD reuses clip
    ids in every split, so the map is keyed by split first and clips of two splits are never mixed. When a
    clip has descriptions from several describers/models/prompts, the latest wins; pass ``describer`` and/or
    ``model`` to choose.
    """
    out: dict[str, dict[str, str]] = {split: {} for split in SPLITS}
    for (split, clip_id), text in _cached_descriptions(source, describer, model).items():
        out.setdefault(split, {})[clip_id] = text
    return out


def example_items(
    clips: Sequence[ClipRef],
    descriptions: Mapping[str, Mapping[str, str]],
    k: int = 3,
    n_frames: int = 4,
    max_side: int = 384,
) -> list[dict[str, Any]]:
    """Up to ``k`` described clips with a file, as ``{title, frames, description}`` for
    ``plots.corpora.plot_frames_with_descriptions``. Clips that no longer decode are passed over."""
    items: list[dict[str, Any]] = []
    for ref in clips:
        if len(items) >= k:
            break
        text = descriptions.get(ref.split, {}).get(ref.clip_id)
        if text is None or ref.path is None:
            continue
        try:
            frames = sample_frames(ref.path, n_frames=n_frames, max_side=max_side)
        except FrameError:
            continue
        items.append({"title": ref.uid, "frames": frames, "description": text})
    return items


def coverage_by_split(records: Any, run_dir_or_cache_path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Per split of the curated MELD records: clips, described clips, and the share described."""
    table = _cached_descriptions(run_dir_or_cache_path)
    counts: Counter[str] = Counter()
    described: Counter[str] = Counter()
    for ref in clip_refs(records):
        counts[ref.split] += 1
        described[ref.split] += (ref.split, ref.clip_id) in table
    return {
        s: {
            "clips": counts[s],
            "described": described[s],
            "share": described[s] / counts[s] if counts[s] else 0.0,
        }
        for s in counts
    }


def described_label_shares(split: Any, described: Mapping[str, str]) -> pd.DataFrame:
    """Label shares of one MELD split's utterances with a description beside those of the whole split.

    ``described`` is that split's ``clip_id -> text`` (``load_descriptions(...)[split]``). When the described
    clips are a skewed sample (the shipped 191 test clips hold 35% neutral against 48% in the test set), a
    with/without-description comparison on them mixes the descriptions' effect with the label mix's.
    """
    frame = readers.split_frame(split)
    inside = frame["clip_id"].isin(set(described))
    table = pd.DataFrame(
        {
            "described": frame.loc[inside, "label"].value_counts(),
            "split": frame["label"].value_counts(),
        }
    ).fillna(0)
    table = table.astype(int).sort_values("split", ascending=False)
    table["described_share"] = table["described"] / max(int(inside.sum()), 1)
    table["split_share"] = table["split"] / max(len(frame), 1)
    return table


def description_lengths(run_dir_or_cache_path: str | os.PathLike) -> list[int]:
    """Word counts of the descriptions in a cache."""
    return [len(text.split()) for text in _cached_descriptions(run_dir_or_cache_path).values()]

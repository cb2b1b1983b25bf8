"""MELD clips: which clip each curated record names, where its file is in a MELD.Raw folder
(``find_clips``), and the frames decoded from it (``sample_frames``, PyAV)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # PIL is imported lazily: the import describer and the cache need no imaging stack.
    from PIL.Image import Image


# MELD.Raw folder of each split (the archive's own names; the test folder really is "output_repeated...").
MELD_SPLIT_DIRS: dict[str, str] = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
CLIP_ID_PATTERN = re.compile(r"dia\d+_utt\d+")


# --------------------------------------------------------------------------------------------- clips
@dataclass(frozen=True)
class ClipRef:
    """One clip to describe: its split, its MELD id (``dia{D}_utt{U}``) and its file, if found."""

    split: str
    clip_id: str
    path: Path | None = None

    @property
    def uid(self) -> str:
        """``split/clip_id``: unique across MELD, unlike the clip id alone."""
        return f"{self.split}/{self.clip_id}"


@dataclass
class ClipIndex:
    """Result of ``find_clips``: the clips with a file, the ones without, and where we looked."""

    clips_dir: Path
    found: list[ClipRef] = field(default_factory=list)
    missing: list[ClipRef] = field(default_factory=list)

    def coverage(self) -> dict[str, dict[str, int]]:
        """Per split: clips found, clips missing, total."""
        out: dict[str, dict[str, int]] = {}
        for ref, key in [(r, "found") for r in self.found] + [(r, "missing") for r in self.missing]:
            row = out.setdefault(ref.split, {"found": 0, "missing": 0, "total": 0})
            row[key] += 1
            row["total"] += 1
        return out

    def report(self, show: int = 10) -> str:
        """A readable summary: counts per split and the first missing clips with the file we expected."""
        lines = [f"Clips folder: {self.clips_dir}"]
        for split, row in sorted(self.coverage().items()):
            lines.append(f"  {split}: {row['found']} of {row['total']} clips found, {row['missing']} missing")
        if self.missing:
            lines.append(f"Missing clips (first {min(show, len(self.missing))} of {len(self.missing)}):")
            for ref in self.missing[:show]:
                expected = self.clips_dir / MELD_SPLIT_DIRS.get(ref.split, ref.split) / f"{ref.clip_id}.mp4"
                lines.append(f"  {ref.uid}: expected {expected}")
            lines.append(
                "Missing clips are skipped (no description). MELD.Raw has train_splits/, dev_splits_complete/ "
                "and output_repeated_splits_test/; a few MELD clips are known to be absent or broken."
            )
        return "\n".join(lines)


def clip_refs(records: Any, splits: Sequence[str] | None = None) -> list[ClipRef]:
    """The distinct (split, clip id) pairs of curated records, in record order.

    ``records`` is a ``datasets.DatasetDict`` (as returned by ``corpora.readers.load_meld``), a mapping of
    split -> rows, or an iterable of row dicts with ``split`` and ``clip_id``. Rows without a clip id
    (other corpora) are skipped.
    """
    rows: Iterable[Mapping[str, Any]]
    if isinstance(records, Mapping):  # DatasetDict is a dict of splits
        chosen = [s for s in records.keys() if splits is None or s in splits]
        rows = (row for s in chosen for row in _iter_rows(records[s], default_split=s))
    else:
        rows = _iter_rows(records)
    seen: set[tuple[str, str]] = set()
    out: list[ClipRef] = []
    for i, row in enumerate(rows):
        split, clip_id = row.get("split"), row.get("clip_id")
        if not clip_id:
            continue
        if not split:
            raise ValueError(
                f"Record {i} (clip {clip_id!r}) has no split; MELD clip ids repeat across splits."
            )
        if splits is not None and split not in splits:
            continue
        if (split, clip_id) not in seen:
            seen.add((split, clip_id))
            out.append(ClipRef(str(split), str(clip_id)))
    return out


def _iter_rows(rows: Any, default_split: str | None = None) -> Iterable[Mapping[str, Any]]:
    # A datasets.Dataset: read only the two columns needed (much faster than whole rows).
    if hasattr(rows, "select_columns") and hasattr(rows, "column_names"):
        cols = [c for c in ("split", "clip_id") if c in rows.column_names]
        rows = rows.select_columns(cols)
    for row in rows:
        if default_split is not None and not row.get("split"):
            row = {**row, "split": default_split}
        yield row


def find_clips(records: Any, clips_dir: str | os.PathLike, splits: Sequence[str] | None = None) -> ClipIndex:
    """Map each MELD clip of ``records`` to its ``.mp4`` under ``clips_dir`` (MELD.Raw layout).

    Looks in ``clips_dir/<split folder>/<clip_id>.mp4`` first (``MELD_SPLIT_DIRS``); where a split folder is
    not there, it also accepts the split folder anywhere below ``clips_dir`` (archives unpack one level
    deeper, e.g. ``MELD.Raw/train/train_splits``). Files named with a leading ``._`` (macOS) are ignored.
    """
    root = Path(clips_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Clips folder not found: {root}. Pass CLIPS_DIR as the folder that holds the MELD.Raw split folders "
            f"({', '.join(MELD_SPLIT_DIRS.values())}), or leave it None to import the shipped descriptions."
        )
    split_dirs: dict[str, Path | None] = {}
    for split, name in MELD_SPLIT_DIRS.items():
        direct = root / name
        if direct.is_dir():
            split_dirs[split] = direct
        else:
            deeper = sorted(p for p in root.glob(f"**/{name}") if p.is_dir())
            split_dirs[split] = deeper[0] if deeper else None
    index = ClipIndex(clips_dir=root)
    for ref in clip_refs(records, splits):
        folder = split_dirs.get(ref.split)
        candidate = folder / f"{ref.clip_id}.mp4" if folder is not None else None
        if candidate is not None and candidate.is_file():
            index.found.append(ClipRef(ref.split, ref.clip_id, candidate))
        else:
            index.missing.append(ref)
    return index


# -------------------------------------------------------------------------------------------- frames
class FrameError(RuntimeError):
    """A clip could not be decoded; the message names the file."""


def sample_frames(path: str | os.PathLike, n_frames: int = 4, max_side: int = 384) -> list[Image]:
    """Decode ``n_frames`` RGB frames spread evenly over a clip (``n_frames=1``: the middle frame).

    Frame i is the first frame at or after the centre of the i-th of ``n_frames`` equal parts of the clip,
    so the frames never sit on the (often black or cut) first and last frames. Each frame is shrunk to at
    most ``max_side`` pixels on its longer side, keeping its aspect ratio.

    Raises ``FrameError`` (naming the file) when the file is missing, has no video stream or cannot be
    decoded.
    """
    import av

    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    path = Path(path)
    if not path.is_file():
        raise FrameError(f"Clip file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameError(f"{path} has no video stream")
            stream = container.streams.video[0]
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000  # container duration is in microseconds
            if duration and duration > 0:
                picked = _frames_at_times(
                    container, stream, [duration * (i + 0.5) / n_frames for i in range(n_frames)]
                )
            else:  # no duration in the header: keep every frame, then take evenly spaced ones
                every = list(container.decode(stream))
                if not every:
                    raise FrameError(f"{path}: no frames could be decoded")
                picked = [
                    every[min(len(every) - 1, int(len(every) * (i + 0.5) / n_frames))]
                    for i in range(n_frames)
                ]
            images = [frame.to_image() for frame in picked]
    except FrameError:
        raise
    except (av.FFmpegError, OSError, ValueError) as err:
        raise FrameError(f"{path}: cannot decode video ({type(err).__name__}: {err})") from err
    for img in images:
        img.thumbnail((max_side, max_side))
    return images


def _frames_at_times(container: Any, stream: Any, targets: list[float]) -> list[Any]:
    picked: list[Any] = []
    last = None
    for frame in container.decode(stream):
        last = frame
        t = frame.time if frame.time is not None else 0.0
        while len(picked) < len(targets) and t >= targets[len(picked)]:
            picked.append(frame)
        if len(picked) == len(targets):
            break
    if last is None:
        raise FrameError("no frames could be decoded")
    # The header can promise more time than the stream holds: the late targets take the last frame.
    picked.extend([last] * (len(targets) - len(picked)))
    return picked

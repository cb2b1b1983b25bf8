"""``describe_clips``: a describer run over clips into the cache, resumable, threads where the
describer allows, failures kept with their reason and retried on request."""

from __future__ import annotations

import concurrent.futures as futures
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialoguellm.corpora.video.base import Describer, load_prompt
from dialoguellm.corpora.video.cache import DescriptionCache, cache_key
from dialoguellm.corpora.video.clips import ClipRef, FrameError, sample_frames

if TYPE_CHECKING:  # PIL is imported lazily: the import describer and the cache need no imaging stack.
    from PIL.Image import Image


@dataclass
class RunSummary:
    """What one ``describe_clips`` call did."""

    describer: str
    model: str
    prompt_id: str
    cache: str
    clips: int  # clips the describer covers
    already_done: int  # skipped: described by an earlier run
    skipped_failed: int  # skipped: failed earlier and retry_failed was off
    attempted: int
    done: int
    failed: int
    left: int  # covered clips still without a description after this call
    seconds: float
    failures: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return asdict(self)


def description_records(
    describer: Describer,
    summary: RunSummary,
    clips_dir_given: bool,
    coverage: Mapping[str, Mapping[str, Any]],
    lengths: Sequence[int],
    figures: Sequence[str | os.PathLike],
) -> dict[str, Any]:
    """What notebook 02 records: the describer and its model, this run's ``describe_clips`` summary (without
    the failures and the cache path), whether video clips were given, the coverage per split
    (``coverage_by_split``) and its total, the median words per description and the figures' file names."""
    return {
        "describer": describer.name,
        "model": describer.model,
        "prompt_id": summary.prompt_id,
        "clips_dir_given": clips_dir_given,
        "run": {k: v for k, v in summary.as_dict().items() if k not in ("failures", "cache")},
        "coverage": coverage,
        "described": sum(row["described"] for row in coverage.values()),
        "median_words": float(statistics.median(lengths)) if lengths else None,
        "figures": [Path(f).name for f in figures],
    }


def describe_clips(
    clips: Sequence[ClipRef],
    describer: Describer,
    cache: DescriptionCache | str | os.PathLike,
    n_frames: int = 4,
    max_side: int = 384,
    prompt: str | None = None,
    limit: int | None = None,
    retry_failed: bool = False,
    progress: bool = True,
) -> RunSummary:
    """Describe ``clips`` with ``describer`` and append each result to the cache.

    Clips already described with the same describer, model and prompt are skipped; clips that failed
    before are skipped unless ``retry_failed``. ``limit`` caps the number of clips attempted in this call.
    A clip whose frames cannot be decoded, or whose description fails or comes back empty, is recorded as
    failed with the reason, and the run goes on.
    """
    from dialoguellm.progress import progress_bar as tqdm

    cache = cache if isinstance(cache, DescriptionCache) else DescriptionCache(cache)
    prompt = prompt if prompt is not None else load_prompt(n_frames)
    pid = describer.prompt_id(prompt)
    if describer.name != "import":  # keep the prompt text beside its hash, so a cache key can be read back
        _save_prompt_text(cache.path.parent / "prompts" / f"{pid}.txt", prompt)
    describer.prepare(clips)
    plan = _plan_clips(clips, describer, cache, pid, retry_failed, limit)
    started = time.monotonic()
    bar = tqdm(total=len(plan.todo), desc=f"describe ({describer.name})", unit="clip", disable=not progress)
    tally = _Tally(cache, bar, total=len(plan.todo))

    def work(clip: ClipRef) -> dict[str, Any]:
        """One clip's record; binds the settings that are the same for every clip of the call."""
        return _describe_one(clip, plan.keys[clip.uid], describer, prompt, pid, n_frames, max_side)

    try:
        _run_clips(plan.todo, work, tally.record, describer.max_workers)
    finally:
        bar.close()
    return _run_summary(describer, pid, cache, plan, tally, retry_failed, started)


def _save_prompt_text(prompt_file: Path, prompt: str) -> None:
    """Write the prompt once beside the cache (atomically), so the hash in a cache key can be read back."""
    if not prompt_file.exists():
        from dialoguellm.io import atomic_path

        with atomic_path(prompt_file) as tmp:
            tmp.write_text(prompt + "\n", encoding="utf-8")


@dataclass
class _ClipPlan:
    """The covered clips of a ``describe_clips`` call, their cache keys, and which are skipped or attempted."""

    covered: list[ClipRef]
    keys: dict[str, str]  # clip uid -> cache key
    already: list[ClipRef]  # described by an earlier run
    failed_before: set[str]  # uids whose latest record is a failure
    todo: list[ClipRef]  # attempted in this call, in clip order


def _plan_clips(
    clips: Sequence[ClipRef],
    describer: Describer,
    cache: DescriptionCache,
    pid: str,
    retry_failed: bool,
    limit: int | None,
) -> _ClipPlan:
    """Split the clips by their cache status, so a re-run resumes where the last one stopped."""
    covered = [c for c in clips if describer.covers(c)]
    keys = {c.uid: cache_key(c.split, c.clip_id, describer.name, describer.model, pid) for c in covered}
    already = [c for c in covered if cache.status(keys[c.uid]) == "ok"]
    failed_before = {c.uid for c in covered if cache.status(keys[c.uid]) == "failed"}
    todo = [
        c for c in covered if cache.status(keys[c.uid]) is None or (retry_failed and c.uid in failed_before)
    ]
    if limit is not None:
        todo = todo[: max(0, int(limit))]
    return _ClipPlan(covered, keys, already, failed_before, todo)


def _clip_frames(clip: ClipRef, describer: Describer, n_frames: int, max_side: int) -> list[Image]:
    """The frames the describer needs (none for one that reads no video); raises when there is no file."""
    if not describer.needs_frames:
        return []
    if clip.path is None:
        raise FrameError(f"no clip file for {clip.uid}")
    return sample_frames(clip.path, n_frames=n_frames, max_side=max_side)


def _describe_one(
    clip: ClipRef, key: str, describer: Describer, prompt: str, pid: str, n_frames: int, max_side: int
) -> dict[str, Any]:
    """One clip's cache record, ok or failed: a clip's failure is recorded with its reason, never raised."""
    t0 = time.monotonic()
    base = {
        "key": key,
        "split": clip.split,
        "clip_id": clip.clip_id,
        "describer": describer.name,
        "model": describer.model,
        "prompt_hash": pid,
        "n_frames": n_frames if describer.needs_frames else None,
    }
    try:
        frames = _clip_frames(clip, describer, n_frames, max_side)
        text = describer.describe(clip, frames, prompt)
        if not text or not text.strip():
            raise ValueError("the describer returned an empty description")
        status, description, error = "ok", text.strip(), None
    except Exception as err:  # noqa: BLE001 - any failure of one clip is recorded and the run goes on
        status, description, error = "failed", None, f"{type(err).__name__}: {err}"[:500]
    return {
        **base,
        "status": status,
        "description": description,
        "error": error,
        "seconds": round(time.monotonic() - t0, 3),
        "created": _now(),
    }


class _Tally:
    """Appends each record to the cache the moment it is finished and counts it for the bar and summary."""

    def __init__(self, cache: DescriptionCache, bar: Any, total: int):
        self.cache, self.bar, self.total = cache, bar, total
        self.done = self.failed = 0
        self.failures: list[dict[str, str]] = []

    def record(self, rec: dict[str, Any]) -> None:
        """Write one record (one whole line, so a crash cannot corrupt earlier ones) and update the counts."""
        self.cache.append(rec)
        if rec["status"] == "ok":
            self.done += 1
        else:
            self.failed += 1
            self.failures.append({"clip": f"{rec['split']}/{rec['clip_id']}", "error": rec["error"]})
        self.bar.update(1)
        self.bar.set_postfix(done=self.done, failed=self.failed, left=self.total - self.done - self.failed)


def _run_clips(
    todo: Sequence[ClipRef],
    work: Callable[[ClipRef], dict[str, Any]],
    record: Callable[[dict[str, Any]], None],
    max_workers: int,
) -> None:
    """Describe the clips inline (one worker) or on threads, recording each result as soon as it is done."""
    if max_workers <= 1:
        for clip in todo:
            record(work(clip))
        return
    # A bounded window of submissions: memory stays flat and a kill loses only the clips in flight.
    with futures.ThreadPoolExecutor(max_workers=max_workers) as pool:
        pending: set[futures.Future] = set()
        queue = iter(todo)
        for clip in queue:
            pending.add(pool.submit(work, clip))
            if len(pending) >= 2 * max_workers:
                finished, pending = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
                for fut in finished:
                    record(fut.result())
        for fut in futures.as_completed(pending):
            record(fut.result())


def _run_summary(
    describer: Describer,
    pid: str,
    cache: DescriptionCache,
    plan: _ClipPlan,
    tally: _Tally,
    retry_failed: bool,
    started: float,
) -> RunSummary:
    """What the call did, counted after the run so ``left`` reflects the cache as it now stands."""
    left = sum(1 for c in plan.covered if cache.status(plan.keys[c.uid]) != "ok")
    return RunSummary(
        describer=describer.name,
        model=describer.model,
        prompt_id=pid,
        cache=str(cache.path),
        clips=len(plan.covered),
        already_done=len(plan.already),
        skipped_failed=0 if retry_failed else len(plan.failed_before),
        attempted=len(plan.todo),
        done=tally.done,
        failed=tally.failed,
        left=left,
        seconds=round(time.monotonic() - started, 3),
        failures=tally.failures,
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")

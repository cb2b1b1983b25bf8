"""Video descriptions: from MELD clips to cached text that the prompts read.

DialogueLLM sends frames of each MELD clip to a vision-language chat model (ERNIE Bot) and puts the
returned text into the prompt as the "Video Description"; removing it cost 11 points of accuracy on
MELD. The paper never released those texts, so this module makes them for anyone who has the videos:

1. ``find_clips`` maps the curated MELD records (split, clip id) to files in a MELD.Raw folder and
   reports the missing ones.
2. ``sample_frames`` decodes N frames spread over a clip with PyAV (N = 1 gives the middle frame).
3. A ``Describer`` turns frames into text. Three are chosen by name with ``make_describer``:
   ``"transformers"`` (a local image-text-to-text model), ``"openai"`` (any OpenAI-compatible
   chat-completions endpoint that accepts images, configured by environment variables) and
   ``"import"`` (descriptions someone already has, in JSONL/CSV/JSON keyed by clip id).
4. ``describe_clips`` runs a describer over clips and appends one JSON line per result to an
   append-only cache (``DescriptionCache``). A kill -9 loses at most the clips in flight, a re-run
   skips what is done, failures are kept with their reason and retried on request.
5. ``load_descriptions`` gives the prompt builder ``split -> {clip_id: description}``.

MELD numbers its clips per split, so ``dia0_utt0`` exists in train, dev and test and they are different
clips: the cache keeps the split beside the clip id, and ``load_descriptions`` keys its map by split.
"""

from __future__ import annotations

import base64
import concurrent.futures as futures
import hashlib
import io
import json
import logging
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from dialoguellm.corpora import readers
from dialoguellm.io import csv_rows, read_text_file, text_lines
from dialoguellm.runs import RunLayout

if TYPE_CHECKING:  # PIL is imported lazily: the import describer and the cache need no imaging stack.
    from PIL.Image import Image

log = logging.getLogger(__name__)

# MELD.Raw folder of each split (the archive's own names; the test folder really is "output_repeated...").
MELD_SPLIT_DIRS: dict[str, str] = {
    "train": "train_splits",
    "dev": "dev_splits_complete",
    "test": "output_repeated_splits_test",
}
CLIP_ID_PATTERN = re.compile(r"dia\d+_utt\d+")
# The 191 real descriptions of MELD test clips that ship with the project (see its SOURCE.md).
VENDORED_DESCRIPTIONS = (
    Path(str(resources.files("dialoguellm.corpora")))
    / "raw"
    / "meld_video_descriptions"
    / "descriptions.jsonl"
)
VENDORED_MODEL = "gpt-4o-mini (EmotionConflict/Meld-Captioning, visual_objective_description)"

# A small open model (Apache-2.0, 256M parameters) that runs on a CPU; any image-text-to-text model works.
DEFAULT_LOCAL_MODEL = "HuggingFaceTB/SmolVLM-256M-Instruct"
# The HTTP describer reads its endpoint, model and key from these variables (the key never from arguments,
# so it cannot end up in a notebook, a config file or a result).
ENV_BASE_URL = "DIALOGUELLM_VLM_BASE_URL"
ENV_MODEL = "DIALOGUELLM_VLM_MODEL"
ENV_API_KEY = "DIALOGUELLM_VLM_API_KEY"
TEMPLATE_NAME = "video_description.txt"


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


# -------------------------------------------------------------------------------------------- prompt
def load_prompt(n_frames: int = 4, template: str | os.PathLike | None = None) -> str:
    """The description prompt: the packaged template (or the file ``template``) with ``{n_frames}`` filled."""
    if template is None:
        text = resources.files("dialoguellm").joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8")
    else:
        text = Path(template).read_text(encoding="utf-8")
    # str.replace, not str.format: a user template may contain other braces.
    return text.replace("{n_frames}", str(n_frames)).strip()


def prompt_hash(prompt: str) -> str:
    """Short content hash of a prompt; part of every cache key, so an edited prompt is described anew."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


# ----------------------------------------------------------------------------------------- describers
class Describer:
    """Turns one clip into text. Subclasses set ``name`` and ``model`` and implement ``describe``.

    ``needs_frames`` says whether ``describe_clips`` must decode the clip first; ``max_workers`` how many
    clips may be described at once (threads; 1 runs inline).
    """

    name: str = "base"
    model: str = ""
    needs_frames: bool = True
    max_workers: int = 1

    def prepare(self, clips: Sequence[ClipRef]) -> None:
        """Check the clips before a run (e.g. that imported ids exist). Default: nothing."""

    def covers(self, clip: ClipRef) -> bool:
        """Whether this describer can describe ``clip`` at all (the importer only covers its file)."""
        return True

    def prompt_id(self, prompt: str) -> str:
        """The prompt part of the cache key."""
        return prompt_hash(prompt)

    def describe(self, clip: ClipRef, frames: list[Image], prompt: str) -> str:
        """Return the description of ``clip``; raise on failure (the message is recorded)."""
        raise NotImplementedError


class TransformersDescriber(Describer):
    """A local vision-language model through transformers' image-text-to-text classes.

    ``model`` is any model id or folder that ``AutoModelForImageTextToText`` and ``AutoProcessor`` load and
    whose processor has a chat template (SmolVLM, Idefics3, Qwen2-VL, LLaVA, Gemma 3, ...). The model is
    loaded on first use. Decoding is greedy, so a re-run gives the same text.
    """

    name = "transformers"

    def __init__(
        self,
        model: str | None = None,
        max_new_tokens: int = 160,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ):
        self.model = model or DEFAULT_LOCAL_MODEL
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            try:
                processor = AutoProcessor.from_pretrained(
                    self.model, trust_remote_code=self.trust_remote_code
                )
                net = AutoModelForImageTextToText.from_pretrained(
                    self.model, dtype=self.dtype, trust_remote_code=self.trust_remote_code
                )
            except OSError as err:
                raise OSError(
                    f"Cannot load the vision-language model {self.model!r}: {err}. Pass MODEL as a local folder "
                    f"or a model id that is downloaded (huggingface-cli download {self.model}), "
                    "or use DESCRIBER='openai' / 'import'."
                ) from err
            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            net.to(device).eval()
            if getattr(processor, "chat_template", None) is None:
                raise ValueError(
                    f"The processor of {self.model!r} has no chat template; choose an instruction-tuned "
                    "image-text-to-text model (e.g. HuggingFaceTB/SmolVLM-256M-Instruct)."
                )
            self._loaded = (processor, net)
        return self._loaded

    def describe(self, clip: ClipRef, frames: list[Image], prompt: str) -> str:
        import torch

        with self._lock:  # one generate at a time: the model is not re-entrant and CPUs are shared anyway
            processor, net = self._load()
            content: list[dict[str, Any]] = [{"type": "image", "image": img} for img in frames]
            content.append({"type": "text", "text": prompt})
            inputs = processor.apply_chat_template(
                [{"role": "user", "content": content}],
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            ).to(net.device)
            with torch.inference_mode():
                out = net.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            return processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()


class HTTPStatusError(RuntimeError):
    """The endpoint answered with an HTTP error status."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class OpenAIChatDescriber(Describer):
    """Any OpenAI-compatible ``/chat/completions`` endpoint that accepts images (image_url data URLs).

    Endpoint and model come from the arguments or from ``$DIALOGUELLM_VLM_BASE_URL`` and
    ``$DIALOGUELLM_VLM_MODEL``; the API key only from ``$DIALOGUELLM_VLM_API_KEY`` (or the variable named by
    ``api_key_env``), never from an argument, and it is never logged or recorded. 429 and 5xx answers and
    timeouts are retried with exponential backoff and jitter (honouring ``Retry-After``); other 4xx answers
    and malformed responses fail at once, since repeating the same request would not change them.
    """

    name = "openai"

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str = ENV_API_KEY,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff: float = 2.0,
        max_backoff: float = 60.0,
        max_workers: int = 4,
        max_tokens: int = 300,
        temperature: float = 0.0,
        image_detail: str = "low",
        jpeg_quality: int = 85,
    ):
        self.base_url = (base_url or os.environ.get(ENV_BASE_URL) or "").rstrip("/")
        self.model = model or os.environ.get(ENV_MODEL) or ""
        if not self.base_url:
            raise ValueError(
                f"No endpoint for the 'openai' describer: set ${ENV_BASE_URL} (e.g. https://api.openai.com/v1) "
                "or pass base_url."
            )
        if not self.model:
            raise ValueError(f"No model for the 'openai' describer: set ${ENV_MODEL} or pass MODEL.")
        self.api_key_env = api_key_env
        self._api_key = os.environ.get(api_key_env) or ""
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_workers = max(1, int(max_workers))
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.image_detail = image_detail
        self.jpeg_quality = jpeg_quality
        self.url = f"{self.base_url}/chat/completions"

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatDescriber(model={self.model!r}, url={self.url!r}, key_set={bool(self._api_key)})"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _payload(self, frames: list[Image], prompt: str) -> bytes:
        content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
        for img in frames:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=self.jpeg_quality)
            url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
            content.append({"type": "image_url", "image_url": {"url": url, "detail": self.image_detail}})
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return json.dumps(body).encode("utf-8")

    def _post(self, data: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            detail = err.read(300).decode("utf-8", "replace").strip() if err.fp else ""
            retry_after = _parse_retry_after(err.headers.get("Retry-After") if err.headers else None)
            raise HTTPStatusError(err.code, f"HTTP {err.code} {err.reason}: {detail}", retry_after) from None
        try:
            answer = json.loads(raw.decode("utf-8"))
            text = answer["choices"][0]["message"]["content"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, IndexError, TypeError):
            raise ValueError(f"malformed response from {self.url}: {raw[:120]!r}") from None
        if isinstance(text, list):  # some providers return content parts
            text = "".join(part.get("text", "") for part in text if isinstance(part, dict))
        if not isinstance(text, str):
            raise ValueError(f"malformed response from {self.url}: message content is {type(text).__name__}")
        return {"text": text}

    def describe(self, clip: ClipRef, frames: list[Image], prompt: str) -> str:
        data = self._payload(frames, prompt)
        attempt = 0
        while True:
            try:
                return self._post(data)["text"].strip()
            except HTTPStatusError as err:
                retryable = err.status == 429 or err.status >= 500
                reason, wait_hint = self._redact(str(err)), err.retry_after
            except TimeoutError as err:  # socket.timeout is TimeoutError since 3.10
                retryable, reason, wait_hint = True, f"timed out after {self.timeout:g} s ({err})", None
            except urllib.error.URLError as err:
                is_timeout = isinstance(err.reason, TimeoutError)
                retryable = is_timeout or isinstance(err.reason, ConnectionError)
                reason = (
                    f"timed out after {self.timeout:g} s" if is_timeout else f"connection error: {err.reason}"
                )
                reason, wait_hint = self._redact(reason), None
            except ConnectionError as err:
                retryable, reason, wait_hint = True, self._redact(f"connection error: {err}"), None
            except ValueError as err:
                raise ValueError(self._redact(str(err))) from None
            if not retryable or attempt >= self.max_retries:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise RuntimeError(f"{reason}{tries}") from None
            wait = min(self.max_backoff, self.backoff * 2**attempt) * (0.5 + random.random() / 2)
            if wait_hint is not None:
                wait = min(self.max_backoff, max(wait, wait_hint))
            attempt += 1
            log.warning("%s: %s; retry %d/%d in %.2f s", clip.uid, reason, attempt, self.max_retries, wait)
            time.sleep(wait)


def _parse_retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: rare, and a plain backoff is fine
        return None


class ImportedDescriber(Describer):
    """Descriptions someone already has: JSONL, CSV or JSON keyed by clip id.

    Accepted layouts: JSONL or CSV rows / a JSON list of objects with ``id_field`` (default ``clip_id``;
    a trailing ``.mp4`` is dropped) and ``text_field`` (default ``description``), optionally ``split``; or a
    JSON object ``{clip_id: description}``. Without a ``split`` column the rows belong to ``split`` (the
    argument), or, when that is None, to the one split whose clips contain the id. The file is read and
    checked when the describer is made; ``prepare`` checks the ids against the clips of the run.
    """

    name = "import"
    needs_frames = False

    def __init__(
        self,
        path: str | os.PathLike,
        model: str | None = None,
        split: str | None = None,
        id_field: str = "clip_id",
        text_field: str = "description",
    ):
        self.path = Path(path)
        self.model = model or self.path.name
        self.split = split
        self.rows = read_description_file(self.path, id_field=id_field, text_field=text_field)
        self._texts: dict[str, str] = {}

    def prompt_id(self, prompt: str) -> str:
        # Someone else's prompt made these texts; the file's content hash stands in for it.
        return "import-" + hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]

    def prepare(self, clips: Sequence[ClipRef]) -> None:
        by_id: dict[str, set[str]] = {}
        for ref in clips:
            by_id.setdefault(ref.clip_id, set()).add(ref.split)
        unknown: list[str] = []
        self._texts = {}
        for row in self.rows:
            split = row["split"] or self.split
            if split is None:
                owners = by_id.get(row["clip_id"], set())
                if len(owners) > 1:
                    raise ValueError(
                        f"{self.path}, {row['where']}: clip id {row['clip_id']!r} exists in splits "
                        f"{sorted(owners)} (MELD numbers clips per split). Add a 'split' column or pass split=."
                    )
                split = next(iter(owners), None)
            if split is None or split not in by_id.get(row["clip_id"], set()):
                unknown.append(f"{row['where']}: {row['clip_id']!r}" + (f" (split {split})" if split else ""))
                continue
            self._texts[f"{split}/{row['clip_id']}"] = row["text"]
        if unknown:
            shown = "; ".join(unknown[:5]) + (f"; ... ({len(unknown)} in all)" if len(unknown) > 5 else "")
            splits = sorted({ref.split for ref in clips})
            raise ValueError(
                f"{self.path}: {len(unknown)} clip id(s) match no MELD utterance of the run ({shown}). "
                f"Ids must look like dia{{D}}_utt{{U}} and belong to split(s) {splits}; fix or remove those rows, "
                "or pass the right split."
            )

    def covers(self, clip: ClipRef) -> bool:
        return clip.uid in self._texts

    def describe(self, clip: ClipRef, frames: list[Image], prompt: str) -> str:
        return self._texts[clip.uid]


def read_description_file(
    path: str | os.PathLike, id_field: str = "clip_id", text_field: str = "description"
) -> list[dict[str, Any]]:
    """Read and check a file of descriptions; rows are ``{clip_id, split, text, where}``.

    Raises ``ValueError`` naming the file and row for: a file that is not valid JSON/JSONL/CSV, a missing
    id or text field, an empty id or text, a malformed clip id, and duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Descriptions file not found: {path}")
    text = read_text_file(
        path,
        fix="Is it a video or another binary file? Pass a JSONL, CSV or JSON file of descriptions saved as UTF-8.",
    )
    raw = _parsed_description_rows(path, text, id_field, text_field)
    if not raw:
        raise ValueError(f"{path}: no descriptions found (the file is empty); pass the file that holds them.")
    rows: list[dict[str, Any]] = []
    first_seen: dict[tuple[str | None, str], str] = {}
    for where, row in raw:
        clip_id = _checked_clip_id(path, where, row, id_field, text_field)
        desc = _checked_description(path, where, row[text_field], clip_id, text_field)
        split = str(row["split"]).strip() if row.get("split") else None
        if (split, clip_id) in first_seen:
            raise ValueError(
                f"{path}, {where}: duplicate clip id {clip_id!r} (first at {first_seen[(split, clip_id)]}); "
                "keep one row per clip."
            )
        first_seen[(split, clip_id)] = where
        rows.append({"clip_id": clip_id, "split": split, "text": desc, "where": where})
    return rows


def _parsed_description_rows(path: Path, text: str, id_field: str, text_field: str) -> list[tuple[str, Any]]:
    """The file's rows as ``(where, row)`` before any check, parsed by its suffix (JSONL, CSV or JSON)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _jsonl_description_rows(path, text, id_field, text_field)
    if suffix == ".csv":
        rows = csv_rows(path, text)
        _, header = next(rows, (0, []))
        return [(f"row {n}", dict(zip(header, fields, strict=True))) for n, fields in rows]
    if suffix == ".json":
        return _json_description_rows(path, text, id_field, text_field)
    raise ValueError(f"{path}: unknown descriptions format {suffix!r}; use .jsonl, .csv or .json.")


def _jsonl_description_rows(path: Path, text: str, id_field: str, text_field: str) -> list[tuple[str, Any]]:
    """One parsed object per non-blank line, so an error can name the line that is not JSON."""
    raw: list[tuple[str, Any]] = []
    # Lines end at \n only: json.dumps(ensure_ascii=False) writes U+2028 and U+0085 as they are, and
    # str.splitlines would cut such a description in two.
    for n, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        try:
            raw.append((f"line {n}", json.loads(line)))
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(
                f"{path}, line {n}: not valid JSON ({getattr(err, 'msg', 'nested too deeply')}). Each line "
                f'must be one JSON object like {{"{id_field}": "dia0_utt0", "{text_field}": "..."}}.'
            ) from None
    return raw


def _json_description_rows(path: Path, text: str, id_field: str, text_field: str) -> list[tuple[str, Any]]:
    """The rows of a JSON list of objects or of one ``{clip_id: description}`` object, as the JSONL rows."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply); restore the file.") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON (line {err.lineno}, column {err.colno}: {err.msg}). Expected a list of "
            f'objects with "{id_field}" and "{text_field}", or an object {{clip_id: description}}.'
        ) from None
    if isinstance(data, dict):
        return [(f"key {k!r}", {id_field: k, text_field: v}) for k, v in data.items()]
    if isinstance(data, list):
        return [(f"item {i}", row) for i, row in enumerate(data)]
    raise ValueError(
        f"{path}: expected a JSON list or object, found {type(data).__name__}; write a list of "
        f'{{"{id_field}": ..., "{text_field}": ...}} objects or one {{clip_id: description}} object.'
    )


def _checked_clip_id(path: Path, where: str, row: Any, id_field: str, text_field: str) -> str:
    """The row's clip id without ``.mp4``; raises naming the row when the row, its fields or its id are wrong."""
    if not isinstance(row, dict):
        raise ValueError(
            f"{path}, {where}: expected a JSON object, found {type(row).__name__}; write it as "
            f'{{"{id_field}": "dia0_utt0", "{text_field}": "..."}}.'
        )
    if id_field not in row or text_field not in row:
        raise ValueError(
            f"{path}, {where}: needs fields {id_field!r} and {text_field!r}, found {sorted(row)}. "
            "Rename the columns or pass id_field=/text_field=."
        )
    clip_id = str(row[id_field] or "").strip().removesuffix(".mp4")
    if not clip_id:
        raise ValueError(f"{path}, {where}: empty {id_field!r}; fill in the clip id or remove the row.")
    if not CLIP_ID_PATTERN.fullmatch(clip_id):
        raise ValueError(
            f"{path}, {where}: clip id {clip_id!r} is not of the form dia{{D}}_utt{{U}} (MELD's names, as in "
            "dia12_utt3.mp4); rename it or remove the row."
        )
    return clip_id


def _checked_description(path: Path, where: str, desc: Any, clip_id: str, text_field: str) -> str:
    """The stripped description; raises naming the row when it is not text, empty or holds a NUL."""
    if desc is not None and not isinstance(desc, str):
        raise ValueError(
            f"{path}, {where}: {text_field!r} of clip {clip_id!r} is a {type(desc).__name__}, not text; "
            "write the description as a string."
        )
    if not desc or not desc.strip():
        raise ValueError(
            f"{path}, {where}: empty {text_field!r} for clip {clip_id!r}; remove the row or fill it in."
        )
    if "\x00" in desc:  # a JSON "\u0000": damage, never part of a description
        raise ValueError(f"{path}, {where}: a NUL character in the description of {clip_id!r}; fix the row.")
    return desc.strip()


def make_describer(name: str, model: str | None = None, **kwargs: Any) -> Describer:
    """Build a describer by name: ``"transformers"``, ``"openai"`` or ``"import"`` (``path=`` required).

    For ``"import"``, ``model`` labels where the texts came from (default: the file name).
    """
    key = name.strip().lower()
    if key in ("transformers", "local"):
        return TransformersDescriber(model=model, **kwargs)
    if key in ("openai", "http", "chat"):
        return OpenAIChatDescriber(model=model, **kwargs)
    if key == "import":
        if kwargs.get("path") is None:
            raise ValueError(
                "The 'import' describer needs path= (a JSONL, CSV or JSON file of descriptions)."
            )
        return ImportedDescriber(model=model, **kwargs)
    raise ValueError(f"Unknown describer {name!r}; choose 'transformers', 'openai' or 'import'.")


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

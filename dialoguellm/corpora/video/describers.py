"""The describers chosen by name with ``make_describer``: a local vision-language model
(``TransformersDescriber``), descriptions someone already has (``ImportedDescriber``, ``read_description_file``)
and an OpenAI-compatible endpoint (``client.OpenAIChatDescriber``)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialoguellm.corpora.video.base import Describer
from dialoguellm.corpora.video.client import OpenAIChatDescriber
from dialoguellm.corpora.video.clips import CLIP_ID_PATTERN, ClipRef
from dialoguellm.io import csv_rows, read_text_file, text_lines

if TYPE_CHECKING:  # PIL is imported lazily: the import describer and the cache need no imaging stack.
    from PIL.Image import Image


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


def vendored_descriptions() -> dict[str, dict[str, str]]:
    """The 191 MELD test descriptions that ship with the package, as ``load_descriptions`` returns them
    (``{"test": {clip_id: text}}``): what an experiment scores with when no run folder with notebook 02's
    descriptions is given."""
    return {"test": {row["clip_id"]: row["text"] for row in read_description_file(VENDORED_DESCRIPTIONS)}}


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

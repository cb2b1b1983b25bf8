"""What every describer shares: the description prompt (``load_prompt``, ``prompt_hash``) and the
``Describer`` interface that ``describe_clips`` drives."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from dialoguellm.corpora.video.clips import ClipRef

if TYPE_CHECKING:  # PIL is imported lazily: the import describer and the cache need no imaging stack.
    from PIL.Image import Image


TEMPLATE_NAME = "video_description.txt"


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

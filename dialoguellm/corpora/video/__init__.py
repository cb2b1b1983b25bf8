"""Video descriptions: from MELD clips to cached text that the prompts read.

DialogueLLM sends frames of each MELD clip to a vision-language chat model (ERNIE Bot) and puts the
returned text into the prompt as the "Video Description"; removing it cost 11 points of accuracy on
MELD. The paper never released those texts, so this package makes them for anyone who has the videos:

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

The parts: ``clips`` (finding clips, decoding frames), ``base`` (the prompt and the ``Describer``
interface), ``describers`` (local model, import, ``make_describer``), ``client`` (the HTTP endpoint),
``cache`` (the append-only cache and its readers) and ``describe`` (the run). Their public names are
importable from here, ``from dialoguellm.corpora import video; video.load_descriptions(run)``.

MELD numbers its clips per split, so ``dia0_utt0`` exists in train, dev and test and they are different
clips: the cache keeps the split beside the clip id, and ``load_descriptions`` keys its map by split.
"""

from __future__ import annotations

from dialoguellm.corpora.video.base import TEMPLATE_NAME, Describer, load_prompt, prompt_hash
from dialoguellm.corpora.video.cache import (
    SPLITS,
    DescriptionCache,
    cache_key,
    cache_path,
    coverage_by_split,
    described_label_shares,
    description_lengths,
    example_items,
    load_descriptions,
)
from dialoguellm.corpora.video.client import (
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_MODEL,
    HTTPStatusError,
    OpenAIChatDescriber,
)
from dialoguellm.corpora.video.clips import (
    CLIP_ID_PATTERN,
    MELD_SPLIT_DIRS,
    ClipIndex,
    ClipRef,
    FrameError,
    clip_refs,
    find_clips,
    sample_frames,
)
from dialoguellm.corpora.video.describe import RunSummary, describe_clips
from dialoguellm.corpora.video.describers import (
    DEFAULT_LOCAL_MODEL,
    VENDORED_DESCRIPTIONS,
    VENDORED_MODEL,
    ImportedDescriber,
    TransformersDescriber,
    make_describer,
    read_description_file,
    vendored_descriptions,
)

__all__ = [
    "CLIP_ID_PATTERN",
    "DEFAULT_LOCAL_MODEL",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "MELD_SPLIT_DIRS",
    "SPLITS",
    "TEMPLATE_NAME",
    "VENDORED_DESCRIPTIONS",
    "VENDORED_MODEL",
    "vendored_descriptions",
    "ClipIndex",
    "ClipRef",
    "Describer",
    "DescriptionCache",
    "FrameError",
    "HTTPStatusError",
    "ImportedDescriber",
    "OpenAIChatDescriber",
    "RunSummary",
    "TransformersDescriber",
    "cache_key",
    "cache_path",
    "clip_refs",
    "coverage_by_split",
    "describe_clips",
    "described_label_shares",
    "description_lengths",
    "example_items",
    "find_clips",
    "load_descriptions",
    "load_prompt",
    "make_describer",
    "prompt_hash",
    "read_description_file",
    "sample_frames",
]

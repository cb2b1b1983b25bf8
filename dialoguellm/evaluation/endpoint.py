"""Zero-shot evaluation of an OpenAI-compatible chat endpoint (``dialoguellm evaluate --model openai:NAME``).

An endpoint gives text, not label probabilities, so it is evaluated by generate-and-parse: the same prompt
as our models get (``PromptBuilder.chat_messages``: the instruction, the demonstrations, the context and the
utterance), the answer read back by the same ``PromptBuilder.parse``; an answer that names no label is
counted as wrong and reported (``unparsed``), never guessed.

The HTTP client is the video describer's (``corpora.video.OpenAIChatDescriber``: retries with backoff on
429/5xx and timeouts, the key never logged), pointed at ``$DIALOGUELLM_LLM_BASE_URL`` with the key from
``$DIALOGUELLM_LLM_API_KEY``; neither is written to any file. Every answer goes to an append-only cache
(``corpora.video.DescriptionCache``, ``responses.jsonl`` in the output folder) as it arrives, so an
interrupted evaluation resumes where it stopped and a finished one is re-scored without a request.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from dialoguellm.config import Config
from dialoguellm.corpora.video import ClipRef, DescriptionCache, OpenAIChatDescriber, cache_key, prompt_hash
from dialoguellm.io import split_stem, write_json
from dialoguellm.prompts import builders_from_config, context_of, dialogue_index, rows_of, sample_indices
from dialoguellm.runs import environment, hardware_summary
from dialoguellm.scoring.predictions import metrics_of, save_predictions

log = logging.getLogger(__name__)

PREFIX = "openai:"
ENV_BASE_URL = "DIALOGUELLM_LLM_BASE_URL"
ENV_API_KEY = "DIALOGUELLM_LLM_API_KEY"
CACHE_FILE = "responses.jsonl"


class TextOnlyTokenizer:
    """What ``PromptBuilder`` needs of a tokenizer when the model is remote: it builds text and parses
    answers only (the endpoint tokenises for itself), so token ids are character codes, never sent."""

    chat_template = None
    eos_token = "</s>"
    eos_token_id = 0
    pad_token = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


class ChatEndpoint(OpenAIChatDescriber):
    """The describer's HTTP client sending a chat-message list (``prompt`` is its JSON) without images."""

    name = "openai-chat"

    def __init__(self, model: str, base_url: str | None = None, max_tokens: int = 16, **options: Any):
        url = base_url or os.environ.get(ENV_BASE_URL)
        if not url:
            raise ValueError(
                f"No endpoint for --model {PREFIX}{model}: set ${ENV_BASE_URL} (e.g. https://api.openai.com/v1) "
                f"and, if it needs one, ${ENV_API_KEY}."
            )
        super().__init__(model, url, api_key_env=ENV_API_KEY, max_tokens=max_tokens, **options)

    def _payload(self, frames: list[Any], prompt: str) -> bytes:
        body = {
            "model": self.model,
            "messages": json.loads(prompt),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return json.dumps(body).encode("utf-8")


def _requests(
    config: Config, corpora: Mapping[str, Any], split: str, descriptions: Mapping[str, Mapping[str, str]]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Per corpus, the sampled rows of ``split`` (``data.test_per_dataset`` etc., as evaluation samples)
    with their chat messages."""
    builders = builders_from_config(TextOnlyTokenizer(), corpora, config, descriptions)
    size = {"train": config.data.train_per_dataset, "dev": config.data.dev_per_dataset}.get(
        split, config.data.test_per_dataset
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for name, builder in builders.items():
        rows = rows_of(corpora[name][split])
        index = dialogue_index(rows)
        chosen = sample_indices(len(rows), size, config.train.seed, [r["label_id"] for r in rows])
        out[name] = []
        for i in chosen:
            row = rows[i]
            context = context_of(row, index[str(row["dialogue_id"])], builder.context_turns)
            query = builder.query_text(row, context, builder.description_of(row, descriptions.get(split, {})))
            out[name].append({"row": row, "messages": builder.chat_messages(query)})
    return builders, out


def evaluate_endpoint(
    model: str,
    config: Config,
    corpora: Mapping[str, Any],
    out_dir: str | os.PathLike,
    split: str = "test",
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    workers: int = 4,
    client: ChatEndpoint | None = None,
) -> dict[str, Any]:
    """Generate-and-parse evaluation of the chat endpoint's ``model`` (``openai:`` prefix optional) on
    ``split`` of every corpus of ``config.data.datasets``; writes predictions, metrics and ``summary.json``
    like ``evaluate_run``, and the answers to ``responses.jsonl`` (reused on the next call)."""
    start = time.time()
    name = model.removeprefix(PREFIX)
    client = client or ChatEndpoint(name)
    out = Path(out_dir)
    cache = DescriptionCache(out / CACHE_FILE)
    builders, requests = _requests(config, corpora, split, descriptions or {})
    results: dict[str, Any] = {}
    failed: list[str] = []
    for corpus, items in requests.items():
        keys = [_key(split, item, name) for item in items]
        todo = [(k, item) for k, item in zip(keys, items, strict=True) if cache.status(k) != "ok"]
        log.info("%s: %d answers cached, %d to ask %s", corpus, len(items) - len(todo), len(todo), name)
        with ThreadPoolExecutor(max(1, workers)) as pool:
            list(pool.map(lambda pair: _ask(client, cache, *pair, split), todo))
        failed += [k for k in keys if cache.status(k) != "ok"]
        if failed:
            continue
        frame = _frame(builders[corpus], items, [cache.records[k]["description"] for k in keys])
        metrics = metrics_of(frame, builders[corpus].labels)
        save_predictions(frame, metrics, out, split_stem(split, corpus))
        results[corpus] = metrics
    if failed:
        reasons = sorted({cache.records[k].get("error", "") for k in failed})[:3]
        raise RuntimeError(
            f"{len(failed)} request(s) to {name} failed ({'; '.join(reasons)}). The answers so far are cached in "
            f"{cache.path}; run the same command again to ask only the missing ones."
        )
    env = environment()
    summary = {
        "split": split,
        "mode": "generate",
        "model": f"{PREFIX}{name}",
        "adapter": None,
        "hardware": f"remote endpoint (client: {hardware_summary(env)})",
        "environment": env,
        "seconds": time.time() - start,
        "calibrated": False,
        "length_normalised": False,
        "results": results,
    }
    write_json(out / "summary.json", summary)
    return summary


def _key(split: str, item: Mapping[str, Any], model: str) -> str:
    messages = json.dumps(item["messages"], sort_keys=True)
    return cache_key(split, str(item["row"]["utterance_id"]), ChatEndpoint.name, model, prompt_hash(messages))


EMPTY_ANSWER = "<empty answer>"  # the cache refuses empty text; this names no label, so it counts as unparsed


def _ask(
    client: ChatEndpoint, cache: DescriptionCache, key: str, item: Mapping[str, Any], split: str
) -> None:
    """One request; its answer or its failure is appended to the cache at once (in the description cache's
    record layout: the utterance id as ``clip_id``, the answer as ``description``)."""
    utterance = str(item["row"]["utterance_id"])
    record: dict[str, Any] = {
        "key": key,
        "split": split,
        "clip_id": utterance,
        "describer": client.name,
        "model": client.model,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    try:
        answer = client.describe(ClipRef(split, utterance), [], json.dumps(item["messages"]))
        record.update(status="ok", description=answer.strip() or EMPTY_ANSWER)
    except (RuntimeError, ValueError) as err:  # retries exhausted, or a malformed answer
        record.update(status="failed", error=str(err))
        log.warning("%s: %s", key, err)
    cache.append(record)


def _frame(builder: Any, items: Sequence[Mapping[str, Any]], texts: Sequence[str]) -> pd.DataFrame:
    """A generate-mode prediction frame (``scoring.predictions.predict_by_generation``'s columns)."""
    parsed = [builder.parse(t) for t in texts]
    rows = [item["row"] for item in items]
    return pd.DataFrame(
        {
            "example_id": [str(r["utterance_id"]) for r in rows],
            "dialogue_id": [str(r["dialogue_id"]) for r in rows],
            "dataset": builder.dataset,
            "gold_id": [int(r["label_id"]) for r in rows],
            "pred_id": [-1 if p is None else p for p in parsed],
            "gold": [builder.labels[int(r["label_id"])] for r in rows],
            "pred": ["" if p is None else builder.labels[p] for p in parsed],
            "parsed": [p is not None for p in parsed],
            "output": list(texts),
        }
    )

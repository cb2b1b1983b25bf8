"""The HTTP client describer: any OpenAI-compatible chat-completions endpoint that accepts images,
configured by environment variables (the key never from arguments), with retries and backoff."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import random
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from dialoguellm.corpora.video.base import Describer
from dialoguellm.corpora.video.clips import ClipRef

if TYPE_CHECKING:  # PIL is imported lazily: the import describer and the cache need no imaging stack.
    from PIL.Image import Image

log = logging.getLogger(__name__)

# The HTTP describer reads its endpoint, model and key from these variables (the key never from arguments,
# so it cannot end up in a notebook, a config file or a result).
ENV_BASE_URL = "DIALOGUELLM_VLM_BASE_URL"
ENV_MODEL = "DIALOGUELLM_VLM_MODEL"
ENV_API_KEY = "DIALOGUELLM_VLM_API_KEY"


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

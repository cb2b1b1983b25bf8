"""dialoguellm: a tested, runnable reproduction of DialogueLLM (Zhang et al., arXiv 2310.11374)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # ``dialoguellm.predict`` without making ``import dialoguellm`` load torch and transformers.
    if name == "predict":
        from dialoguellm.evaluation.predict import predict

        return predict
    raise AttributeError(f"module 'dialoguellm' has no attribute {name!r}")

"""Shared fixtures (the helpers that build them live in tests/tiny.py, importable from any test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny import build_tiny_model, build_tiny_tokenizer, synthetic_corpus


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Folder with a tiny random LLaMA + chat tokenizer (what ``model.name`` / a notebook's MODEL can be)."""
    folder = Path(tmp_path_factory.mktemp("tiny"))
    tokenizer = build_tiny_tokenizer(chat=True)
    model = build_tiny_model(len(tokenizer))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer(chat=True)


@pytest.fixture(scope="session")
def plain_tokenizer():
    return build_tiny_tokenizer(chat=False)


@pytest.fixture()
def tiny_loaded(tiny_model_dir):
    """A freshly loaded tiny model (fp32) and tokenizer through dialoguellm.modeling."""
    from dialoguellm.model import loading as modeling

    return modeling.load_model(tiny_model_dir, dtype="fp32")


@pytest.fixture(scope="session")
def meld_corpus():
    return synthetic_corpus("meld")


@pytest.fixture(scope="session")
def sentencepiece_llama_dir(tmp_path_factory) -> str:
    """Folder with a tiny random LLaMA-2-shaped model and a SentencePiece tokenizer (tests/tiny.py)."""
    from tiny import build_sentencepiece_llama

    return str(build_sentencepiece_llama(Path(tmp_path_factory.mktemp("sp_llama"))))

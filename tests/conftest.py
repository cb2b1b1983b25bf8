"""Shared fixtures (the helpers that build them live in tests/tiny.py, importable from any test)."""

from __future__ import annotations

from pathlib import Path

import pytest
from checkout import tracked_state
from tiny import build_tiny_model, build_tiny_tokenizer, synthetic_corpus

TRACKED_AT_START = pytest.StashKey[dict | None]()


def pytest_configure(config) -> None:
    # The checkout's tracked files before any test ran: no test and no run they start may change them.
    config.stash[TRACKED_AT_START] = tracked_state()


@pytest.fixture(scope="session")
def tracked_at_start(pytestconfig) -> dict[str, str] | None:
    """``checkout.tracked_state()`` when the session started (None outside a git checkout)."""
    return pytestconfig.stash[TRACKED_AT_START]


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
    """A freshly loaded tiny model (fp32) and tokenizer through dialoguellm.model.loading."""
    from dialoguellm.model import loading

    return loading.load_model(tiny_model_dir, dtype="fp32")


@pytest.fixture(scope="session")
def meld_corpus():
    return synthetic_corpus("meld")


@pytest.fixture(scope="session")
def sentencepiece_llama_dir(tmp_path_factory) -> str:
    """Folder with a tiny random LLaMA-2-shaped model and a SentencePiece tokenizer (tests/tiny.py)."""
    from tiny import build_sentencepiece_llama

    return str(build_sentencepiece_llama(Path(tmp_path_factory.mktemp("sp_llama"))))

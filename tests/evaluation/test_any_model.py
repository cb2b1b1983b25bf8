"""`dialoguellm predict --model` and `evaluate --model` with the two kinds of model name that are not a local
folder: a GGUF file (a tiny random LLaMA written here in llama.cpp's layout, with its SentencePiece
vocabulary) and a hub id (served by a hub on 127.0.0.1 with an empty cache). Each must score exactly as the
same model loaded from its folder; a hub that cannot be reached or a repo that does not exist is a one-line
error."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tiny import (
    HUB_COMMIT,
    HubServer,
    save_synthetic_corpus,
    synthetic_corpus,
    tiny_settings,
    use_hub,
    write_llama_gguf,
)

from dialoguellm import cli

TURNS = [
    {"dialogue_id": "d1", "speaker": "Ross", "text": "I think the coffee is wonderful."},
    {"dialogue_id": "d1", "speaker": "Rachel", "text": "Whoa, really? I am so scared."},
    {"dialogue_id": "d2", "speaker": "Joey", "text": "I am furious today!"},
]


@pytest.fixture(scope="module")
def gguf_file(sentencepiece_llama_dir, tmp_path_factory) -> Path:
    return write_llama_gguf(
        Path(sentencepiece_llama_dir), tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf"
    )


@pytest.fixture()
def run(tmp_path) -> Path:
    run = tmp_path / "run"
    save_synthetic_corpus(run, synthetic_corpus("meld", sizes=(4, 2, 3)))
    return run


def profile(tmp_path: Path) -> Path:
    """The tiny settings with one context turn; --model replaces model.name."""
    raw = tiny_settings("set-by-model")
    raw["prompt"]["context_turns"] = 1
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def turns_file(tmp_path: Path) -> Path:
    path = tmp_path / "turns.csv"
    pd.DataFrame(TURNS).to_csv(path, index=False)
    return path


def predict(model: str, tmp_path: Path, name: str) -> pd.DataFrame:
    out = tmp_path / f"{name}.csv"
    args = ["predict", "--model", model, "--config", str(profile(tmp_path)), str(turns_file(tmp_path))]
    assert cli.main([*args, "--out", str(out)]) == 0
    return pd.read_csv(out)


def evaluate(model: str, run: Path, tmp_path: Path, capsys) -> tuple[dict, pd.DataFrame]:
    args = ["evaluate", "--run-dir", str(run), "--model", model, "--config", str(profile(tmp_path))]
    assert cli.main(args) == 0
    printed = json.loads(capsys.readouterr().out)
    folder = Path(printed["out"])
    return printed, pd.read_csv(folder / "test_meld_predictions.csv")


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame if c.startswith("p_")]].to_numpy()


def test_gguf_file_predicts_and_evaluates_as_its_folder(
    gguf_file, sentencepiece_llama_dir, run, tmp_path, capsys
):
    from transformers import AutoTokenizer

    # The file really is a GGUF that transformers converts (vocabulary and weights), not a renamed folder.
    tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    folder_tokenizer = AutoTokenizer.from_pretrained(sentencepiece_llama_dir)
    text = "Rachel: Whoa, really? I am so scared.\n"
    assert tokenizer(text)["input_ids"] == folder_tokenizer(text)["input_ids"]

    from_gguf = predict(str(gguf_file), tmp_path, "gguf")
    from_folder = predict(sentencepiece_llama_dir, tmp_path, "folder")
    assert list(from_gguf["text"]) == [t["text"] for t in TURNS]
    assert list(from_gguf["prompt_tokens"]) == list(from_folder["prompt_tokens"])
    np.testing.assert_allclose(probabilities(from_gguf), probabilities(from_folder), atol=1e-5)
    assert list(from_gguf["predicted"]) == list(from_folder["predicted"])

    printed, frame = evaluate(str(gguf_file), run, tmp_path, capsys)
    assert printed["model"] == str(gguf_file) and printed["results"]["meld"]["n"] == 12
    assert Path(printed["out"]).parent.name == "zero_shot"
    _, want = evaluate(sentencepiece_llama_dir, run, tmp_path, capsys)
    np.testing.assert_allclose(probabilities(frame), probabilities(want), atol=1e-5)
    assert list(frame["pred_id"]) == list(want["pred_id"])


REPO = "tiny-org/tiny-llama"


def test_hub_id_is_downloaded_and_scores_as_its_folder(tiny_model_dir, run, tmp_path, monkeypatch, capsys):
    want_predicted = predict(tiny_model_dir, tmp_path, "folder")
    _, want = evaluate(tiny_model_dir, run, tmp_path, capsys)
    with HubServer({REPO: Path(tiny_model_dir)}) as hub:
        use_hub(monkeypatch, hub.endpoint, tmp_path / "hf")
        predicted = predict(REPO, tmp_path, "hub")
        np.testing.assert_allclose(probabilities(predicted), probabilities(want_predicted), atol=1e-6)
        assert list(predicted["predicted"]) == list(want_predicted["predicted"])
        printed, frame = evaluate(REPO, run, tmp_path, capsys)
    assert printed["model"] == REPO and Path(printed["out"]) == run / "zero_shot" / "tiny-llama"
    assert json.loads((Path(printed["out"]) / "summary.json").read_text())["model"] == REPO
    np.testing.assert_allclose(probabilities(frame), probabilities(want), atol=1e-6)
    # The files came from the server into the fresh cache, the weights once: evaluate found them cached.
    snapshot = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / HUB_COMMIT
    assert (snapshot / "model.safetensors").is_file() and (snapshot / "tokenizer.json").is_file()
    fetched = [path.split("/resolve/")[-1] for method, path in hub.requests if method == "GET"]
    assert fetched.count(f"{HUB_COMMIT}/model.safetensors") + fetched.count("main/model.safetensors") == 1


class NoWait:
    """``time`` for huggingface_hub's HTTP module, without its retry back-off (about 45 s before an
    unreachable hub is reported); the waits it asked for are kept."""

    def __init__(self):
        import time

        self.time = time
        self.waits: list[float] = []

    def __getattr__(self, name):
        return getattr(self.time, name)

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)


def test_unreachable_hub_and_unknown_repo_are_one_line_errors(
    tiny_model_dir, run, tmp_path, monkeypatch, capsys
):
    from huggingface_hub.utils import _http

    no_wait = NoWait()
    monkeypatch.setattr(_http, "time", no_wait)
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}"
    use_hub(monkeypatch, closed, tmp_path / "hf")
    path = turns_file(tmp_path)
    assert cli.main(["predict", "--model", "org/unreachable", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert no_wait.waits  # huggingface_hub did retry before giving up
    assert err.startswith(
        f"dialoguellm predict: Cannot load 'org/unreachable' from the Hugging Face hub at {closed}"
    )
    assert "couldn't connect" in err and "$HF_ENDPOINT" in err
    with HubServer({REPO: Path(tiny_model_dir)}) as hub:
        use_hub(monkeypatch, hub.endpoint, tmp_path / "hf")
        for args in (
            ["predict", "--model", "org/no-such-model", str(path)],
            [
                "evaluate",
                "--run-dir",
                str(run),
                "--model",
                "org/no-such-model",
                "--config",
                str(profile(tmp_path)),
            ],
        ):
            assert cli.main(args) == 2
            captured = capsys.readouterr()
            lines = [line for line in captured.err.splitlines() if line.startswith("dialoguellm ")]
            assert len(lines) == 1 and "Traceback" not in captured.err
            assert f"Cannot load 'org/no-such-model' from the Hugging Face hub at {hub.endpoint}" in lines[0]
            assert "not a valid model identifier" in lines[0]
            assert not (run / "zero_shot").exists()  # nothing written for a model that never loaded


def test_predict_refuses_a_chat_endpoint_and_names_evaluate(tmp_path, capsys):
    # An endpoint gives text, not label probabilities; it was taken for a hub id and failed on its name.
    assert cli.main(["predict", "--model", "openai:judge-1", str(turns_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert "dialoguellm predict: --model openai:judge-1: a chat endpoint answers with text" in err
    assert "`dialoguellm evaluate --model openai:judge-1`" in err and "Hugging Face hub" not in err

"""`dialoguellm evaluate --model`: a model without an adapter scored zero-shot with the same prompts, and an
OpenAI-compatible chat endpoint (a server on 127.0.0.1 started here) evaluated by generate-and-parse:
unparsed answers counted as wrong and reported, the key never written, an interrupted run resumed from
its cache without asking again."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import yaml
from tiny import CUES, LocalServer, save_synthetic_corpus, synthetic_corpus, tiny_settings

from dialoguellm import cli
from dialoguellm.config import config_from_dict
from dialoguellm.evaluation import endpoint
from dialoguellm.labels import NORMALISATION

KEY = "sk-zero-shot-test-NEVER-WRITE-ME"
# cue word in the utterance -> the label word a perfect model answers (MELD's normalised words)
ANSWERS = {cue: NORMALISATION["meld"][label] for label, cue in CUES.items()}


class LabelServer(LocalServer):
    """POST /v1/chat/completions: answers the label whose cue word is in the last user message, "no idea"
    for utterances that mention coffee (unparsed), and HTTP 500 for the first ``fail_first`` requests."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization", ""))
                    n = len(server.requests)
                if n <= server.fail_first:
                    self.reply(500, {"error": "busy"})
                    return
                query = body["messages"][-1]["content"].split("Input:")[-1].lower()
                if "coffee" in query:
                    text = "no idea"
                else:
                    words = re.findall(r"[a-z]+", query)
                    text = next((ANSWERS[w] for w in words if w in ANSWERS), "neutral")
                self.reply(200, {"choices": [{"message": {"role": "assistant", "content": f" {text}."}}]})

            def reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._serve(Handler)


def profile(tmp_path: Path, model_dir: str = "unused", **prompt) -> Path:
    raw = tiny_settings(model_dir)
    raw["prompt"].update({"context_turns": 1, **prompt})
    raw["data"]["test_per_dataset"] = 0
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture()
def run(tmp_path):
    run = tmp_path / "run"
    save_synthetic_corpus(run, synthetic_corpus("meld", sizes=(4, 2, 3)))
    return run


def test_endpoint_is_evaluated_by_generate_and_parse(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(endpoint.ENV_API_KEY, KEY)
    with LabelServer() as server:
        monkeypatch.setenv(endpoint.ENV_BASE_URL, server.url)
        args = [
            "evaluate",
            "--run-dir",
            str(run),
            "--model",
            "openai:judge-1",
            "--config",
            str(profile(tmp_path)),
        ]
        assert cli.main(args) == 0
        out = json.loads(capsys.readouterr().out)
        assert server.auth and all(a == f"Bearer {KEY}" for a in server.auth)
        asked = len(server.requests)
        # The prompt is the builder's: the instruction as system message, the utterance last.
        first = server.requests[0]
        assert first["model"] == "judge-1" and first["messages"][0]["role"] == "system"
        assert "happiness" in first["messages"][0]["content"] and first["messages"][-1]["role"] == "user"
        folder = Path(out["out"])
        frame = __import__("pandas").read_csv(folder / "test_meld_predictions.csv")
        coffee = frame["output"].str.contains("no idea")
        assert asked == len(frame) == 12
        # Unparsed answers are wrong and counted; the cue answers are right.
        assert out["results"]["meld"]["unparsed"] == int(coffee.sum()) > 0
        assert (frame.loc[coffee, "pred_id"] == -1).all()
        assert (frame.loc[~coffee, "pred_id"] == frame.loc[~coffee, "gold_id"]).all()
        assert out["results"]["meld"]["accuracy"] == pytest.approx((~coffee).mean())
        for path in folder.rglob("*"):
            if path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                assert KEY not in text and server.url not in text, path
        # Run again: every answer comes from the cache, no request.
        assert cli.main(args) == 0
        assert len(server.requests) == asked


def test_failed_requests_stop_the_run_and_a_rerun_asks_only_those(run, tmp_path, monkeypatch):
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_curated_corpora

    config = load_config(profile(tmp_path))
    corpora = load_curated_corpora(run)
    out = tmp_path / "out"
    with LabelServer(fail_first=3) as server:
        client = endpoint.ChatEndpoint("judge-2", base_url=server.url, max_retries=0, backoff=0.0)
        with pytest.raises(RuntimeError, match="3 request.*run the same command again"):
            endpoint.evaluate_endpoint("openai:judge-2", config, corpora, out, client=client, workers=1)
        assert not (out / "summary.json").exists()
        summary = endpoint.evaluate_endpoint("judge-2", config, corpora, out, client=client, workers=1)
        assert len(server.requests) == 12 + 3  # the 3 failed ones were asked again, nothing else
        assert summary["results"]["meld"]["n"] == 12


def test_missing_endpoint_is_a_clear_error(run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(endpoint.ENV_BASE_URL, raising=False)
    args = ["evaluate", "--run-dir", str(run), "--model", "openai:x", "--config", str(profile(tmp_path))]
    assert cli.main(args) == 2
    assert endpoint.ENV_BASE_URL in capsys.readouterr().err


def test_local_model_is_scored_zero_shot_with_the_same_prompts(run, tmp_path, tiny_model_dir, capsys):
    args = ["evaluate", "--run-dir", str(run), "--model", tiny_model_dir, "--config", str(profile(tmp_path))]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["results"]["meld"]["n"] == 12 and out["results"]["meld"]["unparsed"] == 0
    folder = Path(out["out"])
    assert folder.parent.name == "zero_shot" and (folder / "summary.json").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["adapter"] is None and summary["model"] == tiny_model_dir and summary["mode"] == "score"
    # Zero-shot results stay apart from notebook 04's evaluation (find_predictions does not see them).
    from dialoguellm.scoring.predictions import find_predictions

    assert find_predictions(run) == {}
    config = config_from_dict(yaml.safe_load(profile(tmp_path).read_text()))
    assert config.prompt.context_turns == 1


def test_k_shot_demonstrations_reach_the_endpoint_as_the_prompt_our_models_see(
    run, tmp_path, monkeypatch, tiny_tokenizer
):
    """k_shot 2: every request carries the two training demonstrations as user/assistant turns before the
    query, and rendered with a chat template it is exactly the prompt a local model is scored on; the
    answers are parsed, an interrupted run resumes from its cache, and the key is written nowhere."""
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_curated_corpora
    from dialoguellm.prompts import builders_from_config, rows_of

    path = profile(tmp_path, k_shot=2)
    config = load_config(path)
    corpora = load_curated_corpora(run)
    builder = builders_from_config(tiny_tokenizer, corpora, config)["meld"]
    assert len(builder.demonstrations) == 2
    test_rows = rows_of(corpora["meld"]["test"])
    local = {
        builder.build(row, [r for r in test_rows if r["dialogue_id"] == row["dialogue_id"]]).prompt
        for row in test_rows
    }
    out = tmp_path / "k_shot"
    monkeypatch.setenv(endpoint.ENV_API_KEY, KEY)
    with LabelServer(fail_first=4) as server:
        monkeypatch.setenv(endpoint.ENV_BASE_URL, server.url)
        # Interrupted: the first 4 requests fail (no retries), the other answers are cached.
        client = endpoint.ChatEndpoint("judge-k", base_url=server.url, max_retries=0, backoff=0.0)
        with pytest.raises(RuntimeError, match="4 request"):
            endpoint.evaluate_endpoint("openai:judge-k", config, corpora, out, client=client, workers=1)
        args = ["evaluate", "--run-dir", str(run), "--model", "openai:judge-k", "--config", str(path)]
        assert cli.main([*args, "--out", str(out)]) == 0
        assert len(server.requests) == 12 + 4  # the resumed run asked only the 4 that failed
        assert cli.main([*args, "--out", str(out)]) == 0
        assert len(server.requests) == 12 + 4  # a finished run is re-scored from the cache
    result = json.loads((out / "summary.json").read_text())["results"]["meld"]
    demos = [(q, a) for q, a in builder._demo_parts()]
    seen = set()
    for body in server.requests:
        messages = body["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert [(messages[i]["content"], messages[i + 1]["content"]) for i in (1, 3)] == demos
        assert set(ANSWERS.values()) >= {messages[2]["content"], messages[4]["content"]}  # label words
        rendered = tiny_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        seen.add(rendered)
    assert seen == local  # every test prompt, each exactly as the local model sees it
    frame = __import__("pandas").read_csv(out / "test_meld_predictions.csv")
    coffee = frame["output"].str.contains("no idea")
    assert (frame.loc[~coffee, "pred_id"] == frame.loc[~coffee, "gold_id"]).all()
    assert result["unparsed"] == int(coffee.sum()) and result["accuracy"] == pytest.approx((~coffee).mean())
    for written in [*out.rglob("*"), *run.rglob("*")]:
        if written.is_file():
            text = written.read_text(encoding="utf-8", errors="replace")
            assert KEY not in text and server.url not in text, written

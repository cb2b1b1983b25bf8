"""The OpenAI-compatible HTTP describer against a chat-completions server on 127.0.0.1 started here.

The server's behaviour is chosen by a marker in the prompt (``MODE=...``), so each scenario runs the real
``describe_clips`` path: frames decoded from a synthetic clip, JPEG data URLs, retries, the cache.
"""

from __future__ import annotations

import json
import logging
import time

import pytest
from tiny import ChatServer, write_clip

from dialoguellm.corpora import video

av = pytest.importorskip("av")
FAKE_KEY = "sk-test-9f8e7d6c5b4a-NEVER-LOG-ME"


@pytest.fixture()
def server():
    with ChatServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [video.ClipRef("test", f"dia{i}_utt0", write_clip(root / f"dia{i}_utt0.mp4")) for i in range(6)]


@pytest.fixture()
def describer_env(monkeypatch, server):
    monkeypatch.setenv(video.ENV_BASE_URL, server.url)
    monkeypatch.setenv(video.ENV_MODEL, "vision-test-model")
    monkeypatch.setenv(video.ENV_API_KEY, FAKE_KEY)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must be reached directly


def make(**kwargs):
    defaults = {"timeout": 0.3, "max_retries": 2, "backoff": 0.01, "max_workers": 2}
    return video.make_describer("openai", **{**defaults, **kwargs})


def run(clips, describer, cache, mode, **kwargs):
    return video.describe_clips(
        clips,
        describer,
        cache,
        prompt=f"Describe the frames. MODE={mode}",
        n_frames=2,
        max_side=32,
        progress=False,
        **kwargs,
    )


def test_success_sends_images_model_and_key_and_fills_the_cache(server, clips, describer_env, tmp_path):
    summary = run(clips[:2], make(), tmp_path, "ok")
    assert (summary.done, summary.failed) == (2, 0)
    body = server.requests[0]
    assert body["model"] == "vision-test-model" and body["temperature"] == 0
    images = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == 2 and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert server.headers[0]["Authorization"] == f"Bearer {FAKE_KEY}"
    assert video.load_descriptions(tmp_path)["test"] == {
        "dia0_utt0": "A person stands in a kitchen (2 frames).",
        "dia1_utt0": "A person stands in a kitchen (2 frames).",
    }


def test_429_is_retried_with_backoff_then_succeeds(server, clips, describer_env, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="dialoguellm.corpora.video.client"):
        summary = run(clips[:1], make(max_retries=3), tmp_path, "429x2")
    assert {r.name for r in caplog.records if "HTTP 429" in r.getMessage()} == {
        "dialoguellm.corpora.video.client"
    }
    assert (summary.done, summary.failed) == (1, 0)
    assert server.counts["429x2"] == 3
    assert caplog.text.count("HTTP 429") == 2


def test_500_exhausts_retries_and_is_recorded_then_retried_on_request(server, clips, describer_env, tmp_path):
    summary = run(clips[:1], make(max_retries=2), tmp_path, "500")
    assert (summary.done, summary.failed) == (0, 1)
    assert server.counts["500"] == 3  # first try + 2 retries
    error = summary.failures[0]["error"]
    assert "HTTP 500" in error and "upstream exploded" in error and "after 3 attempts" in error
    assert run(clips[:1], make(), tmp_path, "500").attempted == 0  # failures are not retried by default
    assert run(clips[:1], make(max_retries=0), tmp_path, "500", retry_failed=True).attempted == 1
    assert server.counts["500"] == 4


def test_slow_responses_time_out_and_are_retried(server, clips, describer_env, tmp_path):
    started = time.monotonic()
    summary = run(clips[:1], make(timeout=0.2, max_retries=1), tmp_path, "slow")
    assert summary.failed == 1 and "timed out" in summary.failures[0]["error"]
    assert server.counts["slow"] == 2
    assert time.monotonic() - started < 1.5  # the client did not wait for the 1 s answers


def test_malformed_json_fails_at_once_with_a_clear_reason(server, clips, describer_env, tmp_path):
    summary = run(clips[:1], make(), tmp_path, "malformed")
    assert summary.failed == 1 and server.counts["malformed"] == 1
    assert summary.failures[0]["error"].startswith("ValueError: malformed response from http://127.0.0.1")


def test_concurrency_is_limited(server, clips, describer_env, tmp_path):
    summary = run(clips, make(max_workers=2, timeout=5), tmp_path, "steady")
    assert summary.done == 6
    assert server.max_in_flight == 2
    lines = (tmp_path / "descriptions" / "descriptions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["clip_id"] for line in lines) == [c.clip_id for c in clips]


def test_the_api_key_never_reaches_cache_logs_or_errors(
    server, clips, describer_env, tmp_path, caplog, capsys
):
    with caplog.at_level(logging.DEBUG):
        describer = make(max_retries=1)
        ok = run(clips[:1], describer, tmp_path, "ok")
        bad = run(clips[1:2], describer, tmp_path, "echo401")
        retried = run(clips[2:3], describer, tmp_path, "500")
    assert (ok.done, bad.failed, retried.failed) == (1, 1, 1)
    assert server.counts["echo401"] == 1  # a 401 is not retried
    assert "HTTP 401" in bad.failures[0]["error"] and "***" in bad.failures[0]["error"]
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    out = capsys.readouterr()
    for text in (written, caplog.text, out.out, out.err, repr(describer), json.dumps(bad.as_dict())):
        assert FAKE_KEY not in text
    assert FAKE_KEY in server.headers[0]["Authorization"]  # it was really sent (the check above can fail)


@pytest.mark.slow
def test_notebook_with_the_http_describer_never_shows_the_key(server, describer_env, tmp_path):
    from dialoguellm import pipeline
    from dialoguellm.runs import REPO_DIR, load_record

    raw = tmp_path / "MELD.Raw"
    for clip_id in ("dia0_utt0", "dia0_utt1"):
        write_clip(raw / "output_repeated_splits_test" / f"{clip_id}.mp4")
    run = tmp_path / "run"
    params = {"CLIPS_DIR": str(raw), "DESCRIBER": "openai", "N_FRAMES": 2, "SPLITS": ["test"]}
    notebook = REPO_DIR / "notebooks" / "02_video_descriptions.ipynb"
    pipeline.run_notebook(notebook, run, params, figures=run / "figures", timeout=300)
    record = load_record(run, "02_video_descriptions")
    assert record["describer"] == "openai" and record["model"] == "vision-test-model"
    assert record["run"]["done"] == 2 and server.counts["ok"] == 2
    assert FAKE_KEY in server.headers[0]["Authorization"]
    for path in run.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path

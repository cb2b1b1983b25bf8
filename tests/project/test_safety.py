"""Safety: API keys and tokens never reach a run's files or logs; the package never unpickles or runs remote
model code by default (weights are read and written as safetensors); trust_remote_code is warned about."""

from __future__ import annotations

import ast
import json
import logging
import re
from pathlib import Path

import pytest
import yaml
from tiny import save_synthetic_corpus, synthetic_corpus, tiny_settings

from dialoguellm import cli
from dialoguellm.config import load_config
from dialoguellm.corpora import video
from dialoguellm.runs import REPO_DIR

# Tokens a researcher may have in the environment; none may be written anywhere.
FAKE_TOKENS = {
    video.ENV_API_KEY: "sk-test-9f8e7d6c5b4a-NEVER-LOG-ME",
    "HF_TOKEN": "hf_FAKEtokenDoNotWriteAnywhere0123",
    "OPENAI_API_KEY": "sk-proj-FAKE-openai-key-never-written",
}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"}


@pytest.mark.slow
def test_fake_keys_reach_no_file_or_log_of_a_whole_run(tiny_model_dir, tmp_path, monkeypatch, caplog, capsys):
    pytest.importorskip("av")  # PyAV decodes the frames
    from tiny import ChatServer, write_clip

    for name, value in FAKE_TOKENS.items():
        monkeypatch.setenv(name, value)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must be reached directly
    run = tmp_path / "run"
    corpus = synthetic_corpus("meld", sizes=(4, 2, 2))
    save_synthetic_corpus(run, corpus)
    clip = write_clip(tmp_path / "clip.mp4")
    clips = [video.ClipRef(ref.split, ref.clip_id, clip) for ref in video.clip_refs(corpus)]

    settings = tiny_settings(tiny_model_dir, epochs=1)
    settings["prompt"]["use_video"] = True
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    with ChatServer() as server, caplog.at_level(logging.DEBUG):
        monkeypatch.setenv(video.ENV_BASE_URL, server.url)
        monkeypatch.setenv(video.ENV_MODEL, "vision-test-model")
        describer = video.make_describer("openai", timeout=5, max_retries=0, max_workers=2)
        ok = video.describe_clips(clips, describer, run, n_frames=1, max_side=32, progress=False)
        # a provider that echoes the key back in its error: the failure is recorded, redacted
        extra = [video.ClipRef("test", "dia99_utt0", clip)]
        bad = video.describe_clips(extra, describer, run, prompt="MODE=echo401", n_frames=1, progress=False)
        assert cli.main(["train", "--config", str(config_file), "--run-dir", str(run)]) == 0
        assert cli.main(["evaluate", "--run-dir", str(run)]) == 0
    assert (ok.done, bad.failed) == (len(clips), 1)
    # The key really was sent (so the scan below can fail), and the run really used the descriptions.
    assert server.headers[0]["Authorization"] == f"Bearer {FAKE_TOKENS[video.ENV_API_KEY]}"
    described = video.load_descriptions(run)["test"]
    assert len(described) == 8 and set(described.values()) == {"A person stands in a kitchen (1 frames)."}

    files = [p for p in run.rglob("*") if p.is_file()]
    assert {
        "descriptions.jsonl",
        "metrics.json",
        "train.log",
        "summary.json",
        "adapter_model.safetensors",
    } <= {p.name for p in files}
    out = capsys.readouterr()
    for name, token in FAKE_TOKENS.items():
        for path in files:
            assert token.encode() not in path.read_bytes(), f"${name} was written to {path}"
        for where, text in (("log", caplog.text), ("stdout", out.out), ("stderr", out.err)):
            assert token not in text, f"${name} reached the {where}"
    # Weights are safetensors: nothing a reader would have to unpickle.
    assert not [p for p in files if p.suffix in PICKLE_SUFFIXES]


# ------------------------------------------------------------------------------------------- the audit
UNSAFE_CALLS = {
    "pickle.load": "unpickling runs code from the file",
    "pickle.loads": "unpickling runs code from the file",
    "dill.load": "unpickling runs code from the file",
    "joblib.load": "joblib files are pickles",
    "pd.read_pickle": "unpickling runs code from the file",
    "pandas.read_pickle": "unpickling runs code from the file",
}


def unsafe_lines(source: str, name: str) -> list[str]:
    """Places in Python ``source`` that could run code from a file or a hub repository: ``torch.load``
    without ``weights_only=True``, any unpickling, ``np.load(allow_pickle=True)``, ``yaml.load`` without a
    safe loader, and ``trust_remote_code=True`` as a literal (argument or default)."""
    found = []
    tree = ast.parse(source)

    def flag(node: ast.AST, why: str) -> None:
        found.append(f"{name}:{node.lineno}: {why}")

    def is_true(node: ast.AST | None) -> bool:
        return isinstance(node, ast.Constant) and node.value is True

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            keywords = {k.arg: k.value for k in node.keywords}
            if func.endswith("torch.load") and not is_true(keywords.get("weights_only")):
                flag(node, "torch.load without weights_only=True")
            if func in UNSAFE_CALLS:
                flag(node, f"{func}: {UNSAFE_CALLS[func]}")
            if func.endswith("np.load") and is_true(keywords.get("allow_pickle")):
                flag(node, "np.load(allow_pickle=True)")
            if func.endswith("yaml.load") and "Safe" not in ast.unparse(
                keywords.get("Loader", ast.Constant(""))
            ):
                flag(node, "yaml.load without SafeLoader (use yaml.safe_load)")
            if is_true(keywords.get("trust_remote_code")):
                flag(node, "trust_remote_code=True passed as a literal")
            if func.endswith("field") and is_true(keywords.get("default")):
                parent_names = [
                    t.target.id
                    for t in ast.walk(tree)
                    if isinstance(t, ast.AnnAssign) and t.value is node and isinstance(t.target, ast.Name)
                ]
                if "trust_remote_code" in parent_names:
                    flag(node, "trust_remote_code defaults to True")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults
            defaults += node.args.kw_defaults
            for arg, default in zip(args, defaults, strict=True):
                if arg.arg == "trust_remote_code" and is_true(default):
                    flag(node, f"{node.name}(trust_remote_code=True) by default")
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if node.target.id == "trust_remote_code" and is_true(node.value):
                flag(node, "trust_remote_code defaults to True")
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n in ("pickle", "cPickle", "dill", "joblib") for n in names):
                flag(node, f"imports {', '.join(n for n in names if n)}")
    return found


def _project_sources() -> dict[str, str]:
    """Every Python source of the package and benchmarks, and every notebook's code cells."""
    sources = {}
    for folder in ("dialoguellm", "benchmarks", "tools"):
        for path in sorted((REPO_DIR / folder).rglob("*.py")):
            sources[str(path.relative_to(REPO_DIR))] = path.read_text(encoding="utf-8")
    for path in sorted((REPO_DIR / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        # IPython magics are not Python; they run no model code either
        sources[str(path.relative_to(REPO_DIR))] = "\n".join(
            "\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
            for cell in code
        )
    return sources


def test_no_unpickling_or_remote_code_anywhere_in_the_project():
    sources = _project_sources()
    assert "dialoguellm/model/loading.py" in sources and any(k.endswith(".ipynb") for k in sources)
    problems = [line for name, source in sources.items() for line in unsafe_lines(source, name)]
    assert not problems, "\n".join(problems)
    profiles = sorted(REPO_DIR.glob("dialoguellm/profiles/**/*.yaml"))
    profiles += sorted(REPO_DIR.glob("dialoguellm/experiments/**/*.yaml"))
    assert len(profiles) >= 16  # three run profiles, three experiments, ten ablation arms
    for path in [*profiles, *sorted(REPO_DIR.glob("configs/**/*.yaml"))]:
        raw = yaml.safe_load(path.read_text()) or {}
        assert (raw.get("model") or {}).get("trust_remote_code", False) is False, path


def test_the_audit_finds_each_unsafe_pattern():
    bad = """
import pickle
import torch, numpy as np, yaml, pandas as pd
from dataclasses import field
from transformers import AutoModel
state = torch.load("x.pt")
ok = torch.load("x.pt", weights_only=True)
obj = pickle.loads(b"")
arr = np.load("a.npy", allow_pickle=True)
cfg = yaml.load(open("c.yaml"))
safe = yaml.load(open("c.yaml"), Loader=yaml.SafeLoader)
frame = pd.read_pickle("f.pkl")
model = AutoModel.from_pretrained("org/x", trust_remote_code=True)
def load(name, trust_remote_code=True): ...
trust_remote_code: bool = field(default=True)
"""
    found = unsafe_lines(bad, "bad.py")
    lines = sorted({int(re.search(r":(\d+):", f).group(1)) for f in found})
    assert lines == [2, 6, 8, 9, 10, 12, 13, 14, 15], found


def test_trust_remote_code_in_a_config_logs_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="dialoguellm.config"):
        load_config("cpu")
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="dialoguellm.config"):
        load_config("cpu", {"model.trust_remote_code": True, "model.name": "org/custom-model"})
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert (
        "model.trust_remote_code is true" in record.getMessage() and "org/custom-model" in record.getMessage()
    )
    assert load_config("paper").model.trust_remote_code is False


def test_saved_run_settings_hold_no_secrets(tmp_path, monkeypatch):
    # Keys come from the environment only; the settings saved beside every result never read it.
    from dialoguellm.config import save_config

    for name, value in FAKE_TOKENS.items():
        monkeypatch.setenv(name, value)
    text = save_config(load_config("cpu"), tmp_path / "config.yaml").read_text()
    assert not any(token in text for token in FAKE_TOKENS.values())
    assert not any(Path(p).suffix in PICKLE_SUFFIXES for p in tmp_path.iterdir())

"""`dialoguellm predict` on a user's own conversation file: tiny random LLaMA, a few-turn file, a run with an
adapter; the scores equal evaluation's for the same turns; bad input fails naming the file and the row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from tiny import TURNS, make_run, tiny_config

import dialoguellm
from dialoguellm import cli
from dialoguellm.config import save_config
from dialoguellm.evaluation import predict as pr
from dialoguellm.model import loading
from dialoguellm.prompts import PromptBuilder
from dialoguellm.runs import RunLayout
from dialoguellm.scoring.predictions import predict_by_scoring


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture()
def run(tmp_path, tiny_model_dir):
    return make_run(tmp_path, tiny_model_dir)


def test_predict_a_file_with_the_adapter_equals_evaluation_scoring(run, tmp_path, tiny_model_dir):
    path = write_csv(tmp_path / "turns.csv", TURNS)
    result = dialoguellm.predict(path, run_dir=run, labels="meld", progress=False)
    frame = result.frame
    words = result.labels
    assert len(frame) == len(TURNS) and list(frame["speaker"]) == [t["speaker"] for t in TURNS]
    probs = frame[[f"p_{w}" for w in words]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-9)
    assert list(frame["predicted"]) == [words[i] for i in probs.argmax(axis=1)]
    np.testing.assert_allclose(frame["probability"], probs.max(axis=1))
    # Context: each dialogue starts afresh; z = 1 previous turn after the first.
    assert list(frame["context_turns"]) == [0, 1, 1, 0, 1]
    assert result.adapter is not None and not result.calibrated
    # The same turns through the evaluation path (builder + engine) give the same probabilities.
    loaded = loading.load_model(tiny_model_dir, dtype="fp32")
    model = loading.load_adapter(loaded.model, RunLayout(run).adapter)
    builder = PromptBuilder(loaded.tokenizer, "meld", context_turns=1, use_video=False)
    rows = [{**t, "turn": i if i < 3 else i - 3, "label_id": 0} for i, t in enumerate(TURNS)]
    examples = [builder.build(r, [x for x in rows if x["dialogue_id"] == r["dialogue_id"]]) for r in rows]
    want = predict_by_scoring(model, loaded.tokenizer, builder, examples, 8, "fp32", progress=False)
    np.testing.assert_allclose(probs, want[[f"p_{w}" for w in words]].to_numpy(), atol=1e-6)
    assert list(frame["prompt_tokens"]) == [len(e.prompt_ids) for e in examples]


def test_the_runs_label_biases_apply_to_its_corpus_labels(run, tmp_path, tiny_model_dir):
    config = tiny_config(tiny_model_dir)
    config.eval.calibrate = True
    save_config(config, RunLayout(run).training / "config.yaml")
    bias = [0.0] * 7
    bias[6] = 50.0  # fear wins every turn
    (RunLayout(run).adapter / "calibration.json").write_text(json.dumps({"meld": bias}))
    result = pr.predict(write_csv(tmp_path / "t.csv", TURNS), run_dir=run, progress=False)
    assert result.calibrated
    assert set(result.frame["predicted"]) == {"fear"}
    assert any("dev split" in note for note in result.notes)


def test_own_labels_are_scored_zero_shot_and_say_so(run, tmp_path):
    turns = [{**t, "label": "anger" if i == 3 else ""} for i, t in enumerate(TURNS)]
    result = pr.predict(
        write_csv(tmp_path / "t.csv", turns), run_dir=run, labels="happiness, anger,neutral", progress=False
    )
    assert result.labels == ("happiness", "anger", "neutral")
    assert [c for c in result.frame if c.startswith("p_")] == ["p_happiness", "p_anger", "p_neutral"]
    assert set(result.frame["predicted"]) <= set(result.labels)
    assert list(result.frame["gold"])[3] == "anger"
    assert any("zero-shot" in note and "never with these words" in note for note in result.notes)


def test_cli_writes_json_and_csv_with_a_bare_model(tmp_path, tiny_model_dir, capsys):
    profile = tmp_path / "tiny.yaml"
    raw = tiny_config(tiny_model_dir).to_dict()
    raw.pop("source")
    profile.write_text(yaml.safe_dump(raw), encoding="utf-8")
    jsonl = tmp_path / "turns.jsonl"
    jsonl.write_text("\n".join(json.dumps(t) for t in TURNS[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "pred.json"
    args = ["predict", "--model", tiny_model_dir, "--config", str(profile), str(jsonl), "--out", str(out)]
    assert cli.main(args) == 0
    data = json.loads(out.read_text())
    assert data["adapter"] is None and data["model"] == tiny_model_dir and len(data["turns"]) == 3
    assert set(data["turns"][0]) >= {"speaker", "text", "predicted", "probability", "context_turns"}
    assert cli.main(["predict", "--model", tiny_model_dir, "--config", str(profile), str(jsonl)]) == 0
    printed = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(printed["text"]) == [t["text"] for t in TURNS[:3]]


@pytest.mark.parametrize(
    ("name", "content", "labels", "expected"),
    [
        ("missing.csv", "speaker,words\nAnn,hi\n", None, "no 'text' column"),
        ("empty_text.csv", "speaker,text\nAnn,hi\nBen,\n", None, "row 3: empty text"),
        ("notes.txt", "Ann: hi\n", None, "not a CSV or JSONL file"),
        (
            "broken.jsonl",
            '{"speaker": "Ann", "text": "hi"}\n{"speaker": "Ben",\n',
            None,
            "line 2: not valid JSON",
        ),
        ("quote.csv", 'speaker,text\nAnn,"hi\n', None, "row 2"),
        ("ok.csv", "speaker,text\nAnn,hi\n", "calm,angry,Calm", "names 'Calm' twice"),
        ("ok.csv", "speaker,text\nAnn,hi\n", "calm", "a single label"),
        ("gold.csv", "speaker,text,label\nAnn,hi,joy\nBen,yo,bored\n", "meld", "row 3: label 'bored'"),
    ],
)
def test_bad_input_names_file_and_row_without_traceback(tmp_path, capsys, name, content, labels, expected):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    args = ["predict", "--model", "no-such-model-is-ever-loaded", str(path)]
    if labels:
        args += ["--labels", labels]
    if name == "gold.csv":  # the gold label is checked against the label set after loading: check directly
        with pytest.raises(pr.InputError, match=expected):
            turns = pr.read_turns(path)
            pr._gold_id(turns.rows[1], pr.parse_labels(labels), turns.source)
        return
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    if name != "ok.csv":  # a file's fault names the file; a label list's names the list
        assert str(path) in err


def test_records_and_frames_are_accepted():
    turns = pr.turns_from_records(pd.DataFrame(TURNS))
    assert [r["turn"] for r in turns.rows] == [0, 1, 2, 0, 1]
    one = pr.turns_from_records([{"speaker": "A", "text": "x"}, {"speaker": "B", "text": "y"}])
    assert {r["dialogue_id"] for r in one.rows} == {"1"} and not one.has_gold
    with pytest.raises(pr.InputError, match="holds no turns"):
        pr.turns_from_records([])


@pytest.mark.slow
def test_import_stays_light_and_predict_is_exported_lazily():
    import subprocess
    import sys

    code = (
        "import sys, dialoguellm; assert 'torch' not in sys.modules, 'import dialoguellm loaded torch'; "
        "f = dialoguellm.predict; assert f.__module__ == 'dialoguellm.evaluation.predict'; print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        dialoguellm.nothing  # noqa: B018

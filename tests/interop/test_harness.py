"""lm-evaluation-harness tasks (dialoguellm/interop/harness_tasks): the command ``dialoguellm lm-eval-command``
prints runs lm-eval 0.4 on a small dev sample, and lm-eval's per-utterance predictions equal this package's
label scoring in fp32 (ranked by summed log-likelihood: ``acc``; harness.py says why not the per-token mean).
On a tiny random LLaMA so it runs in CI; docs/INTEROP.md gives the embedded model's measured agreement."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
import sys

import pytest

from dialoguellm import cli
from dialoguellm.interop import harness

pytest.importorskip("lm_eval")

LIMIT = 12


@pytest.fixture(scope="module")
def lm_eval_run(tiny_model_dir, tmp_path_factory):
    """Run the line ``dialoguellm lm-eval-command`` prints, as printed (lm_eval as ``python -m lm_eval``)."""
    out = tmp_path_factory.mktemp("lm_eval")
    argv = ["lm-eval-command", "--model", tiny_model_dir, "--split", "dev", "--limit", str(LIMIT),
            "--output-path", str(out), "--batch-size", "4"]  # fmt: skip
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(argv) == 0
    command = shlex.split(printed.getvalue().strip())
    assert command[0] == "lm_eval"
    env = {**os.environ, "HF_DATASETS_CACHE": str(out / "hf_cache"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "lm_eval", *command[1:]], capture_output=True, text=True, timeout=300, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out, command


def test_cli_prints_the_command_it_runs(tiny_model_dir, tmp_path, capsys):
    assert cli.main(["lm-eval-command", "--model", tiny_model_dir, "--corpora", "meld", "--limit", "5"]) == 0
    printed = shlex.split(capsys.readouterr().out.strip())
    assert printed[:3] == ["lm_eval", "--model", "hf"]
    assert printed[printed.index("--tasks") + 1] == "meld_erc"
    assert printed[printed.index("--include_path") + 1] == str(harness.task_folder())
    assert f"pretrained={tiny_model_dir}" in printed[printed.index("--model_args") + 1]
    assert cli.main(["lm-eval-command", "--model", str(tmp_path / "absent")]) == 2
    assert cli.main(["lm-eval-command", "--corpora", "friends"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("corpus", ["meld", "emorynlp"])
def test_lm_eval_predictions_equal_the_package_scorer(lm_eval_run, tiny_model_dir, corpus):
    out, _ = lm_eval_run
    from_harness = harness.read_samples(out, f"{corpus}_erc_dev")
    from_package = harness.package_scores(tiny_model_dir, corpus, "dev", LIMIT)
    assert len(from_harness) == LIMIT
    report = harness.agreement(from_harness, from_package)
    assert report["equal_predictions"] == 1.0
    assert report["max_abs_ll_difference_centred"] < 1e-4
    assert report["accuracy_lm_eval"] == report["accuracy_package"]
    # the prompt lm-eval scored is the package's own rendering of the same utterance
    assert list(from_harness["utterance_id"]) == list(from_package["utterance_id"])


def test_task_documents_hold_the_package_prompt_and_answers(tiny_model_dir):
    from dialoguellm.config import load_config
    from dialoguellm.corpora.readers import load_corpora
    from dialoguellm.model.loading import load_model
    from dialoguellm.prompts.builder import builders_from_config

    docs = harness.erc_docs("meld", splits=("dev",), pretrained=tiny_model_dir)["dev"]
    loaded = load_model(tiny_model_dir, dtype="fp32")
    corpora = load_corpora(["meld"])
    builder = builders_from_config(loaded.tokenizer, corpora, load_config("cpu"))["meld"]
    expected = builder.build_split(corpora["meld"]["dev"], only=[3])[0]
    doc = docs[3]
    assert doc["prompt"] == expected.prompt and doc["gold"] == expected.label_id
    whole = loaded.tokenizer(doc["prompt"] + doc["choices"][1], add_special_tokens=False)["input_ids"]
    assert whole == expected.prompt_ids + builder.answer_ids[1]  # the tokens lm-eval scores are ours


def test_iemocap_task_needs_the_users_copy(monkeypatch, tiny_model_dir):
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    with pytest.raises(ValueError, match="IEMOCAP_DIR"):
        harness.erc_docs("iemocap", pretrained=tiny_model_dir)
    with pytest.raises(ValueError, match="pretrained"):
        harness.erc_docs("meld")


def test_iemocap_task_reads_the_users_copy(tmp_path, tiny_model_dir):
    from iemocap_synth import build_iemocap_tree

    from dialoguellm.corpora.readers import load_iemocap

    release = build_iemocap_tree(tmp_path)
    docs = harness.erc_docs(
        "iemocap", splits=("test", "dev"), pretrained=tiny_model_dir, iemocap_dir=str(release)
    )
    expected = load_iemocap(release)
    assert len(docs["test"]) == len(expected["test"]) and len(docs["dev"]) == len(expected["dev"])
    assert docs["test"][0]["choices"][0].startswith("happiness")  # hap -> the paper's word

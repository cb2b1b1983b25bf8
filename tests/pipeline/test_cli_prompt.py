"""`dialoguellm prompt` prints one utterance's prompt as the model sees it, and refuses bad choices."""

from __future__ import annotations

from dialoguellm import cli
from dialoguellm.config import load_config
from dialoguellm.corpora.readers import load_meld


def test_prompt_shows_the_utterance_its_context_and_gold_answer(tiny_model_dir, capsys):
    rc = cli.main(["prompt", "--set", f"model.name={tiny_model_dir}", "--corpus", "meld", "--index", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    row = load_meld()["test"][3]
    assert f"{row['speaker']}: {row['text']}" in out
    assert "Context:" in out  # z = 1 in the cpu profile: the previous turn is shown
    assert out.rstrip().endswith("prompt tokens]") and "[gold answer: neutral;" in out


def test_prompt_refuses_a_corpus_outside_the_profile_and_a_bad_index(tiny_model_dir, capsys):
    assert "iemocap" not in load_config("cpu").data.datasets
    assert cli.main(["prompt", "--set", f"model.name={tiny_model_dir}", "--corpus", "iemocap"]) == 2
    assert "data.datasets" in capsys.readouterr().err
    assert cli.main(["prompt", "--set", f"model.name={tiny_model_dir}", "--index", "99999"]) == 2
    assert "outside meld test" in capsys.readouterr().err

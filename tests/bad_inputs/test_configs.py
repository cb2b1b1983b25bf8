"""Bad run settings: each case is refused with a ValueError naming the file (or the --set override), the key
and the fix, by ``load_config`` and by ``dialoguellm train`` (exit 2), and the run folder it was pointed at
keeps every earlier result as it was."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from unchanged import Written

from dialoguellm import cli
from dialoguellm.config import PROFILES_DIR, load_config, parse_overrides
from dialoguellm.corpora.readers import CorpusError

# (case, edits of dialoguellm/profiles/cpu.yaml as {"section.key": value} or the file's whole text, --set overrides, message)
CASES = [
    ("unknown key", {"lora.rank": 8}, [], r"unknown key lora\.rank; valid keys in lora: r, alpha"),
    ("unknown section", {"trainer.lr": 1.0}, [], r"unknown section 'trainer'; expected one of model, lora"),
    ("section not a mapping", {"train": [1, 2]}, [], r"section 'train' must be a mapping of key: value"),
    ("number is text", {"train.lr": "fast"}, [], r"train\.lr: expected a number, got 'fast'"),
    ("number is a bool", {"train.epochs": True}, [], r"train\.epochs: expected a number, got True"),
    (
        "list is a string",
        {"lora.target_modules": "q_proj"},
        [],
        r"target_modules: expected a list, got 'q_proj'",
    ),
    ("string is a number", {"model.name": 7}, [], r"model\.name: expected a string, got 7"),
    ("LoRA rank 0", {"lora.r": 0}, [], r"lora\.r is 0; the LoRA rank must be >= 1 \(the paper uses 4\)"),
    (
        "negative learning rate",
        {"train.lr": -1e-4},
        [],
        r"train\.lr is -0\.0001; the learning rate must be > 0",
    ),
    (
        "batch not divisible by the micro-batch",
        {"train.batch_size": 100},
        [],
        r"train\.batch_size is 100, not a multiple of train\.micro_batch_size 8; use 96 or 104",
    ),
    (
        "batch is not micro-batch x accumulation",
        {"train.batch_size": 32},
        [],
        r"train\.batch_size is 32 but micro_batch_size x grad_accum = 8 x 2 = 16; set batch_size to that",
    ),
    (
        "context window below 0",
        {"prompt.context_turns": -1},
        [],
        r"context_turns is -1; the context window must",
    ),
    (
        "context window a word",
        {"prompt.context_turns": "many"},
        [],
        r"is 'many'; use an integer >= 0 or 'all'",
    ),
    (
        "unknown quantisation",
        {"model.quantization": "3bit"},
        [],
        r"quantization is '3bit'; use none, 8bit or 4bit",
    ),
    (
        "unknown corpus",
        {"data.datasets": ["friends"]},
        [],
        r"data\.datasets contains 'friends'; use names from",
    ),
    ("not YAML", "train: [lr: 1\n", [], r"not valid YAML"),
    ("top level a list", "- train\n- lora\n", [], r"the top level must be a mapping of sections"),
    (
        "override of an unknown key",
        {},
        ["train.learning_rate=1e-4"],
        r"\(override train\.learning_rate\): unknown key train\.learning_rate; valid keys in train: seed, lr",
    ),
    (
        "override of the wrong type",
        {},
        ["train.epochs=many"],
        r"\(override train\.epochs\): train\.epochs: expected a number, got 'many'",
    ),
    ("override without a value", {}, ["train.lr"], r"--set 'train\.lr': expected section\.key=value"),
]


def _config_file(tmp_path, edits) -> str:
    path = tmp_path / "settings.yaml"
    if isinstance(edits, str):
        path.write_text(edits)
        return str(path)
    raw = yaml.safe_load((PROFILES_DIR / "cpu.yaml").read_text())
    for dotted, value in edits.items():
        section, _, key = dotted.partition(".")
        if key:
            raw.setdefault(section, {})[key] = value
        else:
            raw[section] = value
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _refused_by_cli(config: str, overrides: list[str], run, capsys) -> str:
    """Run ``dialoguellm train`` into ``run``; it must exit 2. Returns what it printed on stderr."""
    sets = [arg for pair in overrides for arg in ("--set", pair)]
    assert cli.main(["train", "--config", config, *sets, "--run-dir", str(run)]) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("case, edits, overrides, message", CASES, ids=[c[0] for c in CASES])
def test_bad_setting_is_refused_naming_file_key_and_fix(
    tmp_path, finished_run, written, capsys, case, edits, overrides, message
):
    config = _config_file(tmp_path, edits)
    with pytest.raises(ValueError, match=message) as err:
        load_config(config, parse_overrides(overrides))
    assert config in str(err.value) or "--set" in str(err.value)
    assert str(err.value) in _refused_by_cli(config, overrides, finished_run, capsys)
    written.assert_unchanged()


def test_missing_config_file_lists_the_profiles(tmp_path, finished_run, written, capsys):
    with pytest.raises(
        FileNotFoundError, match=r"Config not found: .*nowhere\.yaml\. Known profiles: cpu, paper"
    ):
        load_config(tmp_path / "nowhere.yaml")
    assert "Config not found" in _refused_by_cli(str(tmp_path / "nowhere.yaml"), [], finished_run, capsys)
    written.assert_unchanged()


def _rewrite_curated(run, column: str, value) -> str:
    """Put ``value`` into ``column`` of the second row of the run's curated MELD training file."""
    path = run / "data" / "meld" / "train.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[1][column] = value
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(path)), path)
    return str(path)


@pytest.mark.parametrize(
    "column, value, message",
    [
        (
            "label",
            "Joyful",
            r"row 2: label 'Joyful' is not in the meld label set \(neutral, joy, .*run notebooks/01",
        ),
        (
            "label_id",
            99,
            r"row 2: label_id 99 does not match label '\w+' \(id \d in the meld label set\); run",
        ),
        ("dataset", "emorynlp", r"row 2: field 'dataset' is 'emorynlp' in the meld folder; run notebooks/01"),
    ],
    ids=["label from another corpus", "label id off by one", "rows of another corpus"],
)
def test_a_label_set_that_does_not_match_the_data(finished_run, capsys, column, value, message):
    from dialoguellm.corpora.readers import load_corpora_for

    # Keep the row's label id consistent unless the id is the thing broken (so only one fault is present).
    path = _rewrite_curated(finished_run, column, value)
    written = Written(finished_run)
    with pytest.raises(CorpusError, match=message) as err:
        load_corpora_for(load_config("cpu"), finished_run)
    assert path in str(err.value)
    assert str(err.value) in _refused_by_cli("cpu", [], finished_run, capsys)
    written.assert_unchanged()


def test_a_corpus_the_run_does_not_have(finished_run, written, capsys):
    from dialoguellm.corpora.readers import load_corpora_for

    config = load_config("cpu", {"data.datasets": ["meld", "iemocap"]})
    with pytest.raises(
        FileNotFoundError, match=r"Corpus 'iemocap' \(data\.datasets\) could not be loaded; run"
    ):
        load_corpora_for(config, finished_run)
    # The CLI resolves the datasets first: an absent IEMOCAP beside other corpora is dropped with a warning
    # (tests/training/test_paper_profile.py); IEMOCAP alone leaves nothing to run on.
    err = _refused_by_cli("cpu", ["data.datasets=[iemocap]"], finished_run, capsys)
    assert "data.datasets is [iemocap] but IEMOCAP is not available; set IEMOCAP_DIR" in err
    written.assert_unchanged()

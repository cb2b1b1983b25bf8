"""Bad video descriptions: a file to import, or a run's description cache. Each case raises an error naming
the file, the line/row/key and the fix, and the run's existing cache keeps its bytes and modification time."""

from __future__ import annotations

import json

import pytest
from unchanged import Written

from dialoguellm.corpora import video

ROW = '{{"clip_id": "{}", "description": "{}"}}\n'
CLIPS = [video.ClipRef("dev", "dia0_utt0"), video.ClipRef("test", "dia0_utt0")]

# (case, file name, content, describer options, message)
CASES = [
    (
        "unknown clip id",
        "a.jsonl",
        ROW.format("dia0_utt0", "x") + ROW.format("dia9_utt9", "y"),
        {},
        r"a\.jsonl: 1 clip id\(s\) match no MELD utterance.*line 2: 'dia9_utt9'.*fix or remove those rows",
    ),
    (
        "duplicate clip id",
        "b.jsonl",
        ROW.format("dia0_utt0", "x") + ROW.format("dia0_utt0", "y"),
        {},
        r"b\.jsonl, line 2: duplicate clip id 'dia0_utt0' \(first at line 1\); keep one row per clip",
    ),
    (
        "empty text",
        "c.csv",
        "clip_id,description\ndia0_utt0,  \n",
        {},
        r"c\.csv, row 2: empty 'description'.*fill",
    ),
    (
        "text that is a number",
        "n.json",
        '{"dia0_utt0": 5}',
        {},
        r"n\.json, key 'dia0_utt0': 'description' of clip 'dia0_utt0' is a int, not text; write the desc",
    ),
    (
        "empty clip id",
        "e.csv",
        "clip_id,description\n,a man waves\n",
        {},
        r"e\.csv, row 2: empty 'clip_id'; fill in",
    ),
    (
        "JSON file not JSON",
        "d.json",
        "[{'clip_id': 'dia0_utt0'}]",
        {},
        r"d\.json: not valid JSON \(line 1.*Expected",
    ),
    (
        "JSONL line not JSON",
        "e.jsonl",
        ROW.format("dia0_utt0", "x") + "{oops\n",
        {},
        r"e\.jsonl, line 2: not valid JSON .*Each line must be one JSON object",
    ),
    (
        "JSON of another shape",
        "s.json",
        '"dia0_utt0: a man waves"',
        {},
        r"s\.json: expected a JSON list or object, found str; write",
    ),
    (
        "JSONL line a list",
        "l.jsonl",
        '["dia0_utt0", "x"]\n',
        {},
        r"l\.jsonl, line 1: expected a JSON object, found list; write it",
    ),
    (
        "empty file",
        "z.jsonl",
        "\n\n",
        {},
        r"z\.jsonl: no descriptions found \(the file is empty\); pass the file",
    ),
    (
        "fields named otherwise",
        "f.jsonl",
        '{"id": "dia0_utt0", "description": "x"}\n',
        {},
        r"f\.jsonl, line 1: needs fields 'clip_id' and 'description'.*pass id_field=",
    ),
    (
        "not a MELD clip id",
        "g.jsonl",
        ROW.format("clip7", "x"),
        {},
        r"line 1: clip id 'clip7' is not of the form .*rename",
    ),
    (
        "ambiguous split",
        "h.jsonl",
        ROW.format("dia0_utt0", "x"),
        {"split": None},
        r"h\.jsonl, line 1: clip id 'dia0_utt0' exists in splits \['dev', 'test'\].*pass split=",
    ),
    (
        "unknown format",
        "i.txt",
        "dia0_utt0 x\n",
        {},
        r"i\.txt: unknown descriptions format '\.txt'; use \.jsonl, \.csv",
    ),
    (
        "a binary file",
        "v.jsonl",
        b"\x00\x00\x00\x18ftypmp42\xff\xfe",
        {},
        r"v\.jsonl is not UTF-8 text.*binary file",
    ),
]


@pytest.mark.parametrize("case, name, content, options, message", CASES, ids=[c[0] for c in CASES])
def test_bad_description_file_is_refused_naming_file_row_and_fix(
    tmp_path, finished_run, written, case, name, content, options, message
):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message) as err:
        describer = video.make_describer("import", path=path, **{"split": "dev", **options})
        video.describe_clips(CLIPS, describer, finished_run, progress=False)
    assert str(path) in str(err.value)
    written.assert_unchanged()


def test_missing_description_file(tmp_path, finished_run, written):
    with pytest.raises(FileNotFoundError, match=r"Descriptions file not found: .*mine\.jsonl"):
        video.make_describer("import", path=tmp_path / "mine.jsonl")
    written.assert_unchanged()


def test_cache_with_a_broken_middle_line_is_named_and_left_alone(finished_run):
    cache = video.cache_path(finished_run)
    with cache.open("a") as fh:
        fh.write("not json\n" + json.dumps({"key": "b", "status": "ok"}) + "\n")
    written = Written(finished_run)
    message = r"descriptions\.jsonl, line 2: not a valid cache record.*delete that line"
    with pytest.raises(ValueError, match=message):
        video.load_descriptions(finished_run)["test"]
    with pytest.raises(ValueError, match=message):
        describer = video.make_describer("import", path=video.VENDORED_DESCRIPTIONS, split="test")
        video.describe_clips(CLIPS, describer, finished_run, progress=False)
    written.assert_unchanged()


def test_cache_of_several_splits_keeps_each_split_apart(finished_run):
    video.DescriptionCache(finished_run).append(
        {"key": "dev/dia0_utt0|import|x|p", "split": "dev", "clip_id": "dia0_utt0", "status": "ok"}
        | {"describer": "import", "model": "x", "description": "two people sit"}
    )
    written = Written(finished_run)
    assert (
        video.load_descriptions(finished_run)["test"].get("dia0_utt0") != "two people sit"
    )  # ids repeat per split
    assert video.load_descriptions(finished_run)["dev"] == {"dia0_utt0": "two people sit"}
    written.assert_unchanged()

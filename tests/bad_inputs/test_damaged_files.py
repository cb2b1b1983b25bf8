"""Damaged files, as interrupted downloads, bad copies and hand edits leave them: a row cut short, a quote
never closed, a NUL byte, a file ending inside a UTF-8 character, a header repeated mid-file. Each reader
raises its own error type naming the file, the row or line, and the fix, and the run folder keeps every
earlier result. Valid files that an earlier reader refused or misread are at the end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iemocap_synth import build_iemocap_tree
from unchanged import Written

from dialoguellm import calibration, config, pipeline
from dialoguellm.analysis import seceu as eq
from dialoguellm.corpora import readers, video
from dialoguellm.corpora.readers import CorpusError

MELD_HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
)
MELD_ROW = '{n},{text},Ross,neutral,neutral,0,{utt},1,1,"00:00:01,000","00:00:02,500"'
EMORY_HEADER = "Utterance,Speaker,Emotion,Scene_ID,Utterance_ID,Season,Episode,Start_Time,End_Time"
EMORY_ROW = "{text},['Monica Geller'],Joyful,1,{utt},1,2,00:00:02.877,00:00:07.548"


def _meld(rows: list[str]) -> bytes:
    return ("\r\n".join([MELD_HEADER, *rows]) + "\r\n").encode()


def _meld_rows(n: int) -> list[str]:
    return [MELD_ROW.format(n=i + 1, text=f"Line {i}.", utt=i) for i in range(n)]


def _write_meld(folder: Path, train: bytes) -> Path:
    """A raw data folder with a small MELD (one valid row in dev and test) whose train file is ``train``."""
    (folder / "meld").mkdir(parents=True)
    for split, name in readers.MELD_FILES.items():
        content = train if split == "train" else _meld(_meld_rows(1))
        (folder / "meld" / name).write_bytes(content)
    return folder


def _write_emory_csv(folder: Path, train: bytes) -> Path:
    (folder / "emorynlp" / "meld_repo_csv").mkdir(parents=True)
    valid = (EMORY_HEADER + "\n" + EMORY_ROW.format(text="Hi.", utt=1) + "\n").encode()
    for split, name in readers.EMORYNLP_ERC_FILES.items():
        (folder / "emorynlp" / "meld_repo_csv" / name).write_bytes(train if split == "train" else valid)
    return folder


def _write_emory_tsv(folder: Path, train: bytes) -> Path:
    (folder / "emorynlp" / "compm_tsv").mkdir(parents=True)
    for split, name in readers.EMORYNLP_TSV_FILES.items():
        content = train if split == "train" else b"Monica Geller\tHi.\tNeutral\n"
        (folder / "emorynlp" / "compm_tsv" / name).write_bytes(content)
    return folder


def load_meld(tmp_path: Path, train: bytes) -> None:
    readers.load_meld(_write_meld(tmp_path / "raw", train))


def load_emory_csv(tmp_path: Path, train: bytes) -> None:
    readers.load_emorynlp(_write_emory_csv(tmp_path / "raw", train))


def load_emory_tsv(tmp_path: Path, train: bytes) -> None:
    readers.load_emorynlp(_write_emory_tsv(tmp_path / "raw", train), source="official")


def load_emory_json(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "emotion-detection-tst.json"
    path.write_bytes(content)
    readers.read_emorynlp_json(path, "test")


def load_iemocap_transcript(tmp_path: Path, tail: bytes) -> None:
    """The synthetic IEMOCAP tree with ``tail`` appended to one transcript."""
    root = build_iemocap_tree(tmp_path)
    path = root / "Session2" / "dialog" / "transcriptions" / "Ses02F_impro01.txt"
    path.write_bytes(path.read_bytes() + tail)
    readers.load_iemocap(root)


def read_descriptions(suffix: str):
    def read(tmp_path: Path, content: bytes) -> None:
        path = tmp_path / f"descriptions{suffix}"
        path.write_bytes(content)
        video.read_description_file(path)

    return read


def load_settings(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "settings.yaml"
    path.write_bytes(content)
    config.load_config(path)


def load_calibration(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "calibration.json").write_bytes(content)
    calibration.load_calibration(tmp_path / "adapter", config.load_config("cpu", {"eval.calibrate": True}))


def load_seceu_standard(tmp_path: Path, content: bytes) -> None:
    from tiny import write_seceu

    folder = write_seceu(tmp_path / "seceu")
    (folder / eq.STANDARD_FILE).write_bytes(content)
    eq.load_seceu(folder)


CUT_ROW = MELD_ROW.format(n=3, text="Line 2.", utt=2)[:30]  # "3,Line 2.,Ross,neutral,neutral,"
TRANSCRIPT = "Ses02F_impro01_F009 [030.0000-031.0000]: {}\n"
# (case, reader, file content, error, message)
CASES = [
    (
        "MELD row cut short (an interrupted download)",
        load_meld,
        _meld(_meld_rows(2)) + CUT_ROW.encode(),
        CorpusError,
        r"train_sent_emo\.csv, row 4: 5 field\(s\) where the header has 11\. The row is cut short.*Restore the",
    ),
    (
        "MELD row whose opening quote is never closed",
        load_meld,
        _meld([*_meld_rows(1), MELD_ROW.format(n=2, text='"Hi, there', utt=1), *_meld_rows(3)[2:]]),
        CorpusError,
        r"train_sent_emo\.csv, row 3: broken quoting .*a quoted field is not closed.*Fix the quotes of that row",
    ),
    (
        "MELD file cut inside a quoted field",
        load_meld,
        _meld(_meld_rows(2))[:-12],
        CorpusError,
        r"train_sent_emo\.csv, row 3: a quoted field is never closed.*cut short inside it",
    ),
    (
        "MELD file cut after a row's comma (the last field would read as empty)",
        load_meld,
        _meld(_meld_rows(2))[:-16],
        CorpusError,
        r"train_sent_emo\.csv, row 3: the file ends inside this row.*Download it again",
    ),
    (
        "MELD NUL byte",
        load_meld,
        _meld([*_meld_rows(1), MELD_ROW.format(n=2, text="Hi\x00.", utt=1)]),
        CorpusError,
        r"train_sent_emo\.csv, line 3: a NUL byte.*damaged.*Restore it",
    ),
    (
        "MELD file ending inside a UTF-8 character",
        load_meld,
        _meld([*_meld_rows(1), MELD_ROW.format(n=2, text="It\u2019s me.", utt=1)]).split(b"\x80")[0],
        CorpusError,
        r"train_sent_emo\.csv, line 3: the file ends in the middle of a UTF-8 character.*Download or copy it",
    ),
    (
        "MELD header repeated mid-file (two files joined)",
        load_meld,
        _meld([*_meld_rows(1), MELD_HEADER, *_meld_rows(3)[1:]]),
        CorpusError,
        r"train_sent_emo\.csv, row 3: repeats the header line.*Delete that line",
    ),
    (
        "MELD header naming a column twice",
        load_meld,
        _meld(_meld_rows(1)).replace(b"Sentiment", b"Speaker", 1),
        CorpusError,
        r"train_sent_emo\.csv: the header names column\(s\) Speaker twice",
    ),
    (
        "MELD integer written with an underscore",
        load_meld,
        _meld([MELD_ROW.format(n=1, text="Hi.", utt="1_0")]),
        CorpusError,
        r"train_sent_emo\.csv, row 2: field 'Utterance_ID' is '1_0', expected an integer",
    ),
    (
        "EmoryNLP CSV cut inside its last (unquoted) time",
        load_emory_csv,
        (EMORY_HEADER + "\n" + EMORY_ROW.format(text="Hi.", utt=1) + "\n").encode()[:-3],
        CorpusError,
        r"emorynlp_train_final\.csv, row 2: the file ends inside this row.*end the file with a line break",
    ),
    (
        "EmoryNLP CSV row cut short",
        load_emory_csv,
        (EMORY_HEADER + "\n" + EMORY_ROW.format(text="Hi.", utt=1)[:20] + "\n").encode(),
        CorpusError,
        r"emorynlp_train_final\.csv, row 2: 2 field\(s\) where the header has 9",
    ),
    (
        "EmoryNLP TSV ending inside a UTF-8 character",
        load_emory_tsv,
        "Monica Geller\tHi.\tNeutral\nJoey Tribbiani\tCaf\u00e9".encode()[:-1],
        CorpusError,
        r"EMORY_train\.txt, line 2: the file ends in the middle of a UTF-8 character",
    ),
    (
        "EmoryNLP TSV NUL byte",
        load_emory_tsv,
        b"Monica Geller\tHi.\tNeutral\n\x00\x00\x00\n",
        CorpusError,
        r"EMORY_train\.txt, line 2: a NUL byte",
    ),
    (
        "EmoryNLP JSON transcript that is a number",
        load_emory_json,
        json.dumps(
            {
                "episodes": [
                    {
                        "scenes": [
                            {
                                "scene_id": "s01_e01_c01",
                                "utterances": [
                                    {
                                        "utterance_id": "u1",
                                        "speakers": ["Ross"],
                                        "transcript": 5,
                                        "emotion": "Sad",
                                    }
                                ],
                            }
                        ]
                    }
                ]
            }
        ).encode(),
        CorpusError,
        r"emotion-detection-tst\.json, episodes\[0\]\.scenes\[0\]\.utterances\[0\]: field 'transcript' is a int",
    ),
    (
        "EmoryNLP JSON cut short",
        load_emory_json,
        b'{"episodes": [{"scenes": [{"scene_id": "s01_e01_c01", "utter',
        CorpusError,
        r"emotion-detection-tst\.json is not valid UTF-8 JSON.*download the file again",
    ),
    (
        "IEMOCAP transcript ending inside a UTF-8 character",
        load_iemocap_transcript,
        TRANSCRIPT.format("Caf\u00e9").encode()[:-2],
        CorpusError,
        r"Ses02F_impro01\.txt, line \d+: the file ends in the middle of a UTF-8 character",
    ),
    (
        "IEMOCAP transcript with a NUL byte",
        load_iemocap_transcript,
        TRANSCRIPT.format("a\x00b").encode(),
        CorpusError,
        r"Ses02F_impro01\.txt, line \d+: a NUL byte",
    ),
    (
        "descriptions CSV row cut short",
        read_descriptions(".csv"),
        b"clip_id,split,description\r\ndia0_utt0,dev\r\n",
        ValueError,
        r"descriptions\.csv, row 2: 2 field\(s\) where the header has 3",
    ),
    (
        "descriptions CSV quote never closed",
        read_descriptions(".csv"),
        b'clip_id,description\r\ndia0_utt0,"a man waves\r\ndia0_utt1,a woman\r\n',
        ValueError,
        r"descriptions\.csv, row 2: a quoted field is never closed",
    ),
    (
        "descriptions CSV header repeated",
        read_descriptions(".csv"),
        b"clip_id,description\r\ndia0_utt0,a man\r\nclip_id,description\r\ndia0_utt1,a woman\r\n",
        ValueError,
        r"descriptions\.csv, row 3: repeats the header line",
    ),
    (
        "descriptions JSONL ending inside a UTF-8 character",
        read_descriptions(".jsonl"),
        '{"clip_id": "dia0_utt0", "description": "caf\u00e9"}'.encode()[:-3],
        ValueError,
        r"descriptions\.jsonl, line 1: the file ends in the middle of a UTF-8 character",
    ),
    (
        "descriptions JSON with an escaped NUL",
        read_descriptions(".json"),
        b'{"dia0_utt0": "a man\\u0000 waves"}',
        ValueError,
        r"descriptions\.json, key 'dia0_utt0': a NUL character in the description",
    ),
    (
        "settings file not UTF-8",
        load_settings,
        "train:\n  lr: 3e-4  # \u00e9t\u00e9\n".encode("cp1252"),
        ValueError,
        r"settings\.yaml is not UTF-8 text \(line 2, .*Save the settings file as UTF-8",
    ),
    (
        "settings with a NaN learning rate (passes every range check)",
        load_settings,
        b"train:\n  lr: .nan\n",
        ValueError,
        r"settings\.yaml: train\.lr: expected a finite number, got nan",
    ),
    (
        "calibration with one bias too few",
        load_calibration,
        b'{"meld": [0.0, 0.5, 1.0, 0.0, 0.0, 0.0]}',
        ValueError,
        r"calibration\.json should map each corpus to a list of label biases \('meld' needs a list of 7",
    ),
    (
        "calibration saved as UTF-16",
        load_calibration,
        '{"meld": [0, 0, 0, 0, 0, 0, 0]}'.encode("utf-16"),
        ValueError,
        r"calibration\.json is not UTF-8 text",
    ),
    (
        "SECEU standard score of 400 digits",
        load_seceu_standard,
        json.dumps(
            {
                "standard_scores": [[10**400, 0.5, 0.5, 5.0], [4.5, 0.0, 4.5, 1.0], [5.0, 1.0, 3.5, 0.5]],
                "human_pattern": [2.1, 2.8, 3.3],
            }
        ).encode(),
        ValueError,
        r"seceu_standard\.json: field 'standard_scores\[0\]' must hold finite numbers only",
    ),
    (
        "SECEU file ending inside a UTF-8 character",
        load_seceu_standard,
        '{"standard_scores": "\u00e9'.encode()[:-1],
        ValueError,
        r"seceu_standard\.json, line 1: the file ends in the middle of a UTF-8 character",
    ),
]


@pytest.mark.parametrize(("case", "read", "content", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_damaged_file(tmp_path, written, case, read, content, error, message):
    (tmp_path / "input").mkdir()
    with pytest.raises(error, match=message) as err:
        read(tmp_path / "input", content)
    assert type(err.value) is error  # not a UnicodeDecodeError or JSONDecodeError passing as a ValueError
    written.assert_unchanged()


def test_set_override_of_an_unknown_section_names_the_override(written):
    with pytest.raises(ValueError, match=r"cpu\.yaml \(override trainer\.lr\): unknown section 'trainer'"):
        config.load_config("cpu", config.parse_overrides(["trainer.lr=1e-4"]))
    written.assert_unchanged()


def test_cache_record_without_a_status_is_named(finished_run):
    cache = video.cache_path(finished_run)
    with cache.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"key": "test/dia1_utt0|import|x|p", "split": "test"}) + "\n")
    written = Written(finished_run)
    with pytest.raises(
        ValueError, match=r"descriptions\.jsonl, line 2: not a valid cache record \(needs a text"
    ):
        video.load_descriptions(finished_run)["test"]
    written.assert_unchanged()


def test_damaged_stage_marker_is_named_and_kept(finished_run):
    marker = finished_run / "stages" / "01_data_curation.json"
    marker.write_text('{"notebook": "01_data_curation.ipynb", "fing')
    written = Written(finished_run)
    with pytest.raises(ValueError, match=r"01_data_curation\.json is not a stage marker.*Delete it to run"):
        pipeline.run_notebooks(finished_run, only=["01"])
    written.assert_unchanged()


# ------------------------------------------------------------------ valid files read wrongly before
def test_a_description_holding_a_line_separator_stays_one_line(tmp_path):
    """json.dumps(ensure_ascii=False) writes U+2028 as it is; str.splitlines cut such a JSONL line in two."""
    path = tmp_path / "d.jsonl"
    path.write_text(
        json.dumps({"clip_id": "dia0_utt0", "description": "a\u2028b"}, ensure_ascii=False) + "\n"
    )
    assert [row["text"] for row in video.read_description_file(path)] == ["a\u2028b"]


def test_a_tsv_utterance_holding_a_latin1_ellipsis_stays_one_line(tmp_path):
    """U+0085 (a cp1252 ellipsis read as Latin-1) is a line break to str.splitlines; the row must survive."""
    folder = _write_emory_tsv(tmp_path / "raw", "Monica Geller\tWait\u0085 what?\tNeutral\n".encode())
    corpus = readers.load_emorynlp(folder, source="official")
    assert corpus["train"]["text"] == ["Wait\u2026 what?"]


def test_a_latin1_iemocap_transcript_with_an_ellipsis_stays_one_line(tmp_path):
    root = build_iemocap_tree(tmp_path)
    path = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    path.write_bytes(path.read_bytes().replace(b"Excuse me.", b"Excuse me\x85"))
    texts = readers.load_iemocap(root)["train"]["text"]
    assert "Excuse me\u2026" in texts

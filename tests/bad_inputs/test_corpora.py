"""Bad corpus input: each case raises a clear error that names the file, the row or field, and the fix."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from iemocap_synth import build_iemocap_tree

from dialoguellm.corpora import readers
from dialoguellm.corpora.readers import CorpusError
from dialoguellm.corpora.readers import raw_data_dir as data_dir
from dialoguellm.io import write_json
from dialoguellm.runs import REPO_DIR

RAW = REPO_DIR / "dialoguellm" / "corpora" / "raw"
HEADER = (
    "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime"
)
ROW = '{n},{text},Ross,{label},neutral,{dia},{utt},1,1,"00:00:01,000","00:00:02,500"'


@pytest.fixture
def meld_dir(tmp_path):
    """A data folder whose MELD train file is small and ours to break; dev/test are the real ones."""
    folder = tmp_path / "raw"
    shutil.copytree(RAW / "meld", folder / "meld")
    _write_train(folder, [ROW.format(n=1, text="Hi.", label="neutral", dia=0, utt=0)])
    return folder


def _write_train(folder: Path, rows: list[str], header: str = HEADER, encoding: str = "utf-8") -> Path:
    path = folder / "meld" / "train_sent_emo.csv"
    path.write_bytes(("\r\n".join([header, *rows]) + "\r\n").encode(encoding))
    return path


def test_the_small_fixture_itself_loads(meld_dir):
    assert len(readers.load_meld(meld_dir)["train"]) == 1


def test_missing_data_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Data folder not found: .*nowhere.*Pass DATA_DIR"):
        data_dir(tmp_path / "nowhere")


def test_missing_meld_file(meld_dir):
    (meld_dir / "meld" / "dev_sent_emo.csv").unlink()
    with pytest.raises(CorpusError, match=r"MELD file not found: .*dev_sent_emo\.csv\. Point DATA_DIR"):
        readers.load_meld(meld_dir)


def test_renamed_column(meld_dir):
    _write_train(
        meld_dir,
        [ROW.format(n=1, text="Hi.", label="neutral", dia=0, utt=0)],
        HEADER.replace("Emotion", "Emotions"),
    )
    with pytest.raises(
        CorpusError, match=r"train_sent_emo\.csv: missing column\(s\) Emotion; found .*Emotions"
    ):
        readers.load_meld(meld_dir)


def test_wrong_delimiter(meld_dir):
    _write_train(
        meld_dir,
        ['1;Hi.;Ross;neutral;neutral;0;0;1;1;"00:00:01,000";"00:00:02,500"'],
        HEADER.replace(",", ";"),
    )
    with pytest.raises(CorpusError, match=r"missing column\(s\) Utterance, Speaker.*comma-separated"):
        readers.load_meld(meld_dir)


def test_wrong_encoding(meld_dir):
    _write_train(
        meld_dir, [ROW.format(n=1, text="It\u2019s me.", label="neutral", dia=0, utt=0)], encoding="cp1252"
    )
    with pytest.raises(CorpusError, match=r"train_sent_emo\.csv is not UTF-8.*iconv"):
        readers.load_meld(meld_dir)


def test_unknown_label_names_its_row(meld_dir):
    rows = [
        ROW.format(n=1, text="Hi.", label="neutral", dia=0, utt=0),
        ROW.format(n=2, text="Ugh.", label="annoyed", dia=0, utt=1),
    ]
    _write_train(meld_dir, rows)
    with pytest.raises(
        CorpusError,
        match=r"train_sent_emo\.csv, row 3: unknown meld label 'annoyed'.*expected one of neutral",
    ):
        readers.load_meld(meld_dir)


def test_empty_utterance_names_its_row(meld_dir):
    _write_train(
        meld_dir,
        [
            ROW.format(n=1, text="Hi.", label="neutral", dia=0, utt=0),
            ROW.format(n=2, text="  ", label="joy", dia=0, utt=1),
        ],
    )
    with pytest.raises(CorpusError, match=r"row 3: empty utterance 'dia0_utt1'"):
        readers.load_meld(meld_dir)


def test_dialogue_repeating_a_turn(meld_dir):
    rows = [
        ROW.format(n=1, text="Hi.", label="neutral", dia=4, utt=2),
        ROW.format(n=2, text="Hey.", label="joy", dia=4, utt=2),
    ]
    _write_train(meld_dir, rows)
    with pytest.raises(
        CorpusError, match=r"row 3: dialogue '4' repeats turn 2 \(first at .*row 2\)\. Remove the duplicate"
    ):
        readers.load_meld(meld_dir)


def test_header_without_rows(meld_dir):
    _write_train(meld_dir, [])
    with pytest.raises(CorpusError, match=r"train_sent_emo\.csv has a header but no rows"):
        readers.load_meld(meld_dir)


def test_non_integer_dialogue_id(meld_dir):
    _write_train(meld_dir, [ROW.format(n=1, text="Hi.", label="neutral", dia="zero", utt=0)])
    with pytest.raises(CorpusError, match=r"row 2: field 'Dialogue_ID' is 'zero', expected an integer"):
        readers.load_meld(meld_dir)


def test_bad_time(meld_dir):
    _write_train(
        meld_dir,
        [ROW.format(n=1, text="Hi.", label="neutral", dia=0, utt=0).replace("00:00:01,000", "1 sec")],
    )
    with pytest.raises(CorpusError, match=r"row 2: field 'StartTime' is '1 sec'"):
        readers.load_meld(meld_dir)


def test_row_with_extra_fields(meld_dir):
    _write_train(meld_dir, [ROW.format(n=1, text="Hi, there", label="neutral", dia=0, utt=0)])
    with pytest.raises(CorpusError, match=r"row 2: more fields than the header has; check the quoting"):
        readers.load_meld(meld_dir)


@pytest.fixture
def emory_dir(tmp_path):
    folder = tmp_path / "raw"
    shutil.copytree(RAW / "emorynlp", folder / "emorynlp")
    return folder


def test_emorynlp_bad_speaker_list(emory_dir):
    path = emory_dir / "emorynlp" / "meld_repo_csv" / "emorynlp_dev_final.csv"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("['", "[", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"emorynlp_dev_final\.csv, row 2: Speaker .* is not a list"):
        readers.load_emorynlp(emory_dir)


def test_emorynlp_json_that_is_not_json(emory_dir):
    path = emory_dir / "emorynlp" / "official_json" / "emotion-detection-dev.json"
    path.write_text("not json at all")
    with pytest.raises(CorpusError, match=r"emotion-detection-dev\.json is not valid UTF-8 JSON"):
        readers.load_emorynlp(emory_dir, source="official")


def test_emorynlp_json_missing_field(emory_dir):
    path = emory_dir / "emorynlp" / "official_json" / "emotion-detection-tst.json"
    doc = json.loads(path.read_text())
    del doc["episodes"][0]["scenes"][0]["utterances"][0]["emotion"]
    path.write_text(json.dumps(doc))
    with pytest.raises(CorpusError, match=r"emotion-detection-tst\.json: missing field 'emotion'"):
        readers.load_emorynlp(emory_dir, source="official")


def test_emorynlp_scene_without_utterances(emory_dir):
    path = emory_dir / "emorynlp" / "official_json" / "emotion-detection-tst.json"
    doc = json.loads(path.read_text())
    doc["episodes"][0]["scenes"][0]["utterances"] = []
    path.write_text(json.dumps(doc))
    with pytest.raises(CorpusError, match=r"scene 's01_e01_c04' has no utterances"):
        readers.load_emorynlp(emory_dir, source="official")


def test_emorynlp_tsv_with_wrong_field_count(emory_dir):
    path = emory_dir / "emorynlp" / "compm_tsv" / "EMORY_train.txt"
    path.write_text("Monica Geller\tHi.\tNeutral\nJoey Tribbiani Hey Joyful\n")
    with pytest.raises(CorpusError, match=r"EMORY_train\.txt, line 2: expected 3 tab-separated fields"):
        readers.load_emorynlp(emory_dir, source="official")


def test_unknown_emorynlp_source():
    with pytest.raises(ValueError, match="Unknown EmoryNLP source 'full'; use 'erc'"):
        readers.load_emorynlp(source="full")


def test_unknown_dataset_name():
    with pytest.raises(ValueError, match="Unknown dataset 'friends'"):
        readers.load_corpora(["friends"])


@pytest.fixture
def iemocap_root(tmp_path):
    return build_iemocap_tree(tmp_path)


def test_iemocap_missing_root(tmp_path):
    with pytest.raises(CorpusError, match=r"IEMOCAP folder not found: .*licensed.*IEMOCAP_DIR"):
        readers.load_iemocap(tmp_path / "IEMOCAP_full_release")


def test_iemocap_missing_session(iemocap_root):
    shutil.rmtree(iemocap_root / "Session3")
    with pytest.raises(CorpusError, match=r"Session3/dialog/transcriptions is missing.*Session1-5"):
        readers.load_iemocap(iemocap_root)


def test_iemocap_malformed_transcription_line(iemocap_root):
    path = iemocap_root / "Session2" / "dialog" / "transcriptions" / "Ses02F_impro01.txt"
    lines = path.read_text().splitlines()
    lines[1] = "Ses02F_impro01_M001 006.2-008.2: no brackets"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=r"Ses02F_impro01\.txt, line 2: .* does not match"):
        readers.load_iemocap(iemocap_root)


def test_iemocap_malformed_label_line(iemocap_root):
    path = iemocap_root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro02.txt"
    path.write_text(path.read_text().replace("\tneu\t", " neu ", 1))
    with pytest.raises(
        CorpusError, match=r"EmoEvaluation/Ses01F_impro02\.txt, line 3: .* not a tab-separated"
    ):
        readers.load_iemocap(iemocap_root)


def test_iemocap_transcript_without_labels_file(iemocap_root):
    (iemocap_root / "Session4" / "dialog" / "EmoEvaluation" / "Ses04F_impro03.txt").unlink()
    with pytest.raises(CorpusError, match=r"IEMOCAP labels missing for .*Ses04F_impro03\.txt"):
        readers.load_iemocap(iemocap_root)


def test_iemocap_utterance_without_label(iemocap_root):
    path = iemocap_root / "Session5" / "dialog" / "EmoEvaluation" / "Ses05F_impro01.txt"
    path.write_text("\n".join(line for line in path.read_text().splitlines() if "_F004\t" not in line) + "\n")
    with pytest.raises(CorpusError, match=r"line \d+: utterance Ses05F_impro01_F004 has no label"):
        readers.load_iemocap(iemocap_root)


def test_iemocap_empty_dialogue(iemocap_root):
    (iemocap_root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt").write_text(
        "M: [BREATHING]\n"
    )
    with pytest.raises(
        CorpusError, match=r"Ses01F_impro01\.txt: no utterance lines .* the dialogue is empty"
    ):
        readers.load_iemocap(iemocap_root)


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = write_json(tmp_path / "results.json", {"f1": 0.5})
    before = path.read_bytes()
    with pytest.raises(TypeError):
        write_json(path, {"f1": object()})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_folder_write_keeps_the_previous_folder(tmp_path):
    from dialoguellm.io import atomic_folder

    target = tmp_path / "adapter"
    with atomic_folder(target) as tmp:
        (tmp / "weights.safetensors").write_bytes(b"v1")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_folder(target) as tmp:
            (tmp / "weights.safetensors").write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert (target / "weights.safetensors").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_a_kill_between_the_two_renames_is_recovered(tmp_path):
    """atomic_folder moves the old folder aside, then renames the new one in; a kill in between leaves only
    ``.adapter.old``, which recover_folder (called before resuming training) moves back."""
    from dialoguellm.io import atomic_folder, recover_folder

    target = tmp_path / "checkpoint"
    with atomic_folder(target) as tmp:
        (tmp / "state.json").write_text("{}")
    os.replace(target, tmp_path / ".checkpoint.old")  # the state right after the first rename
    assert recover_folder(target) is True
    assert (target / "state.json").read_text() == "{}"
    assert recover_folder(target) is False  # nothing to do the second time

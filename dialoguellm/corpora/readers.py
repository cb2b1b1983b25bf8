"""The three ERC corpora as one clean dataset.

One loader per corpus, one record schema (``RECORD_FEATURES``), returned as a ``datasets.DatasetDict``
with the splits ``train``, ``dev`` and ``test``. Rows are sorted by dialogue, then turn. Every loader
checks what it reads and raises ``CorpusError`` naming the file, the row and the fix: a half-read corpus
is never returned.

- MELD: the official CSVs (9,989 / 1,109 / 2,610 utterances; 1,038 / 114 / 280 dialogues).
- EmoryNLP: by default the ERC split the peers report on (7,551 / 954 / 984 utterances; 659 / 89 / 79
  scenes, one scene = one dialogue); ``source="official"`` reads the full official release (JSON layout,
  episodes > scenes > utterances, or the CoMPM TSV copy of it where a JSON file is absent).
- IEMOCAP: a user's own ``IEMOCAP_full_release`` (licensed; never shipped). Six classes (hap sad neu ang
  exc fru), sessions 1-4 for training with a fixed dev subset (``iemocap_dev_dialogues``), session 5 test.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
from datasets import Dataset, DatasetDict, Features, Value

from dialoguellm import labels as label_vocab
from dialoguellm.io import atomic_path
from dialoguellm.runs import RunLayout

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "dev", "test")

RECORD_FEATURES = Features(
    {
        "dataset": Value("string"),
        "split": Value("string"),
        "dialogue_id": Value("string"),
        "turn": Value("int32"),
        "utterance_id": Value("string"),
        "speaker": Value("string"),
        "text": Value("string"),
        "label": Value("string"),
        "label_id": Value("int32"),
        "clip_id": Value("string"),
        "start": Value("float64"),
        "end": Value("float64"),
    }
)

# Official file names; DATA_DIR points at a folder holding meld/ and emorynlp/ laid out like dialoguellm/corpora/raw.
MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv", "test": "test_sent_emo.csv"}
MELD_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID", "StartTime", "EndTime")
EMORYNLP_ERC_FILES = {
    "train": "emorynlp_train_final.csv",
    "dev": "emorynlp_dev_final.csv",
    "test": "emorynlp_test_final.csv",
}
EMORYNLP_ERC_COLUMNS = ("Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode")
EMORYNLP_JSON_FILES = {
    "train": "emotion-detection-trn.json",
    "dev": "emotion-detection-dev.json",
    "test": "emotion-detection-tst.json",
}
EMORYNLP_TSV_FILES = {"train": "EMORY_train.txt", "dev": "EMORY_dev.txt", "test": "EMORY_test.txt"}

# IEMOCAP: peers keep happy and excited apart and drop every other label.
IEMOCAP_SESSIONS = (1, 2, 3, 4, 5)
IEMOCAP_TEST_SESSION = 5
# Every 10th dialogue (sorted by name) of sessions 1-4 is held out as dev: 12 of the 120 dialogues of the
# official release, about the 10% the peers hold out. Fixed by rule, so it never depends on a seed.
IEMOCAP_DEV_EVERY = 10


DATA_ENV = "DIALOGUELLM_DATA_DIR"


def vendored_dir() -> Path:
    """The public corpora shipped inside the package (``dialoguellm/corpora/raw``: MELD, EmoryNLP, MELD video
    descriptions), read through importlib.resources so an installed package finds them from any folder."""
    return Path(str(resources.files("dialoguellm.corpora") / "raw"))


def raw_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The folder holding the raw corpora (``meld/``, ``emorynlp/``, ...).

    Order: the argument, then $DIALOGUELLM_DATA_DIR, then the copies vendored in the package.
    """
    chosen = Path(path or os.environ.get(DATA_ENV) or vendored_dir()).expanduser().resolve()
    if not chosen.is_dir():
        raise FileNotFoundError(
            f"Data folder not found: {chosen}. Pass DATA_DIR (or set ${DATA_ENV}) to the folder that holds "
            "meld/ and emorynlp/ (the package vendors them in dialoguellm/corpora/raw)."
        )
    return chosen


class CorpusError(ValueError):
    """A corpus file is missing or malformed. The message names the file, the row and the fix."""


# --------------------------------------------------------------------------------------------- text


_MOJIBAKE_MARKERS = ("â€", "Ã", "Â")


def normalise_text(text: str) -> str:
    """Clean one utterance: repair cp1252 artefacts, NFC-normalise, collapse whitespace.

    Older MELD copies hold cp1252 bytes mis-decoded as Latin-1 (U+0092 for an apostrophe, U+0085 for an
    ellipsis, U+0097 for a dash) or UTF-8 read as cp1252 ("â€™"); both become the intended characters.
    """
    if any(marker in text for marker in _MOJIBAKE_MARKERS):
        try:
            text = text.encode("cp1252").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass  # not mojibake after all (a real "Ã" in a name): keep the text
    text = "".join(_repair_c1(ch) for ch in text)
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def _repair_c1(ch: str) -> str:
    if "\x80" <= ch <= "\x9f":
        try:
            return bytes([ord(ch)]).decode("cp1252")
        except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252
            return " "
    return ch


def _parse_clock(value: str, path: Path, row: int, field: str) -> float | None:
    """'00:16:16,059' or '00:00:02.877' -> seconds; empty -> None."""
    value = value.strip()
    if not value:
        return None
    match = re.fullmatch(r"([0-9]+):([0-9]{1,2}):([0-9]{1,2})[,.]([0-9]{1,3})", value)
    if not match:
        raise CorpusError(
            f"{path}, row {row}: field {field!r} is {value!r}, expected a time like 00:16:16,059."
        )
    hours, minutes, seconds, millis = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + int(seconds) + int(millis.ljust(3, "0")) / 1000


def _parse_int(value: str, path: Path, row: int, field: str) -> int:
    # ASCII digits only: int() would also take "1_0" (10) and other scripts' digits, which a damaged
    # file can hold but the corpus never does.
    if not re.fullmatch(r"-?[0-9]+", value.strip()):
        raise CorpusError(f"{path}, row {row}: field {field!r} is {value!r}, expected an integer.")
    return int(value.strip())


# ------------------------------------------------------------------------------------------ reading


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CorpusError(
            f"{what} file not found: {path}. Point DATA_DIR at a folder laid out like dialoguellm/corpora/raw "
            f"(see its README.md), or restore the file from the corpus's official release."
        )
    return path


def _read_text(path: Path, fix: str) -> str:
    """The UTF-8 text of a corpus file, or a CorpusError naming the line where it is damaged."""
    from dialoguellm.io import read_text_file

    return read_text_file(path, error=CorpusError, fix=fix)


def _read_csv(path: Path, required: Iterable[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """Rows of a CSV as (row number counted like a spreadsheet, dict); checks the header first, then that
    every row has the header's fields (``io.csv_rows`` names a row a damaged file cuts or breaks)."""
    from dialoguellm.io import csv_rows

    _require_file(path, what)
    text = _read_text(path, "Re-save it as UTF-8, e.g. iconv -f cp1252 -t utf-8.")
    reader = csv_rows(path, text, error=CorpusError)
    _, header = next(reader, (0, []))
    missing = [col for col in required if col not in header]
    if missing:
        raise CorpusError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}. "
            f"The {what} file must be comma-separated with the official header "
            f"({', '.join(required)}); rename the columns or use the original file."
        )
    twice = sorted({col for col in header if header.count(col) > 1})
    if twice:
        raise CorpusError(f"{path}: the header names column(s) {', '.join(twice)} twice; keep one of each.")
    rows = [(row_no, dict(zip(header, fields, strict=True))) for row_no, fields in reader]
    if not rows:
        raise CorpusError(f"{path} has a header but no rows; restore the file from the official release.")
    return rows


def _record(
    dataset: str,
    split: str,
    dialogue_id: str,
    utterance_id: str,
    speaker: str,
    text: str,
    label: str,
    where: str,
    clip_id: str | None = None,
    start: float | None = None,
    end: float | None = None,
    order: Any = 0,
) -> dict[str, Any]:
    """One utterance in the common schema (``turn`` is set once the dialogue is complete)."""
    if "\x00" in text or "\x00" in speaker:  # a JSON "\u0000": binary damage, never part of a line
        raise CorpusError(f"{where}: a NUL character in utterance {utterance_id!r}; restore the file.")
    clean = normalise_text(text)
    if not clean:
        raise CorpusError(f"{where}: empty utterance {utterance_id!r}; remove the row or restore its text.")
    if label not in label_vocab.LABELS[dataset]:
        raise CorpusError(
            f"{where}: unknown {dataset} label {label!r} for utterance {utterance_id!r}; expected one of "
            f"{', '.join(label_vocab.LABELS[dataset])}. Fix the label or drop the row."
        )
    return {
        "dataset": dataset,
        "split": split,
        "dialogue_id": dialogue_id,
        "turn": -1,
        "utterance_id": utterance_id,
        "speaker": normalise_text(speaker) or "Unknown",
        "text": clean,
        "label": label,
        "label_id": label_vocab.LABELS[dataset].index(label),
        "clip_id": clip_id,
        "start": start,
        "end": end,
        "_order": order,
        "_where": where,
    }


# The time columns of each MELD-style CSV (EmoryNLP's copy may lack them).
MELD_TIMES = ("StartTime", "EndTime")
EMORYNLP_TIMES = ("Start_Time", "End_Time")


def _csv_record(
    dataset: str,
    split: str,
    row: dict[str, str],
    path: Path,
    row_no: int,
    dialogue_id: str,
    utterance_id: str,
    speaker: str,
    order: int,
    times: tuple[str, str],
    clip_id: str | None = None,
) -> dict[str, Any]:
    """``_record`` of a MELD-style CSV row: its ``Utterance``, ``Emotion`` and the two ``times`` columns."""
    start, end = (_parse_clock(row.get(column, ""), path, row_no, column) for column in times)
    return _record(
        dataset, split, dialogue_id, utterance_id, speaker, row["Utterance"], row["Emotion"].strip(),
        f"{path}, row {row_no}", clip_id=clip_id, start=start, end=end, order=order,
    )  # fmt: skip


def _to_dataset(records: list[dict[str, Any]], source: str) -> Dataset:
    """Order turns within each dialogue, check them, and build the Dataset."""
    if not records:
        raise CorpusError(f"{source}: no utterances were read; check that the file holds the corpus.")
    dialogues: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        dialogues[rec["dialogue_id"]].append(rec)
    rows: list[dict[str, Any]] = []
    for dialogue_id, turns in dialogues.items():
        turns.sort(key=lambda rec: rec["_order"])
        seen: dict[Any, str] = {}
        for position, rec in enumerate(turns):
            if rec["_order"] in seen:
                raise CorpusError(
                    f"{rec['_where']}: dialogue {dialogue_id!r} repeats turn {rec['_order']!r} (first at "
                    f"{seen[rec['_order']]}). Remove the duplicate row."
                )
            seen[rec["_order"]] = rec["_where"]
            rec["turn"] = position
            rows.append({key: value for key, value in rec.items() if not key.startswith("_")})
    return Dataset.from_list(rows, features=RECORD_FEATURES)


def _as_dataset_dict(splits: dict[str, Dataset]) -> DatasetDict:
    return DatasetDict({split: splits[split] for split in SPLITS})


# --------------------------------------------------------------------------------------------- MELD


def load_meld(data_dir: str | os.PathLike | None = None) -> DatasetDict:
    """MELD from the official CSVs in ``<data_dir>/meld``.

    Turns follow Utterance_ID (which has gaps; the order is kept, not the raw number). The clip id
    ``dia{D}_utt{U}`` names the video clip; start and end are in seconds.
    """
    folder = raw_data_dir(data_dir) / "meld"
    splits = {}
    for split, name in MELD_FILES.items():
        path = folder / name
        records = []
        for row_no, row in _read_csv(path, MELD_COLUMNS, "MELD"):
            dia = _parse_int(row["Dialogue_ID"], path, row_no, "Dialogue_ID")
            utt = _parse_int(row["Utterance_ID"], path, row_no, "Utterance_ID")
            clip = f"dia{dia}_utt{utt}"
            records.append(
                _csv_record(
                    "meld", split, row, path, row_no, str(dia), clip, row["Speaker"], utt, MELD_TIMES, clip
                )
            )
        records.sort(key=lambda rec: (int(rec["dialogue_id"]), rec["_order"]))
        splits[split] = _to_dataset(records, str(path))
    return _as_dataset_dict(splits)


# ----------------------------------------------------------------------------------------- EmoryNLP


def load_emorynlp(data_dir: str | os.PathLike | None = None, source: str = "erc") -> DatasetDict:
    """EmoryNLP with one scene per dialogue.

    ``source="erc"`` (default): the 7,551 / 954 / 984 split that ERC papers report on (MELD-style CSVs in
    ``emorynlp/meld_repo_csv``). ``source="official"``: the full official release (9,934 / 1,344 / 1,328);
    each split from its official JSON in ``emorynlp/official_json`` when present, else from the CoMPM TSV
    copy in ``emorynlp/compm_tsv`` (same scenes and order; only the first speaker is kept there).
    """
    folder = raw_data_dir(data_dir) / "emorynlp"
    if source == "erc":
        return _as_dataset_dict(
            {
                split: _read_emorynlp_erc(folder / "meld_repo_csv" / name, split)
                for split, name in EMORYNLP_ERC_FILES.items()
            }
        )
    if source == "official":
        splits = {}
        for split in SPLITS:
            json_path = folder / "official_json" / EMORYNLP_JSON_FILES[split]
            if json_path.is_file():
                splits[split] = read_emorynlp_json(json_path, split)
            else:
                tsv_path = folder / "compm_tsv" / EMORYNLP_TSV_FILES[split]
                if not tsv_path.is_file():
                    raise CorpusError(
                        f"EmoryNLP {split} split not found: neither {json_path} nor {tsv_path} exists. Download "
                        "the official JSON from https://github.com/emorynlp/emotion-detection into "
                        f"{json_path.parent}."
                    )
                splits[split] = _read_emorynlp_tsv(tsv_path, split)
        return _as_dataset_dict(splits)
    raise ValueError(f"Unknown EmoryNLP source {source!r}; use 'erc' (the ERC split) or 'official'.")


def _parse_speakers(value: str, where: str) -> str:
    value = value.strip()
    if value.startswith("["):
        try:
            names = ast.literal_eval(value)  # a literal list of strings; literal_eval runs no code
        except (ValueError, SyntaxError):
            raise CorpusError(f"{where}: Speaker {value!r} is not a list like ['Monica Geller'].") from None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise CorpusError(f"{where}: Speaker {value!r} is not a list of names.")
        return ", ".join(names)
    return value


def _read_emorynlp_erc(path: Path, split: str) -> Dataset:
    records = []
    for row_no, row in _read_csv(path, EMORYNLP_ERC_COLUMNS, "EmoryNLP"):
        where = f"{path}, row {row_no}"
        season = _parse_int(row["Season"], path, row_no, "Season")
        episode = _parse_int(row["Episode"], path, row_no, "Episode")
        scene = _parse_int(row["Scene_ID"], path, row_no, "Scene_ID")
        utt = _parse_int(row["Utterance_ID"], path, row_no, "Utterance_ID")
        dialogue_id = f"s{season:02d}_e{episode:02d}_c{scene:02d}"
        speaker = _parse_speakers(row["Speaker"], where)
        utterance_id = f"{dialogue_id}_u{utt:03d}"
        records.append(
            _csv_record(
                "emorynlp", split, row, path, row_no, dialogue_id, utterance_id, speaker, utt, EMORYNLP_TIMES
            )
        )
    records.sort(key=lambda rec: (rec["dialogue_id"], rec["_order"]))
    return _to_dataset(records, str(path))


def read_emorynlp_json(path: str | os.PathLike, split: str) -> Dataset:
    """One split of EmoryNLP in the official JSON layout (episodes > scenes > utterances)."""
    path = _require_file(Path(path), "EmoryNLP JSON")
    text = _read_text(path, "Download the file again.")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise CorpusError(f"{path} is not valid UTF-8 JSON ({err}); download the file again.") from None
    records = []
    for e, episode in enumerate(_json_list(data, "episodes", path, "the top level")):
        for s, scene in enumerate(_json_list(episode, "scenes", path, f"episodes[{e}]")):
            where = f"episodes[{e}].scenes[{s}]"
            scene_id = _json_text(scene, "scene_id", path, where)
            utterances = _json_list(scene, "utterances", path, where)
            if not utterances:
                raise CorpusError(f"{path}: scene {scene_id!r} has no utterances; remove the scene.")
            for position, utt in enumerate(utterances):
                at = f"{where}.utterances[{position}]"
                utterance_id = _json_text(utt, "utterance_id", path, at)
                speakers = _json_list(utt, "speakers", path, at)
                if not all(isinstance(name, str) for name in speakers):
                    raise CorpusError(f"{path}, {at}: field 'speakers' must be a list of names; fix it.")
                records.append(
                    _record(
                        "emorynlp",
                        split,
                        dialogue_id=scene_id,
                        utterance_id=utterance_id,
                        speaker=", ".join(speakers),
                        text=_json_text(utt, "transcript", path, at),
                        label=_json_text(utt, "emotion", path, at),
                        where=f"{path}, utterance {utterance_id}",
                        order=position,
                    )
                )
    return _to_dataset(records, str(path))


_JSON_LAYOUT = (
    "{episodes: [{scenes: [{scene_id, utterances: [{utterance_id, speakers, transcript, emotion}]}]}]}"
)


def _json_field(obj: Any, key: str, kind: type, path: Path, where: str) -> Any:
    """``obj[key]`` of type ``kind``, or a CorpusError naming the file, the place and the official layout."""
    if not isinstance(obj, dict) or key not in obj:
        raise CorpusError(f"{path}: missing field {key!r} at {where} in the official layout {_JSON_LAYOUT}.")
    if not isinstance(obj[key], kind):
        raise CorpusError(
            f"{path}, {where}: field {key!r} is a {type(obj[key]).__name__}, expected a {kind.__name__} "
            f"(the official layout is {_JSON_LAYOUT}); download the file again."
        )
    return obj[key]


def _json_list(obj: Any, key: str, path: Path, where: str) -> list:
    return _json_field(obj, key, list, path, where)


def _json_text(obj: Any, key: str, path: Path, where: str) -> str:
    return _json_field(obj, key, str, path, where)


def _read_emorynlp_tsv(path: Path, split: str) -> Dataset:
    """The CoMPM TSV copy: `speaker<TAB>text<TAB>emotion`, scenes separated by blank lines."""
    from dialoguellm.io import text_lines

    records = []
    scene, position = 0, 0
    lines = text_lines(_read_text(path, "Re-save it as UTF-8."))
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            if position:
                scene, position = scene + 1, 0
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise CorpusError(
                f"{path}, line {line_no}: expected 3 tab-separated fields (speaker, text, emotion), "
                f"found {len(fields)}."
            )
        dialogue_id = f"{split}_scene{scene:04d}"
        records.append(
            _record(
                "emorynlp",
                split,
                dialogue_id=dialogue_id,
                utterance_id=f"{dialogue_id}_u{position:03d}",
                speaker=fields[0],
                text=fields[1],
                label=fields[2].strip(),
                where=f"{path}, line {line_no}",
                order=position,
            )
        )
        position += 1
    return _to_dataset(records, str(path))


# ------------------------------------------------------------------------------------------ IEMOCAP

_TRANSCRIPT_LINE = re.compile(r"^(Ses\S+)\s+\[(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)\]:\s*(.*)$")
_EVALUATION_LINE = re.compile(r"^\[(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\]\t(\S+)\t(\S+)\t")


def iemocap_dev_dialogues(train_dialogues: Iterable[str]) -> list[str]:
    """The fixed dev subset: every ``IEMOCAP_DEV_EVERY``-th dialogue of sessions 1-4, sorted by name
    (positions 9, 19, 29, ...)."""
    ordered = sorted(train_dialogues)
    return ordered[IEMOCAP_DEV_EVERY - 1 :: IEMOCAP_DEV_EVERY]


def load_iemocap(root: str | os.PathLike) -> DatasetDict:
    """IEMOCAP from the official release layout (``IEMOCAP_full_release/Session{1..5}/dialog/...``).

    Transcription lines that do not start with ``Ses`` and turn ids containing ``XX`` are skipped, as in
    the official tools. Utterances labelled outside hap/sad/neu/ang/exc/fru are dropped (the ERC setup),
    and ``turn`` counts the kept utterances of each dialogue in time order.
    """
    root = _iemocap_root(root)
    per_dialogue: dict[str, list[dict[str, Any]]] = {}
    dropped: Counter[str] = Counter()
    for session in IEMOCAP_SESSIONS:
        transcript_files, evaluation_dir = _iemocap_session_files(root, session)
        split = "test" if session == IEMOCAP_TEST_SESSION else "train"
        for transcript in transcript_files:
            records = _read_iemocap_dialogue(transcript, evaluation_dir, split, dropped)
            if records:
                per_dialogue[transcript.stem] = records
    if dropped:
        log.info("IEMOCAP: dropped utterances outside the six ERC classes: %s", dict(dropped))
    return _as_dataset_dict(_iemocap_splits(per_dialogue, root))


def _iemocap_root(root: str | os.PathLike) -> Path:
    """The release folder, or a CorpusError saying IEMOCAP is licensed and how to point at a copy."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CorpusError(
            f"IEMOCAP folder not found: {root}. IEMOCAP is licensed (https://sail.usc.edu/iemocap/); pass "
            "IEMOCAP_DIR pointing at your IEMOCAP_full_release folder, or leave it empty to skip IEMOCAP."
        )
    return root


def _iemocap_session_files(root: Path, session: int) -> tuple[list[Path], Path]:
    """A session's transcript files (sorted) and its EmoEvaluation folder; refuses an incomplete copy."""
    dialog_dir = root / f"Session{session}" / "dialog"
    transcripts_dir = dialog_dir / "transcriptions"
    evaluation_dir = dialog_dir / "EmoEvaluation"
    for needed in (transcripts_dir, evaluation_dir):
        if not needed.is_dir():
            raise CorpusError(
                f"IEMOCAP folder {needed} is missing; {root} does not look like a complete "
                "IEMOCAP_full_release (Session1-5, each with dialog/transcriptions and dialog/EmoEvaluation)."
            )
    transcript_files = sorted(transcripts_dir.glob("*.txt"))
    if not transcript_files:
        raise CorpusError(f"{transcripts_dir} holds no .txt transcriptions; the IEMOCAP copy is incomplete.")
    return transcript_files, evaluation_dir


def _read_iemocap_dialogue(
    transcript: Path, evaluation_dir: Path, split: str, dropped: Counter[str]
) -> list[dict[str, Any]]:
    """One dialogue's records (transcript joined with labels); tallies the labels it drops in ``dropped``."""
    evaluation = evaluation_dir / transcript.name
    if not evaluation.is_file():
        raise CorpusError(
            f"IEMOCAP labels missing for {transcript}: expected {evaluation}. Restore it from the release."
        )
    labels = _read_iemocap_labels(evaluation)
    records = []
    for line_no, (utt_id, start, end, text) in _read_iemocap_transcript(transcript):
        if utt_id not in labels:
            raise CorpusError(
                f"{transcript}, line {line_no}: utterance {utt_id} has no label in {evaluation}; the two "
                "files do not belong together. Restore both from the release."
            )
        label = labels[utt_id]
        if label not in label_vocab.LABELS["iemocap"]:
            dropped[label] += 1
            continue
        records.append(
            _record(
                "iemocap",
                split,
                dialogue_id=transcript.stem,
                utterance_id=utt_id,
                speaker=f"{transcript.stem[:5]}_{utt_id.rsplit('_', 1)[1][0]}",
                text=text,
                label=label,
                where=f"{transcript}, line {line_no}",
                start=start,
                end=end,
                order=(start, utt_id),
            )
        )
    return records


def _iemocap_splits(per_dialogue: dict[str, list[dict[str, Any]]], root: Path) -> dict[str, Dataset]:
    """Move the fixed dev dialogues out of sessions 1-4 and build each split's Dataset, dialogues by name."""
    train_names = [name for name, recs in per_dialogue.items() if recs[0]["split"] == "train"]
    dev_names = set(iemocap_dev_dialogues(train_names))
    grouped: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for name in sorted(per_dialogue):
        recs = per_dialogue[name]
        split = "dev" if name in dev_names else recs[0]["split"]
        for rec in recs:
            rec["split"] = split
        grouped[split].extend(recs)
    if not grouped["dev"]:  # a handful of dialogues would otherwise fail later, naming no cause
        raise CorpusError(
            f"{root}: the dev split is empty: sessions 1-4 gave {len(train_names)} dialogue(s) with kept labels "
            f"and dev takes every {IEMOCAP_DEV_EVERY}th of them. Check that the release is complete (sessions "
            "1-4 hold 120 dialogues)."
        )
    return {split: _to_dataset(recs, f"{root} ({split})") for split, recs in grouped.items()}


def _read_iemocap_transcript(path: Path) -> list[tuple[int, tuple[str, float, float, str]]]:
    rows = []
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.startswith("Ses"):
            continue  # noise lines of the release (M: breathing..., blank lines)
        match = _TRANSCRIPT_LINE.match(line)
        if not match:
            raise CorpusError(
                f"{path}, line {line_no}: {line[:80]!r} does not match "
                "'Ses01F_impro01_F000 [006.2901-008.2357]: text'. Fix or restore the line."
            )
        utt_id, start, end, text = match.groups()
        if "XX" in utt_id:
            continue  # overlapping or unlabelled turns, skipped by the official tools too
        rows.append((line_no, (utt_id, float(start), float(end), text)))
    if not rows:
        raise CorpusError(f"{path}: no utterance lines (starting with 'Ses'); the dialogue is empty.")
    return rows


def _read_iemocap_labels(path: Path) -> dict[str, str]:
    labels: dict[str, str] = {}
    for line_no, line in enumerate(_read_lines(path), start=1):
        if not line.startswith("["):
            continue
        match = _EVALUATION_LINE.match(line)
        if not match:
            raise CorpusError(
                f"{path}, line {line_no}: {line[:80]!r} is not a tab-separated summary line like "
                "'[6.2901 - 8.2357]<TAB>Ses01F_impro01_F000<TAB>neu<TAB>[2.5, 2.5, 2.5]'."
            )
        labels[match.group(3)] = match.group(4)
    if not labels:
        raise CorpusError(f"{path}: no label lines found; expected lines starting with '[start - end]'.")
    return labels


def _read_lines(path: Path) -> list[str]:
    from dialoguellm.io import read_text_file, text_lines

    # The release is ASCII; a few copies were re-saved as Latin-1. Read those rather than fail (but a file
    # cut inside a UTF-8 character, or holding NUL bytes, is damaged and refused).
    return text_lines(read_text_file(path, error=CorpusError, encoding="utf-8", fallback="latin-1"))


# -------------------------------------------------------------------------------------- all corpora


def load_corpora(
    datasets: Iterable[str] = ("meld", "emorynlp", "iemocap"),
    data_dir: str | os.PathLike | None = None,
    iemocap_dir: str | os.PathLike | None = None,
    emorynlp_source: str = "erc",
) -> dict[str, DatasetDict]:
    """Load several corpora by name. IEMOCAP is skipped (with a log message) when ``iemocap_dir`` is
    empty, since it is licensed and never ships with the package."""
    corpora: dict[str, DatasetDict] = {}
    for name in datasets:
        if name == "meld":
            corpora[name] = load_meld(data_dir)
        elif name == "emorynlp":
            corpora[name] = load_emorynlp(data_dir, source=emorynlp_source)
        elif name == "iemocap":
            if iemocap_dir:
                corpora[name] = load_iemocap(iemocap_dir)
            else:
                log.info(iemocap_status(iemocap_dir))
        else:
            raise ValueError(f"Unknown dataset {name!r}; expected one of {', '.join(label_vocab.DATASETS)}.")
    return corpora


def save_curated(corpus: DatasetDict, run_dir: str | os.PathLike) -> Path:
    """Write one corpus to ``<run_dir>/data/<dataset>/<split>.parquet`` (each file atomically)."""
    import pyarrow.parquet as pq

    dataset = corpus["train"][0]["dataset"]
    folder = RunLayout(Path(run_dir)).corpus(dataset)
    for split, ds in corpus.items():
        with atomic_path(folder / f"{split}.parquet") as tmp:
            pq.write_table(ds.data.table, tmp)
    return folder


def load_curated(run_dir: str | os.PathLike, dataset: str) -> DatasetDict:
    """Read back what ``save_curated`` wrote (notebook 01's output)."""
    import pyarrow.parquet as pq

    folder = RunLayout(Path(run_dir)).corpus(dataset)
    splits = {}
    for split in SPLITS:
        path = folder / f"{split}.parquet"
        if not path.is_file():
            raise FileNotFoundError(
                f"Curated {dataset} {split} split not found: {path}. Run notebooks/01_data_curation.ipynb "
                "with the same RUN_DIR first (make reproduce does)."
            )
        # Read in memory (no Hugging Face cache folder); the schema is enforced on the way in.
        rows = pq.read_table(path).to_pylist()
        _check_label_set(rows, dataset, path)
        splits[split] = Dataset.from_list(rows, features=RECORD_FEATURES)
    return _as_dataset_dict(splits)


def load_curated_corpora(run_dir: str | os.PathLike) -> dict[str, DatasetDict]:
    """Every corpus notebook 01 curated into ``run_dir`` (an error naming the notebook when there is none)."""
    run = RunLayout(Path(run_dir))
    curated = {
        name: load_curated(run.root, name) for name in label_vocab.DATASETS if run.corpus(name).is_dir()
    }
    if not curated:
        raise FileNotFoundError(
            f"No curated corpora in {run.root / 'data'}; run notebooks/01_data_curation.ipynb with this RUN_DIR first."
        )
    return curated


IEMOCAP_ENV = "IEMOCAP_DIR"


def resolve_datasets(
    config: Any, run_dir: str | os.PathLike | None = None, iemocap_dir: str | os.PathLike | None = None
) -> Any:
    """``config`` with ``data.datasets`` limited to the corpora this machine has.

    IEMOCAP is licensed and never shipped: it stays when ``iemocap_dir`` (or ``$IEMOCAP_DIR``) is given or
    notebook 01 curated it into ``run_dir``; otherwise it is dropped with a warning that names what runs
    instead and that the numbers are not the paper's three-corpus setting. Other corpora are left as they are.
    """
    import copy
    import warnings

    datasets = list(config.data.datasets)
    if "iemocap" not in datasets:
        return config
    curated = run_dir is not None and RunLayout(Path(run_dir)).corpus("iemocap").is_dir()
    if iemocap_dir or os.environ.get(IEMOCAP_ENV) or curated:
        return config
    kept = [name for name in datasets if name != "iemocap"]
    if not kept:
        raise ValueError(
            f"{config.source}: data.datasets is [iemocap] but IEMOCAP is not available; set {IEMOCAP_ENV} to your "
            "IEMOCAP_full_release folder."
        )
    message = (
        f"{config.source}: data.datasets names iemocap but {IEMOCAP_ENV} is not set, so this run trains and "
        f"evaluates on {len(kept)} corpora ({', '.join(kept)}), not the paper's three: its numbers are NOT the "
        f"paper's setting (one model trained on MELD, IEMOCAP and EmoryNLP together). Set {IEMOCAP_ENV}=/path/to/"
        "IEMOCAP_full_release (licensed: https://sail.usc.edu/iemocap/) to include it."
    )
    log.warning(message)
    warnings.warn(message, stacklevel=2)
    resolved = copy.deepcopy(config)
    resolved.data.datasets = kept
    return resolved


def load_corpora_for(
    config: Any,
    run_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    iemocap_dir: str | os.PathLike | None = None,
) -> dict[str, DatasetDict]:
    """The corpora a config names (``data.datasets``): notebook 01's curated copies in ``run_dir`` when
    present, else the raw corpora (``data_dir`` or the vendored copies; IEMOCAP from ``iemocap_dir`` or
    ``$IEMOCAP_DIR``). Pass the config through ``resolve_datasets`` first to drop an absent IEMOCAP."""
    iemocap_dir = iemocap_dir or os.environ.get(IEMOCAP_ENV) or None
    corpora = {}
    for name in config.data.datasets:
        if run_dir is not None and RunLayout(Path(run_dir)).corpus(name).is_dir():
            corpora[name] = load_curated(run_dir, name)
        else:
            corpora.update(load_corpora([name], data_dir, iemocap_dir))
        if name not in corpora:
            raise FileNotFoundError(
                f"Corpus {name!r} (data.datasets) could not be loaded; run notebook 01 with this RUN_DIR, set "
                f"{IEMOCAP_ENV} for IEMOCAP, or drop it from data.datasets."
            )
    return corpora


def _check_label_set(rows: list[dict[str, Any]], dataset: str, path: Path) -> None:
    """Every row of a curated ``dataset`` file belongs to it and uses its label set (``labels.LABELS``),
    so prompts and metrics never pair one corpus's labels with another's names."""
    vocabulary = label_vocab.label_names(dataset)
    fix = f"run notebooks/01_data_curation.ipynb again for this RUN_DIR (it rewrites {path.parent})"
    for n, row in enumerate(rows, start=1):
        where = f"{path}, row {n}"
        if row.get("dataset") != dataset:
            raise CorpusError(
                f"{where}: field 'dataset' is {row.get('dataset')!r} in the {dataset} folder; {fix}."
            )
        if row.get("label") not in vocabulary:
            raise CorpusError(
                f"{where}: label {row.get('label')!r} is not in the {dataset} label set "
                f"({', '.join(vocabulary)}); {fix}."
            )
        if row.get("label_id") != vocabulary.index(row["label"]):
            raise CorpusError(
                f"{where}: label_id {row.get('label_id')!r} does not match label {row['label']!r} (id "
                f"{vocabulary.index(row['label'])} in the {dataset} label set); {fix}."
            )


# ---------------------------------------------------------------------------------------- summaries


def split_frame(split: Any) -> pd.DataFrame:
    """A curated split (``datasets.Dataset``, DataFrame or list of record dicts) as a DataFrame."""
    if isinstance(split, pd.DataFrame):
        frame = split.copy()
    elif hasattr(split, "to_pandas"):
        frame = split.to_pandas()
    else:
        frame = pd.DataFrame(list(split))
    missing = [
        c for c in ("dataset", "dialogue_id", "turn", "utterance_id", "text", "label") if c not in frame
    ]
    if missing:
        raise ValueError(
            f"Curated records lack column(s) {', '.join(missing)}; pass a split of "
            "dialoguellm.corpora.readers.load_curated(run_dir, dataset)."
        )
    return frame.reset_index(drop=True)


def corpus_summary(corpora: dict[str, DatasetDict]) -> pd.DataFrame:
    """Dialogues and utterances per dataset and split."""
    rows = []
    for name, corpus in corpora.items():
        for split in SPLITS:
            ds = corpus[split]
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "dialogues": len(set(ds["dialogue_id"])),
                    "utterances": len(ds),
                }
            )
    return pd.DataFrame(rows)


def label_distribution(corpora: dict[str, DatasetDict]) -> pd.DataFrame:
    """Utterances per dataset, split and label (plus the paper's normalised label word)."""
    rows = []
    for name, corpus in corpora.items():
        for split in SPLITS:
            counts = Counter(corpus[split]["label"])
            for label in label_vocab.LABELS[name]:
                rows.append(
                    {
                        "dataset": name,
                        "split": split,
                        "label": label,
                        "normalised": label_vocab.normalise_label(name, label),
                        "count": counts.get(label, 0),
                    }
                )
    return pd.DataFrame(rows)


def dialogue_frame(ds: Dataset, dialogue_id: str) -> pd.DataFrame:
    """One dialogue as a small table (turn, speaker, text, label) for reading."""
    frame = ds.to_pandas()
    frame = frame[frame["dialogue_id"] == dialogue_id]
    if frame.empty:
        raise KeyError(f"No dialogue {dialogue_id!r} in this split.")
    return frame[["turn", "speaker", "text", "label"]].reset_index(drop=True)


def iemocap_status(iemocap_dir: str | os.PathLike | None) -> str:
    """A one-line explanation of whether IEMOCAP is included, for notebooks and logs."""
    if not iemocap_dir:
        return (
            "IEMOCAP skipped: it is licensed (https://sail.usc.edu/iemocap/) and not shipped with this package. "
            "Set IEMOCAP_DIR to your IEMOCAP_full_release folder to include it."
        )
    return f"IEMOCAP read from {iemocap_dir}."


def curation_records(
    corpora: dict[str, DatasetDict],
    summary: pd.DataFrame,
    distribution: pd.DataFrame,
    removal: dict[str, Any],
    figure: str | os.PathLike,
) -> dict[str, Any]:
    """What notebook 01 records: the training utterances the cross-corpus overlap rule removed (``removal`` of
    ``corpora.overlap.remove_cross_corpus_overlap``), the corpora, their utterances and dialogues per split
    (``corpus_summary``), the test label counts (``label_distribution``) and the figure's file name."""

    def per_split(column: str) -> dict[str, dict[str, Any]]:
        return {
            ds: {r.split: getattr(r, column) for r in summary[summary.dataset == ds].itertuples()}
            for ds in corpora
        }

    return {
        "cross_corpus_overlap_removed": removal["removed"],
        "datasets": sorted(corpora),
        "utterances": per_split("utterances"),
        "dialogues": per_split("dialogues"),
        "test_labels": {
            ds: dict(zip(part.label, part["count"].astype(int), strict=True))
            for ds, part in distribution[distribution.split == "test"].groupby("dataset")
        },
        "figure": Path(figure).name,
    }

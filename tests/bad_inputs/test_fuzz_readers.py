"""Every reader of a user's file, fuzzed: a valid small file with random damage (cut at any byte, a line
deleted, duplicated or swapped, bytes flipped, a delimiter, quote or NUL inserted, another encoding) is
either read into a well-formed result that passes the reader's own checks, or refused with the package's
error naming the file. Never another exception type, never a partial result.

CI runs a fixed number of examples per reader with a fixed seed (``derandomize``); a longer, fresh random
search is ``DIALOGUELLM_FUZZ_EXAMPLES=2000 pytest tests/bad_inputs/test_fuzz_readers.py`` (hypothesis prints any
failing file and the ``@reproduce_failure`` line that replays it).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from iemocap_synth import build_iemocap_tree

from dialoguellm import calibration as calibration_mod
from dialoguellm import config as config_mod
from dialoguellm import pipeline
from dialoguellm.analysis import seceu as eq
from dialoguellm.corpora import readers, video
from dialoguellm.corpora.readers import RECORD_FEATURES, SPLITS, CorpusError
from dialoguellm.evaluation.predict import InputError, read_turns
from dialoguellm.labels import LABELS
from dialoguellm.runs import REPO_DIR

RAW = REPO_DIR / "dialoguellm" / "corpora" / "raw"
EXAMPLES = int(os.environ.get("DIALOGUELLM_FUZZ_EXAMPLES", "0"))


def fuzz(default: int) -> settings:
    """``default`` examples in CI (the readers differ in cost), or ``DIALOGUELLM_FUZZ_EXAMPLES`` each."""
    return settings(
        max_examples=EXAMPLES or default,
        derandomize=not EXAMPLES,  # CI: the same examples on every run; a long run: new ones each time
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------------------------------ damage
INSERTS = [b",", b"\t", b'"', b"\n", b"\r\n", b"\x00", b"{", b"]", b":", b"\\", b"\xc3", b"\xe2\x80"]
ENCODINGS = ["cp1252", "latin-1", "utf-16", "utf-8-sig", "ascii"]


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True) or [b""]


@st.composite
def damaged(draw: st.DrawFn, original: bytes, kinds: tuple[str, ...] | None = None) -> bytes:
    """``original`` after one to three random damages."""
    data = original
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(kinds or DAMAGES))
        data = _damage(draw, kind, data)
    return data


def _damage(draw: st.DrawFn, kind: str, data: bytes) -> bytes:
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "cut_in_a_character":  # an interrupted download that stops inside a multi-byte character
        inside = [i for i in range(1, len(data)) if 0x80 <= data[i] < 0xC0]
        return data[: draw(st.sampled_from(inside))] if inside else data
    if kind == "flip":
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if kind == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from(INSERTS)) + data[at:]
    if kind == "reencode":
        encoding = draw(st.sampled_from(ENCODINGS))
        return data.decode("utf-8", errors="replace").encode(encoding, errors="replace")
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    if kind == "delete_line":
        return b"".join(lines[:i] + lines[i + 1 :])
    j = draw(st.integers(0, len(lines) - 1))
    if kind == "duplicate_line":  # line 0 is the header: this also repeats a header mid-file
        return b"".join(lines[:j] + [lines[i]] + lines[j:])
    lines[i], lines[j] = lines[j], lines[i]  # swap_lines
    return b"".join(lines)


DAMAGES = (
    "truncate",
    "cut_in_a_character",
    "flip",
    "insert",
    "reencode",
    "delete_line",
    "duplicate_line",
    "swap_lines",
)


def assert_contract(read: Callable[[], Any], check: Callable[[Any], None], error: type, names: str) -> Any:
    """``read()`` returns a result that passes ``check``, or raises exactly ``error`` (not a subclass such
    as UnicodeDecodeError or JSONDecodeError) with ``names`` (the damaged file's name) in the message."""
    try:
        result = read()
    except Exception as err:  # noqa: BLE001 - the point is to see which exception comes out
        assert type(err) is error, f"{type(err).__name__} instead of {error.__name__}: {err}"
        assert names in str(err), f"the message does not name {names}: {err}"
        return None
    check(result)
    return result


# ------------------------------------------------------------------------------------------- checks
def check_corpus(corpus: Any, dataset: str) -> None:
    """A well-formed corpus: three splits in the record schema, labels of the corpus, clean non-empty text,
    and every dialogue's turns numbered 0..n-1."""
    assert set(corpus) == set(SPLITS)
    for split, ds in corpus.items():
        assert ds.features == RECORD_FEATURES and len(ds) > 0
        rows = ds.to_list()
        readers._check_label_set(rows, dataset, Path(split))
        turns: dict[str, list[int]] = defaultdict(list)
        for row in rows:
            assert row["split"] == split
            assert row["text"] and row["text"] == readers.normalise_text(row["text"])
            assert not any("\x00" in v for v in row.values() if isinstance(v, str))
            for key in ("start", "end"):
                assert row[key] is None or (math.isfinite(row[key]) and row[key] >= 0)
            turns[row["dialogue_id"]].append(row["turn"])
        assert all(sorted(t) == list(range(len(t))) for t in turns.values())


def _head(path: Path, rows: int) -> bytes:
    """The header and first ``rows`` rows of a one-line-per-row file, bytes as they are."""
    return b"".join(path.read_bytes().splitlines(keepends=True)[: rows + 1])


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# --------------------------------------------------------------------------------------------- MELD
@pytest.fixture(scope="module")
def meld(work) -> tuple[Path, bytes]:
    """A data folder with the first rows of each official MELD file (quotes, commas, curly apostrophes)."""
    folder = work / "meld_raw"
    (folder / "meld").mkdir(parents=True)
    for name in readers.MELD_FILES.values():
        (folder / "meld" / name).write_bytes(_head(RAW / "meld" / name, 8))
    return folder, (folder / "meld" / "train_sent_emo.csv").read_bytes()


@fuzz(60)
@given(st.data())
def test_meld_csv(meld, data_):
    folder, original = meld
    (folder / "meld" / "train_sent_emo.csv").write_bytes(data_.draw(damaged(original)))
    assert_contract(
        lambda: readers.load_meld(folder),
        lambda c: check_corpus(c, "meld"),
        CorpusError,
        "train_sent_emo.csv",
    )


def _whole_rows_or_error(read: Callable[[], Any], original: Any, names: str) -> None:
    """A file cut anywhere reads as the original's first k rows exactly (cut at a row's end), or is refused
    naming the file: a row cut in the middle never comes back as a shorter, wrong row."""
    result = assert_contract(read, lambda _: None, CorpusError, names)
    if result is not None:
        got = result["train"].to_list()
        assert got == original["train"].to_list()[: len(got)]


@fuzz(40)
@given(st.data())
def test_meld_csv_cut_anywhere(meld, data_):
    folder, original = meld
    path = folder / "meld" / "train_sent_emo.csv"
    path.write_bytes(original)
    whole = readers.load_meld(folder)
    path.write_bytes(original[: data_.draw(st.integers(0, len(original)))])
    _whole_rows_or_error(lambda: readers.load_meld(folder), whole, "train_sent_emo.csv")


# ----------------------------------------------------------------------------------------- EmoryNLP
@pytest.fixture(scope="module")
def emory_csv(work) -> tuple[Path, bytes]:
    folder = work / "emory_csv"
    (folder / "emorynlp" / "meld_repo_csv").mkdir(parents=True)
    for name in readers.EMORYNLP_ERC_FILES.values():
        target = folder / "emorynlp" / "meld_repo_csv" / name
        target.write_bytes(_head(RAW / "emorynlp" / "meld_repo_csv" / name, 8))
    return folder, (folder / "emorynlp" / "meld_repo_csv" / "emorynlp_train_final.csv").read_bytes()


@fuzz(50)
@given(st.data())
def test_emorynlp_csv(emory_csv, data_):
    folder, original = emory_csv
    (folder / "emorynlp" / "meld_repo_csv" / "emorynlp_train_final.csv").write_bytes(
        data_.draw(damaged(original))
    )
    assert_contract(
        lambda: readers.load_emorynlp(folder),
        lambda c: check_corpus(c, "emorynlp"),
        CorpusError,
        "emorynlp_train_final.csv",
    )


@fuzz(30)
@given(st.data())
def test_emorynlp_csv_cut_anywhere(emory_csv, data_):
    folder, original = emory_csv
    path = folder / "emorynlp" / "meld_repo_csv" / "emorynlp_train_final.csv"
    path.write_bytes(original)
    whole = readers.load_emorynlp(folder)
    path.write_bytes(original[: data_.draw(st.integers(0, len(original)))])
    _whole_rows_or_error(lambda: readers.load_emorynlp(folder), whole, "emorynlp_train_final.csv")


@pytest.fixture(scope="module")
def emory_tsv(work) -> tuple[Path, bytes]:
    """The CoMPM TSV copy (no JSON beside it): the first two scenes of each split."""
    folder = work / "emory_tsv"
    (folder / "emorynlp" / "compm_tsv").mkdir(parents=True)
    for name in readers.EMORYNLP_TSV_FILES.values():
        text = (RAW / "emorynlp" / "compm_tsv" / name).read_bytes()
        (folder / "emorynlp" / "compm_tsv" / name).write_bytes(b"\n\n".join(text.split(b"\n\n")[:2]) + b"\n")
    return folder, (folder / "emorynlp" / "compm_tsv" / "EMORY_train.txt").read_bytes()


@fuzz(40)
@given(st.data())
def test_emorynlp_tsv(emory_tsv, data_):
    folder, original = emory_tsv
    (folder / "emorynlp" / "compm_tsv" / "EMORY_train.txt").write_bytes(data_.draw(damaged(original)))
    assert_contract(
        lambda: readers.load_emorynlp(folder, source="official"),
        lambda c: check_corpus(c, "emorynlp"),
        CorpusError,
        "EMORY_train.txt",
    )


@pytest.fixture(scope="module")
def emory_json(work) -> tuple[Path, bytes]:
    """Two scenes of three utterances from the official JSON, in its own indented layout."""
    doc = json.loads((RAW / "emorynlp" / "official_json" / "emotion-detection-dev.json").read_text())
    episode = doc["episodes"][0]
    scenes = [dict(scene, utterances=scene["utterances"][:3]) for scene in episode["scenes"][:2]]
    small = {"season_id": doc.get("season_id"), "episodes": [dict(episode, scenes=scenes)]}
    path = work / "emotion-detection-dev.json"
    path.write_text(json.dumps(small, indent=4, ensure_ascii=False), encoding="utf-8")
    return path, path.read_bytes()


@fuzz(50)
@given(st.data())
def test_emorynlp_json(emory_json, data_):
    path, original = emory_json
    path.write_bytes(data_.draw(damaged(original)))
    assert_contract(
        lambda: {split: readers.read_emorynlp_json(path, split) for split in SPLITS},
        lambda c: check_corpus(c, "emorynlp"),
        CorpusError,
        path.name,
    )


# ------------------------------------------------------------------------------------------ IEMOCAP
@pytest.fixture(scope="module")
def iemocap(work) -> tuple[Path, dict[Path, bytes]]:
    root = build_iemocap_tree(work / "iemocap")
    files = [
        root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt",
        root / "Session1" / "dialog" / "EmoEvaluation" / "Ses01F_impro01.txt",
    ]
    return root, {path: path.read_bytes() for path in files}


@fuzz(40)
@given(st.data())
def test_iemocap_tree(iemocap, data_):
    root, originals = iemocap
    for path, original in originals.items():
        path.write_bytes(original)
    path = data_.draw(st.sampled_from(sorted(originals)))
    path.write_bytes(data_.draw(damaged(originals[path])))
    # Both files of a dialogue share a name; the message names it (a label missing from the evaluation
    # file is reported at the transcript line that needs it).
    assert_contract(
        lambda: readers.load_iemocap(root), lambda c: check_corpus(c, "iemocap"), CorpusError, path.name
    )


# ------------------------------------------------------------------------------------- descriptions
DESCRIPTIONS = [
    ("dia0_utt0", "dev", "A man in a grey sweater waves, smiling \u2014 \u201chi\u201d."),
    ("dia0_utt1", "dev", "Two women sit on a sofa; one laughs.\u2028Then she stands."),
    ("dia1_utt0", "test", "A caf\u00e9, a counter, a man holding a cup\u2026"),
]


def check_description_rows(rows: list[dict[str, Any]]) -> None:
    assert rows
    seen = set()
    for row in rows:
        assert video.CLIP_ID_PATTERN.fullmatch(row["clip_id"])
        assert isinstance(row["text"], str) and row["text"].strip() and "\x00" not in row["text"]
        assert row["split"] is None or isinstance(row["split"], str)
        assert (row["split"], row["clip_id"]) not in seen
        seen.add((row["split"], row["clip_id"]))


def _description_file(suffix: str) -> str:
    if suffix == ".jsonl":
        return "".join(
            json.dumps({"clip_id": c, "split": s, "description": d}, ensure_ascii=False) + "\n"
            for c, s, d in DESCRIPTIONS
        )
    if suffix == ".json":
        return json.dumps({c: d for c, _, d in DESCRIPTIONS}, indent=2, ensure_ascii=False)
    rows = "".join(f'{c},{s},"{d}"\r\n' for c, s, d in DESCRIPTIONS)
    return "clip_id,split,description\r\n" + rows


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".json"])
@fuzz(30)
@given(data_=st.data())
def test_description_file(work, suffix, data_):
    path = work / f"descriptions{suffix}"
    original = _description_file(suffix).encode("utf-8")
    assert video.read_description_file(_write(path, original))  # the undamaged file is valid
    path.write_bytes(data_.draw(damaged(original)))
    assert_contract(lambda: video.read_description_file(path), check_description_rows, ValueError, path.name)


# a user's conversation for `dialoguellm predict`: CSV with a header, or JSONL
TURNS = [
    ("1", "Ann", "I got the job!"),
    ("1", "Ben", "No way, really? That's wonderful!"),
    ("2", "Cy", "Oh."),
]


def _turns_file(suffix: str) -> str:
    if suffix == ".jsonl":
        return "".join(
            json.dumps({"dialogue_id": d, "speaker": s, "text": t}, ensure_ascii=False) + "\n"
            for d, s, t in TURNS
        )
    return "dialogue_id,speaker,text\r\n" + "".join(f'{d},{s},"{t}"\r\n' for d, s, t in TURNS)


def check_turns(turns: Any) -> None:
    assert turns.rows
    for row in turns.rows:
        for key in ("dialogue_id", "speaker", "text"):
            assert isinstance(row[key], str) and row[key].strip() and "\x00" not in row[key]
        assert isinstance(row["turn"], int) and row["turn"] >= 0


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
@fuzz(30)
@given(data_=st.data())
def test_predict_turns_file(work, suffix, data_):
    path = work / f"turns{suffix}"
    original = _turns_file(suffix).encode("utf-8")
    assert len(read_turns(_write(path, original)).rows) == len(TURNS)  # the undamaged file is valid
    path.write_bytes(data_.draw(damaged(original)))
    assert_contract(lambda: read_turns(path), check_turns, InputError, path.name)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def cache(work) -> tuple[Path, bytes]:
    """A run's description cache: ok and failed records, as describe_clips writes them."""
    path = work / "cache" / "descriptions.jsonl"
    store = video.DescriptionCache(path)
    for n, (clip, split, text) in enumerate(DESCRIPTIONS):
        base = {"key": f"{split}/{clip}|import|x|p", "split": split, "clip_id": clip, "describer": "import"}
        store.append(base | {"model": "x", "status": "ok", "description": text, "error": None})
        if n == 1:
            failed = {"status": "failed", "description": None, "error": "FrameError: no frames"}
            store.append(base | {"key": f"{split}/{clip}|openai|m|q", "model": "m"} | failed)
    return path, path.read_bytes()


@fuzz(50)
@given(st.data())
def test_description_cache(cache, data_):
    path, original = cache
    path.write_bytes(data_.draw(damaged(original)))

    def check(table: dict[str, dict[str, str]]) -> None:
        for split, clips in table.items():
            for clip, text in clips.items():
                assert isinstance(split, str) and isinstance(clip, str)
                assert isinstance(text, str) and text.strip() and "\x00" not in text

    assert_contract(lambda: video.load_descriptions(path), check, ValueError, path.name)


# ------------------------------------------------------------------------------------------ configs
@fuzz(50)
@given(st.data())
def test_config_file(work, data_):
    path = work / "settings.yaml"
    path.write_bytes(data_.draw(damaged((config_mod.PROFILES_DIR / "cpu.yaml").read_bytes())))

    def check(config: Any) -> None:
        assert isinstance(config, config_mod.Config)
        config_mod.validate(config)
        # the saved settings read back to the same config (what every result is traced to)
        again = config_mod.config_from_dict({k: v for k, v in config.to_dict().items() if k != "source"})
        assert again.to_dict() | {"source": config.source} == config.to_dict()

    assert_contract(lambda: config_mod.load_config(path), check, ValueError, path.name)


OVERRIDE_KEYS = sorted(config_mod.describe()) + ["train", "trainer.lr", "train.", ".lr", "train.lr.x"]
VALUE_TEXT = st.text(st.sampled_from("0123456789.-+e[]{},:'\" abcnaNINF\x00\n#&*!|>%@`"), max_size=12)


@fuzz(80)
@given(st.lists(st.tuples(st.sampled_from(OVERRIDE_KEYS), st.sampled_from(["=", ":", ""]), VALUE_TEXT)))
def test_set_overrides(pairs):
    """``--set`` pairs: a config with them applied, or a ValueError naming the override (or --set)."""
    args = [f"{key}{sep}{value}" for key, sep, value in pairs]
    try:
        config = config_mod.load_config("cpu", config_mod.parse_overrides(args))
    except Exception as err:  # noqa: BLE001
        assert type(err) is ValueError, f"{type(err).__name__}: {err}"
        named = [key for key, _, _ in pairs if key and key in str(err)]
        assert named or "--set" in str(err), f"the message names no override: {err}"
        return
    config_mod.validate(config)


# ---------------------------------------------------------------------------------- notebook params
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def notebooks() -> dict[str, Any]:
    import papermill as pm

    return {p.name: (p, pm.inspect_notebook(str(p))) for p in pipeline.notebook_paths()}


@fuzz(80)
@given(st.data())
def test_notebook_parameters(notebooks, cached_inspection, data_):
    name = data_.draw(st.sampled_from(sorted(notebooks)))
    path, declared = notebooks[name]
    keys = st.sampled_from(sorted(declared)) | st.text(max_size=8)
    overrides = st.dictionaries(st.sampled_from(OVERRIDE_KEYS), JSONISH | VALUE_TEXT, max_size=3)
    params = data_.draw(st.dictionaries(keys, JSONISH | overrides, max_size=3))
    try:
        pipeline._check_parameters(path, params)
    except Exception as err:  # noqa: BLE001
        assert type(err) in (TypeError, ValueError), f"{type(err).__name__}: {err}"
        assert name in str(err), f"the message does not name {name}: {err}"


@pytest.fixture(scope="module")
def cached_inspection(notebooks):
    """papermill's notebook inspection, answered from the module's cache (it reads the file each time)."""
    import papermill as pm

    patch = pytest.MonkeyPatch()
    by_path = {str(path): declared for path, declared in notebooks.values()}
    patch.setattr(pm, "inspect_notebook", lambda nb, *a, **k: by_path[str(nb)])
    yield patch
    patch.undo()


# ---------------------------------------------------------------------------- calibration and SECEU
@pytest.fixture(scope="module")
def calibration(work) -> tuple[Path, bytes, Any]:
    adapter = work / "training" / "adapter"
    adapter.mkdir(parents=True)
    biases = {"meld": [0.0, 0.5, -1.25, 2.0, 0.0, -0.75, 1.5], "emorynlp": [0.0, 1.0, 0, 0, 0.5, -2, 3.25]}
    (adapter / "calibration.json").write_text(json.dumps(biases, indent=2))
    cfg = config_mod.load_config("cpu", {"eval.calibrate": True})
    return adapter, (adapter / "calibration.json").read_bytes(), cfg


@fuzz(50)
@given(st.data())
def test_calibration_file(calibration, data_):
    adapter, original, cfg = calibration
    (adapter / "calibration.json").write_bytes(data_.draw(damaged(original)))

    def check(biases: dict[str, list[float]]) -> None:
        for name, values in biases.items():
            assert name in LABELS and len(values) == len(LABELS[name])
            assert all(not isinstance(v, bool) and math.isfinite(float(v)) for v in values)

    assert_contract(
        lambda: calibration_mod.load_calibration(adapter, cfg), check, ValueError, "calibration.json"
    )


@pytest.fixture(scope="module")
def seceu(work) -> tuple[Path, dict[str, bytes]]:
    from tiny import write_seceu

    folder = write_seceu(work / "seceu")
    originals = {}
    for name in (eq.ITEMS_FILE, eq.STANDARD_FILE):  # indented, as the published transcription is
        doc = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(doc, indent=2))
        originals[name] = (folder / name).read_bytes()
    return folder, originals


@fuzz(50)
@given(st.data())
def test_seceu_files(seceu, data_):
    folder, originals = seceu
    for name, original in originals.items():
        (folder / name).write_bytes(original)
    name = data_.draw(st.sampled_from(sorted(originals)))
    (folder / name).write_bytes(data_.draw(damaged(originals[name])))

    def check(loaded: eq.SeceuData) -> None:
        assert len(loaded.items) == loaded.standard_scores.shape[0] == loaded.human_pattern.shape[0]
        assert loaded.standard_scores.shape[1] == eq.N_OPTIONS
        assert all(item.story and len(item.options) == eq.N_OPTIONS for item in loaded.items)
        assert math.isfinite(loaded.mean) and loaded.sd > 0

    assert_contract(lambda: eq.load_seceu(folder), check, ValueError, name)


def test_the_damage_strategies_change_files():
    """Each damage does what its name says on a small file (so the fuzz tests fuzz something)."""
    original = "h1,h2\r\n1,caf\u00e9\r\n2,b\r\n".encode()

    @settings(max_examples=30, derandomize=True, database=None)
    @given(st.data())
    def run(data_):
        kind = data_.draw(st.sampled_from(DAMAGES))
        out = _damage(data_.draw, kind, original)
        if kind == "cut_in_a_character":
            with pytest.raises(UnicodeDecodeError):
                out.decode("utf-8")
        if kind in ("delete_line",):
            assert len(_lines(out)) == len(_lines(original)) - 1
        if kind == "duplicate_line":
            assert len(_lines(out)) == len(_lines(original)) + 1

    run()

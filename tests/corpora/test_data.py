"""The curated corpora: exact official counts and label distributions from the vendored files."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from tiny import shared_dir

from dialoguellm import labels
from dialoguellm.corpora import readers


@pytest.fixture(scope="module")
def meld():
    return readers.load_meld()


@pytest.fixture(scope="module")
def emorynlp():
    return readers.load_emorynlp()


def _sizes(corpus):
    return {split: (len(ds), len(set(ds["dialogue_id"]))) for split, ds in corpus.items()}


def test_meld_official_counts(meld):
    assert _sizes(meld) == {"train": (9989, 1038), "dev": (1109, 114), "test": (2610, 280)}
    assert "60" not in set(meld["train"]["dialogue_id"])  # train dialogue 60 does not exist


def test_meld_test_label_distribution(meld):
    assert Counter(meld["test"]["label"]) == {
        "neutral": 1256, "joy": 402, "anger": 345, "surprise": 281, "sadness": 208, "disgust": 68, "fear": 50,
    }  # fmt: skip
    assert Counter(meld["train"]["label"]) == {
        "neutral": 4710, "joy": 1743, "surprise": 1205, "anger": 1109, "sadness": 683, "disgust": 271, "fear": 268,
    }  # fmt: skip


def test_meld_records_follow_the_schema(meld):
    row = meld["test"][0]
    assert set(row) == set(readers.RECORD_FEATURES)
    assert row["dataset"] == "meld" and row["split"] == "test"
    assert row["clip_id"] == row["utterance_id"] == f"dia{row['dialogue_id']}_utt0"
    assert 0 <= row["start"] < row["end"]
    assert labels.LABELS["meld"][row["label_id"]] == row["label"]


def test_meld_turns_are_positions_not_raw_ids(meld):
    # Utterance_ID has gaps in 72 train dialogues; turn must still run 0..n-1 in Utterance_ID order.
    df = meld["train"].to_pandas()
    for _, group in df.groupby("dialogue_id"):
        assert list(group["turn"]) == list(range(len(group)))
        raw = [int(u.split("_utt")[1]) for u in group["utterance_id"]]
        assert raw == sorted(raw)
    gaps = sum(
        1
        for _, g in df.groupby("dialogue_id")
        if [int(u.split("_utt")[1]) for u in g["utterance_id"]] != list(range(len(g)))
    )
    assert gaps == 72


def test_emorynlp_erc_split_counts(emorynlp):
    assert _sizes(emorynlp) == {"train": (7551, 659), "dev": (954, 89), "test": (984, 79)}
    row = emorynlp["dev"][0]
    assert row["utterance_id"].startswith(row["dialogue_id"] + "_u")
    assert row["clip_id"] is None


def test_emorynlp_official_release_counts():
    official = readers.load_emorynlp(source="official")
    assert _sizes(official) == {"train": (9934, 713), "dev": (1344, 99), "test": (1328, 85)}
    assert Counter(official["dev"]["label"]) == {
        "Neutral": 393, "Joyful": 289, "Scared": 178, "Mad": 143, "Powerful": 134, "Peaceful": 132, "Sad": 75,
    }  # fmt: skip
    # dev/test come from the official JSON: multi-speaker utterances keep every name
    assert any(", " in speaker for speaker in official["dev"]["speaker"])


def test_emorynlp_erc_ids_match_the_official_json(emorynlp):
    official = {row["utterance_id"]: row for row in readers.load_emorynlp(source="official")["test"]}
    for row in emorynlp["test"]:
        assert official[row["utterance_id"]]["label"] == row["label"]


def test_text_normalisation_repairs_cp1252_artefacts():
    assert (
        readers.normalise_text("You must\x92ve had\x85 enough \x97 okay") == "You must’ve had… enough — okay"
    )
    assert readers.normalise_text("companyâ€™s") == "company’s"
    assert readers.normalise_text("  so   much \n space\t") == "so much space"
    assert readers.normalise_text("José") == "José"  # real accents survive


def test_no_text_keeps_c1_controls_or_double_spaces(meld, emorynlp):
    for corpus in (meld, emorynlp):
        for ds in corpus.values():
            for text in ds["text"]:
                assert text == text.strip() and "  " not in text
                assert not any("\x80" <= ch <= "\x9f" for ch in text)


def test_normalisation_maps_synonyms_only():
    assert labels.normalise_label("meld", "joy") == "happiness"
    assert labels.normalise_label("emorynlp", "Joyful") == "happiness"
    assert labels.normalise_label("iemocap", "hap") == "happiness"
    assert labels.normalise_label("emorynlp", "Mad") == "anger"
    assert labels.normalise_label("emorynlp", "Scared") == "fear"
    for name in labels.DATASETS:
        words = labels.normalised_label_names(name)
        assert len(set(words)) == len(words), f"{name}: two classes merged into one word"
        assert len(words) == len(labels.LABELS[name])
    assert set(labels.normalised_label_names("meld")) == {
        "happiness", "anger", "fear", "sadness", "disgust", "surprise", "neutral",
    }  # the paper's instruction lists exactly these  # fmt: skip
    with pytest.raises(ValueError, match="Unknown meld label 'happy'"):
        labels.normalise_label("meld", "happy")


def test_curated_parquet_round_trip(tmp_path, emorynlp):
    readers.save_curated(emorynlp, tmp_path)
    back = readers.load_curated(tmp_path, "emorynlp")
    for split in readers.SPLITS:
        assert back[split].to_list() == emorynlp[split].to_list()
    assert not list((tmp_path / "data" / "emorynlp").glob(".*tmp"))  # no temporary files left


def test_summaries(meld, emorynlp):
    summary = readers.corpus_summary({"meld": meld, "emorynlp": emorynlp})
    assert summary.set_index(["dataset", "split"]).loc[("emorynlp", "test"), "dialogues"] == 79
    dist = readers.label_distribution({"meld": meld})
    assert dist["count"].sum() == 9989 + 1109 + 2610
    assert list(readers.dialogue_frame(meld["dev"], "0").columns) == ["turn", "speaker", "text", "label"]


@pytest.mark.shared
def test_vendored_corpora_equal_the_shared_copies():
    shared = shared_dir()
    if shared is None:
        pytest.skip("../shared is absent (only development checkouts have it); the vendored copy is used")
    from dialoguellm.runs import REPO_DIR

    pairs = [(f"meld/{name}", f"meld/{name}") for name in readers.MELD_FILES.values()]
    pairs += [
        (f"emorynlp/meld_repo_csv/{n}", f"emorynlp/meld_repo_csv/{n}")
        for n in readers.EMORYNLP_ERC_FILES.values()
    ]
    for ours, theirs in pairs:
        assert (REPO_DIR / "dialoguellm" / "corpora" / "raw" / ours).read_bytes() == (
            shared / "data" / theirs
        ).read_bytes()


def test_vendored_data_carries_licences_and_sources():
    from dialoguellm.runs import REPO_DIR

    for corpus in ("meld", "emorynlp"):
        folder = REPO_DIR / "dialoguellm" / "corpora" / "raw" / corpus
        assert (folder / "LICENSE").stat().st_size > 500
        assert "Repository" in (folder / "SOURCE.md").read_text()
    json.loads(
        (
            REPO_DIR
            / "dialoguellm"
            / "corpora"
            / "raw"
            / "emorynlp"
            / "official_json"
            / "emotion-detection-dev.json"
        ).read_text()
    )

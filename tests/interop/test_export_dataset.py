"""``dialoguellm export-dataset``: the cleaned corpora load back with plain ``datasets`` (parquet and
save_to_disk) with the official counts, context turns, both label names and the overlap flags the training
split removes; the card names sources, licences and counts; the hub push is checked up to the network call."""

from __future__ import annotations

import pytest

from dialoguellm import cli
from dialoguellm.interop import dataset as export

SPLITS = ("train", "validation", "test")
COUNTS = {"meld": (9989, 1109, 2610), "emorynlp": (7551, 954, 984)}  # the official ERC splits (docs/DATA.md)
REMOVED = {"meld": 453, "emorynlp": 745}  # corpora/overlap.py's measured removal on the vendored corpora


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "erc"
    assert cli.main(["export-dataset", str(out)]) == 0
    return out


def _parquet(out, name):
    from datasets import load_dataset

    files = {s: str(out / name / f"{s}.parquet") for s in SPLITS}
    return load_dataset("parquet", data_files=files, cache_dir=str(out.parent / "hf_cache"))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parquet_loads_back_with_the_official_counts_and_overlap_flags(exported, name):
    from datasets import load_from_disk

    loaded = _parquet(exported, name)
    assert tuple(len(loaded[s]) for s in SPLITS) == COUNTS[name]
    assert sum(loaded["train"]["removed_from_training"]) == REMOVED[name]
    assert not any(loaded["test"]["removed_from_training"])
    from_disk = load_from_disk(str(exported / "arrow" / name))
    assert from_disk["validation"].to_list() == loaded["validation"].to_list()


def test_rows_carry_context_labels_and_ids(exported):
    meld = _parquet(exported, "meld")["test"]
    row = meld[5]
    assert (row["utterance_id"], row["dialogue_id"], row["turn"]) == ("dia1_utt2", "1", 2)
    assert (row["speaker"], row["original_label"], row["label"], row["label_id"]) == (
        "Joey",
        "joy",
        "happiness",
        1,
    )
    assert row["context"] == [
        {"speaker": "Joey", "text": "Come on, Lydia, you can do it."},
        {"speaker": "Joey", "text": "Push!"},
    ]
    assert row["episode"] == "s01e23"
    first_turns = [r for r in meld.select(range(50)) if r["turn"] == 0]
    assert first_turns and all(r["context"] == [] for r in first_turns)


def test_overlap_with_names_the_other_corpus(exported):
    emory = _parquet(exported, "emorynlp")["validation"].to_pandas().set_index("utterance_id")
    # "Wendy, we had a deal! ..." is in EmoryNLP dev and in MELD dev (a pair of overlap.matched_pairs)
    assert "meld/validation" in list(emory.loc["s01_e15_c10_u001", "overlap_with"])
    meld_train = _parquet(exported, "meld")["train"].to_pandas()
    removed = meld_train[meld_train["removed_from_training"]]
    # a removed training line matched another corpus's dev/test itself, or sits in a scene removed whole
    matched = removed["overlap_with"].map(lambda w: any(not x.endswith("/train") for x in w))
    assert matched.sum() == 171 and len(removed) == REMOVED["meld"]


def test_card_names_sources_licences_counts_and_configs(exported):
    import yaml

    card = (exported / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert [c["config_name"] for c in front["configs"]] == ["meld", "emorynlp"]
    for needle in ("GPL-3.0", "Apache-2.0", "arXiv:1810.02508", "arXiv:1708.04299", "| 9,989 |", "| 453 |",
                   "| 1 | joy | happiness |", "removed_from_training"):  # fmt: skip
        assert needle in card, needle


class _FakeApi:
    calls: list = []

    def __init__(self, token=None):
        self.calls.append(("init", token))

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))


def test_push_to_hub_uploads_card_and_parquet_with_the_env_token(exported, monkeypatch):
    import huggingface_hub

    _FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    url = export.push_dataset(exported, "someone/erc")
    assert url == "https://huggingface.co/datasets/someone/erc"
    assert _FakeApi.calls[0] == ("init", "hf_test_token")
    assert _FakeApi.calls[1] == (
        "create_repo",
        "someone/erc",
        {"repo_type": "dataset", "private": True, "exist_ok": True},
    )
    upload = _FakeApi.calls[2][1]
    assert upload["folder_path"] == str(exported) and upload["repo_type"] == "dataset"
    assert upload["allow_patterns"] == ["README.md", "*/*.parquet"]  # not the save_to_disk copy


def test_push_without_token_or_with_iemocap_is_refused_before_any_network(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    _FakeApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", _FakeApi)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        export.push_dataset(tmp_path, "someone/erc")
    (tmp_path / "iemocap").mkdir()
    with pytest.raises(ValueError, match="licence"):
        export.push_dataset(tmp_path, "someone/erc", token="hf_x")
    monkeypatch.setenv("IEMOCAP_DIR", str(tmp_path))
    assert cli.main(["export-dataset", str(tmp_path / "out"), "--push-to-hub", "someone/erc"]) == 2
    assert "IEMOCAP licence" in capsys.readouterr().err
    assert _FakeApi.calls == [] and not (tmp_path / "out").exists()


def test_a_failed_export_keeps_the_previous_one(tmp_path, monkeypatch):
    previous = tmp_path / "erc"
    previous.mkdir()
    (previous / "README.md").write_text("previous export")

    def broken(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(export, "dataset_card", broken)
    assert cli.main(["export-dataset", str(previous)]) == 2
    assert (previous / "README.md").read_text() == "previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["erc"]


def test_iemocap_is_exported_from_the_users_copy(tmp_path, monkeypatch):
    from iemocap_synth import build_iemocap_tree

    from dialoguellm.corpora.readers import load_iemocap

    release = build_iemocap_tree(tmp_path / "iemocap")
    monkeypatch.delenv("IEMOCAP_DIR", raising=False)
    out = tmp_path / "erc"
    assert cli.main(["export-dataset", str(out), "--iemocap-dir", str(release)]) == 0
    expected = load_iemocap(release)
    loaded = _parquet(out, "iemocap")
    assert [len(loaded[s]) for s in SPLITS] == [len(expected[s]) for s in ("train", "dev", "test")]
    row = loaded["test"][1]
    assert row["label"] == {"hap": "happiness", "exc": "excited"}.get(row["original_label"], row["label"])
    assert row["context"] and row["episode"] is None and not row["overlap_with"]
    assert "IEMOCAP release agreement" in (out / "README.md").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="licence"):
        export.push_dataset(out, "someone/erc", token="hf_x")

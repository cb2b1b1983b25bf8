"""The cross-corpus overlap audit and its removal before joint training (issue #17, part 1)."""

from __future__ import annotations

import copy

import pytest
from tiny import synthetic_corpus

from dialoguellm.config import Config, load_config
from dialoguellm.corpora import overlap, readers
from dialoguellm.training.loop import training_corpora

SHARED_LINE = "Could you please pass me the salt and the pepper"
SCENE_LINES = ["We were on a break and you know it", "You slept with the copy girl that same night"]


def _planted() -> dict[str, dict[str, list[dict]]]:
    """Two synthetic corpora (their filler sentences have 4 words: below the 6-word floor) with planted
    duplicates: MELD train holds EmoryNLP's test line once (exact), a near copy of an EmoryNLP dev line, and
    a whole shared scene of two lines of EmoryNLP test."""
    meld = synthetic_corpus("meld", sizes=(4, 2, 2), seed=1)
    emory = synthetic_corpus("emorynlp", sizes=(4, 2, 2), seed=7)
    emory["test"][0]["text"] = SHARED_LINE + "."
    meld["train"][1]["text"] = SHARED_LINE.upper() + "!!"  # train0: one matched line
    emory["dev"][2]["text"] = "I told you already that I will never ever eat that cake again today"
    meld["train"][5]["text"] = "I told you already, that I will never eat that cake again today!"  # near
    emory["test"][5]["text"], emory["test"][6]["text"] = SCENE_LINES
    meld["train"][8]["text"], meld["train"][9]["text"] = SCENE_LINES  # train2: a shared scene
    return {"meld": meld, "emorynlp": emory}


def test_exact_key_is_letters_only_and_collapses_spaces():
    assert overlap.exact_key("Oh.  My GOD!! It’s 5 o'clock") == "oh my god its oclock"
    assert overlap.exact_key("here.  In", collapse_spaces=False) == "here  in"


def test_planted_duplicates_across_corpora_are_found_with_their_kind():
    pairs = overlap.matched_pairs(_planted())
    found = {(r.utterance_id_a, r.utterance_id_b, r.match) for r in pairs.itertuples()}
    # (a, b) sorted by (dataset, split): emorynlp before meld.
    assert ("test0_0", "train0_1", "exact") in found
    assert ("dev0_2", "train1_1", "near") in found
    assert {("test1_1", "train2_0", "exact"), ("test1_2", "train2_1", "exact")} <= found
    assert len(pairs) == 4
    near = pairs[pairs["match"] == "near"].iloc[0]
    assert 0.9 <= near["jaccard"] < 1.0


def test_disjoint_corpora_report_zero():
    corpora = {"meld": synthetic_corpus("meld", seed=1), "emorynlp": synthetic_corpus("emorynlp", seed=7)}
    assert overlap.matched_pairs(corpora).empty
    table = overlap.overlap_table(corpora)
    assert len(table) == 18  # 3 x 3 ordered split pairs in each direction
    assert table[["exact", "exact_or_near"]].to_numpy().sum() == 0
    cleaned, report = overlap.remove_cross_corpus_overlap(corpora)
    assert report["removed"] == {"meld": 0, "emorynlp": 0}
    assert len(cleaned["meld"]["train"]) == len(corpora["meld"]["train"])


def test_removal_drops_shared_lines_and_shared_scenes_from_training_only():
    corpora = _planted()
    cleaned, report = overlap.remove_cross_corpus_overlap(corpora)
    kept = {r["utterance_id"] for r in cleaned["meld"]["train"]}
    # the single matched lines go alone; the shared scene (2 matches) goes whole, all 4 of its turns
    assert "train0_1" not in kept and "train0_0" in kept
    assert "train1_1" not in kept and "train1_0" in kept
    assert not any(u.startswith("train2_") for u in kept)
    assert report["removed"] == {"meld": 6, "emorynlp": 0}
    assert report["matched"] == {"meld": 4, "emorynlp": 0}
    assert report["scenes"] == {"meld": 1, "emorynlp": 0}
    for name in corpora:  # evaluation splits untouched, the input not modified
        assert cleaned[name]["test"] == corpora[name]["test"]
        assert cleaned[name]["dev"] == corpora[name]["dev"]
    assert len(corpora["meld"]["train"]) == 16
    assert "meld 6 of 16 (4 matched, 1 shared scenes whole)" in overlap.summary_line(report)


def test_train_train_overlap_is_not_removed_and_one_corpus_needs_nothing():
    corpora = _planted()
    corpora["emorynlp"]["train"][0]["text"] = corpora["meld"]["train"][3]["text"] = SHARED_LINE + " again"
    _, report = overlap.remove_cross_corpus_overlap(corpora)
    assert report["removed"]["emorynlp"] == 0
    _, alone = overlap.remove_cross_corpus_overlap({"meld": corpora["meld"]})
    assert alone["removed"] == {"meld": 0}


def test_removal_is_on_in_every_profile_and_arm():
    assert Config().data.remove_cross_corpus_overlap is True
    for profile in ("cpu", "paper", "paper_r8"):
        assert load_config(profile).data.remove_cross_corpus_overlap is True, profile
    from dialoguellm.analysis.ablation import load_arms

    for arm in load_arms(profile="cpu"):
        assert arm.config.data.remove_cross_corpus_overlap is True, arm.name


def test_training_corpora_applies_and_reports_the_removal(caplog, capsys):
    config = load_config("cpu")
    corpora = _planted()
    used, report = training_corpora(config, corpora)
    assert report["cross_corpus_overlap"]["removed"] == {"meld": 6, "emorynlp": 0}
    assert len(used["meld"]["train"]) == 10
    assert "meld 6 of 16" in capsys.readouterr().out
    off = copy.deepcopy(config)
    off.data.remove_cross_corpus_overlap = False
    used, report = training_corpora(off, corpora)
    assert report["cross_corpus_overlap"] is None and len(used["meld"]["train"]) == 16


@pytest.fixture(scope="module")
def vendored() -> dict:
    """The corpora vendored inside the package (not ../shared, not $DIALOGUELLM_DATA_DIR)."""
    folder = readers.vendored_dir()
    return {"meld": readers.load_meld(folder), "emorynlp": readers.load_emorynlp(folder)}


@pytest.mark.slow
def test_vendored_counts_of_the_issue(vendored):
    table = overlap.utterance_table(vendored, data_dir=readers.vendored_dir())
    counts = overlap.overlap_table(table=table).set_index(
        ["dataset", "split", "other_dataset", "other_split"]
    )
    emory_test, meld_test = (
        counts.loc[("emorynlp", "test", "meld", "train")],
        counts.loc[("meld", "test", "emorynlp", "train")],
    )
    # On the records (spaces collapsed): 73 of 491 and 208 of 1,482; shared episodes 8 and 54 as the issue.
    assert (emory_test["utterances"], emory_test["exact"], emory_test["shared_episodes"]) == (491, 73, 8)
    assert (meld_test["utterances"], meld_test["exact"], meld_test["shared_episodes"]) == (1482, 208, 54)
    assert emory_test["exact_or_near"] >= emory_test["exact"]
    # The issue's own measure: the raw CSV text, spaces not collapsed: 70 of 491 and 183 of 1,482.
    raw = readers.vendored_dir()

    def raw_keys(path, keep_short=False):
        keys = [
            overlap.exact_key(row["Utterance"], collapse_spaces=False)
            for _, row in readers._read_csv(path, ("Utterance",), "raw")
        ]
        return {k for k in keys if keep_short or len(k.split()) >= overlap.MIN_WORDS}

    meld_train = raw_keys(raw / "meld" / "train_sent_emo.csv", keep_short=True)
    emory_train = raw_keys(raw / "emorynlp" / "meld_repo_csv" / "emorynlp_train_final.csv", keep_short=True)
    emory_test_keys = raw_keys(raw / "emorynlp" / "meld_repo_csv" / "emorynlp_test_final.csv")
    meld_test_keys = raw_keys(raw / "meld" / "test_sent_emo.csv")
    assert (len(emory_test_keys & meld_train), len(emory_test_keys)) == (70, 491)
    assert (len(meld_test_keys & emory_train), len(meld_test_keys)) == (183, 1482)


@pytest.mark.slow
def test_vendored_removal_counts(vendored):
    _, report = overlap.remove_cross_corpus_overlap(vendored)
    assert report["matched"] == {"meld": 171, "emorynlp": 264}
    assert report["removed"] == {"meld": 453, "emorynlp": 745}
    leaked = overlap.leaked_evaluation_utterances(vendored, "test")
    assert len(leaked["meld"]) >= 208 and len(leaked["emorynlp"]) >= 73


def test_described_label_shares_compare_the_described_clips_with_the_split():
    from dialoguellm.corpora import video

    test = synthetic_corpus("meld", sizes=(1, 1, 3), seed=3)["test"]
    described = {r["clip_id"]: "a kitchen" for r in test[:4]}
    shares = video.described_label_shares(test, described)
    assert shares["described"].sum() == 4 and shares["split"].sum() == len(test)
    assert abs(shares["described_share"].sum() - 1) < 1e-9 and abs(shares["split_share"].sum() - 1) < 1e-9


@pytest.mark.slow
def test_committed_overlap_figure_equals_what_the_code_draws(vendored, tmp_path):
    from dialoguellm.plots import corpora as corpus_plots
    from dialoguellm.runs import REPO_DIR

    table = overlap.overlap_table(table=overlap.utterance_table(vendored, data_dir=readers.vendored_dir()))
    drawn = corpus_plots.plot_cross_corpus_overlap(table, tmp_path / "cross_corpus_overlap.png")
    assert drawn.read_bytes() == (REPO_DIR / "figures" / "cross_corpus_overlap.png").read_bytes(), (
        "figures/cross_corpus_overlap.png is stale: run `make figures` on a run whose notebook 01 is current"
    )


@pytest.mark.slow
def test_training_and_evaluation_prompts_share_the_demonstration():
    """Removal shrinks the training split, but demonstrations are drawn from the official one, so a prompt
    built from the cleaned corpora (training, calibration) and one built from the official corpora
    (evaluation, probes) carry the same demonstration."""
    from tiny import build_tiny_tokenizer

    from dialoguellm.corpora import overlap
    from dialoguellm.corpora.readers import load_corpora
    from dialoguellm.prompts.builder import make_builders

    corpora = load_corpora(["meld", "emorynlp"])
    cleaned, report = overlap.remove_cross_corpus_overlap(corpora)
    assert report["removed"]["meld"] > 0
    tokenizer = build_tiny_tokenizer(chat=True)
    official = make_builders(tokenizer, corpora, k_shot=1, seed=42)
    training = make_builders(tokenizer, cleaned, k_shot=1, seed=42)
    for name in corpora:
        assert len(cleaned[name]["train"]) < len(corpora[name]["train"])
        ids = [d.row["utterance_id"] for d in official[name].demonstrations]
        assert ids == [d.row["utterance_id"] for d in training[name].demonstrations]


def test_no_demonstration_is_a_removed_utterance(vendored):
    """Issue 32 item 7: demonstrations skip what the overlap removal takes out of training, in training
    (cleaned corpora) and evaluation (official corpora) alike, for every seed the ablations and the seed runs
    use. Seed 1 is the case found in the audit: its first EmoryNLP draw is in a removed scene."""
    from tiny import build_tiny_tokenizer

    from dialoguellm.prompts.builder import builders_from_config

    config = load_config("cpu")
    cleaned, report = training_corpora(config, vendored)
    removed = {n: set(ids) for n, ids in report["cross_corpus_overlap"]["removed_ids"].items()}
    tokenizer = build_tiny_tokenizer(chat=True)
    for seed in (1, 2, 3, 4, 5, 42, 43, 44):
        config.train.seed = seed
        drawn = {}
        for corpora in (vendored, cleaned):
            for name, builder in builders_from_config(tokenizer, corpora, config).items():
                ids = [str(d.row["utterance_id"]) for d in builder.demonstrations]
                assert len(ids) == config.prompt.k_shot and not set(ids) & removed[name], (name, seed, ids)
                drawn.setdefault(name, []).append(ids)
        assert all(a == b for a, b in drawn.values()), drawn  # training and evaluation show the same one
        one = builders_from_config(tokenizer, {"emorynlp": vendored["emorynlp"]}, config, exclude={})
        unguarded = str(one["emorynlp"].demonstrations[0].row["utterance_id"])
        assert (unguarded in removed["emorynlp"]) == (seed == 1)


def test_exclusions_change_a_draw_only_where_it_hits_an_excluded_row():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from dialoguellm.prompts import select_demonstrations

    rows = [
        {"utterance_id": f"u{i}", "dialogue_id": f"d{i // 3}", "turn": i % 3, "text": f"line number {i} here"}
        for i in range(40)
    ]

    @settings(max_examples=60, deadline=None)
    @given(seed=st.integers(0, 10_000), k=st.integers(1, 5), drop=st.sets(st.integers(0, 39), max_size=30))
    def check(seed, k, drop):
        excluded = {f"u{i}" for i in drop}
        plain = [d.row["utterance_id"] for d in select_demonstrations(rows, k, seed)]
        guarded = [d.row["utterance_id"] for d in select_demonstrations(rows, k, seed, exclude=excluded)]
        assert len(guarded) == len(set(guarded)) == k and not set(guarded) & excluded
        kept = [u for u in plain if u not in excluded]
        assert guarded[: len(kept)] == kept  # the allowed first draws stay, in order
        if not set(plain) & excluded:
            assert guarded == plain

    check()
    with pytest.raises(ValueError, match="only 2"):
        select_demonstrations(rows, 3, 0, exclude={f"u{i}" for i in range(38)})

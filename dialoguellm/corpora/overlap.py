"""Cross-corpus overlap: MELD and EmoryNLP are cut from the same *Friends* episodes.

A model trained on several corpora together (the paper, and our CPU profile) can see a test utterance of one
corpus, with its emotion, as a training utterance of another. This module measures that and removes it.

**What counts as the same utterance.** Only utterances of ``MIN_WORDS`` (6) words or more are compared:
shorter lines ("Oh my God!", "What?") recur everywhere in any sitcom and are not evidence of a shared scene.

- *exact*: equal ``exact_key``: the text lower-cased, every character other than ``a-z`` and the space
  deleted, runs of spaces collapsed. On the records (whose text the readers already cleaned) 73 of
  EmoryNLP's 491 distinct >= 6-word test utterances are in MELD train and 208 of MELD's 1,482 in EmoryNLP
  train. Issue #17 measured 70 and 183 on the raw CSV text without collapsing spaces, which misses lines
  that MELD types with two spaces after a full stop ("here.  In the Aroma Room."); ``tests/corpora/test_overlap.py``
  reproduces both counts.
- *near*: token-set Jaccard >= ``NEAR_THRESHOLD`` (0.9) between the sets of letters-only words (``word_set``)
  and not exact: the two transcriptions differ in punctuation, spacing or at most one word in ten. Found
  with a prefix filter over rare words (every pair at or above the threshold shares a word among the rarest
  ``n - ceil(0.9 n) + 1`` of each side), so it costs about as much as the exact pass.

**Episodes.** EmoryNLP's ERC dialogue ids hold season and episode (``s01_e02_c03``); MELD's records do not,
so ``meld_episodes`` reads the Season/Episode columns of the raw CSVs (the record schema is unchanged, so
curated run folders and fixtures stay valid). An episode is written ``s01e02``.

**Removal** (``remove_cross_corpus_overlap``, ``data.remove_cross_corpus_overlap``, on in every profile): each
corpus's training split loses what it shares with another corpus's dev or test split. The unit is the
scene where the scene is shared, the utterance where only a line is: a training dialogue holding
``SCENE_MIN_MATCHES`` (2) or more matched utterances is the same scene cut twice (its short lines, under the
six-word floor, are the same lines with the same context), so the whole dialogue goes; a dialogue holding
one matched utterance loses that utterance only, since a single shared line is often a stock phrase
("Oh my God! Oh my God!") in an unrelated scene. On the vendored MELD + EmoryNLP ERC splits this removes
1,198 of 17,540 training utterances: MELD 453 of 9,989 (171 matched, 40 scenes), EmoryNLP 745 of 7,551
(264 matched, 65 scenes); ``summary_line`` prints the counts, the training run records them.
A removed utterance is gone from the training split entirely: neither a training target nor a context line
(the context of a kept neighbour skips it), and no prompt shows it as a demonstration, in training or in any
evaluation (``removed_ids``: demonstrations are drawn from the official training split, skipping
the removed ids, so training and evaluation show the same one).
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import pandas as pd

from dialoguellm.corpora.readers import MELD_FILES, SPLITS, _read_csv, raw_data_dir, split_frame
from dialoguellm.io import atomic_path
from dialoguellm.runs import RunLayout

MIN_WORDS = 6
NEAR_THRESHOLD = 0.9
EVALUATED_SPLITS = ("dev", "test")
SCENE_MIN_MATCHES = 2

_NOT_LETTER = re.compile(r"[^a-z ]")
_WORD = re.compile(r"[a-z]+")
_EMORY_EPISODE = re.compile(r"^s(\d+)_e(\d+)_")


def exact_key(text: str, collapse_spaces: bool = True) -> str:
    """Lower-case, delete everything but a-z and spaces, collapse runs of spaces (``collapse_spaces=False``:
    only strip the ends, as issue #17 measured on the raw CSV text)."""
    kept = _NOT_LETTER.sub("", text.lower())
    return " ".join(kept.split()) if collapse_spaces else kept.strip()


def word_set(text: str) -> frozenset[str]:
    """The distinct letters-only words of ``text`` (apostrophes dropped: "you're" -> "youre")."""
    return frozenset(_WORD.findall(text.lower().replace("'", "").replace("\u2019", "")))


def meld_episodes(data_dir: str | os.PathLike | None = None) -> dict[tuple[str, str], str]:
    """``(split, dialogue_id) -> "s03e19"`` from the Season/Episode columns of MELD's raw CSVs."""
    folder = raw_data_dir(data_dir) / "meld"
    episodes: dict[tuple[str, str], str] = {}
    for split, name in MELD_FILES.items():
        for _, row in _read_csv(folder / name, ("Dialogue_ID", "Season", "Episode"), "MELD"):
            season, episode = row["Season"].strip(), row["Episode"].strip()
            if season.isdigit() and episode.isdigit():
                episodes[(split, row["Dialogue_ID"].strip())] = f"s{int(season):02d}e{int(episode):02d}"
    return episodes


def _episode_of(
    dataset: str, split: str, dialogue_id: str, meld: Mapping[tuple[str, str], str]
) -> str | None:
    if dataset == "meld":
        return meld.get((split, str(dialogue_id)))
    match = _EMORY_EPISODE.match(str(dialogue_id)) if dataset == "emorynlp" else None
    return f"s{int(match.group(1)):02d}e{int(match.group(2)):02d}" if match else None


def utterance_table(
    corpora: Mapping[str, Any],
    data_dir: str | os.PathLike | None = None,
    min_words: int = MIN_WORDS,
    with_episodes: bool = True,
) -> pd.DataFrame:
    """Every utterance of every (corpus, split) with its episode, exact key and word count.

    ``corpora``: name -> {split: records} (a ``DatasetDict``, DataFrames or lists of dicts). ``eligible``
    marks the utterances of ``min_words`` words or more, the only ones matched. MELD's episodes come from
    the raw CSVs in ``data_dir`` (default: the vendored copies); ``with_episodes=False`` skips them.
    """
    meld = meld_episodes(data_dir) if "meld" in corpora and with_episodes else {}
    frames = []
    for name, corpus in corpora.items():
        for split in SPLITS:
            if split not in corpus:
                continue
            frame = split_frame(corpus[split])[["dataset", "dialogue_id", "utterance_id", "text", "label"]]
            frame = frame.assign(dataset=name, split=split)
            frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if table.empty:
        return table
    table["episode"] = [
        _episode_of(d, s, i, meld)
        for d, s, i in zip(table["dataset"], table["split"], table["dialogue_id"], strict=True)
    ]
    table["key"] = [exact_key(t) for t in table["text"]]
    table["words"] = [len(k.split()) for k in table["key"]]
    table["eligible"] = table["words"] >= min_words
    return table


def _near_pairs(left: pd.DataFrame, right: pd.DataFrame, threshold: float) -> list[tuple[int, int, float]]:
    """(left index, right index, Jaccard) of word-set pairs at or above ``threshold`` (prefix filtering)."""
    left_sets = {i: word_set(t) for i, t in zip(left.index, left["text"], strict=True)}
    right_sets = {i: word_set(t) for i, t in zip(right.index, right["text"], strict=True)}
    frequency = Counter(w for s in (*left_sets.values(), *right_sets.values()) for w in s)

    def prefix(words: frozenset[str]) -> list[str]:
        ordered = sorted(words, key=lambda w: (frequency[w], w))
        return ordered[: len(ordered) - math.ceil(threshold * len(ordered)) + 1]

    index: dict[str, list[int]] = defaultdict(list)
    for j, words in right_sets.items():
        for w in prefix(words):
            index[w].append(j)
    pairs = []
    for i, words in left_sets.items():
        if not words:
            continue
        candidates = {j for w in prefix(words) for j in index.get(w, ())}
        for j in candidates:
            other = right_sets[j]
            if not threshold * len(words) <= len(other) <= len(words) / threshold:
                continue
            jaccard = len(words & other) / len(words | other)
            if jaccard >= threshold:
                pairs.append((i, j, jaccard))
    return pairs


def matched_pairs(
    corpora: Mapping[str, Any] | None = None,
    table: pd.DataFrame | None = None,
    near_threshold: float = NEAR_THRESHOLD,
    cross_corpus_only: bool = True,
) -> pd.DataFrame:
    """Every matched utterance pair between two (corpus, split)s, one row per pair and direction-free
    (``a`` sorts before ``b``): columns ``dataset_a, split_a, utterance_id_a, dialogue_id_a, episode_a,
    text_a, label_a`` (and ``_b``), ``match`` ("exact" or "near") and ``jaccard``.

    Pass ``corpora`` (name -> splits) or a ready ``utterance_table``. ``cross_corpus_only`` (default) keeps
    pairs of different corpora; False also lists repeats between the splits of one corpus.
    """
    if table is None:
        table = utterance_table(corpora or {})
    columns = ["dataset", "split", "utterance_id", "dialogue_id", "episode", "text", "label"]
    out_columns = [f"{c}_{s}" for s in "ab" for c in columns] + ["match", "jaccard"]
    if table.empty:
        return pd.DataFrame(columns=out_columns)
    eligible = table[table["eligible"]]
    groups = {key: frame for key, frame in eligible.groupby(["dataset", "split"], sort=True)}
    rows = []
    names = sorted(groups)
    for x, key_a in enumerate(names):
        for key_b in names[x + 1 :]:
            if key_a == key_b or (cross_corpus_only and key_a[0] == key_b[0]):
                continue
            a, b = groups[key_a], groups[key_b]
            found = []
            for i, j, jaccard in _near_pairs(a, b, near_threshold):
                kind = "exact" if a.at[i, "key"] == b.at[j, "key"] else "near"
                found.append([*a.loc[i, columns], *b.loc[j, columns], kind, jaccard])
            # ids repeat across splits (MELD's dia0_utt0), so "seen" is within this pair of splits only
            found += _exact_only_pairs(a, b, columns, rows_seen={(r[2], r[9]) for r in found})
            rows += found
    return pd.DataFrame(rows, columns=out_columns)


def _exact_only_pairs(
    a: pd.DataFrame, b: pd.DataFrame, columns: list[str], rows_seen: set[tuple[str, str]]
) -> list[list[Any]]:
    """Exact-key pairs the word-set pass missed (equal keys whose word sets differ, e.g. an apostrophe
    written as a space in one copy), so every exact match is listed whatever the Jaccard."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for j, key in zip(b.index, b["key"], strict=True):
        by_key[key].append(j)
    rows = []
    for i, key in zip(a.index, a["key"], strict=True):
        for j in by_key.get(key, ()):
            if (a.at[i, "utterance_id"], b.at[j, "utterance_id"]) in rows_seen:
                continue
            wa, wb = word_set(a.at[i, "text"]), word_set(b.at[j, "text"])
            jaccard = len(wa & wb) / len(wa | wb) if wa | wb else 1.0
            rows.append([*a.loc[i, columns], *b.loc[j, columns], "exact", jaccard])
    return rows


def overlap_table(
    corpora: Mapping[str, Any] | None = None,
    table: pd.DataFrame | None = None,
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per ordered pair of (corpus, split)s of different corpora: of the distinct >= 6-word
    utterances (exact keys) of ``dataset, split``, how many occur in ``other_dataset, other_split`` exactly
    (``exact``) and exactly or nearly (``exact_or_near``); and of its episodes, how many are shared.
    """
    if table is None:
        table = utterance_table(corpora or {})
    if pairs is None:
        pairs = matched_pairs(table=table)
    both = pd.concat([pairs, _swapped(pairs)], ignore_index=True)
    groups = dict(tuple(table.groupby(["dataset", "split"], sort=True))) if not table.empty else {}
    episodes = {k: set(f["episode"].dropna()) for k, f in groups.items()}
    rows = []
    for (name, split), frame in groups.items():
        keys = set(frame.loc[frame["eligible"], "key"])
        for other, other_split in groups:
            if other == name:
                continue
            sel = both[
                (both["dataset_a"] == name) & (both["split_a"] == split)
                & (both["dataset_b"] == other) & (both["split_b"] == other_split)
            ]  # fmt: skip
            exact = {exact_key(t) for t, m in zip(sel["text_a"], sel["match"], strict=True) if m == "exact"}
            any_match = {exact_key(t) for t in sel["text_a"]}
            mine, theirs = episodes.get((name, split), set()), episodes.get((other, other_split), set())
            rows.append(
                {
                    "dataset": name,
                    "split": split,
                    "other_dataset": other,
                    "other_split": other_split,
                    "utterances": len(keys),
                    "exact": len(exact & keys),
                    "exact_or_near": len(any_match & keys),
                    "episodes": len(mine),
                    "shared_episodes": len(mine & theirs),
                }
            )
    return pd.DataFrame(rows)


def save_overlap(counts: pd.DataFrame, pairs: pd.DataFrame, run_dir: str | os.PathLike) -> tuple[str, str]:
    """Write ``overlap_table`` and ``matched_pairs`` into the run folder (``RunLayout.overlap``,
    ``RunLayout.overlap_pairs``), each atomically; returns the two paths."""
    run = RunLayout(run_dir)
    for frame, path in ((counts, run.overlap), (pairs, run.overlap_pairs)):
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
    return str(run.overlap), str(run.overlap_pairs)


def _swapped(pairs: pd.DataFrame) -> pd.DataFrame:
    rename = {}
    for column in pairs.columns:
        if column.endswith("_a"):
            rename[column] = column[:-2] + "_b"
        elif column.endswith("_b"):
            rename[column] = column[:-2] + "_a"
    return pairs.rename(columns=rename)[pairs.columns]


def leaked_training_utterances(
    corpora: Mapping[str, Any], pairs: pd.DataFrame | None = None
) -> dict[str, set[str]]:
    """``dataset -> utterance ids`` of its training split that occur (exact or near) in another corpus's
    dev or test split: what ``remove_cross_corpus_overlap`` matches."""
    if pairs is None:
        pairs = matched_pairs(table=utterance_table(corpora, with_episodes=False))
    both = pd.concat([pairs, _swapped(pairs)], ignore_index=True)
    hit = both[(both["split_a"] == "train") & both["split_b"].isin(EVALUATED_SPLITS)]
    leaked: dict[str, set[str]] = {name: set() for name in corpora}
    for name, utterance_id in zip(hit["dataset_a"], hit["utterance_id_a"], strict=True):
        leaked.setdefault(name, set()).add(utterance_id)
    return leaked


def leaked_evaluation_utterances(
    corpora: Mapping[str, Any], split: str = "test", pairs: pd.DataFrame | None = None
) -> dict[str, set[str]]:
    """``dataset -> utterance ids`` of its ``split`` (dev or test) that occur in another corpus's training
    split: the utterances a jointly trained model may have seen with their label."""
    if pairs is None:
        pairs = matched_pairs(corpora)
    both = pd.concat([pairs, _swapped(pairs)], ignore_index=True)
    hit = both[(both["split_a"] == split) & (both["split_b"] == "train")]
    leaked: dict[str, set[str]] = {name: set() for name in corpora}
    for name, utterance_id in zip(hit["dataset_a"], hit["utterance_id_a"], strict=True):
        leaked.setdefault(name, set()).add(utterance_id)
    return leaked


def remove_cross_corpus_overlap(
    corpora: Mapping[str, Any], pairs: pd.DataFrame | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(corpora whose training splits lack what they share with another corpus's dev/test, a report).

    Shared scenes (>= ``SCENE_MIN_MATCHES`` matched utterances in one training dialogue) go whole, single
    shared lines alone (the module docstring says why). Dev and test splits are untouched. The report:
    ``removed`` (dataset -> utterances removed), ``matched`` (matched training utterances), ``scenes``
    (whole dialogues removed), ``train_before``, ``train_after``, the rule's settings and the removed ids.
    With one corpus there is nothing to remove (a corpus's own splits are the official ones).
    """
    leaked = leaked_training_utterances(corpora, pairs) if len(corpora) > 1 else {n: set() for n in corpora}
    report: dict[str, Any] = {
        "unit": f"whole dialogue when it holds >= {SCENE_MIN_MATCHES} matched utterances, else the utterance",
        "min_words": MIN_WORDS,
        "near_threshold": NEAR_THRESHOLD,
        **{key: {} for key in ("removed", "matched", "scenes", "train_before", "train_after", "removed_ids")},
    }
    cleaned: dict[str, Any] = {}
    for name, corpus in corpora.items():
        train = corpus["train"]
        frame = split_frame(train)[["utterance_id", "dialogue_id"]]
        matched = leaked.get(name, set())
        per_dialogue = Counter(
            d for u, d in zip(frame["utterance_id"], frame["dialogue_id"], strict=True) if u in matched
        )
        scenes = {d for d, n in per_dialogue.items() if n >= SCENE_MIN_MATCHES}
        drop = [
            u in matched or d in scenes
            for u, d in zip(frame["utterance_id"], frame["dialogue_id"], strict=True)
        ]
        keep = [i for i, dropped in enumerate(drop) if not dropped]
        if len(keep) < len(frame):
            train = train.select(keep) if hasattr(train, "select") else _take(train, keep)
        cleaned[name] = _replace_train(corpus, train)
        report["removed"][name] = len(frame) - len(keep)
        report["matched"][name] = len(matched)
        report["scenes"][name] = len(scenes)
        report["train_before"][name] = len(frame)
        report["train_after"][name] = len(keep)
        report["removed_ids"][name] = [
            u for u, dropped in zip(frame["utterance_id"], drop, strict=True) if dropped
        ]
    return cleaned, report


def _take(split: Any, keep: list[int]) -> Any:
    if isinstance(split, pd.DataFrame):
        return split.iloc[keep].reset_index(drop=True)
    return [split[i] for i in keep]


# The official training split, kept beside a cleaned one: demonstrations are always drawn from it, skipping
# the removed ids (``removed_ids``), so a prompt's demonstration is the same in training (cleaned
# corpora), calibration, evaluation and every probe (which read the official splits). Training targets come
# from the cleaned "train" split only.
DEMONSTRATION_POOL = "demonstration_pool"


def _replace_train(corpus: Any, train: Any) -> Any:
    """A copy of ``corpus`` (DatasetDict or dict of splits) with ``train`` as its training split and the
    official training split kept as ``DEMONSTRATION_POOL``."""
    pool = corpus.get(DEMONSTRATION_POOL, corpus["train"])
    if hasattr(corpus, "copy") and type(corpus).__name__ == "DatasetDict":
        from datasets import DatasetDict

        return DatasetDict({**dict(corpus), "train": train, DEMONSTRATION_POOL: pool})
    return {**dict(corpus), "train": train, DEMONSTRATION_POOL: pool}


def summary_line(report: Mapping[str, Any]) -> str:
    """One printable line: how many training utterances each corpus lost, and why."""
    parts = [
        f"{name} {report['removed'][name]} of {report['train_before'][name]} ({report['matched'][name]} "
        f"matched, {report['scenes'][name]} shared scenes whole)"
        for name in report["removed"]
    ]
    return (
        "cross-corpus overlap removed from the training splits (utterances of >= "
        f"{report['min_words']} words also in another corpus's dev/test, exact or token-set Jaccard >= "
        f"{report['near_threshold']}): " + ", ".join(parts)
    )


_REMOVED_IDS: dict[str, dict[str, frozenset[str]]] = {}


def _fingerprint(corpora: Mapping[str, Any]) -> str:
    """A digest of every utterance id and text of the official splits: equal corpora, equal removal."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(corpora):
        for split in ("train", "dev", "test"):
            if split in corpora[name]:
                frame = split_frame(corpora[name][split])
                digest.update(f"{name}/{split}/{len(frame)}".encode())
                digest.update("\x1f".join(map(str, frame["utterance_id"])).encode())
                digest.update("\x1f".join(map(str, frame["text"])).encode())
    return digest.hexdigest()


def removed_training_ids(corpora: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """``dataset -> training utterance ids`` that ``remove_cross_corpus_overlap`` removes from these corpora
    (their official splits), computed once per distinct set of corpora in a process."""
    official = {
        name: {**dict(corpus), "train": corpus.get(DEMONSTRATION_POOL, corpus["train"])}
        for name, corpus in corpora.items()
    }
    key = _fingerprint(official)
    if key not in _REMOVED_IDS:
        _, report = remove_cross_corpus_overlap(official)
        _REMOVED_IDS[key] = {name: frozenset(ids) for name, ids in report["removed_ids"].items()}
    return _REMOVED_IDS[key]


def removed_ids(
    corpora: Mapping[str, Any], datasets: list[str] | tuple[str, ...]
) -> dict[str, frozenset[str]]:
    """``dataset -> training utterance ids`` the overlap removal takes out when a run trains jointly on
    ``datasets`` (official or cleaned splits alike): what training drops, and what no demonstration may be. As in training, the corpora of ``datasets`` at hand take part (IEMOCAP only when the user has
    it), so a caller that needs one corpus's builder passes them all; with one corpus nothing is removed."""
    used = {name: corpora[name] for name in datasets if name in corpora}
    if len(used) < 2:
        return {name: frozenset() for name in used}
    return dict(removed_training_ids(used))

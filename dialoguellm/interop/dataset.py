"""``dialoguellm export-dataset``: the cleaned corpora as a Hugging Face dataset folder.

One config per corpus (``meld``, ``emorynlp``, and ``iemocap`` when the user's own copy is given), each a
``DatasetDict`` with the splits ``train``, ``validation`` (the package's ``dev``) and ``test``, written twice:
as parquet files (``<out>/<corpus>/<split>.parquet``, what ``datasets.load_dataset("parquet", ...)`` and the
hub read) and with ``save_to_disk`` (``<out>/arrow/<corpus>``, for ``datasets.load_from_disk``). A dataset
card (``<out>/README.md``) names each corpus's source, licence and citation, the counts, the label mapping and
the cross-corpus overlap rule. Rows are the readers' cleaned records (``corpora.readers``) in the official
splits; nothing is dropped: the overlap that training removes is a flag (``removed_from_training``), so
``train.filter(lambda r: not r["removed_from_training"])`` is the training split every profile trains on.

``push_dataset`` uploads the parquet files and the card (never IEMOCAP, whose licence forbids it), with the
token from ``$HF_TOKEN`` only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, List, Value

from dialoguellm import labels as label_vocab
from dialoguellm.corpora import overlap
from dialoguellm.corpora.readers import IEMOCAP_ENV, RECORD_FEATURES, SPLITS, load_corpora
from dialoguellm.io import atomic_folder
from dialoguellm.prompts.builder import context_of, dialogue_index, rows_of

# The package's split names -> the Hugging Face convention (the hub's viewer knows "validation").
HF_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
TOKEN_ENV = "HF_TOKEN"
LICENSED_ONLY = ("iemocap",)  # corpora a user may export for themselves but never publish

# The record schema of corpora.readers (without its split: a DatasetDict holds that), with what an export adds
# (both label names, the earlier context, the overlap flags) before the clip columns, in this column order.
_CLIP = ("clip_id", "start", "end")
EXPORT_FEATURES = Features(
    {k: v for k, v in RECORD_FEATURES.items() if k != "split" and k not in _CLIP}
    | {
        "original_label": Value("string"),
        "context": List({"speaker": Value("string"), "text": Value("string")}),
        "episode": Value("string"),
        "overlap_with": List(Value("string")),
        "removed_from_training": Value("bool"),
    }
    | {k: RECORD_FEATURES[k] for k in _CLIP}
)

# Where each corpus comes from and under which licence (the vendored SOURCE.md files say it in full).
SOURCES: dict[str, dict[str, str]] = {
    "meld": {
        "name": "MELD (Multimodal EmotionLines Dataset), text annotations",
        "source": "https://github.com/declare-lab/MELD (commit 2d2011b, data/MELD/*_sent_emo.csv)",
        "license": "GPL-3.0 (the repository's LICENSE); the dialogue text is from the TV series Friends",
        "cite": 'Poria et al., "MELD: A Multimodal Multi-Party Dataset for Emotion Recognition in '
        'Conversations", ACL 2019 (arXiv:1810.02508)',
    },
    "emorynlp": {
        "name": "EmoryNLP emotion detection, the ERC split (scenes with MELD video timestamps)",
        "source": "https://github.com/declare-lab/MELD (commit 2d2011b, data/emorynlp/*_final.csv), a subset "
        "of https://github.com/emorynlp/emotion-detection",
        "license": "Apache-2.0 (EmoryNLP, Emory University); the MELD repository's copy is distributed under "
        "GPL-3.0; the dialogue text is from the TV series Friends",
        "cite": 'Zahiri and Choi, "Emotion Detection on TV Show Transcripts with Sequence-based '
        'Convolutional Neural Networks", AFFCON 2018 (arXiv:1708.04299)',
    },
    "iemocap": {
        "name": "IEMOCAP (the user's own licensed copy; six classes, sessions 1-4 train with a fixed dev "
        "subset, session 5 test)",
        "source": "https://sail.usc.edu/iemocap/ (IEMOCAP_full_release, read from IEMOCAP_DIR)",
        "license": "IEMOCAP release agreement: for the licensee's research only, never to be redistributed "
        "(this export stays on your machine; push_dataset refuses it)",
        "cite": 'Busso et al., "IEMOCAP: Interactive emotional dyadic motion capture database", Language '
        "Resources and Evaluation 42(4), 2008",
    },
}


@dataclass
class DatasetExport:
    """What ``export_dataset`` wrote: the folder, the row counts and the overlap removal report."""

    folder: Path
    counts: dict[str, dict[str, int]]
    overlap_report: dict[str, Any]
    pushed_to: str | None = None
    notes: list[str] = field(default_factory=list)


def export_rows(
    corpora: Mapping[str, DatasetDict], data_dir: str | os.PathLike | None = None
) -> tuple[dict[str, DatasetDict], dict[str, Any]]:
    """(``corpus -> DatasetDict`` of ``EXPORT_FEATURES`` rows, splits named as on the hub; the overlap
    removal report of ``corpora.overlap``): every utterance with its full earlier context
    (``prompts.builder.context_of``), both label names and its overlap flags."""
    table = overlap.utterance_table(corpora, data_dir)
    pairs = overlap.matched_pairs(table=table)
    _, report = overlap.remove_cross_corpus_overlap(corpora, pairs)
    removed = {name: set(ids) for name, ids in report["removed_ids"].items()}
    episodes = {  # pandas holds a missing episode (IEMOCAP) as NaN: keep only the real ones
        (d, s, u): e
        for d, s, u, e in zip(table["dataset"], table["split"], table["utterance_id"], table["episode"], strict=True)
        if isinstance(e, str)
    }  # fmt: skip
    matches = _overlap_with(pairs)
    exported = {}
    for name, corpus in corpora.items():
        splits = {}
        for split in SPLITS:
            rows = rows_of(corpus[split])
            index = dialogue_index(rows)
            records = [
                _export_record(
                    row, context_of(row, index[str(row["dialogue_id"])], "all"),
                    episodes.get((name, split, row["utterance_id"])),
                    sorted(matches.get((name, split, row["utterance_id"]), ())),
                    split == "train" and row["utterance_id"] in removed.get(name, set()),
                )
                for row in rows
            ]  # fmt: skip
            splits[HF_SPLITS[split]] = Dataset.from_list(records, features=EXPORT_FEATURES)
        exported[name] = DatasetDict(splits)
    return exported, report


def _overlap_with(pairs: Any) -> dict[tuple[str, str, str], set[str]]:
    """``(corpus, split, utterance_id) -> {"other/split", ...}``: where else (exact or near) a line occurs."""
    found: dict[tuple[str, str, str], set[str]] = {}
    for row in pairs.itertuples(index=False):
        for me, other in (("a", "b"), ("b", "a")):
            key = (
                getattr(row, f"dataset_{me}"),
                getattr(row, f"split_{me}"),
                getattr(row, f"utterance_id_{me}"),
            )
            where = f"{getattr(row, f'dataset_{other}')}/{HF_SPLITS[getattr(row, f'split_{other}')]}"
            found.setdefault(key, set()).add(where)
    return found


def _export_record(
    row: Mapping[str, Any], context: list, episode: str | None, overlap_with: list[str], removed: bool
) -> dict[str, Any]:
    dataset = str(row["dataset"])
    return {
        **{key: row[key] for key in ("dataset", "dialogue_id", "turn", "utterance_id", "speaker", "text")},
        "label": label_vocab.normalise_label(dataset, row["label"]),
        "label_id": int(row["label_id"]),
        "original_label": row["label"],
        "context": [{"speaker": r["speaker"], "text": r["text"]} for r in context],
        "episode": episode,
        "overlap_with": overlap_with,
        "removed_from_training": bool(removed),
        **{key: row.get(key) for key in ("clip_id", "start", "end")},
    }


def export_dataset(
    out: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    iemocap_dir: str | os.PathLike | None = None,
    push_to_hub: str | None = None,
) -> DatasetExport:
    """Write the cleaned corpora to ``out`` (parquet, ``save_to_disk`` and the card), replacing a previous
    export only once the new one is complete (``io.atomic_folder``); push to ``push_to_hub`` when given."""
    iemocap_dir = iemocap_dir or os.environ.get(IEMOCAP_ENV) or None
    if push_to_hub and iemocap_dir:
        raise ValueError(
            "--push-to-hub with IEMOCAP: the IEMOCAP licence forbids redistribution. Export without "
            f"{IEMOCAP_ENV} (unset it) to publish MELD and EmoryNLP."
        )
    names = ["meld", "emorynlp"] + (["iemocap"] if iemocap_dir else [])
    corpora = load_corpora(names, data_dir, iemocap_dir)
    exported, report = export_rows(corpora, data_dir)
    counts = {name: {split: len(ds) for split, ds in dd.items()} for name, dd in exported.items()}
    folder = Path(out)
    with atomic_folder(folder) as tmp, _quiet_datasets():
        for name, dd in exported.items():
            for split, ds in dd.items():
                ds.to_parquet(str(tmp / name / f"{split}.parquet"))
            dd.save_to_disk(str(tmp / "arrow" / name))
        (tmp / "README.md").write_text(dataset_card(exported, report), encoding="utf-8")
    result = DatasetExport(folder, counts, {k: v for k, v in report.items() if k != "removed_ids"})
    if not iemocap_dir:
        result.notes.append(
            f"IEMOCAP not exported: set {IEMOCAP_ENV} to your IEMOCAP_full_release to add it."
        )
    if push_to_hub:
        result.pushed_to = push_dataset(folder, push_to_hub)
    return result


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No per-file progress bars from ``datasets`` while writing (twelve small files); restored on exit."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def push_dataset(folder: str | os.PathLike, repo_id: str, token: str | None = None) -> str:
    """Upload an export's card and parquet files to the hub dataset ``repo_id`` (created if absent, private
    by default); the token comes from ``$HF_TOKEN`` only. Returns the dataset's URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ValueError(
            f"--push-to-hub {repo_id}: no token; set ${TOKEN_ENV} to a Hugging Face write token "
            "(https://huggingface.co/settings/tokens). It is read from the environment only."
        )
    present = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name in LICENSED_ONLY)
    if present:
        raise ValueError(f"{folder} holds {', '.join(present)}, whose licence forbids publishing it.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=["README.md", "*/*.parquet"],
        commit_message="dialoguellm export-dataset",
    )
    return f"https://huggingface.co/datasets/{repo_id}"


def dataset_card(exported: Mapping[str, DatasetDict], report: Mapping[str, Any]) -> str:
    """The dataset card (``README.md``, Hugging Face layout): front matter with one config per corpus, then
    sources and licences, counts, the label mapping, the columns, the overlap rule and how to cite."""
    import yaml

    from dialoguellm import __version__

    front = {
        "pretty_name": "DialogueLLM ERC corpora (cleaned, with context and cross-corpus overlap flags)",
        "language": ["en"],
        "license": "other",
        "license_name": "per-corpus (see the table)",
        "task_categories": ["text-classification"],
        "tags": ["emotion-recognition-in-conversation", "dialogue", "friends"],
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": split, "path": f"{name}/{split}.parquet"} for split in dd],
            }
            for name, dd in exported.items()
        ],
    }
    sections = [
        f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n",
        "# DialogueLLM ERC corpora\n",
        f"The corpora of emotion recognition in conversation that `dialoguellm` {__version__} trains and "
        "evaluates on, as its readers clean them (`dialoguellm.corpora.readers`: cp1252 artefacts repaired, "
        "Unicode NFC, whitespace collapsed, turns ordered), in the official splits (`dev` is `validation` "
        "here), written by `dialoguellm export-dataset`.\n",
        _sources_table(exported),
        _counts_table(exported),
        _label_table(exported),
        COLUMNS_TEXT,
        _overlap_text(report),
        LOADING_TEXT,
        _citation_text(exported),
    ]
    return "\n".join(sections)


def _sources_table(exported: Mapping[str, DatasetDict]) -> str:
    lines = ["## Sources and licences\n", "| config | corpus | source | licence |", "|---|---|---|---|"]
    lines += [
        f"| `{n}` | {SOURCES[n]['name']} | {SOURCES[n]['source']} | {SOURCES[n]['license']} |"
        for n in exported
    ]
    lines.append("\nEach corpus keeps its own licence: use and share each config under its terms.\n")
    return "\n".join(lines)


def _counts_table(exported: Mapping[str, DatasetDict]) -> str:
    lines = [
        "## Counts\n",
        "| config | split | dialogues | utterances | removed_from_training |",
        "|---|---|---|---|---|",
    ]
    for name, dd in exported.items():
        for split, ds in dd.items():
            removed = sum(ds["removed_from_training"])
            lines.append(
                f"| `{name}` | {split} | {len(set(ds['dialogue_id'])):,} | {len(ds):,} | {removed:,} |"
            )
    return "\n".join(lines) + "\n"


def _label_table(exported: Mapping[str, DatasetDict]) -> str:
    lines = [
        "## Labels\n",
        "`original_label` is the corpus's own name, `label` the paper's word for it (true synonyms merged across "
        "corpora, joy/Joyful/hap -> happiness; a class one corpus alone has keeps its own word), `label_id` its "
        "index in the corpus's own order (`dialoguellm.labels.LABELS`).\n",
        "| config | label_id | original_label | label | train | validation | test |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, dd in exported.items():
        for i, original in enumerate(label_vocab.label_names(name)):
            counts = [sum(1 for x in dd[s]["original_label"] if x == original) for s in dd]
            word = label_vocab.normalise_label(name, original)
            lines.append(
                f"| `{name}` | {i} | {original} | {word} | " + " | ".join(f"{c:,}" for c in counts) + " |"
            )
    return "\n".join(lines) + "\n"


COLUMNS_TEXT = """## Columns

| column | meaning |
|---|---|
| `dataset` | the corpus (`meld`, `emorynlp`, `iemocap`) |
| `dialogue_id`, `turn` | the dialogue (a MELD dialogue, an EmoryNLP scene, an IEMOCAP session recording) and the 0-based position in it |
| `utterance_id` | the corpus's id (MELD: `dia{D}_utt{U}`, its video clip; EmoryNLP: `s01_e15_c10_u001`) |
| `speaker`, `text` | who says it and the cleaned utterance |
| `label`, `label_id`, `original_label` | see Labels |
| `context` | every earlier turn of the dialogue, oldest first, as `{speaker, text}`; the package's prompt shows the last `prompt.context_turns` of them (`context[-z:]`) |
| `episode` | the Friends episode (`s03e19`) for MELD and EmoryNLP; empty for IEMOCAP |
| `overlap_with` | the other corpus's splits (`meld/train`, ...) holding the same line, exactly or nearly (below) |
| `removed_from_training` | a training row the package removes before joint training (below); false outside train |
| `clip_id`, `start`, `end` | the video clip and its times in seconds where the corpus has them |
"""


def _overlap_text(report: Mapping[str, Any]) -> str:
    rows = "\n".join(
        f"| `{n}` | {report['train_before'][n]:,} | {report['matched'][n]:,} | {report['scenes'][n]:,} | "
        f"{report['removed'][n]:,} |"
        for n in report["removed"]
    )
    return f"""## Cross-corpus overlap

MELD and EmoryNLP are cut from the same Friends episodes, so a model trained on both can see a test line of
one corpus, with its emotion, as a training line of the other. Lines of {report["min_words"]} words or more are
matched across corpora exactly (lower-cased, letters and spaces only) or nearly (token-set Jaccard >=
{report["near_threshold"]}); `overlap_with` lists every match. Before joint training the package removes from
each training split what it shares with another corpus's validation or test split: {report["unit"]}
(`dialoguellm.corpora.overlap`; docs/DATA.md says why). Those rows are flagged `removed_from_training`, not
dropped, so the official splits stay whole:

| config | train rows | matched | shared scenes removed whole | removed_from_training |
|---|---|---|---|---|
{rows}

The training split the package trains on: `train.filter(lambda r: not r["removed_from_training"])`.
"""


LOADING_TEXT = """## Loading

```python
from datasets import load_dataset, load_from_disk

meld = load_dataset("parquet", data_files={s: f"OUT/meld/{s}.parquet" for s in ("train", "validation", "test")})
meld = load_from_disk("OUT/arrow/meld")        # the same DatasetDict, written by save_to_disk
meld = load_dataset("OUT", "meld")             # the configs of this card's front matter
```
"""


def _citation_text(exported: Mapping[str, DatasetDict]) -> str:
    cites = "\n".join(f"- {n}: {SOURCES[n]['cite']}." for n in exported)
    return f"""## How to cite

Cite each corpus you use:

{cites}

and, for the cleaning, the context and the overlap flags, the `dialoguellm` package (a reproduction of Zhang
et al., "DialogueLLM: Context and Emotion Knowledge-Tuned Large Language Models for Emotion Recognition in
Conversations", arXiv:2310.11374).
"""

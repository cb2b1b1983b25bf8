"""Label vocabularies of the three ERC corpora and the paper's cross-dataset normalisation.

Each corpus keeps its own label names in the curated records (``label``), with ``label_id`` the index in
that corpus's vocabulary below. The paper's instruction names labels as plain English words and merges
synonyms across corpora ("joy/happy -> happiness"). Only true synonyms are merged: a class that exists
in one corpus alone (EmoryNLP's Peaceful and Powerful, IEMOCAP's excited and frustrated) keeps its own
word, lower-cased, so no class is ever folded into another.
"""

from __future__ import annotations

DATASETS: tuple[str, ...] = ("meld", "emorynlp", "iemocap")

# Order is the corpus's own, fixed forever: label_id indexes into it.
LABELS: dict[str, tuple[str, ...]] = {
    "meld": ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"),
    "emorynlp": ("Joyful", "Mad", "Peaceful", "Neutral", "Sad", "Powerful", "Scared"),
    "iemocap": ("hap", "sad", "neu", "ang", "exc", "fru"),
}

# The paper's normalisation: corpus label -> the word used in prompts and in cross-dataset tables.
NORMALISATION: dict[str, dict[str, str]] = {
    "meld": {
        "neutral": "neutral",
        "joy": "happiness",
        "surprise": "surprise",
        "anger": "anger",
        "sadness": "sadness",
        "disgust": "disgust",
        "fear": "fear",
    },
    "emorynlp": {
        "Joyful": "happiness",
        "Mad": "anger",
        "Peaceful": "peaceful",
        "Neutral": "neutral",
        "Sad": "sadness",
        "Powerful": "powerful",
        "Scared": "fear",
    },
    "iemocap": {
        "hap": "happiness",
        "sad": "sadness",
        "neu": "neutral",
        "ang": "anger",
        "exc": "excited",
        "fru": "frustrated",
    },
}


def _check_dataset(dataset: str) -> None:
    if dataset not in LABELS:
        raise KeyError(f"Unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}.")


def label_names(dataset: str) -> tuple[str, ...]:
    """The corpus's own label names, in label_id order."""
    _check_dataset(dataset)
    return LABELS[dataset]


def normalised_label_names(dataset: str) -> tuple[str, ...]:
    """The paper's label words for ``dataset``, in label_id order (what the prompt's instruction lists)."""
    _check_dataset(dataset)
    return tuple(NORMALISATION[dataset][name] for name in LABELS[dataset])


def normalise_label(dataset: str, label: str) -> str:
    """Map one corpus label to the paper's cross-dataset word (``joy`` -> ``happiness``)."""
    _check_dataset(dataset)
    try:
        return NORMALISATION[dataset][label]
    except KeyError:
        raise ValueError(
            f"Unknown {dataset} label {label!r}; expected one of {', '.join(LABELS[dataset])}."
        ) from None


def label_id(dataset: str, label: str) -> int:
    """Index of ``label`` in the corpus vocabulary."""
    _check_dataset(dataset)
    try:
        return LABELS[dataset].index(label)
    except ValueError:
        raise ValueError(
            f"Unknown {dataset} label {label!r}; expected one of {', '.join(LABELS[dataset])}."
        ) from None

"""Emotional intelligence on SECEU (Wang et al. 2023), the test the paper reports in section 4.10.

SECEU has 40 short stories, each with four emotion options; the taker spreads 10 points over the options.
The score of a taker is the mean Euclidean distance between their points and the human standard scores
(lower is better), turned into an EQ with the human norm (M = 2.79, SD = 0.822):
``EQ = 15 * (M - score) / SD + 100``. DialogueLLM reports SECEU 2.31 -> EQ 109, above 72% of humans.

The test files are published for research use without an open licence, so they are never part of this
repository: :func:`load_seceu` reads them from a folder you give (``SECEU_DIR``, or the environment variable
``DIALOGUELLM_SECEU_DIR``) and :func:`download_seceu` fetches them, checked against SHA-256 sums recorded here.

A model answers an item in one of two ways, both from the same prompt (``templates/seceu_question.txt``):

- ``"generate"``: it writes an answer, and :func:`parse_answer` reads four numbers from it with the paper's
  rules (no meaningful answer -> zeros; negative values shifted up; rescaled to sum to 10);
- ``"probabilities"``: the probability the model gives each option's name as its answer, renormalised over
  the four options and scaled to 10 points. It never fails to parse, which matters for small models.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dialoguellm.config import DEFAULT_PRECISION
from dialoguellm.io import atomic_path, read_json, write_json
from dialoguellm.model.loading import resolve_model_path
from dialoguellm.progress import progress_bar as tqdm
from dialoguellm.runs import find_adapter
from dialoguellm.scoring.engine import generate_texts, model_dtype, score_options

ITEMS_FILE = "seceu_items.json"
STANDARD_FILE = "seceu_standard.json"
N_OPTIONS = 4
TOTAL_POINTS = 10.0
# Human norm of SECEU scores (N = 541) and of the pattern similarity (Human-to-Human), from the SECEU paper.
NORM_MEAN = 2.79
NORM_SD = 0.822
PATTERN_NORM_MEAN = 0.199
PATTERN_NORM_SD = 0.166
MODES = ("probabilities", "generate")

AUTHORS_SITE = "https://emotional-intelligence.github.io/"
# The JSON transcription of the authors' docx files (byte-checked against them, see SOURCE.md), pinned to a
# commit so the checksums below stay valid.
DEFAULT_BASE_URL = (
    "https://raw.githubusercontent.com/adarshs02/adapative-emotion/"
    "17e06fcb60a945fc35df8ef9b66b40b5f10c8164/data/seceu/"
)
SHA256 = {
    ITEMS_FILE: "38b1b71f20c6a2c6c9a3f379f338946ecb2628af8e851b6d6086ee5372b4c23a",
    STANDARD_FILE: "f0ea62e1587d95b7062af3c58ea3d0a1c3c76600e95ef087c2438f51965a2610",
}
QUESTION_TEMPLATE = "seceu_question.txt"
PLAIN_TEMPLATE = "seceu_plain.txt"
PAPER_TABLE = "seceu_paper_table6.csv"


# ------------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class SeceuItem:
    """One scenario: its 1-based number in the test, the story and the four emotion options."""

    number: int
    story: str
    options: tuple[str, ...]


@dataclass
class SeceuData:
    """Items, human standard scores (items x 4), human item-distance template and the norm."""

    items: list[SeceuItem]
    standard_scores: np.ndarray
    human_pattern: np.ndarray
    mean: float = NORM_MEAN
    sd: float = NORM_SD
    folder: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def head(self, limit: int | None) -> SeceuData:
        """The first ``limit`` items (all when None), with their standard scores and template values."""
        if limit is None or limit >= len(self.items):
            return self
        if limit < 1:
            raise ValueError(f"LIMIT must be a positive number of items or None, not {limit}.")
        return SeceuData(
            self.items[:limit],
            self.standard_scores[:limit],
            self.human_pattern[:limit],
            self.mean,
            self.sd,
            self.folder,
        )


def where_to_get() -> str:
    """A sentence saying where the SECEU files come from and how to point this code at them."""
    return (
        f"The SECEU test files ({ITEMS_FILE}, {STANDARD_FILE}) are published for research use by their authors "
        f"at {AUTHORS_SITE} (items, standard scores and norm; not redistributable here). Fetch the JSON "
        f"transcription with `dialoguellm.analysis.seceu.download_seceu(folder)` (checksummed), or pass SECEU_DIR, the "
        "folder that holds them."
    )


SECEU_ENV = "DIALOGUELLM_SECEU_DIR"


def default_seceu_dir() -> Path | None:
    """The folder ``$DIALOGUELLM_SECEU_DIR`` names, when it holds the files (else None)."""
    named = os.environ.get(SECEU_ENV)
    if not named:
        return None
    folder = Path(named).expanduser()
    return folder if (folder / ITEMS_FILE).is_file() else None


def find_seceu_dir(path: str | os.PathLike | None = None) -> Path | None:
    """``path`` when it holds the SECEU files, else ``$DIALOGUELLM_SECEU_DIR`` (when ``path`` is None), else None."""
    if path is None:
        return default_seceu_dir()
    folder = Path(path).expanduser()
    return folder if (folder / ITEMS_FILE).is_file() and (folder / STANDARD_FILE).is_file() else None


def _fail(path: Path, field_name: str, problem: str) -> ValueError:
    return ValueError(f"{path}: field {field_name!r} {problem}. Re-download the file: {where_to_get()}")


def _number_list(path: Path, name: str, value: Any, length: int) -> list[float]:
    if not isinstance(value, list) or len(value) != length:
        got = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise _fail(path, name, f"must be a list of {length} numbers (got {got})")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in value):
        raise _fail(path, name, "must hold finite numbers only")
    return [float(v) for v in value]


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer of hundreds of digits (math.isfinite converts it to a float)
        return False


def load_seceu(path: str | os.PathLike | None = None) -> SeceuData:
    """Read items, standard scores, human pattern and norm from a folder (default: ``$DIALOGUELLM_SECEU_DIR``).

    Errors name the file and field at fault; a missing folder says where to get the files.
    """
    folder = Path(path).expanduser() if path is not None else default_seceu_dir()
    if folder is None or not folder.is_dir():
        shown = folder if folder is not None else f"(no SECEU_DIR given and no ${SECEU_ENV})"
        raise FileNotFoundError(f"SECEU folder not found: {shown}. {where_to_get()}")
    for name in (ITEMS_FILE, STANDARD_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"SECEU file not found: {folder / name}. {where_to_get()}")
    items_path, standard_path = folder / ITEMS_FILE, folder / STANDARD_FILE
    raw_items = read_json(items_path)
    if not isinstance(raw_items, list) or not raw_items:
        raise _fail(items_path, "<top level>", "must be a non-empty list of {story, options} objects")
    items = []
    for i, raw in enumerate(raw_items):
        where = f"[{i}]"
        if not isinstance(raw, dict):
            raise _fail(items_path, where, "must be an object with 'story' and 'options'")
        story, options = raw.get("story"), raw.get("options")
        if not isinstance(story, str) or not story.strip():
            raise _fail(items_path, f"{where}.story", "must be a non-empty string")
        if not isinstance(options, list) or len(options) != N_OPTIONS:
            got = f"{len(options)} options" if isinstance(options, list) else type(options).__name__
            raise _fail(items_path, f"{where}.options", f"must list exactly {N_OPTIONS} options (got {got})")
        if not all(isinstance(o, str) and o.strip() for o in options):
            raise _fail(items_path, f"{where}.options", "must hold non-empty strings")
        items.append(SeceuItem(i + 1, story.strip(), tuple(o.strip() for o in options)))
    standard = read_json(standard_path)
    if not isinstance(standard, dict):
        raise _fail(standard_path, "<top level>", "must be an object")
    rows = standard.get("standard_scores")
    if not isinstance(rows, list) or len(rows) != len(items):
        got = f"{len(rows)} rows" if isinstance(rows, list) else type(rows).__name__
        raise _fail(standard_path, "standard_scores", f"must have one row per item ({len(items)}; got {got})")
    scores = np.array(
        [_number_list(standard_path, f"standard_scores[{i}]", r, N_OPTIONS) for i, r in enumerate(rows)]
    )
    pattern = np.array(
        _number_list(standard_path, "human_pattern", standard.get("human_pattern"), len(items))
    )
    mean = _number_list(standard_path, "population_mean", [standard.get("population_mean", NORM_MEAN)], 1)[0]
    sd = _number_list(standard_path, "population_std", [standard.get("population_std", NORM_SD)], 1)[0]
    if sd <= 0:
        raise _fail(standard_path, "population_std", "must be positive")
    return SeceuData(items, scores, pattern, mean, sd, folder)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def download_seceu(
    folder: str | os.PathLike,
    base_url: str = DEFAULT_BASE_URL,
    checksums: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> Path:
    """Fetch the SECEU files from ``base_url`` into ``folder``, checking each against its SHA-256.

    Files already present with the right checksum are kept. Each file is written atomically; on a checksum
    mismatch nothing of that file is kept and a ``ValueError`` names the file, both sums and the URL.
    Returns the folder (ready for :func:`load_seceu`).
    """
    checksums = SHA256 if checksums is None else checksums
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    base = base_url if base_url.endswith("/") else base_url + "/"
    for name, expected in checksums.items():
        target = folder / name
        if target.is_file() and sha256_file(target) == expected:
            continue
        url = base + name
        digest = hashlib.sha256()
        with atomic_path(target) as tmp:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                    for block in iter(lambda r=response: r.read(1 << 16), b""):
                        digest.update(block)
                        out.write(block)
            except OSError as err:  # URLError and HTTPError are OSErrors
                raise OSError(f"Could not download {url}: {err}. {where_to_get()}") from err
            if digest.hexdigest() != expected:
                # Raising inside atomic_path deletes the temporary file: nothing is kept.
                raise ValueError(
                    f"Checksum mismatch for {name} from {url}: expected sha256 {expected}, got "
                    f"{digest.hexdigest()}. The file was not kept; check base_url ({AUTHORS_SITE})."
                )
    return folder


def paper_table() -> Any:
    """The paper's Table 6 (SECEU score, EQ, % of humans below, per model) as a DataFrame."""
    import pandas as pd

    with resources.as_file(resources.files("dialoguellm") / "resources" / PAPER_TABLE) as path:
        return pd.read_csv(path)


# ------------------------------------------------------------------------------------- prompt and answer
def _template(name: str) -> str:
    return resources.files("dialoguellm").joinpath("templates", name).read_text(encoding="utf-8").strip()


def build_question(item: SeceuItem) -> str:
    """The paper's direct question for one item (story, numbered options, 'sum up to 10')."""
    values = {f"option_{k + 1}": option for k, option in enumerate(item.options)}
    return _template(QUESTION_TEMPLATE).format(story=item.story, **values)


def build_prompt(item: SeceuItem, tokenizer: Any) -> str:
    """The full prompt text: the tokenizer's chat template when it has one, else the plain-text wrapper."""
    question = build_question(item)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
    return _template(PLAIN_TEMPLATE).format(question=question)


_NUMBER = r"(-?\d+(?:\.\d+)?)"
# Between an option's name and its score: a few characters that are not digits, a new option "(2)", a
# ';' (the options list echoed back) or a line break; covers "Sad: 3", "Sad - 3 points", '"Sad", "score": 3'.
# The gap is lazy, so "Sad: -2" still reads as -2; "Sad (3)" is allowed by an optional "(" before the number.
_GAP = r"[^\d\n(;]{0,25}?"


def parse_answer(text: str, options: Sequence[str]) -> tuple[np.ndarray, str]:
    """Read four raw scores from a generated answer; returns ``(scores, how)`` (before normalising).

    Tried in order: each option's name followed by a number; numbered options "(1) ... 3"; exactly four
    numbers in the text. When only some option names carry a number, the others get 0 (``"partial"``).
    With none of these the answer is not meaningful and scores are zeros (``"none"``), as in the paper.
    """
    named: dict[int, float] = {}
    for k, option in enumerate(options):
        pattern = r"(?<!\w)" + re.escape(option) + r"(?!\w)" + _GAP + r"\(?" + _NUMBER
        match = re.search(pattern, text, re.IGNORECASE)
        if match:
            named[k] = float(match.group(1))
    if len(named) == len(options):
        return np.array([named[k] for k in range(len(options))]), "named"
    numbered: dict[int, float] = {}
    for match in re.finditer(r"\((\d)\)" + r"[^\d\n;]{0,40}?" + _NUMBER, text):
        k = int(match.group(1)) - 1
        if 0 <= k < len(options) and k not in numbered:
            numbered[k] = float(match.group(2))
    if len(numbered) == len(options):
        return np.array([numbered[k] for k in range(len(options))]), "numbered"
    # Option markers "(1)".."(4)" are not scores: an echoed options list must not pass as an answer.
    numbers = re.findall(_NUMBER, re.sub(r"\(\d\)", " ", text))
    if len(numbers) == len(options):
        return np.array([float(n) for n in numbers]), "four_numbers"
    if named:
        return np.array([named.get(k, 0.0) for k in range(len(options))]), "partial"
    return np.zeros(len(options)), "none"


def normalise_scores(values: Sequence[float]) -> np.ndarray:
    """The paper's answer handling: all zeros stay zeros; with a negative value add |min| to all; then
    rescale proportionally so the four scores sum to 10 (a vector that sums to 0 stays zeros)."""
    scores = np.asarray(values, dtype=float)
    if scores.shape != (N_OPTIONS,):
        raise ValueError(f"an answer needs {N_OPTIONS} scores, got shape {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"answer scores must be finite numbers, got {scores.tolist()}")
    if scores.min() < 0:
        scores = scores - scores.min()
    total = scores.sum()
    return scores * (TOTAL_POINTS / total) if total > 0 else np.zeros(N_OPTIONS)


def probabilities_to_scores(log_probs: Sequence[float]) -> np.ndarray:
    """Four option log-probabilities -> probabilities renormalised over the options, times 10 points."""
    values = np.asarray(log_probs, dtype=float)
    if values.shape != (N_OPTIONS,) or not np.all(np.isfinite(values)):
        raise ValueError(f"need {N_OPTIONS} finite log-probabilities, got {values.tolist()}")
    shifted = np.exp(values - values.max())  # stable softmax
    return shifted / shifted.sum() * TOTAL_POINTS


# --------------------------------------------------------------------------------------------- scoring
def item_distances(answers: np.ndarray, standard_scores: np.ndarray) -> np.ndarray:
    """Euclidean distance of each item's four scores to the human standard scores."""
    answers, standard_scores = np.asarray(answers, float), np.asarray(standard_scores, float)
    if answers.shape != standard_scores.shape:
        raise ValueError(
            f"answers {answers.shape} and standard scores {standard_scores.shape} differ in shape"
        )
    return np.sqrt(((answers - standard_scores) ** 2).sum(axis=1))


def seceu_score(answers: np.ndarray, standard_scores: np.ndarray) -> float:
    """SECEU score: mean Euclidean distance to the standard scores (lower is better)."""
    return float(item_distances(answers, standard_scores).mean())


def eq_from_score(score: float, mean: float = NORM_MEAN, sd: float = NORM_SD) -> float:
    """EQ = 15 x (M - score) / SD + 100 (human norm M = 2.79, SD = 0.822)."""
    return 15.0 * (mean - score) / sd + 100.0


def share_below_normal(score: float, mean: float = NORM_MEAN, sd: float = NORM_SD) -> float:
    """Share of humans scoring worse (a higher SECEU score), under a NORMAL APPROXIMATION of the norm.

    The paper's percentages are empirical over 541 people (raw data not public); the normal approximation
    gives DialogueLLM's 72% exactly but is up to ~7 points off elsewhere (the human scores are right-skewed).
    """
    return 0.5 * (1.0 + math.erf((mean - score) / sd / math.sqrt(2.0)))


def pattern_similarity(distances: Sequence[float], human_pattern: Sequence[float]) -> float:
    """Pearson r between the model's item distances and the human template (NaN if either is constant).

    Human-to-human norm: M = 0.199, SD = 0.166; below M - SD (0.033) counts as qualitatively unlike humans.
    """
    a, b = np.asarray(distances, float), np.asarray(human_pattern, float)
    if a.shape != b.shape or a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@dataclass
class SeceuResult:
    """One model's SECEU run: per-item scores and distances, and the summary values."""

    label: str
    mode: str
    answers: np.ndarray
    distances: np.ndarray
    seceu: float
    eq: float
    share_below_normal_approx: float
    pattern_r: float
    parse: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.distances)

    def summary(self) -> dict[str, Any]:
        """Headline values, JSON-able (NaN pattern r becomes None)."""
        r = None if math.isnan(self.pattern_r) else round(self.pattern_r, 4)
        return {
            "label": self.label,
            "mode": self.mode,
            "items": self.n_items,
            "seceu": round(self.seceu, 4),
            "eq": round(self.eq, 2),
            "share_below_normal_approx": round(self.share_below_normal_approx, 4),
            "pattern_r": r,
            "unparsed": sum(p == "none" for p in self.parse),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, for a results file (scores, distances, parse outcome, generated texts, config)."""
        return {
            **self.summary(),
            "answers": np.round(self.answers, 4).tolist(),
            "distances": np.round(self.distances, 4).tolist(),
            "parse": self.parse,
            "texts": self.texts,
            "config": self.config,
        }


def result_from_answers(
    answers: np.ndarray, data: SeceuData, label: str = "model", mode: str = "given", **extra: Any
) -> SeceuResult:
    """Score a taker's answers (items x 4, each summing to 10 or all zeros) against the standard scores."""
    answers = np.asarray(answers, dtype=float)
    distances = item_distances(answers, data.standard_scores)
    score = float(distances.mean())
    return SeceuResult(
        label=label,
        mode=mode,
        answers=answers,
        distances=distances,
        seceu=score,
        eq=eq_from_score(score, data.mean, data.sd),
        share_below_normal_approx=share_below_normal(score, data.mean, data.sd),
        pattern_r=pattern_similarity(distances, data.human_pattern),
        **extra,
    )


def reference_results(data: SeceuData) -> list[SeceuResult]:
    """Two takers that need no model, to read a score against: 2.5 points on every option, and all 10
    points on the option people rated highest. (Spreading points is rewarded: the standard scores are
    means over people, so the uniform taker scores better than the paper's DialogueLLM.)"""
    uniform = np.full(data.standard_scores.shape, TOTAL_POINTS / N_OPTIONS)
    top = np.zeros(data.standard_scores.shape)
    top[np.arange(len(top)), data.standard_scores.argmax(axis=1)] = TOTAL_POINTS
    return [
        result_from_answers(uniform, data, label="reference: 2.5 points on every option", mode="reference"),
        result_from_answers(
            top, data, label="reference: 10 points on the humans' top option", mode="reference"
        ),
    ]


def seceu_table(results: Sequence[SeceuResult], with_paper: bool = True) -> Any:
    """Our results (rounded as the paper rounds) beside the paper's Table 6, one row per model."""
    import pandas as pd

    ours = pd.DataFrame(
        [
            {
                "model": r.label,
                "seceu": round(r.seceu, 2),
                "eq": round(r.eq),
                "percent_below": round(100 * r.share_below_normal_approx),
                "pattern_r": None if math.isnan(r.pattern_r) else round(r.pattern_r, 2),
                "items": r.n_items,
                "source": f"this run ({r.mode}; % from a normal approximation)"
                if r.mode != "reference"
                else "reference taker (no model; % from a normal approximation)",
            }
            for r in results
        ]
    )
    if not with_paper:
        return ours
    return pd.concat([ours, paper_table()], ignore_index=True)


def _encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    # A chat template already writes the special tokens it needs (e.g. BOS); plain text gets the usual ones.
    special = not getattr(tokenizer, "chat_template", None)
    return list(tokenizer(prompt, add_special_tokens=special)["input_ids"])


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad if pad is not None else 0)


def _option_ids(item: SeceuItem, tokenizer: Any, prompt: str) -> list[list[int]]:
    # After "Answer:" the option follows a space; a chat template's assistant turn starts fresh.
    lead = "" if prompt[-1:].isspace() else " "
    ids = [list(tokenizer(lead + option, add_special_tokens=False)["input_ids"]) for option in item.options]
    for option, option_ids in zip(item.options, ids, strict=True):
        if not option_ids:
            raise ValueError(f"SECEU item {item.number}: option {option!r} tokenizes to nothing")
    return ids


def option_log_probs(
    model: Any,
    tokenizer: Any,
    items: Sequence[SeceuItem],
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> np.ndarray:
    """Log-probability (summed over its tokens) of each option's name as the answer to the item's prompt.

    Returns items x 4. The scoring engine runs the prompt once per item and continues it with the four
    options as branches of one pass (``scoring.engine.score_options``), computed in ``precision`` as label
    scoring is.
    """
    totals = np.zeros((len(items), N_OPTIONS))
    dtype = model_dtype(model)
    for i, item in enumerate(tqdm(items, desc="SECEU items", disable=not progress)):
        prompt = build_prompt(item, tokenizer)
        options = _option_ids(item, tokenizer, prompt)
        totals[i] = score_options(
            model, _encode_prompt(tokenizer, prompt), options, _pad_id(tokenizer), dtype, precision
        )
    return totals


def generate_answers(
    model: Any,
    tokenizer: Any,
    items: Sequence[SeceuItem],
    max_new_tokens: int = 128,
    batch_size: int = 4,
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> list[str]:
    """Generate an answer to each item's prompt (greedy: the paper's temperature 0.1 is near-greedy), in
    item order, through the scoring engine (``scoring.engine.generate_texts``)."""
    prompts = [_encode_prompt(tokenizer, build_prompt(item, tokenizer)) for item in items]
    return generate_texts(
        model,
        tokenizer,
        prompts,
        batch_size,
        max_new_tokens,
        model_dtype(model),
        pad_id=_pad_id(tokenizer),
        stop_at_eos=False,
        sort_by_length=False,
        desc="SECEU answers",
        progress=progress,
        precision=precision,
    )


def score_model(
    model: Any,
    tokenizer: Any,
    data: SeceuData,
    mode: str = "probabilities",
    label: str = "model",
    limit: int | None = None,
    batch_size: int = 4,
    max_new_tokens: int = 128,
    progress: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> SeceuResult:
    """Answer every item with ``model`` in ``mode`` ("probabilities" or "generate") and score the answers.

    ``batch_size`` is the number of prompts per ``generate`` call (generate mode); the probability mode
    runs one item (its four options as one batch) per step; both compute in ``precision`` (``eval.precision``).
    The settings are kept in ``result.config``.
    """
    if mode not in MODES:
        raise ValueError(f"MODE must be one of {', '.join(MODES)}, not {mode!r}.")
    data = data.head(limit)
    config = {
        "mode": mode,
        "precision": precision,
        "limit": limit,
        "items": len(data),
        "prompt_template": QUESTION_TEMPLATE,
        "prompt_sha256": hashlib.sha256(_template(QUESTION_TEMPLATE).encode()).hexdigest()[:16],
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "seceu_dir": str(data.folder) if data.folder else None,
    }
    if mode == "probabilities":
        log_probs = option_log_probs(model, tokenizer, data.items, progress=progress, precision=precision)
        answers = np.stack([probabilities_to_scores(row) for row in log_probs])
        parse = ["probabilities"] * len(data)
        texts: list[str] = []
    else:
        config.update(max_new_tokens=max_new_tokens, batch_size=batch_size, decoding="greedy")
        texts = generate_answers(
            model, tokenizer, data.items, max_new_tokens, batch_size, progress=progress, precision=precision
        )
        parsed = [parse_answer(text, item.options) for text, item in zip(texts, data.items, strict=True)]
        answers = np.stack([normalise_scores(raw) for raw, _ in parsed])
        parse = [how for _, how in parsed]
    return result_from_answers(answers, data, label=label, mode=mode, parse=parse, texts=texts, config=config)


def save_result(result: SeceuResult, folder: str | os.PathLike) -> Path:
    """Write a result (with its config) to ``<folder>/seceu_<label>.json``, atomically; return the path."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", result.label).strip("_") or "model"
    return write_json(Path(folder) / f"seceu_{slug}.json", result.to_dict())


def load_seceu_results(folder: str | os.PathLike) -> list[SeceuResult]:
    """Read back the results :func:`save_result` wrote (e.g. to redraw the figure from a run)."""
    results = []
    for path in sorted(Path(folder).glob("seceu_*.json")):
        raw = read_json(path)
        results.append(
            SeceuResult(
                label=raw["label"],
                mode=raw["mode"],
                answers=np.array(raw["answers"], float),
                distances=np.array(raw["distances"], float),
                seceu=float(raw["seceu"]),
                eq=float(raw["eq"]),
                share_below_normal_approx=float(raw["share_below_normal_approx"]),
                pattern_r=float("nan") if raw["pattern_r"] is None else float(raw["pattern_r"]),
                parse=raw.get("parse", []),
                texts=raw.get("texts", []),
                config=raw.get("config", {}),
            )
        )
    return results


def adapter_for(
    run_dir: str | os.PathLike, model_name: str, adapter_dir: str | os.PathLike | None = None
) -> tuple[Path | None, str]:
    """``(adapter folder or None, note)``: the LoRA adapter to score, when it was trained on ``model_name``.

    ``adapter_dir`` names one explicitly (it must exist); otherwise ``runs.find_adapter`` looks in the run.
    The note says why there is none (not trained yet, or trained on another base model), for the notebook.
    """
    if adapter_dir is not None:
        adapter = Path(adapter_dir).expanduser()
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"No LoRA adapter in {adapter} (adapter_config.json missing); pass the adapter/ folder a "
                "training run wrote, or ADAPTER_DIR = None to use the one in RUN_DIR."
            )
    else:
        adapter = find_adapter(run_dir, required=False)
    if adapter is None:
        return (
            None,
            f"No LoRA adapter under {run_dir} (notebook 03 saves one); only the base model is scored.",
        )
    base = (read_json(adapter / "adapter_config.json") or {}).get("base_model_name_or_path")
    wanted = resolve_model_path(model_name)[0]

    def same(a: str, b: str) -> bool:
        return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())

    if base and not same(str(base), str(wanted)):
        return None, (
            f"The adapter in {adapter} was trained on {base}, not on {model_name} ({wanted}); "
            "only the base model is scored."
        )
    return adapter, f"LoRA adapter: {adapter}"


def seceu_records(
    mode: str,
    data: SeceuData | None = None,
    results: Sequence[SeceuResult] = (),
    adapter: str | os.PathLike | None = None,
    figure: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """What notebook 07 records: the scoring ``mode``; without ``data`` (no SECEU files) status ``skipped``;
    else the items scored, status ``scored``, the adapter scored beside the base model (or None), each
    result's ``summary`` by label and the item-distance figure's file name."""
    if data is None:
        return {"mode": mode, "status": "skipped", "items": 0, "results": {}}
    return {
        "mode": mode,
        "items": len(data),
        "status": "scored",
        "adapter": str(adapter) if adapter is not None else None,
        "results": {r.label: r.summary() for r in results},
        **({"figure": Path(figure).name} if figure is not None else {}),
    }

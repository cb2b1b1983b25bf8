"""Prompts: the paper's (instruction, video description, context, input, output) tuple, and back.

One :class:`PromptBuilder` per corpus builds the prompt of an utterance and maps an answer back to a
label, so the two directions can never drift apart. The wording lives in template files inside the package
(``dialoguellm/templates/<name>.yaml``), loaded with importlib.resources.

- instruction: names the corpus's label set, as the paper's normalised words (``labels.normalised_label_names``);
- video description: from a ``Mapping[clip_id, str]`` when present and enabled;
- context: the previous ``z`` utterances of the same dialogue with speaker names (z = 0, 1, 2, 3, ... or "all");
  ``future_turns`` > 0 also shows that many utterances after the target (a field practice a live system cannot
  follow, measured by ``make pitfalls``; 0 by default);
- input: the target utterance with its speaker; output: the label word, then the end-of-sequence token;
- k-shot: demonstrations drawn from the training split only, the same for every prompt given a seed (which also
  makes them a shared prefix whose keys/values are computed once in evaluation).

Chat models (their tokenizer has a chat template) get the instruction as the system message, each
demonstration as a user/assistant turn and the query as the last user turn; base models get the plain
instruction template. Nothing looks at the model's name.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from dialoguellm.corpora import overlap
from dialoguellm.corpora.overlap import DEMONSTRATION_POOL
from dialoguellm.labels import label_names, normalised_label_names

# Corpora whose prompts mention a video description (the paper: MELD only; IEMOCAP's were all alike and
# EmoryNLP has no video). The instruction names it even for a clip without one, so that training and test
# prompts share one instruction.
VIDEO_DATASETS = ("meld",)

TEMPLATE_KEYS = (
    "instruction",
    "sources_with_video",
    "sources_without_video",
    "label",
    "label_separator",
    "description",
    "context",
    "turn",
    "input",
    "section_separator",
    "plain_prompt",
    "plain_demonstration",
    "answer",
)
# Keys a template may leave out, with the text used then (the paper's template has none of them).
OPTIONAL_TEMPLATE_KEYS = {"future": "Following turns:\n{turns}"}  # prompt.future_turns


def load_template(name: str = "paper") -> dict[str, str]:
    """Read ``dialoguellm/templates/<name>.yaml`` (packaged data, independent of the working directory)."""
    folder = resources.files("dialoguellm.templates")
    resource = folder / f"{name}.yaml"
    if not resource.is_file():
        known = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
        raise FileNotFoundError(
            f"Prompt template {name!r} not found; prompt.template must be one of {known}."
        )
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    missing = [k for k in TEMPLATE_KEYS if k not in data]
    if missing:
        raise ValueError(f"Prompt template {name}.yaml lacks keys: {', '.join(missing)}.")
    return {k: str(v) for k, v in data.items()}


def rows_of(split: Any) -> list[dict[str, Any]]:
    """A split as a list of row dicts (accepts a datasets.Dataset, a pandas DataFrame or a list)."""
    if hasattr(split, "to_list"):
        return split.to_list()
    if hasattr(split, "to_dict") and hasattr(split, "columns"):
        return split.to_dict("records")
    return list(split)


def dialogue_index(rows: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """``dialogue_id -> rows sorted by turn`` (the context of an utterance comes from here)."""
    index: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        index[str(row["dialogue_id"])].append(row)
    for turns in index.values():
        turns.sort(key=lambda r: int(r["turn"]))
    return dict(index)


def context_of(row: Mapping[str, Any], dialogue: Sequence[Mapping[str, Any]], z: int | str) -> list[Mapping]:
    """The ``z`` utterances before ``row`` in its dialogue (all of them for ``z == "all"``), oldest first."""
    earlier = [r for r in dialogue if int(r["turn"]) < int(row["turn"])]
    if z == "all":
        return earlier
    return earlier[len(earlier) - int(z) :] if int(z) > 0 else []


def future_of(row: Mapping[str, Any], dialogue: Sequence[Mapping[str, Any]], k: int) -> list[Mapping]:
    """The ``k`` utterances after ``row`` in its dialogue, in order: what a live system has not heard yet."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"future turns must be an integer >= 0, not {k!r}.")
    later = sorted((r for r in dialogue if int(r["turn"]) > int(row["turn"])), key=lambda r: int(r["turn"]))
    return later[:k]


def fixed_demonstrations(name: str, dataset: str) -> list[Demonstration]:
    """The fixed demonstrations ``name`` of ``dataset`` (``dialoguellm/resources/fixed_demonstrations.yaml``),
    without context: ``dialoguellm`` = the seven utterance/label pairs DialogueLLM's released test scripts add
    to every test prompt (docs/PITFALLS.md, row 2); their labels mapped to the corpus's label ids."""
    text = (resources.files("dialoguellm") / "resources" / "fixed_demonstrations.yaml").read_text(
        encoding="utf-8"
    )
    sets = yaml.safe_load(text)
    if name not in sets or dataset not in sets[name]:
        known = {k: sorted(v) for k, v in sets.items() if isinstance(v, dict)}
        raise ValueError(
            f"No fixed demonstrations {name!r} for {dataset} in fixed_demonstrations.yaml (it has {known}); "
            "use prompt.fixed_demonstrations: none for this corpus."
        )
    words = normalised_label_names(dataset)
    out = []
    for i, entry in enumerate(sets[name][dataset]):
        if entry["label"] not in words:
            raise ValueError(
                f"fixed_demonstrations.yaml, {name}.{dataset}[{i}]: label {entry['label']!r} is not one of {words}."
            )
        row = {"utterance_id": str(entry.get("utterance_id", f"{name}_{i}")), "text": str(entry["text"]),
               "speaker": str(entry.get("speaker", "Speaker")), "label_id": words.index(entry["label"]),
               "dialogue_id": f"{name}_{i}", "turn": 0, "split": "train"}  # fmt: skip
        out.append(Demonstration(row=row, context=[]))
    return out


def previous_turns_text(split: Any, z: int | str) -> list[str]:
    """For every row of a split (any order), the text of its ``z`` previous utterances in its dialogue
    (``context_of``, oldest first), joined by spaces: the context the prompt shows, as plain text for the
    error analysis and the context baseline. ``z="all"`` takes every earlier utterance."""
    if z != "all" and (not isinstance(z, int) or z < 0):
        raise ValueError(f"context_turns must be an integer >= 0 or 'all', not {z!r}.")
    rows = rows_of(split)
    index = dialogue_index(rows)
    return [
        " ".join(str(r["text"]) for r in context_of(row, index[str(row["dialogue_id"])], z)) for row in rows
    ]


@dataclass
class Demonstration:
    """A solved example shown in the prompt: a training utterance, its context and its label."""

    row: Mapping[str, Any]
    context: list[Mapping[str, Any]]


def select_demonstrations(
    train_rows: Sequence[Mapping[str, Any]],
    k: int,
    seed: int,
    context_turns: int | str = 1,
    exclude: Iterable[str] = (),
) -> list[Demonstration]:
    """``k`` demonstrations drawn from the TRAINING split only, deterministic given ``seed``.

    Utterances with fewer than 3 or more than 30 words are skipped, so a demonstration neither says nothing
    ("Oh.") nor eats the token budget. ``exclude``: utterance ids that may not be shown (the cross-corpus
    overlap that training removes, ``corpora.overlap.removed_training_ids``); a draw that hits one is
    replaced by further draws from the same random stream, so the choice is uniform over the allowed
    utterances and unchanged wherever the first draw hit none.
    """
    if k <= 0:
        return []
    rows = list(train_rows)
    splits = {str(r.get("split", "train")) for r in rows}
    if splits - {"train"}:
        raise ValueError(f"Demonstrations must come from the training split, got rows from {sorted(splits)}.")
    excluded = set(map(str, exclude))
    candidates = [r for r in rows if 3 <= len(str(r["text"]).split()) <= 30] or rows
    allowed = sum(str(r["utterance_id"]) not in excluded for r in candidates)
    if allowed < k:
        raise ValueError(f"Asked for {k} demonstrations but the training split has only {allowed}.")
    rng = random.Random(seed)
    drawn = rng.sample(range(len(candidates)), k)
    chosen = [candidates[i] for i in drawn if str(candidates[i]["utterance_id"]) not in excluded]
    left = sorted(set(range(len(candidates))) - set(drawn))
    while len(chosen) < k:
        row = candidates[left.pop(rng.randrange(len(left)))]
        if str(row["utterance_id"]) not in excluded:
            chosen.append(row)
    index = dialogue_index(rows)
    return [
        Demonstration(row=r, context=context_of(r, index[str(r["dialogue_id"])], context_turns))
        for r in chosen
    ]


@dataclass
class PromptExample:
    """One utterance, ready for the model: its prompt tokens and its gold label."""

    example_id: str
    dataset: str
    prompt: str
    prompt_ids: list[int]
    label_id: int
    meta: dict[str, Any] = field(default_factory=dict)


class PromptTooLongError(ValueError):
    """A prompt does not fit ``cutoff_len`` even with no context and no description."""


class PromptBuilder:
    """Builds the prompt of an utterance of one corpus and maps answers back to its labels."""

    def __init__(
        self,
        tokenizer: Any,
        dataset: str,
        *,
        template: str = "paper",
        style: str = "auto",
        context_turns: int | str = 1,
        demonstrations: Sequence[Demonstration] = (),
        descriptions: Mapping[str, str] | None = None,
        use_video: bool = True,
        cutoff_len: int = 256,
        labels: Sequence[str] | None = None,
        label_order: str = "corpus",
        future_turns: int = 0,
    ):
        if style not in ("auto", "chat", "plain"):
            raise ValueError(f"prompt style must be auto, chat or plain, not {style!r}.")
        if context_turns != "all" and (not isinstance(context_turns, int) or context_turns < 0):
            raise ValueError(f"context_turns must be an integer >= 0 or 'all', not {context_turns!r}.")
        self.tokenizer = tokenizer
        self.dataset = dataset
        self.template = load_template(template)
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if style == "chat" and not has_chat:
            raise ValueError(
                "prompt.style is chat but the tokenizer has no chat template; use plain or auto."
            )
        self.style = ("chat" if has_chat else "plain") if style == "auto" else style
        self.context_turns = context_turns
        future_of({"turn": 0}, [], future_turns)  # checks the value
        self.future_turns = future_turns
        self.demonstrations = list(demonstrations)
        self.descriptions = dict(descriptions or {}) if use_video else {}
        self.cutoff_len = cutoff_len
        # ``labels``: a user's own label words (``dialoguellm.predict``) in place of the corpus's, scored
        # zero-shot by the same engine; their prompts take a video description whenever one is given.
        self.labels: tuple[str, ...] = tuple(labels) if labels else normalised_label_names(dataset)
        self._native = self.labels if labels else label_names(dataset)
        eos = tokenizer.eos_token_id
        if eos is None:
            raise ValueError("The tokenizer has no eos_token; it is needed to end every answer.")
        self.answer_ids: list[list[int]] = [
            self._answer_tokens(self.answer_text(i)) + [eos] for i in range(len(self.labels))
        ]
        if len({tuple(a) for a in self.answer_ids}) != len(self.answer_ids):
            raise ValueError(f"Two {dataset} labels tokenise identically: {self.labels}.")
        self.max_answer_len = max(len(a) for a in self.answer_ids)
        self.use_video = use_video and (dataset in VIDEO_DATASETS or bool(labels))
        if not self.use_video:
            self.descriptions = {}
        sources = "sources_with_video" if self.use_video else "sources_without_video"
        label_list = self.template["label_separator"].join(
            self.template["label"].format(label=label) for label in self.listed_labels(label_order)
        )
        self.instruction = self.template["instruction"].format(
            sources=self.template[sources], labels=label_list
        )

    def listed_labels(self, label_order: str) -> list[str]:
        """The label words in the order the instruction lists them: ``corpus`` (label_id order) or ``paper``
        (the template's ``label_order``, then the words it lacks in label_id order). Only the instruction
        text depends on it; answers and scores stay in label_id order."""
        if label_order == "corpus":
            return list(self.labels)
        if label_order != "paper":
            raise ValueError(f"label_order must be paper or corpus, not {label_order!r}.")
        order = [w.strip() for w in self.template.get("label_order", "").split(",") if w.strip()]
        if not order:
            raise ValueError(
                "prompt.label_order is paper but the template has no label_order line; use corpus."
            )
        rank = {word: i for i, word in enumerate(order)}
        return sorted(self.labels, key=lambda w: (rank.get(w, len(rank)), self.labels.index(w)))

    # ---- text -------------------------------------------------------------------------------------------
    def answer_text(self, label_id: int) -> str:
        """The output text for a label (the normalised word)."""
        return self.template["answer"].format(label=self.labels[label_id])

    def _answer_tokens(self, answer: str) -> list[int]:
        """The answer's tokens as they follow the prompt, so that a trained target (prompt ids + these) is what
        the tokenizer makes of prompt text + answer text, and equals a demonstration's answer in the prompt.

        A plain prompt ends in "### Response:\n". SentencePiece tokenizers (LLaMA 2's) give a word alone a
        leading-space piece ("happiness" -> "▁happiness") but not after a newline ("ha", "pp", "iness"), so the
        answer is tokenised behind that cue and the cue's tokens are cut off. Chat templates end in their own
        special tokens, after which the tokenizers we use tokenise the answer as they would alone.
        """
        alone = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        if self.style != "plain":
            return alone
        cue = self.template["plain_prompt"].rsplit("{query}", 1)[-1]
        cue_ids = self.tokenizer(cue, add_special_tokens=False)["input_ids"]
        both = self.tokenizer(cue + answer, add_special_tokens=False)["input_ids"]
        if both[: len(cue_ids)] != cue_ids or len(both) == len(cue_ids):
            raise ValueError(
                f"The {self.dataset} answer {answer!r} merges with the end of the plain prompt {cue!r} when "
                "tokenised, so prompt and target cannot be split at the answer. End plain_prompt (template "
                "file) with a newline, or use prompt.style chat."
            )
        return both[len(cue_ids) :]

    def description_of(self, row: Mapping[str, Any], descriptions: Mapping[str, str] | None = None) -> str:
        """The video description of ``row``'s clip ('' when there is none or video is off)."""
        if not self.use_video:
            return ""
        table = self.descriptions if descriptions is None else descriptions
        clip = row.get("clip_id")
        return str(table.get(clip, "")).strip() if clip else ""

    def query_text(
        self,
        row: Mapping[str, Any],
        context: Sequence[Mapping[str, Any]],
        description: str,
        future: Sequence[Mapping[str, Any]] = (),
    ) -> str:
        """Video description, context, input and (``future_turns``) the turns after it of one utterance
        (sections with nothing in them are left out)."""
        t = self.template
        parts = []
        if description:
            parts.append(t["description"].format(description=description))
        if context:
            turns = "\n".join(t["turn"].format(speaker=r["speaker"], text=r["text"]) for r in context)
            parts.append(t["context"].format(turns=turns))
        parts.append(t["input"].format(speaker=row["speaker"], text=row["text"]))
        if future:
            turns = "\n".join(t["turn"].format(speaker=r["speaker"], text=r["text"]) for r in future)
            parts.append(t.get("future", OPTIONAL_TEMPLATE_KEYS["future"]).format(turns=turns))
        return t["section_separator"].join(parts)

    def _demo_parts(self, demonstrations: Sequence[Demonstration] | None = None) -> list[tuple[str, str]]:
        return [
            (
                self.query_text(d.row, d.context, self.description_of(d.row)),
                self.answer_text(self._label_of(d.row)),
            )
            for d in (self.demonstrations if demonstrations is None else demonstrations)
        ]

    def render(self, query: str, demonstrations: Sequence[Demonstration] | None = None) -> str:
        """The full prompt text around a query (instruction, demonstrations, the query, the answer cue).
        ``demonstrations`` replaces the builder's own (used when their context must be trimmed)."""
        demos = self._demo_parts(demonstrations)
        if self.style == "plain":
            t = self.template
            shown = "".join(t["plain_demonstration"].format(query=q, answer=a) for q, a in demos)
            return t["plain_prompt"].format(instruction=self.instruction, demonstrations=shown, query=query)
        messages = [{"role": "system", "content": self.instruction}]
        for q, a in demos:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": query})
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # templates without a system role: the instruction opens the first user turn
            messages = messages[1:]
            messages[0] = {"role": "user", "content": f"{self.instruction}\n\n{messages[0]['content']}"}
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def chat_messages(self, query: str) -> list[dict[str, str]]:
        """The prompt of ``query`` as chat messages (instruction as the system message, each demonstration a
        user/assistant pair, the query last): what a chat endpoint receives instead of rendered text."""
        messages = [{"role": "system", "content": self.instruction}]
        for q, a in self._demo_parts():
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        return [*messages, {"role": "user", "content": query}]

    def tokenize_prompt(self, text: str) -> list[int]:
        # Chat templates write their own special tokens; plain prompts get the tokenizer's BOS.
        return self.tokenizer(text, add_special_tokens=self.style == "plain")["input_ids"]

    # ---- one utterance ----------------------------------------------------------------------------------
    def build(
        self,
        row: Mapping[str, Any],
        dialogue: Sequence[Mapping[str, Any]],
        descriptions: Mapping[str, str] | None = None,
    ) -> PromptExample:
        """The prompt of ``row`` within the budget: context trimmed oldest-first, then the turns after it
        (``future_turns``) latest-first, then the description, then the demonstrations' own context (oldest turn first; only for the prompts that need it, so the others
        keep sharing one demonstration prefix).

        ``descriptions`` is the ``clip_id -> text`` map of ``row``'s split (MELD reuses clip ids across
        splits); by default the builder's own map (the training split's, used for demonstrations).
        """
        context = context_of(row, dialogue, self.context_turns)
        future = future_of(row, dialogue, self.future_turns) if self.future_turns else []
        description = self.description_of(row, descriptions)
        budget = self.cutoff_len - self.max_answer_len
        demos = list(self.demonstrations)
        while True:
            text = self.render(self.query_text(row, context, description, future), demos)
            ids = self.tokenize_prompt(text)
            if len(ids) <= budget:
                break
            if context:
                context = context[1:]
            elif future:
                future = future[:-1]
            elif description:
                description = ""
            elif any(d.context for d in demos):
                demos = [Demonstration(row=d.row, context=d.context[1:]) for d in demos]
            else:
                raise PromptTooLongError(
                    f"{self.dataset} utterance {row.get('utterance_id')} (dialogue {row.get('dialogue_id')}, "
                    f"turn {row.get('turn')}): the prompt needs {len(ids)} tokens + {self.max_answer_len} for the "
                    f"answer with no context at all, more than prompt.cutoff_len={self.cutoff_len}. Raise "
                    "prompt.cutoff_len or lower prompt.k_shot."
                )
        return PromptExample(
            example_id=str(row.get("utterance_id", "")),
            dataset=self.dataset,
            prompt=text,
            prompt_ids=ids,
            label_id=self._label_of(row),
            meta={"context_turns": len(context), "has_description": bool(description)}
            | ({"future_turns": len(future)} if self.future_turns else {}),
        )

    def build_split(
        self, split: Any, descriptions: Mapping[str, str] | None = None, only: Sequence[int] | None = None
    ) -> list[PromptExample]:
        """Prompts for the utterances of a split (context from the same split's dialogues).

        ``only``: row positions to build (a sample); context still comes from the whole split.
        """
        rows = rows_of(split)
        index = dialogue_index(rows)
        chosen = rows if only is None else [rows[i] for i in only]
        return [self.build(row, index[str(row["dialogue_id"])], descriptions) for row in chosen]

    def _label_of(self, row: Mapping[str, Any]) -> int:
        if row.get("label_id") is not None:
            return int(row["label_id"])
        return self._native.index(row["label"])

    # ---- answers back to labels -------------------------------------------------------------------------
    def parse(self, answer: str) -> int | None:
        """Map generated text to a label id; ``None`` when it names no label (counted wrong, never guessed).

        Accepts the normalised word or the corpus's own name, case-insensitively: first at the start of the
        answer, else when exactly one label word occurs in it.
        """
        text = answer
        for special in (self.tokenizer.eos_token, getattr(self.tokenizer, "pad_token", None)):
            if special:
                text = text.replace(special, " ")
        text = text.strip().lower()
        names: dict[str, int] = {}
        for i, (word, native) in enumerate(zip(self.labels, self._native, strict=True)):
            names[word.lower()] = i
            names[native.lower()] = i
        words = re.findall(r"[a-z]+", text)
        if words and words[0] in names:
            return names[words[0]]
        found = {names[w] for w in words if w in names}
        return found.pop() if len(found) == 1 else None


def make_builders(
    tokenizer: Any,
    datasets: Mapping[str, Any],
    *,
    template: str = "paper",
    style: str = "auto",
    context_turns: int | str = 1,
    k_shot: int = 0,
    seed: int = 42,
    descriptions: Mapping[str, str] | None = None,
    use_video: bool = True,
    cutoff_len: int = 256,
    exclude: Mapping[str, Iterable[str]] | None = None,
    label_order: str = "corpus",
    future_turns: int = 0,
    fixed: str = "none",
) -> dict[str, PromptBuilder]:
    """One builder per corpus; ``datasets`` maps a corpus name to its DatasetDict (demonstrations from "train").
    ``exclude``: corpus -> utterance ids never shown as a demonstration (``select_demonstrations``).
    ``fixed``: a set of ``fixed_demonstrations`` in place of the ``k_shot`` drawn ones (none: draw them)."""
    builders = {}
    for name, splits in datasets.items():
        # the official training split, also where training reads a cleaned one (corpora.overlap)
        pool = splits[DEMONSTRATION_POOL] if DEMONSTRATION_POOL in splits else splits["train"]
        skip = (exclude or {}).get(name, ())
        if fixed != "none":
            demos = fixed_demonstrations(fixed, name)
        else:
            demos = select_demonstrations(rows_of(pool), k_shot, seed, context_turns, skip) if k_shot else []
        builders[name] = PromptBuilder(
            tokenizer,
            name,
            template=template,
            style=style,
            context_turns=context_turns,
            demonstrations=demos,
            descriptions=descriptions,
            use_video=use_video,
            cutoff_len=cutoff_len,
            label_order=label_order,
            future_turns=future_turns,
        )
    return builders


def builders_from_config(
    tokenizer: Any,
    datasets: Mapping[str, Any],
    config: Any,
    descriptions: Mapping[str, Mapping[str, str]] | None = None,
    seed: int | None = None,
    exclude: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, PromptBuilder]:
    """``make_builders`` with a run config's prompt settings (``config.prompt``), its demonstration seed
    (``config.train.seed`` unless ``seed`` is given) and the training split's descriptions
    (``descriptions``: ``split -> {clip_id: text}``), as training, evaluation, ablations and analysis use it.

    With ``data.remove_cross_corpus_overlap`` no demonstration is an utterance that training removes
    (``demonstration_exclusions``): pass every corpus of ``data.datasets`` at hand (the removal is
    cross-corpus), or ``exclude`` computed from them when only some builders are wanted."""
    p = config.prompt
    if exclude is None:
        exclude = demonstration_exclusions(config, datasets)
    return make_builders(
        tokenizer,
        datasets,
        template=p.template,
        style=p.style,
        context_turns=p.context_turns,
        k_shot=p.k_shot,
        seed=config.train.seed if seed is None else seed,
        descriptions=(descriptions or {}).get("train", {}),
        use_video=p.use_video,
        cutoff_len=p.cutoff_len,
        exclude=exclude,
        label_order=p.label_order,
        future_turns=p.future_turns,
        fixed=p.fixed_demonstrations,
    )


def demonstration_exclusions(config: Any, corpora: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """``corpus -> utterance ids`` a run's demonstrations must skip: the cross-corpus overlap its training
    removes (``corpora.overlap.removed_ids``; ``corpora`` holds every corpus of
    ``data.datasets``), nothing when the prompts carry no demonstration or the removal is off."""
    if not config.prompt.k_shot or not config.data.remove_cross_corpus_overlap:
        return {}
    return overlap.removed_ids(corpora, list(config.data.datasets))

"""Prompts: the builder that writes a prompt and reads an answer back (``builder``), and the preparation of
a run's encoded examples from the corpora (``preparation``)."""

from dialoguellm.prompts.builder import (
    VIDEO_DATASETS,
    Demonstration,
    PromptBuilder,
    PromptExample,
    PromptTooLongError,
    builders_from_config,
    context_of,
    demonstration_exclusions,
    dialogue_index,
    load_template,
    make_builders,
    previous_turns_text,
    rows_of,
    select_demonstrations,
)
from dialoguellm.prompts.preparation import (
    Prepared,
    nested_sample_order,
    prepare_examples,
    prepare_split,
    sample_indices,
    sample_positions,
)

__all__ = [
    "VIDEO_DATASETS",
    "Demonstration",
    "Prepared",
    "PromptBuilder",
    "PromptExample",
    "PromptTooLongError",
    "builders_from_config",
    "context_of",
    "demonstration_exclusions",
    "dialogue_index",
    "load_template",
    "make_builders",
    "nested_sample_order",
    "prepare_examples",
    "prepare_split",
    "previous_turns_text",
    "rows_of",
    "sample_indices",
    "sample_positions",
    "select_demonstrations",
]

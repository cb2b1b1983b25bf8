"""What the ERC task files call (lm-eval imports this file by path); the code is in
``dialoguellm.interop.harness``."""

from dialoguellm.interop.harness import erc_docs, process_results, weighted_f1  # noqa: F401

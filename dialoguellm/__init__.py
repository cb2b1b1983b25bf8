"""dialoguellm: a tested, runnable reproduction of DialogueLLM (Zhang et al., arXiv 2310.11374)."""

__version__ = "0.1.0"

"""The package's corpora, prompt and notebooks in the tools researchers already use: the cleaned corpora as a
Hugging Face ``datasets`` folder (``dataset``), lm-evaluation-harness tasks (``harness``) and the notebook
book (``book``). Each reads the library; nothing here computes a result of its own."""

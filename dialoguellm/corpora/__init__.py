"""Corpora: the label vocabularies (``labels``), the readers of MELD, EmoryNLP and IEMOCAP with the curated
copies a run keeps (``readers``), and the video descriptions of MELD clips (``video``). The public corpora ship
in ``raw/``."""

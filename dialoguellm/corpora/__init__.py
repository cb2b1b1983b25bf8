"""Corpora: the readers of MELD, EmoryNLP and IEMOCAP with the curated copies a run keeps (``readers``), the
cross-corpus overlap (``overlap``) and the video descriptions of MELD clips (``video``). The public corpora ship
in ``raw/``; their label vocabularies sit below, in ``dialoguellm.labels``, where config can read them."""

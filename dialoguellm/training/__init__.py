"""Training: the answer-token loss and schedule (``loss``), checkpoints (``checkpoints``) and the loop that
runs them step by step (``loop.train``)."""

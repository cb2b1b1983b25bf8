"""Scoring: the engine (``engine``: cached, batched forward passes, label log-likelihoods, option
log-likelihoods, generation) and the prediction frames built from it (``predictions``)."""

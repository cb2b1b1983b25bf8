"""Analysis: what the saved predictions say beyond the headline (error analysis, baselines, ablations, SECEU,
one conversation explored) and the notebook stages that call it (``*_stage``)."""

"""lm-evaluation-harness task files (pass this folder to ``lm_eval --include_path``); utils.py is what they call."""

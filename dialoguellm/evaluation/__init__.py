"""Evaluation: a trained adapter on the test split, and its comparison with the paper (``run``)."""

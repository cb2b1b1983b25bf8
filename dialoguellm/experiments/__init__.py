"""Experiments as data: an experiment is one YAML file in this folder, run by one runner.

    dialoguellm experiment run ablations_cpu       # make ablations; resumable after kill -9
    dialoguellm experiment report ablations_cpu    # the table, from the records

An experiment file names a base profile, its arms (files in ``arms/`` or the same mapping inline: config
overrides on the base profile), the arm the others are compared with, the seeds, the samples (training
utterances per corpus, dev and test sample sizes, the sample seed), settings for every arm and the metrics.
``spec`` reads it, ``runner`` runs it (pairing the arms by construction), ``record`` is the one result record
(one file per arm x seed, with every sample id and prediction), ``summary`` turns records into the numbers
every renderer prints (docs/EXPERIMENTS.md).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

EXPERIMENTS_DIR = Path(str(resources.files("dialoguellm") / "experiments"))

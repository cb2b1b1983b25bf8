"""Progress bars that suit where the code runs.

In JupyterLab, tqdm's widgets. Under `make reproduce` papermill logs a notebook's text output to the
terminal but not its widgets, so the pipeline sets ``DIALOGUELLM_PROGRESS=text`` and bars become plain
text lines written at most every 30 seconds: a long training or scoring stage shows how far it is.
"""

from __future__ import annotations

import os
from typing import Any

PROGRESS_ENV = "DIALOGUELLM_PROGRESS"


def progress_bar(iterable: Any = None, **kwargs: Any) -> Any:
    """``tqdm(iterable, **kwargs)``, as widgets or as plain text lines (see the module docstring)."""
    if os.environ.get(PROGRESS_ENV) == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", 30.0)
        kwargs.setdefault("ascii", True)
        return tqdm(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)

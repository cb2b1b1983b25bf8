"""Training forwards installed on single modules (``fused_lora``, ``fused_norm``): an instance attribute
``forward`` that shadows the class's, so the parameters, the state dict and saved files do not change, and
deleting it brings the class's forward back."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any


def install_forward(model: Any, applies: Callable[[Any], bool], forward: Callable[..., Any]) -> int:
    """Give every module of ``model`` for which ``applies(module)`` holds ``forward`` (called with the module
    first) as its own forward; how many. Idempotent."""
    count = 0
    for module in model.modules():
        if applies(module):
            if getattr(vars(module).get("forward"), "__func__", None) is not forward:
                module.forward = types.MethodType(forward, module)
            count += 1
    return count


def remove_forward(model: Any, forward: Callable[..., Any]) -> int:
    """Undo ``install_forward``: every module of ``model`` that runs ``forward`` runs its class's again; how
    many."""
    count = 0
    for module in model.modules():
        if getattr(vars(module).get("forward"), "__func__", None) is forward:
            del module.forward
            count += 1
    return count

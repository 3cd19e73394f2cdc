"""Package exports imported on first use (a module ``__getattr__``, PEP 562).

The server's packages re-export their main names, and importing those eagerly would load the
whole application (FastAPI, the agents store, the MCP library: about two seconds) whenever any
module inside is imported, the command line's light ones included.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A ``__getattr__`` for ``package`` that imports each name of ``homes`` (name -> the
    module that defines it) when it is first asked for."""

    def __getattr__(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(homes[name]), name)

    return __getattr__

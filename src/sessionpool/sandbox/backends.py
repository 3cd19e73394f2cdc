"""The backend a configuration names."""

from __future__ import annotations

from sessionpool import errors
from sessionpool.config import EngineConfig
from sessionpool.sandbox.backend import Backend
from sessionpool.sandbox.jailed import JailBackend
from sessionpool.sandbox.unsafe import UnsafeBackend

#: the backends an operator may choose (``--backend``); the in-process fake is for tests only
#: and is handed to the engine directly, never named in a configuration
BACKENDS: dict[str, type[JailBackend | UnsafeBackend]] = {
    JailBackend.name: JailBackend,
    UnsafeBackend.name: UnsafeBackend,
}


def make_backend(config: EngineConfig) -> Backend:
    cls = BACKENDS.get(config.backend)
    if cls is None:
        raise errors.ConfigError(
            f"unknown backend {config.backend!r}; choose {' or '.join(map(repr, BACKENDS))}"
        )
    return cls(config)

"""The pool service: sessions by identifier, warm ready queue, limits, cooldown."""

from sessionpool.pool.api import EngineHandle, PoolHandle, SessionHandle, SessionInfo
from sessionpool.pool.pool import Pool, validate_identifier

__all__ = [
    "EngineHandle",
    "Pool",
    "PoolHandle",
    "SessionHandle",
    "SessionInfo",
    "validate_identifier",
]

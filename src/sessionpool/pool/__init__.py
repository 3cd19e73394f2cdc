"""The pool service: sessions by identifier, warm ready queue, limits, cooldown."""

from sessionpool.pool.pool import Pool, validate_identifier

__all__ = ["Pool", "validate_identifier"]

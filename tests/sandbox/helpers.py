"""Small helpers shared by the sandbox tests: run a cell, get its value back as Python data."""

from __future__ import annotations

import ast
from typing import Any

from sessionpool.session import Session
from sessionpool.types import ExecutionResult, ExecutionStatus

#: session-side helper: ``attempt(fn, *args)`` returns "ok" or the errno name of the OSError
ATTEMPT = """
import errno as _errno
import os
def attempt(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return _errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"
"""


async def run_ok(session: Session, code: str, timeout: float | None = None) -> ExecutionResult:
    """Run a cell that must succeed; fail the test with its stderr otherwise."""
    r = await session.execute(code, timeout)
    assert r.status is ExecutionStatus.OK, (r.status, r.stderr, r.error)
    return r


async def value(session: Session, code: str, timeout: float | None = None) -> Any:
    """Run a cell and return its last expression's value (which must be a Python literal)."""
    r = await run_ok(session, code, timeout)
    assert r.result is not None, "the cell has no result"
    return ast.literal_eval(str(r.result.data["text/plain"]))

"""The ``sessionpool`` command's parser loads no part of the server application.

Every client command (``exec``, ``files``, ``sessions``, ``mcp``...) and ``--help`` build the
whole parser first; with the application imported that took three seconds before anything ran.
"""

from __future__ import annotations

import subprocess
import sys

#: what the application brings in: the web framework, the agents store, the MCP library, the
#: ASGI server
HEAVY = ("fastapi", "starlette", "sqlalchemy", "mcp", "uvicorn", "pydantic")

PROBE = """
import sys
from sessionpool.cli import build_parser
parser = build_parser()
for argv in ({argvs}):
    parser.parse_args(argv)
{then}
print(" ".join(sorted({{m.split(".")[0] for m in sys.modules}} & set({heavy!r}))))
"""


def loaded_by(*argvs: list[str], then: str = "") -> set[str]:
    """The heavy packages loaded once the parser has parsed ``argvs`` (and ``then`` ran)."""
    code = PROBE.format(argvs="".join(f"{a!r}, " for a in argvs), then=then, heavy=HEAVY)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_parsing_every_command_loads_no_server_framework() -> None:
    assert (
        loaded_by(
            ["serve", "--port", "0"],
            ["exec", "--session", "s", "print(1)"],
            ["keys", "list"],
            ["doctor"],
            ["mcp"],
        )
        == set()
    )


def test_the_probe_sees_a_framework_when_one_is_loaded() -> None:
    """The check above can fail: importing the application shows up in it."""
    assert {"fastapi", "starlette", "uvicorn"} <= loaded_by(then="import sessionpool.server.app")

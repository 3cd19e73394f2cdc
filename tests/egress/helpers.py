"""What the egress tests share besides fixtures: the engine's settings, and running probes in a
session."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import subprocess
import textwrap
import time
from typing import Any

import pytest

from sessionpool.session import Session
from sessionpool.types import ExecutionStatus
from tests.egress.netlab import Internet

#: what the proxy adds to requests for ``SECRET``; the session must never see it
SECRET_VALUE = "Bearer sk-test-9f2c51a7e3d84b06b1c4"
SECRET_HEADERS = (("Authorization", SECRET_VALUE),)
NET_ALLOW = (
    Internet.ALLOWED,
    Internet.OTHER_ALLOWED,
    Internet.INDEX,
    Internet.SECRET,
    Internet.PRIVATE,
    Internet.LOOPBACK,
    Internet.METADATA,
)
#: the flood pool's limits: few enough that a flood meets them at once
FLOOD_CONNECTIONS = 4
FLOOD_PER_SECOND = 5.0
DENIAL = "blocked by sessionpool egress policy"


def netns_usable() -> str | None:
    """Why the test internet cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root to build a network namespace"
    try:
        result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    except FileNotFoundError:
        return "needs the ip command (iproute2)"
    if result.returncode != 0:
        return f"ip netns does not work here: {result.stderr.strip()}"
    return None


# --- running code in a session ------------------------------------------------------------------

#: session-side helpers every probe gets: ``fetch`` (urllib through the session's proxy
#: settings) and ``attempt`` (a call's OSError as its errno name)
PRELUDE = textwrap.dedent(
    r"""
    import errno as _errno, json as _json, socket, ssl, urllib.error, urllib.request

    def fetch(url, headers=None, timeout=10):
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return {"status": resp.status, "body": resp.read().decode("utf-8", "replace")}
        except urllib.error.HTTPError as exc:
            return {"status": exc.code, "reason": exc.reason,
                    "body": exc.read().decode("utf-8", "replace")}
        except urllib.error.URLError as exc:
            return {"status": None, "error": repr(exc.reason)}
        except OSError as exc:
            return {"status": None, "error": repr(exc)}

    def attempt(fn, *args):
        try:
            fn(*args)
        except OSError as exc:
            return _errno.errorcode.get(exc.errno, repr(exc))
        return "ok"

    PROXY = ("127.0.0.1", 3128)

    def talk(data, timeout=10):
        # raw bytes to the proxy; all it answers until it closes (latin-1 text)
        s = socket.create_connection(PROXY, timeout=timeout)
        out = b""
        try:
            s.sendall(data)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except OSError as exc:
            out += f"<{type(exc).__name__}>".encode()
        finally:
            s.close()
        return out.decode("latin-1")

    def tunnel(host, port=443, timeout=10):
        # a socket through CONNECT host:port, and the proxy's answer head
        s = socket.create_connection(PROXY, timeout=timeout)
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            byte = s.recv(1)
            if not byte:
                break
            head += byte
        return s, head.decode("latin-1")

    def tls_through(host, name, port=443):
        # CONNECT host, then a TLS handshake with SNI name (None: no SNI) inside
        s, head = tunnel(host, port)
        ctx = ssl.create_default_context()
        if name is None:
            ctx.check_hostname = False
        try:
            with ctx.wrap_socket(s, server_hostname=name) as t:
                request = f"GET /echo HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n"
                t.sendall(request.encode())
                body = b""
                while chunk := t.recv(65536):
                    body += chunk
                return {"head": head, "tls": "ok", "answer": body.decode("latin-1")}
        except ssl.SSLError as exc:
            return {"head": head, "tls": exc.reason or repr(exc)}
        except OSError as exc:
            return {"head": head, "tls": repr(exc)}
        finally:
            s.close()
    """
)


async def run(session: Session, code: str, timeout: float = 60.0) -> Any:
    """Run ``code`` (with ``PRELUDE``) in the session; its last line is an expression whose
    value, as JSON, is returned."""
    tree = ast.parse(textwrap.dedent(code))
    last = tree.body.pop()
    assert isinstance(last, ast.Expr), "the probe must end with an expression"
    value = ast.unparse(last.value)
    program = PRELUDE + ast.unparse(tree) + f"\nprint('@@' + _json.dumps({value}))\n"
    result = await session.execute(program, timeout=timeout)
    assert result.status is ExecutionStatus.OK, (result.stdout, result.stderr, result.error)
    lines = [line for line in result.stdout.splitlines() if line.startswith("@@")]
    assert lines, (result.stdout, result.stderr)
    return json.loads(lines[-1][2:])


def decisions(session: Session, host: str | None = None) -> list[dict[str, Any]]:
    """The session's recent egress decisions (for ``host`` only, if given)."""
    recent = session.network()["recent"]
    assert isinstance(recent, list)
    return [d for d in recent if host is None or d["host"] == host]


async def wait_for_decision(
    session: Session, host: str, verdict: str, timeout: float = 5.0
) -> dict[str, Any]:
    """The session's latest decision on ``host`` with ``verdict``, once the proxy made it (it
    decides on its own thread: some decisions follow a call only after it returned)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [d for d in decisions(session, host) if d["verdict"] == verdict]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, (host, verdict, decisions(session))
        await asyncio.sleep(0.05)


def egress_lines(caplog: pytest.LogCaptureFixture, session: Session) -> list[str]:
    """What the proxy logged about ``session`` (the caller set caplog's level)."""
    label = f"session {session.pool_name}/{session.identifier}:"
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "sessionpool.egress" and label in r.getMessage()
    ]

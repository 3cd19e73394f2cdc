"""sessionpool's own client over https with the self-signed CA: argument, variable, CLI flag."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sessionpool import Client, ConnectionFailed
from sessionpool.server.testing import ServerProcess

pytestmark = pytest.mark.jail


def test_verify_with_the_ca(tls_server: ServerProcess, ca_pem: str) -> None:
    with Client(tls_server.endpoint(), api_key=tls_server.api_key, verify=ca_pem) as c:
        s = c.session()
        assert s.run("6 * 7").text == "42"
        s.close()
    with (
        Client(tls_server.endpoint(), api_key=tls_server.api_key) as c,
        pytest.raises(ConnectionFailed, match="verify="),
    ):
        c.sessions()


def test_ca_from_the_environment(
    tls_server: ServerProcess, ca_pem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SESSIONPOOL_CA", ca_pem)
    with Client(tls_server.endpoint(), api_key=tls_server.api_key) as c:
        assert isinstance(c.sessions(), list)


def test_cli_ca_flag(tls_server: ServerProcess, ca_pem: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPOOL_")}
    env["SESSIONPOOL_API_KEY"] = tls_server.api_key or ""
    cmd = [sys.executable, "-m", "sessionpool.cli", "exec", "--endpoint", tls_server.endpoint()]
    done = subprocess.run([*cmd, "--ca", ca_pem, "1 + 1"], capture_output=True, text=True, env=env)
    assert (done.returncode, done.stdout) == (0, "2\n"), done.stderr
    refused = subprocess.run([*cmd, "1 + 1"], capture_output=True, text=True, env=env)
    assert refused.returncode == 7  # UNREACHABLE: the certificate is not trusted

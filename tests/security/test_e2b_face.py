"""Escape and cross-sandbox cases through the E2B face, with the unmodified SDK, against the
suite's server (the same jail as every other face; these check that the E2B routes give an
attacker nothing more): host files, the server's environment, the host's processes, the host's
loopback, namespaces and mounts, from both the code interpreter and envd's commands; and another
sandbox's files, processes and traffic by id, path or header."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess
from tests.security.conftest import CANARY, CANARY_ENV

pytestmark = pytest.mark.jail

e2b = pytest.importorskip("e2b_code_interpreter")


@pytest.fixture(scope="module")
def e2b_key(server: ServerProcess) -> Iterator[str]:
    _, key = KeyStore(server.data_dir / "keys.json").create("mallory", e2b=True)
    env = {"E2B_API_URL": server.url, "E2B_SANDBOX_URL": server.url, "E2B_API_KEY": key}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield key
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def sbx(e2b_key: str) -> Iterator[e2b.Sandbox]:
    sandbox = e2b.Sandbox.create()
    try:
        yield sandbox
    finally:
        sandbox.kill()


def shell(sbx: e2b.Sandbox, command: str) -> tuple[int, str]:
    """Exit code and output of a command (a non-zero exit is an answer here, not a failure)."""
    from e2b.sandbox.commands.command_handle import CommandExitException

    try:
        done = sbx.commands.run(command, timeout=30)
    except CommandExitException as exc:
        return exc.exit_code, exc.stdout + exc.stderr
    return done.exit_code, done.stdout + done.stderr


@pytest.mark.parametrize(
    "path", ["/etc/shadow", "/root/.ssh/authorized_keys", "/proc/kcore", "/var/lib/sessionpool"]
)
def test_host_files_are_not_there_for_commands(sbx: e2b.Sandbox, path: str) -> None:
    code, out = shell(sbx, f"cat {path}")
    assert code != 0 and ("No such file" in out or "Permission denied" in out), (code, out)


def test_the_servers_environment_is_not_there(sbx: e2b.Sandbox) -> None:
    _, out = shell(sbx, "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
    assert CANARY not in out and CANARY_ENV not in out
    ex = sbx.run_code("import os; str(dict(os.environ))")
    assert ex.error is None and CANARY not in (ex.text or "")


def test_no_host_process_is_visible(sbx: e2b.Sandbox) -> None:
    code, out = shell(sbx, "ls /proc | grep -c '^[0-9]'")
    assert code == 0 and int(out.strip()) < 20  # the session's own few processes
    code, out = shell(sbx, f"kill -0 {os.getpid()} && echo alive || echo gone")
    assert "gone" in out


def test_the_hosts_loopback_is_not_reachable(sbx: e2b.Sandbox, server: ServerProcess) -> None:
    port = httpx.URL(server.url).port
    ex = sbx.run_code(
        "import socket\n"
        "s = socket.socket(); s.settimeout(2)\n"
        f"r = s.connect_ex(('127.0.0.1', {port})); r != 0"
    )
    assert ex.error is None and ex.text == "True"


@pytest.mark.parametrize("command", ["mount -t tmpfs x /mnt", "unshare -U true", "chroot / true"])
def test_namespaces_and_mounts_are_refused(sbx: e2b.Sandbox, command: str) -> None:
    code, out = shell(sbx, command)
    assert code != 0, out


def test_another_sandboxs_files_processes_and_traffic_stay_its_own(
    sbx: e2b.Sandbox, e2b_key: str, server: ServerProcess
) -> None:
    other = e2b.Sandbox.create()
    try:
        other.files.write("secret.txt", "the other's")
        background = other.commands.run("sleep 60", background=True)
        # by path: the sandbox's own workspace only
        assert not sbx.files.exists("secret.txt")
        code, _ = shell(sbx, "cat /mnt/data/secret.txt ../secret.txt /home/user/secret.txt")
        assert code != 0
        # by pid: each sandbox has its own pid namespace; the other's process is not listed
        # here, whatever its number
        assert all("sleep 60" not in " ".join([p.cmd, *p.args]) for p in sbx.commands.list())
        assert any("sleep 60" in " ".join([p.cmd, *p.args]) for p in other.commands.list())
        # by header: this sandbox's token with the other's id is refused
        r = httpx.post(
            server.url + "/execute",
            headers={
                "E2b-Sandbox-Id": other.sandbox_id,
                "E2b-Sandbox-Port": "49999",
                "X-Access-Token": sbx._envd_access_token or "",
            },
            json={"code": "open('secret.txt').read()"},
            timeout=30,
        )
        assert r.status_code == 401 and "the other's" not in r.text
        background.kill()
    finally:
        other.kill()

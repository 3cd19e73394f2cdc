"""envd through the unmodified E2B SDK (``e2b`` 2.63.0, ``e2b-code-interpreter`` 2.11.5): the
filesystem service and the REST file routes, and the process service (commands and the PTY),
against a real server with jailed sessions; and what one sandbox cannot reach of another."""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2b import CommandExitException, FileType, NotFoundException, PtySize
from e2b.exceptions import InvalidArgumentException, SandboxException
from e2b_code_interpreter import AsyncSandbox, Sandbox

from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess
from sessionpool.tenancy import Scope

pytestmark = pytest.mark.jail


@pytest.fixture
def e2b_env(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    _, key = KeyStore(server.data_dir / "keys.json").create(
        f"envd-{uuid.uuid4().hex[:8]}", frozenset({Scope.EXECUTE, Scope.FILES}), e2b=True
    )
    monkeypatch.setenv("E2B_API_URL", server.url)
    monkeypatch.setenv("E2B_SANDBOX_URL", server.url)
    monkeypatch.setenv("E2B_API_KEY", key)
    yield key


@pytest.fixture
def sbx(e2b_env: str) -> Iterator[Sandbox]:
    with Sandbox.create() as sandbox:
        yield sandbox


# -- files -------------------------------------------------------------------------------------


def test_files_round_trip_list_rename_remove(sbx: Sandbox) -> None:
    info = sbx.files.write("/home/user/notes/a.txt", "hello")
    assert info.path == "/home/user/notes/a.txt" and info.type == FileType.FILE
    assert sbx.files.read("/home/user/notes/a.txt") == "hello"
    assert sbx.files.read("notes/a.txt") == "hello"  # relative to the home
    blob = bytes(range(256)) * 1000
    sbx.files.write("data.bin", blob)
    assert bytes(sbx.files.read("data.bin", format="bytes")) == blob
    # the home is the workspace: code sees the same files
    assert sbx.run_code("open('/mnt/data/notes/a.txt').read()").text == "'hello'"

    assert sbx.files.exists("/home/user/notes") and not sbx.files.exists("nothing.txt")
    assert sbx.files.make_dir("/home/user/deep/er") is True
    assert sbx.files.make_dir("/home/user/deep/er") is False
    listed = {e.path: e for e in sbx.files.list("/home/user")}
    assert listed["/home/user/notes"].type == FileType.DIR
    assert listed["/home/user/data.bin"].size == len(blob)
    assert "/home/user/notes/a.txt" not in listed  # depth 1
    deep = {e.path for e in sbx.files.list("/home/user", depth=3)}
    assert {"/home/user/notes/a.txt", "/home/user/deep/er"} <= deep
    stat = sbx.files.get_info("notes/a.txt")
    assert stat.size == 5 and stat.name == "a.txt"

    moved = sbx.files.rename("/home/user/notes/a.txt", "/home/user/moved/b.txt")
    assert moved.path == "/home/user/moved/b.txt"
    assert sbx.files.read("moved/b.txt") == "hello"
    assert not sbx.files.exists("notes/a.txt")
    sbx.files.remove("/home/user/moved")
    assert not sbx.files.exists("moved/b.txt")
    with pytest.raises(NotFoundException):
        sbx.files.read("moved/b.txt")

    # several files in one multipart upload; an octet-stream upload
    infos = sbx.files.write_files(
        [{"path": "m/one.txt", "data": "1"}, {"path": "/home/user/m/two.txt", "data": b"2"}]
    )
    assert sorted(i.path for i in infos) == ["/home/user/m/one.txt", "/home/user/m/two.txt"]
    sbx.files.write("stream.txt", b"streamed", use_octet_stream=True)
    assert sbx.files.read("stream.txt") == "streamed"
    sbx.files.write("zipped.txt", "inflated on arrival" * 1000, gzip=True)
    assert sbx.files.read("zipped.txt") == "inflated on arrival" * 1000
    assert b"".join(sbx.files.read("data.bin", format="stream")) == blob
    # /mnt/data names the same files, and answers keep that name
    assert sbx.files.write("/mnt/data/x.txt", "x").path == "/mnt/data/x.txt"
    assert sbx.files.read("/home/user/x.txt") == "x"


def test_watch_dir_reports_changes(sbx: Sandbox) -> None:
    sbx.files.make_dir("watched")
    handle = sbx.files.watch_dir("/home/user/watched")
    sbx.files.write("watched/new.txt", "1")
    sbx.commands.run("echo more >> /mnt/data/watched/new.txt; rm -f /mnt/data/watched/gone")
    deadline = time.monotonic() + 5
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline and ("new.txt", "create") not in seen:
        time.sleep(0.3)
        seen |= {(e.name, e.type.value) for e in handle.get_new_events()}
    handle.stop()
    assert ("new.txt", "create") in seen


def test_paths_outside_the_workspace_and_planted_links_are_refused(sbx: Sandbox) -> None:
    sbx.files.write("inside.txt", "mine")
    sbx.run_code(
        "import os\nos.symlink('/etc/passwd', '/mnt/data/passwd-link')\n"
        "os.symlink('/etc', '/mnt/data/etc-link')"
    )
    for path in ("../../etc/passwd", "/etc/passwd", "/home/user/../../etc/passwd", "/tmp/x"):
        with pytest.raises((InvalidArgumentException, SandboxException, NotFoundException)):
            sbx.files.read(path)
        with pytest.raises((InvalidArgumentException, SandboxException)):
            sbx.files.write(path, "pwned")
        with pytest.raises((InvalidArgumentException, SandboxException)):
            sbx.files.list(path)
        with pytest.raises((InvalidArgumentException, SandboxException)):
            sbx.files.rename("inside.txt", path)
    for path in ("passwd-link", "etc-link/passwd", "etc-link/hostname"):
        with pytest.raises((InvalidArgumentException, SandboxException)):
            sbx.files.read(path)
    with pytest.raises((InvalidArgumentException, SandboxException)):
        sbx.files.write("etc-link/planted", "pwned")
    with pytest.raises((InvalidArgumentException, SandboxException)):
        sbx.files.list("etc-link")
    assert sbx.files.read("inside.txt") == "mine"


# -- commands ------------------------------------------------------------------------------------


def test_commands_foreground_env_cwd_and_exit_codes(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo hi; echo oops >&2")
    assert result.stdout == "hi\n" and result.stderr == "oops\n" and result.exit_code == 0
    assert sbx.commands.run("echo $WHO", envs={"WHO": "env var"}).stdout == "env var\n"
    sbx.files.make_dir("work")
    assert sbx.commands.run("pwd", cwd="/home/user/work").stdout == "/mnt/data/work\n"
    assert sbx.commands.run("pwd").stdout == "/mnt/data\n"
    # /home/user is the workspace inside the jail too
    sbx.files.write("work/x.txt", "via home")
    assert sbx.commands.run("cat /home/user/work/x.txt").stdout == "via home"
    with pytest.raises(CommandExitException) as failed:
        sbx.commands.run("echo partial; exit 7")
    assert failed.value.exit_code == 7 and failed.value.stdout == "partial\n"
    # both user names run as the sandbox's one unprivileged user
    uid = sbx.commands.run("id -u", user="root").stdout
    assert uid == sbx.commands.run("id -u", user="user").stdout
    assert sbx.run_code("import os; os.getuid()").text == uid.strip()


def test_background_commands_list_stdin_and_kill(sbx: Sandbox) -> None:
    ticker = sbx.commands.run("while true; do echo tick; sleep 0.2; done", background=True)
    reader = sbx.commands.run("read line; echo got:$line", background=True, stdin=True)
    pids = {p.pid for p in sbx.commands.list()}
    assert {ticker.pid, reader.pid} <= pids
    assert any(p.cmd == "/bin/bash" and "-c" in p.args for p in sbx.commands.list())

    sbx.commands.send_stdin(reader.pid, "hello\n")
    done = reader.wait()
    assert done.stdout == "got:hello\n" and done.exit_code == 0

    time.sleep(0.5)
    assert sbx.commands.kill(ticker.pid) is True
    with pytest.raises(CommandExitException) as killed:
        ticker.wait()
    assert killed.value.exit_code == 137 and "tick" in killed.value.stdout
    assert ticker.pid not in {p.pid for p in sbx.commands.list()}
    assert sbx.commands.kill(ticker.pid) is False

    # a running command can be reconnected to, and its stdin closed
    cat = sbx.commands.run("cat; echo closed", background=True, stdin=True)
    again = sbx.commands.connect(cat.pid)
    sbx.commands.send_stdin(cat.pid, "line\n")
    sbx.commands.close_stdin(cat.pid)
    assert again.wait().stdout == "line\nclosed\n"


def test_commands_run_beside_code(sbx: Sandbox) -> None:
    sleeper = sbx.commands.run("sleep 1; echo woke", background=True)
    started = time.monotonic()
    assert sbx.run_code("1 + 1").text == "2"
    assert time.monotonic() - started < 1
    assert sleeper.wait().stdout == "woke\n"


def test_pty(sbx: Sandbox) -> None:
    output = bytearray()
    ended: list[BaseException] = []

    def follow() -> None:
        try:
            term.wait(on_pty=output.extend)
        except BaseException as exc:
            ended.append(exc)

    def shows(text: bytes) -> None:
        deadline = time.monotonic() + 10
        while text not in output and time.monotonic() < deadline:
            time.sleep(0.05)
        assert text in output, bytes(output)

    term = sbx.pty.create(PtySize(rows=20, cols=70), cwd="/home/user")
    follower = threading.Thread(target=follow)
    follower.start()
    sbx.pty.send_stdin(term.pid, b"stty size; tty; pwd\n")
    shows(b"20 70")
    shows(b"/mnt/data")
    sbx.pty.resize(term.pid, PtySize(rows=30, cols=90))
    sbx.pty.send_stdin(term.pid, b"stty size; exit 3\n")
    follower.join(10)
    assert b"30 90" in output and b"/dev/pts/0" in output
    assert isinstance(ended[0], CommandExitException) and ended[0].exit_code == 3


async def test_async_sdk_commands_and_files(e2b_env: str) -> None:
    sandbox = await AsyncSandbox.create()
    try:
        await sandbox.files.write("a.txt", "async")
        assert await sandbox.files.read("a.txt") == "async"
        out = await sandbox.commands.run("cat a.txt; echo; echo err >&2")
        assert out.stdout == "async\n" and out.stderr == "err\n"
        handle = await sandbox.commands.run("sleep 30", background=True)
        assert handle.pid in {p.pid for p in await sandbox.commands.list()}
        assert await sandbox.commands.kill(handle.pid)
    finally:
        await sandbox.kill()


# -- one sandbox cannot reach another's ------------------------------------------------------------


def test_a_sandbox_cannot_reach_another_sandboxs_files_or_processes(e2b_env: str) -> None:
    with Sandbox.create() as one, Sandbox.create() as two:
        one.files.write("secret.txt", "one's")
        sleeper = one.commands.run("sleep 60", background=True)
        # by path: each sandbox's home is its own workspace
        assert not two.files.exists("secret.txt")
        with pytest.raises(NotFoundException):
            two.files.read("/home/user/secret.txt")
        assert "one's" not in two.commands.run("cat /mnt/data/secret.txt 2>&1 || true").stdout
        # by pid: pids are each sandbox's own
        assert sleeper.pid not in {p.pid for p in two.commands.list()}
        assert two.commands.kill(sleeper.pid) is False
        with pytest.raises(SandboxException):
            two.commands.send_stdin(sleeper.pid, "x")
        assert sleeper.pid in {p.pid for p in one.commands.list()}
        # by header: the other sandbox's id with this one's access token is refused
        url = f"{one.envd_api_url}/files"
        headers = {
            "E2b-Sandbox-Id": one.sandbox_id,
            "E2b-Sandbox-Port": "49983",
            "X-Access-Token": str(two._envd_access_token),
        }
        answer = httpx.get(url, params={"path": "secret.txt"}, headers=headers)
        assert answer.status_code == 401
        one.commands.kill(sleeper.pid)


# -- the wire, as the SDKs' Connect client speaks it -------------------------------------------


def _frames(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """Connect's enveloped frames: (flags, JSON message)."""
    frames, at = [], 0
    while at < len(body):
        flags, size = body[at], int.from_bytes(body[at + 1 : at + 5], "big")
        frames.append((flags, json.loads(body[at + 5 : at + 5 + size] or b"{}")))
        at += 5 + size
    return frames


def test_a_quiet_process_gets_keepalives_and_still_ends(sbx: Sandbox) -> None:
    """A stream waiting longer than the client's keepalive interval sends keepalive events
    and keeps following the process (its end still arrives), as envd does."""
    message = json.dumps(
        {"process": {"cmd": "/bin/bash", "args": ["-c", "sleep 2.5; echo done"]}}
    ).encode()
    answer = httpx.post(
        f"{sbx.envd_api_url}/process.Process/Start",
        content=b"\0" + len(message).to_bytes(4, "big") + message,
        headers={
            "Content-Type": "application/connect+json",
            "Connect-Protocol-Version": "1",
            "Keepalive-Ping-Interval": "1",
            "E2b-Sandbox-Id": sbx.sandbox_id,
            "E2b-Sandbox-Port": "49983",
            "X-Access-Token": str(sbx._envd_access_token),
        },
        timeout=20,
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/connect+json"
    frames = _frames(answer.content)
    messages = [m["event"] for flags, m in frames if flags == 0]
    events = [next(iter(m)) for m in messages]
    assert events[0] == "start" and events[-1] == "end"
    assert events.count("keepalive") >= 2, events
    data = [m["data"] for m in messages if "data" in m]
    assert data == [{"stdout": "ZG9uZQo="}]  # bytes are base64 in Connect's JSON
    assert messages[-1]["end"]["exited"] is True
    assert frames[-1] == (2, {})  # the end-of-stream frame, no error


def test_a_gzip_upload_is_bounded_by_the_file_limit_once_inflated(sbx: Sandbox) -> None:
    """A small gzip body that inflates past the per-file limit is refused as it inflates
    (413), never held whole by the server, and leaves no file behind."""
    limit = 128 * 1000 * 1000  # the pool's limits.file_bytes (the default)
    zeros = gzip.compress(b"\0" * (limit + (1 << 20)), compresslevel=9)
    assert len(zeros) < limit // 500
    answer = httpx.post(
        f"{sbx.envd_api_url}/files",
        params={"path": "bomb.bin"},
        content=zeros,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Encoding": "gzip",
            "E2b-Sandbox-Id": sbx.sandbox_id,
            "E2b-Sandbox-Port": "49983",
            "X-Access-Token": str(sbx._envd_access_token),
        },
        timeout=60,
    )
    assert answer.status_code == 413, answer.text
    assert not sbx.files.exists("bomb.bin")


def _envelope(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return b"\0" + len(body).to_bytes(4, "big") + body


def test_stream_input_and_a_process_named_by_its_tag(sbx: Sandbox) -> None:
    """StreamInput (a client stream: the process, then its input) feeds a running command;
    List reports the tag a process was started with."""
    cat = sbx.commands.run("cat", background=True, stdin=True)
    headers = {
        "Content-Type": "application/connect+json",
        "Connect-Protocol-Version": "1",
        "E2b-Sandbox-Id": sbx.sandbox_id,
        "E2b-Sandbox-Port": "49983",
        "X-Access-Token": str(sbx._envd_access_token),
    }
    body = (
        _envelope({"start": {"process": {"pid": cat.pid}}})
        + _envelope({"data": {"input": {"stdin": "b25lCg=="}}})  # "one\n"
        + _envelope({"keepalive": {}})
        + _envelope({"data": {"input": {"stdin": "dHdvCg=="}}})  # "two\n"
    )
    answer = httpx.post(
        f"{sbx.envd_api_url}/process.Process/StreamInput", content=body, headers=headers
    )
    assert answer.status_code == 200 and _frames(answer.content)[-1] == (2, {}), answer.content
    sbx.commands.close_stdin(cat.pid)
    assert cat.wait().stdout == "one\ntwo\n"

    start = _envelope(
        {"process": {"cmd": "/bin/sleep", "args": ["30"]}, "tag": "napper", "stdin": False}
    )
    with httpx.stream(
        "POST", f"{sbx.envd_api_url}/process.Process/Start", content=start, headers=headers
    ) as stream:
        first = next(stream.iter_raw())
        pid = json.loads(first[5:])["event"]["start"]["pid"]
        tagged = {p.tag: p.pid for p in sbx.commands.list()}
        assert tagged.get("napper") == pid
        assert sbx.commands.kill(pid)

"""Processes of the process service (E2B's envd) in a jailed session: started, fed, signalled
and listed through the session, supervised by the kernel, while cells run alongside."""

from __future__ import annotations

import asyncio
import signal

import pytest

from sessionpool import errors
from sessionpool.session import ProcessHandle, Session
from sessionpool.types import ExecutionStatus, ProcessEvent, ProcessSpec

pytestmark = pytest.mark.jail


def bash(command: str, **kwargs: object) -> ProcessSpec:
    return ProcessSpec("/bin/bash", ("-l", "-c", command), **kwargs)  # type: ignore[arg-type]


async def collect(
    handle: ProcessHandle, timeout: float = 10.0
) -> tuple[bytes, bytes, ProcessEvent]:
    out, err = bytearray(), bytearray()
    async with asyncio.timeout(timeout):
        async for event in handle.events():
            if event.kind == "end":
                return bytes(out), bytes(err), event
            (out if event.kind in ("stdout", "pty") else err).extend(event.data)
    raise AssertionError("no end event")


async def test_output_exit_code_env_and_cwd(session: Session) -> None:
    await session.execute("import os; os.makedirs('sub', exist_ok=True)")
    handle = await session.start_process(
        bash("echo out $GREETING; pwd; echo err >&2; exit 3", envs={"GREETING": "hi"}, cwd="sub")
    )
    out, err, end = await collect(handle)
    assert out == b"out hi\n/mnt/data/sub\n"
    assert err == b"err\n"
    assert end.exit_code == 3 and end.signal is None


async def test_runs_as_the_sessions_user_in_its_jail(session: Session) -> None:
    handle = await session.start_process(bash("id -u; cat /proc/1/cmdline | head -c 20; ls /home"))
    out, _, end = await collect(handle)
    uid = (await session.execute("import os; os.getuid()")).result
    assert uid is not None
    assert out.split(b"\n")[0].decode() == uid.data["text/plain"]
    assert end.exit_code != 127


async def test_stdin_input_and_close(session: Session) -> None:
    handle = await session.start_process(bash("read a; echo got $a; cat; echo done"))
    await session.send_process_input(handle.pid, b"first\n")
    await session.send_process_input(handle.pid, b"rest\n")
    await session.close_process_stdin(handle.pid)
    out, _, end = await collect(handle)
    assert out == b"got first\nrest\ndone\n"
    assert end.exit_code == 0


async def test_background_process_runs_while_a_cell_runs_and_is_listed(session: Session) -> None:
    handle = await session.start_process(
        bash("while true; do echo tick; sleep 0.1; done", tag="ticker")
    )
    cell = asyncio.create_task(session.execute("import time; time.sleep(0.5); 'slept'"))
    first = await asyncio.wait_for(anext(handle.events()), 5)
    assert first.kind == "stdout" and first.data.startswith(b"tick")
    listed = await session.list_processes()  # answered while the cell runs
    assert not cell.done()
    assert [(p.pid, p.tag, p.cmd) for p in listed] == [(handle.pid, "ticker", "/bin/bash")]
    result = await cell
    assert result.status is ExecutionStatus.OK
    follower = session.connect_process(handle.pid)
    await session.signal_process(handle.pid, signal.SIGKILL)
    _, _, end = await collect(follower)
    assert end.signal == signal.SIGKILL and end.exit_code == 128 + signal.SIGKILL
    assert await session.list_processes() == []


async def test_sigterm_reaches_the_group(session: Session) -> None:
    handle = await session.start_process(bash("sleep 30 & sleep 30; echo never"))
    await asyncio.sleep(0.2)
    await session.signal_process(handle.pid, signal.SIGTERM)
    out, _, end = await collect(handle)
    assert out == b"" and end.signal == signal.SIGTERM
    # none left running (a zombie waits a moment for the kernel, pid 1, to reap it)
    ps = await session.run_shell("ps -eo stat=,comm= | grep -v '^Z' | grep -c sleep || true")
    assert ps.stdout.strip() == "0"


async def test_output_flood_is_bounded(tight_session: Session) -> None:
    limit = tight_session.pool_config.limits.output_bytes
    handle = await tight_session.start_process(bash("head -c 50000000 /dev/zero; echo tail >&2"))
    out, err, end = await collect(handle, timeout=30)
    assert len(out) + len(err) <= limit
    assert end.exit_code == 0 and end.dropped >= 50_000_000 - limit


async def test_a_terminal(session: Session) -> None:
    handle = await session.start_process(
        bash("tty >/dev/null && echo isatty; stty size", pty=(100, 30))
    )
    out, _, end = await collect(handle)
    assert b"isatty" in out and b"30 100" in out
    assert end.exit_code == 0


async def test_errors(session: Session) -> None:
    with pytest.raises(errors.InvalidArgument, match="no such file"):
        await session.start_process(ProcessSpec("/no/such/binary"))
    with pytest.raises(errors.ObjectNotFound):
        await session.signal_process(99999, signal.SIGKILL)
    with pytest.raises(errors.ObjectNotFound):
        session.connect_process(99999)
    with pytest.raises(errors.InvalidArgument, match="signal"):
        handle = await session.start_process(bash("sleep 5"))
        await session.signal_process(handle.pid, signal.SIGUSR1)


async def test_processes_end_with_the_session_kernel(session: Session) -> None:
    handle = await session.start_process(bash("sleep 60"))
    r = await session.execute("import os; os._exit(1)")
    assert r.status is ExecutionStatus.LOST
    _, _, end = await collect(handle)
    assert end.error and "interpreter ended" in end.error
    assert await session.list_processes() == []


async def test_quick_processes_one_after_another_keep_their_output(session: Session) -> None:
    """A process that ends frees its pipes' fd numbers for the next one: output must never be
    read from a reused fd on behalf of the process that ended."""
    for i in range(40):
        handle = await session.start_process(ProcessSpec("/bin/echo", (str(i),)))
        out, _, end = await collect(handle)
        assert (out, end.exit_code) == (f"{i}\n".encode(), 0)


async def test_junk_frames_from_session_code_are_dropped_not_buffered(session: Session) -> None:
    """Code in the session can write frames to the kernel's socket. With processes running
    the host reads the socket between calls; frames no call is due are dropped there, never
    queued in the server, and the session, its calls and its processes carry on."""
    # the ticker stays silent until told: its output frames, written by the kernel while the
    # cell's junk is written to the same socket, would interleave with the junk (session code
    # can always garble its own stream; that ends its own interpreter, which is not the point)
    ticker = await session.start_process(
        bash("read go; while true; do echo tick; sleep 0.05; done")
    )
    flood = (
        "import json, os, socket, struct\n"
        "def is_socket(fd):\n"
        "    try:\n"
        "        return os.readlink(f'/proc/self/fd/{fd}').startswith('socket:')\n"
        "    except OSError:\n"
        "        return False\n"
        "fds = [int(f) for f in os.listdir('/proc/self/fd') if is_socket(f)]\n"
        "body = json.dumps({'op': 'result', 'id': -5, 'stdout': 'x' * 100000}).encode()\n"
        "frame = struct.pack('>I', len(body)) + body\n"
        "sock = socket.socket(fileno=os.dup(fds[0]))\n"
        "for _ in range(200):\n"
        "    sock.sendall(frame)\n"
        "sock.detach(); 'sent'"
    )
    result = await session.execute(flood)
    assert result.status is ExecutionStatus.OK, result.stderr
    await asyncio.sleep(0.3)  # the frames the cell sent after its reply are read and dropped
    assert session._inbox.qsize() == 0
    again = await session.execute("6 * 7")
    assert again.result is not None and again.result.data["text/plain"] == "42"
    await session.send_process_input(ticker.pid, b"go\n")
    event = await asyncio.wait_for(anext(ticker.events()), 5)
    assert event.kind == "stdout"
    await session.signal_process(ticker.pid, signal.SIGKILL)

"""Resource attacks in the ``tight`` pool. Each hurts only its own session: while it runs,
another session's ``x += 1`` over HTTP keeps answering with its state and a p99 latency under
a bound generous enough for a loaded 2-core machine."""

from __future__ import annotations

import base64
import time

import pytest

from sessionpool.server.testing import ServerProcess
from tests.security.conftest import TIGHT_IMAGE, TIGHT_OUTPUT, TIGHT_PIDS
from tests.security.helpers import Api, LatencyProbe

pytestmark = pytest.mark.jail

P99_BOUND = 0.25


def attack(
    api: Api, server: ServerProcess, tight: str, code: str
) -> tuple[dict[str, object], float]:
    """Run ``code`` in the tight session while the probe watches; the result and its duration."""
    api.ok(tight, "x = 41", pool="tight")
    with LatencyProbe(server, P99_BOUND) as probe:
        started = time.monotonic()
        r = api.execute_raw(tight, code, "tight")
        elapsed = time.monotonic() - started
        assert r.status_code == 200, r.text[:1000]
        props: dict[str, object] = r.json()["properties"]
        time.sleep(0.3)  # the victim keeps being measured a little after the attack ends
        probe.check()
    return props, elapsed


def assert_session_answers(api: Api, tight: str, state_kept: bool) -> None:
    found = api.value(tight, "'x' in dir()", pool="tight")
    assert found is state_kept
    assert api.value(tight, "6 * 7", pool="tight") == 42


def test_memory_bomb(api: Api, server: ServerProcess, tight: str) -> None:
    props, _ = attack(
        api,
        server,
        tight,
        "blocks = []\nfor _ in range(128):\n    blocks.append(b'x' * (16 << 20))",
    )
    assert props["status"] == "Failure"
    assert "MemoryError" in str(props["stderr"]) or "memory" in str(props["stderr"]).lower()
    assert api.value(tight, "6 * 7", pool="tight") == 42


def test_fork_bomb(api: Api, server: ServerProcess, tight: str) -> None:
    code = (
        "import os, time\nkids = 0\n"
        "for _ in range(500):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    kids += 1\n"
        "kids"
    )
    props, _ = attack(api, server, tight, code)
    assert props["status"] == "Success", props["stderr"]
    kids = int(str(props["result"]))
    assert 8 <= kids < TIGHT_PIDS, kids
    assert_session_answers(api, tight, True)


def test_cpu_spin_past_the_timeout_is_interrupted_state_kept(
    api: Api, server: ServerProcess, tight: str
) -> None:
    props, elapsed = attack(api, server, tight, "while True:\n    pass")
    assert props["status"] == "Failure"
    assert "KeyboardInterrupt" in str(props["stderr"]) or "Timeout" in str(props["stderr"])
    assert elapsed < 3 + 2.5
    assert_session_answers(api, tight, True)


def test_sigint_ignoring_spin_is_killed_state_lost(
    api: Api, server: ServerProcess, tight: str
) -> None:
    props, elapsed = attack(
        api,
        server,
        tight,
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass",
    )
    assert props["status"] == "Failure"
    assert "lost" in str(props["stderr"]).lower()
    assert elapsed < 3 + 1 + 2.5
    assert_session_answers(api, tight, False)


def test_fd_exhaustion(api: Api, server: ServerProcess, tight: str) -> None:
    code = (
        "import os\nfds = []\n"
        "try:\n"
        "    while True:\n"
        "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as e:\n"
        "    err = e.errno\n"
        "n = len(fds)\n"
        "for fd in fds:\n"
        "    os.close(fd)\n"
        "n"
    )
    props, _ = attack(api, server, tight, code)
    assert props["status"] == "Success", props["stderr"]
    assert 100 < int(str(props["result"])) < 256
    assert_session_answers(api, tight, True)


def test_fd_exhaustion_left_in_place_does_not_break_the_session(
    api: Api, server: ServerProcess, tight: str
) -> None:
    """Descriptors left open at the end of the cell: the next cell still runs and answers."""
    code = (
        "import os\nhoard = []\ntry:\n    while True:\n"
        "        hoard.append(os.open('/dev/null', os.O_RDONLY))\nexcept OSError:\n    pass\n"
        "len(hoard)"
    )
    props, _ = attack(api, server, tight, code)
    assert props["status"] == "Success", props["stderr"]
    assert api.value(tight, "len(hoard) > 100", pool="tight") is True


@pytest.mark.parametrize("how", ["print", "fd-write"])
def test_one_gigabyte_of_stdout(api: Api, server: ServerProcess, tight: str, how: str) -> None:
    code = {
        "print": "block = 'x' * (1 << 20)\nfor i in range(1024):\n    print(f'{i} {block}')",
        "fd-write": "import os\nblock = b'x' * (1 << 20)\nfor _ in range(1024):\n"
        "    os.write(1, block)",
    }[how]
    props, _ = attack(api, server, tight, code)
    stdout = str(props["stdout"])
    assert len(stdout.encode()) <= TIGHT_OUTPUT
    assert "truncated" in str(props["stderr"])
    assert_session_answers(api, tight, props["status"] == "Success")


def test_a_huge_result_repr(api: Api, server: ServerProcess, tight: str) -> None:
    """A last expression whose repr is 1 GB: MemoryError (256 MiB limit) or a capped value;
    either way the response stays small and the session answers."""
    code = "class Huge:\n    def __repr__(self):\n        return 'y' * (1 << 30)\nHuge()"
    props, _ = attack(api, server, tight, code)
    assert len(str(props["result"])) <= TIGHT_OUTPUT
    assert len(str(props["stdout"])) + len(str(props["stderr"])) <= 4 * TIGHT_OUTPUT
    assert api.value(tight, "6 * 7", pool="tight") == 42


def test_a_large_result_repr_within_memory_is_capped(
    api: Api, server: ServerProcess, tight: str
) -> None:
    props, _ = attack(api, server, tight, "'z' * (64 << 20)")
    assert props["status"] == "Success"
    assert len(str(props["result"])) <= TIGHT_OUTPUT + 1024
    assert_session_answers(api, tight, True)


def test_huge_png(api: Api, server: ServerProcess, tight: str) -> None:
    """An image far past the image cap (and many of them) is dropped, not relayed."""
    code = (
        "from IPython.display import Image, display\nimport os\n"
        "blob = b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(8 << 20)\n"
        "for _ in range(8):\n"
        "    display(Image(data=blob, format='png'))\n"
        "'done'"
    )
    props, _ = attack(api, server, tight, code)
    result = props["result"]
    if isinstance(result, dict):
        assert len(base64.b64decode(result["base64_data"])) <= TIGHT_IMAGE
    assert api.value(tight, "6 * 7", pool="tight") == 42


def test_deep_recursion(api: Api, server: ServerProcess, tight: str) -> None:
    """RecursionError at the default limit. IPython takes about 3.5 s of CPU to format the
    1000-frame traceback, which is past this pool's 3 s at 0.5 CPU, so the cell may also end
    by the deadline (state lost): either way contained, and the session answers again."""
    props, _ = attack(api, server, tight, "def f(n):\n    return f(n + 1)\nf(0)")
    stderr = str(props["stderr"])
    assert props["status"] == "Failure"
    assert "RecursionError" in stderr or "timed out" in stderr, stderr[-500:]
    assert api.value(tight, "6 * 7", pool="tight") == 42


def test_recursion_past_the_c_stack(api: Api, server: ServerProcess, tight: str) -> None:
    """Raising the recursion limit and blowing the C stack crashes only this interpreter."""
    props, _ = attack(
        api,
        server,
        tight,
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
    )
    assert props["status"] == "Failure"
    assert api.value(tight, "6 * 7", pool="tight") == 42


def test_os_exit(api: Api, server: ServerProcess, tight: str) -> None:
    props, _ = attack(api, server, tight, "import os\nos._exit(3)")
    assert props["status"] == "Failure" and "status 3" in str(props["stderr"])
    assert_session_answers(api, tight, False)


def test_segfault_via_ctypes(api: Api, server: ServerProcess, tight: str) -> None:
    props, _ = attack(api, server, tight, "import ctypes\nctypes.string_at(0)")
    assert props["status"] == "Failure" and "signal 11" in str(props["stderr"])
    assert_session_answers(api, tight, False)


def test_threads_that_outlive_the_cell(api: Api, server: ServerProcess, tight: str) -> None:
    code = (
        "import threading, time\nstop = threading.Event()\nticks = [0]\n"
        "def spin():\n    while not stop.is_set():\n        ticks[0] += 1\n"
        "def chatter():\n    while not stop.is_set():\n        print('tick')\n"
        "        time.sleep(0.001)\n"
        "for t in (spin, spin, chatter):\n    threading.Thread(target=t, daemon=True).start()\n"
        "'started'"
    )
    props, _ = attack(api, server, tight, code)
    assert props["status"] == "Success"
    with LatencyProbe(server, P99_BOUND) as probe:
        for i in range(3):
            assert api.value(tight, f"{i} * 2", pool="tight") == i * 2
        assert api.value(tight, "ticks[0] > 0", pool="tight") is True
        probe.check()
    api.ok(tight, "stop.set()", pool="tight")


def test_a_process_left_spinning_in_the_background(
    api: Api, server: ServerProcess, tight: str
) -> None:
    """A detached busy child (CPU bound by the session's cgroup) does not slow other sessions."""
    props, _ = attack(
        api,
        server,
        tight,
        "import subprocess, sys\n"
        "kids = [subprocess.Popen([sys.executable, '-c', 'while True: pass'],"
        " start_new_session=True) for _ in range(3)]\n'spawned'",
    )
    assert props["status"] == "Success"
    with LatencyProbe(server, P99_BOUND) as probe:
        time.sleep(2)
        probe.check()
    api.ok(tight, "[k.kill() for k in kids]", pool="tight")

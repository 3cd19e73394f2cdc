"""Reaching another session: its files, processes, sockets, IPC, shared space; through the API."""

from __future__ import annotations

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.security.conftest import SECOND_KEY
from tests.security.helpers import ATTEMPT, NEW, Api, q

pytestmark = pytest.mark.jail


def test_files_of_another_session_are_invisible(api: Api, ident: str, peer: str) -> None:
    api.ok(ident, "open('/mnt/data/mine.txt', 'w').write('private')")
    assert api.upload(ident, "uploaded.txt", b"private too").status_code == 200
    found = api.value(
        peer,
        ATTEMPT + "sorted(os.listdir('/mnt/data')), attempt(open, '/mnt/data/mine.txt'),"
        " sorted(os.listdir('/mnt')), os.path.exists('/proc/1/root/mnt/data/mine.txt')",
    )
    assert found == ([], "ENOENT", ["data"], False)
    assert api.download(peer, "mine.txt").status_code == 404
    assert api.listing(peer) == []


def test_writes_do_not_reach_another_session(api: Api, ident: str, peer: str) -> None:
    api.ok(ident, "open('/mnt/data/shared-name.txt', 'w').write('A')")
    api.ok(peer, "open('/mnt/data/shared-name.txt', 'w').write('B')")
    assert api.download(ident, "shared-name.txt").content == b"A"
    assert api.download(peer, "shared-name.txt").content == b"B"


def test_processes_of_another_session_are_invisible_and_unsignalable(
    api: Api, ident: str, peer: str
) -> None:
    api.ok(ident, "import subprocess\nsleeper = subprocess.Popen(['sleep', '300'])\nsleeper.pid")
    found = api.value(
        peer,
        "import os, signal\n"
        "cmds = [open(f'/proc/{p}/cmdline', 'rb').read() for p in os.listdir('/proc')"
        " if p.isdigit()]\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)  # every process it may signal\n"
        "except OSError as e:\n"
        "    pass\n"
        "any(b'sleep' in c for c in cmds)",
    )
    assert found is False
    assert api.value(ident, "sleeper.poll() is None") is True  # the peer's kill(-1) missed it
    api.ok(ident, "sleeper.kill()")


def test_tcp_listener_of_another_session_is_unreachable(api: Api, ident: str, peer: str) -> None:
    api.ok(
        ident,
        "import socket\nsrv = socket.socket()\n"
        "srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "srv.bind(('127.0.0.1', 45678))\nsrv.listen()\nsrv.setblocking(False)",
    )
    found = api.value(
        peer,
        ATTEMPT + "import socket\n"
        "def conn():\n"
        "    s = socket.create_connection(('127.0.0.1', 45678), timeout=2)\n"
        "    s.close()\n"
        "attempt(conn)",
    )
    assert found == "ECONNREFUSED"
    assert api.value(ident, ATTEMPT + "attempt(srv.accept)") == "EAGAIN"


def test_udp_to_another_session_is_not_delivered(api: Api, ident: str, peer: str) -> None:
    api.ok(
        ident,
        "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "u.bind(('127.0.0.1', 45679))\nu.setblocking(False)",
    )
    api.ok(
        peer,
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(20):\n"
        "    try:\n"
        "        s.sendto(b'hello', ('127.0.0.1', 45679))\n"
        "    except OSError:\n"
        "        pass",
    )
    assert api.value(ident, ATTEMPT + "import time\ntime.sleep(0.2)\nattempt(u.recv, 100)") == (
        "EAGAIN"
    )


@pytest.mark.parametrize("kind", ["abstract", "path-in-tmp"])
def test_unix_socket_of_another_session_is_unreachable(
    api: Api, ident: str, peer: str, kind: str
) -> None:
    address = "'\\0sp-sec-abstract'" if kind == "abstract" else "'/tmp/sp-sec.sock'"
    api.ok(
        ident,
        f"import socket\nus = socket.socket(socket.AF_UNIX)\nus.bind({address})\nus.listen()",
    )
    found = api.value(
        peer,
        ATTEMPT + f"import socket\nattempt(socket.socket(socket.AF_UNIX).connect, {address})",
    )
    assert found in ("ECONNREFUSED", "ENOENT"), found


def test_sysv_ipc_of_another_session_is_invisible(api: Api, ident: str, peer: str) -> None:
    code = (
        "import ctypes, errno\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "r = libc.shmget(ctypes.c_int(0x5EC), ctypes.c_size_t(4096), ctypes.c_int(FLAGS))\n"
        "r if r != -1 else errno.errorcode[ctypes.get_errno()]"
    )
    created = api.value(ident, code.replace("FLAGS", str(0o1000 | 0o600)))  # IPC_CREAT
    assert isinstance(created, int) and created >= 0
    assert api.value(peer, code.replace("FLAGS", "0")) == "ENOENT"


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_filling_tmp_hurts_only_the_filler(api: Api, tight: str, peer: str, where: str) -> None:
    """/tmp and /dev/shm are per-session tmpfs mounts of a fixed size: one session filling its
    own leaves another's untouched."""
    found = api.value(
        tight,
        ATTEMPT + "def fill():\n"
        f"    with open('{where}/fill', 'wb') as f:\n"
        "        for _ in range(64):\n"
        "            f.write(b'x' * (1 << 20))\n"
        "attempt(fill)",
        pool="tight",
    )
    assert found in ("ENOSPC", "EFBIG"), found
    assert api.value(peer, f"open('{where}/ok', 'wb').write(b'y' * (8 << 20))") == 8 << 20


def test_same_identifier_in_another_pool_is_another_session(api: Api, ident: str) -> None:
    api.ok(ident, "secret = 42\nopen('/mnt/data/p.txt', 'w').write('p')")
    try:
        found = api.value(
            ident, "'secret' in dir(), __import__('os').listdir('/mnt/data')", "other"
        )
        assert found == (False, [])
    finally:
        api.delete_session(ident, pool="other")


def test_keys_are_not_scoped_any_valid_key_reaches_any_session(
    api: Api, server: ServerProcess, ident: str
) -> None:
    """Documented: keys are not scoped (every key is an operator credential). A second valid
    key reaches the same session; a wrong key reaches nothing and learns nothing."""
    api.ok(ident, "marker = 'm'")
    url = f"/pools/default/session{q(ident, NEW)}"
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.get(url, headers={"api-key": SECOND_KEY}).status_code == 200
        wrong = c.get(url, headers={"api-key": SECOND_KEY + "x"})
        assert wrong.status_code == 401 and ident not in wrong.text
        listing = c.get(f"/pools/default/listSessions{q(ident, NEW)}", headers={"api-key": "nope"})
        assert listing.status_code == 401 and ident not in listing.text


def test_sessions_have_distinct_host_uids(api: Api, ident: str, peer: str) -> None:
    """Two sessions' files are owned by different host uids (stat from the host through the
    workspace listing would need the path; the session's own view is enough here: a peer cannot
    even name the other's workspace)."""
    a = api.value(ident, "import os\nos.stat('/mnt/data').st_uid, os.getuid()")
    b = api.value(peer, "import os\nos.stat('/mnt/data').st_uid, os.getuid()")
    assert a == b == (0, 0)  # both see themselves as root of their own user namespace
    found = api.value(ident, "import os\nsorted(os.listdir('/proc/self/root/mnt'))")
    assert found == ["data"]

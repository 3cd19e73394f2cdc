"""The file API against hostile names and hostile workspace contents (links, FIFOs, races)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.security.conftest import CANARY, TIGHT_DISK, TIGHT_FILE
from tests.security.helpers import NEW, Api, assert_client_error, q

pytestmark = pytest.mark.jail


def raw_upload(api: Api, ident: str, filename: bytes, data: bytes) -> httpx.Response:
    """A multipart body built by hand: the file name goes on the wire byte for byte (httpx
    would percent-escape a NUL, a quote or a newline)."""
    boundary = b"sp-sec-boundary"
    body = (
        b"--"
        + boundary
        + b'\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename
        + b'"\r\nContent-Type: application/octet-stream\r\n\r\n'
        + data
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    return api.client.post(
        f"/pools/default/files{q(ident, NEW)}",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=sp-sec-boundary"},
    )


@pytest.fixture
def host_target(tmp_path: Path) -> Path:
    """A host file session code would love to read or overwrite through the server."""
    target = tmp_path / "host-target.txt"
    target.write_text(CANARY)
    return target


BAD_NAMES = [
    "../escape.txt",
    "a/../../escape.txt",
    "/etc/passwd",
    "/mnt/data/../../etc/passwd",
    "/mnt/database/x",
    "nul\x00byte.txt",
    "x" * 300,
    "/".join(["d"] * 2100),
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
def test_bad_names_are_refused_on_upload(api: Api, ident: str, name: str) -> None:
    r = raw_upload(api, ident, name.encode("utf-8", "surrogatepass"), b"payload")
    assert_client_error(r, 400)
    assert not Path("/escape.txt").exists()
    assert api.value(ident, "import os\nos.listdir('/mnt/data')") == []


@pytest.mark.parametrize("name", ["../../../../etc/passwd", "..%2f..%2fetc%2fpasswd", "%2e%2e/x"])
def test_traversal_is_refused_on_download(api: Api, ident: str, name: str) -> None:
    api.ok(ident, "1")
    r = api.client.get(f"/pools/default/files/{name}/content{q(ident, NEW)}")
    assert 400 <= r.status_code < 500, r.status_code
    assert b"root:" not in r.content


def test_traversal_through_the_path_parameter_is_refused(api: Api, ident: str) -> None:
    r = api.upload(ident, "x.txt", b"x", path="../../etc")
    assert_client_error(r, 400)
    r = api.client.get(f"/pools/default/files{q(ident, NEW, path='/etc')}")
    assert_client_error(r, 400)


@pytest.mark.parametrize(
    "name",
    ["\u2025/x.txt", "\uff0e\uff0e/x.txt", "\u202egnp.exe", "e\u0301.txt", "\udc80bad"],
    ids=["two-dot-leader", "fullwidth-dots", "rtl-override", "combining", "lone-surrogate"],
)
def test_unicode_tricks_stay_inside_the_workspace(
    api: Api, server: ServerProcess, ident: str, name: str
) -> None:
    """Look-alike dots are ordinary characters: a file inside /mnt/data, or a clean 400."""
    r = raw_upload(api, ident, name.encode("utf-8", "surrogateescape"), b"unicode")
    assert r.status_code in (200, 400), r.text
    inside = api.value(
        ident, "import os\n[os.path.join(d, f) for d, _, fs in os.walk('/mnt/data') for f in fs]"
    )
    if r.status_code == 200:
        assert len(inside) == 1 and inside[0].startswith("/mnt/data/"), inside
        directory = r.json()["directory"].removeprefix("/mnt/data").strip("/")
        stored = f"{directory}/{r.json()['name']}".lstrip("/")
        assert api.download(ident, stored).content == b"unicode"
    assert [p.name for p in server.data_dir.glob("*.txt")] == ["host-secret.txt"]


def test_planted_symlink_to_a_host_file_is_never_read(
    api: Api, ident: str, host_target: Path
) -> None:
    api.ok(ident, f"import os\nos.symlink({str(host_target)!r}, '/mnt/data/link.txt')")
    for r in (api.download(ident, "link.txt"), api.download_old(ident, "link.txt")):
        assert_client_error(r)
        assert CANARY.encode() not in r.content
    meta = api.client.get(f"/pools/default/files/link.txt{q(ident, NEW)}")
    assert 400 <= meta.status_code < 500 and CANARY not in meta.text


def test_planted_symlink_is_never_written_through(api: Api, ident: str, host_target: Path) -> None:
    api.ok(ident, f"import os\nos.symlink({str(host_target)!r}, '/mnt/data/link.txt')")
    r = api.upload(ident, "link.txt", b"overwritten")
    assert r.status_code in (200, 400), r.text
    assert host_target.read_text() == CANARY
    assert api.delete(ident, "link.txt").status_code in (204, 404)
    assert host_target.read_text() == CANARY


def test_symlinked_directory_is_never_traversed(api: Api, ident: str, host_target: Path) -> None:
    api.ok(ident, f"import os\nos.symlink({str(host_target.parent)!r}, '/mnt/data/d')")
    r = api.download(ident, f"d/{host_target.name}")
    assert_client_error(r)
    assert CANARY.encode() not in r.content
    assert_client_error(api.upload(ident, "new.txt", b"x", path="d"))
    assert not (host_target.parent / "new.txt").exists()
    listing = api.client.get(f"/pools/default/files{q(ident, NEW, recursive='true')}")
    assert host_target.name not in listing.text


def test_hard_link_to_a_host_file_cannot_be_made(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import os, errno\nout = []\n"
        "for src in ('/etc/passwd', '/usr/bin/env'):\n"
        "    try:\n"
        "        os.link(src, '/mnt/data/h')\n"
        "        out.append('ok')\n"
        "    except OSError as e:\n"
        "        out.append(errno.errorcode[e.errno])\n"
        "out",
    )
    assert found == ["EXDEV", "EXDEV"]


def test_hard_link_inside_the_workspace_is_just_a_file(api: Api, ident: str) -> None:
    api.ok(
        ident,
        "import os\nopen('/mnt/data/a', 'w').write('same')\nos.link('/mnt/data/a', '/mnt/data/b')",
    )
    assert api.download(ident, "b").content == b"same"
    assert api.upload(ident, "b", b"new").status_code == 200  # replaces b, a keeps its bytes
    assert api.download(ident, "a").content == b"same"


def test_fifo_does_not_hang_the_server(api: Api, ident: str) -> None:
    api.ok(ident, "import os\nos.mkfifo('/mnt/data/pipe')")
    started = time.monotonic()
    assert_client_error(api.download(ident, "pipe"))
    assert_client_error(api.download_old(ident, "pipe"))
    assert time.monotonic() - started < 5
    r = api.upload(ident, "pipe", b"x")  # replaces the FIFO atomically, never opens it
    assert r.status_code == 200


def test_device_node_cannot_be_planted(api: Api, ident: str) -> None:
    found = api.value(
        ident,
        "import os, stat, errno\ntry:\n"
        "    os.mknod('/mnt/data/null', stat.S_IFCHR | 0o666, os.makedev(1, 3))\n"
        "    r = 'ok'\nexcept OSError as e:\n    r = errno.errorcode[e.errno]\nr",
    )
    assert found == "EPERM"


def test_swapping_a_file_for_a_link_never_leaks(api: Api, ident: str, host_target: Path) -> None:
    """Session code swaps ``race`` between a regular file and a symlink to a host file (and a
    directory for a symlink to a host directory) as fast as it can while we download and
    upload through it: no response ever carries host bytes, the host file never changes."""
    api.ok(
        ident,
        "import os, threading\nstop = threading.Event()\n"
        f"T, D = {str(host_target)!r}, {str(host_target.parent)!r}\n"
        "def swap():\n"
        "    os.makedirs('/mnt/data/dd', exist_ok=True)\n"
        f"    open('/mnt/data/dd/{host_target.name}', 'w').write('inside')\n"
        "    while not stop.is_set():\n"
        "        for tmp, dst, target in (('/mnt/data/.r', '/mnt/data/race', T),"
        " ('/mnt/data/.d', '/mnt/data/dlink', D)):\n"
        "            try:\n"
        "                os.symlink(target, tmp)\n"
        "                os.rename(tmp, dst)\n"
        "                open(tmp, 'w').write('inside')\n"
        "                os.rename(tmp, dst)\n"
        "            except OSError:\n"
        "                pass\n"
        "        try:\n"
        "            os.symlink('/mnt/data/dd', '/mnt/data/.x')\n"
        "            os.rename('/mnt/data/.x', '/mnt/data/dlink')\n"
        "        except OSError:\n"
        "            pass\n"
        "threading.Thread(target=swap, daemon=True).start()",
    )
    leaks, statuses = [], set()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        for name in ("race", f"dlink/{host_target.name}"):
            r = api.download(ident, name)
            statuses.add(r.status_code)
            if CANARY.encode() in r.content:
                leaks.append(name)
        api.upload(ident, "race", b"via-api")
    api.ok(ident, "stop.set()")
    assert leaks == []
    assert max(statuses) < 500, statuses
    assert host_target.read_text() == CANARY


def test_upload_past_the_file_limit_leaves_nothing(api: Api, tight: str) -> None:
    assert api.upload(tight, "keep.bin", b"old", pool="tight").status_code == 200
    r = api.upload(tight, "keep.bin", b"x" * (TIGHT_FILE + 1), pool="tight")
    assert_client_error(r, 413)
    assert api.download(tight, "keep.bin", pool="tight").content == b"old"
    assert api.value(tight, "import os\nsorted(os.listdir('/mnt/data'))", pool="tight") == [
        "keep.bin"
    ]


def test_streamed_upload_past_the_limit_without_length_leaves_nothing(
    api: Api, server: ServerProcess, tight: str
) -> None:
    """A chunked body (no content-length) is cut off at the limit, nothing partial kept."""
    boundary = "sp-boundary"

    def body() -> object:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(TIGHT_FILE // (1 << 20) + 4):
            yield b"x" * (1 << 20)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = api.client.post(
        f"/pools/tight/files{q(tight, NEW)}",
        content=body(),  # type: ignore[arg-type]
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert_client_error(r, 413)
    assert api.value(tight, "import os\nos.listdir('/mnt/data')", pool="tight") == []


def test_upload_over_the_disk_quota_is_refused_and_leaves_nothing(api: Api, tight: str) -> None:
    api.ok(tight, f"open('/mnt/data/fill', 'wb').write(b'x' * {TIGHT_DISK - (2 << 20)})", "tight")
    r = api.upload(tight, "more.bin", b"y" * (3 << 20), pool="tight")
    assert_client_error(r, 413)
    assert api.value(tight, "import os\nsorted(os.listdir('/mnt/data'))", pool="tight") == ["fill"]
    # and the session itself cannot go past it either
    found = api.value(
        tight,
        "import errno\ntry:\n    open('/mnt/data/more', 'wb').write(b'z' * (4 << 20))\n"
        "    r = 'ok'\nexcept OSError as e:\n    r = errno.errorcode[e.errno]\nr",
        pool="tight",
    )
    assert found in ("ENOSPC", "EFBIG")


def test_many_tiny_files_cannot_exhaust_host_inodes(api: Api, tight: str) -> None:
    found = api.value(
        tight,
        "import errno, os\nn = 0\ntry:\n    while n < 100000:\n"
        "        open(f'/mnt/data/f{n}', 'w').close()\n        n += 1\n"
        "except OSError as e:\n    r = errno.errorcode[e.errno]\nelse:\n    r = 'ok'\nr, n",
        pool="tight",
    )
    assert found[0] == "ENOSPC" and found[1] < 100000, found
    r = api.client.get(f"/pools/tight/files{q(tight, NEW)}")
    assert r.status_code == 200


def test_deep_directories_do_not_break_listing(api: Api, ident: str) -> None:
    api.ok(
        ident,
        "import os\np = '/mnt/data'\nfor i in range(200):\n    p += '/d'\nos.makedirs(p)\n"
        "open(p + '/deep.txt', 'w').write('deep')",
    )
    r = api.client.get(f"/pools/default/files{q(ident, NEW, recursive='true')}")
    assert r.status_code == 200


def test_concurrent_uploads_of_one_name_never_mix(
    api: Api, server: ServerProcess, ident: str
) -> None:
    bodies = [bytes([65 + i]) * (256 << 10) for i in range(6)]
    results: list[int] = []

    def up(data: bytes) -> None:
        with httpx.Client(base_url=server.url, headers=server.auth, timeout=60) as c:
            r = c.post(
                f"/pools/default/files{q(ident, NEW)}",
                files={"file": ("same.bin", data, "application/octet-stream")},
            )
            results.append(r.status_code)

    api.ok(ident, "1")
    threads = [threading.Thread(target=up, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == [200] * len(bodies)
    assert api.download(ident, "same.bin").content in bodies

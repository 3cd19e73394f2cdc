"""The host-side file API on /mnt/data: exact round trips, confined names, and no way for session
code to make the server (running as root) read, write or delete anything outside the workspace
through links, FIFOs or tricky names.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from pathlib import Path

import pytest

from sessionpool import errors
from sessionpool.session import Session
from tests.sandbox.helpers import run_ok, value

pytestmark = pytest.mark.jail

# -- round trips --------------------------------------------------------------------------------


async def test_bytes_round_trip_exactly(session: Session) -> None:
    """Every byte value, and a random MiB, come back exactly, and session code sees the same."""
    data = bytes(range(256)) * 4 + secrets.token_bytes(1 << 20)
    info = await session.write_file("blob.bin", data)
    assert info.path == "blob.bin" and info.size == len(data)
    assert await session.read_file("blob.bin") == data
    inside = await value(
        session,
        "import hashlib\nhashlib.sha256(open('/mnt/data/blob.bin', 'rb').read()).hexdigest()",
    )
    assert inside == hashlib.sha256(data).hexdigest()
    written = b"from session code\x00\xff"
    await run_ok(session, f"open('/mnt/data/out.bin', 'wb').write({written!r})")
    assert await session.read_file("out.bin") == written


async def test_upload_is_owned_by_the_session_and_writable_from_inside(session: Session) -> None:
    """Uploaded files belong to the session's uid, so session code can change them."""
    await session.write_file("notes.txt", b"one\n")
    st = (session.slot.workspace.path / "notes.txt").stat()
    assert st.st_uid == session.slot.uid
    await run_ok(session, "open('/mnt/data/notes.txt', 'a').write('two\\n')")
    assert await session.read_file("notes.txt") == b"one\ntwo\n"


async def test_nested_folders_are_created(session: Session) -> None:
    """A nested name creates its folders, visible to session code and in a recursive listing."""
    await session.write_file("a/b/c.txt", b"deep")
    assert await value(session, "open('/mnt/data/a/b/c.txt').read()") == "deep"
    listing = {(f.path, f.is_dir) for f in await session.list_files(recursive=True)}
    assert {("a", True), ("a/b", True), ("a/b/c.txt", False)} <= listing
    assert [f.path for f in await session.list_files("a/b")] == ["a/b/c.txt"]


async def test_mnt_data_prefix_is_accepted(session: Session) -> None:
    """'/mnt/data/name' and 'name' are the same file."""
    await session.write_file("/mnt/data/sub/p.txt", b"prefixed")
    assert await session.read_file("sub/p.txt") == b"prefixed"
    assert (await session.stat_file("/mnt/data/sub/p.txt")).size == 8
    assert await value(session, "open('/mnt/data/sub/p.txt').read()") == "prefixed"


async def test_overwrite_replaces_the_content(session: Session) -> None:
    """Writing an existing name replaces it whole (no leftover tail of a longer old file)."""
    await session.write_file("w.txt", b"a much longer first version")
    await session.write_file("w.txt", b"short")
    assert await session.read_file("w.txt") == b"short"


async def test_missing_files_are_reported(session: Session) -> None:
    """Reading, stating or deleting a name that does not exist raises FileNotFound."""
    with pytest.raises(errors.FileNotFound):
        await session.read_file("nope.txt")
    with pytest.raises(errors.FileNotFound):
        await session.stat_file("nope/nope.txt")
    with pytest.raises(errors.FileNotFound):
        await session.delete_file("nope.txt")


# -- names --------------------------------------------------------------------------------------

BAD_NAMES = [
    "..",
    "../x",
    "a/../../x",
    "a/..",
    "/etc/passwd",
    "/mnt/datafoo/x",
    "/mnt/data/../x",
    "/mnt/data/../../etc/passwd",
    "x\x00y",
    "a" * 256,
    "d/" * 2100 + "x",
    ".sessionpool-upload-0123456789abcdef",
]


@pytest.mark.parametrize("name", BAD_NAMES, ids=range(len(BAD_NAMES)))
async def test_bad_names_are_invalid_paths(session: Session, name: str) -> None:
    """'..', absolute paths outside /mnt/data, NUL bytes, over-long and reserved names are
    refused for every operation, before anything is touched on the host."""
    before = sorted(os.listdir(session.slot.workspace.path))
    with pytest.raises(errors.InvalidPath):
        await session.write_file(name, b"x")
    for op in (session.read_file, session.stat_file, session.delete_file):
        if name.startswith(".sessionpool-upload-"):
            continue  # reserved for writing only
        with pytest.raises(errors.InvalidPath):
            await op(name)
    assert sorted(os.listdir(session.slot.workspace.path)) == before


async def test_a_file_name_is_required(session: Session) -> None:
    """The workspace itself is not a file."""
    for name in ("", "/mnt/data", "/mnt/data/", "."):
        with pytest.raises(errors.InvalidPath):
            await session.write_file(name, b"x")


# -- links planted by session code --------------------------------------------------------------


@pytest.fixture
def host_target(tmp_path: Path) -> Path:
    """A host file that a session must never be able to reach through the file API."""
    target = tmp_path / "host-target.txt"
    target.write_bytes(b"host content")
    return target


async def test_symlinks_to_host_files_are_never_read(session: Session, host_target: Path) -> None:
    """Links made by session code (to the jail's /etc/passwd, to an absolute host path, and a
    relative one climbing out) are refused as NotARegularFile, never followed."""
    await run_ok(
        session,
        "import os\n"
        + "os.symlink('/etc/passwd', '/mnt/data/evil')\n"
        + f"os.symlink({str(host_target)!r}, '/mnt/data/evil-host')\n"
        + f"os.symlink('../../../../../..{host_target}', '/mnt/data/evil-rel')",
    )
    for name in ("evil", "evil-host", "evil-rel"):
        with pytest.raises(errors.NotARegularFile):
            await session.read_file(name)
        with pytest.raises(errors.NotARegularFile):
            await session.stat_file(name)
        with pytest.raises(errors.NotARegularFile):
            session.open_file(name)
    listed = {f.path: f for f in await session.list_files()}
    assert not {"evil", "evil-host", "evil-rel"} & set(listed), listed


async def test_symlinks_to_host_files_are_never_written_through(
    session: Session, host_target: Path
) -> None:
    """Uploading to a planted link's name never changes the link's target: it is refused, or
    the link itself is replaced by a regular file in the workspace."""
    await run_ok(
        session,
        f"import os\nos.symlink({str(host_target)!r}, '/mnt/data/evil-host')",
    )
    try:
        await session.write_file("evil-host", b"pwned")
    except errors.NotARegularFile:
        assert (session.slot.workspace.path / "evil-host").is_symlink()
    else:
        assert not (session.slot.workspace.path / "evil-host").is_symlink()
        assert await session.read_file("evil-host") == b"pwned"
    assert host_target.read_bytes() == b"host content"
    assert host_target.stat().st_uid == os.getuid()


async def test_symlinked_directory_in_a_path_is_refused(
    session: Session, host_target: Path
) -> None:
    """A link to a directory anywhere in a name stops the walk: no read, write, listing, stat
    or delete happens in the directory it points to."""
    host_dir = host_target.parent
    await run_ok(
        session,
        "import os\n"
        + f"os.symlink({str(host_dir)!r}, '/mnt/data/hostdir')\n"
        + "os.makedirs('/mnt/data/real/inner')\n"
        + f"os.symlink({str(host_dir)!r}, '/mnt/data/real/inner/link')\n"
        + "os.symlink('/etc', '/mnt/data/etc')",
    )
    for name in ("hostdir/host-target.txt", "real/inner/link/host-target.txt", "etc/passwd"):
        with pytest.raises(errors.NotARegularFile):
            await session.read_file(name)
        with pytest.raises(errors.NotARegularFile):
            await session.stat_file(name)
        with pytest.raises(errors.NotARegularFile):
            await session.delete_file(name)
    for name in ("hostdir/new.txt", "real/inner/link/new.txt", "hostdir/sub/new.txt"):
        with pytest.raises(errors.NotARegularFile):
            await session.write_file(name, b"pwned")
    with pytest.raises(errors.NotARegularFile):
        await session.list_files("hostdir")
    assert sorted(p.name for p in host_dir.iterdir()) == ["host-target.txt"]
    assert host_target.read_bytes() == b"host content"


async def test_fifo_does_not_hang_a_read(session: Session) -> None:
    """A FIFO made by session code is refused at once (never opened for a blocking read)."""
    await run_ok(session, "import os\nos.mkfifo('/mnt/data/fifo')")
    for op in (session.read_file, session.stat_file):
        with pytest.raises(errors.NotARegularFile):
            await asyncio.wait_for(op("fifo"), 2)
    with pytest.raises(errors.NotARegularFile):
        session.open_file("fifo")
    assert "fifo" not in {f.path for f in await session.list_files()}


async def test_directories_are_not_regular_files(session: Session) -> None:
    """Reading a directory is NotARegularFile, not an empty file or a crash."""
    await run_ok(session, "import os\nos.makedirs('/mnt/data/folder')")
    with pytest.raises(errors.NotARegularFile):
        await session.read_file("folder")
    assert (await session.stat_file("folder")).is_dir


# -- listing and deleting -----------------------------------------------------------------------


async def test_listing_shows_what_session_code_wrote(session: Session) -> None:
    """Files written by session code are listed with their exact sizes and a modified time."""
    await run_ok(
        session,
        "import os\n"
        + "open('/mnt/data/data.csv', 'w').write('a,b\\n' * 30)\n"
        + "os.makedirs('/mnt/data/sub')\n"
        + "open('/mnt/data/sub/inner.bin', 'wb').write(bytes(4096))",
    )
    top = {f.path: f for f in await session.list_files()}
    assert set(top) == {"data.csv", "sub"}
    assert top["data.csv"].size == 120 and not top["data.csv"].is_dir
    assert top["sub"].is_dir
    assert top["data.csv"].mtime > 0
    deep = {f.path: f.size for f in await session.list_files(recursive=True)}
    assert deep["sub/inner.bin"] == 4096
    assert (await session.stat_file("sub/inner.bin")).size == 4096


async def test_delete_files_and_folders(session: Session) -> None:
    """Delete removes a file, and a whole folder tree; session code sees them gone."""
    await session.write_file("f.txt", b"x")
    await session.write_file("tree/a/b.txt", b"y")
    await session.delete_file("f.txt")
    await session.delete_file("tree")
    gone = await value(
        session, "import os\nos.path.exists('/mnt/data/f.txt'), os.path.exists('/mnt/data/tree')"
    )
    assert tuple(gone) == (False, False)
    assert await session.list_files() == []


async def test_delete_never_follows_links(session: Session, host_target: Path) -> None:
    """Deleting a link removes the link only; deleting a folder that holds a link to a host
    directory leaves that directory and its files alone."""
    host_dir = host_target.parent
    await run_ok(
        session,
        "import os\n"
        + f"os.symlink({str(host_target)!r}, '/mnt/data/file-link')\n"
        + f"os.symlink({str(host_dir)!r}, '/mnt/data/dir-link')\n"
        + "os.makedirs('/mnt/data/folder')\n"
        + f"os.symlink({str(host_dir)!r}, '/mnt/data/folder/inner-link')\n"
        + "open('/mnt/data/keep.txt', 'w').write('keep')\n"
        + "os.symlink('/mnt/data/keep.txt', '/mnt/data/keep-link')",
    )
    for name in ("file-link", "dir-link", "folder", "keep-link"):
        await session.delete_file(name)
    assert host_target.read_bytes() == b"host content"
    assert sorted(p.name for p in host_dir.iterdir()) == ["host-target.txt"]
    assert await session.read_file("keep.txt") == b"keep"
    remaining = sorted(os.listdir(session.slot.workspace.path))
    assert remaining == ["keep.txt"]


# -- directories and moves (the E2B filesystem service) -------------------------------------------


async def test_make_dir_and_move(session: Session) -> None:
    assert await session.make_dir("a/b/c") is True
    assert await session.make_dir("/mnt/data/a/b/c") is False
    await session.write_file("a/b/c/f.txt", b"data")
    moved = await session.move_file("a/b", "x/y")
    assert moved.path == "x/y" and moved.is_dir
    assert await session.read_file("x/y/c/f.txt") == b"data"
    assert await value(session, "import os; os.path.exists('/mnt/data/a/b')") is False
    owner = await value(session, "import os; os.stat('/mnt/data/x').st_uid == os.getuid()")
    assert owner is True
    await session.write_file("file", b"1")
    with pytest.raises(errors.NotARegularFile):
        await session.make_dir("file")
    with pytest.raises(errors.FileNotFound):
        await session.move_file("missing", "elsewhere")
    with pytest.raises(errors.InvalidPath):
        await session.move_file("x", "x/inside")
    for bad in ("../escape", "/etc/escape", "/tmp/escape"):
        with pytest.raises(errors.InvalidPath):
            await session.make_dir(bad)
        with pytest.raises(errors.InvalidPath):
            await session.move_file("file", bad)


async def test_make_dir_and_move_never_follow_links(session: Session, host_target: Path) -> None:
    """A planted link is moved as a link (its target untouched) and never walked through."""
    host_dir = host_target.parent
    await run_ok(
        session,
        f"import os\nos.symlink({str(host_dir)!r}, '/mnt/data/hostdir')\n"
        f"os.symlink({str(host_target)!r}, '/mnt/data/hostfile')",
    )
    with pytest.raises(errors.NotARegularFile):
        await session.make_dir("hostdir/new")
    with pytest.raises(errors.NotARegularFile):
        await session.move_file("hostdir/host-target.txt", "stolen.txt")
    await session.write_file("mine.txt", b"mine")
    with pytest.raises(errors.NotARegularFile):
        await session.move_file("mine.txt", "hostdir/planted.txt")
    await session.move_file("hostfile", "renamed")  # the link itself moves
    assert (session.slot.workspace.path / "renamed").is_symlink()
    with pytest.raises(errors.NotARegularFile):
        await session.read_file("renamed")
    assert sorted(p.name for p in host_dir.iterdir()) == ["host-target.txt"]
    assert host_target.read_bytes() == b"host content"

"""A session's /mnt/data, seen from the host: provisioning and link-safe file operations.

The server runs as root and the directory's contents are written by untrusted code, so every
operation walks the path one component at a time with ``O_NOFOLLOW`` relative to directory
descriptors: a symlink planted by session code is never followed, a FIFO never blocks us (opened
``O_NONBLOCK`` and rejected by ``fstat``), and a name can never leave the workspace. With the
jail backend the workspace is its own tmpfs sized to the quota, so the kernel enforces the
quota for session code and uploads alike, and hard links into it from elsewhere are impossible.
Its pages are memory: an upload's are allocated by the helper in the sessions' memory bound
(``charge``), so they count there, as a session's own writes do, and not in the server's.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import logging
import os
import secrets
import shutil
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from sessionpool import errors, paths
from sessionpool.sandbox import linux
from sessionpool.sandbox.charge import ChargerUnavailable
from sessionpool.types import FileInfo

log = logging.getLogger("sessionpool.sandbox")

#: ``charge(fd, offset, length)``: allocate that range of an upload file (``charge.Charger``)
Charge = Callable[[int, int, int], Awaitable[None]]

TEMP_PREFIX = ".sessionpool-upload-"
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
MAX_LIST_ENTRIES = 10_000
MAX_DEPTH = 32
CHUNK = 1 << 20
#: how far past the bytes received an upload's pages are allocated at once
CHARGE_STEP = 8 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def normalize(path: str) -> str:
    """Turn a client's file name into a clean path relative to /mnt/data, or raise InvalidPath.

    Takes the name as ``paths.relative`` does (``name``, ``sub/name``, ``/mnt/data/sub/name``),
    then refuses NUL bytes, ``..``, absolute paths elsewhere and over-long names. Returns ""
    for the workspace itself.
    """
    if "\x00" in path:
        raise errors.InvalidPath(path, "contains a NUL byte")
    clean = paths.relative(path)
    if clean.startswith("/"):
        raise errors.InvalidPath(path, "absolute paths must be under /mnt/data")
    for part in clean.split("/"):
        if part == "..":
            raise errors.InvalidPath(path, "'..' is not allowed; names stay inside /mnt/data")
        if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise errors.InvalidPath(path, f"a path component exceeds {MAX_NAME_BYTES} bytes")
    if len(clean.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise errors.InvalidPath(path, f"the path exceeds {MAX_PATH_BYTES} bytes")
    return clean


class Workspace:
    """One session's workspace directory on the host."""

    def __init__(
        self, path: Path, uid: int | None, quota: int, file_limit: int, mounted: bool
    ) -> None:
        self.path = path
        self.uid = uid  # owner for files we create (the session's host uid), None = unchanged
        self.quota = quota
        self.file_limit = file_limit
        self.mounted = mounted
        #: allocates upload pages inside the sessions' memory bound (``charge.Charger``); None:
        #: the server's own writes allocate them
        self.charge: Charge | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @classmethod
    def create(
        cls, path: Path, uid: int | None, quota: int, file_limit: int, use_tmpfs: bool
    ) -> Workspace:
        path.mkdir(mode=0o700, parents=False, exist_ok=False)
        if use_tmpfs:
            inodes = max(1024, quota // 8192)
            opts = f"size={quota},nr_inodes={inodes},mode=0755"
            if uid is not None:
                opts += f",uid={uid},gid={uid}"
            linux.mount("tmpfs", str(path), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, opts)
        elif uid is not None:
            os.chown(path, uid, uid)
        return cls(path, uid, quota, file_limit, use_tmpfs)

    def destroy(self) -> None:
        if self.mounted:
            with contextlib.suppress(OSError):
                linux.umount2(str(self.path), linux.MNT_DETACH)
        else:
            shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)

    # -- walking --------------------------------------------------------------------------------

    def _open_dir(self, parts: list[str], create: bool, shown: str) -> int:
        fd = os.open(self.path, _DIR_FLAGS)
        try:
            for part in parts:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise errors.FileNotFound(shown) from None
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        raise self._map_oserror(exc, shown) from None
                    if self.uid is not None:
                        os.chown(part, self.uid, self.uid, dir_fd=fd, follow_symlinks=False)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except (NotADirectoryError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise errors.NotARegularFile(
                            shown, f"{part!r} is not a directory (links are not followed)"
                        ) from None
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _map_oserror(self, exc: OSError, shown: str) -> errors.ServiceError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return errors.QuotaExceeded(shown, self.quota)
        if exc.errno == errno.ENAMETOOLONG:
            return errors.InvalidPath(shown, "name too long")
        if exc.errno == errno.EISDIR:
            return errors.NotARegularFile(shown, "is a directory")
        return errors.FileError(shown, f"operation failed: {exc.strerror}")

    @staticmethod
    def _split(clean: str, shown: str) -> tuple[list[str], str]:
        if not clean:
            raise errors.InvalidPath(shown, "a file name is required")
        *parents, name = clean.split("/")
        return parents, name

    # -- operations -----------------------------------------------------------------------------

    def _open_regular(self, path: str) -> tuple[int, os.stat_result, str]:
        clean = normalize(path)
        parents, name = self._split(clean, path)
        dfd = self._open_dir(parents, create=False, shown=clean)
        try:
            try:
                fd = os.open(
                    name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd
                )
            except FileNotFoundError:
                raise errors.FileNotFound(clean) from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise errors.NotARegularFile(
                        clean, "is a symbolic link; links are never followed"
                    ) from None
                raise self._map_oserror(exc, clean) from None
        finally:
            os.close(dfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise errors.NotARegularFile(clean, f"is {kind}")
        return fd, st, clean

    def read(self, path: str) -> bytes:
        fd, _, _ = self._open_regular(path)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def iter_read(self, path: str) -> tuple[FileInfo, Iterator[bytes]]:
        """Open now (errors surface here), stream later: for large downloads."""
        fd, st, clean = self._open_regular(path)
        info = FileInfo(clean, st.st_size, st.st_mtime)

        def chunks() -> Iterator[bytes]:
            with os.fdopen(fd, "rb") as f:
                while chunk := f.read(CHUNK):
                    yield chunk

        return info, chunks()

    def stat(self, path: str) -> FileInfo:
        clean = normalize(path)
        if not clean:
            st = os.stat(self.path)
            return FileInfo("", 0, st.st_mtime, is_dir=True)
        parents, name = self._split(clean, path)
        dfd = self._open_dir(parents, create=False, shown=clean)
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            raise errors.FileNotFound(clean) from None
        finally:
            os.close(dfd)
        if stat.S_ISDIR(st.st_mode):
            return FileInfo(clean, 0, st.st_mtime, is_dir=True)
        if not stat.S_ISREG(st.st_mode):
            raise errors.NotARegularFile(clean, "is not a regular file")
        return FileInfo(clean, st.st_size, st.st_mtime)

    def list(self, path: str = "", recursive: bool = False) -> list[FileInfo]:
        clean = normalize(path)
        parts = clean.split("/") if clean else []
        fd = self._open_dir(parts, create=False, shown=clean or paths.MOUNT)
        out: list[FileInfo] = []
        try:
            self._scan(fd, clean, recursive, 0, out)
        finally:
            os.close(fd)
        out.sort(key=lambda f: f.path)
        return out

    def _scan(
        self, fd: int, prefix: str, recursive: bool, depth: int, out: builtins.list[FileInfo]
    ) -> None:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            if len(out) >= MAX_LIST_ENTRIES or entry.name.startswith(TEMP_PREFIX):
                continue
            rel = f"{prefix}/{entry.name}" if prefix else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append(FileInfo(rel, st.st_size, st.st_mtime))
            elif stat.S_ISDIR(st.st_mode):
                out.append(FileInfo(rel, 0, st.st_mtime, is_dir=True))
                if recursive and depth < MAX_DEPTH:
                    try:
                        sub = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                    except OSError:
                        continue
                    try:
                        self._scan(sub, rel, recursive, depth + 1, out)
                    finally:
                        os.close(sub)

    def usage(self) -> int:
        """Bytes in use (only needed where no sized tmpfs enforces the quota)."""
        total = 0
        for root, _dirs, files in os.walk(self.path, followlinks=False):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(root, name)).st_size
        return total

    async def write(self, path: str, data: bytes | AsyncIterator[bytes]) -> FileInfo:
        """Write atomically: a temporary file renamed into place. Nothing partial survives."""
        clean = normalize(path)
        parents, name = self._split(clean, path)
        if name.startswith(TEMP_PREFIX):
            raise errors.InvalidPath(clean, f"names starting with {TEMP_PREFIX!r} are reserved")
        budget = self.file_limit
        if not self.mounted:
            budget = min(budget, max(0, self.quota - self.usage()))
        dfd = self._open_dir(parents, create=True, shown=clean)
        tmp = TEMP_PREFIX + secrets.token_hex(8)
        fd = -1
        try:
            try:
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                    dir_fd=dfd,
                )
            except OSError as exc:
                raise self._map_oserror(exc, clean) from None
            size = 0
            charged = 0  # bytes of the file the charger has allocated (see charge.py)
            charge = self.charge

            async def put(chunk: bytes) -> None:
                nonlocal size, charged, charge
                need = size + len(chunk)
                if charge is not None and charged < need <= budget:
                    try:
                        charged = await self._charge(charge, fd, charged, need, budget, clean)
                    except ChargerUnavailable as exc:
                        log.warning("upload written without the bound's charge: %s", exc)
                        charge = None
                size = self._write_chunk(fd, chunk, size, budget, clean)

            try:
                if isinstance(data, bytes):
                    await put(data)
                else:
                    async for chunk in data:
                        await put(chunk)
                if charged > size:  # the step allocated past the end
                    os.ftruncate(fd, size)
                if self.uid is not None:
                    os.fchown(fd, self.uid, self.uid)
                st = os.fstat(fd)
                os.close(fd)
                fd = -1
                try:
                    os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                except OSError as exc:
                    raise self._map_oserror(exc, clean) from None
            except BaseException:
                if fd >= 0:
                    os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=dfd)
                raise
        finally:
            os.close(dfd)
        return FileInfo(clean, st.st_size, st.st_mtime)

    async def _charge(
        self, charge: Charge, fd: int, start: int, need: int, budget: int, shown: str
    ) -> int:
        """Have the charger allocate the file up to ``need`` and a step beyond (fewer round
        trips: the step grows with the file, from 1 MiB to CHARGE_STEP); the new end. A step
        that does not fit is retried without it."""
        end = min(need + min(max(need, CHUNK), CHARGE_STEP), budget)
        try:
            await charge(fd, start, end - start)
            return end
        except OSError as exc:
            if end == need or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise self._map_oserror(exc, shown) from None
        try:
            await charge(fd, start, need - start)
        except OSError as exc:
            raise self._map_oserror(exc, shown) from None
        return need

    def _write_chunk(self, fd: int, chunk: bytes, size: int, budget: int, shown: str) -> int:
        size += len(chunk)
        if size > self.file_limit:
            raise errors.FileOverLimit(shown, self.file_limit)
        if size > budget:
            raise errors.QuotaExceeded(shown, self.quota)
        view = memoryview(chunk)
        while view:
            try:
                n = os.write(fd, view)
            except OSError as exc:
                raise self._map_oserror(exc, shown) from None
            view = view[n:]
        return size

    def delete(self, path: str) -> None:
        clean = normalize(path)
        parents, name = self._split(clean, path)
        dfd = self._open_dir(parents, create=False, shown=clean)
        try:
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                raise errors.FileNotFound(clean) from None
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=dfd)  # fd-based: immune to symlink races
            else:
                os.unlink(name, dir_fd=dfd)  # removes a link itself, never its target
        finally:
            os.close(dfd)

    def make_dir(self, path: str) -> bool:
        """Create a directory and its missing parents; False if it was already there."""
        clean = normalize(path)
        parents, name = self._split(clean, path)
        dfd = self._open_dir(parents, create=True, shown=clean)
        try:
            try:
                os.mkdir(name, 0o755, dir_fd=dfd)
            except FileExistsError:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    raise errors.NotARegularFile(clean, "exists and is not a directory") from None
                return False
            except OSError as exc:
                raise self._map_oserror(exc, clean) from None
            if self.uid is not None:
                os.chown(name, self.uid, self.uid, dir_fd=dfd, follow_symlinks=False)
            return True
        finally:
            os.close(dfd)

    def move(self, source: str, destination: str) -> FileInfo:
        """Rename a file or directory inside the workspace (a link is moved, never followed);
        the destination's missing parents are created, an existing file there is replaced."""
        src = normalize(source)
        dst = normalize(destination)
        src_parents, src_name = self._split(src, source)
        dst_parents, dst_name = self._split(dst, destination)
        if dst_name.startswith(TEMP_PREFIX):
            raise errors.InvalidPath(dst, f"names starting with {TEMP_PREFIX!r} are reserved")
        if dst == src or dst.startswith(src + "/"):
            raise errors.InvalidPath(dst, "a directory cannot be moved into itself")
        sfd = self._open_dir(src_parents, create=False, shown=src)
        try:
            try:
                os.stat(src_name, dir_fd=sfd, follow_symlinks=False)
            except FileNotFoundError:
                raise errors.FileNotFound(src) from None
            dfd = self._open_dir(dst_parents, create=True, shown=dst)
            try:
                os.rename(src_name, dst_name, src_dir_fd=sfd, dst_dir_fd=dfd)
                st = os.stat(dst_name, dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                raise self._map_oserror(exc, dst) from None
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)
        is_dir = stat.S_ISDIR(st.st_mode)
        return FileInfo(dst, 0 if is_dir else st.st_size, st.st_mtime, is_dir=is_dir)

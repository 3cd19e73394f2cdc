"""Custom images: a pool's own root filesystem, unpacked once and packed into a squashfs image.

A pool's ``image`` setting names one of:

- a directory holding a root filesystem (debootstrap's output, say);
- a tarball of a root filesystem (``.tar``, ``.tar.gz``, ``.tar.xz``);
- an OCI image layout, as a directory or a tarball (``index.json`` at its top; what
  ``docker save`` writes today), or an older ``docker save`` tarball (``manifest.json``).

Layers are applied in order with their whiteouts. The result gets the mount points the jail
needs (``/dev``, ``/proc``, ``/tmp``, ``/mnt/data``, ``/opt/python``, ``/opt/sessionpool`` and the
``/etc`` files the jail generates) and is packed with ``mksquashfs`` into
``<runtimes_dir>/images/<digest>.sqfs``, reused while the source is unchanged. Members that
would land outside the root (absolute or ``..`` paths, links out of it) are refused by the
``tar`` extraction filter; device files are dropped (the jail mounts images ``nodev`` anyway).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from sessionpool import errors
from sessionpool.sandbox.runtime_build import squash

#: directories and files the jail mounts over, created in every image
MOUNT_DIRS = ("dev", "proc", "tmp", "mnt/data", "opt/python", "opt/sessionpool")
ETC_FILES = ("passwd", "group", "hosts", "hostname", "nsswitch.conf", "resolv.conf")


def _source_digest(source: Path) -> str:
    h = hashlib.sha256(str(source.resolve()).encode())
    if source.is_dir():
        # a directory: its path and the newest change time among its top entries
        stamps = [source.stat().st_mtime_ns, *(p.lstat().st_mtime_ns for p in source.iterdir())]
        h.update(str(max(stamps)).encode())
    else:
        with source.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:24]


def prepare(source: Path, runtimes_dir: Path) -> Path:
    """The squashfs image for ``source``, built on first use. Raises ConfigError when the
    source is not a usable image."""
    if not source.exists():
        raise errors.ConfigError(f"image {source} does not exist")
    cache = runtimes_dir / "images"
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"{_source_digest(source)}.sqfs"
    if out.is_file():
        return out
    work = cache / f".{out.stem}.build"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    try:
        unpack(source, root)
        add_mount_points(root)
        squash(root, work / "image.sqfs")
        (work / "image.sqfs").rename(out)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"image {source}: {exc.message}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def unpack(source: Path, root: Path) -> None:
    if source.is_dir():
        if (source / "index.json").is_file() and (source / "blobs").is_dir():
            _unpack_oci(lambda name: (source / name).read_bytes(), root)
        else:
            shutil.copytree(source, root, symlinks=True, dirs_exist_ok=True)
        return
    try:
        with tarfile.open(source) as tar:
            members = {m.name.removeprefix("./"): m for m in tar.getmembers()}

            def read(name: str) -> bytes:
                f = tar.extractfile(members[name])
                if f is None:
                    raise KeyError(name)
                with f:
                    return f.read()

            rootfs = any(n.startswith(("etc/", "usr/")) for n in members)
            if "index.json" in members and "oci-layout" in members:
                _unpack_oci(read, root)
            elif "manifest.json" in members and not rootfs:
                for layer in json.loads(read("manifest.json"))[0]["Layers"]:
                    _apply_layer(read(layer), root)
            else:
                _extract(tar, root)
    except (tarfile.TarError, KeyError, ValueError, IndexError) as exc:
        raise errors.ConfigError(f"image {source} is not a rootfs or OCI image: {exc}") from None


def _unpack_oci(read: Callable[[str], bytes], root: Path) -> None:
    def blob(digest: str) -> bytes:
        algo, hexd = digest.split(":", 1)
        return read(f"blobs/{algo}/{hexd}")

    index = json.loads(read("index.json"))
    doc = json.loads(blob(index["manifests"][0]["digest"]))
    if "manifests" in doc:  # an index of platforms: take linux/amd64, or the first
        picks = [
            m for m in doc["manifests"] if m.get("platform", {}).get("architecture") == "amd64"
        ]
        doc = json.loads(blob((picks or doc["manifests"])[0]["digest"]))
    for layer in doc["layers"]:
        _apply_layer(blob(layer["digest"]), root)


def _apply_layer(data: bytes, root: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as layer:
        # whiteouts first: they delete what lower layers put there
        for member in layer.getmembers():
            base = os.path.basename(member.name)
            parent = root / os.path.dirname(member.name)
            if not base.startswith(".wh."):
                continue
            _inside(root, parent)
            if base == ".wh..wh..opq":
                if parent.is_dir():
                    for child in parent.iterdir():
                        _remove(child)
            else:
                _remove(parent / base.removeprefix(".wh."))
        _extract(layer, root, skip_whiteouts=True)


def _inside(root: Path, path: Path) -> None:
    if not os.path.realpath(path).startswith(os.path.realpath(root)):
        raise ValueError(f"layer path {path} leaves the root")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _extract(tar: tarfile.TarFile, root: Path, skip_whiteouts: bool = False) -> None:
    members = [
        m
        for m in tar.getmembers()
        if not (m.ischr() or m.isblk() or m.isfifo())
        and not (skip_whiteouts and os.path.basename(m.name).startswith(".wh."))
    ]
    for m in members:
        # a later layer may replace a directory with a file or the other way round
        target = root / m.name.lstrip("/")
        if not os.path.realpath(target.parent).startswith(os.path.realpath(root)):
            continue  # through a link out of the root: the filter refuses the member below
        if target.is_symlink() or (target.exists() and target.is_dir() != m.isdir()):
            _remove(target)
    tar.extractall(root, members=members, filter="tar")


def _real_dir(root: Path, rel: str) -> Path:
    """Make ``root/rel`` a real directory, replacing any link on the way: an image's links
    point into the image, never at the host that prepares it."""
    path = root
    for part in rel.split("/"):
        path = path / part
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            _remove(path)
        path.mkdir(exist_ok=True)
    return path


def add_mount_points(root: Path) -> None:
    for d in MOUNT_DIRS:
        _real_dir(root, d)
    etc = _real_dir(root, "etc")
    for name in ETC_FILES:
        path = etc / name
        if path.is_symlink() or path.is_dir():
            _remove(path)
        if not path.exists():
            path.write_text("")

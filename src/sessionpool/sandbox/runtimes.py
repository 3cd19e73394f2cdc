"""Session runtimes: what runs inside a session, kept apart from the server's own environment.

A runtime is a directory under the runtimes directory (``sessionpool runtime build`` makes it,
see ``runtime_build``), described by its ``manifest.json``:

- ``python``: a relocatable CPython with the runtime's packages, as a tree (``root/``, used by
  the unsafe backend) and as a squashfs image of that tree (``image.sqfs``). The jail mounts the
  image read-only at ``/opt/python`` in the zygote's private mount namespace and in every
  session, so a session sees neutral paths only: never the server's virtualenv, the checkout or
  the interpreter's install location (a bind mount of a host directory would show that
  directory's host path in ``/proc/self/mountinfo``; the root of a filesystem image shows ``/``).
- ``node``: Node.js from the host's ``/usr`` and sessionpool's JavaScript kernel.

The kernel's own modules (``kernel_files``) are not part of any runtime: each zygote copies them
into its private ``/opt/sessionpool``, so a server upgrade never needs an image rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sessionpool import errors
from sessionpool.config import PoolConfig
from sessionpool.types import RuntimeInfo

#: where things live inside a zygote's mount namespace and inside every session
OPT = "/opt"
PYTHON_MOUNT = "/opt/python"
KERNEL_MOUNT = "/opt/sessionpool"
KERNEL_LIB = "/opt/sessionpool/lib"
#: the CA bundle of sessions with network (the system's, the operator's, the egress proxy's)
SESSION_CA_BUNDLE = "/opt/sessionpool/ca.pem"
IMAGE_MOUNT = "/opt/image"
JAIL_BUILD = "/opt/jail"
ZYGOTE_HOME = "/opt/home"
NODE_KERNEL = "sessionpool/kernel/node/kernel.js"

#: the package modules a kernel needs inside the sandbox: the standard library only, besides
#: the runtime's IPython (``sessionpool/__init__.py`` is written empty: the client stays out)
KERNEL_MODULES = (
    "protocol.py",
    "kernel/__init__.py",
    "kernel/main.py",
    "kernel/procs.py",
    "kernel/shell.py",
    "kernel/node/kernel.js",
    "sandbox/__init__.py",
    "sandbox/jail.py",
    "sandbox/linux.py",
    "sandbox/zygote.py",
)

RuntimeKind = Literal["python", "node"]


def package_digest(packages: list[str]) -> str:
    """sha256 over the sorted ``name==version`` lines: equal digests, equal package sets."""
    text = "".join(f"{p}\n" for p in sorted(packages, key=str.lower))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Runtime:
    name: str
    kind: RuntimeKind
    #: the interpreter's version (``3.11.7``, ``v20.20.2``)
    version: str
    packages: tuple[str, ...]
    digest: str
    path: Path
    #: python: the interpreter inside the runtime (``bin/python3.11``); node: the host binary
    executable: str

    @property
    def image(self) -> Path:
        return self.path / "image.sqfs"

    @property
    def tree(self) -> Path:
        return self.path / "root"

    def info(self, image: str = "") -> RuntimeInfo:
        return RuntimeInfo(self.name, self.kind, self.version, self.packages, self.digest, image)

    @classmethod
    def load(cls, runtimes_dir: Path, name: str) -> Runtime:
        path = runtimes_dir / name
        try:
            data = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError:
            raise errors.ConfigError(
                f"runtime {name!r} is not built in {runtimes_dir}: run `sessionpool runtime "
                f"build {name}` (or `make runtimes`), or name a built one in the pool's runtime "
                "setting"
            ) from None
        except (OSError, ValueError) as exc:
            raise errors.ConfigError(f"runtime {name!r}: unreadable manifest: {exc}") from None
        packages = tuple(str(p) for p in data.get("packages", []))
        return cls(
            name=name,
            kind=data["kind"],
            version=str(data["version"]),
            packages=packages,
            digest=package_digest(list(packages)),
            path=path,
            executable=str(data["executable"]),
        )


def describe(runtimes_dir: Path, pool: PoolConfig) -> RuntimeInfo:
    """The pool's runtime as built in ``runtimes_dir``; kind "unknown" when it is not built."""
    try:
        return Runtime.load(runtimes_dir, pool.runtime).info(pool.image)
    except (errors.ConfigError, KeyError):
        return RuntimeInfo(pool.runtime, "unknown", "", image=pool.image)


def available(runtimes_dir: Path) -> list[Runtime]:
    found = []
    if runtimes_dir.is_dir():
        for child in sorted(runtimes_dir.iterdir()):
            if (child / "manifest.json").is_file():
                with contextlib.suppress(errors.ConfigError, KeyError):
                    found.append(Runtime.load(runtimes_dir, child.name))
    return found


#: this ``sessionpool`` package's directory: where the kernel's modules are copied from
PACKAGE = Path(__file__).resolve().parent.parent


def kernel_files(package: Path = PACKAGE) -> list[tuple[Path, str]]:
    """(source file, path under the kernel's lib directory) for every module the kernel needs."""
    return [(package / rel, f"sessionpool/{rel}") for rel in KERNEL_MODULES]


def install_kernel(lib: Path, package: Path = PACKAGE) -> None:
    """Copy the kernel's modules from ``package`` into ``lib`` (a fresh directory) as package
    ``sessionpool``."""
    for src, rel in kernel_files(package):
        dst = lib / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(src.read_bytes())
    (lib / "sessionpool" / "__init__.py").write_text(
        '"""The part of sessionpool that runs inside a session: the kernel and the jail."""\n'
    )


class LoopDevices:
    """One read-only loop device per image file, attached once and shared by every zygote.

    Mounting the same block device again reuses its superblock, so every zygote and session of
    a runtime shares one page cache of the image. direct-io keeps the backing file's own pages
    out of the cache (they would be a second copy). Each engine attaches its own devices and
    detaches them at close: another engine's devices (a second server, cluster node engines on
    one host) are never touched, so a server that crashed leaves its few devices attached.
    """

    def __init__(self) -> None:
        self._devices: dict[Path, str] = {}

    def attach(self, image: Path) -> str:
        image = image.resolve()
        dev = self._devices.get(image)
        if dev is not None:
            return dev
        try:
            out = subprocess.run(
                ["losetup", "--find", "--show", "--read-only", "--direct-io=on", str(image)],
                capture_output=True,
                text=True,
                check=True,
            )
        except FileNotFoundError:
            raise errors.SandboxUnavailable(["losetup (util-linux) is not installed"]) from None
        except subprocess.CalledProcessError as exc:
            raise errors.SandboxUnavailable(
                [f"a loop device for {image} could not be set up: {exc.stderr.strip()}"]
            ) from None
        dev = out.stdout.strip()
        self._devices[image] = dev
        return dev

    def close(self) -> None:
        for dev in self._devices.values():
            # lazily: the kernel detaches it once the last zygote's mount has gone
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        self._devices.clear()

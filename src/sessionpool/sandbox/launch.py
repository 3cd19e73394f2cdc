"""Starts a jail zygote in its own mount namespace, at neutral paths, then execs it.

Run by the host as ``python -I -m sessionpool.sandbox.launch <fd> <plan>``. In a private mount
namespace it puts a small tmpfs on ``/opt`` (hiding the host's ``/opt`` from the zygote only)
and fills it:

- ``/opt/python``: the runtime's image (a loop device), read-only;
- ``/opt/image``: a custom image's root filesystem, read-only, when the pool has one;
- ``/opt/sessionpool/lib``: a copy of the kernel's own modules (``runtimes.KERNEL_MODULES``),
  taken from the server's own package (named in the plan: this launcher runs isolated, ``-I``,
  so it imports whatever is installed, which is not the server's code when the server runs
  from another tree on ``PYTHONPATH``);
- ``/opt/sessionpool/ca.pem``: the CA bundle of sessions with network (egress);
- ``/opt/home``: the zygote's writable home (matplotlib's font cache, copied from the runtime);
- ``/opt/jail``: where each child builds its jail.

The host's session workspaces are unmounted here: each child gets its own as a detached mount
with its spawn request (``jail.JailSpec.workspace_fd``).

Then it execs the zygote's interpreter, which imports the kernel from ``/opt/sessionpool/lib``:
every path the zygote (and so every session forked from it) holds is one of these neutral
paths, and the server's own environment is not on its ``sys.path``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import NoReturn

from sessionpool.sandbox import linux
from sessionpool.sandbox.runtimes import (
    JAIL_BUILD,
    KERNEL_LIB,
    OPT,
    SESSION_CA_BUNDLE,
    ZYGOTE_HOME,
    install_kernel,
)


def boot_code(lib: str) -> str:
    """The zygote's ``-c`` program: the kernel's modules from ``lib``, nothing else added."""
    return (
        f"import sys; sys.path.insert(0, {lib!r}); "
        "from sessionpool.sandbox.zygote import main; main()"
    )


def drop_mounts_under(directory: str) -> None:
    """Unmount, in this namespace only, what the host has mounted under ``directory``: the
    workspaces of the sessions live when this zygote starts (a rotation's successor starts with
    hundreds), which every child's namespace would otherwise copy."""
    prefix = directory.rstrip("/") + "/"
    # the newest first: a mount on top before the one below
    for point in reversed(linux.mount_points()):
        if point.startswith(prefix):
            linux.umount2(point, linux.MNT_DETACH)


def main() -> NoReturn:
    fd = sys.argv[1]
    plan = json.loads(sys.argv[2])
    linux.prctl(linux.PR_SET_PDEATHSIG, 9)  # the zygote, too, never outlives the server
    linux.unshare(linux.CLONE_NEWNS)
    # private: nothing the host mounts later arrives here (each session's workspace comes
    # with its spawn request as a detached mount, see jail.JailSpec), so no child's namespace
    # copies other sessions' mounts; nothing mounted here goes back
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    if plan.get("workspaces"):
        drop_mounts_under(plan["workspaces"])
    os.makedirs(OPT, exist_ok=True)
    linux.mount("sessionpool", OPT, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64m,mode=0755")
    for device, target in plan.get("images", []):
        os.makedirs(target)
        flags = linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV
        linux.mount(device, target, "squashfs", flags)
    install_kernel(Path(KERNEL_LIB), Path(plan["kernel_package"]))
    if plan.get("ca_bundle"):
        shutil.copyfile(plan["ca_bundle"], SESSION_CA_BUNDLE)
        os.chmod(SESSION_CA_BUNDLE, 0o644)
    os.makedirs(JAIL_BUILD)
    os.makedirs(ZYGOTE_HOME, mode=0o700)
    cache = plan.get("matplotlib_cache")
    if cache and os.path.isdir(cache):
        shutil.copytree(cache, f"{ZYGOTE_HOME}/matplotlib")
    python = plan["python"]
    os.chdir("/")
    os.execv(python, [python, "-I", "-c", boot_code(KERNEL_LIB), fd])


if __name__ == "__main__":
    main()

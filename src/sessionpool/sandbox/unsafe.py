"""The unsafe backend: kernels are plain forked processes on the host. Development only.

No isolation at all: a session runs as the server's own user, with the host's network and
files. The server starts with it only when the operator names it explicitly.
"""

from __future__ import annotations

import logging
import shutil
import sys
from typing import Any

from sessionpool import errors
from sessionpool.config import PoolConfig
from sessionpool.sandbox.backend import Slot
from sessionpool.sandbox.launch import boot_code
from sessionpool.sandbox.runtimes import Runtime, install_kernel
from sessionpool.sandbox.workspace import Workspace
from sessionpool.sandbox.zygotes import ZygoteBackend

log = logging.getLogger("sessionpool.sandbox")


class UnsafeBackend(ZygoteBackend):
    name = "unsafe"
    isolated = False

    async def start(self) -> None:
        log.warning(
            "UNSAFE backend: sessions run WITHOUT isolation, as the server's own user, with the "
            "host's network and files. Never expose this server to untrusted code."
        )
        self._prepare_dirs()
        # the kernel's modules, copied fresh as a jail zygote's launcher does
        self.kernel_lib = self.data_dir / "kernel" / "lib"
        shutil.rmtree(self.kernel_lib, ignore_errors=True)
        install_kernel(self.kernel_lib)

    async def _zygote_command(self, runtime: Runtime, pool: PoolConfig) -> list[str]:
        if pool.image:
            detail = f"a custom image ({pool.image}) needs the jail backend"
            raise errors.ConfigError(f"pool {pool.name!r}: {detail}")
        # the runtime's tree in place: no mount namespace here, so its real path shows
        python = str(runtime.tree / runtime.executable) if runtime.kind == "python" else None
        return [python or sys.executable, "-I", "-c", boot_code(str(self.kernel_lib)), "{fd}"]

    async def create_slot(self, pool: PoolConfig) -> Slot:
        limits = pool.limits
        ws = Workspace.create(
            self._new_workspace_path(), None, limits.disk_bytes, limits.file_bytes, False
        )
        return Slot(ws.path.name, None, ws, limits)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()

    def _spawn_request(self, slot: Slot, pool: PoolConfig, runtime: Runtime) -> dict[str, Any]:
        home = str(slot.workspace.path)
        kernel = self._kernel_request(runtime, home, str(runtime.tree), str(self.kernel_lib))
        return {"jail": None, "workspace": home, **kernel}

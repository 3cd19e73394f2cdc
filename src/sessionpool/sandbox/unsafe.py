"""The unsafe backend: kernels are plain forked processes on the host. Development only.

No isolation at all: a session runs as the server's own user, with the host's network and
files. The server starts with it only when the operator names it explicitly.
"""

from __future__ import annotations

import logging
from typing import Any

from sessionpool.config import PoolConfig
from sessionpool.sandbox.backend import Slot
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

    async def create_slot(self, pool: PoolConfig) -> Slot:
        limits = pool.limits
        ws = Workspace.create(
            self._new_workspace_path(), None, limits.disk_bytes, limits.file_bytes, False
        )
        return Slot(ws.path.name, None, ws, limits)

    def release_slot(self, slot: Slot) -> None:
        slot.workspace.destroy()

    def _spawn_request(self, slot: Slot) -> dict[str, Any]:
        return {
            "jail": None,
            "workspace": str(slot.workspace.path),
            "env": self._session_env(str(slot.workspace.path)),
        }

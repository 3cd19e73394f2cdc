"""Sandboxes: what the E2B face knows of each one, and the registry that holds them.

A sandbox is a session of a pool, kept under a reserved key (:func:`session_key`) that no
dynamic-sessions identifier can name (identifiers never hold the tenant separator, and this
key starts with it), plus what E2B's control plane returns: its template, metadata, environment,
lifetime (``end_at``, as E2B counts it: from the last create/connect/set-timeout, not from the
last use) and the tokens its traffic must carry.

The registry lives in the server's memory: sandboxes do not survive a server restart (nor do
their sessions).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sessionpool.faces.e2b.network import NetworkAsk
from sessionpool.tenancy import SEPARATOR, Principal

#: the first component of every sandbox session key
SANDBOX_KEYS = "e2b"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def session_key(tenant: str, sandbox_id: str) -> str:
    """Where ``tenant``'s sandbox ``sandbox_id`` keeps its session in its pool."""
    return f"{SEPARATOR}{SANDBOX_KEYS}{SEPARATOR}{tenant}{SEPARATOR}{sandbox_id}"


def new_sandbox_id() -> str:
    """E2B's shape: lower-case letters and digits (safe as a DNS label in ``{port}-{id}.``)."""
    return "i" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(19))


@dataclass
class Context:
    """One interpreter of a sandbox (E2B's code context). The default one is the sandbox's own
    session; a created Python context is a namespace in that session (``namespace``: its own
    variables, the sandbox's files and process); a JavaScript one is a session of its own."""

    id: str
    language: str
    cwd: str
    pool: str
    key: str
    #: cells run, for the SDK's ``execution_count``
    executions: int = 0
    #: the kernel namespace the context's cells run in (None: the session's default one)
    namespace: str | None = None


@dataclass
class Sandbox:
    sandbox_id: str
    tenant: str
    #: who created it: its traffic (authenticated by the access token) acts as this principal
    principal: Principal
    pool: str
    template_id: str
    metadata: dict[str, str] = field(default_factory=dict)
    env_vars: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    #: when the sandbox ends (its lifetime, E2B's ``timeout`` counted from create/connect)
    end_at: float = 0.0
    #: ``X-Access-Token`` on every envd and code-interpreter call
    envd_access_token: str = field(default_factory=lambda: secrets.token_hex(24))
    #: ``E2B-Traffic-Access-Token`` (returned; the access token is what is checked)
    traffic_token: str = field(default_factory=lambda: secrets.token_hex(24))
    #: the ``Idempotency-Key`` and body digest it was created with, if any
    idempotency: tuple[str, str] | None = None
    #: its code contexts by id: "default" (the sandbox's session) and those created
    contexts: dict[str, Context] = field(default_factory=dict)
    #: what it asked of its network (create, or the last network update); None: its pool's
    #: policy, untouched
    network: NetworkAsk | None = None

    @property
    def session_key(self) -> str:
        return session_key(self.tenant, self.sandbox_id)


class Registry:
    """Every live sandbox, by id (in memory)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Sandbox] = {}

    def add(self, sandbox: Sandbox) -> None:
        self._by_id[sandbox.sandbox_id] = sandbox

    def get(self, sandbox_id: str, tenant: str | None = None) -> Sandbox | None:
        """The sandbox, if it exists and (with ``tenant``) belongs to that tenant: another
        tenant's sandbox is as absent as one never created."""
        sandbox = self._by_id.get(sandbox_id)
        if sandbox is None or (tenant is not None and sandbox.tenant != tenant):
            return None
        return sandbox

    def remove(self, sandbox_id: str) -> Sandbox | None:
        return self._by_id.pop(sandbox_id, None)

    def of_tenant(self, tenant: str) -> list[Sandbox]:
        return [s for s in self._by_id.values() if s.tenant == tenant]

    def by_idempotency(self, tenant: str, key: str) -> Sandbox | None:
        for s in self._by_id.values():
            if s.tenant == tenant and s.idempotency is not None and s.idempotency[0] == key:
                return s
        return None

    def expired(self, now: float) -> list[Sandbox]:
        return [s for s in self._by_id.values() if s.end_at <= now]

    def __iter__(self) -> Iterator[Sandbox]:
        return iter(list(self._by_id.values()))

    def __len__(self) -> int:
        return len(self._by_id)

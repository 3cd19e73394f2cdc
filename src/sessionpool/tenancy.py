"""Tenants, scopes and who is calling: the shared vocabulary of access control.

A request is made by a :class:`Principal`: the tenant it acts for, the credential that proved it
(an API key's id, or a token's issuer and subject), the rights (:class:`Scope`) it carries and
the pools it may use. The server resolves it from the credentials (``server/auth.py``); the faces
check it and act for its tenant; nothing below the faces knows about credentials at all.

Tenants never meet: a session is stored under its tenant's *session key*
(:func:`session_key`), so two tenants may both say ``identifier=demo`` and get two sessions,
and a tenant that names another's identifier simply finds nothing. The default tenant (the
zero-config one, of the server's generated key) keeps the plain identifier, so a server with one
tenant stores sessions exactly as it always did.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

#: the tenant of the server's own keys (the generated one, or those set in its settings)
DEFAULT_TENANT = "default"
#: tenant names: short, lower case, safe in a path, a label and a log line
TENANT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
#: between a tenant and an identifier in a session key: no face accepts it in an identifier
SEPARATOR = "\\"


class Scope(StrEnum):
    """One right a credential may carry."""

    #: run code in sessions (execute, executions, MCP tools)
    EXECUTE = "execute"
    #: upload, list, download and delete a session's files
    FILES = "files"
    #: list sessions, read their properties, delete them
    SESSIONS = "sessions"
    #: the agents surface: agents, threads, runs, responses, stored files, containers
    AGENTS = "agents"
    #: the operator's routes: the cluster's nodes, draining
    ADMIN = "admin"
    #: the Prometheus metrics at /metrics
    METRICS = "metrics"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)


def parse_scopes(names: Iterable[str], where: str) -> frozenset[Scope]:
    """Scope names as given in a setting or on the command line (``all`` is every scope)."""
    out: set[Scope] = set()
    for name in names:
        name = name.strip().lower()
        if not name:
            continue
        if name in ("all", "*"):
            out |= ALL_SCOPES
            continue
        try:
            out.add(Scope(name))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"{where}: unknown scope {name!r}; known: {known}, all") from None
    return frozenset(out)


def check_tenant(name: str, where: str) -> str:
    if not TENANT_NAME.fullmatch(name):
        raise ValueError(
            f"{where}: tenant {name!r} is not a tenant name (1-63 of a-z, 0-9, '-', '_', "
            "starting with a letter or digit)"
        )
    return name


@dataclass(frozen=True)
class Principal:
    """Who a request acts for, and what it may do."""

    tenant: str
    #: the credential, for the audit log: ``key:<id>``, ``token:<issuer>#<subject>``, ...
    credential: str
    scopes: frozenset[Scope]
    #: the pools it may use; None: every pool
    pools: frozenset[str] | None = None

    def may(self, scope: Scope) -> bool:
        return scope in self.scopes

    def may_use(self, pool: str) -> bool:
        return self.pools is None or pool in self.pools


#: the server's own keys, and every request when authentication is off (development only)
ROOT = Principal(DEFAULT_TENANT, "server-key", ALL_SCOPES)


def session_key(tenant: str, identifier: str) -> str:
    """Where ``tenant``'s session ``identifier`` is kept in a pool."""
    return identifier if tenant == DEFAULT_TENANT else f"{tenant}{SEPARATOR}{identifier}"


def identifier_of(tenant: str, key: str) -> str | None:
    """The identifier ``tenant`` knows the session stored under ``key`` by; None if it is
    another tenant's."""
    owner, sep, identifier = key.partition(SEPARATOR)
    if not sep:
        return key if tenant == DEFAULT_TENANT else None
    return identifier if owner == tenant else None

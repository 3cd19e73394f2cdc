"""The error tree of the server side of sessionpool.

Every error says which pool and session it concerns, which limit was hit, and what to do next;
the first three are attributes too (``pool``, ``identifier``, ``limit``: the setting to raise).
Each carries a neutral ``code`` (``ErrorCode``); the HTTP faces give codes their status and
their wire names (``faces/http.py``), so nothing below the faces knows about HTTP or about any
API's vocabulary. The client SDK has its own tree (``sessionpool.client``): no name is shared.

    ServiceError                  base class (code: internal)
    ├── ConfigError               bad configuration; fix the file, flag or variable named
    ├── SandboxError              a fork, jail, mount or cgroup failed (the server's fault)
    │   └── SandboxUnavailable    the host cannot build the jail at all (fail closed at start)
    ├── PoolError                 concerns a pool
    │   ├── PoolNotFound
    │   ├── PoolAtCapacity        max_sessions reached, not enough memory, or no uid left
    │   └── PoolClosed            the pool is shutting down
    ├── SessionError              concerns one session
    │   ├── InvalidIdentifier
    │   ├── SessionNotFound
    │   ├── InterpreterLost       the interpreter died; its state is gone, files are kept
    │   ├── SessionLost           the node holding it was lost: state and files are gone
    │   └── ProtocolError         the kernel sent something malformed (the session is killed)
    ├── FileError                 concerns a file in a session's workspace
    │   ├── InvalidPath           `..`, NUL, absolute path outside /mnt/data, too long ...
    │   ├── FileNotFound
    │   ├── NotARegularFile       a symlink, FIFO, device or directory where a file was expected
    │   ├── FileOverLimit         one file over the per-file limit
    │   └── QuotaExceeded         the session's workspace is full
    ├── InvalidArgument           a request that cannot be carried out as asked (names the param)
    ├── AccessError               concerns the caller's credential and its tenant
    │   ├── ScopeDenied           the credential lacks the right (scope) the operation needs
    │   └── TenantQuotaExceeded   the tenant is over one of its quotas (retry after a while)
    └── AgentsError               concerns the agents service (assistants, threads, responses)
        ├── ObjectNotFound        no agent, thread, run, file, container ... with that id
        └── Conflict              the object is busy (a run is already active on the thread)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """What went wrong, in no API's vocabulary."""

    INTERNAL = "internal"
    CONFIG = "config"
    SANDBOX_FAILED = "sandbox_failed"
    SANDBOX_UNAVAILABLE = "sandbox_unavailable"
    POOL_NOT_FOUND = "pool_not_found"
    POOL_AT_CAPACITY = "pool_at_capacity"
    POOL_CLOSED = "pool_closed"
    INVALID_IDENTIFIER = "invalid_identifier"
    SESSION_NOT_FOUND = "session_not_found"
    INTERPRETER_LOST = "interpreter_lost"
    KERNEL_PROTOCOL = "kernel_protocol"
    INVALID_PATH = "invalid_path"
    FILE_NOT_FOUND = "file_not_found"
    NOT_A_REGULAR_FILE = "not_a_regular_file"
    FILE_OVER_LIMIT = "file_over_limit"
    QUOTA_EXCEEDED = "quota_exceeded"
    OBJECT_NOT_FOUND = "object_not_found"
    INVALID_ARGUMENT = "invalid_argument"
    CONFLICT = "conflict"
    SCOPE_DENIED = "scope_denied"
    TENANT_QUOTA = "tenant_quota"


class ServiceError(Exception):
    """Base class of every error the server side raises on purpose."""

    code: ErrorCode = ErrorCode.INTERNAL
    #: the pool, the session and the setting (its configuration name) the error concerns
    pool: str | None = None
    identifier: str | None = None
    limit: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ServiceError):
    code = ErrorCode.CONFIG


class SandboxError(ServiceError):
    """The sandbox could not give a session what it needs: a fork, a jail, a mount, a cgroup.

    The server's fault, not the caller's: nothing to delete or retry differently.
    """

    code = ErrorCode.SANDBOX_FAILED

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"the sandbox failed: {detail}. Check the server log and `sessionpool doctor` on "
            "the host; retry once it is fixed."
        )


class SandboxUnavailable(SandboxError):
    """The jail cannot be built on this host. The message lists what is missing."""

    code = ErrorCode.SANDBOX_UNAVAILABLE

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        self.detail = "; ".join(missing)
        lines = "\n".join(f"  - {m}" for m in missing)
        ServiceError.__init__(
            self,
            "refusing to start: this host cannot provide session isolation:\n"
            f"{lines}\n"
            "Run `sessionpool doctor` for the full report. For local development only, choose "
            "the unsafe backend explicitly (--backend unsafe / SESSIONPOOL_BACKEND=unsafe): "
            "it runs untrusted code WITHOUT isolation.",
        )


class PoolError(ServiceError):
    def __init__(self, pool: str, message: str) -> None:
        self.pool = pool
        super().__init__(f"pool {pool!r}: {message}")


class PoolNotFound(PoolError):
    code = ErrorCode.POOL_NOT_FOUND

    def __init__(self, pool: str) -> None:
        super().__init__(pool, "no such pool; check the pool name in the endpoint URL")


class PoolAtCapacity(PoolError):
    """No session can be allocated now (Azure answers 404 here; so do our faces)."""

    code = ErrorCode.POOL_AT_CAPACITY

    def __init__(self, pool: str, reason: str, limit: str | None = None) -> None:
        self.reason = reason
        self.limit = limit
        super().__init__(
            pool,
            f"cannot allocate a new session: {reason}. Delete idle sessions, wait for their "
            "cooldown, or raise the limit in the pool configuration.",
        )


class PoolClosed(PoolError):
    code = ErrorCode.POOL_CLOSED

    def __init__(self, pool: str) -> None:
        super().__init__(pool, "the pool is shutting down; retry against a running server")


class SessionError(ServiceError):
    def __init__(self, pool: str, identifier: str, message: str) -> None:
        self.pool = pool
        self.identifier = identifier
        super().__init__(f"session {identifier!r} in pool {pool!r}: {message}")


class InvalidIdentifier(SessionError):
    code = ErrorCode.INVALID_IDENTIFIER


class SessionNotFound(SessionError):
    code = ErrorCode.SESSION_NOT_FOUND

    def __init__(self, pool: str, identifier: str) -> None:
        super().__init__(pool, identifier, "no such session (it may have cooled down)")


class InterpreterLost(SessionError):
    """The interpreter process ended. Variables and imports are gone; files in /mnt/data stay."""

    code = ErrorCode.INTERPRETER_LOST

    def __init__(self, pool: str, identifier: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            pool,
            identifier,
            f"the interpreter ended ({reason}); its variables and imports are lost, files in "
            "/mnt/data are kept. The next call starts a fresh interpreter.",
        )


class SessionLost(SessionError):
    """The cluster node that held the session was lost (or its engine restarted): variables,
    imports and files are gone. Said once; the next call gets a fresh session wherever there is
    free capacity."""

    code = ErrorCode.INTERPRETER_LOST

    def __init__(self, pool: str, identifier: str, reason: str) -> None:
        self.reason = reason
        SessionError.__init__(self, pool, identifier, "lost")
        self.message = reason


class ProtocolError(SessionError):
    code = ErrorCode.KERNEL_PROTOCOL


class FileError(ServiceError):
    """Raised by a workspace, which knows no session: the session layer fills in ``pool`` and
    ``identifier`` on the way up."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"file {path!r}: {message}")


class InvalidPath(FileError):
    code = ErrorCode.INVALID_PATH


class FileNotFound(FileError):
    code = ErrorCode.FILE_NOT_FOUND

    def __init__(self, path: str) -> None:
        super().__init__(path, "not found in /mnt/data; list the files to see what exists")


class NotARegularFile(FileError):
    code = ErrorCode.NOT_A_REGULAR_FILE


class FileOverLimit(FileError):
    code = ErrorCode.FILE_OVER_LIMIT

    def __init__(self, path: str, limit_bytes: int, limit: str = "limits.file_bytes") -> None:
        self.limit_bytes = limit_bytes
        self.limit = limit
        super().__init__(
            path,
            f"larger than the per-file limit of {limit_bytes} bytes; split it or raise the limit",
        )


class QuotaExceeded(FileError):
    code = ErrorCode.QUOTA_EXCEEDED
    limit = "limits.disk_bytes"

    def __init__(self, path: str, quota: int) -> None:
        self.quota = quota
        super().__init__(
            path,
            f"the session's workspace is full (quota {quota} bytes); delete files first. "
            "Nothing partial was kept.",
        )


class InvalidArgument(ServiceError):
    code = ErrorCode.INVALID_ARGUMENT

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class EgressWidens(InvalidArgument):
    """A session's egress policy asked for more than its pool allows (a 400: narrow it)."""

    def __init__(self, pool: str, detail: str, param: str | None = None) -> None:
        self.pool = pool
        self.limit = "network"
        super().__init__(
            f"pool {pool!r}: {detail}. A session's network can only be narrowed from its "
            "pool's (the pool's `network` and `egress.allow` settings); ask the operator to "
            "widen the pool, or ask for less.",
            param,
        )


class AccessError(ServiceError):
    """Concerns the caller's credential or tenant (never another tenant's objects: those are
    simply not found)."""

    tenant: str | None = None


class ScopeDenied(AccessError):
    code = ErrorCode.SCOPE_DENIED

    def __init__(self, tenant: str, scope: str, operation: str) -> None:
        self.tenant = tenant
        self.scope = scope
        super().__init__(
            f"{operation} needs the {scope!r} scope, which this credential (tenant {tenant!r}) "
            f"does not carry; use a key or token with it (sessionpool keys create --scopes {scope})"
        )


class TenantQuotaExceeded(AccessError):
    """One of a tenant's quotas is used up; ``retry_after`` seconds is when to try again."""

    code = ErrorCode.TENANT_QUOTA

    def __init__(self, tenant: str, quota: str, detail: str, retry_after: float) -> None:
        self.tenant = tenant
        self.limit = f"quotas.{quota}"
        self.quota = quota
        self.retry_after = retry_after
        super().__init__(
            f"tenant {tenant!r} is over its {quota} quota ({detail}); retry after "
            f"{max(1, round(retry_after))} s, or ask the operator to raise [tenants.{tenant}] "
            f"{quota}"
        )


class AgentsError(ServiceError):
    code = ErrorCode.INTERNAL


class ObjectNotFound(AgentsError):
    code = ErrorCode.OBJECT_NOT_FOUND

    def __init__(self, kind: str, object_id: str) -> None:
        self.kind = kind
        self.object_id = object_id
        super().__init__(
            f"no {kind} with id {object_id!r}; it was never created, was deleted, or expired. "
            f"List the {kind}s to see which exist."
        )


class Conflict(AgentsError):
    code = ErrorCode.CONFLICT

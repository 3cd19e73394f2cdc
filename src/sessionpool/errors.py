"""The error tree of sessionpool.

Every error says which pool and session it concerns, which limit was hit, and what to do next.
The HTTP faces map these classes to status codes and wire bodies; nothing below the faces knows
about HTTP.

    SessionpoolError
    ├── ConfigError               bad configuration; fix the file, flag or variable named
    ├── SandboxError              a fork, jail, mount or cgroup failed (the server's fault)
    │   └── SandboxUnavailable    the host cannot build the jail at all (fail closed at start)
    ├── PoolError                 concerns a pool
    │   ├── PoolNotFound
    │   ├── PoolExhausted         max_sessions reached, or not enough memory to admit another
    │   └── PoolClosed            the pool is shutting down
    ├── SessionError              concerns one session
    │   ├── InvalidIdentifier
    │   ├── SessionNotFound
    │   ├── SessionLost           the interpreter died; its state is gone, files are kept
    │   └── ProtocolError         the kernel sent something malformed (the session is killed)
    └── FileError                 concerns a file in a session's workspace
        ├── InvalidPath           `..`, NUL, absolute path outside /mnt/data, too long ...
        ├── FileNotFound
        ├── NotARegularFile       a symlink, FIFO, device or directory where a file was expected
        ├── FileTooLarge          one file over the per-file limit
        └── QuotaExceeded         the session's workspace is full
    AgentsError                   concerns the agents service (assistants, threads, responses)
    ├── ObjectNotFound            no agent, thread, run, file, container ... with that id
    ├── InvalidRequest            a well-formed request that cannot be carried out as asked
    └── Conflict                  the object is busy (a run is already active on the thread)
"""

from __future__ import annotations


class SessionpoolError(Exception):
    """Base class of every error sessionpool raises on purpose."""

    #: a short machine-readable code; faces put it on the wire (e.g. ``x-ms-error-code``)
    code: str = "InternalError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(SessionpoolError):
    code = "InvalidConfiguration"


class SandboxError(SessionpoolError):
    """The sandbox could not give a session what it needs: a fork, a jail, a mount, a cgroup.

    The server's fault, not the caller's: nothing to delete or retry differently.
    """

    code = "SandboxFailure"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(
            f"the sandbox failed: {detail}. Check the server log and `sessionpool doctor` on "
            "the host; retry once it is fixed."
        )


class SandboxUnavailable(SandboxError):
    """The jail cannot be built on this host. The message lists what is missing."""

    code = "SandboxUnavailable"

    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        self.detail = "; ".join(missing)
        lines = "\n".join(f"  - {m}" for m in missing)
        SessionpoolError.__init__(
            self,
            "refusing to start: this host cannot provide session isolation:\n"
            f"{lines}\n"
            "Run `sessionpool doctor` for the full report. For local development only, choose "
            "the unsafe backend explicitly (--backend unsafe / SESSIONPOOL_BACKEND=unsafe): "
            "it runs untrusted code WITHOUT isolation.",
        )


class PoolError(SessionpoolError):
    def __init__(self, pool: str, message: str) -> None:
        self.pool = pool
        super().__init__(f"pool {pool!r}: {message}")


class PoolNotFound(PoolError):
    code = "PoolNotFound"

    def __init__(self, pool: str) -> None:
        super().__init__(pool, "no such pool; check the pool name in the endpoint URL")


class PoolExhausted(PoolError):
    """No session can be allocated now. Azure answers 404 here; so do our faces."""

    code = "SessionPoolExhausted"

    def __init__(self, pool: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            pool,
            f"cannot allocate a new session: {reason}. Delete idle sessions, wait for their "
            "cooldown, or raise the limit in the pool configuration.",
        )


class PoolClosed(PoolError):
    code = "PoolClosed"

    def __init__(self, pool: str) -> None:
        super().__init__(pool, "the pool is shutting down; retry against a running server")


class SessionError(SessionpoolError):
    def __init__(self, pool: str, identifier: str, message: str) -> None:
        self.pool = pool
        self.identifier = identifier
        super().__init__(f"session {identifier!r} in pool {pool!r}: {message}")


class InvalidIdentifier(SessionError):
    code = "InvalidIdentifier"


class SessionNotFound(SessionError):
    code = "SessionNotFound"

    def __init__(self, pool: str, identifier: str) -> None:
        super().__init__(pool, identifier, "no such session (it may have cooled down)")


class SessionLost(SessionError):
    """The interpreter process ended. Variables and imports are gone; files in /mnt/data stay."""

    code = "SessionLost"

    def __init__(self, pool: str, identifier: str, reason: str) -> None:
        self.reason = reason
        super().__init__(
            pool,
            identifier,
            f"the interpreter ended ({reason}); its variables and imports are lost, files in "
            "/mnt/data are kept. The next call starts a fresh interpreter.",
        )


class ProtocolError(SessionError):
    code = "SessionProtocolError"


class FileError(SessionpoolError):
    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"file {path!r}: {message}")


class InvalidPath(FileError):
    code = "InvalidFilePath"


class FileNotFound(FileError):
    code = "FileNotFound"

    def __init__(self, path: str) -> None:
        super().__init__(path, "not found in /mnt/data; list the files to see what exists")


class NotARegularFile(FileError):
    code = "NotARegularFile"


class FileTooLarge(FileError):
    code = "FileTooLarge"

    def __init__(self, path: str, limit: int) -> None:
        self.limit = limit
        super().__init__(
            path, f"larger than the per-file limit of {limit} bytes; split it or raise the limit"
        )


class QuotaExceeded(FileError):
    code = "DiskQuotaExceeded"

    def __init__(self, path: str, quota: int) -> None:
        self.quota = quota
        super().__init__(
            path,
            f"the session's workspace is full (quota {quota} bytes); delete files first. "
            "Nothing partial was kept.",
        )


class AgentsError(SessionpoolError):
    code = "AgentsError"


class ObjectNotFound(AgentsError):
    code = "not_found"

    def __init__(self, kind: str, object_id: str) -> None:
        self.kind = kind
        self.object_id = object_id
        super().__init__(
            f"no {kind} with id {object_id!r}; it was never created, was deleted, or expired. "
            f"List the {kind}s to see which exist."
        )


class InvalidRequest(AgentsError):
    code = "invalid_request"

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class Conflict(AgentsError):
    code = "conflict"

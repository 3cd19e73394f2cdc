"""Names of files in a session: everything lives under /mnt/data, and is named relative to it.

Every layer takes a name the same way (``relative``); the sandbox's workspace then validates it
(``sandbox.workspace.normalize``: no ``..``, no NUL, bounded lengths) before touching a file.
Standard library only: the client imports this too.
"""

from __future__ import annotations

import posixpath

MOUNT = "/mnt/data"


def relative(path: str) -> str:
    """``path`` as a name relative to /mnt/data, not yet validated.

    ``/mnt/data/a/b``, ``a/b``, ``./a//b/`` -> ``a/b``; ``/mnt/data`` and ``/mnt/data/`` ->
    ``""`` (the workspace itself). An absolute path anywhere else is returned unchanged, so the
    validation refuses it instead of a file landing somewhere the caller did not name.
    """
    if path == MOUNT or path.startswith(MOUNT + "/"):
        path = path[len(MOUNT) :]
    elif path.startswith("/"):
        return path
    return "/".join(part for part in path.split("/") if part not in ("", "."))


def absolute(path: str) -> str:
    """The session's own name for ``path``: ``a/b`` -> ``/mnt/data/a/b``."""
    rel = relative(path)
    return f"{MOUNT}/{rel}" if rel else MOUNT


def joined(directory: str | None, name: str) -> str:
    """``name`` inside ``directory`` (both as clients give them), relative to /mnt/data.

    A ``name`` under /mnt/data stands on its own; an absolute ``directory`` elsewhere stays
    absolute, for the validation to refuse.
    """
    if not directory or name == MOUNT or name.startswith(MOUNT + "/"):
        return relative(name)
    base = relative(directory)
    return relative(posixpath.join(base, name)) if base else relative(name)


def parent(path: str) -> str:
    """The /mnt/data directory that holds ``path``: ``a/b.txt`` -> ``/mnt/data/a``."""
    return absolute(posixpath.dirname(relative(path)))

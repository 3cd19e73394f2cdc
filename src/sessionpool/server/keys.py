"""Tenant API keys, stored hashed: what ``sessionpool keys`` writes and the server reads.

A key is ``spk_<id>_<secret>``, or ``e2b_<id><secret>`` in hex for the E2B SDKs (some of their
versions refuse a key that is not ``e2b_`` and hex). The id names it in listings, the audit log
and ``revoke``; only SHA-256 of the whole key is stored (a key is 256 random bits, so a fast
hash is as strong as a slow one, and checking it costs microseconds on every request). The file
is JSON, written whole to a temporary file and renamed over the old one, so the server never
reads half of it;
the server re-reads it when it changes (``KeyStore.lookup`` checks the file's identity on every
call: a ``stat``), so a revocation holds from the next request, without a restart.

The plain keys of ``api-key`` (the generated key, or ``--api-key``) stay what they were: the
default tenant with every scope (``server/auth.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sessionpool.errors import ConfigError
from sessionpool.tenancy import ALL_SCOPES, Principal, Scope, check_tenant, parse_scopes

PREFIX = "spk_"
_KEY = re.compile(r"spk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,100})")
E2B_PREFIX = "e2b_"
#: the E2B form: the 12 hex digits of the id, then the secret (64 hex digits)
_E2B_KEY = re.compile(r"e2b_([0-9a-f]{12})([0-9a-f]{40,128})")
VERSION = 1


def _digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class StoredKey:
    id: str
    tenant: str
    scopes: frozenset[Scope]
    #: None: every pool
    pools: frozenset[str] | None
    digest: str
    name: str = ""
    created_at: float = 0.0
    #: from this time on the key is refused (revoked, or rotated with a grace period)
    expires_at: float | None = None
    #: issued in the E2B form (``e2b_<hex>``); a rotation keeps the form
    e2b: bool = False

    def active(self, now: float) -> bool:
        return self.expires_at is None or now < self.expires_at

    def principal(self) -> Principal:
        return Principal(self.tenant, f"key:{self.id}", self.scopes, self.pools)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "scopes": sorted(s.value for s in self.scopes),
            "pools": None if self.pools is None else sorted(self.pools),
            "digest": self.digest,
            "name": self.name,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            **({"form": "e2b"} if self.e2b else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str) -> StoredKey:
        try:
            pools = doc.get("pools")
            return cls(
                id=str(doc["id"]),
                tenant=check_tenant(str(doc["tenant"]), where),
                scopes=parse_scopes(doc["scopes"], where),
                pools=None if pools is None else frozenset(str(p) for p in pools),
                digest=str(doc["digest"]),
                name=str(doc.get("name", "")),
                created_at=float(doc.get("created_at", 0.0)),
                expires_at=None if doc.get("expires_at") is None else float(doc["expires_at"]),
                e2b=doc.get("form") == "e2b",
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: a key entry is malformed ({exc})") from None


class KeyStore:
    """The key file of one server (``<data_dir>/keys.json`` by default)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int, int, int] | None = None
        self._keys: dict[str, StoredKey] = {}

    # --- the server's side: look a key up -------------------------------------------------

    def lookup(self, candidate: str) -> Principal | None:
        """The principal of ``candidate`` if it is a stored, active key; None otherwise.

        The digest is compared in constant time; the id in the key is not secret.
        """
        m = _KEY.fullmatch(candidate) or _E2B_KEY.fullmatch(candidate)
        if m is None:
            return None
        self._refresh()
        entry = self._keys.get(m.group(1))
        given = _digest(candidate)
        if entry is None:
            hmac.compare_digest(given, given)  # the same work whether the id exists or not
            return None
        if not hmac.compare_digest(given, entry.digest) or not entry.active(time.time()):
            return None
        return entry.principal()

    def _refresh(self) -> None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            self._identity, self._keys = None, {}
            return
        identity = (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
        if identity != self._identity:
            self._keys = {k.id: k for k in self._read()}
            self._identity = identity

    # --- the CLI's side: read and change the file ------------------------------------------

    def entries(self) -> list[StoredKey]:
        return self._read()

    def create(
        self,
        tenant: str,
        scopes: frozenset[Scope] = ALL_SCOPES,
        pools: frozenset[str] | None = None,
        name: str = "",
        e2b: bool = False,
    ) -> tuple[StoredKey, str]:
        """A new key for ``tenant``: its entry, and the key itself (shown once, never stored);
        with ``e2b``, in the form the E2B SDKs accept."""
        check_tenant(tenant, "tenant")
        if not scopes:
            raise ConfigError("a key needs at least one scope (e.g. --scopes execute,files)")
        with self._changing() as keys:
            key_id = secrets.token_hex(6)
            while key_id in keys:  # pragma: no cover - 48 random bits
                key_id = secrets.token_hex(6)
            if e2b:
                secret = E2B_PREFIX + key_id + secrets.token_hex(32)
            else:
                secret = PREFIX + key_id + "_" + secrets.token_urlsafe(32)
            entry = StoredKey(
                key_id, tenant, scopes, pools, _digest(secret), name, time.time(), e2b=e2b
            )
            keys[key_id] = entry
        return entry, secret

    def revoke(self, key_id: str, after_seconds: float = 0.0) -> StoredKey:
        """Refuse ``key_id`` from now on (or after a grace period)."""
        with self._changing() as keys:
            entry = keys.get(key_id)
            if entry is None:
                raise ConfigError(f"no key {key_id!r} in {self.path}; sessionpool keys list")
            expires = time.time() + max(0.0, after_seconds)
            if entry.expires_at is not None:
                expires = min(expires, entry.expires_at)
            keys[key_id] = entry = replace(entry, expires_at=expires)
        return entry

    def rotate(self, key_id: str, grace_seconds: float = 0.0) -> tuple[StoredKey, str]:
        """A new key with the same tenant, scopes and pools; the old one is refused after
        ``grace_seconds`` (at once by default)."""
        old = next((k for k in self._read() if k.id == key_id), None)
        if old is None:
            raise ConfigError(f"no key {key_id!r} in {self.path}; sessionpool keys list")
        if not old.active(time.time()):
            raise ConfigError(f"key {key_id!r} is revoked; create a new one instead")
        created = self.create(old.tenant, old.scopes, old.pools, old.name, e2b=old.e2b)
        self.revoke(key_id, grace_seconds)
        return created

    def _read(self) -> list[StoredKey]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {self.path}: {exc}") from exc
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
                raise ConfigError(
                    f"refusing the key file {self.path}: it must be a regular file readable by "
                    f"its owner alone (chmod 600 {self.path})"
                )
            raw = fh.read()
        try:
            doc = json.loads(raw)
            items = doc["keys"]
            assert isinstance(items, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            raise ConfigError(f"the key file {self.path} is not a key file") from None
        return [StoredKey.from_json(item, str(self.path)) for item in items]

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[str, StoredKey]]:
        """Read, change and write the file under an exclusive lock (two CLIs at once are safe)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys = {k.id: k for k in self._read()}
            yield keys
            doc = {"version": VERSION, "keys": [k.to_json() for k in keys.values()]}
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=1)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            os.close(lock)

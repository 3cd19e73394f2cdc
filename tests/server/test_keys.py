"""Tenant keys: the hashed store, the ``sessionpool keys`` commands, and a running server that
takes a new key, a rotation and a revocation without a restart."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionpool.errors import ConfigError
from sessionpool.server.keys import KeyStore
from sessionpool.server.testing import ServerProcess
from sessionpool.tenancy import ALL_SCOPES, Scope

CONFIG = """
[pools.default]
preload = []
ready_sessions = 1
max_sessions = 8
"""


def keys_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sessionpool.cli", "keys", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_stored_key_names_its_tenant_scopes_and_pools(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    entry, secret = store.create("acme", frozenset({Scope.EXECUTE}), frozenset({"default"}), "ci")
    principal = store.lookup(secret)
    assert principal is not None
    assert principal.tenant == "acme" and principal.credential == f"key:{entry.id}"
    assert principal.scopes == {Scope.EXECUTE} and principal.pools == {"default"}
    # only the hash is on disk, in a file its owner alone can read
    text = (tmp_path / "keys.json").read_text()
    assert secret not in text and secret.split("_", 2)[2] not in text
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600


def test_wrong_and_malformed_keys_are_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    _, secret = store.create("acme")
    tampered = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    unknown_id = "spk_000000000000_" + secret.split("_", 2)[2]
    for candidate in (tampered, unknown_id, secret + "x", "", "spk_", secret.upper()):
        assert store.lookup(candidate) is None, candidate


def test_revocation_and_rotation_hold_at_once(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    entry, old = store.create("acme", ALL_SCOPES)
    reader = KeyStore(tmp_path / "keys.json")  # another process's view: the server's
    assert reader.lookup(old) is not None
    new_entry, new = store.rotate(entry.id)
    assert new_entry.tenant == "acme" and new_entry.scopes == ALL_SCOPES
    assert reader.lookup(old) is None and reader.lookup(new) is not None
    store.revoke(new_entry.id)
    assert reader.lookup(new) is None


def test_rotation_with_grace_keeps_the_old_key_a_while(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    entry, old = store.create("acme")
    _, new = store.rotate(entry.id, grace_seconds=3600)
    assert store.lookup(old) is not None and store.lookup(new) is not None
    with pytest.raises(ConfigError, match="no key"):
        store.revoke("feedfeedfeed")


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.json")
    _, secret = store.create("acme")
    os.chmod(tmp_path / "keys.json", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        KeyStore(tmp_path / "keys.json").lookup(secret)


def test_the_cli_creates_lists_rotates_and_revokes(tmp_path: Path) -> None:
    made = keys_cli(tmp_path, "create", "--tenant", "acme", "--scopes", "execute,files")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("spk_") and "acme" in made.stderr
    listed = keys_cli(tmp_path, "list", "--json")
    rows = json.loads(listed.stdout)
    assert [(r["tenant"], r["scopes"], r["state"]) for r in rows] == [
        ("acme", ["execute", "files"], "active")
    ]
    key_id = rows[0]["id"]
    assert keys_cli(tmp_path, "rotate", key_id).returncode == 0
    rows = json.loads(keys_cli(tmp_path, "list", "--json").stdout)
    assert sorted(r["state"] for r in rows) == ["active", "revoked"]
    bad = keys_cli(tmp_path, "create", "--tenant", "acme", "--scopes", "everything")
    assert bad.returncode == 2 and "unknown scope 'everything'" in bad.stderr
    bad = keys_cli(tmp_path, "revoke", "000000000000")
    assert bad.returncode == 2 and "no key '000000000000'" in bad.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    if os.geteuid() != 0:
        pytest.skip("the jail backend needs root")
    with ServerProcess(Path(tmp_path_factory.mktemp("keys-server")), config=CONFIG) as srv:
        yield srv


def run(server: ServerProcess, key: str, code: str, ident: str = "demo") -> httpx.Response:
    return httpx.post(
        server.url + "/pools/default/code/execute",
        params={"identifier": ident},
        json={"properties": {"code": code}},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


@pytest.mark.jail
def test_a_running_server_takes_new_and_revoked_keys_without_restart(
    server: ServerProcess,
) -> None:
    made = keys_cli(server.data_dir, "create", "--tenant", "acme", "--scopes", "execute")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    r = run(server, key, "1 + 1")
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["result"] == "2"
    key_id = key.split("_")[1]
    assert keys_cli(server.data_dir, "revoke", key_id).returncode == 0
    r = run(server, key, "1 + 1")
    assert r.status_code == 401 and r.headers["x-ms-error-code"] == "Unauthorized"
    # the server's own key is untouched by the tenant keys
    assert run(server, server.api_key or "", "2 + 2").json()["properties"]["result"] == "4"


@pytest.mark.jail
def test_rotation_on_a_running_server(server: ServerProcess) -> None:
    store = KeyStore(server.data_dir / "keys.json")
    entry, old = store.create("rot", frozenset({Scope.EXECUTE}))
    assert run(server, old, "made = 41").status_code == 200
    _, new = store.rotate(entry.id, grace_seconds=2.0)
    assert run(server, old, "1").status_code == 200  # still within its grace
    time.sleep(2.2)
    assert run(server, old, "1").status_code == 401
    # the new key acts for the same tenant: the state made with the old one is there
    assert run(server, new, "made + 1").json()["properties"]["result"] == "42"


def test_e2b_keys_have_the_form_the_e2b_sdks_check_and_keep_it_through_a_rotation(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys.json")
    entry, secret = store.create("acme", frozenset({Scope.EXECUTE}), e2b=True)
    assert re.fullmatch(r"e2b_[0-9a-f]+", secret) and secret[4:16] == entry.id
    principal = store.lookup(secret)
    assert principal is not None and principal.tenant == "acme"
    assert secret[16:] not in (tmp_path / "keys.json").read_text()
    tampered = secret[:-1] + ("0" if secret[-1] != "0" else "1")
    for candidate in (tampered, secret + "0", "e2b_" + entry.id, secret.upper()):
        assert store.lookup(candidate) is None, candidate
    rotated, new = store.rotate(entry.id)
    assert new.startswith("e2b_") and rotated.e2b and store.lookup(new) is not None
    assert store.lookup(secret) is None
    done = keys_cli(tmp_path, "create", "--tenant", "acme", "--e2b")
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"e2b_[0-9a-f]+", done.stdout.splitlines()[0])

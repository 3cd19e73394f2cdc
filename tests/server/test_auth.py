"""Authentication: key handling, and a live server that generated its own key."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessionpool.errors import ConfigError
from sessionpool.server.auth import credentials, keys_match, load_or_create_key
from sessionpool.server.testing import ServerProcess

FAST_POOL = {"SESSIONPOOL_POOL_PRELOAD": "", "SESSIONPOOL_POOL_READY_SESSIONS": "1"}
EXECUTE = "/pools/default/code/execute?identifier=auth-probe&api-version=2024-02-02-preview"
BODY = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "1+1"}}


def test_keys_match_any_configured_key() -> None:
    keys = [b"alpha", b"beta"]
    assert keys_match("alpha", keys) and keys_match("beta", keys)
    assert not keys_match("alph", keys) and not keys_match("", keys)
    assert not keys_match("alphabeta", keys)


def test_credentials_from_both_headers() -> None:
    assert credentials([(b"authorization", b"Bearer  tok ")]) == ["tok"]
    assert credentials([(b"authorization", b"bearer tok")]) == ["tok"]
    assert credentials([(b"authorization", b"Basic dXNlcjpwdw==")]) == []
    assert credentials([(b"authorization", b"Bearer")]) == []
    assert credentials([(b"api-key", b"k")]) == ["k"]


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api-key"
    keys, generated = load_or_create_key(path)
    assert generated and len(keys) == 1 and len(keys[0]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == (keys, False)


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    path.write_text("k1\nk2\n")
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(path)
    path.chmod(0o600)
    assert load_or_create_key(path) == (["k1", "k2"], False)


def test_key_file_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("k\n")
    target.chmod(0o600)
    link = tmp_path / "api-key"
    os.symlink(target, link)
    with pytest.raises(ConfigError):
        load_or_create_key(link)


# --- live ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server started with no key configured: it must generate one, never run open."""
    workdir = Path(tmp_path_factory.mktemp("keyless"))
    with ServerProcess(workdir, api_key=None, env=FAST_POOL) as server:
        yield server


@pytest.mark.jail
def test_generated_key_is_printed_once_and_stored_privately(keyless: ServerProcess) -> None:
    path = keyless.data_dir / "api-key"
    key = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyless.log().count(key) == 1


@pytest.mark.jail
def test_requests_without_or_with_a_wrong_key_are_401(keyless: ServerProcess) -> None:
    key = (keyless.data_dir / "api-key").read_text().strip()
    with httpx.Client(base_url=keyless.url, timeout=30) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {key}x"},
            {"Authorization": f"Basic {key}"},
            {"api-key": "wrong"},
        ):
            r = client.post(EXECUTE, json=BODY, headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["x-ms-error-code"] == "Unauthorized"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.json()["error"]["code"] == "Unauthorized"
        # every route is behind the key, known or not
        assert client.get("/pools/default/files?identifier=x").status_code == 401
        assert client.get("/no/such/route").status_code == 401


@pytest.mark.jail
def test_bearer_and_api_key_headers_are_accepted(keyless: ServerProcess) -> None:
    key = (keyless.data_dir / "api-key").read_text().strip()
    with httpx.Client(base_url=keyless.url, timeout=30) as client:
        for headers in ({"Authorization": f"Bearer {key}"}, {"api-key": key}):
            r = client.post(EXECUTE, json=BODY, headers=headers)
            assert r.status_code == 200, r.text
            assert r.json()["properties"]["result"] == "2"


@pytest.mark.jail
def test_probes_and_docs_need_no_key(keyless: ServerProcess) -> None:
    with httpx.Client(base_url=keyless.url, timeout=30) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        # a session taken by an earlier test may still be refilling: ready comes back soon
        deadline = time.monotonic() + 30
        while (r := client.get("/readyz")).status_code == 503 and time.monotonic() < deadline:
            assert r.json() == {"status": "starting"}
            time.sleep(0.05)
        assert r.json() == {"status": "ready"}
        spec = client.get("/openapi.json").json()
        assert "/pools/{pool}/code/execute" in spec["paths"]
        assert "/pools/{pool}/executions" in spec["paths"]
        assert client.get("/docs").status_code == 200


@pytest.mark.jail
def test_restart_reuses_the_stored_key(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, api_key=None, env=FAST_POOL) as first:
        key = (first.data_dir / "api-key").read_text().strip()
    with ServerProcess(tmp_path, api_key=None, env=FAST_POOL) as second:
        assert key not in second.log()  # printed only when generated
        r = httpx.post(
            second.url + EXECUTE, json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert r.status_code == 200

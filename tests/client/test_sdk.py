"""The blocking client against a real server on loopback."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from sessionpool import (
    AuthenticationError,
    Client,
    ConnectionFailed,
    ExecutionTimeout,
    FileTooLarge,
    NotFound,
    PoolExhausted,
    RemoteError,
    Session,
    SessionpoolError,
)
from sessionpool.server.testing import ServerProcess
from tests.client.conftest import PAYLOAD, PLOT, SMALL_FILE_LIMIT

pytestmark = pytest.mark.jail


def test_state_persists_and_result_is_typed(session: Session) -> None:
    first = session.run("x = 41\nprint('set')")
    assert (first.stdout, first.text, first.error) == ("set\n", "", None)
    assert first.ok
    second = session.run("x += 1\nx")
    assert second.text == "42"
    assert second.duration >= 0
    assert second.execution_id


def test_stderr_and_exception_with_traceback(session: Session) -> None:
    res = session.run("import sys\nprint('out')\nprint('err', file=sys.stderr)\n1/0")
    assert res.stdout == "out\n"
    assert "err\n" in res.stderr
    assert res.error is not None
    assert res.error.name == "ZeroDivisionError"
    assert "division by zero" in res.error.value
    assert "ZeroDivisionError" in res.error.traceback
    assert not res.ok
    with pytest.raises(RemoteError) as info:
        res.raise_for_error()
    assert info.value.error is res.error
    # the session survives the exception
    assert session.run("2 + 2").text == "4"


def test_image_bytes_and_save(session: Session, tmp_path: Path) -> None:
    res = session.run(PLOT)
    assert len(res.images) == 1
    image = res.images[0]
    assert image.format == "png"
    assert image.data.startswith(b"\x89PNG\r\n\x1a\n")
    saved = image.save(tmp_path / "plot.png")
    assert saved.read_bytes() == image.data
    assert image.save(tmp_path) == tmp_path / "image.png"


def test_timeout_raises_with_partial_output(session: Session) -> None:
    with pytest.raises(ExecutionTimeout) as info:
        session.run("import time\nprint('started', flush=True)\ntime.sleep(30)", timeout=1)
    assert "timeout" in str(info.value).lower()
    assert info.value.result is not None
    assert "started" in info.value.result.stdout
    # interrupted, state kept
    session.run("y = 5")
    assert session.run("y").text == "5"


def test_shell_exit_code(session: Session) -> None:
    res = session.run_shell("echo hi; echo oops >&2; exit 3")
    assert (res.stdout, res.stderr, res.exit_code, res.ok) == ("hi\n", "oops\n", 3, False)
    assert session.run_shell("true").ok


def test_files_round_trip(session: Session, tmp_path: Path) -> None:
    info = session.upload(PAYLOAD, "data.bin")
    assert (info.name, info.size) == ("data.bin", len(PAYLOAD))
    local = tmp_path / "local.txt"
    local.write_bytes(b"from a path")
    assert session.upload(local).name == "local.txt"
    with local.open("rb") as fh:
        assert session.upload(fh, "sub/dir/nested.txt").name == "sub/dir/nested.txt"
    names = {f.name: f.size for f in session.files() if not f.is_dir}
    assert names == {"data.bin": len(PAYLOAD), "local.txt": 11}
    assert [f.name for f in session.files("sub/dir")] == ["sub/dir/nested.txt"]
    assert session.download("data.bin") == PAYLOAD
    assert session.download("/mnt/data/sub/dir/nested.txt") == b"from a path"
    # the code sees the same files
    assert session.run("open('/mnt/data/local.txt').read()").text == "'from a path'"
    session.delete_file("data.bin")
    assert "data.bin" not in {f.name for f in session.files()}
    with pytest.raises(NotFound) as info:
        session.download("data.bin")
    assert info.value.status == 404
    assert "session.files()" in str(info.value)


def test_progress_is_reported(session: Session) -> None:
    seen: list[tuple[int, int | None]] = []
    blob = b"z" * (3 * 1024 * 1024)
    session.upload(blob, "big.bin", progress=lambda done, total: seen.append((done, total)))
    assert seen and seen[-1] == (len(blob), len(blob))
    down: list[tuple[int, int | None]] = []
    assert session.download("big.bin", progress=lambda d, t: down.append((d, t))) == blob
    assert down[-1] == (len(blob), len(blob))


def test_close_destroys_the_session(client: Client) -> None:
    ident = f"sdk-{uuid.uuid4()}"
    with client.session(ident) as s:
        s.run("secret = 1")
        assert ident in {i.identifier for i in client.sessions()}
    assert ident not in {i.identifier for i in client.sessions()}
    again = client.session(ident)
    assert again.run("secret").error is not None
    again.close()
    again.close()  # idempotent


def test_wrong_key_says_what_to_do(sdk_server: ServerProcess) -> None:
    with (
        Client(sdk_server.endpoint(), api_key="wrong") as c,
        pytest.raises(AuthenticationError) as info,
    ):
        c.session("x").run("1")
    assert info.value.status == 401
    assert "SESSIONPOOL_API_KEY" in str(info.value)
    assert isinstance(info.value, SessionpoolError)


def test_too_large_upload(sdk_server: ServerProcess) -> None:
    with Client(sdk_server.endpoint("small"), api_key=sdk_server.api_key) as c:
        s = c.session(f"sdk-{uuid.uuid4()}")
        with pytest.raises(FileTooLarge) as info:
            s.upload(b"x" * (SMALL_FILE_LIMIT + 1), "big.bin")
        assert info.value.status == 413
        assert "file_bytes" in str(info.value)
        s.close()


def test_pool_exhausted(sdk_server: ServerProcess) -> None:
    with Client(sdk_server.endpoint("small"), api_key=sdk_server.api_key) as c:
        held = [c.session(f"sdk-{uuid.uuid4()}") for _ in range(2)]
        try:
            for s in held:
                s.run("1")
            with pytest.raises(PoolExhausted) as info:
                c.session(f"sdk-{uuid.uuid4()}").run("1")
            assert "max_sessions" in str(info.value)
        finally:
            for s in held:
                s.close()


def test_unknown_pool_and_unreachable_endpoint(sdk_server: ServerProcess) -> None:
    with (
        Client(sdk_server.endpoint("nope"), api_key=sdk_server.api_key) as c,
        pytest.raises(NotFound) as info,
    ):
        c.session("x").run("1")
    assert "endpoint" in str(info.value)
    with (
        Client("http://127.0.0.1:1/pools/default", api_key="k") as c,
        pytest.raises(ConnectionFailed) as info2,
    ):
        c.sessions()
    assert "sessionpool serve" in str(info2.value)


def test_env_configuration(sdk_server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONPOOL_ENDPOINT", sdk_server.endpoint())
    monkeypatch.setenv("SESSIONPOOL_API_KEY", sdk_server.api_key or "")
    with Client() as c:
        s = c.session()
        assert s.identifier.startswith("sp-")
        assert s.run("1 + 1").text == "2"
        s.close()
    monkeypatch.delenv("SESSIONPOOL_ENDPOINT")
    with pytest.raises(ValueError, match="SESSIONPOOL_ENDPOINT"):
        Client()


def test_shared_http_client_is_left_open(sdk_server: ServerProcess) -> None:
    with httpx.Client() as http:
        with Client(
            sdk_server.endpoint(), api_key=lambda: sdk_server.api_key or "", http_client=http
        ) as c:
            s = c.session()
            assert s.run("3").text == "3"
            s.close()
        assert not http.is_closed

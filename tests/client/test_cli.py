"""The client subcommands as a subprocess (``python -m sessionpool.cli``) against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from sessionpool.client._cli import (
    AUTH,
    CODE_FAILED,
    NOT_FOUND,
    OK,
    TIMEOUT,
    TOO_LARGE,
    UNREACHABLE,
    USAGE,
)
from sessionpool.server.testing import ServerProcess
from tests.client.conftest import PLOT, SMALL_FILE_LIMIT

pytestmark = pytest.mark.jail


def cli(
    server: ServerProcess | None,
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    flags: bool = True,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONPOOL_")}
    base["HOME"] = str(cwd or Path.cwd())
    base.update(env or {})
    cmd = [sys.executable, "-m", "sessionpool.cli", *args]
    if server is not None and flags:
        cmd += ["--endpoint", server.endpoint(), "--api-key", server.api_key or ""]
    return subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, env=base, cwd=cwd, timeout=120
    )


def test_exec_prints_output_and_result(sdk_server: ServerProcess, tmp_path: Path) -> None:
    done = cli(sdk_server, "exec", "print('hello')\n6 * 7", cwd=tmp_path)
    assert done.returncode == OK, done.stderr
    assert done.stdout == "hello\n42\n"


def test_exec_from_stdin_keeps_a_named_session(sdk_server: ServerProcess, tmp_path: Path) -> None:
    ident = f"cli-{uuid.uuid4()}"
    assert (
        cli(sdk_server, "exec", "--session", ident, "-", stdin="v = 9", cwd=tmp_path).returncode
        == 0
    )
    done = cli(sdk_server, "exec", "--session", ident, "v + 1", cwd=tmp_path)
    assert done.stdout == "10\n"
    listed = cli(sdk_server, "sessions", "ls", "--json", cwd=tmp_path)
    assert ident in {s["identifier"] for s in json.loads(listed.stdout)}
    assert cli(sdk_server, "sessions", "rm", ident, cwd=tmp_path).returncode == OK
    listed = cli(sdk_server, "sessions", "ls", cwd=tmp_path)
    assert ident not in listed.stdout


def test_exec_without_session_cleans_up(sdk_server: ServerProcess, tmp_path: Path) -> None:
    done = cli(
        sdk_server, "exec", "--json", "import os; os.environ.get('HOSTNAME', 'x')", cwd=tmp_path
    )
    ident = json.loads(done.stdout)["session"]
    listed = cli(sdk_server, "sessions", "ls", "--json", cwd=tmp_path)
    assert ident not in {s["identifier"] for s in json.loads(listed.stdout)}


def test_exception_exit_code_and_traceback(sdk_server: ServerProcess, tmp_path: Path) -> None:
    done = cli(sdk_server, "exec", "print('a')\nraise ValueError('bad input')", cwd=tmp_path)
    assert done.returncode == CODE_FAILED
    assert done.stdout == "a\n"
    assert "ValueError" in done.stderr and "bad input" in done.stderr
    as_json = cli(sdk_server, "exec", "--json", "raise ValueError('bad input')", cwd=tmp_path)
    assert as_json.returncode == CODE_FAILED
    doc = json.loads(as_json.stdout)
    assert doc["error"]["name"] == "ValueError"
    assert "bad input" in doc["error"]["traceback"]


def test_images_are_saved_and_announced(sdk_server: ServerProcess, tmp_path: Path) -> None:
    script = tmp_path / "plot.py"
    script.write_text(PLOT)
    done = cli(sdk_server, "run", str(script), "--images-dir", str(tmp_path / "img"), cwd=tmp_path)
    assert done.returncode == OK, done.stderr
    (saved,) = (tmp_path / "img").iterdir()
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert f"[image saved to {saved}]" in done.stderr


def test_timeout_exit_code(sdk_server: ServerProcess, tmp_path: Path) -> None:
    done = cli(sdk_server, "exec", "--timeout", "1", "import time; time.sleep(30)", cwd=tmp_path)
    assert done.returncode == TIMEOUT
    assert "timeout" in done.stderr.lower()


def test_files_put_ls_get_rm_with_progress(sdk_server: ServerProcess, tmp_path: Path) -> None:
    ident = f"cli-{uuid.uuid4()}"
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    small = tmp_path / "small.txt"
    small.write_text("tiny")
    s = ["--session", ident]
    put = cli(sdk_server, "files", "put", *s, str(big), cwd=tmp_path)
    assert put.returncode == OK, put.stderr
    assert "100%" in put.stderr  # progress shown for a transfer over 1 MB
    put_small = cli(sdk_server, "files", "put", *s, str(small), "docs/small.txt", cwd=tmp_path)
    assert put_small.returncode == OK
    assert "%" not in put_small.stderr
    listed = json.loads(cli(sdk_server, "files", "ls", *s, "--json", cwd=tmp_path).stdout)
    assert {f["name"]: f["size"] for f in listed if not f["is_dir"]} == {
        "big.bin": big.stat().st_size
    }
    nested = json.loads(cli(sdk_server, "files", "ls", *s, "docs", "--json", cwd=tmp_path).stdout)
    assert [f["name"] for f in nested] == ["docs/small.txt"]
    got = cli(sdk_server, "files", "get", *s, "big.bin", str(tmp_path / "back.bin"), cwd=tmp_path)
    assert got.returncode == OK
    assert "100%" in got.stderr
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    out = cli(sdk_server, "files", "get", *s, "docs/small.txt", "-", cwd=tmp_path)
    assert out.stdout == "tiny"
    assert cli(sdk_server, "files", "rm", *s, "big.bin", cwd=tmp_path).returncode == OK
    missing = cli(sdk_server, "files", "get", *s, "big.bin", cwd=tmp_path)
    assert missing.returncode == NOT_FOUND
    assert "files()" in missing.stderr or "not" in missing.stderr
    cli(sdk_server, "sessions", "rm", ident, cwd=tmp_path)


def test_too_large_upload_exit_code(sdk_server: ServerProcess, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * (SMALL_FILE_LIMIT + 1))
    ident = f"cli-{uuid.uuid4()}"
    flags = ["--endpoint", sdk_server.endpoint("small"), "--api-key", sdk_server.api_key or ""]
    done = cli(None, "files", "put", "--session", ident, str(big), *flags, cwd=tmp_path)
    assert done.returncode == TOO_LARGE, done.stderr
    assert "file_bytes" in done.stderr
    assert cli(None, "sessions", "rm", ident, *flags, cwd=tmp_path).returncode == OK


def test_env_and_config_file(sdk_server: ServerProcess, tmp_path: Path) -> None:
    env = {
        "SESSIONPOOL_ENDPOINT": sdk_server.endpoint(),
        "SESSIONPOOL_API_KEY": sdk_server.api_key or "",
    }
    done = cli(sdk_server, "exec", "1 + 2", env=env, cwd=tmp_path, flags=False)
    assert (done.returncode, done.stdout) == (OK, "3\n")
    key_file = tmp_path / "key"
    key_file.write_text((sdk_server.api_key or "") + "\n")
    config = tmp_path / ".config" / "sessionpool" / "client.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'endpoint = "{sdk_server.endpoint()}"\napi_key_file = "{key_file}"\n')
    done = cli(sdk_server, "exec", "2 + 2", cwd=tmp_path, flags=False)  # HOME=tmp_path
    assert (done.returncode, done.stdout) == (OK, "4\n"), done.stderr
    # the flag wins over the file and the environment
    wrong = cli(None, "exec", "1", "--api-key", "wrong", env=env, cwd=tmp_path)
    assert wrong.returncode == AUTH
    assert "API key" in wrong.stderr or "api_key" in wrong.stderr


def test_usage_and_unreachable(tmp_path: Path) -> None:
    none = cli(None, "exec", "1", cwd=tmp_path)
    assert none.returncode == USAGE
    assert "SESSIONPOOL_ENDPOINT" in none.stderr
    down = cli(None, "exec", "1", "--endpoint", "http://127.0.0.1:1/pools/default", cwd=tmp_path)
    assert down.returncode == UNREACHABLE
    as_json = cli(None, "exec", "--json", "1", "--endpoint", "http://127.0.0.1:1/p", cwd=tmp_path)
    assert json.loads(as_json.stdout)["error"]["type"] == "ConnectionFailed"


def test_repl_runs_statements_and_blocks_and_keeps_history(
    sdk_server: ServerProcess, tmp_path: Path
) -> None:
    history = tmp_path / "hist"
    script = "x = 6\nfor i in range(2):\n    x += i\n\nx * 6\nprint('done')\n"
    done = cli(
        sdk_server, "repl", stdin=script, env={"SESSIONPOOL_HISTORY": str(history)}, cwd=tmp_path
    )
    assert done.returncode == OK, done.stderr
    assert done.stdout == "42\ndone\n"
    assert "x * 6" in history.read_text()


def test_serve_and_doctor_are_still_there() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sessionpool.cli", "--help"], capture_output=True, text=True
    )
    for command in ("serve", "doctor", "exec", "run", "files", "sessions", "repl"):
        assert command in done.stdout

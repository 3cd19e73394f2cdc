"""LangChain ``SessionsPythonREPLTool`` and ``SessionsBashTool`` against a real server (§2.2)."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.clients.conftest import CLIENT_WARNINGS, LANGCHAIN_DEPRECATED, PAYLOAD, PLOT, WRONG_KEY

pytestmark = [pytest.mark.jail, LANGCHAIN_DEPRECATED, *CLIENT_WARNINGS]


def python_tool(server: ServerProcess, session_id: str, key: str | None = None) -> Any:
    from langchain_azure_dynamic_sessions import SessionsPythonREPLTool

    token = key or server.api_key
    return SessionsPythonREPLTool(
        pool_management_endpoint=server.endpoint(),
        access_token_provider=lambda: token,
        session_id=session_id,
    )


def bash_tool(server: ServerProcess, session_id: str, key: str | None = None) -> Any:
    from langchain_azure_dynamic_sessions import SessionsBashTool

    token = key or server.api_key
    return SessionsBashTool(
        pool_management_endpoint=server.endpoint(),
        access_token_provider=lambda: token,
        session_id=session_id,
    )


def session_exists(server: ServerProcess, session_id: str) -> bool:
    r = httpx.get(
        server.endpoint() + "/session",
        params={"identifier": session_id, "api-version": "2025-10-02-preview"},
        headers=server.auth,
        timeout=30,
    )
    assert r.status_code in (200, 404), r.text
    return r.status_code == 200


def test_state_persists_across_calls(server: ServerProcess, session_id: str) -> None:
    tool = python_tool(server, session_id)
    assert tool.execute("x = 41")["status"] == "Success"
    props = tool.execute("```python\nx += 1\nprint(x)\nx\n```")
    assert props["status"] == "Success"
    assert props["stdout"] == "42\n"
    assert props["result"] == "42"
    content = json.loads(tool.run("x * 2"))
    assert content == {"result": "84", "stdout": "", "stderr": ""}
    tool.close()


def test_image_comes_back(server: ServerProcess, session_id: str) -> None:
    import base64

    tool = python_tool(server, session_id)
    props = tool.execute(PLOT)
    result = props["result"]
    assert result["type"] == "image"
    assert result["format"] == "png"
    assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG\r\n\x1a\n")
    # through the tool interface: content drops the base64, the artifact keeps it
    call = {"args": {"python_code": PLOT}, "id": "call-1", "name": tool.name, "type": "tool_call"}
    message = tool.invoke(call)
    content = json.loads(message.content)
    assert content["result"]["type"] == "image"
    assert "base64_data" not in content["result"]
    assert message.artifact["result"]["base64_data"]
    tool.close()


# upload_file(local_file_path=) opens the file and never closes it (a client bug)
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*lc_local.bin:pytest.PytestUnraisableExceptionWarning"
)
def test_file_round_trips_byte_for_byte(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    tool = python_tool(server, session_id)
    meta = tool.upload_file(data=io.BytesIO(PAYLOAD), remote_file_path="lc_data.bin")
    assert (meta.filename, meta.size_in_bytes) == ("lc_data.bin", len(PAYLOAD))
    local = tmp_path / "lc_local.bin"
    local.write_bytes(PAYLOAD[::-1])
    meta2 = tool.upload_file(local_file_path=str(local))
    assert (meta2.filename, meta2.size_in_bytes) == ("lc_local.bin", len(PAYLOAD))
    listed = {m.filename: m.size_in_bytes for m in tool.list_files()}
    assert listed == {"lc_data.bin": len(PAYLOAD), "lc_local.bin": len(PAYLOAD)}
    assert tool.download_file(remote_file_path="lc_data.bin").read() == PAYLOAD
    target = tmp_path / "back.bin"
    assert tool.download_file(remote_file_path="lc_local.bin", local_file_path=str(target))
    assert target.read_bytes() == PAYLOAD[::-1]
    seen = tool.execute(
        f"open('/mnt/data/lc_data.bin','rb').read() == bytes.fromhex({PAYLOAD.hex()!r})"
    )
    assert seen["result"] == "True"
    tool.close()


def test_exception_is_reported_as_failure(server: ServerProcess, session_id: str) -> None:
    tool = python_tool(server, session_id)
    props = tool.execute("print('before')\nraise ValueError('boom')")
    assert props["status"] == "Failure"
    assert props["stdout"] == "before\n"
    assert "ValueError" in props["stderr"] and "boom" in props["stderr"]
    assert tool.execute("1 + 1")["result"] == "2"
    tool.close()


def test_wrong_key_is_refused(server: ServerProcess, session_id: str) -> None:
    import requests

    tool = python_tool(server, session_id, key=WRONG_KEY)
    with pytest.raises(requests.HTTPError) as info:
        tool.execute("1")
    assert info.value.response is not None
    assert info.value.response.status_code == 401
    with pytest.raises(requests.HTTPError):
        tool.upload_file(data=io.BytesIO(b"x"), remote_file_path="x.txt")
    with pytest.raises(requests.HTTPError):
        bash_tool(server, session_id, key=WRONG_KEY).execute("echo hi")


def test_close_deletes_the_session(server: ServerProcess, session_id: str) -> None:
    tool = python_tool(server, session_id)
    tool.execute("secret = 7")
    assert session_exists(server, session_id)
    tool.close()  # DELETE session in a daemon thread; the tool rotates to a new identifier
    assert tool.session_id != session_id
    deadline = time.monotonic() + 10
    while session_exists(server, session_id):
        assert time.monotonic() < deadline, "DELETE session did not delete it"
        time.sleep(0.05)
    # the same identifier again gets a fresh session: the old state is gone
    again = python_tool(server, session_id)
    props = again.execute("secret")
    assert props["status"] == "Failure"
    assert "NameError" in props["stderr"]
    again.close()


def test_bash_tool_exit_code_and_files(server: ServerProcess, session_id: str) -> None:
    tool = bash_tool(server, session_id)
    out = json.loads(tool.run("echo hi; echo oops >&2"))
    assert out == {"stdout": "hi\n", "stderr": "oops\n", "exitCode": 0}
    failed = json.loads(tool.run("```bash\nexit 3\n```"))
    assert failed["exitCode"] == 3
    # state in the filesystem persists across commands
    tool.run("cd /mnt/data && echo kept > kept.txt")
    assert json.loads(tool.run("cat /mnt/data/kept.txt"))["stdout"] == "kept\n"
    meta = tool.upload_file(data=io.BytesIO(PAYLOAD), remote_file_path="b.bin")
    assert (meta.filename, meta.size_in_bytes) == ("b.bin", len(PAYLOAD))
    listed = {m.filename: m.size_in_bytes for m in tool.list_files()}
    assert listed["b.bin"] == len(PAYLOAD)
    assert tool.download_file(remote_file_path="b.bin").read() == PAYLOAD
    # not "sha256sum FILE": the client's sanitiser strips a leading "sh" from any command
    hashed = json.loads(tool.run("cat /mnt/data/b.bin | sha256sum"))
    assert hashed["exitCode"] == 0, hashed
    sha = hashed["stdout"].split()[0]
    assert sha == hashlib.sha256(PAYLOAD).hexdigest()
    tool.close()
    deadline = time.monotonic() + 10
    while session_exists(server, session_id):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_the_tool_drives_a_node_pool_unmodified(server: ServerProcess, session_id: str) -> None:
    """A JavaScript pool behind the same API: the unmodified tool, pointed at /pools/js."""
    from langchain_azure_dynamic_sessions import SessionsPythonREPLTool

    tool = SessionsPythonREPLTool(
        pool_management_endpoint=server.endpoint("js"),
        access_token_provider=lambda: server.api_key,
        session_id=session_id,
    )
    assert tool.execute("const xs = [1, 2, 3]")["status"] == "Success"
    props = tool.execute("console.log(xs.length); xs.reduce((a, b) => a + b, 36)")
    assert props["status"] == "Success", props
    assert props["stdout"] == "3\n"
    assert props["result"] == "42"
    failed = tool.execute("xs.nope()")
    assert failed["status"] == "Failure", failed
    assert "TypeError" in failed["stderr"] or "TypeError" in str(failed.get("result")), failed


def test_delete_session_at_2025_10_02_preview(server: ServerProcess, session_id: str) -> None:
    """``delete_session()`` sends ``DELETE session`` at 2025-10-02-preview (newer than the
    tool's other calls) and rotates the identifier; the sync helper raises on an error answer."""
    from langchain_azure_dynamic_sessions.tools import sessions

    assert sessions.SESSION_DELETE_API_VERSION == "2025-10-02-preview"
    tool = bash_tool(server, session_id)
    assert json.loads(tool.run("echo kept > /mnt/data/k.txt"))["exitCode"] == 0
    tool.delete_session()
    assert tool.session_id != session_id
    deadline = time.monotonic() + 10
    while session_exists(server, session_id):
        assert time.monotonic() < deadline, "delete_session() did not delete it"
        time.sleep(0.05)
    # the module's synchronous form: 204 for a session that is gone, 401 raised for a bad key
    sessions._delete_session(
        pool_management_endpoint=server.endpoint(),
        session_id=session_id,
        access_token=server.api_key,
    )
    import requests

    with pytest.raises(requests.HTTPError):
        sessions._delete_session(
            pool_management_endpoint=server.endpoint(),
            session_id=session_id,
            access_token=WRONG_KEY,
        )
    tool.close()

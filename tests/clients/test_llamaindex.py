"""llama-index ``AzureCodeInterpreterToolSpec`` against a real server (aca-api.md §2.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sessionpool.server.testing import ServerProcess
from tests.clients.conftest import CLIENT_WARNINGS, PAYLOAD, PLOT, WRONG_KEY

pytestmark = [pytest.mark.jail, *CLIENT_WARNINGS]


def make_tool(
    server: ServerProcess, session_id: str, tmp_path: Path, key: str | None = None
) -> Any:
    from llama_index.tools.azure_code_interpreter import (  # type: ignore[import-untyped]
        AzureCodeInterpreterToolSpec,
    )

    tool = AzureCodeInterpreterToolSpec(
        pool_management_endpoint=server.endpoint(),
        session_id=session_id,
        local_save_path=str(tmp_path),
    )
    token = key or server.api_key
    tool.access_token_provider = lambda: token
    return tool


def test_state_persists_across_calls(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    tool = make_tool(server, session_id, tmp_path)
    first = tool.code_interpreter("x = 41")
    assert first["properties"]["status"] == "Success"
    out = tool.code_interpreter("```python\nx += 1\nprint(x)\nx\n```")
    props = out["properties"]
    assert props["status"] == "Success"
    assert props["stdout"] == "42\n"
    assert props["result"] == "42"  # the text/plain repr, as ACA returns it


def test_image_is_saved_to_local_path(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    tool = make_tool(server, session_id, tmp_path)
    out = tool.code_interpreter(PLOT)
    result = out["properties"]["result"]
    assert result["type"] == "image"
    assert result["format"] == "png"
    assert result["saved_to_local_path"] is True
    assert "base64_data" not in result
    saved = list(tmp_path.glob(f"{session_id}_*.png"))
    assert len(saved) == 1
    assert saved[0].read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# upload_file opens the local file and never closes it (a client bug): its ResourceWarning
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in.*llama_in.bin:pytest.PytestUnraisableExceptionWarning"
)
def test_file_round_trips_byte_for_byte(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    tool = make_tool(server, session_id, tmp_path)
    local = tmp_path / "llama_in.bin"
    local.write_bytes(PAYLOAD)
    meta = tool.upload_file(local_file_path=str(local))
    assert [(m.filename, m.size_in_bytes) for m in meta] == [("llama_in.bin", len(PAYLOAD))]
    assert meta[0].file_full_path == "/mnt/data/llama_in.bin"
    listed = {m.filename: m.size_in_bytes for m in tool.list_files()}
    assert listed["llama_in.bin"] == len(PAYLOAD)
    # the session sees the same bytes
    seen = tool.code_interpreter("open('/mnt/data/llama_in.bin','rb').read().hex()")
    assert seen["properties"]["result"].strip("'") == PAYLOAD.hex()
    buf = tool.download_file_to_local("/mnt/data/llama_in.bin")
    assert buf is not None and buf.read() == PAYLOAD
    target = tmp_path / "back.bin"
    assert tool.download_file_to_local("llama_in.bin", str(target)) is None
    assert target.read_bytes() == PAYLOAD
    # a file written by code comes back too
    tool.code_interpreter("open('/mnt/data/made.bin','wb').write(bytes(range(256)))")
    made = tool.download_file_to_local("made.bin")
    assert made is not None and made.read() == bytes(range(256))


def test_exception_is_reported_as_failure(
    server: ServerProcess, session_id: str, tmp_path: Path
) -> None:
    tool = make_tool(server, session_id, tmp_path)
    out = tool.code_interpreter("print('before')\n1/0")
    props = out["properties"]
    assert props["status"] == "Failure"
    assert props["stdout"] == "before\n"
    assert "ZeroDivisionError" in props["stderr"]
    # the session survives the failure
    assert tool.code_interpreter("1 + 1")["properties"]["result"] == "2"


def test_wrong_key_is_refused(server: ServerProcess, session_id: str, tmp_path: Path) -> None:
    import requests

    tool = make_tool(server, session_id, tmp_path, key=WRONG_KEY)
    with pytest.raises(requests.HTTPError) as info:
        tool.code_interpreter("1")
    assert info.value.response is not None
    assert info.value.response.status_code == 401
    with pytest.raises(requests.HTTPError):
        tool.list_files()

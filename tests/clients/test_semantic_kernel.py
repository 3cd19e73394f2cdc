"""Semantic Kernel ``SessionsPythonTool`` over https with the self-signed CA (aca-api.md §2.3)."""

from __future__ import annotations

import ast
import base64
import re
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessionpool.server.testing import ServerProcess
from tests.clients.conftest import CLIENT_WARNINGS, PAYLOAD, PLOT, WRONG_KEY

pytestmark = [pytest.mark.jail, *CLIENT_WARNINGS]

Factory = Callable[..., Any]


@pytest.fixture
async def make_tool(
    tls_server: ServerProcess, ca_pem: str, session_id: str, tmp_path: Path
) -> AsyncIterator[Factory]:
    """Tools on one https client (SK mutates its shared headers, as in real use)."""
    from semantic_kernel.core_plugins.sessions_python_tool import (
        SessionsPythonSettings,
        SessionsPythonTool,
    )

    context = ssl.create_default_context(cafile=ca_pem)
    async with httpx.AsyncClient(verify=context, timeout=60) as client:

        def make(key: str | None = None, http_client: httpx.AsyncClient = client) -> Any:
            token = key or tls_server.api_key
            return SessionsPythonTool(
                pool_management_endpoint=tls_server.endpoint(),
                auth_callback=lambda: token,
                settings=SessionsPythonSettings(identifier=session_id),
                http_client=http_client,
                env_file_path=None,
                enable_dangerous_file_uploads=True,
                allowed_upload_directories={str(tmp_path)},
            )

        yield make


def parse(text: str) -> dict[str, str]:
    """``Status:\\n..\\nResult:\\n..\\nStdout:\\n..\\nStderr:\\n..`` into its four parts."""
    m = re.fullmatch(
        r"Status:\n(.*)\nResult:\n(.*)\nStdout:\n(.*)\nStderr:\n(.*)", text, flags=re.DOTALL
    )
    assert m, text
    return dict(zip(("status", "result", "stdout", "stderr"), m.groups(), strict=True))


async def test_state_persists_across_calls(make_tool: Factory) -> None:
    tool = make_tool()
    assert parse(await tool.execute_code("x = 41"))["status"] == "Success"
    out = parse(await tool.execute_code("```python\nx += 1\nprint(x)\nx\n```"))
    assert out == {"status": "Success", "result": "42", "stdout": "42\n", "stderr": ""}


async def test_image_comes_back(make_tool: Factory) -> None:
    tool = make_tool()
    out = parse(await tool.execute_code(PLOT))
    assert out["status"] == "Success"
    result = ast.literal_eval(out["result"])  # SK puts the dict's repr into the text
    assert result["type"] == "image"
    assert result["format"] == "png"
    assert base64.b64decode(result["base64_data"]).startswith(b"\x89PNG\r\n\x1a\n")


async def test_file_round_trips_byte_for_byte(make_tool: Factory, tmp_path: Path) -> None:
    tool = make_tool()
    first = tmp_path / "sk_first.bin"
    first.write_bytes(PAYLOAD)
    # a fresh client: the upload carries a proper multipart Content-Type
    meta = await tool.upload_file(local_file_path=str(first))
    assert (meta.filename, meta.size_in_bytes) == ("sk_first.bin", len(PAYLOAD))
    assert meta.full_path == "/mnt/data/sk_first.bin"
    # after an execute, SK's shared client sends uploads with "Content-Type: application/json"
    # and no boundary (observed in Azure's traffic): the server must still take the multipart body
    await tool.execute_code("1")
    assert tool.http_client.headers["Content-Type"] == "application/json"
    second = tmp_path / "sk_second.bin"
    second.write_bytes(PAYLOAD[::-1])
    meta2 = await tool.upload_file(local_file_path=str(second), remote_file_path="renamed.bin")
    assert (meta2.filename, meta2.size_in_bytes) == ("renamed.bin", len(PAYLOAD))
    listed = {m.filename: m.size_in_bytes for m in await tool.list_files()}
    assert listed == {"sk_first.bin": len(PAYLOAD), "renamed.bin": len(PAYLOAD)}
    back = await tool.download_file(remote_file_name="sk_first.bin")
    assert back is not None and back.read() == PAYLOAD
    target = tmp_path / "back.bin"
    assert (
        await tool.download_file(remote_file_name="renamed.bin", local_file_path=str(target))
        is None
    )
    assert target.read_bytes() == PAYLOAD[::-1]
    check = f"open('/mnt/data/renamed.bin','rb').read() == bytes.fromhex({PAYLOAD[::-1].hex()!r})"
    assert parse(await tool.execute_code(check))["result"] == "True"


async def test_exception_is_reported_as_failure(make_tool: Factory) -> None:
    tool = make_tool()
    out = parse(await tool.execute_code("print('before')\n{}['missing']"))
    assert out["status"] == "Failure"
    assert out["stdout"] == "before\n"
    assert "KeyError" in out["stderr"]
    assert parse(await tool.execute_code("1 + 1"))["result"] == "2"


async def test_wrong_key_is_refused(make_tool: Factory, tmp_path: Path) -> None:
    from semantic_kernel.exceptions import FunctionExecutionException

    tool = make_tool(key=WRONG_KEY)
    with pytest.raises(FunctionExecutionException, match="status code 401"):
        await tool.execute_code("1")
    with pytest.raises(FunctionExecutionException, match="status code 401"):
        await tool.list_files()
    local = tmp_path / "refused.txt"
    local.write_bytes(b"no")
    with pytest.raises(FunctionExecutionException, match="status code 401"):
        await tool.upload_file(local_file_path=str(local))


async def test_untrusted_certificate_is_refused(
    tls_server: ServerProcess, make_tool: Factory
) -> None:
    """The https is real: a client that does not trust the local CA cannot connect."""
    async with httpx.AsyncClient(timeout=10) as plain:
        with pytest.raises(httpx.ConnectError):
            await make_tool(http_client=plain).execute_code("1")

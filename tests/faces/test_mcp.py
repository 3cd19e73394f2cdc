"""The MCP face, driven by the official SDK's own client over stdio and streamable HTTP."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, EmbeddedResource, ImageContent, TextContent

from sessionpool.server.testing import ServerProcess
from tests.client.conftest import PAYLOAD, PLOT

pytestmark = pytest.mark.jail

TOOLS = {
    "launchShell",
    "runPythonCodeInRemoteEnvironment",
    "runShellCommandInRemoteEnvironment",
    "uploadFileToRemoteEnvironment",
    "listFilesInRemoteEnvironment",
    "downloadFileFromRemoteEnvironment",
}

Connect = Callable[[], AbstractAsyncContextManager[ClientSession]]


@asynccontextmanager
async def over_stdio(server: ServerProcess) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "sessionpool.cli", "mcp", "--endpoint", server.endpoint()],
        env={"SESSIONPOOL_API_KEY": server.api_key or "", "PATH": "/usr/bin:/bin"},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def over_http(server: ServerProcess) -> AsyncIterator[ClientSession]:
    async with (
        httpx.AsyncClient(headers=server.auth, timeout=60) as http,
        streamable_http_client(server.url + "/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@pytest.fixture(params=["stdio", "http"])
def connect(request: pytest.FixtureRequest, server: ServerProcess) -> Connect:
    transport = over_stdio if request.param == "stdio" else over_http
    return lambda: transport(server)


def text_of(result: CallToolResult) -> Any:
    assert not result.isError, result.content
    first = result.content[0]
    assert isinstance(first, TextContent)
    return json.loads(first.text)


async def test_tools_are_listed(connect: Connect) -> None:
    async with connect() as mcp:
        tools = await mcp.list_tools()
    assert {t.name for t in tools.tools} == TOOLS
    run = next(t for t in tools.tools if t.name == "runPythonCodeInRemoteEnvironment")
    assert run.inputSchema["required"] == ["pythonCode"]


async def test_python_state_images_and_errors(connect: Connect) -> None:
    async with connect() as mcp:
        env = text_of(await mcp.call_tool("launchShell", {}))["environmentId"]
        first = text_of(
            await mcp.call_tool(
                "runPythonCodeInRemoteEnvironment", {"pythonCode": "x = 40", "environmentId": env}
            )
        )
        assert first["environmentId"] == env
        out = text_of(
            await mcp.call_tool(
                "runPythonCodeInRemoteEnvironment",
                {"pythonCode": "print('hi')\nx + 2", "environmentId": env},
            )
        )
        assert (out["stdout"], out["result"]) == ("hi\n", "42")
        plot = await mcp.call_tool("runPythonCodeInRemoteEnvironment", {"pythonCode": PLOT})
        images = [c for c in plot.content if isinstance(c, ImageContent)]
        assert len(images) == 1 and images[0].mimeType == "image/png"
        assert base64.b64decode(images[0].data).startswith(b"\x89PNG")
        failed = text_of(
            await mcp.call_tool("runPythonCodeInRemoteEnvironment", {"pythonCode": "1/0"})
        )
        assert failed["error"]["name"] == "ZeroDivisionError"
        assert "ZeroDivisionError" in failed["stderr"]


async def test_default_environment_is_per_connection(connect: Connect) -> None:
    async with connect() as mcp:
        text_of(await mcp.call_tool("runPythonCodeInRemoteEnvironment", {"pythonCode": "k = 1"}))
        same = text_of(await mcp.call_tool("runPythonCodeInRemoteEnvironment", {"pythonCode": "k"}))
        assert same["result"] == "1"
    async with connect() as other:
        fresh = text_of(
            await other.call_tool("runPythonCodeInRemoteEnvironment", {"pythonCode": "k"})
        )
        assert fresh["error"]["name"] == "NameError"
        assert fresh["environmentId"] != same["environmentId"]


async def test_shell_and_file_tools(connect: Connect) -> None:
    async with connect() as mcp:
        shell = text_of(
            await mcp.call_tool(
                "runShellCommandInRemoteEnvironment", {"shellCommand": "echo hi; exit 3"}
            )
        )
        assert (shell["stdout"], shell["exitCode"]) == ("hi\n", 3)
        up = text_of(
            await mcp.call_tool(
                "uploadFileToRemoteEnvironment", {"fileName": "notes.txt", "content": "héllo"}
            )
        )
        assert up["path"] == "/mnt/data/notes.txt"
        blob = base64.b64encode(PAYLOAD).decode()
        await mcp.call_tool(
            "uploadFileToRemoteEnvironment",
            {"fileName": "data.bin", "content": blob, "encoding": "base64"},
        )
        listed = text_of(await mcp.call_tool("listFilesInRemoteEnvironment", {}))
        assert {f["name"]: f["size"] for f in listed["files"]} == {
            "notes.txt": len("héllo".encode()),
            "data.bin": len(PAYLOAD),
        }
        text = await mcp.call_tool("downloadFileFromRemoteEnvironment", {"fileName": "notes.txt"})
        assert isinstance(text.content[0], TextContent) and text.content[0].text == "héllo"
        binary = await mcp.call_tool("downloadFileFromRemoteEnvironment", {"fileName": "data.bin"})
        resource = binary.content[0]
        assert isinstance(resource, EmbeddedResource)
        assert base64.b64decode(resource.resource.blob) == PAYLOAD  # type: ignore[union-attr]
        missing = await mcp.call_tool("downloadFileFromRemoteEnvironment", {"fileName": "nope"})
        assert missing.isError
        assert isinstance(missing.content[0], TextContent)
        assert "nope" in missing.content[0].text


async def test_http_transport_needs_the_key(server: ServerProcess) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
    headers = {"accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(timeout=30) as http:
        r = await http.post(server.url + "/mcp", json=body, headers=headers)
        assert r.status_code == 401
        r = await http.post(
            server.url + "/mcp", json=body, headers={**headers, "authorization": "Bearer no"}
        )
        assert r.status_code == 401

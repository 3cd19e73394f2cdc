"""The MCP tools, written once against the async client SDK.

Tools named as Azure's platform-managed MCP server names them (``launchShell``,
``runPythonCodeInRemoteEnvironment``, ``runShellCommandInRemoteEnvironment``), plus file tools.
``environmentId`` is a sessionpool session identifier; when a call omits it, each MCP session gets
one environment of its own, made on first use.
"""

from __future__ import annotations

import base64
import json
import logging
import mimetypes
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import (
    BlobResourceContents,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    TextContent,
)
from pydantic import AnyUrl

from sessionpool._version import __version__
from sessionpool.client import AsyncClient, AsyncSession, ExecutionTimeout, SessionLost
from sessionpool.client._protocol import new_identifier

INSTRUCTIONS = """\
Run Python code and shell commands in a remote, sandboxed, stateful environment (a sessionpool \
session). Variables, imports and files in /mnt/data persist between calls to the same \
environmentId. Call launchShell to get a fresh environmentId, or omit environmentId to use this \
connection's own environment. matplotlib figures come back as images."""

#: the client for the tool call in ``ctx``: over HTTP with the user's credential (stdio), or the
#: server's own routes with the caller's credentials (/mcp), so a tool can do no more than the
#: caller could
ClientFactory = Callable[["Context[Any, Any, Any]"], Awaitable[AsyncClient]]
#: largest file the download tool returns inline
MAX_INLINE_BYTES = 8 * 1024 * 1024


def build_server(client: ClientFactory, *, name: str = "sessionpool") -> FastMCP[Any]:
    """A FastMCP server whose tools run in sessions of the pool that ``client(ctx)`` talks to.

    FastMCP configures the root logger when it is built; that is undone here, so the host
    process (the server, or ``sessionpool mcp``) keeps its own logging.
    """
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    mcp: FastMCP[Any] = FastMCP(
        name,
        instructions=INSTRUCTIONS,
        # authentication is sessionpool's API key, checked before the request reaches MCP
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        streamable_http_path="/mcp",
    )
    root.setLevel(saved_level)
    root.handlers[:] = saved_handlers
    mcp._mcp_server.version = __version__
    defaults: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    async def session(environment_id: str | None, ctx: Context[Any, Any, Any]) -> AsyncSession:
        if not environment_id:
            key = ctx.request_context.session
            environment_id = defaults.get(key)
            if environment_id is None:
                environment_id = defaults[key] = new_identifier()
        return (await client(ctx)).session(environment_id)

    @mcp.tool(
        name="launchShell",
        description="Create a new remote environment (a sandboxed Python and shell session) and "
        "return its environmentId.",
        structured_output=False,
    )
    async def launch_shell(ctx: Context[Any, Any, Any]) -> str:
        ident = new_identifier()
        await (await client(ctx)).session(ident).run("None")
        return json.dumps({"environmentId": ident})

    @mcp.tool(
        name="runPythonCodeInRemoteEnvironment",
        description="Run Python code in a remote environment; state persists between calls. "
        "Returns stdout, stderr, the value of the last expression and any error; figures are "
        "returned as images. Files are in /mnt/data.",
        structured_output=False,
    )
    async def run_python(
        pythonCode: str,
        ctx: Context[Any, Any, Any],
        environmentId: str | None = None,
        timeoutInSeconds: float | None = None,
    ) -> list[ContentBlock]:
        s = await session(environmentId, ctx)
        try:
            res = await s.run(pythonCode, timeout=timeoutInSeconds)
        except (ExecutionTimeout, SessionLost) as exc:
            partial = exc.result
            stopped = {
                "environmentId": s.identifier,
                "stdout": partial.stdout if partial else "",
                "stderr": partial.stderr if partial else "",
                "error": exc.message,
            }
            raise RuntimeError(json.dumps(stopped)) from exc
        doc: dict[str, Any] = {
            "environmentId": s.identifier,
            "stdout": res.stdout,
            "stderr": res.stderr,
            "result": res.text,
        }
        if res.error is not None:
            doc["error"] = {"name": res.error.name, "value": res.error.value}
        content: list[ContentBlock] = [TextContent(type="text", text=json.dumps(doc))]
        for image in res.images:
            content.append(
                ImageContent(
                    type="image",
                    data=base64.b64encode(image.data).decode("ascii"),
                    mimeType=f"image/{image.format}",
                )
            )
        return content

    @mcp.tool(
        name="runShellCommandInRemoteEnvironment",
        description="Run a shell command in a remote environment. Returns stdout, stderr and "
        "the exit code. Files are in /mnt/data.",
        structured_output=False,
    )
    async def run_shell(
        shellCommand: str,
        ctx: Context[Any, Any, Any],
        environmentId: str | None = None,
        timeoutInSeconds: float | None = None,
    ) -> str:
        s = await session(environmentId, ctx)
        res = await s.run_shell(shellCommand, timeout=timeoutInSeconds)
        return json.dumps(
            {
                "environmentId": s.identifier,
                "stdout": res.stdout,
                "stderr": res.stderr,
                "exitCode": res.exit_code,
            }
        )

    @mcp.tool(
        name="uploadFileToRemoteEnvironment",
        description="Write a file into /mnt/data of a remote environment. content is text, or "
        "base64 when encoding is 'base64'.",
        structured_output=False,
    )
    async def upload_file(
        fileName: str,
        content: str,
        ctx: Context[Any, Any, Any],
        encoding: str = "utf-8",
        environmentId: str | None = None,
    ) -> str:
        data = (
            base64.b64decode(content, validate=True)
            if encoding.lower() == "base64"
            else content.encode("utf-8")
        )
        s = await session(environmentId, ctx)
        info = await s.upload(data, fileName)
        return json.dumps(
            {"environmentId": s.identifier, "path": f"/mnt/data/{info.name}", "size": info.size}
        )

    @mcp.tool(
        name="listFilesInRemoteEnvironment",
        description="List the files in /mnt/data (or a directory under it) of a remote "
        "environment.",
        structured_output=False,
    )
    async def list_files(
        ctx: Context[Any, Any, Any],
        path: str = "",
        environmentId: str | None = None,
    ) -> str:
        s = await session(environmentId, ctx)
        infos = await s.files(path)
        return json.dumps(
            {
                "environmentId": s.identifier,
                "files": [
                    {"name": i.name, "size": i.size, "type": "Directory" if i.is_dir else "File"}
                    for i in infos
                ],
            }
        )

    @mcp.tool(
        name="downloadFileFromRemoteEnvironment",
        description="Read a file from /mnt/data of a remote environment: text comes back as "
        "text, images as images, anything else as a base64 blob.",
        structured_output=False,
    )
    async def download_file(
        fileName: str,
        ctx: Context[Any, Any, Any],
        environmentId: str | None = None,
    ) -> list[ContentBlock]:
        s = await session(environmentId, ctx)
        data = await s.download(fileName)
        if len(data) > MAX_INLINE_BYTES:
            raise ValueError(
                f"{fileName} is {len(data)} bytes, over the {MAX_INLINE_BYTES} bytes this tool "
                "returns; summarise it with runPythonCodeInRemoteEnvironment instead"
            )
        mime = mimetypes.guess_type(fileName)[0] or "application/octet-stream"
        if mime.startswith("image/"):
            return [
                ImageContent(
                    type="image", data=base64.b64encode(data).decode("ascii"), mimeType=mime
                )
            ]
        try:
            return [TextContent(type="text", text=data.decode("utf-8"))]
        except UnicodeDecodeError:
            blob = BlobResourceContents(
                uri=AnyUrl(f"file:///mnt/data/{fileName.removeprefix('/mnt/data/')}"),
                mimeType=mime,
                blob=base64.b64encode(data).decode("ascii"),
            )
            return [EmbeddedResource(type="resource", resource=blob)]

    return mcp

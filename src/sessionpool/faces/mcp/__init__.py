"""An MCP server over sessionpool sessions (the official ``mcp`` SDK).

Two ways in: ``sessionpool mcp`` (``stdio``) serves stdio for desktop and IDE agents, talking to
a pool over HTTP with the client SDK; and the server mounts the streamable HTTP transport at
``/mcp`` (``routes.McpFace``, same API keys), talking to its own default pool in-process. Both use
the same tools (``tools``), named as Azure's hosted dynamic-sessions MCP server names them.
"""

from typing import TYPE_CHECKING

from sessionpool._lazy import exports

if TYPE_CHECKING:
    from sessionpool.faces.mcp.routes import McpFace

__all__ = ["McpFace"]

# on first use: ``sessionpool mcp`` (``stdio``) must not load the server's face to parse its flags
__getattr__ = exports(__name__, {"McpFace": "sessionpool.faces.mcp.routes"})

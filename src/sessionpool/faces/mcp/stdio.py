"""``sessionpool mcp``: the MCP server on stdio, for desktop and IDE agents."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from sessionpool.client import AsyncClient


def mcp_command(args: argparse.Namespace) -> int:
    from sessionpool.client._cli import USAGE, UsageError, connection
    from sessionpool.faces.mcp.tools import build_server

    try:
        endpoint, credential, verify = connection(args)
    except UsageError as exc:
        print(f"sessionpool mcp: {exc}", file=sys.stderr)
        return USAGE
    holder: dict[str, AsyncClient] = {}

    async def client(ctx: Any) -> AsyncClient:
        if "client" not in holder:
            holder["client"] = AsyncClient(endpoint, api_key=credential, verify=verify)
        return holder["client"]

    # stdout is the protocol; warnings and errors go to stderr, nothing chatty
    logging.basicConfig(level=logging.WARNING, format="sessionpool mcp: %(message)s")
    server = build_server(client)
    server.run("stdio")
    return 0


def add_mcp_command(sub: Any) -> None:
    from sessionpool.client._cli import _common

    p = sub.add_parser(
        "mcp",
        parents=[_common()],
        help="serve the MCP tools on stdio (for desktop and IDE agents)",
        description="An MCP server on stdin/stdout whose tools run code in sessions of the pool "
        "at --endpoint (or SESSIONPOOL_ENDPOINT / the client config file).",
    )
    p.set_defaults(func=mcp_command)

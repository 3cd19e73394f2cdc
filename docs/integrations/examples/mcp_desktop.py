"""Start the MCP server exactly as a desktop agent would from mcp_desktop.json, and use it.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python mcp_desktop.py

The endpoint and key from the environment replace the placeholders in the JSON file.
"""

import asyncio
import json
import os
import pathlib

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

CONFIG = pathlib.Path(__file__).with_name("mcp_desktop.json")


async def main() -> None:
    entry = json.loads(CONFIG.read_text())["mcpServers"]["sessionpool"]
    env = {**entry["env"], "PATH": os.environ.get("PATH", "")}
    env["SESSIONPOOL_ENDPOINT"] = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your endpoint
    env["SESSIONPOOL_API_KEY"] = os.environ["SESSIONPOOL_API_KEY"]  # 2. your key
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
        await mcp.initialize()
        print(sorted(t.name for t in (await mcp.list_tools()).tools))
        result = await mcp.call_tool("runPythonCodeInRemoteEnvironment", {"pythonCode": "2**10"})
        print(result.content[0].text)  # type: ignore[union-attr]


asyncio.run(main())

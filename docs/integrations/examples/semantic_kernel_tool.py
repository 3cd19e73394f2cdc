"""Semantic Kernel SessionsPythonTool against sessionpool over https (SK refuses plain http).

Start the server with a local CA, then trust it here:

    sessionpool serve --tls-self-signed ~/.sessionpool/tls
    SESSIONPOOL_ENDPOINT=https://localhost:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
    SESSIONPOOL_CA=~/.sessionpool/tls/ca.pem python semantic_kernel_tool.py
"""

import asyncio
import os
import ssl
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

import httpx  # noqa: E402
from semantic_kernel.core_plugins.sessions_python_tool import SessionsPythonTool  # noqa: E402

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your https pool endpoint instead of Azure's
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key instead of an Entra token
CA = os.path.expanduser(os.environ["SESSIONPOOL_CA"])  # the CA that signed the server's cert


async def main() -> None:
    # SK's default client times out after 5 s: give it the CA and a longer timeout
    context = ssl.create_default_context(cafile=CA)
    async with httpx.AsyncClient(verify=context, timeout=120) as http:
        tool = SessionsPythonTool(
            pool_management_endpoint=ENDPOINT,
            auth_callback=lambda: API_KEY,
            http_client=http,
            env_file_path=None,
        )
        print(await tool.execute_code("x = 6\nx * 7"))


asyncio.run(main())

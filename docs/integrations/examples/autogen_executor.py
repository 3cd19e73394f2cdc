"""AutoGen ACADynamicSessionsCodeExecutor against sessionpool.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python autogen_executor.py
"""

import asyncio
import os
import tempfile
import time
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from autogen_core import CancellationToken  # noqa: E402
from autogen_core.code_executor import CodeBlock  # noqa: E402
from autogen_ext.code_executors.azure import ACADynamicSessionsCodeExecutor  # noqa: E402
from azure.core.credentials import AccessToken  # noqa: E402

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your pool endpoint instead of Azure's
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key instead of an Entra token


class StaticKey:
    """An azure-identity-shaped credential that hands out the API key."""

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(API_KEY, int(time.time()) + 3600)


async def main() -> None:
    with tempfile.TemporaryDirectory() as work_dir:
        executor = ACADynamicSessionsCodeExecutor(
            pool_management_endpoint=ENDPOINT, credential=StaticKey(), work_dir=work_dir
        )
        await executor.start()
        blocks = [CodeBlock(code="import sys\nprint(sys.version_info[:2])", language="python")]
        result = await executor.execute_code_blocks(blocks, CancellationToken())
        print("exit code", result.exit_code)
        print(result.output)
        await executor.stop()


asyncio.run(main())

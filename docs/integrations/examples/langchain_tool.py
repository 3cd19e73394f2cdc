"""LangChain SessionsPythonREPLTool against sessionpool.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python langchain_tool.py
"""

import json
import os
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from langchain_azure_dynamic_sessions import SessionsPythonREPLTool  # noqa: E402

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your pool endpoint instead of Azure's
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key instead of an Entra token

tool = SessionsPythonREPLTool(
    pool_management_endpoint=ENDPOINT,
    access_token_provider=lambda: API_KEY,
)
tool.execute("import math")
print(json.loads(tool.run("print('hello from the sandbox')\nmath.factorial(5)")))
tool.close()  # deletes the session

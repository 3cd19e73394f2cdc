"""azure-dynamic-sessions-code-interpreter's CodeInterpreterTool against sessionpool.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python community_interpreter.py
"""

import io
import os

from azure_dynamic_sessions_code_interpreter import CodeInterpreterTool

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your pool endpoint instead of Azure's
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key instead of an Entra token

tool = CodeInterpreterTool(pool_management_endpoint=ENDPOINT)
tool.access_token_provider = lambda: API_KEY  # it builds DefaultAzureCredential otherwise
tool.upload_file(
    data=io.BytesIO(b"region,revenue\nnorth,120\nsouth,80\n"), remote_file_path="sales.csv"
)
total = tool.execute("import pandas as pd\nint(pd.read_csv('/mnt/data/sales.csv').revenue.sum())")
print(total["status"], total["result"])
print([f.filename for f in tool.list_files()])

"""A LangChain deep agent whose sandbox is a sessionpool session: SessionsBashBackend.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python deepagents_backend.py

Needs deepagents 0.6 (the backend warns on 0.7+): pip install 'deepagents>=0.6,<0.7'.
"""

import os
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from langchain_azure_dynamic_sessions.backends.sessions import SessionsBashBackend  # noqa: E402

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your pool endpoint instead of Azure's
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key instead of an Entra token

backend = SessionsBashBackend(ENDPOINT, access_token_provider=lambda: API_KEY)
backend.upload_files([("sales.csv", b"region,revenue\nnorth,120\nsouth,80\n")])  # /mnt/data
result = backend.execute("awk -F, 'NR>1 {s+=$2} END {print s}' /mnt/data/sales.csv")
print(result.output.strip(), result.exit_code)
print(backend.execute("test -e /mnt/data/nope").exit_code)
# hand it to an agent: create_deep_agent(model=..., backend=backend) gives the model
# execute, ls, read_file, write_file, edit_file, glob and grep in the session

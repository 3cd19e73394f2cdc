"""LlamaIndex AzureCodeInterpreterToolSpec against sessionpool.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python llamaindex_tool.py
"""

import os
import tempfile
import warnings

warnings.filterwarnings("ignore", category=DeprecationWarning)

from llama_index.tools.azure_code_interpreter import AzureCodeInterpreterToolSpec  # noqa: E402

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your pool endpoint instead of Azure's
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key instead of an Entra token

spec = AzureCodeInterpreterToolSpec(pool_management_endpoint=ENDPOINT)
spec.access_token_provider = lambda: API_KEY  # no constructor argument for a static key

out = spec.code_interpreter("numbers = [3, 1, 2]\nsorted(numbers)")
print(out["properties"]["status"], out["properties"]["result"])

with tempfile.TemporaryDirectory() as tmp:
    local = os.path.join(tmp, "notes.txt")
    with open(local, "w") as fh:
        fh.write("uploaded with llama-index")
    spec.upload_file(local_file_path=local)
    print([f.filename for f in spec.list_files()])
    print(spec.code_interpreter("open('/mnt/data/notes.txt').read()")["properties"]["result"])
# the tools an agent gets: spec.to_tool_list()
print(sorted(t.metadata.name for t in spec.to_tool_list()))

"""A code-interpreter agent on sessionpool with the unmodified OpenAI SDK (Responses API).

The server's model endpoint does the thinking (SESSIONPOOL_AGENTS_MODEL_BASE_URL on the server);
the code it writes runs in a sessionpool container, and the files it makes come back as
citations to download. Reads SESSIONPOOL_URL (the server, e.g. http://127.0.0.1:8080),
SESSIONPOOL_API_KEY and, optionally, SESSIONPOOL_MODEL.
"""

import os
from pathlib import Path

from openai import OpenAI

client = OpenAI(
    base_url=os.environ["SESSIONPOOL_URL"] + "/v1", api_key=os.environ["SESSIONPOOL_API_KEY"]
)
response = client.responses.create(
    model=os.environ.get("SESSIONPOOL_MODEL", "gpt-4o-mini"),
    tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    input="Make a bar chart of operating profit: Company A 1.2, Company B 2.5. "
    "Save it as chart.png and the data as chart_data.csv.",
)
print(response.status)
for item in response.output:
    if item.type == "code_interpreter_call":
        print("ran code in", item.container_id)
    elif item.type == "message":
        for part in item.content:
            if part.type != "output_text":
                continue
            print("answer:", part.text)
            for cite in part.annotations:
                if cite.type != "container_file_citation":
                    continue
                data = client.containers.files.content.retrieve(
                    cite.file_id, container_id=cite.container_id
                ).read()
                Path(cite.filename).write_bytes(data)
                print("saved", cite.filename)

"""The OpenAI Agents SDK's CodeInterpreterTool on sessionpool's Responses API.

The server's model endpoint does the thinking; the code runs in a sessionpool container. Reads
SESSIONPOOL_URL (the server, e.g. http://127.0.0.1:8080), SESSIONPOOL_API_KEY and, optionally,
SESSIONPOOL_MODEL.
"""

import os

from openai import AsyncOpenAI

from agents import (
    Agent,
    CodeInterpreterTool,
    Runner,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)

client = AsyncOpenAI(
    base_url=os.environ["SESSIONPOOL_URL"] + "/v1", api_key=os.environ["SESSIONPOOL_API_KEY"]
)
set_default_openai_client(client, use_for_tracing=False)
set_default_openai_api("responses")
set_tracing_disabled(True)  # traces would go to OpenAI's platform
agent = Agent(
    name="Analyst",
    instructions="Answer with charts made by the code interpreter.",
    model=os.environ.get("SESSIONPOOL_MODEL", "gpt-4o-mini"),
    tools=[
        CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": {"type": "auto"}})
    ],
)
result = Runner.run_sync(
    agent,
    "Make a bar chart of operating profit: Company A 1.2, Company B 2.5. Save it as chart.png.",
)
for item in result.new_items:
    if item.type == "tool_call_item" and item.raw_item.type == "code_interpreter_call":
        print("ran code in", item.raw_item.container_id)
print("answer:", result.final_output)

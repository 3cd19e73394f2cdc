"""Microsoft Agent Framework's code interpreter on sessionpool's Responses API, streamed.

The server's model endpoint does the thinking; the code runs in a sessionpool container. Reads
SESSIONPOOL_URL (the server, e.g. http://127.0.0.1:8080), SESSIONPOOL_API_KEY and, optionally,
SESSIONPOOL_MODEL.
"""

import asyncio
import os

from agent_framework import Agent
from agent_framework.openai import OpenAIChatClient

client = OpenAIChatClient(
    model=os.environ.get("SESSIONPOOL_MODEL", "gpt-4o-mini"),
    base_url=os.environ["SESSIONPOOL_URL"] + "/v1",
    api_key=os.environ["SESSIONPOOL_API_KEY"],
)
agent = Agent(
    client=client,
    instructions="Answer with charts made by the code interpreter.",
    tools=[OpenAIChatClient.get_code_interpreter_tool()],
)


async def main() -> None:
    code, answer = "", ""
    prompt = "Make a bar chart of operating profit: Company A 1.2, Company B 2.5."
    async for update in agent.run(prompt, stream=True):
        for content in update.contents:
            if content.type == "code_interpreter_tool_call":  # code_interpreter_call_code events
                code += "".join(getattr(i, "text", "") or "" for i in content.inputs or [])
            elif content.type == "text":
                answer += content.text or ""
    print("code lines:", len(code.splitlines()))
    print("answer:", answer)


asyncio.run(main())

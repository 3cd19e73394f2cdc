"""pydantic-ai's CodeExecutionTool on sessionpool's Responses API.

The server's model endpoint does the thinking; the code runs in a sessionpool container. Reads
SESSIONPOOL_URL (the server, e.g. http://127.0.0.1:8080), SESSIONPOOL_API_KEY and, optionally,
SESSIONPOOL_MODEL.
"""

import os

from pydantic_ai import Agent
from pydantic_ai.capabilities import NativeTool
from pydantic_ai.messages import FilePart, NativeToolCallPart
from pydantic_ai.models.openai import OpenAIResponsesModel
from pydantic_ai.native_tools import CodeExecutionTool
from pydantic_ai.providers.openai import OpenAIProvider

provider = OpenAIProvider(
    base_url=os.environ["SESSIONPOOL_URL"] + "/v1", api_key=os.environ["SESSIONPOOL_API_KEY"]
)
model = OpenAIResponsesModel(os.environ.get("SESSIONPOOL_MODEL", "gpt-4o-mini"), provider=provider)
agent = Agent(model, capabilities=[NativeTool(CodeExecutionTool())])
result = agent.run_sync(
    "Make a bar chart of operating profit: Company A 1.2, Company B 2.5. Save it as chart.png."
)
for message in result.all_messages():
    for part in message.parts:
        if isinstance(part, NativeToolCallPart):
            print("ran code in", part.args["container_id"])
        elif isinstance(part, FilePart):
            print("image:", part.content.media_type)
print("answer:", result.output)

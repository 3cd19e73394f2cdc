"""OpenAI function calling: a tool schema for the model, and the code that answers its calls.

Pass TOOLS to ``client.chat.completions.create(..., tools=TOOLS)``; for each tool call in the
reply, append ``{"role": "tool", "tool_call_id": call.id, "content": answer(call)}``. This script
feeds a hand-written tool call through ``answer`` so it runs without an OpenAI key.

    SESSIONPOOL_ENDPOINT=http://127.0.0.1:8080/pools/default SESSIONPOOL_API_KEY=sp-... \
        python openai_functions.py            # answers two hand-made tool calls
    python openai_functions.py --schema       # prints TOOLS as JSON
"""

import json
import os
import sys
from types import SimpleNamespace
from typing import Any

from sessionpool import Client

ENDPOINT = os.environ["SESSIONPOOL_ENDPOINT"]  # 1. your pool endpoint
API_KEY = os.environ["SESSIONPOOL_API_KEY"]  # 2. your API key

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "run_python",
            "description": "Run Python code in a sandboxed, stateful session. Variables persist "
            "between calls; files are in /mnt/data. Returns stdout, stderr, the value of the "
            "last expression and any error.",
            "parameters": {
                "type": "object",
                "properties": {"code": {"type": "string", "description": "Python source"}},
                "required": ["code"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "run_shell",
            "description": "Run a shell command in the same session. Returns stdout, stderr and "
            "the exit code.",
            "parameters": {
                "type": "object",
                "properties": {"command": {"type": "string"}},
                "required": ["command"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    },
]

if sys.argv[1:] == ["--schema"]:
    print(json.dumps(TOOLS, indent=2))
    sys.exit(0)

client = Client(ENDPOINT, api_key=API_KEY)
session = client.session()  # one session per conversation


def answer(call: Any) -> str:
    """The tool message content for one of the model's tool calls."""
    args = json.loads(call.function.arguments)
    if call.function.name == "run_python":
        res = session.run(args["code"])
        out = {"stdout": res.stdout, "stderr": res.stderr, "result": res.text}
        if res.error:
            out["error"] = str(res.error)
        if res.images:
            out["images"] = [img.save(f"figure-{i}.png").name for i, img in enumerate(res.images)]
        return json.dumps(out)
    if call.function.name == "run_shell":
        sh = session.run_shell(args["command"])
        return json.dumps({"stdout": sh.stdout, "stderr": sh.stderr, "exit_code": sh.exit_code})
    return json.dumps({"error": f"unknown tool {call.function.name}"})


# what a model's reply carries (ChatCompletionMessageToolCall), made by hand here
fake_call = SimpleNamespace(
    id="call_1",
    function=SimpleNamespace(name="run_python", arguments=json.dumps({"code": "sum(range(10))"})),
)
print(answer(fake_call))
shell_call = SimpleNamespace(
    id="call_2",
    function=SimpleNamespace(name="run_shell", arguments=json.dumps({"command": "echo ok"})),
)
print(answer(shell_call))
session.close()
client.close()

"""Agent frameworks whose code interpreter is the Responses API's hosted ``code_interpreter``
tool, unmodified, doing a chart task against the Responses face: ``openai-agents`` 0.24.0
(``CodeInterpreterTool``), ``pydantic-ai-slim`` 2.68.0 (``CodeExecutionTool``) and Microsoft
``agent-framework`` (core 1.23.0, openai 1.17.0; ``get_code_interpreter_tool``, its streamed
``code_interpreter_call_code`` events).

Each runs as a user's script in a subprocess with ``agents_server.client_env()`` (the server's
CA in ``SSL_CERT_FILE``), its model the scripted one: ``scripted-chart`` draws a bar chart and
links its files, ``scripted-read_file`` prints the first CSV under /mnt/data.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import SHELL_ANSWER, SHELL_COMMANDS

pytestmark = pytest.mark.jail

CHART_ANSWER = "Here is the bar chart: [chart.png](sandbox:/mnt/data/chart.png)."


def run_flow(server: AgentsServer, cwd: Path, code: str) -> dict[str, Any]:
    """``code`` as a user's script (``SP_URL``, ``SP_KEY`` set); its last line is JSON."""
    script = cwd / "flow.py"
    script.write_text(textwrap.dedent(code))
    env = server.client_env()
    env.update(SP_URL=server.url, SP_KEY=server.api_key)
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


OPENAI_AGENTS = """
    import asyncio, json, os
    from openai import AsyncOpenAI
    from agents import (
        Agent, CodeInterpreterTool, Runner, set_default_openai_api, set_default_openai_client,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=os.environ["SP_URL"] + "/v1", api_key=os.environ["SP_KEY"])
    set_default_openai_client(client, use_for_tracing=False)
    set_default_openai_api("responses")
    agent = Agent(
        name="Analyst",
        instructions="Draw charts with the code interpreter.",
        model="scripted-chart",
        tools=[CodeInterpreterTool(tool_config={"type": "code_interpreter",
                                                "container": {"type": "auto"}})],
    )

    async def main():
        out = {}
        result = await Runner.run(agent, "bar chart please")
        out["items"] = [[i.type, getattr(i.raw_item, "type", None)] for i in result.new_items]
        call = next(i.raw_item for i in result.new_items if i.type == "tool_call_item")
        out["code"] = call.code
        out["logs"] = "".join(o.logs for o in call.outputs or [] if o.type == "logs")
        out["answer"] = result.final_output
        png = await client.containers.files.list(call.container_id)
        out["files"] = sorted(f.path for f in png.data)
        streamed = Runner.run_streamed(agent, "bar chart please")
        kinds = set()
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                kinds.add(event.data.type)
        out["stream"] = sorted(kinds)
        out["streamed_answer"] = streamed.final_output
        await client.close()
        print(json.dumps(out))

    asyncio.run(main())
"""


def test_openai_agents_code_interpreter_tool(agents_server: AgentsServer, tmp_path: Path) -> None:
    out = run_flow(agents_server, tmp_path, OPENAI_AGENTS)
    assert out["items"] == [
        ["tool_call_item", "code_interpreter_call"],
        ["message_output_item", "message"],
    ]
    assert "savefig" in out["code"] and "saved chart" in out["logs"]
    assert out["answer"].startswith(CHART_ANSWER)
    assert {"/mnt/data/chart.png", "/mnt/data/chart_data.csv"} <= set(out["files"])
    for kind in (
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.completed",
        "response.output_text.delta",
        "response.completed",
    ):
        assert kind in out["stream"], kind
    assert out["streamed_answer"].startswith(CHART_ANSWER)


PYDANTIC_AI = """
    import asyncio, json, os
    from openai import AsyncOpenAI
    from pydantic_ai import Agent
    from pydantic_ai.capabilities import NativeTool
    from pydantic_ai.messages import (
        FilePart, NativeToolCallPart, NativeToolReturnPart, UploadedFile,
    )
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.native_tools import CodeExecutionTool
    from pydantic_ai.providers.openai import OpenAIProvider

    client = AsyncOpenAI(base_url=os.environ["SP_URL"] + "/v1", api_key=os.environ["SP_KEY"])
    provider = OpenAIProvider(openai_client=client)

    async def main():
        out = {}
        upload = await client.files.create(
            file=("sales.csv", b"company,operating_profit\\nNorthwind,3.5\\nContoso,4.25\\n"),
            purpose="assistants",
        )
        tool = CodeExecutionTool(files=[UploadedFile(file_id=upload.id, provider_name="openai")])
        charts = Agent(OpenAIResponsesModel("scripted-chart", provider=provider),
                       instructions="Draw charts.", capabilities=[NativeTool(tool)])
        result = await charts.run("bar chart please")
        parts = [p for m in result.all_messages() for p in m.parts]
        call = next(p for p in parts if isinstance(p, NativeToolCallPart))
        returned = next(p for p in parts if isinstance(p, NativeToolReturnPart))
        images = [p for p in parts if isinstance(p, FilePart)]
        out["tool"] = [call.tool_name, returned.tool_name]
        out["container"] = call.args["container_id"]
        out["code"] = call.args["code"]
        out["returned"] = returned.content
        out["images"] = [[p.content.media_type, p.content.data[:4].hex()] for p in images]
        out["answer"] = result.output
        reader = Agent(OpenAIResponsesModel("scripted-read_file", provider=provider),
                       capabilities=[NativeTool(tool)])
        async with reader.run_stream("read my file") as streamed:
            out["streamed"] = await streamed.get_output()
        await client.close()
        print(json.dumps(out))

    asyncio.run(main())
"""


def test_pydantic_ai_code_execution_tool(agents_server: AgentsServer, tmp_path: Path) -> None:
    out = run_flow(agents_server, tmp_path, PYDANTIC_AI)
    assert out["tool"] == ["code_execution", "code_execution"]
    assert out["container"].startswith("cntr_") and "savefig" in out["code"]
    assert out["returned"] == {"status": "completed", "logs": ["saved chart\n"]}
    assert out["images"] == [["image/png", b"\x89PNG".hex()]]
    assert out["answer"].startswith(CHART_ANSWER)
    # the uploaded file reached the auto container through the tool's files
    assert "Northwind,3.5" in out["streamed"] and "sum: 7.75" in out["streamed"]


AGENT_FRAMEWORK = """
    import asyncio, json, os
    from openai import AsyncOpenAI
    from agent_framework import Agent
    from agent_framework.openai import OpenAIChatClient

    async def main():
        out = {}
        oai = AsyncOpenAI(base_url=os.environ["SP_URL"] + "/v1", api_key=os.environ["SP_KEY"])
        upload = await oai.files.create(
            file=("sales.csv", b"company,operating_profit\\nNorthwind,3.5\\nContoso,4.25\\n"),
            purpose="assistants",
        )
        tool = OpenAIChatClient.get_code_interpreter_tool(file_ids=[upload.id])
        out["tool"] = dict(tool)
        out["upload"] = upload.id
        agent = Agent(client=OpenAIChatClient(model="scripted-chart", async_client=oai),
                      instructions="Draw charts.", tools=[tool])
        result = await agent.run("bar chart please")
        out["contents"] = [[m.role, c.type] for m in result.messages for c in m.contents]
        out["answer"] = result.text
        kinds, code, text = [], "", ""
        async for update in agent.run("bar chart please", stream=True):
            for c in update.contents:
                kinds.append(c.type)
                if c.type == "code_interpreter_tool_call":
                    code += "".join(getattr(i, "text", "") or "" for i in c.inputs or [])
                elif c.type == "text":
                    text += c.text or ""
        out["stream_kinds"] = sorted(set(kinds))
        out["stream_code"] = code
        out["stream_text"] = text
        reader = Agent(client=OpenAIChatClient(model="scripted-read_file", async_client=oai),
                       tools=[tool])
        out["read"] = (await reader.run("read my file")).text
        # the hosted shell tool: its commands run in the container's session
        shell_tool = OpenAIChatClient.get_shell_tool()
        out["shell_tool"] = dict(shell_tool)
        shell = Agent(client=OpenAIChatClient(model="scripted-shell", async_client=oai),
                      tools=[shell_tool])

        def shell_contents(contents):
            found = []
            for c in contents:
                if c.type == "shell_tool_call":
                    found.append(["call", list(c.commands or [])])
                elif c.type == "shell_tool_result":
                    found.append(["result", [[o.stdout, o.stderr, o.exit_code, o.timed_out]
                                             for o in c.outputs or []]])
            return found

        result = await shell.run("run the commands")
        out["shell"] = shell_contents(c for m in result.messages for c in m.contents)
        out["shell_answer"] = result.text
        streamed = []
        async for update in shell.run("run the commands", stream=True):
            streamed += update.contents
        out["shell_stream"] = shell_contents(streamed)
        await oai.close()
        print(json.dumps(out))

    asyncio.run(main())
"""


def test_agent_framework_code_interpreter(agents_server: AgentsServer, tmp_path: Path) -> None:
    out = run_flow(agents_server, tmp_path, AGENT_FRAMEWORK)
    assert out["tool"] == {
        "type": "code_interpreter",
        "container": {"type": "auto", "file_ids": [out["upload"]]},
    }
    assert out["contents"] == [
        ["assistant", "code_interpreter_tool_call"],
        ["assistant", "code_interpreter_tool_result"],
        ["assistant", "text"],
    ]
    assert out["answer"].startswith(CHART_ANSWER)
    # streamed: the code arrives from code_interpreter_call_code.delta / .done events
    assert {"code_interpreter_tool_call", "code_interpreter_tool_result", "text"} <= set(
        out["stream_kinds"]
    )
    assert "savefig" in out["stream_code"]
    assert out["stream_text"].startswith(CHART_ANSWER)
    assert "Contoso,4.25" in out["read"]
    assert out["shell_tool"] == {"type": "shell", "environment": {"type": "container_auto"}}
    expected = [
        ["call", SHELL_COMMANDS],
        ["result", [["42\n", "", 0, False], ["", "to stderr\n", 3, False]]],
    ]
    assert out["shell"] == expected
    assert out["shell_answer"].startswith(SHELL_ANSWER) and "[exit code 3]" in out["shell_answer"]
    assert out["shell_stream"] == expected

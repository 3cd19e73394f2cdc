"""The Assistants v2 face driven by the real, unmodified clients over TLS.

Each client flow runs as a script in a subprocess with ``agents_server.client_env()``: the CA
bundle in REQUESTS_CA_BUNDLE / SSL_CERT_FILE and a managed-identity endpoint for
``DefaultAzureCredential``, exactly the recipe a user follows (docs/agents.md). The model is the
scripted chat-completions server (tests/agents/scripted_model.py): ``gpt-4o-mini`` and other
unknown names draw the bar chart.

- the azure-ai-projects 1.0.0b10 quickstart, as its documentation writes it
- the same flow with azure-ai-agents (``AgentsClient``)
- openai-python: an uploaded CSV read by the code, run steps, file content, a streamed run,
  and ``AzureOpenAI`` on the ``/openai`` prefix
- failure modes: a failing model endpoint, a model that never stops, a cancelled slow cell, an
  unknown assistant, an empty page
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import openai
import pytest

from tests.agents.harness import AgentsServer
from tests.agents.scripted_model import PREAMBLE_ANSWER, PREAMBLE_TEXT, ScriptedModel

pytestmark = pytest.mark.jail

ROOT = Path(__file__).resolve().parents[2]
B10_DIR = ROOT / ".venv" / "side" / "azure-ai-projects-b10"

QUICKSTART_PROMPT = (
    "Could you please create a bar chart for the operating profit using the following data and "
    "provide the file to me? Company A: $1.2 million, Company B: $2.5 million"
)
CSV_ROWS = ["company,operating_profit", "Company A,1.2", "Company B,2.5"]
UPLOAD = b"product,units\nwidgets,17\ngadgets,25\n"


def run_script(
    server: AgentsServer,
    cwd: Path,
    code: str,
    *,
    pythonpath: Path | None = None,
    timeout: float = 240,
    **extra_env: str,
) -> dict[str, Any]:
    """Run ``code`` as a user's script; its last stdout line is ``RESULT <json>``."""
    script = cwd / "client_flow.py"
    script.write_text(textwrap.dedent(code))
    env = server.client_env()
    env.update(extra_env)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), env.get("PYTHONPATH", "")) if p
        )
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
    )
    assert done.returncode == 0, (
        f"{done.stdout}\n{done.stderr}\n--- server log ---\n" + (server.log()[-4000:])
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def assert_chart_files(cwd: Path, saved: list[str]) -> None:
    """A real PNG and the chart's CSV were saved by the client."""
    pngs = [cwd / name for name in saved if name.endswith(".png")]
    assert pngs, saved
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n"), (png, data[:16])
        assert len(data) > 1000
    csv = cwd / "chart_data.csv"
    assert csv.name in saved, saved
    assert csv.read_text().splitlines() == CSV_ROWS


# --- azure-ai-projects 1.0.0b10: the quickstart ---------------------------------------------------

QUICKSTART_B10 = """
    import json
    import os
    from pathlib import Path

    from azure.ai.projects import AIProjectClient
    from azure.ai.projects.models import CodeInterpreterTool
    from azure.identity import DefaultAzureCredential

    project_client = AIProjectClient.from_connection_string(
        credential=DefaultAzureCredential(), conn_str=os.environ["PROJECT_CONNECTION_STRING"]
    )

    with project_client:
        code_interpreter = CodeInterpreterTool()
        agent = project_client.agents.create_agent(
            model="gpt-4o-mini",
            name="my-agent",
            instructions="You are helpful agent",
            tools=code_interpreter.definitions,
            tool_resources=code_interpreter.resources,
        )
        print(f"Created agent, agent ID: {agent.id}")

        thread = project_client.agents.create_thread()
        print(f"Created thread, thread ID: {thread.id}")

        message = project_client.agents.create_message(
            thread_id=thread.id,
            role="user",
            content=PROMPT,
        )
        print(f"Created message, message ID: {message.id}")

        run = project_client.agents.create_and_process_run(thread_id=thread.id, agent_id=agent.id)
        print(f"Run finished with status: {run.status}")

        if run.status == "failed":
            print(f"Run failed: {run.last_error}")

        messages = project_client.agents.list_messages(thread_id=thread.id)
        print(f"Messages: {messages}")

        last_msg = messages.get_last_text_message_by_role("assistant")
        if last_msg:
            print(f"Last Message: {last_msg.text.value}")

        saved = []
        for image_content in messages.image_contents:
            print(f"Image File ID: {image_content.image_file.file_id}")
            file_name = f"{image_content.image_file.file_id}_image_file.png"
            project_client.agents.save_file(
                file_id=image_content.image_file.file_id, file_name=file_name
            )
            print(f"Saved image file to: {Path.cwd() / file_name}")
            saved.append(file_name)

        for file_path_annotation in messages.file_path_annotations:
            print(f"File Paths:")
            print(f"Type: {file_path_annotation.type}")
            print(f"Text: {file_path_annotation.text}")
            print(f"File ID: {file_path_annotation.file_path.file_id}")
            print(f"Start Index: {file_path_annotation.start_index}")
            print(f"End Index: {file_path_annotation.end_index}")
            file_name = Path(file_path_annotation.text).name
            project_client.agents.save_file(
                file_id=file_path_annotation.file_path.file_id, file_name=file_name
            )
            saved.append(file_name)

        steps = project_client.agents.list_run_steps(thread_id=thread.id, run_id=run.id)
        code = [
            call.code_interpreter.input
            for step in steps.data if step.type == "tool_calls"
            for call in step.step_details.tool_calls
        ]

        project_client.agents.delete_agent(agent.id)
        print("Deleted agent")

    print("RESULT " + json.dumps({
        "status": str(run.status.value if hasattr(run.status, "value") else run.status),
        "last_error": str(run.last_error),
        "last_text": last_msg.text.value if last_msg else None,
        "annotations": [a.text for a in messages.file_path_annotations],
        "saved": saved,
        "code": code,
    }))
"""


def test_azure_ai_projects_b10_quickstart(agents_server: AgentsServer, tmp_path: Path) -> None:
    if not (B10_DIR / "azure" / "ai" / "projects").is_dir():
        pytest.skip(f"azure-ai-projects 1.0.0b10 is not installed in {B10_DIR} (make install)")
    host = urlsplit(agents_server.url).netloc
    result = run_script(
        agents_server,
        tmp_path,
        QUICKSTART_B10.replace("PROMPT", repr(QUICKSTART_PROMPT)),
        pythonpath=B10_DIR,
        PROJECT_CONNECTION_STRING=f"{host};00000000-0000-0000-0000-000000000000;my-rg;my-project",
    )
    assert result["status"] == "completed", result
    assert result["last_text"] and "sandbox:/mnt/data/chart_data.csv" in result["last_text"]
    assert set(result["annotations"]) >= {
        "sandbox:/mnt/data/chart.png",
        "sandbox:/mnt/data/chart_data.csv",
    }
    assert result["code"] and "ax.bar" in result["code"][0]
    assert_chart_files(tmp_path, result["saved"])


STREAM_B10 = """
    import json
    import os

    from azure.ai.projects import AIProjectClient
    from azure.ai.projects.models import AgentEventHandler, CodeInterpreterTool
    from azure.identity import DefaultAzureCredential

    project_client = AIProjectClient.from_connection_string(
        credential=DefaultAzureCredential(), conn_str=os.environ["PROJECT_CONNECTION_STRING"]
    )

    def name(value):
        return str(value.value if hasattr(value, "value") else value)

    class Handler(AgentEventHandler):
        def __init__(self):
            super().__init__()
            self.kinds = []
            self.text = ""
            self.code = ""
            self.errors = []

        def on_message_delta(self, delta):
            self.kinds.append("message.delta")
            self.text += delta.text or ""

        def on_thread_message(self, message):
            self.kinds.append(f"message.{name(message.status)}")

        def on_thread_run(self, run):
            self.kinds.append(f"run.{name(run.status)}")

        def on_run_step(self, step):
            self.kinds.append(f"step.{name(step.type)}.{name(step.status)}")

        def on_run_step_delta(self, delta):
            for call in delta.delta.step_details.tool_calls:
                if call.code_interpreter and call.code_interpreter.input:
                    self.code += call.code_interpreter.input

        def on_error(self, data):
            self.errors.append(data)

        def on_done(self):
            self.kinds.append("done")

        def on_unhandled_event(self, event_type, event_data):
            self.kinds.append(f"unhandled {event_type}")

    with project_client:
        code_interpreter = CodeInterpreterTool()
        agent = project_client.agents.create_agent(
            model="gpt-4o-mini",
            name="my-agent",
            instructions="You are helpful agent",
            tools=code_interpreter.definitions,
            tool_resources=code_interpreter.resources,
        )
        thread = project_client.agents.create_thread()
        project_client.agents.create_message(thread_id=thread.id, role="user", content=PROMPT)
        handler = Handler()
        with project_client.agents.create_stream(
            thread_id=thread.id, agent_id=agent.id, event_handler=handler
        ) as stream:
            stream.until_done()

        # without a handler: the stream yields (event type, data, handler result)
        project_client.agents.create_message(thread_id=thread.id, role="user", content="again")
        with project_client.agents.create_stream(thread_id=thread.id, agent_id=agent.id) as stream:
            plain = [name(event_type) for event_type, _data, _ in stream]

        messages = project_client.agents.list_messages(thread_id=thread.id)
        project_client.agents.delete_agent(agent.id)

    print("RESULT " + json.dumps({
        "kinds": handler.kinds,
        "text": handler.text,
        "code": handler.code,
        "errors": handler.errors,
        "plain": plain,
        "roles": [name(m.role) for m in messages.data],
    }))
"""


def test_azure_ai_projects_b10_create_stream(agents_server: AgentsServer, tmp_path: Path) -> None:
    if not (B10_DIR / "azure" / "ai" / "projects").is_dir():
        pytest.skip(f"azure-ai-projects 1.0.0b10 is not installed in {B10_DIR} (make install)")
    host = urlsplit(agents_server.url).netloc
    result = run_script(
        agents_server,
        tmp_path,
        STREAM_B10.replace("PROMPT", repr(QUICKSTART_PROMPT)),
        pythonpath=B10_DIR,
        PROJECT_CONNECTION_STRING=f"{host};00000000-0000-0000-0000-000000000000;my-rg;my-project",
    )
    kinds = result["kinds"]
    assert kinds[0] == "run.queued" and kinds[-2:] == ["run.completed", "done"], kinds
    assert "step.tool_calls.completed" in kinds and "step.message_creation.completed" in kinds
    assert "message.delta" in kinds and "message.completed" in kinds, kinds
    assert not [k for k in kinds if k.startswith("unhandled")], kinds
    assert result["errors"] == []
    assert "ax.bar" in result["code"]
    assert "sandbox:/mnt/data/chart_data.csv" in result["text"]
    plain = result["plain"]
    assert plain[0] == "thread.run.created" and plain[-2:] == ["thread.run.completed", "done"]
    assert result["roles"] == ["assistant", "user", "assistant", "user"]


# --- azure-ai-agents ------------------------------------------------------------------------------

AZURE_AI_AGENTS = """
    import json
    import os
    from pathlib import Path

    from azure.ai.agents import AgentsClient
    from azure.ai.agents.models import AgentEventHandler, CodeInterpreterTool, MessageRole
    from azure.identity import DefaultAzureCredential

    agents_client = AgentsClient(
        endpoint=os.environ["PROJECT_ENDPOINT"],
        credential=DefaultAzureCredential(),
    )

    with agents_client:
        code_interpreter = CodeInterpreterTool()
        agent = agents_client.create_agent(
            model="gpt-4o-mini",
            name="my-agent",
            instructions="You are helpful agent",
            tools=code_interpreter.definitions,
            tool_resources=code_interpreter.resources,
        )
        thread = agents_client.threads.create()
        message = agents_client.messages.create(thread_id=thread.id, role="user", content=PROMPT)
        run = agents_client.runs.create_and_process(thread_id=thread.id, agent_id=agent.id)
        print(f"Run finished with status: {run.status}")

        saved = []
        roles = []
        for msg in agents_client.messages.list(thread_id=thread.id):
            roles.append(str(msg.role.value if hasattr(msg.role, "value") else msg.role))
            for image_content in msg.image_contents:
                file_id = image_content.image_file.file_id
                file_name = f"{file_id}_image_file.png"
                agents_client.files.save(file_id=file_id, file_name=file_name)
                saved.append(file_name)
            for annotation in msg.file_path_annotations:
                file_name = Path(annotation.text).name
                agents_client.files.save(file_id=annotation.file_path.file_id, file_name=file_name)
                saved.append(file_name)

        last = agents_client.messages.get_last_message_text_by_role(
            thread_id=thread.id, role=MessageRole.AGENT
        )
        steps = list(agents_client.run_steps.list(thread_id=thread.id, run_id=run.id))

        # a streamed run through the SDK's own event handler
        class Handler(AgentEventHandler):
            def __init__(self):
                super().__init__()
                self.kinds = []
                self.text = ""

            def on_message_delta(self, delta):
                self.kinds.append("message.delta")
                self.text += delta.text or ""

            def on_thread_message(self, message):
                self.kinds.append(f"message.{message.status.value}")

            def on_thread_run(self, run):
                self.kinds.append(f"run.{run.status.value}")

            def on_run_step(self, step):
                self.kinds.append(f"step.{step.type.value}.{step.status.value}")

            def on_run_step_delta(self, delta):
                for call in delta.delta.step_details.tool_calls:
                    if call.code_interpreter and call.code_interpreter.input:
                        self.kinds.append("step.delta.input")

            def on_done(self):
                self.kinds.append("done")

            def on_unhandled_event(self, event_type, event_data):
                self.kinds.append(f"unhandled {event_type}")

        stream_thread = agents_client.threads.create()
        agents_client.messages.create(thread_id=stream_thread.id, role="user", content=PROMPT)
        handler = Handler()
        with agents_client.runs.stream(
            thread_id=stream_thread.id, agent_id=agent.id, event_handler=handler
        ) as stream:
            stream.until_done()
        agents_client.delete_agent(agent.id)

    print("RESULT " + json.dumps({
        "status": str(run.status.value if hasattr(run.status, "value") else run.status),
        "last_error": str(run.last_error),
        "roles": roles,
        "last_text": last.text.value if last else None,
        "saved": saved,
        "step_types": sorted(str(s.type) for s in steps),
        "stream_kinds": handler.kinds,
        "stream_text": handler.text,
    }))
"""


def test_azure_ai_agents(agents_server: AgentsServer, tmp_path: Path) -> None:
    result = run_script(
        agents_server,
        tmp_path,
        AZURE_AI_AGENTS.replace("PROMPT", repr(QUICKSTART_PROMPT)),
        PROJECT_ENDPOINT=f"{agents_server.url}/api/projects/my-project",
    )
    assert result["status"] == "completed", result
    assert result["roles"] == ["assistant", "user"]  # newest first, and paging stopped
    assert result["last_text"] and "chart_data.csv" in result["last_text"]
    assert len(result["step_types"]) == 2
    assert_chart_files(tmp_path, result["saved"])
    kinds = result["stream_kinds"]
    assert kinds[0] == "run.queued" and kinds[-2:] == ["run.completed", "done"], kinds
    assert "step.tool_calls.completed" in kinds and "message.completed" in kinds, kinds
    assert "step.delta.input" in kinds, kinds
    assert not [k for k in kinds if k.startswith("unhandled")], kinds
    assert "sandbox:/mnt/data/chart_data.csv" in result["stream_text"]


# --- openai-python --------------------------------------------------------------------------------

OPENAI_FLOW = """
    import json
    import os
    from pathlib import Path

    from openai import AssistantEventHandler, AzureOpenAI, OpenAI

    url, key = os.environ["SERVER_URL"], os.environ["SERVER_KEY"]
    client = OpenAI(base_url=url + "/v1", api_key=key)

    Path("inventory.csv").write_bytes(UPLOAD)
    uploaded = client.files.create(file=open("inventory.csv", "rb"), purpose="assistants")
    assistant = client.beta.assistants.create(
        model="scripted-read_file",
        name="reader",
        instructions="Read the user's file.",
        tools=[{"type": "code_interpreter"}],
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="What is in my file?",
        attachments=[{"file_id": uploaded.id, "tools": [{"type": "code_interpreter"}]}],
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id)
    logs = [
        output.logs
        for step in steps.data if step.step_details.type == "tool_calls"
        for call in step.step_details.tool_calls
        for output in call.code_interpreter.outputs if output.type == "logs"
    ]
    messages = client.beta.threads.messages.list(thread_id=thread.id)
    answer = messages.data[0]
    retrieved = client.files.retrieve(uploaded.id)
    content = client.files.content(uploaded.id).content

    # a streamed run (chart: code, an image, annotations)
    class Handler(AssistantEventHandler):
        def __init__(self):
            super().__init__()
            self.events = []
            self.text = ""
            self.code = []
            self.outputs = []

        def on_event(self, event):
            self.events.append(event.event)

        def on_text_delta(self, delta, snapshot):
            self.text += delta.value or ""

        def on_tool_call_created(self, tool_call):
            self.code.append(tool_call.code_interpreter.input)

        def on_tool_call_delta(self, delta, snapshot):
            for output in (delta.code_interpreter and delta.code_interpreter.outputs) or []:
                self.outputs.append(output.type)

    chart_thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Chart the operating profit, please."}]
    )
    handler = Handler()
    with client.beta.threads.runs.stream(
        thread_id=chart_thread.id, assistant_id=assistant.id, model="scripted-chart",
        event_handler=handler,
    ) as stream:
        stream.until_done()
        final_run = stream.get_final_run()
        final_messages = stream.get_final_messages()
    streamed_steps = client.beta.threads.runs.steps.list(
        run_id=final_run.id, thread_id=chart_thread.id
    )

    # AzureOpenAI: the /openai prefix, api-key header, api-version query
    azure = AzureOpenAI(azure_endpoint=url, api_key=key, api_version="2024-05-01-preview")
    hello = azure.beta.assistants.create(
        model="scripted-hello", tools=[{"type": "code_interpreter"}]
    )
    azure_thread = azure.beta.threads.create()
    azure.beta.threads.messages.create(thread_id=azure_thread.id, role="user", content="Hi")
    azure_run = azure.beta.threads.runs.create_and_poll(
        thread_id=azure_thread.id, assistant_id=hello.id
    )
    azure_answer = azure.beta.threads.messages.list(thread_id=azure_thread.id).data[0]
    azure_content = azure.files.content(uploaded.id).content
    deleted = client.beta.assistants.delete(assistant.id)

    print("RESULT " + json.dumps({
        "status": run.status,
        "last_error": str(run.last_error),
        "usage": run.usage.total_tokens if run.usage else None,
        "logs": logs,
        "answer_role": answer.role,
        "answer": [p.text.value for p in answer.content if p.type == "text"],
        "uploaded": [retrieved.filename, retrieved.purpose, retrieved.bytes],
        "content": content.decode(),
        "events": handler.events,
        "streamed_text": handler.text,
        "streamed_code": handler.code,
        "streamed_outputs": handler.outputs,
        "final_status": final_run.status,
        "final_content": [p.type for m in final_messages for p in m.content],
        "streamed_step_types": sorted(s.type for s in streamed_steps.data),
        "azure_status": azure_run.status,
        "azure_answer": [p.text.value for p in azure_answer.content if p.type == "text"],
        "azure_content": azure_content.decode(),
        "deleted": [deleted.id == assistant.id, deleted.deleted],
    }))
"""


def test_openai_sdk(agents_server: AgentsServer, tmp_path: Path) -> None:
    result = run_script(
        agents_server,
        tmp_path,
        OPENAI_FLOW.replace("UPLOAD", repr(UPLOAD)),
        SERVER_URL=agents_server.url,
        SERVER_KEY=agents_server.api_key,
    )
    assert result["status"] == "completed", result
    assert result["usage"] and result["usage"] > 0
    # the code in the sandbox read the bytes that were uploaded
    assert any("widgets,17" in log and "gadgets,25" in log for log in result["logs"]), result
    assert result["answer_role"] == "assistant"
    assert "widgets,17" in result["answer"][0]
    assert result["uploaded"] == ["inventory.csv", "assistants", len(UPLOAD)]
    assert result["content"] == UPLOAD.decode()

    events = result["events"]
    assert events[:2] == ["thread.run.created", "thread.run.queued"]
    assert events[-1] == "thread.run.completed"
    for name in (
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.completed",
        "thread.message.created",
        "thread.message.delta",
        "thread.message.completed",
    ):
        assert name in events, (name, events)
    assert "sandbox:/mnt/data/chart_data.csv" in result["streamed_text"]
    [code] = result["streamed_code"]
    assert "ax.bar" in code
    assert "logs" in result["streamed_outputs"] and "image" in result["streamed_outputs"]
    assert result["final_status"] == "completed"
    assert "text" in result["final_content"]
    assert result["streamed_step_types"] == ["message_creation", "tool_calls"]

    assert result["azure_status"] == "completed"
    assert result["azure_answer"] == ["Hello from the scripted model."]
    assert result["azure_content"] == UPLOAD.decode()
    assert result["deleted"] == [True, True]


# --- failure modes (openai-python in process) ----------------------------------------------------


@pytest.fixture
def oai(agents_server: AgentsServer) -> Iterator[openai.OpenAI]:
    ctx = ssl.create_default_context(cafile=str(agents_server.ca_bundle))
    with (
        httpx2.Client(verify=ctx, timeout=60) as http,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        yield openai.OpenAI(
            base_url=agents_server.url + "/v1",
            api_key=agents_server.api_key,
            http_client=http,
            max_retries=0,
        )


def start(client: openai.OpenAI, model: str) -> tuple[str, str]:
    """A thread with one message and a run on an assistant of ``model``: (thread id, run id)."""
    assistant = client.beta.assistants.create(model=model, tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "go"}])
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "queued"
    return thread.id, run.id


def poll(client: openai.OpenAI, thread_id: str, run_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status not in ("queued", "in_progress", "cancelling"):
            return run
        assert time.monotonic() < deadline, f"run still {run.status} after {timeout} s"
        time.sleep(0.2)


def test_model_endpoint_error_fails_the_run(
    oai: openai.OpenAI, scripted_model: ScriptedModel
) -> None:
    thread_id, run_id = start(oai, "scripted-error")
    run = poll(oai, thread_id, run_id)
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    # names the endpoint and what it answered
    assert scripted_model.url.rstrip("/") in run.last_error.message, run.last_error
    assert "500" in run.last_error.message, run.last_error
    assert run.failed_at is not None and run.usage is not None


def test_model_that_never_answers_fails_after_the_timeout(
    oai: openai.OpenAI, scripted_model: ScriptedModel
) -> None:
    thread_id, run_id = start(oai, "scripted-hang")
    run = poll(oai, thread_id, run_id, timeout=40)  # model_timeout_seconds = 5
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "did not answer" in run.last_error.message, run.last_error


def test_model_that_never_stops_hits_max_steps(oai: openai.OpenAI) -> None:
    thread_id, run_id = start(oai, "scripted-loop")
    run = poll(oai, thread_id, run_id)
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "max_steps_exceeded"
    steps = oai.beta.threads.runs.steps.list(run_id, thread_id=thread_id)
    assert [s.type for s in steps.data].count("tool_calls") == 4  # max_steps = 4


def test_cancel_interrupts_a_slow_cell(oai: openai.OpenAI) -> None:
    thread_id, run_id = start(oai, "scripted-slow")
    deadline = time.monotonic() + 30
    while not oai.beta.threads.runs.steps.list(run_id, thread_id=thread_id).data:
        assert time.monotonic() < deadline, "the code step never started"
        time.sleep(0.2)
    # the thread is busy meanwhile: 409, and not retried
    with pytest.raises(openai.ConflictError):
        oai.beta.threads.messages.create(thread_id, role="user", content="me too")
    asked = time.monotonic()
    cancelling = oai.beta.threads.runs.cancel(run_id, thread_id=thread_id)
    assert cancelling.status in ("cancelling", "cancelled")
    run = poll(oai, thread_id, run_id, timeout=20)
    assert run.status == "cancelled"
    assert time.monotonic() - asked < 15  # not the 60 s the cell sleeps
    assert run.cancelled_at is not None


def test_unknown_assistant_is_404(oai: openai.OpenAI) -> None:
    thread = oai.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        oai.beta.threads.runs.create(thread_id=thread.id, assistant_id="asst_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        oai.beta.assistants.retrieve("asst_doesnotexist")


def test_empty_message_page_has_null_cursors(agents_server: AgentsServer) -> None:
    with httpx.Client(
        base_url=agents_server.url,
        headers=agents_server.auth,
        verify=ssl.create_default_context(cafile=str(agents_server.ca_bundle)),
    ) as http:
        r = http.post("/api/projects/p/threads?api-version=v1", json={})
        assert r.status_code == 200, r.text
        thread_id = r.json()["id"]
        r = http.get(f"/api/projects/p/threads/{thread_id}/messages?api-version=v1")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }
        r = http.post(
            f"/api/projects/p/threads/{thread_id}/runs/run_x/submit_tool_outputs",
            json={"tool_outputs": []},
        )
        assert r.status_code == 404, r.text


def test_streamed_text_and_text_before_code(oai: openai.OpenAI) -> None:
    """openai-python's stream helper sees the answer text in pieces as the model writes it,
    and a sentence the model wrote before its code as a message of its own."""
    assistant = oai.beta.assistants.create(
        model="scripted-preamble", tools=[{"type": "code_interpreter"}]
    )
    thread = oai.beta.threads.create(messages=[{"role": "user", "content": "6 times 7?"}])
    pieces: dict[str, list[str]] = {}

    class Handler(openai.AssistantEventHandler):
        def on_text_delta(self, delta: Any, snapshot: Any) -> None:
            pieces.setdefault(self.current_message_snapshot.id, []).append(delta.value)

    with oai.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Handler()
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    assert final.status == "completed"
    assert [m.content[-1].text.value for m in messages] == [PREAMBLE_TEXT, PREAMBLE_ANSWER]  # type: ignore[union-attr]
    assert {mid: "".join(p) for mid, p in pieces.items()} == {
        messages[0].id: PREAMBLE_TEXT,
        messages[1].id: PREAMBLE_ANSWER,
    }
    assert sum(len(p) for p in pieces.values()) >= 3
    steps = oai.beta.threads.runs.steps.list(final.id, thread_id=thread.id, order="asc")
    assert [s.type for s in steps.data] == ["message_creation", "tool_calls", "message_creation"]

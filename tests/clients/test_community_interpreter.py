"""``azure-dynamic-sessions-code-interpreter`` 1.0.0 (a community copy of LangChain's tool, with
retries and function-calling helpers), unmodified, against a real server: code at
2024-02-02-preview with state, an image, an error, files up, listed and down, and its
function-calling round trip. It builds ``DefaultAzureCredential`` itself; the test replaces its
``access_token_provider`` attribute, as a user with a key would."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace
from typing import Any

import pytest
import requests

from sessionpool.server.testing import ServerProcess
from tests.clients.conftest import CLIENT_WARNINGS, PAYLOAD, PLOT, WRONG_KEY

pytestmark = [pytest.mark.jail, *CLIENT_WARNINGS]


def interpreter(server: ServerProcess, session_id: str, key: str | None = None) -> Any:
    from azure_dynamic_sessions_code_interpreter import CodeInterpreterTool

    tool = CodeInterpreterTool(
        pool_management_endpoint=server.endpoint(), session_id=session_id, max_retries=0
    )
    token = key or server.api_key
    tool.access_token_provider = lambda: token
    return tool


def test_code_state_image_and_error(server: ServerProcess, session_id: str) -> None:
    tool = interpreter(server, session_id)
    assert tool.execute("```python\nrows = [3, 4, 5]\n```")["status"] == "Success"
    props = tool.execute("print(len(rows))\nsum(rows)")
    assert props["status"] == "Success"
    assert (props["stdout"], props["result"]) == ("3\n", "12")
    image = tool.execute(PLOT)["result"]
    assert image["type"] == "image" and image["format"] == "png"
    assert base64.b64decode(image["base64_data"]).startswith(b"\x89PNG")
    # _run drops the base64 from what a model would read
    assert json.loads(tool._run(PLOT))["result"] == {"type": "image", "format": "png"}
    failed = tool.execute("rows[10]")
    assert failed["status"] == "Failure" and "IndexError" in failed["stderr"]


def test_files_round_trip(server: ServerProcess, session_id: str, tmp_path: Any) -> None:
    tool = interpreter(server, session_id)
    meta = tool.upload_file(data=io.BytesIO(PAYLOAD), remote_file_path="community.bin")
    assert (meta.filename, meta.size_in_bytes) == ("community.bin", len(PAYLOAD))
    local = tmp_path / "local.csv"
    local.write_text("a,b\n1,2\n")
    meta2 = tool.upload_file(local_file_path=str(local))
    assert (meta2.filename, meta2.full_path) == ("local.csv", "/mnt/data/local.csv")
    listed = {m.filename: m.size_in_bytes for m in tool.list_files()}
    assert listed == {"community.bin": len(PAYLOAD), "local.csv": 8}
    assert tool.download_file(remote_file_path="community.bin").read() == PAYLOAD
    target = tmp_path / "back.csv"
    tool.download_file(remote_file_path="local.csv", local_file_path=str(target))
    assert target.read_text() == "a,b\n1,2\n"
    seen = tool.execute("open('/mnt/data/local.csv').read().count(',')")
    assert seen["result"] == "2"


def test_function_calling_round_trip(server: ServerProcess, session_id: str) -> None:
    """What its helpers do with a model's tool call, for both OpenAI APIs."""
    tool = interpreter(server, session_id)
    chat = tool.get_tool_definition()
    assert chat["function"]["name"] == "code_interpreter"
    call = SimpleNamespace(
        id="call_1", function=SimpleNamespace(arguments=json.dumps({"python_code": "2**10"}))
    )
    code = tool.get_tool_call_arguments(call)
    message = tool.execute_tool_call(call, code)
    assert message["role"] == "tool" and message["tool_call_id"] == "call_1"
    assert json.loads(message["content"]) == {"result": "1024", "stdout": "", "stderr": ""}
    responses_call = SimpleNamespace(
        call_id="fc_1", arguments=json.dumps({"python_code": "print('ok')"})
    )
    code = tool.get_tool_call_arguments(responses_call, is_chat_completions_api=False)
    out = tool.execute_tool_call(responses_call, code, is_chat_completions_api=False)
    assert out["type"] == "function_call_output" and out["call_id"] == "fc_1"
    assert json.loads(out["output"])["stdout"] == "ok\n"


def test_wrong_key_is_refused(server: ServerProcess, session_id: str) -> None:
    tool = interpreter(server, session_id, key=WRONG_KEY)
    with pytest.raises(requests.HTTPError) as info:
        tool.execute("1")
    assert info.value.response is not None and info.value.response.status_code == 401

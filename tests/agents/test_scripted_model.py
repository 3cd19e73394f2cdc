"""The scripted model answers like an OpenAI endpoint, and the throwaway PostgreSQL starts.

The agents tests rely on both; a failure here points at the harness, not at the service.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import openai
import pytest

from tests.agents.postgres import PostgresServer, unavailable_reason
from tests.agents.scripted_model import (
    CHART_ANSWER,
    CHART_CODE,
    HELLO_ANSWER,
    LOOP_CODE,
    READ_FILE_CODE,
    READ_FILE_PREFIX,
    SLOW_CODE,
    ScriptedModel,
)

USER = {"role": "user", "content": "Make a bar chart of operating profit."}


def post(model: ScriptedModel, body: dict[str, Any], timeout: float = 10) -> httpx.Response:
    return httpx.post(model.url + "/chat/completions", json=body, timeout=timeout)


def after_tool(content: str) -> list[dict[str, Any]]:
    """A conversation in which the python tool has run once and printed ``content``."""
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "python", "arguments": json.dumps({"code": "print(1)"})},
    }
    return [
        USER,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": content},
    ]


@pytest.mark.parametrize(
    ("script", "code"),
    [
        ("chart", CHART_CODE),
        ("read_file", READ_FILE_CODE),
        ("loop", LOOP_CODE),
        ("slow", SLOW_CODE),
    ],
)
def test_first_reply_is_a_python_call(
    scripted_model: ScriptedModel, script: str, code: str
) -> None:
    response = post(scripted_model, {"model": f"scripted-{script}", "messages": [USER]})
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == f"scripted-{script}"
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "python"
    assert json.loads(call["function"]["arguments"]) == {"code": code}
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


def test_openai_sdk_reads_tool_calls_and_answers(scripted_model: ScriptedModel) -> None:
    client = openai.OpenAI(base_url=scripted_model.url, api_key="unused", max_retries=0)
    with client:
        first = client.chat.completions.create(model="scripted-chart", messages=[USER])  # type: ignore[list-item]
        calls = first.choices[0].message.tool_calls
        assert calls and calls[0].type == "function"
        assert "/mnt/data/chart.png" in json.loads(calls[0].function.arguments)["code"]
        final = client.chat.completions.create(
            model="scripted-chart",
            messages=after_tool("saved chart\n"),  # type: ignore[arg-type]
        )
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content == CHART_ANSWER
        hello = client.chat.completions.create(model="scripted-hello", messages=[USER])  # type: ignore[list-item]
        assert hello.choices[0].message.content == HELLO_ANSWER
        assert hello.choices[0].message.tool_calls is None
        names = [m.id for m in client.models.list()]
        assert "scripted-chart" in names and "scripted-hang" in names


def test_openai_sdk_streams_the_same_reply(scripted_model: ScriptedModel) -> None:
    client = openai.OpenAI(base_url=scripted_model.url, api_key="unused", max_retries=0)
    with client:
        stream = client.chat.completions.create(
            model="scripted-chart",
            messages=[USER],  # type: ignore[list-item]
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        for choice in chunk.choices
        for call in choice.delta.tool_calls or []
        if call.function is not None
    )
    assert json.loads(arguments) == {"code": CHART_CODE}
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None


def test_read_file_answers_with_the_tool_output(scripted_model: ScriptedModel) -> None:
    response = post(
        scripted_model, {"model": "scripted-read_file", "messages": after_tool("a,b\n")}
    )
    message = response.json()["choices"][0]["message"]
    assert message["content"] == READ_FILE_PREFIX + "a,b\n"


def test_default_script_when_the_model_is_unknown(scripted_model: ScriptedModel) -> None:
    response = post(scripted_model, {"model": "gpt-4o", "messages": after_tool("saved chart")})
    assert response.json()["choices"][0]["message"]["content"] == CHART_ANSWER


def test_error_script_is_a_server_error(scripted_model: ScriptedModel) -> None:
    response = post(scripted_model, {"model": "scripted-error", "messages": [USER]})
    assert response.status_code == 500
    assert response.json() == {"error": {"message": "scripted failure", "type": "server_error"}}
    client = openai.OpenAI(base_url=scripted_model.url, api_key="unused", max_retries=0)
    with client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="scripted-error", messages=[USER])  # type: ignore[list-item]


def test_bad_body_is_rejected(scripted_model: ScriptedModel) -> None:
    url = scripted_model.url + "/chat/completions"
    assert httpx.post(url, content=b"{not json").status_code == 400
    assert httpx.post(url, json={"model": "scripted-hello"}).status_code == 400


def test_requests_are_recorded(scripted_model: ScriptedModel) -> None:
    marker = {"role": "user", "content": "record me"}
    post(scripted_model, {"model": "scripted-hello", "messages": [marker]})
    assert any(body["messages"] == [marker] for body in scripted_model.requests_for("hello"))


def test_conversations_run_concurrently(scripted_model: ScriptedModel) -> None:
    """A hanging call holds up nobody; interleaved conversations each get their own reply."""
    hung: list[BaseException] = []

    def hang() -> None:
        try:
            post(scripted_model, {"model": "scripted-hang", "messages": [USER]}, timeout=1.5)
        except httpx.TimeoutException as e:
            hung.append(e)

    hanging = threading.Thread(target=hang)
    hanging.start()
    results: dict[int, str | None] = {}

    def converse(i: int) -> None:
        messages = after_tool("saved chart") if i % 2 else [USER]
        body = post(scripted_model, {"model": "scripted-chart", "messages": messages}).json()
        results[i] = body["choices"][0]["finish_reason"]

    workers = [threading.Thread(target=converse, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert results == {i: ("stop" if i % 2 else "tool_calls") for i in range(8)}
    hanging.join(10)
    assert hung, "the hang script answered"


def test_stop_does_not_wait_for_a_hanging_call() -> None:
    failures: list[BaseException] = []

    def call(model: ScriptedModel) -> None:
        try:
            post(model, {"messages": [USER]}, timeout=30)
        except httpx.HTTPError as e:
            failures.append(e)

    with ScriptedModel(default_script="hang") as model:
        thread = threading.Thread(target=call, args=(model,))
        thread.start()
        while not model.requests:
            threading.Event().wait(0.01)
    thread.join(10)
    assert not thread.is_alive()
    assert failures, "a stopped model answered"


def test_postgres_answers_select_1() -> None:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    import psycopg

    with PostgresServer() as pg, psycopg.connect(pg.url) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.info.dbname == "sessionpool"
        data_dir = pg.data_dir
    assert data_dir is not None and not data_dir.exists()

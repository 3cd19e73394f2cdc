"""Responses, Conversations and Containers request bodies -> what the agents service takes."""

from __future__ import annotations

from typing import Any

import pytest

from sessionpool.agents.types import (
    ImagePart,
    TextPart,
)
from sessionpool.errors import InvalidArgument
from sessionpool.faces.http import parse_model
from sessionpool.faces.responses import parse

# --- input --------------------------------------------------------------------------------------


def test_parse_input_string_and_items() -> None:
    assert parse.parse_input("hi").messages == [
        {"role": "user", "content": "hi", "attachments": []}
    ]
    parsed = parse.parse_input(
        [
            {"role": "system", "content": "be terse"},
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "x"}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "read this"},
                    {"type": "input_file", "file_id": "file_1"},
                    {"type": "input_image", "file_id": "file_2"},
                ],
            },
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "item_reference", "id": "msg_x"},
        ]
    )
    assert parsed.instructions == ["be terse", "x"]
    user, assistant = parsed.messages
    assert user["role"] == "user"
    assert user["attachments"] == ["file_1"]
    assert user["content"] == [TextPart(text="read this"), ImagePart(file_id="file_2")]
    assert assistant == {"role": "assistant", "content": "ok", "attachments": []}


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ([{"type": "function_call_output", "call_id": "c", "output": "x"}], "input[0]"),
        ([{"role": "user", "content": [{"type": "input_audio"}]}], "input[0].content[0]"),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], None),
        ([{"role": "tool", "content": "x"}], "input[0].role"),
        ([3], "input[0]"),
    ],
)
def test_parse_input_refuses_what_cannot_run(value: list[Any], param: str | None) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse.parse_input(value)
    if param is not None:
        assert info.value.param == param


def test_parse_tools() -> None:
    auto = parse.parse_tools(
        [{"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["f1"]}}]
    )
    assert auto.tools == [{"type": "code_interpreter"}]
    assert auto.auto and auto.file_ids == ["f1"] and auto.container_id is None
    explicit = parse.parse_tools([{"type": "code_interpreter", "container": "cntr_9"}])
    assert explicit.container_id == "cntr_9" and not explicit.auto
    assert parse.parse_tools(None).tools == []
    with pytest.raises(InvalidArgument) as info:
        parse.parse_tools([{"type": "web_search"}])
    assert info.value.param == "tools[0]"
    with pytest.raises(InvalidArgument):
        parse.parse_tools([{"type": "code_interpreter", "container": 5}])


def test_parse_body() -> None:
    req = parse_model(
        b'{"model": "m", "input": "x", "conversation": {"id": "conv_2"}, "whatever": 1}',
        parse.ResponseCreate,
    )
    assert req.conversation_id == "conv_2"
    assert parse_model(b"", parse.ResponseCreate).model is None
    with pytest.raises(InvalidArgument):
        parse_model(b"{not json", parse.ResponseCreate)
    with pytest.raises(InvalidArgument):
        parse_model(b"[1]", parse.ResponseCreate)
    with pytest.raises(InvalidArgument) as info:
        parse_model(b'{"background": "maybe"}', parse.ResponseCreate)
    assert info.value.param == "background"
    ref = parse_model(b'{"agent_reference": {"name": "A", "version": 2}}', parse.ResponseCreate)
    assert ref.agent_name == ("A", "2")
    old = parse_model(b'{"agent": {"name": "A"}}', parse.ResponseCreate)
    assert old.agent_name == ("A", None)


# --- containers' memory_limit --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, None), ("1g", 1 << 30), ("4G", 4 << 30), ("64g", 64 << 30), ("512m", 512 << 20)],
)
def test_memory_limit_sizes(raw: str | None, expected: int | None) -> None:
    assert parse.parse_memory_limit(raw) == expected


@pytest.mark.parametrize("raw", ["lots", "0g", "1.5g", "-1g", 4, "", "1 gigabyte"])
def test_memory_limit_refused(raw: object) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse.parse_memory_limit(raw)
    assert exc.value.param == "memory_limit"


def test_auto_container_memory_limit_is_parsed() -> None:
    tool = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "1g"}}
    spec = parse.parse_tools([tool])
    assert spec.memory_bytes == 1 << 30 and spec.memory_limit == "1g"
    with pytest.raises(InvalidArgument) as exc:
        parse.parse_tools([{**tool, "container": {"type": "auto", "memory_limit": "big"}}])
    assert exc.value.param == "tools[0].container.memory_limit"


# --- the hosted shell tool ----------------------------------------------------------------------


def test_shell_tool_shares_the_code_interpreters_container() -> None:
    spec = parse.parse_tools(
        [
            {"type": "code_interpreter", "container": {"type": "auto", "file_ids": ["file-a"]}},
            {"type": "shell", "environment": {"type": "container_auto", "file_ids": ["file-b"]}},
        ]
    )
    assert spec.tools == [{"type": "code_interpreter"}, {"type": "shell"}]
    assert spec.auto and spec.file_ids == ["file-a", "file-b"]
    assert parse.parse_tools([{"type": "shell"}]).auto
    ref = {"type": "container_reference", "container_id": "cntr_x"}
    spec = parse.parse_tools(
        [{"type": "shell", "environment": ref}, {"type": "code_interpreter", "container": "cntr_x"}]
    )
    assert spec.container_id == "cntr_x" and not spec.auto


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ([{"type": "shell", "environment": {"type": "local"}}], "tools[0].environment.type"),
        ([{"type": "shell", "environment": {"type": "vm"}}], "tools[0].environment.type"),
        (
            [{"type": "shell", "environment": {"type": "container_reference"}}],
            "tools[0].environment",
        ),
        ([{"type": "shell"}, {"type": "shell"}], "tools[1]"),
        (
            [{"type": "code_interpreter", "container": "cntr_a"}, {"type": "shell"}],
            "tools[1].environment",
        ),
    ],
)
def test_shell_tool_refusals(tools: list[Any], param: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        parse.parse_tools(tools)
    assert exc.value.param == param

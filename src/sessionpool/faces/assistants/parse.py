"""Assistants v2 request JSON -> plain values for the agents service.

Lenient where the clients differ (unknown fields are ignored, ``content`` may be a string or a
list of parts), strict where a wrong type would silently change meaning: that is a 400 naming
the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sessionpool.agents.types import ImagePart, Part, TextPart
from sessionpool.errors import InvalidArgument
from sessionpool.faces.http import JSON


def opt_str(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidArgument(f"{key!r} must be a string", key)


def opt_number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{key!r} must be a number", key)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise InvalidArgument(f"{key!r} must be a finite number", key)
    return number


def opt_bool(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise InvalidArgument(f"{key!r} must be true or false", key)


def opt_metadata(body: Mapping[str, Any], key: str = "metadata") -> dict[str, str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise InvalidArgument(f"{key!r} must be an object of string keys and string values", key)
    return dict(value)


def opt_tools(body: Mapping[str, Any], key: str = "tools") -> list[JSON] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and isinstance(t.get("type"), str) for t in value
    ):
        raise InvalidArgument(f"{key!r} must be a list of objects with a 'type'", key)
    return [dict(t) for t in value]


def opt_object(body: Mapping[str, Any], key: str) -> JSON | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidArgument(f"{key!r} must be an object", key)
    return dict(value)


def _id_list(value: Any, param: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{param!r} must be a list of file ids", param)
    return list(value)


def code_interpreter_file_ids(
    resources: Mapping[str, Any] | None, param: str = "tool_resources"
) -> list[str] | None:
    """``tool_resources.code_interpreter.file_ids``; None when not given."""
    if resources is None:
        return None
    ci = resources.get("code_interpreter")
    if ci is None:
        return None
    if not isinstance(ci, dict):
        raise InvalidArgument(f"'{param}.code_interpreter' must be an object", param)
    ids = ci.get("file_ids")
    if ids is None:
        return None
    return _id_list(ids, f"{param}.code_interpreter.file_ids")


def other_tool_resources(resources: Mapping[str, Any] | None) -> JSON:
    """Resources other than code_interpreter (file_search ...), kept verbatim to echo back."""
    if resources is None:
        return {}
    return {k: v for k, v in resources.items() if k != "code_interpreter"}


def message_content(value: Any, param: str = "content") -> str | list[Part]:
    """A string, or a list of ``{"type":"text","text":"..."}`` / ``{"type":"image_file",...}``."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        raise InvalidArgument(f"{param!r} must be a string or a non-empty list of parts", param)
    parts: list[Part] = []
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if not isinstance(item, dict):
            raise InvalidArgument(f"{where!r} must be an object", param)
        kind = item.get("type")
        if kind == "text":
            text = item.get("text")
            if isinstance(text, dict):  # the output shape, {"value": ...}, sent back verbatim
                text = text.get("value")
            if not isinstance(text, str):
                raise InvalidArgument(f"'{where}.text' must be a string", param)
            parts.append(TextPart(text=text))
        elif kind == "image_file":
            image = item.get("image_file")
            file_id = image.get("file_id") if isinstance(image, dict) else None
            if not isinstance(file_id, str):
                raise InvalidArgument(f"'{where}.image_file.file_id' must be a string", param)
            parts.append(ImagePart(file_id=file_id))
        else:
            raise InvalidArgument(
                f"{where!r}: content parts of type {kind!r} are not supported here; "
                "send 'text' (or 'image_file') parts",
                param,
            )
    return parts


def attachments(value: Any, param: str = "attachments") -> list[str]:
    """``[{"file_id", "tools"}]`` -> the file ids (all attachments go to the code interpreter)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{param!r} must be a list", param)
    ids: list[str] = []
    for item in value:
        file_id = item.get("file_id") if isinstance(item, dict) else None
        if not isinstance(file_id, str):
            raise InvalidArgument(f"every item of {param!r} needs a string 'file_id'", param)
        ids.append(file_id)
    return ids


def role(value: Any, param: str = "role") -> str:
    if value not in ("user", "assistant"):
        raise InvalidArgument(f"{param!r} must be 'user' or 'assistant'", param)
    assert isinstance(value, str)
    return value


def new_message(item: Any, param: str = "messages") -> JSON:
    """One message of ``thread.messages`` / ``additional_messages`` in the service's shape."""
    if not isinstance(item, dict):
        raise InvalidArgument(f"every item of {param!r} must be an object", param)
    if "content" not in item:
        raise InvalidArgument(f"every item of {param!r} needs 'content'", param)
    return {
        "role": role(item.get("role", "user"), f"{param}.role"),
        "content": message_content(item.get("content"), f"{param}.content"),
        "attachments": attachments(item.get("attachments"), f"{param}.attachments"),
        "metadata": opt_metadata(item) or {},
    }


def new_messages(body: Mapping[str, Any], key: str) -> list[JSON]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{key!r} must be a list of messages", key)
    return [new_message(item, key) for item in value]

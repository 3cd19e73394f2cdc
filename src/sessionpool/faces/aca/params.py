"""Reading a dynamic-sessions request: API version, session identifier, JSON body, code (file
names are taken with ``sessionpool.paths``).

Clients build their URLs by hand and disagree on encoding: some send the identifier raw, others
percent-encode it, and query parameters come in any order. Everything here is lenient about form
and strict about meaning.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import enum
import re
from typing import TypeVar
from urllib.parse import unquote

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from sessionpool.faces.http import HttpError, describe_validation, read_body

M = TypeVar("M", bound=BaseModel)

#: largest JSON request body (an execute call carries code, not data: upload data as files)
MAX_JSON_BYTES = 16 * 1024 * 1024

#: the oldest version of the "executions" family; anything older speaks the "properties" family
EXECUTIONS_SINCE = "2024-10-02"
PROPERTIES_VERSION = "2024-02-02-preview"
KNOWN_VERSIONS = (
    PROPERTIES_VERSION,
    "2024-10-02-preview",
    "2025-02-02-preview",
    "2025-10-02-preview",
)
#: a version is a date, ``-preview`` optional; one newer than the newest known gets the newest
#: behaviour (Azure's clients move to new versions before servers know them)
_VERSION = re.compile(r"(\d{4}-\d{2}-\d{2})(-preview)?", re.IGNORECASE)

#: the union of every published identifier rule (1-256 characters; the 2025-10-02-preview
#: character set, which contains the older ones), so one session can be named under every version
_IDENTIFIER = re.compile(r"""[A-Za-z0-9_|{}\[\]:";'<>?/.,@#$%^&*()\-+=!~`]{1,256}""")


class Family(enum.Enum):
    #: 2024-02-02-preview: ``code/execute``, ``files/upload``, the ``properties`` envelope
    PROPERTIES = "properties"
    #: 2024-10-02-preview and later: ``executions``, flat resources, ``?path=``
    EXECUTIONS = "executions"


def query(request: Request) -> dict[str, str]:
    """Query parameters, first occurrence wins; ``+`` stays ``+`` (no client encodes a space so)."""
    cached = request.scope.get("sessionpool.query")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    params: dict[str, str] = {}
    raw: bytes = request.scope.get("query_string", b"")
    for item in raw.decode("latin-1").split("&"):
        if not item:
            continue
        key, _, value = item.partition("=")
        if "%" in item:  # most requests have nothing to unquote: no call for them
            key, value = unquote(key), unquote(value)
        params.setdefault(key, value)
    request.scope["sessionpool.query"] = params
    return params


def api_version(request: Request) -> str | None:
    """The request's ``api-version`` as its date (``YYYY-MM-DD``), None when absent.

    Refused with a 400 naming the versions served when it is not a real date with an optional
    ``-preview`` (``latest``, ``2025-13-01``, ``2025-02-02-beta``, an empty value)."""
    version = query(request).get("api-version")
    if version is None:
        return None
    m = _VERSION.fullmatch(version.strip())
    try:
        if m is None:
            raise ValueError(version)
        datetime.date.fromisoformat(m.group(1))
    except ValueError:
        raise HttpError(
            400,
            "UnsupportedApiVersion",
            f"api-version {version!r} is not a version: a date, YYYY-MM-DD or "
            f"YYYY-MM-DD-preview; served: {', '.join(KNOWN_VERSIONS)} (and any newer date, "
            f"as the newest)",
        ) from None
    return m.group(1)


def family(request: Request) -> Family:
    """The family of the request's version (validating it): absent is 2024-02-02-preview."""
    date = api_version(request)
    if date is None:
        return Family.PROPERTIES
    return Family.EXECUTIONS if date >= EXECUTIONS_SINCE else Family.PROPERTIES


def version_at_least(request: Request, date: str) -> bool:
    return (api_version(request) or PROPERTIES_VERSION[:10]) >= date


def identifier(request: Request) -> str:
    value = query(request).get("identifier")
    if not value:
        raise HttpError(
            400,
            "MissingIdentifier",
            "the 'identifier' query parameter is required: it names the session",
        )
    if not _IDENTIFIER.fullmatch(value):
        raise HttpError(
            400,
            "InvalidIdentifier",
            "an identifier is 1-256 characters of letters, digits and "
            "_ - | { } [ ] : \" ; ' < > ? / . , @ # $ % ^ & * ( ) + = ! ~ `",
        )
    return value


async def read_json(request: Request, model: type[M]) -> M:
    """The body as ``model``, refusing more than MAX_JSON_BYTES without reading it all."""
    body = await read_body(request, MAX_JSON_BYTES)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = describe_validation(exc.errors())
        raise HttpError(400, "InvalidRequestBody", f"invalid request body: {problems}") from None


def decode_code(input_type: str, code: str) -> str:
    kind = input_type.strip().lower()
    if kind in ("inline", "inlinetext", ""):
        return code
    if kind == "inlinebase64":
        try:
            return base64.b64decode(code, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise HttpError(400, "InvalidCode", f"code is not valid base64 UTF-8: {exc}") from None
    raise HttpError(
        400,
        "UnsupportedCodeInputType",
        f"codeInputType {input_type!r} is not supported; use 'inline' or 'inlineBase64'",
    )

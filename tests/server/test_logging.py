"""Request ids and structured logs: the id a request gets, and the log lines that carry it.

In process: what ``X-Request-Id`` answers, and that lines logged below the server (the session
layer's timeout warning, the agents loop's run that started in the request) carry the id of the
request that caused them. Then a real ``serve --log-format json --audit-log FILE``: every log
line is a JSON object, and the session's warning, the access line and the audit record of one
request share its id.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from uvicorn.logging import AccessFormatter, DefaultFormatter

from sessionpool.agents.config import AgentsConfig
from sessionpool.config import PoolConfig
from sessionpool.server.observe import (
    AUDIT_LOGGER,
    LINE_BATCH_SECONDS,
    AccessTextFormatter,
    BatchedStreamHandler,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
)
from sessionpool.server.testing import ServerProcess
from tests.agents.scripted_model import ScriptedModel
from tests.fakes import fake_server

API = "api-version=2024-02-02-preview"
RUN = "/pools/default/code/execute?identifier={}&" + API
SPIN = "while True:\n    pass"


def body(code: str, timeout: float | None = None) -> dict[str, object]:
    """A cell; only the one meant to time out carries a short deadline, so a slow machine
    cannot time out a quick one (the pool's own limit is generous)."""
    props: dict[str, object] = {"codeInputType": "inline", "executionType": "synchronous"}
    props["code"] = code
    if timeout is not None:
        props["timeoutInSeconds"] = timeout
    return {"properties": props}


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Captured records, stamped with the request id as the server's handlers stamp them."""
    ids = RequestIdFilter()
    caplog.handler.addFilter(ids)
    caplog.set_level(logging.INFO)
    yield caplog
    caplog.handler.removeFilter(ids)


@pytest.fixture
async def http(tmp_path: Path, scripted_model: ScriptedModel) -> AsyncIterator[httpx.AsyncClient]:
    pool = PoolConfig(ready_sessions=1, execution_timeout_seconds=30, interrupt_grace_seconds=1)
    agents = AgentsConfig(
        model_base_url=scripted_model.url, model_timeout_seconds=5, data_dir=tmp_path / "fake-data"
    )
    async with fake_server(tmp_path, pool, agents=agents) as client:
        yield client


async def test_a_request_id_is_kept_if_sane_and_made_if_not(http: httpx.AsyncClient) -> None:
    given = await http.get("/healthz", headers={"x-request-id": "trace-7f3a:42"})
    assert given.headers["x-request-id"] == "trace-7f3a:42"
    made = (await http.get("/healthz")).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", made)
    assert (await http.get("/healthz")).headers["x-request-id"] != made
    for insane in ("two words", "x" * 200, "-leading", 'quote"', "semi;colon"):
        answered = (await http.get("/healthz", headers={"x-request-id": insane})).headers
        assert re.fullmatch(r"[0-9a-f]{16}", answered["x-request-id"]), insane
    # refused requests have one too (the id is given before authentication)
    refused = await http.get("/metrics", headers={"authorization": "Bearer nope"})
    assert refused.status_code == 401 and refused.headers["x-request-id"]


async def test_the_session_layers_lines_carry_the_request_id(
    http: httpx.AsyncClient, records: pytest.LogCaptureFixture
) -> None:
    r = await http.post(
        RUN.format("slow"), json=body(SPIN, 0.3), headers={"x-request-id": "req-slow-1"}
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-slow-1"
    await http.post(RUN.format("quick"), json=body("1"), headers={"x-request-id": "req-quick-2"})
    timeout = [
        r for r in records.records if r.name == "sessionpool.session" and "timed out" in r.message
    ]
    assert len(timeout) == 1
    assert timeout[0].levelno == logging.WARNING
    assert timeout[0].request_id == "req-slow-1"
    # the next request's lines are its own, and nothing stays behind between requests
    audit = {r.identifier: r.request_id for r in records.records if r.name == "sessionpool.audit"}
    assert audit == {"slow": "req-slow-1", "quick": "req-quick-2"}
    records.clear()
    logging.getLogger("sessionpool.test").info("between requests")
    assert records.records[0].request_id == ""


async def test_tasks_a_request_started_log_with_its_id(
    http: httpx.AsyncClient, records: pytest.LogCaptureFixture
) -> None:
    # the run executes in a task of its own; it fails (the model answers 500) and says so
    r = await http.post(
        "/v1/responses",
        json={"model": "scripted-error", "input": "hi"},
        headers={"x-request-id": "req-run-3"},
    )
    assert r.status_code == 200 and r.json()["status"] == "failed"
    failed = [
        r for r in records.records if r.name == "sessionpool.agents" and "failed" in r.message
    ]
    assert failed and all(r.request_id == "req-run-3" for r in failed)


def record(name: str, message: str, args: Any = (), **extra: Any) -> logging.LogRecord:
    rec = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    rec.__dict__.update(extra)
    return rec


def test_text_lines_end_with_the_request_id() -> None:
    text = TextFormatter("%(levelprefix)s %(message)s", use_colors=False)
    assert text.format(record("x", "hello", request_id="abc")) == "INFO:     hello [request abc]"
    assert text.format(record("x", "hello", request_id="")) == "INFO:     hello"
    access = AccessTextFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    )
    line = access.format(
        record(
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "GET", "/healthz", "1.1", 200),
            request_id="abc",
        )
    )
    assert line == 'INFO:     127.0.0.1:5 - "GET /healthz HTTP/1.1" 200 OK [request abc]'


@pytest.mark.parametrize("colors", [False, True])
def test_text_lines_are_uvicorns_lines(colors: bool) -> None:
    """The formatters build uvicorn's lines without copying the record: the same text, colours
    and coloured messages included, and the record left as it was."""
    fmt = "%(levelprefix)s %(message)s"
    ours, theirs = TextFormatter(fmt, use_colors=colors), DefaultFormatter(fmt, use_colors=colors)
    access_fmt = '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    access = AccessTextFormatter(access_fmt, use_colors=colors)
    their_access = AccessFormatter(access_fmt, use_colors=colors)
    lines = [
        record("x", "plain"),
        record("x", "with %s and %d", ("args", 3)),
        record("x", "hi %s", ("there",), color_message="hi \x1b[1m%s\x1b[0m"),
        record("x", "no args", color_message="\x1b[1mno args\x1b[0m"),
    ]
    for level in (logging.DEBUG, logging.WARNING, logging.ERROR, logging.CRITICAL):
        lines.append(record("x", "level"))
        lines[-1].levelno, lines[-1].levelname = level, logging.getLevelName(level)
    for rec in lines:
        before = dict(rec.__dict__)
        assert ours.format(rec) == theirs.format(rec)
        assert rec.__dict__.keys() - before.keys() <= {"message"}  # what format() always adds
    for status in (101, 200, 307, 404, 503, 799):
        rec = record(
            "uvicorn.access",
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:5", "POST", "/pools/p/code/execute?identifier=a", "1.1", status),
            color_message='%s - "%s %s HTTP/%s" \x1b[1m%d\x1b[0m',
        )
        assert access.format(rec) == their_access.format(rec)
        assert "levelprefix" not in rec.__dict__ and "client_addr" not in rec.__dict__


def test_json_lines() -> None:
    doc = json.loads(
        JsonFormatter().format(record("sessionpool.pool", "hi %s", ("there",), request_id="r1"))
    )
    assert doc["level"] == "INFO" and doc["logger"] == "sessionpool.pool"
    assert doc["message"] == "hi there" and doc["request_id"] == "r1"
    assert doc["timestamp"].endswith("+00:00")
    access = json.loads(
        JsonFormatter().format(
            record(
                "uvicorn.access",
                '%s - "%s %s HTTP/%s" %d',
                ("127.0.0.1:5", "POST", "/pools/default/code/execute?identifier=a", "1.1", 200),
                request_id="",
                color_message="\x1b[1m...",
            )
        )
    )
    assert access["method"] == "POST" and access["status"] == 200
    assert access["path"] == "/pools/default/code/execute?identifier=a"
    assert "request_id" not in access and "color_message" not in access


CONFIG = """
[pools.default]
preload = []
ready_sessions = 1
max_sessions = 4
execution_timeout_seconds = 1
"""


@pytest.mark.jail
@pytest.mark.parametrize("access_log", [True, False])
def test_the_access_line_is_written_only_when_the_access_log_is_on(
    tmp_path: Path, access_log: bool
) -> None:
    """The server's protocol writes uvicorn's access line itself (after the response): the
    ``access_log`` setting still turns it off."""
    config = f"[server]\naccess_log = {str(access_log).lower()}\n{CONFIG}"
    with (
        ServerProcess(tmp_path, config=config) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        assert client.get("/healthz?probe=1").status_code == 200
    lines = [
        line for line in server.log().splitlines() if '"GET /healthz?probe=1 HTTP/1.1"' in line
    ]
    assert len(lines) == (1 if access_log else 0), server.log()
    if access_log:
        assert re.search(r'127\.0\.0\.1:\d+ - "GET /healthz\?probe=1 HTTP/1\.1" 200', lines[0])


@pytest.mark.jail
def test_a_served_request_in_json_logs_and_the_audit_file(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    args = ["--log-format", "json", "--audit-log", str(audit)]
    with (
        ServerProcess(tmp_path, config=CONFIG, args=args) as server,
        httpx.Client(base_url=server.url, headers=server.auth, timeout=30) as client,
    ):
        r = client.post(RUN.format("demo"), json=body(SPIN), headers={"x-request-id": "e2e-1"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "e2e-1"
        assert r.json()["properties"]["status"] == "Failure"
        upload = "/pools/default/files/upload?identifier=demo&" + API
        files = {"file": ("report.csv", b"a,b\n")}
        assert client.post(upload, files=files).status_code == 200
    log = server.log()  # once it has stopped: the per-request lines are written in batches
    lines = [line for line in log.splitlines() if line.startswith("{")]
    docs = [json.loads(line) for line in lines]
    # every log record is JSON (the other lines are the banner, printed, not logged)
    assert all(not line.startswith(("INFO", "WARNING", "ERROR")) for line in log.splitlines())
    mine = [d for d in docs if d.get("request_id") == "e2e-1"]
    by_logger = {d["logger"]: d for d in mine}
    assert by_logger["sessionpool.session"]["level"] == "WARNING"
    assert "timed out after 1 s" in by_logger["sessionpool.session"]["message"]
    access = by_logger["uvicorn.access"]
    assert access["method"] == "POST" and access["status"] == 200
    assert access["path"].startswith("/pools/default/code/execute?identifier=demo")
    # the audit records went to their file, not to the console
    assert "sessionpool.audit" not in by_logger
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    execute, upload = records
    assert execute["request_id"] == "e2e-1"
    assert execute["tenant"] == "default" and execute["credential"] == "server-key"
    assert execute["method"] == "POST" and execute["route"] == "/code/execute"
    assert execute["operation"] == "code_execute" and execute["status"] == 200
    assert execute["pool"] == "default" and execute["identifier"] == "demo"
    assert upload["files"] == ["report.csv"] and upload["request_id"] != "e2e-1"


# --- per-request lines written in batches ------------------------------------------------------


def _batched(stream: io.StringIO) -> logging.Logger:
    """A logger tree of its own whose handler is a ``BatchedStreamHandler`` on ``stream``."""
    out = BatchedStreamHandler(stream)
    out.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger("batched-test")
    root.handlers = [out]
    root.setLevel(logging.INFO)
    root.propagate = False
    return root


@pytest.fixture
def per_request(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A per-request logger (``request.param``) and the test's own logger, both to one
    batched handler on a string stream; the per-request logger is restored after."""
    stream = io.StringIO()
    root = _batched(stream)
    logger = logging.getLogger(request.param)
    saved = (logger.handlers, logger.propagate, logger.level)
    logger.handlers, logger.propagate = list(root.handlers), False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


@pytest.mark.parametrize("per_request", ["uvicorn.access"], indirect=True)
async def test_per_request_lines_wait_for_their_batch_and_keep_their_order(
    per_request: tuple[logging.Logger, io.StringIO],
) -> None:
    access, stream = per_request
    access.info('%s - "%s" %d', "127.0.0.1:1", "POST /x", 200)
    access.info('%s - "%s" %d', "127.0.0.1:1", "POST /y", 200)
    assert stream.getvalue() == ""  # on the event loop: they wait for their batch
    await asyncio.sleep(LINE_BATCH_SECONDS * 4)
    assert stream.getvalue().splitlines() == [
        'uvicorn.access 127.0.0.1:1 - "POST /x" 200',
        'uvicorn.access 127.0.0.1:1 - "POST /y" 200',
    ]
    # any other record writes what waits first, then itself
    access.info('%s - "%s" %d', "127.0.0.1:1", "POST /z", 200)
    logging.getLogger("batched-test").warning("late")
    # a per-request record whose argument could change before its batch: at once
    access.info("%s", ["mutable"])
    assert stream.getvalue().splitlines()[2:] == [
        'uvicorn.access 127.0.0.1:1 - "POST /z" 200',
        "batched-test late",
        "uvicorn.access ['mutable']",
    ]
    access.info('%s - "%s" %d', "127.0.0.1:1", "POST /last", 200)
    access.handlers[0].flush()  # as at shutdown
    assert stream.getvalue().splitlines()[-1] == 'uvicorn.access 127.0.0.1:1 - "POST /last" 200'


@pytest.mark.parametrize("per_request", [AUDIT_LOGGER], indirect=True)
def test_off_the_event_loop_a_per_request_line_is_written_at_once(
    per_request: tuple[logging.Logger, io.StringIO],
) -> None:
    audit, stream = per_request
    audit.info("%s %s -> %d", "POST", "/code/execute", 200)
    assert stream.getvalue() == "sessionpool.audit POST /code/execute -> 200\n"


@pytest.mark.parametrize("per_request", ["uvicorn.access"], indirect=True)
def test_a_later_event_loop_writes_what_an_ended_one_left_waiting(
    per_request: tuple[logging.Logger, io.StringIO],
) -> None:
    access, stream = per_request

    async def log(path: str, wait: bool) -> None:
        access.info('%s - "%s" %d', "127.0.0.1:1", f"GET {path}", 200)
        if wait:
            await asyncio.sleep(LINE_BATCH_SECONDS * 4)

    asyncio.run(log("/a", wait=False))  # its loop ends before its batch is due
    assert stream.getvalue() == ""
    asyncio.run(log("/b", wait=True))
    assert stream.getvalue().splitlines() == [
        'uvicorn.access 127.0.0.1:1 - "GET /a" 200',
        'uvicorn.access 127.0.0.1:1 - "GET /b" 200',
    ]

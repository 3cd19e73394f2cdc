"""OpenTelemetry traces (``otel_traces``): one server span per request, named by its route and
carrying the request id; none while the setting is off, even with a tracer provider set up;
and a clear refusal when the extra or the exporter is missing. Spans are read from the SDK's
in-memory exporter on the global tracer provider."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.errors import ConfigError
from sessionpool.sandbox.fake import FakeBackend
from sessionpool.server.app import create_app
from sessionpool.server.settings import ServerSettings
from sessionpool.server.testing import in_process

KEY = "trace-test-key-0123"
API = "api-version=2024-02-02-preview"
BODY = {"properties": {"codeInputType": "inline", "executionType": "synchronous", "code": "1"}}


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of this process. The global provider can be set once per process: reuse one an
    earlier test set."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    yield spans
    spans.shutdown()


def settings(tmp_path: Path, traces: bool) -> ServerSettings:
    return ServerSettings(
        api_keys=(KEY,),
        data_dir=tmp_path,
        pools=(PoolConfig(ready_sessions=0),),
        otel_traces=traces,
    )


async def serve(tmp_path: Path, traces: bool, *requests: tuple[str, str, str]) -> None:
    s = settings(tmp_path, traces)
    engine = Engine(EngineConfig(data_dir=tmp_path), list(s.pools), backend=FakeBackend(tmp_path))
    await engine.start()
    async with in_process(s, engine) as client:
        for method, url, rid in requests:
            r = await client.request(
                method, url, json=BODY if method == "POST" else None, headers={"x-request-id": rid}
            )
            assert r.status_code < 500, r.text


async def test_a_span_per_request_with_its_route_and_request_id(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    execute = f"/pools/default/code/execute?identifier=t1&{API}"
    await serve(
        tmp_path, True, ("POST", execute, "trace-rid-1"), ("GET", "/healthz", "trace-rid-2")
    )
    spans = {s.attributes["sessionpool.request_id"]: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"trace-rid-1", "trace-rid-2"}
    run = spans["trace-rid-1"]
    assert run.kind == trace.SpanKind.SERVER
    assert run.name == "POST /code/execute"  # the route's template, not a path with identifiers
    assert run.attributes["http.route"] == "/code/execute"
    assert run.attributes["sessionpool.tenant"] == "default"
    assert run.attributes["http.status_code"] == 200
    assert spans["trace-rid-2"].name == "GET /healthz"
    assert run.context.trace_id != spans["trace-rid-2"].context.trace_id


async def test_no_span_while_the_setting_is_off(
    tmp_path: Path, exporter: InMemorySpanExporter
) -> None:
    exporter.clear()
    await serve(tmp_path, False, ("POST", f"/pools/default/code/execute?identifier=t2&{API}", "r"))
    assert exporter.get_finished_spans() == ()


def test_the_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.instrumentation.asgi", None)
    with pytest.raises(ConfigError, match="otel extra"):
        create_app(settings(tmp_path, True))
    create_app(settings(tmp_path, False))  # off: nothing of it is imported


def test_serve_refuses_an_exporter_that_is_not_installed(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "sessionpool.cli", "serve", "--otel-traces"]
    result = subprocess.run(
        [*serve, "--api-key", KEY, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OTEL_TRACES_EXPORTER": "zipkin_json"},
    )
    assert result.returncode == 2
    assert "no OpenTelemetry span exporter named 'zipkin_json'" in result.stderr
    assert "OTEL_TRACES_EXPORTER" in result.stderr

"""Operations: Prometheus metrics, request ids, structured logs, the audit log, traces.

- **Metrics** (``/metrics``, the ``metrics`` scope): a collector reads the plain counters the
  pools, sessions and the agents service keep (``sessionpool.telemetry``) when Prometheus
  scrapes, so the layers below import no metrics library and pay a few integer additions per
  event. Labels are bounded: pool names (configured), and fixed sets of states, outcomes and
  causes; never an identifier or a tenant.
- **Request ids**: each request has one (the client's ``X-Request-Id`` when it is sane, else a
  new one), answered in the same header and kept in a context variable, which every log record
  carries (``RequestIdFilter``): lines the pool and the session log while serving the request,
  and tasks the request started, carry it too.
- **Audit log**: one record per request that acts on something (a session, a file, an agents
  object, an operator's route): who (tenant, credential), what (method, route, operation),
  which (pool, identifier as the tenant named it, files, object ids), the status.
- **Traces** (``otel_traces``, the ``otel`` extra): OpenTelemetry's ASGI middleware, with the
  request id on each span.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import unquote_plus

import uvicorn.config
import uvicorn.logging
from fastapi import FastAPI, Request, Response
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn._ansi import style as ansi_style  # what uvicorn's access lines are coloured with

from sessionpool._version import __version__
from sessionpool.errors import ConfigError
from sessionpool.faces.base import PRINCIPAL_KEY, Runtime, require
from sessionpool.pool import Pool
from sessionpool.server.settings import ServerSettings
from sessionpool.telemetry import FILES_WRITTEN, AgentStats, Latency
from sessionpool.tenancy import ROOT, Principal
from sessionpool.tenancy import Scope as Right

METRICS_PATH = "/metrics"
AUDIT_LOGGER = "sessionpool.audit"
REQUEST_ID_HEADER = "x-request-id"

audit_log = logging.getLogger(AUDIT_LOGGER)

# --- request ids ---------------------------------------------------------------------------------

#: the id of the request being served ("" outside one); tasks a request creates inherit it
REQUEST_ID: ContextVar[str] = ContextVar("sessionpool_request_id", default="")
#: a client's id is kept if it is short and plain (it goes into headers and log lines as is)
_SANE_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
_HEADER = REQUEST_ID_HEADER.encode()


def new_request_id() -> str:
    return os.urandom(8).hex()


class RequestIds:
    """The outermost middleware: gives each request its id and answers it in ``X-Request-Id``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = ""
        for name, value in scope["headers"]:
            if name == _HEADER:
                if _SANE_ID.fullmatch(value):
                    rid = value.decode("ascii")
                break
        rid = rid or new_request_id()
        header = (_HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), header]}
            await send(message)

        token = REQUEST_ID.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


# --- logs --------------------------------------------------------------------------------------


class RequestIdFilter(logging.Filter):
    """Stamps every record with the request id (on handlers, so records of every logger that
    reaches them get it, whichever logger they were logged on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _with_id(line: str, record: logging.LogRecord) -> str:
    rid = getattr(record, "request_id", "")
    return f"{line} [request {rid}]" if rid else line


class _Values:
    """All a logging style reads of a record: its ``__dict__``."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__ = values


def _uvicorn_line(
    formatter: uvicorn.logging.ColourizedFormatter,
    record: logging.LogRecord,
    fields: dict[str, Any] | None = None,
) -> str:
    """What uvicorn's ``ColourizedFormatter.formatMessage`` makes of ``record`` with ``fields``
    added, and the request id at the end. uvicorn copies the record to add its fields; here
    they go into a copy of its attributes, a quarter less time per line with the caches cold
    (the audit log writes one per request; tests compare the lines with uvicorn's)."""
    values = dict(record.__dict__)
    if fields:
        values.update(fields)
    levelname = record.levelname
    separator = " " * (8 - len(levelname))
    if formatter.use_colors:
        levelname = formatter.color_level_name(levelname, record.levelno)
        if "color_message" in values:  # LogRecord.getMessage applied to the coloured variant
            message = str(values["color_message"])
            values["message"] = message % record.args if record.args else message
    values["levelprefix"] = levelname + ":" + separator
    line = logging.Formatter.formatMessage(formatter, _Values(values))  # type: ignore[arg-type]
    return _with_id(line, record)


class TextFormatter(uvicorn.logging.DefaultFormatter):
    """The server's usual lines (uvicorn's look), with the request id at the end when there is
    one; no copy of the record (``_uvicorn_line``)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _uvicorn_line(self, record)


class AccessTextFormatter(uvicorn.logging.AccessFormatter):
    """uvicorn's access lines, with the request id at the end; no copy of the record."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        client_addr, method, full_path, http_version, status_code = record.args  # type: ignore[misc]
        request_line = f"{method} {full_path} HTTP/{http_version}"
        if self.use_colors:
            request_line = ansi_style(request_line, bold=True)
        fields = {
            "client_addr": client_addr,
            "request_line": request_line,
            "status_code": self.get_status_code(int(status_code)),  # type: ignore[arg-type]
        }
        return _uvicorn_line(self, record, fields)


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: timestamp, level, logger, message, request_id, and a record's
    extra fields (the audit log's who, what and which; an access line's method, path and
    status)."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            # uvicorn adds a coloured copy of some messages
            reserved_attrs=[*RESERVED_ATTRS, "color_message"],
            timestamp=True,
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        if not log_data.get("request_id"):
            log_data.pop("request_id", None)
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            log_data.update(
                client=client, method=method, path=path, http_version=version, status=status
            )


#: the loggers of the lines every request writes: uvicorn's access line and the audit record
PER_REQUEST_LOGGERS = frozenset({"uvicorn.access", AUDIT_LOGGER})
#: how long a per-request line may wait to be written with the others of its moment
LINE_BATCH_SECONDS = 0.05
#: the argument types a deferred record may hold: formatted later, its text cannot change
_FROZEN_ARGS = (str, int, float, type(None))


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A console handler that formats and writes the per-request lines (``PER_REQUEST_LOGGERS``)
    together, ``LINE_BATCH_SECONDS`` after the first of them, instead of on the request's path.

    Formatted alone, after a request has been through the caches, a line takes about 70 us of
    CPU (10 us warm, as it is in a batch), and uvicorn writes its access line before the
    response. Deferral is only on the event loop's thread, and only for records whose arguments
    are plain values; any other record first writes what waits, so lines keep their order.
    ``flush`` (at shutdown too) writes what waits."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._waiting: list[logging.LogRecord] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # called with the handler's lock held (Handler.handle)
        if record.name in PER_REQUEST_LOGGERS and self._deferrable(record):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._waiting.append(record)
                # a timer of a loop that has ended (a process that runs several) never fires
                if self._timer is None or self._timer_loop is not loop:
                    self._timer = loop.call_later(LINE_BATCH_SECONDS, self._on_timer)
                    self._timer_loop = loop
                return
        self._write_waiting()
        super().emit(record)

    @staticmethod
    def _deferrable(record: logging.LogRecord) -> bool:
        args = record.args
        if record.exc_info is not None or (args and not isinstance(args, tuple)):
            return False
        # a loop, not all() over a generator: no generator frame resumed for every argument
        for arg in args or ():  # noqa: SIM110
            if not isinstance(arg, _FROZEN_ARGS):
                return False
        return True

    def _on_timer(self) -> None:
        self.acquire()
        try:
            self._timer = None
            self.flush()
        finally:
            self.release()

    def _write_waiting(self) -> None:
        """Write what waits, unflushed: every caller flushes (``emit`` of the record after it,
        through ``flush``)."""
        if not self._waiting:
            return
        waiting, self._waiting = self._waiting, []
        lines = []
        for record in waiting:
            try:
                lines.append(self.format(record) + self.terminator)
            except Exception:
                self.handleError(record)
        try:
            self.stream.write("".join(lines))
        except Exception:
            self.handleError(waiting[-1])

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_waiting()
            super().flush()
        finally:
            self.release()


def configure_logging(settings: ServerSettings) -> None:
    """Logging for ``serve``: every logger through one stderr handler (uvicorn's access lines
    to stdout, as uvicorn has them), in ``log_format``, each record with its request id; the
    audit log to ``audit_log`` (JSON lines) when set. Uvicorn is then given no config of its
    own (it only sets its loggers' levels)."""
    level = uvicorn.config.LOG_LEVELS[settings.log_level]
    as_json = settings.log_format == "json"
    # What no line of ours shows is not looked up for every record (the logging HOWTO's
    # optimizations): the caller's file and line (a walk up the stack), the thread and the
    # process. Two records a request (the access line and the audit record), and with the
    # caches cold after a quiet moment, those lookups were a tenth of the server's calls.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    ids = RequestIdFilter()

    def handler(stream: Any, formatter: logging.Formatter) -> logging.Handler:
        out = BatchedStreamHandler(stream)
        out.setFormatter(formatter)
        out.addFilter(ids)
        return out

    audit_file: logging.Handler | None = None
    if settings.audit_log is not None:
        try:
            audit_file = logging.FileHandler(settings.audit_log, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot open the audit log {settings.audit_log}: {exc}") from None
        audit_file.setFormatter(JsonFormatter())
        audit_file.addFilter(ids)

    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    text = TextFormatter("%(levelprefix)s %(message)s")
    root.addHandler(handler(sys.stderr, JsonFormatter() if as_json else text))
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    access = logging.getLogger("uvicorn.access")
    access_text = AccessTextFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    access.handlers = [handler(sys.stdout, JsonFormatter() if as_json else access_text)]
    access.propagate = False
    # the model client's HTTP library logs every request at info
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    audit = logging.getLogger(AUDIT_LOGGER)
    audit.handlers.clear()
    audit.propagate = True
    audit.setLevel(logging.NOTSET)
    if audit_file is not None:
        audit.addHandler(audit_file)
        audit.propagate = False
        audit.setLevel(logging.INFO)  # kept whatever the console's level


# --- the audit log -----------------------------------------------------------------------------

#: an audit record's text: method, route -> status by tenant (credential), then ``_WHICH``
_AUDIT_LINE = "%s %s -> %d by %s (%s)%s"
#: the fields that say which session, file or object, in the text of a record
_WHICH = ("pool", "identifier", "path", "objects", "files", "created_id")
#: an id at the start of a created object's JSON (``{"id": "thread_abc", ...}``)
_CREATED_ID = re.compile(rb'"id":\s*"([A-Za-z0-9_.:-]{1,128})"')


class Audit:
    """One audit record per request that reaches a route, except ``skip`` (probes, metrics).

    Placed inside the authentication, so the request's principal is in the scope once the
    route has run; with authentication off, every request is the server's own.
    """

    def __init__(self, app: ASGIApp, skip: Iterable[str], auth: bool) -> None:
        self.app = app
        self.skip = frozenset(skip)
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] in self.skip
            or not audit_log.isEnabledFor(logging.INFO)
        ):
            await self.app(scope, receive, send)
            return
        status = 500  # unless the app answers: an exception ends it as a 500
        created = ""
        # a created object's id is only in the answer: look once, in its first bytes
        look = scope["method"] == "POST"

        async def send_noting(message: Message) -> None:
            nonlocal status, created, look
            if message["type"] == "http.response.start":
                status = message["status"]
                look = look and 200 <= status < 300
            elif look:
                look = False
                found = _CREATED_ID.search(message.get("body", b""), 0, 256)
                created = found.group(1).decode() if found else ""
            await send(message)

        files: list[str] = []
        token = FILES_WRITTEN.set(files)
        try:
            await self.app(scope, receive, send_noting)
        finally:
            FILES_WRITTEN.reset(token)
            self.record(scope, status, files, created)

    def record(self, scope: Scope, status: int, files: list[str], created: str) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if not isinstance(template, str):
            return  # no route matched: nothing was acted on
        principal = scope.get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):
            if self.auth:
                return  # a public route
            principal = ROOT
        params: dict[str, Any] = dict(scope.get("path_params") or {})
        params.pop("endpoint_base", None)  # the client's own URL prefix, not an object
        pool = params.pop("pool", None)
        fields: dict[str, Any] = {
            "tenant": principal.tenant,
            "credential": principal.credential,
            "method": scope["method"],
            "route": template,
            "operation": getattr(route, "name", ""),
            "status": status,
        }
        if pool is not None:
            fields["pool"] = pool
        for pair in scope.get("query_string", b"").split(b"&"):
            key, _, raw = pair.partition(b"=")
            if key == b"identifier" or key == b"path":
                fields[key.decode()] = unquote_plus(raw.decode("latin-1"))
        if params:
            fields["objects"] = params
        if files:
            fields["files"] = files
        if created:
            fields["created_id"] = created
        # repr: a name with a line break in it cannot forge a line of the text log
        which = " ".join(f"{k}={fields[k]!r}" for k in _WHICH if k in fields)
        args = (
            fields["method"],
            template,
            status,
            principal.tenant,
            principal.credential,
            f": {which}" if which else "",
        )
        # the record made here rather than by audit_log.info: that would look up the caller's
        # file and line (always this one) by walking the stack, for every request
        record = audit_log.makeRecord(
            AUDIT_LOGGER, logging.INFO, __file__, 0, _AUDIT_LINE, args, None, extra=fields
        )
        audit_log.handle(record)


# --- metrics -----------------------------------------------------------------------------------


def _histogram(family: HistogramMetricFamily, labels: list[str], latency: Latency) -> None:
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip(latency.bounds, latency.counts, strict=False):
        total += count
        buckets.append((str(float(bound)), total))
    buckets.append(("+Inf", total + latency.counts[-1]))
    family.add_metric(labels, buckets, latency.total)


class Metrics:
    """A Prometheus collector over the live counters, read at each scrape (in the event loop,
    where they are updated: the reads are consistent without a lock).

    This server's pools only: in cluster mode the sessions live on the nodes, whose counters
    this gateway does not see (its agents figures are still here).
    """

    def __init__(self, runtime: Callable[[], Runtime | None]) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "sessionpool_build_info", "The running sessionpool's version", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        runtime = self.runtime()
        if runtime is None:
            return
        pools = [p for p in runtime.engine.pools.values() if isinstance(p, Pool)]
        yield from self._pools(pools)
        if runtime.agents is not None:
            yield from self._agents(runtime.agents.model.stats)
        refusals = CounterMetricFamily(
            "sessionpool_quota_refusals",
            "Requests refused (429) because a tenant was over one of its quotas",
            labels=["quota"],
        )
        for quota, count in runtime.quotas.refusals.items():
            refusals.add_metric([quota], count)
        yield refusals

    def _pools(self, pools: list[Pool]) -> Iterator[Metric]:
        sessions = GaugeMetricFamily(
            "sessionpool_sessions",
            "Sessions by state: ready (warm, waiting to be allocated: the ready pool's depth), "
            "starting (being forked), busy (running a call), idle (allocated, between calls)",
            labels=["pool", "state"],
        )
        target = GaugeMetricFamily(
            "sessionpool_ready_sessions_target",
            "The ready sessions each pool keeps warm (ready_sessions)",
            labels=["pool"],
        )
        limit = GaugeMetricFamily(
            "sessionpool_max_sessions", "Each pool's max_sessions", labels=["pool"]
        )
        allocations = CounterMetricFamily(
            "sessionpool_allocations",
            "Session allocations: warm (from the ready pool), on_demand (forked for the call), "
            "refused (max_sessions or the memory reserve), failed (the sandbox could not start "
            "one)",
            labels=["pool", "outcome"],
        )
        executions = CounterMetricFamily(
            "sessionpool_executions",
            "Code executions by status: ok, error (an exception in the cell), timeout, lost "
            "(the interpreter died)",
            labels=["pool", "status"],
        )
        durations = HistogramMetricFamily(
            "sessionpool_execution_duration_seconds",
            "An execution's round trip to the interpreter, once its turn came",
            labels=["pool"],
        )
        timeouts = CounterMetricFamily(
            "sessionpool_execution_timeouts",
            "Executions and commands past their deadline: interrupted (state kept) or killed "
            "(they ignored the interrupt; state lost)",
            labels=["pool", "action"],
        )
        kills = CounterMetricFamily(
            "sessionpool_interpreter_kills",
            "Interpreters that ended, by cause: timeout, oom (the OOM killer), exited (ended by "
            "themselves), protocol (a malformed reply), abandoned (would not stop after the "
            "caller left)",
            labels=["pool", "cause"],
        )
        uploads = CounterMetricFamily(
            "sessionpool_uploads", "Files uploaded into sessions", labels=["pool"]
        )
        upload_bytes = CounterMetricFamily(
            "sessionpool_upload_bytes", "Bytes uploaded into sessions", labels=["pool"]
        )
        for pool in pools:
            name, stats = pool.name, pool.stats
            for state, count in pool.states().items():
                sessions.add_metric([name, state], count)
            target.add_metric([name], pool.config.ready_sessions)
            limit.add_metric([name], pool.config.max_sessions)
            for outcome, count in stats.allocations.items():
                allocations.add_metric([name, outcome], count)
            for status, count in stats.executions.items():
                executions.add_metric([name, status], count)
            _histogram(durations, [name], stats.execution_seconds)
            for action, count in stats.timeouts.items():
                timeouts.add_metric([name, action], count)
            for cause, count in stats.kills.items():
                kills.add_metric([name, cause], count)
            uploads.add_metric([name], stats.uploads)
            upload_bytes.add_metric([name], stats.upload_bytes)
        yield from (sessions, target, limit, allocations, executions, durations, timeouts)
        yield from (kills, uploads, upload_bytes)

    def _agents(self, stats: AgentStats) -> Iterator[Metric]:
        runs = CounterMetricFamily(
            "sessionpool_agent_runs",
            "Agents runs (and responses) that ended, by status",
            labels=["status"],
        )
        for status, count in stats.runs.items():
            runs.add_metric([status], count)
        yield runs
        yield CounterMetricFamily(
            "sessionpool_agent_runs_started", "Agents runs started", value=stats.runs_started
        )
        yield GaugeMetricFamily(
            "sessionpool_agent_runs_in_progress",
            "Agents runs executing now",
            value=stats.runs_in_progress,
        )
        model = HistogramMetricFamily(
            "sessionpool_model_request_duration_seconds",
            "Calls to the model endpoint, by outcome (ok, or error: an HTTP error, a timeout, "
            "a malformed reply)",
            labels=["outcome"],
        )
        for outcome, latency in stats.model_seconds.items():
            _histogram(model, [outcome], latency)
        yield model


def install_metrics(app: FastAPI) -> CollectorRegistry:
    """``GET /metrics``: the Prometheus text format (or OpenMetrics, when the scraper asks for
    it), to credentials with the ``metrics`` scope."""
    registry = CollectorRegistry()
    registry.register(Metrics(lambda: getattr(app.state, "runtime", None)))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)  # the cyclic collector's passes (the server tunes it: cli.py)

    @app.get(
        METRICS_PATH,
        tags=["operations"],
        summary="Prometheus metrics (needs the metrics scope)",
        response_class=Response,
    )
    async def metrics(request: Request) -> Response:
        require(request, Right.METRICS, "reading the metrics")
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), media_type=content_type)

    return registry


# --- traces ------------------------------------------------------------------------------------

_OTEL_MISSING = (
    "otel_traces is set but OpenTelemetry is not installed: install sessionpool's otel extra "
    "(pip install 'sessionpool[otel]'), or turn otel_traces off"
)


#: FastAPI traces on its own whenever a global tracer provider is set up (by anyone): off, so
#: that ``otel_traces`` alone decides, and a request makes one server span, not two
FASTAPI_TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def _otel(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(_OTEL_MISSING) from None


def configure_traces() -> None:
    """Make sure spans go somewhere: keep a tracer provider set up before (by an agent or a
    test), else build one whose exporter ``OTEL_TRACES_EXPORTER`` names (default ``otlp``, as
    OpenTelemetry's own default; ``console``, ``none``). Raises ConfigError with what to
    install or set."""
    trace = _otel("opentelemetry.trace")
    sdk = _otel("opentelemetry.sdk.trace")
    _otel("opentelemetry.instrumentation.asgi")
    if isinstance(trace.get_tracer_provider(), sdk.TracerProvider):
        return
    resources = _otel("opentelemetry.sdk.resources")
    export = _otel("opentelemetry.sdk.trace.export")
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "sessionpool"}
    provider = sdk.TracerProvider(resource=resources.Resource.create(attributes))
    names = os.environ.get("OTEL_TRACES_EXPORTER", "otlp")
    for name in (n.strip() for n in names.split(",")):
        if not name or name == "none":
            continue
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ConfigError(
                f"no OpenTelemetry span exporter named {name!r} is installed (OTEL_TRACES_EXPORTER;"
                " the otel extra brings otlp; or set it to console or none)"
            )
        exporter = next(iter(found)).load()()
        provider.add_span_processor(export.BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _span_started(span: Any, scope: Scope) -> None:
    if span is not None and span.is_recording():
        span.set_attribute("sessionpool.request_id", REQUEST_ID.get())


class SpanRoute:
    """Inside the authentication: when the answer starts (the route is known, and the span is
    still open), name the request's span after the route's template (bounded), not its path
    (which holds file names and ids), and say whose request it was."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.current_span = _otel("opentelemetry.trace").get_current_span

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        span = self.current_span()  # the server span the outer middleware started
        if scope["type"] != "http" or not span.is_recording():
            await self.app(scope, receive, send)
            return

        async def send_naming(message: Message) -> None:
            if message["type"] == "http.response.start":
                template = getattr(scope.get("route"), "path", None)
                if isinstance(template, str):
                    span.update_name(f"{scope['method']} {template}")
                    span.set_attribute("http.route", template)
                principal = scope.get(PRINCIPAL_KEY)
                if isinstance(principal, Principal):
                    span.set_attribute("sessionpool.tenant", principal.tenant)
            await send(message)

        await self.app(scope, receive, send_naming)


def install_inner(app: FastAPI, settings: ServerSettings, public: Iterable[str]) -> None:
    """The layers inside the authentication (added before it: the first added runs innermost):
    the audit log, and with traces, the span's naming."""
    if settings.otel_traces:
        configure_traces()
        app.add_middleware(SpanRoute)
    app.add_middleware(Audit, skip=[*public, METRICS_PATH], auth=not settings.no_auth)


def install_outer(app: FastAPI, settings: ServerSettings) -> None:
    """The outermost layers (added last): traces when on, inside the request ids, so each span
    carries its request's id, and every line logged while serving it does too."""
    if settings.otel_traces:
        asgi = _otel("opentelemetry.instrumentation.asgi")
        app.add_middleware(
            asgi.OpenTelemetryMiddleware,
            # named after the route once it is known (SpanRoute); the path is unbounded
            default_span_details=lambda scope: (scope.get("method", "HTTP"), {}),
            server_request_hook=_span_started,
            exclude_spans=["receive", "send"],
        )
    app.add_middleware(RequestIds)

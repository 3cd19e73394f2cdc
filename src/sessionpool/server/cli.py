"""``sessionpool serve``: settings, keys, TLS, then the engine and uvicorn on one event loop.

The engine starts before the listening socket accepts anything, so a host that cannot build the
jail makes ``serve`` exit with the reason instead of serving errors. Uvicorn owns the signals: on
SIGTERM or Ctrl-C it stops accepting, lets requests in flight finish up to the shutdown deadline,
and the app's lifespan then closes every session.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import signal
import socket
import ssl
import sys
from types import FrameType
from typing import Any, TextIO

import uvicorn

from sessionpool.errors import ConfigError, ServiceError
from sessionpool.server.app import Shutdown, create_app, make_engine
from sessionpool.server.auth import load_or_create_key
from sessionpool.server.observe import configure_logging, configure_traces
from sessionpool.server.settings import ServerSettings, load_settings
from sessionpool.server.tls import TlsFiles, ensure_self_signed
from sessionpool.server.wire import HttpProtocol

#: the line a supervisor (or a test) can wait for; the URL follows it
LISTENING = "sessionpool listening on "

#: the cyclic collector's thresholds once startup is done (CPython's default: 700, 10, 10)
GC_THRESHOLDS = (10_000, 10, 10)


_FLAG_SETTINGS = (
    "host",
    "port",
    "api_keys",
    "api_key_file",
    "no_auth",
    "tls_cert",
    "tls_key",
    "tls_self_signed",
    "backend",
    "data_dir",
    "runtimes_dir",
    "shutdown_deadline_seconds",
    "log_level",
    "access_log",
    "log_format",
    "audit_log",
    "otel_traces",
)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    overrides: dict[str, Any] = {k: getattr(args, k, None) for k in _FLAG_SETTINGS}
    if overrides["api_keys"] is not None:
        overrides["api_keys"] = tuple(overrides["api_keys"])
    return load_settings(
        overrides,
        config_file=getattr(args, "config", None),
        cluster_address=getattr(args, "cluster", None),
    )


def resolve_keys(settings: ServerSettings, out: TextIO) -> tuple[ServerSettings, str]:
    """Settings with the keys to enforce (configured ones, or the key file's, made if missing),
    and a line saying where they come from."""
    if settings.no_auth:
        return settings, "OFF (--no-auth, loopback only)"
    if settings.api_keys:
        return settings, "the configured API key(s)"
    keys, generated = load_or_create_key(settings.key_file)
    if generated:
        print(
            f"Generated an API key (shown once; kept in {settings.key_file}, mode 0600):\n"
            f"  {keys[0]}",
            file=out,
        )
    return dataclasses.replace(settings, api_keys=tuple(keys)), f"the key in {settings.key_file}"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets that say so,
    # and without it every response waits out a delayed ACK (about 40 ms)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(scheme: str, host: str, port: int) -> str:
    shown = "127.0.0.1" if host == "0.0.0.0" else ("::1" if host == "::" else host)
    if ":" in shown:
        shown = f"[{shown}]"
    return f"{scheme}://{shown}:{port}"


def _banner(
    url: str, settings: ServerSettings, keys: str, tls: TlsFiles | None, out: TextIO
) -> None:
    lines = [LISTENING + url]
    lines += [f"  pool {p.name!r}: {url}/pools/{p.name}" for p in settings.pools]
    agents = settings.agents
    if agents.enabled:
        model = (
            agents.model_base_url or "no model configured: set SESSIONPOOL_AGENTS_MODEL_BASE_URL"
        )
        lines.append(f"  agents (Assistants, Responses): {url}/v1 (model: {model})")
    if settings.no_auth:
        lines.append(f"  authentication: {keys}")
    else:
        lines.append(
            f"  authentication: 'Authorization: Bearer <key>' or 'api-key: <key>' with {keys}"
        )
    if tls is not None and tls.ca is not None:
        lines.append(f"  TLS: self-signed; clients trust {tls.ca} (e.g. SSL_CERT_FILE={tls.ca})")
    if settings.cluster is not None:
        lines.append(
            f"  cluster: Ray at {settings.cluster.address} (namespace "
            f"{settings.cluster.namespace!r}); nodes and their sessions: {url}/cluster"
        )
    lines.append(f"  API docs: {url}/docs")
    print("\n".join(lines), file=out, flush=True)


class _Server(uvicorn.Server):
    """Starts the shutdown deadline at the stop signal, so the whole stop keeps to it."""

    def __init__(self, config: uvicorn.Config, shutdown: Shutdown) -> None:
        super().__init__(config)
        self.shutdown_deadline = shutdown

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.shutdown_deadline.begin()
        super().handle_exit(sig, frame)


async def _serve(settings: ServerSettings, keys: str, tls: TlsFiles | None, out: TextIO) -> None:
    sock = _bind(settings.host, settings.port)
    engine = make_engine(settings)
    closed = False

    def mark_closed() -> None:
        nonlocal closed
        closed = True

    try:
        await engine.start()
        shutdown = Shutdown(settings.shutdown_deadline_seconds)
        app = create_app(settings, engine, shutdown=shutdown, on_closed=mark_closed)
        config = uvicorn.Config(
            app,
            log_config=None,  # configure_logging did it (serve_command)
            log_level=settings.log_level,
            access_log=settings.access_log,
            # a safety net: the engine ends executions at the deadline, so requests finish first
            timeout_graceful_shutdown=int(settings.shutdown_deadline_seconds) + 5,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            server_header=False,
            http=HttpProtocol,  # a response's head and body in one send
        )
        server = _Server(config, shutdown)
        settle_heap()  # last: everything startup made is in the frozen heap
        port = sock.getsockname()[1]
        _banner(_url("https" if tls else "http", settings.host, port), settings, keys, tls, out)
        await server.serve(sockets=[sock])
    finally:
        if not closed:  # startup failed or shutdown was forced: leave nothing behind
            await engine.close(deadline_s=0)
        sock.close()


def check_tls(tls: TlsFiles) -> None:
    """Load the certificate and key once, so a bad pair stops ``serve`` with a clear reason."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(tls.cert, tls.key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot use the TLS certificate {tls.cert} with key {tls.key}: {exc}"
        ) from None


def settle_heap() -> None:
    """Freeze the objects startup built and run the cyclic collector less often.

    A started server holds some 130,000 long-lived objects (FastAPI, pydantic, the engine), and
    with CPython's defaults every full collection walked them all, while the objects of requests
    in flight were walked again at each older-generation collection: under load that was about
    a sixth of the server's CPU (docs/benchmarks.md). Frozen objects are never
    walked again; the cost is that a reference cycle among them, if one ever became garbage,
    would not be freed, hence freezing only once startup is done. Cycles made by requests are
    still collected, in fewer and larger passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve_command(args: argparse.Namespace) -> int:
    """Run the server until a stop signal; returns the process exit status."""
    out = sys.stdout
    try:
        settings, keys = resolve_keys(settings_from_args(args), out)
        tls: TlsFiles | None = None
        if settings.tls_self_signed is not None:
            tls = ensure_self_signed(settings.tls_self_signed, settings.host)
        elif settings.tls_cert is not None and settings.tls_key is not None:
            tls = TlsFiles(cert=settings.tls_cert, key=settings.tls_key)
        if tls is not None:
            check_tls(tls)
        configure_logging(settings)
        if settings.otel_traces:
            configure_traces()
    except ServiceError as exc:
        print(f"sessionpool serve: {exc.message}", file=sys.stderr)
        return 2
    # a stop before uvicorn takes over the signals still closes the engine (SystemExit unwinds)
    signal.signal(signal.SIGTERM, _terminate)
    # the event loop uvicorn would pick itself (uvloop when installed)
    loop_factory = uvicorn.Config(app="", loop="auto", log_config=None).get_loop_factory()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(settings, keys, tls, out))
    except ServiceError as exc:
        print(f"sessionpool serve: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0

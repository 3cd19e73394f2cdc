"""The egress proxy: the only way out of a session's network namespace.

A session with network (``allowlist`` or ``on``) finds a listener at 127.0.0.1:3128 inside its
own namespace; the server opened it there (``Gate.attach``), so the listener itself says which
session is calling, and nothing in the session can claim to be another. The session's
``HTTP(S)_PROXY`` point at it; there is no other route (no address but loopback, no DNS).

What passes:

- ``CONNECT host:port`` if the policy admits ``host:port``; the first bytes through the tunnel
  must be a TLS ClientHello whose server name (SNI) is that same host, so a tunnel opened for an
  allowed name cannot carry a request to another one (domain fronting) or a non-TLS protocol.
- plain HTTP in absolute form (``GET http://host/...``) if the policy admits it and the ``Host``
  header names the same host; each request is checked, so a redirect to a denied host is denied.
- for a domain with secrets, the proxy terminates the session's TLS with a certificate of its
  own CA (``ca``), checks ``Host``, adds the headers and makes its own verified TLS connection
  upstream. Plain HTTP to such a domain is refused: secrets travel over TLS only.

The proxy resolves names itself and refuses private, loopback, link-local and metadata
addresses (``addresses``). Every decision is logged with the session, host and verdict; a denial
answers ``403 blocked by sessionpool egress policy: <reason>`` (a TLS alert once a tunnel is
open). Per session, new connections per second, open connections and bytes per second are
bounded. The proxy runs on its own thread and event loop, so a flood through it does not slow
the API, and one session's flood meets its own limits first.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import h11

from sessionpool.config import EGRESS_PROXY_PORT, EgressSettings
from sessionpool.egress.addresses import IPAddress, Resolver, Unresolved
from sessionpool.egress.ca import EgressCA, system_bundle
from sessionpool.egress.policy import EgressPolicy, Headers, is_ip_literal

log = logging.getLogger("sessionpool.egress")

#: where a session finds the proxy, inside its own network namespace
LISTEN_HOST = "127.0.0.1"
LISTEN_PORT = EGRESS_PROXY_PORT
PROXY_URL = f"http://{LISTEN_HOST}:{LISTEN_PORT}"
#: a request head (and a ClientHello) larger than this is refused
HEAD_LIMIT = 64 * 1024
#: how long the proxy waits for a request head, a ClientHello or an upstream connect
HANDSHAKE_TIMEOUT = 15.0
#: a tunnel or keep-alive connection with no traffic either way this long is closed
IDLE_TIMEOUT = 300.0
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
    }
)
#: a fatal TLS alert, access_denied: what a tunnel refused after its 200 gets
TLS_ACCESS_DENIED = b"\x15\x03\x03\x00\x02\x02\x31"
DENIAL_PREFIX = "blocked by sessionpool egress policy"

T = TypeVar("T")


class Denied(Exception):
    """A refusal; ``host`` and ``port`` name what was asked for when the refusal came before
    the connection's host was settled (a Host header that does not match, a CONNECT without a
    port), so that the decision still says what it was about."""

    def __init__(self, reason: str, status: int = 403, host: str = "", port: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.host = host
        self.port = port


class Bucket:
    """A token bucket; ``take`` goes into debt and sleeps it off, so callers share the rate."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def try_take(self, n: float = 1.0) -> bool:
        if self.rate <= 0:
            return True
        self._refill()
        if self.tokens < n:
            return False
        self.tokens -= n
        return True

    async def take(self, n: float) -> None:
        if self.rate <= 0:
            return
        self._refill()
        self.tokens -= n
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class _Link:
    """One open connection of a session through the proxy."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.upstream: asyncio.StreamWriter | None = None
        self.host = ""
        self.port = 0

    def abort(self) -> None:
        for w in (self.writer, self.upstream):
            if w is not None:
                w.transport.abort()


class Gate:
    """One session's door to the proxy: its listener, policy, limits and open connections.

    Made and changed from the server's loop; everything it does runs on the proxy's loop.
    """

    def __init__(
        self,
        proxy: EgressProxy,
        label: Callable[[], str],
        policy: EgressPolicy,
        settings: EgressSettings,
    ) -> None:
        self.proxy = proxy
        self.label = label
        self.policy = policy
        self.settings = settings
        self.links: set[_Link] = set()
        self.connections = Bucket(
            settings.connections_per_second, settings.connections_per_second * 2
        )
        self.bandwidth = Bucket(settings.bytes_per_second, settings.bytes_per_second)
        #: the latest decisions, newest last: (epoch seconds, host, port, verdict, reason)
        self.decisions: collections.deque[tuple[float, str, int, str, str]] = collections.deque(
            maxlen=64
        )
        self._server: asyncio.Server | None = None
        self.closed = False

    async def attach(self, sock: socket.socket) -> None:
        """Serve the listener ``sock`` (opened in the session's namespace); replaces an earlier
        one (a replaced kernel has a new namespace)."""
        await asyncio.wrap_future(self.proxy.submit(self._attach(sock)))

    async def _attach(self, sock: socket.socket) -> None:
        if self._server is not None:
            self._server.close()
        if self.closed:
            sock.close()
            return
        self._server = await asyncio.start_server(
            lambda r, w: self.proxy.handle(self, r, w), sock=sock, limit=HEAD_LIMIT
        )

    def set_policy(self, policy: EgressPolicy) -> None:
        """Holds from the next connection; open ones it no longer admits are closed now."""
        self.policy = policy
        self.proxy.call(self._enforce)

    def _enforce(self) -> None:
        for link in list(self.links):
            if link.host and self.policy.decide(link.host, link.port) is not None:
                self.proxy.record(self, link.host, link.port, "closed", "the policy changed")
                link.abort()

    def close(self) -> None:
        self.closed = True
        self.proxy.call(self._close)

    def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for link in list(self.links):
            link.abort()


class EgressProxy:
    def __init__(
        self,
        state_dir: Path,
        hosts: tuple[tuple[str, str], ...] = (),
        allow_networks: tuple[str, ...] = (),
        trust_ca_files: tuple[Path, ...] = (),
    ) -> None:
        self.state_dir = state_dir
        self.resolver = Resolver(hosts, allow_networks)
        self.trust_ca_files = trust_ca_files
        self.ca: EgressCA | None = None
        #: the CA bundle sessions trust: the system's, the operator's extra CAs, the proxy's
        self.bundle = state_dir / "ca-bundle.pem"
        self.counts: collections.Counter[str] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._upstream_tls: ssl.SSLContext | None = None

    # -- lifecycle (from the server's loop) --------------------------------------------------

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.ca = EgressCA(self.state_dir)
        self.ca.write_bundle(self.bundle, self.trust_ca_files)
        ctx = ssl.create_default_context(cafile=system_bundle())
        for path in self.trust_ca_files:
            ctx.load_verify_locations(cafile=str(path))
        ctx.set_alpn_protocols(["http/1.1"])
        self._upstream_tls = ctx
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="egress-proxy", daemon=True)
        self._thread.start()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        loop.close()

    def gate(
        self, label: Callable[[], str], policy: EgressPolicy, settings: EgressSettings
    ) -> Gate:
        return Gate(self, label, policy, settings)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        assert self._loop is not None, "the egress proxy is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def call(self, fn: Callable[[], None]) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn)

    # -- decisions -----------------------------------------------------------------------------

    def record(self, gate: Gate, host: str, port: int, verdict: str, reason: str = "") -> None:
        self.counts[verdict] += 1
        gate.decisions.append((time.time(), host, port, verdict, reason))
        log.log(
            logging.INFO if verdict == "allowed" else logging.WARNING,
            "egress: session %s: %s:%d %s%s",
            gate.label(),
            host,
            port,
            verdict,
            f": {reason}" if reason else "",
        )

    # -- connections (on the proxy's loop) -----------------------------------------------------

    async def handle(
        self, gate: Gate, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        link = _Link(writer)
        try:
            if not gate.connections.try_take():
                raise Denied(
                    "too many new connections (egress.connections_per_second "
                    f"{gate.settings.connections_per_second:g})",
                    429,
                )
            if len(gate.links) >= gate.settings.connections:
                raise Denied(
                    f"too many open connections (egress.connections {gate.settings.connections})",
                    429,
                )
            gate.links.add(link)
            await self._serve(gate, link, reader, writer)
        except Denied as exc:
            verdict = {403: "denied", 429: "limited"}.get(exc.status, "failed")
            host, port = (link.host, link.port) if link.host else (exc.host, exc.port)
            self.record(gate, host or "-", port, verdict, exc.reason)
            _answer_denied(writer, exc)
            await _close_gently(reader, writer)
        except (
            ConnectionError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            h11.ProtocolError,
            ssl.SSLError,
            OSError,
        ) as exc:
            log.debug("egress: session %s: connection ended: %r", gate.label(), exc)
        finally:
            gate.links.discard(link)
            link.abort()

    async def _serve(
        self, gate: Gate, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
        try:
            event = await _next_event(conn, reader, HANDSHAKE_TIMEOUT)
        except h11.RemoteProtocolError as exc:
            raise Denied(f"a malformed request ({exc})", 400) from None
        if not isinstance(event, h11.Request):
            return
        if event.method == b"CONNECT":
            await self._tunnel(gate, link, conn, event, reader, writer)
        else:
            await self._http(gate, link, conn, event, reader, writer, None, 0)

    def _check(self, gate: Gate, link: _Link, host: str, port: int) -> None:
        link.host, link.port = host, port
        reason = gate.policy.decide(host, port)
        if reason is not None:
            raise Denied(reason)

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            addresses, reason = await self.resolver.resolve(host, port)
        except Unresolved as exc:
            raise Denied(str(exc), 502) from None
        if reason is not None:
            raise Denied(reason)
        return addresses

    async def _open(
        self, addresses: list[IPAddress], host: str, port: int, tls: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        error: Exception | None = None
        for address in addresses:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        str(address),
                        port,
                        ssl=self._upstream_tls if tls else None,
                        server_hostname=host if tls else None,
                        limit=HEAD_LIMIT,
                    ),
                    HANDSHAKE_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                error = exc
        raise Denied(f"{host}:{port} could not be reached ({error})", 502)

    async def _tunnel(
        self,
        gate: Gate,
        link: _Link,
        conn: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        host, port = _authority(request.target.decode("ascii", "replace"))
        if not host or not port:
            raw = request.target.decode("ascii", "replace")
            raise Denied("CONNECT needs host:port", 400, host=_printable(raw)[:255])
        self._check(gate, link, host, port)
        addresses = await self._resolve(host, port)
        # a CONNECT has no body: h11 ends the message, then pauses (what follows is the tunnel's)
        event = conn.next_event()
        if isinstance(event, h11.EndOfMessage):
            event = conn.next_event()
        if event is not h11.PAUSED:
            raise Denied("a CONNECT with a body", 400)
        early, _ = conn.trailing_data
        secrets = gate.policy.headers_for(host)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        if secrets is not None:
            # the one case the proxy reads the traffic: it adds the domain's secrets
            assert self.ca is not None
            if early:
                raise Denied("data before the tunnel was open")
            await writer.start_tls(self.ca.context_for(host))
            inner = h11.Connection(h11.SERVER, max_incomplete_event_size=HEAD_LIMIT)
            event = await _next_event(inner, reader, HANDSHAKE_TIMEOUT)
            if isinstance(event, h11.Request):
                await self._http(gate, link, inner, event, reader, writer, host, port)
            return
        try:
            hello = await asyncio.wait_for(_read_client_hello(reader, early), HANDSHAKE_TIMEOUT)
            sni = server_name(hello)
        except ValueError as exc:
            self.record(gate, host, port, "denied", str(exc))
            writer.write(TLS_ACCESS_DENIED)
            return
        if sni is None or sni.rstrip(".").lower() != host:
            reason = f"TLS server name {sni!r} does not match the CONNECT host {host!r}"
            self.record(gate, host, port, "denied", reason)
            writer.write(TLS_ACCESS_DENIED)
            return
        up_reader, up_writer = await self._open(addresses, host, port, tls=False)
        link.upstream = up_writer
        self.record(gate, host, port, "allowed", "tls")
        up_writer.write(hello)
        await asyncio.gather(
            _pipe(reader, up_writer, gate.bandwidth), _pipe(up_reader, writer, gate.bandwidth)
        )

    async def _http(
        self,
        gate: Gate,
        link: _Link,
        conn: h11.Connection,
        request: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls_host: str | None,
        tls_port: int,
    ) -> None:
        """Requests one after another on one client connection, each checked on its own."""
        while True:
            host, port, target = _http_target(request, tls_host, tls_port)
            self._check(gate, link, host, port)
            secrets = gate.policy.headers_for(host)
            if tls_host is None and secrets is not None:
                raise Denied(f"{host} has secrets: it is reached over HTTPS only")
            addresses = await self._resolve(host, port)
            up_reader, up_writer = await self._open(addresses, host, port, tls_host is not None)
            link.upstream = up_writer
            self.record(gate, host, port, "allowed", "https (secrets added)" if secrets else "http")
            try:
                await _exchange(
                    conn,
                    reader,
                    writer,
                    request,
                    target,
                    secrets or (),
                    up_reader,
                    up_writer,
                    gate.bandwidth,
                )
            finally:
                up_writer.transport.abort()
                link.upstream = None
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
            event = await _next_event(conn, reader, IDLE_TIMEOUT)
            if not isinstance(event, h11.Request):
                return
            request = event


# -- helpers ----------------------------------------------------------------------------------


def _answer_denied(writer: asyncio.StreamWriter, exc: Denied) -> None:
    if writer.is_closing():
        return
    phrase = {400: "bad request", 429: "limited", 502: "unreachable"}.get(exc.status, "blocked")
    reason = _printable(exc.reason)
    text = (
        f"{DENIAL_PREFIX}: {reason}" if exc.status == 403 else f"sessionpool egress proxy: {reason}"
    )
    body = (text + "\n").encode()
    head = (
        f"HTTP/1.1 {exc.status} {text if exc.status == 403 else phrase}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        f"X-Sessionpool-Egress: {'denied' if exc.status == 403 else phrase}\r\n\r\n"
    )
    with contextlib.suppress(Exception):
        writer.write(head.encode() + body)


def _printable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)


async def _close_gently(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send the answer, then read what the client still sends for a moment before closing:
    closing with unread bytes resets the connection, and the client would lose the answer
    (a 429 refused before its request was read, say)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.drain(), 1.0)
        if writer.can_write_eof():
            writer.write_eof()

        async def discard() -> None:
            left = HEAD_LIMIT
            while left > 0 and (chunk := await reader.read(CHUNK)):
                left -= len(chunk)

        await asyncio.wait_for(discard(), 1.0)


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> Any:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(CHUNK), timeout)
        conn.receive_data(data)


def _authority(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) as a normalised host and a port; ("", 0) if bad."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        return "", 0
    port = int(port_text)
    if not 0 < port < 65536:
        return "", 0
    return _host(host), port


def _host(text: str) -> str:
    host = text.strip().strip("[]").rstrip(".").lower()
    if is_ip_literal(host):
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return ""


def _header(request: h11.Request, name: bytes) -> list[bytes]:
    return [v for n, v in request.headers if n == name]


def _http_target(
    request: h11.Request, tls_host: str | None, tls_port: int
) -> tuple[str, int, bytes]:
    """The host, port and origin-form target of one request; Denied if it is not one the proxy
    forwards. ``Host`` must name the URL's host (or the tunnel's)."""
    target = request.target.decode("ascii", "replace")
    hosts = _header(request, b"host")
    if len(hosts) != 1:
        raise Denied("a request needs exactly one Host header", 400)
    host_header, host_port = _split_host_header(hosts[0].decode("ascii", "replace"))
    if tls_host is not None:
        host, port = tls_host, tls_port
        if target.startswith("/"):
            path = target
        else:
            url = urllib.parse.urlsplit(target)
            if _host(url.hostname or "") != host:
                raise Denied(f"the URL's host does not match the tunnel's ({host})")
            path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
        default = 443
    else:
        if target.startswith("/"):
            raise Denied(
                "this is the egress proxy: send absolute URLs (set HTTP_PROXY), https via CONNECT",
                400,
            )
        url = urllib.parse.urlsplit(target)
        if url.scheme != "http":
            raise Denied(
                f"the proxy forwards http:// URLs; {url.scheme or 'this'} goes via CONNECT", 400
            )
        try:
            port = url.port or 80
        except ValueError:
            raise Denied("a bad port in the URL", 400) from None
        host = _host(url.hostname or "")
        if not host:
            raise Denied("a URL without a host", 400)
        path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))
        default = 80
    if host_header != host or (host_port or default) != port:
        raise Denied(
            f"the Host header ({hosts[0].decode('ascii', 'replace')}) does not match the "
            f"request's host ({host}:{port})",
            host=host,
            port=port,
        )
    return host, port, path.encode("ascii", "replace")


def _split_host_header(text: str) -> tuple[str, int]:
    """A Host header's host and port (0: none given, -1: not a number)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port and not port.isdigit():
        return _host(host), -1
    return _host(host), int(port) if port else 0


async def _exchange(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    request: h11.Request,
    target: bytes,
    secrets: Headers,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    bandwidth: Bucket,
) -> None:
    """Forward one request and its response; h11 frames both sides (no smuggling through)."""
    replaced = {name.lower().encode() for name, _ in secrets}
    headers = [(n, v) for n, v in request.headers if n not in HOP_BY_HOP and n not in replaced]
    headers += [(name.encode(), value.encode()) for name, value in secrets]
    headers.append((b"connection", b"close"))
    upstream = h11.Connection(h11.CLIENT, max_incomplete_event_size=HEAD_LIMIT)
    up_writer.write(
        upstream.send(h11.Request(method=request.method, target=target, headers=headers))
    )
    await _copy_body(conn, reader, upstream, up_writer, bandwidth, "the client", "request")
    while True:
        event = await _next_event(upstream, up_reader, IDLE_TIMEOUT)
        if isinstance(event, h11.InformationalResponse):
            continue
        if not isinstance(event, h11.Response):
            raise ConnectionError("the upstream went away")
        break
    out = [(n, v) for n, v in event.headers if n not in HOP_BY_HOP]
    writer.write(
        conn.send(h11.Response(status_code=event.status_code, headers=out, reason=event.reason))
    )
    await _copy_body(upstream, up_reader, conn, writer, bandwidth, "the upstream", "response")


async def _copy_body(
    source: h11.Connection,
    reader: asyncio.StreamReader,
    sink: h11.Connection,
    writer: asyncio.StreamWriter,
    bandwidth: Bucket,
    who: str,
    what: str,
) -> None:
    """One message's body from ``source`` to ``sink``, re-framed by h11, within the bandwidth."""
    while True:
        event = await _next_event(source, reader, IDLE_TIMEOUT)
        if isinstance(event, h11.Data):
            await bandwidth.take(len(event.data))
            writer.write(sink.send(event))
            await writer.drain()
        elif isinstance(event, h11.EndOfMessage):
            writer.write(sink.send(h11.EndOfMessage()))
            await writer.drain()
            return
        else:
            raise ConnectionError(f"{who} went away mid-{what}")


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, bandwidth: Bucket
) -> None:
    try:
        while True:
            data = await asyncio.wait_for(reader.read(CHUNK), IDLE_TIMEOUT)
            if not data:
                break
            await bandwidth.take(len(data))
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, TimeoutError, OSError):
        writer.transport.abort()


async def _read_client_hello(reader: asyncio.StreamReader, early: bytes) -> bytes:
    """The raw TLS records up to the end of the first handshake message (the ClientHello)."""
    buffered = bytearray(early)
    records = bytearray()
    handshake = bytearray()
    while True:
        while len(buffered) < 5:
            chunk = await reader.read(CHUNK)
            if not chunk:
                raise ValueError("the tunnel closed before a TLS ClientHello")
            buffered += chunk
        if buffered[0] != 0x16:
            raise ValueError(
                "only TLS may pass a CONNECT tunnel (the first bytes are not a TLS handshake)"
            )
        length = int.from_bytes(buffered[3:5], "big")
        while len(buffered) < 5 + length:
            chunk = await reader.read(CHUNK)
            if not chunk:
                raise ValueError("the tunnel closed inside the ClientHello")
            buffered += chunk
        records += buffered[: 5 + length]
        handshake += buffered[5 : 5 + length]
        del buffered[: 5 + length]
        if len(records) > HEAD_LIMIT:
            raise ValueError("the ClientHello is too large")
        if len(handshake) >= 4:
            need = 4 + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= need:
                return bytes(records + buffered)


def server_name(records: bytes) -> str | None:
    """The SNI host name of a ClientHello (TLS records as sent); raises ValueError if malformed."""
    data = bytearray()
    pos = 0
    while pos + 5 <= len(records) and records[pos] == 0x16:
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        data += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    try:
        if data[0] != 1:
            raise ValueError("the first TLS message is not a ClientHello")
        p = 4 + 2 + 32  # handshake header, legacy version, random
        p += 1 + data[p]  # session id
        p += 2 + int.from_bytes(data[p : p + 2], "big")  # cipher suites
        p += 1 + data[p]  # compression methods
        end = p + 2 + int.from_bytes(data[p : p + 2], "big")
        p += 2
        while p + 4 <= end:
            kind = int.from_bytes(data[p : p + 2], "big")
            size = int.from_bytes(data[p + 2 : p + 4], "big")
            body = data[p + 4 : p + 4 + size]
            p += 4 + size
            if kind == 0:  # server_name: list length, then (type 0, length, name)
                q = 2
                while q + 3 <= len(body):
                    name_type = body[q]
                    name_len = int.from_bytes(body[q + 1 : q + 3], "big")
                    name = bytes(body[q + 3 : q + 3 + name_len])
                    if name_type == 0:
                        return name.decode("ascii")
                    q += 3 + name_len
                return None
    except (IndexError, UnicodeDecodeError):
        raise ValueError("a malformed TLS ClientHello") from None
    return None

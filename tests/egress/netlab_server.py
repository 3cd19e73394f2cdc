"""The servers of the test internet, run inside its network namespace by ``netlab.Internet``.

Standard library only, so that it runs with any interpreter. It takes one argument, a JSON
file written by ``Internet``; it prints ``ready`` once every socket listens, and exits when its
standard input closes, so that it never outlives the test process, even a killed one.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHUNK = 64 * 1024
PROJECT = "sp-egress-probe"


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "netlab"
    timeout = 30  # an idle keep-alive connection does not hold its thread forever

    def log_message(self, format: str, *args: object) -> None:  # quiet: tests read the echo
        pass

    def _dispatch(self) -> None:
        body = self._read_body()
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        path = url.path
        if path == "/echo":
            self._echo(body)
        elif path == "/redirect" and "to" in query:
            self._send(302, b"", extra={"Location": query["to"][0]})
        elif path == "/bytes":
            self._bytes(int(query.get("n", ["0"])[0]))
        elif path == "/slow":
            time.sleep(float(query.get("s", ["1"])[0]))
            self._send(200, b"ok", "text/plain")
        elif path in ("/simple", "/simple/"):
            link = f'<a href="/simple/{PROJECT}/">{PROJECT}</a>'
            self._send(200, _page("Simple index", link), "text/html")
        elif path.startswith("/simple/") and _normalize(path[8:].strip("/")) == PROJECT:
            wheel = self.server.config["wheel"]  # type: ignore[attr-defined]
            href = f"/packages/{wheel['name']}#sha256={wheel['sha256']}"
            link = f'<a href="{href}">{wheel["name"]}</a>'
            self._send(200, _page(f"Links for {PROJECT}", link), "text/html")
        elif path.startswith("/packages/"):
            wheel = self.server.config["wheel"]  # type: ignore[attr-defined]
            if path[len("/packages/") :] != wheel["name"]:
                self._send(404, b"not found", "text/plain")
            else:
                data = Path(wheel["path"]).read_bytes()
                self._send(200, data, "application/octet-stream")
        else:
            self._send(404, b"not found", "text/plain")

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _dispatch

    def do_HEAD(self) -> None:
        self._read_body()
        self._send(200, b"", "text/plain")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _echo(self, body: bytes) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        local = self.connection.getsockname()
        data = {
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "sni": getattr(self.connection, "netlab_sni", None),
            "headers": headers,
            "body_len": len(body),
            "server_address": local[0],
            "server_port": local[1],
            "client_address": self.client_address[0],
        }
        self._send(200, json.dumps(data).encode(), "application/json")

    def _bytes(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        block = b"x" * CHUNK
        while n > 0:
            self.wfile.write(block[: min(n, CHUNK)])
            n -= CHUNK

    def _send(
        self, status: int, body: bytes, ctype: str = "", extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _page(title: str, link: str) -> bytes:
    head = f"<!DOCTYPE html>\n<html><head><title>{title}</title></head>"
    return f"{head}<body>\n{link}\n</body></html>\n".encode()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], config: dict, tls: ssl.SSLContext | None) -> None:
        self.config = config
        self.tls = tls
        super().__init__(address, Handler)

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:
        # the handshake runs in the connection's thread: a stalled client delays nobody else
        if self.tls is not None:
            request.settimeout(30)
            request = self.tls.wrap_socket(request, server_side=True)
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        pass  # clients that hang up or fail the handshake are part of the tests


def _tls(config: dict) -> ssl.SSLContext:
    """One context per name; the SNI callback swaps in the one asked for and notes the name."""
    contexts = {}
    for name, pem in config["certs"].items():
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pem)
        ctx.set_alpn_protocols(["http/1.1"])
        contexts[name] = ctx
    default = contexts[config["default_name"]]

    def choose(sock: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
        sock.netlab_sni = name  # type: ignore[attr-defined]
        sock.context = contexts.get(name or "", default)

    outer = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    outer.load_cert_chain(config["certs"][config["default_name"]])
    outer.set_alpn_protocols(["http/1.1"])
    outer.sni_callback = choose
    return outer


def _udp_echo(sock: socket.socket) -> None:
    while True:
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    tls = _tls(config)
    servers = []
    for address in config["addresses"]:
        servers.append(Server((address, 80), config, None))
        servers.append(Server((address, 443), config, tls))
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    for port in config["udp_ports"]:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((config["addresses"][0], port))
        threading.Thread(target=_udp_echo, args=(udp,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.buffer.read()  # until the test process closes the pipe, or dies


if __name__ == "__main__":
    main()

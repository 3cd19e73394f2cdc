"""Egress benchmark: what the egress proxy adds to a session's HTTP and HTTPS, and how many
connections per second it carries. Run from the repository root, as root (the jail backend and
the test internet's network namespace need it)::

    .venv/bin/python -m benchmarks.egress [--requests N] [--seconds S] [--download-mib N]
        [--cap-mib N] [--json PATH]

The upstream is the tests' internet (``tests/egress/netlab.py``): servers in a network namespace
on 203.0.113.0/24, reached through a veth pair; nothing leaves the machine. The same client code
runs twice: inside a jailed session, through the proxy (its only way out), and in a plain
process on the host, straight to the server's address. Both open a new connection for every
request (a TLS handshake each for HTTPS), send ``GET /echo`` and read the answer to its end, so
the difference is the proxy: its listener in the session's namespace, its policy check, its own
name resolution and upstream connect, and the copying (for the domain with secrets, a second TLS
termination and the headers added).

Rates: ``--threads`` client threads (in the session, or on the host for the peer) loop for
``--seconds`` and count completed requests, then bare HTTPS connections (CONNECT and a TLS
handshake with the upstream, closed without a request). On a 2-core machine the clients' own
TLS work shares the CPUs with the proxy and the servers, so a rate is of the whole path, not of
the proxy alone. The session's pool raises the per-session limits out of the way
(``connections_per_second = 0``, ``connections = 1024``, ``bytes_per_second = 0``).

Bandwidth: one HTTPS connection downloads ``--download-mib`` MiB, through the proxy and
direct; then a session of a second pool, ``bytes_per_second`` set to ``--cap-mib`` MiB/s,
downloads four seconds' worth. The proxy's bucket holds one second's worth to start with, so
the rate after the first quarter of the download (``steady``) is the one to hold to the cap.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from tests.egress.netlab import Internet

from benchmarks._common import RESULTS, percentiles
from sessionpool.config import EgressSettings, MiB, PoolConfig
from sessionpool.engine import Engine
from sessionpool.types import ExecutionStatus

ALLOWED, SECRET = Internet.ALLOWED, Internet.SECRET

#: the client: ``opener(host, port)`` gives a connected socket; ``one`` makes one request on a
#: new connection and returns its milliseconds
CLIENT = textwrap.dedent(
    r"""
    import json, os, socket, ssl, threading, time

    CTX = ssl.create_default_context(cafile=CAFILE)

    def read_all(s):
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data

    def one(host, tls):
        t0 = time.perf_counter()
        s = opener(host, 443 if tls else 80)
        if tls:
            s = CTX.wrap_socket(s, server_hostname=host)
            target = "/echo"
        else:
            target = PLAIN_TARGET.format(host=host)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = read_all(s)
        s.close()
        assert data.startswith(b"HTTP/1.1 200"), data[:200]
        return (time.perf_counter() - t0) * 1000

    # a connection and (for TLS) its handshake, closed without a request: what a tunnel
    # through the proxy costs by itself (CONNECT, policy, upstream connect, SNI check)
    def handshake(host, tls):
        s = opener(host, 443 if tls else 80)
        if tls:
            s = CTX.wrap_socket(s, server_hostname=host)
        s.close()

    # GET /bytes?n=... over one TLS connection: MiB/s overall, and after the first quarter
    # (past a token bucket's initial burst: the steady rate)
    def download(host, n):
        s = CTX.wrap_socket(opener(host, 443), server_hostname=host)
        head = f"GET /bytes?n={n} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        s.sendall(head.encode())
        got, mark, t_mark = 0, n // 4, None
        t0 = time.perf_counter()
        while chunk := s.recv(262144):
            got += len(chunk)
            if t_mark is None and got >= mark:
                t_mark, got_mark = time.perf_counter(), got
        t1 = time.perf_counter()
        s.close()
        assert got >= n, got
        mib = 1024 * 1024
        return {"bytes": got, "seconds": round(t1 - t0, 3),
                "mib_per_second": round(got / mib / (t1 - t0), 2),
                "steady_mib_per_second": round((got - got_mark) / mib / (t1 - t_mark), 2)}

    def latencies(host, tls, n):
        for _ in range(10):  # warm-up
            one(host, tls)
        return [one(host, tls) for _ in range(n)]

    def rate(host, tls, threads, seconds, what=one):
        done = [0] * threads
        errors = []
        end = time.monotonic() + seconds
        def loop(i):
            while time.monotonic() < end:
                try:
                    what(host, tls)
                    done[i] += 1
                except Exception as exc:
                    errors.append(repr(exc))
        ts = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        return {"per_second": sum(done) / (time.monotonic() - t0), "errors": len(errors),
                "first_error": errors[0] if errors else None}
    """
)

#: inside the session: through the proxy (CONNECT for TLS, an absolute URL for plain HTTP)
THROUGH_PROXY = textwrap.dedent(
    r"""
    import os, socket
    CAFILE = os.environ["SSL_CERT_FILE"]
    PLAIN_TARGET = "http://{host}/echo"
    PROXY = ("127.0.0.1", 3128)

    def opener(host, port):
        s = socket.create_connection(PROXY)
        if port == 80:
            return s
        s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 200"), head
        return s
    """
)

#: on the host: straight to the server's address
DIRECT = textwrap.dedent(
    r"""
    import os, socket
    CAFILE = os.environ["NETLAB_CA"]
    PLAIN_TARGET = "/echo"
    ADDRESS = os.environ["NETLAB_ADDRESS"]

    def opener(host, port):
        return socket.create_connection((ADDRESS, port))
    """
)


def _plan(
    requests: int, threads: int, seconds: float, hosts: list[tuple[str, bool]], download: int
) -> str:
    """The measuring program: latencies for each (host, tls), then the request rates, the rate
    of bare HTTPS connections (CONNECT and a TLS handshake with the upstream, no request) and
    one HTTPS download of ``download`` bytes."""
    return textwrap.dedent(
        f"""
        out = {{"latency": {{}}, "rate": {{}}, "tunnels": {{}}}}
        for host, tls in {hosts!r}:
            key = ("https " if tls else "http ") + host
            out["latency"][key] = latencies(host, tls, {requests})
        for host, tls in {hosts!r}:
            key = ("https " if tls else "http ") + host
            out["rate"][key] = rate(host, tls, {threads}, {seconds})
        tunnels = rate({ALLOWED!r}, True, {threads}, {seconds}, handshake)
        out["tunnels"]["https " + {ALLOWED!r}] = tunnels
        download({ALLOWED!r}, 4 << 20)  # warm-up
        out["download"] = download({ALLOWED!r}, {download})
        print("@@" + json.dumps(out))
        """
    )


def _capped_plan(download: int) -> str:
    """In a session of the pool with a bandwidth cap: one download through it."""
    return textwrap.dedent(
        f"""
        print("@@" + json.dumps({{"download": download({ALLOWED!r}, {download})}}))
        """
    )


def _parse(stdout: str) -> dict[str, Any]:
    lines = [line for line in stdout.splitlines() if line.startswith("@@")]
    if not lines:
        raise RuntimeError(f"the probe printed no result: {stdout[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][2:])
    return result


async def _in_sessions(
    internet: Internet, program: str, capped_program: str, cap: int, data_dir: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``program`` in a session of a pool without limits worth the name (so the limits are not
    what is measured), then ``capped_program`` in one of a pool whose bandwidth is ``cap``."""
    unlimited = EgressSettings(
        allow=(ALLOWED, SECRET),
        secrets=((SECRET, (("Authorization", "Bearer bench-secret"),)),),
        bytes_per_second=0,
        connections=1024,
        connections_per_second=0,
    )
    capped = EgressSettings(allow=(ALLOWED,), bytes_per_second=cap)
    engine = Engine(
        internet.engine_config(data_dir),
        [
            PoolConfig(
                name=name,
                network="allowlist",
                egress=settings,
                ready_sessions=1,
                execution_timeout_seconds=600,
            )
            for name, settings in (("net", unlimited), ("capped", capped))
        ],
    )
    await engine.start()
    try:
        results = []
        for pool, code in (("net", program), ("capped", capped_program)):
            session = await engine.pool(pool).acquire(f"bench-egress-{pool}")
            result = await session.execute(code, timeout=600)
            if result.status is not ExecutionStatus.OK:
                raise RuntimeError(
                    f"the probe failed in the session: {result.error} {result.stderr}"
                )
            results.append(_parse(result.stdout))
        return results[0], results[1]
    finally:
        await engine.close()


def _on_host(internet: Internet, program: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "NETLAB_CA": str(internet.ca_file),
        "NETLAB_ADDRESS": internet.address,
    }
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"the direct probe failed: {done.stderr[-2000:]}")
    return _parse(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="latency samples per case")
    parser.add_argument("--threads", type=int, default=8, help="client threads for the rates")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each rate run")
    parser.add_argument(
        "--download-mib", type=int, default=256, help="size of the one-tunnel download (MiB)"
    )
    parser.add_argument(
        "--cap-mib", type=int, default=4, help="bytes_per_second of the capped pool (MiB/s)"
    )
    parser.add_argument("--json", type=Path, help="where to write the results")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("benchmarks.egress needs root (the jail and the test internet's namespace)")

    through = [(ALLOWED, False), (ALLOWED, True), (SECRET, True)]
    direct = [(ALLOWED, False), (ALLOWED, True)]
    with Internet() as internet, tempfile.TemporaryDirectory(prefix="bench-egress-") as tmp:
        size, cap = args.download_mib * MiB, args.cap_mib * MiB
        proxied, capped = asyncio.run(
            _in_sessions(
                internet,
                THROUGH_PROXY
                + CLIENT
                + _plan(args.requests, args.threads, args.seconds, through, size),
                # four seconds' worth: the first quarter is the bucket's burst (one second)
                THROUGH_PROXY + CLIENT + _capped_plan(4 * cap),
                cap,
                Path(tmp),
            )
        )
        straight = _on_host(
            internet,
            DIRECT + CLIENT + _plan(args.requests, args.threads, args.seconds, direct, size),
        )

    rows = []
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count()},
        "requests": args.requests,
        "threads": args.threads,
        "seconds": args.seconds,
        "latency_ms": {},
        "rate_per_second": {},
        "tunnels_per_second": {},
    }
    for key, samples in proxied["latency"].items():
        label = key + (" (secrets: TLS terminated)" if SECRET in key else "")
        report["latency_ms"][f"session through the proxy: {label}"] = percentiles(samples)
    for key, samples in straight["latency"].items():
        report["latency_ms"][f"host, direct: {key}"] = percentiles(samples)
    for key, value in proxied["rate"].items():
        report["rate_per_second"][f"session through the proxy: {key}"] = value
    for key, value in straight["rate"].items():
        report["rate_per_second"][f"host, direct: {key}"] = value
    for key, value in proxied["tunnels"].items():
        report["tunnels_per_second"][f"session through the proxy: {key}"] = value
    for key, value in straight["tunnels"].items():
        report["tunnels_per_second"][f"host, direct: {key}"] = value
    report["one_tunnel_download"] = {
        "session through the proxy (no bandwidth limit)": proxied["download"],
        "host, direct": straight["download"],
    }
    report["bandwidth_cap"] = {
        "bytes_per_second": cap,
        "configured_mib_per_second": args.cap_mib,
        **capped["download"],
    }
    added: dict[str, dict[str, float]] = {}
    for name in ("http", "https"):
        key = f"{name} {ALLOWED}"
        p, d = percentiles(proxied["latency"][key]), percentiles(straight["latency"][key])
        added[name] = {"p50": round(p["p50"] - d["p50"], 3), "p99": round(p["p99"] - d["p99"], 3)}
    p, d = (
        percentiles(proxied["latency"][f"https {SECRET}"]),
        percentiles(straight["latency"][f"https {ALLOWED}"]),
    )
    added["https with secrets"] = {
        "p50": round(p["p50"] - d["p50"], 3),
        "p99": round(p["p99"] - d["p99"], 3),
    }
    report["added_by_proxy_ms"] = added

    rows.append("| case | p50 ms | p99 ms |")
    rows.append("|---|---|---|")
    for key, s in report["latency_ms"].items():
        rows.append(f"| {key} | {s['p50']:.2f} | {s['p99']:.2f} |")
    for key, s in added.items():
        rows.append(f"| added by the proxy: {key} | {s['p50']:.2f} | {s['p99']:.2f} |")
    rows.append("")
    rows.append(
        f"| rate ({args.threads} client threads, {args.seconds:g} s) | requests/s | errors |"
    )
    rows.append("|---|---|---|")
    for key, r in report["rate_per_second"].items():
        rows.append(f"| {key} | {r['per_second']:.0f} | {r['errors']} |")
    rows.append("")
    rows.append("| HTTPS connections/s (a TLS handshake, no request) | per s | errors |")
    rows.append("|---|---|---|")
    for key, r in report["tunnels_per_second"].items():
        rows.append(f"| {key} | {r['per_second']:.0f} | {r['errors']} |")
    rows.append("")
    rows.append("| one HTTPS connection's download | MiB | MiB/s | steady MiB/s |")
    rows.append("|---|---|---|---|")
    downloads = {
        **report["one_tunnel_download"],
        f"capped at {args.cap_mib} MiB/s": report["bandwidth_cap"],
    }
    for key, d in downloads.items():
        rows.append(
            f"| {key} | {d['bytes'] / MiB:.0f} | {d['mib_per_second']:.1f} "
            f"| {d['steady_mib_per_second']:.1f} |"
        )
    print("\n".join(rows))
    path = args.json or RESULTS / f"egress-{dt.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()

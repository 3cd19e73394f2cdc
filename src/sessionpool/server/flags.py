"""The flags of ``sessionpool serve``, apart from the server so that building the command line's
parser (``sessionpool --help``, the client commands) does not load the application."""

from __future__ import annotations

import argparse
from pathlib import Path

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")
LOG_FORMATS = ("text", "json")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``serve``; each also has a SESSIONPOOL_* variable and a [server] TOML key."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML file with [server] and [pools.<name>] tables (SESSIONPOOL_CONFIG)",
    )
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind; 0 picks a free one (default 8080)")
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help="accepted API key; repeat for several (SESSIONPOOL_API_KEYS, comma-separated)",
    )
    parser.add_argument(
        "--api-key-file",
        type=Path,
        metavar="FILE",
        help="keys, one per line; a key is generated here when none is configured "
        "(default <data-dir>/api-key)",
    )
    parser.add_argument(
        "--no-auth",
        action="store_const",
        const=True,
        default=None,
        help="development only: no authentication; refused unless the host is loopback",
    )
    parser.add_argument(
        "--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain: serve https"
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="PEM private key for --tls-cert"
    )
    parser.add_argument(
        "--tls-self-signed",
        type=Path,
        metavar="DIR",
        help="create (or reuse) a local CA and a localhost certificate in DIR and serve https; "
        "clients trust DIR/ca.pem",
    )
    parser.add_argument(
        "--backend",
        choices=("jail", "unsafe"),
        help="sandbox backend (default jail; unsafe runs code WITHOUT isolation)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="workspaces and state (default /var/lib/sessionpool)",
    )
    parser.add_argument(
        "--runtimes-dir",
        type=Path,
        metavar="DIR",
        help="built session runtimes (default: share/sessionpool/runtimes beside this Python)",
    )
    parser.add_argument(
        "--shutdown-deadline",
        dest="shutdown_deadline_seconds",
        type=float,
        metavar="SECONDS",
        help="how long executions in flight may finish after a stop signal (default 10)",
    )
    parser.add_argument(
        "--cluster",
        metavar="ADDRESS",
        help="join the Ray cluster at ADDRESS and serve every session pool across its nodes "
        "([cluster] address, SESSIONPOOL_CLUSTER_ADDRESS); see docs/cluster.md",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_const",
        const=False,
        default=None,
        help="do not log every request",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one object per line, with the request id",
    )
    parser.add_argument(
        "--audit-log",
        type=Path,
        metavar="FILE",
        help="write the audit log (who did what to which session or file) to FILE, as JSON "
        "lines (default: with the other logs)",
    )
    parser.add_argument(
        "--otel-traces",
        action="store_const",
        const=True,
        default=None,
        help="OpenTelemetry traces of the requests (needs the otel extra; the exporter comes "
        "from the OTEL_* variables)",
    )

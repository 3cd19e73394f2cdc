"""The client subcommands of ``sessionpool``: exec, run, files, sessions, repl, cluster.

Endpoint and key come from, in increasing precedence: the client config file
(``~/.config/sessionpool/client.toml`` or ``--client-config`` / ``SESSIONPOOL_CLIENT_CONFIG``),
the environment (``SESSIONPOOL_ENDPOINT``, ``SESSIONPOOL_API_KEY``), then flags.

Exit codes (also in docs/client.md) are stable, for scripts:
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import httpx

from sessionpool.client._base import (
    API_KEY_ENV,
    CA_ENV,
    DEFAULT_TIMEOUT,
    ENDPOINT_ENV,
    verify_for,
)
from sessionpool.client._exceptions import (
    AuthenticationError,
    ConnectionFailed,
    ExecutionTimeout,
    FileTooLarge,
    NotFound,
    PoolExhausted,
    RequestTimeout,
    ServerError,
    SessionLost,
    SessionpoolError,
)
from sessionpool.client._models import ExecutionResult
from sessionpool.client._protocol import Protocol, error_for, transport_error
from sessionpool.client._sync import Client, Session

CONFIG_ENV = "SESSIONPOOL_CLIENT_CONFIG"
DEFAULT_CONFIG = Path("~/.config/sessionpool/client.toml")
HISTORY_ENV = "SESSIONPOOL_HISTORY"
DEFAULT_HISTORY = Path("~/.sessionpool_history")
#: transfers larger than this show progress on stderr
PROGRESS_THRESHOLD = 1024 * 1024

# --- exit codes --------------------------------------------------------------------------------
OK = 0
#: the code raised, or the shell command failed
CODE_FAILED = 1
#: bad usage: unknown flag, missing endpoint, unreadable file (argparse also uses 2)
USAGE = 2
AUTH = 3
NOT_FOUND = 4
TIMEOUT = 5
LOST = 6
UNREACHABLE = 7
TOO_LARGE = 8
EXHAUSTED = 9
OTHER = 10

EXIT_CODES: list[tuple[int, str]] = [
    (OK, "success"),
    (CODE_FAILED, "the code raised an exception"),
    (USAGE, "bad usage or configuration (no endpoint, unreadable input)"),
    (AUTH, "the API key was refused (401/403)"),
    (NOT_FOUND, "no such pool, session, file or node (404)"),
    (TIMEOUT, "the execution timed out"),
    (LOST, "the session's interpreter died"),
    (UNREACHABLE, "the server could not be reached or did not answer in time"),
    (TOO_LARGE, "the upload is over the per-file limit or the session's quota (413)"),
    (EXHAUSTED, "the pool has no session to give (max_sessions)"),
    (OTHER, "any other error from the server"),
]
__doc__ = (__doc__ or "") + "\n" + "\n".join(f"    {c:>2}  {what}" for c, what in EXIT_CODES)

_ERROR_EXIT: list[tuple[type[SessionpoolError], int]] = [
    (AuthenticationError, AUTH),
    (PoolExhausted, EXHAUSTED),
    (NotFound, NOT_FOUND),
    (ExecutionTimeout, TIMEOUT),
    (SessionLost, LOST),
    (ConnectionFailed, UNREACHABLE),
    (RequestTimeout, UNREACHABLE),
    (FileTooLarge, TOO_LARGE),
]


def exit_code_for(exc: SessionpoolError) -> int:
    for cls, code in _ERROR_EXIT:
        if isinstance(exc, cls):
            return code
    return OTHER


class UsageError(Exception):
    pass


# --- configuration -----------------------------------------------------------------------------


def _config_file(args: argparse.Namespace) -> dict[str, Any]:
    explicit = args.client_config or os.environ.get(CONFIG_ENV)
    path = Path(explicit or DEFAULT_CONFIG).expanduser()
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if explicit:
            raise UsageError(f"client config file {path} does not exist") from None
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read client config file {path}: {exc}") from None
    unknown = set(data) - {"endpoint", "api_key", "api_key_file", "ca"}
    if unknown:
        raise UsageError(
            f"{path}: unknown keys {sorted(unknown)}; known: endpoint, api_key, api_key_file, ca"
        )
    return data


def connection(args: argparse.Namespace) -> tuple[str, str | None, bool | str]:
    """Endpoint, API key and TLS verification from flags, environment, then the config file."""
    config = _config_file(args)
    endpoint = args.endpoint or os.environ.get(ENDPOINT_ENV) or config.get("endpoint")
    if not endpoint:
        raise UsageError(
            'no endpoint: pass --endpoint, set SESSIONPOOL_ENDPOINT, or put endpoint = "..." in '
            f"{DEFAULT_CONFIG} (e.g. http://127.0.0.1:8080/pools/default)"
        )
    key = args.api_key or os.environ.get(API_KEY_ENV) or config.get("api_key")
    if not key and config.get("api_key_file"):
        key_file = Path(str(config["api_key_file"])).expanduser()
        try:
            key = key_file.read_text().split()[0]
        except (OSError, IndexError) as exc:
            raise UsageError(f"cannot read api_key_file {key_file}: {exc}") from None
    ca = args.ca or os.environ.get(CA_ENV) or config.get("ca")
    return str(endpoint), str(key) if key else None, str(ca) if ca else True


def make_client(args: argparse.Namespace) -> Client:
    endpoint, key, verify = connection(args)
    try:
        return Client(endpoint, api_key=key, verify=verify)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None


# --- output ------------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on stderr, shown only for transfers over PROGRESS_THRESHOLD."""

    def __init__(self, label: str, stream: TextIO, enabled: bool) -> None:
        self.label = label
        self.stream = stream
        self.enabled = enabled
        self.shown = False
        self._last = 0.0

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled or (total or done) <= PROGRESS_THRESHOLD:
            return
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last < 0.1:
            return
        self._last = now
        self.shown = True
        if total:
            pct = 100 * done // total
            bar = "#" * (pct // 4)
            line = f"\r{self.label} [{bar:<25}] {pct:3d}% {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        else:
            line = f"\r{self.label} {done / 1e6:.1f} MB"
        self.stream.write(line)
        self.stream.flush()

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _image_paths(result: ExecutionResult, directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(result.images, 1):
        path = directory / f"{stem}-{i}.{image.format}"
        image.save(path)
        paths.append(path)
    return paths


def report(
    result: ExecutionResult,
    args: argparse.Namespace,
    session: str,
    out: TextIO,
    err: TextIO,
    streamed: tuple[str, str] | None = None,
) -> int:
    """Print a result; ``streamed`` is the (stdout, stderr) already printed as it came."""
    shown_out, shown_err = streamed or ("", "")
    stem = f"sessionpool-{(result.execution_id or str(int(time.time())))[:12]}"
    paths = _image_paths(result, Path(args.images_dir), stem) if result.images else []
    if args.json:
        doc: dict[str, Any] = {
            "session": session,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "text": result.text,
            "images": [str(p) for p in paths],
            "error": asdict(result.error) if result.error else None,
            "duration": result.duration,
        }
        out.write(json.dumps(doc) + "\n")
    else:
        out.write(_rest(result.stdout, shown_out))
        if result.stdout and not result.stdout.endswith("\n") and result.text:
            out.write("\n")
        if result.text:
            out.write(result.text + "\n")
        out.flush()
        err.write(_rest(result.stderr, shown_err))  # the traceback, notes the server added
        if result.stderr and not result.stderr.endswith("\n"):
            err.write("\n")
        for path in paths:
            err.write(f"[image saved to {path}]\n")
        err.flush()
    return CODE_FAILED if result.error is not None else OK


# --- commands ----------------------------------------------------------------------------------


@contextmanager
def _session(client: Client, ident: str | None) -> Iterator[Session]:
    """The named session (kept), or a new one destroyed afterwards."""
    session = client.session(ident)
    try:
        yield session
    finally:
        if ident is None:
            try:
                session.close()
            except SessionpoolError:
                pass


def _rest(full: str, shown: str) -> str:
    """What of ``full`` has not been printed yet, ``shown`` being printed already."""
    return full[len(shown) :] if full.startswith(shown) else ("" if shown else full)


def execute(session: Session, code: str, args: argparse.Namespace) -> int:
    """Run ``code`` and print its output; streamed as it is written unless ``--json``."""
    if args.json:
        result = session.run(code, timeout=args.timeout)
        return report(result, args, session.identifier, sys.stdout, sys.stderr)
    final: ExecutionResult | None = None
    started = False
    shown = {"stdout": "", "stderr": ""}
    try:
        for event in session.stream(code, timeout=args.timeout):
            started = True
            if event.kind == "result":
                final = event.result
            else:
                stream = sys.stdout if event.kind == "stdout" else sys.stderr
                stream.write(event.text)
                stream.flush()
                shown[event.kind] += event.text
    except NotFound:
        if started:
            raise
        # no streaming route (an Azure pool): run it, and print at the end
        result = session.run(code, timeout=args.timeout)
        return report(result, args, session.identifier, sys.stdout, sys.stderr)
    if final is None:
        raise ServerError("the server ended the stream without a result; retry the call")
    streamed = (shown["stdout"], shown["stderr"])
    return report(final, args, session.identifier, sys.stdout, sys.stderr, streamed=streamed)


def _run_code(args: argparse.Namespace, code: str) -> int:
    with make_client(args) as client, _session(client, args.session) as session:
        return execute(session, code, args)


def cmd_exec(args: argparse.Namespace) -> int:
    code = sys.stdin.read() if args.code == "-" else args.code
    return _run_code(args, code)


def cmd_run(args: argparse.Namespace) -> int:
    try:
        code = Path(args.file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    return _run_code(args, code)


def cmd_files(args: argparse.Namespace) -> int:
    show = not args.json and not args.quiet
    with make_client(args) as client:
        session = client.session(args.session)
        if args.files_command == "ls":
            infos = session.files(args.path)
            if args.json:
                print(json.dumps([asdict(i) for i in infos]))
            else:
                for i in infos:
                    kind = "d" if i.is_dir else "-"
                    print(f"{kind} {i.size:>12}  {i.modified}  {i.name}")
            return OK
        if args.files_command == "put":
            local = Path(args.local)
            if not local.is_file():
                raise UsageError(f"{local} is not a file")
            bar = Progress(f"upload {local.name}", sys.stderr, show)
            info = session.upload(local, args.remote or local.name, progress=bar)
            bar.end()
            if args.json:
                print(json.dumps(asdict(info)))
            elif not args.quiet:
                print(f"uploaded {local} -> /mnt/data/{info.name} ({info.size} bytes)")
            return OK
        if args.files_command == "get":
            bar = Progress(f"download {args.remote}", sys.stderr, show and args.local != "-")
            data = session.download(args.remote, progress=bar)
            bar.end()
            if args.local == "-":
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
                return OK
            target = Path(args.local or Path(args.remote).name)
            if target.is_dir():
                target = target / Path(args.remote).name
            target.write_bytes(data)
            if args.json:
                print(json.dumps({"path": str(target), "size": len(data)}))
            elif not args.quiet:
                print(
                    f"downloaded /mnt/data/{args.remote.removeprefix('/mnt/data/')} -> "
                    f"{target} ({len(data)} bytes)"
                )
            return OK
        for name in args.names:
            session.delete_file(name)
            if not args.json and not args.quiet:
                print(f"deleted {name}")
        return OK


def cmd_sessions(args: argparse.Namespace) -> int:
    with make_client(args) as client:
        if args.sessions_command == "ls":
            infos = client.sessions()
            if args.json:
                print(json.dumps([asdict(i) for i in infos]))
            else:
                for i in infos:
                    print(f"{i.identifier}  created {i.created_at}  expires {i.expires_at}")
            return OK
        for ident in args.identifiers:
            client.delete_session(ident)
            if not args.json:
                print(f"deleted session {ident}")
        return OK


# --- cluster: the nodes behind a gateway in cluster mode --------------------------------------


def server_root(endpoint: str) -> str:
    """The server's root URL from a pool endpoint (``http://h:8080/pools/default`` ->
    ``http://h:8080``); an endpoint without ``/pools/`` is the root already."""
    base = endpoint.rstrip("/")
    head, found, _ = base.rpartition("/pools/")
    return head if found else base


class ClusterAdmin:
    """The cluster routes of a gateway, at its root: ``GET /cluster`` and
    ``POST /cluster/nodes/{node_id}/drain``."""

    def __init__(self, args: argparse.Namespace) -> None:
        endpoint, key, verify = connection(args)
        try:
            self.protocol = Protocol(endpoint, key)
            self.http = httpx.Client(timeout=DEFAULT_TIMEOUT, verify=verify_for(verify))
        except (ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
        self.root = server_root(self.protocol.endpoint)

    def close(self) -> None:
        self.http.close()

    def _send(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        request = self.http.build_request(
            method, self.root + path, headers=self.protocol.headers(), json=body
        )
        try:
            response = self.http.send(request)
        except httpx.TransportError as exc:
            raise transport_error(request, exc) from exc
        if response.status_code == 404 and path == "/cluster":
            raise NotFound(
                f"{self.root} has no GET /cluster: it is not a gateway in cluster mode "
                "(sessionpool serve --cluster ADDRESS), or the endpoint is not a sessionpool "
                "server",
                status=404,
            )
        if not response.is_success:
            raise error_for(response, f"{method} {path}")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise ServerError(
                f"{method} {path}: unexpected answer {response.text[:200]!r}",
                status=response.status_code,
            )
        return answer

    def view(self) -> dict[str, Any]:
        return self._send("GET", "/cluster")

    def node_id(self, given: str) -> str:
        """The full id of the node ``given`` names (its id, or a prefix of it that is unique)."""
        ids = [str(n.get("node_id", "")) for n in self.view().get("nodes", [])]
        if given in ids:
            return given
        matches = [i for i in ids if given and i.startswith(given)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFound(
                f"no node {given!r} in the cluster; `sessionpool cluster` lists them", status=404
            )
        raise UsageError(f"{given!r} is the start of {len(matches)} node ids: give more of it")

    def drain(self, node_id: str, draining: bool) -> dict[str, Any]:
        return self._send("POST", f"/cluster/nodes/{node_id}/drain", {"draining": draining})


def _memory(value: object) -> str:
    return f"{value / 2**30:.1f} GiB" if isinstance(value, int | float) else "-"


def format_cluster(view: dict[str, Any]) -> str:
    """``GET /cluster`` as a table: one line per node, sessions/ready per pool."""
    nodes = view.get("nodes", [])
    pools = list(view.get("pools", {}))
    if not nodes:
        return "no nodes in the cluster yet\n"
    header = ["NODE", "STATE", "FREE MEM", *pools]
    rows = [header]
    for node in nodes:
        figures = node.get("pools", {})
        rows.append(
            [
                str(node.get("node_id", ""))[:12],
                str(node.get("state", "")),
                _memory(node.get("mem_available")),
                *(
                    f"{figures.get(p, {}).get('sessions', 0)}/{figures.get(p, {}).get('ready', 0)}"
                    for p in pools
                ),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    placed = ", ".join(
        f"{name} {info.get('placed', 0)} of {info.get('max_sessions', '?')}"
        for name, info in view.get("pools", {}).items()
    )
    lines.append(f"(per pool: sessions/ready; placed across the cluster: {placed})")
    for node in nodes:
        if node.get("error"):
            lines.append(f"{str(node.get('node_id', ''))[:12]}: {node['error']}")
    if view.get("lost_pending"):
        lines.append(f"{view['lost_pending']} loss notices not yet received by a client")
    return "\n".join(lines) + "\n"


def cmd_cluster(args: argparse.Namespace) -> int:
    admin = ClusterAdmin(args)
    try:
        if args.cluster_command is None:
            view = admin.view()
            sys.stdout.write(json.dumps(view) + "\n" if args.json else format_cluster(view))
            return OK
        draining = args.cluster_command == "drain"
        node_id = admin.node_id(args.node_id)
        answer = admin.drain(node_id, draining)
        if args.json:
            print(json.dumps(answer))
        elif draining:
            print(f"node {node_id} is draining: no new sessions go there")
        else:
            print(f"node {node_id} takes new sessions again")
        return OK
    finally:
        admin.close()


def _complete(source: str) -> bool:
    """True when ``source`` is a complete statement (or a syntax error the server will report)."""
    import codeop

    try:
        return codeop.compile_command(source, "<repl>", "exec") is not None
    except (SyntaxError, ValueError, OverflowError):
        return True


def cmd_repl(args: argparse.Namespace) -> int:
    interactive = sys.stdin.isatty()
    history = Path(os.environ.get(HISTORY_ENV) or DEFAULT_HISTORY).expanduser()
    readline: Any = None
    try:
        import readline as _readline

        readline = _readline
        try:
            readline.read_history_file(history)
        except OSError:
            pass
        readline.set_history_length(10_000)
    except ImportError:  # pragma: no cover - no readline on this platform
        pass
    last = OK
    with make_client(args) as client, _session(client, args.session) as session:
        if interactive:
            print(
                f"sessionpool repl: session {session.identifier} at {client.endpoint}\n"
                "Enter runs a complete statement; an empty line ends a block; Ctrl-D quits."
            )
        lines: list[str] = []
        while True:
            prompt = ("... " if lines else ">>> ") if interactive else ""
            try:
                line = input(prompt)
            except EOFError:
                if interactive:
                    print()
                break
            except KeyboardInterrupt:
                print("\nKeyboardInterrupt")
                lines = []
                continue
            lines.append(line)
            source = "\n".join(lines)
            if not source.strip():
                lines = []
                continue
            if line and (not _complete(source) or (len(lines) > 1 and line.strip())):
                continue  # more to come (a block ends with an empty line)
            lines = []
            if readline is not None and not interactive:
                readline.add_history(source)  # interactive input is added by readline itself
            try:
                last = execute(session, source, args)
            except (ExecutionTimeout, SessionLost) as exc:
                print(f"error: {exc}", file=sys.stderr)
                last = exit_code_for(exc)
        if lines and "\n".join(lines).strip():
            last = execute(session, "\n".join(lines), args)
    if readline is not None:
        try:
            history.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(history)
        except OSError:
            pass
    return last if not interactive else OK


# --- parser ------------------------------------------------------------------------------------


def _common(inherit: bool = False) -> argparse.ArgumentParser:
    """The connection flags and ``--json``. ``inherit``: for a subcommand under a parser that
    has them too; an absent flag then keeps what the outer parser read (no default of its own)."""
    common = argparse.ArgumentParser(
        add_help=False, argument_default=argparse.SUPPRESS if inherit else None
    )
    g = common.add_argument_group("connection")
    g.add_argument("--endpoint", help=f"pool endpoint URL (or {ENDPOINT_ENV})")
    g.add_argument("--api-key", help=f"API key (or {API_KEY_ENV})")
    g.add_argument(
        "--ca", help=f"CA certificate (PEM) to trust, for a self-signed server (or {CA_ENV})"
    )
    g.add_argument(
        "--client-config",
        help=f"client config file (or {CONFIG_ENV}; default {DEFAULT_CONFIG})",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def _execution_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--session",
        help="session identifier: kept after the call (default: a new session, deleted after)",
    )
    p.add_argument("--timeout", type=float, help="execution timeout in seconds")
    p.add_argument(
        "--images-dir", default=".", help="where images the code displays are saved (default .)"
    )


EPILOG = "exit codes:\n" + "\n".join(f"  {c:>2}  {what}" for c, what in EXIT_CODES)


def add_client_commands(sub: Any) -> None:
    """Add exec, run, files, sessions, repl and cluster to the ``sessionpool`` parser's
    subcommands."""
    common = _common()
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "exec",
        parents=[common],
        help="run Python code in a session",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _execution_args(p)
    p.add_argument("code", help="the code, or - to read it from stdin")
    p.set_defaults(func=_guard(cmd_exec))

    p = sub.add_parser(
        "run",
        parents=[common],
        help="run a Python file in a session",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _execution_args(p)
    p.add_argument("file", help="a local .py file")
    p.set_defaults(func=_guard(cmd_run))

    p = sub.add_parser("files", help="list, upload, download, delete a session's files")
    files = p.add_subparsers(dest="files_command", required=True)
    for name, helptext in [
        ("ls", "list files"),
        ("put", "upload a local file"),
        ("get", "download a file"),
        ("rm", "delete files"),
    ]:
        fp = files.add_parser(
            name, parents=[common], help=helptext, epilog=EPILOG, formatter_class=fmt
        )
        fp.add_argument("--session", required=True, help="session identifier")
        fp.add_argument("-q", "--quiet", action="store_true", help="no progress or messages")
        if name == "ls":
            fp.add_argument("path", nargs="?", default="", help="directory under /mnt/data")
        elif name == "put":
            fp.add_argument("local")
            fp.add_argument("remote", nargs="?", help="name under /mnt/data (default: same)")
        elif name == "get":
            fp.add_argument("remote")
            fp.add_argument("local", nargs="?", help="local path, directory or - for stdout")
        else:
            fp.add_argument("names", nargs="+")
        fp.set_defaults(func=_guard(cmd_files))

    p = sub.add_parser("sessions", help="list or delete sessions")
    sessions = p.add_subparsers(dest="sessions_command", required=True)
    sp = sessions.add_parser(
        "ls", parents=[common], help="list sessions", epilog=EPILOG, formatter_class=fmt
    )
    sp.set_defaults(func=_guard(cmd_sessions))
    sp = sessions.add_parser(
        "rm", parents=[common], help="delete sessions", epilog=EPILOG, formatter_class=fmt
    )
    sp.add_argument("identifiers", nargs="+")
    sp.set_defaults(func=_guard(cmd_sessions))

    p = sub.add_parser(
        "repl",
        parents=[common],
        help="an interactive prompt bound to one session",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    _execution_args(p)
    p.set_defaults(func=_guard(cmd_repl))

    p = sub.add_parser(
        "cluster",
        parents=[common],
        help="a cluster's nodes (a gateway in cluster mode); drain or undrain one",
        description="Without a subcommand: the nodes, their state, sessions/ready per pool and "
        "free memory (GET /cluster at the server's root; --endpoint may be the root or any "
        "pool endpoint).",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    p.set_defaults(func=_guard(cmd_cluster), cluster_command=None)
    nodes = p.add_subparsers(dest="cluster_command", metavar="{drain,undrain}")
    for name, helptext in [
        ("drain", "place no new sessions on a node (its sessions keep running)"),
        ("undrain", "let a drained node take new sessions again"),
    ]:
        np = nodes.add_parser(
            name, parents=[_common(inherit=True)], help=helptext, epilog=EPILOG, formatter_class=fmt
        )
        np.add_argument("node_id", help="the node's id, or a unique start of it")


def _guard(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run ``command``; turn client errors into a message on stderr and the documented exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            _fail(args, "UsageError", str(exc))
            return USAGE
        except SessionpoolError as exc:
            _fail(args, type(exc).__name__, exc.message)
            return exit_code_for(exc)
        except KeyboardInterrupt:
            return 130

    return run


def _fail(args: argparse.Namespace, kind: str, message: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"error": {"type": kind, "message": message}}))
    else:
        print(f"sessionpool: {message}", file=sys.stderr)

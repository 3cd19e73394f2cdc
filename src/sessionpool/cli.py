"""The ``sessionpool`` command: ``serve`` (the HTTP server), ``doctor`` (host checks), ``runtime``
(session runtimes), the client
commands ``exec``, ``run``, ``files``, ``sessions``, ``repl``, ``cluster``
(sessionpool.client._cli) and ``mcp`` (sessionpool.faces.mcp)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _serve(args: argparse.Namespace) -> int:
    from sessionpool.server.cli import serve_command  # the application: only when serving

    return serve_command(args)


def _doctor(args: argparse.Namespace) -> int:
    from sessionpool.config import default_runtimes_dir
    from sessionpool.errors import ConfigError
    from sessionpool.sandbox.doctor import check_host, format_report, format_runtimes
    from sessionpool.server.settings import load_settings

    try:  # the settings serve would use (SESSIONPOOL_* and the config file): the memory bound
        engine = load_settings(config_file=args.config).engine_config()
    except ConfigError as exc:
        print(f"sessionpool doctor: {exc}", file=sys.stderr)
        return 2
    checks = check_host(Path(args.data_dir), engine)
    print(format_report(checks))
    print(format_runtimes(args.runtimes_dir or default_runtimes_dir()))
    return 0 if all(c.ok for c in checks) else 1


def _runtime(args: argparse.Namespace) -> int:
    from sessionpool import errors
    from sessionpool.config import default_runtimes_dir
    from sessionpool.sandbox import runtime_build
    from sessionpool.sandbox.doctor import format_runtimes

    out = args.runtimes_dir or default_runtimes_dir()
    try:
        if args.action == "list":
            print(format_runtimes(out))
        elif args.action == "lock":
            for definition in args.definitions:
                pins = runtime_build.lock(definition, args.python)
                print(f"{definition}/requirements.txt: {len(pins)} packages")
        else:
            for definition in args.definitions:
                rt = runtime_build.build(definition, out, args.python, args.force)
                print(
                    f"{rt.name}: {rt.kind} {rt.version}, {len(rt.packages)} packages, {rt.digest}"
                )
    except errors.ConfigError as exc:
        print(f"sessionpool runtime {args.action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _bench(args: argparse.Namespace) -> int:
    return _run_suite(list(args.suite_args))


def _run_suite(suite_args: list[str]) -> int:
    """Run the benchmark suite of a source checkout (``python -m benchmarks.suite`` from its
    root: the suite is not part of the package)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "suite.py").exists():
        print(
            f"sessionpool bench needs a source checkout: {root}/benchmarks not found",
            file=sys.stderr,
        )
        return 2
    return subprocess.call([sys.executable, "-m", "benchmarks.suite", *suite_args], cwd=root)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionpool",
        description="Secure, stateful Python code-interpreter sessions (Azure dynamic-sessions "
        "compatible).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from sessionpool.server.flags import add_serve_arguments

    serve = sub.add_parser("serve", help="run the HTTP server with its session pools")
    add_serve_arguments(serve)
    serve.set_defaults(func=_serve)

    from sessionpool.server.keys_cli import add_keys_command

    add_keys_command(sub)

    doctor = sub.add_parser(
        "doctor", help="report which parts of the jail this host supports, and the runtimes"
    )
    doctor.add_argument("--data-dir", default="/var/lib/sessionpool")
    doctor.add_argument("--runtimes-dir", type=Path, default=None)
    doctor.add_argument("--config", type=Path, default=None, help="the server's settings file")
    doctor.set_defaults(func=_doctor)

    runtime = sub.add_parser(
        "runtime", help="build, list or lock session runtimes (runtimes/<name> definitions)"
    )
    runtime.add_argument("action", choices=("build", "list", "lock"))
    runtime.add_argument("definitions", nargs="*", type=Path, help="runtimes/<name> directories")
    runtime.add_argument("--runtimes-dir", type=Path, default=None, help="where builds go")
    runtime.add_argument("--python", type=Path, default=None, help="the CPython to build on")
    runtime.add_argument("--force", action="store_true", help="rebuild even if up to date")
    runtime.set_defaults(func=_runtime)

    bench = sub.add_parser(
        "bench",
        help="run the benchmark suite (benchmarks.suite; --quick for a short run)",
        add_help=False,
    )
    bench.add_argument("suite_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=_bench)

    from sessionpool.client._cli import add_client_commands

    add_client_commands(sub)

    from sessionpool.faces.mcp.stdio import add_mcp_command

    add_mcp_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:  # every option goes to the suite, --help included
        return _run_suite(argv[1:])
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())

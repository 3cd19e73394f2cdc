"""A throwaway PostgreSQL server for the persistence tests, from the distribution's packages.

The agents state must behave the same on SQLite and PostgreSQL, so the tests run against a real
server: a fresh cluster in a temporary directory, trust authentication on a free loopback port,
killed and deleted afterwards. PostgreSQL refuses to run as root, so under root the cluster
belongs to an unprivileged system user and every server binary runs as that user.

    with PostgresServer() as pg:
        create_engine(pg.sqlalchemy_url)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

DATABASE = "sessionpool"
SUPERUSER = "postgres"
# durability buys nothing in a throwaway cluster
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


def _version(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path))


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin``, else the directory of ``initdb`` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version, reverse=True)
    if found:
        return Path(found[0]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def run_as_user() -> str | None:
    """Under root: the unprivileged user that owns the cluster (``postgres``, else ``nobody``)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


def unavailable_reason() -> str | None:
    """Why no server can be started here, or ``None`` when one can."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return "PostgreSQL is not installed (no initdb under /usr/lib/postgresql/*/bin or on PATH)"
    for tool in ("initdb", "pg_ctl", "createdb"):
        if not (bin_dir / tool).exists():
            return f"PostgreSQL's {tool} is missing from {bin_dir}"
    if os.geteuid() == 0:
        if run_as_user() is None:
            return "running as root and neither a postgres nor a nobody user exists"
        if shutil.which("runuser") is None:
            return "running as root and runuser is missing (PostgreSQL refuses to run as root)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """A fresh cluster on a free loopback port with an empty ``sessionpool`` database."""

    def __init__(self, startup_timeout: int = 60) -> None:
        self.startup_timeout = startup_timeout
        self.bin_dir = find_bin_dir()
        self.user = run_as_user()
        self.data_dir: Path | None = None
        self.port = 0
        self.started = False

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def sqlalchemy_url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{DATABASE}"

    def log(self) -> str:
        if self.data_dir is None:
            return ""
        try:
            return (self.data_dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    def _run(self, tool: str, *args: str, as_owner: bool = True) -> None:
        assert self.bin_dir is not None and self.data_dir is not None
        cmd = [str(self.bin_dir / tool), *args]
        if as_owner and self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        result = subprocess.run(
            cmd,
            cwd=self.data_dir,  # the owner may not be allowed into ours
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=self.startup_timeout + 30,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout.decode(errors="replace")
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{output}\n{self.log()}")

    def start(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        # under /tmp rather than pytest's root-only directories: the owner must reach it
        self.data_dir = Path(tempfile.mkdtemp(prefix="sessionpool-pg-"))
        try:
            if self.user is not None:
                entry = pwd.getpwnam(self.user)
                os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            self.data_dir.chmod(0o700)
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            self.port = free_port()
            options = f"-h 127.0.0.1 -p {self.port} -k {self.data_dir} {_FAST}"
            self.started = True  # from here on, stop() must try to kill it
            self._run(
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.data_dir / "server.log"),
                "-w",
                "-t",
                str(self.startup_timeout),
                "-o",
                options,
            )
            self._run(
                "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, DATABASE
            )
        except BaseException:
            self.stop()
            raise

    def _postmaster_pid(self) -> int | None:
        assert self.data_dir is not None
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Kill the server (no clean shutdown: nothing here is worth keeping) and delete it."""
        if self.data_dir is None:
            return
        if self.started:
            pid = self._postmaster_pid()
            try:
                self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
            except (RuntimeError, subprocess.TimeoutExpired):
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            self.started = False
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

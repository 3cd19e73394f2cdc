"""A test internet: upstream hosts in a network namespace of their own, joined to the host.

The egress proxy's tests need real servers to reach, with names, certificates and addresses,
but no traffic may leave the machine. ``Internet`` builds them on TEST-NET-3 (203.0.113.0/24,
reserved for documentation) in a namespace that only this host's network namespace can reach
through a veth pair: the host side is 203.0.113.1, the servers 203.0.113.10 and .11. Names
are not in any resolver: the proxy gets them from ``hosts``, and ``fetch`` connects by address.

Only one test internet can be up on a host at a time (the host's route to 203.0.113.0/24 would
be ambiguous), so ``start`` takes a host-wide lock and waits for a concurrent run to finish.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import fcntl
import hashlib
import http.client
import io
import itertools
import json
import os
import re
import selectors
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sessionpool.config import EngineConfig

ALLOWED = "api.allowed.test"
OTHER_ALLOWED = "files.allowed.test"
INDEX = "pypi.allowed.test"
DENIED = "denied.test"
PRIVATE = "private.allowed.test"
LOOPBACK = "loop.allowed.test"
METADATA = "meta.allowed.test"
SECRET = "secret.allowed.test"

ADDRESS = "203.0.113.10"
SECOND_ADDRESS = "203.0.113.11"
HOST_ADDRESS = "203.0.113.1"
NETWORK = "203.0.113.0/24"
UDP_PORTS = (53, 9999)

PREFIX = "spinet"
LOCK_FILE = Path("/run/sessionpool-netlab.lock")
SERVER = Path(__file__).with_name("netlab_server.py")

WHEEL_NAME = "sp_egress_probe-1.0-py3-none-any.whl"
WHEEL_VALUE = 42

_counter = itertools.count()


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


class Internet:
    """The namespace, its veth pair, the test CA and the servers; ``close`` undoes all of it."""

    ALLOWED = ALLOWED
    OTHER_ALLOWED = OTHER_ALLOWED
    INDEX = INDEX
    DENIED = DENIED
    PRIVATE = PRIVATE
    LOOPBACK = LOOPBACK
    METADATA = METADATA
    SECRET = SECRET

    address = ADDRESS
    second_address = SECOND_ADDRESS
    host_address = HOST_ADDRESS
    allow_networks = [NETWORK]
    udp_ports = UDP_PORTS
    #: the names that have a server, hence a certificate; the others resolve to no server
    served_names = (ALLOWED, OTHER_ALLOWED, INDEX, DENIED, SECRET)

    def __init__(self, lock_timeout: float = 120.0) -> None:
        self.lock_timeout = lock_timeout
        n = next(_counter)
        pid = os.getpid()
        self.netns = f"{PREFIX}-{pid}-{n}"
        self.veth_host = f"sph{pid}-{n}"[:15]
        self.veth_ns = f"spn{pid}-{n}"[:15]
        self.hosts: dict[str, str] = {
            ALLOWED: ADDRESS,
            OTHER_ALLOWED: ADDRESS,
            INDEX: ADDRESS,
            DENIED: SECOND_ADDRESS,
            PRIVATE: "10.0.0.7",
            LOOPBACK: "127.0.0.1",
            METADATA: "169.254.169.254",
            SECRET: ADDRESS,
        }
        self.directory: Path | None = None
        self.ca_file = Path()
        self.wheel_file = Path()
        self.wheel_sha256 = ""
        self._certs: dict[str, str] = {}
        self._lock: io.TextIOWrapper | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._server_log: io.BufferedWriter | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Internet:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        try:
            self._take_lock()
            clean_stale()
            self.directory = Path(tempfile.mkdtemp(prefix=f"{self.netns}-"))
            self._make_certificates()
            self._make_wheel()
            self._make_network()
            self._start_servers()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Idempotent, and safe after a ``start`` that failed at any step."""
        if self._server is not None:
            proc, self._server = self._server, None
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()  # the server exits when its input closes
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if self._server_log is not None:
            self._server_log.close()
            self._server_log = None
        _ip("link", "del", self.veth_host, check=False)
        _ip("link", "del", self.veth_ns, check=False)
        _remove_netns(self.netns)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    # --- helpers for tests -------------------------------------------------------------------

    def engine_config(self, data_dir: Path) -> EngineConfig:
        """A jailed engine whose egress proxy knows this internet: its names, network and CA."""
        return EngineConfig(
            backend="jail",
            data_dir=data_dir,
            egress_hosts=tuple(self.hosts.items()),
            egress_allow_networks=tuple(self.allow_networks),
            egress_trust_ca_files=(self.ca_file,),
        )

    def fetch(
        self,
        name: str,
        path: str,
        *,
        https: bool = True,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        address: str | None = None,
        timeout: float = 10.0,
    ) -> Response:
        """One request straight from the host, not through the proxy: ``name`` is the SNI and
        Host, verified against ``ca_file``; the address is ``hosts[name]`` unless given."""
        target = address or self.hosts[name]
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        conn: http.client.HTTPConnection
        if https:
            conn = _PinnedHTTPS(name, target, ctx, timeout)
        else:
            conn = _PinnedHTTP(name, target, timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
        finally:
            conn.close()

    def udp_echo(
        self, data: bytes, port: int = 9999, address: str = ADDRESS, timeout: float = 2.0
    ) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(data, (address, port))
            return sock.recvfrom(65535)[0]

    # --- the steps of start ------------------------------------------------------------------

    def _take_lock(self) -> None:
        lock = open(LOCK_FILE, "a+")  # noqa: SIM115 (held until close)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    lock.seek(0)
                    holder = lock.read().strip()
                    lock.close()
                    raise RuntimeError(
                        f"another test internet ({holder}) holds {LOCK_FILE}; "
                        "only one can be up on a host"
                    ) from None
                time.sleep(0.2)
        lock.truncate(0)
        lock.write(f"{self.netns}\n")
        lock.flush()
        self._lock = lock

    def _make_certificates(self) -> None:
        assert self.directory is not None
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = _name("sessionpool netlab test CA")
        now = datetime.datetime.now(datetime.UTC)
        start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=7)
        ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .add_extension(ca_ski, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = self.directory / "ca.pem"
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
        for name in self.served_names:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name(name))
                .issuer_name(ca_name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(start)
                .not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(_usage(cert_sign=False), critical=True)
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
                )
                .add_extension(
                    x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
                )
                .add_extension(aki, critical=False)
                .sign(ca_key, hashes.SHA256())
            )
            pem = self.directory / f"{name}.pem"
            pem.write_bytes(
                cert.public_bytes(serialization.Encoding.PEM)
                + key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            self._certs[name] = str(pem)

    def _make_wheel(self) -> None:
        assert self.directory is not None
        self.wheel_file = self.directory / WHEEL_NAME
        self.wheel_file.write_bytes(build_wheel())
        self.wheel_sha256 = hashlib.sha256(self.wheel_file.read_bytes()).hexdigest()

    def _make_network(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth_host, "type", "veth", "peer", "name", self.veth_ns)
        _ip("link", "set", self.veth_ns, "netns", self.netns)
        _ip("addr", "add", f"{HOST_ADDRESS}/24", "dev", self.veth_host)
        _ip("link", "set", self.veth_host, "up")
        inside = ("-n", self.netns)
        _ip(*inside, "addr", "add", f"{ADDRESS}/24", "dev", self.veth_ns)
        _ip(*inside, "addr", "add", f"{SECOND_ADDRESS}/24", "dev", self.veth_ns)
        _ip(*inside, "link", "set", self.veth_ns, "up")
        _ip(*inside, "link", "set", "lo", "up")

    def _start_servers(self) -> None:
        assert self.directory is not None
        config = {
            "addresses": [ADDRESS, SECOND_ADDRESS],
            "udp_ports": list(UDP_PORTS),
            "certs": self._certs,
            "default_name": ALLOWED,
            "wheel": {
                "name": WHEEL_NAME,
                "path": str(self.wheel_file),
                "sha256": self.wheel_sha256,
            },
        }
        config_file = self.directory / "server.json"
        config_file.write_text(json.dumps(config))
        log_file = self.directory / "server.log"
        self._server_log = open(log_file, "wb")  # noqa: SIM115 (closed by close)
        self._server = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, sys.executable, str(SERVER), str(config_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._server_log,
            cwd=self.directory,
        )
        assert self._server.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self._server.stdout, selectors.EVENT_READ)
            ready = sel.select(timeout=15) and self._server.stdout.readline() == b"ready\n"
        if not ready:
            self._server_log.flush()
            raise RuntimeError(f"the test internet's servers did not start: {log_file.read_text()}")


# --- the pieces --------------------------------------------------------------------------------


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a fixed address, with the name only as SNI and Host: no resolver involved."""

    def __init__(self, name: str, address: str, ctx: ssl.SSLContext, timeout: float) -> None:
        super().__init__(name, 443, timeout=timeout, context=ctx)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, name: str, address: str, timeout: float) -> None:
        super().__init__(name, 80, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sessionpool netlab"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def build_wheel() -> bytes:
    """The index's one wheel, by hand: tests see pip install it through the proxy."""
    dist = "sp_egress_probe-1.0.dist-info"
    files = {
        "sp_egress_probe/__init__.py": f"VALUE = {WHEEL_VALUE}\n".encode(),
        f"{dist}/METADATA": (
            b"Metadata-Version: 2.1\nName: sp-egress-probe\nVersion: 1.0\n"
            b"Summary: a probe for the egress proxy's tests\n"
        ),
        f"{dist}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: sessionpool-netlab\n"
            b"Root-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}\n")
    record.append(f"{dist}/RECORD,,\n")
    files[f"{dist}/RECORD"] = "".join(record).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def _ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def _remove_netns(netns: str) -> None:
    """Kills what still runs in it (a server of a crashed run), then deletes it."""
    for pid in _ip("netns", "pids", netns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", netns, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale() -> None:
    """Removes the namespaces, veths and directories of earlier runs whose process is gone."""
    names = re.compile(rf"^{PREFIX}-(\d+)-\d+$")
    for line in _ip("netns", "list", check=False).splitlines():
        match = names.match(line.split()[0]) if line.strip() else None
        if match and not _alive(int(match.group(1))):
            _remove_netns(match.group(0))
    for path in Path(tempfile.gettempdir()).glob(f"{PREFIX}-*"):
        match = re.match(rf"^{PREFIX}-(\d+)-\d+-", path.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
    links = re.compile(r"^sp[hn](\d+)-\d+$")
    for line in _ip("-o", "link", "show", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        match = links.match(name)
        if match and not _alive(int(match.group(1))):
            _ip("link", "del", name, check=False)

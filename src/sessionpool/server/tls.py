"""A local certificate authority for ``--tls-self-signed``.

Some clients refuse plain http, so a local server needs https without an operator having to run
a PKI. The CA and the server certificate are kept in one directory and reused on the next start,
so clients that trust ``ca.pem`` keep trusting the server; the server certificate is reissued
(by the same CA) when the host names it must cover change.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509

from sessionpool.errors import ConfigError

CA_CERT = "ca.pem"
CA_KEY = "ca-key.pem"
SERVER_CERT = "server.pem"
SERVER_KEY = "server-key.pem"


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    #: the certificate clients must trust (only for a self-signed setup)
    ca: Path | None = None


def identities_for(host: str) -> list[str]:
    """Names the certificate must cover: loopback always, plus the bind address or hostname."""
    names = ["localhost", "127.0.0.1", "::1"]
    bare = host.strip("[]")
    if bare in ("", "0.0.0.0", "::"):
        names.append(socket.gethostname())
    else:
        names.append(bare)
    return list(dict.fromkeys(names))


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _covered(cert_path: Path, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    have |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    for name in names:
        try:
            want = str(ipaddress.ip_address(name))
        except ValueError:
            want = name.lower()
        if want not in have:
            return False
    return True


def ensure_self_signed(directory: Path, host: str) -> TlsFiles:
    """Create (or reuse) a CA and a server certificate for ``host`` in ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca_cert, ca_key = directory / CA_CERT, directory / CA_KEY
        cert, key = directory / SERVER_CERT, directory / SERVER_KEY
        if ca_cert.exists() and ca_key.exists():
            ca = trustme.CA.from_pem(ca_cert.read_bytes(), ca_key.read_bytes())
        else:
            ca = trustme.CA(organization_name="sessionpool", organization_unit_name="local CA")
            _write_private(ca_key, ca.private_key_pem.bytes())
            _write_public(ca_cert, ca.cert_pem.bytes())
            cert.unlink(missing_ok=True)
        names = identities_for(host)
        if not (cert.exists() and key.exists() and _covered(cert, names)):
            leaf = ca.issue_cert(*names, organization_name="sessionpool")
            _write_private(key, leaf.private_key_pem.bytes())
            _write_public(cert, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot prepare the self-signed certificate in {directory}: {exc}"
        ) from exc
    return TlsFiles(cert=cert, key=key, ca=ca_cert)

"""The egress proxy's certificate authority: made per server, used only for domains with secrets.

To add a secret header to an HTTPS request the proxy must read it, so for those domains (and
only those) it terminates the session's TLS with a certificate of this CA, which the sessions'
CA bundle trusts. The key never leaves the server's data directory (mode 0600) and a new one is
made at every start, so a stolen bundle is worth nothing after a restart.
"""

from __future__ import annotations

import datetime
import os
import ssl
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: where Debian-family hosts keep the system's CA bundle (others: ``ssl``'s default paths)
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sessionpool egress"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def system_bundle() -> str | None:
    for path in SYSTEM_BUNDLES:
        if os.path.exists(path):
            return path
    return ssl.get_default_verify_paths().cafile


class EgressCA:
    """A CA (EC P-256) and the server-side TLS contexts it signs, one per domain, cached."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = _name(f"sessionpool egress CA {os.urandom(4).hex()}")
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_pem = self.cert.public_bytes(serialization.Encoding.PEM)
        self.cert_file = directory / "ca.pem"
        self.cert_file.write_bytes(self.cert_pem)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def write_bundle(self, path: Path, extra: tuple[Path, ...] = ()) -> Path:
        """The sessions' CA bundle: the system's CAs, the operator's extra ones, and this CA."""
        parts = []
        system = system_bundle()
        if system:
            parts.append(Path(system).read_bytes())
        parts.extend(Path(p).read_bytes() for p in extra)
        parts.append(self.cert_pem)
        path.write_bytes(b"\n".join(p.rstrip(b"\n") + b"\n" for p in parts))
        path.chmod(0o644)
        return path

    def context_for(self, domain: str) -> ssl.SSLContext:
        """A server-side TLS context presenting a certificate for ``domain``."""
        with self._lock:
            ctx = self._contexts.get(domain)
            if ctx is None:
                ctx = self._contexts[domain] = self._make_context(domain)
            return ctx

    def _make_context(self, domain: str) -> ssl.SSLContext:
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(domain))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        # load_cert_chain reads files: written once per domain, private to the server
        stem = self.directory / f"leaf-{domain}"
        cert_file, key_file = stem.with_suffix(".pem"), stem.with_suffix(".key")
        _write_private(key_file, _pem_key(key))
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert_file, key_file)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

"""A real ``serve`` with the agents faces on, pointed at a model endpoint, for the agents tests.

Clients under test (the OpenAI SDK, the Azure SDKs) run unmodified, often in a subprocess:
``client_env()`` gives them an environment that trusts the server's self-signed CA (and the
public CAs) and lets ``DefaultAzureCredential`` get its token from the server's managed-identity
endpoint, with nothing from the host's Azure settings leaking in.

    with AgentsServer(tmp_path, model.url) as server:
        subprocess.run([sys.executable, "quickstart.py"], env=server.client_env(), check=True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType

from sessionpool.server.testing import ServerProcess
from sessionpool.server.tls import CA_CERT

SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

POOL_CONFIG = """\
[pools.default]
ready_sessions = 2
max_sessions = 40
execution_timeout_seconds = 60
"""

# variables that would make DefaultAzureCredential stop before (or skip) managed identity
_AZURE_IDENTITY_VARS = ("MSI_ENDPOINT", "MSI_SECRET", "IDENTITY_SERVER_THUMBPRINT")


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escaping is a valid subset for these values."""
    return json.dumps(value)


def agents_config(model_url: str, *, database_url: str = "", extra_config: str = "") -> str:
    """The TOML for a small default pool and an ``[agents]`` table on ``model_url``."""
    lines = [
        POOL_CONFIG,
        "[agents]",
        f"model_base_url = {_toml_string(model_url)}",
        'default_model = "scripted-chart"',
        "managed_identity = true",
        "max_steps = 4",
        "model_timeout_seconds = 5",
    ]
    if database_url:
        lines.append(f"database_url = {_toml_string(database_url)}")
    text = "\n".join(lines) + "\n"
    if extra_config:
        text += "\n" + extra_config.strip("\n") + "\n"
    return text


class AgentsServer:
    """A ``ServerProcess`` with the agents configuration, over TLS unless ``tls=False``."""

    def __init__(
        self,
        workdir: Path,
        model_url: str,
        *,
        database_url: str = "",
        extra_config: str = "",
        tls: bool = True,
    ) -> None:
        self.workdir = workdir
        self.model_url = model_url
        self.tls = tls
        self.tls_dir = workdir / "tls"
        self.config = agents_config(model_url, database_url=database_url, extra_config=extra_config)
        args = ["--tls-self-signed", str(self.tls_dir)] if tls else []
        self.process = ServerProcess(workdir, config=self.config, args=args)
        self._ca_bundle = workdir / "ca-bundle.pem"

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def api_key(self) -> str:
        assert self.process.api_key
        return self.process.api_key

    @property
    def auth(self) -> dict[str, str]:
        return self.process.auth

    @property
    def ca_cert(self) -> Path:
        """The server's own CA (only that one)."""
        return self.tls_dir / CA_CERT

    @property
    def ca_bundle(self) -> Path:
        """The system CAs plus the server's CA: clients keep reaching public endpoints."""
        return self._ca_bundle

    def endpoint(self, pool: str = "default") -> str:
        return self.process.endpoint(pool)

    def log(self) -> str:
        return self.process.log()

    def client_env(self) -> dict[str, str]:
        """``os.environ`` for a client subprocess: trusts the server, authenticates to it."""
        env = dict(os.environ)
        for name in list(env):
            if name.startswith("AZURE_") or name in _AZURE_IDENTITY_VARS:
                del env[name]
        env.pop("CURL_CA_BUNDLE", None)
        env.pop("SSL_CERT_DIR", None)
        if self.tls:
            env["REQUESTS_CA_BUNDLE"] = str(self.ca_bundle)
            env["SSL_CERT_FILE"] = str(self.ca_bundle)
        env["IDENTITY_ENDPOINT"] = f"{self.url}/msi/token"
        env["IDENTITY_HEADER"] = self.api_key
        return env

    def start(self) -> None:
        self.process.start()
        if self.tls:
            assert self.url.startswith("https://"), self.url
            system = SYSTEM_CA_BUNDLE.read_text() if SYSTEM_CA_BUNDLE.exists() else ""
            local = self.ca_cert.read_text()
            self._ca_bundle.write_text(system.rstrip("\n") + "\n" + local)

    def stop(self) -> int:
        return self.process.stop()

    def __enter__(self) -> AgentsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

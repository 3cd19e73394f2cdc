"""Settings of the agents service: the model endpoint, the database, limits of the agent loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AgentsConfig:
    #: serve the agents faces (Assistants v2, Responses, Conversations, Containers)
    enabled: bool = True
    #: ``sqlite:///PATH`` or ``postgresql://user:pass@host:port/db``; empty means
    #: ``sqlite:///<data_dir>/agents.db``
    database_url: str = ""
    #: the sessionpool pool whose sessions become containers; empty means the pool named
    #: ``default`` if there is one, else the first configured pool
    pool: str = ""
    #: an OpenAI-compatible chat-completions endpoint, e.g. ``http://127.0.0.1:8000/v1``
    model_base_url: str = ""
    model_api_key: str = ""
    #: the model used when a request names none
    default_model: str = ""
    #: requested model name -> model name sent to the endpoint (``gpt-4o-mini=llama3.1``)
    model_map: tuple[str, ...] = ()
    #: CA bundle to trust for an https model endpoint (default: the system's)
    model_ca_file: str = ""
    #: ask the model to stream its answers, so clients see the text as it is written (off for
    #: endpoints that cannot stream with tools)
    model_stream: bool = True
    #: one chat-completions call may take this long (streamed: the longest wait for a piece)
    model_timeout_seconds: float = 120.0
    #: model round trips in one run before it fails with ``max_steps_exceeded``
    max_steps: int = 10
    #: a run that has not finished after this long fails with ``timeout`` (then ``expired``)
    run_timeout_seconds: float = 600.0
    #: one code-interpreter call may run this long (the pool's limit still applies)
    tool_timeout_seconds: float = 120.0
    #: idle minutes before a container expires (Responses' default is 20)
    container_expiry_minutes: int = 20
    #: largest file accepted by the files API
    #: (the pool's own per-file limit, 128 MB by default, bounds what reaches a session too)
    max_file_bytes: int = 128 * 1000 * 1000
    #: serve ``/msi/token`` so an unmodified ``DefaultAzureCredential`` gets a token from us
    managed_identity: bool = False
    #: set by the server: where the default SQLite file goes
    data_dir: Path = field(default=Path("/var/lib/sessionpool"))

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'agents.db'}"

    def mapped_model(self, requested: str | None) -> str:
        """The name to send to the endpoint for ``requested`` (a mapping, or itself)."""
        name = requested or self.default_model
        for entry in self.model_map:
            src, _, dst = entry.partition("=")
            if src.strip() == name:
                return dst.strip()
        return name

"""Wire models of the E2B control plane, field names exactly as the SDKs send and read them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: the template the SDKs ask for when none is named: the server's default pool
DEFAULT_TEMPLATE = "code-interpreter-v1"
#: E2B's default lifetime when a create names none (seconds)
DEFAULT_TIMEOUT = 300


class NewSandbox(BaseModel):
    """``POST /v2/sandboxes``. Every field E2B defines is read, so none is silently dropped:
    the face refuses those it cannot honour (``face._refuse_unsupported``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    templateID: str | None = None
    timeout: int = Field(default=DEFAULT_TIMEOUT, ge=0)
    autoPause: bool | None = None
    autoPauseMemory: Any = None
    autoResume: Any = None
    secure: bool | None = None
    allow_internet_access: bool | None = None
    network: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    envVars: dict[str, str] | None = None
    mcp: Any = None
    iam: Any = None
    volumeMounts: Any = None


class NetworkUpdate(BaseModel):
    """``PUT /sandboxes/{id}/network`` (the SDKs' ``update_network``): the whole egress
    configuration, replacing the last one (a field left out is cleared)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    allow_internet_access: bool | None = None
    allowOut: list[str] | None = None
    denyOut: list[str] | None = None
    rules: dict[str, Any] | None = None
    dnsServers: list[str] | None = None
    egressProxy: Any = None

    def network(self) -> dict[str, Any]:
        """The fields as a create's ``network`` holds them."""
        return self.model_dump(exclude={"allow_internet_access"}, exclude_none=True)


class Timeout(BaseModel):
    """``POST /sandboxes/{id}/timeout``."""

    model_config = ConfigDict(extra="ignore")

    timeout: int = Field(ge=0)


class Connect(BaseModel):
    """``POST /v2/sandboxes/{id}/connect``: a timeout lengthens the sandbox's life."""

    model_config = ConfigDict(extra="ignore")

    timeout: int | None = Field(default=None, ge=0)

"""Server settings: built-in defaults, then a TOML file, then environment variables, then flags.

Each later source overrides the earlier ones, setting by setting. Pools are configured in the
TOML file (``[pools.<name>]`` tables); ``SESSIONPOOL_POOL_<SETTING>`` variables give every pool a
default that its own table may override. The result is plain dataclasses: the engine never learns
where a value came from, and ``docs/configuration.md`` lists every name used here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

from sessionpool.agents.config import AgentsConfig
from sessionpool.config import (
    BackendName,
    ClusterConfig,
    EgressSettings,
    EngineConfig,
    Limits,
    PoolConfig,
    TenantQuotas,
    default_runtimes_dir,
)
from sessionpool.egress.policy import settings_policy
from sessionpool.errors import ConfigError
from sessionpool.server.flags import LOG_FORMATS, LOG_LEVELS
from sessionpool.server.tokens import IssuerConfig, parse_auth
from sessionpool.tenancy import check_tenant

ENV_PREFIX = "SESSIONPOOL_"
POOL_ENV_PREFIX = "SESSIONPOOL_POOL_"
AGENTS_ENV_PREFIX = "SESSIONPOOL_AGENTS_"
CLUSTER_ENV_PREFIX = "SESSIONPOOL_CLUSTER_"
_POOL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    #: accepted API keys; empty means "use or generate the key in api_key_file"
    api_keys: tuple[str, ...] = ()
    #: where the generated key lives (default: <data_dir>/api-key)
    api_key_file: Path | None = None
    #: tenant keys, stored hashed (``sessionpool keys``; default: <data_dir>/keys.json)
    keys_file: Path | None = None
    #: development only, refused unless host is a loopback address
    no_auth: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: directory for a local CA and a localhost certificate; serves https with them
    tls_self_signed: Path | None = None
    backend: BackendName = "jail"
    data_dir: Path = EngineConfig.data_dir
    #: built session runtimes (default: share/sessionpool/runtimes beside the server's Python)
    runtimes_dir: Path | None = None
    #: host uids for sessions: uid_base .. uid_base + uid_count - 1
    uid_base: int = EngineConfig.uid_base
    uid_count: int = EngineConfig.uid_count
    #: refuse new sessions when the host's available memory would drop below this
    memory_reserve_bytes: int = EngineConfig.memory_reserve_bytes
    #: the memory all sessions share; 0: the machine's minus sessions_memory_reserve_bytes
    sessions_memory_bytes: int = EngineConfig.sessions_memory_bytes
    #: what a derived bound leaves to the server and the host; 0: max(1 GiB, 10% of memory)
    sessions_memory_reserve_bytes: int = EngineConfig.sessions_memory_reserve_bytes
    #: the scan rate the server gives kernel samepage merging when a pool's memory_merge needs
    #: it and it is stopped: pages per wake-up of ksmd, and its sleep between wake-ups
    ksm_pages_to_scan: int = EngineConfig.ksm_pages_to_scan
    ksm_sleep_millisecs: int = EngineConfig.ksm_sleep_millisecs
    #: after a stop signal, how long requests in flight may run before everything is killed
    shutdown_deadline_seconds: float = 10.0
    log_level: str = "info"
    access_log: bool = True
    #: "text" (a line per record) or "json" (an object per line, with the request id)
    log_format: str = "text"
    #: the audit log's file (JSON lines); None: audit records go where the other logs go
    audit_log: Path | None = None
    #: OpenTelemetry traces of the requests (the otel extra; exporter from OTEL_* variables)
    otel_traces: bool = False
    #: names the egress proxy resolves itself (name -> address), before the host's resolver
    egress_hosts: tuple[tuple[str, str], ...] = ()
    #: non-public networks the egress proxy may connect to (never loopback or metadata)
    egress_allow_networks: tuple[str, ...] = ()
    #: extra CA files the egress proxy and the sessions trust (a private index's CA)
    egress_trust_ca_files: tuple[Path, ...] = ()
    pools: tuple[PoolConfig, ...] = field(default_factory=lambda: (PoolConfig(),))
    #: the agents service ([agents] table); its data_dir is this server's
    agents: AgentsConfig = field(default_factory=AgentsConfig)
    #: cluster mode ([cluster] table, --cluster): None serves from this machine's own engine
    cluster: ClusterConfig | None = None
    #: every tenant's quotas ([quotas] table); 0 is no limit
    quotas: TenantQuotas = field(default_factory=TenantQuotas)
    #: one tenant's quotas ([tenants.<name>] tables, over [quotas])
    tenant_quotas: tuple[tuple[str, TenantQuotas], ...] = ()
    #: identity-token issuers ([[auth.issuers]]); none: keys only
    issuers: tuple[IssuerConfig, ...] = ()
    #: the TOML file these settings were read from, if any
    config_file: Path | None = None

    @property
    def key_file(self) -> Path:
        return self.api_key_file or self.data_dir / "api-key"

    @property
    def key_store(self) -> Path:
        return self.keys_file or self.data_dir / "keys.json"

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None or self.tls_self_signed is not None

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            egress_hosts=self.egress_hosts,
            egress_allow_networks=self.egress_allow_networks,
            egress_trust_ca_files=self.egress_trust_ca_files,
            backend=self.backend,
            data_dir=self.data_dir,
            runtimes_dir=self.runtimes_dir or default_runtimes_dir(),
            uid_base=self.uid_base,
            uid_count=self.uid_count,
            memory_reserve_bytes=self.memory_reserve_bytes,
            sessions_memory_bytes=self.sessions_memory_bytes,
            sessions_memory_reserve_bytes=self.sessions_memory_reserve_bytes,
            ksm_pages_to_scan=self.ksm_pages_to_scan,
            ksm_sleep_millisecs=self.ksm_sleep_millisecs,
        )

    def check(self) -> None:
        """Refuse combinations that are unsafe or cannot work, naming the setting to change."""
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range (0-65535)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        if self.tls_cert is not None and self.tls_self_signed is not None:
            raise ConfigError("choose either tls_cert/tls_key or tls_self_signed, not both")
        if self.no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"refusing --no-auth on {self.host!r}: without authentication anyone who can "
                "reach the port can run code. Bind to 127.0.0.1 (or ::1), or configure an API key."
            )
        if self.uid_base < 1 or self.uid_count < 1:
            raise ConfigError("uid_base and uid_count must be positive")
        if self.memory_reserve_bytes < 0:
            raise ConfigError("memory_reserve_bytes must not be negative")
        if self.sessions_memory_bytes < 0 or self.sessions_memory_reserve_bytes < 0:
            raise ConfigError(
                "sessions_memory_bytes and sessions_memory_reserve_bytes must not be negative "
                "(0: derived from the machine's memory)"
            )
        if self.ksm_pages_to_scan < 1 or self.ksm_sleep_millisecs < 1:
            raise ConfigError("ksm_pages_to_scan and ksm_sleep_millisecs must be at least 1")
        if self.shutdown_deadline_seconds < 0:
            raise ConfigError("shutdown_deadline_seconds must not be negative")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if not self.pools:
            raise ConfigError("no pools configured")
        names = [p.name for p in self.pools]
        if len(set(names)) != len(names):
            raise ConfigError(f"pool names must be unique: {names}")
        for pool in self.pools:
            check_pool(pool)
            if self.cluster is not None and pool.network != "off":
                raise ConfigError(
                    f"[pools.{pool.name}] network = {pool.network!r}: sessions of a cluster have "
                    'no network yet (egress runs on a single server); set network = "off"'
                )
        for path in self.egress_trust_ca_files:
            if not path.is_file():
                raise ConfigError(f"egress_trust_ca_files: {path} is not a file")
        check_agents(self.agents, names)


def check_agents(agents: AgentsConfig, pools: list[str]) -> None:
    if not agents.enabled:
        return
    if agents.pool not in pools:
        raise ConfigError(
            f"[agents] pool {agents.pool!r} is not a configured pool ({', '.join(pools)}); "
            "name one of them or add [pools.<name>]"
        )
    for name in ("max_steps", "container_expiry_minutes", "max_file_bytes"):
        if getattr(agents, name) < 1:
            raise ConfigError(f"[agents] {name} must be at least 1")
    for name in ("model_timeout_seconds", "run_timeout_seconds", "tool_timeout_seconds"):
        if getattr(agents, name) <= 0:
            raise ConfigError(f"[agents] {name} must be greater than 0")
    for entry in agents.model_map:
        if "=" not in entry:
            raise ConfigError(
                f"[agents] model_map entry {entry!r}: expected 'requested=served', "
                "e.g. 'gpt-4o-mini=llama3.1'"
            )
    url = agents.database
    if not url.startswith(("sqlite:///", "postgresql://", "postgres://", "postgresql+")):
        raise ConfigError(
            f"[agents] database_url {url!r}: expected sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST:PORT/DB"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_pool(pool: PoolConfig) -> None:
    where = f"pool {pool.name!r}"
    if not _POOL_NAME.fullmatch(pool.name):
        raise ConfigError(
            f"{where}: a pool name is 1-63 characters of letters, digits, '.', '_' and '-', "
            "starting with a letter or digit (it appears in URLs)"
        )
    if pool.max_sessions < 1:
        raise ConfigError(f"{where}: max_sessions must be at least 1")
    if pool.ready_sessions < 0:
        raise ConfigError(f"{where}: ready_sessions must not be negative")
    if pool.ready_sessions > pool.max_sessions:
        raise ConfigError(f"{where}: ready_sessions ({pool.ready_sessions}) exceeds max_sessions")
    if pool.cooldown_seconds <= 0 or pool.execution_timeout_seconds <= 0:
        raise ConfigError(f"{where}: cooldown_seconds and execution_timeout_seconds must be > 0")
    for f in dataclasses.fields(Limits):
        value = getattr(pool.limits, f.name)
        if value <= 0:
            raise ConfigError(f"{where}: limits.{f.name} must be positive")


# --- value parsing -----------------------------------------------------------------------------

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*", re.IGNORECASE)
_SIZE_POWER = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(value: object, name: str) -> int:
    """Bytes from an integer or a string such as ``"128MB"``, ``"2GiB"`` or ``"512k"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{name}: expected a size, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        base = 1024 if m.group(3) else 1000
        return int(float(m.group(1)) * base ** _SIZE_POWER[m.group(2).lower()])
    raise ConfigError(
        f"{name}: expected a size such as 134217728, '128MB' or '2GiB', got {value!r}"
    )


def parse_bool(value: object, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def parse_int(value: object, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{name}: expected an integer, got {value!r}")


def parse_float(value: object, name: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ConfigError(f"{name}: expected a number, got {value!r}")


def parse_str_list(value: object, name: str) -> tuple[str, ...]:
    """A TOML list of strings, or a comma-separated string (environment variables)."""
    if isinstance(value, str):
        return tuple(s.strip() for s in value.split(",") if s.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ConfigError(f"{name}: expected a list of strings, got {value!r}")


def _parse_str(value: object, name: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"{name}: expected a string, got {value!r}")


def _parse_path(value: object, name: str) -> Path:
    return Path(_parse_str(value, name)).expanduser()


def _parse_choice(choices: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(value: object, name: str) -> str:
        text = _parse_str(value, name).strip().lower()
        if text not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


# --- server settings ---------------------------------------------------------------------------

#: every server setting: its TOML key in [server] (= attribute), and how to parse a value
SERVER_FIELDS: dict[str, Callable[[object, str], object]] = {
    "host": _parse_str,
    "port": parse_int,
    "api_keys": parse_str_list,
    "api_key_file": _parse_path,
    "keys_file": _parse_path,
    "no_auth": parse_bool,
    "tls_cert": _parse_path,
    "tls_key": _parse_path,
    "tls_self_signed": _parse_path,
    "backend": _parse_choice(("jail", "unsafe")),
    "data_dir": _parse_path,
    "runtimes_dir": _parse_path,
    "uid_base": parse_int,
    "uid_count": parse_int,
    "memory_reserve_bytes": parse_size,
    "sessions_memory_bytes": parse_size,
    "sessions_memory_reserve_bytes": parse_size,
    "ksm_pages_to_scan": parse_int,
    "ksm_sleep_millisecs": parse_int,
    "shutdown_deadline_seconds": parse_float,
    "log_level": _parse_choice(LOG_LEVELS),
    "access_log": parse_bool,
    "log_format": _parse_choice(LOG_FORMATS),
    "audit_log": _parse_path,
    "otel_traces": parse_bool,
    "egress_hosts": lambda v, n: _parse_hosts(v, n),
    "egress_allow_networks": lambda v, n: _parse_networks(v, n),
    "egress_trust_ca_files": lambda v, n: tuple(Path(p).expanduser() for p in parse_str_list(v, n)),
}


def _parse_hosts(value: object, name: str) -> tuple[tuple[str, str], ...]:
    """``{name = "address"}`` (TOML) or ``name=address,...`` (environment)."""
    if isinstance(value, str):
        pairs = [item.partition("=")[::2] for item in parse_str_list(value, name)]
    elif isinstance(value, dict):
        pairs = [(k, v) for k, v in value.items()]
    else:
        raise ConfigError(f"{name}: expected a table of host names to addresses")
    out = []
    for host, address in pairs:
        try:
            if not isinstance(address, str):  # ip_address() would take an integer
                raise TypeError(address)
            ipaddress.ip_address(address)
        except (ValueError, TypeError):
            raise ConfigError(f"{name}: {host!r}: {address!r} is not an IP address") from None
        out.append((str(host).rstrip(".").lower(), str(address)))
    return tuple(out)


def _parse_networks(value: object, name: str) -> tuple[str, ...]:
    networks = parse_str_list(value, name)
    for net in networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"{name}: {net!r} is not a network (e.g. 10.20.0.0/16)") from None
    return networks


def server_env_name(setting: str) -> str:
    return ENV_PREFIX + setting.upper()


# --- pool settings -----------------------------------------------------------------------------


def _converter(hint: Any, name: str) -> Callable[[object, str], object]:
    origin = get_origin(hint)
    if hint is bool:
        return parse_bool
    if hint is int:
        return parse_size if "_bytes" in name else parse_int
    if hint is float:
        return parse_float
    if hint is str:
        return _parse_str
    if origin is tuple:
        return parse_str_list
    if origin is typing.Literal:
        return _parse_choice(tuple(str(a) for a in get_args(hint)))
    raise TypeError(f"no converter for {name}: {hint!r}")  # pragma: no cover - programming error


def _field_converters(
    cls: type[Any], skip: tuple[str, ...] = ("name", "limits")
) -> dict[str, Callable[[object, str], object]]:
    hints = typing.get_type_hints(cls)
    return {
        f.name: _converter(hints[f.name], f.name)
        for f in dataclasses.fields(cls)
        if f.name not in skip
    }


#: pool settings (top level of a [pools.<name>] table) and limits ([pools.<name>.limits])
POOL_FIELDS = _field_converters(PoolConfig, skip=("name", "limits", "egress"))
#: "disabled" was the only value before egress existed; it means "off"
_parse_network = _parse_choice(("off", "allowlist", "on", "disabled"))
POOL_FIELDS["network"] = lambda v, n: (
    "off" if _parse_network(v, n) == "disabled" else _parse_network(v, n)
)
#: a pool's egress ([pools.<name>.egress]; ``secrets`` is a table of domains to headers)
EGRESS_FIELDS = _field_converters(EgressSettings, skip=("secrets",))
LIMIT_FIELDS = _field_converters(Limits)
#: cluster settings ([cluster] table, SESSIONPOOL_CLUSTER_<SETTING>)
CLUSTER_FIELDS = _field_converters(ClusterConfig, skip=())
#: agents settings ([agents] table, SESSIONPOOL_AGENTS_<SETTING>)
AGENTS_FIELDS = _field_converters(AgentsConfig, skip=("data_dir",))


def agents_env_name(setting: str) -> str:
    return AGENTS_ENV_PREFIX + setting.upper()


def build_agents(
    table: Mapping[str, object], environ: Mapping[str, str], data_dir: Path
) -> AgentsConfig:
    """The [agents] table, then SESSIONPOOL_AGENTS_* variables over it."""
    values: dict[str, object] = {}
    for key, raw in table.items():
        if key not in AGENTS_FIELDS:
            raise ConfigError(
                f"[agents]: unknown setting {key!r}; known: {', '.join(AGENTS_FIELDS)}"
            )
        values[key] = AGENTS_FIELDS[key](raw, f"[agents] {key}")
    for key, parse in AGENTS_FIELDS.items():
        env = agents_env_name(key)
        if env in environ:
            values[key] = parse(environ[env], env)
    return AgentsConfig(data_dir=data_dir, **values)  # type: ignore[arg-type]


def build_cluster(
    table: Mapping[str, object], environ: Mapping[str, str], address: str | None
) -> ClusterConfig | None:
    """The [cluster] table, SESSIONPOOL_CLUSTER_* over it, ``--cluster ADDRESS`` over both;
    None (a single machine) unless an address is given somewhere."""
    values: dict[str, object] = {}
    for key, raw in table.items():
        if key not in CLUSTER_FIELDS:
            raise ConfigError(
                f"[cluster]: unknown setting {key!r}; known: {', '.join(CLUSTER_FIELDS)}"
            )
        values[key] = CLUSTER_FIELDS[key](raw, f"[cluster] {key}")
    for key, parse in CLUSTER_FIELDS.items():
        env = CLUSTER_ENV_PREFIX + key.upper()
        if env in environ:
            values[key] = parse(environ[env], env)
    if address:
        values["address"] = address
    if not values.get("address"):
        if values:
            raise ConfigError("[cluster] needs an address (the Ray cluster to join)")
        return None
    config = ClusterConfig(**values)  # type: ignore[arg-type]
    if config.poll_seconds <= 0 or config.placement_grace_seconds <= 0:
        raise ConfigError("[cluster] poll_seconds and placement_grace_seconds must be positive")
    return config


#: quota settings ([quotas] and [tenants.<name>] tables)
QUOTA_FIELDS = _field_converters(TenantQuotas)


def build_quotas(
    quotas_table: Mapping[str, object], tenant_tables: Mapping[str, object]
) -> tuple[TenantQuotas, tuple[tuple[str, TenantQuotas], ...]]:
    """[quotas] for every tenant, and [tenants.<name>] over it for one."""

    def values(table: object, where: str, base: Mapping[str, object]) -> dict[str, object]:
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        out = dict(base)
        for key, raw in table.items():
            if key not in QUOTA_FIELDS:
                raise ConfigError(
                    f"{where}: unknown setting {key!r}; known: {', '.join(QUOTA_FIELDS)}"
                )
            value = QUOTA_FIELDS[key](raw, f"{where} {key}")
            if isinstance(value, int | float) and value < 0:
                raise ConfigError(f"{where} {key} must not be negative (0 is no limit)")
            out[key] = value
        return out

    base = values(quotas_table, "[quotas]", {})
    default = TenantQuotas(**base)  # type: ignore[arg-type]
    tenants = []
    for name, table in tenant_tables.items():
        try:
            check_tenant(name, "[tenants]")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        per = values(table, f"[tenants.{name}]", base)
        tenants.append((name, TenantQuotas(**per)))  # type: ignore[arg-type]
    return default, tuple(tenants)


def pool_env_name(setting: str) -> str:
    return POOL_ENV_PREFIX + setting.upper()


def _pool_env_defaults(environ: Mapping[str, str]) -> tuple[dict[str, object], dict[str, object]]:
    pool: dict[str, object] = {}
    limits: dict[str, object] = {}
    for key, parse in POOL_FIELDS.items():
        env = pool_env_name(key)
        if env in environ:
            pool[key] = parse(environ[env], env)
    for key, parse in LIMIT_FIELDS.items():
        env = pool_env_name(key)
        if env in environ:
            limits[key] = parse(environ[env], env)
    return pool, limits


def _secret_value(value: object, where: str, environ: Mapping[str, str]) -> str:
    """A header value, or ``env:NAME`` to read it from the server's environment (so the
    configuration file need not hold the secret)."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string")
    if value.startswith("env:"):
        name = value[4:]
        if name not in environ:
            raise ConfigError(f"{where}: the environment variable {name} is not set")
        return environ[name]
    return value


def build_egress(
    raw: object, where: str, environ: Mapping[str, str] | None = None
) -> EgressSettings:
    """A ``[pools.<name>.egress]`` table; ``env:NAME`` secrets come from ``environ`` (the
    environment the settings are loaded from; the process's if None)."""
    env = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    values: dict[str, object] = {}
    for key, value in raw.items():
        if key == "secrets":
            if not isinstance(value, dict) or not all(isinstance(h, dict) for h in value.values()):
                raise ConfigError(
                    f"{where}.secrets: expected tables of headers, e.g. "
                    '[pools.default.egress.secrets."api.example.com"] Authorization = "env:KEY"'
                )
            values["secrets"] = tuple(
                (
                    domain,
                    tuple(
                        (h, _secret_value(v, f"{where}.secrets.{domain}.{h}", env))
                        for h, v in headers.items()
                    ),
                )
                for domain, headers in value.items()
            )
        elif key in EGRESS_FIELDS:
            values[key] = EGRESS_FIELDS[key](value, f"{where}.{key}")
        else:
            raise ConfigError(
                f"{where}: unknown setting {key!r}; known: {', '.join([*EGRESS_FIELDS, 'secrets'])}"
            )
    settings = EgressSettings(**values)  # type: ignore[arg-type]
    try:
        settings_policy("allowlist", settings)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if (
        settings.bytes_per_second < 0
        or settings.connections < 1
        or settings.connections_per_second < 0
    ):
        raise ConfigError(
            f"{where}: bytes_per_second and connections_per_second must not be negative (0 is no "
            "limit) and connections must be at least 1"
        )
    return settings


def build_pool(
    name: str,
    table: Mapping[str, object],
    defaults: Mapping[str, object] = {},
    limit_defaults: Mapping[str, object] = {},
    environ: Mapping[str, str] | None = None,
) -> PoolConfig:
    """One PoolConfig from its TOML table over the environment's pool defaults."""
    where = f"[pools.{name}]"
    values: dict[str, object] = dict(defaults)
    limits: dict[str, object] = dict(limit_defaults)
    for key, raw in table.items():
        if key == "limits":
            if not isinstance(raw, dict):
                raise ConfigError(f"{where} limits: expected a table")
            for lkey, lraw in raw.items():
                if lkey not in LIMIT_FIELDS:
                    raise ConfigError(
                        f"{where}.limits: unknown setting {lkey!r}; known: "
                        + ", ".join(LIMIT_FIELDS)
                    )
                limits[lkey] = LIMIT_FIELDS[lkey](lraw, f"{where}.limits.{lkey}")
        elif key == "egress":
            values["egress"] = build_egress(raw, f"{where}.egress", environ)
        elif key in POOL_FIELDS:
            values[key] = POOL_FIELDS[key](raw, f"{where} {key}")
        else:
            raise ConfigError(
                f"{where}: unknown setting {key!r}; known: "
                + ", ".join([*POOL_FIELDS, "limits", "egress"])
            )
    try:
        return PoolConfig(name=name, limits=Limits(**limits), **values)  # type: ignore[arg-type]
    except TypeError as exc:  # pragma: no cover - a converter/field mismatch
        raise ConfigError(f"{where}: {exc}") from exc


# --- loading -----------------------------------------------------------------------------------


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def load_settings(
    overrides: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
    cluster_address: str | None = None,
) -> ServerSettings:
    """Merge defaults < TOML < environment < ``overrides`` (already-typed flag values).

    ``config_file`` falls back to ``SESSIONPOOL_CONFIG``. Overrides whose value is None are
    treated as not given, so argparse namespaces can be passed through as they are.
    """
    env = os.environ if environ is None else environ
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"]).expanduser()

    values: dict[str, object] = {}
    quota_values: dict[str, object] = {}
    pool_tables: dict[str, Mapping[str, object]] | None = None
    agents_table: Mapping[str, object] = {}
    cluster_table: Mapping[str, object] = {}
    issuers: tuple[IssuerConfig, ...] = ()
    if config_file is not None:
        doc = read_toml(config_file)
        unknown = set(doc) - {"server", "pools", "agents", "cluster", "quotas", "tenants", "auth"}
        if unknown:
            raise ConfigError(
                f"{config_file}: unknown table(s) {sorted(unknown)}; use [server], "
                "[pools.<name>], [agents], [cluster], [quotas], [tenants.<name>] and [auth]"
            )
        quota_values["quotas"], quota_values["tenant_quotas"] = build_quotas(
            doc.get("quotas", {}), doc.get("tenants", {})
        )
        auth_table = doc.get("auth", {})
        if not isinstance(auth_table, dict):
            raise ConfigError(f"{config_file}: [auth] must be a table")
        issuers = parse_auth(auth_table)
        cluster_table = doc.get("cluster", {})
        if not isinstance(cluster_table, dict):
            raise ConfigError(f"{config_file}: [cluster] must be a table")
        agents_table = doc.get("agents", {})
        if not isinstance(agents_table, dict):
            raise ConfigError(f"{config_file}: [agents] must be a table")
        server = doc.get("server", {})
        if not isinstance(server, dict):
            raise ConfigError(f"{config_file}: [server] must be a table")
        for key, raw in server.items():
            if key not in SERVER_FIELDS:
                raise ConfigError(
                    f"{config_file} [server]: unknown setting {key!r}; known: "
                    + ", ".join(SERVER_FIELDS)
                )
            values[key] = SERVER_FIELDS[key](raw, f"[server] {key}")
        if "pools" in doc:
            pools = doc["pools"]
            if not isinstance(pools, dict) or not all(isinstance(t, dict) for t in pools.values()):
                raise ConfigError(f"{config_file}: pools must be tables, e.g. [pools.default]")
            pool_tables = pools

    for key, parse in SERVER_FIELDS.items():
        name = server_env_name(key)
        if name in env:
            values[key] = parse(env[name], name)

    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key not in SERVER_FIELDS:
            raise ConfigError(f"unknown setting {key!r}")
        values[key] = value

    pool_defaults, limit_defaults = _pool_env_defaults(env)
    if pool_tables is None:
        pool_tables = {"default": {}}
    pools = tuple(
        build_pool(name, table, pool_defaults, limit_defaults, env)
        for name, table in pool_tables.items()
    )
    data_dir = values.get("data_dir", ServerSettings.data_dir)
    assert isinstance(data_dir, Path)
    agents = build_agents(agents_table, env, data_dir)
    if not agents.pool and pools:
        names = [p.name for p in pools]
        agents = dataclasses.replace(agents, pool="default" if "default" in names else names[0])
    settings = ServerSettings(
        pools=pools,
        agents=agents,
        cluster=build_cluster(cluster_table, env, cluster_address),
        issuers=issuers,
        config_file=config_file,
        **quota_values,  # type: ignore[arg-type]
        **values,  # type: ignore[arg-type]
    )
    settings.check()
    return settings

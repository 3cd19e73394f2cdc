"""Settings: defaults, TOML, environment and flags, in that order of precedence."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from sessionpool.config import EngineConfig, GiB, MiB, PoolConfig
from sessionpool.errors import ConfigError
from sessionpool.server.cli import settings_from_args
from sessionpool.server.flags import add_serve_arguments
from sessionpool.server.settings import (
    AGENTS_FIELDS,
    LIMIT_FIELDS,
    POOL_FIELDS,
    QUOTA_FIELDS,
    SERVER_FIELDS,
    is_loopback,
    load_settings,
    parse_size,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sessionpool.toml"
    path.write_text(text)
    return path


def test_defaults_give_one_default_pool() -> None:
    s = load_settings(environ={})
    assert s.host == "127.0.0.1"
    assert s.port == 8080
    assert s.backend == "jail"
    assert s.api_keys == ()
    assert [p.name for p in s.pools] == ["default"]
    assert s.pools[0] == PoolConfig()
    assert s.key_file == s.data_dir / "api-key"


def test_toml_sets_server_and_pools(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [server]
        host = "::1"
        port = 9000
        api_keys = ["k1", "k2"]
        shutdown_deadline_seconds = 3

        [pools.default]

        [pools.big]
        preload = ["numpy"]
        max_sessions = 50
        ready_sessions = 4
        cooldown_seconds = 600
        execution_timeout_seconds = 60

        [pools.big.limits]
        memory_bytes = "4GiB"
        file_bytes = "10MB"
        cpus = 2.5
        """,
    )
    s = load_settings(environ={}, config_file=path)
    assert (s.host, s.port, s.api_keys) == ("::1", 9000, ("k1", "k2"))
    assert s.shutdown_deadline_seconds == 3.0
    assert [p.name for p in s.pools] == ["default", "big"]
    big = s.pools[1]
    assert big.preload == ("numpy",)
    assert (big.max_sessions, big.ready_sessions) == (50, 4)
    assert big.execution_timeout_seconds == 60.0
    assert big.limits.memory_bytes == 4 * GiB
    assert big.limits.file_bytes == 10_000_000
    assert big.limits.cpus == 2.5
    assert big.limits.pids == PoolConfig().limits.pids


def test_environment_overrides_toml_and_flags_override_both(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 9000\nhost = "127.0.0.1"\nlog_level = "debug"\n')
    env = {
        "SESSIONPOOL_CONFIG": str(path),
        "SESSIONPOOL_PORT": "9100",
        "SESSIONPOOL_API_KEYS": "a, b,,c",
        "SESSIONPOOL_NO_AUTH": "yes",
        "SESSIONPOOL_BACKEND": "unsafe",
    }
    s = load_settings(environ=env)
    assert s.port == 9100
    assert s.log_level == "debug"
    assert s.api_keys == ("a", "b", "c")
    assert s.no_auth is True
    assert s.backend == "unsafe"
    s = load_settings({"port": 9200, "api_keys": ("flag",)}, environ=env)
    assert (s.port, s.api_keys) == (9200, ("flag",))


def test_flags_through_argparse(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(
        [
            *("--port", "0", "--api-key", "x", "--api-key", "y", "--data-dir", str(tmp_path)),
            *("--tls-self-signed", str(tmp_path / "tls"), "--shutdown-deadline", "2.5"),
        ]
    )
    s = settings_from_args(args)
    assert s.port == 0
    assert s.api_keys == ("x", "y")
    assert s.data_dir == tmp_path
    assert s.tls_self_signed == tmp_path / "tls"
    assert s.shutdown_deadline_seconds == 2.5
    assert s.access_log is True  # not given: the default stays


def test_pool_environment_defaults_apply_to_every_pool(tmp_path: Path) -> None:
    path = write(tmp_path, "[pools.a]\n[pools.b]\nready_sessions = 7\n")
    env = {
        "SESSIONPOOL_POOL_READY_SESSIONS": "1",
        "SESSIONPOOL_POOL_PRELOAD": "",
        "SESSIONPOOL_POOL_FILE_BYTES": "1MiB",
    }
    s = load_settings(environ=env, config_file=path)
    a, b = s.pools
    assert (a.ready_sessions, b.ready_sessions) == (1, 7)  # the pool's own table wins
    assert a.preload == b.preload == ()
    assert a.limits.file_bytes == b.limits.file_bytes == MiB


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[server]\nprot = 1\n", "prot"),
        ("[pools.x]\nmax_session = 1\n", "max_session"),
        ("[pools.x.limits]\nmemory = 1\n", "memory"),
        ("[serve]\n", "serve"),
        ("[server]\nport = 'eighty'\n", "port"),
        ("[pools.x]\nready_sessions = true\n", "ready_sessions"),
        ("[pools.x.limits]\nfile_bytes = '12 parsecs'\n", "file_bytes"),
        ("[pools.x]\nnetwork = 'enabled'\n", "network"),
        ("[pools.'bad name']\n", "pool name"),
        ("[pools.x]\nready_sessions = 5\nmax_sessions = 2\n", "ready_sessions"),
        ("not toml at all = = =", "sessionpool.toml"),
        ("[agents]\nmodel_url = 'x'\n", "model_url"),
        ("[agents]\nmax_steps = 0\n", "max_steps"),
        ("[agents]\npool = 'nope'\n", "nope"),
        ("[agents]\nmodel_map = ['no-equals-sign']\n", "model_map"),
        ("[agents]\ndatabase_url = 'mysql://db/x'\n", "database_url"),
        ("agents = 3\n", "agents"),
    ],
)
def test_bad_configuration_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(environ={}, config_file=write(tmp_path, text))


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={}, config_file=Path("/nonexistent/sessionpool.toml"))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"no_auth": True, "host": "0.0.0.0"}, "refusing --no-auth"),
        ({"no_auth": True, "host": "192.168.1.10"}, "refusing --no-auth"),
        ({"tls_cert": Path("c.pem")}, "together"),
        ({"tls_cert": Path("c"), "tls_key": Path("k"), "tls_self_signed": Path("d")}, "either"),
        ({"port": 70000}, "port"),
    ],
)
def test_unsafe_or_impossible_combinations(overrides: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_settings(overrides, environ={})


def test_no_auth_is_allowed_on_loopback() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert load_settings({"no_auth": True, "host": host}, environ={}).no_auth


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.com")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (5, 5),
        ("5", 5),
        ("128MB", 128_000_000),
        ("128 MiB", 128 * MiB),
        ("2GiB", 2 * GiB),
        ("1.5k", 1500),
        ("512KiB", 512 * 1024),
        ("3g", 3_000_000_000),
    ],
)
def test_sizes(text: object, value: int) -> None:
    assert parse_size(text, "x") == value


def test_every_engine_setting_can_be_configured() -> None:
    s = load_settings(
        environ={"SESSIONPOOL_UID_BASE": "2000000000", "SESSIONPOOL_MEMORY_RESERVE_BYTES": "1GiB"}
    )
    engine = s.engine_config()
    assert {f.name for f in dataclasses.fields(EngineConfig)} <= set(SERVER_FIELDS)
    assert engine.uid_base == 2_000_000_000
    assert engine.memory_reserve_bytes == GiB
    assert engine.uid_count == EngineConfig().uid_count


def test_every_setting_is_documented() -> None:
    text = DOCS.read_text()
    for name in [*SERVER_FIELDS, *POOL_FIELDS, *LIMIT_FIELDS]:
        assert f"`{name}`" in text, f"{name} is missing from docs/configuration.md"
    for name in SERVER_FIELDS:
        assert f"SESSIONPOOL_{name.upper()}" in text
    for name in [*POOL_FIELDS, *LIMIT_FIELDS]:
        assert f"SESSIONPOOL_POOL_{name.upper()}" in text
    for name in AGENTS_FIELDS:
        assert f"| `{name}` |" in text, f"[agents] {name} is missing from docs/configuration.md"
    for name in QUOTA_FIELDS:
        assert f"| `{name}` |" in text, f"[quotas] {name} is missing from docs/configuration.md"


def test_agents_table_then_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[agents]\nmodel_base_url = 'http://m/v1'\nmodel_map = ['gpt-4o-mini=llama']\n"
        "max_steps = 3\ndefault_model = 'from-file'\n",
    )
    s = load_settings(
        {"data_dir": tmp_path / "data"},
        environ={"SESSIONPOOL_AGENTS_DEFAULT_MODEL": "from-env"},
        config_file=path,
    )
    assert s.agents.model_base_url == "http://m/v1" and s.agents.max_steps == 3
    assert s.agents.default_model == "from-env"
    assert s.agents.mapped_model("gpt-4o-mini") == "llama"
    assert s.agents.mapped_model(None) == "from-env"
    assert s.agents.database == f"sqlite:///{tmp_path / 'data' / 'agents.db'}"
    assert not load_settings(environ={"SESSIONPOOL_AGENTS_ENABLED": "no"}).agents.enabled


def test_quotas_for_every_tenant_and_one(tmp_path: Path) -> None:
    cfg = tmp_path / "q.toml"
    cfg.write_text(
        "[quotas]\nmax_sessions = 5\nexecutions_per_second = 2.5\n"
        "[tenants.acme]\nmax_sessions = 50\nupload_bytes_per_hour = '1GB'\n"
    )
    s = load_settings(config_file=cfg, environ={})
    assert s.quotas.max_sessions == 5 and s.quotas.executions_per_second == 2.5
    acme = dict(s.tenant_quotas)["acme"]
    # a tenant's table is over [quotas]: what it does not say, [quotas] does
    assert acme.max_sessions == 50 and acme.executions_per_second == 2.5
    assert acme.upload_bytes_per_hour == 1_000_000_000


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[quotas]\nmax_session = 1\n", "unknown setting 'max_session'"),
        ("[quotas]\nmax_sessions = -1\n", "must not be negative"),
        ("[tenants.Acme]\nmax_sessions = 1\n", "is not a tenant name"),
        ("[tenants]\nacme = 3\n", "[tenants.acme] must be a table"),
    ],
)
def test_bad_quotas_are_refused(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "q.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=cfg, environ={})
    assert message in str(info.value)

"""Egress settings: a pool's ``network`` and ``[pools.<name>.egress]``, the server's
``egress_*`` settings, and the engine refusing a bad pool before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionpool.config import EgressSettings, EngineConfig, MiB, PoolConfig
from sessionpool.engine import Engine
from sessionpool.errors import ConfigError
from sessionpool.sandbox.fake import FakeBackend
from sessionpool.server.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sessionpool.toml"
    path.write_text(text)
    return path


def pool_of(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> PoolConfig:
    settings = load_settings(environ=environ or {}, config_file=write(tmp_path, text))
    return {p.name: p for p in settings.pools}["x"]


@pytest.mark.parametrize(
    ("value", "mode"),
    [("off", "off"), ("allowlist", "allowlist"), ("on", "on"), ("disabled", "off")],
)
def test_pool_network_modes(tmp_path: Path, value: str, mode: str) -> None:
    assert pool_of(tmp_path, f"[pools.x]\nnetwork = '{value}'\n").network == mode


def test_the_default_network_is_off_and_the_environment_sets_every_pools(tmp_path: Path) -> None:
    assert load_settings(environ={}).pools[0].network == "off"
    assert load_settings(environ={}).pools[0].egress == EgressSettings()
    s = load_settings(environ={"SESSIONPOOL_POOL_NETWORK": "disabled"})
    assert s.pools[0].network == "off"
    s = load_settings(
        environ={"SESSIONPOOL_POOL_NETWORK": "on"},
        config_file=write(tmp_path, "[pools.a]\n[pools.b]\nnetwork = 'allowlist'\n"),
    )
    assert [p.network for p in s.pools] == ["on", "allowlist"]  # the table wins for b


def test_an_egress_table(tmp_path: Path) -> None:
    pool = pool_of(
        tmp_path,
        """
        [pools.x]
        network = "allowlist"

        [pools.x.egress]
        allow = ["pypi.org", "*.pythonhosted.org", "git.example.com:22"]
        bytes_per_second = 2097152
        connections = 8
        connections_per_second = 2.5

        [pools.x.egress.secrets."api.example.com"]
        Authorization = "Bearer literal"
        X-Tenant = "env:TENANT_ID"
        """,
        environ={"TENANT_ID": "t-42"},
    )
    assert pool.egress == EgressSettings(
        allow=("pypi.org", "*.pythonhosted.org", "git.example.com:22"),
        secrets=(("api.example.com", (("Authorization", "Bearer literal"), ("X-Tenant", "t-42"))),),
        bytes_per_second=2 * MiB,
        connections=8,
        connections_per_second=2.5,
    )


def test_secrets_come_from_the_environment_the_settings_are_loaded_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = '[pools.x.egress.secrets."api.example.com"]\nAuthorization = "env:SP_TEST_KEY"\n'
    monkeypatch.setenv("SP_TEST_KEY", "from-the-process")
    given = pool_of(tmp_path, text, {"SP_TEST_KEY": "from-the-mapping"})
    assert given.egress.secrets == (("api.example.com", (("Authorization", "from-the-mapping"),)),)
    with pytest.raises(ConfigError) as info:
        pool_of(tmp_path, text, {})  # the mapping is the environment: the process's is not read
    assert str(info.value) == (
        "[pools.x].egress.secrets.api.example.com.Authorization: "
        "the environment variable SP_TEST_KEY is not set"
    )
    s = load_settings(config_file=write(tmp_path, text))  # no mapping: the process's
    assert s.pools[0].egress.secrets[0][1] == (("Authorization", "from-the-process"),)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('allow = ["10.0.0.1"]', "[pools.x].egress: egress.allow: '10.0.0.1' is an IP address"),
        ('allow = ["a.*.example.com"]', "a wildcard is only allowed as the first label"),
        ('allow = ["example.com:99999"]', "port 99999 is out of range"),
        ("allow = [3]", "[pools.x].egress.allow: expected a list of strings, got [3]"),
        ('allow = "pypi.org"', ""),  # a comma-separated string, as from the environment
        ("connections = 0", "connections must be at least 1"),
        ("bytes_per_second = -1", "must not be negative"),
        ("connections_per_second = -1.0", "must not be negative"),
        ("proxy = 'x'", "[pools.x].egress: unknown setting 'proxy'"),
        ("secrets = 'x'", "[pools.x].egress.secrets: expected tables of headers"),
        ("secrets = {'a.com' = 'x'}", "expected tables of headers"),
        ("secrets = {'*.a.com' = {X-Key = 'v'}}", "secrets name one domain, not a wildcard"),
        ("secrets = {'a.com' = {Host = 'b.com'}}", "Host cannot be set by a policy"),
        ('secrets = {"a.com" = {X-Key = "a\\r\\nb"}}', "must be one line"),
        (
            "secrets = {'a.com' = {X-Key = 5}}",
            "[pools.x].egress.secrets.a.com.X-Key: expected a string",
        ),
    ],
)
def test_bad_egress_tables_name_the_pool(tmp_path: Path, table: str, needle: str) -> None:
    text = f"[pools.x]\nnetwork = 'allowlist'\n[pools.x.egress]\n{table}\n"
    if not needle:
        assert pool_of(tmp_path, text).egress.allow == ("pypi.org",)
        return
    with pytest.raises(ConfigError) as info:
        pool_of(tmp_path, text)
    assert needle in str(info.value)
    assert "[pools.x]" in str(info.value)


def test_an_egress_that_is_not_a_table_and_a_bad_network(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[pools\.x\]\.egress: expected a table"):
        pool_of(tmp_path, "[pools.x]\negress = 'pypi.org'\n")
    with pytest.raises(ConfigError) as info:
        pool_of(tmp_path, "[pools.x]\nnetwork = 'allowed'\n")
    assert "network" in str(info.value) and "allowlist" in str(info.value)


def test_a_cluster_refuses_pools_with_network(tmp_path: Path) -> None:
    text = "[cluster]\n[pools.x]\nnetwork = '{}'\n"
    for mode in ("allowlist", "on"):
        with pytest.raises(ConfigError) as info:
            load_settings(
                environ={}, config_file=write(tmp_path, text.format(mode)), cluster_address="auto"
            )
        assert f"[pools.x] network = '{mode}': sessions of a cluster have no network" in str(
            info.value
        )
        assert 'set network = "off"' in str(info.value)
    for mode in ("off", "disabled"):
        s = load_settings(
            environ={}, config_file=write(tmp_path, text.format(mode)), cluster_address="auto"
        )
        assert s.cluster is not None and s.pools[0].network == "off"


def test_egress_hosts_as_a_table_or_a_list(tmp_path: Path) -> None:
    s = load_settings(
        environ={},
        config_file=write(
            tmp_path,
            '[server]\negress_hosts = {"PyPI.Internal." = "10.20.0.5", "v6.internal" = "fd00::5"}',
        ),
    )
    assert s.egress_hosts == (("pypi.internal", "10.20.0.5"), ("v6.internal", "fd00::5"))
    assert s.engine_config().egress_hosts == s.egress_hosts
    s = load_settings(environ={"SESSIONPOOL_EGRESS_HOSTS": "a.internal=10.0.0.1, b.internal=::1"})
    assert s.egress_hosts == (("a.internal", "10.0.0.1"), ("b.internal", "::1"))


@pytest.mark.parametrize(
    ("environ", "toml", "needle"),
    [
        ({"SESSIONPOOL_EGRESS_HOSTS": "a.internal"}, "", "'a.internal': '' is not an IP address"),
        ({"SESSIONPOOL_EGRESS_HOSTS": "a.internal=nope"}, "", "'nope' is not an IP address"),
        ({}, '[server]\negress_hosts = {"a.internal" = 167772161}\n', "is not an IP address"),
        ({}, '[server]\negress_hosts = ["a.internal=10.0.0.1"]\n', "expected a table"),
        ({"SESSIONPOOL_EGRESS_ALLOW_NETWORKS": "10.0.0.0/33"}, "", "is not a network"),
        ({"SESSIONPOOL_EGRESS_ALLOW_NETWORKS": "intranet"}, "", "'intranet' is not a network"),
    ],
)
def test_bad_server_egress_settings(
    tmp_path: Path, environ: dict[str, str], toml: str, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, config_file=write(tmp_path, toml) if toml else None)
    assert needle in str(info.value)
    assert "egress_" in str(info.value).lower()


def test_allow_networks_and_trusted_ca_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = load_settings(
        environ={
            "SESSIONPOOL_EGRESS_ALLOW_NETWORKS": "10.20.0.0/16,fd00:1::/32",
            "SESSIONPOOL_EGRESS_TRUST_CA_FILES": str(ca),
        }
    )
    assert s.egress_allow_networks == ("10.20.0.0/16", "fd00:1::/32")
    assert s.egress_trust_ca_files == (ca,)
    engine = s.engine_config()
    assert (engine.egress_allow_networks, engine.egress_trust_ca_files) == (
        ("10.20.0.0/16", "fd00:1::/32"),
        (ca,),
    )
    missing = tmp_path / "missing.pem"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"SESSIONPOOL_EGRESS_TRUST_CA_FILES": f"{ca},{missing}"})
    assert str(info.value) == f"egress_trust_ca_files: {missing} is not a file"
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings(environ={"SESSIONPOOL_EGRESS_TRUST_CA_FILES": str(tmp_path)})


# --- the engine's own check, for pools built without the settings loader -----------------------


async def test_the_engine_refuses_a_bad_egress_rule_naming_the_pool(tmp_path: Path) -> None:
    bad = PoolConfig(name="net", network="allowlist", egress=EgressSettings(allow=("1.2.3.4",)))
    engine = Engine(EngineConfig(data_dir=tmp_path), [bad], backend=FakeBackend(tmp_path))
    with pytest.raises(ConfigError) as info:
        await engine.start()
    assert str(info.value).startswith("pool 'net': egress: ")
    assert "'1.2.3.4' is an IP address" in str(info.value)
    assert engine.egress is None
    await engine.close()


async def test_an_unisolated_backend_runs_no_proxy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pool = PoolConfig(
        name="net", network="allowlist", ready_sessions=0, egress=EgressSettings(allow=("a.com",))
    )
    engine = Engine(EngineConfig(data_dir=tmp_path), [pool], backend=FakeBackend(tmp_path))
    await engine.start()
    try:
        assert engine.egress is None
        assert "no egress policy is enforced" in caplog.text
        assert "['net']" in caplog.text
    finally:
        await engine.close()

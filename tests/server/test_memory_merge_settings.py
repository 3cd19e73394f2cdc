"""memory_merge (a pool setting) and the ksm_* scan rate (server settings): parsed, refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from sessionpool.config import EngineConfig
from sessionpool.errors import ConfigError
from sessionpool.server.settings import load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sessionpool.toml"
    path.write_text(text)
    return path


def test_memory_merge_is_off_by_default() -> None:
    s = load_settings(environ={})
    assert [p.memory_merge for p in s.pools] == ["off"]


def test_each_pool_chooses_its_scope(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [pools.default]
        [pools.dense]
        memory_merge = "zygote"
        [pools.mine]
        memory_merge = "ALL"
        """,
    )
    s = load_settings(environ={}, config_file=path)
    assert {p.name: p.memory_merge for p in s.pools} == {
        "default": "off",
        "dense": "zygote",
        "mine": "all",
    }


def test_the_environment_gives_every_pool_a_default(tmp_path: Path) -> None:
    path = write(tmp_path, '[pools.a]\n[pools.b]\nmemory_merge = "off"\n')
    s = load_settings(environ={"SESSIONPOOL_POOL_MEMORY_MERGE": "zygote"}, config_file=path)
    assert {p.name: p.memory_merge for p in s.pools} == {"a": "zygote", "b": "off"}


@pytest.mark.parametrize("bad", ['"yes"', "true", '"shared"', "1"])
def test_a_bad_value_is_refused_naming_the_pool_and_the_choices(tmp_path: Path, bad: str) -> None:
    path = write(tmp_path, f"[pools.dense]\nmemory_merge = {bad}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, config_file=path)
    text = str(info.value)
    assert "[pools.dense] memory_merge" in text
    assert "off, zygote, all" in text or "expected a string" in text


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="SESSIONPOOL_POOL_MEMORY_MERGE: expected one of"):
        load_settings(environ={"SESSIONPOOL_POOL_MEMORY_MERGE": "on"})


def test_the_scan_rate_reaches_the_engine(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nksm_pages_to_scan = 4000\n")
    s = load_settings(environ={"SESSIONPOOL_KSM_SLEEP_MILLISECS": "50"}, config_file=path)
    engine = s.engine_config()
    assert (engine.ksm_pages_to_scan, engine.ksm_sleep_millisecs) == (4000, 50)
    default = load_settings(environ={}).engine_config()
    assert default.ksm_pages_to_scan == EngineConfig.ksm_pages_to_scan
    assert default.ksm_sleep_millisecs == EngineConfig.ksm_sleep_millisecs


@pytest.mark.parametrize("name", ["KSM_PAGES_TO_SCAN", "KSM_SLEEP_MILLISECS"])
def test_a_scan_rate_below_one_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="ksm_pages_to_scan and ksm_sleep_millisecs"):
        load_settings(environ={f"SESSIONPOOL_{name}": "0"})

"""The jail's file tree: binds of the interpreter must survive wherever the host keeps it.

CI and users clone the repository anywhere, /tmp included; the session's private /tmp must not
hide a virtualenv (or prefix) that lives below it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sessionpool.config import EngineConfig, PoolConfig
from sessionpool.engine import Engine
from sessionpool.sandbox.jailed import JailBackend

pytestmark = pytest.mark.jail


@pytest.fixture(scope="module")
def tmp_tree() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="sp-bind-") as d:
        path = Path(d)
        (path / "marker.txt").write_text("visible")
        os.chmod(path, 0o755)
        yield path


@pytest.fixture(scope="module")
async def engine_with_tmp_bind(
    tmp_path_factory: pytest.TempPathFactory, tmp_tree: Path
) -> AsyncIterator[Engine]:
    eng = Engine(
        EngineConfig(data_dir=Path(tmp_path_factory.mktemp("layout"))),
        [PoolConfig(ready_sessions=0)],
    )
    await eng.backend.start()
    assert isinstance(eng.backend, JailBackend)
    eng.backend.ro_binds.append(str(tmp_tree))  # as if the virtualenv lived there
    for pool in eng.pools.values():
        await pool.start()
    eng.started = True
    yield eng
    await eng.close()


async def test_a_bind_below_tmp_is_not_hidden_by_the_private_tmp(
    engine_with_tmp_bind: Engine, tmp_tree: Path
) -> None:
    session = await engine_with_tmp_bind.pool("default").acquire("layout")
    r = await session.execute(
        f"import os\nopen({str(tmp_tree / 'marker.txt')!r}).read(), os.access('/tmp', os.W_OK)"
    )
    assert r.result is not None, r.stderr
    assert r.result.data["text/plain"] == "('visible', True)"
    denied = await session.execute(f"open({str(tmp_tree / 'new.txt')!r}, 'w')")
    assert denied.error is not None and denied.error.ename == "OSError"  # read-only bind

"""Session-wide fixtures of the agents tests, registered for the whole suite by tests/conftest.

Each starts once per run, and only when a test asks for it: ``scripted_model`` (the scripted
chat-completions server), ``agents_server`` (a TLS server with the agents faces on SQLite, driven
by that model) and ``postgres`` (a throwaway PostgreSQL, or a skip that says why there is none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agents.harness import AgentsServer
from tests.agents.postgres import PostgresServer, unavailable_reason
from tests.agents.scripted_model import ScriptedModel


@pytest.fixture(scope="session")
def scripted_model() -> Iterator[ScriptedModel]:
    with ScriptedModel() as model:
        yield model


@pytest.fixture(scope="session")
def agents_server(
    tmp_path_factory: pytest.TempPathFactory, scripted_model: ScriptedModel
) -> Iterator[AgentsServer]:
    workdir = Path(tmp_path_factory.mktemp("agents-https"))
    with AgentsServer(workdir, scripted_model.url) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with PostgresServer() as server:
        yield server

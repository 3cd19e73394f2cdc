"""The persistence layer on both databases: SQLite (the default) and a real PostgreSQL server."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from sessionpool.agents import AgentsConfig, AgentService
from sessionpool.agents.records import Records
from sessionpool.agents.store import Store, engine_for
from sessionpool.agents.types import (
    Agent,
    Container,
    Conversation,
    Message,
    PageRequest,
    Record,
    Run,
    RunStatus,
    Step,
    StoredFile,
)
from sessionpool.engine import Engine
from sessionpool.errors import ConfigError, ObjectNotFound
from sessionpool.tenancy import DEFAULT_TENANT
from tests.agents.postgres import PostgresServer
from tests.agents.scripted_model import ScriptedModel

T = DEFAULT_TENANT


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'agents.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    yield server.url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    s = Store(database_url)
    s.open()
    s.open()  # idempotent: a second start finds the tables
    # tests use their own kinds: the PostgreSQL database is shared by the whole run
    yield s
    s.close()


def fill(store: Store, kind: str, n: int, parent: str = "p", tenant: str = T) -> list[str]:
    ids = [f"{kind}-{i}-{tenant}" for i in range(n)]
    for i, rid in enumerate(ids):
        tag = "even" if i % 2 == 0 else "odd"
        store.insert(kind, rid, 1000 + i, {"id": rid, "n": i}, parent, tag, tenant=tenant)
    return ids


def test_records_round_trip_update_and_delete(store: Store) -> None:
    kind = f"k{uuid.uuid4().hex[:8]}"
    doc = {"id": "a", "text": "héllo \u2603", "nested": {"x": [1, None]}}
    store.insert(kind, "a", 1, doc, tenant=T)
    assert store.get(kind, "a", tenant=T) == doc
    assert store.get("other", "a", tenant=T) is None  # ids are looked up within their kind
    assert store.update(kind, "a", {"id": "a", "text": "new"}, tenant=T)
    assert store.get(kind, "a", tenant=T) == {"id": "a", "text": "new"}
    assert not store.update(kind, "missing", {}, tenant=T)
    assert store.delete(kind, "a", tenant=T) and not store.delete(kind, "a", tenant=T)
    assert store.get(kind, "a", tenant=T) is None


def test_paging_follows_insertion_order_both_ways(store: Store) -> None:
    kind = f"k{uuid.uuid4().hex[:8]}"
    ids = fill(store, kind, 7)
    page, more = store.page(kind, PageRequest(limit=3), tenant=T)
    assert [d["id"] for d in page] == ids[::-1][:3] and more  # newest first by default
    page, more = store.page(kind, PageRequest(limit=3, after=page[-1]["id"]), tenant=T)
    assert [d["id"] for d in page] == ids[::-1][3:6] and more
    page, more = store.page(kind, PageRequest(limit=3, after=page[-1]["id"]), tenant=T)
    assert [d["id"] for d in page] == [ids[0]] and not more
    page, more = store.page(kind, PageRequest(limit=3, after=ids[0]), tenant=T)
    assert page == [] and not more  # past the end: an empty page, no more
    between = PageRequest(limit=10, order="asc", after=ids[1], before=ids[5])
    page, _ = store.page(kind, between, tenant=T)
    assert [d["id"] for d in page] == ids[2:5]
    odd, _ = store.page(kind, PageRequest(limit=10, order="asc"), tag="odd", tenant=T)
    assert [d["id"] for d in odd] == ids[1::2]
    asc = PageRequest(limit=10, order="asc")
    not_odd, _ = store.page(kind, asc, exclude_tag="odd", tenant=T)
    assert [d["id"] for d in not_odd] == ids[0::2]
    assert store.page(kind, PageRequest(after="nope"), tenant=T) == ([], False)


def test_children_are_listed_and_deleted_by_parent(store: Store) -> None:
    kind = f"k{uuid.uuid4().hex[:8]}"
    mine = fill(store, kind, 3, parent="mine")
    store.insert(kind, "theirs", 1, {"id": "theirs"}, "theirs", tenant=T)
    assert [d["id"] for d in store.all(kind, "mine", tenant=T)] == mine
    assert [d["id"] for d in store.all(kind, "mine", "even", tenant=T)] == [mine[0], mine[2]]
    assert sorted(store.delete_children(kind, "mine", tenant=T)) == sorted(mine)
    assert [d["id"] for d in store.all(kind, tenant=T)] == ["theirs"]


def test_blobs_keep_every_byte(store: Store) -> None:
    data = bytes(range(256)) * 1000
    blob = f"b{uuid.uuid4().hex[:8]}"
    store.put_blob(blob, data)
    assert store.get_blob(blob, tenant=None) == data
    store.put_blob(blob, b"replaced")
    assert store.get_blob(blob, tenant=None) == b"replaced"
    store.delete_blob(blob)
    assert store.get_blob(blob, tenant=None) is None


#: the row kind each record type has always been stored under: databases written by earlier
#: versions hold these strings
STORED_KINDS: list[tuple[type[Record], str, dict[str, object]]] = [
    (Agent, "agent", {"model": "m"}),
    (Conversation, "conversation", {}),
    (Message, "message", {"conversation_id": "c", "role": "user"}),
    (Run, "run", {"conversation_id": "c", "model": "m"}),
    (Step, "step", {"run_id": "r", "conversation_id": "c", "type": "tool_calls"}),
    (StoredFile, "file", {"filename": "a.csv", "bytes": 1}),
    (Container, "container", {"session_id": "s"}),
]


async def test_records_read_and_write_the_kinds_earlier_versions_stored(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'agents.db'}")
    root = Records(store)
    await root.open()
    records = root.scoped(T)
    try:
        for cls, kind, fields in STORED_KINDS:
            rid = f"{kind}-old"
            store.insert(kind, rid, 1, {"id": rid, **fields}, "p", tenant=T)
            record = await records.load(cls, rid)
            assert record.id == rid and [r.id for r in await records.all(cls, "p")] == [rid]
            new = cls.model_validate({"id": f"{kind}-new", **fields})
            await records.insert(new, "p")
            assert store.get(kind, new.id, tenant=T) is not None
            assert await records.delete(cls, new.id) and store.get(kind, new.id, tenant=T) is None
        with pytest.raises(ObjectNotFound, match="thread"):
            await records.load(Conversation, "nope")
    finally:
        await root.close()


def test_bad_database_urls_are_refused() -> None:
    with pytest.raises(ConfigError, match="expected sqlite"):
        engine_for("mysql://x/y")


@pytest.mark.jail
async def test_a_whole_run_persists_on_either_database(
    database_url: str, engine: Engine, scripted_model: ScriptedModel, tmp_path: Path
) -> None:
    """The agent loop on the database, then a second service (a restarted server) reads it."""
    config = AgentsConfig(
        model_base_url=scripted_model.url, database_url=database_url, data_dir=tmp_path
    )
    service = AgentService(config, engine)
    await service.start()
    first = service.for_tenant(T)
    try:
        agent = await first.create_agent(model="scripted-chart", name="charts")
        conversation = await first.create_conversation()
        await first.add_message(conversation.id, role="user", content="chart")
        run = await first.start_run(conversation.id, agent_id=agent.id)
        run = await first.wait_run(run.id, timeout=60)
        assert run.status == RunStatus.COMPLETED, run.last_error
    finally:
        await service.close()
    restarted = AgentService(config, engine)
    await restarted.start()
    second = restarted.for_tenant(T)
    try:
        again = await second.get_run(run.id)
        assert again.status == RunStatus.COMPLETED and again.agent_id == agent.id
        messages = await second.list_messages(conversation.id, PageRequest())
        assert [m.role for m in messages.items] == ["assistant", "user"]
        steps = await second.run_steps(run.id)
        image = next(o for o in steps[0].tool_calls[0].outputs if o.type == "image")
        assert image.file_id and (await second.files.content(image.file_id)).startswith(b"\x89PNG")
        assert [a.id for a in await second.agents_named("charts")] == [agent.id]
    finally:
        await restarted.close()


# --- tenants --------------------------------------------------------------------------------------


def test_a_tenant_sees_only_its_own_rows(store: Store) -> None:
    """Every read, change, listing and cursor is within the tenant: another tenant's row is
    exactly as absent as one never written."""
    kind = f"k{uuid.uuid4().hex[:8]}"
    mine = fill(store, kind, 3, parent="p", tenant="acme")
    theirs = fill(store, kind, 3, parent="p", tenant="umbrella")
    store.put_blob(mine[0], b"acme's bytes")
    for row in mine:
        assert store.get(kind, row, tenant="acme") is not None
        assert store.get(kind, row, tenant="umbrella") is None
        assert not store.update(kind, row, {"id": row, "stolen": True}, tenant="umbrella")
        assert not store.delete(kind, row, tenant="umbrella")
    assert store.get_blob(mine[0], tenant="umbrella") is None
    assert store.get_blob(mine[0], tenant="acme") == b"acme's bytes"
    assert [d["id"] for d in store.all(kind, "p", tenant="umbrella")] == theirs
    page, more = store.page(kind, PageRequest(limit=100, order="asc"), tenant="umbrella")
    assert [d["id"] for d in page] == theirs and not more
    # acme's id as umbrella's cursor: the same empty page as an id never issued
    for cursor in ({"after": mine[0]}, {"before": mine[-1]}):
        request = PageRequest(limit=100, order="asc", **cursor)
        assert store.page(kind, request, tenant="umbrella") == ([], False)
    assert store.delete_children(kind, "p", tenant="umbrella") == theirs
    assert [d["id"] for d in store.all(kind, "p", tenant="acme")] == mine
    assert store.get(kind, mine[1], tenant="acme") == {"id": mine[1], "n": 1}  # untouched
    assert [d["id"] for d in store.all(kind, "p", tenant=None)] == mine  # housekeeping: all


#: the objects table as versions before tenants created it
OLD_OBJECTS = """
CREATE TABLE agents_objects (
    seq {serial},
    id VARCHAR(80) NOT NULL UNIQUE,
    kind VARCHAR(32) NOT NULL,
    parent VARCHAR(80),
    tag VARCHAR(64),
    created_at BIGINT NOT NULL,
    body TEXT NOT NULL
)
"""


@pytest.fixture
def empty_database(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own (not the run's shared PostgreSQL one): its tables are rewritten."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    name = f"old_{uuid.uuid4().hex[:8]}"
    admin = engine_for(database_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield database_url.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


async def test_a_database_from_before_tenants_opens_with_its_rows_the_default_tenants(
    empty_database: str,
) -> None:
    engine = engine_for(empty_database)
    serial = "SERIAL PRIMARY KEY" if engine.dialect.name == "postgresql" else "INTEGER PRIMARY KEY"
    body = json.dumps({"id": "asst_old", "model": "m", "created_at": 1})
    with engine.begin() as conn:
        conn.execute(sa.text(OLD_OBJECTS.format(serial=serial)))
        conn.execute(
            sa.text(
                "INSERT INTO agents_objects (id, kind, created_at, body) "
                "VALUES ('asst_old', 'agent', 1, :body)"
            ),
            {"body": body},
        )
    engine.dispose()
    store = Store(empty_database)
    root = Records(store)
    await root.open()
    try:
        store.open()  # a second start (or a second server) finds it done
        old = await root.scoped(T).load(Agent, "asst_old")
        assert old.model == "m"
        with pytest.raises(ObjectNotFound):
            await root.scoped("acme").load(Agent, "asst_old")
        new = Agent(id="asst_new", model="m")
        await root.scoped("acme").insert(new)
        assert [a.id for a in await root.scoped("acme").all(Agent)] == ["asst_new"]
        assert [a.id for a in await root.scoped(T).all(Agent)] == ["asst_old"]
        indexes = {i["name"] for i in sa.inspect(store.engine).get_indexes("agents_objects")}
        assert "agents_objects_tenant_kind" in indexes
    finally:
        await root.close()

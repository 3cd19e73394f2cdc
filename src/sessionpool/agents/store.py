"""Persistence for the agents service: JSON documents and blobs in SQLite or PostgreSQL.

Every record (agent, conversation, message, run, step, file, container) is one row of the
``objects`` table: its id, kind, the tenant that owns it, parent (the conversation of a message,
the run of a step, the container of a file), an optional tag (a file's purpose, a run's face),
and the record as JSON. File bytes live in ``blobs``. The schema is the same on both databases
(SQLAlchemy Core emits the dialect), and insertion order (``seq``) gives stable cursor paging.

Every method takes the ``tenant`` it acts for and sees that tenant's rows only, so another
tenant's id behaves exactly like an id never issued (cursors included). ``tenant=None`` is every
tenant's, for the service's own housekeeping (runs a crashed server left behind); no face gets it.

The methods are synchronous; the service runs them on one worker thread so the event loop never
waits on the database and SQLite never sees two writers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sessionpool.agents.types import PageRequest
from sessionpool.errors import ConfigError
from sessionpool.tenancy import DEFAULT_TENANT

metadata = sa.MetaData()
_Q = TypeVar("_Q", sa.Select[Any], sa.Update, sa.Delete)

objects = sa.Table(
    "agents_objects",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(80), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("parent", sa.String(80), nullable=True),
    sa.Column("tag", sa.String(64), nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    # rows written before tenants existed were the default tenant's: that is whose they stay
    sa.Column("tenant", sa.String(64), nullable=False, server_default=DEFAULT_TENANT),
    sa.Index("agents_objects_kind_parent", "kind", "parent", "seq"),
    sa.Index("agents_objects_tenant_kind", "tenant", "kind", "seq"),
)

#: what ``Store.open`` adds to a table created before tenants (both dialects take these; IF NOT
#: EXISTS lets servers sharing one PostgreSQL database upgrade it at the same time)
_ADD_TENANT = (
    f"ALTER TABLE {objects.name} ADD COLUMN {{if_not_exists}}tenant VARCHAR(64) NOT NULL "
    f"DEFAULT '{DEFAULT_TENANT}'"
)
_TENANT_INDEX = (
    f"CREATE INDEX IF NOT EXISTS agents_objects_tenant_kind ON {objects.name} (tenant, kind, seq)"
)

blobs = sa.Table(
    "agents_blobs",
    metadata,
    sa.Column("id", sa.String(80), primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)


def engine_for(url: str) -> Engine:
    """A SQLAlchemy engine for ``sqlite:///PATH`` or ``postgresql://...``.

    A plain ``postgresql://`` URL is given the psycopg (v3) driver, the one we ship.
    """
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) not in ("", ":memory:"):
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            # WAL: readers never block the writer; the file survives a crash consistently
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    if url.startswith("postgresql+"):
        return sa.create_engine(url, pool_pre_ping=True)
    raise ConfigError(
        f"agents database_url {url!r}: expected sqlite:///PATH or postgresql://USER@HOST/DB"
    )


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = engine_for(url)

    def open(self) -> None:
        """Create the tables on first start, or bring older ones up to date (idempotent)."""
        metadata.create_all(self.engine)
        self._add_tenants()

    def _add_tenants(self) -> None:
        """A database written before tenants has no ``tenant`` column: add it, every existing
        row the default tenant's (the only one there was), and its index."""
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(objects.name)}
        if "tenant" not in columns:
            postgres = self.engine.dialect.name == "postgresql"
            ddl = _ADD_TENANT.format(if_not_exists="IF NOT EXISTS " if postgres else "")
            try:
                with self.engine.begin() as conn:
                    conn.execute(sa.text(ddl))
            except sa.exc.OperationalError:
                # SQLite has no IF NOT EXISTS here: another process may have added it meanwhile
                columns = {c["name"] for c in sa.inspect(self.engine).get_columns(objects.name)}
                if "tenant" not in columns:
                    raise
        with self.engine.begin() as conn:
            conn.execute(sa.text(_TENANT_INDEX))

    def close(self) -> None:
        self.engine.dispose()

    # --- records --------------------------------------------------------------------------------

    @staticmethod
    def _owned(query: _Q, tenant: str | None) -> _Q:
        """``query`` restricted to ``tenant``'s rows (None: every tenant's)."""
        return query if tenant is None else query.where(objects.c.tenant == tenant)

    def insert(
        self,
        kind: str,
        record_id: str,
        created_at: int,
        body: dict[str, Any],
        parent: str | None = None,
        tag: str | None = None,
        *,
        tenant: str,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                objects.insert().values(
                    id=record_id,
                    kind=kind,
                    tenant=tenant,
                    parent=parent,
                    tag=tag,
                    created_at=created_at,
                    body=json.dumps(body),
                )
            )

    def update(
        self, kind: str, record_id: str, body: dict[str, Any], *, tenant: str | None
    ) -> bool:
        with self.engine.begin() as conn:
            query = objects.update().where(objects.c.id == record_id, objects.c.kind == kind)
            result = conn.execute(self._owned(query, tenant).values(body=json.dumps(body)))
            return bool(result.rowcount)

    def get(self, kind: str, record_id: str, *, tenant: str | None) -> dict[str, Any] | None:
        query = sa.select(objects.c.body).where(objects.c.id == record_id, objects.c.kind == kind)
        with self.engine.connect() as conn:
            row = conn.execute(self._owned(query, tenant)).first()
        return None if row is None else dict(json.loads(row[0]))

    def delete(self, kind: str, record_id: str, *, tenant: str | None) -> bool:
        query = objects.delete().where(objects.c.id == record_id, objects.c.kind == kind)
        with self.engine.begin() as conn:
            return bool(conn.execute(self._owned(query, tenant)).rowcount)

    def delete_children(self, kind: str, parent: str, *, tenant: str | None) -> list[str]:
        """Delete every ``kind`` record under ``parent``; their ids."""
        where = (objects.c.kind == kind, objects.c.parent == parent)
        with self.engine.begin() as conn:
            ids = [
                r[0]
                for r in conn.execute(self._owned(sa.select(objects.c.id).where(*where), tenant))
            ]
            conn.execute(self._owned(objects.delete().where(*where), tenant))
        return ids

    def all(
        self,
        kind: str,
        parent: str | None = None,
        tag: str | None = None,
        *,
        tenant: str | None,
    ) -> list[dict[str, Any]]:
        """Every matching record, oldest first."""
        query = self._owned(sa.select(objects.c.body).where(objects.c.kind == kind), tenant)
        if parent is not None:
            query = query.where(objects.c.parent == parent)
        if tag is not None:
            query = query.where(objects.c.tag == tag)
        with self.engine.connect() as conn:
            return [dict(json.loads(r[0])) for r in conn.execute(query.order_by(objects.c.seq))]

    def page(
        self,
        kind: str,
        page: PageRequest,
        parent: str | None = None,
        tag: str | None = None,
        exclude_tag: str | None = None,
        *,
        tenant: str | None,
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page in ``page.order`` of insertion, after/before the given ids; and has_more.

        A cursor is looked up among the tenant's rows too: another tenant's id is an unknown
        cursor, and where its row sits says nothing.
        """
        query = self._owned(sa.select(objects.c.body).where(objects.c.kind == kind), tenant)
        if parent is not None:
            query = query.where(objects.c.parent == parent)
        if tag is not None:
            query = query.where(objects.c.tag == tag)
        if exclude_tag is not None:
            query = query.where(sa.or_(objects.c.tag.is_(None), objects.c.tag != exclude_tag))
        desc = page.order == "desc"
        with self.engine.connect() as conn:
            for cursor, later in ((page.after, not desc), (page.before, desc)):
                if cursor is None:
                    continue
                where = sa.select(objects.c.seq).where(
                    objects.c.id == cursor, objects.c.kind == kind
                )
                seq = conn.execute(self._owned(where, tenant)).scalar()
                if seq is None:
                    return [], False  # an unknown cursor: nothing after it
                query = query.where(objects.c.seq > seq if later else objects.c.seq < seq)
            order = objects.c.seq.desc() if desc else objects.c.seq.asc()
            rows = conn.execute(query.order_by(order).limit(page.limit + 1)).all()
        items = [dict(json.loads(r[0])) for r in rows[: page.limit]]
        return items, len(rows) > page.limit

    # --- blobs ----------------------------------------------------------------------------------
    # A blob is written before its record (so a record never points at missing bytes) and is
    # reached only through a record the caller already holds; reads still check the owner.

    def put_blob(self, blob_id: str, data: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(blobs.delete().where(blobs.c.id == blob_id))
            conn.execute(blobs.insert().values(id=blob_id, data=data))

    def get_blob(self, blob_id: str, *, tenant: str | None) -> bytes | None:
        """The bytes of ``blob_id``; with a ``tenant``, only if that tenant owns its record."""
        query = sa.select(blobs.c.data).where(blobs.c.id == blob_id)
        if tenant is not None:
            owner = sa.select(objects.c.id).where(
                objects.c.id == blob_id, objects.c.tenant == tenant
            )
            query = query.where(sa.exists(owner))
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else bytes(row[0])

    def delete_blob(self, blob_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(blobs.delete().where(blobs.c.id == blob_id))

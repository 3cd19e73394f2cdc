"""Persistence for the agents service: JSON documents and blobs in SQLite or PostgreSQL.

Every record (agent, conversation, message, run, step, file, container) is one row of the
``objects`` table: its id, kind, parent (the conversation of a message, the run of a step, the
container of a file), an optional tag (a file's purpose, a run's face), and the record as JSON.
File bytes live in ``blobs``. The schema is the same on both databases (SQLAlchemy Core emits
the dialect), and insertion order (``seq``) gives stable cursor paging.

The methods are synchronous; the service runs them on one worker thread so the event loop never
waits on the database and SQLite never sees two writers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from sessionpool.agents.types import PageRequest
from sessionpool.errors import ConfigError

metadata = sa.MetaData()

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
    sa.Index("agents_objects_kind_parent", "kind", "parent", "seq"),
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
        """Create the tables on first start (idempotent)."""
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- records --------------------------------------------------------------------------------

    def insert(
        self,
        kind: str,
        record_id: str,
        created_at: int,
        body: dict[str, Any],
        parent: str | None = None,
        tag: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                objects.insert().values(
                    id=record_id,
                    kind=kind,
                    parent=parent,
                    tag=tag,
                    created_at=created_at,
                    body=json.dumps(body),
                )
            )

    def update(self, kind: str, record_id: str, body: dict[str, Any]) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                objects.update()
                .where(objects.c.id == record_id, objects.c.kind == kind)
                .values(body=json.dumps(body))
            )
            return bool(result.rowcount)

    def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(objects.c.body).where(objects.c.id == record_id, objects.c.kind == kind)
            ).first()
        return None if row is None else dict(json.loads(row[0]))

    def delete(self, kind: str, record_id: str) -> bool:
        with self.engine.begin() as conn:
            result = conn.execute(
                objects.delete().where(objects.c.id == record_id, objects.c.kind == kind)
            )
            return bool(result.rowcount)

    def delete_children(self, kind: str, parent: str) -> list[str]:
        """Delete every ``kind`` record under ``parent``; their ids."""
        with self.engine.begin() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    sa.select(objects.c.id).where(
                        objects.c.kind == kind, objects.c.parent == parent
                    )
                )
            ]
            conn.execute(objects.delete().where(objects.c.kind == kind, objects.c.parent == parent))
        return ids

    def all(
        self, kind: str, parent: str | None = None, tag: str | None = None
    ) -> list[dict[str, Any]]:
        """Every matching record, oldest first."""
        query = sa.select(objects.c.body).where(objects.c.kind == kind)
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
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page in ``page.order`` of insertion, after/before the given ids; and has_more."""
        query = sa.select(objects.c.body).where(objects.c.kind == kind)
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
                seq = conn.execute(
                    sa.select(objects.c.seq).where(objects.c.id == cursor, objects.c.kind == kind)
                ).scalar()
                if seq is None:
                    return [], False  # an unknown cursor: nothing after it
                query = query.where(objects.c.seq > seq if later else objects.c.seq < seq)
            order = objects.c.seq.desc() if desc else objects.c.seq.asc()
            rows = conn.execute(query.order_by(order).limit(page.limit + 1)).all()
        items = [dict(json.loads(r[0])) for r in rows[: page.limit]]
        return items, len(rows) > page.limit

    # --- blobs ----------------------------------------------------------------------------------

    def put_blob(self, blob_id: str, data: bytes) -> None:
        with self.engine.begin() as conn:
            conn.execute(blobs.delete().where(blobs.c.id == blob_id))
            conn.execute(blobs.insert().values(id=blob_id, data=data))

    def get_blob(self, blob_id: str) -> bytes | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(blobs.c.data).where(blobs.c.id == blob_id)).first()
        return None if row is None else bytes(row[0])

    def delete_blob(self, blob_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(blobs.delete().where(blobs.c.id == blob_id))

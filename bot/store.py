"""The bot's state: source cursors, inbound events, the outbox of effects it owes, lineage links
and small JSON state, in one SQL database (SQLite by default, any SQLAlchemy URL).

Exactly once starts here. An event and the effects it causes are written in one transaction, so
a crash leaves both or neither; an event key and an effect key are each stored once, forever, so
the same event seen twice (a poll and a webhook, or again after a restart) is handled once.
``bot/outbox.py`` then delivers the effects.

Only SQLAlchemy Core and portable types are used (JSON is Text encoded here, times are UTC), so a
PostgreSQL backend needs no change here; the few SQLite-only statements are guarded by dialect.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

__all__ = [
    "SCHEMA_VERSION",
    "EffectRow",
    "EventRow",
    "Link",
    "NewEffect",
    "Store",
    "StoreError",
    "utc_now",
]

SCHEMA_VERSION = 1
# Long enough for the bot's own short transactions to queue behind each other; short enough
# that a second bot holding the database is reported at start-up instead of hanging.
_BUSY_TIMEOUT_S = 5.0
_WRITE_OPTION = "mlops_bot_write"  # execution option: this transaction will write

_log = logging.getLogger("mlops_bot.store")


def utc_now() -> datetime:
    return datetime.now(UTC)


class StoreError(RuntimeError):
    """The state database cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class NewEffect:
    """An effect the bot owes, before it is stored."""

    key: str  # idempotency key, unique forever, e.g. "comment:run-abc:result"
    kind: str  # the handler that delivers it, e.g. "scm.reply"
    payload: dict[str, Any]
    lane: str  # effects in one lane are delivered in insertion order; lanes are independent


@dataclass(frozen=True)
class EffectRow:
    id: int
    key: str
    kind: str
    payload: dict[str, Any]
    lane: str
    cause: str  # the key of the event that caused it
    status: str  # "pending" | "done" | "dead"
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    outcome_unknown: bool  # the last attempt may have happened: look for it before repeating
    result: dict[str, Any] | None
    created_at: datetime
    done_at: datetime | None


@dataclass(frozen=True)
class EventRow:
    key: str
    kind: str
    source: str
    payload: dict[str, Any]
    received_at: datetime
    effects: tuple[EffectRow, ...] = ()  # filled by Store.events only


@dataclass(frozen=True)
class Link:
    """One lineage edge, e.g. change org/repo!7 --triggered--> run run-abc."""

    src_kind: str
    src_id: str
    relation: str
    dst_kind: str
    dst_id: str
    created_at: datetime


class _UtcDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite keeps no time zone, so times are stored as naive UTC there (in a fixed-width form,
    so comparing them in SQL orders them correctly) and made aware again when read.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store keeps aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Bounded lengths so unique indexes work on every backend; keys name things in the outside world.
_Key = sa.String(512)
_Name = sa.String(128)

# Stable constraint names, so later Alembic migrations can refer to them on any backend.
_metadata = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    }
)

_schema_info = sa.Table(
    "schema_info", _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

_cursors = sa.Table(
    "cursors", _metadata,
    sa.Column("source", _Key, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", _UtcDateTime, nullable=False),
)

_events = sa.Table(
    "events", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # arrival order
    sa.Column("key", _Key, nullable=False, unique=True),
    sa.Column("kind", _Name, nullable=False),
    sa.Column("source", _Name, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", _UtcDateTime, nullable=False),
    sa.Index(None, "kind", "id"),
)

_effects = sa.Table(
    "effects", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),  # lane order
    sa.Column("key", _Key, nullable=False, unique=True),
    sa.Column("kind", _Name, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("lane", _Key, nullable=False),
    sa.Column("cause", _Key, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", _UtcDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("outcome_unknown", sa.Boolean, nullable=False),
    sa.Column("result", sa.Text),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.Column("done_at", _UtcDateTime),
    sa.Index(None, "status", "lane", "id"),  # the head of each lane
    sa.Index(None, "cause"),
)

_LINK_COLUMNS = ("src_kind", "src_id", "relation", "dst_kind", "dst_id")
_links = sa.Table(
    "links", _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("src_kind", _Name, nullable=False),
    sa.Column("src_id", _Key, nullable=False),
    sa.Column("relation", _Name, nullable=False),
    sa.Column("dst_kind", _Name, nullable=False),
    sa.Column("dst_id", _Key, nullable=False),
    sa.Column("created_at", _UtcDateTime, nullable=False),
    sa.UniqueConstraint(*_LINK_COLUMNS),
    sa.Index(None, "dst_kind", "dst_id"),  # the unique index serves lookups by source
)

_state = sa.Table(
    "state", _metadata,
    sa.Column("namespace", _Name, primary_key=True),
    sa.Column("key", _Key, primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", _UtcDateTime, nullable=False),
)

_OWN_TABLES = frozenset(table.name for table in _metadata.sorted_tables)

# Backends with INSERT ... ON CONFLICT; others look before they insert.
_CONFLICT_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


class Store:
    """The state database. Every method is one short transaction; none is held between calls."""

    def __init__(self, url: str | sa.URL, *, clock: Callable[[], datetime] = utc_now,
                 busy_timeout_s: float = _BUSY_TIMEOUT_S) -> None:
        self._url = sa.make_url(url)
        self._clock = clock
        self._label = _describe(self._url)
        self._engine = _create_engine(self._url, busy_timeout_s)
        try:
            self._open_schema()
        except BaseException:
            self._engine.dispose()
            raise

    @classmethod
    def for_path(cls, path: Path, **kw: Any) -> Store:
        """A store in the SQLite file at ``path``."""
        return cls(sa.URL.create("sqlite", database=str(path)), **kw)

    @property
    def engine(self) -> sa.Engine:
        """For other local adapters that keep their own tables in the same database."""
        return self._engine

    def close(self) -> None:
        self._engine.dispose()

    # Cursors: where each source's polling got to.

    def cursor(self, source: str) -> str | None:
        with self._transaction() as conn:
            return conn.execute(sa.select(_cursors.c.value).where(_cursors.c.source == source)).scalar()

    def set_cursor(self, source: str, value: str) -> None:
        with self._transaction(write=True) as conn:
            self._put_cursor(conn, source, value)

    # Events and the effects they cause, written together.

    def ingest(self, key: str, kind: str, source: str, payload: dict[str, Any],
               effects: Sequence[NewEffect] = (), *, cursor: tuple[str, str] | None = None) -> bool:
        """Store an event and the effects it causes in one transaction; False if it was stored before.

        The cursor moves either way, so a source that returns an event again is not stuck on it.
        """
        with self._transaction(write=True) as conn:
            now = self._clock()
            new = _insert_new(conn, _events, {
                "key": key, "kind": kind, "source": source, "payload": _to_json(payload), "received_at": now,
            }, unique=("key",))
            if new:
                self._insert_effects(conn, key, effects, now)
            if cursor is not None:
                self._put_cursor(conn, *cursor)
        return new

    def seen(self, key: str) -> bool:
        with self._transaction() as conn:
            return conn.execute(sa.select(_events.c.id).where(_events.c.key == key)).first() is not None

    def events(self, *, limit: int = 50, kind: str | None = None) -> list[EventRow]:
        """The newest events first, each with the effects it caused."""
        query = sa.select(_events).order_by(_events.c.id.desc()).limit(limit)
        if kind is not None:
            query = query.where(_events.c.kind == kind)
        with self._transaction() as conn:
            rows = conn.execute(query).all()
            caused: dict[str, list[EffectRow]] = {row.key: [] for row in rows}
            if caused:
                effect_query = sa.select(_effects).where(_effects.c.cause.in_(caused)).order_by(_effects.c.id)
                for effect in conn.execute(effect_query):
                    caused[effect.cause].append(_effect_row(effect))
        return [
            EventRow(row.key, row.kind, row.source, _from_json(row.payload), row.received_at, tuple(caused[row.key]))
            for row in rows
        ]

    def add_effects(self, cause: str, effects: Sequence[NewEffect]) -> None:
        """Owe more effects for ``cause`` (work found later); keys already stored are skipped."""
        with self._transaction(write=True) as conn:
            self._insert_effects(conn, cause, effects, self._clock())

    # The outbox.

    def due_effects(self, *, limit: int = 100) -> list[EffectRow]:
        """Pending effects whose time has come, only the oldest pending one of each lane, by id."""
        lane_heads = (
            sa.select(sa.func.min(_effects.c.id))
            .where(_effects.c.status == "pending")
            .group_by(_effects.c.lane)
        )
        query = (
            sa.select(_effects)
            .where(_effects.c.id.in_(lane_heads), _effects.c.next_attempt_at <= self._clock())
            .order_by(_effects.c.id)
            .limit(limit)
        )
        with self._transaction() as conn:
            return [_effect_row(row) for row in conn.execute(query)]

    def begin_attempt(self, effect_id: int) -> None:
        """Record that a delivery is starting, before it starts.

        If the process dies during the delivery, the effect is left with ``outcome_unknown`` set,
        so the next delivery looks for it (by its marker) before repeating it.
        """
        self._update_effect(effect_id, outcome_unknown=True)

    def complete(self, effect_id: int, result: dict[str, Any]) -> None:
        self._update_effect(effect_id, status="done", result=_to_json(result), outcome_unknown=False,
                            done_at=self._clock())

    def retry_later(self, effect_id: int, error: str, *, at: datetime, outcome_unknown: bool) -> None:
        self._update_effect(effect_id, attempts=_effects.c.attempts + 1, next_attempt_at=at,
                            last_error=error, outcome_unknown=outcome_unknown)

    def give_up(self, effect_id: int, error: str, *, outcome_unknown: bool = False) -> None:
        """Mark the effect dead; it no longer blocks its lane.

        ``outcome_unknown`` tells whoever reads the dead effect that its last attempt may have
        happened after all.
        """
        self._update_effect(effect_id, status="dead", attempts=_effects.c.attempts + 1, last_error=error,
                            outcome_unknown=outcome_unknown, done_at=self._clock())

    def effect(self, key: str) -> EffectRow | None:
        with self._transaction() as conn:
            row = conn.execute(sa.select(_effects).where(_effects.c.key == key)).first()
        return None if row is None else _effect_row(row)

    def effects(self, *, status: str | None = None, limit: int = 100) -> list[EffectRow]:
        """The newest effects first, optionally only those with ``status``."""
        query = sa.select(_effects).order_by(_effects.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(_effects.c.status == status)
        with self._transaction() as conn:
            return [_effect_row(row) for row in conn.execute(query)]

    def outbox_stats(self) -> dict[str, Any]:
        with self._transaction() as conn:
            counts = dict(conn.execute(
                sa.select(_effects.c.status, sa.func.count()).group_by(_effects.c.status)
            ).all())
            oldest = conn.execute(
                sa.select(sa.func.min(_effects.c.created_at)).where(_effects.c.status == "pending")
            ).scalar()
        age = None if oldest is None else (self._clock() - oldest).total_seconds()
        return {
            "pending": counts.get("pending", 0),
            "dead": counts.get("dead", 0),
            "done": counts.get("done", 0),
            "oldest_pending_age_s": age,
        }

    # Lineage.

    def link(self, src_kind: str, src_id: str, relation: str, dst_kind: str, dst_id: str) -> None:
        """Record an edge; recording the same edge again changes nothing."""
        row = dict(zip(_LINK_COLUMNS, (src_kind, src_id, relation, dst_kind, dst_id), strict=True))
        with self._transaction(write=True) as conn:
            _insert_new(conn, _links, {**row, "created_at": self._clock()}, unique=_LINK_COLUMNS)

    def links(self, kind: str, id: str) -> list[Link]:
        """Every edge that starts or ends at (kind, id), oldest first."""
        with self._transaction() as conn:
            return [_link(row) for row in _links_touching(conn, kind, id)]

    def trace(self, kind: str, id: str, *, depth: int = 6) -> list[Link]:
        """Edges reachable from (kind, id) in up to ``depth`` hops, either direction, nearest first."""
        found: dict[int, Link] = {}
        visited = {(kind, id)}
        frontier = [(kind, id)]
        with self._transaction() as conn:
            for _ in range(depth):
                next_frontier = []
                for node_kind, node_id in frontier:
                    for row in _links_touching(conn, node_kind, node_id):
                        if row.id in found:
                            continue
                        found[row.id] = _link(row)
                        for node in ((row.src_kind, row.src_id), (row.dst_kind, row.dst_id)):
                            if node not in visited:
                                visited.add(node)
                                next_frontier.append(node)
                if not next_frontier:
                    break
                frontier = next_frontier
        return list(found.values())

    # Small JSON state by namespace: episodes, chat threads, processed batches, ...

    def get_state(self, namespace: str, key: str) -> dict[str, Any] | None:
        query = sa.select(_state.c.value).where(_state.c.namespace == namespace, _state.c.key == key)
        with self._transaction() as conn:
            value = conn.execute(query).scalar()
        return None if value is None else _from_json(value)

    def put_state(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        with self._transaction(write=True) as conn:
            _upsert(conn, _state, {"namespace": namespace, "key": key, "value": _to_json(value),
                                   "updated_at": self._clock()}, keys=("namespace", "key"))

    def state_items(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        """Every (key, value) in ``namespace``, by key."""
        query = sa.select(_state.c.key, _state.c.value).where(_state.c.namespace == namespace).order_by(_state.c.key)
        with self._transaction() as conn:
            return [(key, _from_json(value)) for key, value in conn.execute(query)]

    # Helpers.

    @contextmanager
    def _transaction(self, *, write: bool = False) -> Iterator[sa.Connection]:
        """One transaction, committed on success; a lock held too long becomes a StoreError."""
        try:
            with self._engine.connect() as conn:
                if write:
                    conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as error:
            if _is_locked(error):
                raise StoreError(
                    f"state database {self._label} is locked by another process (is another mlops-bot running?)"
                ) from error
            raise

    def _open_schema(self) -> None:
        """Create the tables of a new database, upgrade an older one, refuse a newer one."""
        try:
            with self._transaction(write=True) as conn:
                tables = set(sa.inspect(conn).get_table_names())
                version = _stored_version(conn, tables)
                if version is not None and version > SCHEMA_VERSION:
                    raise StoreError(
                        f"state database {self._label} was written by a newer mlops-bot "
                        f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade mlops-bot"
                    )
                if version != SCHEMA_VERSION:
                    if version is not None:
                        _log.warning("state database %s is schema %d (older); it will be upgraded",
                                     self._label, version)
                    _metadata.create_all(conn)  # creates only the tables that are missing
                    _upsert(conn, _schema_info, {"name": "schema_version", "value": str(SCHEMA_VERSION)},
                            keys=("name",))
        except sa.exc.DBAPIError as error:
            raise StoreError(f"state database {self._label} cannot be opened: {error.orig}") from error

    def _insert_effects(self, conn: sa.Connection, cause: str, effects: Sequence[NewEffect], now: datetime) -> None:
        for effect in effects:
            _insert_new(conn, _effects, {
                "key": effect.key, "kind": effect.kind, "payload": _to_json(effect.payload), "lane": effect.lane,
                "cause": cause, "status": "pending", "attempts": 0, "next_attempt_at": now, "last_error": None,
                "outcome_unknown": False, "result": None, "created_at": now, "done_at": None,
            }, unique=("key",))

    def _put_cursor(self, conn: sa.Connection, source: str, value: str) -> None:
        _upsert(conn, _cursors, {"source": source, "value": value, "updated_at": self._clock()}, keys=("source",))

    def _update_effect(self, effect_id: int, **values: Any) -> None:
        with self._transaction(write=True) as conn:
            updated = conn.execute(_effects.update().where(_effects.c.id == effect_id).values(**values)).rowcount
        if updated == 0:
            raise StoreError(f"state database {self._label} has no effect with id {effect_id}")


def _create_engine(url: sa.URL, busy_timeout_s: float) -> sa.Engine:
    if url.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": busy_timeout_s})  # the driver's busy timeout

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling skips BEGIN before a SELECT; begin them here instead.
        dbapi_connection.isolation_level = None
        # WAL: readers never wait for the writer, and a commit survives the process being killed.
        dbapi_connection.execute("PRAGMA journal_mode=WAL").close()
        # In WAL, NORMAL still survives the process being killed at any moment; only an OS crash or
        # power loss may undo the last commits, and the outbox then finds its writes by marker.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL").close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A writer takes the write lock at BEGIN: in WAL a reader that later writes would fail at
        # once, without waiting, if another process wrote in between.
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _describe(url: sa.URL) -> str:
    """How messages name the database: the file for SQLite, the URL without password otherwise."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def _is_locked(error: sa.exc.OperationalError) -> bool:
    return "locked" in str(error.orig).lower()


def _stored_version(conn: sa.Connection, tables: set[str]) -> int | None:
    """The schema version of the database; 0 for tables from before versions; None for a new database."""
    if _schema_info.name in tables:
        value = conn.execute(
            sa.select(_schema_info.c.value).where(_schema_info.c.name == "schema_version")
        ).scalar()
        return 0 if value is None else int(value)
    return 0 if tables & _OWN_TABLES else None


def _insert_new(conn: sa.Connection, table: sa.Table, row: dict[str, Any], *, unique: Sequence[str]) -> bool:
    """Insert ``row`` unless a row with the same ``unique`` values exists; True if it was inserted."""
    insert = _CONFLICT_INSERTS.get(conn.dialect.name)
    if insert is not None:
        statement = insert(table).values(row).on_conflict_do_nothing(index_elements=list(unique))
        return conn.execute(statement).rowcount == 1
    same = [table.c[column] == row[column] for column in unique]
    if conn.execute(sa.select(sa.literal(1)).select_from(table).where(*same)).first() is not None:
        return False
    conn.execute(table.insert().values(row))
    return True


def _upsert(conn: sa.Connection, table: sa.Table, row: dict[str, Any], *, keys: Sequence[str]) -> None:
    changes = {column: value for column, value in row.items() if column not in keys}
    insert = _CONFLICT_INSERTS.get(conn.dialect.name)
    if insert is not None:
        statement = insert(table).values(row)
        conn.execute(statement.on_conflict_do_update(
            index_elements=list(keys), set_={column: statement.excluded[column] for column in changes}
        ))
        return
    same = [table.c[column] == row[column] for column in keys]
    if conn.execute(table.update().where(*same).values(changes)).rowcount == 0:
        conn.execute(table.insert().values(row))


def _links_touching(conn: sa.Connection, kind: str, id: str) -> list[sa.Row]:
    query = sa.select(_links).where(sa.or_(
        sa.and_(_links.c.src_kind == kind, _links.c.src_id == id),
        sa.and_(_links.c.dst_kind == kind, _links.c.dst_id == id),
    )).order_by(_links.c.id)
    return list(conn.execute(query))


def _to_json(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False)


def _from_json(text: str) -> dict[str, Any]:
    return json.loads(text)


def _effect_row(row: sa.Row) -> EffectRow:
    return EffectRow(
        id=row.id, key=row.key, kind=row.kind, payload=_from_json(row.payload), lane=row.lane, cause=row.cause,
        status=row.status, attempts=row.attempts, next_attempt_at=row.next_attempt_at, last_error=row.last_error,
        outcome_unknown=bool(row.outcome_unknown), result=None if row.result is None else _from_json(row.result),
        created_at=row.created_at, done_at=row.done_at,
    )


def _link(row: sa.Row) -> Link:
    return Link(row.src_kind, row.src_id, row.relation, row.dst_kind, row.dst_id, row.created_at)

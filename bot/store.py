"""The bot's state: source cursors, inbound events, the outbox of effects it owes, lineage links
and small JSON state, in one SQL database (SQLite by default, any SQLAlchemy URL).

Exactly once starts here. An event and the effects it causes are written in one transaction, so
a crash leaves both or neither; an event key and an effect key are each stored once, forever, so
the same event seen twice (a poll and a webhook, or again after a restart) is handled once.
``bot/outbox.py`` then delivers the effects.

Only SQLAlchemy Core and portable types are used (JSON is Text encoded here, times are UTC); the
two backends it is tested on, SQLite and PostgreSQL (``postgresql+psycopg://``), differ only where
the dialect is named: INSERT ... ON CONFLICT comes from each dialect's own ``insert``, and one
writer at a time is BEGIN IMMEDIATE on SQLite and a transaction-level advisory lock on PostgreSQL.
The statements run often are built once, with bound parameters (``_Statements``).

The schema is Alembic's (``bot/migrations``): opening a store upgrades an older database in place,
under a lock, so two bots starting together migrate it once, and refuses one a newer mlops-bot
wrote. A database from before migrations (``schema_info`` says 1) is the baseline revision.

Leases (``take_lease``, ``renew_lease``, ``release_lease``) let one of several bots lead; see
``bot/leader.py``. Their times come from the database's clock, never a host's. The writes that record
a leader's progress (an effect done, retried or dead, a round begun, a cursor moved) take a
``Fence``: the lease as the leader took it. The same transaction checks the lease still stands so,
and writes nothing (``LostLease``) when another bot has taken it since, or it ran out: a leader
paused past its lease (SIGSTOP, a long stall) cannot record work as its own once another leads.

Workers (``bot/workers.py``, ``MLOPS_WORK_SHARING=lanes``) share the work instead of one leading:
each registers in ``workers`` and renews its row; the outbox's rounds claim lanes in
``lane_claims`` (a lane is free when released, or when its holder's row ran out) and deliver only
the heads of the lanes they hold. Their writes take a ``ClaimFence``: the worker and the token of
each lane it holds, checked in the writing transaction like a lease. A scheduled job runs once per
interval across the workers: the first to claim the interval in ``job_claims`` runs it.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

__all__ = [
    "SCHEMA_VERSION",
    "BlockedEffect",
    "ClaimFence",
    "EffectRow",
    "EventRow",
    "Fence",
    "Lease",
    "Link",
    "LostClaim",
    "LostLease",
    "NewEffect",
    "SchemaStatus",
    "Store",
    "StoreError",
    "WorkFence",
    "WorkerRow",
    "blocked_by",
    "schema_status",
    "utc_now",
]

# What schema_info's schema_version says once the newest migration ran: mlops-bot builds from before
# migrations refuse a database where it is higher than theirs (1), and this one refuses a higher one.
SCHEMA_VERSION = 2
# Long enough for the bot's own short transactions to queue behind each other; short enough
# that a second bot holding the database is reported at start-up instead of hanging.
_BUSY_TIMEOUT_S = 5.0
_WRITER = "mlops_bot_writer"  # in a connection's info: its transactions write
# The PostgreSQL advisory lock each of the store's write transactions holds (see _create_engine):
# any 64-bit number nothing else uses.
_WRITER_LOCK = 0x6D6C6F7073
# The tables of a database from before schema versions (it had no schema_info).
_LEGACY_TABLES = frozenset({"cursors", "events", "effects", "links", "state"})

_log = logging.getLogger("mlops_bot.store")


def utc_now() -> datetime:
    return datetime.now(UTC)


class StoreError(RuntimeError):
    """The state database cannot be used; the message says why and what to do."""


class LostLease(StoreError):
    """A fenced write found its lease taken by another bot, or run out: nothing was written."""


class LostClaim(LostLease):
    """A worker's write refused: its row ran out (it was paused or cut off past it) or a lane it
    held was claimed by another worker since. As for a lost lease, nothing was written."""


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
class BlockedEffect:
    """A pending effect a service refused for want of a permission: it waits for someone to grant it."""

    effect: EffectRow
    service: str  # "github", "slack", ...
    permission: str  # what to grant, in the service's words: "issues=write", "chat:write"
    message: str  # what the service said, and how to grant it


# A blocked effect is a pending one whose last_error reads "blocked by <service>: needs
# <permission>" and, on the next line, the message: no column of its own, so no migration.
_BLOCKED_PREFIX = "blocked by "
_BLOCKED = re.compile(r"blocked by (?P<service>[^:\n]+): needs (?P<permission>[^\n]*)\n(?P<message>.*)", re.S)


def blocked_by(effect: EffectRow) -> tuple[str, str] | None:
    """(service, permission) when ``effect`` is parked for want of that permission, else None."""
    parsed = _BLOCKED.fullmatch(effect.last_error or "") if effect.status == "pending" else None
    return None if parsed is None else (parsed["service"], parsed["permission"])


@dataclass(frozen=True)
class EventRow:
    key: str
    kind: str
    source: str
    payload: dict[str, Any]
    received_at: datetime
    effects: tuple[EffectRow, ...] = ()  # filled by Store.events only


@dataclass(frozen=True)
class Lease:
    """Who holds a named lease, as the database saw it at ``now`` (its own clock)."""

    name: str
    holder: str
    term: int  # grows by one each time the lease changes hands
    acquired_at: datetime
    expires_at: datetime
    now: datetime

    def held_by(self, holder: str) -> bool:
        return self.holder == holder and self.expires_at > self.now


@dataclass(frozen=True)
class Fence:
    """A fencing token: the lease ``name`` as ``holder`` took it, in ``term``. A write given one is
    made only while the lease still stands so (by the database's clock), in the same transaction."""

    name: str
    holder: str
    term: int


@dataclass
class ClaimFence:
    """A worker's fencing tokens: ``holder``, alive while its ``workers`` row stands, and each lane it
    holds with the token it claimed it with. A write given one is made only while the worker's row
    has not run out and every lane in ``claims`` is still its own with that token (by the database's
    clock, in the same transaction). The store's ``next_round`` updates ``claims`` as it claims and
    releases lanes; only the thread delivering the outbox calls it, and only after a commit."""

    holder: str
    claims: dict[str, int] = field(default_factory=dict)
    lanes_per_round: int = 10  # lanes one round may hold, so a burst of work spreads over the workers
    # Kinds of effect that take long to deliver (an in-process pipeline run): each makes a round alone,
    # so the worker holds no other lane while it delivers one.
    solo_kinds: frozenset[str] = frozenset()


WorkFence = Fence | ClaimFence


@dataclass(frozen=True)
class WorkerRow:
    """A worker sharing the work, as the database saw it at ``now``."""

    holder: str
    started_at: datetime
    expires_at: datetime
    lanes: int  # lanes it holds now
    now: datetime

    @property
    def alive(self) -> bool:
        return self.expires_at > self.now


@dataclass(frozen=True)
class SchemaStatus:
    """Where a state database's schema stands (``mlops-bot db current``)."""

    database: str  # as messages name it, without a password
    revision: str | None  # None: a new database, or one from before migrations (see ``legacy``)
    head: str  # the newest revision this mlops-bot knows
    legacy: int | None  # schema_info's schema_version, if the database has one

    @property
    def current(self) -> bool:
        return self.revision == self.head


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

_leases = sa.Table(
    "leases", _metadata,
    sa.Column("name", _Name, primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("term", sa.Integer, nullable=False),
    sa.Column("acquired_at", _UtcDateTime, nullable=False),
    sa.Column("renewed_at", _UtcDateTime, nullable=False),
    sa.Column("expires_at", _UtcDateTime, nullable=False),
)


_workers = sa.Table(
    "workers", _metadata,
    sa.Column("holder", sa.String(255), primary_key=True),
    sa.Column("started_at", _UtcDateTime, nullable=False),
    sa.Column("renewed_at", _UtcDateTime, nullable=False),
    sa.Column("expires_at", _UtcDateTime, nullable=False),
)

_RELEASED = ""  # lane_claims.holder of a lane nobody holds
_lane_claims = sa.Table(
    "lane_claims", _metadata,
    sa.Column("lane", _Key, primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("token", sa.Integer, nullable=False),
    sa.Column("claimed_at", _UtcDateTime, nullable=False),
    sa.Index(None, "holder"),
)

_job_claims = sa.Table(
    "job_claims", _metadata,
    sa.Column("job", _Name, primary_key=True),
    sa.Column("slot", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("claimed_at", _UtcDateTime, nullable=False),
)


def _conflict_insert(dialect: str):
    """``insert`` with ON CONFLICT for the backends that have it; None for others (they look before
    they insert). Each dialect's module is imported only by the backend that uses it."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    return insert


class Store:
    """The state database. Every method is one short transaction; none is held between calls.

    The one exception is ``deferred_writes``: inside it, the thread's ``link`` and ``put_state``
    wait for the store's next write transaction, so that a delivery round writes once.

    The store keeps two connections open between calls, one for reads and one for writes, each
    used by one thread at a time: taking a connection from the pool for every call costs more
    than the call's own statements.
    """

    def __init__(self, url: str | sa.URL, *, clock: Callable[[], datetime] = utc_now,
                 busy_timeout_s: float = _BUSY_TIMEOUT_S) -> None:
        self._url = sa.make_url(url)
        self._clock = clock
        self._label = _describe(self._url)
        self._engine = _create_engine(self._url, busy_timeout_s)
        self._sql = _Statements(self._engine.dialect.name)
        # Reentrant, so a nested call fails loudly (one transaction per connection) instead of hanging.
        self._locks = {False: threading.RLock(), True: threading.RLock()}
        self._held: dict[bool, sa.Connection | None] = {False: None, True: None}
        # Writes waiting for the next write transaction (see deferred_writes), oldest first.
        self._deferred: list[tuple[str, dict[str, Any]]] = []
        self._deferred_lock = threading.Lock()
        self._deferring_threads: set[int] = set()
        # (revision before, revision after) if opening upgraded the schema, else None.
        self.schema_upgrade: tuple[str | None, str] | None = None
        try:
            self._open_schema()
        except BaseException:
            self.close()
            raise

    @classmethod
    def for_path(cls, path: Path, **kw: Any) -> Store:
        """A store in the SQLite file at ``path``."""
        return cls(sa.URL.create("sqlite", database=str(path)), **kw)

    @property
    def engine(self) -> sa.Engine:
        """For other local adapters that keep their own tables in the same database."""
        return self._engine

    @property
    def label(self) -> str:
        """How messages name the database: its file, or its URL without the password."""
        return self._label

    @property
    def shared(self) -> bool:
        """Whether bots on several hosts can share the database, one leading (not a SQLite file)."""
        return self._engine.dialect.name != "sqlite"

    @contextmanager
    def schema_transaction(self) -> Iterator[sa.Connection]:
        """A write transaction, for other adapters to create their tables in: like the store's own
        migrations, it waits for any other bot's write (on PostgreSQL, too), so two bots starting
        together do not both create a table."""
        try:
            with self._transaction(write=True) as conn:
                yield conn
        except sa.exc.DBAPIError as error:
            raise StoreError(f"state database {self._label} cannot be prepared: {error.orig}") from error

    def close(self) -> None:
        try:
            self.write_deferred()
        except (StoreError, sa.exc.DBAPIError) as error:  # as if the process had stopped a moment earlier
            _log.warning("state database %s: %d deferred write(s) lost at close: %s", self._label,
                         len(self._deferred), error)
        for write, lock in self._locks.items():
            with lock:
                self._drop_connection(write)
        self._engine.dispose()

    # Cursors: where each source's polling got to.

    def cursor(self, source: str) -> str | None:
        with self._transaction() as conn:
            return conn.execute(self._sql.cursor, {"source": source}).scalar()

    def set_cursor(self, source: str, value: str, *, fence: WorkFence | None = None) -> None:
        with self._transaction(write=True, fence=fence) as conn:
            self._put_cursor(conn, source, value)

    # Events and the effects they cause, written together.

    def ingest(self, key: str, kind: str, source: str, payload: dict[str, Any],
               effects: Sequence[NewEffect] = (), *, cursor: tuple[str, str] | None = None,
               fence: WorkFence | None = None) -> bool:
        """Store an event and the effects it causes in one transaction; False if it was stored before.

        The cursor moves either way, so a source that returns an event again is not stuck on it.
        With ``fence``, only while that lease stands (else ``LostLease``, nothing written): a poller
        paused past its lease must not move a cursor back over what its successor has read since.
        """
        with self._transaction(write=True, fence=fence) as conn:
            now = self._clock()
            new = self._insert_new(conn, _events, self._sql.new_event, {
                "key": key, "kind": kind, "source": source, "payload": _to_json(payload), "received_at": now,
            }, unique=("key",))
            if new:
                self._insert_effects(conn, key, effects, now)
            if cursor is not None:
                self._put_cursor(conn, *cursor)
        return new

    def seen(self, key: str) -> bool:
        with self._transaction() as conn:
            return conn.execute(self._sql.seen, {"key": key}).first() is not None

    def seen_among(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` are stored events: one query for a whole poll's worth."""
        found: set[str] = set()
        with self._transaction() as conn:
            for start in range(0, len(keys), 500):  # well under every database's parameter limit
                chunk = list(keys[start:start + 500])
                found.update(conn.execute(sa.select(_events.c.key).where(_events.c.key.in_(chunk))).scalars())
        return found

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
        with self._transaction() as conn:
            rows = conn.execute(self._sql.due, {"due_by": self._clock(), "most": limit})
            return [_effect_row(row) for row in rows]

    def begin_attempt(self, effect_id: int) -> None:
        """Record that a delivery is starting, before it starts.

        If the process dies during the delivery, the effect is left with ``outcome_unknown`` set,
        so the next delivery looks for it (by its marker) before repeating it.
        """
        with self._transaction(write=True) as conn:
            self._mark(conn, [effect_id], unknown=True)

    def complete(self, effect_id: int, result: dict[str, Any], *, fence: WorkFence | None = None) -> None:
        self.finish_attempts({effect_id: result}, fence=fence)

    def finish_attempts(self, results: Mapping[int, dict[str, Any]], untried: Collection[int] = (), *,
                        fence: WorkFence | None = None) -> None:
        """In one transaction: complete each effect in ``results`` with its result, and clear the
        mark of each in ``untried``, whose attempt was begun but never made (it cannot have happened).

        With ``fence``, only while that lease stands (else ``LostLease``, nothing written): the
        effects stay pending and marked, so the bot that leads now looks for them before repeating.
        """
        if results or untried:
            with self._transaction(write=True, fence=fence) as conn:
                self._finish(conn, results, untried)

    def next_round(self, *, limit: int = 100, results: Mapping[int, dict[str, Any]] | None = None,
                   untried: Collection[int] = (), fence: WorkFence | None = None) -> list[EffectRow]:
        """The outbox's step, in one transaction: ``finish_attempts(results, untried)`` for the round
        before, then the effects now due (as ``due_effects``), each marked as by ``begin_attempt``.

        The rows are as they were before marking: ``outcome_unknown`` says an earlier attempt may
        have happened, so the delivery must look for it first. ``fence`` as in ``finish_attempts``.

        With a worker's ``ClaimFence``, only the heads of the lanes it holds: the same transaction
        releases its lanes with nothing due, claims free lanes with something due (up to the
        fence's ``lanes_per_round``), and the fence's claims say so once it commits.
        """
        worker = fence if isinstance(fence, ClaimFence) else None
        with self._transaction(write=True, fence=fence) as conn:
            self._finish(conn, results or {}, untried)
            due_by = self._clock()
            query = self._sql.due
            if worker is not None:
                claims = self._claim_lanes(conn, worker, due_by=due_by)
                query = self._sql.due.where(_effects.c.lane.in_(sorted(claims))) if claims else None
            due = [] if query is None else [
                _effect_row(row) for row in conn.execute(query, {"due_by": due_by, "most": limit})]
            self._mark(conn, [effect.id for effect in due if not effect.outcome_unknown], unknown=True)
        if worker is not None:
            worker.claims = claims  # committed: these are the worker's now
        return due

    def retry_later(self, effect_id: int, error: str, *, at: datetime, outcome_unknown: bool,
                    fence: WorkFence | None = None) -> None:
        with self._transaction(write=True, fence=fence) as conn:
            self._update_effects(conn, self._sql.retry, [
                {"effect_id": effect_id, "error": error, "unknown": outcome_unknown, "at": at},
            ])

    def block(self, effect_id: int, *, service: str, permission: str, message: str, at: datetime,
              outcome_unknown: bool, fence: WorkFence | None = None) -> None:
        """Park a pending effect that ``service`` refused for want of ``permission`` until ``at``:
        not a failed attempt (its attempts stay as they are), and listed by ``blocked_effects``
        until it is tried again and something else happens."""
        note = f"{_BLOCKED_PREFIX}{service}: needs {' '.join(permission.split())}\n{message}"
        with self._transaction(write=True, fence=fence) as conn:
            self._update_effects(conn, self._sql.block, [
                {"effect_id": effect_id, "error": note, "unknown": outcome_unknown, "at": at},
            ])

    def blocked_effects(self, *, service: str | None = None, permission: str | None = None) -> list[BlockedEffect]:
        """The pending effects parked for want of a permission (optionally one service's, or one
        permission's), oldest first."""
        query = (sa.select(_effects)
                 .where(_effects.c.status == "pending", _effects.c.last_error.like(_BLOCKED_PREFIX + "%"))
                 .order_by(_effects.c.id))
        with self._transaction() as conn:
            rows = [_effect_row(row) for row in conn.execute(query)]
        found = []
        for row in rows:
            parsed = _BLOCKED.fullmatch(row.last_error or "")
            if parsed is None:
                continue
            if service is not None and parsed["service"] != service:
                continue
            if permission is not None and parsed["permission"] != permission:
                continue
            found.append(BlockedEffect(row, parsed["service"], parsed["permission"], parsed["message"]))
        return found

    def unblock(self, *, service: str | None = None, permission: str | None = None,
                at: datetime | None = None, excluding: Collection[int] = ()) -> int:
        """Make the parked effects (optionally one service's, or one permission's; not those in
        ``excluding``) due at ``at`` (now by default), as when the permission is seen granted;
        returns how many."""
        ids = [b.effect.id for b in self.blocked_effects(service=service, permission=permission)
               if b.effect.id not in excluding]
        if not ids:
            return 0
        statement = (_effects.update().where(_effects.c.id.in_(ids), _effects.c.status == "pending")
                     .values(next_attempt_at=at or self._clock()))
        with self._transaction(write=True) as conn:
            return conn.execute(statement).rowcount

    def check_later(self, effect_id: int, note: str, *, at: datetime, fence: WorkFence | None = None) -> None:
        """Look at a started effect again at ``at`` (a remote run still going); not a failed attempt."""
        with self._transaction(write=True, fence=fence) as conn:
            self._update_effects(conn, self._sql.check_later, [{"effect_id": effect_id, "error": note, "at": at}])

    def give_up(self, effect_id: int, error: str, *, outcome_unknown: bool = False,
                fence: WorkFence | None = None) -> None:
        """Mark the effect dead; it no longer blocks its lane.

        ``outcome_unknown`` tells whoever reads the dead effect that its last attempt may have
        happened after all.
        """
        with self._transaction(write=True, fence=fence) as conn:
            self._update_effects(conn, self._sql.give_up, [
                {"effect_id": effect_id, "error": error, "unknown": outcome_unknown, "done_at": self._clock()},
            ])

    def effect(self, key: str) -> EffectRow | None:
        with self._transaction() as conn:
            row = conn.execute(self._sql.effect, {"key": key}).first()
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
            counts = dict(conn.execute(self._sql.counts).all())
            oldest = conn.execute(self._sql.oldest_pending).scalar()
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
        row["created_at"] = self._clock()
        if not self._defer("link", row):
            with self._transaction(write=True) as conn:
                self._insert_new(conn, _links, self._sql.new_link, row, unique=_LINK_COLUMNS)

    def links(self, kind: str, id: str) -> list[Link]:
        """Every edge that starts or ends at (kind, id), oldest first."""
        self.write_deferred()
        with self._transaction() as conn:
            return [_link(row) for row in self._links_touching(conn, kind, id)]

    def trace(self, kind: str, id: str, *, depth: int = 6) -> list[Link]:
        """Edges reachable from (kind, id) in up to ``depth`` hops, either direction, nearest first."""
        found: dict[int, Link] = {}
        visited = {(kind, id)}
        frontier = [(kind, id)]
        self.write_deferred()
        with self._transaction() as conn:
            for _ in range(depth):
                next_frontier = []
                for node_kind, node_id in frontier:
                    for row in self._links_touching(conn, node_kind, node_id):
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

    def linked_ids(self, kind: str, prefix: str) -> list[str]:
        """The ids of linked objects of ``kind`` that start with ``prefix`` (a short commit hash), sorted."""
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        self.write_deferred()
        with self._transaction() as conn:
            found: set[str] = set()
            for side_kind, side_id in ((_links.c.src_kind, _links.c.src_id), (_links.c.dst_kind, _links.c.dst_id)):
                query = sa.select(side_id).where(side_kind == kind, side_id.like(pattern, escape="\\")).distinct()
                found.update(row[0] for row in conn.execute(query))
        return sorted(found)

    # Leases: one of several bots leads (bot/leader.py).

    def take_lease(self, name: str, holder: str, *, ttl_s: float) -> Lease:
        """Take the lease ``name`` for ``ttl_s`` seconds if it is free, has expired, or is
        ``holder``'s already (then it is renewed); the lease as it stands afterwards, whoever holds it.
        """
        with self._lease_transaction() as conn:
            now = _database_now(conn)
            row = conn.execute(self._sql.lease_for_update, {"lease": name}).first()
            until = now + timedelta(seconds=ttl_s)
            if row is None:
                self._insert_new(conn, _leases, self._sql.new_lease, {
                    "name": name, "holder": holder, "term": 1, "acquired_at": now, "renewed_at": now,
                    "expires_at": until,
                }, unique=("name",))  # another bot may have inserted it first: then it is theirs
            elif row.holder == holder or row.expires_at <= now:
                changes = {"renewed_at": now, "expires_at": until}
                if row.holder != holder:
                    changes |= {"holder": holder, "term": row.term + 1, "acquired_at": now}
                conn.execute(_leases.update().where(_leases.c.name == name, _leases.c.term == row.term)
                             .values(changes))
            row = conn.execute(self._sql.lease, {"lease": name}).first()
        return _lease(row, now)

    def renew_lease(self, name: str, holder: str, term: int, *, ttl_s: float) -> Lease | None:
        """Extend ``holder``'s lease by ``ttl_s`` seconds from now; None if it is no longer theirs."""
        with self._lease_transaction() as conn:
            now = _database_now(conn)
            renewed = conn.execute(self._sql.renew_lease, {
                "lease": name, "by": holder, "in_term": term, "now": now,
                "until": now + timedelta(seconds=ttl_s),
            }).rowcount
            row = conn.execute(self._sql.lease, {"lease": name}).first() if renewed == 1 else None
        return None if row is None else _lease(row, now)

    def release_lease(self, name: str, holder: str, term: int) -> bool:
        """End ``holder``'s lease now, so another bot may take it at once; False if it was not theirs."""
        with self._lease_transaction() as conn:
            now = _database_now(conn)
            return conn.execute(_leases.update().where(
                _leases.c.name == name, _leases.c.holder == holder, _leases.c.term == term,
            ).values(expires_at=now)).rowcount == 1

    def lease(self, name: str) -> Lease | None:
        """Who holds the lease ``name`` (perhaps expired); None if nobody ever took it."""
        with self._lease_transaction() as conn:
            now = _database_now(conn)
            row = conn.execute(self._sql.lease, {"lease": name}).first()
        return None if row is None else _lease(row, now)

    @contextmanager
    def _lease_transaction(self) -> Iterator[sa.Connection]:
        """A transaction on a connection of its own, so a lease is renewed on time even while the
        store's kept connections are busy. It does not wait for the store's writers on PostgreSQL
        (it only needs its row's lock); on SQLite it is a writer like any other."""
        try:
            with self._engine.connect() as conn:
                if self._engine.dialect.name == "sqlite":
                    conn.info[_WRITER] = True
                try:
                    with conn.begin():
                        yield conn
                finally:
                    conn.info.pop(_WRITER, None)
        except sa.exc.OperationalError as error:
            if _is_locked(error):
                raise StoreError(f"state database {self._label} is locked by another process") from error
            raise

    # Workers sharing the work (bot/workers.py): each alive while its row is renewed.

    def join_workers(self, holder: str, *, ttl_s: float) -> WorkerRow:
        """Register ``holder`` as a worker for ``ttl_s`` seconds (renew it before then). Rows of
        workers long gone are removed on the way: their lanes are free already."""
        with self._lease_transaction() as conn:
            now = _database_now(conn)
            conn.execute(_workers.delete().where(_workers.c.expires_at < now - timedelta(hours=1)))
            conn.execute(_workers.insert().values(holder=holder, started_at=now, renewed_at=now,
                                                  expires_at=now + timedelta(seconds=ttl_s)))
            return WorkerRow(holder, now, now + timedelta(seconds=ttl_s), 0, now)

    def renew_worker(self, holder: str, *, ttl_s: float) -> bool:
        """Extend ``holder``'s row by ``ttl_s`` seconds from now; False once it has run out (or is
        gone): its lanes may be another's by then, so it must join again under a new name."""
        with self._lease_transaction() as conn:
            now = _database_now(conn)
            return conn.execute(_workers.update().where(_workers.c.holder == holder, _workers.c.expires_at > now)
                                .values(renewed_at=now, expires_at=now + timedelta(seconds=ttl_s))).rowcount == 1

    def leave_workers(self, holder: str) -> None:
        """``holder`` stops: its lanes are released and its row removed, so others take over at once."""
        with self._transaction(write=True) as conn:
            conn.execute(_lane_claims.update().where(_lane_claims.c.holder == holder).values(holder=_RELEASED))
            conn.execute(_workers.delete().where(_workers.c.holder == holder))

    def live_leader(self) -> str | None:
        """Who leads the database alone now (MLOPS_WORK_SHARING=leader), if anyone: workers wait for it."""
        with self._lease_transaction() as conn:
            row = conn.execute(self._sql.live_leases, {"now": _database_now(conn)}).first()
        return None if row is None else row.holder

    def live_workers(self) -> list[str]:
        """The workers sharing the database's work now (MLOPS_WORK_SHARING=lanes): a leader waits for them."""
        with self._lease_transaction() as conn:
            return [row.holder for row in conn.execute(self._sql.live_workers, {"now": _database_now(conn)})]

    def workers(self) -> list[WorkerRow]:
        """The workers registered (perhaps run out), oldest first, with the lanes each holds."""
        with self._transaction() as conn:
            now = _database_now(conn)
            lanes = dict(conn.execute(sa.select(_lane_claims.c.holder, sa.func.count())
                                      .group_by(_lane_claims.c.holder)).all())
            rows = conn.execute(sa.select(_workers).order_by(_workers.c.started_at)).all()
        return [WorkerRow(row.holder, row.started_at, row.expires_at, lanes.get(row.holder, 0), now) for row in rows]

    def claim_job(self, job: str, holder: str, *, every_s: float) -> bool:
        """Whether ``holder`` is the one to run ``job`` in its current interval of ``every_s``
        seconds (by the database's clock): the first worker to ask for an interval gets it."""
        with self._transaction(write=True) as conn:
            now = _database_now(conn, when_asked=True)
            slot = int(now.timestamp() // every_s)
            row = conn.execute(sa.select(_job_claims.c.slot).where(_job_claims.c.job == job)).first()
            if row is not None and row.slot >= slot:
                return False
            values = {"slot": slot, "holder": holder, "claimed_at": now}
            if row is None:
                conn.execute(_job_claims.insert().values(job=job, **values))
            else:
                conn.execute(_job_claims.update().where(_job_claims.c.job == job).values(values))
            return True

    # Small JSON state by namespace: episodes, chat threads, processed batches, ...

    def get_state(self, namespace: str, key: str) -> dict[str, Any] | None:
        waiting = self._deferred_state(namespace, key)
        if waiting is not None:
            return _from_json(waiting)
        with self._transaction() as conn:
            value = conn.execute(self._sql.state, {"namespace": namespace, "key": key}).scalar()
        return None if value is None else _from_json(value)

    def put_state(self, namespace: str, key: str, value: dict[str, Any]) -> None:
        row = {"namespace": namespace, "key": key, "value": _to_json(value), "updated_at": self._clock()}
        if not self._defer("state", row):
            with self._transaction(write=True) as conn:
                self._upsert(conn, _state, self._sql.put_state, row, keys=("namespace", "key"))

    def state_items(self, namespace: str) -> list[tuple[str, dict[str, Any]]]:
        """Every (key, value) in ``namespace``, by key."""
        query = sa.select(_state.c.key, _state.c.value).where(_state.c.namespace == namespace).order_by(_state.c.key)
        self.write_deferred()
        with self._transaction() as conn:
            return [(key, _from_json(value)) for key, value in conn.execute(query)]

    # Writes that wait for the next transaction.

    @contextmanager
    def deferred_writes(self) -> Iterator[None]:
        """Within the block, ``link`` and ``put_state`` called on this thread are kept in memory and
        written with the store's next write transaction, whichever method (on whichever thread)
        opens it, or when the block ends; ``get_state`` sees them at once.

        So they cost no transaction of their own, and nothing is stored before what was written
        earlier: an outbox completion, always written in a transaction, carries with it every
        write its delivery made. A crash may lose them, but only together with the completions
        that came after them, so the deliveries that made them are repeated.
        """
        thread = threading.get_ident()
        with self._deferred_lock:
            if thread in self._deferring_threads:  # already inside one: the outer block ends it
                opened = False
            else:
                self._deferring_threads.add(thread)
                opened = True
        if not opened:
            yield
            return
        try:
            yield
        finally:
            with self._deferred_lock:
                self._deferring_threads.discard(thread)
            self.write_deferred()

    def write_deferred(self) -> None:
        """Write what ``deferred_writes`` kept, now."""
        if self._deferred:
            with self._transaction(write=True):
                pass  # every write transaction begins with them

    def _defer(self, kind: str, row: dict[str, Any]) -> bool:
        """Keep ``row`` for the next write transaction if this thread defers its writes; False if not."""
        with self._deferred_lock:
            if threading.get_ident() not in self._deferring_threads:
                return False
            self._deferred.append((kind, row))
            return True

    def _deferred_state(self, namespace: str, key: str) -> str | None:
        """The newest deferred value of a state key, as JSON; None if none waits."""
        with self._deferred_lock:
            for kind, row in reversed(self._deferred):
                if kind == "state" and row["namespace"] == namespace and row["key"] == key:
                    return row["value"]
        return None

    def _write_deferred(self, conn: sa.Connection) -> int:
        """Write the deferred rows, in order; returns how many, to forget once committed."""
        with self._deferred_lock:
            waiting = list(self._deferred)
        states = [row for kind, row in waiting if kind == "state"]
        links = [row for kind, row in waiting if kind == "link"]
        if self._sql.put_state is not None:
            if states:
                conn.execute(self._sql.put_state, states)  # one executemany, in order: the last value wins
            if links:
                conn.execute(self._sql.new_link, links)
        else:
            for row in states:
                _upsert_once(conn, _state, row, keys=("namespace", "key"))
            for row in links:
                _insert_once(conn, _links, row, unique=_LINK_COLUMNS)
        return len(waiting)

    def _forget_deferred(self, written: int) -> None:
        with self._deferred_lock:
            del self._deferred[:written]

    # Helpers.

    @contextmanager
    def _transaction(self, *, write: bool = False, fence: WorkFence | None = None) -> Iterator[sa.Connection]:
        """One transaction on the kept connection, committed on success; a lock held too long
        becomes a StoreError. A write transaction first writes what ``deferred_writes`` kept.

        With ``fence`` (a write), it first checks the fence's lease (``LostLease`` if it no longer
        stands). Then the deferred writes are dropped too: they belong to deliveries whose
        completions will never be stored, as after a crash, and the bot leading now repeats those.
        """
        with self._locks[write]:
            try:
                with self._connection(write).begin() as transaction:
                    if fence is not None:
                        self._check_fence(transaction.connection, fence)
                    written = self._write_deferred(transaction.connection) if write and self._deferred else 0
                    yield transaction.connection
                if written:
                    self._forget_deferred(written)
            except LostLease:
                with self._deferred_lock:
                    self._deferred.clear()
                raise  # rolled back cleanly: the connection stays usable
            except BaseException as error:
                # The connection may be left half-way (a BEGIN that failed, a lost server): the next
                # call starts on a fresh one. Only failures pay for that.
                self._drop_connection(write)
                if isinstance(error, sa.exc.OperationalError) and _is_locked(error):
                    raise StoreError(
                        f"state database {self._label} is locked by another process (is another mlops-bot running?)"
                    ) from error
                raise

    def _check_fence(self, conn: sa.Connection, fence: WorkFence) -> None:
        if isinstance(fence, ClaimFence):
            self._check_claims(conn, fence)
        else:
            self._check_lease(conn, fence)

    def _check_lease(self, conn: sa.Connection, fence: Fence) -> None:
        """Raise LostLease unless ``fence``'s lease stands as it says, by the database's clock.

        On PostgreSQL the lease row is locked (FOR UPDATE) until this transaction ends, so a bot
        taking the lease meanwhile waits for it: the lease cannot pass between the check and the
        commit. On SQLite this transaction is the one writer, and taking a lease is a write.
        """
        row = conn.execute(self._sql.lease_for_update, {"lease": fence.name}).first()
        now = _database_now(conn, when_asked=True)  # after the wait for the row, not when the transaction began
        if row is None or row.holder != fence.holder or row.term != fence.term:
            leads = "nobody" if row is None else f"{row.holder} (term {row.term})"
            raise LostLease(f"lease {fence.name!r} of {fence.holder} (term {fence.term}) was taken: {leads} leads now")
        if row.expires_at <= now:
            raise LostLease(f"lease {fence.name!r} of {fence.holder} (term {fence.term}) ran out at "
                            f"{row.expires_at.isoformat()}")
        worker = conn.execute(self._sql.live_workers, {"now": now}).first()
        if worker is not None:  # bots set apart: leading beside workers could deliver an effect twice
            raise LostLease(f"worker {worker.holder} shares the work of this database (MLOPS_WORK_SHARING=lanes) "
                            f"while {fence.holder} leads it alone: give every bot on one database the same "
                            "MLOPS_WORK_SHARING")

    def _check_claims(self, conn: sa.Connection, fence: ClaimFence) -> None:
        """Raise LostClaim unless the worker's row stands (by the database's clock) and it still holds
        every lane of ``fence`` with the token it claimed it with.

        Another worker claims a lane only in a write transaction, and on PostgreSQL those take the
        store's writer lock one at a time (see _create_postgresql_engine), as on SQLite: no lane
        can change hands between this check and the commit. The worker's row is locked against a
        change (its renewal waits) for as long.
        """
        row = conn.execute(self._sql.worker.with_for_update(read=True), {"holder": fence.holder}).first()
        now = _database_now(conn, when_asked=True)
        if row is None or row.expires_at <= now:
            ran_out = "is gone" if row is None else f"ran out at {row.expires_at.isoformat()}"
            raise LostClaim(f"worker {fence.holder} {ran_out}: its lanes may be another worker's now")
        leader = conn.execute(self._sql.live_leases, {"now": now}).first()
        if leader is not None:  # bots set apart: working beside a leader could deliver an effect twice
            raise LostClaim(f"{leader.holder} leads this database alone (MLOPS_WORK_SHARING=leader) while worker "
                            f"{fence.holder} shares the work: give every bot on one database the same "
                            "MLOPS_WORK_SHARING")
        held = dict(conn.execute(self._sql.lanes_held, {"holder": fence.holder}).all())
        lost = sorted(lane for lane, token in fence.claims.items() if held.get(lane) != token)
        if lost:
            raise LostClaim(f"worker {fence.holder} no longer holds lane(s) {', '.join(lost)}: claimed by another "
                            "worker since")

    def _claim_lanes(self, conn: sa.Connection, fence: ClaimFence, *, due_by: datetime) -> dict[str, int]:
        """Within a round's transaction: the lanes ``fence``'s worker holds for this round, each with its
        token, once its lanes with no head due are released and free lanes with a head due are claimed.

        A lane is free when nobody holds it, or its holder's row ran out (a worker killed, or paused
        past it): claiming it raises its token, so what the old holder writes is refused. A head of
        one of the fence's ``solo_kinds`` (an in-process pipeline run, minutes long) makes a round of
        its own: its worker gives up its other lanes first, so they are not held while it runs."""
        now = _database_now(conn, when_asked=True)
        heads = {lane: (head, kind) for lane, head, kind in conn.execute(self._sql.due_lane_heads, {"due_by": due_by})}
        held = {lane: token for lane, token in fence.claims.items() if lane in heads}
        free: list[str] = []
        wanted = [lane for lane in sorted(heads, key=lambda lane: heads[lane][0]) if lane not in held]
        if wanted and len(held) < fence.lanes_per_round:
            taken = {row.lane: row for row in conn.execute(self._sql.claims_of, {"lanes": wanted}).all()}
            live = {row.holder for row in conn.execute(self._sql.live_workers, {"now": now})}
            free = [lane for lane in wanted
                    if lane not in taken or taken[lane].holder == _RELEASED or taken[lane].holder not in live]
        # This round's lanes, oldest head first: the ones held, then free ones, at most lanes_per_round.
        candidates = sorted(held, key=lambda lane: heads[lane][0]) + free
        solo = [lane for lane in candidates if heads[lane][1] in fence.solo_kinds]
        if candidates and candidates[0] in solo:
            chosen = candidates[:1]
        else:
            chosen = [lane for lane in candidates if lane not in solo][:fence.lanes_per_round]
        released = [lane for lane in fence.claims if lane not in chosen]
        if released:
            conn.execute(_lane_claims.update().where(_lane_claims.c.holder == fence.holder,
                                                     _lane_claims.c.lane.in_(released)).values(holder=_RELEASED))
        claimed = {lane: token for lane, token in held.items() if lane in chosen}
        new = [lane for lane in chosen if lane not in held]
        tokens = {row.lane: row.token for row in conn.execute(self._sql.claims_of, {"lanes": new})} if new else {}
        for lane in new:
            if lane in tokens:
                claimed[lane] = tokens[lane] + 1
                conn.execute(_lane_claims.update().where(_lane_claims.c.lane == lane).values(
                    holder=fence.holder, token=claimed[lane], claimed_at=now))
            else:
                claimed[lane] = 1
                conn.execute(_lane_claims.insert().values(lane=lane, holder=fence.holder, token=1, claimed_at=now))
        return claimed

    def _connection(self, write: bool) -> sa.Connection:
        conn = self._held[write]
        if conn is None:
            conn = self._engine.connect()
            if write:
                conn.info[_WRITER] = True
            self._held[write] = conn
        return conn

    def _drop_connection(self, write: bool) -> None:
        conn, self._held[write] = self._held[write], None
        if conn is not None:
            try:
                if not conn.invalidated:
                    conn.info.pop(_WRITER, None)  # back in the pool, it is anyone's
                conn.close()
            except sa.exc.DBAPIError as error:  # already broken: nothing left to give back
                _log.debug("closing a broken connection to %s: %s", self._label, error)

    def _open_schema(self) -> None:
        """Bring the schema to this mlops-bot's newest revision (Alembic), or refuse a newer one.

        One write transaction, so another bot opening the database at the same time waits, then
        finds it current; and a migration that fails leaves the database as it was.
        """
        try:
            with self._transaction(write=True) as conn:
                self.schema_upgrade = _migrate(conn, self._label)
        except sa.exc.DBAPIError as error:
            raise StoreError(f"state database {self._label} cannot be opened: {error.orig}") from error

    def _insert_effects(self, conn: sa.Connection, cause: str, effects: Sequence[NewEffect], now: datetime) -> None:
        rows = [{  # last_error, result and done_at start empty (NULL)
            "key": effect.key, "kind": effect.kind, "payload": _to_json(effect.payload), "lane": effect.lane,
            "cause": cause, "status": "pending", "attempts": 0, "next_attempt_at": now, "outcome_unknown": False,
            "created_at": now,
        } for effect in effects]
        if rows and self._sql.new_effect is not None:
            conn.execute(self._sql.new_effect, rows)  # one executemany; a key stored before is skipped
            return
        for row in rows:
            _insert_once(conn, _effects, row, unique=("key",))

    def _put_cursor(self, conn: sa.Connection, source: str, value: str) -> None:
        self._upsert(conn, _cursors, self._sql.put_cursor, {"source": source, "value": value,
                                                            "updated_at": self._clock()}, keys=("source",))

    def _insert_new(self, conn: sa.Connection, table: sa.Table, statement: sa.Executable | None,
                    row: dict[str, Any], *, unique: Sequence[str]) -> bool:
        """Insert ``row`` unless a row with the same ``unique`` values exists; True if it was inserted.

        ``statement`` is the table's INSERT ... ON CONFLICT DO NOTHING, None on other backends.
        """
        if statement is not None:
            result = conn.execute(statement, row)
            if result.returns_rows:  # RETURNING the new row's id, nothing if it was there
                return result.first() is not None
            return result.rowcount == 1
        return _insert_once(conn, table, row, unique=unique)

    def _upsert(self, conn: sa.Connection, table: sa.Table, statement: sa.Executable | None,
                row: dict[str, Any], *, keys: Sequence[str]) -> None:
        """Insert ``row``, or update the row with the same ``keys``; ``statement`` as in ``_insert_new``."""
        if statement is not None:
            conn.execute(statement, row)
        else:
            _upsert_once(conn, table, row, keys=keys)

    def _finish(self, conn: sa.Connection, results: Mapping[int, dict[str, Any]], untried: Collection[int]) -> None:
        done_at = self._clock()
        self._update_effects(conn, self._sql.complete, [
            {"effect_id": i, "outcome": _to_json(result), "done_at": done_at} for i, result in results.items()
        ])
        self._mark(conn, untried, unknown=False)

    def _mark(self, conn: sa.Connection, effect_ids: Collection[int], *, unknown: bool) -> None:
        """Set or clear ``outcome_unknown`` of existing effects (one executemany)."""
        self._update_effects(conn, self._sql.mark, [{"effect_id": i, "unknown": unknown} for i in effect_ids])

    def _update_effects(self, conn: sa.Connection, statement: sa.Executable, rows: list[dict[str, Any]]) -> None:
        """Run an UPDATE of effects once per row (one executemany); each row names an effect that exists."""
        if not rows:
            return
        updated = conn.execute(statement, rows).rowcount
        if len(rows) == 1 or conn.dialect.supports_sane_multi_rowcount:
            if updated != len(rows):
                raise StoreError(f"state database {self._label} has no effect with id "
                                 f"{' or '.join(str(row['effect_id']) for row in rows)}"
                                 if len(rows) == 1 else
                                 f"state database {self._label} is missing {len(rows) - updated} of the effects "
                                 f"{', '.join(str(row['effect_id']) for row in rows)}")

    def _links_touching(self, conn: sa.Connection, kind: str, id: str) -> list[sa.Row]:
        return list(conn.execute(self._sql.links_touching, {"kind": kind, "id": id}))


class _Statements:
    """The statements the store runs often, built once: every value is a bound parameter, so a
    call goes straight to SQLAlchemy's compiled-statement cache, without building, coercing and
    cache-keying its SQL again. (Parameter names differ from column names: SQLAlchemy keeps
    those for the VALUES and SET clauses.)
    """

    def __init__(self, dialect: str) -> None:
        effect_id = _effects.c.id == sa.bindparam("effect_id")
        self.cursor = sa.select(_cursors.c.value).where(_cursors.c.source == sa.bindparam("source"))
        self.seen = sa.select(_events.c.id).where(_events.c.key == sa.bindparam("key"))
        self.effect = sa.select(_effects).where(_effects.c.key == sa.bindparam("key"))
        self.state = sa.select(_state.c.value).where(_state.c.namespace == sa.bindparam("namespace"),
                                                     _state.c.key == sa.bindparam("key"))
        lane_heads = (
            sa.select(sa.func.min(_effects.c.id))
            .where(_effects.c.status == "pending")
            .group_by(_effects.c.lane)
        )
        self.due = (
            sa.select(_effects)
            .where(_effects.c.id.in_(lane_heads), _effects.c.next_attempt_at <= sa.bindparam("due_by"))
            .order_by(_effects.c.id)
            .limit(sa.bindparam("most", type_=sa.Integer))
        )
        self.mark = _effects.update().where(effect_id).values(outcome_unknown=sa.bindparam("unknown"))
        self.complete = _effects.update().where(effect_id).values(
            status="done", result=sa.bindparam("outcome"), outcome_unknown=False, done_at=sa.bindparam("done_at"))
        self.retry = _effects.update().where(effect_id).values(
            attempts=_effects.c.attempts + 1, next_attempt_at=sa.bindparam("at"), last_error=sa.bindparam("error"),
            outcome_unknown=sa.bindparam("unknown"))
        self.check_later = _effects.update().where(effect_id).values(
            next_attempt_at=sa.bindparam("at"), last_error=sa.bindparam("error"), outcome_unknown=True)
        self.block = _effects.update().where(effect_id).values(
            next_attempt_at=sa.bindparam("at"), last_error=sa.bindparam("error"),
            outcome_unknown=sa.bindparam("unknown"))
        self.give_up = _effects.update().where(effect_id).values(
            status="dead", attempts=_effects.c.attempts + 1, last_error=sa.bindparam("error"),
            outcome_unknown=sa.bindparam("unknown"), done_at=sa.bindparam("done_at"))
        self.lease = sa.select(_leases).where(_leases.c.name == sa.bindparam("lease"))
        self.lease_for_update = self.lease.with_for_update()  # SQLite has no FOR UPDATE: BEGIN IMMEDIATE does it
        self.renew_lease = _leases.update().where(
            _leases.c.name == sa.bindparam("lease"), _leases.c.holder == sa.bindparam("by"),
            _leases.c.term == sa.bindparam("in_term"),
        ).values(renewed_at=sa.bindparam("now"), expires_at=sa.bindparam("until"))
        self.due_lane_heads = (
            sa.select(_effects.c.lane, _effects.c.id, _effects.c.kind)
            .where(_effects.c.id.in_(lane_heads), _effects.c.next_attempt_at <= sa.bindparam("due_by"))
        )
        self.worker = sa.select(_workers.c.expires_at).where(_workers.c.holder == sa.bindparam("holder"))
        self.lanes_held = sa.select(_lane_claims.c.lane, _lane_claims.c.token).where(
            _lane_claims.c.holder == sa.bindparam("holder"))
        self.claims_of = sa.select(_lane_claims).where(_lane_claims.c.lane.in_(sa.bindparam("lanes", expanding=True)))
        self.live_workers = sa.select(_workers.c.holder).where(_workers.c.expires_at > sa.bindparam("now"))
        self.live_leases = sa.select(_leases.c.holder).where(_leases.c.expires_at > sa.bindparam("now"))
        self.counts = sa.select(_effects.c.status, sa.func.count()).group_by(_effects.c.status)
        self.oldest_pending = sa.select(sa.func.min(_effects.c.created_at)).where(_effects.c.status == "pending")
        kind, id = sa.bindparam("kind"), sa.bindparam("id")
        self.links_touching = sa.select(_links).where(sa.or_(
            sa.and_(_links.c.src_kind == kind, _links.c.src_id == id),
            sa.and_(_links.c.dst_kind == kind, _links.c.dst_id == id),
        )).order_by(_links.c.id)
        # INSERT ... ON CONFLICT where the backend has it; None elsewhere (look, then insert).
        insert = _conflict_insert(dialect)
        self.new_event = self.new_effect = self.new_link = self.put_cursor = self.put_state = self.new_lease = None
        if insert is not None:
            self.new_lease = insert(_leases).on_conflict_do_nothing(index_elements=["name"])
            self.new_event = insert(_events).on_conflict_do_nothing(index_elements=["key"])
            if dialect == "postgresql":
                # Its rowcount is not the number inserted once SQLAlchemy adds RETURNING (for the new
                # id) by itself, and it reads that row itself too: ask for it, and count it.
                self.new_event = self.new_event.returning(_events.c.id)
            self.new_effect = insert(_effects).on_conflict_do_nothing(index_elements=["key"])
            self.new_link = insert(_links).on_conflict_do_nothing(index_elements=list(_LINK_COLUMNS))
            self.put_cursor = _upsert_statement(insert, _cursors, keys=("source",))
            self.put_state = _upsert_statement(insert, _state, keys=("namespace", "key"))


def _upsert_statement(insert: Callable[[sa.Table], Any], table: sa.Table, *, keys: Sequence[str]) -> sa.Executable:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column; the row comes as parameters."""
    statement = insert(table)
    return statement.on_conflict_do_update(
        index_elements=list(keys),
        set_={column.name: statement.excluded[column.name] for column in table.columns if column.name not in keys},
    )


def _create_engine(url: sa.URL, busy_timeout_s: float) -> sa.Engine:
    if url.get_backend_name() == "postgresql":
        return _create_postgresql_engine(url)
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
        _use_wal(dbapi_connection, busy_timeout_s)
        # In WAL, NORMAL still survives the process being killed at any moment; only an OS crash or
        # power loss may undo the last commits, and the outbox then finds its writes by marker.
        dbapi_connection.execute("PRAGMA synchronous=NORMAL").close()

    def _begin(dbapi_connection: Any) -> None:
        # A writer takes the write lock at BEGIN: in WAL a reader that later writes would fail at
        # once, without waiting, if another process wrote in between.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE" if dbapi_connection.info.get(_WRITER) else "BEGIN")
        finally:
            cursor.close()

    # BEGIN goes in the dialect's own hook for it (a no-op for this driver), not in a "begin" event:
    # a connection event listener makes SQLAlchemy dispatch events around every statement and
    # transaction, which here costs more than most statements do.
    engine.dialect.do_begin = _begin  # type: ignore[method-assign]
    return engine


def _use_wal(dbapi_connection: Any, busy_timeout_s: float) -> None:
    """Put the database in WAL mode (kept in the file, so usually already done).

    Switching needs the database to itself, and SQLite answers "database is locked" at once, without
    its busy handler, when bots starting together open a new database; so retry until the timeout.
    """
    deadline = time.monotonic() + busy_timeout_s
    while True:
        try:
            cursor = dbapi_connection.execute("PRAGMA journal_mode=WAL")  # answers the mode now in use
            mode = cursor.fetchone()[0]
            cursor.close()
            if mode.lower() == "wal" or mode.lower() == "memory":
                return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise sqlite3.OperationalError("database is locked")
        time.sleep(0.05)


def _create_postgresql_engine(url: sa.URL) -> sa.Engine:
    """PostgreSQL, with the store's write transactions one at a time, as on SQLite.

    Each holds a transaction-level advisory lock from its first statement to its commit. Without
    it, two bots (a leader polling, a standby storing a webhook's event) could insert effects into
    one lane at once: ids come from a sequence when a row is inserted, not when it is committed, so
    the outbox could see effect 11 of a lane, deliver it, and only then see effect 10 committed.
    With it, ids are committed in order, as lane order needs; and a migration never runs beside a
    writer. Readers never wait.
    """
    engine = sa.create_engine(url, pool_pre_ping=True)
    lock = f"SELECT pg_advisory_xact_lock({_WRITER_LOCK})"
    default_begin = engine.dialect.do_begin

    def _begin(dbapi_connection: Any) -> None:
        default_begin(dbapi_connection)
        if dbapi_connection.info.get(_WRITER):
            cursor = dbapi_connection.cursor()  # the driver begins the transaction with this statement
            try:
                cursor.execute(lock)
            finally:
                cursor.close()

    engine.dialect.do_begin = _begin  # type: ignore[method-assign]
    return engine


def _describe(url: sa.URL) -> str:
    """How messages name the database: the file for SQLite, the URL without password otherwise."""
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def _is_locked(error: sa.exc.OperationalError) -> bool:
    return "locked" in str(error.orig).lower()


def _legacy_version(conn: sa.Connection, tables: set[str]) -> int | None:
    """schema_info's schema_version; 0 for the tables of a database from before it; None if neither."""
    if _schema_info.name in tables:
        value = conn.execute(
            sa.select(_schema_info.c.value).where(_schema_info.c.name == "schema_version")
        ).scalar()
        return 0 if value is None else int(value)
    return 0 if tables & _LEGACY_TABLES else None


def _schema_status(conn: sa.Connection, label: str) -> SchemaStatus:
    from bot import migrations

    tables = set(sa.inspect(conn).get_table_names())
    legacy = _legacy_version(conn, tables)
    revision = migrations.revision(conn) if "alembic_version" in tables else None
    return SchemaStatus(label, revision, migrations.head(), legacy)


def _migrate(conn: sa.Connection, label: str) -> tuple[str | None, str] | None:
    """Upgrade the schema to the newest revision; (revision before, after), or None if it was current."""
    from bot import migrations

    status = _schema_status(conn, label)
    newer = None
    if status.legacy is not None and status.legacy > SCHEMA_VERSION:
        newer = f"schema {status.legacy}, this one knows {SCHEMA_VERSION}"
    elif status.revision is not None and not migrations.known(status.revision):
        newer = f"revision {status.revision}, this one knows up to {status.head}"
    if newer:
        raise StoreError(f"state database {label} was written by a newer mlops-bot ({newer}); upgrade mlops-bot")
    if status.current:
        return None
    before = status.revision
    if before is None and status.legacy == 1:  # made by the store before it had migrations
        migrations.stamp(conn, migrations.BASELINE)
        before = migrations.BASELINE
    if before is not None or status.legacy is not None:
        was = f"revision {before}" if before is not None else "from before schema versions"
        _log.warning("state database %s is %s (older); upgrading it to revision %s", label, was, status.head)
    migrations.upgrade(conn)
    return before, status.head


def schema_status(url: str | sa.URL) -> SchemaStatus:
    """Where the schema of the database at ``url`` stands, changing nothing (``mlops-bot db current``)."""
    url = sa.make_url(url)
    label = _describe(url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") \
            and not url.database.startswith("file:") and not Path(url.database).expanduser().exists():
        from bot import migrations

        return SchemaStatus(label, None, migrations.head(), None)  # not made yet: nothing to create here
    engine = _create_engine(url, _BUSY_TIMEOUT_S)
    try:
        with engine.connect() as conn:
            return _schema_status(conn, label)
    except sa.exc.DBAPIError as error:
        raise StoreError(f"state database {label} cannot be opened: {error.orig}") from error
    finally:
        engine.dispose()


def _database_now(conn: sa.Connection, *, when_asked: bool = False) -> datetime:
    """The database's clock (aware UTC): leases compare times from one clock, not each host's.

    PostgreSQL's current_timestamp is when the transaction began; ``when_asked`` reads the clock now.
    """
    now = sa.func.clock_timestamp() if when_asked and conn.dialect.name == "postgresql" else sa.func.current_timestamp()
    value = conn.execute(sa.select(now)).scalar()
    if isinstance(value, str):  # SQLite: 'YYYY-MM-DD HH:MM:SS' in UTC
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _lease(row: sa.Row, now: datetime) -> Lease:
    return Lease(row.name, row.holder, row.term, row.acquired_at, row.expires_at, now)


def _insert_once(conn: sa.Connection, table: sa.Table, row: dict[str, Any], *, unique: Sequence[str]) -> bool:
    """Insert ``row`` unless a row with the same ``unique`` values exists; True if it was inserted.

    For backends without INSERT ... ON CONFLICT: look first (the write lock is held).
    """
    same = [table.c[column] == row[column] for column in unique]
    if conn.execute(sa.select(sa.literal(1)).select_from(table).where(*same)).first() is not None:
        return False
    conn.execute(table.insert().values(row))
    return True


def _upsert_once(conn: sa.Connection, table: sa.Table, row: dict[str, Any], *, keys: Sequence[str]) -> None:
    """Update the row with the same ``keys``, or insert ``row``; on every backend."""
    changes = {column: value for column, value in row.items() if column not in keys}
    same = [table.c[column] == row[column] for column in keys]
    if conn.execute(table.update().where(*same).values(changes)).rowcount == 0:
        conn.execute(table.insert().values(row))


_JSON = json.JSONEncoder(ensure_ascii=False)  # json.dumps would build a new encoder for each call


def _to_json(value: dict[str, Any]) -> str:
    return _JSON.encode(value)


def _from_json(text: str) -> dict[str, Any]:
    return json.loads(text)


def _effect_row(row: sa.Row) -> EffectRow:
    """A row of ``select(_effects)``, whose columns come in the order of EffectRow's fields."""
    (id, key, kind, payload, lane, cause, status, attempts, next_attempt_at, last_error, outcome_unknown, result,
     created_at, done_at) = row
    return EffectRow(id, key, kind, _from_json(payload), lane, cause, status, attempts, next_attempt_at, last_error,
                     bool(outcome_unknown), None if result is None else _from_json(result), created_at, done_at)


def _link(row: sa.Row) -> Link:
    return Link(row.src_kind, row.src_id, row.relation, row.dst_kind, row.dst_id, row.created_at)

"""Schema migrations of the state database (Alembic), shipped inside the package.

Alembic is configured here, in code: no ``alembic.ini`` is needed at run time. ``upgrade`` runs on
a connection the caller has already begun a transaction on (``bot.store``'s write transaction, so
one bot at a time migrates), and a failed migration leaves the database as it was: on PostgreSQL,
whose DDL is transactional, and on SQLite, which the store drives with its own BEGIN.

A new revision: copy the newest file in ``versions/``, give it the next number as ``revision`` and
the previous one as ``down_revision``, and write its ``upgrade`` and ``downgrade`` with ``op`` calls
(``op.batch_alter_table`` to alter a table, which SQLite needs). Revisions spell out their tables
instead of importing ``bot.store``'s, so each keeps meaning what it meant when it was written.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

__all__ = ["BASELINE", "head", "known", "revision", "stamp", "upgrade"]

# The schema the store made before it had migrations (its schema_info said 1) is this revision.
BASELINE = "0001"

_HERE = Path(__file__).resolve().parent
_VERSION_TABLE = "alembic_version"  # Alembic's default


def _config(conn: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this mlops-bot knows."""
    return _scripts().get_current_head()


def known(rev: str) -> bool:
    """Whether ``rev`` is one of this mlops-bot's revisions (else a newer one wrote the database)."""
    return any(script.revision == rev for script in _scripts().walk_revisions())


def revision(conn: sa.Connection) -> str | None:
    """The database's revision; None if Alembic never ran on it."""
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return None
    return conn.execute(sa.select(sa.column("version_num")).select_from(sa.table(_VERSION_TABLE))).scalar()


def upgrade(conn: sa.Connection, to: str = "head") -> None:
    """Run every migration from the database's revision to ``to``, in the caller's transaction."""
    _quiet_alembic()
    command.upgrade(_config(conn), to)


def stamp(conn: sa.Connection, rev: str) -> None:
    """Record ``rev`` as the database's revision without running anything."""
    _quiet_alembic()
    command.stamp(_config(conn), rev)


def _quiet_alembic() -> None:
    # Alembic's INFO lines ("Context impl SQLiteImpl.") say nothing an operator can act on, and would
    # land in the output of commands such as `board list --json`; the store logs upgrades itself.
    logger = logging.getLogger("alembic")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)

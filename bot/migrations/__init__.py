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
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["BASELINE", "head", "known", "revision", "stamp", "upgrade"]

# The schema the store made before it had migrations (its schema_info said 1) is this revision.
BASELINE = "0001"

_HERE = Path(__file__).resolve().parent
_VERSION_TABLE = "alembic_version"  # Alembic's default


def _config(conn: sa.Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_HERE))
    if conn is not None:
        config.attributes["connection"] = conn
    return config


@cache
def _revisions() -> dict[str, str | None]:
    """Each revision in ``versions/`` and the one it revises, read from the files' text.

    Every bot start and every command that reads the state asks whether the database is current;
    reading two assignments per file answers that without importing Alembic (a fifth of `status`'s
    start-up). Alembic itself still runs every upgrade, and a test checks both agree on the head.
    """
    found: dict[str, str | None] = {}
    for path in sorted((_HERE / "versions").glob("[0-9]*.py")):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision = "([^"]+)"', text, re.M)
        down = re.search(r'^down_revision = (?:"([^"]+)"|None)', text, re.M)
        if revision is None or down is None:
            raise RuntimeError(f"{path.name}: no `revision = \"...\"` and `down_revision = ...` lines")
        found[revision.group(1)] = down.group(1)
    return found


def head() -> str:
    """The newest revision this mlops-bot knows: the one no other revision revises."""
    revised = set(_revisions().values())
    [newest] = [rev for rev in _revisions() if rev not in revised]
    return newest


def known(rev: str) -> bool:
    """Whether ``rev`` is one of this mlops-bot's revisions (else a newer one wrote the database)."""
    return rev in _revisions()


def revision(conn: sa.Connection) -> str | None:
    """The database's revision; None if Alembic never ran on it."""
    if not sa.inspect(conn).has_table(_VERSION_TABLE):
        return None
    return conn.execute(sa.select(sa.column("version_num")).select_from(sa.table(_VERSION_TABLE))).scalar()


def upgrade(conn: sa.Connection, to: str = "head") -> None:
    """Run every migration from the database's revision to ``to``, in the caller's transaction."""
    from alembic import command

    _quiet_alembic()
    command.upgrade(_config(conn), to)


def stamp(conn: sa.Connection, rev: str) -> None:
    """Record ``rev`` as the database's revision without running anything."""
    from alembic import command

    _quiet_alembic()
    command.stamp(_config(conn), rev)


def _quiet_alembic() -> None:
    # Alembic's INFO lines ("Context impl SQLiteImpl.") say nothing an operator can act on, and would
    # land in the output of commands such as `board list --json`; the store logs upgrades itself.
    logger = logging.getLogger("alembic")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)

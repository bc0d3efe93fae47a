"""The state database as the store made it before migrations (its schema_info said 1).

Each table and index is created only if it is missing, so this revision also completes a database
from before schema versions (which had some of the tables), as the store used to.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_KEY = sa.String(512)
_NAME = sa.String(128)
_TIME = sa.DateTime(timezone=True)  # naive UTC on SQLite, timestamptz on PostgreSQL


def _tables() -> list[tuple[str, list, list[tuple[str, list[str]]]]]:
    """(table, columns and constraints, [(index, columns)])."""
    return [
        ("schema_info", [
            sa.Column("name", sa.String(64), nullable=False),
            sa.Column("value", sa.String(255), nullable=False),
            sa.PrimaryKeyConstraint("name", name="pk_schema_info"),
        ], []),
        ("cursors", [
            sa.Column("source", _KEY, nullable=False),
            sa.Column("value", sa.Text, nullable=False),
            sa.Column("updated_at", _TIME, nullable=False),
            sa.PrimaryKeyConstraint("source", name="pk_cursors"),
        ], []),
        ("events", [
            sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
            sa.Column("key", _KEY, nullable=False),
            sa.Column("kind", _NAME, nullable=False),
            sa.Column("source", _NAME, nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("received_at", _TIME, nullable=False),
            sa.PrimaryKeyConstraint("id", name="pk_events"),
            sa.UniqueConstraint("key", name="uq_events_key"),
        ], [("ix_events_kind_id", ["kind", "id"])]),
        ("effects", [
            sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
            sa.Column("key", _KEY, nullable=False),
            sa.Column("kind", _NAME, nullable=False),
            sa.Column("payload", sa.Text, nullable=False),
            sa.Column("lane", _KEY, nullable=False),
            sa.Column("cause", _KEY, nullable=False),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("attempts", sa.Integer, nullable=False),
            sa.Column("next_attempt_at", _TIME, nullable=False),
            sa.Column("last_error", sa.Text),
            sa.Column("outcome_unknown", sa.Boolean, nullable=False),
            sa.Column("result", sa.Text),
            sa.Column("created_at", _TIME, nullable=False),
            sa.Column("done_at", _TIME),
            sa.PrimaryKeyConstraint("id", name="pk_effects"),
            sa.UniqueConstraint("key", name="uq_effects_key"),
        ], [("ix_effects_status_lane_id", ["status", "lane", "id"]), ("ix_effects_cause", ["cause"])]),
        ("links", [
            sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
            sa.Column("src_kind", _NAME, nullable=False),
            sa.Column("src_id", _KEY, nullable=False),
            sa.Column("relation", _NAME, nullable=False),
            sa.Column("dst_kind", _NAME, nullable=False),
            sa.Column("dst_id", _KEY, nullable=False),
            sa.Column("created_at", _TIME, nullable=False),
            sa.PrimaryKeyConstraint("id", name="pk_links"),
            sa.UniqueConstraint("src_kind", "src_id", "relation", "dst_kind", "dst_id",
                                name="uq_links_src_kind_src_id_relation_dst_kind_dst_id"),
        ], [("ix_links_dst_kind_dst_id", ["dst_kind", "dst_id"])]),
        ("state", [
            sa.Column("namespace", _NAME, nullable=False),
            sa.Column("key", _KEY, nullable=False),
            sa.Column("value", sa.Text, nullable=False),
            sa.Column("updated_at", _TIME, nullable=False),
            sa.PrimaryKeyConstraint("namespace", "key", name="pk_state"),
        ], []),
    ]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = set(inspector.get_table_names())
    for name, columns, indexes in _tables():
        if name not in existing:
            op.create_table(name, *columns)
        have = {index["name"] for index in inspector.get_indexes(name)} if name in existing else set()
        for index, on in indexes:
            if index not in have:
                op.create_index(index, name, on)
    schema_info = sa.table("schema_info", sa.column("name", sa.String), sa.column("value", sa.String))
    bind = op.get_bind()
    if bind.execute(sa.select(schema_info.c.value).where(schema_info.c.name == "schema_version")).first() is None:
        op.bulk_insert(schema_info, [{"name": "schema_version", "value": "1"}])


def downgrade() -> None:
    for name, _columns, _indexes in reversed(_tables()):
        op.drop_table(name)

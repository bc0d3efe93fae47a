"""The leader lease (one bot leads, others stand by) and a fence against older mlops-bots.

mlops-bot builds from before migrations read schema_info's schema_version and refuse a database
whose version is newer than theirs (1): setting it to 2 keeps them off a database they would not
understand, instead of letting them write to it beside a leader they cannot see.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_schema_info = sa.table("schema_info", sa.column("name", sa.String), sa.column("value", sa.String))


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("term", sa.Integer, nullable=False),  # +1 at each change of holder: a fencing token
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.execute(_schema_info.update().where(_schema_info.c.name == "schema_version").values(value="2"))


def downgrade() -> None:
    op.drop_table("leases")
    op.execute(_schema_info.update().where(_schema_info.c.name == "schema_version").values(value="1"))

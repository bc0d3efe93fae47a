"""Workers that share the work (MLOPS_WORK_SHARING=lanes): who is alive, which lanes and job
intervals each has claimed.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(  # one row per live worker, renewed while it lives; its claims stand while it does
        "workers",
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("holder", name="pk_workers"),
    )
    op.create_table(  # one row per lane ever claimed; holder '' once released
        "lane_claims",
        sa.Column("lane", sa.String(512), nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("token", sa.Integer, nullable=False),  # +1 at each claim: a fencing token
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lane", name="pk_lane_claims"),
        sa.Index("ix_lane_claims_holder", "holder"),
    )
    op.create_table(  # the last interval of each scheduled job some worker claimed
        "job_claims",
        sa.Column("job", sa.String(128), nullable=False),
        sa.Column("slot", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job", name="pk_job_claims"),
    )


def downgrade() -> None:
    op.drop_table("job_claims")
    op.drop_table("lane_claims")
    op.drop_table("workers")

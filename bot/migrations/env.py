"""Alembic's environment: migrate the connection ``bot.migrations`` hands over, in its transaction."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` run by hand: there is no offline (SQL script) mode
    raise RuntimeError("run migrations with `mlops-bot db upgrade` (or by starting the bot), not the alembic command")

context.configure(
    connection=connection,
    target_metadata=None,  # revisions are written by hand; there is no autogenerate against live models
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():  # joins the caller's transaction
    context.run_migrations()

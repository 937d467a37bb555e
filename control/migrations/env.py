"""Alembic environment: run by `metrux control migrate` with a live connection."""

from __future__ import annotations

from alembic import context

from control.db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `metrux control migrate`, which supplies the database")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

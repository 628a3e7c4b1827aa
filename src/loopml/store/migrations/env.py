"""Alembic environment for the loopml store.

Run through ``loopml db upgrade`` (or ``loopml.store.migrate``), which passes an
open connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from loopml.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when alembic's own CLI is used
    raise RuntimeError("Run migrations with `loopml db upgrade`, not the alembic CLI.")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

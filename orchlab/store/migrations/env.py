"""Alembic's entry point: migrations run on the connection `orchlab.store.engine.migrate` passes
(holding the store's migration lock), never on a URL of their own."""

from __future__ import annotations

from alembic import context

from orchlab.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()

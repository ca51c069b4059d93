"""Alembic migrations of the thread store, shipped in the package and applied on first use
(`orchlab.store.engine.migrate`). Add one with ``alembic revision`` against this folder and bump
`orchlab.store.engine.HEAD`."""

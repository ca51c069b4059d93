"""The thread store: threads, messages, feedback and prompt versions in a database.

SQLite by default (``.orchlab/store.db`` next to the MLflow store, WAL), PostgreSQL for a team
(``store: {url: postgresql+psycopg://...}`` or ``ORCH_STORE_URL``); see `orchlab.store.settings`.
SQLAlchemy 2 Core, alembic migrations shipped in ``migrations/`` and applied on first use.

- `orchlab.store.thread.Thread`: ``client.thread(name_or_id)``; ``run``/``arun``/``stream``
  inject the branch's last messages and store the exchange.
- `orchlab.store.store.Store` (blocking) and `AsyncStore` (servers): the same statements
  (`orchlab.store.queries`) on a sync or async engine; values out, never ORM rows.
- `orchlab.store.feedback`: one rating of a message, in the table and in MLflow.

Nothing here is imported by ``import orchlab``: SQLAlchemy loads when a thread is first used.
"""

"""What ``Orchestrator.thread/threads/store/feedback`` call: a client's store, found and opened
lazily (SQLAlchemy is imported only here, on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orchlab.errors import StoreError
from orchlab.store.ids import is_ulid
from orchlab.store.settings import StoreSettings, resolve_store_settings

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.store.store import Store
    from orchlab.store.thread import Thread


def settings_of(client: Orchestrator) -> StoreSettings:
    base = client.config_path.parent if client.config_path is not None else None
    return resolve_store_settings(client.config.store, tracking=client.tracking.settings, base_dir=base)


def store_of(client: Orchestrator) -> Store:
    from orchlab.store.store import open_store

    return open_store(settings_of(client))


def existing_store(client: Orchestrator) -> Store | None:
    """The client's store if it exists already (a new SQLite file is not made just to look)."""
    settings = settings_of(client)
    path = settings.sqlite_path
    if path is not None and not path.exists():
        return None
    from orchlab.store.store import open_store

    return open_store(settings)


def open_thread(
    client: Orchestrator,
    name_or_id: str | None,
    *,
    context_depth: int | None,
    system: str | None,
    user: str | None,
    title: str | None,
) -> Thread:
    from orchlab.store.thread import Thread
    from orchlab.tracking.records import current_user

    settings = settings_of(client)
    depth = settings.context_depth if context_depth is None else context_depth
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        raise StoreError(f"context_depth must be a whole number >= 0, got {context_depth!r}")
    store = store_of(client)
    if name_or_id is None:
        info = store.create_thread(title=title, user=user or current_user())
    elif not isinstance(name_or_id, str) or not name_or_id.strip():
        raise StoreError(f"a thread is named by a non-empty string or its id, got {name_or_id!r}")
    elif is_ulid(name_or_id):
        found = store.thread(name_or_id)
        if found is None:
            raise StoreError(f"no thread {name_or_id} in {settings.safe_url} (client.threads() lists them)")
        info = found
    else:
        info = store.thread(name_or_id) or store.create_thread(
            name=name_or_id, title=title, user=user or current_user()
        )
    return Thread(client, store, info, context_depth=depth, system=system)


def give_feedback(client: Orchestrator, target: object, value: object, **kwargs: Any) -> Any:
    from orchlab.store.feedback import give_feedback as give

    return give(existing_store(client), client.tracking, target, value, **kwargs)

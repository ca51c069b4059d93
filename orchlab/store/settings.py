"""Where a client's threads are stored: ``ORCH_STORE_URL``, then the YAML ``store.url``, then a
SQLite file next to the MLflow store.

Resolved when the store is first used (microseconds, no SQLAlchemy): relative SQLite paths become
absolute then (relative to the YAML file for ``store.url``, to the working directory for the
environment variable), so a later ``os.chdir`` does not start a second store.

- default: ``<folder of the MLflow SQLite store>/.orchlab/store.db`` (with the default
  ``sqlite:///mlflow.db`` that is ``.orchlab/store.db`` in the working directory, beside the
  tracking spool); with an MLflow server, ``.orchlab/store.db`` in the working directory;
- ``sqlite:///PATH``: another SQLite file;
- ``postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB`` (``postgresql://`` means the same): a
  PostgreSQL database shared by a team (``pip install 'orchlab[store]'`` brings psycopg).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from orchlab.errors import ConfigValidationError

if TYPE_CHECKING:
    from orchlab.config.schema import StoreConfig
    from orchlab.tracking.settings import TrackingSettings

ENV_URL = "ORCH_STORE_URL"
DEFAULT_DEPTH = 10
STORE_FILE = "store.db"
_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")

Backend = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """A resolved store: its SQLAlchemy URL (sync driver) and the default context depth."""

    url: str
    context_depth: int = DEFAULT_DEPTH

    @property
    def backend(self) -> Backend:
        return "sqlite" if self.url.startswith("sqlite") else "postgresql"

    @property
    def sqlite_path(self) -> Path | None:
        if self.backend != "sqlite":
            return None
        return Path(self.url.split(":///", 1)[1])

    @property
    def async_url(self) -> str:
        """The URL for SQLAlchemy's async engine (aiosqlite for SQLite; psycopg does both)."""
        if self.backend == "sqlite":
            return "sqlite+aiosqlite:///" + self.url.split(":///", 1)[1]
        return self.url

    @property
    def safe_url(self) -> str:
        """The URL with its password masked (for messages and reprs)."""
        return mask_password(self.url)

    def __repr__(self) -> str:
        return f"StoreSettings(url={self.safe_url!r}, context_depth={self.context_depth})"


def mask_password(url: str) -> str:
    return _PASSWORD.sub(r"\1***@", url)


def resolve_store_settings(
    config: StoreConfig | None,
    *,
    tracking: TrackingSettings | None = None,
    base_dir: Path | None = None,
) -> StoreSettings:
    """The store of a client; ``base_dir`` is the YAML file's folder (None: the working directory)."""
    cwd = Path.cwd()
    depth = config.context_depth if config is not None else DEFAULT_DEPTH
    raw_env = os.environ.get(ENV_URL, "").strip()
    if raw_env:
        return StoreSettings(normalize_store_url(raw_env, cwd, source=ENV_URL), depth)
    if config is not None and config.url:
        return StoreSettings(normalize_store_url(config.url, base_dir or cwd, source="store.url"), depth)
    mlflow_db = tracking.sqlite_path if tracking is not None else None
    folder = mlflow_db.parent if mlflow_db is not None else cwd
    return StoreSettings(f"sqlite:///{(folder / '.orchlab' / STORE_FILE).resolve()}", depth)


def normalize_store_url(url: str, base_dir: Path, *, source: str) -> str:
    """An absolute ``sqlite:///`` URL or a ``postgresql+psycopg://`` one; anything else is refused."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("sqlite", "sqlite+pysqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path.startswith(":memory:") or "?" in path:
            raise ConfigValidationError(
                f"{source}: {url!r} names no database file; use sqlite:///threads.db or "
                "sqlite:////abs/path/threads.db (an in-memory store would lose every thread)",
                problems=[(source, "a SQLite store needs a file path")],
            )
        p = Path(path).expanduser()
        return f"sqlite:///{(p if p.is_absolute() else base_dir / p).resolve()}"
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return "postgresql+psycopg" + url[len(scheme) :]
    raise ConfigValidationError(
        f"{source}: {mask_password(url)!r} is not a store orchlab supports; use sqlite:///PATH or "
        "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB",
        problems=[(source, f"unsupported scheme {scheme or '(none)'!r}")],
    )

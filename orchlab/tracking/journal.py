"""The journal: every finished call's record is on disk before ``run()`` returns.

Layout, one folder per store under the spool folder (``<spool_dir>/<store id>/``)::

    store.json                       the store's tracking URI (read by the drain)
    <start ns>-<pid>-<n>.journal     one process's records for one experiment, one JSON line each;
                                     the first line is a header naming the store and experiment
    <...>.journal.done               how far the drain got in that journal (see `Progress`)
    drain.lock, drain.log, status.json, rejected.jsonl    the drain's (see `drain`)

**Durability.** A record is one ``os.write`` to a file opened once with ``O_APPEND``, made before
the call returns. A process that is killed (``kill -9``, the OOM killer, a crash) loses nothing
it wrote: the data is in the kernel's page cache. A power cut or a kernel crash may lose the last
few seconds, unless ``ORCH_TRACKING_FSYNC=1`` (or ``tracking.fsync: true``) fsyncs every record.

**Bounded.** A process starts a new journal file every `segment_bytes` (an eighth of the cap);
when a store's folder passes ``max_spool_bytes`` (256 MiB by default), the oldest closed journals
are deleted and the records they held are counted in an `OrchlabWarning`.

**Liveness.** A process holds an exclusive ``flock`` on the journal it appends to. A journal that
can be locked is closed (its process moved on to a new one, or ended, even by ``kill -9``), so the
drain deletes it once it is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchlab.errors import OrchlabWarning
from orchlab.tracking.settings import TrackingSettings

try:
    import fcntl
except ImportError:  # Windows: no flock; tracking turns itself off there (see `unsupported`)
    fcntl = None  # type: ignore[assignment]

SUFFIX = ".journal"
DONE_SUFFIX = ".done"
STORE_FILE = "store.json"
MIN_SEGMENT_BYTES = 64 * 1024


def unsupported() -> str | None:
    """Why the journal cannot work on this system (None: it can)."""
    if fcntl is None:
        return "MLflow tracking is off: its journal needs POSIX file locks (fcntl), which this system lacks"
    return None


def segment_bytes(max_spool_bytes: int) -> int:
    return max(MIN_SEGMENT_BYTES, max_spool_bytes // 8)


def encode(record: dict[str, Any]) -> bytes:
    """One journal line (ASCII JSON: a lone surrogate in a prompt cannot break the encoding)."""
    return json.dumps(record, separators=(",", ":"), default=str).encode("ascii") + b"\n"


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the drain got in one journal: ``done`` bytes are in the store; the bytes up to
    ``pending`` were being written when the drain last recorded its progress (after a crash they
    may or may not be in the store, so the next drain checks them before writing)."""

    done: int = 0
    pending: int = 0

    @staticmethod
    def path(journal: Path) -> Path:
        return journal.with_name(journal.name + DONE_SUFFIX)

    @classmethod
    def read(cls, journal: Path) -> Progress:
        try:
            raw = json.loads(cls.path(journal).read_text(encoding="utf-8"))
            return cls(int(raw["done"]), int(raw.get("pending", raw["done"])))
        except (OSError, ValueError, KeyError, TypeError):
            return cls()

    def write(self, journal: Path) -> None:
        path = self.path(journal)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"done": self.done, "pending": self.pending}), encoding="utf-8")
        os.replace(tmp, path)


def journals(store_dir: Path) -> list[Path]:
    """The store's journal files, oldest first (by name: start time, pid, sequence)."""
    try:
        return sorted(p for p in store_dir.iterdir() if p.name.endswith(SUFFIX))
    except OSError:
        return []


@contextlib.contextmanager
def closed_journal(path: Path) -> Iterator[bool]:
    """True (holding its lock meanwhile) when no process appends to ``path`` any more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def count_lines(path: Path, start: int) -> int:
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def remove(path: Path) -> None:
    for p in (path, Progress.path(path)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def trim(store_dir: Path, max_bytes: int) -> int:
    """Delete the oldest closed journals until the folder is under ``max_bytes``; records dropped."""
    found = []
    for path in journals(store_dir):
        with contextlib.suppress(OSError):
            st = path.stat()
            found.append((st.st_mtime, path, st.st_size))
    total = sum(size for _, _, size in found)
    dropped = 0
    for _, path, size in sorted(found):
        if total <= max_bytes:
            break
        with closed_journal(path) as closed:
            if not closed:
                continue
            done = Progress.read(path).done
            dropped += count_lines(path, done) - (1 if done == 0 else 0)  # not the header
            remove(path)
        total -= size
    return max(0, dropped)


def write_store_file(store_dir: Path, tracking_uri: str) -> None:
    path = store_dir / STORE_FILE
    if path.exists():
        return
    tmp = store_dir / f".{STORE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps({"tracking_uri": tracking_uri}), encoding="utf-8")
    os.replace(tmp, path)


def read_store_file(store_dir: Path) -> str:
    return str(json.loads((store_dir / STORE_FILE).read_text(encoding="utf-8"))["tracking_uri"])


class Journal:
    """This process's journal for one destination (store and experiment): `append` a record."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self.dir = settings.store_dir
        self.segment_bytes = segment_bytes(settings.max_spool_bytes)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._pid = 0
        self._path: Path | None = None
        self._size = 0
        self._seq = 0
        self.written: dict[Path, int] = {}
        """Each journal file of this process, with the bytes written to it."""

    def append(self, record: dict[str, Any]) -> None:
        """Write ``record`` (one line, one ``os.write``); fsync it when the settings say so."""
        line = encode(record)
        dropped = 0
        with self._lock:
            if self._fd is None or self._pid != os.getpid() or self._size >= self.segment_bytes:
                dropped = self._open()
            assert self._fd is not None and self._path is not None
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]
            if self.settings.fsync:
                os.fsync(self._fd)
            self._size += len(line)
            self.written[self._path] = self._size
        if dropped:
            warnings.warn(
                f"orchlab tracking: the journal for {self.settings.tracking_uri} passed its cap "
                f"({self.settings.max_spool_bytes / (1024 * 1024):g} MiB, tracking.spool_max_mb): the "
                f"{dropped} oldest record(s) not yet in the store were dropped; is the store reachable? "
                f"(see {self.dir / 'drain.log'})",
                OrchlabWarning,
                stacklevel=4,
            )

    def _open(self) -> int:
        """Close the current journal file (if any) and start the next; records the cap dropped."""
        if self._fd is not None:
            os.close(self._fd)  # after a fork this is the parent's file: its lock stays with it
            self._fd = None
        if self._pid != os.getpid():
            self._pid, self.written = os.getpid(), {}
        first = self._path is None
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if first:
            write_store_file(self.dir, self.settings.tracking_uri)
        self._seq += 1
        path = self.dir / f"{time.time_ns():019d}-{self._pid}-{self._seq:04d}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = {
            "kind": "journal",
            "tracking_uri": self.settings.tracking_uri,
            "experiment": self.settings.experiment,
            "pid": self._pid,
        }
        line = encode(header)
        os.write(fd, line)
        self._fd, self._path, self._size = fd, path, len(line)
        self.written[path] = self._size
        return trim(self.dir, self.settings.max_spool_bytes)

    def waiting(self) -> dict[Path, int]:
        """This process's journal files the drain has not finished, with the bytes still to write."""
        with self._lock:
            sizes = dict(self.written)
        out = {}
        for path, size in sizes.items():
            if not path.exists():
                continue  # written and deleted by the drain, or dropped by the cap
            done = Progress.read(path).done
            if done < size:
                out[path] = size - done
        return out

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._pid == os.getpid():
                os.close(self._fd)
            self._fd = None


_journals: dict[str, Journal] = {}
_journals_lock = threading.Lock()


def journal_for(settings: TrackingSettings) -> Journal:
    """The process's one journal for this destination (clients with the same settings share it)."""
    journal = _journals.get(settings.key)
    if journal is None:
        with _journals_lock:
            journal = _journals.get(settings.key)
            if journal is None:
                journal = _journals[settings.key] = Journal(settings)
    return journal


def all_journals() -> list[Journal]:
    with _journals_lock:
        return list(_journals.values())

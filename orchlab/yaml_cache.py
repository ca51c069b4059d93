"""YAML read before, kept as JSON, so that a later process reading the same text skips PyYAML.

A one-shot script reads its config file and the packaged ``models.yaml``; importing PyYAML alone
costs it about 8 ms (it compiles its regexes), more than the rest of reading both. What PyYAML
read from a text is kept in ``<cache dir>/yaml/<key>.json`` (`orchlab.dirs.cache_dir`), the key a
SHA-256 of the text, what read it (``kind``), this format, orchlab's version and the files of its
reader (`orchlab.config.yaml_reader`) and of PyYAML; the next process that reads the same text takes
it from there, and reads nothing else of the cache.

- Only plain data is kept: mappings with string keys, lists, strings, numbers, booleans and null.
  A reading holding anything else (a date, ``!!binary``, a key that is a number) is never kept:
  PyYAML reads that text every time.
- Best effort: a file that cannot be written or read (a read-only home, a damaged file) only
  means PyYAML reads the text. Files are written whole (a temp file renamed over), readable by
  their owner only; past `MAX_FILES` the oldest are removed.
- ``ORCH_YAML_CACHE=off`` keeps nothing and reads nothing from it.

Nothing is kept that the YAML file does not hold: a config's ``${VAR}`` values are kept as the
file writes them and expanded on every read (`orchlab.config.document`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from orchlab.dirs import cache_dir

ENV = "ORCH_YAML_CACHE"
FORMAT = 1
MAX_FILES = 64
"""Files kept; writing one more removes the oldest (by modification time) down to this."""


def enabled() -> bool:
    """False when ``ORCH_YAML_CACHE`` is off, 0, false or no."""
    return os.environ.get(ENV, "").strip().lower() not in ("off", "0", "false", "no")


def load(kind: str, text: str) -> Any | None:
    """What was kept for ``text`` read as ``kind``, or None (none kept, unreadable, or off)."""
    if not enabled():
        return None
    try:
        kept = json.loads(_file(kind, text).read_bytes())
    except (OSError, ValueError):
        return None
    return kept.get("value") if isinstance(kept, dict) and kept.get("format") == FORMAT else None


def save(kind: str, text: str, value: Any) -> None:
    """Keep ``value`` (what PyYAML read from ``text``) if it is plain data; see the module docs."""
    if not enabled() or not _plain(value):
        return
    path = _file(kind, text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"format": FORMAT, "value": value}, out, ensure_ascii=False)
        os.replace(tmp, path)  # whole: a concurrent reader finds the old file, the new one or none
        _prune(path.parent)
    except (OSError, ValueError):
        pass


def _file(kind: str, text: str) -> Path:
    from orchlab import __version__

    key = f"{FORMAT}\0{__version__}\0{_readers()}\0{kind}\0"
    return cache_dir() / "yaml" / f"{hashlib.sha256(key.encode() + text.encode()).hexdigest()}.json"


def _readers() -> str:
    """The size and time of orchlab's reader and of PyYAML's ``__init__.py``: a changed reader (a
    checkout between versions) or another PyYAML reads every text again (~0.1 ms: no import)."""
    from importlib.util import find_spec

    files = [Path(__file__).parent / "config" / "yaml_reader.py"]
    try:
        spec = find_spec("yaml")
    except ValueError:
        spec = None
    if spec is not None and spec.origin:
        files.append(Path(spec.origin))
    stamps = []
    for file in files:
        try:
            stat = file.stat()
            stamps.append(f"{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:
            stamps.append("")
    return "/".join(stamps)


def _plain(value: Any, depth: int = 0) -> bool:
    """``value`` comes back from JSON as it is: the same types, the same values."""
    if depth > 200:
        return False
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _prune(folder: Path) -> None:
    entries = [e for e in os.scandir(folder) if e.name.endswith(".json")]
    if len(entries) <= MAX_FILES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime_ns)
    for entry in entries[: len(entries) - MAX_FILES]:
        with contextlib.suppress(OSError):  # another process removed it first
            os.unlink(entry.path)

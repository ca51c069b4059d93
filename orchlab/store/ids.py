"""ULIDs: 26-character ids that sort by creation time (48-bit milliseconds, 80 random bits).

Within one millisecond a process increments the random part, so ids made in order sort in order
(the "monotonic" variant of the spec); ids from different processes sort by their millisecond.
"""

from __future__ import annotations

import os
import re
import threading
import time
from datetime import UTC, datetime

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
ULID_RE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
_RANDOM_MAX = (1 << 80) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def new_ulid(now_ms: int | None = None) -> str:
    """A new ULID (monotonic within this process)."""
    global _last_ms, _last_random
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_random + 1
            if rand > _RANDOM_MAX:  # 2^80 ids in one millisecond: borrow the next one
                ms, rand = ms + 1, int.from_bytes(os.urandom(10), "big")
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_random = ms, rand
    return _encode((ms << 80) | rand)


def _encode(value: int) -> str:
    out = []
    for _ in range(26):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def is_ulid(text: object) -> bool:
    return isinstance(text, str) and ULID_RE.match(text) is not None


def ulid_time(ulid: str) -> datetime:
    """When a ULID was made (UTC, millisecond precision)."""
    value = 0
    for ch in ulid[:10]:
        value = value * 32 + ALPHABET.index(ch)
    return datetime.fromtimestamp(value / 1000, tz=UTC)

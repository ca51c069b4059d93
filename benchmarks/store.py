"""The thread store's hot path, and SQLite under concurrent writers.

Run::

    .venv/bin/python benchmarks/store.py              # SQLite and PostgreSQL (started here)
    .venv/bin/python benchmarks/store.py --only sqlite
    .venv/bin/python benchmarks/store.py --strict     # exit 1 when a target is missed

1. Per backend, on threads of 100 and of 10,000 messages (interleaved, same run): append one
   message (``Store.append``: one write transaction, the thread's head moved) and read the last 10
   messages of the branch (``Store.current_branch``: one recursive-CTE query), p50/p90 over
   ``--n`` rounds. The same two statements through the raw driver (sqlite3 / psycopg, no
   SQLAlchemy) are the baseline of the ratio. Targets (issue 15): append + read p50 <= 2 ms on
   SQLite, <= 5 ms on PostgreSQL, and 10,000 / 100 messages <= 1.5x (it must not grow with length).
2. 8 writer processes appending ``--writes`` messages each to one SQLite thread at once: every
   message must be stored and no writer may see "database is locked".

PostgreSQL is the distribution's server, started in a temporary folder on loopback with fsync on
(``--pg-no-fsync`` to turn it off); the store's sessions (and the raw baseline's) commit with
``synchronous_commit=off`` (`orchlab.store.engine`). The machine is shared with other work:
compare figures only within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchlab.store.engine import PG_OPTIONS
from orchlab.store.ids import new_ulid
from orchlab.store.settings import StoreSettings
from orchlab.store.store import Store

SHORT, LONG, DEPTH = 100, 10_000, 10
TARGET_MS = {"sqlite": 2.0, "postgresql": 5.0}
GROWTH_MAX = 1.5


def row(thread_id: str, parent: str | None, i: int) -> dict[str, Any]:
    return {
        "id": new_ulid(),
        "thread_id": thread_id,
        "parent_id": parent,
        "role": "user" if i % 2 == 0 else "assistant",
        "content": [{"type": "text", "text": f"message {i} " + "lorem ipsum " * 8}],
        "created_at": datetime.now(UTC),
    }


def filled(store: Store, name: str, n: int) -> tuple[str, str]:
    """A thread of ``n`` messages in one chain; (thread id, head id)."""
    t = store.create_thread(name=name)
    head: str | None = None
    batch: list[dict[str, Any]] = []
    for i in range(n):
        batch.append(row(t.id, head, i))
        head = batch[-1]["id"]
        if len(batch) == 1000:
            store.append(batch, head=head)
            batch = []
    if batch:
        store.append(batch, head=head)
    assert head is not None
    return t.id, head


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


# --- raw drivers: the baseline ----------------------------------------------------------------

BRANCH_SQL = """
WITH RECURSIVE branch(id, parent_id, n) AS (
  SELECT id, parent_id, 1 FROM messages WHERE id = (SELECT head_id FROM threads WHERE id = {p})
  UNION ALL
  SELECT m.id, m.parent_id, b.n + 1 FROM messages m JOIN branch b ON m.id = b.parent_id WHERE b.n < {p}
)
SELECT messages.* FROM messages JOIN branch ON messages.id = branch.id ORDER BY branch.n DESC
"""
INSERT_SQL = (
    "INSERT INTO messages (id, thread_id, parent_id, role, content, created_at) "
    "VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
)
HEAD_SQL = "UPDATE threads SET head_id = {p}, updated_at = {p} WHERE id = {p}"


class Raw:
    """The same append and read on the raw driver (no SQLAlchemy)."""

    def __init__(self, store: Store) -> None:
        import json

        self.json = json.dumps
        if store.settings.backend == "sqlite":
            self.con: Any = sqlite3.connect(str(store.settings.sqlite_path), isolation_level=None)
            self.con.execute("PRAGMA busy_timeout = 30000")
            self.con.execute("PRAGMA synchronous = NORMAL")
            self.mark, self.begin = "?", "BEGIN IMMEDIATE"
        else:
            import psycopg

            url = store.settings.url.replace("postgresql+psycopg", "postgresql")
            self.con = psycopg.connect(url, autocommit=True, options=PG_OPTIONS)  # as the Store's
            self.mark, self.begin = "%s", "BEGIN"
        self.branch_sql = BRANCH_SQL.format(p=self.mark)
        self.insert_sql = INSERT_SQL.format(p=self.mark)
        self.head_sql = HEAD_SQL.format(p=self.mark)

    def append(self, thread_id: str, parent: str, i: int) -> str:
        r = row(thread_id, parent, i)
        now = r["created_at"] if self.mark == "%s" else r["created_at"].replace(tzinfo=None).isoformat(" ")
        cur = self.con.cursor()
        cur.execute(self.begin)
        cur.execute(self.insert_sql, (r["id"], thread_id, parent, r["role"], self.json(r["content"]), now))
        cur.execute(self.head_sql, (r["id"], now, thread_id))
        cur.execute("COMMIT")
        return str(r["id"])

    def read(self, thread_id: str) -> list[Any]:
        cur = self.con.cursor()
        cur.execute(self.branch_sql, (thread_id, DEPTH))
        return list(cur.fetchall())

    def close(self) -> None:
        self.con.close()


# --- 1. append + read -------------------------------------------------------------------------


def hot_path(store: Store, n: int) -> dict[str, Any]:
    threads = {length: filled(store, f"len{length}", length) for length in (SHORT, LONG)}
    raw = Raw(store)
    heads = {length: head for length, (_, head) in threads.items()}
    times: dict[str, list[float]] = {k: [] for k in ("orch100", "orch10000", "raw100", "raw10000")}
    for i in range(n):
        order = [SHORT, LONG] if i % 2 == 0 else [LONG, SHORT]
        for length in order:
            thread_id = threads[length][0]

            def orch(length: int = length, thread_id: str = thread_id, i: int = i) -> None:
                r = row(thread_id, heads[length], i)
                store.append([r], head=r["id"])
                heads[length] = r["id"]
                got = store.current_branch(thread_id, DEPTH)[1]
                assert len(got) == DEPTH and got[-1].id == r["id"]

            def direct(length: int = length, thread_id: str = thread_id, i: int = i) -> None:
                heads[length] = raw.append(thread_id, heads[length], i)
                assert len(raw.read(thread_id)) == DEPTH

            if i % 2 == 0:
                times[f"orch{length}"].append(timed(orch))
                times[f"raw{length}"].append(timed(direct))
            else:
                times[f"raw{length}"].append(timed(direct))
                times[f"orch{length}"].append(timed(orch))
    raw.close()
    return {k: (p(v, 50), p(v, 90)) for k, v in times.items()}


# --- 2. concurrent writers ----------------------------------------------------------------------

WRITER = """
import sys
from orchlab.store.settings import StoreSettings
from orchlab.store.store import Store
sys.path.insert(0, {bench!r})
from store import row
url, thread_id, n, tag = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = Store.open(StoreSettings(url))
for i in range(n):
    r = row(thread_id, None, i)
    r["content"] = [{{"type": "text", "text": f"{{tag}}-{{i}}"}}]
    store.append([r], head=r["id"])
"""


def writers(folder: Path, count: int, writes: int) -> dict[str, Any]:
    url = f"sqlite:///{folder / 'writers.db'}"
    store = Store.open(StoreSettings(url))
    thread = store.create_thread(name="writers")
    code = textwrap.dedent(WRITER.format(bench=str(Path(__file__).resolve().parent)))
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, url, thread.id, str(writes), f"w{k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(count)
    ]
    outs = [proc.communicate() for proc in procs]
    took = time.perf_counter() - t0
    stored = {m.text for m in store.messages(thread.id)}
    expected = {f"w{k}-{i}" for k in range(count) for i in range(writes)}
    store.close()
    return {
        "failed": sum(1 for proc in procs if proc.returncode != 0),
        "locked": sum(1 for _, err in outs if "locked" in err),
        "lost": len(expected - stored),
        "stored": len(stored & expected),
        "expected": len(expected),
        "writes_per_s": len(stored) / took,
    }


# --- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres(fsync: bool) -> Iterator[str]:
    from tests.store_support import PostgresServer

    server = PostgresServer(fsync=fsync).start()
    try:
        yield server.new_database()
    finally:
        server.stop()


def report(backend: str, figures: dict[str, Any]) -> list[str]:
    missed = []
    o100, o10k, r100, r10k = (figures[k][0] for k in ("orch100", "orch10000", "raw100", "raw10000"))
    print(f"\n1. {backend}: append + read the last {DEPTH} (p50 / p90 ms)")
    for k, label in (
        ("raw100", "raw driver, 100"),
        ("raw10000", "raw driver, 10,000"),
        ("orch100", "orchlab Store, 100"),
        ("orch10000", "orchlab Store, 10,000"),
    ):
        print(f"   {label:<24} {figures[k][0]:7.3f} / {figures[k][1]:7.3f}")
    growth = o10k / o100
    print(f"   orchlab / raw: {o100 / r100:.2f}x (100), {o10k / r10k:.2f}x (10,000)")
    print(f"   10,000 / 100 messages: {growth:.2f}x (raw {r10k / r100:.2f}x); target <= {GROWTH_MAX}x")
    verdict = "met" if o10k <= TARGET_MS[backend] else "MISSED"
    print(f"   target p50 <= {TARGET_MS[backend]} ms at 10,000: {verdict}")
    if o10k > TARGET_MS[backend]:
        missed.append(f"{backend} p50 {o10k:.2f} ms")
    if growth > GROWTH_MAX:
        missed.append(f"{backend} grows {growth:.2f}x")
    return missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["sqlite", "postgresql", "writers"])
    ap.add_argument("--n", type=int, default=400, help="rounds of append + read per thread length")
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--writes", type=int, default=300, help="messages per writer process")
    ap.add_argument("--pg-no-fsync", action="store_true")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args()
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="orchlab-bench-store-") as tmp:
        folder = Path(tmp)
        if args.only in (None, "sqlite"):
            store = Store.open(StoreSettings(f"sqlite:///{folder / 'hot.db'}"))
            missed += report("sqlite", hot_path(store, args.n))
            store.close()
        if args.only in (None, "postgresql"):
            with postgres(fsync=not args.pg_no_fsync) as url:
                store = Store.open(StoreSettings(url))
                missed += report("postgresql", hot_path(store, args.n))
                store.close()
        if args.only in (None, "writers"):
            w = writers(folder, args.writers, args.writes)
            print(f"\n2. {args.writers} SQLite writer processes x {args.writes} messages, one thread")
            print(
                f"   stored {w['stored']}/{w['expected']}, lost {w['lost']}, writers failed {w['failed']}, "
                f"'database is locked' seen by {w['locked']}; {w['writes_per_s']:.0f} messages/s"
            )
            if w["lost"] or w["failed"] or w["locked"]:
                missed.append("concurrent writers lost or failed")
    if missed:
        print("\nmissed: " + "; ".join(missed))
    return 1 if (missed and args.strict) else 0


if __name__ == "__main__":
    raise SystemExit(main())

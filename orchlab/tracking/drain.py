"""The drain: a process of its own that writes one store's journals into MLflow.

A tracked call starts it on demand (``python -m orchlab.tracking.drain <store folder>``, see
`launch`) when no drain holds the store's lock (``drain.lock``, an ``flock``). It runs in its own
session (Ctrl-C in the calling script does not reach it), its stderr goes to ``drain.log`` in the
store's spool folder, and the calling process never imports mlflow to write a trace.

It reads every journal of the store (those of running processes and those left by processes that
ended, ``kill -9`` included), oldest first, and writes their records in order: up to `MAX_BATCH`
traces per batch (one store call each, see `mlflow_writes`), ratings and run records one by one.
Before a batch it marks the batch pending in the journal's progress file (`journal.Progress`),
after it moves ``done`` past it: a drain killed
mid-batch leaves that batch pending, and the next drain looks those records up in the store
before writing them again. Fully written journals of ended processes are deleted.

It exits after ``ORCH_TRACKING_DRAIN_IDLE`` seconds (15 by default) with nothing to write, or after
`MAX_DOWN_S` of a store it cannot write to (the next tracked call or ``orchlab.flush()`` starts
another). Problems are logged and put in ``status.json``, which callers turn into one
`OrchlabWarning` each: a store MLflow cannot open (with how to repair it), a record MLflow refused
`MAX_FAILURES` times (kept in ``rejected.jsonl``), records dropped by the cap.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchlab.tracking.journal import (
    Progress,
    closed_journal,
    journals,
    read_store_file,
    remove,
    trim,
)
from orchlab.tracking.settings import DEFAULT_DRAIN_IDLE_S, MIB, TrackingSettings

log = logging.getLogger("orchlab.tracking.drain")

LOCK_FILE = "drain.lock"
LOG_FILE = "drain.log"
STATUS_FILE = "status.json"
REJECTED_FILE = "rejected.jsonl"
MAX_BATCH = 100
READ_CHUNK = 4 * MIB
POLL_S = 0.05
TRIM_EVERY_S = 2.0
MAX_FAILURES = 5
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
MAX_DOWN_S = 600.0
MAX_PROBLEMS = 50
QUIET_S = 0.25
MAX_DEFER_S = 5.0
"""A burst of calls gets the machine: while the journals grew within the last ``QUIET_S``, the drain
waits, for at most ``MAX_DEFER_S`` of a burst (a sustained load is drained as it comes). On two
shared cores a drain importing MLflow and writing beside a burst of 1,000 concurrent calls slowed
them 1.23x whatever its niceness (the cores share caches); after the burst it catches up."""
NICE = 10
"""The drain's CPU priority below the callers' (a background writer: the journal keeps the calls)."""


@dataclass
class Entry:
    """One journal line: its byte range and its record (None: not valid JSON)."""

    start: int
    end: int
    record: dict[str, Any] | None
    raw: bytes = b""

    @property
    def kind(self) -> str:
        return str(self.record.get("kind")) if self.record is not None else "invalid"


@dataclass
class Status:
    """What the drain reports in ``status.json`` (read by callers, see `launch.report_problems`)."""

    path: Path
    state: str = "starting"
    error: str | None = None
    written: int = 0
    rejected: int = 0
    dropped: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def keep_earlier_problems(self) -> None:
        """A drain's problems outlive it: callers that have not read them yet still will."""
        with contextlib.suppress(OSError, ValueError, TypeError):
            earlier = json.loads(self.path.read_text(encoding="utf-8"))
            self.problems = list(earlier.get("problems", []))[-MAX_PROBLEMS:]

    def problem(self, text: str) -> None:
        log.warning("%s", text)
        self.problems = [*self.problems, {"time": time.time(), "text": text}][-MAX_PROBLEMS:]
        self.save()

    def save(self) -> None:
        body = {
            "pid": os.getpid(),
            "started": self.started,
            "updated": time.time(),
            "state": self.state,
            "error": self.error,
            "written": self.written,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "problems": self.problems,
        }
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(body))
            os.replace(tmp, self.path)


class StoreDown(Exception):
    """The store cannot be written to now; retry later."""


class Drain:
    def __init__(self, store_dir: Path, *, idle_s: float, max_bytes: int) -> None:
        self.dir = store_dir
        self.idle_s = idle_s
        self.max_bytes = max_bytes
        self.uri = read_store_file(store_dir)
        self.settings = TrackingSettings(
            enabled=True,
            tracking_uri=self.uri,
            experiment="",
            spool_dir=store_dir.parent,
            max_spool_bytes=max_bytes,
        )
        self.status = Status(store_dir / STATUS_FILE)
        self.writer: Any = None
        self.stopping = False
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.backoff = BACKOFF_MIN_S
        self.failures: dict[tuple[str, int], int] = {}
        self.headers: dict[Path, dict[str, Any]] = {}
        self.suspect: dict[Path, int] = {}
        """Per journal, the end of the batch a previous drain left pending (look before writing)."""
        self.last_trim = 0.0

    # --- the loop ---------------------------------------------------------------------------

    def serve(self, lock_fd: int) -> int:
        self.status.keep_earlier_problems()
        self.status.save()
        last_work = time.monotonic()
        appended, grew_at, burst_since = -1, 0.0, None
        while not self.stopping:
            now = time.monotonic()
            if now - self.last_trim >= TRIM_EVERY_S:
                self.last_trim = now
                self._trim()
                self._cleanup()
            work = self._pending()
            if work:
                total = sum(size for _, _, size in work)
                if total != appended:
                    appended, grew_at = total, now
                if now - grew_at >= QUIET_S:
                    burst_since = None
                elif burst_since is None:
                    burst_since = now
                if burst_since is not None and now - burst_since < MAX_DEFER_S:
                    time.sleep(POLL_S)  # callers are still appending: write after their burst
                    continue
                if self.down_since is not None and now - self.down_since > MAX_DOWN_S:
                    failing = now - self.down_since
                    log.warning(
                        "the store has failed for %.0f s; exiting (records stay in the journal)", failing
                    )
                    break
                if now < self.retry_at:
                    time.sleep(min(POLL_S * 4, self.retry_at - now))
                    continue
                try:
                    moved = self._round(work)
                except Exception as exc:  # a bug here must not end the drain (callers would restart it)
                    log.exception("the drain failed; it goes on")
                    self._went_down(exc)
                    moved = False
                if moved:
                    last_work = time.monotonic()
                else:
                    time.sleep(POLL_S)
                continue
            self._set_state("idle")
            self._cleanup()
            if now - last_work >= self.idle_s:
                if self._leave(lock_fd):
                    break
                last_work = time.monotonic()
            time.sleep(POLL_S)
        self._set_state("stopped")
        return 0

    def _leave(self, lock_fd: int) -> bool:
        """Release the lock; stay when records arrived meanwhile and no other drain took over."""
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        if not self._pending():
            return True
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True  # another drain has it
        return False

    def _set_state(self, state: str) -> None:
        if self.status.state != state:
            self.status.state = state
            self.status.save()

    # --- what there is to do ----------------------------------------------------------------

    def _pending(self) -> list[tuple[Path, Progress, int]]:
        out = []
        for path in journals(self.dir):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            progress = Progress.read(path)
            if path not in self.suspect:
                self.suspect[path] = progress.pending
            if progress.done < size:
                out.append((path, progress, size))
        return out

    def _trim(self) -> None:
        dropped = trim(self.dir, self.max_bytes)
        if dropped:
            self.status.dropped += dropped
            self.status.problem(
                f"the journal of {self.uri} passed its cap ({self.max_bytes / MIB:g} MiB, "
                f"tracking.spool_max_mb): the {dropped} oldest record(s) not yet in the store were dropped"
            )

    def _cleanup(self) -> None:
        """Delete fully written journals that no process appends to any more."""
        for path in journals(self.dir):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            if Progress.read(path).done < size:
                continue
            with closed_journal(path) as closed:
                if closed:
                    remove(path)
                    self.headers.pop(path, None)
                    self.suspect.pop(path, None)
        names = {p.name for p in journals(self.dir)}
        for done in self.dir.glob("*.journal.done"):
            if done.name.removesuffix(".done") not in names:
                with contextlib.suppress(FileNotFoundError):
                    done.unlink()

    # --- writing ----------------------------------------------------------------------------

    def _connect(self) -> bool:
        if self.writer is not None:
            return True
        from orchlab.errors import TrackingError
        from orchlab.tracking.mlflow_writes import MlflowWriter

        try:
            self.writer = MlflowWriter(self.settings)
        except TrackingError as exc:  # the store answers but cannot be used as it is, or no mlflow
            self._went_down(exc, broken=self._reachable())
            return False
        except Exception as exc:
            self._went_down(exc)
            return False
        return True

    def _round(self, work: list[tuple[Path, Progress, int]]) -> bool:
        """Write what the journals hold (oldest first); True when something moved."""
        if not self._connect():
            return False
        moved = False
        try:
            for path, progress, size in work:
                moved |= self._drain_journal(path, progress, size)
                if self.stopping:
                    break
        except StoreDown as exc:
            from orchlab.tracking.mlflow_writes import TraceIdMismatch

            cause = exc.__cause__ or exc
            self._went_down(cause, broken=isinstance(cause, TraceIdMismatch))
            return moved
        if moved:
            self._came_back()
            self.status.save()
        return moved

    def _drain_journal(self, path: Path, progress: Progress, size: int) -> bool:
        header = self._header(path)
        if header is None:
            return self._skip_invalid_journal(path, size)
        entries, torn = self._read(path, progress.done, size)
        if not entries:
            if torn:  # a record cut short when its process died: nothing to write
                with closed_journal(path) as closed:
                    if closed:
                        cut = size - progress.done
                        self.status.problem(
                            f"{path.name}: an incomplete last record ({cut} bytes) was skipped"
                        )
                        Progress(size, size).write(path)
                        return True
            return False
        moved = False
        for group in _groups(entries):
            start, end = group[0].start, group[-1].end
            suspect = start < self.suspect.get(path, 0)
            Progress(start, end).write(path)
            try:
                done_to = self._write_group(path, group, header, suspect)
            except StoreDown:
                self.suspect[path] = max(self.suspect.get(path, 0), end)  # may be half written
                raise
            if done_to > start:
                moved = True
            Progress(done_to, done_to).write(path)
            if done_to < end or self.stopping:
                break
        return moved

    def _write_group(self, path: Path, group: list[Entry], header: dict[str, Any], suspect: bool) -> int:
        """Write one group; the offset up to which everything is stored (or given up on)."""
        kind = group[0].kind
        if kind == "journal":
            return group[-1].end
        if kind == "trace":
            from orchlab.tracking.mlflow_writes import NotStored

            records = [e.record for e in group if e.record is not None]
            try:
                failed = self.writer.write_traces(records, header["experiment"])
            except Exception as exc:
                if isinstance(exc, KeyError | TypeError | ValueError) and len(group) > 1:
                    failed = self._one_by_one(group, header)
                else:
                    raise StoreDown(str(exc)) from exc
            if len(failed) == len(group) and all(isinstance(e, NotStored) for e in failed.values()):
                raise StoreDown("MLflow stored none of the batch (see the log above)")
            stored = 0  # counted once: a trace stored ahead of a failing one is skipped (and counted) later
            for entry in group:
                assert entry.record is not None
                error = failed.get(entry.record["trace_id"])
                if error is None:
                    stored += 1
                elif not self._given_up(path, entry, error):
                    self.status.written += stored
                    return entry.start
            self.status.written += stored
            return group[-1].end
        entry = group[0]
        try:
            if kind == "feedback":
                assert entry.record is not None
                self.writer.write_feedback(entry.record, maybe_stored=suspect)
            elif kind == "run":
                assert entry.record is not None
                self.writer.write_run(entry.record)
            else:
                raise ValueError(f"not a tracking record ({kind}): {entry.raw[:200]!r}")
        except StoreDown:
            raise
        except Exception as exc:
            return entry.end if self._given_up(path, entry, exc) else entry.start
        self.status.written += 1
        return entry.end

    def _one_by_one(self, group: list[Entry], header: dict[str, Any]) -> dict[str, BaseException]:
        failed: dict[str, BaseException] = {}
        for entry in group:
            assert entry.record is not None
            try:
                failed.update(self.writer.write_traces([entry.record], header["experiment"]))
            except Exception as exc:
                failed[str(entry.record.get("trace_id"))] = exc
        return failed

    def _given_up(self, path: Path, entry: Entry, exc: BaseException) -> bool:
        """Count a failure of this record; True when it was put aside in ``rejected.jsonl``."""
        from orchlab.tracking.mlflow_writes import TraceIdMismatch

        if isinstance(exc, TraceIdMismatch) or not self.writer.record_problem(exc):
            raise StoreDown(str(exc)) from exc
        key = (path.name, entry.start)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] < MAX_FAILURES and entry.record is not None:
            self.retry_at = time.monotonic() + BACKOFF_MIN_S * self.failures[key]
            return False
        self.failures.pop(key, None)
        self._reject(entry, exc)
        return True

    def _reject(self, entry: Entry, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        record: Any = entry.record if entry.record is not None else entry.raw.decode("ascii", "replace")
        kept = self.dir / REJECTED_FILE
        try:
            with open(kept, "a", encoding="utf-8") as f:
                kept_line = {"store": self.uri, "error": message, "record": record}
                f.write(json.dumps(kept_line, default=str) + "\n")
            where = f"kept in {kept}"
        except OSError as write_exc:
            where = f"and could not be kept ({write_exc})"
        self.status.rejected += 1
        what = entry.record.get("trace_id", "?") if entry.record is not None else "?"
        self.status.problem(
            f"MLflow rejected a {entry.kind} record for {what} {MAX_FAILURES} times ({message[:300]}); "
            f"it is {where}"
        )

    def _skip_invalid_journal(self, path: Path, size: int) -> bool:
        with closed_journal(path) as closed:
            if not closed:
                return False  # its process is still writing the header
            self.status.problem(f"{path.name} has no valid header; its {size} bytes were skipped")
            Progress(size, size).write(path)
        return True

    def _header(self, path: Path) -> dict[str, Any] | None:
        """The journal's first line (None: not there yet, or not a header)."""
        if path not in self.headers:
            try:
                with open(path, "rb") as f:
                    first = f.readline()
                header = json.loads(first) if first.endswith(b"\n") else None
            except (OSError, ValueError):
                return None
            if (
                not isinstance(header, dict)
                or header.get("kind") != "journal"
                or not header.get("experiment")
            ):
                return None
            self.headers[path] = header
        return self.headers[path]

    def _read(self, path: Path, start: int, size: int) -> tuple[list[Entry], bool]:
        """Complete lines from ``start``; and whether bytes without a final newline follow them."""
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(min(READ_CHUNK, size - start))
            if b"\n" not in data and len(data) < size - start:
                data += f.read(size - start - len(data))  # one record longer than a chunk
        cut = data.rfind(b"\n") + 1
        entries = []
        pos = start
        for raw in data[:cut].splitlines(keepends=True):
            end = pos + len(raw)
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            entries.append(Entry(pos, end, record if isinstance(record, dict) else None, raw))
            pos = end
        return entries, cut < len(data) or (start + len(data) < size and not entries)

    # --- store state ------------------------------------------------------------------------

    def _went_down(self, exc: BaseException, *, broken: bool = False) -> None:
        now = time.monotonic()
        text = str(exc) if broken else f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            self.down_since = now
            self.backoff = BACKOFF_MIN_S
        else:
            self.backoff = min(self.backoff * 2, BACKOFF_MAX_S)
        self.retry_at = now + self.backoff
        if text != self.status.error:
            self.status.error = text
            self.status.state = "broken" if broken else "down"
            if broken:
                self.status.problem(text)
            else:
                log.warning("the store %s is unreachable (%s); retrying", self.uri, text[:300])
                self.status.save()
        if not broken:
            self.writer = None if self.writer is not None and not self._reachable() else self.writer

    def _reachable(self) -> bool:
        from orchlab.tracking.store import store_reachable

        return store_reachable(self.settings)

    def _came_back(self) -> None:
        if self.down_since is not None:
            log.warning("the store %s is back", self.uri)
        self.down_since = None
        self.backoff = BACKOFF_MIN_S
        self.retry_at = 0.0
        self.status.error = None
        self._set_state("writing")
        self.status.save()


def _groups(entries: list[Entry]) -> list[list[Entry]]:
    """Consecutive valid trace records in batches of up to `MAX_BATCH`; anything else alone."""
    groups: list[list[Entry]] = []
    for entry in entries:
        last = groups[-1] if groups else None
        if (
            entry.kind == "trace"
            and last is not None
            and last[0].kind == "trace"
            and len(last) < MAX_BATCH
            and _valid_trace(entry)
            and _valid_trace(last[0])
        ):
            last.append(entry)
        else:
            groups.append([entry])
    return groups


def _valid_trace(entry: Entry) -> bool:
    r = entry.record
    return r is not None and isinstance(r.get("trace_id"), str) and isinstance(r.get("spans"), list)


def main(argv: list[str] | None = None) -> int:
    with contextlib.suppress(OSError):
        os.nice(NICE)  # first thing: under load the calls get the CPU; the drain catches up after them
    parser = argparse.ArgumentParser(prog="python -m orchlab.tracking.drain", description=__doc__)
    parser.add_argument("store_dir", type=Path, help="the store's folder in the spool")
    parser.add_argument("--idle", type=float, default=DEFAULT_DRAIN_IDLE_S, help="idle seconds before exit")
    parser.add_argument("--max-bytes", type=int, default=256 * MIB, help="the journal's cap")
    args = parser.parse_args(argv)
    store_dir = args.store_dir.resolve()
    lock_fd = os.open(store_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another drain serves this store
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s orchlab-drain[%(process)d] %(levelname)s %(name)s: %(message)s",
    )
    drain = Drain(store_dir, idle_s=args.idle, max_bytes=args.max_bytes)

    def stop(signum: int, frame: object) -> None:
        drain.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the script that started us
    log.info("draining %s for %s", store_dir, drain.uri)
    try:
        return drain.serve(lock_fd)
    finally:
        log.info("exiting; %d record(s) written", drain.status.written)


if __name__ == "__main__":
    raise SystemExit(main())

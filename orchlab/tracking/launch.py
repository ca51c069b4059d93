"""The calling process's side of the drain: start one when none runs, wait for it, hear from it.

After every journal write the caller checks the store's drain lock (one non-blocking ``flock``,
a few microseconds); when no drain holds it, it starts one: ``python -m orchlab.tracking.drain``
in a new session (``posix_spawn`` with ``setsid``), stdin and stdout to /dev/null, stderr
appended to ``drain.log``. A drain that
goes idle releases the lock, then looks once more for records before it exits, so a record is
never left without a drain: either the drain sees it, or the writer sees the lock free.

`wait_written` is what ``orchlab.flush()`` and the reading functions use: it polls the drain's
progress until this process's journals are written. `report_problems` turns what the drain put in
``status.json`` into one `OrchlabWarning` per problem (on the next call or flush).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import orchlab
from orchlab.errors import OrchlabWarning
from orchlab.tracking.drain import LOCK_FILE, LOG_FILE, STATUS_FILE
from orchlab.tracking.journal import Journal, all_journals, fcntl
from orchlab.tracking.settings import TrackingSettings

STARTUP_S = 10.0
"""A drain we started takes a moment to take the lock; we do not start a second meanwhile."""
STATUS_EVERY_S = 1.0
MAX_LOG_BYTES = 1024 * 1024
POLL_S = 0.02

_started_at = time.time()
_lock = threading.Lock()
_controls: dict[Path, DrainControl] = {}
_warned: set[str] = set()


class DrainControl:
    """One store's drain, as this process sees it."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self.dir = settings.store_dir
        self._lock_fd: int | None = None
        self._pids: list[int] = []
        self._starting: tuple[int, float] | None = None
        """The drain we started last, and when: until it has taken the lock, it counts as running."""
        self._status_mtime = 0.0
        self._status_checked = 0.0
        self.status: dict[str, Any] = {}

    def running(self) -> bool:
        """Whether a drain holds the store's lock."""
        if self._lock_fd is None:
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        return False

    def ensure_running(self) -> None:
        """Start a drain unless one runs (or the one we just started has not taken the lock yet)."""
        if self.running():
            return
        with _lock:
            if not self._still_starting() and not self.running():
                self._spawn()

    def _still_starting(self) -> bool:
        if self._starting is None:
            return False
        pid, at = self._starting
        self._reap()
        if pid not in self._pids or time.monotonic() - at > STARTUP_S:
            return False  # it ended (another drain had the lock), or it is stuck: start another
        # Once it has written its status it has had the lock: if the lock is free now, it is leaving.
        return self.read_status(force=True).get("pid") != pid

    def _spawn(self) -> None:
        self._reap()
        log_path = self.dir / LOG_FILE
        with contextlib.suppress(OSError):
            if log_path.stat().st_size > MAX_LOG_BYTES:
                os.replace(log_path, log_path.with_name(LOG_FILE + ".1"))
        env = dict(os.environ)
        root = str(Path(orchlab.__file__).resolve().parents[1])  # the drain imports this orchlab
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        env.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
        s = self.settings
        argv = [sys.executable, "-m", "orchlab.tracking.drain", str(self.dir)]
        argv += ["--idle", repr(s.drain_idle_s), "--max-bytes", str(s.max_spool_bytes)]
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            # posix_spawn rather than Popen: the drain outlives us by design, and a Popen object
            # of a running child warns when it is collected. A new session: Ctrl-C in our
            # terminal does not reach it.
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ]
            try:
                pid = os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
            except NotImplementedError:  # no POSIX_SPAWN_SETSID here
                with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
                    pid = subprocess.Popen(
                        argv, stdin=null_in, stdout=null_out, stderr=log_fd, env=env, start_new_session=True
                    ).pid
            self._pids.append(pid)
            self._starting = (pid, time.monotonic())
        finally:
            os.close(log_fd)

    def _reap(self) -> None:
        """Collect the exit status of drains we started that have ended (no zombies)."""
        for pid in list(self._pids):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self._pids.remove(pid)

    def read_status(self, *, force: bool = False) -> dict[str, Any]:
        now = time.monotonic()
        if not force and now - self._status_checked < STATUS_EVERY_S:
            return self.status
        self._status_checked = now
        path = self.dir / STATUS_FILE
        try:
            mtime = path.stat().st_mtime
            if mtime != self._status_mtime:
                self.status = json.loads(path.read_text(encoding="utf-8"))
                self._status_mtime = mtime
        except (OSError, ValueError):
            pass
        return self.status


def control_for(settings: TrackingSettings) -> DrainControl:
    control = _controls.get(settings.store_dir)
    if control is None:
        with _lock:
            control = _controls.setdefault(settings.store_dir, DrainControl(settings))
    return control


def after_write(journal: Journal) -> None:
    """Called after each journal write: a drain must run; report what it had to say."""
    control = control_for(journal.settings)
    control.ensure_running()
    report_problems(control)


def start_if_waiting(settings: TrackingSettings) -> None:
    """Start a drain when earlier processes left journals for this store (and none runs)."""
    from orchlab.tracking.journal import journals

    if journals(settings.store_dir):
        control_for(settings).ensure_running()


def report_problems(control: DrainControl, *, force: bool = False) -> None:
    """One `OrchlabWarning` per problem: the store's current trouble (unusable, unreachable), and
    each problem the drain reported since this process started tracking."""
    status = control.read_status(force=force)
    texts = []
    if status.get("state") == "broken" and status.get("error"):
        texts.append(str(status["error"]))
    elif status.get("state") == "down" and status.get("error"):
        texts.append(
            f"the tracking store {control.settings.tracking_uri} is unreachable ({status['error']}); "
            f"the calls wait in {control.dir} and are written when it is back"
        )
    texts += [str(p.get("text", "")) for p in status.get("problems", ()) if p.get("time", 0) >= _started_at]
    for text in texts:
        if text and text not in _warned:
            _warned.add(text)
            warnings.warn(f"orchlab tracking: {text}", OrchlabWarning, stacklevel=4)


def wait_written(journals: list[Journal] | None = None, timeout: float | None = None) -> bool:
    """Wait until the drain has written everything ``journals`` (default: all of this process's)
    hold; True if so, False when ``timeout`` ran out or the drain reports the store unusable."""
    journals = all_journals() if journals is None else journals
    deadline = None if timeout is None else time.monotonic() + timeout
    pause = POLL_S
    while True:
        waiting = [j for j in journals if j.waiting()]
        for j in journals:
            report_problems(control_for(j.settings), force=True)
        if not waiting:
            return True
        broken = False
        for j in waiting:
            control = control_for(j.settings)
            control.ensure_running()
            broken |= control.status.get("state") == "broken" and control.running()
        if broken or (deadline is not None and time.monotonic() >= deadline):
            return False
        time.sleep(pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic())))
        pause = min(pause * 1.5, 0.2)


def status() -> dict[str, Any]:
    """Per store this process wrote to: its drain's state and what of ours still waits."""
    out: dict[str, Any] = {}
    for j in all_journals():
        control = control_for(j.settings)
        st = control.read_status(force=True)
        waiting = j.waiting()
        entry = out.setdefault(
            j.settings.tracking_uri,
            {
                "spool": str(j.settings.store_dir),
                "drain_running": control.running(),
                "drain_pid": st.get("pid"),
                "state": st.get("state"),
                "last_error": st.get("error"),
                "written": st.get("written", 0),
                "rejected": st.get("rejected", 0),
                "dropped": st.get("dropped", 0),
                "waiting_bytes": 0,
            },
        )
        entry["waiting_bytes"] += sum(waiting.values())
    return out

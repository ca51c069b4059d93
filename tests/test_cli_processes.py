"""The ``orchlab`` console script as a real process: ``chat`` in a pseudo-terminal (Ctrl-C cancels
the pending answer, not the session), ``serve`` and ``ui`` started and stopped by a signal.

Every wait is bounded: a process that hangs fails the test instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.serve_support import free_port, gateway_yaml
from tests.servers.openai_wire import OpenAIWireServer, Reply

KEY = "sk-upstream-key-0123456789"


class Terminal:
    """A child process on a pseudo-terminal: what it writes is read from the master side, what is
    written there is typed at it (``\\x03`` is the terminal's Ctrl-C: SIGINT to its process group)."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: a session leader whose controlling terminal is the pty
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd, self.seen = pid, fd, ""

    def expect(self, text: str, timeout: float = 30) -> str:
        """Read until ``text`` appears after what was already consumed; return what came before it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {text!r} within {timeout} s; the terminal shows {self.seen!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data:
                    raise AssertionError(f"the process ended before {text!r}; it showed {self.seen!r}")
                self.seen += data.decode("utf-8", "replace").replace("\r\n", "\n")
        before, _, self.seen = self.seen.partition(text)
        return before

    def type(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:  # drain, so the child never blocks writing to a full terminal
                if select.select([self.fd], [], [], 0.05)[0]:
                    self.seen += os.read(self.fd, 4096).decode("utf-8", "replace")
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
        raise AssertionError(f"the process did not end within {timeout} s; it showed {self.seen!r}")

    def close(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


@pytest.fixture
def upstream_config(write_config, openai_server: OpenAIWireServer, tmp_path: Path) -> Path:
    return write_config(
        gateway_yaml(openai_server, extra=f'store: {{url: "sqlite:///{tmp_path / "store.db"}"}}\n')
    )


def cli_env() -> dict[str, str]:
    return {**os.environ, "ORCH_AUTH_UP_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}


def test_chat_in_a_terminal_ctrl_c_cancels_the_pending_answer_and_the_session_goes_on(
    upstream_config: Path, openai_server: OpenAIWireServer
) -> None:
    argv = [sys.executable, "-m", "orchlab", "chat", "llm.inference", "--config", str(upstream_config)]
    term = Terminal(argv, cli_env())
    try:
        term.expect("/exit to leave")
        term.expect("> ")
        term.type("hello\n")
        assert "echo: hello" in term.expect("> ")

        openai_server.push(Reply(delay_s=20))  # the next answer is slow: it is pending when ^C comes
        term.type("slow one\n")
        deadline = time.monotonic() + 30
        while len(openai_server.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(openai_server.requests) == 2, "the second message never reached the upstream"
        asked = time.monotonic()
        term.type("\x03")  # Ctrl-C, as typed: the terminal sends SIGINT to the foreground group
        assert "(cancelled)" in term.expect("> ", timeout=10)
        assert time.monotonic() - asked < 10  # not after the 20 s the answer would have taken

        term.type("again\n")
        assert "echo: again" in term.expect("> ")
        sent = [m["content"] for m in openai_server.requests[-1].body["messages"]]
        assert sent == ["hello", "echo: hello ", "again"]  # the cancelled turn is not in the history

        term.type("/exit\n")
        assert term.wait() == 0
    finally:
        term.close()


def group_members(pgid: int) -> list[str]:
    """The live (not zombie) processes of process group ``pgid``: ``"pid command"`` each."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{entry.name} {stat[stat.index('(') : stat.rindex(')') + 1]}")
    return members


def wait_group_gone(pgid: int, timeout: float = 15) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} never answered (exit code {proc.poll()})") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen, sig: int, timeout: float = 30) -> int:
    """Send ``sig`` and return the exit code (a hang is killed, with its group, and fails)."""
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        name = signal.Signals(sig).name
        raise AssertionError(f"the process did not stop within {timeout} s of {name}") from None


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"]
)
@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_readyz_and_stops_cleanly_on_a_signal(
    upstream_config: Path, tmp_path: Path, sig: int, code: int, workers: int
) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    argv = ["serve", "--config", str(upstream_config), "--port", str(port), "--workers", str(workers)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchlab", *argv],
        env=cli_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: what is left of it after the stop is seen
    )
    try:
        ready = wait_http(f"http://127.0.0.1:{port}/readyz", proc, timeout=60)
        assert ready.status_code == 200 and ready.json() == {"status": "ready", "providers": {"up": True}}
        assert stop(proc, sig) == code, Path(log.name).read_text()
        assert wait_group_gone(proc.pid) == []
        text = Path(log.name).read_text()
        assert f"orchlab serve: http://127.0.0.1:{port}" in text
        assert "Traceback" not in text, text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if fields[0] != "Z":
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pids: list[int]) -> list[str]:
    left = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            left.append(f"{pid} {stat[stat.index('(') : stat.rindex(')') + 1]}")
    return left


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)], ids=["SIGINT", "SIGTERM"]
)
def test_ui_starts_mlflow_on_the_store_prints_its_url_and_a_signal_stops_it_and_its_workers(
    write_config, tmp_path: Path, sig: int, code: int
) -> None:
    db = tmp_path / "mlflow.db"
    config = write_config(f'project: t\ntracking: {{enabled: true, tracking_uri: "sqlite:///{db}"}}\n')
    port = free_port()
    log = tmp_path / "ui.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchlab", "ui", "--config", str(config), "--port", str(port)],
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    spawned: list[int] = []
    try:
        url = f"http://127.0.0.1:{port}"
        home = wait_http(url, proc, timeout=120)
        assert home.status_code == 200 and "<html" in home.text.lower()  # MLflow's UI page
        assert f"MLflow UI on sqlite:///{db}: {url}" in log.read_text()
        spawned = descendants(proc.pid)
        assert any("mlflow" in Path(f"/proc/{p}/cmdline").read_text() for p in spawned if alive([p]))
        assert stop(proc, sig) == code, log.read_text()
        deadline = time.monotonic() + 15
        while alive(spawned) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert alive(spawned) == [], log.read_text()
        assert wait_group_gone(proc.pid) == []
        with pytest.raises(httpx.HTTPError):
            httpx.get(url, timeout=2)
    finally:
        for pid in [proc.pid, *spawned]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)

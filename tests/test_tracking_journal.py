"""The journal on its own (no MLflow, no drain): one line per record on disk, files rotated, the cap,
forks; and the configured keys that every record is scrubbed of."""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import OrchlabWarning
from orchlab.tracking.journal import Journal, Progress, closed_journal, journals
from orchlab.tracking.settings import TrackingSettings

RECORD = {"kind": "trace", "trace_id": "tr-" + "1" * 32, "spans": [], "text": "x" * 1000}


def settings(tmp_path: Path, *, max_bytes: int = 256 * 1024 * 1024, fsync: bool = False) -> TrackingSettings:
    return TrackingSettings(
        True, f"sqlite:///{tmp_path}/mlflow.db", "exp", tmp_path / "spool", fsync, max_bytes, 15.0
    )


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


@pytest.mark.parametrize("fsync", [False, True])
def test_each_record_is_one_line_on_disk_when_append_returns(tmp_path: Path, fsync: bool) -> None:
    s = settings(tmp_path, fsync=fsync)
    journal = Journal(s)
    journal.append(RECORD)
    journal.append({**RECORD, "text": "lone \ud800 surrogate"})
    (path,) = journals(s.store_dir)
    header, first, second = lines(path)
    assert header == {
        "kind": "journal", "tracking_uri": s.tracking_uri, "experiment": "exp", "pid": os.getpid()
    }  # fmt: skip
    assert first == RECORD and second["text"] == "lone \ud800 surrogate"
    assert json.loads((s.store_dir / "store.json").read_text()) == {"tracking_uri": s.tracking_uri}
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # prompts and answers: the owner only

    assert journal.waiting() == {path: path.stat().st_size}  # nothing written to the store yet
    Progress(path.stat().st_size - 10, path.stat().st_size).write(path)
    assert journal.waiting() == {path: 10}
    Progress(path.stat().st_size).write(path)
    assert journal.waiting() == {}
    with closed_journal(path) as closed:
        assert not closed  # this process still appends to it
    journal.close()
    with closed_journal(path) as closed:
        assert closed


def test_a_full_journal_file_is_closed_and_the_next_one_started(tmp_path: Path) -> None:
    s = settings(tmp_path, max_bytes=1024 * 1024)  # files of 128 KiB
    journal = Journal(s)
    for _ in range(200):  # about 200 KiB
        journal.append(RECORD)
    first, second = journals(s.store_dir)
    assert first.stat().st_size >= 128 * 1024 > second.stat().st_size
    assert len(lines(first)) + len(lines(second)) == 200 + 2  # each starts with its header
    with closed_journal(first) as closed:
        assert closed
    with closed_journal(second) as closed:
        assert not closed
    assert set(journal.waiting()) == {first, second}


def test_past_the_cap_the_oldest_records_are_dropped_with_a_warning(tmp_path: Path) -> None:
    s = settings(tmp_path, max_bytes=256 * 1024)  # files of 64 KiB
    journal = Journal(s)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(600):  # about 600 KiB, nothing drains
            journal.append({**RECORD, "n": i})
    dropped = [w for w in caught if issubclass(w.category, OrchlabWarning)]
    assert dropped
    assert all("passed its cap (0.25 MiB, tracking.spool_max_mb)" in str(w.message) for w in dropped)
    counts = [int(re.findall(r"the (\d+) oldest", str(w.message))[0]) for w in dropped]
    kept = [r for p in journals(s.store_dir) for r in lines(p) if r["kind"] == "trace"]
    assert sum(counts) + len(kept) == 600  # every record is either still there or counted as dropped
    assert [r["n"] for r in kept] == list(range(600 - len(kept), 600))  # the oldest went first
    total = sum(p.stat().st_size for p in journals(s.store_dir))
    assert total <= 256 * 1024 + 64 * 1024 + 2048


def test_a_forked_child_writes_a_journal_of_its_own(tmp_path: Path) -> None:
    s = settings(tmp_path)
    journal = Journal(s)
    journal.append({**RECORD, "who": "parent"})
    pid = os.fork()
    if pid == 0:  # the child
        try:
            journal.append({**RECORD, "who": "child"})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    journal.append({**RECORD, "who": "parent again"})
    by_pid = {lines(p)[0]["pid"]: [r.get("who") for r in lines(p)[1:]] for p in journals(s.store_dir)}
    assert by_pid == {os.getpid(): ["parent", "parent again"], pid: ["child"]}


def test_configured_keys_are_every_providers_key_found_now(
    write_config: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "b.key").write_text("sk-from-the-key-file-b\n", encoding="utf-8")
    (tmp_path / "unreadable.key").mkdir()  # reading it fails: skipped here, reported when used
    monkeypatch.setenv("ORCH_AUTH_A_API_KEY", "sk-from-the-env-a")
    client = orchlab.get_llm_client(
        write_config(
            """
            project: p
            providers:
              a: {type: openai, api_base: "http://127.0.0.1:9/v1"}
              b: {type: anthropic, key_file: b.key}
              c: {type: openai, api_base: "http://127.0.0.1:9/v1"}
              d: {type: gemini, key_file: unreadable.key}
              local: {type: test}
            """
        )
    )
    assert sorted(k.reveal() for k in client.resolver.configured_keys()) == [
        "sk-from-the-env-a",
        "sk-from-the-key-file-b",
    ]

"""The ``orchlab`` command line: exit codes, run (a real subprocess on a loopback OpenAI-wire
upstream), config check, roles, models, feedback, chat, and that ``import orchlab`` stays free of it."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchlab.cli import main
from orchlab.cli.feedback import parse_rating
from orchlab.cli.prompts import prompt_ref
from orchlab.cli.run import parse_params
from orchlab.errors import InvalidRequestError
from tests.serve_support import gateway_yaml
from tests.servers.openai_wire import OpenAIWireServer

KEY = "sk-upstream-key-0123456789"


def cli(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchlab", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORCH_AUTH_UP_API_KEY": KEY, **(env or {})},
    )


@pytest.fixture
def upstream_config(write_config, openai_server: OpenAIWireServer, tmp_path: Path) -> Path:
    return write_config(
        gateway_yaml(openai_server, extra=f'store: {{url: "sqlite:///{tmp_path / "store.db"}"}}\n')
    )


def test_run_prints_the_answer_of_the_upstream(upstream_config: Path, openai_server) -> None:
    out = cli("run", "llm.inference", "What is 2+2?", "--config", str(upstream_config), "-s", "Be brief")
    assert (out.returncode, out.stdout, out.stderr) == (0, "echo: What is 2+2?\n", "")
    sent = openai_server.requests[-1].body
    assert sent["model"] == "cheap"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "What is 2+2?"},
    ]


def test_run_reads_stdin_and_sends_params_and_prints_json(upstream_config: Path, openai_server) -> None:
    out = cli(
        "--config", str(upstream_config), "--json", "run", "llm.inference",
        "-p", "temperature=0.25", "-p", "max_tokens=7",
        stdin="from a pipe",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert answer["content"] == "echo: from a pipe"
    assert (answer["provider"], answer["model"], answer["role"]) == ("up", "cheap", "llm.inference")
    sent = openai_server.requests[-1].body
    assert sent["temperature"] == 0.25 and sent["max_completion_tokens"] == 7


def test_run_streams_when_asked(upstream_config: Path, openai_server) -> None:
    out = cli("run", "llm.inference", "streamed words", "--stream", "--config", str(upstream_config))
    # the loopback server streams word by word, each piece followed by a space
    assert (out.returncode, out.stdout) == (0, "echo: streamed words \n")
    assert openai_server.requests[-1].body["stream"] is True


def test_a_user_error_is_one_line_and_exit_1_and_debug_shows_the_traceback(upstream_config: Path) -> None:
    out = cli("run", "llm.nope", "hi", "--config", str(upstream_config))
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("orchlab: ") and "llm.nope" in out.stderr and "Traceback" not in out.stderr
    out = cli("--debug", "run", "llm.nope", "hi", "--config", str(upstream_config))
    assert out.returncode == 1 and "Traceback" in out.stderr


def test_usage_errors_exit_2(capsys) -> None:
    assert main(["nope"]) == 2
    assert "No such command 'nope'" in capsys.readouterr().err
    assert main(["run"]) == 2
    assert "Missing argument 'target'" in capsys.readouterr().err


def test_config_check_lists_every_problem_with_its_line(write_config, capsys) -> None:
    bad = write_config(
        """
        project: x
        providers:
          up: {type: openai, bogus: 1}
        roles:
          llm.a: {provider: up, model: m, temprature: 0.2}
        """
    )
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "2 problem(s)" in err
    assert "providers.up.bogus (line 4)" in err and "roles.llm.a.temprature (line 6)" in err
    assert main(["--json", "config", "check", str(bad)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [p[0] for p in report["problems"]] == [
        "providers.up.bogus",
        "roles.llm.a.temprature",
    ]


def test_config_check_of_a_good_config(upstream_config: Path, capsys) -> None:
    assert main(["config", "check", "--json", str(upstream_config)]) == 0
    assert json.loads(capsys.readouterr().out)["roles"] == ["llm.big", "llm.inference", "llm.tiny"]


def test_config_show_prints_the_embedded_default_as_written(capsys) -> None:
    from orchlab.config.loader import default_config_path

    assert main(["config", "show"]) == 0
    assert capsys.readouterr().out == default_config_path().read_text(encoding="utf-8")
    assert main(["--json", "config", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["file"] == str(default_config_path()) and shown["text"].startswith("# The embedded default")


def test_config_show_of_a_file_and_of_a_missing_one(upstream_config: Path, capsys) -> None:
    assert main(["config", "show", str(upstream_config)]) == 0
    assert capsys.readouterr().out == upstream_config.read_text(encoding="utf-8")
    assert main(["config", "show", str(upstream_config.parent / "nope.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_roles_and_models(upstream_config: Path, capsys) -> None:
    assert main(["roles", "--json", "--config", str(upstream_config)]) == 0
    rows = {r["role"]: r["target"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {"llm.big": "up:big", "llm.inference": "up:cheap", "llm.tiny": "up:tiny"}
    assert main(["models", "--json", "--config", str(upstream_config), "--max-cost", "0.002"]) == 0
    models = json.loads(capsys.readouterr().out)
    # 1000 tokens in + 500 out: cheap and tiny cost $0.002, big $0.02 (the catalog's own models too)
    mine = {
        m["target"]: m["input_per_mtok"] for m in models if m["target"] in ("up:cheap", "up:tiny", "up:big")
    }
    assert mine == {"up:cheap": 1.0, "up:tiny": 1.0}


def test_feedback_show_of_an_unknown_thread_is_a_user_error(upstream_config: Path, capsys) -> None:
    assert main(["feedback", "show", "no-such-thread", "--config", str(upstream_config)]) == 1
    assert "no thread 'no-such-thread'" in capsys.readouterr().err


def test_argument_parsers() -> None:
    assert parse_params(["temperature=0.2", "stop=[a, b]", "name=x=y", "flag=true"]) == {
        "temperature": 0.2,
        "stop": ["a", "b"],
        "name": "x=y",
        "flag": True,
    }
    with pytest.raises(InvalidRequestError, match="key=value"):
        parse_params(["temperature"])
    assert [parse_rating(v) for v in ("up", "DOWN", "1", "5")] == ["up", "down", 1, 5]
    with pytest.raises(InvalidRequestError, match="up, down or 1-5"):
        parse_rating("6")
    assert [prompt_ref(r) for r in ("summ:v1", "summ:3", "summ@2", "summ")] == [
        "summ@1",
        "summ@3",
        "summ@2",
        "summ",
    ]


def test_import_orchlab_loads_neither_typer_nor_rich() -> None:
    code = (
        "import sys, orchlab; print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_chat_stores_the_thread_and_continue_sends_its_history(upstream_config: Path, openai_server) -> None:
    out = cli("chat", "llm.inference", "--config", str(upstream_config), stdin="first\n/exit\n")
    assert out.returncode == 0 and out.stdout == "> echo: first \n> ", out.stderr  # "> ": the prompt
    out = cli("chat", "llm.inference", "-c", "--config", str(upstream_config), stdin="second\n")
    assert out.returncode == 0, out.stderr
    sent = [m["content"] for m in openai_server.requests[-1].body["messages"]]
    assert sent == ["first", "echo: first ", "second"]


@pytest.fixture
def registry_config(write_config, openai_server: OpenAIWireServer, tmp_path: Path) -> Path:
    """The upstream roles with tracking on a fresh SQLite MLflow store (the prompt registry)."""
    text = gateway_yaml(
        openai_server,
        extra=f'store: {{url: "sqlite:///{tmp_path / "store.db"}"}}\n',
        tracking=True,
    )
    text = text.replace(
        "tracking: {enabled: true}",
        f'tracking: {{enabled: true, tracking_uri: "sqlite:///{tmp_path / "mlflow.db"}"}}',
    )
    return write_config(text)


def test_prompt_import_list_show_and_a_second_import(registry_config: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "prompts.yaml"
    source.write_text(
        "summarise: 'Sum up {{text}}'\n"
        "triage:\n  - {role: system, content: You sort tickets}\n  - {role: user, content: '{{ticket}}'}\n"
    )
    cfg = ["--config", str(registry_config), "--json"]
    assert main(["prompt", "import", str(source), *cfg]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"name": "summarise", "version": 1},
        {"name": "triage", "version": 1},
    ]
    (tmp_path / "more.json").write_text(json.dumps({"summarise": "In one line: {{text}}"}))
    assert main(["prompt", "import", str(tmp_path / "more.json"), *cfg]) == 0
    assert json.loads(capsys.readouterr().out) == [{"name": "summarise", "version": 2}]
    assert main(["prompt", "list", *cfg]) == 0
    listed = {r["name"]: (r["version"], r["variables"]) for r in json.loads(capsys.readouterr().out)}
    assert listed == {"summarise": (2, "text"), "triage": (1, "ticket")}
    assert main(["prompt", "show", "summarise:v1", "--config", str(registry_config)]) == 0
    assert capsys.readouterr().out == "Sum up {{text}}\n"


def test_prompt_import_of_a_file_that_is_not_a_mapping_names_the_file(
    registry_config: Path, tmp_path: Path, capsys
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    assert main(["prompt", "import", str(bad), "--config", str(registry_config)]) == 1
    assert f"orchlab: {bad}: write a mapping of prompt name -> template" in capsys.readouterr().err
    bad.write_text("ok: 'x'\nnumber: 3\n")
    assert main(["prompt", "import", str(bad), "--config", str(registry_config)]) == 1
    assert "number: a template is a string or a list of messages" in capsys.readouterr().err


def test_prompt_edit_registers_what_the_editor_wrote_and_nothing_when_unchanged(
    registry_config: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    cfg = ["--config", str(registry_config)]
    source = tmp_path / "one.txt"
    source.write_text("Sum up {{text}}")
    assert main(["prompt", "sync", "summarise", "--from", str(source), *cfg]) == 0
    assert capsys.readouterr().out == "summarise@1\n"
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import sys, pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "p.write_text(p.read_text().replace('Sum up', 'Summarise briefly'))\n"
    )
    monkeypatch.delenv("VISUAL", raising=False)
    monkeypatch.setenv("EDITOR", f"{sys.executable} {editor}")
    assert main(["prompt", "edit", "summarise", *cfg]) == 0
    assert capsys.readouterr().out == "summarise@2\n"
    assert main(["prompt", "show", "summarise@2", *cfg]) == 0
    assert capsys.readouterr().out == "Summarise briefly {{text}}\n"
    monkeypatch.setenv("EDITOR", "true")  # leaves the file as it is
    assert main(["prompt", "edit", "summarise", *cfg]) == 0
    assert capsys.readouterr().out == "summarise@2: unchanged\n"
    monkeypatch.setenv("EDITOR", "false")
    assert main(["prompt", "edit", "summarise", *cfg]) == 1
    assert "EDITOR='false' exited with 1; nothing registered" in capsys.readouterr().err


def test_a_command_builds_only_itself_and_the_whole_app_serves_help_and_typos(capsys) -> None:
    from orchlab.cli.app import build, command_name

    assert command_name(["--config", "run", "--json", "models", "--tier", "x"]) == "models"
    assert command_name(["--url=http://h", "--env", "dev", "feedback", "rate"]) == "feedback"
    assert [command_name(a) for a in (["--json"], ["modles"], ["--", "run"], [])] == [None] * 4
    only = build("roles").registered_commands
    assert [c.name for c in only] == ["roles"] and build("keys").registered_groups[0].name == "keys"
    assert main(["--json", "modles"]) == 2
    err = capsys.readouterr().err
    assert "No such command 'modles'. Did you mean 'models', 'roles'?" in err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in ("run", "chat", "roles", "observe", "keys", "serve", "ui"))


def drain_pid(spool: Path, timeout: float = 30) -> int | None:
    """The pid a drain wrote in its store's status.json (None: no drain said so in time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in spool.glob("*/status.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                return int(json.loads(status.read_text())["pid"])
        time.sleep(0.05)
    return None


def test_run_with_tracking_returns_without_waiting_for_its_trace_to_be_written(
    write_config, openai_server: OpenAIWireServer, tmp_path: Path
) -> None:
    """The tracking store never answers (a socket that listens and says nothing): `orchlab run`
    still answers and exits 0, its trace waiting in the journal for the drain, a process of its
    own that this run started and did not wait for."""
    import signal
    import socket

    from orchlab.tracking.journal import SUFFIX

    config = write_config(gateway_yaml(openai_server, tracking=True))
    spool = tmp_path / "spool"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        env = {
            "ORCH_TRACKING": "1",
            "ORCH_TRACKING_URI": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "ORCH_TRACKING_SPOOL": str(spool),
        }
        try:
            out = cli("run", "llm.inference", "tracked", "--config", str(config), env=env)
            assert (out.returncode, out.stdout, out.stderr) == (0, "echo: tracked\n", "")
            [journal] = spool.glob(f"*/*{SUFFIX}")
            assert "llm.inference" in journal.read_text()  # journaled, and never written: no store
            drain = drain_pid(spool)
            assert drain is not None, "no drain started for the journal"
            os.kill(drain, 0)  # still running, still trying: the run did not wait for it
        finally:
            drain = drain_pid(spool, timeout=5)
            if drain is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(drain, signal.SIGKILL)  # its own session: the drain and nothing else

"""The commands with ``--url`` / ``ORCHLAB_URL`` (``run``, ``models``, ``chat``, ``feedback rate``, ``keys``,
``roles``; the local-only ones refuse it): a real subprocess on a real gateway (uvicorn on
loopback, keys required) in front of the loopback OpenAI upstream."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest

import orchlab
from orchlab.store.keys import SECRET_ENV
from tests.serve_support import Served, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer


def cli(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHLAB_", "ORCH_AUTH_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchlab", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},  # no upstream key here: only the gateway knows it
    )


@pytest.fixture
def gateway(
    serve: Callable[..., Served], write_config, openai_server: OpenAIWireServer, monkeypatch
) -> tuple[Served, str]:
    """A gateway requiring keys, and a key of a user allowed llm.inference only."""
    monkeypatch.setenv(SECRET_ENV, "gateway-test-secret-" + "k" * 32)
    yaml = gateway_yaml(openai_server, "  auth: keys\n", "store: {url: sqlite:///keys.db}\n")
    served = serve(yaml)
    key = orchlab.get_llm_client(write_config(yaml)).keys.create("ana", roles=["llm.inference"])
    return served, key.key


def test_run_on_a_gateway_answers_through_it_with_the_key(
    gateway: tuple[Served, str], openai_server: OpenAIWireServer
) -> None:
    served, key = gateway
    env = {"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key}
    out = cli("run", "llm.inference", "What is 2+2?", "-s", "Be brief", "-p", "temperature=0.5", env=env)
    assert (out.returncode, out.stdout, out.stderr) == (0, "echo: What is 2+2?\n", "")
    sent = openai_server.requests[-1].body
    assert sent["model"] == "cheap" and sent["temperature"] == 0.5
    assert [m["content"] for m in sent["messages"]] == ["Be brief", "What is 2+2?"]
    out = cli(
        "--json", "run", "llm.inference", "--url", served.base_url, env={"ORCHLAB_API_KEY": key}, stdin="hi"
    )
    answer = json.loads(out.stdout)
    assert (answer["content"], answer["role"], answer["url"]) == ("echo: hi", "llm.inference", served.url)
    assert answer["input_tokens"] > 0 and answer["cost_usd"] > 0
    out = cli("run", "llm.inference", "streamed words", "--stream", env=env)
    assert (out.returncode, out.stdout) == (0, "echo: streamed words \n")
    assert openai_server.requests[-1].body["stream"] is True


def test_models_on_a_gateway_lists_what_the_key_may_call(gateway: tuple[Served, str]) -> None:
    served, key = gateway
    out = cli("models", "--json", "--url", served.url, env={"ORCHLAB_API_KEY": key})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"target": "llm.inference", "owned_by": "orchlab"}]
    out = cli("models", "--tier", "small", "--url", served.url, env={"ORCHLAB_API_KEY": key})
    assert out.returncode == 1 and "local catalog only" in out.stderr


def test_gateway_errors_are_one_line_and_never_show_the_key(gateway: tuple[Served, str]) -> None:
    served, key = gateway
    out = cli("run", "llm.inference", "hi", env={"ORCHLAB_URL": served.url})
    assert out.returncode == 1 and out.stdout == ""
    assert (
        out.stderr.startswith("orchlab: gateway:llm.inference [HTTP 401]: a valid API key is required")
        and "set ORCHLAB_API_KEY" in out.stderr
    )
    out = cli("run", "llm.big", "hi", env={"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key})
    assert out.returncode == 1 and "gateway:llm.big [HTTP 403]" in out.stderr and key not in out.stderr
    out = cli("run", "llm.inference", "hi", env={"ORCHLAB_URL": "http://127.0.0.1:9", "ORCHLAB_API_KEY": key})
    assert out.returncode == 1 and "no gateway answers at http://127.0.0.1:9" in out.stderr
    assert "Traceback" not in out.stderr


def thread_id_of(stderr: str) -> str:
    """The id `orchlab chat --url` reports once the gateway has made the thread."""
    match = re.search(r"^thread (\w+) \(resume: --thread \1\)$", stderr, re.M)
    assert match, stderr
    return match.group(1)


def test_chat_on_a_gateway_keeps_the_thread_there_and_thread_resumes_it(
    gateway: tuple[Served, str], openai_server: OpenAIWireServer
) -> None:
    served, key = gateway
    env = {"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key}
    out = cli(
        "chat", "llm.inference", "-s", "Be brief", env=env, stdin="first question\nsecond question\n/exit\n"
    )
    assert out.returncode == 0, out.stderr
    assert "echo: first question\n" in out.stdout and "echo: second question\n" in out.stdout
    thread = thread_id_of(out.stderr)
    # the gateway sent the first turn before the second: the history is kept server-side
    sent = [m["content"] for m in openai_server.requests[-1].body["messages"]]
    # and the system prompt went first, as the local chat (the library's Thread) sends it
    assert sent == ["Be brief", "first question", "echo: first question", "second question"]

    out = cli("chat", "llm.inference", "--thread", thread, env=env, stdin="third question\n")
    assert out.returncode == 0, out.stderr
    assert out.stderr.startswith(f"thread {thread} · 4 messages · llm.inference · {served.url}")
    assert "echo: third question\n" in out.stdout
    stored = httpx.get(f"{served.url}/threads/{thread}", headers={"authorization": f"Bearer {key}"})
    assert stored.status_code == 200, stored.text
    body = stored.json()
    assert (body["id"], body["user"]) == (thread, "ana")
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "first question"),
        ("assistant", "echo: first question"),
        ("user", "second question"),
        ("assistant", "echo: second question"),
        ("user", "third question"),
        ("assistant", "echo: third question"),
    ]


def test_chat_on_a_gateway_refuses_continue_an_unknown_thread_and_a_wrong_key(
    gateway: tuple[Served, str],
) -> None:
    served, key = gateway
    env = {"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key}
    out = cli("chat", "llm.inference", "-c", env=env, stdin="hi\n")
    assert out.returncode == 2 and "--continue finds the last thread in the local store" in out.stderr
    unknown = "01JD0000000000000000000000"
    out = cli("chat", "llm.inference", "--thread", unknown, env=env, stdin="hi\n")
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr == f"orchlab: no thread '{unknown}' on the gateway at {served.url}\n"
    wrong = "sk-orchlab-wrong-" + "x" * 30
    out = cli(
        "chat", "llm.inference", env={"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": wrong}, stdin="hi\n"
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr and wrong not in out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("orchlab:")]
    assert errors == [
        "orchlab: gateway:llm.inference [HTTP 401]: a valid API key is required: send the header "
        "Authorization: Bearer ok_… (set ORCHLAB_API_KEY to a key of this gateway)"
    ], out.stderr


def test_feedback_rate_on_a_gateway_lands_on_the_stored_answer(gateway: tuple[Served, str], tmp_path) -> None:
    served, key = gateway
    env = {"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": key}
    out = cli("chat", "llm.inference", env=env, stdin="rate me\n")
    thread = thread_id_of(out.stderr)
    auth = {"authorization": f"Bearer {key}"}
    answer = httpx.get(f"{served.url}/threads/{thread}", headers=auth).json()["messages"][-1]
    assert answer["content"] == "echo: rate me"
    out = cli("feedback", "rate", answer["id"], "4", "--comment", "fine", env=env)
    assert (out.returncode, out.stdout, out.stderr) == (0, f"rated {answer['id']}: 4\n", "")
    out = cli("--json", "feedback", "rate", answer["id"], "up", env=env)
    rated = json.loads(out.stdout)
    assert (rated["message_id"], rated["user"], rated["kind"], rated["value"]) == (
        answer["id"],
        "ana",
        "thumbs",
        1,
    )
    with orchlab.get_llm_client(tmp_path / "llm_orchestrator.yaml") as local:  # the gateway's config
        rows = local.store.thread_feedback(thread)
    assert [(r["message_id"], r["user"], r["kind"], r["value"]) for r in rows] == [
        (answer["id"], "ana", "thumbs", 1)
    ]
    out = cli("feedback", "rate", "01JD0000000000000000000000", "up", env=env)
    assert out.returncode == 1 and "[HTTP 404]" in out.stderr and "no message" in out.stderr
    out = cli(
        "feedback", "rate", answer["id"], "up", env={"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": "bad-key"}
    )
    assert out.returncode == 1 and "[HTTP 401]" in out.stderr and "bad-key" not in out.stderr


def test_roles_on_a_gateway_are_those_the_key_may_call(gateway: tuple[Served, str]) -> None:
    served, key = gateway
    out = cli("roles", "--json", "--url", served.url, env={"ORCHLAB_API_KEY": key})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [
        {"role": "llm.inference", "target": "up:cheap", "strategy": "single", "description": None}
    ]


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["observe", "usage"], "observe"),
        (["observe", "errors", "--url", "http://127.0.0.1:9"], "observe"),
        (["--url", "http://127.0.0.1:9", "prompt", "list"], "prompt"),
        (["feedback", "show", "some-thread"], "feedback show"),
    ],
)
def test_local_only_commands_refuse_a_gateway_url_as_a_usage_error(args: list[str], command: str) -> None:
    out = cli(*args, env={"ORCHLAB_URL": "http://127.0.0.1:9"})
    assert (out.returncode, out.stdout) == (2, "")
    assert "Invalid value for '--url' / ORCHLAB_URL" in out.stderr
    assert f"orchlab {command} reads " in out.stderr and "no gateway endpoint serves it" in out.stderr


def test_keys_on_a_gateway_are_created_listed_and_revoked_through_its_admin_endpoints(
    gateway: tuple[Served, str], write_config, openai_server: OpenAIWireServer
) -> None:
    served, user_key = gateway
    yaml = gateway_yaml(openai_server, "  auth: keys\n", "store: {url: sqlite:///keys.db}\n")
    store = orchlab.get_llm_client(write_config(yaml)).keys  # the gateway's store
    admin = store.create("root", admin=True).key
    env = {"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": admin}
    out = cli("keys", "create", "--user", "bo", "--roles", "llm.inference", "--rpm", "5", env=env)
    assert out.returncode == 0, out.stderr
    new_key = out.stdout.strip()
    assert re.fullmatch(r"ok_[0-9a-z]+_\S+", new_key) and "shown this once" in out.stderr
    made = next(k for k in store.list("bo"))  # in the gateway's store, not a local one
    assert (made.allow, made.rpm, made.kind) == (("llm.inference",), 5, "user")
    out = cli("--json", "keys", "list", "--user", "bo", env=env)
    rows = json.loads(out.stdout)
    assert [(r["prefix"], r["active"]) for r in rows] == [(made.prefix, True)]
    assert new_key not in out.stdout and admin not in out.stdout
    assert (
        httpx.get(f"{served.base_url}/models", headers={"authorization": f"Bearer {new_key}"}).status_code
        == 200
    )
    out = cli("keys", "revoke", f"ok_{made.prefix}", env=env)
    assert (out.returncode, out.stdout) == (0, f"revoked ok_{made.prefix}_… (bo)\n")
    out = cli("keys", "list", env=env)
    assert re.search(rf"ok_{made.prefix}_…\s+bo\s+user\s+llm.inference\s+5\s+-\s+-\s+revoked", out.stdout)
    # a user's key is no admin key: one line, exit 1, and neither key in the output
    out = cli("keys", "list", env={"ORCHLAB_URL": served.url, "ORCHLAB_API_KEY": user_key})
    assert out.returncode == 1 and out.stderr.startswith("orchlab: ") and out.stderr.count("\n") == 1
    assert user_key not in out.stderr + out.stdout and admin not in out.stderr + out.stdout

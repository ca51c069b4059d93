"""The session-wide canary: a key in the environment and another in a key file, every fault mode
the loopback servers can play (servers that echo the key back in bodies and headers, 401, 429,
500, malformed and cut-off bodies, timeouts, refused connections, error events inside streams,
a fallback chain where every attempt fails), all loggers at DEBUG, tracking on. Neither key may
turn up anywhere: in an error's message or repr, in anything reachable from it (``__cause__`` /
``__context__`` chains, attributes, grouped errors), in a log record, a warning, the output, or
any file written (MLflow store, spool, journal).

The scenario runs once per module; each test checks one channel, so a failure says where the
key leaked.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import textwrap
import types
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import orchlab
from orchlab.auth import Secret
from tests.servers import loopback
from tests.servers.anthropic_wire import (
    AnthropicWireServer,
    anthropic_error,
    error_body,
    sse,
    stream_events,
    stream_reply,
)
from tests.servers.loopback import closed_port
from tests.servers.openai_wire import OpenAIWireServer, Reply, stream_chunks
from tests.tracking_support import template_db_fixture  # noqa: F401  (a session fixture)

ENV_KEY = "sk-canary-env-7d3f9a1c5e2b8046"
FILE_KEY = "sk-ant-canary-file-2b8e6f0d4a91c357"
CANARIES = (ENV_KEY, FILE_KEY)
Q = [{"role": "user", "content": "hi"}]


def leaks(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


# --- a walker over everything reachable from an object ---------------------------------------

_OPAQUE = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
_SKIP = (types.TracebackType, types.FrameType, types.CodeType)


def reachable_strings(
    obj: object, *, max_depth: int = 14, max_objects: int = 50_000
) -> Iterator[tuple[str, str]]:
    """``(path, text)`` for every string reachable from ``obj``: its str and repr, arguments,
    attributes (``__dict__`` and slots), items, and for exceptions their ``__cause__``,
    ``__context__``, ``__notes__`` and grouped exceptions. Tracebacks and frames are not followed
    (their locals hold the SDK clients, which must hold the key); a `Secret` counts as its repr."""
    seen: set[int] = set()
    stack: list[tuple[str, object, int]] = [("error", obj, 0)]
    while stack and len(seen) < max_objects:
        path, value, depth = stack.pop()
        if isinstance(value, str):
            yield path, value
            continue
        if isinstance(value, bytes | bytearray | memoryview):
            yield path, bytes(value).decode("latin-1")
            continue
        if value is None or isinstance(value, (bool, int, float, complex, *_SKIP)):
            continue
        if id(value) in seen or depth > max_depth:
            continue
        seen.add(id(value))
        for how, render in (("repr", repr), ("str", str)):
            try:
                text = render(value)
            except Exception:
                continue
            yield f"{path}.<{how}>", text
        if isinstance(value, (Secret, *_OPAQUE)):
            continue
        children: list[tuple[str, object]] = []
        if isinstance(value, BaseException):
            children += [
                ("args", value.args),
                ("__cause__", value.__cause__),
                ("__context__", value.__context__),
            ]
            children += [("__notes__", getattr(value, "__notes__", None))]
            if isinstance(value, BaseExceptionGroup):
                children += [(f"exceptions[{i}]", e) for i, e in enumerate(value.exceptions)]
        if isinstance(value, dict):
            children += [(f"[{k!r}]", v) for k, v in list(value.items())] + [("<keys>", list(value))]
        elif isinstance(value, list | tuple | set | frozenset):
            children += [(f"[{i}]", v) for i, v in enumerate(value)]
        else:
            with contextlib.suppress(Exception):
                children += list(vars(value).items())
            for klass in type(value).__mro__:
                for slot in getattr(klass, "__slots__", ()):
                    with contextlib.suppress(Exception):
                        children.append((slot, getattr(value, slot)))
            if hasattr(value, "items") and callable(value.items):
                with contextlib.suppress(Exception):
                    children += [(f"[{k!r}]", v) for k, v in value.items()]
        stack += [
            (f"{path}{'' if name.startswith('[') else '.'}{name}", child, depth + 1)
            for name, child in children
        ]


def test_the_walker_finds_a_key_deep_in_a_chain() -> None:
    class Holder:
        __slots__ = ("headers",)

        def __init__(self) -> None:
            self.headers = [(b"authorization", f"Bearer {ENV_KEY}".encode())]

    try:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            inner.request = Holder()  # type: ignore[attr-defined]
            raise RuntimeError("outer") from None
    except RuntimeError as outer:
        found = [p for p, text in reachable_strings(outer) if leaks(text)]
    assert "error.__context__.request.headers[0][1]" in found
    assert not [p for p, t in reachable_strings(Secret(ENV_KEY)) if leaks(t)]


# --- the scenario -----------------------------------------------------------------------------


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS}
        if extras:  # what a structured (JSON) formatter would print too
            self.lines.append(f"{record.name} extras {extras!r}")


_RECORD_FIELDS = set(vars(logging.LogRecord("n", logging.INFO, "p", 1, "m", None, None))) | {
    "message",
    "asctime",
}


@dataclass
class Findings:
    errors: list[tuple[str, BaseException]] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)
    reprs: list[str] = field(default_factory=list)
    output: str = ""
    folder: Path = Path()
    key_file: Path = Path()
    flushed: bool = False


@contextlib.contextmanager
def all_loggers_at_debug(handler: logging.Handler) -> Iterator[None]:
    import mlflow  # noqa: F401  (its loggers exist, and do not propagate, before levels are set)

    loggers = [logging.getLogger()] + [
        lg for lg in logging.root.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    levels = {lg: lg.level for lg in loggers}
    attached = [lg for lg in loggers if lg is logging.getLogger() or not lg.propagate]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    for lg in attached:
        lg.addHandler(handler)
    try:
        yield
    finally:
        for lg in attached:
            lg.removeHandler(handler)
        for lg, level in levels.items():
            lg.setLevel(level)


def cut_body(text: str) -> loopback.Reply:
    """A reply that announces 4096 bytes, sends a few, and closes the connection."""
    return loopback.Reply(stream=[text.encode()], headers={"content-length": "4096"})


def openai_faults() -> list[tuple[str, list[Any], dict[str, Any]]]:
    """(label, replies to push, params) for the role on the OpenAI server (key from the env)."""
    first = stream_chunks(["partial "], model="m", prompt_tokens=1)[:2]
    return [
        (
            "401 echo",
            [Reply.error(401, f"Incorrect API key provided: {ENV_KEY}", headers={"x-echo": ENV_KEY})],
            {},
        ),
        ("403 echo", [Reply.error(403, f"key {ENV_KEY} may not use m", code="forbidden")], {}),
        (
            "429 echo",
            [Reply.error(429, f"slow down {ENV_KEY}", headers={"retry-after": "0", "x-key": ENV_KEY})],
            {},
        ),
        ("500 echo", [Reply.error(500, f"internal error for {ENV_KEY}")], {}),
        (
            "html 200",
            [Reply(body=f"<html>proxy error for {ENV_KEY}</html>".encode(), content_type="text/html")],
            {},
        ),
        ("bad json 200", [Reply(body=f'{{"choices": [{{"message": "{ENV_KEY}'.encode())], {}),
        ("disconnect mid-body", [cut_body(f'{{"id": "{ENV_KEY}", "choices": [')], {}),
        ("timeout", [Reply(delay_s=1.0)], {"timeout_s": 0.3}),
        (
            "stream error event",
            [Reply(stream_chunks=[*first, {"error": {"message": f"upstream {ENV_KEY}", "code": "502"}}])],
            {},
        ),
        (
            "stream cut",
            [
                loopback.Reply(
                    stream=[b"data: " + json.dumps(first[1]).encode() + b"\n\n"],
                    content_type="text/event-stream",
                )
            ],
            {},
        ),
        (
            "stream html",
            [loopback.Reply(stream=[f"<html>{ENV_KEY}</html>".encode()], content_type="text/html")],
            {},
        ),
    ]


def anthropic_faults() -> list[tuple[str, list[Any], dict[str, Any]]]:
    """The same for the role on the Anthropic server (key from the key file)."""
    frames = stream_events(["partial"], model="c", input_tokens=1, output_tokens=1)
    return [
        (
            "401 echo",
            [anthropic_error(401, message=f"invalid x-api-key {FILE_KEY}", headers={"x-echo": FILE_KEY})],
            {},
        ),
        ("529 echo", [anthropic_error(529, message=f"overloaded ({FILE_KEY})")], {}),
        (
            "html 200",
            [loopback.Reply(body=f"<html>{FILE_KEY}</html>".encode(), content_type="text/html")],
            {},
        ),
        ("timeout", [loopback.Reply(delay_s=1.0, body={})], {"timeout_s": 0.3}),
        ("disconnect mid-body", [cut_body(f'{{"id": "{FILE_KEY}", "content": [')], {}),
        (
            "stream error event",
            [stream_reply([*frames[:3], sse("error", error_body("api_error", f"boom {FILE_KEY}"))])],
            {},
        ),
        ("stream cut", [stream_reply(frames[:3])], {}),
    ]


@pytest.fixture(scope="module")
def findings(tmp_path_factory: pytest.TempPathFactory, template_db: Path) -> Iterator[Findings]:
    found = Findings(folder=tmp_path_factory.mktemp("canary-work"))
    keys = tmp_path_factory.mktemp("canary-keys")
    found.key_file = keys / "anthropic.key"
    found.key_file.write_text(FILE_KEY + "\n", encoding="utf-8")
    shutil.copyfile(template_db, found.folder / "mlflow.db")
    handler = Captured()
    output = io.StringIO()
    with (
        OpenAIWireServer() as oa_server,
        AnthropicWireServer() as an_server,
        pytest.MonkeyPatch.context() as mp,
        warnings.catch_warnings(record=True) as warned,
        all_loggers_at_debug(handler),
        contextlib.redirect_stdout(output),
        contextlib.redirect_stderr(output),
    ):
        warnings.simplefilter("always")
        for name in list(os.environ):
            if name.startswith(("ORCH_", "MLFLOW_", "OPENAI_", "ANTHROPIC_")):
                mp.delenv(name)
        mp.setenv("ORCH_TRACKING", "1")
        mp.setenv("MLFLOW_MODEL_CATALOG_URI", "")
        mp.setenv("ORCH_AUTH_OA_API_KEY", ENV_KEY)
        mp.chdir(found.folder)
        config = found.folder / "llm_orchestrator.yaml"
        config.write_text(
            textwrap.dedent(
                f"""\
                project: canary
                providers:
                  oa: {{type: openai, api_base: "{oa_server.base_url}"}}
                  an: {{type: anthropic, api_base: "{an_server.url}", key_file: "{found.key_file}"}}
                  dead: {{type: openai, api_base: "http://127.0.0.1:{closed_port()}/v1", auth_profile: oa}}
                roles:
                  oa_r: {{provider: oa, model: m, params: {{max_tokens: 16}}}}
                  an_r: {{provider: an, model: c, params: {{max_tokens: 16}}}}
                  dead_r: {{provider: dead, model: m}}
                  chain:
                    provider: oa
                    model: m
                    fallbacks: ["an:c", "dead:m"]
                    retry: {{retries: 0}}
                """
            ),
            encoding="utf-8",
        )
        client = orchlab.get_llm_client(config)

        def attempt(label: str, call: Any) -> None:
            try:
                call()
            except Exception as exc:
                found.errors.append((label, exc))
            else:
                found.answered.append(label)

        # A prompt carrying the key-file key, before that provider is ever used (issue 10 item 20).
        attempt(
            "prompt with the file key", lambda: client.run("oa_r", [{"role": "user", "content": FILE_KEY}])
        )
        for role, server, faults in (
            ("oa_r", oa_server, openai_faults()),
            ("an_r", an_server, anthropic_faults()),
        ):
            for label, replies, params in faults:
                for style in ("run", "stream"):
                    server.reset()
                    server.push(*replies)
                    if style == "run":
                        attempt(f"{role} {label} run", lambda r=role, p=params: client.run(r, Q, p))
                    else:
                        attempt(
                            f"{role} {label} stream", lambda r=role, p=params: client.stream(r, Q, p).text()
                        )
        attempt("refused run", lambda: client.run("dead_r", Q))
        attempt("refused stream", lambda: client.stream("dead_r", Q).text())
        oa_server.reset()
        an_server.reset()
        oa_server.push(Reply.error(401, f"bad key {ENV_KEY}", headers={"x-echo": ENV_KEY}))
        an_server.push(anthropic_error(401, message=f"bad key {FILE_KEY}"))
        attempt("fallback chain", lambda: client.run("chain", Q))
        found.reprs = [repr(client), repr(client.config), repr(client.resolver.config)]
        found.reprs += [repr(client.resolve(role)) for role in client.roles()]
        found.reprs += [repr(client.provider(name)) for name in ("oa", "an", "dead")]
        found.reprs += [repr(client.resolver.provider_settings(name)) for name in ("oa", "an", "dead")]
        client.close()
        found.flushed = orchlab.flush(timeout=60)
    found.log_lines = handler.lines
    found.warned = [f"{w.category.__name__}: {w.message}" for w in warned]
    found.output = output.getvalue()
    yield found


def test_the_scenario_ran_every_fault(findings: Findings) -> None:
    assert len(findings.errors) + len(findings.answered) == 1 + 2 * (11 + 7) + 2 + 1
    assert len(findings.errors) >= 30, findings.answered  # some bad streams still "succeed" (item 15)
    assert any(label == "fallback chain" for label, _ in findings.errors)
    assert findings.log_lines, "all loggers at DEBUG, yet nothing was logged"
    assert findings.flushed


def test_no_error_message_or_repr_holds_a_key(findings: Findings) -> None:
    leaked = [
        (label, text) for label, exc in findings.errors for text in (str(exc), repr(exc)) if leaks(text)
    ]
    assert not leaked


def test_nothing_reachable_from_an_error_holds_a_key(findings: Findings) -> None:
    leaked = {
        label: sorted({path for path, text in reachable_strings(exc) if leaks(text)})[:3]
        for label, exc in findings.errors
    }
    assert not {label: paths for label, paths in leaked.items() if paths}


def test_no_log_line_holds_a_key(findings: Findings) -> None:
    assert not [line for line in findings.log_lines if leaks(line)]


def test_no_repr_of_the_client_its_config_or_its_providers_holds_a_key(findings: Findings) -> None:
    assert len(findings.reprs) == 13
    assert not [r for r in findings.reprs if leaks(r)]


def test_no_warning_or_output_holds_a_key(findings: Findings) -> None:
    assert not [w for w in findings.warned if leaks(w)]
    assert not leaks(findings.output)


def test_no_file_written_holds_a_key(findings: Findings) -> None:
    """The MLflow store (with its WAL), the spool, the journal, artifacts: every file written."""
    written = [p for p in findings.folder.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written)
    leaked = [
        str(p.relative_to(findings.folder))
        for p in written
        if any(c.encode() in p.read_bytes() for c in CANARIES)
    ]
    assert not leaked

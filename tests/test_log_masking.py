"""Keys never reach a log line: SDK DEBUG logs (``openai``, ``httpx``, ``httpcore``) that print a
key a server echoes back, and any other record, are masked once a client knows the key."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from orchlab.errors import AuthenticationError, AuthError
from orchlab.orchestrator import Orchestrator
from orchlab.redaction import MASK
from tests.servers.openai_wire import OpenAIWireServer, Reply

KEY = "sk-log-canary-5f1c0e9a7b3d"
Q = [{"role": "user", "content": "hi"}]


def config(base_url: str, key_file: str | None = None) -> str:
    key = f", key_file: {key_file}" if key_file else ""
    return f"""\
        project: t
        providers:
          oa: {{type: openai, api_base: "{base_url}"{key}}}
        roles:
          r: {{provider: oa, model: m}}
        """


@pytest.fixture
def record_factory() -> Iterator[None]:
    """Put logging's record factory back as it was after the test."""
    before = logging.getLogRecordFactory()
    yield
    logging.setLogRecordFactory(before)


def test_sdk_debug_logs_never_print_a_key_echoed_back(
    openai_server: OpenAIWireServer,
    client_for: Callable[..., Orchestrator],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    client = client_for(config(openai_server.base_url))
    openai_server.push(
        Reply.error(401, f"Incorrect API key provided: {KEY}", headers={"x-echo-key": KEY}),
        Reply(headers={"x-echo-key": KEY}),
    )
    with pytest.raises(AuthenticationError):
        client.run("r", Q)
    assert "".join(client.stream("r", Q)) == "echo: hi "
    assert openai_server.requests[0].header("authorization") == f"Bearer {KEY}"  # the key was used

    # the openai SDK logs through its own loggers and its HTTP stack's (httpx, or its fork httpx2)
    loggers = {r.name.split(".")[0].rstrip("2") for r in caplog.records}
    assert {"openai", "httpx", "httpcore"} <= loggers
    masked = [r for r in caplog.records if MASK in r.getMessage()]
    # the echoed header in the HTTP stack's response-headers line, for both calls
    assert len(masked) >= 2
    assert {r.name.replace("httpcore2", "httpcore") for r in masked} >= {"httpcore.http11"}
    assert KEY not in caplog.text
    assert not [r for r in caplog.records if KEY in r.getMessage() or KEY in (r.exc_text or "")]


def test_a_key_file_key_is_masked_from_the_start_in_any_logger(
    client_for: Callable[..., Orchestrator],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_text(KEY + "-file\n", encoding="utf-8")
    client_for(config("http://127.0.0.1:9/v1", key_file=str(key_file)))  # the provider is never used
    log = logging.getLogger("an.app.of.the.user")
    with caplog.at_level(logging.INFO):
        log.info("the prompt was %r", f"please repeat {KEY}-file")
        try:
            raise ValueError(f"bad input {KEY}-file")
        except ValueError:
            log.exception("failed")
        log.info("stack", stack_info=True, extra={"note": "x"})
    [prompt, failed, _] = caplog.records
    assert prompt.getMessage() == f"the prompt was 'please repeat {MASK}'"
    assert failed.exc_info is None and failed.exc_text is not None
    assert f"ValueError: bad input {MASK}" in failed.exc_text
    assert KEY not in caplog.text


@pytest.mark.usefixtures("record_factory")
def test_the_masking_is_installed_once_and_keeps_an_earlier_factory(
    client_for: Callable[..., Orchestrator], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    earlier = logging.getLogRecordFactory()

    def tagging(*args: object, **kwargs: object) -> logging.LogRecord:
        record = earlier(*args, **kwargs)
        record.tagged = True
        return record

    logging.setLogRecordFactory(tagging)
    monkeypatch.setenv("ORCH_AUTH_OA_API_KEY", KEY)
    client_for(config("http://127.0.0.1:9/v1"))
    installed = logging.getLogRecordFactory()
    assert installed is not tagging
    client_for(config("http://127.0.0.1:9/v1"))
    assert logging.getLogRecordFactory() is installed  # a second client adds no second wrapper
    with caplog.at_level(logging.INFO):
        logging.getLogger("x").info("key %s", KEY)
    [record] = caplog.records
    assert (record.getMessage(), record.tagged) == (f"key {MASK}", True)


def test_a_key_file_that_cannot_be_read_still_fails_at_first_use_not_at_build(
    client_for: Callable[..., Orchestrator], tmp_path: Path
) -> None:
    (tmp_path / "binary.key").write_bytes(b"\xff\xfe\x00 not text")
    (tmp_path / "folder.key").mkdir()
    client = client_for(
        """\
        project: t
        providers:
          a: {type: openai, api_base: "http://127.0.0.1:9/v1", key_file: binary.key}
          b: {type: openai, api_base: "http://127.0.0.1:9/v1", key_file: folder.key}
        roles: {r: {provider: b, model: m}}
        """
    )
    assert client.roles() == ["r"]
    with pytest.raises(AuthError, match="cannot read key file"):
        client.run("r", Q)

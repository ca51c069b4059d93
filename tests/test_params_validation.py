"""A call's params and messages are checked before anything is sent (issue 10, items 8 and 9).

Overrides (``params_override`` of run/arun/stream, ``**params`` of complete/ensemble) go through
the model that validates YAML ``params:`` (strictly); a bad one is an `InvalidRequestError` naming
the parameter, and the provider never sees the call.
"""

from __future__ import annotations

import datetime
import math
from typing import Any

import pytest

from orchlab.errors import ConfigValidationError, InvalidRequestError
from orchlab.resolution import check_params
from orchlab.types import GenerationParams, Message, to_messages
from tests.servers.openai_wire import OpenAIWireServer

Q = [{"role": "user", "content": "What is 2+2?"}]

CONFIG = """
project: t
tracking: {enabled: false}
providers:
  cloud: {type: test, options: {models: {m: {reply: "four"}, n: {reply: "other"}}}}
roles:
  r: {provider: cloud, model: m, params: {temperature: 0.2, max_tokens: 8}}
  chain: {provider: cloud, model: m, fallbacks: ["cloud:n"]}
"""


@pytest.fixture
def client(client_for):
    return client_for(CONFIG)


BAD_OVERRIDES: list[tuple[Any, str | None, str]] = [
    ([("max_tokens", 5)], None, "must be a mapping of parameter names to values"),
    ("max_tokens=5", None, "got str"),
    ({"stop": 123}, "stop", "valid list"),
    ({"stop": ["ok", 5]}, "stop.1", "valid string"),
    ({"max_tokens": "10"}, "max_tokens", "valid integer (got '10')"),
    ({"max_tokens": 10.0}, "max_tokens", "valid integer"),
    ({"max_tokens": True}, "max_tokens", "valid integer"),
    ({"max_tokens": -1}, "max_tokens", "greater than or equal to 0 (got -1)"),
    ({"temperature": 5}, "temperature", "less than or equal to 2 (got 5)"),
    ({"temperature": -0.1}, "temperature", "greater than or equal to 0"),
    ({"temperature": math.nan}, "temperature", "(got nan)"),
    ({"top_p": 2}, "top_p", "less than or equal to 1 (got 2)"),
    ({"top_p": 0}, "top_p", "greater than 0"),
    ({"timeout_s": "5"}, "timeout_s", "valid number (got '5')"),
    ({"timeout_s": math.nan}, "timeout_s", "finite number"),
    ({"timeout_s": math.inf}, "timeout_s", "finite number"),
    ({"timeout_s": 0}, "timeout_s", "greater than 0"),
    ({"seed": "7"}, "seed", "valid integer"),
    ({"logprobs": "yes"}, "logprobs", "valid boolean"),
    ({"extra": 5}, "extra", "valid dictionary"),
    ({"extra": {"a": object()}}, "extra", "extra['a'] is not JSON-encodable"),
    ({"user_obj": object()}, "user_obj", "'user_obj' is not JSON-encodable"),
    ({"weights": [1.0, math.nan]}, "weights", "is not JSON-encodable"),
    ({"when": datetime.date(2026, 1, 1)}, "when", "is not JSON-encodable"),
    ({"stop": ["a\ud800b"]}, "stop", "stop[0] holds a character that cannot be sent"),
    ({"tag": "x\udfff"}, "tag", "cannot be sent"),
    ({"max_token": 5}, "max_token", "did you mean 'max_tokens'?"),
    ({"temprature": 0}, "temprature", "did you mean 'temperature'?"),
    ({"maxTokens": 5}, "maxTokens", "did you mean 'max_tokens'?"),
    ({"timeout": 5}, "timeout", "did you mean 'timeout_s'?"),
    ({"logprob": True}, "logprob", "did you mean 'logprobs'?"),
    ({"model": "cloud:n"}, "model", "'model' is not a generation parameter"),
    ({"stream": True}, "stream", "use client.stream"),
    ({1: 2}, None, "parameter names must be strings"),
]


@pytest.mark.parametrize(("override", "parameter", "match"), BAD_OVERRIDES)
def test_bad_overrides_are_refused_naming_the_parameter_before_sending(
    client, override: Any, parameter: str | None, match: str
) -> None:
    for call in (
        lambda: client.run("r", Q, override),
        lambda: client.stream("r", Q, override),
        lambda: client.run("chain", Q, override),  # a strategy role: the engine's path
    ):
        with pytest.raises(InvalidRequestError) as info:
            call()
        assert match in str(info.value)
        assert str(info.value).startswith("params_override")
        assert info.value.parameter == parameter
    assert client.provider("cloud").calls == []


# what can be a keyword argument (str names) and is not one of complete()'s own keywords
AS_KEYWORDS = [
    b
    for b in BAD_OVERRIDES
    if isinstance(b[0], dict) and all(isinstance(k, str) and k != "model" for k in b[0])
]


@pytest.mark.parametrize(("override", "parameter", "match"), AS_KEYWORDS)
def test_bad_keyword_params_of_complete_and_ensemble_are_refused(
    client, override: dict[str, Any], parameter: str | None, match: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        client.complete("What is 2+2?", role="r", **override)
    assert str(info.value).startswith("complete():") and match in str(info.value)
    assert info.value.parameter == parameter
    with pytest.raises(InvalidRequestError, match=r"^ensemble\(\):"):
        client.ensemble("What is 2+2?", ["cloud:m", "cloud:n"], **override)
    assert client.provider("cloud").calls == []


def test_misspelt_keywords_of_complete_get_did_you_mean(client) -> None:
    with pytest.raises(InvalidRequestError, match=r"unknown parameter 'strategi'; did you mean 'strategy'\?"):
        client.complete("hi", role="r", strategi="cascade")
    with pytest.raises(InvalidRequestError, match=r"did you mean 'judge'\?"):
        client.ensemble("hi", ["cloud:m", "cloud:n"], mode="judge", jugde="cloud:m")
    assert client.provider("cloud").calls == []


async def test_async_twins_check_too(client) -> None:
    with pytest.raises(InvalidRequestError, match="'temperature'"):
        await client.arun("r", Q, {"temperature": 9})
    with pytest.raises(InvalidRequestError, match="'max_tokens'"):
        await client.acomplete("hi", role="r", max_tokens=-3)
    assert client.provider("cloud").calls == []


def test_good_overrides_reach_the_provider_normalised(client) -> None:
    client.run("r", Q, {"temperature": 1, "stop": "END", "top_k": 40, "extra": {"user": "u1"}})
    params = client.provider("cloud").calls[-1].params
    assert (params.temperature, params.max_tokens, params.stop) == (1, 8, ("END",))
    # top_k is a real provider parameter one letter from top_p: passed through, not "did you mean"
    assert dict(params.extra) == {"top_k": 40, "user": "u1"}
    client.complete("hi", role="r", max_tokens=3, reasoning_effort="low", seed=4)
    params = client.provider("cloud").calls[-1].params
    assert (params.max_tokens, params.seed, dict(params.extra)) == (3, 4, {"reasoning_effort": "low"})
    # a provider-specific name that looks like a typo goes through extra=, which is not name-checked
    client.run("r", Q, {"extra": {"max_token": 2}})
    assert dict(client.provider("cloud").calls[-1].params.extra) == {"max_token": 2}


def test_max_tokens_zero_is_an_empty_answer_that_sends_nothing(client) -> None:
    r = client.run("r", Q, {"max_tokens": 0})
    assert (r.content, r.finish_reason, r.cost_usd, r.usage.total_tokens) == ("", "length", 0.0, 0)
    assert r.cost_note == "max_tokens=0: an empty answer, nothing was sent"
    (attempt,) = r.decision.attempts
    assert (attempt.outcome, attempt.cost_usd, attempt.note) == ("ok", 0.0, r.cost_note)
    stream = client.stream("r", Q, {"max_tokens": 0})
    assert stream.text() == "" and stream.response is not None and stream.response.finish_reason == "length"
    assert client.complete("hi", role="chain", max_tokens=0).content == ""
    assert client.provider("cloud").calls == []
    assert client.usage(by=[]).loc[0, "calls"] == 3  # each traced as a call, none sent


def test_the_same_checks_apply_to_yaml_params(write_config) -> None:
    from orchlab.config.loader import load_config

    ok = load_config(
        write_config(
            "project: t\nproviders: {c: {type: test}}\n"
            "roles: {r: {provider: c, model: m, params: {max_tokens: 0, stop: [x]}}}\n"
        )
    )
    assert ok.roles["r"].params.max_tokens == 0
    for params, match in [
        ("{timeout_s: .inf}", "finite number"),
        ("{timeout_s: .nan}", "finite number"),
        ("{max_tokens: -1}", "greater than or equal to 0"),
        ("{temperature: 3}", "less than or equal to 2"),
        ("{extra: {when: 2026-01-01}}", "extra['when'] is not JSON-encodable"),
    ]:
        roles = f"roles: {{r: {{provider: c, model: m, params: {params}}}}}\n"
        path = write_config("project: t\nproviders: {c: {type: test}}\n" + roles)
        with pytest.raises(ConfigValidationError, match=r"roles\.r\.params") as info:
            load_config(path)
        assert match in str(info.value)


def test_check_params_returns_only_what_was_given() -> None:
    assert check_params({}) == {}
    assert check_params({"stop": ("a", "b"), "seed": 1}) == {"stop": ["a", "b"], "seed": 1}
    assert check_params({"temperature": None}) == {"temperature": None}
    assert check_params({"n": 2, "extra": {"a": 1}}) == {"extra": {"a": 1, "n": 2}}
    typed = GenerationParams(max_tokens=3, stop=("x",), extra={"max_token": 1})
    assert check_params(typed) == {"max_tokens": 3, "stop": ["x"], "extra": {"max_token": 1}}


def test_a_bad_override_never_reaches_the_openai_sdk(
    client_for, openai_server: OpenAIWireServer, monkeypatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-params")
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          openai: {{api_base: "{openai_server.base_url}"}}
        roles:
          r: {{provider: openai, model: gpt-4.1-mini}}
        """
    )
    for override in ({"stop": 123}, {"max_tokens": "10"}, {"x": object()}, {"max_token": 5}, {"y": "\ud800"}):
        with pytest.raises(InvalidRequestError):
            c.run("r", Q, override)
    for messages in ([{"role": "user", "content": "a\ud800b"}], [Message("user", "\udc80")]):
        with pytest.raises(InvalidRequestError, match=r"messages\[0\]\.content holds a lone surrogate"):
            c.run("r", messages)
    assert openai_server.requests == []
    assert c.run("r", Q, {"extra": {"user": "u"}}).content.startswith("echo")
    assert openai_server.requests[0].body["user"] == "u"


# --- messages (item 9) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "parameter", "match"),
    [
        (
            [{"role": "user", "content": "ok"}, {"role": "user", "content": "a\ud800b"}],
            "messages[1].content",
            r"messages\[1\]\.content holds a lone surrogate '\\ud800' at character 1",
        ),
        ([Message("user", "\udfff")], "messages[0].content", "lone surrogate"),
        ([Message("user", 3)], "messages[0].content", "must be a string"),  # type: ignore[arg-type]
        ([Message("robot", "hi")], "messages[0].role", "role is 'robot'"),  # type: ignore[arg-type]
        ([{"role": "user", "content": b"bytes"}], "messages[0].content", "must be a string .* got bytes"),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "messages[0].content", "got list"),
        ([{"role": "user", "content": None}], "messages[0].content", "got NoneType"),
        ([{"role": "user", "content": "x", 3: "y"}], "messages[0]", "unknown keys"),
    ],
)
def test_messages_that_cannot_be_sent_name_the_message(
    client, messages: list[Any], parameter: str, match: str
) -> None:
    for call in (
        lambda: client.run("r", messages),
        lambda: client.run("chain", messages),
        lambda: client.complete(messages, role="r"),
    ):
        with pytest.raises(InvalidRequestError, match=match) as info:
            call()
        assert info.value.parameter == parameter
    assert client.provider("cloud").calls == []


def test_prompt_and_system_strings_are_checked_too(client) -> None:
    with pytest.raises(InvalidRequestError, match="prompt holds a lone surrogate") as info:
        client.complete("half an emoji \ud83d", role="r")
    assert info.value.parameter == "prompt"
    with pytest.raises(InvalidRequestError, match="system must be a string"):
        client.complete("hi", role="r", system=5)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="system holds a lone surrogate"):
        client.complete("hi", role="r", system="\ud800")
    assert client.provider("cloud").calls == []


def test_text_that_can_be_sent_is_sent_as_is(client) -> None:
    text = "NUL \x00, emoji 😀, accents é, CJK 漢字"
    assert [m.content for m in to_messages([{"role": "user", "content": text}])] == [text]
    client.run("r", [{"role": "user", "content": text}])
    assert client.provider("cloud").calls[-1].prompt == text

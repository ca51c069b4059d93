"""A candidate's key is looked up when that candidate is tried (issue 10, item 6).

A missing key is an attempt failure a strategy moves past (an `AuthError` attempt in the trail,
nothing sent); a plain role without a strategy still raises `AuthError` naming the env var and the
key file.
"""

from __future__ import annotations

import pytest

import orchlab
from orchlab.errors import AllAttemptsFailedError, AuthError
from tests.servers.openai_wire import OpenAIWireServer

Q = [{"role": "user", "content": "What is 2+2?"}]


def config(base_url: str) -> str:
    return f"""
    project: t
    tracking: {{enabled: false}}
    providers:
      cloud: {{type: openai, api_base: "{base_url}", key_file: cloud.key}}
      cloud2: {{type: openai, api_base: "{base_url}"}}
      home: {{type: test_local, options: {{models: {{m: {{reply: "local answer"}}}}}}}}
      broken:
        type: test_local
        options: {{models: {{m: {{script: [{{error: unavailable}}, {{error: unavailable}}]}}}}}}
    roles:
      plain: {{provider: cloud, model: gpt-4.1-mini}}
      chain: {{provider: cloud, model: gpt-4.1-mini, fallbacks: ["home:m"]}}
      cloud_first:
        provider: cloud
        model: gpt-4.1-mini
        strategy: cloud_first
        candidates: ["home:m"]
      local_first:
        provider: cloud
        model: gpt-4.1-mini
        strategy: local_first
        candidates: ["broken:m"]
        retry: {{retries: 0}}
      nothing:
        provider: cloud
        model: gpt-4.1-mini
        fallbacks: ["cloud2:gpt-4.1"]
    """


@pytest.fixture
def client(client_for, openai_server: OpenAIWireServer):
    return client_for(config(openai_server.base_url))


def _unsent_auth_attempt(attempt: orchlab.types.Attempt, provider: str) -> None:
    assert (attempt.provider, attempt.outcome, attempt.error_type) == (provider, "error", "AuthError")
    assert attempt.note == "not sent: no API key"
    assert f"ORCH_AUTH_{provider.upper()}_API_KEY" in (attempt.error or "")


def test_a_fallback_moves_past_a_primary_without_a_key(client, openai_server) -> None:
    r = client.run("chain", Q)
    assert (r.content, r.target) == ("local answer", "home:m")
    first, second = r.decision.attempts
    _unsent_auth_attempt(first, "cloud")
    assert (second.provider, second.outcome) == ("home", "ok")
    assert "cloud:gpt-4.1-mini (AuthError)" in r.decision.rationale
    # the same through complete(role=...) and its async twin
    assert client.complete("What is 2+2?", role="chain").content == "local answer"
    assert openai_server.requests == []


async def test_the_async_twins_fall_back_too(client, openai_server) -> None:
    assert (await client.arun("chain", Q)).content == "local answer"
    assert (await client.acomplete("What is 2+2?", role="chain")).target == "home:m"
    assert openai_server.requests == []


def test_cloud_first_and_local_first_with_a_keyless_cloud_candidate(client, openai_server) -> None:
    r = client.run("cloud_first", Q)
    assert r.target == "home:m"
    _unsent_auth_attempt(r.decision.attempts[0], "cloud")
    # strategy= on the call, over a role without one
    r = client.complete("What is 2+2?", role="plain", strategy="cloud_first", candidates=["plain", "home:m"])
    assert r.target == "home:m" and r.decision.attempts[0].error_type == "AuthError"
    # local first: the local candidate fails, then the cloud one has no key: both are named
    with pytest.raises(AllAttemptsFailedError) as info:
        client.run("local_first", Q)
    err = info.value
    assert [type(e).__name__ for e in err.exceptions] == ["ProviderUnavailableError", "AuthError"]
    assert "broken:m (ProviderUnavailableError)" in str(err)
    assert "cloud:gpt-4.1-mini (AuthError)" in str(err)
    assert openai_server.requests == []


def test_when_no_candidate_has_a_key_the_group_names_each(client, openai_server, tmp_path) -> None:
    with pytest.raises(AllAttemptsFailedError) as info:
        client.run("nothing", Q)
    err = info.value
    assert "cloud:gpt-4.1-mini (AuthError), cloud2:gpt-4.1 (AuthError)" in str(err)
    first, second = err.exceptions
    assert isinstance(first, AuthError) and isinstance(second, AuthError)
    assert (first.env_var, first.key_file) == ("ORCH_AUTH_CLOUD_API_KEY", str(tmp_path / "cloud.key"))
    assert (second.env_var, second.key_file) == ("ORCH_AUTH_CLOUD2_API_KEY", None)
    assert openai_server.requests == []


def test_a_plain_role_still_raises_auth_error_naming_env_var_and_key_file(
    client, openai_server, tmp_path
) -> None:
    for call in (
        lambda: client.run("plain", Q),
        lambda: client.complete("What is 2+2?", role="plain"),
        lambda: client.stream("plain", Q),
    ):
        with pytest.raises(AuthError) as info:
            call()
        assert info.value.env_var == "ORCH_AUTH_CLOUD_API_KEY"
        assert "ORCH_AUTH_CLOUD_API_KEY" in str(info.value)
        assert str(tmp_path / "cloud.key") in str(info.value)
    assert openai_server.requests == []


def test_a_key_set_later_is_found_by_the_next_call(client, openai_server, monkeypatch) -> None:
    assert client.run("chain", Q).target == "home:m"
    monkeypatch.setenv("ORCH_AUTH_CLOUD_API_KEY", "sk-test-later")
    r = client.run("chain", Q)
    assert r.target == "cloud:gpt-4.1-mini" and [a.outcome for a in r.decision.attempts] == ["ok"]
    assert len(openai_server.requests) == 1


def test_a_key_file_written_later_is_found_too(client, openai_server, tmp_path) -> None:
    with pytest.raises(AuthError):
        client.run("plain", Q)
    (tmp_path / "cloud.key").write_text("sk-test-from-file\n", encoding="utf-8")
    assert client.run("plain", Q).content.startswith("echo")
    assert len(openai_server.requests) == 1


def test_binding_and_rebind_need_no_key_of_the_yaml_provider(client) -> None:
    bound = client.binding("plain")
    assert (bound.provider, bound.model, bound.role) == ("cloud", "gpt-4.1-mini", "plain")
    # rebinding away from a keyless provider works, and so does the call
    client.rebind("plain", "home:m")
    assert client.run("plain", Q).content == "local answer"
    assert client.resolve("plain").target == "home:m"
    # rebinding onto a keyless provider is refused before the binding changes
    with pytest.raises(AuthError, match="ORCH_AUTH_CLOUD2_API_KEY"):
        client.rebind("plain", "cloud2:gpt-4.1")
    assert client.binding("plain").target == "home:m"


@pytest.mark.slow
def test_the_issues_example_with_the_real_local_model(client_for, gguf_path) -> None:
    """``{provider: openai, fallbacks: ["local:gemma-3-270m"]}`` without ``ORCH_AUTH_...``."""
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          openai: {{api_base: "http://127.0.0.1:9/v1"}}
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 512}}}}
        roles:
          r:
            provider: openai
            model: gpt-4.1-mini
            fallbacks: ["local:gemma-3-270m"]
            params: {{temperature: 0, max_tokens: 8}}
        """
    )
    r = c.run("r", Q)
    assert r.target == "local:gemma-3-270m" and "4" in r.content
    assert [(a.provider, a.outcome, a.error_type) for a in r.decision.attempts] == [
        ("openai", "error", "AuthError"),
        ("local", "ok", None),
    ]
    assert r.decision.attempts[0].note == "not sent: no API key"

"""(project, env, role) -> ResolvedLLMConfig, and the request checks on run()."""

from __future__ import annotations

import pytest

import orchlab
from orchlab.errors import InvalidRequestError, UnknownRoleError
from orchlab.resolution import parse_target
from orchlab.types import to_messages

CONFIG = """\
project: shop
env: dev
providers:
  openai: {auth_profile: openai_default, api_base: "http://127.0.0.1:9/v1", timeout_s: 5}
  gpu1: {type: ollama, api_base: "http://gpu1:11434"}
  gpu2: {type: ollama, api_base: "http://gpu2:11434"}
  local: {type: llamacpp}
roles:
  llm.preprocess: {provider: local, model: gemma-3-270m, params: {temperature: 0, max_tokens: 8}}
  llm.inference:
    provider: openai
    model: gpt-4.1
    params: {temperature: 0.3, stop: ["\\n\\n"], seed: 7}
  llm.gpu: {provider: gpu2, model: "llama3.1:8b"}
envs:
  prod:
    roles:
      llm.preprocess: {provider: openai, model: gpt-4.1-mini}
"""


@pytest.fixture
def client(write_config, monkeypatch):
    monkeypatch.setenv("ORCH_AUTH_OPENAI_DEFAULT_API_KEY", "sk-x")
    return orchlab.get_llm_client(write_config(CONFIG))


def test_resolves_role_to_provider_kind_model_and_params(client):
    r = client.resolve("llm.inference")
    assert (r.provider, r.kind, r.model) == ("openai", "openai", "gpt-4.1")
    assert r.api_base == "http://127.0.0.1:9/v1"
    assert r.api_key is not None and r.api_key.reveal() == "sk-x"
    assert (r.params.temperature, r.params.stop, r.params.seed) == (0.3, ("\n\n",), 7)
    assert (r.project, r.env, r.role) == ("shop", "dev", "llm.inference")
    assert r.target == "openai:gpt-4.1"


def test_type_lets_two_hosts_share_an_adapter(client):
    r = client.resolve("llm.gpu")
    assert (r.provider, r.kind, r.api_base) == ("gpu2", "ollama", "http://gpu2:11434")


def test_keyless_local_provider(client):
    r = client.resolve("llm.preprocess")
    assert (r.kind, r.api_key, r.api_base) == ("llamacpp", None, None)


def test_project_and_env_in_resolution(client):
    assert client.resolver.resolve("llm.preprocess", env="prod").target == "openai:gpt-4.1-mini"
    assert client.resolver.resolve("llm.preprocess", project="shop").provider == "local"
    with pytest.raises(InvalidRequestError, match="project 'shop', not 'other'"):
        client.resolver.resolve("llm.preprocess", project="other")


def test_client_for_env(write_config, monkeypatch):
    monkeypatch.setenv("ORCH_AUTH_OPENAI_DEFAULT_API_KEY", "sk-x")
    prod = orchlab.get_llm_client(write_config(CONFIG), env="prod")
    assert prod.resolve("llm.preprocess").target == "openai:gpt-4.1-mini"
    assert prod.config.env == "prod"


def test_unknown_role_lists_close_matches(client):
    with pytest.raises(UnknownRoleError) as info:
        client.resolve("llm.inferenc")
    err = info.value
    assert err.role == "llm.inferenc"
    assert err.suggestions[0] == "llm.inference"
    assert "did you mean 'llm.inference'" in str(err)
    assert "llm.gpu, llm.inference, llm.preprocess" in str(err)


def test_rebind_for_the_session(client):
    assert not client.is_rebound("llm.inference")
    client.rebind("llm.inference", "gpu1:qwen2.5:7b")
    assert client.is_rebound("llm.inference") and not client.is_rebound("llm.gpu")
    r = client.resolve("llm.inference")
    assert (r.provider, r.model, r.api_base) == ("gpu1", "qwen2.5:7b", "http://gpu1:11434")
    assert r.params.temperature == 0.3
    with pytest.raises(orchlab.ConfigError, match="provider 'nope' is not defined"):
        client.rebind("llm.inference", "nope:model")
    with pytest.raises(UnknownRoleError):
        client.rebind("llm.missing", "gpu1:x")


def test_parse_target_keeps_colons_in_model():
    assert parse_target("ollama:llama3.1:8b") == ("ollama", "llama3.1:8b")
    with pytest.raises(InvalidRequestError, match="provider:model"):
        parse_target("gpt-4.1")


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([], "messages is empty"),
        ("hello", "must be a list"),
        (None, "must be a list"),
        ([{"role": "robot", "content": "hi"}], r"messages\[0\]\.role is 'robot'"),
        ([{"role": "user", "content": 3}], r"messages\[0\]\.content must be a string"),
        (["hi"], r"messages\[0\] must be a dict"),
        ([{"role": "user", "content": "x", "name": "n"}], "unknown keys"),
    ],
)
def test_bad_messages_are_refused_before_any_call(client, messages, match):
    with pytest.raises(InvalidRequestError, match=match):
        client.run("llm.inference", messages)


def test_messages_validation_keeps_order():
    msgs = to_messages([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert [(m.role, m.content) for m in msgs] == [("system", "s"), ("user", "u")]


def test_params_override_merges_over_role_defaults(client):
    request = client._request(
        client.resolve("llm.inference"),
        [{"role": "user", "content": "x"}],
        {"temperature": 0.9, "max_tokens": 5, "stop": "END", "reasoning_effort": "low"},
    )
    p = request.params
    assert (p.temperature, p.max_tokens, p.stop, p.seed) == (0.9, 5, ("END",), 7)
    assert p.extra == {"reasoning_effort": "low"}
    assert p.as_dict() == {
        "temperature": 0.9,
        "max_tokens": 5,
        "stop": ["END"],
        "seed": 7,
        "reasoning_effort": "low",
    }

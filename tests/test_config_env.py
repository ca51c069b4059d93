"""The environment in a config: ``${VAR}`` in YAML values (issue 10, item 11) and ``ORCH_ENV`` picking
an env in `get_llm_client` (item 13); saving a role binding keeps ``${VAR}`` as written."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import orchlab
from orchlab.config import parse_config
from orchlab.config.edit import save_role_binding
from orchlab.config.envvars import expand
from orchlab.errors import ConfigError, ConfigValidationError, UnknownProviderError
from tests.servers.openai_wire import OpenAIWireServer

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("http://${HOST}:${PORT}/v1", {"HOST": "h", "PORT": "8"}, "http://h:8/v1"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A}", {"A": ""}, ""),
        ("${A:-}", {}, ""),
        ("${A:-a b: c}", {}, "a b: c"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost $5 or $$5", {}, "cost $5 or $$5"),
    ],
)
def test_expansion_rules(text: str, environ: dict[str, str], expected: str) -> None:
    assert expand(text, environ)[0] == expected


def test_values_are_expanded_keys_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_OPENAI_BASE", "http://gateway.internal/v1")
    monkeypatch.setenv("MY_MODEL", "gpt-4.1-mini")
    monkeypatch.setenv("MY_TIMEOUT", "12.5")
    config = parse_config(
        textwrap.dedent(
            """\
            project: p
            providers:
              openai:
                api_base: ${MY_OPENAI_BASE}
                timeout_s: ${MY_TIMEOUT}
            roles:
              r: {provider: openai, model: "${MY_MODEL}", fallbacks: ["openai:${MY_MODEL}"]}
              ${MY_MODEL}: {provider: openai, model: "$${LITERAL}", description: "${UNSET:-none set}"}
            """
        )
    )
    assert config.providers["openai"].api_base == "http://gateway.internal/v1"
    assert config.providers["openai"].timeout_s == 12.5
    assert config.roles["r"].model == "gpt-4.1-mini"
    assert config.roles["r"].fallbacks == ["openai:gpt-4.1-mini"]
    assert config.roles["${MY_MODEL}"].model == "${LITERAL}"
    assert config.roles["${MY_MODEL}"].description == "none set"


def test_unset_variable_names_variable_key_path_and_line() -> None:
    text = "project: p\nproviders:\n  openai:\n    api_base: ${MY_OPENAI_BASE}/v1\n"
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text, source="c.yaml")
    err = info.value
    assert err.problems == [
        (
            "providers.openai.api_base",
            "environment variable MY_OPENAI_BASE is not set (set it, or give a default: "
            "${MY_OPENAI_BASE:-default})",
        )
    ]
    assert "providers.openai.api_base (line 4): environment variable MY_OPENAI_BASE" in str(err)
    assert str(err).startswith("c.yaml: 1 problem(s)")


def test_unquoted_reference_in_a_flow_mapping_gets_a_hint() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("project: p\nproviders:\n  openai: {timeout_s: ${T}}\n", source="c.yaml")
    assert info.value.line == 3
    assert 'quote a ${VAR} value inside { } or [ ]: "${VAR}"' in str(info.value)


@pytest.mark.parametrize("value", ["${OPEN", "${1X}", "${A-B}", "${}", "x${A:b}"])
def test_malformed_reference_is_an_error_not_sent_on(value: str) -> None:
    with pytest.raises(
        ConfigValidationError, match=r"roles\.r\.model \(line 5\): .*is not a variable reference"
    ):
        parse_config(
            "project: p\nproviders: {openai: {}}\nroles:\n\n"
            f"  r: {{provider: openai, model: '{value}'}}\n"
        )


def test_api_key_variables_are_not_expanded_into_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-canary-0123")
    text = "project: p\nproviders:\n  openai: {options: {headers: {x-key: '${ORCH_AUTH_OPENAI_API_KEY}'}}}\n"
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text)
    assert "${ORCH_AUTH_OPENAI_API_KEY} is an API key variable" in str(info.value)
    assert "sk-canary" not in str(info.value)


def test_errors_show_the_reference_never_the_value_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_TIMEOUT", "canary-4242")
    monkeypatch.setenv("MY_TARGET", "canary-4343")
    monkeypatch.setenv("MY_PROVIDER", "canary-4444")
    text = textwrap.dedent(
        """\
        project: p
        providers:
          openai: {timeout_s: "${MY_TIMEOUT}"}
        roles:
          r: {provider: openai, model: m, fallbacks: ["${MY_TARGET}"]}
        """
    )
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text)
    message = str(info.value) + repr(info.value.problems)
    assert "canary" not in message
    assert "providers.openai.timeout_s (line 3): Input should be a valid number" in message
    assert "(got '${MY_TIMEOUT}' from the environment)" in message
    assert "'${MY_TARGET}' is not of the form 'provider:model'" in message

    with pytest.raises(UnknownProviderError) as unknown:
        parse_config(
            "project: p\nproviders: {openai: {}}\nroles:\n  r: {provider: '${MY_PROVIDER}', model: m}\n"
        )
    assert "canary" not in str(unknown.value) and unknown.value.provider == "${MY_PROVIDER}"
    assert "provider '${MY_PROVIDER}' is not defined" in str(unknown.value)
    assert unknown.value.__context__ is None and unknown.value.__cause__ is None  # nothing chained names it


def test_expanded_api_base_reaches_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
    openai_server: OpenAIWireServer,
    client_for: Callable[..., orchlab.Orchestrator],
) -> None:
    # today the literal "${MY_OPENAI_BASE}" was the SDK's base URL
    monkeypatch.setenv("MY_OPENAI_BASE", openai_server.base_url)
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test")
    client = client_for(
        """\
        project: p
        providers:
          openai: {api_base: "${MY_OPENAI_BASE}"}
        roles:
          r: {provider: openai, model: "${MY_MODEL:-gpt-4.1-mini}"}
        """
    )
    r = client.run("r", MESSAGES)
    assert [req.path for req in openai_server.requests] == ["/v1/chat/completions"]
    assert openai_server.requests[0].body["model"] == "gpt-4.1-mini"
    assert r.model == "gpt-4.1-mini" and r.content


def test_saving_a_binding_writes_back_the_reference_not_its_value(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    monkeypatch.setenv("MY_OPENAI_BASE", "http://gateway.internal/v1")
    path = write_config(
        """\
        project: p
        providers:
          openai: {api_base: "${MY_OPENAI_BASE}", timeout_s: "${MY_TIMEOUT:-30}"}
        roles:  # the main role
          r: {provider: openai, model: gpt-4.1}
        """
    )
    assert save_role_binding(path, "r", "openai:gpt-4.1-mini") == "roles.r"
    assert path.read_text(encoding="utf-8") == textwrap.dedent(
        """\
        project: p
        providers:
          openai: {api_base: "${MY_OPENAI_BASE}", timeout_s: "${MY_TIMEOUT:-30}"}
        roles:  # the main role
          r: {provider: openai, model: gpt-4.1-mini}
        """
    )
    config = orchlab.load_config(path)
    assert (config.providers["openai"].api_base, config.providers["openai"].timeout_s) == (
        "http://gateway.internal/v1",
        30.0,
    )


def test_saving_refuses_a_file_that_does_not_load_with_orchlab_errors(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(
        "project: p\nproviders: {openai: {}}\nroles:\n  r: {provider: openai, model: m}\n  r: {}\n"
    )
    before = path.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match=r"roles\.r: the key 'r' appears twice"):
        save_role_binding(path, "r", "openai:gpt-4.1")
    assert path.read_text(encoding="utf-8") == before


# --- ORCH_ENV -----------------------------------------------------------------------------------

ENVS = """\
project: p
env: dev
providers:
  local: {type: llamacpp}
  openai: {}
roles:
  r: {provider: local, model: gemma-3-270m}
envs:
  prod:
    roles:
      r: {provider: openai, model: gpt-4.1}
  staging: {}
"""


def test_orch_env_picks_the_overlay(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    path = write_config(ENVS)
    monkeypatch.setenv("ORCH_ENV", "prod")
    client = orchlab.get_llm_client(path)
    try:
        assert client.config.env == "prod"
        assert client.config.roles["r"].model == "gpt-4.1"
    finally:
        client.close()


def test_explicit_env_wins_over_orch_env(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    path = write_config(ENVS)
    monkeypatch.setenv("ORCH_ENV", "prod")
    client = orchlab.get_llm_client(path, env="dev")
    try:
        assert client.config.env == "dev"
        assert client.config.roles["r"].model == "gemma-3-270m"
    finally:
        client.close()


def test_unknown_env_lists_the_envs_that_exist(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    path = write_config(ENVS)
    monkeypatch.setenv("ORCH_ENV", "prdo")
    with pytest.raises(ConfigError) as info:
        orchlab.get_llm_client(path)
    assert str(info.value) == (
        f"{path}: env 'prdo' (from ORCH_ENV) is not defined; the envs are dev, prod, staging "
        "('dev' is the base, set by env:; the others are under envs:); did you mean 'prod'?"
    )
    with pytest.raises(
        ConfigError, match=r"env 'qa' \(from env=\) is not defined; the envs are dev, prod, staging"
    ):
        orchlab.get_llm_client(path, env="qa")


def test_empty_orch_env_is_unset(
    monkeypatch: pytest.MonkeyPatch, write_config: Callable[[str], Path]
) -> None:
    monkeypatch.setenv("ORCH_ENV", "")
    client = orchlab.get_llm_client(write_config(ENVS))
    try:
        assert client.config.env == "dev"
    finally:
        client.close()

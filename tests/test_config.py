"""Config loading: the schema, the embedded default, and each bad-input error."""

from __future__ import annotations

import textwrap

import pytest

import orchlab
from orchlab.config import load_config, parse_config
from orchlab.errors import (
    ConfigFileError,
    ConfigValidationError,
    UnknownProviderError,
)

EXAMPLE = """\
project: my_project
env: dev
providers:
  openai: {auth_profile: openai_default, api_base: https://api.openai.com/v1}
  anthropic: {auth_profile: anthropic_default, api_base: https://api.anthropic.com}
roles:
  llm.preprocess: {provider: openai, model: gpt-4.1-mini}
  llm.inference: {provider: openai, model: gpt-4.1}
"""


def test_issue_example_parses_into_typed_config():
    config = parse_config(EXAMPLE)
    assert config.project == "my_project"
    assert config.env == "dev"
    assert config.providers["openai"].auth_profile == "openai_default"
    assert config.providers["anthropic"].api_base == "https://api.anthropic.com"
    assert config.roles["llm.inference"].model == "gpt-4.1"
    assert config.roles["llm.preprocess"].provider == "openai"


def test_type_params_and_fallbacks():
    config = parse_config(
        textwrap.dedent(
            """\
        project: p
        providers:
          gpu1: {type: ollama, api_base: "http://gpu1:11434"}
          gpu2: {type: ollama, api_base: "http://gpu2:11434"}
          openai: {}
        roles:
          r:
            provider: gpu1
            model: "llama3.1:8b"
            params: {temperature: 0.2, max_tokens: 64, stop: "END", extra: {num_ctx: 4096}}
            fallbacks: ["gpu2:llama3.1:8b", "openai:gpt-4.1-mini"]
        """
        )
    )
    role = config.roles["r"]
    assert role.params.temperature == 0.2
    assert role.params.stop == ["END"]
    assert role.params.extra == {"num_ctx": 4096}
    assert role.fallbacks == ["gpu2:llama3.1:8b", "openai:gpt-4.1-mini"]
    assert config.providers["gpu2"].type == "ollama"


def test_embedded_default_binds_example_roles_to_the_local_model():
    config = load_config(None)
    assert {"llm.preprocess", "llm.inference"} <= set(config.roles)
    for role in config.roles.values():
        assert config.providers[role.provider].type == "llamacpp"
        assert config.providers[role.provider].auth_profile is None


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigFileError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    assert info.value.path == str(missing)


def test_invalid_yaml_reports_file_line_and_column(write_config):
    path = write_config("project: x\nroles:\n  r: {provider: a, model: [\n")
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    err = info.value
    assert err.path == str(path)
    assert err.line == 4 and err.column is not None
    assert f"{path}:4:" in str(err)
    assert isinstance(err, orchlab.ConfigError)


@pytest.mark.parametrize("text", ["", "- a\n- b\n"])
def test_empty_or_non_mapping_file(write_config, text):
    with pytest.raises(ConfigFileError, match=r"empty|top level must be a mapping"):
        load_config(write_config(text))


def test_schema_violations_report_key_path_line_and_expectation(write_config):
    path = write_config(
        "project: x\n"
        "providers:\n"
        "  openai: {auth_profile: a, api_bas: http://x}\n"
        "roles:\n"
        "  llm.r: {provider: openai, model: m, params: {temperature: 5}}\n"
        "  llm.s: {provider: openai}\n"
    )
    with pytest.raises(ConfigValidationError) as info:
        load_config(path)
    problems = dict(info.value.problems)
    assert problems["providers.openai.api_bas"] == "unknown key (not part of the schema)"
    assert "less than or equal to 2" in problems["roles.llm.r.params.temperature"]
    assert "the role gives provider but no model: give both, or neither" in problems["roles.llm.s"]
    text = str(info.value)
    assert str(path) in text
    assert "providers.openai.api_bas (line 3)" in text
    assert "roles.llm.r.params.temperature (line 5)" in text


def test_bad_fallback_target_form(write_config):
    path = write_config(
        "project: x\nproviders: {openai: {}}\n"
        "roles:\n  r: {provider: openai, model: m, fallbacks: [gpt-4.1]}\n"
    )
    with pytest.raises(ConfigValidationError, match=r"roles\.r\.fallbacks\[0\].*provider:model"):
        load_config(path)


def test_a_wrong_candidate_is_one_problem_in_the_form_it_is_written(write_config):
    # a candidate is a string, a {target: ...} or a {strategy: ...}: each mistake is reported once,
    # against the form it is written in (a plain union reported all three forms' complaints)
    path = write_config(
        "project: x\nproviders: {local: {type: llamacpp}}\n"
        "roles:\n"
        "  r:\n"
        "    provider: local\n"
        "    model: m\n"
        "    strategy: cascade\n"
        "    candidates:\n"
        "      - llm.other\n"
        "      - {target: 'local:m', treshold: 0.5}\n"
        "      - {strategy: parallel, candidates: [nope]}\n"
    )
    with pytest.raises(ConfigValidationError) as info:
        load_config(path)
    problems = dict(info.value.problems)
    assert sorted(problems) == [
        "roles.r.candidates[0]",
        "roles.r.candidates[1].treshold",
        "roles.r.candidates[2].candidates[0]",
    ]
    assert problems["roles.r.candidates[0]"].startswith("'llm.other' is not of the form 'provider:model'")
    assert problems["roles.r.candidates[1].treshold"] == "unknown key (not part of the schema)"
    assert "'nope' is not of the form" in problems["roles.r.candidates[2].candidates[0]"]
    text = str(info.value)
    assert "roles.r.candidates[0] (line 9)" in text
    assert "roles.r.candidates[2].candidates[0] (line 11)" in text
    assert "Value error" not in text and "function-after" not in text


def test_role_naming_unknown_provider(write_config):
    path = write_config("project: x\nproviders: {openai: {}}\nroles:\n  r: {provider: opena, model: m}\n")
    with pytest.raises(UnknownProviderError) as info:
        load_config(path)
    assert info.value.provider == "opena"
    assert "roles.r.provider" in str(info.value)
    assert "did you mean 'openai'" in str(info.value)


def test_fallback_naming_unknown_provider(write_config):
    path = write_config(
        "project: x\nproviders: {openai: {}}\n"
        "roles:\n  r: {provider: openai, model: m, fallbacks: ['anthropic:claude']}\n"
    )
    with pytest.raises(UnknownProviderError, match=r"roles\.r\.fallbacks.*'anthropic' is not defined"):
        load_config(path)


def test_unknown_adapter_type(write_config):
    path = write_config("project: x\nproviders:\n  gpu1: {type: olama}\nroles: {}\n")
    with pytest.raises(UnknownProviderError) as info:
        load_config(path)
    assert "providers.gpu1: unknown adapter type 'olama'" in str(info.value)
    assert "did you mean 'ollama'" in str(info.value)


def test_provider_key_that_is_no_known_kind_needs_a_type(write_config):
    path = write_config("project: x\nproviders:\n  mybox: {api_base: http://x}\nroles: {}\n")
    with pytest.raises(UnknownProviderError, match=r"providers\.mybox: unknown adapter type 'mybox'"):
        load_config(path)


def test_env_overlay_replaces_roles_and_providers():
    config = parse_config(
        "project: p\nenv: dev\n"
        "providers: {local: {type: llamacpp}, openai: {}}\n"
        "roles: {r: {provider: local, model: gemma}}\n"
        "envs:\n  prod:\n    roles: {r: {provider: openai, model: gpt-4.1}}\n"
    )
    prod = config.for_env("prod")
    assert prod.env == "prod"
    assert prod.roles["r"].provider == "openai"
    assert config.roles["r"].provider == "local"


def test_env_overlay_references_are_checked():
    with pytest.raises(UnknownProviderError, match=r"envs\.prod\.roles\.r\.provider"):
        parse_config(
            "project: p\nproviders: {local: {type: llamacpp}}\n"
            "roles: {r: {provider: local, model: g}}\n"
            "envs:\n  prod:\n    roles: {r: {provider: openai, model: gpt-4.1}}\n"
        )

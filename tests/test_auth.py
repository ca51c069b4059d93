"""Auth profiles: env var first, then the key file; the key never shows."""

from __future__ import annotations

import pickle

import pytest

import orchlab
from orchlab.auth import Secret, env_var_for, resolve_api_key
from orchlab.errors import AuthError

KEY = "sk-test-0123456789abcdef"


def test_env_var_name_from_profile():
    assert env_var_for("openai_default") == "ORCH_AUTH_OPENAI_DEFAULT_API_KEY"
    assert env_var_for("team-gpu.1") == "ORCH_AUTH_TEAM_GPU_1_API_KEY"


def test_env_var_wins_over_key_file(tmp_path, monkeypatch):
    key_file = tmp_path / "key.txt"
    key_file.write_text("sk-from-file\n")
    monkeypatch.setenv("ORCH_AUTH_P_API_KEY", KEY)
    secret = resolve_api_key(provider="openai", profile="p", key_file=str(key_file))
    assert secret is not None and secret.reveal() == KEY


def test_key_file_relative_to_config_dir(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "openai.key").write_text(f"  {KEY}\n")
    secret = resolve_api_key(provider="openai", profile="p", key_file="secrets/openai.key", base_dir=tmp_path)
    assert secret is not None and secret.reveal() == KEY


def test_missing_key_names_env_var_and_file(tmp_path):
    with pytest.raises(AuthError) as info:
        resolve_api_key(provider="openai", profile="openai_default", key_file=str(tmp_path / "k"))
    err = info.value
    assert err.env_var == "ORCH_AUTH_OPENAI_DEFAULT_API_KEY"
    assert err.key_file == str(tmp_path / "k")
    assert "ORCH_AUTH_OPENAI_DEFAULT_API_KEY" in str(err) and str(tmp_path / "k") in str(err)
    assert "'openai'" in str(err)


def test_optional_key_is_none_when_absent():
    assert resolve_api_key(provider="vllm", profile="vllm", key_file=None, required=False) is None


def test_secret_never_prints():
    secret = Secret(KEY)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{[secret]}"):
        assert KEY not in shown
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_missing_key_at_resolution_is_an_auth_error(write_config):
    path = write_config(
        "project: x\nproviders:\n  openai: {auth_profile: openai_default}\n"
        "roles:\n  r: {provider: openai, model: gpt-4.1-mini}\n"
    )
    client = orchlab.get_llm_client(path)
    with pytest.raises(orchlab.AuthError, match="ORCH_AUTH_OPENAI_DEFAULT_API_KEY"):
        client.resolve("r")


def test_provider_without_profile_uses_its_name(write_config, monkeypatch):
    path = write_config(
        "project: x\nproviders: {anthropic: {}}\nroles: {r: {provider: anthropic, model: c}}\n"
    )
    monkeypatch.setenv("ORCH_AUTH_ANTHROPIC_API_KEY", KEY)
    resolved = orchlab.get_llm_client(path).resolve("r")
    assert resolved.api_key is not None and resolved.api_key.reveal() == KEY


def test_resolved_config_and_provider_never_show_the_key(write_config, monkeypatch):
    path = write_config(
        "project: x\nproviders:\n  openai: {auth_profile: team}\nroles:\n  r: {provider: openai, model: m}\n"
    )
    monkeypatch.setenv("ORCH_AUTH_TEAM_API_KEY", KEY)
    client = orchlab.get_llm_client(path)
    resolved = client.resolve("r")
    assert resolved.api_key is not None and resolved.api_key.reveal() == KEY
    provider = client.provider("openai")
    for shown in (repr(resolved), str(resolved), repr(provider), repr(provider.settings), repr(client)):
        assert KEY not in shown

"""Hostile config files: each is refused at load with an orchlab error naming the file, the key path
and the line (issue 10, item 10). How fast they are refused is measured in benchmarks/config_load.py."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from orchlab.auth import resolve_api_key
from orchlab.config import document, load_config, parse_config, yaml_reader
from orchlab.errors import AuthError, ConfigFileError, ConfigValidationError

BASE = """\
project: p
providers:
  openai: {}
roles:
  r: {provider: openai, model: m}
"""


def _role(extra: str) -> str:
    """BASE plus a role ``s`` (line 6) with ``extra`` inside its flow mapping."""
    return BASE + f"  s: {{provider: openai, model: m, {extra}}}\n"


@pytest.fixture(params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both of PyYAML's parsers: the C one when it is built, the Python one otherwise."""
    if request.param == "pure-python":
        monkeypatch.setattr(yaml_reader, "_LOADER", yaml.SafeLoader)
    return str(request.param)


# --- encodings ----------------------------------------------------------------------------------


def test_non_utf8_config_file_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(BASE.encode() + "  s: {provider: openai, model: caf\xe9}\n".encode("latin-1"))
    with pytest.raises(ConfigFileError) as info:
        load_config(path)
    err = info.value
    assert (err.path, err.line, err.column) == (str(path), 6, 35)
    assert f"{path}:6:35: the file is not UTF-8 text (byte 0xe9)" in str(err)


def test_utf8_with_a_bom_loads(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert load_config(path).roles["r"].model == "m"


def test_control_character_names_line(parser: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(BASE + "  s: {provider: openai, model: a\x00b}\n", source="c.yaml")
    assert info.value.line == 6
    assert "c.yaml:6:" in str(info.value)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"\xff\xfe\x00k\x00e\x00y", "is not UTF-8 text (byte 0 of the file)"),
        (b"sk-abc\x00def\n", "character 7 of the key"),
        (b"sk-abc\nsk-def\n", "character 7 of the key"),
        ("sk-ab\u00e9\n".encode(), "character 6 of the key"),
    ],
)
def test_binary_or_non_ascii_key_file_is_an_auth_error(tmp_path: Path, content: bytes, problem: str) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_bytes(content)
    with pytest.raises(AuthError) as info:
        resolve_api_key(provider="openai", profile="openai_default", key_file=str(key_file))
    assert problem in str(info.value)
    assert info.value.key_file == str(key_file)
    assert "ORCH_AUTH_OPENAI_DEFAULT_API_KEY" in str(info.value)
    assert "sk-" not in str(info.value)


def test_key_file_with_bom_and_newline_reads_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "openai.key"
    key_file.write_bytes(b"\xef\xbb\xbfsk-good\r\n")
    secret = resolve_api_key(provider="openai", profile="openai_default", key_file=str(key_file))
    assert secret is not None and secret.reveal() == "sk-good"


# --- tags and scalars ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ("params: {temperature: !!float abc}", "roles.s.params.temperature", "'abc' is not a valid !!float"),
        ("params: {logprobs: !!bool maybe}", "roles.s.params.logprobs", "'maybe' is not a valid !!bool"),
        ("params: {seed: !!int 0xZZ}", "roles.s.params.seed", "'0xZZ' is not a valid !!int"),
        ("description: !!timestamp soon", "roles.s.description", "'soon' is not a valid !!timestamp"),
        ("description: !!binary '#not base64'", "roles.s.description", "is not a valid !!binary"),
        ("description: !custom x", "roles.s.description", "the tag !custom is not allowed"),
        ("description: !!python/name:os.system x", "roles.s.description", "is not allowed in a config"),
        ("params: !!set {a, b}", "roles.s.params", "the tag !!set cannot mark a mapping"),
        ("fallbacks: !!omap [a: 1]", "roles.s.fallbacks", "the tag !!omap cannot mark a list"),
    ],
)
def test_bad_tags_name_key_path_and_line(extra: str, key: str, problem: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(_role(extra), source="c.yaml")
    err = info.value
    assert err.key_path == key
    assert err.line == 6
    assert str(err).startswith(f"c.yaml:6:{err.column}: {key}: ")
    assert problem in str(err)


def test_integer_over_python_digit_limit() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(_role("params: {seed: " + "9" * 5000 + "}"), source="c.yaml")
    assert info.value.key_path == "roles.s.params.seed"
    assert info.value.line == 6
    assert "an integer of 5,000 digits; the most Python reads is 4,300" in str(info.value)


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(BASE + "---\nproject: q\n", source="c.yaml")
    assert info.value.line == 6
    assert "a second YAML document" in str(info.value)


def test_syntax_error_names_the_key_path_it_is_in(parser: str) -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(BASE + "  s:\n    provider: openai\n    model: [a, b}\n  t: {}\n", source="c.yaml")
    err = info.value
    assert (err.line, err.column) == (8, 17)
    assert err.key_path == "roles.s.model[2]"
    assert "c.yaml:8:17: invalid YAML: " in str(err) and "(in roles.s.model[2])" in str(err)


# --- nesting and aliases ------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_refused_not_a_recursion_error(parser: str, style: str) -> None:
    depth = 900
    if style == "flow":
        text = (
            BASE + "  s: {provider: openai, model: m, params: {extra: " + "[" * depth + "]" * depth + "}}\n"
        )
    else:
        text = BASE + "  s:\n    provider: openai\n    model: m\n    params:\n      extra:\n"
        text += "".join("  " * (4 + n) + f"k{n}:\n" for n in range(depth)) + "  " * (4 + depth) + "v: 1\n"
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, source="c.yaml")
    err = info.value
    assert f"nested deeper than {document.MAX_DEPTH} levels" in str(err)
    assert err.key_path is not None and err.key_path.startswith("roles.s.params.extra")
    assert err.line is not None and err.line >= 6


def test_nesting_up_to_the_bound_loads() -> None:
    # root, roles, s, params, extra = 5 levels; then lists up to the bound
    inner = document.MAX_DEPTH - 5
    config = parse_config(_role("params: {extra: {x: " + "[" * inner + "1" + "]" * inner + "}}"))
    value = config.roles["s"].params.extra["x"]
    for _ in range(inner - 1):
        value = value[0]
    assert value == [1]


def _bomb(levels: int, width: int = 10) -> str:
    """``providers.openai.options`` holding ``width**levels`` strings once aliases are expanded."""
    lines = [
        "project: p",
        "providers:",
        "  openai:",
        "    options:",
        "      l0: &l0 [" + ", ".join(["lol"] * width) + "]",
    ]
    for n in range(1, levels):
        lines.append(f"      l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused_at_the_alias_that_passes_the_bound(parser: str) -> None:
    # 10**9 strings once expanded; today it loads in a blink and hangs the first repr(config)
    with pytest.raises(ConfigFileError) as info:
        parse_config(_bomb(9), source="bomb.yaml")
    err = info.value
    # l1 and l2 add 110 + 1,110 nodes; each *l2 in l3 adds 1,111: the 8th passes 10,000 (line 8)
    assert err.line == 8
    assert err.key_path == "providers.openai.options.l3[7]"
    assert "aliases expand to more than 10,000 nodes (*l2 alone is 1,111)" in str(err)


def test_aliases_within_the_bound_load_as_copies() -> None:
    config = parse_config(_bomb(3))
    options = config.providers["openai"].options
    assert options["l2"] == [[["lol"] * 10] * 10] * 10
    assert options["l2"][0] is not options["l2"][1]


def test_recursive_alias_is_refused() -> None:
    text = BASE.replace("openai: {}", "openai: {options: &loop {self: *loop}}")
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, source="c.yaml")
    assert info.value.line == 3
    assert "alias *loop is inside its own anchor" in str(info.value)


def test_aliases_and_merge_keys_still_work() -> None:
    text = textwrap.dedent(
        """\
        project: p
        providers:
          openai: {}
        roles:
          a: {provider: openai, model: m, params: &defaults {temperature: 0.2, max_tokens: 64}}
          b: {provider: openai, model: m, params: *defaults}
          c:
            provider: openai
            model: m
            params:
              <<: *defaults
              max_tokens: 128
        """
    )
    config = parse_config(text)
    assert config.roles["b"].params.max_tokens == 64
    assert (config.roles["c"].params.temperature, config.roles["c"].params.max_tokens) == (0.2, 128)


def test_errors_inside_an_anchor_name_the_anchors_line() -> None:
    text = (
        BASE
        + "  a: {provider: openai, model: m, params: &p {temperature: 5}}\n"
        + "  b: {provider: openai, model: m, params: *p}\n"
    )
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text)
    assert "roles.b.params.temperature (line 6)" in str(info.value)


# --- duplicate keys ------------------------------------------------------------------------------


def test_duplicate_key_names_both_lines() -> None:
    text = BASE + "  s: {provider: openai, model: m}\n  r: {provider: openai, model: other}\n"
    with pytest.raises(ConfigFileError) as info:
        parse_config(text, source="c.yaml")
    err = info.value
    assert (err.line, err.key_path) == (7, "roles.r")
    assert "the key 'r' appears twice in one mapping (lines 5 and 7); keep one" in str(err)


def test_duplicate_nested_key() -> None:
    with pytest.raises(ConfigFileError) as info:
        parse_config(_role("params: {temperature: 0.1, temperature: 0.9}"), source="c.yaml")
    assert info.value.key_path == "roles.s.params.temperature"
    assert "appears twice" in str(info.value)


# --- values the schema refuses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        (BASE.replace("openai: {}", "openai: {timeout_s: .inf}"), "providers.openai.timeout_s", 3),
        (BASE.replace("openai: {}", "openai: {timeout_s: .nan}"), "providers.openai.timeout_s", 3),
        (_role("params: {timeout_s: .inf}"), "roles.s.params.timeout_s", 6),
        (_role("retry: {backoff_s: .inf}"), "roles.s.retry.backoff_s", 6),
        (BASE + "budgets: {session_usd: .inf}\n", "budgets.session_usd", 6),
        (BASE + "budgets: {per_role_usd: {r: .nan}}\n", "budgets.per_role_usd.r", 6),
        (
            BASE + "models:\n  openai:m: {input_price_per_mtok: .inf, output_price_per_mtok: 1}\n",
            "models.openai:m.input_price_per_mtok",
            7,
        ),
    ],
)
def test_infinite_or_nan_timeouts_prices_and_budgets(text: str, key: str, line: int) -> None:
    with pytest.raises(ConfigValidationError) as info:
        parse_config(text, source="c.yaml")
    assert "finite number" in dict(info.value.problems)[key]
    assert f"{key} (line {line}): Input should be a finite number" in str(info.value)


def test_invalid_cascade_regex_is_refused_at_load() -> None:
    with pytest.raises(ConfigValidationError) as info:
        parse_config(_role("cascade: {scorer: regex, pattern: '(('}"), source="c.yaml")
    message = dict(info.value.problems)["roles.s.cascade.pattern"]
    assert "not a valid regular expression: missing ), unterminated subpattern" in message
    assert "roles.s.cascade.pattern (line 6)" in str(info.value)


def test_valid_cascade_regex_loads() -> None:
    config = parse_config(_role(r"cascade: {scorer: regex, pattern: '^\d+$'}"))
    assert config.roles["s"].cascade is not None and config.roles["s"].cascade.pattern == r"^\d+$"


def test_five_thousand_schema_errors_show_fifty_with_lines_and_the_count() -> None:
    roles = "".join(f"  r{n}: {{provider: openai, model: m, bogus: 1}}\n" for n in range(5000))
    with pytest.raises(ConfigValidationError) as info:
        parse_config("project: p\nproviders:\n  openai: {}\nroles:\n" + roles, source="c.yaml")
    err = info.value
    assert len(err.problems) == 5000
    lines = str(err).splitlines()
    assert lines[0] == "c.yaml: 5000 problem(s) in the config:"
    assert lines[1] == "  roles.r0.bogus (line 5): unknown key (not part of the schema)"
    assert lines[50] == "  roles.r49.bogus (line 54): unknown key (not part of the schema)"
    assert lines[51] == "  … and 4950 more (5000 in total)"
    assert len(lines) == 52


def test_long_values_are_cut_short_in_messages() -> None:
    with pytest.raises(ConfigValidationError) as info:
        parse_config(_role("params: {temperature: '" + "x" * 10_000 + "'}"))
    assert len(str(info.value)) < 400

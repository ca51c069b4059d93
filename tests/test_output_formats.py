"""``format="raw" | "markdown" | "json"`` on run/arun/complete, and formatters a user adds
(`register_formatter`, or an installed entry point of the group ``orchlab.formatters``)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import orchlab
from orchlab.errors import InvalidRequestError, OutputValidationError, PluginError
from orchlab.orchestrator import Orchestrator
from orchlab.output.formats import FORMATTERS, Formatted, markdown, register_formatter, unregister_formatter

FAKE = """
project: t
providers:
  fake: {type: test}
roles:
  r: {provider: fake, model: m}
  chain: {provider: fake, model: m, fallbacks: ["fake:n"]}
"""
ASK = [{"role": "user", "content": "Go"}]


@pytest.fixture
def fake(client_for: Callable[..., Orchestrator]) -> Orchestrator:
    return client_for(FAKE)


def test_markdown_closes_fences_and_ends_with_one_newline() -> None:
    assert markdown("# Title  \r\n\r\nSome text\t\n\n\n") == "# Title\n\nSome text\n"
    assert markdown("Code:\n```python\nprint(1)") == "Code:\n```python\nprint(1)\n```\n"
    assert markdown("```\na\n```\n~~~\nb") == "```\na\n```\n~~~\nb\n~~~\n"
    assert markdown("```\na\n```") == "```\na\n```\n"


def test_raw_is_the_text_as_generated(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", "  two  spaces\n\n")
    assert fake.run("r", ASK, format="raw").content == "  two  spaces\n\n"
    fake.provider("fake").script("m", "  two  spaces\n\n")
    assert fake.run("r", ASK, format="markdown").content == "  two  spaces\n"


async def test_json_is_the_parsed_value_from_prose_or_fences(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", 'Sure: {"a": [1, 2], "b": "é"} done', "```json\n[1, 2]\n```")
    r = fake.run("r", ASK, format="json")
    assert r.output == {"a": [1, 2], "b": "é"}
    assert r.content == '{"a": [1, 2], "b": "é"}'
    r = await fake.arun("r", ASK, format="json")
    assert r.output == [1, 2]


def test_json_without_json_is_an_output_validation_error(fake: Orchestrator) -> None:
    fake.provider("fake").script("m", "no json here")
    with pytest.raises(OutputValidationError, match="format 'json': the answer holds no JSON value") as info:
        fake.run("r", ASK, format="json")
    assert info.value.raw == "no json here"


def test_an_unknown_format_is_refused_before_anything_is_sent(fake: Orchestrator) -> None:
    with pytest.raises(InvalidRequestError, match="unknown format 'jsn'; did you mean 'json'") as info:
        fake.run("r", ASK, format="jsn")
    assert info.value.parameter == "format"
    with pytest.raises(InvalidRequestError, match="format='json' and output= do not combine"):
        fake.complete("Go", role="r", format="json", output=dict)
    assert fake.provider("fake").calls == []


def test_a_formatter_you_add_works_on_run_and_complete_with_a_strategy(fake: Orchestrator) -> None:
    register_formatter("shout", lambda text: text.upper())
    register_formatter("words", lambda text: Formatted(text, text.split()))
    try:
        fake.provider("fake").script("m", "hello there", "a b c")
        assert fake.run("r", ASK, format="shout").content == "HELLO THERE"
        r = fake.complete("Go", role="chain", format="words")
        assert r.output == ["a", "b", "c"] and r.decision is not None
        assert "shout" in FORMATTERS.known()
    finally:
        unregister_formatter("shout")
        unregister_formatter("words")
    with pytest.raises(PluginError, match="'json' is a built-in format and cannot be replaced"):
        register_formatter("json", str.strip)
    with pytest.raises(PluginError, match="a format name is lower case"):
        register_formatter("Bad Name", str.strip)
    assert orchlab.register_formatter is register_formatter


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """A distribution on sys.path declaring ``title = tidy_fmt:title`` in ``orchlab.formatters``."""
    (tmp_path / "tidy_fmt.py").write_text("def title(text):\n    return text.title()\n")
    info = tmp_path / "tidy_fmt-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tidy-fmt\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[orchlab.formatters]\ntitle = tidy_fmt:title\n")
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    FORMATTERS.installed(refresh=True)
    yield tmp_path
    sys.path.remove(str(tmp_path))
    importlib.invalidate_caches()
    FORMATTERS.installed(refresh=True)
    sys.modules.pop("tidy_fmt", None)


def test_an_installed_formatter_is_found_by_its_entry_point(fake: Orchestrator, installed: Path) -> None:
    fake.provider("fake").script("m", "hello there")
    assert fake.run("r", ASK, format="title").content == "Hello There"

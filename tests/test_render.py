"""How responses render: footer, metadata, Markdown/plain text, the -f formats, small tables."""

from __future__ import annotations

import pytest

from orchlab import render
from orchlab.notebook.formats import Answer, AnswerFormatError, extract_code, extract_json
from orchlab.types import Attempt, Decision, LLMResponse, Usage


def make_response(**changes: object) -> LLMResponse:
    values: dict[str, object] = {
        "content": "Paris is the capital of France.",
        "provider": "openai",
        "model": "gpt-4.1-mini",
        "role": "llm.inference",
        "usage": Usage(input_tokens=13, output_tokens=7),
        "latency_s": 0.4213,
        "cost_usd": 0.0000164,
        "trace_id": "tr-0123abcd",
        "finish_reason": "stop",
    }
    values.update(changes)
    return LLMResponse(**values)  # type: ignore[arg-type]


def test_footer_names_provider_model_tokens_cost_latency() -> None:
    assert render.footer(make_response()) == "openai · gpt-4.1-mini · 13 → 7 tokens · $0.000016 · 0.42 s"


def test_footer_adds_the_strategy_when_one_decided() -> None:
    decision = Decision(strategy="cascade", task_type="reasoning", attempts=[], winner="openai:gpt-4.1-mini")
    text = render.footer(make_response(decision=decision))
    assert text.endswith(" · 0.42 s · cascade (reasoning)")
    single = Decision(strategy="single", attempts=[Attempt("openai", "gpt-4.1-mini", "ok", 0.4)])
    assert "single" not in render.footer(make_response(decision=single))


@pytest.mark.parametrize(
    ("cost", "note", "shown"),
    [
        (0.0, None, "$0"),
        (0.0123456, None, "$0.0123"),
        (0.0000164, None, "$0.000016"),
        (3e-9, None, "$3.00e-09"),
        (None, "no price for acme:x", "cost unknown (no price for acme:x)"),
        (None, None, "cost unknown"),
    ],
)
def test_cost_formatting_never_hides_an_unknown_price(
    cost: float | None, note: str | None, shown: str
) -> None:
    assert render.format_cost(cost, note) == shown


def test_mimebundle_has_markdown_text_and_metadata() -> None:
    response = make_response()
    data, meta = response._repr_mimebundle_()
    assert data["text/markdown"] == (
        "Paris is the capital of France.\n\n"
        "<sub>openai · gpt-4.1-mini · 13 → 7 tokens · $0.000016 · 0.42 s</sub>"
    )
    assert data["text/plain"] == (
        "Paris is the capital of France.\n── openai · gpt-4.1-mini · 13 → 7 tokens · $0.000016 · 0.42 s"
    )
    m = meta["orchlab"]
    assert (m["provider"], m["model"], m["role"]) == ("openai", "gpt-4.1-mini", "llm.inference")
    assert (m["input_tokens"], m["output_tokens"], m["total_tokens"]) == (13, 7, 20)
    assert m["cost_usd"] == 0.0000164
    assert m["latency_s"] == 0.4213
    assert m["trace_id"] == "tr-0123abcd"
    assert response._repr_markdown_() == data["text/markdown"]


def test_ipython_formatter_uses_the_bundle() -> None:
    from IPython.core.formatters import DisplayFormatter

    data, meta = DisplayFormatter().format(make_response())
    assert data["text/plain"].startswith("Paris is the capital of France.\n── openai")
    assert data["text/markdown"].endswith("</sub>")
    assert meta["orchlab"]["model"] == "gpt-4.1-mini"


def test_an_unclosed_fence_is_closed_before_the_footer() -> None:
    md = render.to_markdown(make_response(content="```python\ndef f():\n    return 1"))
    assert md.startswith("```python\ndef f():\n    return 1\n```\n\n<sub>")


@pytest.mark.parametrize(
    ("text", "code", "lang"),
    [
        ("Here:\n```python\nprint(1)\n```\nDone.", "print(1)", "python"),
        ("```\nx = 1\ny = 2\n```", "x = 1\ny = 2", None),
        ("```sql\nSELECT 1", "SELECT 1", "sql"),  # cut off by max_tokens
        ("def f(x):\n    return x\n", "def f(x):\n    return x", None),
    ],
)
def test_extract_code(text: str, code: str, lang: str | None) -> None:
    assert extract_code(text) == (code, lang)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"name": "Alice", "age": 30}', {"name": "Alice", "age": 30}),
        ('Sure!\n```json\n[1, 2, {"a": null}]\n```', [1, 2, {"a": None}]),
        ('The answer is {"ok": true} as requested.', {"ok": True}),
        ("  42 ", 42),
    ],
)
def test_extract_json(text: str, value: object) -> None:
    assert extract_json(text) == value


def test_extract_json_says_what_is_wrong() -> None:
    with pytest.raises(AnswerFormatError, match=r"not JSON \(Expecting value at line 1\): 'Paris is"):
        extract_json("Paris is the capital of France.")


def test_answer_formats() -> None:
    r = make_response(content='Here you go:\n```json\n{"a": 1}\n```')
    data, value = Answer(r, "json").body()
    assert value == {"a": 1}
    assert data["text/plain"].startswith('{\n  "a": 1\n}\n── openai')
    assert data["text/markdown"].startswith('```json\n{\n  "a": 1\n}\n```\n\n<sub>')

    code = make_response(content="```python\nprint('hi')\n```")
    data, value = Answer(code, "code").body()
    assert value == "print('hi')"
    assert data["text/plain"].startswith("print('hi')\n── ")

    page = make_response(content="<b>bold</b>")
    data, _ = Answer(page, "html").body()
    assert data["text/html"].startswith('<div class="orchlab-response"><b>bold</b>')
    assert "text/markdown" not in data

    data, _ = Answer(make_response(), "text").body()
    assert list(data) == ["text/plain"]


def test_table_renders_text_and_html() -> None:
    table = render.Table(["role", "model"], [["llm.inference", "gemma-3-270m"], ["a", None]])
    assert repr(table).splitlines() == [
        "role           model",
        "-------------  ------------",
        "llm.inference  gemma-3-270m",
        "a",
    ]
    assert "<td>llm.inference</td><td>gemma-3-270m</td>" in table._repr_html_()
    assert table.records()[1] == {"role": "a", "model": ""}


# --- outputs that do not depend on the machine's speed (nbval compares them) -------------------


def _trail(*latencies: float) -> str:
    attempts = [
        Attempt("local", "gemma-3-270m", "ok", s, Usage(16, 16), 0.0, stage=f"vote {i}")
        for i, s in enumerate(latencies, 1)
    ]
    return Decision("ensemble", attempts=attempts, winner="local:gemma-3-270m", rationale="vote").explain()


def test_explain_keeps_its_columns_when_a_call_takes_ten_seconds_or_more() -> None:
    fast, slow = _trail(0.7, 1.3).splitlines(), _trail(0.7, 12.345).splitlines()
    assert fast[2:4] == slow[2:4]  # the header and the rows before the slow one are unchanged
    assert fast[4].index("16/16") == slow[4].index("16/16") == slow[3].index("16/16")
    assert slow[4].split()[5:7] == ["12345", "ms"]  # one unit, however long it took
    assert _trail(0.0042).splitlines()[2].index("tokens") == fast[2].index("tokens")


def test_rationale_latency_is_always_in_milliseconds() -> None:
    from orchlab.strategies.base import ms

    assert (ms(0.0421), ms(9.9994), ms(12.3456)) == ("42 ms", "9999 ms", "12346 ms")

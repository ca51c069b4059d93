"""Structured output: a pydantic model as the shape of the answer.

For example:

    class City(BaseModel):
        name: str
        country: str

    r = client.run("llm.inference", [{"role": "user", "content": "Capital of France?"}], output=City)
    r.output            # City(name='Paris', country='France')

How each provider is asked (its adapter's ``output_mode``):

- ``"schema"``: the provider constrains generation to the schema: OpenAI and compatible servers
  (``response_format: json_schema``, strict when the schema allows it), Anthropic (a tool the
  model is forced to call), Gemini (``response_schema``), Ollama (``format: <schema>``), the
  in-process llama.cpp model (a grammar built from the schema);
- ``"json"``: valid JSON is enforced, the schema is put in the prompt (DeepSeek's ``json_object``);
- ``"prompt"`` (any other adapter): the schema is put in the prompt.

Every answer is validated against the model. An invalid one is sent back with the validation
errors and asked again, at most `OUTPUT_RETRIES` times; each retry is one more attempt in the
decision trail and the cost (`orchlab.pipeline.output`). Still invalid: `OutputValidationError`
with the raw text and pydantic's errors.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from orchlab.errors import InvalidRequestError
from orchlab.types import Message, ModelRequest, OutputSchema

OUTPUT_RETRIES = 2
"""How many times an invalid answer is sent back to be corrected (so at most 3 answers)."""

_FENCE = re.compile(r"```[ \t]*(?:json)?[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL | re.IGNORECASE)


def output_schema(model: object) -> OutputSchema:
    """The `OutputSchema` of a pydantic model class (built once per class); anything else is an
    `InvalidRequestError` naming ``output``."""
    from pydantic import BaseModel

    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        shown = model.__name__ if isinstance(model, type) else type(model).__name__
        raise InvalidRequestError(
            f"output= takes a pydantic model class (class City(BaseModel): name: str), got {shown}",
            parameter="output",
        )
    return _schema_of(model)


@functools.cache
def _schema_of(model: Any) -> OutputSchema:
    try:
        schema = model.model_json_schema()
    except Exception as exc:  # pydantic's PydanticInvalidForJsonSchema and kin
        raise InvalidRequestError(
            f"output={model.__name__}: its JSON schema cannot be built ({exc})", parameter="output"
        ) from None
    name = re.sub(r"[^A-Za-z0-9_-]", "_", model.__name__)[:64] or "output"
    return OutputSchema(name, schema, model)


def strict_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """``(schema, strict)`` for OpenAI's ``json_schema`` mode: every object closed
    (``additionalProperties: false``) with all its properties required, defaults dropped. Not
    strict when the schema has an open mapping (``dict[str, X]``), which strict mode refuses."""
    out = copy.deepcopy(dict(schema))
    strict = True

    def walk(node: Any) -> None:
        nonlocal strict
        if isinstance(node, dict):
            node.pop("default", None)
            if node.get("type") == "object" or "properties" in node:
                extra = node.get("additionalProperties")
                if extra not in (None, False):
                    strict = False
                else:
                    node["additionalProperties"] = False
                    node["required"] = list(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return (out if strict else copy.deepcopy(dict(schema))), strict


def instruction(spec: OutputSchema) -> str:
    """The prompt text that asks for the schema (for providers that cannot enforce it)."""
    return (
        "Answer with only a JSON object (no prose, no code fence) that matches this JSON schema:\n"
        + json.dumps(spec.schema, separators=(",", ":"))
    )


def with_instruction(request: ModelRequest) -> ModelRequest:
    """``request`` with the schema asked for in a system message after its own ones."""
    from dataclasses import replace

    assert request.output is not None
    messages = list(request.messages)
    at = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    messages.insert(at, Message("system", instruction(request.output)))
    return replace(request, messages=tuple(messages))


def _candidates(text: str) -> list[str]:
    """The text itself, its fenced blocks, then from its first ``{``: where JSON may be."""
    stripped = text.strip()
    found = [stripped, *(m.group(1) for m in _FENCE.finditer(text))]
    start = stripped.find("{")
    if start > 0:
        try:
            value, _ = json.JSONDecoder().raw_decode(stripped, start)
            found.append(json.dumps(value))
        except ValueError:
            pass
    return found


def parse(spec: OutputSchema, text: str) -> tuple[Any, list[dict[str, Any]]]:
    """``(instance, [])`` when ``text`` (or the JSON object inside it) validates against the
    model, else ``(None, errors)``: pydantic's errors for the JSON found in it (for the text as
    a whole when it holds none)."""
    from pydantic import ValidationError

    found: list[list[dict[str, Any]]] = []
    for candidate in _candidates(text):
        try:
            return spec.model.model_validate_json(candidate), []
        except ValidationError as exc:
            found.append([dict(e) for e in exc.errors(include_url=False, include_context=False)])
    # the errors of the first JSON found say most (what is wrong inside it), else the text's own
    for errors in found:
        if not any(e.get("type") == "json_invalid" for e in errors):
            return None, errors
    return None, found[0] if found else [{"type": "json_invalid", "loc": (), "msg": "empty answer"}]


def summary(errors: Sequence[Mapping[str, Any]], limit: int = 4) -> str:
    """pydantic's errors in one line: ``name: Field required; age: Input should be ...``."""
    parts = []
    for e in errors[:limit]:
        loc = ".".join(str(p) for p in e.get("loc", ())) or "(answer)"
        parts.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = len(errors) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def retry_messages(
    messages: Sequence[Message], spec: OutputSchema, raw: str, errors: Sequence[Mapping[str, Any]]
) -> tuple[Message, ...]:
    """The conversation with the invalid answer and what was wrong with it, asking again."""
    return (
        *messages,
        Message("assistant", raw or "(no answer)"),
        Message(
            "user",
            f"That answer is not a valid {spec.name}: {summary(errors)}. Answer again with only the "
            "corrected JSON object.",
        ),
    )

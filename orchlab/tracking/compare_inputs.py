"""What `compare` runs: its targets (a role, ``'provider:model'``, a URN, a logic id or a dict)
and its prompt set (a list, or a ``.jsonl``/``.json``/``.csv``/``.txt`` dataset file)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.config import logic_ids
from orchlab.errors import InvalidRequestError, OrchlabError
from orchlab.types import Message, to_messages

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator

DATASET_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")


@dataclass(frozen=True)
class Target:
    """What one comparison column runs."""

    label: str
    kind: str
    """``role`` | ``model`` | ``strategy`` | ``custom``."""
    role: str | None = None
    model: str | None = None
    strategy: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromptCase:
    id: str
    text: str
    """The last user message (what tables show)."""
    messages: tuple[Message, ...]


# --- inputs ------------------------------------------------------------------------------


def compare_target(client: Orchestrator, spec: object) -> Target:
    """What a compare target names: a role, ``'provider:model'``, a logic id or a dict."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, Mapping):
        options = dict(spec)
        label = options.pop("label", None)
        role, model = options.pop("role", None), options.pop("model", None)
        strategy = options.pop("strategy", None)
        label = label or "/".join(str(x) for x in (role, strategy, model) if x) or "custom"
        return Target(str(label), "custom", role, model, strategy, options)
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidRequestError(
            f"a compare target is a role, 'provider:model', a URN, a strategy or a dict, got {spec!r}"
        )
    spec = spec.strip()
    if spec in client.roles():
        return Target(spec, "role", role=spec)
    if spec.startswith("urn:"):
        from orchlab.strategies.urn import parse_urn

        parse_urn(spec)  # a bad namespace, logic id or param is named now, before any call
        return Target(spec, "role", role=spec)  # answered as run() answers a URN
    if ":" in spec:
        provider = spec.partition(":")[0]
        client.resolver.provider_config(provider)  # UnknownProviderError with suggestions
        return Target(spec, "model", model=spec)
    try:
        logic_ids.check(spec)  # built in, added by register_logic, or installed
    except ValueError as exc:
        raise InvalidRequestError(
            f"compare target {spec!r} is not a role ({', '.join(client.roles()) or 'none defined'}), "
            f"not 'provider:model' and not a logic: {exc}"
        ) from None
    return Target(spec, "strategy", strategy=spec)


def load_prompts(prompts: object) -> list[PromptCase]:
    """A list of strings / message lists / dicts, or a dataset file (``.jsonl``, ``.csv``, ``.txt``)."""
    if isinstance(prompts, str | Path):
        return _read_dataset(_find_dataset(prompts))
    if not isinstance(prompts, Sequence) or not prompts:
        raise InvalidRequestError("prompts must be a non-empty list of prompts or a dataset file path")
    return [_case(item, i) for i, item in enumerate(prompts)]


def _find_dataset(path: str | Path) -> Path:
    p = Path(path).expanduser()
    tried = [p, Path("data") / p]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    if p.suffix.lower() not in DATASET_SUFFIXES:
        raise InvalidRequestError(
            f"prompts={str(path)!r} is neither a dataset file ({', '.join(DATASET_SUFFIXES)}) nor a list; "
            "pass a list of prompt strings to compare a single prompt"
        )
    raise InvalidRequestError(f"dataset file not found: tried {', '.join(str(t) for t in tried)}")


def _read_dataset(path: Path) -> list[PromptCase]:
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    rows: list[object]
    try:
        if suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif suffix == ".json":
            loaded = json.loads(text)
            rows = loaded if isinstance(loaded, list) else [loaded]
        elif suffix == ".csv":
            rows = list(csv.DictReader(io.StringIO(text)))
        else:
            rows = [line for line in text.splitlines() if line.strip()]
    except ValueError as exc:
        raise InvalidRequestError(f"{path}: not valid {suffix[1:]}: {exc}") from exc
    if not rows:
        raise InvalidRequestError(f"{path}: no prompts in the file")
    try:
        return [_case(row, i) for i, row in enumerate(rows)]
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{path}: {exc}") from None


def _case(item: object, index: int) -> PromptCase:
    case_id = str(index)
    messages: tuple[Message, ...]
    if isinstance(item, str):
        messages = (Message("user", item),)
    elif isinstance(item, Mapping) and ("messages" in item or "prompt" in item or "input" in item):
        case_id = str(item.get("id", index))
        if "messages" in item:
            messages = tuple(to_messages(item["messages"]))
        else:
            text = item.get("prompt", item.get("input"))
            if not isinstance(text, str) or not text.strip():
                raise InvalidRequestError(f"prompt {index}: 'prompt' must be a non-empty string")
            messages = (Message("user", text),)
        if item.get("system"):
            messages = (Message("system", str(item["system"])), *messages)
    else:
        try:
            messages = tuple(to_messages(item))
        except OrchlabError:
            raise InvalidRequestError(
                f"prompt {index}: expected a string, a list of messages, or a dict with 'prompt' or "
                f"'messages', got {type(item).__name__}"
            ) from None
    users = [m.content for m in messages if m.role == "user"]
    return PromptCase(case_id, users[-1] if users else messages[-1].content, messages)

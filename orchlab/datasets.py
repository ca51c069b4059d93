"""Labelled sets for `orchlab.evaluate`: the ones shipped with orchlab, and yours.

For example:

    from orchlab import datasets
    items = datasets.load("tqbpp_core_en")       # 52 questions with gold answers and contexts
    items[0]
    # {'id': '8036351e', 'inputs': {'question': 'What is the capital of France?',
    #  'context': 'France is a country in Europe. Its capital is Paris.'},
    #  'expectations': {'expected_response': 'Paris'},
    #  'tags': {'category': 'geography', 'difficulty': 'easy'}}

An item is a dict with ``inputs`` (a dict: what the prompt is made of; ``question`` by default),
``expectations`` (a dict; ``expected_response`` is the gold answer, as in MLflow's evaluation),
and optionally ``id`` and ``tags``. ``as_items`` takes a list of such dicts, a pandas DataFrame with
those columns, a ``.jsonl`` / ``.json`` file of them, or the name of a shipped set.

Shipped sets (in ``orchlab/data/``, with their licence beside them):

=================  ====  ==========================================================================
name               size  what
=================  ====  ==========================================================================
``tqbpp_core_en``  52    Tiny QA Benchmark++ core English set (Vincent Koc, Apache-2.0): general
                         knowledge, maths, science, code; short gold answers, a context sentence
=================  ====  ==========================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from orchlab.errors import InvalidRequestError

SHIPPED = {"tqbpp_core_en": ("tqbpp_core_en", "core_en.json")}
"""name -> (folder under orchlab/data, file)."""
EXPECTED = "expected_response"


def names() -> list[str]:
    """The sets shipped with orchlab."""
    return sorted(SHIPPED)


def path(name: str) -> Path:
    """The file of a shipped set (its LICENSE and NOTICE are in the same folder)."""
    if name not in SHIPPED:
        raise InvalidRequestError(f"no shipped dataset {name!r}; shipped: {', '.join(names())}")
    folder, file = SHIPPED[name]
    return Path(str(resources.files("orchlab") / "data" / folder / file))


def load(name: str) -> list[dict[str, Any]]:
    """A shipped set as items (``inputs``, ``expectations``, ``id``, ``tags``)."""
    rows = json.loads(path(name).read_text(encoding="utf-8"))
    return [
        {
            "id": str(row["id"]),
            "inputs": {"question": row["text"], "context": row["context"]},
            "expectations": {EXPECTED: row["label"]},
            "tags": {k: str(v) for k, v in row.get("tags", {}).items()},
        }
        for row in rows
    ]


def sample(items: Sequence[dict[str, Any]], n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` items drawn at random with ``seed`` (the same ``n`` and ``seed`` give the same items),
    kept in the set's order: a smaller run that another run can reproduce."""
    import random

    if not 1 <= n <= len(items):
        raise InvalidRequestError(f"sample size must be between 1 and {len(items)}, got {n}")
    chosen = sorted(random.Random(seed).sample(range(len(items)), n))
    return [items[i] for i in chosen]


def as_items(dataset: object) -> list[dict[str, Any]]:
    """Items from a shipped set's name, a ``.jsonl``/``.json`` path, a DataFrame or a list of dicts;
    each checked (``inputs`` a non-empty dict, ``expectations`` a dict) and given an ``id``."""
    rows: Sequence[object]
    where = "dataset"
    if isinstance(dataset, str) and dataset in SHIPPED:
        return load(dataset)
    if isinstance(dataset, str | Path):
        rows, where = _read(Path(dataset)), str(dataset)
    elif hasattr(dataset, "to_dict") and hasattr(dataset, "columns"):  # a pandas DataFrame
        rows = dataset.to_dict(orient="records")
    elif isinstance(dataset, Sequence) and not isinstance(dataset, str | bytes):
        rows = dataset
    else:
        raise InvalidRequestError(
            f"dataset must be a list of dicts, a DataFrame, a .jsonl/.json path or a shipped set "
            f"({', '.join(names())}), got {type(dataset).__name__}"
        )
    if not rows:
        raise InvalidRequestError(f"{where}: no items")
    items = [_item(row, i, where) for i, row in enumerate(rows)]
    ids = [item["id"] for item in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InvalidRequestError(f"{where}: item id {dup!r} is used twice; ids must be unique")
    return items


def _read(file: Path) -> list[object]:
    if not file.is_file():
        raise InvalidRequestError(
            f"dataset file not found: {file} (shipped sets are named: {', '.join(names())})"
        )
    text = file.read_text(encoding="utf-8")
    try:
        if file.suffix.lower() == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        loaded = json.loads(text)
    except ValueError as exc:
        raise InvalidRequestError(f"{file}: not valid JSON: {exc}") from None
    return loaded if isinstance(loaded, list) else [loaded]


def _item(row: object, index: int, where: str) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise InvalidRequestError(f"{where}: item {index} is a {type(row).__name__}, not a dict")
    inputs = row.get("inputs")
    if not isinstance(inputs, Mapping) or not inputs:
        raise InvalidRequestError(
            f"{where}: item {index} needs 'inputs', a non-empty dict such as {{'question': '...'}}"
        )
    expectations = row.get("expectations", {})
    if isinstance(expectations, str):
        expectations = {EXPECTED: expectations}
    if not isinstance(expectations, Mapping):
        raise InvalidRequestError(
            f"{where}: item {index}: 'expectations' must be a dict such as {{'{EXPECTED}': '...'}}"
        )
    tags = row.get("tags") or {}
    return {
        "id": str(row.get("id", index)),
        "inputs": dict(inputs),
        "expectations": dict(expectations),
        "tags": {str(k): str(v) for k, v in dict(tags).items()} if isinstance(tags, Mapping) else {},
    }

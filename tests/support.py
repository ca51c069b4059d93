"""Helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from typing import Any

from orchlab.types import GenerationParams, Message, ModelRequest


def model_request(*messages: tuple[str, str], model: str, **params: Any) -> ModelRequest:
    """What an adapter receives: ``(role, content)`` pairs and generation params."""
    return ModelRequest(
        model=model,
        messages=tuple(Message(role, content) for role, content in messages),  # type: ignore[arg-type]
        params=GenerationParams().merged(params),
    )

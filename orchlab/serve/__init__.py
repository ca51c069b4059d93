"""``orchlab serve``: the roles, strategies, budgets and tracking of a config behind an
OpenAI-compatible HTTP API (FastAPI on uvicorn), plus ``/chat`` and ``/config`` for frontends.

For example:

    from orchlab.serve import create_app        # needs pip install 'orchlab[gateway]'
    app = create_app("llm_orchestrator.yaml")   # an ASGI app: uvicorn.run(app)

The top layer: it imports the orchestrator; nothing in orchlab imports it but the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchlab.serve.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from orchlab.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'orchlab.serve' has no attribute {name!r}")

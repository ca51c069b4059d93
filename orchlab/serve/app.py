"""The ASGI app: `create_app` (one `Orchestrator` per worker, built by the lifespan) and
`app_from_env` (the factory ``orchlab serve --workers N`` hands uvicorn).

Shutdown (uvicorn's, on SIGTERM or Ctrl-C): uvicorn stops accepting and lets the requests in
flight finish; then the lifespan waits for streams still closing, closes the client and waits for
the tracking records of this worker to be written.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchlab.errors import MissingDependencyError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from orchlab.config.schema import OrchestratorConfig
    from orchlab.orchestrator import Orchestrator

CONFIG_ENV = "ORCH_SERVE_CONFIG"
"""The config path `app_from_env` reads (set by ``orchlab serve``; unset: the embedded default)."""
AUTH_ENV = "ORCH_SERVE_AUTH"
"""The auth mode `app_from_env` applies (set by ``orchlab serve`` from ``gateway.auth`` and --host)."""
FLUSH_TIMEOUT_S = 30.0


def require_fastapi() -> None:
    try:
        import fastapi  # noqa: F401
        import limits  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            f"orchlab serve needs {exc.name}: pip install 'orchlab[gateway]'",
            provider="gateway",
            kind="gateway",
            module=exc.name,
            extra="gateway",
        ) from None


def build_client(config: str | Path | OrchestratorConfig | None) -> Orchestrator:
    from orchlab.config.schema import OrchestratorConfig
    from orchlab.orchestrator import Orchestrator, get_llm_client

    if isinstance(config, OrchestratorConfig):
        return Orchestrator(config)
    return get_llm_client(config)


def create_app(
    config: str | Path | OrchestratorConfig | None = None,
    *,
    client: Orchestrator | None = None,
    freeze_heap: bool = False,
    auth: str | None = None,
) -> FastAPI:
    """The gateway for ``config`` (a path, a loaded config, None: the embedded default), or for
    ``client`` (then the caller closes it). ``freeze_heap``: the app owns its process (see
    `Gateway`; ``orchlab serve`` sets it). ``auth`` (``keys``/``none``) overrides
    ``gateway.auth`` (`orchlab.serve.auth`)."""
    require_fastapi()
    if auth not in (None, "keys", "none"):
        from orchlab.errors import InvalidRequestError

        raise InvalidRequestError(f"auth is 'keys' or 'none', got {auth!r}", parameter="auth")
    from fastapi import FastAPI

    from orchlab.serve import (
        admin_routes,
        chat_routes,
        embeddings_route,
        health,
        metrics_route,
        openai_routes,
        threads_routes,
    )
    from orchlab.serve.auth import Guard, KeyAuth
    from orchlab.serve.gateway import Gateway
    from orchlab.serve.handlers import install

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = client is None
        orch = build_client(config) if client is None else client
        gw = Gateway(orch, freeze_heap=freeze_heap)
        guard = Guard(gw, auth or gw.settings.auth or "auto")  # type: ignore[arg-type]
        await guard.start()
        app.state.gateway = gw
        app.state.guard = guard
        try:
            yield
        finally:
            await gw.drain()
            await threads_routes.close(app)
            await guard.aclose()
            if own:
                await orch.aclose()
            if orch.tracking.enabled:
                from orchlab.tracking.api import flush

                await asyncio.to_thread(flush, FLUSH_TIMEOUT_S)

    app = FastAPI(title="orchlab gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    install(app)
    app.add_middleware(KeyAuth)
    app.include_router(openai_routes.router)
    app.include_router(chat_routes.router)
    app.include_router(health.router)
    app.include_router(metrics_route.router)
    app.include_router(embeddings_route.router)
    app.include_router(threads_routes.router)
    app.include_router(admin_routes.router)
    return app


def app_from_env() -> Any:
    """`create_app` on the config named by ``ORCH_SERVE_CONFIG`` (uvicorn's factory, per worker),
    with the auth mode ``orchlab serve`` chose (``ORCH_SERVE_AUTH``)."""
    return create_app(
        os.environ.get(CONFIG_ENV) or None, freeze_heap=True, auth=os.environ.get(AUTH_ENV) or None
    )

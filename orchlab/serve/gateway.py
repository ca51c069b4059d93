"""What one gateway worker holds (its client, what it serves, its streams in flight), and one
exchange: a request's id, its trace tags, its answer headers, its error answer."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from orchlab.errors import OrchlabError, StoreError
from orchlab.serve.errors import HTTPError, from_exception
from orchlab.serve.targets import Targets

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from orchlab.orchestrator import Orchestrator
    from orchlab.types import LLMResponse

log = logging.getLogger("orchlab.serve")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
DRAIN_S = 30.0
"""How long shutdown waits for streams still being closed, and for tracking to be written."""


class Gateway:
    """One worker's state: built by the app's lifespan from the client it serves.

    ``freeze_heap``: the worker owns its process (``orchlab serve``), so once the first answer
    has loaded the provider SDKs, the objects alive then (modules, classes, the config, the SDK
    clients: most of the heap, for good) are moved out of the collector's reach (`gc.freeze`).
    Else every full collection walks them again: 80-140 ms here, a stall of every request in
    flight, every few thousand requests.
    """

    def __init__(self, client: Orchestrator, *, freeze_heap: bool = False) -> None:
        self.client = client
        self.settings = client.config.gateway
        self.targets = Targets(client.config)
        self.created = int(time.time())
        self.tasks: set[asyncio.Task[Any]] = set()
        self.heap_frozen = not freeze_heap

    def answered(self) -> None:
        """Called on each answer; the first one freezes the heap (when asked), just after."""
        if not self.heap_frozen:
            self.heap_frozen = True
            asyncio.get_running_loop().call_soon(freeze_heap)

    def keep(self, task: asyncio.Task[Any]) -> None:
        """Hold a stream's producer task until it ends (shutdown waits for the ones left)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=DRAIN_S)


def freeze_heap() -> None:
    gc.collect()  # what is garbage now is not kept for ever
    gc.freeze()


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


class Exchange:
    """One request: its id (the caller's ``x-request-id`` when it is a sane one), its start."""

    def __init__(self, request: Request, endpoint: str) -> None:
        given = request.headers.get("x-request-id")
        self.request_id = given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        self.endpoint = endpoint
        self.started = time.perf_counter()

    def tags(self, caller: str | None, metadata: Mapping[str, str] | None = None) -> dict[str, str]:
        """The trace tags of the call: endpoint, caller, request id (and the request's metadata)."""
        tags = {f"orchlab.metadata.{k}": v for k, v in (metadata or {}).items()}
        tags.update({"orchlab.endpoint": self.endpoint, "orchlab.request_id": self.request_id})
        if caller:
            tags["orchlab.caller"] = caller
        return tags

    def headers(self, response: LLMResponse | None = None) -> dict[str, str]:
        """``x-request-id``, and for an answer its trace id, cost, decision and our overhead."""
        out = {"x-request-id": self.request_id}
        if response is None:
            return out
        if response.trace_id:
            out["x-orchlab-trace-id"] = response.trace_id
        out["x-orchlab-cost-usd"] = "unknown" if response.cost_usd is None else f"{response.cost_usd:.8f}"
        out["x-orchlab-decision"] = decision(response)
        if response.cache is not None:
            out["x-orchlab-cache"] = response.cache  # hit | miss (orchlab.serve.cache_header)
        took = time.perf_counter() - self.started
        out["x-orchlab-overhead-ms"] = f"{max(took - response.latency_s, 0.0) * 1000:.3f}"
        return out

    def error(self, exc: BaseException) -> Response:
        """The OpenAI-shaped answer to ``exc`` (an unexpected one is logged, without its message
        reaching the caller)."""
        answer = from_exception(exc, self.request_id)
        if not isinstance(exc, HTTPError | OrchlabError):
            log.error("request %s: unexpected %s", self.request_id, type(exc).__name__, exc_info=exc)
        elif isinstance(exc, StoreError):  # the caller is told only that: what failed is logged
            log.warning("request %s: %s", self.request_id, exc)
        return error_response(answer, self.headers())


def decision(response: LLMResponse) -> str:
    """Short: the strategy and the winner (``single local:gemma-3-270m``)."""
    d = response.decision
    text = f"single {response.target}" if d is None else f"{d.strategy} {d.winner or response.target}"
    return text[:200].encode("ascii", "replace").decode()  # a header is latin-1: no role name breaks it


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(data, status_code=status, headers=dict(headers or {}), media_type="application/json")


def error_response(answer: HTTPError, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(answer.body(), answer.status, {**(headers or {}), **answer.headers})

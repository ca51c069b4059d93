"""The OpenAI endpoints: ``POST /v1/chat/completions`` (plain and streamed), ``GET /v1/models``,
``GET /v1/models/{id}``.

A streamed answer is produced by its own task (`Streamed`), which feeds the response through a
queue: when the caller goes away, the response's task is cancelled by the server and only
cancels that producer, which then closes the upstream call the ordinary way (the pipeline records
the partial answer in the trace). The headers are sent with the first token (the cache has been
looked in by then: ``x-orchlab-cache``). An error before the first token is a plain HTTP error;
after it, an SSE ``data: {"error": ...}`` frame ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from orchlab.serve import cache_header, threads_routes
from orchlab.serve.auth import authorize, visible_models
from orchlab.serve.body import decode_json, read_body
from orchlab.serve.errors import HTTPError, from_exception
from orchlab.serve.gateway import Exchange, Gateway, gateway, json_response
from orchlab.serve.openai_wire import (
    ChatRequest,
    chunk_body,
    completion_body,
    completion_id,
    finish_reason,
    parse_request,
    sse,
    to_messages,
    to_params,
    to_tools,
    tool_call_deltas,
    usage_chunk,
)

if TYPE_CHECKING:
    from orchlab.types import LLMResponse, ResponseStream

router = APIRouter()
CHAT = "/v1/chat/completions"
_DONE = object()


@router.post(CHAT)
async def chat_completions(request: Request) -> Response:
    gw = gateway(request)
    ex = Exchange(request, CHAT)
    try:
        req = parse_request(
            decode_json(await read_body(request, gw.settings)), drop_params=gw.settings.drop_params
        )
        target = gw.targets.resolve(req.model)
        authorize(req.model, target, gw.targets)
        messages: list[Any] = to_messages(req)
        params = to_params(req)
        tags, tools = ex.tags(req.user, req.metadata), to_tools(req)
        cache = cache_header.requested(request)
        turn = await threads_routes.from_headers(request, messages, req.user)
        if turn is not None:
            messages = turn.sent
        if req.stream:
            stream = gw.client.stream(target, messages, params or None, tags=tags, cache=cache, **tools)
            answer = await Streamed(gw, ex, req, stream, turn).response(request)
            gw.answered()
            return answer
        response = await gw.client.arun(target, messages, params or None, tags=tags, cache=cache, **tools)
        if turn is not None:
            response = await turn.save(response)
    except Exception as exc:
        return ex.error(exc)
    gw.answered()
    headers = ex.headers(response)
    if response.message_id:
        headers[threads_routes.MESSAGE_HEADER] = response.message_id
    return json_response(completion_body(response, req.model), headers=headers)


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    gw = gateway(request)
    data = [_model(gw, model_id) for model_id in visible_models(gw.targets.model_ids(), gw.targets)]
    return json_response({"object": "list", "data": data})


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> Response:
    gw = gateway(request)
    if model_id not in visible_models(gw.targets.model_ids(), gw.targets):
        return Exchange(request, "/v1/models").error(gw.targets.not_found(model_id))
    return json_response(_model(gw, model_id))


def _model(gw: Gateway, model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": gw.created, "owned_by": "orchlab"}


class Streamed:
    """One streamed answer: its producer task, and the SSE frames the response sends.

    With ``x-orchlab-thread-id`` (a `threads_routes.Turn`) the exchange is stored when the stream
    has ended, before its last frames: the headers are long gone, so the stored answer's id rides
    in the chunk that carries ``finish_reason``, as ``"orchlab": {"message_id": ...}``. A caller
    that leaves before the end stores nothing (no half answer in the thread)."""

    def __init__(
        self,
        gw: Gateway,
        ex: Exchange,
        req: ChatRequest,
        stream: ResponseStream,
        turn: threads_routes.Turn | None = None,
    ) -> None:
        self.gw, self.ex, self.req, self.stream, self.turn = gw, ex, req, stream, turn
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.cid = completion_id(ex.request_id)
        self.created = int(time.time())
        self.usage = bool(req.stream_options and req.stream_options.include_usage)
        self.task = asyncio.get_running_loop().create_task(self._produce())
        gw.keep(self.task)

    async def _produce(self) -> None:
        try:
            async for delta in self.stream:
                self.queue.put_nowait(delta)
            self.queue.put_nowait(_DONE)
        except Exception as exc:
            self.queue.put_nowait(exc)

    async def response(self, request: Request) -> Response:
        """Wait for the first token (or the caller leaving): an error before it is a plain answer.
        The cache was looked in by then: ``x-orchlab-cache`` says what it did, as for a plain answer."""
        first = await self._first(request)
        if isinstance(first, Exception):
            return self.ex.error(first)
        headers = {
            **self.ex.headers(),
            **cache_header.streamed(self.stream),
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
        }
        return StreamingResponse(self._frames(first), media_type="text/event-stream", headers=headers)

    async def _first(self, request: Request) -> Any:
        getting = asyncio.ensure_future(self.queue.get())
        leaving = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait([getting, leaving], return_when=asyncio.FIRST_COMPLETED)
        finally:
            leaving.cancel()
            if not getting.done():
                getting.cancel()
                self.task.cancel()  # the caller left before the first token
        if not getting.done() or getting.cancelled():
            return HTTPError(499, "the client closed the request")
        return getting.result()

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, message_id: str | None = None
    ) -> bytes:
        body = chunk_body(self.cid, self.req.model, self.created, delta, finish, with_usage=self.usage)
        if message_id is not None:
            body["orchlab"] = {"message_id": message_id}
        return sse(body)

    async def _frames(self, first: Any) -> AsyncIterator[bytes]:
        item = first
        try:
            yield self._chunk({"role": "assistant", "content": ""})
            while item is not _DONE:
                if isinstance(item, Exception):
                    yield sse(from_exception(item, self.ex.request_id).body())
                    return
                yield self._chunk({"content": item})
                item = await self.queue.get()
            response: LLMResponse | None = self.stream.response
            if response is not None:
                if self.turn is not None:
                    try:
                        response = await self.turn.save(response)
                    except Exception as exc:
                        yield sse(from_exception(exc, self.ex.request_id).body())
                        return
                if response.tool_calls:  # the library gathers a stream's calls: each sent whole
                    yield self._chunk({"tool_calls": tool_call_deltas(response)})
                yield self._chunk({}, finish_reason(response), response.message_id)
                if self.usage:
                    yield sse(usage_chunk(self.cid, self.req.model, self.created, response))
            yield b"data: [DONE]\n\n"
        finally:
            self.task.cancel()  # a no-op when it is done; else the caller left: close the upstream


async def _disconnected(request: Request) -> None:
    """Return when the client disconnects (the body is read already: the next message says so)."""
    with contextlib.suppress(Exception):
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

"""``type: llama_native``: llama.cpp's native ``/completion`` API (llama-server) as an orchlab provider."""

import json
import time
from collections.abc import AsyncIterator

import httpx

from orchlab import LLMResponse, Provider, Usage
from orchlab.types import ModelRequest, StreamChunk


class LlamaNativeProvider(Provider):
    is_local, requires_key, default_api_base = True, False, "http://127.0.0.1:8080"

    def _http(self, request: ModelRequest) -> httpx.AsyncClient:  # read timeout: silences in a stream
        return httpx.AsyncClient(base_url=self.api_base or "", timeout=self.limits(request)[1])

    def _body(self, request: ModelRequest, stream: bool) -> dict:
        p, prompt = request.params, "".join(f"{m.role}: {m.content}\n" for m in request.messages)
        body = {"prompt": prompt + "assistant:", "n_predict": p.max_tokens, "temperature": p.temperature}
        body |= {"top_p": p.top_p, "seed": p.seed, "stop": list(p.stop or ()), "stream": stream, **p.extra}
        return {key: value for key, value in body.items() if value is not None}

    def _response(self, request: ModelRequest, data: dict, text: str, started: float) -> LLMResponse:
        usage = Usage(input_tokens=data["tokens_evaluated"], output_tokens=data["tokens_predicted"])
        finish = "length" if data.get("stop_type") == "limit" else "stop"
        model, latency_s = data.get("model") or request.model, time.perf_counter() - started
        return LLMResponse(text, self.name, model, usage=usage, latency_s=latency_s, finish_reason=finish)

    async def complete(self, request: ModelRequest) -> LLMResponse:
        started = time.perf_counter()
        async with self._http(request) as http:
            data = (await http.post("/completion", json=self._body(request, False))).raise_for_status().json()
        return self._response(request, data, data["content"], started)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamChunk]:
        started, parts, body = time.perf_counter(), [], self._body(request, True)
        async with self._http(request) as http, http.stream("POST", "/completion", json=body) as reply:
            async for line in reply.raise_for_status().aiter_lines():
                if line.startswith("data: "):  # server-sent events: one JSON object per frame
                    data = json.loads(line.removeprefix("data: "))
                    parts.append(data.get("content", ""))
                    yield StreamChunk(delta=parts[-1])
                    if data.get("stop"):
                        yield StreamChunk(response=self._response(request, data, "".join(parts), started))
                        return
        raise self.unfinished_stream(request.model, parts)

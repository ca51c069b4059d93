"""``--url`` / ``ORCHLAB_URL``: commands on a running gateway (``orchlab serve``), with
``ORCHLAB_API_KEY`` as the bearer key (never printed): ``run`` and ``models`` over its OpenAI
endpoints, ``chat`` over ``POST /chat`` with a ``thread_id`` (the thread lives in the gateway's
store), ``feedback rate`` over ``POST /feedback``, ``roles`` over ``GET /config``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from orchlab.errors import (
    AuthenticationError,
    ProviderConnectionError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)

KEY_ENV = "ORCHLAB_API_KEY"
PROVIDER = "gateway"


class Gateway:
    """An orchlab gateway at ``url`` (``http://host:port``, with or without ``/v1``)."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        import httpx

        base = url.rstrip("/")
        self.url = base.removesuffix("/v1")
        key = api_key if api_key is not None else os.environ.get(KEY_ENV)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``: the ids this key may call."""
        body = self._json(self._send("GET", "/v1/models"), "/v1/models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise ProviderResponseError(f"{self.url}/v1/models: no 'data' list", provider=PROVIDER)
        return [{"target": m.get("id"), "owned_by": m.get("owned_by")} for m in data if isinstance(m, dict)]

    def complete(self, target: str, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/chat/completions``: the answer as ``orchlab run --json`` prints it."""
        response = self._send("POST", "/v1/chat/completions", json=self._body(target, messages, params))
        body = self._json(response, "/v1/chat/completions")
        try:
            choice = body["choices"][0]
            usage = body.get("usage") or {}
            cost = response.headers.get("x-orchlab-cost-usd")
            return {
                "content": choice["message"].get("content") or "",
                "role": target,
                "model": body.get("model"),
                "input_tokens": usage.get("prompt_tokens"),
                "output_tokens": usage.get("completion_tokens"),
                "cost_usd": None if cost in (None, "unknown") else float(cost),
                "finish_reason": choice.get("finish_reason"),
                "trace_id": response.headers.get("x-orchlab-trace-id"),
                "id": body.get("id"),
                "url": self.url,
            }
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise ProviderResponseError(
                f"{self.url}/v1/chat/completions: unexpected answer ({exc!r})",
                provider=PROVIDER,
                model=target,
            ) from None

    def stream(self, target: str, messages: list[dict[str, str]], params: dict[str, Any]) -> Iterator[str]:
        """The answer's text pieces as the gateway streams them (server-sent events)."""
        import httpx

        body = {**self._body(target, messages, params), "stream": True}
        try:
            with self.http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise self._error(response, target)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ProviderError(
                            str(chunk["error"].get("message")), provider=PROVIDER, model=target
                        )
                    for choice in chunk.get("choices") or []:
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
        except httpx.TimeoutException:
            raise ProviderTimeoutError(f"{self.url} did not answer in time", provider=PROVIDER) from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def roles(self) -> list[dict[str, Any]]:
        """``GET /config``: the roles this key may call, with their targets and strategies."""
        body = self._json(self._send("GET", "/config"), "/config")
        roles = body.get("roles") if isinstance(body, dict) else None
        if not isinstance(roles, list):
            raise ProviderResponseError(f"{self.url}/config: no 'roles' list", provider=PROVIDER)
        return [
            {
                "role": r.get("name"),
                "target": r.get("target"),
                "strategy": r.get("strategy"),
                "description": r.get("description"),
            }
            for r in roles
            if isinstance(r, dict)
        ]

    def chat(self, target: str, messages: list[dict[str, str]], thread: str) -> dict[str, Any]:
        """``POST /chat`` with ``thread_id``: the gateway sends the thread's history before
        ``messages`` and stores the exchange (a thread named ``thread`` is made on first use)."""
        body = {"model": target, "messages": messages, "thread_id": thread, "format": "raw"}
        answer = self._json(self._send("POST", "/chat", json=body), "/chat")
        if not isinstance(answer, dict) or not isinstance(answer.get("thread_id"), str):
            raise ProviderResponseError(
                f"{self.url}/chat: unexpected answer (no thread_id)", provider=PROVIDER, model=target
            )
        return answer

    def thread(self, thread: str) -> dict[str, Any] | None:
        """``GET /threads/{id}``: the thread with its messages (None: no such thread)."""
        from urllib.parse import quote

        path = f"/threads/{quote(thread, safe='')}"
        try:
            response = self._send("GET", path)
        except ProviderError as exc:
            if exc.status_code == 404:
                return None
            raise
        return dict(self._json(response, "/threads"))

    def feedback(
        self, message_id: str, value: str | int, comment: str | None, user: str | None
    ) -> dict[str, Any]:
        """``POST /feedback``: rate a stored answer of a thread (its message id)."""
        body = {"message_id": message_id, "value": value, "comment": comment, "user": user}
        return dict(self._json(self._send("POST", "/feedback", json=body), "/feedback"))

    def create_key(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``POST /admin/keys`` (an admin key): the new key's row with its plain ``key``, shown once."""
        return dict(self._json(self._send("POST", "/admin/keys", json=fields), "/admin/keys"))

    def list_keys(self, user: str | None) -> list[dict[str, Any]]:
        """``GET /admin/keys`` (an admin key): every key's row, never a secret."""
        params = {"user": user} if user else None
        body = self._json(self._send("GET", "/admin/keys", params=params), "/admin/keys")
        rows = body.get("data") if isinstance(body, dict) else None
        if not isinstance(rows, list):
            raise ProviderResponseError(f"{self.url}/admin/keys: no 'data' list", provider=PROVIDER)
        return [dict(r) for r in rows if isinstance(r, dict)]

    def revoke_key(self, ref: str) -> dict[str, Any]:
        """``DELETE /admin/keys/{id or prefix}`` (an admin key): the revoked key's row."""
        from urllib.parse import quote

        path = f"/admin/keys/{quote(ref, safe='')}"
        return dict(self._json(self._send("DELETE", path), "/admin/keys"))

    @staticmethod
    def _body(target: str, messages: list[dict[str, str]], params: dict[str, Any]) -> dict[str, Any]:
        return {**params, "model": target, "messages": messages}

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ProviderTimeoutError(
                f"{self.url}{path} did not answer in time", provider=PROVIDER
            ) from None
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        if response.status_code >= 400:
            raise self._error(response, (kwargs.get("json") or {}).get("model"))
        return response

    def _json(self, response: Any, path: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ProviderResponseError(
                f"{self.url}{path}: the answer is not JSON", provider=PROVIDER
            ) from None

    def _unreachable(self, exc: Exception) -> ProviderConnectionError:
        return ProviderConnectionError(
            f"no gateway answers at {self.url} ({type(exc).__name__}); start `orchlab serve` there "
            "or fix --url / ORCHLAB_URL",
            provider=PROVIDER,
        )

    def _error(self, response: Any, model: str | None) -> ProviderError:
        try:
            message = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            message = response.text[:200] or response.reason_phrase
        status = response.status_code
        if status in (401, 403):
            hint = f" (set {KEY_ENV} to a key of this gateway)" if status == 401 else ""
            return AuthenticationError(message + hint, provider=PROVIDER, model=model, status_code=status)
        if status == 429:
            after = response.headers.get("retry-after")
            return RateLimitError(
                message,
                provider=PROVIDER,
                model=model,
                status_code=status,
                retry_after=float(after) if after and after.replace(".", "", 1).isdigit() else None,
            )
        if status >= 500:
            return ProviderUnavailableError(message, provider=PROVIDER, model=model, status_code=status)
        return ProviderError(message, provider=PROVIDER, model=model, status_code=status)

"""Keys in front of the gateway (orchlab.serve.auth, .rate_limits, .key_budgets): authentication
on every route, allow-lists, admin endpoints, rate limits, per-key budgets in the ledger, the CLI; called
with the official openai SDK and raw httpx, in front of the loopback OpenAI-wire server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import select

import orchlab
from orchlab.store.keys import SECRET_ENV, NewKey
from orchlab.store.schema import usage_ledger
from tests.serve_support import Served, StreamDropWatch, gateway_yaml, serve_fixture  # noqa: F401
from tests.servers.openai_wire import OpenAIWireServer, Reply

Q = [{"role": "user", "content": "What is 2+2?"}]
PUBLIC = {"/healthz", "/readyz"}
PRICES = """
  "up:pricey": {input_price_per_mtok: 1000.0, output_price_per_mtok: 2000.0}
"""


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "gateway-test-secret-" + "k" * 32)


def keyed_yaml(upstream: OpenAIWireServer, gateway: str = "") -> str:
    """`gateway_yaml` with keys required, a store of its own, and llm.pricey ($1000/$2000 per
    million tokens: $0.001 a prompt token, $0.002 an answer token)."""
    text = gateway_yaml(upstream, "  auth: keys\n" + gateway, "store: {url: sqlite:///keys.db}\n")
    text = text.replace("roles:\n", "roles:\n  llm.pricey: {provider: up, model: pricey}\n", 1)
    return text.replace("models:\n", "models:" + PRICES, 1)


def keys_for(path: Path) -> Any:
    client = orchlab.get_llm_client(path)
    return client.keys


def start(serve: Callable[..., Served], write_config: Callable[[str], Path], yaml: str) -> tuple[Served, Any]:
    path = write_config(yaml)
    return serve(yaml), keys_for(path)


def sdk(served: Served, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.base_url, api_key=key, max_retries=0)


def bearer(key: NewKey | str) -> dict[str, str]:
    return {"authorization": f"Bearer {key if isinstance(key, str) else key.key}"}


def routes_of(served: Served) -> list[tuple[str, str]]:
    """Every route the app serves (from its OpenAPI schema), but /healthz and /readyz."""
    paths = served.server.config.app.openapi()["paths"]
    return [
        (method.upper(), path.replace("{model_id}", "llm.inference").replace("{ref}", "x"))
        for path, methods in paths.items()
        if path not in PUBLIC
        for method in methods
    ]


def ledger_rows(keys: Any) -> list[dict[str, Any]]:
    with keys.store._engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(usage_ledger).order_by(usage_ledger.c.id))]


def settled(keys: Any, n: int, deadline_s: float = 10) -> list[dict[str, Any]]:
    """The ledger once ``n`` rows are no longer ``reserved`` (settlements are written in batches)."""
    end = time.monotonic() + deadline_s
    while True:
        rows = ledger_rows(keys)
        if sum(r["status"] != "reserved" for r in rows) >= n or time.monotonic() > end:
            return rows
        time.sleep(0.02)


# --- authentication -------------------------------------------------------------------------


def test_every_route_needs_a_key_and_a_401_says_not_which_problem(
    serve, write_config, openai_server: OpenAIWireServer
) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    good = keys.create("ana")
    revoked = keys.create("ana")
    keys.revoke(revoked.info.id)
    expired_soon = keys.create("bo", expires_in_days=1e-9)
    routes = routes_of(served)
    assert {p for _, p in routes} >= {"/v1/chat/completions", "/v1/models", "/chat", "/config", "/admin/keys"}
    bodies = set()
    with httpx.Client(base_url=served.url) as http:
        for method, path in routes:
            for headers in (
                {},
                bearer(revoked),
                bearer(expired_soon),
                bearer(good.key[:-2] + "zz"),
                {"authorization": "Basic " + good.key},
                bearer("sk-" + "x" * 40),
            ):
                r = http.request(
                    method, path, headers=headers, json={"model": "llm.inference", "messages": Q}
                )
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                bodies.add(json.dumps(r.json()["error"]))
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
    assert len(bodies) == 1 and json.loads(bodies.pop())["code"] == "invalid_api_key"
    assert [r.path for r in openai_server.requests] == ["/v1/models"]  # /readyz's health check only
    with pytest.raises(openai.AuthenticationError):
        sdk(served, revoked.key).chat.completions.create(model="llm.inference", messages=Q)
    r = sdk(served, good.key).chat.completions.create(model="llm.inference", messages=Q)
    assert r.choices[0].message.content == "echo: What is 2+2?"


def test_admin_keys_manage_keys_and_call_no_model(serve, write_config, openai_server) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    admin = keys.create("root", admin=True)
    user = keys.create("ana")
    with httpx.Client(base_url=served.url) as http:
        made = http.post(
            "/admin/keys", headers=bearer(admin), json={"user": "cy", "roles": ["llm.big"], "rpm": 5}
        )
        assert made.status_code == 201
        new = made.json()
        assert new["key"].startswith(f"ok_{new['prefix']}_") and new["allow"] == ["llm.big"]
        listed = http.get("/admin/keys", headers=bearer(admin)).json()["data"]
        assert [k["user"] for k in listed] == ["root", "ana", "cy"]
        assert "key" not in json.dumps(listed).replace('"kind"', "") and new["key"] not in json.dumps(listed)
        r = sdk(served, new["key"]).chat.completions.create(model="llm.big", messages=Q)
        assert r.model == "llm.big"
        assert http.delete(f"/admin/keys/{new['prefix']}", headers=bearer(admin)).json()["revoked_at"]
        # revoked through this worker: refused at once, despite the worker's key cache
        assert http.get("/v1/models", headers=bearer(new["key"])).status_code == 401
        assert http.delete("/admin/keys/nosuchprefix", headers=bearer(admin)).status_code == 404
        bad = http.post("/admin/keys", headers=bearer(admin), json={"user": "cy", "budget": "5/fortnight"})
        assert bad.status_code == 400 and "window is one of" in bad.json()["error"]["message"]
        # an admin key calls no model; a user key manages no key
        for method, path in routes_of(served):
            r = http.request(
                method, path, headers=bearer(admin), json={"model": "llm.inference", "messages": Q}
            )
            assert (r.status_code == 403) == (not path.startswith("/admin")), (method, path, r.status_code)
        assert http.get("/admin/keys", headers=bearer(user)).status_code == 403
        settled(keys, 1)
        usage = http.get("/admin/usage", headers=bearer(admin)).json()["data"]
        assert [(u["user"], u["attempts"]) for u in usage] == [("cy", 1)]
    assert len(openai_server.requests) == 1


def test_auth_none_stays_open_and_keys_are_the_default_off_loopback(
    serve, write_config, openai_server
) -> None:
    served = serve(gateway_yaml(openai_server, "  auth: none\n"))
    assert sdk(served, "anything").chat.completions.create(model="llm.inference", messages=Q).model
    from orchlab.serve.auth import Guard, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.7")
    guard = Guard.__new__(Guard)
    guard.mode = "auto"
    assert not guard.required({"server": ("127.0.0.1", 8000)})
    assert guard.required({"server": ("192.0.2.7", 8000)})


# --- authorization --------------------------------------------------------------------------


def test_a_key_calls_and_sees_only_what_it_is_allowed(serve, write_config, openai_server) -> None:
    yaml = keyed_yaml(openai_server, "  aliases: {fast: 'urn:orchlab:race:candidates=llm.big,llm.tiny'}\n")
    served, keys = start(serve, write_config, yaml)
    key = keys.create("ana", roles="llm.inference,fast,urn:orchlab:*").key
    client = sdk(served, key)
    assert client.chat.completions.create(model="llm.inference", messages=Q).model == "llm.inference"
    assert client.chat.completions.create(model="fast", messages=Q).model == "fast"  # the alias as a whole
    for model in ("llm.big", "urn:orchlab:race:candidates=llm.inference,llm.big"):
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model=model, messages=Q)
        assert (
            info.value.code == "model_not_allowed"
            and "llm.inference, fast, urn:orchlab:*" in info.value.message
        )
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["fast", "llm.inference"] and "llm.big" not in ids and "urn:orchlab:race" in ids
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("llm.big")
    with httpx.Client(base_url=served.url, headers=bearer(key)) as http:
        config = http.get("/config").json()
        assert [r["name"] for r in config["roles"]] == ["llm.inference"]
        assert [m["target"] for m in config["models"]] == ["up:cheap"] and list(config["aliases"]) == ["fast"]
        denied = http.post("/chat", json={"role": "llm.big", "prompt": "hi"})
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
        assert (
            http.post("/chat", json={"role": "llm.inference", "prompt": "hi"}).json()["answer"]
            == "echo: hi\n"  # markdown, /chat's default format
        )
    sent = [r.body["model"] for r in openai_server.requests]
    assert "big" in sent or "tiny" in sent  # the alias' race ran; llm.big alone never did
    assert sent.count("big") <= 1 and sent.count("cheap") == 2


def test_a_key_sees_only_its_users_threads_messages_and_embeddings(
    serve, write_config, openai_server
) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    ana = keys.create("ana", roles="llm.inference").key
    bob = keys.create("bob", roles="llm.inference").key
    with httpx.Client(base_url=served.url, headers=bearer(ana)) as http:
        # the body's user field is not who the key is: the thread is ana's
        made = http.post(
            "/chat", json={"role": "llm.inference", "prompt": "hi", "thread_id": "notes", "user": "bob"}
        )
        assert made.status_code == 200, made.text
        thread_id, message_id = made.json()["thread_id"], made.json()["message_id"]
        mine = http.get(f"/threads/{thread_id}")
        assert mine.status_code == 200 and mine.json()["user"] == "ana"
    with httpx.Client(base_url=served.url, headers=bearer(bob)) as http:
        for answer in (
            http.get(f"/threads/{thread_id}"),
            http.post("/chat", json={"role": "llm.inference", "prompt": "x", "thread_id": thread_id}),
            http.post("/feedback", json={"message_id": message_id, "value": "down"}),
        ):
            assert answer.status_code == 404, answer.text
            assert "echo: hi" not in answer.text and "ana" not in answer.text
        refused = http.post("/v1/embeddings", json={"model": "llm.big", "input": "x"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "model_not_allowed"


# --- rate limits ----------------------------------------------------------------------------


def test_rpm_60_answers_exactly_60_of_100(serve, write_config, openai_server) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    key = keys.create("ana", rpm=60)
    codes, answers = [], []
    started = time.monotonic()
    with httpx.Client(base_url=served.base_url, headers=bearer(key)) as http:
        for _ in range(100):
            r = http.post("/chat/completions", json={"model": "llm.inference", "messages": Q})
            codes.append(r.status_code)
            answers.append(r)
    assert time.monotonic() - started < 10
    assert codes.count(200) == 60 and codes.count(429) == 40 and codes[:60] == [200] * 60
    ok, refused = answers[0], answers[-1]
    assert (
        ok.headers["x-ratelimit-limit-requests"] == "60"
        and ok.headers["x-ratelimit-remaining-requests"] == "59"
    )
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert (
        50 <= int(refused.headers["retry-after"]) <= 60
        and refused.headers["x-ratelimit-remaining-requests"] == "0"
    )
    assert len(openai_server.requests) == 60
    with pytest.raises(openai.RateLimitError):  # the SDK reads it as OpenAI's own 429
        sdk(served, key.key).chat.completions.create(model="llm.inference", messages=Q)


def test_tpm_refuses_once_the_minute_holds_its_tokens(serve, write_config, openai_server) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    key = keys.create("ana", tpm=20)  # each call: 3 prompt + 4 answer tokens
    codes = []
    with httpx.Client(base_url=served.base_url, headers=bearer(key)) as http:
        for _ in range(5):
            r = http.post("/chat/completions", json={"model": "llm.inference", "messages": Q})
            codes.append((r.status_code, r.headers["x-ratelimit-remaining-tokens"]))
    assert codes == [(200, "20"), (200, "13"), (200, "6"), (429, "0"), (429, "0")]


# --- budgets --------------------------------------------------------------------------------


def test_budget_reserves_settles_and_refuses_from_the_ledger(serve, write_config, openai_server) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server, "  allow_direct_targets: true\n"))
    key = keys.create("ana", budget="0.05/day")
    client = sdk(served, key.key)
    # worst case: (prompt ceiling 32 + 10 out) at $0.001/$0.002 a token; real: 3 in + 4 out = $0.011
    raw = client.chat.completions.with_raw_response.create(model="llm.pricey", messages=Q, max_tokens=10)
    assert raw.headers["x-orchlab-cost-usd"] == "0.01100000"
    row = settled(keys, 1)[0]
    assert (row["status"], row["amount_usd"], row["input_tokens"], row["output_tokens"]) == (
        "settled",
        0.011,
        3,
        4,
    )
    assert (
        row["reserved_usd"] > 0.011 and row["model"] == "pricey" and row["endpoint"] == "/v1/chat/completions"
    )
    n_ok = 1
    while True:
        try:
            client.chat.completions.create(model="llm.pricey", messages=Q, max_tokens=10)
            n_ok += 1
        except openai.RateLimitError as exc:
            assert exc.code == "budget_exceeded" and "this key's budget of $0.05/day" in exc.message
            assert "Nothing was sent" in exc.message
            break
        settled(keys, n_ok)
    assert len(openai_server.requests) == n_ok and n_ok * 0.011 <= 0.05
    assert keys.spent_usd(key.info) == pytest.approx(n_ok * 0.011)
    # an unpriced model under a budget is refused, never counted as $0
    with pytest.raises(openai.RateLimitError, match="has no known price"):
        client.chat.completions.create(model="up:unpriced", messages=Q, max_tokens=5)
    # nothing bounds the output: refused too (max_tokens unset, no max output known)
    with pytest.raises(openai.RateLimitError, match="nothing bounds this call's output tokens"):
        client.chat.completions.create(model="llm.pricey", messages=Q)
    assert len(openai_server.requests) == n_ok


def test_budget_holds_across_a_restart(serve, write_config, openai_server) -> None:
    yaml = keyed_yaml(openai_server)
    served, keys = start(serve, write_config, yaml)
    key = keys.create("ana", budget="0.04/total")  # worst case about $0.03, real $0.011
    sdk(served, key.key).chat.completions.create(model="llm.pricey", messages=Q, max_tokens=1)
    settled(keys, 1)
    served.stop()
    again = serve(yaml)  # a new process' worth of state: only the ledger remembers
    with pytest.raises(openai.RateLimitError, match=r"\$0\.011 spent"):
        sdk(again, key.key).chat.completions.create(model="llm.pricey", messages=Q, max_tokens=1)
    assert len(openai_server.requests) == 1


def test_a_disconnect_mid_stream_keeps_the_reservation(serve, write_config, openai_server) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    key = keys.create("ana", budget="1/day")
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "pricey"}
    frames = [
        b"data: "
        + json.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": w}}]}).encode()
        + b"\n\n"
        for w in ("one ", "two ")
    ]
    watch = StreamDropWatch(openai_server, frames)
    body = {"model": "llm.pricey", "messages": Q, "stream": True, "max_tokens": 10}
    with (
        httpx.Client(base_url=served.base_url, headers=bearer(key)) as http,
        http.stream("POST", "/chat/completions", json=body) as r,
    ):
        lines = r.iter_lines()
        assert '"content":"one "' in "".join(next(lines) for _ in range(4))
    assert watch.dropped.wait(10)
    row = settled(keys, 1)[0]
    assert row["status"] == "settled" and row["amount_usd"] == row["reserved_usd"] > 0.02


def test_usage_of_keys_without_a_budget_is_recorded_too(serve, write_config, openai_server) -> None:
    served, keys = start(serve, write_config, keyed_yaml(openai_server))
    key = keys.create("ana")
    openai_server.push(Reply(status=500, body={"error": {"message": "boom"}}))
    client = sdk(served, key.key)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="llm.inference", messages=Q)
    client.chat.completions.create(model="llm.inference", messages=Q)
    rows = settled(keys, 1)  # the failed call's settlement was queued before: it is written too
    assert [(r["status"], r["input_tokens"], r["output_tokens"]) for r in rows] == [("settled", 3, 4)]
    assert rows[0]["amount_usd"] == pytest.approx(3 * 1e-6 + 4 * 2e-6) and rows[0]["reserved_usd"] == 0


# --- the CLI ------------------------------------------------------------------------------


def test_cli_keys_create_list_revoke(write_config, capsys: pytest.CaptureFixture[str], openai_server) -> None:
    from orchlab.cli import main

    path = str(write_config(keyed_yaml(openai_server)))
    argv = ["keys", "--config", path, "create", "--user", "ana", "--roles", "llm.inference,urn:orchlab:*"]
    assert main([*argv, "--rpm", "60", "--tpm", "100000", "--budget", "5/day"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()
    assert key.startswith("ok_") and "shown this once" in err and key not in err
    assert main(["keys", "--config", path, "list"]) == 0
    listing = capsys.readouterr().out
    assert key not in listing and f"ok_{key.split('_')[1]}_…" in listing
    assert "llm.inference,urn:orchlab:*" in listing and "$5/day" in listing and "active" in listing
    assert main(["keys", "--config", path, "revoke", f"ok_{key.split('_')[1]}"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "--config", path, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"] is not None
    assert (
        main(["keys", "--config", path, "create", "--user", "ana", "--budget", "x/day"]) == 1
    )  # a user error
    assert "positive number of USD" in capsys.readouterr().err


def test_cli_serve_refuses_an_open_gateway_off_loopback(write_config, capsys, openai_server) -> None:
    from orchlab.cli import main

    path = str(write_config(gateway_yaml(openai_server, "  auth: none\n")))
    assert main(["serve", "--config", path, "--host", "0.0.0.0"]) == 2
    assert "gateway.auth is none but --host 0.0.0.0 is not a loopback address" in capsys.readouterr().err

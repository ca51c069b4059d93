"""Budgets hold under concurrency: worst cases are reserved before sending, actual costs settled after.

Every call goes through the real OpenAI SDK to the loopback server; the server's recorded request
count proves that refused calls were never sent.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import orchlab
from orchlab.budgets import Budgets
from orchlab.errors import (
    BudgetExceededError,
    ConfigValidationError,
    InvalidRequestError,
    OrchlabWarning,
    UnknownCostError,
    UnknownRoleError,
)
from orchlab.orchestrator import Orchestrator
from tests.servers.openai_wire import OpenAIWireServer, Reply, completion_body

# $1000 per million tokens in and out: exactly $0.001 a token, so amounts are easy to check.
PRICED = """
models:
  "openai:house-model": {input_price_per_mtok: 1000, output_price_per_mtok: 1000}
"""
HI = [{"role": "user", "content": "hi"}]
# "hi" is 2 bytes: the reservation ceiling is 2 + 8 per message + 8 = 18 prompt tokens;
# with max_tokens 10 the worst case is 28 tokens = $0.028.
WORST = 0.028

MakeClient = Callable[..., Orchestrator]


@pytest.fixture
def make_client(
    openai_server: OpenAIWireServer, client_for: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> MakeClient:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-budgets")

    def make(extra: str = PRICED, max_tokens: int | None = 10, model: str = "house-model") -> Orchestrator:
        params = f"{{max_tokens: {max_tokens}}}" if max_tokens else "{}"
        return client_for(
            f"""
            project: budgets
            tracking: {{enabled: false}}
            providers:
              openai: {{api_base: "{openai_server.base_url}"}}
              box: {{type: vllm, api_base: "{openai_server.base_url}"}}
            roles:
              r: {{provider: openai, model: "{model}", params: {params}}}
              other: {{provider: openai, model: "{model}", params: {params}}}
              free: {{provider: box, model: llama-3.1-8b, params: {params}}}
            """,
            extra,
        )

    return make


def full_usage_replies(n: int, delay_s: float = 0.0) -> list[Reply]:
    """Replies that use the whole worst case (18 prompt + 10 output tokens = $0.028 each)."""
    body = completion_body("ok", model="house-model", prompt_tokens=18, completion_tokens=10)
    return [Reply(body=body, delay_s=delay_s) for _ in range(n)]


def chat_requests(server: OpenAIWireServer) -> int:
    return sum(1 for r in server.requests if r.path.endswith("/chat/completions"))


async def test_20_concurrent_async_calls_never_settle_above_the_budget(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    budget = 0.1
    client = make_client(PRICED + f"budgets: {{session_usd: {budget}}}\n")
    openai_server.push(*full_usage_replies(20, delay_s=0.2))

    results = await asyncio.gather(*[client.arun("r", HI) for _ in range(20)], return_exceptions=True)

    ok = [r for r in results if isinstance(r, orchlab.LLMResponse)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(ok) + len(refused) == 20
    assert len(ok) == int(budget // WORST) == 3  # 3 worst cases fit in $0.10, a 4th does not
    assert chat_requests(openai_server) == len(ok)  # the refused calls were never sent
    assert (
        client.budgets.spent_usd()
        == pytest.approx(sum(r.cost_usd or 0.0 for r in ok))
        == pytest.approx(0.084)
    )
    assert client.budgets.spent_usd() <= budget
    assert client.budgets.reserved_usd() == 0.0
    err = refused[0]
    assert err.scope == "session budget" and err.limit_usd == budget
    assert err.requested_usd == pytest.approx(WORST)
    assert "Nothing was sent" in str(err) and "openai:house-model" in str(err)


def test_20_threads_never_settle_above_the_budget(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    budget = 0.25
    client = make_client(PRICED + f"budgets: {{session_usd: {budget}}}\n")
    openai_server.push(*full_usage_replies(20, delay_s=0.05))

    def call() -> object:
        try:
            return client.run("r", HI)
        except BudgetExceededError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda _: call(), range(20)))

    ok = [r for r in results if isinstance(r, orchlab.LLMResponse)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(ok) + len(refused) == 20
    assert len(ok) == int(budget // WORST) == 8
    assert chat_requests(openai_server) == len(ok)
    assert client.budgets.spent_usd() == pytest.approx(len(ok) * WORST)
    assert client.budgets.spent_usd() <= budget
    assert client.budgets.reserved_usd() == 0.0


async def test_reservations_free_up_when_actual_costs_are_lower(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    # The default echo reply reports 1 prompt + 2 output tokens: $0.003 each, far below the $0.028
    # reserved. Sequential calls settle at the actual cost, so many more fit than worst cases would.
    client = make_client(PRICED + "budgets: {session_usd: 0.05}\n")
    done = 0
    with pytest.raises(BudgetExceededError):
        for _ in range(40):
            await client.arun("r", HI)
            done += 1
    # after k calls $0.003*k is spent; the next is refused once 0.003*k + 0.028 > 0.05, i.e. k = 8
    assert done == 8
    assert client.budgets.spent_usd() == pytest.approx(8 * 0.003)
    assert chat_requests(openai_server) == 8


def test_per_call_budget_refuses_before_sending(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(PRICED + "budgets: {per_call_usd: 0.02}\n")
    with pytest.raises(BudgetExceededError) as info:
        client.run("r", HI)
    assert info.value.scope == "per-call budget"
    assert chat_requests(openai_server) == 0
    # a lower max_tokens brings the worst case under the limit: 18 + 1 tokens = $0.019
    r = client.run("r", HI, {"max_tokens": 1})
    assert r.content and chat_requests(openai_server) == 1


def test_role_budget_from_the_role_entry_only_limits_that_role(
    openai_server: OpenAIWireServer, client_for: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORCH_AUTH_OPENAI_API_KEY", "sk-test-budgets")
    client = client_for(
        f"""
        project: budgets
        tracking: {{enabled: false}}
        providers:
          openai: {{api_base: "{openai_server.base_url}"}}
        roles:
          r: {{provider: openai, model: house-model, params: {{max_tokens: 10}}, budget_usd: 0.03}}
          other: {{provider: openai, model: house-model, params: {{max_tokens: 10}}}}
        """,
        PRICED,
    )
    openai_server.push(*full_usage_replies(4))
    client.run("r", HI)  # $0.028 of $0.03
    with pytest.raises(BudgetExceededError) as info:
        client.run("r", HI)
    assert info.value.scope == "budget of role 'r'"
    client.run("other", HI)
    client.run("other", HI)
    assert client.budgets.spent_usd("r") == pytest.approx(0.028)
    assert client.budgets.spent_usd("other") == pytest.approx(0.056)
    assert client.budgets.spent_usd() == pytest.approx(0.084)
    assert chat_requests(openai_server) == 3


def test_budgets_set_in_code_override_the_yaml(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(PRICED + "budgets: {session_usd: 0.01, per_role_usd: {other: 0.5}}\n")
    with pytest.raises(BudgetExceededError):
        client.run("r", HI)
    client.budgets.set(session_usd=1.0)
    assert client.run("r", HI).cost_usd == pytest.approx(0.003)
    client.budgets.set(per_role_usd={"r": 0.001})
    with pytest.raises(BudgetExceededError) as info:
        client.run("r", HI)
    assert info.value.scope == "budget of role 'r'"
    client.budgets.set(session_usd=None, per_role_usd={"r": None})
    assert client.budgets.limit_usd() is None
    client.run("r", HI)
    assert chat_requests(openai_server) == 2
    rows = {row["scope"]: row for row in client.budgets.summary()}
    assert rows["session"]["spent_usd"] == pytest.approx(0.006)
    assert rows["role other"]["limit_usd"] == 0.5


def test_spending_before_a_budget_is_set_counts(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client()
    for _ in range(3):
        client.run("r", HI)
    assert client.budgets.spent_usd() == pytest.approx(0.009)
    client.budgets.set(session_usd=0.03)  # 0.009 spent + 0.028 worst case > 0.03
    with pytest.raises(BudgetExceededError) as info:
        client.run("r", HI)
    assert info.value.spent_usd == pytest.approx(0.009)
    assert chat_requests(openai_server) == 3


def test_a_failed_call_releases_its_reservation(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(PRICED + "budgets: {session_usd: 0.03}\n")
    openai_server.push(Reply.error(500, "boom"))
    with pytest.raises(orchlab.ProviderError):
        client.run("r", HI)
    assert client.budgets.reserved_usd() == 0.0 and client.budgets.spent_usd() == 0.0
    assert client.run("r", HI).cost_usd == pytest.approx(0.003)  # the full budget is still there


def test_unpriced_model_under_a_budget_is_refused(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(extra="", model="my-unlisted-model")
    assert client.run("r", HI).cost_usd is None  # no budget: the call goes, its cost is unknown
    client.budgets.set(session_usd=10.0)
    with pytest.raises(UnknownCostError) as info:
        client.run("r", HI)
    assert isinstance(info.value, BudgetExceededError)
    assert "openai:my-unlisted-model" in str(info.value) and "models:" in str(info.value)
    assert info.value.requested_usd == float("inf")
    assert chat_requests(openai_server) == 1


def test_output_bound_comes_from_the_model_when_max_tokens_is_unset(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    # no max_tokens: gpt-4.1-mini's 32,768 max output tokens bound the worst case
    client = make_client(extra="budgets: {session_usd: 0.01}\n", max_tokens=None, model="gpt-4.1-mini")
    with pytest.raises(BudgetExceededError) as info:
        client.run("r", HI)
    assert info.value.requested_usd == pytest.approx((18 * 0.4 + 32_768 * 1.6) / 1e6)
    assert "32,768 output tokens" in str(info.value)
    assert client.run("r", HI, {"max_tokens": 100}).cost_usd is not None

    # a model the catalog knows no bound for cannot be reserved without max_tokens
    unbounded = make_client(PRICED + "budgets: {session_usd: 1}\n", max_tokens=None)
    with pytest.raises(UnknownCostError, match="max_tokens"):
        unbounded.run("r", HI)
    assert chat_requests(openai_server) == 1


def test_local_models_are_free_under_a_budget(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(PRICED + "budgets: {session_usd: 0}\n")
    assert client.run("free", HI).cost_usd == 0.0
    with pytest.raises(BudgetExceededError):
        client.run("r", HI)
    assert chat_requests(openai_server) == 1


def test_budget_config_is_checked(write_config: Callable[[str], Path]) -> None:
    base = """
    project: b
    providers: {openai: {}}
    roles:
      r: {provider: openai, model: gpt-4.1-mini, budget_usd: 1}
    """
    with pytest.raises(UnknownRoleError, match=r"budgets\.per_role_usd\.rr"):
        orchlab.load_config(write_config(base + "budgets: {per_role_usd: {rr: 1}}\n"))
    with pytest.raises(ConfigValidationError, match="set twice"):
        orchlab.load_config(write_config(base + "budgets: {per_role_usd: {r: 1}}\n"))
    with pytest.raises(ConfigValidationError, match="session_usd"):
        orchlab.load_config(write_config(base + "budgets: {session_usd: -1}\n"))


def test_negative_limits_set_in_code_are_refused_with_the_key() -> None:
    budgets = Budgets(session_usd=1.0)
    with pytest.raises(InvalidRequestError, match=r"budgets\.set\(session_usd=\.\.\.\) must be >= 0, got -1"):
        budgets.set(session_usd=-1)
    with pytest.raises(InvalidRequestError, match=r"per_role_usd=\{'r': \.\.\.\}\) must be >= 0, got -0.5"):
        budgets.set(per_role_usd={"r": -0.5})
    assert budgets.limit_usd() == 1.0 and budgets.limit_usd("r") is None


def test_budgets_object_directly() -> None:
    budgets = Budgets(session_usd=1.0, per_call_usd=0.5)
    call_a, call_b = object(), object()
    first = budgets.reserve(call_a, "r", "p:m", 0.4)
    second = budgets.reserve(call_a, "r", "p:m", 0.1)  # the same call: 0.5 of its 0.5
    with pytest.raises(BudgetExceededError) as info:
        budgets.reserve(call_a, "r", "p:m", 0.01)
    assert info.value.scope == "per-call budget"
    third = budgets.reserve(call_b, "r", "p:m", 0.45)  # another call has its own per-call budget
    assert budgets.reserved_usd() == pytest.approx(0.95)
    with pytest.raises(BudgetExceededError) as info:
        budgets.reserve(object(), "r", "p:m", 0.1)
    assert info.value.scope == "session budget"
    budgets.settle(first, 0.1)
    budgets.settle(second, None)  # unknown actual cost: the worst case counts
    budgets.release(third)
    budgets.release(third)  # twice is harmless
    assert budgets.spent_usd() == pytest.approx(0.2)
    assert budgets.reserved_usd() == 0.0
    assert budgets.remaining_usd() == pytest.approx(0.8)


# A race between test doubles: "fast" (cloud) answers; "slow" (cloud) and "home" (local) are
# cancelled mid-call. $1000 per Mtok everywhere: "What is 2+2?" is 12 bytes, so the prompt
# ceiling is 12 + 8 + 8 = 28 tokens and, with max_tokens 10, each worst case is $0.038.
RACE = """
project: budgets
tracking: {enabled: false}
providers:
  fast: {type: test, options: {models: {m: {reply: "fast answer", latency_s: 0.02}}}}
  slow: {type: test, options: {models: {m: {reply: "a b c d e f g h", latency_s: 0.01, tokens_per_s: 20}}}}
  home: {type: test_local, options: {models: {m: {reply: "local answer", latency_s: 0.5}}}}
models:
  "fast:m": {input_price_per_mtok: 1000, output_price_per_mtok: 1000}
  "slow:m": {input_price_per_mtok: 1000, output_price_per_mtok: 1000}
  "home:m": {input_price_per_mtok: 1000, output_price_per_mtok: 1000}
budgets: {session_usd: 1.0}
roles:
  race:
    provider: slow
    model: m
    strategy: parallel
    candidates: ["fast:m", "home:m"]
    params: {max_tokens: 10}
  streamed: {provider: slow, model: m, params: {max_tokens: 10}}
"""
RACE_WORST = 0.038


def test_a_cancelled_cloud_attempt_keeps_its_worst_case_as_spent(client_for: MakeClient) -> None:
    client = client_for(RACE)
    r = client.run("race", [{"role": "user", "content": "What is 2+2?"}])
    outcomes = {a.provider: a.outcome for a in r.decision.attempts}
    assert outcomes == {"slow": "cancelled", "fast": "ok", "home": "cancelled"}
    assert client.provider("slow").calls[0].outcome == "cancelled"  # it was sent, then cancelled
    costs = {a.provider: a.cost_usd for a in r.decision.attempts}
    assert costs == {"slow": None, "fast": pytest.approx(0.005), "home": None}  # losers: unreported
    # the budgets count the winner at its actual cost (3 words in, 2 out) and the cloud loser at
    # its worst case, since it may have billed the prompt and its tokens so far; the local loser
    # (its own hardware, even with a YAML price) is released
    assert client.budgets.spent_usd() == pytest.approx(0.005 + RACE_WORST)
    assert client.budgets.spent_usd("race") == pytest.approx(0.005 + RACE_WORST)
    assert client.budgets.reserved_usd() == 0.0


def test_a_cloud_stream_closed_early_keeps_its_worst_case_as_spent(client_for: MakeClient) -> None:
    client = client_for(RACE)
    stream = client.stream("streamed", [{"role": "user", "content": "What is 2+2?"}])
    for _delta in stream:
        break  # the caller stops reading: the stream is closed, the provider has billed some tokens
    assert stream.response is None
    assert client.budgets.spent_usd() == pytest.approx(RACE_WORST)
    assert client.budgets.reserved_usd() == 0.0


# --- issue 10, item 8: no negative reservation; a provider's overrun is charged, recorded, warned ---


def test_a_negative_max_tokens_is_refused_and_reserves_nothing(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    """Today's bug: -1000 made the reservation negative, and 100 calls went out past $0.05."""
    client = make_client(PRICED + "budgets: {session_usd: 0.05}\n")
    for _ in range(100):
        with pytest.raises(InvalidRequestError, match="'max_tokens'"):
            client.run("r", HI, {"max_tokens": -1000})
        with pytest.raises(InvalidRequestError, match="'max_tokens'"):
            client.complete("hi", role="r", max_tokens=-1000)
    assert chat_requests(openai_server) == 0
    assert (client.budgets.spent_usd(), client.budgets.reserved_usd()) == (0.0, 0.0)


def test_the_budget_itself_never_holds_a_negative_or_nan_reservation() -> None:
    budgets = Budgets(session_usd=0.05)
    call = object()
    held = budgets.reserve(call, "r", "openai:m", -5.0)
    assert held.amount == 0.0 and budgets.reserved_usd() == 0.0 and budgets.remaining_usd() == 0.05
    with pytest.raises(BudgetExceededError):
        budgets.reserve(call, "r", "openai:m", float("nan"))
    # a negative or NaN actual cost is no cost: the reserved worst case counts
    worst = budgets.reserve(call, "r", "openai:m", 0.02)
    assert budgets.settle(worst, -1.0) == 0.0
    assert budgets.spent_usd() == pytest.approx(0.02)


def test_usage_beyond_the_reservation_is_charged_recorded_and_warned_once(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(PRICED + "budgets: {session_usd: 0.2}\n")
    # max_tokens is 10, but the provider reports 100 output tokens: $0.118 against $0.028 reserved
    over = completion_body("ok", model="house-model", prompt_tokens=18, completion_tokens=100)
    openai_server.push(Reply(body=over), Reply(body=over))
    with pytest.warns(OrchlabWarning, match=r"house-model \(role 'r'\) reported usage costing") as seen:
        r = client.run("r", HI)
    assert len(seen) == 1 and "$0.09 more than the worst case reserved" in str(seen[0].message)
    assert r.cost_usd == pytest.approx(0.118) and r.overrun_usd == pytest.approx(0.09)
    (attempt,) = r.decision.attempts
    assert attempt.overrun_usd == pytest.approx(0.09) and "more than its budget reservation" in (
        attempt.note or ""
    )
    assert client.budgets.spent_usd() == pytest.approx(0.118)  # charged what it reported
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second overrun of role and model is recorded, not warned
        r2 = client.complete("hi", role="r")
    assert r2.overrun_usd == pytest.approx(0.09)
    assert client.budgets.spent_usd() == pytest.approx(0.236)  # above the limit, by the overruns
    usage = client.usage(by=[])
    assert usage.loc[0, "overrun_usd"] == pytest.approx(0.18)
    # the budget is exhausted now: the next call is refused before sending
    with pytest.raises(BudgetExceededError):
        client.run("r", HI)
    assert chat_requests(openai_server) == 2


def test_usage_within_the_reservation_is_no_overrun(
    make_client: MakeClient, openai_server: OpenAIWireServer
) -> None:
    client = make_client(PRICED + "budgets: {session_usd: 1.0}\n")
    openai_server.push(*full_usage_replies(1))
    r = client.run("r", HI)
    assert r.cost_usd == pytest.approx(WORST) and r.overrun_usd is None
    assert r.decision.attempts[0].overrun_usd is None
    assert client.usage(by=[]).loc[0, "overrun_usd"] == 0.0

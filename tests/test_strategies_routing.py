"""AUTO: the rule classifier, the LLM classifier, and the routing table."""

from __future__ import annotations

import re

import pytest

import orchlab
from orchlab.errors import ConfigValidationError, UnknownRoleError
from orchlab.strategies import TaskType, classify
from orchlab.strategies.routing import parse_task_type
from orchlab.testing import Step

TRACEBACK = """Why does this fail?
Traceback (most recent call last):
  File "app.py", line 3, in <module>
    main()
  File "app.py", line 2, in main
    return 1 / 0
ZeroDivisionError: division by zero"""

CODE = """def add(a, b):
    return a+b

def mul(a, b):
    return a*b"""

CSV = """region,q1,q2,q3
north,120,135,150
south,98,91,87
east,143,160,171
What trend do you see?"""

LONG_TEXT = " ".join(["The committee met on Tuesday and discussed the budget at length."] * 60)

CASES = [
    (TRACEBACK, TaskType.ERROR_DIAGNOSIS),
    ("I get KeyError: 'user' when I call get_profile(), what is wrong?", TaskType.ERROR_DIAGNOSIS),
    (f"Please review this code:\n```python\n{CODE}\n```", TaskType.CODE_REVIEW),
    (f"Refactor this for readability:\n{CODE}", TaskType.CODE_REVIEW),
    ("Write a Python function that parses ISO dates.", TaskType.CODE_GENERATION),
    ("Implement a class for an LRU cache in Rust", TaskType.CODE_GENERATION),
    (f"Summarize this in two sentences:\n{LONG_TEXT}", TaskType.SUMMARIZATION),
    (LONG_TEXT, TaskType.SUMMARIZATION),
    ("TL;DR of the meeting notes below please", TaskType.SUMMARIZATION),
    ("Design an Airflow DAG that loads S3 files into Postgres nightly.", TaskType.WORKFLOW_GENERATION),
    ("Create a GitHub Actions workflow that runs pytest on each push", TaskType.WORKFLOW_GENERATION),
    (CSV, TaskType.DATA_INTERPRETATION),
    (
        "The median latency rose from 120 ms to 180 ms while the mean stayed flat; what does the "
        "distribution look like?",
        TaskType.DATA_INTERPRETATION,
    ),
    (
        "If all bloops are razzies and all razzies are lazzies, are all bloops lazzies? Explain why.",
        TaskType.REASONING,
    ),
    ("A train leaves at 3pm at 60 km/h; how many km has it covered by 5:30pm?", TaskType.REASONING),
    ("Hello there!", TaskType.GENERAL),
    ("What is the capital of France?", TaskType.GENERAL),
]


@pytest.mark.parametrize(
    ("text", "expected"), CASES, ids=[e.value + str(i) for i, (_, e) in enumerate(CASES)]
)
def test_rule_classifier(text: str, expected: TaskType) -> None:
    result = classify(text)
    assert result.task_type is expected, result.reason
    assert result.source == "rules" and result.reason
    assert result.elapsed_s >= 0


def test_classifier_explains_itself() -> None:
    assert "traceback" in classify(TRACEBACK).reason
    assert classify("Hello").reason == "no marker matched"


def test_parse_task_type_from_llm_text() -> None:
    assert parse_task_type("Category: code review") is TaskType.CODE_REVIEW
    assert parse_task_type(" summarization\n") is TaskType.SUMMARIZATION
    assert parse_task_type("reasoning, or maybe general") is TaskType.REASONING
    assert parse_task_type("no idea") is None


CONFIG = """
project: t
tracking: {enabled: false}
providers:
  fast: {type: test, options: {models: {m: {reply: "fast"}, code: {reply: "def f(): pass"}}}}
  slow: {type: test, options: {models: {m: {reply: "slow", latency_s: 0.3}}}}
  deep: {type: test, options: {models: {cheap: {reply: "cheap"}, premium: {reply: "premium"}}}}
  router:
    type: test
    options:
      models:
        clf: {rules: [{contains: "meeting", reply: "Category: summarization"}], reply: "unsure"}
models:
  "router:clf": {input_price_per_mtok: 1.0, output_price_per_mtok: 1.0}
  "fast:m": {input_price_per_mtok: 2.0, output_price_per_mtok: 2.0}
routing:
  default: general
  routes:
    code_generation: coder
    summarization: "fast:m"
    reasoning: {cheap: "deep:cheap", premium: "deep:premium", default: "deep:cheap"}
roles:
  general: {provider: fast, model: m}
  coder: {provider: slow, model: m, strategy: parallel, candidates: ["fast:code"]}
  smart: {provider: fast, model: m, strategy: auto}
"""


@pytest.fixture
def client(client_for):
    return client_for(CONFIG)


def test_auto_routes_to_a_role_with_its_own_strategy(client) -> None:
    r = client.complete("Write a Python function that parses ISO dates.")
    assert r.decision.strategy == "auto" and r.decision.task_type == "code_generation"
    assert r.content == "def f(): pass" and r.target == "fast:code"  # coder races: fast wins
    assert r.role == "coder"
    assert "routes.code_generation -> role 'coder' (parallel)" in r.decision.rationale
    assert [a.outcome for a in r.decision.attempts] == ["cancelled", "ok"]


def test_auto_routes_to_a_target_to_a_tier_and_to_the_default(client) -> None:
    r = client.complete("TL;DR of the meeting notes please")
    assert r.decision.task_type == "summarization" and r.target == "fast:m"
    r = client.complete("Why is the sky blue? Explain step by step.", tier="premium")
    assert r.decision.task_type == "reasoning" and r.content == "premium"
    assert "routes.reasoning.premium" in r.decision.rationale
    r = client.complete("Why is the sky blue? Explain step by step.")
    assert r.content == "cheap" and "routes.reasoning.default" in r.decision.rationale
    r = client.complete("Hello there")
    assert r.decision.task_type == "general" and r.content == "fast"
    assert "routing.default -> role 'general'" in r.decision.rationale


def test_auto_routes_to_the_cheap_tier_when_the_session_budget_runs_low(client_for) -> None:
    priced = CONFIG.replace(
        "\nmodels:\n",
        '\nmodels:\n  "deep:cheap": {input_price_per_mtok: 1, output_price_per_mtok: 1}\n'
        '  "deep:premium": {input_price_per_mtok: 10, output_price_per_mtok: 10}\n',
    )
    c = client_for(
        priced.replace(
            "  default: general\n",
            "  default: general\n  tier: premium\n  low_budget: {below_usd: 0.5, tier: cheap}\n",
        )
    )
    why = "Why is the sky blue? Explain step by step."
    assert c.complete(why, max_tokens=16).content == "premium"  # no session budget: routing.tier
    c.budgets.set(session_usd=1.0)
    assert c.complete(why, max_tokens=16).content == "premium"  # $1 left: not low
    c.budgets.set(session_usd=0.4)
    r = c.complete(why, max_tokens=16)
    assert r.content == "cheap" and r.target == "deep:cheap"
    # $0.4 less what the two premium calls spent
    assert re.search(
        r"routes\.reasoning\.cheap \(session budget \$0\.39\d* left < low_budget\.below_usd \$0\.5\)",
        r.decision.rationale,
    )
    assert c.complete(why, max_tokens=16, tier="premium").content == "premium"  # the call's tier wins


def test_low_budget_names_a_tier_the_routes_have(write_config) -> None:
    base = CONFIG.replace(
        "  default: general\n", "  default: general\n  low_budget: {below_usd: 1, tier: cheep}\n"
    )
    with pytest.raises(
        ConfigValidationError,
        match=r"low_budget\.tier 'cheep' is not a tier of any route \(tiers in routes: cheap, default, pre",
    ):
        orchlab.load_config(write_config(base))


def test_a_role_with_strategy_auto_and_a_task_type_given_by_the_caller(client) -> None:
    r = client.run("smart", [{"role": "user", "content": "Hello"}])
    assert r.decision.strategy == "auto" and r.decision.task_type == "general"
    r = client.complete("Hello", role="smart", task_type="code_generation")
    assert r.decision.task_type == "code_generation" and r.target == "fast:code"
    assert "task code_generation (given: named by the caller" in r.decision.rationale


def test_auto_over_the_calls_own_candidates_when_nothing_is_routed(client_for) -> None:
    c = client_for(CONFIG.replace("  default: general\n", ""))
    c.provider("slow").script("m", Step(error="auth"))
    r = c.complete("Hello there", strategy="auto", candidates=["slow:m", "fast:m"])
    assert r.content == "fast" and r.decision.task_type == "general"
    assert "no route: the call's candidates (fallback)" in r.decision.rationale


def test_llm_classifier_and_hybrid(client_for) -> None:
    for mode, expected_calls in (("llm", 2), ("hybrid", 1)):
        c = client_for(
            CONFIG.replace("routing:\n", f"routing:\n  classifier: {mode}\n  classifier_role: clf\n")
            + "  clf: {provider: router, model: clf}\n"
        )
        r = c.complete("Notes from the meeting: we agreed to ship on Friday.")
        assert r.decision.task_type == "summarization" and r.target == "fast:m"
        classify_attempt = r.decision.attempts[0]
        assert classify_attempt.stage == "classify" and classify_attempt.provider == "router"
        assert r.cost_usd is not None and r.cost_usd >= classify_attempt.cost_usd > 0
        assert "router:clf said 'Category: summarization'" in r.decision.rationale
        # a task the rules recognise: hybrid does not ask the LLM, llm mode does (and it is unsure)
        r = c.complete("Write a Python function that parses ISO dates.")
        assert r.decision.task_type == "code_generation"
        assert len(c.provider("router").calls) == expected_calls


def test_routing_yaml_is_checked(write_config) -> None:
    base = """
    project: t
    providers: {a: {type: test}}
    roles: {r: {provider: a, model: m}}
    """
    with pytest.raises(ConfigValidationError, match=r"routing\.routes\.poetry"):
        orchlab.load_config(write_config(base + "routing: {routes: {poetry: r}}\n"))
    with pytest.raises(ConfigValidationError, match="classifier 'llm' needs classifier_role"):
        orchlab.load_config(write_config(base + "routing: {classifier: llm}\n"))
    with pytest.raises(UnknownRoleError, match=r"routing\.routes\.reasoning: 'rr' is not a defined role"):
        orchlab.load_config(write_config(base + "routing: {routes: {reasoning: rr}}\n"))


@pytest.mark.slow
def test_auto_with_the_real_local_model(client_for, gguf_path) -> None:
    c = client_for(
        f"""
        project: t
        tracking: {{enabled: false}}
        providers:
          local: {{type: llamacpp, options: {{model_path: "{gguf_path}", n_ctx: 1024}}}}
          cloud: {{type: test, options: {{models: {{m: {{reply: "from the cloud"}}}}}}}}
        routing:
          classifier: hybrid
          classifier_role: clf
          default: chat
          routes:
            reasoning: thinker
        roles:
          chat: {{provider: cloud, model: m}}
          thinker: {{provider: local, model: gemma-3-270m, params: {{temperature: 0, max_tokens: 8}}}}
          clf: {{provider: local, model: gemma-3-270m, params: {{temperature: 0}}}}
        """
    )
    r = c.complete("What is 2+2?")  # rules: arithmetic -> reasoning
    assert r.decision.task_type == "reasoning" and r.target == "local:gemma-3-270m"
    assert "4" in r.content and r.usage.output_tokens > 0
    assert r.role == "thinker" and r.cost_usd == 0.0
    # rules say "general": hybrid asks the local model to classify (a 270M base model may not
    # name a category; then the rules' answer stands and the trail says what it said)
    r = c.complete("Hello there")
    first = r.decision.attempts[0]
    assert first.stage == "classify" and first.usage.output_tokens > 0
    assert r.decision.task_type in {t.value for t in TaskType}
    assert (
        "the LLM classifier said" in r.decision.rationale or "local:gemma-3-270m said" in r.decision.rationale
    )

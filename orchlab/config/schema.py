"""The `llm_orchestrator.yaml` schema: pydantic models with ``extra="forbid"``.

For example:

    project: my_project
    env: dev
    providers:
      openai: {auth_profile: openai_default, api_base: https://api.openai.com/v1}
      gpu1: {type: ollama, api_base: http://gpu1:11434}
    roles:
      llm.preprocess: {provider: openai, model: gpt-4.1-mini, params: {temperature: 0}}
      llm.inference: {provider: gpu1, model: "llama3.1:8b", fallbacks: ["openai:gpt-4.1"]}
"""

# no ``from __future__ import annotations``: pydantic would compile every annotation string when a
# class is created (~2 ms for this module on a one-shot script's first call); the few names used
# before they are defined are quoted
import json
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)


class _Strict(BaseModel):
    # allow_inf_nan: an infinite timeout or price, or a NaN, is never what a config means;
    # defer_build: validators are built when a config is first validated, not at import (only
    # OrchestratorConfig's, for a whole config: its nested models need none of their own). So a
    # section left out is {} validated by the enclosing model (default_factory=dict,
    # validate_default=True), not its class called: that built the class's own validator too
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, defer_build=True)


def _check_target(value: str) -> str:
    provider, sep, model = value.partition(":")
    if not sep or not provider or not model:
        raise ValueError(
            f"{value!r} is not of the form 'provider:model' (a candidate names a provider of this "
            "file and one of its models, e.g. 'local:gemma-3-270m')"
        )
    return value


Target = Annotated[str, AfterValidator(_check_target)]
"""A ``'provider:model'`` string."""


class PoolConfig(_Strict):
    """How a provider entry with ``deployments:`` spreads its requests (`orchlab.providers.deployments`)."""

    balance: Literal["least_outstanding", "latency"] = Field(
        default="least_outstanding",
        description="least_outstanding: fewest requests in flight; latency: a draw weighted by speed",
    )
    cooldown_after: int = Field(default=1, ge=1, description="consecutive retryable failures of a deployment")
    cooldown_s: float = Field(default=30.0, ge=0, description="how long such a deployment gets no requests")
    health_check_s: float = Field(
        default=15.0, ge=0, description="seconds between health checks of every deployment (0: none)"
    )


class ProviderConfig(_Strict):
    """One provider entry. ``type`` names the adapter (a built-in kind, an installed plugin's kind, or
    ``"package.module:Class"``: `orchlab.providers.registry`); it defaults to the entry's key.
    ``deployments:`` lists several servers of the same models (instead of ``api_base``)."""

    type: str | None = Field(
        default=None,
        description="the adapter: openai, deepseek, qwen, openrouter, vllm, lmstudio, llamacpp_server, "
        "anthropic, gemini, ollama, llamacpp, test, a plugin's kind or 'package.module:Class' "
        "(default: the entry's key)",
    )
    auth_profile: str | None = Field(
        default=None,
        description="the key comes from ORCH_AUTH_<PROFILE>_API_KEY (default profile: the entry's key)",
    )
    api_base: str | None = Field(default=None, description="the server's base URL (default: the SDK's)")
    key_file: str | None = Field(
        default=None, description="a file holding the key, when the env var is unset (relative to the YAML)"
    )
    timeout_s: float = Field(default=60.0, gt=0, description="deadline of a whole attempt (seconds)")
    stream_idle_timeout_s: float | None = Field(
        default=None, gt=0, description="longest silence inside a stream (default: timeout_s)"
    )
    max_retries: int = Field(default=0, ge=0, description="retries inside the SDK itself")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="adapter-specific settings, validated by the adapter (e.g. model_path, n_ctx)",
    )
    deployments: list[Annotated[str, Field(min_length=1)]] = Field(
        default=[], description="base URLs of several servers of the same models (a pool)"
    )
    pool: PoolConfig | None = Field(default=None, description="how requests spread over deployments:")

    @model_validator(mode="after")
    def _deployments(self) -> "ProviderConfig":
        if self.deployments and self.api_base is not None:
            raise ValueError("give api_base or deployments, not both (deployments: one URL per server)")
        if self.pool is not None and not self.deployments:
            raise ValueError("pool: applies to deployments: (list the servers' URLs there)")
        seen = [u for i, u in enumerate(self.deployments) if u in self.deployments[:i]]
        if seen:
            raise ValueError(f"deployment {seen[0]!r} is listed twice")
        return self


class RoleParams(_Strict):
    """Generation defaults for a role; a call's ``params_override`` goes on top, checked by this
    same model (strictly: no ``"10"`` for 10) in `orchlab.resolution.check_params`.

    Ranges are the widest the providers document (OpenAI and Gemini take temperature 0-2;
    Anthropic's 0-1 is left to its API). ``max_tokens: 0`` asks for an empty answer: orchlab
    returns it without sending anything.
    """

    temperature: float | None = Field(default=None, ge=0, le=2, description="sampling temperature")
    max_tokens: int | None = Field(
        default=None, ge=0, description="most output tokens (also what budgets reserve); 0: an empty answer"
    )
    top_p: float | None = Field(default=None, gt=0, le=1, description="nucleus sampling")
    stop: list[str] | None = Field(default=None, description="stop sequences (one string or a list)")
    seed: int | None = Field(default=None, description="a fixed seed, where the provider takes one")
    logprobs: bool = Field(default=False, description="ask for the tokens' log-probabilities")
    timeout_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="this role's attempt deadline (over the provider's)",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict, description="provider-specific parameters passed through as they are"
    )

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [value]
        return list(value) if isinstance(value, tuple) else value

    @field_validator("stop")
    @classmethod
    def _sendable_stop(cls, value: list[str] | None) -> list[str] | None:
        for i, item in enumerate(value or ()):
            problem = unsendable(item)
            if problem:
                raise ValueError(f"stop[{i}] {problem}")
        return value

    @field_validator("extra")
    @classmethod
    def _sendable_extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, item in value.items():
            problem = unsendable(item)
            if problem:
                raise ValueError(f"extra[{key!r}] {problem}")
        return value


def unsendable(value: Any) -> str | None:
    """Why ``value`` cannot go into a request body (JSON, UTF-8), or None when it can."""
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a character that cannot be sent ({exc.reason}: {exc.object[exc.start : exc.end]!r})"
    except (TypeError, ValueError, RecursionError) as exc:
        return f"is not JSON-encodable ({exc})"
    return None


# --- strategies (orchlab.strategies reads these; the names match its enums) ------------------


class Strategy(StrEnum):
    """How a call uses its candidates: the one list of orchestration logics (each member has one
    `orchlab.strategies.Logic` registered for it)."""

    AUTO = "auto"
    """Classify the task, then follow the ``routing:`` table."""
    LOCAL_ONLY = "local"
    """Only local candidates, as a fallback chain."""
    CLOUD_ONLY = "cloud"
    """Only cloud candidates, as a fallback chain."""
    LOCAL_FIRST = "local_first"
    """Local candidates first, then cloud ones."""
    CLOUD_FIRST = "cloud_first"
    """Cloud candidates first, then local ones."""
    ENSEMBLE = "ensemble"
    """Several answers combined (`EnsembleMode`)."""
    PARALLEL = "parallel"
    """All at once; the first good answer wins, the others are cancelled."""
    CASCADE = "cascade"
    """Cheapest first; escalate while the confidence score is under the threshold."""
    SINGLE = "single"
    """One model: the first candidate."""
    FALLBACK = "fallback"
    """The candidates in order, each retried, until one answers."""
    SELECT = "select"
    """The model the catalog picks for a rule (capability, tier, max cost, local or cloud)."""


def _logic_id(value: object) -> object:
    """A YAML ``strategy:``: a built-in value (as its `Strategy`) or an added/installed logic id
    (`orchlab.config.logic_ids`)."""
    if isinstance(value, Strategy) or not isinstance(value, str):
        return value
    if value in [s.value for s in Strategy]:
        return Strategy(value)
    from orchlab.config import logic_ids

    logic_ids.check(value)
    return value


LogicId = Annotated[Strategy | str, BeforeValidator(_logic_id)]
"""A logic id: a `Strategy` (built-in) or the id of a logic added with ``register_logic`` or
installed as a plugin (entry-point group ``orchlab.logics``)."""


ScorerName = Literal["logprob", "agreement", "judge", "json", "regex"]
TaskTypeName = Literal[
    "code_generation",
    "code_review",
    "reasoning",
    "summarization",
    "error_diagnosis",
    "data_interpretation",
    "workflow_generation",
    "general",
]


class CandidateConfig(_Strict):
    """A candidate with its own settings; the plain string form is just ``'provider:model'``."""

    target: Target = Field(description="the candidate's 'provider:model'")
    params: RoleParams | None = Field(default=None, description="over the role's params")
    threshold: float | None = Field(default=None, ge=0, le=1, description="cascade: accept at or above")
    scorer: ScorerName | None = Field(default=None, description="cascade: this stage's scorer")


class LogicCandidateConfig(_Strict):
    """A candidate that is itself a logic: ``{strategy: parallel, candidates: [...]}`` (a cascade
    stage that is a race, a fallback candidate that is an ensemble)."""

    strategy: LogicId = Field(description="the logic this candidate runs (a strategy or a logic id)")
    candidates: "list[Candidate]" = Field(min_length=1, description="its own candidates, as in a role")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="the logic's own params (its Logic.from_params)"
    )
    threshold: float | None = Field(default=None, ge=0, le=1, description="cascade: accept at or above")
    scorer: ScorerName | None = Field(default=None, description="cascade: this stage's scorer")

    def targets(self) -> list[str]:
        """Every 'provider:model' inside, nested logics included."""
        out: list[str] = []
        for c in self.candidates:
            if isinstance(c, LogicCandidateConfig):
                out += c.targets()
            else:
                out.append(c if isinstance(c, str) else c.target)
        return out


def _candidate_kind(value: object) -> str:
    """Which form a candidate is written in, so a mistake is reported against that form only (a
    plain union reports every form's complaint: three problems for one wrong string)."""
    if isinstance(value, str):
        return TARGET_TAG
    if isinstance(value, LogicCandidateConfig) or (isinstance(value, dict) and "strategy" in value):
        return LOGIC_TAG
    return CANDIDATE_TAG


TARGET_TAG, CANDIDATE_TAG, LOGIC_TAG = "<provider:model>", "<candidate>", "<logic>"
UNION_TAGS = frozenset({TARGET_TAG, CANDIDATE_TAG, LOGIC_TAG})
"""The tags a candidate's error location carries; the loader leaves them out of key paths."""

Candidate = Annotated[
    Annotated[Target, Tag(TARGET_TAG)]
    | Annotated[CandidateConfig, Tag(CANDIDATE_TAG)]
    | Annotated[LogicCandidateConfig, Tag(LOGIC_TAG)],
    Discriminator(_candidate_kind),
]
"""A role's or a logic candidate's candidate: ``'provider:model'``, ``{target: ..., params: ...}``
or ``{strategy: ..., candidates: [...]}``."""


class ScorerConfig(_Strict):
    """How an answer is scored (cascade stages, the race's acceptance check)."""

    scorer: ScorerName = Field(default="logprob", description="how an answer gets its confidence score")
    threshold: float = Field(default=0.7, ge=0, le=1, description="accept at or above; escalate below")
    pattern: str | None = Field(default=None, description="regex scorer: re.search pattern")
    judge: str | None = Field(default=None, description="judge scorer: a role or 'provider:model'")
    samples: int = Field(default=3, ge=2, description="agreement scorer: answers compared (k)")
    sample_temperature: float = Field(
        default=0.8, ge=0, le=2, description="agreement scorer: temperature of the extra samples"
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _needs(self) -> "ScorerConfig":
        if self.scorer == "regex" and not self.pattern:
            raise ValueError("scorer 'regex' needs pattern:")
        if self.scorer == "judge" and not self.judge:
            raise ValueError("scorer 'judge' needs judge: (a role or 'provider:model')")
        return self


class CascadeConfig(ScorerConfig):
    """A cascade's scorer and threshold (each stage may set its own), and the order of its stages."""

    order: Literal["yaml", "price"] = Field(
        default="yaml", description="stage order: as written, or cheapest first by catalog price"
    )


class RetryConfig(_Strict):
    """Fallback behaviour: retries of one candidate, then the next; cooldown of failing providers."""

    retries: int = Field(default=1, ge=0, description="retries of a candidate on a retryable error")
    backoff_s: float = Field(default=0.5, ge=0, description="first backoff; doubles per retry")
    max_backoff_s: float = Field(default=8.0, ge=0, description="the longest backoff")
    max_retry_after_s: float = Field(
        default=30.0, ge=0, description="a longer retry-after moves on to the next candidate instead"
    )
    attempt_timeout_s: float | None = Field(default=None, gt=0, description="per attempt, then next")
    cooldown_after: int = Field(default=3, ge=1, description="consecutive retryable failures")
    cooldown_s: float = Field(default=30.0, ge=0, description="how long such a provider is skipped")


class EnsembleConfig(_Strict):
    """How an ensemble combines its candidates' answers (`EnsembleMode`)."""

    mode: Literal["vote", "chain", "judge", "fuse"] = Field(
        default="vote",
        description="vote: majority; chain: each refines the last; judge: a judge picks; "
        "fuse: an aggregator merges",
    )
    judge: str | None = Field(default=None, description="judge mode: a role or 'provider:model'")
    aggregator: str | None = Field(default=None, description="fuse mode: a role or 'provider:model'")


class LowBudgetRouting(_Strict):
    """AUTO by budget: while the session budget has less than ``below_usd`` left, routes given per
    tier use ``tier`` (a call's own ``tier=`` still wins)."""

    below_usd: float = Field(ge=0, description="the session budget's remaining USD under which it applies")
    tier: str = Field(description="the tier routes use then, e.g. cheap")


TierName = Literal["fast", "standard", "advanced"]
Level = Literal["low", "medium", "high"]
CapabilityName = Literal["chat", "code", "reasoning", "vision", "tools", "embedding"]

DEFAULT_RISK_COMPLEXITY: dict[str, dict[str, str]] = {
    "low": {"low": "fast", "medium": "fast", "high": "standard"},
    "medium": {"low": "fast", "medium": "standard", "high": "advanced"},
    "high": {"low": "standard", "medium": "advanced", "high": "advanced"},
}
"""risk -> complexity -> catalog tier, when ``routing.tiers.risk_complexity`` does not say."""
DEFAULT_TASK_TIERS: dict[str, str] = {
    "code_generation": "standard",
    "code_review": "advanced",
    "reasoning": "advanced",
    "summarization": "fast",
    "error_diagnosis": "standard",
    "data_interpretation": "standard",
    "workflow_generation": "standard",
    "general": "fast",
}
"""task type -> catalog tier, when ``routing.tiers.task_types`` does not say."""


class TiersConfig(_Strict):
    """``routing.tiers``: a call's ``risk=`` / ``complexity=`` (low, medium, high; one alone: the
    other is medium) or task type -> the catalog tier a selector asks for. Entries given here go
    over the defaults (`DEFAULT_RISK_COMPLEXITY`, `DEFAULT_TASK_TIERS`)."""

    risk_complexity: dict[Level, dict[Level, TierName]] = Field(
        default_factory=dict, description="risk -> complexity -> tier"
    )
    task_types: dict[TaskTypeName, TierName] = Field(default_factory=dict, description="task type -> tier")


class SelectConfig(_Strict):
    """A role that says what it needs instead of naming a model: the catalog picks the model
    (`orchlab.catalog.select`), again whenever what it knows changes."""

    capability: CapabilityName = Field(default="chat", description="what the model must be able to do")
    tier: TierName | None = Field(default=None, description="a call's risk/complexity/task type wins")
    max_cost_per_call: float | None = Field(
        default=None, ge=0, description="USD for prompt_tokens in and output_tokens out"
    )
    prefer: Literal["cheapest", "local", "cloud"] = Field(
        default="cheapest", description="local (or cloud) models first when any matches, then the cheapest"
    )
    providers: list[str] = Field(default=[], description="provider entries to pick from (all)")
    prompt_tokens: int = Field(default=1000, gt=0, description="the call size costs are estimated for")
    output_tokens: int = Field(default=500, gt=0, description="(the role's max_tokens when it sets one)")
    discover: bool = Field(
        default=True, description="ask the local providers among them for their models on first use"
    )


class RoutingConfig(_Strict):
    """AUTO: task type -> a role or ``'provider:model'`` (optionally per tier)."""

    default: str | None = Field(default=None, description="when no route matches")
    classifier: Literal["rules", "llm", "hybrid"] = Field(
        default="rules", description="hybrid: rules first, the LLM only when they say 'general'"
    )
    classifier_role: str | None = Field(
        default=None, description="the role that classifies for classifier llm or hybrid"
    )
    tier: str | None = Field(default=None, description="default tier for routes given per tier")
    low_budget: LowBudgetRouting | None = Field(
        default=None, description="a cheaper tier while the session budget runs low"
    )
    routes: dict[TaskTypeName, str | dict[str, str]] = Field(
        default_factory=dict, description="task type -> a role or 'provider:model', or tier -> one"
    )
    tiers: TiersConfig = Field(
        default_factory=dict,
        validate_default=True,
        description="risk/complexity or task type -> a selector's tier",
    )

    @model_validator(mode="after")
    def _check(self) -> "RoutingConfig":
        if self.classifier != "rules" and not self.classifier_role:
            raise ValueError(f"classifier {self.classifier!r} needs classifier_role:")
        if self.low_budget is not None:
            tiers = sorted({t for route in self.routes.values() if isinstance(route, dict) for t in route})
            if self.low_budget.tier not in tiers:
                raise ValueError(
                    f"low_budget.tier {self.low_budget.tier!r} is not a tier of any route "
                    f"(tiers in routes: {', '.join(tiers) or 'none'})"
                )
        return self


CacheMode = Literal["auto", "force", "off"]


class RoleConfig(_Strict):
    """A role: what a call of it runs (its own model, a strategy over candidates, or a selector's
    pick) and with which params."""

    provider: str | None = Field(
        default=None, description="the role's own model's provider (stage 1); omit with candidates: only"
    )
    model: str | None = Field(default=None, description="the role's own model, as its provider names it")
    description: str | None = Field(default=None, description="what the role is for (shown in listings)")
    kind: Literal["chat", "embedding"] | None = Field(
        default=None,
        description="embedding: a role for client.embed(); unset: an embedding model in the catalog "
        "makes it one, anything else is a chat role",
    )
    params: RoleParams = Field(default_factory=dict, validate_default=True)
    # default=[] (pydantic copies a mutable default per instance), not default_factory=list: pydantic
    # reads a factory's signature, and inspect.signature(list) compiles tokenize's regex (~5 ms) on
    # the first validation
    fallbacks: list[Target] = Field(default=[], description="'provider:model' targets")
    strategy: LogicId | None = Field(
        default=None, description="how a call uses the candidates (default: fallback when there are any)"
    )
    candidates: list[Candidate] = Field(
        default=[], description="tried/raced/asked after the role's own model, in order"
    )
    cascade: CascadeConfig | None = Field(
        default=None, description="strategy cascade: scorer, threshold, order"
    )
    parallel: ScorerConfig | None = Field(default=None, description="race: what counts as a good answer")
    ensemble: EnsembleConfig | None = Field(default=None, description="strategy ensemble: mode, judge")
    options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="a logic you wrote (strategy: <its id>): its own params"
    )
    retry: RetryConfig | None = None
    budget_usd: float | None = Field(
        default=None, ge=0, description="this role's budget in USD (or budgets.per_role_usd)"
    )
    toolset: str | None = Field(
        default=None, description="a toolsets: entry its calls offer when the call names no tools"
    )
    select: SelectConfig | None = Field(
        default=None, description="instead of provider:/model:, what the model must be (the catalog picks)"
    )
    cache: CacheMode | None = Field(
        default=None,
        description="the response cache for this role: auto (deterministic requests only), force, off",
    )

    @field_validator("cache", mode="before")
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML reads a bare ``off`` as false (and ``on`` as true)."""
        return {False: "off", True: "force"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _own_model_or_candidates(self) -> "RoleConfig":
        if (self.provider is None) != (self.model is None):
            given, missing = ("provider", "model") if self.model is None else ("model", "provider")
            raise ValueError(f"the role gives {given} but no {missing}: give both, or neither")
        if self.select is not None:
            if self.provider is not None or self.candidates:
                raise ValueError("select: picks the role's model: give no provider:/model: or candidates:")
            if self.strategy not in (None, Strategy.SELECT):
                raise ValueError(f"select: runs the select logic, not strategy {self.strategy!s}")
            return self
        if self.strategy is Strategy.SELECT:
            raise ValueError("strategy: select needs select: {capability: ..., tier: ..., ...}")
        if self.provider is None and not (self.strategy and self.candidates):
            raise ValueError(
                "the role needs provider: and model:, or strategy: with candidates: "
                "(then its candidates are all its stages), or select: (the catalog picks its model)"
            )
        if self.kind == "embedding" and self.has_strategy:
            raise ValueError("an embedding role (kind: embedding) takes no strategy, candidates or fallbacks")
        if self.options and (self.strategy is None or isinstance(self.strategy, Strategy)):
            raise ValueError(
                "options: is for a logic you wrote (strategy: <its id>); a built-in strategy takes "
                "its settings under cascade:, parallel: or ensemble:"
            )
        return self

    def own_target(self) -> str | None:
        """``'provider:model'`` of the role's own model, else of its first candidate (a role whose
        candidates are all its stages); None for a role with ``select:`` (the catalog picks)."""
        if self.select is not None:
            return None
        if self.provider is not None:
            return f"{self.provider}:{self.model}"
        first = self.candidates[0]
        if isinstance(first, LogicCandidateConfig):
            return first.targets()[0]
        return first if isinstance(first, str) else first.target

    @property
    def has_strategy(self) -> bool:
        """Whether a call of this role runs a strategy: it names one, or has candidates or fallbacks."""
        return bool(self.strategy or self.candidates or self.fallbacks or self.select)


class EnvOverlay(_Strict):
    """Per-environment changes, merged over the base providers and roles when that env is used."""

    providers: dict[str, ProviderConfig] = Field(
        default_factory=dict, description="entries that replace the base's"
    )
    roles: dict[str, RoleConfig] = Field(default_factory=dict, description="roles that replace the base's")


class TrackingConfig(_Strict):
    """MLflow tracking (orchlab.tracking). Env vars override it: ORCH_TRACKING, ORCH_TRACKING_URI, ..."""

    enabled: bool = Field(default=True, description="false: no traces (ORCH_TRACKING wins)")
    tracking_uri: str | None = Field(
        default=None,
        description="an MLflow store or server; default: sqlite:///mlflow.db in the working directory. "
        "Relative SQLite paths are relative to this YAML file",
    )
    experiment: str | None = Field(default=None, description="default: <project> · <env>")
    spool_dir: str | None = Field(
        default=None,
        description="where the journal of calls waits for the store, and the drain's log; "
        "default .orchlab/spool",
    )
    fsync: bool = Field(
        default=False, description="fsync the journal after every record (survives a power cut; slower)"
    )
    spool_max_mb: float = Field(
        default=256.0,
        gt=0,
        allow_inf_nan=False,
        description="cap of the journal per store (MiB); past it the oldest records are dropped",
    )


class StoreConfig(_Strict):
    """The thread store (orchlab.store): threads, messages, feedback. ``ORCH_STORE_URL`` overrides it."""

    url: str | None = Field(
        default=None,
        description="a SQLAlchemy URL: sqlite:///PATH (relative to this YAML file) or "
        "postgresql+psycopg://USER@HOST/DB; default: .orchlab/store.db next to the MLflow SQLite store",
    )
    context_depth: int = Field(default=10, ge=0, description="messages of a thread's branch sent with a call")


class CacheConfig(_Strict):
    """The response cache (orchlab.pipeline.cache). ``ORCH_CACHE=off`` turns it off everywhere."""

    enabled: bool = Field(default=True, description="false: no response cache (as ORCH_CACHE=off)")
    url: str | None = Field(
        default=None,
        description="sqlite:///PATH (relative to this YAML file) or redis://HOST:PORT/DB; "
        "default: .orchlab/cache.db beside the thread store",
    )
    ttl_s: float = Field(default=7 * 86400.0, gt=0, description="how long an answer is kept (seconds)")
    max_entries: int = Field(default=10_000, ge=1, description="past it the oldest answers are dropped")


class ModelConfig(_Strict):
    """A ``models:`` entry (key ``'provider:model'``): what it sets wins over genai-prices and the
    packaged metadata. Prices are USD per million tokens (custom prices, fine-tunes, self-hosted)."""

    display_name: str | None = Field(default=None, description="the name shown in listings")
    input_price_per_mtok: float | None = Field(default=None, ge=0, description="USD per million input tokens")
    output_price_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million output tokens"
    )
    cache_read_price_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million cached input tokens read (default: input price)"
    )
    cache_write_price_per_mtok: float | None = Field(
        default=None, ge=0, description="USD per million input tokens written to the cache"
    )
    context_window: int | None = Field(
        default=None, gt=0, description="prompt + output tokens the model takes"
    )
    max_output_tokens: int | None = Field(default=None, gt=0, description="the most tokens it writes")
    capabilities: list[CapabilityName] | None = Field(default=None, description="what the model can do")
    tier: Literal["fast", "standard", "advanced"] | None = Field(
        default=None, description="its tier, for selectors and AUTO routing"
    )

    @model_validator(mode="after")
    def _prices_together(self) -> "ModelConfig":
        if (self.input_price_per_mtok is None) != (self.output_price_per_mtok is None):
            raise ValueError("give both input_price_per_mtok and output_price_per_mtok, or neither")
        cache = self.cache_read_price_per_mtok is not None or self.cache_write_price_per_mtok is not None
        if cache and self.input_price_per_mtok is None:
            raise ValueError("cache prices need input_price_per_mtok and output_price_per_mtok too")
        return self


class BudgetsConfig(_Strict):
    """Spending limits in USD, enforced before sending (orchlab.budgets); overridable in code."""

    per_call_usd: float | None = Field(default=None, ge=0, description="one call, all its attempts")
    session_usd: float | None = Field(default=None, ge=0, description="everything one client spends")
    per_role_usd: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="role -> its budget (or the role's budget_usd)"
    )


class GatewayConfig(_Strict):
    """``orchlab serve`` (`orchlab.serve`): what the request's ``model`` may name, and the limits on
    a request."""

    aliases: dict[str, str] = Field(
        default_factory=dict, description="a model name callers send -> a role, 'provider:model' or a URN"
    )
    allow_direct_targets: bool = Field(
        default=False, description="accept 'provider:model' of a configured provider as the model"
    )
    drop_params: bool = Field(
        default=False, description="drop OpenAI parameters the gateway cannot honour instead of a 400"
    )
    max_body_bytes: int = Field(default=1_048_576, gt=0, description="a larger request body is a 413")
    read_timeout_s: float = Field(
        default=10.0, gt=0, description="time to receive a whole request body, else a 408"
    )
    expose: list[str] | None = Field(default=None, description="the roles served (default: every role)")
    auth: Literal["keys", "none"] | None = Field(
        default=None,
        description="keys: every request but /healthz and /readyz needs a key (orchlab keys create); "
        "none: open, on a loopback address only; default: keys unless the server binds loopback",
    )
    key_cache_s: float = Field(
        default=2.0,
        ge=0,
        description="how long a worker trusts a key it checked (a revoked key stops working within "
        "this time; at once on the worker that revoked it); 0: check every request",
    )
    rate_limit_store: str = Field(
        default="memory://",
        pattern=r"^(memory://|rediss?://.+)$",
        description="where rpm/tpm windows are counted: memory:// (one worker) or redis://HOST:PORT "
        "(shared by several workers)",
    )


ToolRef = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="an importable function, 'package.module:function'",
    ),
]


class OrchestratorConfig(_Strict):
    """A whole ``llm_orchestrator.yaml``."""

    project: str = Field(description="the project's name (in traces and the MLflow experiment's name)")
    env: str = Field(default="dev", description="the base env's name; env= or ORCH_ENV picks another")
    providers: dict[str, ProviderConfig] = Field(default_factory=dict, description="name -> a provider entry")
    roles: dict[str, RoleConfig] = Field(default_factory=dict, description="name -> what the role calls")
    envs: dict[str, EnvOverlay] = Field(
        default_factory=dict, description="env name -> providers and roles that replace the base ones"
    )
    routing: RoutingConfig = Field(default_factory=dict, validate_default=True)
    tracking: TrackingConfig = Field(default_factory=dict, validate_default=True)
    models: dict[Target, ModelConfig] = Field(
        default_factory=dict, description="'provider:model' -> prices, context window, capabilities, tier"
    )
    budgets: BudgetsConfig = Field(default_factory=dict, validate_default=True)
    gateway: GatewayConfig = Field(default_factory=dict, validate_default=True)
    store: StoreConfig = Field(default_factory=dict, validate_default=True)
    cache: CacheConfig = Field(default_factory=dict, validate_default=True)
    toolsets: dict[str, list[ToolRef]] = Field(
        default_factory=dict, description="name -> importable functions 'package.module:function'"
    )

    @model_validator(mode="after")
    def _known_toolsets(self) -> "OrchestratorConfig":
        for name, role in self.roles.items():
            if role.toolset is not None and role.toolset not in self.toolsets:
                known = ", ".join(sorted(self.toolsets)) or "none defined"
                raise ValueError(
                    f"roles.{name}.toolset is {role.toolset!r}, which is not under toolsets: ({known})"
                )
        return self

    def for_env(self, env: str) -> "OrchestratorConfig":
        """This config as seen from ``env``: that env's overlay merged over the base."""
        overlay = self.envs.get(env)
        if overlay is None:
            return self.model_copy(update={"env": env})
        return self.model_copy(
            update={
                "env": env,
                "providers": {**self.providers, **overlay.providers},
                "roles": {**self.roles, **overlay.roles},
            }
        )

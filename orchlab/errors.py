"""Every error orchlab raises, in one tree.

::

    OrchlabError
    ├── ConfigError                      bad YAML, schema, unknown role/provider/type
    │   ├── ConfigFileError              file missing/unreadable, invalid YAML (file, line, column)
    │   ├── ConfigValidationError        schema violation (key path + what was expected)
    │   ├── UnknownRoleError             role not defined (lists close matches)
    │   ├── UnknownProviderError         provider not defined / unknown adapter type
    │   ├── UnknownModelError            a model name the provider does not serve (lists those it does)
    │   ├── InvalidRequestError          empty or non-list messages, unknown message role, bad params
    │   ├── MissingDependencyError       an adapter's SDK is not installed (names the extra to install)
    │   └── PluginError                  a plugin's provider class cannot be imported or is no Provider
    ├── AuthError                        no key: names the env var and the key file it tried
    ├── ProviderError                    anything a provider call did wrong (provider, model, status,
    │   │                                retry_after, retryable)
    │   ├── AuthenticationError          401 / 403 from the provider
    │   ├── RateLimitError               429 (retry_after from the response headers)
    │   ├── ProviderTimeoutError         the request timed out
    │   ├── ProviderConnectionError      connection refused / DNS / reset
    │   ├── ProviderUnavailableError     5xx, overloaded (529)
    │   ├── ProviderResponseError        malformed body, unexpected shape
    │   │   └── OutputValidationError    no answer valid for the asked output model, after retries
    │   ├── ContextLengthExceededError   the provider said the prompt is too long
    │   └── UnsupportedCapabilityError   the adapter cannot do what was asked (never faked)
    ├── BudgetExceededError              the worst-case cost would overrun a budget (raised before sending)
    │   └── UnknownCostError             a budget applies but the call's cost cannot be bounded (no price)
    ├── ContextWindowError               prompt + max output exceed the model's window (before sending)
    ├── PromptError                      a registered prompt or template could not be loaded/rendered
    ├── TrackingError                    misuse of the tracking API (bad rating, unknown trace)
    ├── StoreError                       the thread store (orchlab.store): unknown thread/message,
    │                                    a database that cannot be opened or migrated
    └── StrategyError                    a strategy could not produce an answer
        ├── AllAttemptsFailedError       also an ExceptionGroup holding every attempt's error
        ├── ToolLoopError                delegate() reached max_steps with tool calls still asked
        └── NoModelMatchesError          a selector (select:) matches no model: what was ruled out, why

SDK exceptions are translated at the provider boundary (by behaviour: timeouts, broken
connections, HTTP statuses, malformed bodies; see `orchlab.providers.translate`). The SDK's own
exception holds the request and its API key, so it is not chained: ``__cause__`` is a
`ScrubbedCause`, a masked summary of it (type, message, status, headers without credentials, a body
excerpt, where it was raised), and ``__context__`` is cleared. Messages never contain an API key.

For example:

    try:
        client.run("llm.inference", messages)
    except orchlab.RateLimitError as exc:
        time.sleep(exc.retry_after or 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class OrchlabWarning(UserWarning):
    """Warnings orchlab emits itself (tracking degraded, deprecated option, ...)."""


class OrchlabError(Exception):
    """Base of every error orchlab raises."""

    trace_id: str | None = None
    """The MLflow trace of the call that failed with this error (set when tracking is on)."""


# --- configuration -------------------------------------------------------------------------


class ConfigError(OrchlabError):
    """The configuration cannot be used as written."""


class ConfigFileError(ConfigError):
    """The config file is missing, unreadable, or not valid YAML (``key_path``: where, when known)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        column: int | None = None,
        key_path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column
        self.key_path = key_path


class ConfigValidationError(ConfigError):
    """The YAML parsed, but does not match the schema. ``problems`` lists (key path, message)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        problems: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.path = path
        self.problems = list(problems)


class UnknownRoleError(ConfigError):
    """A role the config does not define; ``suggestions`` are the close matches ("did you mean")."""

    def __init__(self, message: str, *, role: str, suggestions: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.role = role
        self.suggestions = list(suggestions)


class UnknownProviderError(ConfigError):
    """A provider entry that is not under ``providers:``, or an adapter ``type`` no one knows."""

    def __init__(self, message: str, *, provider: str) -> None:
        super().__init__(message)
        self.provider = provider


class UnknownModelError(ConfigError):
    """A model the provider does not serve (a local GGUF's name that does not match); ``available``
    lists the names it answers to."""

    def __init__(self, message: str, *, provider: str, model: str, available: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.available = list(available)


class InvalidRequestError(ConfigError):
    """The call's arguments are wrong (messages, params, strategy names).

    ``parameter`` names the generation parameter at fault (``"max_tokens"``, ``"extra.user"``),
    or ``messages[i]`` for a message, when one is.
    """

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class MissingDependencyError(ConfigError):
    """A provider's SDK (or another package its adapter needs) cannot be imported: ``module``, and
    the ``extra`` that installs it (``pip install 'orchlab[openai]'``)."""

    def __init__(
        self, message: str, *, provider: str, kind: str, module: str | None, extra: str | None
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.kind = kind
        self.module = module
        self.extra = extra


class PluginError(ConfigError):
    """A provider ``type`` names a class that cannot be had: its module cannot be imported, it is not
    a `orchlab.Provider` subclass, it leaves ``complete()`` unimplemented, or two installed plugins
    claim its kind. ``provider``: the entry (when known); ``kind``: the type as written."""

    def __init__(self, message: str, *, kind: str, provider: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.provider = provider


# --- auth ----------------------------------------------------------------------------------


class AuthError(OrchlabError):
    """No API key could be found for a provider's auth profile."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        env_var: str | None = None,
        key_file: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.env_var = env_var
        self.key_file = key_file


# --- provider calls ------------------------------------------------------------------------


class ProviderError(OrchlabError):
    """A provider call failed. ``retryable`` says whether trying again (or elsewhere) makes sense."""

    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        status_code: int | None = None,
        retry_after: float | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.retry_after = retry_after
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        where = self.provider if self.model is None else f"{self.provider}:{self.model}"
        status = "" if self.status_code is None else f" [HTTP {self.status_code}]"
        return f"{where}{status}: {self.args[0]}"


class AuthenticationError(ProviderError):
    """The provider refused the key (401/403)."""


class RateLimitError(ProviderError):
    """429: the provider asks to slow down; ``retry_after`` (seconds) from its headers, when sent."""

    default_retryable = True


class ProviderTimeoutError(ProviderError):
    """The attempt's deadline (``timeout_s``) or a stream's silence (``stream_idle_timeout_s``) ran out."""

    default_retryable = True
    limit_s: float | None = None
    """The limit that was hit, in seconds (``timeout_s`` or ``stream_idle_timeout_s``)."""


class ProviderConnectionError(ProviderError):
    """The connection failed: refused, DNS, reset, or a stream cut short after some text."""

    default_retryable = True


class ProviderUnavailableError(ProviderError):
    """5xx or overloaded."""

    default_retryable = True


class ProviderResponseError(ProviderError):
    """The provider answered with something that is not its documented format."""


class OutputValidationError(ProviderResponseError):
    """No answer validated against the output model asked for (``run(..., output=MyModel)``),
    retries included. ``raw`` is the last answer's text, ``errors`` pydantic's errors for it
    (``ValidationError.errors()``), ``attempts`` how many answers were tried. Raised by
    ``format=`` (an answer not in the format asked for), ``response`` is that answer, as it came
    (its usage, cost and trace id: the call was made and paid for)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str | None = None,
        raw: str = "",
        errors: Sequence[Mapping[str, object]] = (),
        attempts: int = 1,
        response: object = None,
    ) -> None:
        super().__init__(message, provider=provider, model=model)
        self.raw = raw
        self.errors = list(errors)
        self.attempts = attempts
        self.response = response


class ContextLengthExceededError(ProviderError):
    """The provider rejected the prompt as too long for the model."""


class UnsupportedCapabilityError(ProviderError):
    """The adapter does not support the requested capability."""


class ScrubbedCause(Exception):
    """The ``__cause__`` of a provider error: a summary of the SDK or transport exception behind it,
    every string masked, holding no reference to that exception, its request or its response.

    ``str()`` is ``"<module>.<Type>: <message>"``; ``type_name``, ``status_code``, ``headers``
    (credential headers left out), ``body`` (an excerpt), ``chain`` (what was chained behind it,
    outermost first) and ``origin`` (its traceback as text) say the rest. Never raised on its own.
    """

    def __init__(
        self,
        message: str,
        *,
        type_name: str,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
        chain: Sequence[str] = (),
        origin: str = "",
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.status_code = status_code
        self.headers = dict(headers or {})
        self.body = body
        self.chain = list(chain)
        self.origin = origin


# --- pre-flight checks ---------------------------------------------------------------------


class BudgetExceededError(OrchlabError):
    """The call's worst-case cost would overrun a budget (``scope``: session, call or a role), so
    nothing was sent; ``limit_usd``, ``requested_usd`` and ``spent_usd`` say by how much."""

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        limit_usd: float,
        requested_usd: float,
        spent_usd: float,
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.limit_usd = limit_usd
        self.requested_usd = requested_usd
        self.spent_usd = spent_usd


class UnknownCostError(BudgetExceededError):
    """A budget applies, but the call's worst case cannot be bounded: the model has no price, or
    nothing limits its output tokens. ``requested_usd`` is ``inf``. Raised before sending."""


class ContextWindowError(OrchlabError):
    """The prompt's tokens plus ``max_tokens`` exceed the model's context window; raised before
    sending (``prompt_tokens``, ``max_output_tokens``, ``context_window``)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        prompt_tokens: int,
        max_output_tokens: int,
        context_window: int,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.prompt_tokens = prompt_tokens
        self.max_output_tokens = max_output_tokens
        self.context_window = context_window


class PromptError(OrchlabError):
    """A prompt template could not be found, loaded or rendered."""


class TrackingError(OrchlabError):
    """The tracking API was used wrongly (bad rating value, unknown trace id)."""


# --- strategies ----------------------------------------------------------------------------


class StoreError(OrchlabError):
    """The thread store (`orchlab.store`): an unknown thread or message, a bad store URL, a database
    that cannot be opened or migrated, a write that did not complete."""


class StrategyError(OrchlabError):
    """A strategy could not produce an answer."""


class AllAttemptsFailedError(StrategyError, ExceptionGroup):
    """Every attempt of a strategy failed; ``exceptions`` holds each attempt's error in order."""

    def __new__(cls, message: str, exceptions: Sequence[Exception]) -> AllAttemptsFailedError:
        return super().__new__(cls, message, list(exceptions))

    def __init__(self, message: str, exceptions: Sequence[Exception]) -> None:
        super().__init__(message, list(exceptions))

    def derive(self, excs: Sequence[Exception]) -> AllAttemptsFailedError:  # type: ignore[override]
        return AllAttemptsFailedError(self.message, excs)


class ToolLoopError(StrategyError):
    """`delegate` made ``max_steps`` model calls and the model still asks for tools: no final
    answer. ``response`` is the last answer (its tool calls, the decision trail with every tool
    run, and the cost of every step)."""

    def __init__(self, message: str, *, steps: int, response: object = None) -> None:
        super().__init__(message)
        self.steps = steps
        self.response = response


class NoModelMatchesError(StrategyError):
    """A selector (a role's ``select:``) matches no catalogued model now. ``ruled_out`` maps each
    model considered (``'provider:model'``) to why it was ruled out."""

    def __init__(self, message: str, *, ruled_out: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.ruled_out: dict[str, str] = dict(ruled_out or {})

"""Versioned prompt templates in MLflow's prompt registry.

For example:

    orchlab.register_prompt("summarise", "Summarise in one line: {{text}}", alias="prod")
    prompt = orchlab.load_prompt("summarise@prod")          # or "summarise@2", "summarise"
    r = client.run("llm.inference", prompt.render(text=article))
    # the trace is tagged orchlab.prompt=summarise, orchlab.prompt_version=2 and linked to it

Templates use MLflow's ``{{variable}}`` syntax (or Jinja2 with ``{% %}``); a template is one
string (rendered as a user message) or a list of ``{"role", "content"}`` messages.
`RegisteredPrompt.render` returns `PromptMessage` objects: ordinary messages that also say
which prompt version they came from, so any call that receives them records it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab.errors import PromptError
from orchlab.types import Message

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.tracking.settings import TrackingSettings

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True, slots=True)
class PromptMessage(Message):
    """A message rendered from a registered prompt; traces record ``prompt`` and ``version``."""

    prompt: str = ""
    version: str = ""


@dataclass(frozen=True)
class RegisteredPrompt:
    """One version of a registered prompt."""

    name: str
    version: int
    template: str | list[dict[str, Any]]
    variables: frozenset[str]
    commit_message: str | None = None
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] | None = None
    _version_obj: Any = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def uri(self) -> str:
        return f"prompts:/{self.name}/{self.version}"

    def render(self, **variables: Any) -> list[PromptMessage]:
        """The messages for ``variables``; `PromptError` names any variable that is missing."""
        missing = self.variables - set(variables)
        if missing:
            raise PromptError(
                f"prompt {self.ref} needs {', '.join(sorted(missing))} "
                f"(its variables: {', '.join(sorted(self.variables)) or 'none'})"
            )
        try:
            rendered = self._version_obj.format(**variables)
        except Exception as exc:
            raise PromptError(f"prompt {self.ref} could not be rendered: {exc}") from exc
        version = str(self.version)
        if isinstance(rendered, str):
            return [PromptMessage("user", rendered, self.name, version)]
        return [PromptMessage(m["role"], m["content"], self.name, version) for m in rendered]

    def __repr__(self) -> str:
        alias = f", aliases={list(self.aliases)}" if self.aliases else ""
        return f"RegisteredPrompt({self.ref!r}{alias}, variables={sorted(self.variables)})"


def _wrap(pv: Any) -> RegisteredPrompt:
    return RegisteredPrompt(
        name=pv.name,
        version=int(pv.version),
        template=pv.template,
        variables=frozenset(pv.variables),
        commit_message=pv.commit_message,
        aliases=tuple(getattr(pv, "aliases", None) or ()),
        tags=dict(getattr(pv, "tags", None) or {}),
        _version_obj=pv,
    )


def _registry(settings: TrackingSettings) -> Any:
    """An MlflowClient on the store (on the caller's thread: a prompt is needed right now)."""
    from orchlab.errors import TrackingError
    from orchlab.tracking.store import open_client

    try:
        return open_client(settings)
    except TrackingError as exc:
        raise PromptError(f"the prompt registry at {settings.tracking_uri} cannot be used: {exc}") from None


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise PromptError(
            f"prompt name {name!r} is not valid: use letters, digits, '_', '-' and '.' "
            "(e.g. 'summarise' or 'support.triage')"
        )


def _check_template(template: object) -> None:
    if isinstance(template, str):
        if not template.strip():
            raise PromptError("a prompt template cannot be empty")
        return
    if isinstance(template, Sequence) and template:
        for i, m in enumerate(template):
            if not isinstance(m, Mapping) or set(m) != {"role", "content"}:
                raise PromptError(f"template[{i}] must be a {{'role': ..., 'content': ...}} message")
            if m["role"] not in ("system", "user", "assistant"):
                raise PromptError(f"template[{i}].role is {m['role']!r}; use system, user or assistant")
        return
    raise PromptError("a prompt template is a string or a non-empty list of messages")


def register_prompt(
    name: str,
    template: str | Sequence[Mapping[str, str]],
    *,
    commit_message: str | None = None,
    tags: Mapping[str, str] | None = None,
    alias: str | None = None,
    client: Orchestrator | None = None,
    tracking_uri: str | None = None,
) -> RegisteredPrompt:
    """Register ``template`` as the next version of ``name`` (and point ``alias`` at it)."""
    from orchlab.tracking.api import settings_for

    _check_name(name)
    _check_template(template)
    registry = _registry(settings_for(client, tracking_uri=tracking_uri))
    body: str | list[dict[str, Any]] = template if isinstance(template, str) else [dict(m) for m in template]
    try:
        pv = registry.register_prompt(
            name=name, template=body, commit_message=commit_message, tags=dict(tags or {})
        )
        if alias:
            registry.set_prompt_alias(name, alias, int(pv.version))
            pv = registry.load_prompt(f"prompts:/{name}/{pv.version}", cache_ttl_seconds=0)
    except Exception as exc:
        raise PromptError(f"could not register prompt {name!r}: {exc}") from exc
    return _wrap(pv)


def load_prompt(
    ref: str, *, client: Orchestrator | None = None, tracking_uri: str | None = None
) -> RegisteredPrompt:
    """``"name@3"`` (a version), ``"name@alias"``, ``"name"`` (the latest) or ``"prompts:/name/3"``."""
    from orchlab.tracking.api import settings_for

    uri = _prompt_uri(ref)
    registry = _registry(settings_for(client, tracking_uri=tracking_uri))
    try:
        pv = registry.load_prompt(uri)
    except Exception as exc:
        raise PromptError(f"could not load prompt {ref!r} ({uri}): {exc}") from exc
    if pv is None:
        raise PromptError(f"no prompt {ref!r} in {registry.tracking_uri}")
    return _wrap(pv)


def set_prompt_alias(
    name: str,
    alias: str,
    version: int,
    *,
    client: Orchestrator | None = None,
    tracking_uri: str | None = None,
) -> None:
    """Point ``name@alias`` at ``version`` (e.g. promote version 3 to ``prod``)."""
    from orchlab.tracking.api import settings_for

    registry = _registry(settings_for(client, tracking_uri=tracking_uri))
    try:
        registry.set_prompt_alias(name, alias, int(version))
    except Exception as exc:
        raise PromptError(f"could not set {name}@{alias} -> {version}: {exc}") from exc


def _prompt_uri(ref: str) -> str:
    if not isinstance(ref, str) or not ref.strip():
        raise PromptError(f"a prompt reference is 'name@version', 'name@alias' or 'name', got {ref!r}")
    ref = ref.strip()
    if ref.startswith("prompts:/"):
        return ref
    name, sep, which = ref.partition("@")
    _check_name(name)
    if not sep:
        return f"prompts:/{name}@latest"
    if not which:
        raise PromptError(f"{ref!r}: nothing after '@' (use a version number or an alias)")
    return f"prompts:/{name}/{which}" if which.isdigit() else f"prompts:/{name}@{which}"


def list_prompts(
    *, client: Orchestrator | None = None, tracking_uri: str | None = None
) -> list[RegisteredPrompt]:
    """The latest version of every registered prompt, by name (``orchlab prompt list``)."""
    from orchlab.tracking.api import settings_for

    registry = _registry(settings_for(client, tracking_uri=tracking_uri))
    try:
        names: list[str] = []
        token = None
        while True:
            page = registry.search_prompts(max_results=1000, page_token=token)
            names += [p.name for p in page]
            token = getattr(page, "token", None)
            if not token:
                break
        latest = [registry.load_prompt(f"prompts:/{name}@latest", cache_ttl_seconds=0) for name in names]
    except Exception as exc:
        raise PromptError(f"could not list the prompts in {registry.tracking_uri}: {exc}") from exc
    return sorted((_wrap(pv) for pv in latest if pv is not None), key=lambda p: p.name)

"""URNs: an orchestration logic and its params named by one string (what the gateway receives as
the request's ``model``), e.g.::

    urn:orchlab:role:llm.inference
    urn:orchlab:race:candidates=openai:gpt-4.1-mini,local:gemma-3-270m
    urn:orchlab:cascade:candidates=a:m1,b:m2;threshold=0.8;scorer=logprob
    urn:orchlab:fallback:role=coder

Grammar (``parse_urn`` checks it; ``answer.plan_for_target`` turns the result into a plan)::

    urn        = "urn:" namespace ":" logic-id [ ":" params ]
    namespace  = "orchlab"                       (case-insensitive, like "urn:" and logic-id)
    logic-id   = "role" | "race" | a Strategy value (single, fallback, parallel, cascade,
                 ensemble, auto, local, cloud, local_first, cloud_first); "race" = "parallel";
                 or the id of a logic added with register_logic or installed (orchlab.logics)
    params     = role-name                       (logic-id "role": the role, as in the YAML)
               | param *( (";" / "&") param )   (any other logic-id)
    param      = name "=" value
    candidates = target *( "," target )          (target: a role or "provider:model")

``candidates`` and ``role`` are read here (one of them is required, except for ``auto`` and
``select``, whose params are its rule: ``urn:orchlab:select:capability=code;tier=standard``); every
other param is parsed and validated by the logic's own ``Logic.from_params`` (``threshold``,
``scorer``, ``mode``, ``judge``, ``tier``, ...). Names and values are percent-decoded after
splitting, so ``%2C``, ``%3B``, ``%26``, ``%3D`` and ``%25`` carry a literal ``,`` ``;`` ``&``
``=`` ``%`` inside a value. Every bad part raises an `InvalidRequestError` naming it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from orchlab.config.schema import Strategy
from orchlab.errors import InvalidRequestError
from orchlab.strategies.registry import known_logics, logic_class
from orchlab.strategies.registry import logic_id as as_logic_id

NAMESPACES = ("orchlab",)
"""The URN namespaces this kit answers."""
ROLE = "role"
ALIASES: Mapping[str, Strategy] = {"race": Strategy.PARALLEL}
"""Logic ids that are not a `Strategy` value."""
_SEPARATORS = re.compile(r"[;&]")


@dataclass(frozen=True)
class Urn:
    """A parsed URN: either a role (``strategy`` None) or a logic with its candidates (or a role
    whose candidates it uses) and its options (already parsed by the logic's ``from_params``)."""

    text: str
    namespace: str
    strategy: Strategy | str | None
    role: str | None = None
    candidates: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


def is_urn(target: object) -> bool:
    """Whether ``target`` is a string in URN form (``urn:...``, any case)."""
    return isinstance(target, str) and target[:4].lower() == "urn:"


def logic_ids() -> list[str]:
    return [ROLE, *ALIASES, *known_logics()]


def parse_urn(text: str) -> Urn:
    """``text`` as a `Urn`; raises `InvalidRequestError` naming the bad part."""
    if not is_urn(text):
        raise InvalidRequestError(f"{text!r} is not a URN (urn:<namespace>:<logic-id>:<params>)")
    head, _, rest = text[4:].partition(":")
    namespace = head.lower()
    if namespace not in NAMESPACES:
        raise InvalidRequestError(
            f"URN {text!r}: unknown namespace {head!r}; known: {', '.join(NAMESPACES)}", parameter="namespace"
        )
    logic_id, _, raw = rest.partition(":")
    logic_id = logic_id.lower()
    if logic_id == ROLE:
        name = unquote(raw)
        if not name:
            raise InvalidRequestError(f"URN {text!r}: no role after 'role:' (urn:orchlab:role:<role>)")
        return Urn(text, namespace, None, role=name)
    try:
        strategy = as_logic_id(logic_id, aliases={ROLE: Strategy.SINGLE, **ALIASES})
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"URN {text!r}: {exc}", parameter="logic") from None
    params = _params(text, raw)
    role: str | None = params.pop("role", None)
    cands: str | None = params.pop("candidates", None)
    candidates: tuple[str, ...] = ()
    if cands is not None:
        candidates = tuple(unquote(c).strip() for c in cands.split(","))
        if not all(candidates):
            raise InvalidRequestError(
                f"URN {text!r}: param candidates={cands!r} has an empty target", parameter="candidates"
            )
    if role is not None:
        role = unquote(role)
    if not candidates and role is None and strategy not in (Strategy.AUTO, Strategy.SELECT):
        raise InvalidRequestError(
            f"URN {text!r}: logic {logic_id!r} needs candidates=<target>,<target> or role=<role>",
            parameter="candidates",
        )
    try:
        options = logic_class(strategy).from_params({k: unquote(v) for k, v in params.items()})
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"URN {text!r}: {exc}", parameter=exc.parameter) from None
    return Urn(text, namespace, strategy, role=role, candidates=candidates, options=options)


def _params(text: str, raw: str) -> dict[str, str]:
    """``name=value`` pairs split on ``;`` or ``&`` (values still percent-encoded)."""
    out: dict[str, str] = {}
    for part in _SEPARATORS.split(raw) if raw else ():
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = unquote(name).strip()
        if not eq or not name:
            raise InvalidRequestError(
                f"URN {text!r}: param {part!r} is not name=value", parameter=name or None
            )
        if not value:
            raise InvalidRequestError(f"URN {text!r}: param {name!r} has no value", parameter=name)
        if name in out:
            raise InvalidRequestError(f"URN {text!r}: param {name!r} is given twice", parameter=name)
        out[name] = value
    return out

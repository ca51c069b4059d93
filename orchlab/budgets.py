"""Budgets per call, per role and per session, enforced with reservations before anything is sent.

Before an attempt, its worst-case cost (prompt tokens at most x input price + max output tokens x
output price) is reserved against every budget that applies; if any would overrun,
`BudgetExceededError` is raised and nothing is sent. After the attempt the reservation is settled
at the actual cost, or released when the attempt failed. A cloud attempt cancelled after it was
sent (a race's loser, an attempt cut off by a timeout) keeps its worst case as spent: the provider
may bill the prompt and the tokens generated before the cancel, and reports no usage for it; a
cancelled local attempt is released. Reserving and settling are atomic under one lock, so
concurrent calls, from threads or tasks, cannot overspend: spent + reserved never exceeds a limit,
unless a provider reports more usage than the worst case reserved for it. That call is charged
what it reports and the overrun is recorded and warned about (`orchlab.pipeline.settle`); a reservation is
never negative, whatever the params.

Spending is counted from the orchestrator's start whether or not a limit is set, so a budget set
later in a session sees what was already spent (a cancelled cloud attempt only counts while a
limit is in force: without one, no worst case was reserved for it).

Example (YAML)::

    budgets: {session_usd: 5.00, per_call_usd: 0.05, per_role_usd: {llm.inference: 2.00}}
    roles:
      llm.summarize: {provider: openai, model: gpt-4.1-mini, budget_usd: 0.50}

Example (code)::

    client.budgets.set(session_usd=1.0, per_role_usd={"llm.inference": 0.25})
    client.budgets.remaining_usd()          # session
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab.errors import BudgetExceededError, InvalidRequestError

if TYPE_CHECKING:
    from orchlab.calls import CallRecord
    from orchlab.config.schema import OrchestratorConfig

_UNSET: Any = object()
_EPSILON = 1e-12


@dataclass(slots=True)
class _Scope:
    label: str
    limit: float | None = None
    spent: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0

    def hold(self, amount: float) -> None:
        self.reserved += amount
        self.in_flight += 1

    def unhold(self, amount: float) -> None:
        self.in_flight -= 1
        # exactly 0 when nothing is in flight: no floating-point residue accumulates
        self.reserved = max(self.reserved - amount, 0.0) if self.in_flight > 0 else 0.0

    def remaining(self) -> float | None:
        return None if self.limit is None else max(self.limit - self.spent - self.reserved, 0.0)


@dataclass(slots=True)
class Reservation:
    """The worst-case amount held against each applicable budget for one attempt."""

    amount: float
    target: str
    scopes: tuple[_Scope, ...]
    done: bool = False


class Budgets:
    """The budgets of one orchestrator (``client.budgets``). Thread- and task-safe."""

    def __init__(
        self,
        *,
        session_usd: float | None = None,
        per_call_usd: float | None = None,
        per_role_usd: Mapping[str, float] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._session = _Scope("session budget", session_usd)
        self._per_call = per_call_usd
        self._roles: dict[str, _Scope] = {}
        self._calls: dict[int, tuple[object, _Scope]] = {}
        for role, usd in (per_role_usd or {}).items():
            self._role(role).limit = usd

    @classmethod
    def from_config(cls, config: OrchestratorConfig) -> Budgets:
        """The YAML's ``budgets:`` and each role's ``budget_usd``."""
        spec = getattr(config, "budgets", None)
        roles = dict(getattr(spec, "per_role_usd", None) or {})
        for name, role in config.roles.items():
            usd = getattr(role, "budget_usd", None)
            if usd is not None:
                roles[name] = usd
        return cls(
            session_usd=getattr(spec, "session_usd", None),
            per_call_usd=getattr(spec, "per_call_usd", None),
            per_role_usd=roles,
        )

    def __repr__(self) -> str:
        parts = [f"session={money(self._session.limit)} spent={money(self._session.spent)}"]
        if self._per_call is not None:
            parts.append(f"per_call={money(self._per_call)}")
        parts += [
            f"{role!r}={money(s.limit)}" for role, s in sorted(self._roles.items()) if s.limit is not None
        ]
        return f"Budgets({', '.join(parts)})"

    # --- setting -----------------------------------------------------------------------------

    def set(
        self,
        *,
        session_usd: float | None = _UNSET,
        per_call_usd: float | None = _UNSET,
        per_role_usd: Mapping[str, float | None] | None = None,
    ) -> None:
        """Change limits in code (the YAML is not changed). ``None`` removes a limit; omitted keeps it."""
        for name, value in [("session_usd", session_usd), ("per_call_usd", per_call_usd)]:
            if value is not _UNSET and value is not None and value < 0:
                raise InvalidRequestError(f"client.budgets.set({name}=...) must be >= 0, got {value}")
        for role, value in (per_role_usd or {}).items():
            if value is not None and value < 0:
                raise InvalidRequestError(
                    f"client.budgets.set(per_role_usd={{{role!r}: ...}}) must be >= 0, got {value}"
                )
        with self._lock:
            if session_usd is not _UNSET:
                self._session.limit = session_usd
            if per_call_usd is not _UNSET:
                self._per_call = per_call_usd
            for role, value in (per_role_usd or {}).items():
                self._role(role).limit = value

    def reset(self) -> None:
        """Forget what was spent (limits and reservations in flight stay)."""
        with self._lock:
            self._session.spent = 0.0
            for scope in self._roles.values():
                scope.spent = 0.0

    # --- reading -----------------------------------------------------------------------------

    def applies(self, role: str | None) -> bool:
        """Whether any limit covers a call of ``role`` (if not, no reservation is needed)."""
        if self._session.limit is not None or self._per_call is not None:
            return True
        scope = self._roles.get(role) if role is not None else None
        return scope is not None and scope.limit is not None

    def first_limit(self, role: str | None) -> tuple[str, float]:
        """The label and limit of the first budget covering a call of ``role`` (for error messages)."""
        scope = self._roles.get(role) if role is not None else None
        for label, limit in [
            (self._session.label, self._session.limit),
            (scope.label if scope else "", scope.limit if scope else None),
            ("per-call budget", self._per_call),
        ]:
            if limit is not None:
                return label, limit
        return "no budget", math.inf

    def limit_usd(self, role: str | None = None) -> float | None:
        return self._scope_of(role).limit

    def spent_usd(self, role: str | None = None) -> float:
        """Settled spending of the session, or of ``role``."""
        return self._scope_of(role).spent

    def reserved_usd(self, role: str | None = None) -> float:
        """Worst-case amounts held by calls in flight."""
        return self._scope_of(role).reserved

    def remaining_usd(self, role: str | None = None) -> float | None:
        """What is left of the session's (or ``role``'s) budget; None when it has no limit."""
        with self._lock:
            return self._scope_of(role).remaining()

    @property
    def per_call_usd(self) -> float | None:
        return self._per_call

    def summary(self) -> list[dict[str, Any]]:
        """One row per budget: scope, limit, spent, reserved, remaining (USD)."""
        with self._lock:
            scopes = [("session", self._session)] + [(f"role {r}", s) for r, s in sorted(self._roles.items())]
            rows = [
                {
                    "scope": name,
                    "limit_usd": s.limit,
                    "spent_usd": s.spent,
                    "reserved_usd": s.reserved,
                    "remaining_usd": s.remaining(),
                }
                for name, s in scopes
            ]
        if self._per_call is not None:
            rows.insert(
                1,
                {
                    "scope": "per call",
                    "limit_usd": self._per_call,
                    "spent_usd": None,
                    "reserved_usd": None,
                    "remaining_usd": None,
                },
            )
        return rows

    # --- the engine's side -------------------------------------------------------------------

    def reserve(
        self,
        call: object,
        role: str | None,
        target: str,
        amount: float,
        *,
        tokens: tuple[int, int] | None = None,
    ) -> Reservation:
        """Hold ``amount`` against every budget of this call, or raise `BudgetExceededError`.

        ``call`` identifies the user call (its per-call budget); ``tokens`` (prompt at most,
        output at most) only explain a refusal. A reservation is never negative: a negative
        amount holds 0, and a NaN one counts as unbounded (refused under any limit).
        """
        if not amount >= 0.0:
            amount = 0.0 if amount < 0.0 else math.inf
        with self._lock:
            scopes = [self._session]
            if role is not None:
                scopes.append(self._role(role))
            if self._per_call is not None:
                entry = self._calls.get(id(call))
                if entry is None or entry[0] is not call:
                    entry = (call, _Scope("per-call budget", self._per_call))
                    self._calls[id(call)] = entry
                entry[1].limit = self._per_call
                scopes.append(entry[1])
            for scope in scopes:
                if scope.limit is not None and scope.spent + scope.reserved + amount > scope.limit + _EPSILON:
                    detail = (
                        f" ({tokens[0]:,} prompt tokens at most + {tokens[1]:,} output tokens)"
                        if tokens
                        else ""
                    )
                    raise BudgetExceededError(
                        f"{scope.label} {money(scope.limit)}: {money(scope.spent)} spent + "
                        f"{money(scope.reserved)} reserved by calls in flight; this call to {target} "
                        f"may cost up to {money(amount)}{detail}. Nothing was sent. Set a lower "
                        "max_tokens to reserve less, or raise the limit (client.budgets.set(...) or "
                        "budgets: in the YAML).",
                        scope=scope.label,
                        limit_usd=scope.limit,
                        requested_usd=amount,
                        spent_usd=scope.spent,
                    )
            for scope in scopes:
                scope.hold(amount)
            return Reservation(amount, target, tuple(scopes))

    def settle(
        self, reservation: Reservation | None, actual_usd: float | None, role: str | None = None
    ) -> float:
        """Replace the reservation by the actual cost. Unknown actual cost: the reserved worst case counts.

        Without a reservation (no limit applied) the actual cost is still added to the session
        and role spending. A provider that reports more than was reserved is charged what it
        reports (a budget may then end above its limit by that much): the overrun is returned,
        for the caller to record (0.0 when there is none, or nothing was reserved).
        """
        if actual_usd is not None and not actual_usd >= 0.0:
            actual_usd = None  # a negative or NaN cost is no cost: count the reserved worst case
        with self._lock:
            if reservation is None:
                if actual_usd:
                    self._session.spent += actual_usd
                    if role is not None:
                        self._role(role).spent += actual_usd
                return 0.0
            if reservation.done:
                return 0.0
            reservation.done = True
            charged = reservation.amount if actual_usd is None else actual_usd
            for scope in reservation.scopes:
                scope.unhold(reservation.amount)
                scope.spent += charged
        overrun = charged - reservation.amount
        return overrun if overrun > _EPSILON else 0.0

    def release(self, reservation: Reservation | None) -> None:
        """Give the reservation back: nothing was billed (the attempt failed, or it was local)."""
        if reservation is None:
            return
        with self._lock:
            if reservation.done:
                return
            reservation.done = True
            for scope in reservation.scopes:
                scope.unhold(reservation.amount)

    def call_finished(self, record: CallRecord) -> None:
        """Observer hook: a finished call's per-call budget is forgotten."""
        if self._calls:
            with self._lock:
                entry = self._calls.get(id(record.context))
                if entry is not None and entry[0] is record.context:
                    del self._calls[id(record.context)]

    # --- helpers -----------------------------------------------------------------------------

    def _role(self, role: str) -> _Scope:
        scope = self._roles.get(role)
        if scope is None:
            scope = self._roles[role] = _Scope(f"budget of role {role!r}")
        return scope

    def _scope_of(self, role: str | None) -> _Scope:
        if role is None:
            return self._session
        return self._roles.get(role) or _Scope(f"budget of role {role!r}")


def money(usd: float | None) -> str:
    """``$0.028``, ``$1,234.50``; None (no limit) is ``unlimited``."""
    if usd is None:
        return "unlimited"
    if math.isinf(usd):
        return "an unknown amount"
    return f"${usd:.6f}".rstrip("0").rstrip(".") if usd < 1 else f"${usd:,.2f}"

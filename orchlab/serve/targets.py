"""The one place the request's ``model`` becomes what ``client.arun`` takes.

In order: an alias from ``gateway.aliases`` (its value, as the config author wrote it: a role,
``'provider:model'`` or a URN); a served role (every role, or ``gateway.expose``); a URN
(``urn:orchlab:<logic>:<params>``) whose role and candidates are served roles, or direct targets
when allowed; ``'provider:model'`` of a configured provider when ``gateway.allow_direct_targets``
is on. Anything else is a 404 ``model_not_found`` naming the model and what is served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from orchlab.errors import InvalidRequestError
from orchlab.serve.errors import HTTPError
from orchlab.strategies.urn import is_urn, logic_ids, parse_urn

if TYPE_CHECKING:
    from orchlab.config.schema import GatewayConfig, OrchestratorConfig

URN_PREFIX = "urn:orchlab:"


class Targets:
    """What one gateway serves, from its config."""

    def __init__(self, config: OrchestratorConfig) -> None:
        self.settings: GatewayConfig = config.gateway
        self.providers = set(config.providers)
        exposed = self.settings.expose
        self.roles = [r for r in config.roles if exposed is None or r in exposed]
        self.aliases = dict(self.settings.aliases)
        for name, target in self.aliases.items():
            if is_urn(target):
                self._check_urn(target, alias=name)

    def model_ids(self) -> list[str]:
        """Every id ``GET /v1/models`` lists: aliases, roles, then one URN per logic."""
        ids = [*self.aliases, *self.roles, *(f"{URN_PREFIX}{logic}" for logic in logic_ids())]
        return list(dict.fromkeys(ids))

    def resolve(self, model: str) -> str:
        """``model`` as a target for ``client.arun``; `HTTPError` 404 when it is not served."""
        aliased = self.aliases.get(model)
        if aliased is not None:
            return aliased
        if model in self.roles:
            return model
        if is_urn(model):
            self._check_urn(model)
            return model
        provider, sep, name = model.partition(":")
        if sep and name and provider in self.providers and self.settings.allow_direct_targets:
            return model
        raise self.not_found(model)

    def not_found(self, model: str) -> HTTPError:
        served = [*self.aliases, *self.roles]
        more = "; 'provider:model' is accepted too" if self.settings.allow_direct_targets else ""
        return HTTPError(
            404,
            f"the model {model!r} is not served here; models: {', '.join(served) or 'none'}, or a URN "
            f"{URN_PREFIX}<logic>:<params> (GET /v1/models lists them){more}",
            code="model_not_found",
            param="model",
        )

    def _check_urn(self, urn: str, *, alias: str | None = None) -> None:
        """A URN's role and candidates must be served (a direct target only when allowed)."""
        try:
            parsed = parse_urn(urn)
        except InvalidRequestError as exc:
            if alias is not None:
                raise InvalidRequestError(
                    f"gateway.aliases.{alias}: {exc}", parameter=exc.parameter
                ) from None
            raise HTTPError(400, str(exc), param="model", code="invalid_urn") from None
        if alias is not None:
            return  # the config author's own URN: any role or target of the config
        refs = [parsed.role] if parsed.role is not None else []
        for ref in [*refs, *parsed.candidates]:
            if ref in self.roles:
                continue
            if ":" in ref and self.settings.allow_direct_targets:
                continue
            raise HTTPError(
                404,
                f"URN {urn!r}: {ref!r} is not served here (roles: {', '.join(self.roles) or 'none'})",
                code="model_not_found",
                param="model",
            )

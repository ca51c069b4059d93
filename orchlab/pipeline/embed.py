"""An embedding call (``client.embed``): the texts in batches of the adapter's
``embed_batch_size``, each batch one attempt in the call's trail, priced (input tokens only) and
admitted against the budgets like a chat attempt (its worst case: the texts' token ceiling at the
input price), the whole call told to the observers (usage, budgets, tracking: an EMBEDDING span)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchlab.catalog.tokens import upper_bound
from orchlab.pipeline.inflight import InFlight
from orchlab.pipeline.passes import BudgetAdmission
from orchlab.types import (
    EmbeddingRequest,
    Embeddings,
    GenerationParams,
    LLMResponse,
    Message,
    ModelRequest,
    Usage,
)

if TYPE_CHECKING:
    from orchlab.budgets import Budgets
    from orchlab.calls import CallContext
    from orchlab.catalog.catalog import Catalog
    from orchlab.pipeline.observe import Observe
    from orchlab.pipeline.settle import Settle
    from orchlab.providers.base import Provider
    from orchlab.resolution import ResolvedLLMConfig

_NOTHING_OUT = GenerationParams(max_tokens=0)  # embeddings have no output tokens to reserve


class Embed:
    """Embedding calls for one client, built from its catalog, providers, budgets, settle, observe."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        providers: Callable[[str], Provider],
        budgets: Budgets,
        settle: Settle,
        observe: Observe,
    ) -> None:
        self.catalog = catalog
        self.providers = providers
        self.admission = BudgetAdmission(budgets)
        self.settle = settle
        self.observe = observe

    async def call(self, ctx: CallContext, resolved: ResolvedLLMConfig, texts: tuple[str, ...]) -> Embeddings:
        """Embed ``texts`` with ``resolved``'s model; the observers hear of the call (or its error)."""
        try:
            result = await self._batches(ctx, resolved, texts)
        except BaseException as exc:
            self.observe.failed(ctx, exc)
            raise
        summary = LLMResponse(
            f"{len(result)} embeddings of dimension {result.dim}",
            result.provider,
            result.model,
            role=result.role,
            usage=result.usage,
            latency_s=result.latency_s,
            cost_usd=result.cost_usd,
            cost_note=result.cost_note,
            id=result.id,
        )
        told = self.observe.answered(ctx, summary)
        if told.trace_id is None:
            return result
        from dataclasses import replace

        return replace(result, trace_id=told.trace_id)

    async def _batches(
        self, ctx: CallContext, resolved: ResolvedLLMConfig, texts: tuple[str, ...]
    ) -> Embeddings:
        import numpy as np

        adapter = self.providers(resolved.provider)
        size = max(1, int(adapter.embed_batch_size))
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        parts = []
        for i, batch in enumerate(batches, 1):
            stage = f"batch {i}/{len(batches)}" if len(batches) > 1 else None
            parts.append(await self._batch(ctx, resolved, adapter, batch, stage))
        usage = Usage()
        for part in parts:
            usage = usage + part.usage
        costs = [p.cost_usd for p in parts]
        unknown = [p for p in parts if p.cost_usd is None]
        return Embeddings(
            vectors=np.concatenate([p.vectors for p in parts]) if len(parts) > 1 else parts[0].vectors,
            provider=resolved.provider,
            model=parts[-1].model,
            role=ctx.role,
            usage=usage,
            latency_s=time.perf_counter() - ctx.started_perf,
            cost_usd=None if unknown else sum(c for c in costs if c is not None),
            cost_note=unknown[0].cost_note if unknown else None,
        )

    async def _batch(
        self,
        ctx: CallContext,
        resolved: ResolvedLLMConfig,
        adapter: Provider,
        texts: tuple[str, ...],
        stage: str | None,
    ) -> Embeddings:
        messages = tuple(Message("user", t) for t in texts)
        slot = ctx.new_attempt(resolved.provider, resolved.model, stage=stage, params={"texts": len(texts)})
        flight = InFlight(
            resolved,
            ctx,
            slot,
            self.catalog.entry(resolved.provider, resolved.model),
            resolved.role if resolved.role is not None else ctx.role,
            ceiling=upper_bound(messages),
        )
        try:
            self.admission.admit_sync(ctx, flight, ModelRequest(resolved.model, messages, _NOTHING_OUT))
            flight.sent = True
            result = await adapter.embed(EmbeddingRequest(resolved.model, texts, resolved.params.timeout_s))
        except BaseException as exc:
            cancelled = not isinstance(exc, Exception)
            end = (
                {"outcome": "cancelled"}
                if cancelled
                else {"outcome": "error", "error": str(exc), "error_type": type(exc).__name__}
            )
            ctx.revise(slot, latency_s=time.perf_counter() - flight.started, **end)
            self.settle.release(flight, cancelled_after_send=cancelled and flight.sent)
            raise
        priced = LLMResponse(
            "", resolved.provider, result.model, usage=result.usage, cost_usd=result.cost_usd
        )
        charge = self.settle.charge(flight, priced)
        ctx.revise(
            slot,
            outcome="ok",
            usage=result.usage,
            cost_usd=charge.cost_usd,
            output=f"{len(result)} vectors of dimension {result.dim}",
            latency_s=time.perf_counter() - flight.started,
        )
        from dataclasses import replace

        return replace(result, cost_usd=charge.cost_usd, cost_note=charge.cost_note or result.cost_note)

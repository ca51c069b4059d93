"""Structured output around one attempt: ask for the schema, validate the answer, retry.

An attempt whose request carries an ``output`` schema (`orchlab.output.structured`) is sent the
adapter's native way (its ``output_mode``; the schema goes into the prompt when the adapter cannot
enforce it). Its answer is validated against the pydantic model: a valid one comes back with
``output`` set; an invalid one is marked ``rejected`` in the trail (its stage suffixed
``(invalid output)``) and the conversation goes back to the same model with the errors, at most
``OUTPUT_RETRIES`` times. The answer returned carries the usage and cost of every try; after the
last invalid one, `OutputValidationError`. An answer a pass gave (nothing was sent) is not retried.
An answer that asks for tools (``response.tool_calls``) is returned unvalidated (``output`` None).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from orchlab.errors import OutputValidationError
from orchlab.output.structured import OUTPUT_RETRIES, parse, retry_messages, summary, with_instruction
from orchlab.types import Usage

if TYPE_CHECKING:
    from orchlab.pipeline.inflight import InFlight
    from orchlab.types import LLMResponse, ModelRequest


class Shaping:
    """The tries of one structured attempt: the request to send next and what the tries cost."""

    def __init__(self, request: ModelRequest, mode: str, retries: int = OUTPUT_RETRIES) -> None:
        assert request.output is not None
        self.spec = request.output
        self.request = request if mode == "schema" else with_instruction(request)
        self.retries = retries
        self.tries = 0
        self.usage = Usage()
        self.costs: list[float | None] = []

    def check(self, flight: InFlight, response: LLMResponse) -> LLMResponse | None:
        """The response with its validated ``output`` (usage and cost of every try summed), or
        None when it is invalid and ``self.request`` asks again; `OutputValidationError` after
        the last try."""
        self.tries += 1
        self.usage = self.usage + response.usage
        self.costs.append(response.cost_usd)
        if response.tool_calls:
            # the model asked for tools before answering: the caller (or `delegate`) runs them
            # and asks again; that answer is the one held to the schema
            return self._total(response, None)
        value, errors = parse(self.spec, response.content)
        if value is not None:
            return self._total(response, value)
        why = summary(errors)
        stage = flight.record.stage
        flight.ctx.revise(
            flight.slot,
            outcome="rejected",
            stage=f"{stage} (invalid output)" if stage else "(invalid output)",
            note=f"not a valid {self.spec.name}: {why}",
        )
        if self.tries > self.retries or not flight.sent:
            raise OutputValidationError(
                f"no valid {self.spec.name} after {self.tries} answer(s): {why}; the last answer: "
                f"{_preview(response.content)}",
                provider=flight.provider,
                model=response.model,
                raw=response.content,
                errors=errors,
                attempts=self.tries,
            )
        self.request = replace(
            self.request, messages=retry_messages(self.request.messages, self.spec, response.content, errors)
        )
        return None

    def _total(self, response: LLMResponse, value: Any) -> LLMResponse:
        if self.tries == 1:
            return replace(response, output=value)
        known = [c for c in self.costs if c is not None]
        unknown = len(self.costs) - len(known)
        return replace(
            response,
            output=value,
            usage=self.usage,
            cost_usd=None if unknown else sum(known),
            cost_note=(
                f"cost unknown for {unknown} of {self.tries} tries; the others total ${sum(known):.6f}"
                if unknown
                else response.cost_note
            ),
        )


def _preview(text: str, limit: int = 120) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")

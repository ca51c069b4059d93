"""The call, one way down: passes -> dispatch -> settle -> observe.

- `orchlab.pipeline.passes`: the checks before anything is sent, in order (context window,
  budget admission, the ``max_tokens=0`` empty answer); each may refuse with an orchlab error or
  answer the request itself.
- `orchlab.pipeline.dispatch`: one provider attempt (passes, the adapter, settle), recorded in
  the call's trail; the unit every orchestration logic is built from.
- `orchlab.pipeline.settle`: price an answer, settle its budget reservation, record an overrun.
- `orchlab.pipeline.observe`: attach the trail to the answer and tell the observers (usage,
  budgets, tracking).

Each part is built from the narrow things it needs (catalog, budgets, provider pool, observers),
never from the client; `orchlab.orchestrator.Orchestrator` wires them.
"""

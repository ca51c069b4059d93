"""One prompt, several targets, answers side by side: the compare view (and ``%%llm --compare``).

Each target is run through `orchlab.compare` (so each gets its MLflow run, params and metrics,
with its trace linked, exactly as a comparison from Python), all targets at once in threads,
and the progress bar moves as each finishes. Every answer has its own feedback buttons; a rating
clicked there also updates its comparison run's ``mean_rating`` / ``thumbs_up_rate`` / ``rated``.
One prompt is one call per target: no warm-up call, so a footer's latency includes a cold start.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import html
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchlab import render
from orchlab.errors import OrchlabError

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.tracking.comparison import Comparison


@dataclass
class TargetResult:
    """One target's answer (``row`` is its `orchlab.compare` result row) and its comparison."""

    target: str
    row: dict[str, Any]
    comparison: Comparison | None = None

    @property
    def ok(self) -> bool:
        return bool(self.row.get("ok"))

    @property
    def trace_id(self) -> str | None:
        return self.row.get("trace_id")

    def footer(self) -> str:
        r = self.row
        if not r.get("ok"):
            return f"failed after {render.format_latency(r.get('latency_s') or 0.0)}"
        parts = [
            str(r.get("provider")),
            str(r.get("model")),
            f"{r.get('input_tokens', 0)} → {r.get('output_tokens', 0)} tokens",
            render.format_cost(r.get("cost_usd")),
            render.format_latency(r.get("latency_s") or 0.0),
        ]
        if r.get("strategy") not in (None, "single"):
            parts.append(str(r["strategy"]))
        return render.SEP.join(parts)

    def text(self) -> str:
        return str(self.row.get("answer") if self.ok else self.row.get("error"))


def run_targets(
    client: Orchestrator,
    prompt: str | Sequence[Mapping[str, str]],
    targets: Sequence[str],
    *,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    on_done: Callable[[TargetResult], None] | None = None,
    log: bool = True,
) -> list[TargetResult]:
    """Run ``prompt`` on every target concurrently; results in the order of ``targets``.

    ``log=False``: no MLflow runs (wrap the call in ``orchlab.tracking.context.untracked()`` to
    leave out the traces too)."""
    from orchlab.tracking.compare import compare
    from orchlab.tracking.compare_inputs import compare_target

    for t in targets:
        compare_target(client, t)  # a bad target fails before anything runs
    name = name or f"compare view {dt.datetime.now().strftime('%Y-%m-%d %H:%M:%S')}"
    case: Any = prompt if isinstance(prompt, str) else [dict(m) for m in prompt]

    def one(target: str) -> TargetResult:
        started = time.perf_counter()
        try:
            comparison = compare(
                [case],
                [target],
                client=client,
                params=params,
                progress=False,
                name=name,
                log_runs=log,
                warmup=False,  # one interactive call: a warm-up would double its time and cost
            )
        except OrchlabError as exc:
            row = {"target": target, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            row["latency_s"] = time.perf_counter() - started
            return TargetResult(target, row)
        return TargetResult(target, comparison.rows[0], comparison)

    results: dict[str, TargetResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(targets)), thread_name_prefix="orchlab-compare") as pool:
        # each thread runs in a copy of this context, so an `untracked()` around us applies there too
        futures = {pool.submit(contextvars.copy_context().run, one, t): t for t in targets}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_done is not None:
                on_done(result)
    return [results[t] for t in targets]


def prompt_text(prompt: str | Sequence[Any]) -> str:
    """The prompt as the panel shows it (the last user message of a list of messages)."""
    if isinstance(prompt, str):
        return prompt.strip()
    users = [
        str(m.get("content", "") if isinstance(m, Mapping) else getattr(m, "content", ""))
        for m in prompt
        if (m.get("role") if isinstance(m, Mapping) else getattr(m, "role", None)) == "user"
    ]
    return users[-1].strip() if users else ""


class ComparePanel:
    """The prompt, then the answers side by side, each with its footer and feedback buttons."""

    def __init__(
        self,
        results: Sequence[TargetResult],
        *,
        client: Orchestrator,
        prompt: str | Sequence[Any] = "",
    ) -> None:
        import ipywidgets as w

        from orchlab.widgets.rating import FeedbackWidget

        self.results = list(results)
        self.prompt = prompt_text(prompt)
        self.feedback: dict[str, FeedbackWidget] = {}
        columns = []
        for result in self.results:
            fb = FeedbackWidget(result.trace_id or "", client=client)
            self.feedback[result.target] = fb
            color = "" if result.ok else "color:#b00;"
            body = (
                f"<div style='font-weight:600'>{html.escape(result.target, quote=False)}</div>"
                f"<div style='white-space:pre-wrap;{color}'>{html.escape(result.text(), quote=False)}</div>"
                f"<div style='opacity:.7;font-size:85%'>{html.escape(result.footer(), quote=False)}</div>"
            )
            columns.append(
                w.VBox(
                    [w.HTML(value=body), fb.widget],
                    layout=w.Layout(
                        flex="1 1 0", min_width="16em", padding="0 .6em", border="1px solid #ddd"
                    ),
                )
            )
        answers = w.HBox(columns, layout=w.Layout(align_items="stretch", flex_flow="row wrap"))
        head = (
            "<div style='white-space:pre-wrap;margin:.2em 0 .4em'><b>prompt:</b> "
            f"{html.escape(self.prompt, quote=False)}</div>"
        )
        self.widget = w.VBox([w.HTML(value=head), answers]) if self.prompt else answers

    def text(self) -> str:
        answers = "\n".join(f"── {r.target}\n{r.text()}\n{r.footer()}" for r in self.results)
        return f"prompt: {self.prompt}\n{answers}" if self.prompt else answers

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = self.text()
        return data

    def __repr__(self) -> str:
        return self.text()


class CompareView:
    """A prompt box, a multi-select of targets, Run, a progress bar, and the answers side by side."""

    def __init__(
        self,
        client: Orchestrator | None = None,
        *,
        prompt: str = "",
        targets: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        import ipywidgets as w

        if client is None:
            from orchlab.notebook.session import get_session

            client = get_session().client
        self.client = client
        options = self.target_options()
        chosen = list(targets) if targets is not None else client.roles()[:2]
        for t in chosen:
            if t not in options:
                options.append(t)
        self.prompt = w.Textarea(
            value=prompt, placeholder="a prompt", layout=w.Layout(width="40em", height="5em")
        )
        self.targets = w.SelectMultiple(
            options=options, value=tuple(chosen), rows=min(8, max(3, len(options))), description="targets"
        )
        self.max_tokens = w.BoundedIntText(
            value=max_tokens or 0, min=0, max=100_000, description="max tokens", tooltip="0: each role's own"
        )
        self.run = w.Button(description="Run", button_style="primary")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="")
        self.progress_text = w.Label(value="")
        self.output = w.VBox([])
        self.run.on_click(lambda _b: self.run_now())
        self.panel: ComparePanel | None = None
        self.last: list[TargetResult] = []
        self.widget = w.VBox(
            [
                self.prompt,
                w.HBox([self.targets, w.VBox([self.max_tokens, self.run])]),
                w.HBox([self.progress, self.progress_text]),
                self.output,
            ]
        )

    def target_options(self) -> list[str]:
        """The roles, then the catalog's models as ``provider:model``."""
        roles = self.client.roles()
        models = [i.target for i in self.client.catalog.list_models()]
        return [*roles, *[m for m in models if m not in roles]]

    def run_now(self) -> list[TargetResult]:
        """What Run does: every selected target at once; the bar moves as each finishes."""
        prompt = self.prompt.value.strip()
        targets = list(self.targets.value)
        if not prompt or len(targets) < 1:
            self.progress_text.value = "write a prompt and select at least one target"
            return []
        params = {"max_tokens": self.max_tokens.value} if self.max_tokens.value else None
        # the previous answers go now: nothing on screen belongs to another prompt while this runs
        self.output.children = ()
        self.panel, self.last = None, []
        self.progress.max, self.progress.value = len(targets), 0
        self.progress.bar_style = ""
        self.progress_text.value = f"0/{len(targets)} running…"
        self.run.disabled = True
        started = time.perf_counter()

        def done(result: TargetResult) -> None:
            self.progress.value += 1
            self.progress_text.value = f"{self.progress.value}/{len(targets)} · {result.target} done"

        try:
            self.last = run_targets(self.client, prompt, targets, params=params, on_done=done)
        except OrchlabError as exc:
            self.progress.bar_style = "danger"
            self.progress_text.value = f"✗ {exc}"
            return []
        finally:
            self.run.disabled = False
        failed = sum(not r.ok for r in self.last)
        self.progress.bar_style = "warning" if failed else "success"
        took = render.format_latency(time.perf_counter() - started)
        self.progress_text.value = f"{len(targets)}/{len(targets)} done in {took}" + (
            f" ({failed} failed)" if failed else ""
        )
        self.panel = ComparePanel(self.last, client=self.client, prompt=prompt)
        self.output.children = (self.panel.widget,)
        return self.last

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = f"compare view: {', '.join(self.targets.value)}"
        return data

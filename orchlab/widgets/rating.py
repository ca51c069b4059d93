"""Rate one answer: 👍 / 👎, 1-5 stars and a comment, stored as MLflow feedback on its trace.

A click calls ``client.feedback(response, rating, comment=..., user=...)`` (orchlab.tracking),
which stores the rating with a HUMAN source, even when it is given the moment the call returned.
The status line then says what was saved.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from orchlab.errors import OrchlabError

if TYPE_CHECKING:
    from orchlab.orchestrator import Orchestrator
    from orchlab.store.values import Feedback
    from orchlab.tracking.feedback import Rating


def describe_rating(value: bool | int) -> str:
    if isinstance(value, bool):
        return "👍" if value else "👎"
    return "★" * value + "☆" * (5 - value) + f" ({value}/5)"


class FeedbackWidget:
    """The rating bar under an answer (a response, or a trace id). ``saved`` lists what it stored."""

    def __init__(self, response: Any, *, client: Orchestrator | None = None, user: str | None = None) -> None:
        import ipywidgets as w

        self.response = response
        self._client = client
        self.user = user
        self.saved: list[Rating | Feedback] = []
        small = w.Layout(width="auto", min_width="2.6em")
        self.up = w.Button(description="👍", tooltip="a good answer", layout=small)
        self.down = w.Button(description="👎", tooltip="a bad answer", layout=small)
        self.stars = [
            w.Button(description=f"{n}★", tooltip=f"{n} of 5 stars", layout=small) for n in range(1, 6)
        ]
        self.comment = w.Text(placeholder="comment (sent with the rating)", layout=w.Layout(width="16em"))
        self.status = w.HTML(value="")
        self.up.on_click(lambda _b: self.rate(True))
        self.down.on_click(lambda _b: self.rate(False))
        for n, button in enumerate(self.stars, start=1):
            button.on_click(lambda _b, n=n: self.rate(n))
        self.widget = w.HBox(
            [self.up, self.down, *self.stars, self.comment, self.status],
            layout=w.Layout(align_items="center", flex_flow="row wrap"),
        )
        if not self.trace_id:
            self._disable("not tracked, so it cannot be rated (tracking off, or --no-log)")

    @property
    def trace_id(self) -> str | None:
        if isinstance(self.response, str):
            return self.response or None
        return getattr(self.response, "trace_id", None)

    @property
    def client(self) -> Orchestrator:
        if self._client is None:
            from orchlab.notebook.session import get_session

            self._client = get_session().client
        return self._client

    def buttons(self) -> list[Any]:
        return [self.up, self.down, *self.stars]

    def rate(self, rating: bool | int) -> Rating | Feedback | None:
        """Store ``rating`` (True/False, or 1-5) with the comment typed so far; shows the outcome."""
        comment = self.comment.value.strip() or None
        try:
            saved = self.client.feedback(self.response, rating, comment=comment, user=self.user)
        except OrchlabError as exc:
            self.status.value = (
                f"<span style='color:#b00'>✗ not saved: {html.escape(str(exc), quote=False)}</span>"
            )
            return None
        self.saved.append(saved)
        for button in self.buttons():
            button.button_style = ""
        chosen = (self.up if rating else self.down) if isinstance(rating, bool) else self.stars[rating - 1]
        chosen.button_style = "success"
        text = f"✓ saved {describe_rating(saved.value)}"
        if saved.comment:
            text += f" · “{saved.comment}”"
        self.status.value = f"<span style='color:#080'>{html.escape(text, quote=False)}</span>"
        return saved

    def _disable(self, why: str) -> None:
        for button in self.buttons():
            button.disabled = True
        self.comment.disabled = True
        self.status.value = f"<span style='opacity:.7'>{html.escape(why, quote=False)}</span>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        data = self.widget._repr_mimebundle_(**kwargs)
        data["text/plain"] = "rate this answer: 👍 👎 1★ 2★ 3★ 4★ 5★ + comment"
        return data

    def __repr__(self) -> str:
        return f"FeedbackWidget(trace_id={self.trace_id!r}, saved={len(self.saved)})"

"""Showing a streamed answer while it arrives.

In a kernel: one display that is updated as deltas arrive (throttled), then blanked once the
final, formatted answer is shown below it. Blanking (rather than replacing it) keeps a saved
notebook's outputs identical to what a re-run emits, which is what nbval compares.
In a terminal: the deltas are printed as they come.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from orchlab.notebook.session import LiveMode

CURSOR = "▌"


class LiveText:
    def __init__(self, mode: LiveMode, *, interval_s: float = 0.05) -> None:
        self.mode = mode
        self.interval_s = interval_s
        self.parts: list[str] = []
        self.updates = 0
        self._handle: Any = None
        self._last = 0.0

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def start(self) -> LiveText:
        if self.mode == "display":
            from IPython.display import display

            self._handle = display({"text/plain": ""}, raw=True, display_id=True)
        return self

    def add(self, delta: str) -> None:
        self.parts.append(delta)
        if self.mode == "print":
            sys.stdout.write(delta)
            sys.stdout.flush()
        elif self.mode == "display" and self._handle is not None:
            now = time.perf_counter()
            if now - self._last >= self.interval_s:
                self._last = now
                self.updates += 1
                self._handle.update({"text/plain": self.text + CURSOR}, raw=True)

    def finish(self, *, keep: bool = False) -> None:
        """Clear the live view (the final answer is shown below it); ``keep`` leaves the partial
        text in place, for a stream that failed midway."""
        if self.mode == "print" and self.parts:
            sys.stdout.write("\n")
            sys.stdout.flush()
        elif self.mode == "display" and self._handle is not None:
            self._handle.update({"text/plain": self.text if keep else ""}, raw=True)

"""DataFrames of answers that read well: text left-aligned and wrapped, ``\\n`` as line breaks,
thumbs as 👍/👎, costs in dollars.

`orchlab.history`, `orchlab.compare`'s tables and ``%llm history`` return a `ReadableFrame`: a
pandas DataFrame (the data is unchanged: ``thumbs`` stays True/False/None, costs stay floats) whose
notebook and text renderings are made for reading answers. Slicing, sorting and indexing keep it.
Imports pandas, so it is imported only where a frame is built.

For example:

    frame = readable(pd.DataFrame({"answer": ["line 1\\nline 2"], "thumbs": [True]}))
    frame              # in a notebook: the answer on two lines, left-aligned; 👍
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from orchlab.render import format_usd

MAX_TEXT = 1_000
"""Characters of one cell shown before it is cut (the data itself is not cut)."""
TEXT_STYLE = "text-align:left;white-space:pre-wrap;max-width:36em"
CELL_STYLE = "vertical-align:top"


def _blank(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def cell_text(column: object, value: Any) -> str:
    """How one value is shown (the same in HTML and plain text, before escaping)."""
    if _blank(value):
        return ""
    name = str(column)
    if name == "thumbs" and isinstance(value, bool | int):
        return "👍" if value else "👎"
    if isinstance(value, bool):
        return str(value)
    if name.endswith("_usd") and isinstance(value, int | float):
        return format_usd(float(value))
    if isinstance(value, float):
        return _number(value)
    text = str(value)
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"… ({len(text) - MAX_TEXT:,} more characters)"
    return text


def _text_style(series: pd.Series) -> str | None:
    """The style of a column of text (None for numbers, flags, thumbs): long texts get room."""
    texts = [v for v in series if isinstance(v, str)]
    if not texts:
        return None
    longest = max(len(t) for t in texts)
    return TEXT_STYLE + (";min-width:16em" if longest > 24 else "")


def _label(value: object) -> str:
    if isinstance(value, tuple):
        return " · ".join(str(v) for v in value)
    return "" if value is None else str(value)


class ReadableFrame(pd.DataFrame):
    """A DataFrame whose notebook (HTML) and text renderings are made for reading answers."""

    @property
    def _constructor(self) -> type[ReadableFrame]:
        return ReadableFrame

    def _shown_rows(self) -> tuple[pd.DataFrame, int]:
        """The rows to show and how many are left out (pandas' own display limits)."""
        max_rows = pd.get_option("display.max_rows")
        if max_rows is None or len(self) <= max_rows:
            return pd.DataFrame(self), 0
        half = max(1, (pd.get_option("display.min_rows") or max_rows) // 2)
        return pd.concat([pd.DataFrame(self.head(half)), pd.DataFrame(self.tail(half))]), len(self) - 2 * half

    def display_frame(self) -> pd.DataFrame:
        """A plain DataFrame of the shown strings (what the text rendering prints)."""
        shown = pd.DataFrame(
            {_label(c): [cell_text(c, v) for v in self[c]] for c in self.columns},
            index=self.index,
            dtype=object,
        )
        return shown.rename_axis(columns=self.columns.name)

    def __repr__(self) -> str:
        if self.columns.has_duplicates:
            return super().__repr__()
        return repr(self.display_frame())

    def _repr_html_(self) -> str:
        if self.columns.has_duplicates:
            return str(super()._repr_html_())
        shown, hidden = self._shown_rows()
        styles = [_text_style(shown.iloc[:, i]) for i in range(len(shown.columns))]
        levels = shown.index.nlevels
        esc = html.escape

        head_cells = ["<th></th>"] * levels
        if shown.columns.name is not None:
            head_cells[-1] = f"<th>{esc(str(shown.columns.name))}</th>"
        header = [
            "<tr>"
            + "".join(head_cells)
            + "".join(
                f"<th style='text-align:left'>{esc(_label(c))}</th>"
                if style
                else f"<th>{esc(_label(c))}</th>"
                for c, style in zip(shown.columns, styles, strict=True)
            )
            + "</tr>"
        ]
        if any(n is not None for n in shown.index.names):
            header.append(
                "<tr>"
                + "".join(f"<th>{esc(_label(n))}</th>" for n in shown.index.names)
                + "<th></th>" * len(shown.columns)
                + "</tr>"
            )
        body = []
        for position, (key, row) in enumerate(zip(shown.index, shown.itertuples(index=False), strict=True)):
            if hidden and position == len(shown) // 2:
                span = levels + len(shown.columns)
                body.append(f"<tr><td colspan='{span}'>… {hidden:,} more rows …</td></tr>")
            keys = key if isinstance(key, tuple) else (key,)
            cells = [f"<th style='{CELL_STYLE}'>{esc(cell_text('', k))}</th>" for k in keys]
            for i, value in enumerate(row):
                text = esc(cell_text(shown.columns[i], value))
                if styles[i] is not None:
                    text = f"<div style='{styles[i]}'>{text}</div>"
                cells.append(f"<td style='{CELL_STYLE}'>{text}</td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
        size = f"<p>{len(self):,} rows × {len(self.columns)} columns</p>" if hidden else ""
        return (
            "<table border='1' class='dataframe orchlab-frame'>"
            f"<thead>{''.join(header)}</thead><tbody>{''.join(body)}</tbody></table>{size}"
        )


def readable(frame: pd.DataFrame) -> ReadableFrame:
    """``frame`` as a `ReadableFrame` (same data, same index)."""
    return frame if isinstance(frame, ReadableFrame) else ReadableFrame(frame)

"""HTML for notebooks: the ``_repr_html_`` of every printed result goes through here.

Printed results (summaries, hypothesis tables, k-fold and bridge-sampling estimates) are
shown as their text in a ``<pre>`` block, so a notebook shows exactly what ``print`` does;
results that are data frames (conditional effects) as HTML tables.
"""

from __future__ import annotations

import html

import pandas as pd


def pre_html(result: object) -> str:
    """``str(result)`` as preformatted HTML, escaped (level labels and hypotheses may hold ``<``, ``&``)."""
    return f"<pre>{html.escape(str(result))}</pre>"


def table_html(frame: pd.DataFrame, css: str = "", max_rows: int | None = None) -> str:
    """An HTML table without pandas's index column (every column shown is a named one), numbers to
    three decimals; ``max_rows`` shows the first and last rows of a longer table."""
    return frame.to_html(classes=css or None, float_format=lambda v: f"{v:.3f}", border=0, index=False,
                         max_rows=max_rows)

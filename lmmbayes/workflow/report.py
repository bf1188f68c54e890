"""One self-contained HTML file per analysis: ``lmmbayes.report(fits, path)``.

Figures are embedded as base64 PNG and styles inline, so the file opens
anywhere with no network and no other files. A small inline script checks on
load that every figure decoded and records the count on ``<body>``
(``data-images-decoded``), which the browser test reads.

Per model the report shows the priors, brms's summary, the convergence
diagnostics (ESS as integers), trace, rank and parallel-coordinates plots and
the family's default posterior predictive check; several fits of the same
data are first compared by PSIS-LOO.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import _validate as check
from ..design.frame import as_frame
from ..errors import LmmbayesError
from ..results.model import FitResult
from .display import table_html

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { border-bottom: 2px solid #335; } h2 { margin-top: 2em; border-bottom: 1px solid #99a; }
pre { background: #f6f6f8; padding: 1em; overflow-x: auto; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
th, td { border: 1px solid #ccd; padding: 3px 8px; text-align: right; }
th { background: #eef; } .warning { background: #fff3cd; border-left: 4px solid #e0a800;
padding: 0.5em 1em; margin: 0.5em 0; } .ok { color: #1a7f37; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""

_CHECK = """
<script>
window.addEventListener("load", function () {
  var imgs = document.querySelectorAll("img"), ok = 0;
  imgs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { ok += 1; } });
  document.body.setAttribute("data-images-total", imgs.length);
  document.body.setAttribute("data-images-decoded", ok);
});
</script>
"""


def _png(fig: Figure) -> str:
    """The figure as an inline ``<img>``; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=80)
    finally:
        plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, css: str) -> str:
    """An HTML table without pandas's index column: every column a table shows is a named one."""
    return table_html(frame, css)


def _figure(title: str, make: Callable[[], Figure]) -> str:
    try:
        return f"<h3>{html.escape(title)}</h3>{_png(make())}"
    except LmmbayesError as exc:  # e.g. no parameters of a class to plot
        return f"<h3>{html.escape(title)}</h3><p>Not shown: {html.escape(str(exc))}</p>"


def diagnostics_frame(fit: FitResult) -> pd.DataFrame:
    """The convergence table of the population-level and hyper-parameters as printed (ESS as integers)."""
    from .diagnostics import diagnostics_table, format_table

    table = format_table(diagnostics_table(fit, include_random=False).parameters)
    return table.rename_axis("parameter").reset_index()


def comparison_frame(fits: Sequence[FitResult]) -> pd.DataFrame:
    """``loo_compare`` of the fits with the model as an ordinary first column (one header row in HTML)."""
    from .compare import loo_compare

    names = [f"model {k}: {f.formula}" for k, f in enumerate(fits, start=1)]
    return pd.DataFrame(loo_compare(*fits, names=names)).reset_index()


def _model_section(k: int, fit: FitResult) -> str:
    from . import mcmc_plots
    from .checks import pp_check
    from .diagnostics import format_sampler_report, sampler_report
    from .summary import build_summary

    summary = build_summary(fit, 0.95)
    warnings_html = "".join(f'<div class="warning">{html.escape(w)}</div>' for w in summary.warnings) \
        or '<p class="ok">No sampler or convergence warnings.</p>'
    sampler = sampler_report(fit.idata["sample_stats"].to_dataset())
    parts = [
        f"<h2>Model {k}: <code>{html.escape(fit.formula)}</code></h2>",
        "<h3>Priors</h3>", _table(fit.priors.frame(), "priors"),
        "<h3>Summary</h3>", f'<pre class="summary">{html.escape(str(summary))}</pre>',
        "<h3>Diagnostics</h3>", warnings_html,
        f"<pre>{html.escape(format_sampler_report(sampler))}</pre>",
        _table(diagnostics_frame(fit), "diagnostics"),
        _figure("Trace", lambda: mcmc_plots.plot_trace(fit)),
        _figure("Rank plots", lambda: mcmc_plots.plot_rank(fit)),
        _figure("Parallel coordinates (divergent draws in red)", lambda: mcmc_plots.plot_parallel(fit)),
        _figure("Posterior predictive check", lambda: pp_check(fit, seed=1)),
    ]
    return "\n".join(parts)


def report(fits: FitResult | Sequence[FitResult], path: str | Path, *, data: Any = None,
           title: str = "lmmbayes report") -> Path:
    """Write one self-contained HTML report for one or several fits.

    Parameters
    ----------
    fits : Fit or sequence of Fit
        Several fits of the same data are compared with ``loo_compare`` first.
    path : str or Path
        The HTML file to write.
    data : pandas.DataFrame or polars.DataFrame, optional
        Shown as a short description (rows, columns).
    title : str

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    LmmbayesError
        If ``fits`` is not one fit or a non-empty list of fits, or the file
        cannot be written.
    DataError
        If ``data`` is not a data frame.
    """
    if isinstance(fits, FitResult):
        items = [fits]
    elif isinstance(fits, Iterable) and not isinstance(fits, (str, bytes)):
        items = list(fits)
    else:
        items = []
    if not items or not all(isinstance(f, FitResult) for f in items):
        raise LmmbayesError(f"report() needs one Fit or a non-empty list of Fit objects, got {fits!r:.80}.")
    title = check.text(title, "title")
    target = Path(check.path(path))
    if not target.parent.is_dir():  # say so before the minutes spent drawing
        raise LmmbayesError(f"could not write the report to {str(target)!r}: the folder {str(target.parent)!r} "
                            "does not exist.")
    body = [f"<h1>{html.escape(title)}</h1>"]
    if data is not None:
        frame = as_frame(data)
        body.append(f"<p>Data: {len(frame)} rows; columns "
                    f"{html.escape(', '.join(map(str, frame.columns)))}.</p>")
    if len(items) > 1:
        try:
            comparison = _table(comparison_frame(items), "compare")
        except LmmbayesError as exc:  # e.g. fits of different data, or of a Dask frame
            comparison = f"<p>Not shown: {html.escape(str(exc))}</p>"
        body += ["<h2>Model comparison (PSIS-LOO)</h2>", comparison]
    body += [_model_section(k, f) for k, f in enumerate(items, start=1)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style>{_CHECK}</head><body>{''.join(body)}</body></html>")
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise LmmbayesError(f"could not write the report to {str(target)!r}: {exc}") from None
    return target


__all__ = ["comparison_frame", "diagnostics_frame", "report"]

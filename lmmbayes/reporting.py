"""One self-contained HTML file per analysis: ``lmmbayes.report(fits, path)``.

Figures are embedded as base64 PNG and styles inline, so the file opens
anywhere with no network and no other files. A small inline script checks on
load that every figure decoded and records the count on ``<body>``
(``data-images-decoded``), which the browser test reads.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .diagnostics import format_sampler_report
from .errors import LmmbayesError
from .fit import Fit

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


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _table(frame: pd.DataFrame, css: str = "") -> str:
    return frame.to_html(classes=css, float_format=lambda v: f"{v:.3f}", border=0)


def _figure(title: str, make: Any) -> str:
    try:
        return f"<h3>{html.escape(title)}</h3>{_png(make())}"
    except LmmbayesError as exc:  # e.g. no parameters of a class to plot
        return f"<h3>{html.escape(title)}</h3><p>Not shown: {html.escape(str(exc))}</p>"


def _model_section(k: int, fit: Fit) -> str:
    from . import plots

    diag = fit.diagnostics()
    warnings_html = "".join(f'<div class="warning">{html.escape(w)}</div>' for w in fit.warnings) \
        or '<p class="ok">No sampler or convergence warnings.</p>'
    parts = [
        f"<h2>Model {k}: <code>{html.escape(fit.formula)}</code></h2>",
        "<h3>Priors</h3>", _table(fit.prior_summary(), "priors"),
        "<h3>Summary</h3>", f'<pre class="summary">{html.escape(str(fit.summary()))}</pre>',
        "<h3>Diagnostics</h3>", warnings_html,
        f"<pre>{html.escape(format_sampler_report(diag.sampler))}</pre>",
        _table(diag.parameters.loc[[n for n in diag.parameters.index if not n.startswith("r_")]],
               "diagnostics"),
        _figure("Trace", lambda: plots.plot_trace(fit)),
        _figure("Rank histograms", lambda: plots.plot_rank(fit)),
        _figure("Parallel coordinates (divergent draws in red)", lambda: plots.plot_parallel(fit)),
        _figure("Posterior predictive check", lambda: fit.pp_check()),
    ]
    return "\n".join(parts)


def report(fits: Fit | Sequence[Fit], path: str | Path, *, data: pd.DataFrame | None = None,
           title: str = "lmmbayes report") -> Path:
    """Write one self-contained HTML report for one or several fits.

    Parameters
    ----------
    fits : Fit or sequence of Fit
        Several fits of the same data are compared with ``loo_compare`` first.
    path : str or Path
        The HTML file to write.
    data : DataFrame, optional
        Shown as a short description (rows, columns).
    title : str

    Returns
    -------
    Path
        The file written.
    """
    items = [fits] if isinstance(fits, Fit) else list(fits)
    if not items or not all(isinstance(f, Fit) for f in items):
        raise LmmbayesError("report() needs one Fit or a non-empty list of Fit objects.")
    body = [f"<h1>{html.escape(title)}</h1>"]
    if data is not None:
        body.append(f"<p>Data: {len(data)} rows; columns {html.escape(', '.join(map(str, data.columns)))}.</p>")
    if len(items) > 1:
        from .compare import loo_compare

        names = [f"model {k}: {f.formula}" for k, f in enumerate(items, start=1)]
        try:
            comparison = _table(loo_compare(*items, names=names), "compare")
        except LmmbayesError as exc:  # e.g. fits of different data, or of a Dask frame
            comparison = f"<p>Not shown: {html.escape(str(exc))}</p>"
        body += ["<h2>Model comparison (PSIS-LOO)</h2>", comparison]
    body += [_model_section(k, f) for k, f in enumerate(items, start=1)]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style>{_CHECK}</head><body>{''.join(body)}</body></html>")
    target = Path(path)
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise LmmbayesError(f"could not write the report to {str(target)!r}: {exc}") from None
    return target

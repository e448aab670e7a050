"""Plotly charts of a run: bucket levels, breaker state, who answered, latency and cost.

One set of figure builders serves the notebooks (static ``fig.show()``, deterministic for nbval),
the live widgets (wrapped in a ``FigureWidget``) and the ``demo --report`` HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["STATE_LEVEL", "timeline_figure", "write_report"]

STATE_LEVEL = {"closed": 0, "half_open": 1, "open": 2}
COLORS = {"primary": "#1f77b4", "secondary": "#ff7f0e", "budget": "#d62728"}


def _go() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError as err:  # pragma: no cover - plotly is in the [course] extra
        raise ImportError("charts need plotly: pip install 'llm-patterns[course]'") from err
    return go


def _xy(points: Sequence[tuple[float, Any]]) -> tuple[list[float], list[Any]]:
    return [round(t, 6) for t, _ in points], [v for _, v in points]


def timeline_figure(timeline: Any, *, providers: Sequence[str] = ("primary", "secondary"),
                    budget: float | None = None, title: str = "") -> Any:
    """A four-row figure from a ``simulation.Timeline`` (or anything with ``.series``)."""
    from plotly.subplots import make_subplots

    go = _go()
    series = timeline.series
    fig = make_subplots(
        rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.06,
        subplot_titles=("requests available in each limiter", "circuit breaker state",
                        "latency of answers (s), by provider", "cost so far (USD)"),
    )
    for name in providers:
        color = COLORS.get(name)
        x, y = _xy(series.get(f"{name}.requests", []))
        fig.add_trace(go.Scatter(x=x, y=y, name=f"{name} bucket", mode="lines",
                                 line={"color": color, "shape": "hv"}), row=1, col=1)
        x, y = _xy(series.get(f"{name}.state", []))
        fig.add_trace(go.Scatter(x=x, y=[STATE_LEVEL.get(v, 0) for v in y], name=f"{name} breaker",
                                 mode="lines+markers", line={"color": color, "shape": "hv"}),
                      row=2, col=1)
    answers = series.get("provider", [])
    latencies = series.get("latency", [])
    for name in providers:
        pts = [(t, lat) for (t, p), (_, lat) in zip(answers, latencies) if p == name]
        x, y = _xy(pts)
        fig.add_trace(go.Scatter(x=x, y=y, name=f"answered by {name}", mode="markers",
                                 marker={"color": COLORS.get(name), "size": 4}), row=3, col=1)
    x, y = _xy(series.get("cost", []))
    fig.add_trace(go.Scatter(x=x, y=y, name="cost", mode="lines", line={"color": "#2ca02c"}),
                  row=4, col=1)
    if budget is not None:
        fig.add_hline(y=budget, line={"color": COLORS["budget"], "dash": "dash"},
                      annotation_text="budget", row=4, col=1)
    fig.update_yaxes(tickvals=[0, 1, 2], ticktext=["closed", "half-open", "open"], row=2, col=1,
                     range=[-0.3, 2.3])
    fig.update_xaxes(title_text="seconds", row=4, col=1)
    fig.update_layout(height=900, title=title or None, template="plotly_white",
                      legend={"orientation": "h", "y": -0.08}, margin={"t": 60, "b": 40})
    return fig


def write_report(path: str, figures: Sequence[Any], *, title: str, summary_html: str = "") -> None:
    """A standalone HTML file (plotly.js inline, works offline) with a summary and the figures."""
    parts = []
    for i, fig in enumerate(figures):
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0),
                                 div_id=f"figure-{i}"))
    html = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:system-ui,sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{padding:2px 12px;border-bottom:1px solid #ddd}"
        "td:last-child{text-align:right}</style></head><body>"
        f"<h1>{title}</h1>{summary_html}{''.join(parts)}</body></html>"
    )
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)

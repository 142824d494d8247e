"""The report as one self-contained HTML file: tables, plots embedded as PNG, and a per-item view.

Everything a model wrote is escaped (Jinja autoescape), the page loads nothing from anywhere, and a small
inline script sorts and filters the items so a reader can find where a candidate fails.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .plots import distributions, primary_metric, quality_vs_cost
from .table import fmt_pct, fmt_score, fmt_seconds, fmt_usd, metric_columns

__all__ = ["render_html"]

_TEMPLATE = "report.html.j2"
_CHECKS = ("empty", "truncated", "length_ok", "language_ok", "json_valid")  # flagged per item when they fail


def render_html(report: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    from .run import clean

    report = clean(report)
    env = Environment(loader=FileSystemLoader(Path(__file__).parent), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["score"] = fmt_score
    env.filters["usd"] = fmt_usd
    env.filters["pct"] = fmt_pct
    env.filters["secs"] = fmt_seconds
    env.filters["pval"] = lambda v: "-" if v is None else f"{v:.3g}"
    columns, titles = metric_columns(report)
    primary = primary_metric(report)
    items_json = json.dumps([
        {"id": row["id"], "scores": {name: cand["scores"].get(primary) for name, cand in row["candidates"].items()}}
        for row in report["items"]]).replace("</", "<\\/")
    return env.get_template(_TEMPLATE).render(
        r=report, columns=columns, titles=titles, primary=primary, best=report.get("best", {}),
        plot_cost=quality_vs_cost(report), plot_items=distributions(report), items_json=items_json,
        flags=[(n, "high" if n in ("empty", "truncated") else "low") for n in _CHECKS if n in columns])

"""The report's plots as PNG data URIs (matplotlib, no pyplot state, no display needed)."""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["quality_vs_cost", "distributions", "primary_metric"]

_COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777"]


def primary_metric(report: dict[str, Any]) -> str | None:
    """The first quality column of the baseline (e.g. rouge1, chrf, judge)."""
    for c in report["candidates"]:
        if c["name"] == report["suite"]["baseline"] and c.get("quality"):
            return c["quality"][0]
    return next((c["quality"][0] for c in report["candidates"] if c.get("quality")), None)


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def quality_vs_cost(report: dict[str, Any]) -> str | None:
    """Each candidate's primary score (with its 95% interval) against its cost per item; against its
    latency (p50) when every candidate is free (local models)."""
    metric = primary_metric(report)
    if metric is None:
        return None
    from matplotlib.figure import Figure

    costs = [c["usage"]["cost_per_item_usd"] for c in report["candidates"]]
    by_latency = not any(costs)
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    unknown = []
    for i, c in enumerate(report["candidates"]):
        entry = c["scores"].get(metric)
        if not entry or entry["value"] is None:
            continue
        scale = entry["scale"]
        y = entry["value"] * scale
        lo, hi = (v * scale if v is not None else y for v in entry["ci95"])
        x = c["usage"]["latency_p50_s"] if by_latency else c["usage"]["cost_per_item_usd"]
        if x is None:
            unknown.append(c["name"])
            x = 0.0
        color = _COLORS[i % len(_COLORS)]
        ax.errorbar([x], [y], yerr=[[y - lo], [hi - y]], fmt="o", color=color, capsize=4, markersize=8)
        ax.annotate(c["name"], (x, y), textcoords="offset points", xytext=(8, 6), fontsize=9, color=color)
    title = next(c["scores"][metric]["title"] for c in report["candidates"] if metric in c["scores"])
    label = "latency p50 (s); every candidate is free" if by_latency else "cost per item (USD)"
    ax.set_xlabel(label + (f"; unknown, shown at 0: {', '.join(unknown)}" if unknown else ""))
    ax.set_ylabel(f"{title} (95% CI)")
    ax.set_title("Quality vs speed" if by_latency else "Quality vs cost")
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.25, y=0.2)
    return _png(fig)


def distributions(report: dict[str, Any], limit: int = 4) -> str | None:
    """Per-item score distributions: a box per candidate, with every item as a dot, for each quality column."""
    names = []
    for c in report["candidates"]:
        names += [n for n in c.get("quality", []) if n not in names]
    names = names[:limit]
    if not names or not report["items"]:
        return None
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * len(names) + 0.6, 3.8))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    rng = np.random.default_rng(0)
    candidates = [c["name"] for c in report["candidates"]]
    for ax, metric in zip(axes, names, strict=False):
        data, labels = [], []
        for c in report["candidates"]:
            entry = c["scores"].get(metric)
            if entry is None:
                continue
            values = [row["candidates"][c["name"]]["scores"].get(metric) for row in report["items"]]
            data.append([v * entry["scale"] for v in values if v is not None])
            labels.append(c["name"])
        ax.boxplot(data, tick_labels=labels, showfliers=False, widths=0.5)
        for j, values in enumerate(data):
            color = _COLORS[candidates.index(labels[j]) % len(_COLORS)]
            x = j + 1 + rng.uniform(-0.15, 0.15, len(values))
            ax.scatter(x, values, s=10, alpha=0.6, color=color)
        title = next(c["scores"][metric]["title"] for c in report["candidates"] if metric in c["scores"])
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Per-item scores", fontsize=11)
    return _png(fig)

"""The report as text for a terminal: one row per candidate, the best per column marked with ``*``."""

from __future__ import annotations

from typing import Any

__all__ = ["format_report", "format_plan", "fmt_score", "fmt_usd", "fmt_pct", "fmt_seconds", "metric_columns"]


def fmt_usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 100 else f"${value:,.2f}"


def fmt_score(entry: dict[str, Any], interval: bool = True) -> str:
    value = entry.get("value")
    if value is None:
        return "-"
    scale = entry.get("scale", 1.0)
    digits = 2 if scale == 1.0 and abs(value) < 10 else 1
    text = f"{value * scale:.{digits}f}"
    lo, hi = entry.get("ci95") or (None, None)
    if interval and lo is not None and hi is not None:
        text += f" [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
    return text


def fmt_seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def metric_columns(report: dict[str, Any]) -> tuple[list[str], dict[str, str]]:
    """The metrics any candidate was scored on, in first-seen order, and their titles."""
    names: list[str] = []
    for c in report["candidates"]:
        names += [n for n in c["scores"] if n not in names]
    titles = {n: next(c["scores"][n]["title"] for c in report["candidates"] if n in c["scores"]) for n in names}
    return names, titles


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def format_report(report: dict[str, Any]) -> str:
    s = report["suite"]
    lines = [f"eval {s['name']}: {s['scored_items']} of {s['items']} items scored"
             + (f", {s['samples']} samples each" if s.get("samples", 1) > 1 else "")
             + f"; baseline {s['baseline']}"]
    if not report["candidates"]:
        lines.append("nothing to score yet")
    else:
        best = report.get("best", {})
        names, titles = metric_columns(report)
        head = ["candidate"] + [titles[n] + (" (95% CI)" if i < 1 else "") for i, n in enumerate(names)]
        head += ["cost", "$/item", "tokens", "p50", "p95"]
        rows = [head]
        for c in report["candidates"]:
            row = [c["name"]]
            for n in names:
                entry = c["scores"].get(n)
                is_quality = n in c.get("quality", [])
                cell = fmt_score(entry, interval=is_quality) if entry else "-"
                row.append(cell + ("*" if best.get(n) == c["name"] else ""))
            u = c["usage"]
            row += [fmt_usd(u["cost_usd"]) + ("*" if best.get("cost_usd") == c["name"] else ""),
                    fmt_usd(u["cost_per_item_usd"]),
                    f"{u['prompt_tokens'] + u['completion_tokens']:,}" if u.get("tokens_known_for") else "-",
                    fmt_seconds(u["latency_p50_s"]) + ("*" if best.get("latency_p50_s") == c["name"] else ""),
                    fmt_seconds(u["latency_p95_s"]) + ("*" if best.get("latency_p95_s") == c["name"] else "")]
            rows.append(row)
        lines += _grid(rows)
        lines.append("* best in its column; quality columns show the 95% bootstrap interval")
        for c in report["candidates"]:
            spread = {n: e["item_std"] for n, e in c["scores"].items() if e.get("item_std") is not None
                      and n in c.get("quality", [])}
            if spread:
                parts = ", ".join(f"{n} ±{v * c['scores'][n]['scale']:.2f}" for n, v in spread.items())
                lines.append(f"per-item spread across samples, {c['name']}: {parts}")
    if report.get("comparisons"):
        lines.append("")
        lines.append(f"against the baseline {s['baseline']} (p-values Holm-corrected across candidates):")
        for r in report["comparisons"]:
            scale = next(c["scores"][r["metric"]]["scale"] for c in report["candidates"]
                         if c["name"] == r["candidate"])
            mark = "significant" if r["significant"] else "not significant"
            lines.append(f"  {r['candidate']} {r['metric']}: {r['difference'] * scale:+.2f} "
                         f"(p = {r['p_holm']:.3g}, {r['test']}; {mark} at 0.05)")
    judge = report.get("judge")
    if judge:
        lines.append("")
        lines += _judge_lines(judge)
    if report.get("signatures"):
        lines.append("")
        lines.append("signatures:")
        lines += [f"  {sig}" for sig in report["signatures"].values()]
    for w in report.get("warnings", []):
        lines.append(f"note: {w}")
    for run in report.get("runs", []):
        if run.get("outcome") not in ("done", None):
            lines.append(f"job {run['job']}: {run['outcome']}" + (f" ({run['stopped']})" if run.get("stopped")
                                                                   else "")
                         + "".join(f"; {f['id']}: {f['reason']}" for f in run.get("failures", [])[:3]))
    if report.get("report_path"):
        lines.append(f"report: {report['report_path']}")
    return "\n".join(lines)


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _judge_lines(judge: dict[str, Any]) -> list[str]:
    lines = [f"judge: {judge['model'] or 'default model'} ({judge['mode']}"
             + (", reference-guided" if judge.get("reference_guided") else "") + ")"]
    if judge["mode"] == "pairwise":
        for p in judge.get("pairs", []):
            lines.append(f"  {p['b']} vs {p['a']}: {p['losses']} wins, {p['wins']} losses, {p['ties']} ties "
                         f"({p['flipped']} flipped with the order); swap consistency {fmt_pct(p['swap_consistency'])}, "
                         f"first position chosen {fmt_pct(p['first_position_rate'])}, longer output won "
                         f"{fmt_pct(p['longer_won_rate'])}; sign test p = {p['p_holm']:.3g}")
    elif judge.get("length_correlation") is not None:
        lines.append(f"  grade vs output length: r = {judge['length_correlation']:+.2f}")
    if judge.get("errors"):
        lines.append(f"  {len(judge['errors'])} judge outputs could not be parsed (not counted): "
                     + "; ".join(f"{e['item']} ({e['judged']})" for e in judge["errors"][:5]))
    for w in judge.get("warnings", []):
        lines.append(f"  warning: {w}")
    return lines


def format_plan(plan: dict[str, Any]) -> str:
    lines = [f"dry run of eval {plan['suite']} ({plan['samples']} sample{'s' if plan['samples'] > 1 else ''} "
             "per item): nothing was sent"]
    rows = [["job", "backend/model", "items", "to do", "requests", "prompt tokens", "max output", "max cost"]]
    for r in plan["jobs"]:
        label = r["candidate"] + (f" s{r['sample'] + 1}" if plan["samples"] > 1 else "")
        rows.append([label, f"{r['backend']}/{r['model']}", str(r["items"]), str(r["todo"]), str(r["requests"]),
                     f"{r['prompt_tokens']:,}", f"{r['max_output_tokens']:,}", fmt_usd(r["max_cost_usd"])])
    j = plan.get("judge")
    if j:
        rows.append(["judge (estimate)", f"{j['backend']}/{j['model']}", "", "", str(j["requests"]),
                     f"{j['prompt_tokens']:,}", f"{j['max_output_tokens']:,}", fmt_usd(j["max_cost_usd"])])
    lines += ["  " + line for line in _grid(rows)]
    lines.append(f"worst-case cost: {fmt_usd(plan['max_cost_usd'])} for {plan['requests']} requests")
    budget = plan.get("budget") or {}
    if budget.get("max_cost_usd") is not None or budget.get("max_total_tokens") is not None:
        lines.append(f"budget: {budget}")
    for w in plan.get("warnings", []):
        lines.append(f"note: {w}")
    for r in plan["jobs"]:
        for problem in r["problems"][:3]:
            lines.append(f"  problem ({r['candidate']}): {problem}")
    return "\n".join(lines)

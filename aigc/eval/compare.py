"""``aigc eval compare A.json B.json``: candidates from runs made at different times, scored side by side.

Two saved reports are comparable only when their numbers mean the same thing, so compare refuses:

- a different data set (its SHA-256), or different metrics or labels;
- a different metric signature (tokenizer, smoothing, library version...);
- a candidate of the same name whose template or model snapshot (the model the server said it served, or
  the digest of a local model's files) changed: two systems under one name. Rename one to compare them.

The items both runs scored are re-scored together from the saved outputs, with paired tests against the
first report's baseline. Judge results stay in their own reports (a judge's grades from different runs are
not paired).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from .checks import CheckSettings
from .jobs import Output
from .score import CandidateOutputs, Item, Scoring, score

__all__ = ["NotComparable", "load_report", "compare_reports"]


class NotComparable(InputError):
    """Two eval reports cannot be compared (different data, metrics, or a changed system under one name)."""


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    except ValueError:
        raise ConfigError(f"{path}: not JSON; give a report written by aigc eval run") from None
    if not isinstance(data, dict) or "aigc_eval" not in data:
        raise ConfigError(f"{path}: not an aigc eval report (see <state_dir>/reports/ of the suite)")
    data["_path"] = str(path)
    return data


def _snapshot(c: dict[str, Any]) -> tuple:
    snap = c.get("model_snapshot") or {}
    return tuple(snap.get("served") or ()), snap.get("fingerprint")


def _check(a: dict[str, Any], b: dict[str, Any], la: str, lb: str) -> None:
    sa, sb = a["suite"], b["suite"]
    if sa["data_sha256"] != sb["data_sha256"]:
        raise NotComparable(f"{la} and {lb} were run on different data ({sa['data']} sha256 "
                            f"{sa['data_sha256'][:12]} vs {sb['data']} sha256 {sb['data_sha256'][:12]}); "
                            "compare runs of the same data set")
    if sa["metrics"] != sb["metrics"] or sa.get("labels") != sb.get("labels"):
        raise NotComparable(f"{la} scores {', '.join(sa['metrics'])} and {lb} scores {', '.join(sb['metrics'])}; "
                            "compare runs with the same metrics")
    for metric, signature in a.get("signatures", {}).items():
        other = b.get("signatures", {}).get(metric)
        if other != signature:
            raise NotComparable(f"the {metric} signatures differ: {signature} ({la}) vs {other} ({lb}); "
                                "scores made differently are not comparable")
    for ca in a["candidates"]:
        cb = next((c for c in b["candidates"] if c["name"] == ca["name"]), None)
        if cb is None:
            continue
        if ca.get("template_sha256") != cb.get("template_sha256"):
            raise NotComparable(f"candidate {ca['name']!r} used a different template in {la} and {lb} "
                                f"({ca.get('template')}); rename it in one suite to compare the two")
        if _snapshot(ca) != _snapshot(cb):
            raise NotComparable(f"candidate {ca['name']!r} is a different model snapshot in {la} "
                                f"({_describe(ca)}) and {lb} ({_describe(cb)}); rename it in one suite to "
                                "compare the two")


def _describe(c: dict[str, Any]) -> str:
    served, fingerprint = _snapshot(c)
    return ", ".join([*served, *([fingerprint] if fingerprint else [])]) or "unknown"


def compare_reports(a: dict[str, Any], b: dict[str, Any], *, labels: tuple[str, str] = ("A", "B")) -> dict:
    """Re-score the candidates of two reports together; NotComparable when their numbers differ in kind."""
    la, lb = (a.get("_path", labels[0]), b.get("_path", labels[1]))
    _check(a, b, la, lb)
    ids_b = {item["id"] for item in b["items"]}
    items_a = [item for item in a["items"] if item["id"] in ids_b]
    by_id_b = {item["id"]: item for item in b["items"]}
    names_a = {c["name"] for c in a["candidates"]}
    names_b = {c["name"] for c in b["candidates"]}
    shared = names_a & names_b
    candidates = []
    for label, report, rows in ((labels[0], a, items_a), (labels[1], b, [by_id_b[i["id"]] for i in items_a])):
        for c in report["candidates"]:
            name = f"{c['name']}@{label}" if c["name"] in shared else c["name"]
            samples = c["samples"]
            outputs = [[Output(**row["candidates"][c["name"]]["outputs"][s]) for row in rows] for s in range(samples)]
            checks = c.get("checks") or {}
            info = {k: v for k, v in c.items() if k not in ("name", "scores", "usage", "quality", "checks",
                                                            "samples")}
            info["from_report"] = report.get("_path", label)
            candidates.append(CandidateOutputs(name, info, outputs, CheckSettings(
                length=tuple(checks["length"]) if checks.get("length") else None,
                tolerance=checks.get("tolerance", 0.5), language=checks.get("language"),
                schema=checks.get("schema"))))
    base = a["suite"]["baseline"]
    baseline = f"{base}@{labels[0]}" if base in shared else base
    items = [Item(i["id"], i["input"], i["references"], i.get("language")) for i in items_a]
    scored = score(Scoring(items, candidates, a["suite"]["metrics"], baseline, a["suite"].get("labels")))
    warnings = []
    if scored["signatures"] != a.get("signatures"):
        warnings.append("the installed metric libraries sign differently from the reports "
                        f"({scored['signatures']}); the numbers are recomputed with the installed ones")
    if len(items_a) < len(a["items"]) or len(items_a) < len(b["items"]):
        warnings.append(f"{len(items_a)} items were scored in both runs; only those are compared")
    if a.get("judge") or b.get("judge"):
        warnings.append("judge results are not compared across runs (see each run's own report)")
    suite = dict(a["suite"], scored_items=len(items), baseline=baseline)
    return {"aigc_eval": a["aigc_eval"], "compared": [la, lb], "suite": suite, **scored, "judge": None,
            "warnings": warnings, "exit_code": 0}

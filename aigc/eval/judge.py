"""Model-as-judge: pointwise grades (1–5 with a reason) or pairwise verdicts with the positions swapped.

The protocol follows Zheng et al. 2023 ("Judging LLM-as-a-Judge"):

- pairwise, every pair is judged twice, A/B and B/A; a verdict that flips with the order (each time the
  first answer wins, or each time the second) counts as a **tie**, never as a win;
- beside the verdicts: swap consistency (how often both orders agree), the first-position rate (how often
  a decisive verdict picked whatever was shown first; 0.5 is unbiased) and a length check (how often the
  longer output won; pointwise, the correlation of grade and length);
- reference-guided grading shows the judge the reference output;
- a judge of the same model family as a candidate is flagged: judges favour their own family's outputs;
- a judge output that cannot be parsed is an error, counted and listed, never a score.

The prompts are aigc templates (``judge_pointwise``, ``judge_pairwise``; yours via ``[judge] template``).
Judge requests go through the batch engine like the candidates', so they are cached and resumable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["parse_grade", "parse_verdict", "JudgeError", "combine", "PairOutcome", "model_family",
           "same_family_warnings", "pointwise_length_bias"]


class JudgeError(ValueError):
    """The judge's output said neither a grade nor a verdict."""


_JSON = re.compile(r"\{[^{}]*\}", re.S)
_GRADE = re.compile(r"\bscore\"?\s*[:=]\s*\"?([1-5])(?:\.0)?(?!\d|\.\d)", re.I)
_VERDICT = re.compile(r"\bwinner\"?\s*[:=]\s*\"?(A|B|tie)\b", re.I)
_BRACKETS = re.compile(r"\[\[(A|B|C|tie)\]\]", re.I)  # MT-bench style: [[A]], [[B]], [[C]] for a tie


def _json_objects(text: str) -> list[dict[str, Any]]:
    found = []
    for match in _JSON.finditer(text):
        try:
            value = json.loads(match.group(0))
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def parse_grade(text: str) -> tuple[int, str]:
    """(grade 1–5, reason) from a pointwise judge's output; JudgeError when there is none."""
    for obj in _json_objects(text):
        score = obj.get("score")
        if isinstance(score, int | float) and not isinstance(score, bool) and float(score).is_integer() \
                and 1 <= score <= 5:
            return int(score), str(obj.get("reason", "")).strip()
        if isinstance(score, str) and score.strip() in {"1", "2", "3", "4", "5"}:
            return int(score.strip()), str(obj.get("reason", "")).strip()
    grades = set(_GRADE.findall(text))
    if len(grades) == 1:
        return int(grades.pop()), text.strip()
    raise JudgeError(f"no grade 1-5 in the judge's output: {text.strip()[:120]!r}")


def parse_verdict(text: str) -> tuple[str, str]:
    """('first' | 'second' | 'tie', reason) from a pairwise judge's output; JudgeError when there is none."""
    names = {"a": "first", "b": "second", "tie": "tie", "c": "tie"}
    for obj in _json_objects(text):
        winner = obj.get("winner")
        if isinstance(winner, str) and winner.strip().lower() in ("a", "b", "tie"):
            return names[winner.strip().lower()], str(obj.get("reason", "")).strip()
    said = {m.lower() for m in _VERDICT.findall(text)} or {m.lower() for m in _BRACKETS.findall(text)}
    if len(said) == 1:
        return names[said.pop()], text.strip()
    raise JudgeError(f"no verdict (A, B or tie) in the judge's output: {text.strip()[:120]!r}")


@dataclass
class PairOutcome:
    """Two candidates judged on the same items in both orders."""

    a: str
    b: str
    wins: int = 0  # a won in both orders
    losses: int = 0  # b won in both orders
    ties: int = 0  # a tie in both orders, or a verdict that flipped with the order
    flipped: int = 0  # of the ties: verdicts that flipped with the order
    errors: int = 0  # items where a judge output could not be parsed
    first_chosen: int = 0  # decisive verdicts (of both orders) for the answer shown first
    decisive: int = 0
    longer_won: int = 0  # decisive, order-consistent verdicts won by the longer output
    longer_decided: int = 0
    per_item: dict[str, str] = field(default_factory=dict)  # item id → a, b, tie, flip or error

    @property
    def judged(self) -> int:
        return self.wins + self.losses + self.ties

    def to_dict(self) -> dict[str, Any]:
        from .stats import sign_test_p

        n = self.judged
        return {
            "a": self.a, "b": self.b, "wins": self.wins, "losses": self.losses, "ties": self.ties,
            "flipped": self.flipped, "errors": self.errors, "judged": n,
            "win_rate": (self.wins + 0.5 * self.ties) / n if n else None,
            "swap_consistency": (n - self.flipped) / n if n else None,
            "first_position_rate": self.first_chosen / self.decisive if self.decisive else None,
            "longer_won_rate": self.longer_won / self.longer_decided if self.longer_decided else None,
            "p_value": sign_test_p(self.wins, self.losses),
        }


def combine(pair: PairOutcome, item: str, first_order: str | None, second_order: str | None,
            len_a: int, len_b: int) -> None:
    """Add one item: ``first_order`` is the verdict with a shown first, ``second_order`` with b first
    (each 'first', 'second', 'tie', or None when the judge's output could not be parsed)."""
    if first_order is None or second_order is None:
        pair.errors += 1
        pair.per_item[item] = "error"
        return
    for verdict in (first_order, second_order):
        if verdict != "tie":
            pair.decisive += 1
            pair.first_chosen += verdict == "first"
    winner_1 = {"first": "a", "second": "b", "tie": "tie"}[first_order]
    winner_2 = {"first": "b", "second": "a", "tie": "tie"}[second_order]
    outcome = winner_1 if winner_1 == winner_2 else "flip"
    if outcome == "a":
        pair.wins += 1
    elif outcome == "b":
        pair.losses += 1
    else:
        pair.ties += 1
        pair.flipped += outcome == "flip"
    if outcome in ("a", "b") and len_a != len_b:
        pair.longer_decided += 1
        pair.longer_won += (len_a > len_b) == (outcome == "a")
    pair.per_item[item] = outcome


def pointwise_length_bias(grades: list[float], lengths: list[int]) -> float | None:
    """Pearson correlation of grades with output lengths (words); None when either does not vary."""
    g, n = np.asarray(grades, dtype=float), np.asarray(lengths, dtype=float)
    keep = ~np.isnan(g)
    g, n = g[keep], n[keep]
    if len(g) < 3 or g.std() == 0 or n.std() == 0:
        return None
    return float(np.corrcoef(g, n)[0, 1])


# -- model families ----------------------------------------------------------------------------------------

_FAMILIES = [  # (pattern on the model name, family)
    (r"gpt|chatgpt|\bo[1-9]\b|o[1-9]-|davinci|openai", "OpenAI GPT"),
    (r"claude|anthropic", "Anthropic Claude"),
    (r"gemini|gemma|palm|bard", "Google Gemini/Gemma"),
    (r"llama|meta-llama|codellama", "Meta Llama"),
    (r"qwen", "Qwen"),
    (r"mistral|mixtral|ministral|codestral", "Mistral"),
    (r"phi-?\d|\bphi\b", "Microsoft Phi"),
    (r"deepseek", "DeepSeek"),
    (r"smollm", "SmolLM"),
    (r"command-?r|cohere", "Cohere Command"),
    (r"falcon", "Falcon"),
    (r"granite", "IBM Granite"),
    (r"olmo", "OLMo"),
]


def model_family(model: str | None) -> str | None:
    """The family a model name belongs to (e.g. gpt-4o-mini → OpenAI GPT), or None when unknown."""
    if not model:
        return None
    name = "/".join(model.lower().replace("\\", "/").rstrip("/").split("/")[-2:])  # a hub id or a folder's end
    for pattern, family in _FAMILIES:
        if re.search(pattern, name):
            return family
    return None


def same_family_warnings(judge_model: str, candidates: dict[str, str]) -> list[str]:
    """Warnings for candidates (name → model) of the judge's own family."""
    family = model_family(judge_model)
    if family is None:
        return []
    out = []
    for name, model in candidates.items():
        if model_family(model) == family:
            same = "is the same model as" if model == judge_model else f"is of the same family ({family}) as"
            out.append(f"the judge {judge_model} {same} candidate {name!r} ({model}); judges tend to favour "
                       "their own family's outputs: prefer a judge from another family")
    return out

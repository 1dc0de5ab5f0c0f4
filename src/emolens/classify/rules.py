"""Post-processing rules over a model's probabilities: "if contempt wins but happy >= 0.3, answer happy".

A rule is declarative data, stored in the model's metadata (``emolens.rules``, a JSON list) like
the thresholds, so every interface applies the same ones. Each rule names the top label it applies
to (``when``), conditions on other probabilities (``min``: at least, ``max``: at most) and the
answer it gives instead (``then``). The first rule that matches a face decides; rules never chain,
and probabilities are left as they are. ``emolens evaluate --rule ... --save-rules`` writes rules only
when labelled data show they do not lower macro-F1 (``emolens.evaluate.rules``).

Text form (CLI): ``"if contempt and happy >= 0.3 then happy"``; several conditions join with ``and``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from emolens.core.errors import ModelError

RULES_KEY = "emolens.rules"

_TEXT = re.compile(
    r"^\s*if\s+(?P<when>[\w-]+)(?P<conds>(\s+and\s+[\w-]+\s*(>=|<=)\s*[0-9.]+)*)\s+then\s+(?P<then>[\w-]+)\s*$"
)
_COND = re.compile(r"and\s+(?P<label>[\w-]+)\s*(?P<op>>=|<=)\s*(?P<value>[0-9.]+)")


@dataclass(frozen=True)
class Rule:
    when: str  # the top label this rule applies to
    then: str  # the answer instead
    min: dict[str, float] = field(default_factory=dict)  # label -> probability it must reach
    max: dict[str, float] = field(default_factory=dict)  # label -> probability it must not exceed

    def __str__(self) -> str:
        conds = [f"{k} >= {v:g}" for k, v in self.min.items()] + [f"{k} <= {v:g}" for k, v in self.max.items()]
        return f"if {self.when}" + "".join(f" and {c}" for c in conds) + f" then {self.then}"

    def to_dict(self) -> dict:
        return {"when": self.when, "then": self.then, "min": dict(self.min), "max": dict(self.max)}

    def matches(self, probs: np.ndarray, labels: list[str]) -> np.ndarray:
        """Which rows of ``probs`` (N, K), columns in ``labels`` order, this rule answers."""
        hit = probs.argmax(1) == labels.index(self.when)
        for label, v in self.min.items():
            hit &= probs[:, labels.index(label)] >= v
        for label, v in self.max.items():
            hit &= probs[:, labels.index(label)] <= v
        return hit


def parse_rule(spec: str | dict | Rule) -> Rule:
    """A Rule from its text form, its dict form (as stored) or a Rule; ModelError when malformed."""
    if isinstance(spec, Rule):
        return spec
    if isinstance(spec, dict):
        unknown = set(spec) - {"when", "then", "min", "max"}
        if unknown or not isinstance(spec.get("when"), str) or not isinstance(spec.get("then"), str):
            raise ModelError(f"a rule is {{'when': LABEL, 'then': LABEL, 'min': {{...}}, 'max': {{...}}}}: {spec!r}")
        bounds = {}
        for key in ("min", "max"):
            raw = spec.get(key) or {}
            if not isinstance(raw, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1 for v in raw.values()
            ):
                raise ModelError(f"rule {spec!r}: {key!r} must map labels to probabilities in [0, 1]")
            bounds[key] = {str(k): float(v) for k, v in raw.items()}
        return Rule(when=spec["when"], then=spec["then"], **bounds)
    m = _TEXT.match(str(spec))
    if not m:
        raise ModelError(
            f"cannot read the rule {spec!r}; write it as 'if contempt and happy >= 0.3 then happy' "
            "(conditions: LABEL >= P or LABEL <= P, joined by 'and')"
        )
    lo, hi = {}, {}
    for c in _COND.finditer(m["conds"]):
        value = float(c["value"])
        if not 0 <= value <= 1:
            raise ModelError(f"rule {spec!r}: {c['label']} {c['op']} {value:g} is not a probability in [0, 1]")
        (lo if c["op"] == ">=" else hi)[c["label"]] = value
    return Rule(when=m["when"], then=m["then"], min=lo, max=hi)


def check_rules(rules, labels: list[str]) -> list[Rule]:
    """Rules parsed and checked against a model's labels; ModelError naming the first problem."""
    if not isinstance(rules, (list, tuple)):
        raise ModelError(f"{RULES_KEY} must be a JSON list of rules")
    out = []
    for spec in rules:
        rule = parse_rule(spec)
        unknown = sorted({rule.when, rule.then, *rule.min, *rule.max} - set(labels))
        if unknown:
            raise ModelError(f"rule '{rule}' names labels {unknown} that the model does not have ({labels})")
        if rule.when == rule.then:
            raise ModelError(f"rule '{rule}' answers the label it applies to: it would change nothing")
        out.append(rule)
    return out


def apply_rules(probs: np.ndarray, labels: list[str], rules: list[Rule]) -> tuple[np.ndarray, np.ndarray]:
    """The answers (label indices) after the rules, and which rule gave each (-1: none, the argmax)."""
    pred = probs.argmax(1)
    fired = np.full(len(probs), -1)
    for i, rule in enumerate(rules):
        hit = rule.matches(probs, labels) & (fired < 0)  # the first matching rule decides
        pred[hit], fired[hit] = labels.index(rule.then), i
    return pred, fired


def answer(probs: dict[str, float], rules: list[Rule] | None) -> tuple[str, Rule | None]:
    """One face: the answer after the rules (the top label when none matches), and the rule that gave it."""
    labels = list(probs)
    top = max(probs, key=probs.get)
    for rule in rules or []:
        if rule.when == top and rule.matches(np.array([[probs.get(k, 0.0) for k in labels]]), labels)[0]:
            return rule.then, rule
    return top, None

"""What PromQL expressions read: the series selectors of alert rules and dashboard panels.

A small lexer, not a PromQL parser: it is enough for the expressions in k8s/ (selectors, aggregations,
binary operators, functions, range vectors) and errs on the side of reporting a name, so a metric
this misses cannot hide behind it; tests/k8s/test_promql.py pins its behaviour on known cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Keywords and aggregation modifiers that look like metric names.
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset"}
)
# Clauses whose parentheses hold label names, not expressions.
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_STRING = r'"(?:[^"\\]|\\.)*"'
_NAME = r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
_SELECTOR = re.compile(_NAME + r"\s*(?P<matchers>\{(?:[^{}\"]|" + _STRING + r")*\})?")
_MATCHER = re.compile(r"(?P<label>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>" + _STRING + ")")
_NUMBER_BEFORE = re.compile(r"[0-9.]$")


@dataclass(frozen=True)
class Selector:
    """One series selector: the metric name and its label matchers (label, operator, value)."""

    metric: str
    matchers: tuple[tuple[str, str, str], ...]


def selectors(expr: str) -> list[Selector]:
    """The series selectors an expression reads, in order."""
    text = _RANGES.sub(" ", _LABEL_LISTS.sub(" ", expr))
    found: list[Selector] = []
    for match in _SELECTOR.finditer(text):
        name, start = match.group("name"), match.start()
        if name in KEYWORDS or _NUMBER_BEFORE.search(text[:start]):
            continue  # a keyword, or the exponent/suffix of a number (1e3)
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") and not match.group("matchers"):
            continue  # a function or an aggregation: sum(...), rate(...), histogram_quantile(...)
        matchers = tuple(
            (m.group("label"), m.group("op"), m.group("value")[1:-1])
            for m in _MATCHER.finditer(match.group("matchers") or "")
        )
        found.append(Selector(name, matchers))
    return found


def rule_expressions(objects: list[dict[str, Any]]) -> dict[str, str]:
    """`PrometheusRule/name: alert` -> expression, for every rule of every PrometheusRule."""
    out = {}
    for obj in objects:
        if obj.get("kind") != "PrometheusRule":
            continue
        for group in obj["spec"]["groups"]:
            for rule in group["rules"]:
                label = rule.get("alert") or rule.get("record")
                out[f"PrometheusRule/{obj['metadata']['name']}: {label}"] = rule["expr"]
    return out


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """`panel title [refId]` -> expression, for every target of every panel (and the variables)."""
    out = {}
    for panel in dashboard.get("panels", []):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out[f"panel {panel['title']!r} [{target['refId']}]"] = target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            inner = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_]+\)", query.strip())
            out[f"variable {variable['name']!r}"] = inner.group(1) if inner else query
    return out

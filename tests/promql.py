"""PromQL for the tests of deploy/'s rules and dashboard: promtool, and the metric names an
expression reads.

`metric_names` is a tokenizer, not a parser: promtool checks the syntax.
What it drops is what is not a metric name: strings, label matchers, ranges and
subqueries, numbers and durations, keywords, function and aggregation names (an
identifier before "("), the label lists of by/without/on/ignoring/group_left/group_right,
and Grafana's variables. A selector by `__name__` is refused rather than missed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import grpc

from authsvc.telemetry import metrics

__all__ = ["KNOWN_LABEL_VALUES", "PROMETHEUS_SERIES", "label_values", "metric_names", "promtool"]

# Prometheus's own series about a scrape, not the service's.
PROMETHEUS_SERIES = frozenset({"up"})
# The values the service gives the labels that rules and panels filter on: the outcomes are
# bound at import (metrics.py), so collecting them lists every one.
KNOWN_LABEL_VALUES = {
    "outcome": frozenset(
        sample.labels["outcome"]
        for counter in (metrics.LOGINS, metrics.REFRESHES)
        for family in counter.collect()
        for sample in family.samples
    ),
    "kind": frozenset(metrics.END_KINDS.values()),
    "code": frozenset(code.name for code in grpc.StatusCode),
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_TOKEN = re.compile(
    r"(?P<variable>\$\{?\w+\}?)"
    r"|(?P<number>(?:\d+(?:ms|[smhdwy]))+|0x[0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)"
    r"|(?P<other>\S)"
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
# Aggregations: "sum by (job) (x)" puts a label list, not "(", after the name.
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
# Each may be followed by a parenthesised list of label names.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def metric_names(expr: str) -> set[str]:
    """Every metric (or recorded series) name `expr` selects."""
    if "__name__" in expr:
        raise ValueError(f"selecting by __name__ is not supported: {expr}")
    text = _STRING.sub('""', expr)
    # Innermost first, so nested brackets (subqueries) go too.
    for pattern in (_MATCHERS, _RANGE):
        while pattern.search(text):
            text = pattern.sub(" ", text)
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, value = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        i += 1
        if kind != "name" or value.lower() in _KEYWORDS | _AGGREGATIONS:
            continue
        if value.lower() in _LABEL_LISTS:
            if following == "(":
                i = tokens.index(("other", ")"), i) + 1
            continue
        if following == "(":
            continue  # a function or an aggregation
        names.add(value)
    return names


_SELECTOR = re.compile(r'\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}')
_MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def label_values(expr: str, label: str) -> set[str]:
    """The values `expr`'s matchers compare `label` with. A regex must be a plain list of
    alternatives (`ok|grace_replay`): anything fancier is refused rather than guessed at."""
    values: set[str] = set()
    for selector in _SELECTOR.findall(expr):
        for name, op, value in _MATCHER.findall(selector):
            if name != label:
                continue
            if op in ("=~", "!~"):
                if re.fullmatch(r"\w+(\|\w+)*", value) is None:
                    raise ValueError(f"not a plain list of alternatives: {name}{op}{value!r}")
                values.update(value.split("|"))
            else:
                values.add(value)
    return values


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the real promtool (scripts/install_promtool puts it on PATH)."""
    path = shutil.which("promtool")
    assert path is not None, "promtool not found: run make bootstrap (scripts/install_promtool)"
    return subprocess.run(  # noqa: S603 - promtool from PATH, arguments from the repo
        [path, *map(str, args)], capture_output=True, text=True, check=False
    )

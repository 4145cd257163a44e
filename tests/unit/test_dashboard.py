"""deploy/grafana/authsvc.json: every query is valid PromQL over metrics the service exports,
every exported metric has a panel, and the data source is the dashboard's variable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from authsvc.telemetry.metrics import EXPORTED_METRICS, EXPORTED_SERIES
from tests.promql import (
    KNOWN_LABEL_VALUES,
    PROMETHEUS_SERIES,
    label_values,
    metric_names,
    promtool,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "authsvc.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# What Grafana puts in place of its variables, for promtool.
VARIABLES = {"$__rate_interval": "1m", "$job": "authsvc"}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[str]:
    return [
        target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])
    ]


def variable_metrics() -> set[str]:
    """The metrics the template variables' label_values(...) queries read."""
    return {
        name
        for variable in dashboard()["templating"]["list"]
        if variable["type"] == "query"
        for name in re.findall(r"label_values\((\w+),", variable["query"]["query"])
    }


def test_every_metric_the_dashboard_reads_is_exported() -> None:
    read = {name for expr in queries() for name in metric_names(expr)} | variable_metrics()

    assert read - EXPORTED_SERIES - PROMETHEUS_SERIES == set()


def test_every_outcome_kind_and_code_the_panels_match_is_one_the_service_uses() -> None:
    for label, known in KNOWN_LABEL_VALUES.items():
        matched = {value for expr in queries() for value in label_values(expr, label)}

        assert matched <= known, label


def test_every_exported_metric_has_a_panel() -> None:
    read = {name for expr in queries() for name in metric_names(expr)}

    unshown = {
        metric
        for metric in EXPORTED_METRICS
        if not any(name == metric or name.startswith(f"{metric}_") for name in read)
    }

    assert unshown == set()


def test_promtool_accepts_every_dashboard_query(tmp_path: Path) -> None:
    def substituted(expr: str) -> str:
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        return expr

    as_rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query{n}", "expr": substituted(expr)}
                    for n, expr in enumerate(queries())
                ],
            }
        ]
    }
    rules = tmp_path / "dashboard.yml"
    rules.write_text(yaml.safe_dump(as_rules))

    checked = promtool("check", "rules", rules)

    assert checked.returncode == 0, checked.stdout + checked.stderr


def datasources(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasources(item)


def test_every_query_uses_the_datasource_variable_never_a_fixed_uid() -> None:
    variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "datasource")
    panels = [panel for panel in dashboard()["panels"] if panel["type"] != "row"]

    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    assert all(panel["datasource"] == DATASOURCE for panel in panels)
    assert all(found == DATASOURCE for found in datasources(dashboard()))

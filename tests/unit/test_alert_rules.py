"""deploy/prometheus/alerts.yml: valid for the real promtool, its unit tests pass, every alert
is tested and documented, and every metric it reads is one the service exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from authsvc.telemetry.metrics import EXPORTED_SERIES
from tests.promql import (
    KNOWN_LABEL_VALUES,
    PROMETHEUS_SERIES,
    label_values,
    metric_names,
    promtool,
)

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = sorted((REPO / "deploy" / "prometheus" / "tests").glob("*.yml"))
OPERATIONS = REPO / "docs" / "operations.md"


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def test_promtool_accepts_the_rules() -> None:
    checked = promtool("check", "rules", RULES)

    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("unit_tests", RULE_TESTS, ids=lambda path: path.name)
def test_the_rules_pass_their_promtool_unit_tests(unit_tests: Path) -> None:
    ran = promtool("test", "rules", unit_tests)

    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_alert_has_a_unit_test() -> None:
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }

    assert {alert["alert"] for alert in alerts()} <= tested


def test_every_metric_the_rules_read_is_exported_or_recorded() -> None:
    read = {name for rule in rules() for name in metric_names(rule["expr"])}

    assert read - EXPORTED_SERIES - recorded() - PROMETHEUS_SERIES == set()


def test_every_outcome_kind_and_code_the_rules_match_is_one_the_service_uses() -> None:
    for label, known in KNOWN_LABEL_VALUES.items():
        matched = {value for rule in rules() for value in label_values(rule["expr"], label)}

        assert matched <= known, label


def test_every_alert_waits_has_a_severity_and_says_what_and_where_to_look() -> None:
    for alert in alerts():
        assert re.fullmatch(r"\d+[smh]", alert.get("for", "")), alert["alert"]
        assert alert["labels"]["severity"] in {"warning", "critical"}, alert["alert"]
        annotations = alert["annotations"]
        assert annotations.keys() >= {"summary", "description", "runbook_url"}, alert["alert"]
        assert "$value" in annotations["description"], alert["alert"]


def github_anchors(markdown: str) -> set[str]:
    """The anchors a heading gets on GitHub: lower case, punctuation dropped, spaces to -."""
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)
    headings = re.findall(r"^#+ (.+)$", prose, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_runbook_url_is_a_section_of_operations_md() -> None:
    anchors = github_anchors(OPERATIONS.read_text())

    for alert in alerts():
        page, _, anchor = alert["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor in anchors, alert["alert"]

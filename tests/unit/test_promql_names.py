"""tests/promql.py finds the metric names of an expression, and only those."""

from __future__ import annotations

import pytest

from tests.promql import label_values, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (job, outcome) (rate(authsvc_refreshes_total{outcome!~"ok|x"}[5m]))',
            {"authsvc_refreshes_total"},
        ),
        ("sum(rate(a_total[5m])) without (pid, instance)", {"a_total"}),
        ("a > on (job) group_left (instance) b offset 1h", {"a", "b"}),
        ("a * on (job) group_right c", {"a", "c"}),
        ("job:foo:rate5m > 4 * job:foo:rate1h", {"job:foo:rate5m", "job:foo:rate1h"}),
        ('absent(up{job="authsvc"} == 1)', {"up"}),
        ("a > bool 0.5e3 and b unless c or d", {"a", "b", "c", "d"}),
        ("SUM BY (le) (x)", {"x"}),
        ("max_over_time(rate(x_total[5m])[1h:5m])", {"x_total"}),
        (
            'histogram_quantile(0.99, sum by (method, le) (rate(x_bucket{job=~"$job"}'
            "[$__rate_interval])))",
            {"x_bucket"},
        ),
        ('count(x{label="a } b [5m] (c"})', {"x"}),
        ("y @ start()", {"y"}),
        ("$metric + 1", set()),
    ],
)
def test_metric_names_are_the_selected_series(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_a_selector_by_name_is_refused_not_missed() -> None:
    with pytest.raises(ValueError, match="__name__"):
        metric_names('{__name__="authsvc_logins_total"}')


@pytest.mark.parametrize(
    ("expr", "values"),
    [
        ('rate(x{outcome="reused"}[5m])', {"reused"}),
        ('x{job=~"$job", outcome!~"ok|grace_replay"} / y{outcome!="ok"}', {"ok", "grace_replay"}),
        ('x{note="outcome=\\"a\\"", kind="logout"}', set()),
        ("x", set()),
    ],
)
def test_label_values_are_what_the_matchers_compare_with(expr: str, values: set[str]) -> None:
    assert label_values(expr, "outcome") == values


def test_a_label_regex_beyond_alternatives_is_refused() -> None:
    with pytest.raises(ValueError, match="alternatives"):
        label_values('x{outcome=~"re.*"}', "outcome")

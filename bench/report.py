"""Figures from raw runs: medians with min-max, ratios to the bounds, and the
printed tables. Everything here is pure: runs in, numbers and text out."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CPU_TARGETS",
    "PEER_TARGET",
    "TARGETS",
    "Run",
    "cpu_ratios",
    "lineage_costs",
    "peer_ratios",
    "propagation",
    "quantile",
    "ratios",
    "summary",
    "table",
]

Run = dict[str, Any]

# Ratio targets from issue 6: scenario -> (bound, least ratio).
TARGETS = {
    "refresh": ("min(grpc_empty, pg_refresh)", 0.5),
    "validate": ("grpc_empty", 0.6),
    "list_sessions": ("grpc_empty", 0.5),
    "login": ("argon2 all cores", 0.8),
}
# Issue 12: validate and list_sessions at least this many times the peer's calls/s.
PEER_TARGET = 3.0
# Issue 12: server CPU per call at most this many times grpc_empty's, same run.
CPU_TARGETS = {"validate": 2.0, "list_sessions": 3.0, "refresh": 3.5}
_FIGURES = (
    "calls_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "server_cpu_s_per_1k_calls",
    "server_peak_rss_mib",
)


def quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def summary(runs: list[Run]) -> dict[str, Any]:
    """Median, min and max of each numeric figure over the runs; errors summed."""
    out: dict[str, Any] = {}
    for key in _FIGURES:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    errors: dict[str, int] = {}
    for run in runs:
        for code, count in run["errors"].items():
            errors[code] = errors.get(code, 0) + count
    out["errors"] = dict(sorted(errors.items()))
    return out


def _rate(summaries: dict[str, dict[str, Any]], name: str) -> float | None:
    figure = summaries.get(name, {}).get("calls_per_s")
    return None if figure is None else float(figure["median"])


def ratios(summaries: dict[str, dict[str, Any]], crypto_rates: dict[str, Any]) -> dict[str, Any]:
    empty, pg = _rate(summaries, "grpc_empty"), _rate(summaries, "pg_refresh")
    bounds: dict[str, tuple[str, float | None]] = {
        "refresh": (
            "min(grpc_empty, pg_refresh)",
            min(empty, pg) if empty is not None and pg is not None else None,
        ),
        "validate": ("grpc_empty", empty),
        "list_sessions": ("grpc_empty", empty),
        "get_jwks": ("grpc_empty", empty),
        "revoke_session": ("grpc_empty", empty),
        "mixed": ("grpc_empty", empty),
        "login": (
            "argon2 all cores",
            crypto_rates.get("all_cores", {}).get("argon2_hash_per_s", {}).get("median"),
        ),
    }
    out: dict[str, Any] = {}
    for scenario, (bound_name, bound) in bounds.items():
        measured = _rate(summaries, scenario)
        if measured is None or not bound:
            continue
        target = TARGETS.get(scenario, (bound_name, None))[1]
        ratio = measured / bound
        out[scenario] = {
            "bound": bound_name,
            "bound_per_s": bound,
            "calls_per_s": measured,
            "ratio": ratio,
            "target": target,
            "met": None if target is None else ratio >= target,
        }
    return out


def _cpu(summaries: dict[str, dict[str, Any]], name: str) -> float | None:
    figure = summaries.get(name, {}).get("server_cpu_s_per_1k_calls")
    return None if figure is None else float(figure["median"])


def cpu_ratios(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each server scenario's CPU per call (medians) as a multiple of grpc_empty's."""
    empty = _cpu(summaries, "grpc_empty")
    if not empty:
        return {}
    out: dict[str, Any] = {}
    for name in summaries:
        cpu = _cpu(summaries, name)
        if cpu is None or name == "grpc_empty":
            continue
        target = CPU_TARGETS.get(name)
        out[name] = {
            "cpu_ms_per_call": cpu,
            "grpc_empty_cpu_ms_per_call": empty,
            "times": cpu / empty,
            "target": target,
            "met": None if target is None else cpu / empty <= target,
        }
    return out


# The --telemetry variants, as their summaries are suffixed: "validate (metrics)".
METRICS = "metrics"
METRICS_AND_TRACING = "metrics+tracing"
# Tracing with OTEL_TRACES_SAMPLER=parentbased_traceidratio at 0.1: the cost's lever.
METRICS_AND_SAMPLED_TRACING = "metrics+tracing 10%"
TELEMETRY_VARIANTS = (METRICS, METRICS_AND_TRACING, METRICS_AND_SAMPLED_TRACING)
# The --webhooks variants: every Login and Refresh writes an event, for a receiver that
# answers at once, and for one that answers after 5 s.
WEBHOOKS_FAST = "webhooks, instant receiver"
WEBHOOKS_SLOW = "webhooks, 5 s receiver"
WEBHOOK_VARIANTS = (WEBHOOKS_FAST, WEBHOOKS_SLOW)


def webhook_costs(
    summaries: dict[str, dict[str, Any]], received: dict[str, int | None] | None
) -> dict[str, Any]:
    """Each scenario run with --webhooks: latency (p50, p99) and calls/s without webhooks,
    with them to a receiver that answers at once and to one that answers after 5 s
    (medians of the same run). `received`: requests each receiver got."""
    out: dict[str, Any] = {}
    for name in summaries:
        variants = {"off": summaries[name]} | {
            variant: summaries[f"{name} ({variant})"]
            for variant in WEBHOOK_VARIANTS
            if f"{name} ({variant})" in summaries
        }
        if len(variants) == 1:
            continue
        out[name] = {
            variant: {
                key: figures[key]["median"]
                for key in ("p50_ms", "p99_ms", "calls_per_s")
                if key in figures
            }
            for variant, figures in variants.items()
        }
    if out:
        out["receiver_requests"] = received
    return out


def _webhook_lines(costs: dict[str, Any]) -> list[str]:
    lines = ["\nwebhooks: off, and on to receivers answering at once and after 5 s (medians)"]
    for name, variants in costs.items():
        if name == "receiver_requests":
            continue
        parts = [
            f"{variant}: p50 {v.get('p50_ms', float('nan')):.2f} ms, "
            f"p99 {v.get('p99_ms', float('nan')):.2f} ms, {v.get('calls_per_s', 0):.0f}/s"
            for variant, v in variants.items()
        ]
        lines.append(f"  {name}: " + "; ".join(parts))
    for variant, count in (costs.get("receiver_requests") or {}).items():
        lines.append(f"  the receiver of '{variant}' got {count} requests")
    return lines


def telemetry_costs(
    summaries: dict[str, dict[str, Any]], exported_spans: int | None
) -> dict[str, Any]:
    """Each scenario run with --telemetry: CPU per call and calls/s with telemetry off, then
    each variant's as a multiple of those (medians of the same run)."""
    out: dict[str, Any] = {}
    for name in summaries:
        off_cpu, off_rate = _cpu(summaries, name), _rate(summaries, name)
        variants = {}
        for variant in TELEMETRY_VARIANTS:
            cpu, rate = (
                _cpu(summaries, f"{name} ({variant})"),
                _rate(summaries, f"{name} ({variant})"),
            )
            if cpu is None or rate is None or not off_cpu or not off_rate:
                continue
            variants[variant] = {
                "cpu_ms_per_call": cpu,
                "cpu_times_off": cpu / off_cpu,
                "calls_per_s": rate,
                "calls_times_off": rate / off_rate,
            }
        if variants:
            out[name] = {"cpu_ms_per_call": off_cpu, "calls_per_s": off_rate, **variants}
    if out:
        out["exported_spans"] = exported_spans
    return out


def _telemetry_lines(costs: dict[str, Any]) -> list[str]:
    lines = ["\ntelemetry cost: CPU per call and calls/s vs telemetry off (medians, same run)"]
    for name, figures in costs.items():
        if name == "exported_spans":
            continue
        parts = [f"off {figures['cpu_ms_per_call']:.3f} ms, {figures['calls_per_s']:.0f}/s"]
        for variant in TELEMETRY_VARIANTS:
            if variant in figures:
                v = figures[variant]
                parts.append(
                    f"{variant} {v['cpu_ms_per_call']:.3f} ms ({v['cpu_times_off']:.2f}x), "
                    f"{v['calls_per_s']:.0f}/s ({v['calls_times_off']:.2f}x)"
                )
        lines.append(f"  {name:<10} " + "; ".join(parts))
    lines.append(f"  spans the OTLP sink received: {costs['exported_spans']}")
    return lines


# Issue 14: refresh lineage may cost refresh at most this share of its calls/s.
LINEAGE_TARGET = 0.10


def lineage_costs(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each scenario run with --lineage: calls/s and CPU per call with refresh lineage on
    (the default) against off, medians of the same run; `cost` is the calls/s lost."""
    out: dict[str, Any] = {}
    for name in summaries:
        off = f"{name} (lineage off)"
        on_rate, off_rate = _rate(summaries, name), _rate(summaries, off)
        on_cpu, off_cpu = _cpu(summaries, name), _cpu(summaries, off)
        if on_rate is None or not off_rate:
            continue
        cost = 1 - on_rate / off_rate
        # CPU: None for pg_refresh, which runs without the server.
        out[name] = {
            "calls_per_s": on_rate,
            "off_calls_per_s": off_rate,
            "calls_times_off": on_rate / off_rate,
            "cpu_ms_per_call": on_cpu,
            "off_cpu_ms_per_call": off_cpu,
            "cpu_times_off": on_cpu / off_cpu if on_cpu is not None and off_cpu else None,
            "cost": cost,
            "target": LINEAGE_TARGET,
            "met": cost <= LINEAGE_TARGET,
        }
    return out


def _lineage_lines(costs: dict[str, Any]) -> list[str]:
    lines = ["\nrefresh lineage cost: on vs off (medians, same run, runs in turns)"]
    for name, f in costs.items():
        met = "met" if f["met"] else "NOT met"
        cpu = (
            ""
            if f["cpu_times_off"] is None
            else f"; CPU {f['cpu_ms_per_call']:.3f} vs {f['off_cpu_ms_per_call']:.3f} ms/call "
            f"({f['cpu_times_off']:.3f}x)"
        )
        lines.append(
            f"  {name:<18} {f['calls_per_s']:.0f}/s vs {f['off_calls_per_s']:.0f}/s "
            f"({f['calls_times_off']:.3f}x, cost {f['cost']:.1%}, target <= "
            f"{f['target']:.0%} {met}){cpu}"
        )
    return lines


def pooler_costs(
    summaries: dict[str, dict[str, Any]], variants: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Each scenario run with --pgbouncer: calls/s, p50 latency and server CPU per call of
    each variant (through PgBouncer; direct without the statement cache) against direct,
    medians of the same run, runs in turns. Keyed by variant, then scenario."""
    out: dict[str, dict[str, Any]] = {}
    for variant in variants:
        for name in summaries:
            other = f"{name} ({variant})"
            direct_rate, other_rate = _rate(summaries, name), _rate(summaries, other)
            if not direct_rate or other_rate is None:
                continue
            direct_p50 = float(summaries[name]["p50_ms"]["median"])
            other_p50 = float(summaries[other]["p50_ms"]["median"])
            direct_cpu, other_cpu = _cpu(summaries, name), _cpu(summaries, other)
            out.setdefault(variant, {})[name] = {
                "calls_per_s": other_rate,
                "direct_calls_per_s": direct_rate,
                "calls_times_direct": other_rate / direct_rate,
                "p50_ms": other_p50,
                "direct_p50_ms": direct_p50,
                "p50_times_direct": other_p50 / direct_p50 if direct_p50 else None,
                "cpu_ms_per_call": other_cpu,
                "direct_cpu_ms_per_call": direct_cpu,
                "cpu_times_direct": (
                    other_cpu / direct_cpu if other_cpu is not None and direct_cpu else None
                ),
            }
    return out


def _pooler_lines(costs: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for variant, by_scenario in costs.items():
        lines.append(f"\n{variant} vs direct (medians, same run, runs in turns)")
        for name, f in by_scenario.items():
            p50 = "" if f["p50_times_direct"] is None else f" ({f['p50_times_direct']:.2f}x)"
            cpu = (
                ""
                if f["cpu_times_direct"] is None
                else f"; server CPU {f['cpu_ms_per_call']:.3f} vs "
                f"{f['direct_cpu_ms_per_call']:.3f} ms/call ({f['cpu_times_direct']:.2f}x)"
            )
            lines.append(
                f"  {name:<18} {f['calls_per_s']:.0f}/s vs {f['direct_calls_per_s']:.0f}/s "
                f"({f['calls_times_direct']:.2f}x); p50 {f['p50_ms']:.2f} vs "
                f"{f['direct_p50_ms']:.2f} ms{p50}{cpu}"
            )
    return lines


def peer_ratios(summaries: dict[str, dict[str, Any]], pairs: dict[str, str]) -> dict[str, Any]:
    """authsvc's calls/s and CPU per call against the peer scenario set beside each."""
    out: dict[str, Any] = {}
    for peer_name, ours in pairs.items():
        ours_rate, peer_rate = _rate(summaries, ours), _rate(summaries, peer_name)
        if ours_rate is None or not peer_rate:
            continue
        ours_cpu, peer_cpu = _cpu(summaries, ours), _cpu(summaries, peer_name)
        out[ours] = {
            "peer": peer_name,
            "calls_per_s": ours_rate,
            "peer_calls_per_s": peer_rate,
            "times": ours_rate / peer_rate,
            "cpu_times": None if not ours_cpu or peer_cpu is None else peer_cpu / ours_cpu,
            "target": PEER_TARGET,
            "met": ours_rate / peer_rate >= PEER_TARGET,
        }
    return out


def _fmt(figure: dict[str, float] | None, digits: int = 0) -> str:
    if figure is None:
        return "-"
    med, lo, hi = figure["median"], figure["min"], figure["max"]
    if lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def _grid(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _scenario_table(summaries: dict[str, dict[str, Any]]) -> str:
    rows = [
        (
            "scenario", "calls/s", "p50 ms", "p90 ms", "p99 ms", "errors", "CPU s/1k",
            "CPU x empty", "peak RSS MiB",
        )
    ]  # fmt: skip
    empty = _cpu(summaries, "grpc_empty")
    for name, figures in summaries.items():
        cpu = _cpu(summaries, name)
        errors = ", ".join(f"{code} {n}" for code, n in figures["errors"].items()) or "0"
        rows.append(
            (
                name,
                _fmt(figures.get("calls_per_s")),
                _fmt(figures.get("p50_ms"), 1),
                _fmt(figures.get("p90_ms"), 1),
                _fmt(figures.get("p99_ms"), 1),
                errors,
                _fmt(figures.get("server_cpu_s_per_1k_calls"), 2),
                "-" if cpu is None or not empty else f"{cpu / empty:.2f}",
                _fmt(figures.get("server_peak_rss_mib")),
            )
        )
    return _grid(rows)


def table(report: dict[str, Any]) -> str:
    settings = report["settings"]
    out = [
        f"{report['machine']['cpu_model']}, {report['machine']['cpus']} CPUs; authsvc workers "
        f"{settings['workers']}; {settings['concurrency']} calls in flight from "
        f"{settings['processes']} load processes"
        + (
            f"; server on CPUs {settings['server_cpus']}, load on {settings['load_cpus']}"
            if settings["server_cpus"]
            else ""
        ),
        "",
        _scenario_table(report["scenarios"]),
    ]
    if report["crypto"]:
        out.append("\ncrypto bound (in-process, median over runs)")
        for cores, rates in report["crypto"].items():
            parts = ", ".join(f"{name} {_fmt(value)}" for name, value in rates.items())
            out.append(f"  {cores}: {parts}")
    if report.get("verify_offline"):
        out.append(_verify_offline_line(report["verify_offline"], report["crypto"]))
    cpu = cpu_ratios(report["scenarios"])
    if any(figures["target"] is not None for figures in cpu.values()):
        out.append("\nserver CPU per call vs grpc_empty's (medians)")
        for name, figures in cpu.items():
            if figures["target"] is None:
                continue
            met = "met" if figures["met"] else "NOT met"
            out.append(
                f"  {name:<15} {figures['cpu_ms_per_call']:.3f} vs "
                f"{figures['grpc_empty_cpu_ms_per_call']:.3f} ms = {figures['times']:.2f}x  "
                f"target <= {figures['target']:.1f}x  {met}"
            )
    if report.get("telemetry"):
        out.extend(_telemetry_lines(report["telemetry"]))
    if report.get("lineage"):
        out.extend(_lineage_lines(report["lineage"]))
    if report.get("webhooks"):
        out.extend(_webhook_lines(report["webhooks"]))
    if report.get("pgbouncer"):
        out.extend(_pooler_lines(report["pgbouncer"]))
    peer_report = report.get("peer") or {}
    if peer_report.get("unavailable"):
        out.append(f"\npeer {peer_report['name']} could not run: {peer_report['unavailable']}")
    if peer_report.get("ratios"):
        out.append(f"\nagainst the peer {peer_report['name']} (medians, same run)")
        for name, figures in peer_report["ratios"].items():
            cpu_note = (
                ""
                if figures["cpu_times"] is None
                else f"; its CPU per call {figures['cpu_times']:.2f}x ours"
            )
            met = "met" if figures["met"] else "NOT met"
            out.append(
                f"  {name:<15} {figures['calls_per_s']:8.1f}/s vs {figures['peer']} "
                f"{figures['peer_calls_per_s']:8.1f}/s = {figures['times']:.2f}x  "
                f"target >= {figures['target']:.0f}x  {met}{cpu_note}"
            )
    if report["ratios"]:
        out.append("\nratios to bounds (medians)")
        for name, ratio in report["ratios"].items():
            target = "" if ratio["target"] is None else f"  target >= {ratio['target']:.0%}"
            met = "" if ratio["met"] is None else ("  met" if ratio["met"] else "  NOT met")
            out.append(
                f"  {name:<15} {ratio['calls_per_s']:8.1f}/s vs {ratio['bound']} "
                f"{ratio['bound_per_s']:8.1f}/s = {ratio['ratio']:6.1%}{target}{met}"
            )
    if report.get("half_peak"):
        out.append("\nlatency at half of peak throughput (open loop; target p99 <= 10 ms)")
        for name, figures in report["half_peak"].items():
            out.append(
                f"  {name:<15} {figures['rate_per_s']:8.1f} calls/s offered: "
                f"p50 {_fmt(figures['p50_ms'], 1)} ms, p99 {_fmt(figures['p99_ms'], 1)} ms, "
                f"errors {figures['errors'] or 0}"
            )
    if report.get("workers"):
        compared = report["workers"]
        first, second = (str(count) for count in compared["workers"])
        rows: list[tuple[str, ...]] = [
            ("scenario", f"{first} worker(s)", f"{second} workers", f"{second}/{first}")
        ]
        for name, rates in compared["calls_per_s"].items():
            rows.append(
                (
                    name,
                    f"{rates[first]:.0f}",
                    f"{rates[second]:.0f}",
                    f"{rates[second] / rates[first]:.2f}x",
                )
            )
        out.append("\ncalls/s by authsvc workers (medians, same run)")
        out.append(_grid(rows))
        for name, ratio in compared["ratios"].items():
            out.append(f"  {second} workers: {name:<15} {ratio['ratio']:6.1%} of {ratio['bound']}")
    if report.get("scaling"):
        scaling = report["scaling"]
        sizes = [str(size) for size in scaling["sizes"]]
        rows = [("scenario", *[f"{size} sessions" for size in sizes], "largest/smallest")]
        for name, rates in scaling["calls_per_s"].items():
            rows.append(
                (name, *[f"{rates[size]:.0f}" for size in sizes], f"{scaling['ratio'][name]:.1%}")
            )
        out.append("\ncalls/s by store size (medians; target largest >= 80 % of smallest)")
        out.append(_grid(rows))
    if report.get("sweep"):
        sweep = report["sweep"]
        out.append(
            "\nsweeper under refresh load: "
            f"{sweep['rows_swept']} rows in {sweep['seconds']:.1f} s = "
            f"{sweep['rows_per_s']:.0f} rows/s; refresh offered "
            f"{sweep['refresh_rate_offered_per_s']:.0f}/s: p99 {sweep['refresh_p99_ms']:.1f} ms "
            f"during the sweep vs {sweep['baseline_p99_ms']:.1f} ms before "
            f"({sweep['p99_ratio']:.2f}x; target <= 2x), errors {sweep['errors'] or 0}"
        )
    if report.get("revocation_propagation"):
        out.append("\n" + propagation(report["revocation_propagation"]))
    if report.get("memory"):
        memory = report["memory"]
        floors = ", ".join(f"{mib:.0f}" for mib in memory["floor_mib_by_minute"])
        peaks = ", ".join(f"{mib:.0f}" for mib in memory["peak_mib_by_minute"])
        out.append(
            f"\nmemory over {memory['seconds']:.0f} s of mixed (after {memory['warmup_s']:.0f} s "
            f"warm-up), RSS MiB by minute: least {floors} ({memory['floor_change']:+.1%}); "
            f"most {peaks} ({memory['peak_change']:+.1%}); target within 10 %"
        )
    return "\n".join(out)


def _verify_offline_line(figures: dict[str, Any], crypto_rates: dict[str, Any]) -> str:
    """The subscribed offline verifier, and what share of bare PyJWT verification it keeps."""
    rate = figures["verifies_per_s"]
    line = (
        f"\nverify_offline (TokenVerifier subscribed to the feed, "
        f"{figures['revocations_offered_per_s']:g} revocations/s on it; one process): "
        f"{_fmt(rate)} verifies/s, {_fmt(figures.get('verifies_per_cpu_s'))} per CPU-second, "
        f"p50 {_fmt(figures['p50_us'])} us, p99 {_fmt(figures['p99_us'])} us, "
        f"errors {figures['errors'] or 0}"
    )
    if figures.get("unsubscribed_verifies_per_cpu_s"):
        line += (
            f"\n  the same verifier unsubscribed, same process right after: "
            f"{_fmt(figures['unsubscribed_verifies_per_cpu_s'])} per CPU-second, p50 "
            f"{_fmt(figures['unsubscribed_p50_us'])} us; subscribing costs "
            f"{_fmt(figures.get('subscription_cpu_us_per_verify'), 1)} us of CPU per verify"
        )
    bare = crypto_rates.get("one_core", {}).get("jwt_verify_per_s", {}).get("median")
    if bare:
        line += f"\n  = {rate['median'] / bare:.1%} of crypto's jwt_verify_per_s on one core"
    return line


def propagation(figures: dict[str, Any]) -> str:
    """The printed lines of revocation_propagation.measure()."""
    every = figures["every_replica"]
    met = "met" if every["p99_ms"] <= figures["target_p99_ms"] else "NOT met"
    lines = [
        f"revocation propagation: {figures['revocations']} revocations on one of "
        f"{figures['replicas']} replicas, {figures['lanes']} at a time, in "
        f"{figures['seconds']:.1f} s; OK to inactive on every other replica: "
        f"p50 {every['p50_ms']:.1f} ms, p99 {every['p99_ms']:.1f} ms, max {every['max_ms']:.1f} ms"
        f" (target p99 <= {figures['target_p99_ms']:.0f} ms: {met})"
    ]
    verifier = figures.get("verifier")
    if verifier:
        met = (
            "met"
            if verifier["p99_ms"] <= verifier["target_p99_ms"]
            and verifier["max_ms"] <= verifier["target_max_ms"]
            else "NOT met"
        )
        lines.append(
            f"OK to refused by a subscribed offline TokenVerifier: p50 {verifier['p50_ms']:.1f} ms,"
            f" p99 {verifier['p99_ms']:.1f} ms, max {verifier['max_ms']:.1f} ms (target p99 <= "
            f"{verifier['target_p99_ms']:.0f} ms, max <= {verifier['target_max_ms']:.0f} ms: {met})"
        )
    for name, each in figures["by_prober"].items():
        lines.append(
            f"  {name}: p50 {each['p50_ms']:.1f} ms, p99 {each['p99_ms']:.1f} ms, "
            f"max {each['max_ms']:.1f} ms"
        )
    return "\n".join(lines)

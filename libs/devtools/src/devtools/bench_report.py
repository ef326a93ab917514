"""The bench report's summary: issue 19's targets, issue 29's REST write ratios, issue 30's token rows, issue 31's
webhook rows and issue 34's cost rows with this run's values (each with whether it met its target), and the table
`make bench` prints."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from devtools.bench_accounting import LOAD_GENERATOR
from devtools.bench_backtest import backtest_rows


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def _latency_at(rows: list[dict[str, Any]], rate: int, percentile: str) -> float | None:
    row = next((r for r in rows if r["target_events_per_second"] == rate), None)
    return row["publish_to_dispatched_ms"][percentile] if row else None


TARGET = re.compile(r"^(<=|>=|<|>|=)\s*(-?\d+(?:\.\d+)?)$")
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "=": operator.eq
}  # fmt: skip


def met(value: float | None, target: str) -> bool | None:
    """Whether `value` meets a target written as "<= 2", "< 1", ">= 0.5" or "= 0"; None when there is no value or
    the target is not a bound ("reported")."""
    bound = TARGET.match(target.strip())
    if value is None or bound is None:
        return None
    return COMPARE[bound[1]](value, float(bound[2]))


def target_rows(rows: list[tuple[str, float | None, str]]) -> list[dict[str, Any]]:
    return [{"measure": m, "value": v, "target": t, "met": met(v, t)} for m, v, t in rows]


def target_line(row: dict[str, Any]) -> str:
    verdict = {True: ", met", False: ", MISSED"}.get(row.get("met"), "")  # type: ignore[arg-type]
    return f"  {row['measure']}: {row['value']} (target {row['target']}{verdict})"


def _rounds(phase: dict[str, Any]) -> str:
    rates = phase.get("rounds_status_changes_per_second", [])
    return f"; the median of {len(rates)} rounds: {', '.join(map(str, rates))}" if len(rates) > 1 else ""


def targets(report: dict[str, Any], preload_campaigns: int, preload_orders: int) -> list[dict[str, Any]]:
    """Issue 19's table: each measure of this run, with its target (the preloaded sizes name two of them)."""
    full = report["full_speed"]["status_changes_per_second"]
    floor = report["floor"]
    rows = [
        ("full-speed status changes/s, platform / floor",
         _ratio(full, floor["full_speed"]["status_changes_per_second"]), ">= 0.6"),
        # The relay forwards records one for one; the platform turns 4 events into 6 changes and 2 SMS, so its
        # upstream events/s (to the last SMS) is what compares with the relay's records/s.
        ("full speed, platform upstream events/s / raw relay records/s", report["platform_vs_raw_relay"], ">= 0.25"),
        ("p50 publish -> SmsDispatched at 100 ev/s, platform / floor",
         _ratio(_latency_at(report["latency"], 100, "p50"), _latency_at(floor["latency"], 100, "p50")), "<= 1.5"),
        ("p99 at 500 ev/s, platform / floor",
         _ratio(_latency_at(report["latency"], 500, "p99"), _latency_at(floor["latency"], 500, "p99")), "<= 2"),
        ("p50 at 100 ev/s, absolute ms (context)", _latency_at(report["latency"], 100, "p50"), "<= 100"),
        (f"throughput with {preload_campaigns} more active campaigns per partner / with the bench's 2",
         _ratio(report["with_campaigns"]["full_speed"]["status_changes_per_second"], full), ">= 0.8"),
        (f"throughput with {preload_orders} orders and their history preloaded / without (campaigns preloaded in both)",
         _ratio(report["with_orders"]["full_speed"]["status_changes_per_second"],
                report["with_campaigns"]["full_speed"]["status_changes_per_second"]), ">= 0.8"),
        ("peak RSS per service, MB (largest)", max(p["peak_rss_mb"] for p in report["processes"].values()), "<= 150"),
        (f"SMS handed over twice or never, {report['instances']} instance(s) of each consumer",
         report["exactly_once"]["duplicates"] + report["exactly_once"]["missing"], "= 0"),
    ]  # fmt: skip
    rows += rest_write_rows(report) + token_rows(report) + backtest_rows(report) + webhook_rows(report)
    rows += cost_rows(report)
    return target_rows(rows)


def token_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 30's: the registry's lookups with an identity token against bare FastAPI, the token endpoint's
    requests/s (reported, no target) and identity's peak RSS."""
    lookups, tokens = report["registry_lookups"], report["token_endpoint"]
    identity_rss = [usage["peak_rss_mb"] for name, usage in report["processes"].items() if name.startswith("identity")]
    return [
        ("registry GET /v1/statuses/{code} with an identity token (Ed25519, JWKS) / bare FastAPI",
         lookups["ratio"], ">= 0.75"),
        (f"token endpoint requests/s (client_secret_basic, {tokens['workers']} clients at once)",
         tokens["requests_per_second"], "reported"),
        ("identity peak RSS, MB", max(identity_rss, default=None), "<= 150"),
    ]  # fmt: skip


def webhook_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 31's: webhook deliveries/s, their p50 from the status change on Kafka beside the SMS path's in the same
    run (reported), the p50 with a dead endpoint's backlog against without (<= 1.2) and the service's peak RSS."""
    phase = report["webhooks"]
    latency, dead = phase["latency"], phase["with_dead_endpoint"]
    rate = latency["target_events_per_second"]
    return [
        (f"webhook deliveries/s, the webhooks service working off a backlog ({phase['endpoints']} endpoints)",
         phase["backlog"]["deliveries_per_second"], "reported"),
        (f"p50 status change on Kafka -> webhook received, {rate} ev/s, ms",
         latency["change_to_webhook_ms"]["p50"], "reported"),
        ("p50 status change on Kafka -> SmsDispatched, the same traffic, ms",
         latency["sms_change_to_dispatched_ms"]["p50"], "reported"),
        (f"webhook p50 with {dead['dead_deliveries']} deliveries waiting on a dead endpoint / without",
         phase["p50_ratio_with_dead_endpoint"], "<= 1.2"),
        ("webhooks peak RSS, MB", phase["peak_rss_mb"], "<= 150"),
    ]  # fmt: skip


def webhooks_lines(report: dict[str, Any]) -> list[str]:
    phase = report["webhooks"]
    backlog, lines = phase["backlog"], []
    lines.append(
        f"webhooks: {backlog['deliveries_per_second']} deliveries/s working off {backlog['deliveries']} status changes "
        f"({phase['endpoints']} endpoints; {phase['signatures_verified']} signatures verified with standardwebhooks)"
    )
    for name, row in (("alone", phase["latency"]), ("beside a dead endpoint's backlog", phase["with_dead_endpoint"])):
        hook, sms = row["change_to_webhook_ms"], row["sms_change_to_dispatched_ms"]
        missing = (
            f", {row['webhooks_missing_after_300_s']} missing after 300 s"
            if row["webhooks_missing_after_300_s"]
            else ""
        )
        lines.append(
            f"  {row['target_events_per_second']} ev/s, {name}: status change -> webhook p50 {hook['p50']} / p95 "
            f"{hook['p95']} / p99 {hook['p99']} ms ({row['webhooks']} webhooks{missing}; the 'shipped' changes alone "
            f"p50 {row['shipped_change_to_webhook_ms']['p50']} ms); -> SmsDispatched p50 {sms['p50']} / p95 "
            f"{sms['p95']} ms"
        )
    dead = phase["with_dead_endpoint"]
    lines.append(
        f"  dead endpoint: {dead['dead_deliveries']} deliveries preloaded in {dead['preload_seconds']} s, "
        f"{dead['dead_endpoint_attempts_during']} attempts at it meanwhile; webhooks peak RSS {phase['peak_rss_mb']} MB"
    )
    return lines


def webhooks_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=webhooks`: the phase and its targets."""
    rows = [target_line(row) for row in report["targets"]]
    return "\n".join([*webhooks_lines(report), "issue 31's targets:", *rows])


def rest_write_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 29's: the p50 of each REST write of orders and of the campaign preview, at each load, as a ratio to the
    registry's status POST at the same load."""
    phase = report["rest_writes"]
    return [
        (f"p50 {kind}, {load['load']}, / {phase['baseline']}", values["ratio_p50"], "<= 3")
        for load in phase["loads"]
        for kind, values in load["kinds"].items()
        if kind != phase["baseline"]
    ]


def rest_writes_lines(report: dict[str, Any]) -> list[str]:
    """Each REST write's p50 / p95 in ms at each load, with its p50 and p95 as ratios to the baseline's."""
    phase = report["rest_writes"]
    loads = phase["loads"]
    lines = [f"REST writes, ms p50 / p95 (x {phase['baseline']} at the same load):"]
    lines.append((f"  {'':<38}" + "".join(f"{load['load']:<36}" for load in loads)).rstrip())
    for kind in loads[0]["kinds"]:
        cells = []
        for load in loads:
            v = load["kinds"][kind]
            ratios = "" if kind == phase["baseline"] else f" ({v['ratio_p50']}x / {v['ratio_p95']}x)"
            errors = f" {v['errors']} errors" if v["errors"] else ""
            cells.append(f"{v['p50']!s} / {v['p95']!s}{ratios}{errors}".ljust(35) + " ")
        lines.append((f"  {kind:<38}" + "".join(cells)).rstrip())
    return lines


def tokens_lines(report: dict[str, Any]) -> list[str]:
    lookups, tokens = report["registry_lookups"], report["token_endpoint"]
    errors = f", {tokens['errors']} errors (first: {tokens['first_error']})" if tokens["errors"] else ""
    return [
        f"registry GET /v1/statuses/{{code}} ({lookups.get('token', 'HS256 token')}): {lookups['registry_rps']} req/s "
        f"vs bare FastAPI {lookups['bare_fastapi_rps']} req/s: {lookups['ratio']:.1%}",
        f"token endpoint POST /oauth/token (client_secret_basic): {tokens['requests_per_second']} tokens/s, "
        f"{tokens['workers']} clients at once for {tokens['seconds']} s{errors}",
    ]


def tokens_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=tokens`: those two figures, every service's peak RSS, and the targets."""
    usage = [f"  {name:<16} {u['peak_rss_mb']:>7} MB peak RSS" for name, u in report["processes"].items()]
    rows = [target_line(row) for row in report["targets"]]
    return "\n".join([*tokens_lines(report), *usage, "issue 30's targets:", *rows])


def rest_writes_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=rest_writes`: that phase and its targets."""
    rows = [target_line(row) for row in report["targets"]]
    return "\n".join([*rest_writes_lines(report), "issue 29's targets (ratios within this run):", *rows])


def table(report: dict[str, Any]) -> str:
    full, raw = report["full_speed"], report["raw_relay"]
    lines = [
        f"end to end at full speed: {full['status_changes_per_second']} status changes/s, "
        f"{full['sms_per_second']} SMS/s",
        f"  ({full['orders']} orders, {full['status_changes']} changes, {full['sms']} SMS{_rounds(full)})",
        f"raw aiokafka relay, same four topics: {raw['records_per_second']} records/s "
        f"(median of {', '.join(str(r) for r in raw['rounds_records_per_second'])}); "
        f"platform events/s over raw relay: {report['platform_vs_raw_relay']:.1%}",
        *_latency_lines("latency upstream publish -> SmsDispatched (ms)", report["latency"]),
    ]
    alone = report["stages_alone"]
    lines.append(
        f"each stage alone: orders {alone['orders_alone']['status_changes_per_second']} status changes/s "
        "(campaigns and notifier paused); campaigns + notifier "
        f"{alone['campaigns_and_notifier_alone']['sms_per_second']} SMS/s (orders idle)"
    )
    lines.append(_floor_full_speed_line(report["floor"]["full_speed"]))
    phases = [("full speed", full["cpu"])]
    phases += [
        ("orders alone", alone["orders_alone"]["cpu"]),
        ("campaigns + notifier alone", alone["campaigns_and_notifier_alone"]["cpu"]),
    ]
    phases += [(f"{row['target_events_per_second']} ev/s", row["cpu"]) for row in report["latency"]]
    lines += _cpu_lines(phases)
    batches = [("full speed", full["batches"])]
    batches += [(f"{row['target_events_per_second']} ev/s", row["batches"]) for row in report["latency"]]
    lines += _batch_lines(batches)
    costs = report["machine_costs"]
    lines.append(
        f"machine costs (idle, 100 a second): {costs['wakeup_us']} us CPU per asyncio wake-up; broker CPU "
        f"{costs['broker_ms_per_produce']} ms per one-record produce, {costs['broker_ms_per_commit']} ms per "
        "offset commit"
    )
    lines += tokens_lines(report)
    lines += webhooks_lines(report)
    for service, usage in report["processes"].items():
        lines.append(f"  {service:<16} {usage['cpu_seconds']:>7} CPU s  {usage['peak_rss_mb']:>7} MB peak RSS")
    once = report["exactly_once"]
    lines.append(
        f"exactly once, {report['instances']} instance(s) of orders, campaigns and notifier: {once['sms_expected']} "
        f"SMS expected, {once['distinct']} handed over, {once['duplicates']} twice, {once['missing']} missing"
    )
    lines += rest_writes_lines(report)
    lines += cost_lines(report)
    lines.append("issue 19's, 29's, 30's, 31's and 34's targets (ratios within this run):")
    lines += [target_line(row) for row in report["targets"]]
    scans = [name for name, plan in report["hot_query_plans"].items() if any("Seq Scan" in line for line in plan)]
    lines.append(f"hot query plans at the preloaded size: sequential scans in {', '.join(scans) or 'none'}")
    return "\n".join(lines)


def _floor_full_speed_line(floor: dict[str, Any]) -> str:
    return (
        f"floor pipeline at full speed: {floor['status_changes_per_second']} status changes/s{_rounds(floor)}; "
        + ", ".join(f"{name} {seconds}" for name, seconds in floor.get("cpu_seconds", {}).items())
        + (" CPU s over its rounds" if floor.get("cpu_seconds") else "")
    )


def _cpu_lines(phases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["CPU seconds per phase (the machine has 2 cores: 2 CPU seconds per wall second)"]
    for phase, cpu in phases:
        busy = sum(cpu["cpu_seconds"].values()) / (2 * cpu["wall_seconds"])
        machine = cpu["machine"]
        lines.append(
            f"  {phase} ({cpu['wall_seconds']} s wall, {busy:.0%} of the machine): "
            + ", ".join(f"{name} {seconds}" for name, seconds in cpu["cpu_seconds"].items())
            + f"; both cores {machine['user_share']:.0%} user, {machine['system_share']:.0%} kernel, "
            f"{machine['idle_share']:.0%} idle; {machine['context_switches_per_second']} context switches/s"
        )
    return lines


def _latency_lines(title: str, rows: list[dict[str, Any]]) -> list[str]:
    lines = [f"{title}:   p50     p95     p99   | orders p99  campaigns p99  notifier p99"]
    for row in rows:
        total, hops = row["publish_to_dispatched_ms"], row["per_hop_ms"]
        lines.append(
            f"  {row['target_events_per_second']:>5} ev/s (achieved {row['achieved_events_per_second']:>7}): "
            f"{total['p50']!s:>7} {total['p95']!s:>7} {total['p99']!s:>7} | {hops['orders']['p99']!s:>10} "
            f"{hops['campaigns']['p99']!s:>13} {hops['notifier']['p99']!s:>13}"
        )
    return lines


def _batch_lines(phases: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["batches (consumers and outbox relays): records per batch / ms per batch"]
    for phase, batches in phases:
        cells = [f"{name} {b.get('mean_records', '-')}/{b.get('mean_ms', '-')}" for name, b in sorted(batches.items())]
        lines.append(f"  {phase}: " + ", ".join(cells))
    return lines


def full_speed_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 34's full-speed row (item 5), platform against the floor, with the CPU each spent as context."""
    full, floor = report["full_speed"], report["floor"]["full_speed"]
    return [
        ("issue 34: full-speed status changes/s, platform / floor",
         _ratio(full["status_changes_per_second"], floor["status_changes_per_second"]), ">= 0.5"),
        ("issue 34: CPU s of the full-speed rounds, platform without the load generator (context)",
         round(sum(s for name, s in full["cpu"]["cpu_seconds"].items() if name != LOAD_GENERATOR), 2), "reported"),
        ("issue 34: CPU s of the full-speed rounds, floor (context)",
         round(sum(floor.get("cpu_seconds", {}).values()), 2), "reported"),
    ]  # fmt: skip


def full_speed_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=full_speed`: both pipelines' full-speed rounds, what they cost, the targets."""
    full, once = report["full_speed"], report["exactly_once"]
    return "\n".join([
        f"end to end at full speed: {full['status_changes_per_second']} status changes/s, "
        f"{full['sms_per_second']} SMS/s ({full['orders']} orders{_rounds(full)})",
        _floor_full_speed_line(report["floor"]["full_speed"]),
        *_cpu_lines([("full speed", full["cpu"])]),
        *_batch_lines([("full speed", full["batches"])]),
        "  where the platform's PostgreSQL work at full speed comes from",
        *_where_from("platform", full["cost"]),
        f"exactly once: {once['sms_expected']} SMS expected, {once['duplicates']} twice, {once['missing']} missing",
        "issue 34's full-speed target (a ratio within this run):",
        *(target_line(row) for row in report["targets"]),
    ])  # fmt: skip


def _cost_at(rows: list[dict[str, Any]], rate: int) -> dict[str, Any] | None:
    row = next((r for r in rows if r["target_events_per_second"] == rate), None)
    return row.get("cost") if row else None


def _whole_ms(cost: dict[str, Any] | None) -> float | None:
    return cost["cpu_ms_per_event"]["whole"] if cost else None


def net_of_idle(cost: dict[str, Any], broker_alone_percent: float, rest: dict[str, Any]) -> dict[str, float]:
    """A fixed-rate phase's figures without what no traffic would have cost: the broker's CPU above the broker alone
    (the tests of other sessions are its clients too, as much during the phase as before it), and without the
    transactions of the seconds after the phase in which PostgreSQL's counters were awaited, at the pipeline's rest
    rate. Per upstream event."""
    events = cost["events"] or 1
    kafka = max(0.0, cost["cpu_seconds"]["kafka"] - broker_alone_percent / 100 * cost["wall_seconds"])
    ms = cost["cpu_ms_per_event"]
    idle_rate = sum(rest["transactions"].values()) / rest["wall_seconds"]
    transactions = sum(cost["transactions"].values()) - idle_rate * cost.get("pg_counters_read_after_s", 0.0)
    return {
        "kafka_ms": round(1000 * kafka / events, 3),
        "whole_ms": round((ms["services"] or 0.0) + (ms["postgresql"] or 0.0) + 1000 * kafka / events, 3),
        "transactions": round(max(0.0, transactions) / events, 3),
    }


def _net_whole_ms(report: dict[str, Any], pipeline: dict[str, Any]) -> float | None:
    cost = _cost_at(pipeline["latency"], 100)
    if cost is None:
        return None
    return net_of_idle(cost, report["broker_alone"]["kafka_core_percent"], pipeline["rest"])["whole_ms"]


def cost_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 34's targets (items 2-5): CPU per event and latency at 100 ev/s, the rest phase, p99 at 1000 ev/s and
    the full-speed ratios (those two only when the whole bench ran), with the absolute figures as context."""
    floor, rest = report["floor"], report["rest"]
    platform_100, floor_100 = _cost_at(report["latency"], 100), _cost_at(floor["latency"], 100)
    wakeups = [w for w in rest["wakeups_per_second"].values() if w is not None]
    rows = [
        ("issue 34: whole CPU per upstream event at 100 ev/s (services + PostgreSQL + Kafka above the broker "
         "alone), platform / floor", _ratio(_net_whole_ms(report, report), _net_whole_ms(report, floor)), "<= 2"),
        ("issue 34: the same, platform ms (context)", _net_whole_ms(report, report), "reported"),
        ("issue 34: the same, floor ms (context)", _net_whole_ms(report, floor), "reported"),
        ("issue 34: the same with all of the broker's CPU, platform / floor (context)",
         _ratio(_whole_ms(platform_100), _whole_ms(floor_100)), "reported"),
        ("issue 34: p50 publish -> SmsDispatched at 100 ev/s, platform / floor",
         _ratio(_latency_at(report["latency"], 100, "p50"), _latency_at(floor["latency"], 100, "p50")), "<= 2.5"),
        ("issue 34: at rest, the services and PostgreSQL together, % of one core",
         rest["core_percent"]["services and postgresql"], "< 1"),
        ("issue 34: at rest, Kafka CPU / the same broker with none of the bench's clients",
         _ratio(rest["core_percent"]["kafka"], report["broker_alone"]["kafka_core_percent"]), "<= 1.5"),
        ("issue 34: at rest, the most wake-ups per second of one service process", max(wakeups, default=None), "<= 10"),
        ("issue 34: p99 at 1000 ev/s, platform / floor",
         _ratio(_latency_at(report["latency"], 1000, "p99"), _latency_at(floor["latency"], 1000, "p99")), "<= 3"),
    ]  # fmt: skip
    if "full_speed" in report and "full_speed" in floor:
        rows.append(("issue 34: full-speed status changes/s, platform / floor",
                     _ratio(report["full_speed"]["status_changes_per_second"],
                            floor["full_speed"]["status_changes_per_second"]), ">= 0.5"))  # fmt: skip
    if "with_orders" in report:
        with_orders, without = report["with_orders"]["full_speed"], report["with_campaigns"]["full_speed"]
        ratio = _ratio(with_orders["status_changes_per_second"], without["status_changes_per_second"])
        rows.append(("issue 34: throughput with the preloaded orders and their history / without", ratio, ">= 0.8"))
    return rows


def _cells(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


def _phase_line(name: str, cost: dict[str, Any], net: dict[str, float]) -> list[str]:
    """One pipeline's cost in one fixed-rate phase: per upstream event, then each process's CPU seconds."""
    ms = cost["cpu_ms_per_event"]
    statements = (
        f"{cost['statements_per_event']} statements, {cost['statement_wal_bytes_per_event']} WAL bytes"
        if cost["statements"] is not None
        else "statements and their WAL n/a (the server has not loaded pg_stat_statements)"
    )
    return [
        f"    {name:<9} CPU {net['whole_ms']} ms/event (services {ms['services']}, PostgreSQL {ms['postgresql']}, "
        f"Kafka {net['kafka_ms']} above the broker alone, {ms['kafka']} in all); PostgreSQL {net['transactions']} "
        f"transactions ({cost['transactions_per_event']} with the {cost['pg_counters_read_after_s']} s after), "
        f"{statements} (the "
        f"cluster's WAL {cost['cluster_wal_bytes_per_event']} bytes); Kafka {cost['kafka_requests_per_event']} "
        "requests",
        f"    {'':<9} CPU s over {cost['wall_seconds']} s: {_cells(cost['cpu_seconds'])}",
    ]


def _rest_line(name: str, rest: dict[str, Any], broker_alone: float) -> list[str]:
    share, wall_s = rest["core_percent"], rest["wall_seconds"]
    statements = f", {round(rest['statements'] / wall_s, 1)} statements/s" if rest["statements"] is not None else ""
    return [
        f"    {name:<9} services + PostgreSQL {share['services and postgresql']}% of one core (services "
        f"{share['services']}, PostgreSQL {share['postgresql']}), Kafka {share['kafka']}% (the broker alone "
        f"{broker_alone}%); {round(sum(rest['transactions'].values()) / wall_s, 1)} transactions/s{statements}, "
        f"{round(sum(rest['kafka_requests'].values()) / wall_s, 1)} Kafka requests/s",
        f"    {'':<9} wake-ups/s: {_cells(rest['wakeups_per_second'])}",
    ]


def _where_from(name: str, cost: dict[str, Any]) -> list[str]:
    """By service: transactions, statements and PostgreSQL CPU per upstream event (per second at rest); the top
    statements."""
    divisor, unit = (cost["events"], "event") if cost["events"] else (cost["wall_seconds"], "second")
    by_statements = cost["statements_by_service"] or {}
    lines = [
        f"    {name} by service (transactions / statements / PostgreSQL CPU ms, per {unit}): " + ", ".join(
            f"{service} {round(n / divisor, 2)} / {round(by_statements.get(service, 0) / divisor, 2)} / "
            f"{round(1000 * cost['cpu_seconds'].get(f'postgresql {service}', 0.0) / divisor, 3)}"
            for service, n in cost["transactions"].items()
        )
    ]  # fmt: skip
    for order, key in (("calls", "top_statements_by_calls"), ("time", "top_statements_by_time")):
        lines.append(f"    {name}, top statements by {order} (calls and ms per {unit}):")
        lines += [
            f"      {row['service']:<15} {row['calls'] / divisor:>7.3f} {row['ms'] / divisor:>8.4f}  "
            f"{row['query'][:110]}"
            for row in cost[key]
        ]
    return lines


def cost_lines(report: dict[str, Any]) -> list[str]:
    """Issue 34's figures: each fixed rate and the rest, the platform beside the floor; where PostgreSQL's work comes
    from at 100 ev/s (the floor's beside) and the platform's at rest."""
    floor, alone = report["floor"], report["broker_alone"]
    lines = ["cost per upstream event (issue 34): the platform beside the floor (devtools.bench_cost says how)"]
    for row, floor_row in zip(report["latency"], floor["latency"], strict=False):
        if "cost" not in row or "cost" not in floor_row:
            continue
        lines.append(f"  {row['target_events_per_second']} ev/s")
        for name, pipeline, cost in (("platform", report, row["cost"]), ("floor", floor, floor_row["cost"])):
            lines += _phase_line(name, cost, net_of_idle(cost, alone["kafka_core_percent"], pipeline["rest"]))
    lines.append(
        f"  at rest ({report['rest']['wall_seconds']} s; the broker alone: {alone['kafka_core_percent']}% over "
        f"{alone['seconds']} s, {alone['other_broker_connections']} other connections to it)"
    )
    lines += _rest_line("platform", report["rest"], alone["kafka_core_percent"])
    lines += _rest_line("floor", floor["rest"], alone["kafka_core_percent"])
    platform_100, floor_100 = _cost_at(report["latency"], 100), _cost_at(floor["latency"], 100)
    if platform_100 and floor_100:
        lines.append("  where PostgreSQL's work comes from at 100 ev/s")
        lines += _where_from("platform", platform_100) + _where_from("floor", floor_100)
    lines.append("  where the platform's PostgreSQL work at rest comes from")
    lines += _where_from("platform at rest", report["rest"])
    return lines


def cost_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=cost`: issue 34's figures, the exactly-once count and the targets."""
    once = report["exactly_once"]
    return "\n".join([
        *_latency_lines("platform, publish -> SmsDispatched (ms)", report["latency"]),
        *_latency_lines("floor, publish -> SmsDispatched (ms)", report["floor"]["latency"]),
        *_batch_lines([(f"{row['target_events_per_second']} ev/s", row["batches"]) for row in report["latency"]]),
        *cost_lines(report),
        f"exactly once: {once['sms_expected']} SMS expected, {once['duplicates']} twice, {once['missing']} missing",
        "issue 34's targets (ratios within this run):",
        *(target_line(row) for row in report["targets"]),
    ])  # fmt: skip

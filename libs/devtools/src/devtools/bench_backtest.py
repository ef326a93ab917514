"""`make bench`'s backtest phase (issue 32, item 14; `BENCH_ONLY=backtest` runs it alone, with its preload).

Over the bench's preloaded orders (`PRELOAD_ORDERS`, spread over the last 29 days, six history rows each), a
`BACKTEST_DAYS`-day backtest of a campaign that every preloaded order triggers (delivered, and paid: one decision
and one SMS per order of the partner, the partner's default quiet hours) through the campaigns API, as the console
asks for it: the time to its result line, and the live platform's full-speed throughput while backtests keep
running against the same throughput without, in the same run. Measured:

* **the backtest alone**: wall-clock seconds from the request to the result line, its progress lines and counts,
  of the median of `BACKTEST_RUNS` (3) one after another (each run's time in `alone_seconds`)
  (after a VACUUM ANALYZE and a CHECKPOINT of the orders and campaigns databases: a month-old history has long been
  vacuumed and written out, and autovacuum's first pass over the freshly preloaded rows, or a checkpoint of them,
  otherwise runs during the measurement);
* **live throughput with / without**: the bench's full-speed phase, round by round, without a backtest and then with
  one running (started two seconds before the round, cancelled after it), `FULL_SPEED_ROUNDS` of each alternating
  (the machine's load drifts over minutes); each figure the median of its rounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

import httpx
from aiokafka import AIOKafkaProducer

from devtools.platform import Platform

if TYPE_CHECKING:
    from devtools.bench import Bench

# devtools.bench imports this module: what this one uses of it is imported where used.

BACKTEST_DAYS = 30
# Backtests alone, one after another; the row is the median's time (this machine's runs of the same code spread
# 10.1-13.3 s one at a time), and the first's, which also starts the campaigns instance's workers, is reported too.
BACKTEST_RUNS = 3
BACKTEST_CAMPAIGN = {
    "name": "Backtest: delivered and paid",
    "trigger": {"status_type": "delivery", "from": "any", "to": "delivered"},
    "filters": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "template": "{{ customer.name }}, заказ {{ order.id }} доставлен. Спасибо!",
    "quiet_hours": "partner_default",
}


async def one_backtest(platform: Platform, partner: str) -> dict[str, Any]:
    """A backtest through the campaigns API, read to its result line: its wall-clock time and what it said."""
    body = {"definition": BACKTEST_CAMPAIGN, "days": BACKTEST_DAYS}
    progress, result = 0, None
    started = time.monotonic()
    async with (
        platform.client("campaigns", partner) as campaigns,
        campaigns.stream("POST", "/v1/campaigns/backtest", json=body, timeout=httpx.Timeout(1800)) as answer,
    ):
        if answer.status_code != 200:
            raise RuntimeError(f"backtest refused: {answer.status_code} {(await answer.aread()).decode()[:500]}")
        async for line in answer.aiter_lines():
            item = json.loads(line)
            if "error" in item:
                raise RuntimeError(f"backtest failed: {item['error']}")
            progress += "progress" in item
            result = item.get("result", result)
    assert result is not None
    counts = ("changes_read", "triggered", "filtered_out", "capped", "sms", "held_by_quiet_hours", "segments")
    return {
        "seconds": round(time.monotonic() - started, 2),
        "progress_lines": progress,
        **{key: result[key] for key in counts},
        "replay_seconds": result["seconds"],
    }


async def keep_backtesting(platform: Platform, partner: str, finished: list[dict[str, Any]]) -> None:
    """Backtests one after another until cancelled (a cancelled one closes its connection: the work stops)."""
    while True:
        finished.append(await one_backtest(platform, partner))


async def vacuumed(bench: Bench, platform: Platform) -> None:
    """The databases the preload wrote (orders' 7,000,000 history rows, campaigns' 1,000,000 evaluations) as a
    month-old history is in production: vacuumed (hint bits set, the visibility map built) and written out. Right
    after the bulk insert, autovacuum's first pass over the new rows started during the backtest and took CPU from it
    (seen in the bench's runs); so did a checkpoint of the preload's and the vacuum's writes (the server log of a
    23:31 run: one from 23:34:24 to 23:34:56, over the backtest)."""
    from devtools.bench import say

    say("VACUUM ANALYZE and CHECKPOINT of the orders and campaigns databases, as a month-old history has long been")
    for service in ("orders", "campaigns"):
        async with bench.database(platform, service) as conn:
            await conn.execute("VACUUM (ANALYZE)", timeout=1800)
            await conn.execute("CHECKPOINT", timeout=1800)


async def backtest_phase(bench: Bench, platform: Platform, producer: AIOKafkaProducer) -> dict[str, Any]:
    from devtools.bench import FULL_SPEED_ORDERS, FULL_SPEED_ROUNDS, PARTNERS, median_round, say

    partner = PARTNERS[0]
    await vacuumed(bench, platform)
    say(f"backtest alone: {BACKTEST_DAYS} days of {partner}'s preloaded history, {BACKTEST_RUNS} one after another")
    runs = []
    for _ in range(BACKTEST_RUNS):
        runs.append(await one_backtest(platform, partner))
        say(f"  {runs[-1]['seconds']} s, {runs[-1]['changes_read']} changes, {runs[-1]['sms']} SMS")
    alone = sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]  # the median run
    # Without and with, round by round (the machine's load drifts over minutes): each figure the median of its rounds.
    rounds: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    during: list[dict[str, Any]] = []
    for n in range(FULL_SPEED_ROUNDS):
        say(f"live full speed without a backtest, round {n + 1}")
        rounds["without"].append(await bench.full_speed(platform, producer, FULL_SPEED_ORDERS, f"btoff{n}", rounds=1))
        say(f"live full speed while a backtest runs, round {n + 1}")
        running = asyncio.create_task(keep_backtesting(platform, partner, during))
        await asyncio.sleep(2)  # under way: orders' query reading, the worker deciding
        try:
            rounds["with"].append(await bench.full_speed(platform, producer, FULL_SPEED_ORDERS, f"bton{n}", rounds=1))
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    without, with_backtest = median_round(rounds["without"]), median_round(rounds["with"])
    ratio = with_backtest["status_changes_per_second"] / without["status_changes_per_second"]
    return {
        "days": BACKTEST_DAYS,
        "partner": partner,
        "alone": alone,
        "alone_seconds": [run["seconds"] for run in runs],  # in the order they ran: the first also starts the workers
        "full_speed_without": without,
        "full_speed_with": with_backtest,
        "rounds_throughput": {k: [r["status_changes_per_second"] for r in v] for k, v in rounds.items()},
        "backtests_finished_during": during,
        "throughput_ratio": round(ratio, 3),
    }


def backtest_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 32's: the backtest's time, and the live throughput while it runs against without it."""
    phase = report.get("backtest")
    if phase is None:
        return []
    alone = phase["alone"]
    return [
        (f"{phase['days']}-day backtest over the preloaded orders ({alone['changes_read']} changes of one partner), "
         f"s, the median of {len(phase.get('alone_seconds', [0]))}",
         alone["seconds"], "<= 10"),
        ("live full-speed status changes/s while backtests run / without", phase["throughput_ratio"], ">= 0.8"),
    ]  # fmt: skip


def backtest_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=backtest`: the phase and its targets."""
    phase = report["backtest"]
    alone = phase["alone"]
    lines = [
        f"backtest of {phase['days']} days ({phase['partner']}): {alone['seconds']} s to the result (the median of "
        f"{', '.join(map(str, phase.get('alone_seconds', [alone['seconds']])))} s), "
        f"{alone['changes_read']} changes read, {alone['triggered']} triggered, {alone['sms']} SMS "
        f"({alone['held_by_quiet_hours']} held by quiet hours), {alone['progress_lines']} progress lines",
        f"live full speed: {phase['full_speed_without']['status_changes_per_second']} status changes/s without, "
        f"{phase['full_speed_with']['status_changes_per_second']} with backtests running "
        f"({len(phase['backtests_finished_during'])} finished meanwhile)",
        "issue 32's targets:",
    ]
    rows = [f"  {row['measure']}: {row['value']} (target {row['target']})" for row in report["targets"]]
    return "\n".join([*lines, *rows])

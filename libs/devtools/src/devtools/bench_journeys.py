"""`make bench`'s journeys phase (issue 33, item 5; `BENCH_ONLY=journeys` runs it alone): durable timers at scale.

Each bench partner gets the issue's payment reminder journey (`JOURNEY`: payment became invoice_issued; wait 24 h,
remind, wait 48 h, remind again; leave as soon as it is paid), created and activated through the campaigns API. The
bench's own traffic goes through it: every order enters (its payment starts as invoice_issued) and leaves at once when
it is paid, so the live path reads and writes `journey_runs` on every order. Measured:

* **throughput with 1,000,000 timers pending / without**: `JOURNEY_PENDING` runs of other orders waiting at the
  first wait, due over the next 1-30 days, copied (COPY ... FREEZE, text format, built by `copy_line`) into a table
  of their own shaped as `journey_runs` (its columns, checks and indexes, read from the catalogue); the two tables
  swap names (two renames, one transaction, milliseconds) between the bench's full-speed rounds, so the rounds
  alternate without and with the million in the same run (`FULL_SPEED_ROUNDS` of each; PostgreSQL re-plans the
  service's prepared statements after the renames, against the table now named `journey_runs`);
* **lateness at 1,000 timers coming due per second**: with the million in place, `JOURNEY_DUE` more runs of other
  orders whose wait ends at `JOURNEY_DUE_RATE` per second from a few seconds on (next step send_sms); a firing's
  lateness is the broker timestamp of its SendSms on `notifier.send-sms.v1` minus its due_at: the moment the firing's
  command is out of the campaigns service (committed with the run's update, then published by the outbox relay), so
  it holds the claim's delay, the transaction and the relay, all of what makes the firing late; the envelope's `time`
  (the claim's clock reading, before the commit) is reported beside it, and none may be earlier than its due_at.
  Every due run must fire exactly once: one SendSms per run on the topic, and the provider's count of them;
* **peak RSS** of every service process while the rounds ran without and with the million, and while the due runs
  fired (with): the kernel's high-water mark reset (`/proc/<pid>/clear_refs`, 5) before each, read after.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
from aiokafka import AIOKafkaProducer

from contracts.orders import Customer, OrderSnapshot, OrderStatusChanged
from contracts.statuses import CurrentStatuses, StatusRef
from contracts.topics import Topic, prefixed
from devtools.bench_accounting import cpu_used, service_processes
from devtools.platform import Platform
from servicekit.ops import read_topic

if TYPE_CHECKING:
    from devtools.bench import Bench

# devtools.bench imports this module: what this one uses of it is imported where used.

JOURNEY_PENDING = int(os.environ.get("BENCH_JOURNEY_PENDING", "1000000"))
JOURNEY_DUE = int(os.environ.get("BENCH_JOURNEY_DUE", "20000"))
JOURNEY_DUE_RATE = int(os.environ.get("BENCH_JOURNEY_DUE_RATE", "1000"))
DUE_LEAD_S = 5.0  # the first due run's wait ends this long after its COPY started
PENDING_TABLE = "journey_runs_pending"  # the million's table while it is not `journey_runs`
SWAP_TABLE = "journey_runs_swapping"  # a name for the moment of the swap
JOURNEY = {
    "name": "Payment reminder",
    "trigger": {"status_type": "payment", "from": "any", "to": "invoice_issued"},
    "steps": [
        {"kind": "wait_duration", "minutes": 1440},
        {"kind": "send_sms", "template": "{{ customer.name }}, заказ {{ order.id }} ждёт оплаты"},
        {"kind": "wait_duration", "minutes": 2880},
        {"kind": "send_sms", "template": "{{ customer.name }}, напоминаем: заказ {{ order.id }} ждёт оплаты"},
    ],
    "exit_conditions": [{"kind": "order_status", "status_type": "payment", "op": "eq", "value": "paid"}],
    "quiet_hours": "deliver_immediately",
}
WAIT_STEP = 0  # a preloaded run waits at the first wait; when it is due, the next step is the first send_sms
COLUMNS = (
    "campaign_id", "order_id", "run", "partner_id", "customer_id", "version", "step", "state", "due_at", "sequence",
    "change", "entered_at", "updated_at",
)  # fmt: skip
# The placeholders of the change template (each a valid value, replaced per run by `change_json`).
_ORDER, _CUSTOMER, _PHONE = "jrn-order-0", "jrn-customer-0", "+79160000000"


@dataclass(frozen=True)
class JourneyCampaign:
    """A bench partner's reminder journey as stored: the version its runs entered at."""

    campaign_id: str
    partner_id: str
    version: int


# --- the COPY rows (pure) ------------------------------------------------------------------------


def change_template(at: datetime) -> str:
    """The OrderStatusChanged a run holds (payment became invoice_issued; consent to marketing SMS), as the service
    stores it, with placeholder order, customer and phone."""
    statuses = CurrentStatuses(
        general=StatusRef(code="accepted", name="accepted"),
        delivery=StatusRef(code="at_pickup_point", name="at_pickup_point"),
        payment=StatusRef(code="invoice_issued", name="invoice_issued"),
    )
    customer = Customer(id=_CUSTOMER, phone=_PHONE, name="Анна", sms_consent=True)
    order = OrderSnapshot(
        order_id=_ORDER, statuses=statuses, amount="1490.00", currency="RUB", customer=customer, placed_at=at
    )
    change = OrderStatusChanged(
        order_id=_ORDER, status_type="payment", from_status=None, to_status=statuses.payment,
        to_include_in_analytics=True, sequence=3, order=order, occurred_at=at,
    )  # fmt: skip
    return change.model_dump_json()


def change_json(template: str, order_id: str, customer_id: str, phone: str) -> str:
    return (
        template.replace(f'"{_ORDER}"', json.dumps(order_id))
        .replace(f'"{_CUSTOMER}"', json.dumps(customer_id))
        .replace(f'"{_PHONE}"', json.dumps(phone))
    )


def copy_field(value: str | int | datetime | None) -> str:
    """One field in COPY's text format: NULL as \\N; a backslash, tab, newline or carriage return escaped."""
    if value is None:
        return "\\N"
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_line(values: Sequence[str | int | datetime | None]) -> str:
    return "\t".join(copy_field(v) for v in values) + "\n"


def run_line(campaign: JourneyCampaign, template: str, tag: str, n: int, due_at: datetime, entered_at: datetime) -> str:
    """A run waiting at the first wait of `campaign`'s journey, as `journey_runs` holds it (COLUMNS), for an order and
    a customer of its own (no frequency cap shared with another run)."""
    order_id, customer_id, phone = f"{tag}-{n}", f"{tag}-cust-{n}", f"+7916{n % 10_000_000:07d}"
    change = change_json(template, order_id, customer_id, phone)
    return copy_line((campaign.campaign_id, order_id, 1, campaign.partner_id, customer_id, campaign.version,
                      WAIT_STEP, "waiting", due_at, 3, change, entered_at, entered_at))  # fmt: skip


def due_times(start: datetime, count: int, per_second: float) -> list[datetime]:
    """`count` due_at, `per_second` of them each second from `start`, evenly spaced."""
    return [start + timedelta(seconds=n / per_second) for n in range(count)]


def pending_due(now: datetime, n: int, count: int) -> datetime:
    """The n-th pending run's due_at: spread over the 2nd to the 30th day from `now` (far past the bench)."""
    return now + timedelta(days=1) + timedelta(days=29) * n / max(count, 1)


def lines(campaigns: Sequence[JourneyCampaign], tag: str, due: Iterable[datetime], at: datetime) -> Iterable[str]:
    """Runs for each due_at in turn, the partners' journeys taken in turn."""
    template = change_template(at)
    for n, due_at in enumerate(due):
        yield run_line(campaigns[n % len(campaigns)], template, tag, n, due_at, at)


# --- the measures (pure) -------------------------------------------------------------------------


def lateness(due: dict[str, datetime], fired: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """Each due run's firing against its due_at: `fired` holds (order id, epoch seconds) of each SendSms seen for
    the runs of `due`. The lateness of a run fired more than once counts from its first; the counts say how many
    fired once, twice (duplicates), never (missing), and before their due_at (early)."""
    from devtools.bench import percentiles

    first: dict[str, float] = {}
    seen = Counter(order_id for order_id, _ in fired)
    for order_id, at in fired:
        first[order_id] = min(at, first.get(order_id, at))
    late = [at - due[order_id].timestamp() for order_id, at in first.items()]
    return {
        "due": len(due),
        "fired": len(first),
        "duplicates": sum(n - 1 for n in seen.values()),
        "missing": len(due) - len(first),
        "early": sum(1 for seconds in late if seconds < 0),
        "ms": percentiles(late) | {"max": round(max(late) * 1000, 1) if late else None},
    }


def firing_rounds(envelope: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """The timers' rounds that fired the due runs: a round stamps every SendSms it writes with the one clock reading
    it claimed at, so the distinct envelope times are the rounds."""
    per_round = Counter(at for _, at in envelope)
    if not per_round:
        return {"rounds": 0, "runs_per_round_mean": None, "runs_per_round_max": None, "interval_ms_mean": None}
    times = sorted(per_round)
    interval = (times[-1] - times[0]) / (len(times) - 1) * 1000 if len(times) > 1 else None
    return {
        "rounds": len(per_round),
        "runs_per_round_mean": round(len(envelope) / len(per_round), 1),
        "runs_per_round_max": max(per_round.values()),
        "interval_ms_mean": round(interval, 1) if interval is not None else None,
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def journeys_rows(report: dict[str, Any]) -> list[tuple[str, float | None, str]]:
    """Issue 33's: throughput with the pending timers / without, the p99 lateness at 1,000 due per second, every
    due run fired once, the campaigns service's peak RSS with / without."""
    phase = report.get("journeys")
    if phase is None:
        return []
    pending, due = phase["pending"], phase["due"]
    fired = due["sendsms_topic"]
    return [
        (f"journeys: full-speed SMS/s with {pending:,} timers pending / without (medians of alternating rounds)",
         phase["sms_ratio"], ">= 0.8"),
        ("journeys: the same, status changes/s (orders' output, context)", phase["throughput_ratio"], "reported"),
        (f"journeys: p99 lateness at {phase['due_rate']:,} timers due/s (SendSms on its topic - due_at), ms",
         fired["ms"]["p99"], "<= 1000"),
        (f"journeys: of {due['runs']:,} due runs, fired twice, never or early",
         fired["duplicates"] + fired["missing"] + fired["early"], "= 0"),
        (f"journeys: campaigns peak RSS with {pending:,} timers pending / without",
         phase["campaigns_peak_rss_ratio"], "<= 1.2"),
    ]  # fmt: skip


def journeys_lines(report: dict[str, Any]) -> list[str]:
    phase = report["journeys"]
    due = phase["due"]
    rss = phase["peak_rss_mb"]
    return [
        f"journeys ({phase['phase_seconds']} s): {phase['pending']:,} timers pending, copied in "
        f"{phase['preload_seconds']} s (indexes {phase['index_seconds']} s); full speed without "
        f"{phase['full_speed_without']['status_changes_per_second']} status changes/s (rounds "
        f"{phase['rounds_throughput']['without']}), with {phase['full_speed_with']['status_changes_per_second']} "
        f"(rounds {phase['rounds_throughput']['with']}); SMS/s rounds {_cells(phase['rounds_sms_per_second'])}; "
        f"the rounds' orders' runs: {_cells(phase['live_runs'])}",
        f"  {due['runs']:,} runs due at {phase['due_rate']:,}/s: lateness to SendSms on its topic "
        f"{_cells(due['sendsms_topic']['ms'])} ms; to the firing's clock {_cells(due['envelope_time']['ms'])} ms; "
        f"{due['sms_handed_over']} SMS handed over; timer rounds: {_cells(due['timer_rounds'])}",
        "  peak RSS MB without / with: "
        + ", ".join(f"{name} {rss['without'].get(name)} / {mb}" for name, mb in rss["with"].items()),
    ]


def journeys_table(report: dict[str, Any]) -> str:
    """The table of `BENCH_ONLY=journeys`: the phase and its targets."""
    from devtools.bench_report import target_line

    return "\n".join([*journeys_lines(report), "issue 33's targets:", *map(target_line, report["targets"])])


def _cells(values: dict[str, Any]) -> str:
    return ", ".join(f"{name} {value}" for name, value in values.items())


# --- the phase -----------------------------------------------------------------------------------


async def journeys_phase(bench: Bench, platform: Platform, producer: AIOKafkaProducer) -> dict[str, Any]:
    from devtools.bench import FULL_SPEED_ORDERS, FULL_SPEED_ROUNDS, PARTNERS, median_round, say

    phase_started = time.monotonic()
    async with bench.database(platform, "campaigns") as conn:
        campaigns = await define_journeys(platform, conn, PARTNERS)
        say(f"journeys: {JOURNEY_PENDING:,} timers pending copied into a table of their own")
        started = time.monotonic()
        await copy_pending(conn, campaigns, JOURNEY_PENDING)
        copied = time.monotonic()
        await index_like_journey_runs(conn)
        indexed = time.monotonic()
        # The load's gigabyte of dirty pages and WAL written out now, not by a checkpoint in the middle of a round.
        await conn.execute(f"ANALYZE {PENDING_TABLE}")
        await conn.execute("CHECKPOINT")
        sizes = await conn.fetchrow(
            f"SELECT pg_table_size('{PENDING_TABLE}') / 1048576 AS table_mb, "
            f"pg_indexes_size('{PENDING_TABLE}') / 1048576 AS indexes_mb, current_setting('shared_buffers') AS buffers"
        )
        rounds: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        peaks: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
        for n in range(FULL_SPEED_ROUNDS):
            for kind in ("without", "with"):  # the pending table swapped in for "with", out again after it
                say(f"journeys: full speed {kind} the {JOURNEY_PENDING:,} pending timers, round {n + 1}")
                if kind == "with":
                    await swap(conn)
                reset_peaks(platform)
                tag = f"jrn{kind}{n}"
                rounds[kind].append(await bench.full_speed(platform, producer, FULL_SPEED_ORDERS, tag, rounds=1))
                peaks[kind].append(read_peaks(platform))
                if kind == "with":
                    await swap(conn)
        live = await live_runs(conn)
        scans = await table_scans(conn)  # after the rounds the million is PENDING_TABLE again
        await swap(conn)  # the million in place for the due runs
        say(f"journeys: {JOURNEY_DUE:,} runs coming due at {JOURNEY_DUE_RATE:,}/s beside the pending ones")
        reset_peaks(platform)
        cpu: dict[str, Any] = {}
        with cpu_used(platform, cpu):  # what firing them cost each process, and how busy the machine was
            due = await due_runs(bench, platform, conn, campaigns)
        due["cpu"] = cpu
        peaks["with"].append(read_peaks(platform))
    without, with_pending = median_round(rounds["without"]), median_round(rounds["with"])
    peak_rss = {kind: _largest(found) for kind, found in peaks.items()}
    return {
        "pending": JOURNEY_PENDING,
        "preload_seconds": round(copied - started, 1),
        "index_seconds": round(indexed - copied, 1),
        "pending_sizes": dict(sizes) if sizes else {},
        "full_speed_without": without,
        "full_speed_with": with_pending,
        "rounds_throughput": {k: [r["status_changes_per_second"] for r in v] for k, v in rounds.items()},
        "throughput_ratio": ratio(with_pending["status_changes_per_second"], without["status_changes_per_second"]),
        # Status changes/s is orders' output, and orders never reads journey_runs: the SMS/s (to the last SMS of a
        # round) is what goes through campaigns, where the million is, so it is the row's figure.
        "rounds_sms_per_second": {k: [r["sms_per_second"] for r in v] for k, v in rounds.items()},
        "sms_ratio": ratio(*(statistics.median(r["sms_per_second"] for r in rounds[k]) for k in ("with", "without"))),
        "live_runs": live,
        "scans_after_rounds": scans,
        "due_rate": JOURNEY_DUE_RATE,
        "due": due,
        "peak_rss_mb": peak_rss,
        "campaigns_peak_rss_ratio": ratio(peak_rss["with"].get("campaigns"), peak_rss["without"].get("campaigns")),
        "phase_seconds": round(time.monotonic() - phase_started, 1),
    }


async def define_journeys(
    platform: Platform, conn: asyncpg.Connection, partners: Sequence[str]
) -> list[JourneyCampaign]:
    """The reminder journey of each partner, through the API (create, activate), and its stored version."""
    ids = []
    for partner in partners:
        async with platform.client("campaigns", partner) as client:
            created = await client.post("/v1/campaigns", json=JOURNEY)
            created.raise_for_status()
            ids.append(created.json()["id"])
            (await client.post(f"/v1/campaigns/{ids[-1]}/activate")).raise_for_status()
    rows = await conn.fetch("SELECT id, partner_id, version FROM campaigns WHERE id = ANY($1::text[])", ids)
    found = {row["id"]: JourneyCampaign(row["id"], row["partner_id"], row["version"]) for row in rows}
    return [found[campaign_id] for campaign_id in ids]


async def _chunks(text: Iterable[str], size: int = 4000) -> AsyncIterator[bytes]:
    batch: list[str] = []
    for line in text:
        batch.append(line)
        if len(batch) >= size:
            yield "".join(batch).encode()
            batch = []
            await asyncio.sleep(0)
    if batch:
        yield "".join(batch).encode()


async def copy_pending(conn: asyncpg.Connection, campaigns: Sequence[JourneyCampaign], count: int) -> None:
    """`count` runs due in 1-30 days into PENDING_TABLE, created in the same transaction as journey_runs' columns
    and checks, so that COPY FREEZE writes them frozen (no hint-bit or vacuum pass over them during the rounds)."""
    now = datetime.now(UTC)
    due = (pending_due(now, n, count) for n in range(count))
    async with conn.transaction():
        await conn.execute(f"DROP TABLE IF EXISTS {PENDING_TABLE}")
        await conn.execute(f"CREATE TABLE {PENDING_TABLE} (LIKE journey_runs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        await conn.copy_to_table(
            PENDING_TABLE, source=_chunks(lines(campaigns, "jwait", due, now)), columns=COLUMNS, freeze=True,
            timeout=1800,
        )  # fmt: skip


async def index_like_journey_runs(conn: asyncpg.Connection) -> None:
    """PENDING_TABLE's indexes, those of journey_runs as the catalogue has them (its primary key too), built after
    the COPY (faster than maintained during it); then ANALYZE, as autovacuum would after such a load."""
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef, x.indisprimary FROM pg_indexes i "
        "JOIN pg_class c ON c.relname = i.indexname JOIN pg_index x ON x.indexrelid = c.oid "
        "WHERE i.tablename = 'journey_runs' AND i.schemaname = current_schema()"
    )
    for row in rows:
        name = f"{PENDING_TABLE}_{row['indexname'].removeprefix('journey_runs_')}"
        definition = row["indexdef"].replace(f"INDEX {row['indexname']} ON", f"INDEX {name} ON", 1)
        definition = definition.replace(".journey_runs ", f".{PENDING_TABLE} ", 1)
        await conn.execute(definition, timeout=1800)
        if row["indisprimary"]:
            await conn.execute(f"ALTER TABLE {PENDING_TABLE} ADD PRIMARY KEY USING INDEX {name}")
    await conn.execute(f"ANALYZE {PENDING_TABLE}", timeout=1800)


async def swap(conn: asyncpg.Connection) -> None:
    """journey_runs and PENDING_TABLE trade names, in one transaction (the service's statements wait the
    milliseconds it takes, then are re-planned by PostgreSQL against the table now named journey_runs)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '30s'")
        await conn.execute(f"ALTER TABLE journey_runs RENAME TO {SWAP_TABLE}")
        await conn.execute(f"ALTER TABLE {PENDING_TABLE} RENAME TO journey_runs")
        await conn.execute(f"ALTER TABLE {SWAP_TABLE} RENAME TO {PENDING_TABLE}")


async def live_runs(conn: asyncpg.Connection) -> dict[str, int]:
    """The runs of the rounds' orders in both tables, by where they ended: that the live path went through the
    journey (each order entered, then left when it was paid)."""
    found: Counter[str] = Counter()
    for table in ("journey_runs", PENDING_TABLE):
        rows = await conn.fetch(
            f"SELECT state, coalesce(left_reason, '') AS reason, count(*) AS n FROM {table} "
            "WHERE order_id LIKE 'jrn%' GROUP BY 1, 2"
        )
        found.update({f"{row['state']} {row['reason']}".strip(): row["n"] for row in rows})
    return dict(found)


async def table_scans(conn: asyncpg.Connection) -> dict[str, dict[str, int]]:
    """Sequential and index scans of each table so far (statistics follow a table through its renames): a
    sequential scan of the million's table by the live path would show here."""
    rows = await conn.fetch(
        "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables "
        "WHERE relname = ANY($1::text[])",
        ["journey_runs", PENDING_TABLE],
    )
    return {row["relname"]: {k: row[k] for k in ("seq_scan", "seq_tup_read", "idx_scan")} for row in rows}


async def due_runs(
    bench: Bench, platform: Platform, conn: asyncpg.Connection, campaigns: Sequence[JourneyCampaign]
) -> dict[str, Any]:
    """JOURNEY_DUE runs copied into journey_runs, due at JOURNEY_DUE_RATE per second from DUE_LEAD_S on; each
    firing's lateness once every SendSms is on its topic and the provider handed the SMS over."""
    from devtools.bench import wait_for

    now = datetime.now(UTC)
    due_at = due_times(now + timedelta(seconds=DUE_LEAD_S), JOURNEY_DUE, JOURNEY_DUE_RATE)
    due = {f"jdue-{n}": at for n, at in enumerate(due_at)}
    sms_before = platform.sent_count()
    bench.sms_expected += JOURNEY_DUE  # the exactly-once check at the end of the run counts them too
    await conn.copy_to_table("journey_runs", source=_chunks(lines(campaigns, "jdue", due_at, now)), columns=COLUMNS)
    copied_s = (datetime.now(UTC) - now).total_seconds()

    async def handed_over() -> bool:
        return platform.sent_count() - sms_before >= JOURNEY_DUE

    span = JOURNEY_DUE / JOURNEY_DUE_RATE
    with contextlib.suppress(TimeoutError):  # measured all the same: the counts say what is missing
        await wait_for(handed_over, DUE_LEAD_S + span + 300)
    topic, envelope = await sendsms_seen(bench, platform, due)
    return {
        "runs": JOURNEY_DUE,
        "first_due_after_copy_started_s": DUE_LEAD_S,
        "copy_seconds": round(copied_s, 2),
        "sendsms_topic": lateness(due, topic),
        "envelope_time": lateness(due, envelope),
        "timer_rounds": firing_rounds(envelope),
        "sms_handed_over": platform.sent_count() - sms_before,
    }


async def sendsms_seen(
    bench: Bench, platform: Platform, due: dict[str, datetime]
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Each SendSms of the due runs on its topic: (order id, broker timestamp) and (order id, envelope time)."""
    topic: list[tuple[str, float]] = []
    envelope: list[tuple[str, float]] = []
    records = await read_topic(
        bench.infrastructure.kafka_bootstrap, prefixed(Topic.SEND_SMS, platform.prefix), timeout_s=60
    )
    for record in records:
        document = json.loads(record.value or b"{}")
        order_id = document.get("data", {}).get("order_id")
        if order_id in due:
            topic.append((order_id, record.timestamp / 1000))
            envelope.append((order_id, datetime.fromisoformat(document["time"]).timestamp()))
    return topic, envelope


# --- peak RSS ------------------------------------------------------------------------------------


def reset_peaks(platform: Platform) -> None:
    """Every service process's high-water mark set back to its current RSS (Linux 4.0+: clear_refs, 5)."""
    for _, instance in service_processes(platform):
        Path(f"/proc/{platform.processes[instance].pid}/clear_refs").write_text("5")


def read_peaks(platform: Platform) -> dict[str, float]:
    from devtools.bench_accounting import process_usage

    return {
        instance: process_usage(platform.processes[instance].pid)["peak_rss_mb"]
        for _, instance in service_processes(platform)
    }


def _largest(found: list[dict[str, float]]) -> dict[str, float]:
    names = {name for peaks in found for name in peaks}
    return {name: max(peaks.get(name, 0.0) for peaks in found) for name in sorted(names)}


# --- BENCH_ONLY=journeys -------------------------------------------------------------------------


async def journeys_alone(bench: Bench, platform: Platform) -> dict[str, Any]:
    """`BENCH_ONLY=journeys`: the bench's partners, statuses and campaigns, a warm-up, then this phase."""
    from devtools.bench import WARMUP_ORDERS, say

    await bench.define(platform)
    await asyncio.sleep(2)
    producer = AIOKafkaProducer(
        bootstrap_servers=bench.infrastructure.kafka_bootstrap, linger_ms=5, enable_idempotence=True
    )
    await producer.start()
    report: dict[str, Any] = {}
    try:
        say(f"warm-up: {WARMUP_ORDERS} orders")
        await bench.full_speed(platform, producer, WARMUP_ORDERS, "warm", rounds=1)
        report["journeys"] = await journeys_phase(bench, platform, producer)
    finally:
        await producer.stop()
    report["exactly_once"] = bench.exactly_once(platform)
    return report

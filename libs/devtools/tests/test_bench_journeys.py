"""The journeys bench phase's pure parts: the COPY rows it preloads and the lateness it reports (no infrastructure)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from campaigns.domain import CampaignDefinition, SendSmsStep
from contracts.orders import OrderStatusChanged
from devtools.bench_journeys import (
    COLUMNS,
    JOURNEY,
    WAIT_STEP,
    JourneyCampaign,
    copy_field,
    copy_line,
    due_times,
    firing_rounds,
    journeys_rows,
    lateness,
    lines,
    pending_due,
)

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
CAMPAIGNS = [JourneyCampaign("camp-a", "bench-a", 2), JourneyCampaign("camp-b", "bench-b", 3)]


def unescape(field: str) -> str | None:
    """COPY's text format read back, as PostgreSQL reads a field."""
    if field == "\\N":
        return None
    out, chars = [], iter(field)
    for char in chars:
        if char == "\\":
            following = next(chars)
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[following])
        else:
            out.append(char)
    return "".join(out)


def parsed(line: str) -> dict[str, str | None]:
    assert line.endswith("\n") and line.count("\n") == 1
    fields = line[:-1].split("\t")
    assert len(fields) == len(COLUMNS)
    return dict(zip(COLUMNS, map(unescape, fields), strict=True))


def test_a_field_with_copy_specials_reads_back_as_it_was() -> None:
    text = 'a\\b\tc\nd\re "quoted" Анна'
    assert unescape(copy_field(text)) == text
    assert copy_field(None) == "\\N" and copy_field(7) == "7"
    assert copy_field(AT) == "2026-12-06T12:00:00+00:00"
    assert copy_line(["x\ty", None, 1]).split("\t") == ["x\\ty", "\\N", "1\n"]


def test_each_run_is_a_waiting_run_of_its_own_order_and_customer_with_a_change_the_service_reads() -> None:
    due = [AT + timedelta(days=2), AT + timedelta(days=3), AT + timedelta(days=4)]
    rows = [parsed(line) for line in lines(CAMPAIGNS, "jwait", due, AT)]
    assert [r["order_id"] for r in rows] == ["jwait-0", "jwait-1", "jwait-2"]
    assert [r["campaign_id"] for r in rows] == ["camp-a", "camp-b", "camp-a"]  # the partners' journeys in turn
    assert [r["partner_id"] for r in rows] == ["bench-a", "bench-b", "bench-a"]
    assert [r["version"] for r in rows] == ["2", "3", "2"]
    assert {r["customer_id"] for r in rows} == {"jwait-cust-0", "jwait-cust-1", "jwait-cust-2"}
    assert [datetime.fromisoformat(r["due_at"] or "") for r in rows] == due
    for row in rows:
        assert (row["state"], row["step"], row["run"]) == ("waiting", str(WAIT_STEP), "1")
        change = OrderStatusChanged.model_validate_json(row["change"] or "")
        assert change.order_id == change.order.order_id == row["order_id"]
        assert change.order.customer.id == row["customer_id"]
        assert change.order.customer.sms_consent
        assert change.to_status.code == "invoice_issued" and change.status_type == "payment"
    phones = {OrderStatusChanged.model_validate_json(r["change"] or "").order.customer.phone for r in rows}
    assert len(phones) == 3


def test_the_journey_waits_first_and_sends_next() -> None:
    definition = CampaignDefinition.model_validate(JOURNEY)
    assert definition.steps[WAIT_STEP].kind == "wait_duration"
    assert isinstance(definition.steps[WAIT_STEP + 1], SendSmsStep)


def test_due_times_come_at_the_rate_asked() -> None:
    times = due_times(AT, 3001, 1000)
    assert times[0] == AT and times[1000] == AT + timedelta(seconds=1) and times[3000] == AT + timedelta(seconds=3)
    assert all(later > earlier for earlier, later in itertools.pairwise(times))


def test_pending_runs_are_due_far_past_the_bench() -> None:
    dues = [pending_due(AT, n, 1000) for n in range(1000)]
    assert min(dues) >= AT + timedelta(days=1) and max(dues) < AT + timedelta(days=30)


def test_lateness_counts_each_run_once_from_its_first_firing() -> None:
    due = {f"o{n}": AT + timedelta(seconds=n) for n in range(100)}
    fired = [(f"o{n}", (AT + timedelta(seconds=n, milliseconds=10 * n)).timestamp()) for n in range(99)]
    fired.append(("o5", (AT + timedelta(seconds=9)).timestamp()))  # a duplicate, later: not its lateness
    found = lateness(due, fired)
    assert (found["due"], found["fired"], found["duplicates"], found["missing"], found["early"]) == (100, 99, 1, 1, 0)
    assert found["ms"]["max"] == pytest.approx(980)
    assert found["ms"]["p50"] == pytest.approx(490, abs=10)
    assert found["ms"]["p99"] == pytest.approx(980, abs=10)


def test_a_firing_before_its_due_at_is_early() -> None:
    due = {"a": AT, "b": AT}
    found = lateness(due, [("a", AT.timestamp() - 0.001), ("b", AT.timestamp() + 0.2)])
    assert found["early"] == 1 and found["missing"] == 0


def test_the_rows_report_the_phase() -> None:
    late = {"due": 10, "fired": 10, "duplicates": 0, "missing": 1, "early": 0, "ms": {"p99": 250.0}}
    report = {
        "journeys": {
            "pending": 1_000_000, "throughput_ratio": 0.93, "sms_ratio": 0.85, "due_rate": 1000,
            "campaigns_peak_rss_ratio": 1.05,
            "due": {"runs": 10, "sendsms_topic": late},
        }
    }  # fmt: skip
    rows = journeys_rows(report)
    assert [(value, target) for _, value, target in rows] == [(0.85, ">= 0.8"), (0.93, "reported"), (250.0, "<= 1000"),
                                                              (1, "= 0"), (1.05, "<= 1.2")]  # fmt: skip
    assert journeys_rows({}) == []


def test_the_rounds_are_the_distinct_claim_times() -> None:
    stamped = [("a", 10.0), ("b", 10.0), ("c", 10.06), ("d", 10.12), ("e", 10.12), ("f", 10.12)]
    found = firing_rounds(stamped)
    assert (found["rounds"], found["runs_per_round_mean"], found["runs_per_round_max"]) == (3, 2.0, 3)
    assert found["interval_ms_mean"] == pytest.approx(60)
    assert firing_rounds([])["rounds"] == 0

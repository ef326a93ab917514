"""`make run` / `make up` after a user has used the console: the example adds what it needs beside the user's
statuses and campaigns, and a `make up` that fails leaves no process behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from devtools import run
from devtools.platform import Platform, database_dsn, running
from devtools.pytest_plugin import Infrastructure, wait_until
from devtools.scenario import DEMO_PARTNER, all_statuses

GIFT_WRAPPED = {"code": "gift_wrapped", "type": "delivery", "name": "Упакован в подарок", "position": 15}


@pytest.fixture
async def platform(infrastructure: Infrastructure, tmp_path: Path) -> AsyncIterator[Platform]:
    """The two services the example's statuses and campaign go through, and identity for the tokens (orders and the
    notifier are not needed)."""
    async with running(infrastructure, tmp_path, ("status-registry", "campaigns", "identity")) as platform:
        yield platform


async def test_the_example_again_after_a_user_used_the_console_keeps_the_users_work(platform: Platform) -> None:
    registry = platform.client("status-registry", DEMO_PARTNER)
    campaigns = platform.client("campaigns", DEMO_PARTNER)
    async with registry, campaigns:
        await run.define_statuses(registry)
        demo_campaign = await run.define_campaign(campaigns)

        # What the README invites: a status of one's own, used by an active campaign; and a few edits.
        assert (await registry.post("/v1/statuses", json=GIFT_WRAPPED)).status_code == 201
        mine: dict[str, Any] = {
            "name": "Gift wrapped",
            "trigger": {"status_type": "delivery", "from": "any", "to": "gift_wrapped"},
            "template": "Your gift {{ order.id }} is wrapped",
            "quiet_hours": "deliver_immediately",
        }
        my_campaign = (await campaigns.post("/v1/campaigns", json=mine)).json()["id"]
        assert (await campaigns.post(f"/v1/campaigns/{my_campaign}/activate")).status_code == 200
        edited = run.DEMO_CAMPAIGN | {"template": "Shipped: {{ order.id }}"}
        assert (await campaigns.put(f"/v1/campaigns/{demo_campaign}", json=edited)).status_code == 200
        assert (await campaigns.post(f"/v1/campaigns/{demo_campaign}/pause")).status_code == 200
        paid = (await registry.get("/v1/statuses/paid")).json()
        renamed = await registry.patch(
            "/v1/statuses/paid", json={"name": "Оплачено"}, headers={"If-Match": f'"{paid["version"]}"'}
        )
        assert renamed.status_code == 200
        assert (await registry.delete("/v1/statuses/awaiting_payment")).status_code == 200
        await wait_until(lambda: registry_knows_in_use(platform, "gift_wrapped"), what="the campaign's usage")
        before = {status["code"]: status for status in await all_statuses(registry)}

        await run.define_statuses(registry)  # the bulk sync answered 409 status_in_use here
        assert await run.define_campaign(campaigns) == demo_campaign

        after = {status["code"]: status for status in await all_statuses(registry)}
        assert after["gift_wrapped"] == before["gift_wrapped"]  # the user's status: not archived, not touched
        assert after["paid"] == before["paid"]  # the user's name kept
        assert not after["awaiting_payment"]["archived"]  # the demo's orders need it: restored
        assert {code: after[code] for code in after if code != "awaiting_payment"} == {
            code: before[code] for code in before if code != "awaiting_payment"
        }
        listed = (await campaigns.get("/v1/campaigns")).json()["items"]
        assert sorted(c["name"] for c in listed) == sorted([mine["name"], run.DEMO_CAMPAIGN["name"]])
        demo = (await campaigns.get(f"/v1/campaigns/{demo_campaign}")).json()
        assert (demo["state"], demo["template"]) == ("paused", edited["template"])  # the user's choices stand
        assert (await campaigns.get(f"/v1/campaigns/{my_campaign}")).json()["state"] == "active"


async def registry_knows_in_use(platform: Platform, code: str) -> bool:
    """Whether the registry has learnt (from campaigns.status-usage.v1) that an active campaign names `code`."""
    dsn = database_dsn(platform.infrastructure.postgres_dsn, platform.database("status-registry"))
    conn = await asyncpg.connect(dsn)
    try:
        query = "SELECT count(*) FROM campaign_usage WHERE partner_id = $1 AND active AND codes @> ARRAY[$2]"
        return bool(await conn.fetchval(query, DEMO_PARTNER, code))
    finally:
        await conn.close()


def test_a_make_up_whose_example_fails_stops_everything_it_started(tmp_path: Path) -> None:
    """The supervisor and its services are real processes; the example fails once they all run, as it does when a
    request of the example's is refused."""
    procfile = tmp_path / "Procfile"
    procfile.write_text("registry: python -c 'import time; time.sleep(600)'\nnotifier: sleep 600\n")
    run_dir = tmp_path / "run"
    started: dict[str, int] = {}

    async def all_started() -> bool:
        return len(run.recorded_pids(run_dir)) == 3

    async def failing_example(exited: Callable[[], str | None]) -> None:
        await wait_until(all_started, what="the supervisor and two services")
        started.update(run.recorded_pids(run_dir))
        raise SystemExit("the campaign was refused")

    try:
        with pytest.raises(SystemExit) as failed:
            run.up(procfile, run_dir, grace_s=2, example=failing_example)
        assert set(started) == {run.SUPERVISOR, "registry", "notifier"}
        assert [name for name, pid in started.items() if run.running(pid)] == []
        assert run.recorded_pids(run_dir) == {}
        assert failed.value.code == "make up failed: the campaign was refused"  # one line, said last
    finally:
        run.down(run_dir, grace_s=1)

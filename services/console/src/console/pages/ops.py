"""Ops (the platform's operators only, across partners): topics with end offsets, consumer lag per group, dead
letters per DLQ topic with their reasons and a replay button (`servicekit.ops`, the same as `make ops`), and the
readiness of every service."""

from __future__ import annotations

import asyncio
from typing import Annotated

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Form
from fastapi.responses import Response

from console.backends import Backends, Service
from console.web import N_, Operator, flash
from contracts.topics import TOPIC_SPECS, prefixed
from servicekit import ops

router = APIRouter(prefix="/ops")

KAFKA_DOWN = N_("Kafka does not answer right now: topics, lag and dead letters cannot be shown. Readiness still works.")


def _dlq_names() -> list[str]:
    return [spec.topic.value for spec in TOPIC_SPECS if spec.topic.value.endswith(".dlq")]


@router.get("")
async def overview(page: Operator) -> Response:
    prefix = page.request.app.state.settings.kafka_topic_prefix
    readiness = await _readiness(page.request.app.state.backends)
    try:
        kafka = await page.request.app.state.kafka.get()
        topics = await kafka.topic_summaries([prefixed(spec.topic, prefix) for spec in TOPIC_SPECS])
        lags = await kafka.group_lags([g for g in await kafka.consumer_groups() if g.startswith(prefix)])
        kafka_error = None
    except (KafkaError, OSError, TimeoutError, LookupError):
        await page.request.app.state.kafka.reset()
        topics, lags, kafka_error = [], [], page.gettext(KAFKA_DOWN)
    by_name = {t.name: t for t in topics}
    dlqs = [(name, by_name.get(prefixed(name, prefix))) for name in _dlq_names()]
    return page.render(
        "ops/overview.html", readiness=readiness, topics=topics, lags=lags, dlqs=dlqs, kafka_error=kafka_error
    )


async def _readiness(backends: Backends) -> list[tuple[str, bool, dict[str, bool]]]:
    answers = await asyncio.gather(*(backends.ready(service) for service in Service))
    return [(str(service), ready, checks) for service, (ready, checks) in zip(Service, answers, strict=True)]


@router.get("/dlq/{topic}")
async def dead_letters(page: Operator, topic: str) -> Response:
    if topic not in _dlq_names():
        return page.render("error.html", 404, reason="refused", status=404, detail=topic)
    settings = page.request.app.state.settings
    try:
        letters = await ops.dead_letters(settings.kafka_bootstrap_servers, prefixed(topic, settings.kafka_topic_prefix))
        kafka_error = None
    except (KafkaError, OSError, TimeoutError, LookupError):
        letters, kafka_error = [], page.gettext(KAFKA_DOWN)
    return page.render("ops/dlq.html", topic=topic, letters=letters, kafka_error=kafka_error)


@router.post("/dlq/{topic}/replay")
async def replay(page: Operator, topic: str, event_id: Annotated[str, Form()] = "") -> Response:
    """One dead letter (by event id) or all of them, back to their original topic; consumers de-duplicate."""
    if topic not in _dlq_names():
        return page.render("error.html", 404, reason="refused", status=404, detail=topic)
    settings = page.request.app.state.settings
    full_name = prefixed(topic, settings.kafka_topic_prefix)
    replayed = await ops.replay_dead_letters(
        settings.kafka_bootstrap_servers, full_name, [event_id] if event_id else []
    )
    flash(page.request, page.gettext("%(count)s record(s) replayed to their original topic.", count=len(replayed)))
    return page.redirect(f"/ops/dlq/{topic}")

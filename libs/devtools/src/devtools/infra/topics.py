"""The platform's topics, provisioned from the contracts: for `up`, the test harness, the platform runner and
the bench (per-test or per-run prefixes)."""

from __future__ import annotations

import asyncio
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from contracts.topics import TOPIC_SPECS, prefixed
from devtools.infra.settings import InfraError


async def ensure_topics(bootstrap: str, prefix: str = "") -> None:
    """Create every topic of contracts.topics.TOPIC_SPECS (names under `prefix`) that does not exist yet.

    The broker runs with auto-creation off, so this is the one place topics come from: partition counts and
    configs (compaction of status definitions) as the contracts declare them, replication factor 1 (one node).
    Tests call it with a per-test prefix to get isolated topics. Returns once the topics have leaders.
    """
    specs = {prefixed(spec.topic, prefix): spec for spec in TOPIC_SPECS}
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="devtools-infra")
    await admin.start()
    try:
        missing = sorted(set(specs) - set(await admin.list_topics()))
        if not missing:
            return
        new_topics = [
            NewTopic(name, specs[name].partitions, replication_factor=1, topic_configs=specs[name].config)
            for name in missing
        ]
        response = await admin.create_topics(new_topics, timeout_ms=30_000)
        for topic, error_code, *_ in response.topic_errors:
            # Another process may have created it meanwhile: that is the state we want.
            if error_code not in (0, TopicAlreadyExistsError.errno):
                raise InfraError(f"creating topic {topic} failed: {for_code(error_code).__name__}")
        await wait_for_leaders(admin, missing)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with `prefix`: a test's namespace, at its teardown.

    Per-test topics otherwise pile up (thousands of partitions slow the broker's start and stop).
    An empty prefix is refused: it would delete the contract topics themselves.
    """
    if not prefix:
        raise ValueError("delete_topics needs a non-empty prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="devtools-infra")
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed, timeout_ms=30_000)
    finally:
        await admin.close()


async def wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of `topics` has a leader: a first send must not race the creation."""
    deadline = time.monotonic() + timeout_s
    while True:
        described = await admin.describe_topics(topics)
        if all(t["error_code"] == 0 and all(p["leader"] >= 0 for p in t["partitions"]) for t in described):
            return
        if time.monotonic() > deadline:
            raise InfraError(f"topics without leaders after {timeout_s:.0f} s: {topics}")
        await asyncio.sleep(0.2)

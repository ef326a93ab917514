"""A send-sms command with a NUL or a lone surrogate in a string is dead-lettered invalid_payload, not a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi import FastAPI

from devtools.pytest_plugin import wait_until


@pytest.mark.parametrize("bad", ["hello\x00", "hello\ud800"])
async def test_a_command_with_a_forbidden_character_is_dead_lettered_and_the_next_is_sent(
    kit: Any, notifier_app: FastAPI, bad: str
) -> None:
    refused, good = kit.command(order="o-bad"), kit.command(order="o-good")
    document = json.loads(refused.to_bytes())
    document["data"]["text"] = bad

    await kit.publish(raw=json.dumps(document).encode())
    await kit.publish(good)

    await kit.wait_status(good.id, "delivered")
    found: list[Any] = []

    async def dead_lettered() -> bool:
        nonlocal found
        found = await kit.dead_letters()
        return len(found) >= 1

    await wait_until(dead_lettered, what="the refused command on the DLQ")
    headers = {key: value.decode() for key, value in found[0].headers}
    assert headers["dlq-reason"] == "invalid_payload", headers
    assert headers["dlq-error"].startswith("data.text:"), headers
    assert await kit.status(refused.id) is None

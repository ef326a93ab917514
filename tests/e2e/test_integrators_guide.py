"""docs/integrators.md runs: its `bash` blocks, in order, as one script (a `python` block runs where it stands, or,
when its first line is a file name such as `# receiver.py`, is saved as that file for a later block to run),
against the running platform, and what they create is there. So the guide cannot drift from the product: a
renamed field, a route that moved or a scope that changed fails this test. Its webhook receiver is a real HTTP
server verifying every delivery with the `standardwebhooks` verifier; what it printed is checked here.

The test plays the partner admin of step 1: `$ADMIN_TOKEN` is an identity token of an API client holding
`clients:manage`, created with the platform's partner token as the console would."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import httpx

from contracts.topics import Topic, prefixed
from devtools.platform import Platform, free_port

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integrators.md"
PARTNER = "acme-guide"
FENCED = re.compile(r"^```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SAVED_AS = re.compile(r"^# ([\w-]+\.py)\n")  # a python block that is a file to save, not to run now
URL_VARIABLES = {
    "IDENTITY_URL": "identity",
    "REGISTRY_URL": "status-registry",
    "ORDERS_URL": "orders",
    "CAMPAIGNS_URL": "campaigns",
    "NOTIFIER_URL": "notifier",
    "WEBHOOKS_URL": "webhooks",
}


def guide_script(markdown: str) -> str:
    """The guide's commands as one bash script; each block announces itself, so a failure names its block."""
    parts = ["set -euo pipefail"]
    for number, (language, body) in enumerate(FENCED.findall(markdown), start=1):
        parts.append(f"echo '### block {number} ({language})'")
        if language == "bash":
            parts.append(body)
        elif saved := SAVED_AS.match(body):
            parts.append(f"cat > {saved.group(1)} <<'GUIDE_PYTHON'\n{body}GUIDE_PYTHON")
        else:  # run with this interpreter, which has the guide's Kafka client
            parts.append(f"\"$PYTHON\" - <<'GUIDE_PYTHON'\n{body}GUIDE_PYTHON")
    return "\n".join(parts) + "\n"


async def admin_token(platform: Platform) -> str:
    async with platform.client("identity", PARTNER) as partner:
        admin = await partner.post("/v1/clients", json={"name": "Admin", "scopes": ["clients:manage"]})
        assert admin.status_code == 201, admin.text
    async with httpx.AsyncClient(base_url=platform.url("identity"), timeout=10) as identity:
        answer = await identity.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(admin.json()["client_id"], admin.json()["client_secret"]),
        )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def test_the_guide_has_the_steps_it_promises() -> None:
    blocks = FENCED.findall(GUIDE.read_text())
    assert [language for language, _ in blocks].count("python") == 2
    commands = "\n".join(body for _, body in blocks)
    for step in ("/v1/clients", "/oauth/token", "/v1/statuses", "/v1/orders/o-1001/status", "Idempotency-Key",
                 "rotate-secret", "/revoke", "/v1/webhooks/endpoints", "verifier.verify(body, self.headers)",
                 "/messages?limit=1", "/resend"):  # fmt: skip
        assert step in commands, step
    text = GUIDE.read_text()
    assert "## 9. Webhooks" in text
    promises = (
        "**One order's status changes reach one endpoint in sequence.**",
        "5 seconds, 5 minutes, 30 minutes, 2 hours, 5 hours, 10 hours and 10 hours",
        "`Retry-After`",
        "`410 Gone`",
        "**5 days**",
    )
    for promise in promises:
        assert promise in text, promise


async def test_the_guides_commands_run_against_the_platform(platform: Platform, tmp_path: Path) -> None:
    env = {
        **platform.env("identity"),
        **{variable: platform.url(service) for variable, service in URL_VARIABLES.items()},
        "ADMIN_TOKEN": await admin_token(platform),
        "KAFKA_BOOTSTRAP_SERVERS": platform.infrastructure.kafka_bootstrap,
        "ORDERS_TOPIC": prefixed(Topic.ORDERS_INBOUND, platform.prefix),
        "PYTHON": sys.executable,
        "WEBHOOK_PORT": str(free_port()),
    }
    process = await asyncio.create_subprocess_exec(
        "bash", "-c", guide_script(GUIDE.read_text()), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output_bytes, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    output = output_bytes.decode()
    assert process.returncode == 0, f"the guide's commands failed:\n{output[-3000:]}"

    assert f"partner {PARTNER}" in output  # the partner id read from the token
    assert "payment: applied paid" in output  # the status POST, after the upsert it follows
    assert '"code":"unknown_status"' in output  # the error example answers the problem it shows
    async with platform.client("status-registry", PARTNER) as registry:
        statuses = (await registry.get("/v1/statuses")).json()["items"]
    assert {s["code"] for s in statuses} == {"accepted", "completed", "at_warehouse", "shipped", "unpaid", "paid"}
    async with platform.client("orders", PARTNER) as orders:
        by_rest = (await orders.get("/v1/orders/o-1001")).json()
        by_kafka = (await orders.get("/v1/orders/o-1002")).json()
    # Shipped: the change the webhooks step makes to be told about.
    assert {t: s["code"] for t, s in by_rest["statuses"].items()} == {
        "general": "accepted", "delivery": "shipped", "payment": "paid"
    }  # fmt: skip
    assert by_kafka["statuses"]["general"]["code"] == "accepted", by_kafka
    async with platform.client("identity", PARTNER) as identity:
        clients = (await identity.get("/v1/clients", params={"include_revoked": "true"})).json()["items"]
        erp = next(c for c in clients if c["name"] == "Warehouse ERP")
        audit = (await identity.get(f"/v1/clients/{erp['client_id']}/audit")).json()["items"]
    assert erp["state"] == "revoked" and erp["secret_rotated_at"] is not None, erp
    assert [entry["action"] for entry in audit] == ["created", "secret_rotated", "revoked"], audit
    assert "\nrevoked\n" in output and output.splitlines().count("Bearer") == 2  # the revoke; both secrets' tokens

    # The receiver verified the status change's delivery, then the resend of it under the same webhook-id.
    delivered = re.search(r"^(msg_\w+) order.status_changed o-1001 #5 delivery: at_warehouse -> shipped$", output, re.M)
    assert delivered is not None, output[-3000:]
    assert f"\n{delivered.group(1)} again: handled already\n" in output
    assert '"state":"succeeded","sequence":5,"attempts":[{"response_status":204' in output

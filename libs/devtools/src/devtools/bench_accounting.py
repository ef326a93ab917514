"""What a bench phase cost, measured around it: CPU seconds of every process on the path (the services, Kafka,
PostgreSQL, the load generator), how the machine's two cores spent the phase, peak memory per process, and the
services' batch sizes and durations from their metrics. Linux only (/proc)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devtools.platform import SERVICES, Platform

LOAD_GENERATOR = "load generator"
"""This process's CPU in a phase's figures: the bench's own producer and checks, not the platform's work."""

PIPELINE_METRICS = (
    "consumer_batch_records", "consumer_batch_seconds", "outbox_relay_batch_records", "outbox_relay_batch_seconds"
)  # fmt: skip
Counts = dict[str, tuple[float, float]]  # "service metric topic" -> (sum, count)


async def pipeline_counts(platform: Platform) -> Counts:
    """Sums and counts of the batch histograms of every service (consumers and outbox relays), all its instances
    together."""
    counts: dict[str, list[float]] = {}
    async with httpx.AsyncClient() as client:
        for service, instance in service_processes(platform):
            metrics = (await client.get(f"{platform.url(instance)}/metrics")).text
            for family in text_string_to_metric_families(metrics):
                if family.name not in PIPELINE_METRICS:
                    continue
                for sample in family.samples:
                    if sample.name.endswith(("_sum", "_count")):
                        topic = sample.labels.get("topic", "").removeprefix(platform.prefix)
                        name = f"{service} {family.name.replace('_records', '').replace('_seconds', '')} {topic}"
                        entry = counts.setdefault(f"{name.strip()}|{family.name.rsplit('_', 1)[1]}", [0.0, 0.0])
                        entry[0 if sample.name.endswith("_sum") else 1] += sample.value
    return {key: (v[0], v[1]) for key, v in counts.items()}


def batch_means(before: Counts, after: Counts) -> dict[str, dict[str, float]]:
    """Per consumer or relay, over a phase: batches, mean records per batch, mean milliseconds per batch."""
    means: dict[str, dict[str, float]] = {}
    for key, (total, count) in after.items():
        name, unit = key.split("|")
        total, count = total - before.get(key, (0.0, 0.0))[0], count - before.get(key, (0.0, 0.0))[1]
        if count <= 0:
            continue
        entry = means.setdefault(name, {"batches": count})
        entry["mean_records" if unit == "records" else "mean_ms"] = round(
            total / count * (1 if unit == "records" else 1000), 1
        )
    return means


def service_processes(platform: Platform) -> list[tuple[str, str]]:
    """(service, process name) of every running service process: `make bench INSTANCES=2` runs some twice."""
    return [(service, instance) for service in SERVICES for instance in platform.instances(service)]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu(platform: Platform) -> dict[str, float]:
    """CPU seconds so far of every process on the path: the services (all instances of each together), Kafka,
    PostgreSQL, this load generator."""
    usage = dict.fromkeys(SERVICES, 0.0)
    for service, instance in service_processes(platform):
        usage[service] += cpu_seconds(platform.processes[instance].pid)
    usage |= infrastructure_cpu()
    usage[LOAD_GENERATOR] = cpu_seconds(os.getpid())
    return usage


def infrastructure_cpu() -> dict[str, float]:
    """CPU seconds so far of the Kafka broker and of all PostgreSQL processes."""
    usage = {"kafka": 0.0, "postgresql": 0.0}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            command = (proc / "cmdline").read_bytes()
            owner = "kafka" if b"kafka.Kafka" in command else "postgresql" if command.startswith(b"postgres") else None
            if owner:
                usage[owner] += cpu_seconds(int(proc.name))
    return usage


@contextlib.contextmanager
def cpu_used(platform: Platform, into: dict[str, Any]) -> Iterator[None]:
    """CPU seconds each process spent while the block ran (the machine has two cores: that is the budget), and
    how the whole machine spent it (`activity_shares`)."""
    before, activity, started = machine_cpu(platform), machine_activity(), time.monotonic()
    yield
    after, activity_after, wall_s = machine_cpu(platform), machine_activity(), time.monotonic() - started
    into["cpu_seconds"] = {name: round(after[name] - before.get(name, 0.0), 2) for name in after}
    into["wall_seconds"] = round(wall_s, 2)
    into["machine"] = activity_shares(activity, activity_after, wall_s)


def machine_activity() -> dict[str, int]:
    """The whole machine's counters so far (/proc/stat): CPU ticks by kind, context switches."""
    lines = Path("/proc/stat").read_text().splitlines()
    user, nice, system, idle, iowait, irq, softirq = (int(n) for n in lines[0].split()[1:8])
    switches = next(int(line.split()[1]) for line in lines if line.startswith("ctxt "))
    return {"user": user + nice, "system": system + irq + softirq, "idle": idle + iowait, "switches": switches}


def activity_shares(before: dict[str, int], after: dict[str, int], wall_s: float) -> dict[str, float]:
    """How the two cores spent a phase (user code, the kernel, idle) and how often the machine switched tasks:
    every wake-up of a process or thread is a context switch, and on this machine each one is expensive."""
    ticks = {kind: after[kind] - before[kind] for kind in ("user", "system", "idle")}
    total = sum(ticks.values()) or 1
    shares = {f"{kind}_share": round(n / total, 3) for kind, n in ticks.items()}
    return shares | {"context_switches_per_second": round((after["switches"] - before["switches"]) / wall_s)}


def process_usage(pid: int) -> dict[str, float]:
    """CPU seconds and peak RSS of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    status = Path(f"/proc/{pid}/status").read_text()
    peak_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return {"cpu_seconds": round(cpu, 2), "peak_rss_mb": round(peak_kb / 1024, 1)}

"""Tracing across Kafka: one trace follows an order from the upstream event to the SMS.

Consumers work in batches, but a trace is about one message: `consume_span(record)` opens a span for
one record as the child of the context its producer put in the W3C `traceparent` header, and every
outbox record written inside it carries that span's context on (`trace_headers`, used by
`servicekit.outbox.record_for`). The next service continues the same trace from there.

Exporter (`TRACES_EXPORTER`): `console` (default; JSON spans appended to `TRACES_FILE`, where `{service}` is
replaced by the service name, or stdout when unset), `otlp` (OTLP over HTTP to
`OTEL_EXPORTER_OTLP_ENDPOINT`), or `none`.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)


class _Spans:
    """Whether this process records spans, once `setup_tracing` decided it (None: ask OpenTelemetry)."""

    recorded: bool | None = None


def setup_tracing(service: str, exporter: str = "console", traces_file: str | None = None) -> None:
    """Install the process-wide tracer provider once, at service start."""
    _Spans.recorded = exporter != "none"
    if exporter == "none":
        return
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter, traces_file, service)))
    trace.set_tracer_provider(provider)


def _exporter(kind: str, traces_file: str | None, service: str) -> SpanExporter:
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint and headers from the standard OTEL_EXPORTER_OTLP_* variables
    if traces_file:
        path = Path(traces_file.format(service=service))  # one file per service when it says {service}
        path.parent.mkdir(parents=True, exist_ok=True)
        out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        return ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + os.linesep)
    return ConsoleSpanExporter()


@functools.cache
def tracer() -> trace.Tracer:
    # A proxy until `setup_tracing` installs the provider, then the provider's own: safe to keep for good.
    return trace.get_tracer("order-status-platform")


def _recording() -> bool:
    """Whether a tracer provider is installed (an exporter is set); else spans would be no-ops. Known once
    `setup_tracing` ran: asking OpenTelemetry reads the environment on every call until a provider is set."""
    if _Spans.recorded is None:
        return isinstance(trace.get_tracer_provider(), TracerProvider)
    return _Spans.recorded


def _header_carrier(headers: Any) -> dict[str, str]:
    return {k: v.decode(errors="replace") for k, v in (headers or ()) if isinstance(v, bytes | bytearray)}


@contextmanager
def consume_span(name: str, headers: Any, attributes: Mapping[str, str | int] | None = None) -> Iterator[Span]:
    """A CONSUMER span for one record, continuing the trace its headers carry; sets the correlation id."""
    carrier = _header_carrier(headers)
    parent = propagate.extract(carrier)
    token = correlation_id.set(carrier.get("correlationid") or carrier.get("ce_id"))
    try:
        if _recording():
            with tracer().start_as_current_span(
                name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
            ) as span:
                yield span
        else:
            # What a no-op tracer does (the parent's context becomes current, so outgoing records carry the
            # trace on), without its span and context-manager layers: a third of the cost, once per record.
            span = trace.get_current_span(parent)
            attached = otel_context.attach(trace.set_span_in_context(span))
            try:
                yield span
            finally:
                otel_context.detach(attached)
    finally:
        correlation_id.reset(token)


def trace_headers() -> dict[str, str]:
    """The current trace context as W3C headers (`traceparent`, `tracestate`) for an outgoing record."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class CorrelationFilter(logging.Filter):
    """Adds `correlation_id` and `trace_id` to every log record, for JSON logs that join up across services."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.correlation_id = correlation_id.get()
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        return True

"""`consume_span`: one record's span continues the trace its headers carry, whether spans are exported or not."""

from __future__ import annotations

import json
import subprocess
import sys

from opentelemetry import trace

from servicekit.tracing import consume_span, correlation_id, trace_headers

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN_ID = "b7ad6b7169203331"
HEADERS = [("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01".encode()), ("correlationid", b"corr-1")]


def test_without_an_exporter_the_record_s_trace_is_carried_on_and_nothing_outlives_the_span() -> None:
    before = trace.get_current_span()
    with consume_span("test consume", HEADERS, {"order_id": "o-1"}):
        inside = trace_headers()
        assert correlation_id.get() == "corr-1"
    # No span of ours: what goes out carries the record's own traceparent on, unchanged.
    assert inside["traceparent"] == f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"
    assert correlation_id.get() is None
    assert trace.get_current_span() is before and trace_headers() == {}


def test_a_record_without_trace_headers_starts_no_trace() -> None:
    with consume_span("test consume", [("ce_id", b"event-1")]):
        assert "traceparent" not in trace_headers()
        assert correlation_id.get() == "event-1"


# In a child process: the tracer provider is process-wide and can be installed once.
RECORDING = """
import json, sys
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servicekit.tracing import consume_span, trace_headers

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
headers = [(key, value.encode()) for key, value in json.loads(sys.argv[1])]
with consume_span("test consume", headers, {"order_id": "o-1"}):
    outgoing = trace_headers()["traceparent"]
(span,) = exporter.get_finished_spans()
json.dump({
    "outgoing": outgoing, "name": span.name, "kind": span.kind.name, "attributes": dict(span.attributes),
    "trace_id": format(span.context.trace_id, "032x"), "span_id": format(span.context.span_id, "016x"),
    "parent_id": format(span.parent.span_id, "016x"),
}, sys.stdout)
"""


def test_with_an_exporter_a_consumer_span_is_recorded_as_the_child_of_the_record_s_context() -> None:
    headers = json.dumps([(key, value.decode()) for key, value in HEADERS])
    done = subprocess.run(
        [sys.executable, "-c", RECORDING, headers], capture_output=True, text=True, timeout=60, check=True
    )
    span = json.loads(done.stdout)
    assert span["name"] == "test consume" and span["kind"] == "CONSUMER"
    assert span["attributes"] == {"order_id": "o-1"}
    assert span["trace_id"] == TRACE_ID and span["parent_id"] == PARENT_SPAN_ID
    # What goes out continues from the new span.
    assert span["outgoing"] == f"00-{TRACE_ID}-{span['span_id']}-01"

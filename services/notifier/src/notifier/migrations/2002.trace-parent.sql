-- The W3C traceparent of the command's intake: the dispatcher sends later, in the same trace.
ALTER TABLE messages ADD COLUMN trace_parent text;

-- A failing endpoint is paused (a circuit breaker): after a failed attempt nothing is sent to it before
-- paused_until, then one message probes it (the claim that takes the probe sets paused_until to the probe's lease
-- end, so no other instance probes meanwhile); a success clears it and the endpoint gets all its slots again. Null:
-- not paused. The claim filters endpoints on it before it reads any of their messages.
ALTER TABLE endpoints ADD COLUMN paused_until timestamptz;

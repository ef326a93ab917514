-- No JIT compilation for this database's statements. The claim's estimated cost grows with the due backlog (a sort
-- over every endpoint's lateral scan: about 967,000 with a dead endpoint's 100,000 messages), far past
-- jit_above_cost (100,000) and the inlining and optimizing thresholds (500,000), so PostgreSQL compiled it on every
-- claim: 724 ms of JIT for 1.5 ms of execution (EXPLAIN ANALYZE during the bench), and the dispatcher, which claims
-- one round at a time, delivered nothing meanwhile. Every statement here is a short indexed one: JIT never pays.
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET jit = off', current_database()); END $$;

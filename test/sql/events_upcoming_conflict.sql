-- A renewal.upcoming already written for its period is skipped (its
-- unique index, event_renewal_upcoming_key, as ON CONFLICT ... DO NOTHING
-- on that index alone); any other conflict is an error, as for a plain
-- INSERT (issue 20, E1; review h-rev3).  Here the event's primary key: a
-- row written with an explicit id that the sequence hands out next (a
-- sequence set back by hand, a careless restore) must not make the new
-- event vanish silently.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
BEGIN;
-- a first row takes the next id of the node that stores the tenant's
-- events (on Citus its worker numbers it, event_numbered_here: the id
-- returned is the worker's); the second holds the id that node hands out next
INSERT INTO event (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
VALUES (nextval('event_id_seq'), 'payment.recorded', 1, 2, '{"version":1}', '2026-01-01', pg_current_xact_id(), 99)
RETURNING id + 1 AS taken \gset
INSERT INTO event (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
VALUES (:taken, 'payment.recorded', 1, 2, '{"version":1}', '2026-01-01', pg_current_xact_id(), 99);
SAVEPOINT s;
-- the id the sequence gives next is the row's above: 23505, nothing skipped
-- (its DETAIL, the id, left out: the sequence is shared by the files; on
-- Citus the shard's suffix of the constraint's name too)
SELECT regexp_replace(split_part(pg_temp.error_of($$SELECT write_events('{99}', '{renewal.upcoming}', '{1}', '{2}',
                                              ARRAY['{"version":1,"renews_at":"2026-02-01T00:00:00Z"}'::jsonb],
                                              '{2026-01-01}')$$), E'\n', 1), '_1\d{5}"', '"') AS error;
ROLLBACK TO s;
-- the period's own conflict is still skipped: the second write returns no id
SELECT cardinality(write_events('{99}', '{renewal.upcoming}', '{1}', '{2}',
                                ARRAY['{"version":1,"renews_at":"2026-03-01T00:00:00Z"}'::jsonb], '{2026-01-01}')) AS first,
       cardinality(write_events('{99}', '{renewal.upcoming}', '{1}', '{2}',
                                ARRAY['{"version":1,"renews_at":"2026-03-01T00:00:00Z"}'::jsonb], '{2026-01-01}')) AS again;
SELECT count(*) AS upcoming FROM event WHERE tenant_id = 99 AND type = 'renewal.upcoming';
ROLLBACK;

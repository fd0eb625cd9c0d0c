-- The guard without a meter (issue 21, U1): the counter's UPDATE of a
-- feature without a meter leaves its accumulators (peak, integral, since)
-- out; whether the feature has a meter is cached with the registration,
-- and a meter created, changed or removed takes effect at once (the
-- cache invalidated by the meter's trigger).  A new meter starts the
-- accumulators from the use of then.  move_usage moves only a counter of
-- its tenant (P0002).  The other session: test/specs/usage_meter_cache.spec.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- the clock set with SET LOCAL reaches the guard on a Citus worker too
-- (docs/citus.md); on a single server it is this session's already
SET LOCAL citus.propagate_set_commands = 'local';

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central');
INSERT INTO plan (code, product, name) VALUES ('central_basic', 'central', 'Basic');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('central_basic', '1 month', 30);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('central_basic', 'hosts', NULL, false), ('central_basic', 'calls', NULL, false);
INSERT INTO account (tenant_id, id, name) VALUES (1, 1, 'Acme IT'), (2, 2, 'Other tenant');
SELECT subscribe(1, 'central_basic', '1 month', 1, '2026-03-01') IS NOT NULL AS subscribed;
CREATE TABLE public.host (id bigserial, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.host
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.host', 'hosts', 'account_id');

-- the meters' clock, fixed: the figures are exact
CREATE FUNCTION pg_temp.figures() RETURNS TABLE (used bigint, peak bigint, integral numeric, since timestamptz)
LANGUAGE sql AS $$
    SELECT u.used, u.peak, u.integral, u.since FROM subscription.usage_counter AS u
     WHERE u.account_id = 1 AND u.feature = 'hosts'
$$;

-- U1: no meter: the counter moves, its accumulators do not (one row, and
-- a statement of several rows: both the guard's paths)
SET LOCAL subscription.clock = '2026-03-02 00:00';
INSERT INTO host (account_id) VALUES (1);
INSERT INTO host (account_id) VALUES (1), (1);
SELECT * FROM pg_temp.figures();
SET LOCAL subscription.clock = '2026-03-02 01:00';
INSERT INTO host (account_id) VALUES (1);
DELETE FROM host WHERE id IN (SELECT min(id) FROM host);
INSERT INTO host (account_id) VALUES (1), (1);
SELECT * FROM pg_temp.figures();
-- current_usage shows no peak or integral where none is kept
SELECT feature, aggregation, used, peak, integral, time_weighted FROM current_usage WHERE account_id = 1;

-- U1: a meter created after the guard cached the table: at once, in this
-- session; its accumulators start from the use of now (5 hosts)
SET LOCAL subscription.clock = '2026-03-02 02:00';
SELECT meter('public.host', 'hosts', 'peak');
SELECT * FROM pg_temp.figures();
SET LOCAL subscription.clock = '2026-03-02 03:00';
INSERT INTO host (account_id) VALUES (1);
-- 5 hosts for an hour: 18000 row-seconds; the peak 6
SELECT * FROM pg_temp.figures();
SET LOCAL subscription.clock = '2026-03-02 04:00';
INSERT INTO host (account_id) VALUES (1), (1);
-- + 6 hosts for an hour: 39600; the peak 8
SELECT * FROM pg_temp.figures();
SELECT feature, aggregation, used, peak, integral, time_weighted FROM current_usage WHERE account_id = 1;

-- a meter changed: the accumulators go on, nothing starts again
SET LOCAL subscription.clock = '2026-03-02 05:00';
SELECT meter('public.host', 'hosts', 'time_weighted', '1 hour');
SELECT * FROM pg_temp.figures();
DELETE FROM host WHERE id IN (SELECT max(id) FROM host);
-- + 8 hosts for an hour: 68400; 7 hosts from 05:00
SELECT * FROM pg_temp.figures();

-- U1: the meter removed (the extension's owner): at once, the guard
-- leaves the accumulators as they were
SET LOCAL subscription.clock = '2026-03-02 06:00';
DELETE FROM meter WHERE feature = 'hosts';
INSERT INTO host (account_id) VALUES (1);
INSERT INTO host (account_id) VALUES (1), (1);
SELECT * FROM pg_temp.figures();
SELECT feature, aggregation, used, peak, integral FROM current_usage WHERE account_id = 1;

-- and a meter again: from the use of then (10 hosts), none of the hours without one
SET LOCAL subscription.clock = '2026-03-02 07:00';
SELECT meter('public.host', 'hosts', 'count');
SET LOCAL subscription.clock = '2026-03-02 07:30';
DELETE FROM host WHERE id IN (SELECT max(id) FROM host);
-- 10 hosts for half an hour: 18000
SELECT * FROM pg_temp.figures();

-- usage without rows keeps its accumulators, as before
SET LOCAL subscription.clock = '2026-03-02 08:00';
SELECT record_usage(1, 'calls', 4, 'k1', '2026-03-02 08:00');
SELECT record_usage(1, 'calls', 3, 'k2', '2026-03-02 09:00');
SELECT used, peak, integral FROM usage_counter WHERE account_id = 1 AND feature = 'calls';

-- move_usage (internal) moves a counter only in its tenant: account 1 is
-- not of tenant 2, whatever the feature; P0002, nothing moved
SELECT pg_temp.error_of($$SELECT subscription.move_usage(1, 'calls', 5, 2, '2026-03-02 10:00')$$);
SELECT pg_temp.error_of($$SELECT subscription.move_usage(1, 'hosts', 5, 2, '2026-03-02 10:00')$$);
SELECT pg_temp.error_of($$SELECT subscription.move_usage(1, 'hosts', -5, 2, '2026-03-02 10:00')$$);
SELECT feature, used FROM usage_counter WHERE account_id = 1 ORDER BY feature;
-- in its tenant it does
SELECT move_usage(1, 'calls', 5, 1, '2026-03-02 10:00');

ROLLBACK;

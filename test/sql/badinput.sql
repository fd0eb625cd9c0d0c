-- What test/badinput.sh found (issue 15, item 10): raw errors of internal
-- helpers given bad input, now clear SQLSTATEs; nothing written.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO product (code, name) VALUES ('desk', 'Desk');
INSERT INTO plan (code, product, name, rank) VALUES ('team', 'desk', 'Team', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('team', 'rooms', 5);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme');
CREATE TABLE public.bad_room (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.bad_room
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.bad_room', 'rooms');

-- recount_usage of an unknown account: P0002, not the raw foreign key
-- error of usage_counter (which named usage_counter_account_id_fkey)
SELECT pg_temp.error_of($$SELECT recount_usage('public.bad_room', 'rooms', 999999)$$);
SELECT pg_temp.error_of($$SELECT recount_usage('public.bad_room', 'rooms', -1)$$);
SELECT count(*) AS counters FROM usage_counter;
-- a known account without rows: nothing to write (a missing counter counts 0)
SELECT recount_usage('public.bad_room', 'rooms', 1) AS counters_changed;

-- period_containing: a zero or negative cycle, an infinite anchor or time:
-- 22023 as nth_period (was 22012 division by zero, 22008 out of range)
SELECT pg_temp.error_of($$SELECT period_containing('2026-01-01', '0', '2026-02-01')$$);
SELECT pg_temp.error_of($$SELECT period_containing('2026-01-01', '-1 month', '2026-02-01')$$);
SELECT pg_temp.error_of($$SELECT period_containing('infinity', '1 month', '2026-02-01')$$);
SELECT pg_temp.error_of($$SELECT period_containing('2026-01-01', '1 month', '-infinity')$$);
SELECT period_containing('2026-01-31', '1 month', '2026-03-30') AS k;

-- change_rights with a NULL argument: 22004 (was 42601, a syntax error of
-- the GRANT it built)
SELECT pg_temp.error_of($$SELECT change_rights(NULL, 'application', true)$$);
SELECT pg_temp.error_of($$SELECT change_rights(current_user::regrole, 'application', NULL)$$);
ROLLBACK;

-- shards (issue 17, item 3): what the guards do to find their table, seen
-- on a single server, where every table is its own logical table.  The
-- same code on Citus shards is checked by test/citus.sh.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_starter', 'crowd', 'Starter', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('ch_starter', 'rooms', 2, false), ('ch_starter', 'domains', 1, false);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets Ltd'), (2, 2, 'Gigs Inc');
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
SELECT subscribe(2, 'ch_starter', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;

-- no Citus here: not a worker, and the event triggers do their work
SELECT on_citus_worker() AS on_citus_worker;

-- limited_table names its table, schema-qualified and quoted
CREATE SCHEMA "Rooms App";
CREATE TABLE "Rooms App".room (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
SELECT enforce_limit('"Rooms App".room', 'rooms');
SELECT relation_name, relation_name = relation_name('"Rooms App".room') AS same FROM limited_table;

-- a renamed table keeps its registration, enforced, and its name follows
ALTER TABLE "Rooms App".room RENAME TO hall;
SELECT relation_name FROM limited_table;
INSERT INTO "Rooms App".hall (account_id) VALUES (1), (1);
SELECT pg_temp.error_of($$INSERT INTO "Rooms App".hall (account_id) VALUES (1)$$);  -- 23514
ALTER TABLE "Rooms App".hall SET SCHEMA public;
SELECT relation_name FROM limited_table;
SELECT pg_temp.error_of($$INSERT INTO public.hall (account_id) VALUES (1)$$);       -- 23514
ALTER SCHEMA "Rooms App" RENAME TO rooms_app;
ALTER TABLE public.hall SET SCHEMA rooms_app;
ALTER SCHEMA rooms_app RENAME TO "Rooms App 2";
SELECT relation_name, relation::text = relation_name AS in_step FROM limited_table;
INSERT INTO "Rooms App 2".hall (account_id) VALUES (2);
SELECT usage(1, 'rooms') AS tickets, usage(2, 'rooms') AS gigs;

-- a table named like a shard (a name and a number) is itself without
-- Citus: its own registration counts, another table's feature is refused
CREATE TABLE public.domain_102029 (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
SELECT enforce_limit('public.domain_102029', 'domains');
INSERT INTO public.domain_102029 (account_id) VALUES (1);
SELECT pg_temp.error_of($$INSERT INTO public.domain_102029 (account_id) VALUES (1)$$); -- 23514
SELECT usage(1, 'domains') AS tickets_domains;
CREATE TABLE public.hall_102030 (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
CREATE TRIGGER by_hand AFTER INSERT ON public.hall_102030 REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('rooms');
SELECT pg_temp.error_of($$INSERT INTO public.hall_102030 (account_id) VALUES (2)$$);  -- 42704

-- TRUNCATE of a table (not a shard) resets the feature's counters of
-- every account
SAVEPOINT before_truncate;
TRUNCATE "Rooms App 2".hall;
SELECT usage(1, 'rooms') AS tickets, usage(2, 'rooms') AS gigs;
ROLLBACK TO SAVEPOINT before_truncate;

-- license_guard guards subscription.license alone: a table of the
-- extension's schema named like a shard of it is refused (39P01)
CREATE TABLE subscription.license_102031 (LIKE subscription.license INCLUDING DEFAULTS);
CREATE TRIGGER by_hand AFTER INSERT ON subscription.license_102031 REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
SELECT pg_temp.error_of($$INSERT INTO subscription.license_102031 SELECT * FROM subscription.license$$); -- 39P01
DROP TABLE subscription.license_102031;

-- a registration restored from a 1.0 dump (no name), even in replica
-- mode as restores run, is named from its regclass
SAVEPOINT before_restore;
SET session_replication_role = replica;
INSERT INTO limited_table (relation, feature, account_column, on_downgrade)
VALUES ('"Rooms App 2".hall', 'restored_feature', 'account_id', 'drop_newest');
RESET session_replication_role;
SELECT feature, relation_name FROM limited_table WHERE feature = 'restored_feature';
ROLLBACK TO SAVEPOINT before_restore;

-- a dropped table takes its registration and counters along
DROP TABLE "Rooms App 2".hall;
SELECT feature, relation_name FROM limited_table ORDER BY position;
SELECT count(*) AS rooms_counters FROM usage_counter WHERE feature = 'rooms';

ROLLBACK;

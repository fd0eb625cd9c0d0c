-- The catalog's limit version (issue 17, item 3): a catalog change reaches
-- the usage counters without a write to them.  Every catalog row a limit is
-- computed from is stamped; each counter stores the version its limit was
-- computed at; the guard recomputes a limit whose version moved.  On Citus
-- the catalog triggers refresh no counter (a reference table's trigger
-- writes no distributed table): here their eager refresh is disabled to
-- take that path, and the guard alone keeps the limits.  The catalog's
-- rules take advisory locks, no row lock on another catalog table.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler'), ('support', 'Zendesk Support'),
                                        ('zd_suite', 'Zendesk Suite');
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter', 'crowd', 'Starter', 1), ('support_pro', 'support', 'Support Professional', 2),
    ('suite_pro', 'zd_suite', 'Suite Professional', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES
    ('ch_starter', '1 month', 49), ('support_pro', '1 month', 49), ('suite_pro', '1 month', 69);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('ch_starter', 'rooms', 2), ('ch_starter', 'room_rate', 100), ('support_pro', 'macros', 2);
INSERT INTO addon (code, product, name, feature, units) VALUES ('ch_rooms5', 'crowd', '5 more rooms', 'rooms', 5);
INSERT INTO suite_component (suite_plan, plan) VALUES ('suite_pro', 'support_pro');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Globex');
CREATE SCHEMA app;
CREATE TABLE app.room (id int, account_id bigint NOT NULL, rate int, PRIMARY KEY (account_id, id));
CREATE TABLE app.macro (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'app.room app.macro'
\i test/sql/include/app_tables.psql
SELECT enforce_limit('app.room', 'rooms');
SELECT enforce_limit('app.room', 'room_rate', 'account_id', 'cap', NULL, 'rate');
SELECT enforce_limit('app.macro', 'macros');
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-01-01') AS starter \gset
SELECT subscribe(2, 'suite_pro', '1 month', 1, '2026-01-01') AS suite \gset

-- every catalog row a limit is computed from is stamped with a hash of its
-- content, by column name: the same row, the same stamp on every node
-- (Citus); the catalog's version is (rows, exclusive or of the stamps)
SELECT l.plan, l.feature, l.limit_stamp <> 0 AS stamped,
       l.limit_stamp = hashtextextended((to_jsonb(l) - 'limit_stamp')::text, 0) AS of_its_content
  FROM plan_limit AS l ORDER BY 1, 2;
SELECT limit_catalog_version() = ARRAY[(SELECT count(*) FROM plan_limit) + (SELECT count(*) FROM addon)
                                       + (SELECT count(*) FROM suite_component) + (SELECT count(*) FROM plan),
                                       (SELECT bit_xor(limit_stamp) FROM plan_limit) # (SELECT bit_xor(limit_stamp) FROM addon)
                                       # (SELECT bit_xor(limit_stamp) FROM suite_component) # (SELECT bit_xor(limit_stamp) FROM plan)]
       AS rows_and_stamps;
-- a row written again as it was: the same version
SELECT limit_catalog_version() AS before \gset
UPDATE addon SET name = 'Five more rooms';
UPDATE addon SET name = '5 more rooms';
SELECT limit_catalog_version() = :'before' AS same_content_same_version;
SELECT limit_catalog_version() AS before \gset
UPDATE addon SET name = 'Five more rooms';
SELECT limit_catalog_version() <> :'before' AS an_update_moves_it,
       (limit_catalog_version())[1] = (:'before'::bigint[])[1] AS same_rows;
SELECT limit_catalog_version() AS before \gset
INSERT INTO plan_limit (plan, feature, value) VALUES ('ch_starter', 'gone', 1);
SELECT limit_catalog_version() AS inserted \gset
DELETE FROM plan_limit WHERE feature = 'gone';
-- a deletion counts; the same rows are the same version
SELECT limit_catalog_version() <> :'inserted' AS a_deletion_moves_it,
       limit_catalog_version() = :'before' AS same_rows_same_version;
-- a plan's version is stamped (a suite counts its plans at their current version)
SELECT limit_catalog_version() AS before \gset
UPDATE plan SET version = version WHERE code = 'suite_pro';
SELECT limit_catalog_version() = :'before' AS same_version_no_stamp;
UPDATE plan SET version = version + 1 WHERE code = 'suite_pro';
SELECT limit_catalog_version() <> :'before' AS new_version_stamped;

INSERT INTO app.room VALUES (1, 1, 10);
INSERT INTO app.macro VALUES (1, 2);
-- a counter stores the version its limit was computed at
-- (the catalog's version read first: on Citus a query of usage_counter runs on
-- the workers' shards, where a function reading the catalog is refused)
SELECT limit_catalog_version() AS catalog_version \gset
SELECT account_id, feature, used, limit_value, limit_version = :'catalog_version' AS current
  FROM usage_counter ORDER BY 1, 2;

-- the catalog's triggers refresh no counter, as on Citus
ALTER TABLE plan_limit DISABLE TRIGGER plan_limit_refresh_limits;
ALTER TABLE plan_limit DISABLE TRIGGER plan_limit_refresh_limits_update;
ALTER TABLE plan_limit DISABLE TRIGGER plan_limit_refresh_limits_delete;
ALTER TABLE addon DISABLE TRIGGER addon_refresh_limits;
ALTER TABLE suite_component DISABLE TRIGGER suite_component_refresh_limits;
ALTER TABLE suite_component DISABLE TRIGGER suite_component_refresh_limits_update;
ALTER TABLE suite_component DISABLE TRIGGER suite_component_refresh_limits_delete;

-- a limit lowered: the counter still stores 2, the next write meets 1
-- (the row held by the subscription goes, a new one from version 1 on)
DELETE FROM plan_limit WHERE plan = 'ch_starter' AND feature = 'rooms';
INSERT INTO plan_limit (plan, feature, value) VALUES ('ch_starter', 'rooms', 1);
SELECT limit_catalog_version() AS catalog_version \gset
SELECT limit_value AS stored, limit_version = :'catalog_version' AS current
  FROM usage_counter WHERE account_id = 1 AND feature = 'rooms';
SELECT pg_temp.error_of($$INSERT INTO app.room VALUES (2, 1, 10)$$);
-- verify() finds nothing wrong: the guard checks the recomputed limit
SELECT * FROM verify();
-- a write that the limit admits stores the recomputed limit and its version
DELETE FROM app.room WHERE id = 1;
SELECT limit_catalog_version() AS catalog_version \gset
SELECT used, limit_value AS stored, limit_version = :'catalog_version' AS current
  FROM usage_counter WHERE account_id = 1 AND feature = 'rooms';

-- a limit raised: the next write meets it (an UPDATE would make a new
-- version of the plan, which the subscription does not hold)
DELETE FROM plan_limit WHERE plan = 'ch_starter' AND feature = 'rooms';
INSERT INTO plan_limit (plan, feature, value) VALUES ('ch_starter', 'rooms', 3);
INSERT INTO app.room VALUES (1, 1, 10), (2, 1, 10), (3, 1, 10);
SELECT pg_temp.error_of($$INSERT INTO app.room VALUES (4, 1, 10)$$);

-- an add-on's units: 3 + 5 rooms with a batch, then 3 + 1
INSERT INTO addon_batch (tenant_id, subscription_id, addon, quantity) VALUES (1, :starter, 'ch_rooms5', 1);
INSERT INTO app.room VALUES (4, 1, 10), (5, 1, 10);
UPDATE addon SET units = 1 WHERE code = 'ch_rooms5';
SELECT limit_value AS stored FROM usage_counter WHERE account_id = 1 AND feature = 'rooms';
SELECT pg_temp.error_of($$INSERT INTO app.room VALUES (6, 1, 10)$$);
-- the refusal names the recomputed limit, and the counter is the same
SELECT used, limit_value AS stored FROM usage_counter WHERE account_id = 1 AND feature = 'rooms';

-- cap (no use kept): the value written is checked against the recomputed limit
UPDATE app.room SET rate = 100 WHERE id = 1;
DELETE FROM plan_limit WHERE plan = 'ch_starter' AND feature = 'room_rate';
INSERT INTO plan_limit (plan, feature, value) VALUES ('ch_starter', 'room_rate', 50);
SELECT pg_temp.error_of($$UPDATE app.room SET rate = 60 WHERE id = 1$$);
UPDATE app.room SET rate = 50 WHERE id = 1;

-- Z3: a suite's included plan's limits count while it is included (2
-- macros of support_pro), and not once it is not
DELETE FROM suite_component;
SELECT pg_temp.error_of($$INSERT INTO app.macro VALUES (2, 2)$$);
INSERT INTO suite_component (suite_plan, plan) VALUES ('suite_pro', 'support_pro');
INSERT INTO app.macro VALUES (2, 2);
SELECT pg_temp.error_of($$INSERT INTO app.macro VALUES (3, 2)$$);
SELECT * FROM verify();

-- with the catalog's triggers on (a single server), the counters of the
-- accounts concerned follow at once, one account at a time
ALTER TABLE plan_limit ENABLE TRIGGER plan_limit_refresh_limits;
ALTER TABLE plan_limit ENABLE TRIGGER plan_limit_refresh_limits_update;
ALTER TABLE plan_limit ENABLE TRIGGER plan_limit_refresh_limits_delete;
ALTER TABLE addon ENABLE TRIGGER addon_refresh_limits;
ALTER TABLE suite_component ENABLE TRIGGER suite_component_refresh_limits;
ALTER TABLE suite_component ENABLE TRIGGER suite_component_refresh_limits_update;
ALTER TABLE suite_component ENABLE TRIGGER suite_component_refresh_limits_delete;
UPDATE addon SET units = 2 WHERE code = 'ch_rooms5';
SELECT limit_value AS stored_at_once FROM usage_counter WHERE account_id = 1 AND feature = 'rooms';
DELETE FROM suite_component;
SELECT limit_value AS stored_at_once FROM usage_counter WHERE account_id = 2 AND feature = 'macros';

-- the catalog's rules lock no catalog row: their advisory locks, keyed by
-- the plan, are all this transaction holds
SELECT count(*) >= 1 AS advisory_locks FROM pg_locks
 WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted;
ROLLBACK;

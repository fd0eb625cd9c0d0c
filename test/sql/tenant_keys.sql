-- The tenant key (issue 17, docs/design.md#tenant-keys): every tenant table
-- carries tenant_id, the root account's id; an account and its sub-accounts
-- (K7) share it; a row inserted without it takes its account's or
-- subscription's; create_account() names it, as an INSERT on Citus must;
-- distribute() needs Citus.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO product (code, name) VALUES ('rainbow', 'Rainbow');
INSERT INTO plan (code, product, name, rank, kind) VALUES ('rb_business', 'rainbow', 'Business', 1, 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('rb_business', '1 month', 6.00, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('rb_seats', 'rainbow', '5 seats', 'licenses', 5);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('rb_seats', '1 month', 20);
INSERT INTO plan_addon (plan, addon) VALUES ('rb_business', 'rb_seats');

-- a root account is its own tenant; a sub-account (K7), inserted or created,
-- is its parent's, and so is a sub-account of a sub-account
INSERT INTO account (id, name) VALUES (1, 'Initech'), (2, 'Globex');
INSERT INTO account (id, name, parent_id) VALUES (3, 'Initech EMEA', 1);
SELECT setval('account_id_seq', 3) AS ids_issued;
SELECT create_account('Initech Lyon', 3) AS lyon \gset
SELECT create_account('Umbrella') AS umbrella \gset
SELECT id, name, parent_id, tenant_id FROM account ORDER BY id;

-- a row inserted without the key takes the tenant of what it names
INSERT INTO member (id, account_id, external_id, role) VALUES (11, 1, 'ann', 'owner'), (31, 3, 'emea', 'owner');
SELECT subscribe(3, 'rb_business', '1 month', 2, '2026-01-01') AS emea_sub \gset
SELECT purchase_addon(:emea_sub, 'rb_seats', 1, '2026-01-10') AS batch \gset
SELECT license_consume(:emea_sub, 31);
SELECT 'member' AS t, tenant_id FROM member WHERE id = 31
UNION ALL SELECT 'subscription', tenant_id FROM subscription WHERE id = :emea_sub
UNION ALL SELECT 'addon_batch', tenant_id FROM addon_batch WHERE id = :batch
UNION ALL SELECT 'license', tenant_id FROM license WHERE subscription_id = :emea_sub
UNION ALL SELECT 'license_counter', tenant_id FROM license_counter WHERE subscription_id = :emea_sub
UNION ALL SELECT 'service_seat', tenant_id FROM service_seat WHERE subscription_id = :emea_sub
UNION ALL SELECT DISTINCT 'ledger', tenant_id FROM ledger WHERE account_id = 3
UNION ALL SELECT DISTINCT 'history', tenant_id FROM history WHERE account_id = 3;
-- history rows are the tenant's; their details are the row without the key
SELECT operation, tenant_id, details ? 'tenant_id' AS details_name_the_key
  FROM history WHERE account_id = 3 AND operation IN ('account_insert', 'member_insert') ORDER BY id;
-- a history row of no account (the catalog) is tenant 0's
INSERT INTO history (operation, details) VALUES ('catalog note', '{}');
SELECT tenant_id FROM history WHERE operation = 'catalog note';

-- a row naming what does not exist is refused as its foreign key refused it
SELECT pg_temp.error_of($$INSERT INTO member (account_id, external_id) VALUES (999, 'nobody')$$) AS member_of_nothing;
SELECT pg_temp.error_of($$INSERT INTO license (subscription_id, member_id) VALUES (999, 11)$$) AS license_of_nothing;
-- a key names the tenant: a row of another tenant is refused by it
SELECT pg_temp.error_of($$INSERT INTO member (tenant_id, account_id, external_id) VALUES (2, 1, 'wrong tenant')$$) AS wrong_tenant;

-- K7: moving an account under another parent keeps its tenant (no row
-- moves); distribute() refuses such an account, which Citus could not
-- keep beside its parent
UPDATE account SET parent_id = 2 WHERE id = :umbrella;
SELECT tenant_id FROM account WHERE id = :umbrella;
SELECT pg_temp.error_of('SELECT * FROM subscription.distribute()') AS moved_sub_account;
UPDATE account SET parent_id = NULL WHERE id = :umbrella;

-- create_account refuses what it cannot create, writing nothing
SELECT pg_temp.error_of('SELECT subscription.create_account(''Orphan'', 999)') AS missing_parent;
SELECT pg_temp.error_of('SELECT subscription.create_account(NULL)') AS no_name;
SELECT count(*) AS accounts FROM account;

-- distribute() needs Citus
SELECT pg_temp.error_of('SELECT * FROM subscription.distribute()') AS without_citus;
SELECT subscription.on_citus_worker() AS on_a_worker;
-- what it would make of each table, each after the tables it references
SELECT kind, count(*) FROM subscription.distribution_plan() WHERE kind <> 'function' GROUP BY kind ORDER BY kind;
-- then every keyed form, a function distributed by its tenant (item 2)
SELECT count(*) = (SELECT count(*) FROM subscription.distributed_functions()) AS every_keyed_form,
       bool_and(relation IS NULL AND function IS NOT NULL) AS functions_only,
       min(step) > (SELECT max(step) FROM subscription.distribution_plan() WHERE kind <> 'function') AS after_the_tables
  FROM subscription.distribution_plan() WHERE kind = 'function';
SELECT count(*) AS referenced_later
  FROM subscription.distribution_plan() AS p
  JOIN pg_constraint AS k ON k.conrelid = p.relation AND k.contype = 'f'
  JOIN subscription.distribution_plan() AS q ON q.relation = k.confrelid
 WHERE q.step >= p.step AND k.conrelid <> k.confrelid;
SELECT relation FROM subscription.distribution_plan() WHERE kind = 'distributed' ORDER BY step LIMIT 1;
ROLLBACK;

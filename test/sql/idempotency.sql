-- Idempotency keys (issue 20, item 4; Q1-Q5, docs/rules.md): a mutating
-- function called again under the same subscription.idempotency_key
-- returns its first result and writes nothing (Q2); the key with other
-- arguments is refused (Q3); a rolled-back first call keeps no key (Q1);
-- bad keys (Q4); pruning (Q5).  Every kind of result: a number, a time,
-- an amount, nothing (void), rows, and the C functions.  In a database of
-- its own: the counts below are of its rows only.
\set VERBOSITY default
\set regress_db :DBNAME
CREATE DATABASE subscription_idempotency;
\c subscription_idempotency
SET client_min_messages = warning;
CREATE EXTENSION subscription;
RESET client_min_messages;
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET subscription.max_backdate = '100 years';
SET subscription.max_ahead = '100 years';

INSERT INTO product (code, name, upgrade, downgrade) VALUES ('desk', 'Zendesk Support', 'prorate', 'immediate');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 55, true);
INSERT INTO addon (code, product, name, one_time, feature, units) VALUES ('zd_collab', 'desk', 'Collaboration', false, NULL, 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_team', 'zd_collab'), ('zd_pro', 'zd_collab');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (10, 1, 1, 'gus@globex', 'owner'), (11, 1, 1, 'ann@globex', 'admin');

-- what a call writes: the rows of every table that a change writes
CREATE FUNCTION pg_temp.written() RETURNS text LANGUAGE sql AS $$
    SELECT format('subscriptions %s, batches %s, ledger %s, history %s, events %s, licenses %s, keys %s',
                  (SELECT count(*) FROM subscription.subscription), (SELECT count(*) FROM subscription.addon_batch),
                  (SELECT count(*) FROM subscription.ledger), (SELECT count(*) FROM subscription.history),
                  (SELECT count(*) FROM subscription.event), (SELECT count(*) FROM subscription.license),
                  (SELECT count(*) FROM subscription.idempotency_key))
$$;

-- Q1, Q2: a number (subscribe), run once, then the first result
BEGIN;
SET LOCAL subscription.idempotency_key = 'signup-1';
SELECT subscribe(1, 'zd_team', '1 month', 3, '2026-01-01') AS team;
COMMIT;
SELECT pg_temp.written() AS after_first;
BEGIN;
SET LOCAL subscription.idempotency_key = 'signup-1';
SELECT subscribe(1, 'zd_team', '1 month', 3, '2026-01-01') AS team_again;
-- the keyed form is the same call
SELECT subscribe(1, 1, 'zd_team', '1 month', 3, '2026-01-01', 'always', NULL) AS team_keyed;
COMMIT;
SELECT pg_temp.written() AS after_retries;
SELECT tenant_id, key, function, arguments, result FROM idempotency_key ORDER BY tenant_id, key;

-- without a key (or an empty one: RESET), every call runs
SET subscription.idempotency_key = '';
SELECT purchase_addon(1, 'zd_collab', 1, '2026-01-02') AS batch_a, purchase_addon(1, 'zd_collab', 1, '2026-01-02') AS batch_b;
RESET subscription.idempotency_key;
SELECT pg_temp.written() AS unkeyed_twice;

-- Q2: the time of the call (at) is no part of the comparison: a retry comes later
SET subscription.idempotency_key = 'addon-1';
SELECT purchase_addon(1, 'zd_collab', 2, '2026-01-03') AS batch;
SELECT purchase_addon(1, 'zd_collab', 2, '2026-01-04') AS batch_retried_later;
SELECT pg_temp.written() AS one_batch_more;

-- Q3: the key with other arguments, or another function: 23505 naming the first call
SELECT regexp_replace(pg_temp.error_of('SELECT subscription.purchase_addon(1, ''zd_collab'', 5, ''2026-01-04'')'),
                      ' at [0-9TZ:.-]+\.', ' at (time).') AS other_arguments;
SELECT regexp_replace(pg_temp.error_of('SELECT subscription.set_quantity(1, 4, ''2026-01-04'')'),
                      ' at [0-9TZ:.-]+\.', ' at (time).') AS other_function;
-- and another actor's call (subscription.actor; without one, the session user)
SET subscription.actor = '10';
SELECT regexp_replace(pg_temp.error_of('SELECT subscription.purchase_addon(1, ''zd_collab'', 2, ''2026-01-04'')'),
                      ' at [0-9TZ:.-]+\.', ' at (time).') AS other_actor;
RESET subscription.actor;
-- a key is the tenant's: another tenant's call under it runs
SELECT subscribe(2, 'zd_pro', '1 month', 1, '2026-01-01') AS other_tenant;

-- every kind of result: a time (cancel, cancel_addon), an amount (end_early),
-- nothing (set_renewal, void), rows (change_plan), an integer (set_quantity)
SET subscription.idempotency_key = 'quantity-1';
SELECT set_quantity(1, 4, '2026-01-05') AS left_1, set_quantity(1, 4, '2026-01-05') AS left_2;
SET subscription.idempotency_key = 'plan-1';
SELECT * FROM change_plan(1, 'zd_pro', '2026-01-10');
SELECT pg_temp.written() AS before_replay;
SELECT * FROM change_plan(1, 'zd_pro', '2026-01-10');
SELECT pg_temp.written() AS after_replay;
SET subscription.idempotency_key = 'renewal-1';
SELECT set_renewal(1, 'none'), set_renewal(1, 'none');
SET subscription.idempotency_key = 'cancel-1';
SELECT cancel(1) AS ends_at, cancel(1) AS ends_at_again;
SET subscription.idempotency_key = 'addon-cancel-1';
SELECT cancel_addon(3) AS addon_ends, cancel_addon(3) AS addon_ends_again;
SET subscription.idempotency_key = 'early-1';
SELECT end_early(2, '2026-01-15') AS refund, end_early(2, '2026-01-15') AS refund_again;
-- the C functions: license_consume and license_release (an integer)
SET subscription.idempotency_key = 'seat-1';
SELECT license_consume(1, 10) AS left_1, license_consume(1, 10) AS left_2, license_consume(1, 1, 10) AS left_keyed;
SELECT regexp_replace(pg_temp.error_of('SELECT subscription.license_consume(1, 11)'),
                      ' at [0-9TZ:.-]+\.', ' at (time).') AS other_member;
SET subscription.idempotency_key = 'seat-2';
SELECT license_release(1, 10) AS left_1, license_release(1, 10) AS left_2;
SET subscription.idempotency_key = 'seat-3';
SELECT pg_temp.error_of('SELECT subscription.license_consume(999, 10)') AS unknown_subscription;
RESET subscription.idempotency_key;
SELECT pg_temp.written() AS each_once;
SELECT key, function, result FROM idempotency_key WHERE tenant_id = 1 ORDER BY key;

-- Q1: a rolled-back first call keeps no key; the retry runs
SELECT subscribe(1, 'zd_team', '1 month', 1, '2026-02-01') AS second_sub \gset
SELECT pg_temp.written() AS before_rollback;
BEGIN;
SET LOCAL subscription.idempotency_key = 'rollback-1';
SELECT set_quantity(:second_sub, 2, '2026-02-02') AS inside;
ROLLBACK;
SELECT count(*) AS kept FROM idempotency_key WHERE key = 'rollback-1';
-- a first call that fails keeps none either
SET subscription.idempotency_key = 'rollback-1';
SELECT pg_temp.error_of(format('SELECT subscription.set_quantity(%s, 0, ''2026-02-02'')', :second_sub)) AS failed_first;
SELECT count(*) AS kept FROM idempotency_key WHERE key = 'rollback-1';
SELECT set_quantity(:second_sub, 2, '2026-02-02') AS runs_now;
SELECT pg_temp.written() AS after_rollbacks;

-- Q4: bad keys
SET subscription.idempotency_key = '   ';
SELECT pg_temp.error_of(format('SELECT subscription.set_quantity(%s, 3, ''2026-02-03'')', :second_sub)) AS blank_key;
SELECT set_config('subscription.idempotency_key', repeat('k', 256), false) IS NOT NULL AS long_key;
SELECT pg_temp.error_of(format('SELECT subscription.set_quantity(%s, 3, ''2026-02-03'')', :second_sub)) AS long_key;
SELECT set_config('subscription.idempotency_key', repeat('k', 255), false) IS NOT NULL AS longest_key;
SELECT set_quantity(:second_sub, 3, '2026-02-03') AS longest_key_runs;
-- a key on a function's NULL argument: the function's own error, nothing kept
SET subscription.idempotency_key = 'null-1';
SELECT pg_temp.error_of('SELECT subscription.set_quantity(NULL, 3, ''2026-02-03'')') AS null_subscription;
SELECT pg_temp.error_of('SELECT subscription.set_quantity(NULL, 1, 3, ''2026-02-03'')') AS null_tenant;
SELECT count(*) AS kept FROM idempotency_key WHERE key = 'null-1';
RESET subscription.idempotency_key;

-- Q5: keys older than subscription.idempotency_retention are pruned; a
-- retry after that runs again
UPDATE idempotency_key SET at = at - interval '2 days' WHERE key IN ('signup-1', 'addon-1');
CALL prune_idempotency_keys();
SET subscription.idempotency_retention = '3 days';
UPDATE idempotency_key SET at = at - interval '2 days' WHERE key = 'plan-1';
CALL prune_idempotency_keys();
SELECT left(key, 20) AS key FROM idempotency_key WHERE tenant_id = 1 ORDER BY key;
BEGIN;
SET LOCAL subscription.idempotency_key = 'signup-1';
SELECT subscribe(1, 'zd_team', '1 month', 3, '2026-01-01') AS runs_again;
COMMIT;
SET subscription.idempotency_retention = '0';
RESET subscription.idempotency_retention;

\c :regress_db
DROP DATABASE subscription_idempotency;

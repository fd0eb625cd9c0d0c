-- verify(): one row per broken invariant, nothing when all hold.  Each
-- invariant is broken on purpose (as a superuser, triggers off where the
-- guards would refuse) and verify() sees exactly that.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

-- a small healthy dataset: seats, an add-on, a plan change, renewals, a
-- limited table, a sub-account
INSERT INTO product (code, name) VALUES ('desk', 'Desk');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('team', 'desk', 'Team', 1, 'service'), ('pro', 'desk', 'Pro', 2, 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('team', '1 month', 10, true), ('pro', '1 month', 20, true);
INSERT INTO plan_limit (plan, feature, value) VALUES ('team', 'rooms', 2), ('pro', 'rooms', 5),
    ('team', 'sub_accounts', 1), ('pro', 'sub_accounts', 2);
INSERT INTO addon (code, product, name, feature, units) VALUES ('seats5', 'desk', 'Five seats', 'licenses', 5);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('seats5', '1 month', 30);
INSERT INTO plan_addon (plan, addon) VALUES ('team', 'seats5'), ('pro', 'seats5');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Globex');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (10, 1, 1, 'ann', 'owner'), (11, 1, 1, 'bob', 'member'), (20, 2, 2, 'cat', 'owner');
SELECT subscribe(1, 'team', '1 month', 2, '2026-01-01') AS acme \gset
SELECT subscribe(2, 'team', '1 month', 1, '2026-01-01') AS globex \gset
SELECT license_consume(:acme, 11);
SELECT purchase_addon(:acme, 'seats5', 1, '2026-01-10') IS NOT NULL AS bought;
SELECT refund, charge FROM change_plan(:globex, 'pro', '2026-01-15');
SELECT renew_due('2026-03-01') AS renewed;
CREATE TABLE public.room (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.room
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.room', 'rooms');
SELECT enforce_limit('subscription.account', 'sub_accounts', 'parent_id');
INSERT INTO public.room VALUES (1, 1), (2, 1), (3, 2);
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (3, 1, 'Acme East', 1);

SELECT * FROM verify();
SELECT * FROM verify(1);
SELECT pg_temp.error_of('SELECT * FROM verify(999)');

-- seats: a counter that drifted from the licenses
SAVEPOINT broken;
UPDATE license_counter SET used = used + 1 WHERE subscription_id = :acme;
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;
-- a counter whose capacity is not the subscription's
UPDATE license_counter SET capacity = capacity + 1 WHERE subscription_id = :acme;
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;
-- a subscription holding more licenses than its capacity: its quantity
-- and add-on lowered and a license written with the guards off; the
-- counter, its capacity and history disagree too
-- (on Citus, test/citus.sh, the guards are off by the replica role, set
-- LOCAL to reach the workers' part of the transaction: a shard's ALTER
-- TABLE is refused there while the transaction's deferred checks are
-- pending on it, "cannot ALTER TABLE "subscription_N" because it has
-- pending trigger events"; the coordinator routes the license by its key)
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
SET LOCAL citus.propagate_set_commands = 'local';
SET LOCAL session_replication_role = replica;
UPDATE subscription SET quantity = 1 WHERE id = :acme;
UPDATE addon_batch SET status = 'cancelled' WHERE subscription_id = :acme;
INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, :acme, 10);
RESET session_replication_role;
\else
ALTER TABLE subscription DISABLE TRIGGER USER;
UPDATE subscription SET quantity = 1 WHERE id = :acme;
ALTER TABLE subscription ENABLE TRIGGER USER;
ALTER TABLE addon_batch DISABLE TRIGGER USER;
UPDATE addon_batch SET status = 'cancelled' WHERE subscription_id = :acme;
ALTER TABLE addon_batch ENABLE TRIGGER USER;
SET LOCAL session_replication_role = replica;
INSERT INTO license (subscription_id, member_id) VALUES (:acme, 10);
RESET session_replication_role;
\endif
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;

-- usage: a counter that drifted from the table's rows (a replica-mode write)
\if :on_citus
SET LOCAL citus.propagate_set_commands = 'local';
\endif
SET LOCAL session_replication_role = replica;
INSERT INTO public.room VALUES (4, 2);
RESET session_replication_role;
SELECT * FROM verify();
SELECT * FROM verify(1);
ROLLBACK TO SAVEPOINT broken;
-- a stored limit that is not the account's, and a counter of no registration
UPDATE usage_counter SET limit_value = 99 WHERE account_id = 1 AND feature = 'rooms';
INSERT INTO usage_counter (tenant_id, account_id, feature, used) VALUES (2, 2, 'ghosts', 0);
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;

-- periods (C2): a lost period, a period charged twice, an uncharged current period
DELETE FROM ledger WHERE subscription_id = :acme AND item = 'plan'
   AND period = tstzrange('2026-02-01', '2026-03-01');
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, plan, description)
VALUES (1, 1, :acme, 'charge', 5, 'EUR', tstzrange('2026-02-15', '2026-03-15'), 'team', 'twice');
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;
DELETE FROM ledger WHERE subscription_id = :acme AND item = 'plan'
   AND period = (SELECT period FROM subscription WHERE id = :acme);
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;

-- money: a refund above its charge
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, plan, charge_id, description)
SELECT tenant_id, account_id, subscription_id, 'refund', amount + 1, currency, tstzrange(upper(period), upper(period)), plan, id, 'too much'
  FROM ledger WHERE subscription_id = :acme AND kind = 'charge' AND item = 'plan' ORDER BY id LIMIT 1;
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;

-- history (R8): changes written with the history triggers off (member 12
-- takes a default license, recorded)
ALTER TABLE account DISABLE TRIGGER account_history;
ALTER TABLE member DISABLE TRIGGER member_history;
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Quiet');
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (12, 1, 1, 'dan');
ALTER TABLE account ENABLE TRIGGER account_history;
ALTER TABLE member ENABLE TRIGGER member_history;
SELECT * FROM verify();
ROLLBACK TO SAVEPOINT broken;

-- back-office only (and superusers)
CREATE ROLE regress_verify_app;
CREATE ROLE regress_verify_office;
-- (on Citus grant_application() is refused, its column-level GRANTs on
-- distributed tables, docs/citus.md: the role, with the schema's USAGE
-- alone, is refused verify() all the same)
\if :on_citus
GRANT USAGE ON SCHEMA subscription TO regress_verify_app;
\endif
SELECT CASE WHEN NOT :'on_citus'::boolean THEN grant_application('regress_verify_app') END AS grant_application,
       grant_backoffice('regress_verify_office');
SET LOCAL ROLE regress_verify_app;
SELECT pg_temp.error_of('SELECT * FROM subscription.verify()');
RESET ROLE;
SET LOCAL ROLE regress_verify_office;
SELECT count(*) AS broken FROM verify();
RESET ROLE;
ROLLBACK;

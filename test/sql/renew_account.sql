-- renew_account(tenant_id, at) (issue 17, item 4): the renewals of one
-- tenant (a root account and its sub-accounts, K7), exactly as renew_due
-- does them; renew_due and run_renewals drive it by tenant batches; a run
-- interrupted in one tenant leaves the others' batches committed, and the
-- next run renews the rest, charging nothing twice (C2).
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 55, true), ('zd_pro', '1 year', 550, true);
INSERT INTO coupon (code, percent_off, cycles) VALUES ('WELCOME20', 20, 2);
-- tenant 1: the root account 1 and its sub-account 2; tenant 3 alone
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (3, 3, 'Initech');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (2, 1, 'Globex Europe', 1);
SELECT id, parent_id, tenant_id FROM account ORDER BY id;
SELECT subscribe(1, 'zd_pro', '1 month', 3, '2026-01-01', coupon => 'WELCOME20') AS root_sub \gset
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-10') AS sub_sub \gset
SELECT subscribe(1, 'zd_team', '1 month', 1, '2026-02-15', 'once') AS once_sub \gset
SELECT subscribe(3, 'zd_pro', '1 month', 1, '2026-01-05') AS other_sub \gset
-- a pending downgrade (C4) and a pending yearly cycle (Z7) take effect at a renewal
SELECT effective_at FROM change_plan(:sub_sub, 'zd_team', '2026-01-20');
SELECT plan, pending_plan FROM subscription WHERE id = :sub_sub;
SELECT change_cycle(:other_sub, '1 year');

-- what renew_due writes, to compare with renew_account's
CREATE FUNCTION pg_temp.written() RETURNS TABLE (ledger text, history text, subscriptions text)
LANGUAGE sql AS $$
    SELECT (SELECT md5(string_agg(format('%s %s %s %s %s %s %s %s %s', l.tenant_id, l.account_id, l.subscription_id, l.kind,
                                         l.amount, l.period, l.item, l.plan, l.description), ';'
                       ORDER BY l.subscription_id, l.period, l.kind, l.item)) FROM subscription.ledger AS l),
           (SELECT md5(string_agg(format('%s %s %s %s', h.tenant_id, h.account_id, h.subscription_id, h.operation), ';'
                       ORDER BY h.subscription_id, h.operation, h.details::text)) FROM subscription.history AS h),
           (SELECT md5(string_agg(s::text, ';' ORDER BY s.id)) FROM subscription.subscription AS s)
$$;
SAVEPOINT before;
SELECT renew_due('2026-04-10') AS handled;
SELECT ledger AS ledger_due, history AS history_due, subscriptions AS subscriptions_due FROM pg_temp.written() \gset
ROLLBACK TO SAVEPOINT before;

-- tenant 1 only: its root's two subscriptions and its sub-account's
SELECT renew_account(1, '2026-04-10') AS handled;
SELECT id, account_id, plan, cycle, period, status FROM subscription ORDER BY id;
-- the same lines, history and subscriptions as renew_due, once tenant 3 is renewed too
SELECT renew_account(3, '2026-04-10') AS handled;
SELECT ledger = :'ledger_due' AS same_ledger, history = :'history_due' AS same_history,
       subscriptions = :'subscriptions_due' AS same_subscriptions
  FROM pg_temp.written();
-- idempotent: a second call, or renew_due after it, charges nothing
SELECT count(*) AS lines FROM ledger \gset
SELECT renew_account(1, '2026-04-10') AS again, renew_account(3, '2026-04-10') AS again_3, renew_due('2026-04-10') AS due;
SELECT count(*) - :lines AS new_lines FROM ledger;
SELECT count(*) = count(DISTINCT (subscription_id, period, item)) AS each_period_once FROM ledger WHERE kind = 'charge';

-- catch-up is bounded per call as in renew_due (subscription.max_catchup)
SAVEPOINT catchup;
SET LOCAL subscription.max_catchup = 2;
SELECT renew_account(1, '2026-08-10') AS handled;
SELECT id, period FROM subscription WHERE account_id IN (1, 2) AND status = 'active' ORDER BY id;
SELECT renew_account(1, '2026-08-10') AS handled;
SELECT id, period FROM subscription WHERE account_id IN (1, 2) AND status = 'active' ORDER BY id;
ROLLBACK TO SAVEPOINT catchup;

-- errors: a NULL argument, an account that is not a tenant, an actor, a time out of bounds
SELECT pg_temp.error_of($$SELECT subscription.renew_account(NULL, '2026-04-10')$$);
SELECT pg_temp.error_of($$SELECT subscription.renew_account(1, NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.renew_account(2, '2026-04-10')$$);
SELECT pg_temp.error_of($$SELECT subscription.renew_account(999, '2026-04-10')$$);
SELECT pg_temp.error_of($$SELECT subscription.renew_account(1, 'infinity')$$);
SET LOCAL subscription.actor = '1';
SELECT pg_temp.error_of($$SELECT subscription.renew_account(1, '2026-04-10')$$);
RESET subscription.actor;
-- on a single server the whole table is this node's ({NULL}); on Citus its
-- local shards of subscription, none on a coordinator that holds no data
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
SELECT ARRAY(SELECT s.shardid FROM pg_dist_shard AS s JOIN pg_dist_placement AS p USING (shardid)
              WHERE s.logicalrelid = 'subscription.subscription'::regclass
                AND p.groupid = (SELECT groupid FROM pg_dist_local_group) ORDER BY 1)::text AS node_shards \gset
\else
SELECT '{NULL}' AS node_shards \gset
\endif
SELECT local_subscription_shards()::text = :'node_shards' AS this_node;
SELECT pg_temp.error_of($$SELECT subscription.subscription_shard(102008)$$);
ROLLBACK;

-- A run interrupted in one tenant (issue 17, item 4): run_renewals commits
-- each tenant batch; an error in tenant 4 (an application trigger on the
-- ledger) stops the run, its batch (tenants 3 and 4) rolled back, the
-- batch before it (tenants 1 and 2) committed.  The next run renews the
-- rest and charges nothing twice.  In a database of its own, since what
-- it commits stays.
\set regress_db :DBNAME
CREATE DATABASE subscription_renew_tenants;
\c subscription_renew_tenants
SET client_min_messages = warning;
CREATE EXTENSION subscription;
RESET client_min_messages;
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, name) SELECT g, 'tenant ' || g FROM generate_series(1, 6) AS g;
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (7, 6, 'sub-account of 6', 6);
SELECT count(subscribe(g, 'zd_pro', '1 month', 1, '2026-01-01')) AS subscribed FROM generate_series(1, 7) AS g;
CREATE FUNCTION public.tenant_4_fails() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.tenant_id = 4 THEN
        RAISE EXCEPTION 'tenant 4 cannot be charged now';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER tenant_4_fails BEFORE INSERT ON subscription.ledger FOR EACH ROW EXECUTE FUNCTION public.tenant_4_fails();
\set VERBOSITY terse
CALL run_renewals('2026-03-01', 2);
\set VERBOSITY default
SELECT tenant_id, account_id, upper(period) <= '2026-03-01' AS still_due,
       (SELECT count(*) FROM ledger AS l WHERE l.subscription_id = s.id) AS charges
  FROM subscription AS s ORDER BY id;
DROP TRIGGER tenant_4_fails ON subscription.ledger;
-- the next run: the rest, the tenants in committed batches of 2 due subscriptions
CALL renew_local_tenants('2026-03-01', 2);
SELECT count(*) AS charges, count(DISTINCT (subscription_id, period)) AS periods,
       (SELECT count(*) FROM subscription WHERE upper(period) <= '2026-03-01') AS still_due
  FROM ledger WHERE kind = 'charge';
CALL renew_local_tenants('2026-03-01');
SELECT count(*) AS charges FROM ledger;
SELECT pg_temp.error_of($$CALL renew_local_tenants('2026-03-01', 0)$$);
SELECT pg_temp.error_of($$CALL renew_local_tenants('2026-03-01', NULL)$$);
SELECT pg_temp.error_of($$CALL renew_local_tenants('infinity')$$);
SET subscription.actor = '1';
SELECT pg_temp.error_of($$CALL renew_local_tenants('2026-03-01')$$);
RESET subscription.actor;
\c :regress_db
DROP DATABASE subscription_renew_tenants;

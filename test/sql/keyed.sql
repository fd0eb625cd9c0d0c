-- Keyed forms (issue 17, item 2; docs/design.md#keyed-forms): every public
-- function that writes has a form with the tenant first, which Citus routes
-- to the tenant's shard group.  It writes only the tenant's rows: another
-- tenant's id is refused (22023) before anything is written, a NULL tenant
-- with a known id is 22004, an unknown id is what the unkeyed form says
-- (P0002).  The unkeyed forms find the tenant and call it, and no call of
-- theirs, with untyped literals or NULLs, means a keyed form.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- the actor set below (SET LOCAL) reaches a Citus worker too
-- (docs/citus.md); on a single server it is this session's already
SET LOCAL citus.propagate_set_commands = 'local';

INSERT INTO product (code, name) VALUES ('desk', 'Desk');
INSERT INTO plan (code, product, name, rank) VALUES ('team', 'desk', 'Team', 1), ('pro', 'desk', 'Pro', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('team', '1 month', 10, true), ('pro', '1 month', 20, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('seats5', 'desk', 'Five seats', 'licenses', 5);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('seats5', '1 month', 30);
INSERT INTO plan_addon (plan, addon) VALUES ('team', 'seats5'), ('pro', 'seats5');
-- tenant 1: account 1 and its sub-account 2; tenant 3: account 3
INSERT INTO account (tenant_id, id, name) OVERRIDING SYSTEM VALUE VALUES (1, 1, 'Main'), (3, 3, 'Other');
INSERT INTO account (tenant_id, id, name, parent_id) OVERRIDING SYSTEM VALUE VALUES (1, 2, 'Sub', 1);
INSERT INTO member (tenant_id, id, account_id, external_id, role) OVERRIDING SYSTEM VALUE VALUES
    (1, 1, 1, 'owner1', 'owner'), (1, 2, 2, 'sub-member', 'member'), (3, 3, 3, 'owner3', 'owner');
SELECT id, tenant_id FROM account ORDER BY id;

-- the keyed form writes the tenant's rows, its statements naming the tenant
SELECT subscribe(1, 2, 'team', '1 month', 2, '2026-01-01', 'always', NULL) AS sub2;
SELECT id, tenant_id, account_id FROM subscription.subscription ORDER BY id;
SELECT tenant_id, account_id, kind, amount FROM ledger ORDER BY id;
SELECT license_consume(1, 1, 2) AS left_after_consume;
SELECT tenant_id, subscription_id, member_id FROM license ORDER BY member_id;
SELECT license_release(1, 1, 2) AS left_after_release;
SELECT purchase_addon(1, 1, 'seats5', 1, '2026-01-10') AS batch;
SELECT tenant_id, subscription_id, addon FROM addon_batch;
SELECT credit_account(1, 2, 5, 'goodwill', 'EUR') IS NOT NULL AS credited;
SELECT set_quantity(1, 1, 3, '2026-01-15') AS left_after_set_quantity;
SELECT cancel_addon(1, 1) AS batch_ends;
SELECT set_renewal(1, 1, 'none');
SELECT cancel(1, 1) AS ends;
SELECT count(*) AS rows_of_another_tenant FROM (
    SELECT tenant_id FROM subscription.subscription UNION ALL SELECT tenant_id FROM ledger
    UNION ALL SELECT tenant_id FROM license UNION ALL SELECT tenant_id FROM addon_batch
    UNION ALL SELECT tenant_id FROM history WHERE account_id = 2) AS t WHERE tenant_id <> 1;

-- another tenant's id: refused, nothing written (22023)
SELECT count(*) AS subscriptions_before FROM subscription.subscription \gset
SELECT pg_temp.error_of($$SELECT subscribe(3, 2, 'team', '1 month', 1, '2026-01-01', 'always', NULL)$$) AS other_tenant_account;
SELECT pg_temp.error_of($$SELECT license_consume(3, 1, 2)$$) AS other_tenant_subscription;
SELECT pg_temp.error_of($$SELECT license_release(3, 1, 2)$$) AS other_tenant_release;
SELECT pg_temp.error_of($$SELECT * FROM apply_downgrade(3, 1, true)$$) AS other_tenant_downgrade;
SELECT pg_temp.error_of($$SELECT cancel_addon(3, 1)$$) AS other_tenant_batch;
SELECT pg_temp.error_of($$SELECT set_quantity(3, 1, 5, '2026-01-20')$$) AS other_tenant_quantity;
SELECT pg_temp.error_of($$SELECT * FROM close_account(3, 2, '2026-01-20')$$) AS other_tenant_close;
-- a sub-account's own id is not a tenant: its tenant is its root account's
SELECT pg_temp.error_of($$SELECT credit_account(2, 2, 5, 'x', 'EUR')$$) AS sub_account_is_no_tenant;
SELECT count(*) = :subscriptions_before AS nothing_written,
       (SELECT count(*) FROM ledger WHERE tenant_id = 3) AS ledger_of_tenant_3;

-- a NULL tenant with a known id (22004); an unknown id is the function's own error (P0002)
SELECT pg_temp.error_of($$SELECT license_consume(NULL, 1, 2)$$) AS null_tenant;
SELECT pg_temp.error_of($$SELECT cancel(NULL, 1)$$) AS null_tenant_plpgsql;
SELECT pg_temp.error_of($$SELECT license_consume(1, 999, 2)$$) AS unknown_subscription;
SELECT pg_temp.error_of($$SELECT license_consume(3, 999, 2)$$) AS unknown_subscription_other_tenant;
SELECT pg_temp.error_of($$SELECT cancel(1, 999)$$) AS unknown_subscription_plpgsql;
SELECT pg_temp.error_of($$SELECT subscribe(1, NULL, 'team', '1 month', 1, '2026-01-01', 'always', NULL)$$) AS null_account;

-- the unkeyed forms, with untyped literals and NULLs: never ambiguous, and
-- they find the tenant themselves
SELECT subscribe(3, 'pro', '1 month', '1', '2026-01-01') IS NOT NULL AS unkeyed_subscribe;
SELECT s.tenant_id, s.account_id, s.plan FROM subscription.subscription AS s WHERE s.account_id = 3;
SELECT license_consume('2', '3') AS unkeyed_consume_literals;
SELECT license_release(2, 3) AS unkeyed_release;
SELECT pg_temp.error_of($$SELECT license_consume(NULL, NULL)$$) AS unkeyed_nulls;
SELECT pg_temp.error_of($$SELECT * FROM apply_downgrade(2, NULL)$$) AS unkeyed_downgrade_null;
SELECT pg_temp.error_of($$SELECT set_quantity(2, 3, NULL)$$) AS unkeyed_set_quantity_null;
SELECT pg_temp.error_of($$SELECT credit_account(NULL, '5', NULL)$$) AS unkeyed_credit_nulls;
SELECT pg_temp.error_of($$SELECT change_cycle(2, '1 year')$$) AS unkeyed_change_cycle;
SELECT pg_temp.error_of($$SELECT set_quantity('2', '4', '2026-01-20')$$) AS unkeyed_set_quantity_literals;

-- the keyed helpers (issue 17): the unkeyed form looks the tenant up and
-- calls the keyed one; given another tenant, they find nothing
SELECT license_capacity(2) AS capacity_unkeyed, license_capacity(tenant_of('subscription', 2), 2) AS capacity_keyed,
       license_capacity(999, 2) AS capacity_other_tenant;
SELECT limit_of(2, 'licenses') AS limit_unkeyed, limit_of(tenant_of('account', 2), 2, 'licenses') AS limit_keyed,
       limit_of(999, 2, 'licenses') AS limit_other_tenant;
SELECT credit_balance(2, 'EUR') = credit_balance(tenant_of('account', 2), 2, 'EUR') AS credit_same;
SELECT coupon_discount(999, 2, 100, 'EUR') AS discount_other_tenant;
SELECT pg_temp.error_of($$SELECT subscription_for_change(999, 'cancel', 2, 'cancel')$$) AS for_change_other_tenant;
SELECT (subscription_for_change(tenant_of('subscription', 2), 'cancel', 2, 'cancel')).id AS for_change_keyed;

-- may_read, keyed (the views pass their row's tenant, issue 17): as the
-- unkeyed form; an actor reads no row of another tenant, nor of an account
-- that is not of the tenant named (Z1)
SET LOCAL subscription.actor = '1';
SELECT may_read(1) AS own_unkeyed, may_read(1, 1) AS own_keyed,
       may_read(3) AS other_unkeyed, may_read(3, 3) AS other_keyed, may_read(1, 3) AS not_of_tenant;
RESET subscription.actor;
SELECT may_read(3, 3) AS back_office_keyed;
-- a trigger on the catalog reads the tenant tables on a single server
-- (on Citus, on the coordinator's placement alone)
SELECT catalog_reads_tenants() AS catalog_reads_tenants;

-- tenant_of: the tenant of an id, NULL for an unknown one
SELECT tenant_of('account', 2) AS of_account_2, tenant_of('subscription', 2) AS of_subscription_2,
       tenant_of('addon_batch', 1) AS of_batch_1, tenant_of('account', 999) AS of_unknown;
SELECT pg_temp.error_of($$SELECT tenant_of('member', 1)$$) AS unknown_kind;
ROLLBACK;

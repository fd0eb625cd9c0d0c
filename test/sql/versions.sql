-- Plan and price versions (grandfathering) and migrations (L5, L6, L8):
-- a price change reprices nobody until their migration takes effect
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support'), ('logmein', 'LogMeIn'), ('meet', 'ClickMeeting');
INSERT INTO plan (code, product, name, rank) VALUES
    ('zd_pro', 'desk', 'Professional', 2), ('zd_ent', 'desk', 'Enterprise', 3),
    ('lmi_pro', 'logmein', 'Pro', 1), ('central_basic', 'logmein', 'Central Basic', 2),
    ('central_premier', 'logmein', 'Central Premier', 3), ('cm_live', 'meet', 'Live', 1);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_pro', '1 month', 55, true), ('zd_ent', '1 month', 115, true),
    ('lmi_pro', '1 month', 10, true), ('central_basic', '1 month', 8, true), ('central_premier', '1 month', 15, true),
    ('cm_live', '1 month', 25, false);
-- per host; deployments: Pro 5, Basic none, Premier unlimited
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('lmi_pro', 'hosts', 1, true), ('central_basic', 'hosts', 1, true), ('central_premier', 'hosts', 1, true),
    ('lmi_pro', 'deployments', 5, false), ('central_basic', 'deployments', 0, false),
    ('central_premier', 'deployments', NULL, false), ('zd_pro', 'agents', 5, true), ('cm_live', 'rooms', 3, false);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Helpdesk Ltd'), (2, 2, 'Globex'), (3, 3, 'Hosts & Co'), (4, 4, 'Print Shop'),
    (5, 5, 'Initech'), (6, 6, 'Webinars SA');
CREATE TABLE public.host (id bigserial, account_id bigint NOT NULL, name text, PRIMARY KEY (account_id, id));
CREATE TABLE public.deployment (id bigserial, account_id bigint NOT NULL, created_at timestamptz NOT NULL,
                                PRIMARY KEY (account_id, id));
CREATE TABLE public.agent (id bigserial, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'public.host public.deployment public.agent'
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.host', 'hosts');
SELECT enforce_limit('public.deployment', 'deployments', 'account_id', 'drop_newest', 'created_at');
SELECT enforce_limit('public.agent', 'agents');

-- on Citus a held price or limit changes by change_price() or
-- change_limit(), which write the rows that a plain UPDATE writes on a
-- single server (catalog_changes); a plain UPDATE of a held row is refused
-- there (55000)
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset

-- a catalog row nobody holds changes in place
UPDATE plan_price SET amount = 120 WHERE plan = 'zd_ent';
SELECT plan, amount, versions FROM plan_price WHERE plan = 'zd_ent';

---------------------------------------------------------------------------
-- grandfathering: a price rise reprices nobody until their migration
---------------------------------------------------------------------------
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-01') AS old_price \gset
-- a plan that only a pending migration names is in use (2BP01, not the raw 23503)
SAVEPOINT migration_target;
SELECT migrate_subscriptions('zd_pro', 'zd_ent', '2026-01-02') AS migrating;
DELETE FROM plan_price WHERE plan = 'zd_ent';
SELECT pg_temp.error_of($$DELETE FROM plan WHERE code = 'zd_ent'$$) AS migration_target;
ROLLBACK TO SAVEPOINT migration_target;
\if :on_citus
SELECT change_price('zd_pro', '1 month', 65) AS from_version \gset
\else
UPDATE plan_price SET amount = 65 WHERE plan = 'zd_pro';
\endif
-- the old row is kept and closed; the new one is version 2, sold at once
SELECT plan, amount, versions FROM plan_price WHERE plan = 'zd_pro' ORDER BY versions;
SELECT code, version FROM plan WHERE code = 'zd_pro';
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-01') AS new_price \gset
SELECT id, plan, plan_version FROM subscription WHERE id IN (:old_price, :new_price) ORDER BY id;
SELECT subscription_id, amount, description FROM ledger WHERE kind = 'charge' ORDER BY id;
-- proration of a quantity change: the version held (one license, half a month at 55)
SELECT set_quantity(:old_price, 3, '2026-01-17') AS licenses_left;
SELECT amount, item FROM ledger WHERE subscription_id = :old_price AND item LIKE 'licenses%';
-- the notice and the charge agree: 3 x 55 and 2 x 65 (L5, L8)
SELECT subscription_id, plan, plan_version, quantity, amount FROM renewal_notice
 WHERE subscription_id IN (:old_price, :new_price) ORDER BY 1;
SELECT renew_due('2026-02-01') AS renewed;
SELECT subscription_id, amount, description FROM ledger
 WHERE kind = 'charge' AND lower(period) = '2026-02-01' ORDER BY subscription_id;

-- another rise while version 2 is held makes version 3; unheld changes stay in it
\if :on_citus
SELECT change_price('zd_pro', '1 month', 70) AS from_version \gset
SELECT change_limit('zd_pro', 'agents', 6) AS from_version \gset
\else
UPDATE plan_price SET amount = 70 WHERE plan = 'zd_pro';
UPDATE plan_limit SET value = 6 WHERE plan = 'zd_pro' AND feature = 'agents';
\endif
SELECT plan, amount, versions FROM plan_price WHERE plan = 'zd_pro' ORDER BY versions;
SELECT plan, feature, value, versions FROM plan_limit WHERE plan = 'zd_pro' ORDER BY versions;
SELECT code, version FROM plan WHERE code = 'zd_pro';
-- limits too: each subscription keeps its version's (5 per license)
SELECT effective_limit(1, 'agents') AS three_licenses_at_5, effective_limit(2, 'agents') AS two_licenses_at_5;
-- a closed row is history: an UPDATE leaves it (UPDATE 0)
UPDATE plan_price SET amount = 1 WHERE plan = 'zd_pro' AND NOT upper_inf(versions);
SELECT count(*) AS history_unchanged FROM plan_price WHERE plan = 'zd_pro' AND amount IN (55, 65);
-- versions are the extension's; a row overlapping another is refused
SELECT pg_temp.error_of($$UPDATE plan_price SET versions = '[1,)', amount = 1 WHERE plan = 'zd_pro' AND upper_inf(versions)$$);
SELECT pg_temp.error_of($$INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_pro', 'agents', 9)$$);
-- renaming a plan is no price change: versions and holders stay
UPDATE plan SET code = 'zd_professional' WHERE code = 'zd_pro';
SELECT id, plan, plan_version FROM subscription WHERE id IN (:old_price, :new_price) ORDER BY id;
UPDATE plan SET code = 'zd_pro' WHERE code = 'zd_professional';

---------------------------------------------------------------------------
-- migrating older versions to the newest (L5, L8: at a renewal, after notice)
---------------------------------------------------------------------------
SELECT subscription_id, account_id, takes_effect_at, plan, plan_version, amount, feature
  FROM preview_migration('zd_pro', 'zd_pro', '2026-02-10');
SELECT migrate_subscriptions('zd_pro', 'zd_pro', '2026-02-10') AS migrated;
SELECT id, plan_version, migrate_to, migrate_version, migrate_at FROM subscription
 WHERE id IN (:old_price, :new_price) ORDER BY id;
-- twice is once: a pending migration is left alone
SELECT migrate_subscriptions('zd_pro', 'zd_pro', '2026-02-10') AS migrated_again;
-- the March renewal is before the notice ends: old prices still
SELECT renew_due('2026-03-01') AS renewed;
SELECT subscription_id, plan, plan_version, amount FROM renewal_notice
 WHERE subscription_id IN (:old_price, :new_price) ORDER BY 1;
SELECT renew_due('2026-04-01') AS renewed;
SELECT subscription_id, lower(period) AS renewal, amount FROM ledger
 WHERE kind = 'charge' AND subscription_id IN (:old_price, :new_price) AND lower(period) >= '2026-03-01'
 ORDER BY 1, 2;
SELECT id, plan_version, migrate_to FROM subscription WHERE id IN (:old_price, :new_price) ORDER BY id;
SELECT effective_limit(1, 'agents') AS three_licenses_at_6;

-- cancel_migration: the subscription keeps its version
SELECT subscribe(6, 'cm_live', '1 month', 1, '2026-01-01') AS live \gset
\if :on_citus
SELECT change_price('cm_live', '1 month', 30) AS from_version \gset
\else
UPDATE plan_price SET amount = 30 WHERE plan = 'cm_live';
\endif
SELECT migrate_subscriptions('cm_live', 'cm_live', '2026-01-05', '0 days') AS migrated;
SELECT migrate_at FROM subscription WHERE id = :live;
SELECT cancel_migration(:live);
SELECT renew_due('2026-02-01') AS renewed;
SELECT plan_version, amount FROM subscription
  JOIN ledger ON ledger.tenant_id = subscription.tenant_id AND subscription_id = subscription.id
 WHERE subscription.id = :live AND lower(ledger.period) = '2026-02-01';

-- errors: NULL (22004), unknown (42704, P0002), wrong state (22023, 55000), back-office only (42501)
SELECT pg_temp.error_of($$SELECT migrate_subscriptions(NULL, 'zd_pro', '2026-02-10')$$);
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_pro', 'zd_pro', '2026-02-10', NULL)$$);
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_pro', 'zd_pro', '2026-02-10', "trim" => NULL)$$);
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_nope', 'zd_pro', '2026-02-10')$$);
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_pro', 'zd_nope', '2026-02-10')$$);
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_pro', 'central_basic', '2026-02-10')$$);
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_pro', 'zd_pro', '2026-02-10', '-1 day')$$);
SELECT pg_temp.error_of($$SELECT * FROM preview_migration('zd_pro', NULL, '2026-02-10')$$);
SELECT pg_temp.error_of($$SELECT * FROM preview_migration('zd_pro', 'zd_nope', '2026-02-10')$$);
SELECT pg_temp.error_of($$SELECT cancel_migration(NULL)$$);
SELECT pg_temp.error_of($$SELECT cancel_migration(999)$$);
SELECT pg_temp.error_of(format('SELECT cancel_migration(%s)', :old_price));
SET LOCAL subscription.actor = 'someone@example';
SELECT pg_temp.error_of($$SELECT migrate_subscriptions('zd_pro', 'zd_pro', '2026-02-10')$$);
SELECT pg_temp.error_of(format('SELECT cancel_migration(%s)', :old_price));
RESET subscription.actor;

---------------------------------------------------------------------------
-- L6, the LogMeIn move: per-host Pro subscriptions go to Central Basic,
-- unless they use what Basic lacks (deployments): those go to Premier
---------------------------------------------------------------------------
SELECT subscribe(3, 'lmi_pro', '1 month', 2, '2026-01-01') AS hosts_only \gset
SELECT subscribe(4, 'lmi_pro', '1 month', 2, '2026-01-10') AS deploys \gset
SELECT subscribe(5, 'lmi_pro', '1 month', 1, '2026-01-01') AS grows \gset
-- a per-host Pro subscription of account 3, due after the account's date (L9)
SELECT subscribe(3, 'lmi_pro', '1 month', 1, '2026-01-20') AS single_host \gset
INSERT INTO public.host (account_id, name) VALUES (3, 'pc1'), (3, 'pc2'), (4, 'pc1'), (4, 'pc2'), (5, 'pc1');
INSERT INTO public.deployment (account_id, created_at) VALUES (4, '2026-01-11'), (4, '2026-01-12');
-- L6: the preview lists what Basic would take away, with the use and the new limit
SELECT subscription_id, account_id, takes_effect_at, plan, amount, feature, used, new_limit
  FROM preview_migration('lmi_pro', 'central_basic', '2026-01-15', '0 days');
-- L6: those stay on their version, with a WARNING
SELECT migrate_subscriptions('lmi_pro', 'central_basic', '2026-01-15', '0 days') AS to_basic;
SELECT migrate_subscriptions('lmi_pro', 'central_premier', '2026-01-15', '0 days') AS to_premier;
SELECT id, account_id, migrate_to, migrate_at, migrate_trim FROM subscription
 WHERE id IN (:hosts_only, :deploys, :grows) ORDER BY id;
-- L6 at the renewal: account 5's use grew since (Basic allows no deployment):
-- its migration is dropped, with a WARNING
INSERT INTO public.deployment (account_id, created_at) VALUES (5, '2026-01-20');
-- L9: at the account's renewal the per-host subscription ends, its unused
-- days credited (19 of 31 days of 10.00: unused_part), which the renewal of
-- the migrated subscription uses first
SELECT end_early(:single_host, '2026-02-01') AS credited;
-- the renewals move the others; nothing in use is lost, nothing trimmed
SELECT renew_due('2026-02-10') AS renewed;
SELECT kind, amount FROM ledger WHERE account_id = 3 AND kind IN ('credit', 'credit_used') ORDER BY id;
SELECT id, account_id, plan, plan_version, migrate_to FROM subscription
 WHERE id IN (:hosts_only, :deploys, :grows) ORDER BY id;
SELECT account_id, feature, used, limit_value FROM usage_counter WHERE account_id IN (3, 4, 5) ORDER BY 1, 2;
SELECT count(*) AS trimmed_rows FROM trimmed;
SELECT subscription_id, amount, description FROM ledger
 WHERE subscription_id IN (:hosts_only, :deploys, :grows) AND lower(period) >= '2026-02-01' ORDER BY 1;
-- L6 with "trim" => true: Basic's limits apply, trimming by the table's rule
SELECT migrate_subscriptions('lmi_pro', 'central_basic', '2026-02-05', '0 days', "trim" => true) AS trimming;
SELECT renew_due('2026-03-01') AS renewed;
SELECT plan, feature, action FROM subscription
  JOIN trimmed ON trimmed.tenant_id = subscription.tenant_id AND trimmed.subscription_id = subscription.id
 WHERE subscription.id = :grows;
SELECT count(*) AS deployments_left FROM public.deployment WHERE account_id = 5;

-- a plain UPDATE may close a current row at the plan's version (what
-- change_price() does) only where nobody holds that version or a later one:
-- the version made by a limit's change held, its price would be gone (55000)
SAVEPOINT close_held;
INSERT INTO account (id, tenant_id, name) VALUES (90, 90, 'Holds 3'), (91, 91, 'Holds 4');
SELECT subscribe(90, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS holds_3;
\if :on_citus
SELECT change_limit('zd_pro', 'agents', 7) AS from_version \gset
\else
UPDATE plan_limit SET value = 7 WHERE plan = 'zd_pro' AND feature = 'agents' AND upper_inf(versions);
\endif
SELECT subscribe(91, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS holds_4;
SELECT code, version FROM plan WHERE code = 'zd_pro';
SELECT pg_temp.error_of($$UPDATE plan_price SET versions = '[3,4)' WHERE plan = 'zd_pro' AND upper_inf(versions)$$);
SELECT s.account_id, s.plan_version, pp.amount
  FROM subscription AS s JOIN plan_price AS pp ON pp.plan = s.plan AND pp.versions @> s.plan_version
 WHERE s.account_id IN (90, 91) ORDER BY 1;
ROLLBACK TO SAVEPOINT close_held;

ROLLBACK;

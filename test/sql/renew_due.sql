-- renew_due: periods from the anchor, catch-up, renewal options (R6),
-- pending changes (C4, Z7), cancellations (Z8), add-ons (K1-K5, Z6)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support'), ('rainbow', 'Rainbow'), ('meet', 'ClickMeeting');
INSERT INTO plan (code, product, name, rank) VALUES
    ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2), ('zd_ent', 'desk', 'Enterprise', 3),
    ('rb_business', 'rainbow', 'Business', 2), ('rb_essential', 'rainbow', 'Essential', 1),
    ('cm_free', 'meet', 'Free', 0), ('cm_live', 'meet', 'Live', 1);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 55, true), ('zd_pro', '1 year', 588, true),
    ('zd_ent', '1 month', 115, true),
    ('rb_business', '1 month', 5, true), ('rb_business', '1 year', 54, true), ('rb_business', '3 years', 150, true),
    ('rb_essential', '1 month', 0, true),
    ('cm_free', '30 days', 0, false), ('cm_live', '30 days', 25, false), ('cm_live', '365 days', 250, false);
INSERT INTO addon (code, product, name, one_time, feature, units) VALUES
    ('zd_collab', 'desk', 'Collaboration', false, NULL, 1),
    ('zd_productivity', 'desk', 'Productivity Pack', false, NULL, 1),
    ('cm_presenters', 'meet', 'Presenters', false, 'presenters', 1),
    ('cm_recording', 'meet', 'Recording space', false, NULL, 1),
    ('cm_username', 'meet', 'Username change', true, NULL, 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES
    ('zd_collab', '1 month', 10), ('zd_productivity', '1 month', 20),
    ('cm_presenters', '30 days', 10), ('cm_presenters', '365 days', 100),
    ('cm_recording', '365 days', 120), ('cm_username', NULL, 15);
INSERT INTO plan_addon (plan, addon, included) VALUES
    ('zd_pro', 'zd_collab', false), ('zd_pro', 'zd_productivity', false),
    ('zd_ent', 'zd_collab', false), ('zd_ent', 'zd_productivity', true),
    ('cm_live', 'cm_presenters', false), ('cm_live', 'cm_recording', false), ('cm_live', 'cm_username', false),
    ('cm_free', 'cm_presenters', false);
INSERT INTO plan_limit (plan, feature, value) VALUES ('cm_live', 'presenters', 1), ('cm_free', 'presenters', 1);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech'), (3, 3, 'Webinars SA'), (4, 3, 'Webinars Lyon');
UPDATE account SET parent_id = 3 WHERE id = 4;
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (30, 3, 3, 'owner@webinars', 'owner'), (40, 3, 4, 'owner@lyon', 'owner');

SAVEPOINT catalog;

-- periods come from the anchor: a month from January 31 ends February 28,
-- March 31, April 30, May 31 (no drift); catching up writes each period once
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-31') AS monthly \gset
SELECT renew_due('2026-05-01') AS renewed;
SELECT period, period_number FROM subscription WHERE id = :monthly;
SELECT amount, period, description FROM ledger WHERE subscription_id = :monthly ORDER BY id;
-- idempotent: nothing is due any more
SELECT renew_due('2026-05-01') AS renewed_again, (SELECT count(*) FROM ledger WHERE subscription_id = :monthly) AS lines;

-- a leap-day anchor: years end on February 28, then on February 29, 2028
SELECT subscribe(2, 'rb_business', '1 year', 3, '2024-02-29') AS leap \gset
SELECT renew_due('2028-03-01') AS renewed;
SELECT amount, period FROM ledger WHERE subscription_id = :leap ORDER BY id;
ROLLBACK TO SAVEPOINT catalog;

-- R6: none expires, once renews once, always renews, to_monthly turns a
-- prepaid term into monthly licenses; Z8: a cancelled one ends at its period end
SELECT subscribe(2, 'rb_business', '1 year', 2, '2026-01-01', 'none') AS r_none,
       subscribe(2, 'rb_business', '1 year', 2, '2026-01-01', 'once') AS r_once,
       subscribe(2, 'rb_business', '1 year', 2, '2026-01-01', 'always') AS r_always,
       subscribe(2, 'rb_business', '3 years', 2, '2026-01-01', 'to_monthly') AS r_monthly,
       subscribe(2, 'rb_business', '1 year', 2, '2026-01-01') AS r_cancelled \gset
SELECT cancel(:r_cancelled) AS cancelled_at;
SELECT renew_due('2027-01-01') AS handled;
SELECT id, status, renewal, cycle, period FROM subscription WHERE account_id = 2 ORDER BY id;
SELECT renew_due('2029-01-01') AS handled;
SELECT id, status, renewal, cycle, period FROM subscription WHERE account_id = 2 ORDER BY id;
SELECT subscription_id, amount, period FROM ledger WHERE account_id = 2 ORDER BY subscription_id, id;
-- after its 3 prepaid years, to_monthly continues monthly from the term's end
SELECT renew_due('2029-03-15') AS handled;
SELECT cycle, anchor, period, period_number FROM subscription WHERE id = :r_monthly;
ROLLBACK TO SAVEPOINT catalog;

-- C4 and Z7: the pending plan and cycle take effect at the renewal, which
-- is charged at the new price; a new cycle counts from that date
SELECT subscribe(1, 'zd_pro', '1 year', 5, '2026-01-15') AS annual \gset
SELECT change_cycle(:annual, '1 month') AS cycle_from;
SELECT * FROM change_plan(:annual, 'zd_team', '2026-02-01');
SELECT renew_due('2027-03-01') AS handled;
SELECT plan, cycle, anchor, period, pending_plan, pending_cycle FROM subscription WHERE id = :annual;
SELECT amount, period, description FROM ledger WHERE subscription_id = :annual ORDER BY id;
ROLLBACK TO SAVEPOINT catalog;

-- K1-K3, Z6: add-ons.  30-day cycle, 3 presenters bought on day 11: the 20
-- days left of the 30 are charged (3 x 10 x 20/30 = 20.00), the line names
-- the full-cycle amount (30.00); 365-day cycle, recording space on day 101:
-- 120 x 265/365 = 87.12; a one-time username change is charged once
SELECT subscribe(3, 'cm_live', '30 days', 1, '2026-01-01') AS live30,
       subscribe(3, 'cm_live', '365 days', 1, '2026-01-01') AS live365 \gset
SELECT purchase_addon(:live30, 'cm_presenters', 3, '2026-01-11') AS presenters,
       purchase_addon(:live365, 'cm_recording', 1, '2026-04-11') AS recording,
       purchase_addon(:live30, 'cm_username', 1, '2026-01-11') AS username \gset
SELECT addon_batch_id, amount, period, description FROM ledger WHERE addon_batch_id IS NOT NULL ORDER BY id;
-- the batch's units raise the limit of its feature
SELECT effective_limit(3, 'presenters') AS presenters_limit;
-- K4, K5: a cancelled batch, all of it, stays to the end of the period,
-- then is not billed again; it can be bought again
SELECT cancel_addon(:presenters) AS ends_at;
SELECT status, cancel_at_period_end FROM addon_batch WHERE id = :presenters;
SELECT renew_due('2026-01-31') AS handled;
SELECT id, status FROM addon_batch ORDER BY id;
SELECT addon_batch_id, amount, period FROM ledger WHERE subscription_id = :live30 ORDER BY id;
SELECT effective_limit(3, 'presenters') AS presenters_limit;
SELECT purchase_addon(:live30, 'cm_presenters', 1, '2026-02-10') IS NOT NULL AS bought_again;
-- a new cycle needs a price for the add-ons that renew with it (22023)
SELECT pg_temp.error_of(format($$SELECT change_cycle(%s, '30 days')$$, :live365));
-- a batch renews with the plan, on the subscription's cycle (K2)
SELECT renew_due('2026-03-02') AS handled;
SELECT addon_batch_id, amount, period FROM ledger WHERE subscription_id = :live30 AND period @> timestamptz '2026-03-02' ORDER BY id;

-- refusals
SELECT subscribe(1, 'zd_ent', '1 month', 1, '2026-01-01') AS ent, subscribe(3, 'cm_free', '30 days', 1, '2026-01-01') AS free \gset
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'zd_productivity', 1, '2026-01-05')$$, :ent));  -- Z6: included
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'cm_presenters', 1, '2026-01-05')$$, :free));   -- K1: free plan
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'cm_recording', 1, '2026-01-05')$$, :free));    -- not sold with the plan
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'cm_teleport', 1, '2026-01-05')$$, :free));     -- 42704
SELECT pg_temp.error_of($$SELECT purchase_addon(999, 'cm_presenters')$$);                                  -- P0002
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'cm_presenters', 0, '2026-03-05')$$, :live30));  -- 22023
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'cm_presenters', 1, '2027-01-05')$$, :live30));  -- 22023 outside the period
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, NULL)$$, :live30));                             -- 22004
SELECT pg_temp.error_of(format($$SELECT cancel_addon(%s)$$, :username));                                  -- one-time: 55000
SELECT pg_temp.error_of(format($$SELECT cancel_addon(%s)$$, :presenters));                                -- ended: 55000
SELECT pg_temp.error_of($$SELECT cancel_addon(999)$$);                                                    -- P0002
-- K8: a sub-account's member cannot buy, even the sub-account's owner
SELECT subscribe(4, 'cm_live', '30 days', 1, '2026-03-01') AS lyon \gset
SET LOCAL subscription.actor = '40';
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'cm_presenters', 1, '2026-03-05')$$, :lyon));
-- K8: nor change the plan (an upgrade is charged at once; the main account decides)
SELECT pg_temp.error_of(format($$SELECT change_plan(%s, 'cm_free', '2026-03-05')$$, :lyon));
SET LOCAL subscription.actor = '30';
SELECT pg_temp.error_of($$SELECT renew_due('2026-04-01')$$);                                             -- back-office only
RESET subscription.actor;
SELECT pg_temp.error_of($$SELECT renew_due('infinity')$$);                                               -- 22023: never ends
SELECT pg_temp.error_of($$SELECT renew_due(NULL)$$);                                                     -- 22004
ROLLBACK TO SAVEPOINT catalog;

-- a renewal that cannot be done stays due with a WARNING; the others go on
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') AS priceless, subscribe(2, 'zd_pro', '1 month', 1, '2026-01-01') AS fine \gset
UPDATE subscription SET pending_cycle = '1 year', quantity = 1 WHERE id = :priceless;
DELETE FROM plan_price WHERE plan = 'zd_pro' AND cycle = '1 year';
SELECT renew_due('2026-02-01') AS handled;
SELECT id, period FROM subscription ORDER BY id;
ROLLBACK TO SAVEPOINT catalog;

-- K7, K10: sub-accounts are limited by the sub_accounts feature, on the
-- extension's own account table; when a sub-account add-on ends, the
-- newest sub-accounts beyond the new limit are erased with their data
INSERT INTO addon (code, product, name, feature, units) VALUES ('cm_sub_accounts', 'meet', 'Sub-account', 'sub_accounts', 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('cm_sub_accounts', '30 days', 8);
INSERT INTO plan_addon (plan, addon) VALUES ('cm_live', 'cm_sub_accounts');
INSERT INTO plan_limit (plan, feature, value) VALUES ('cm_live', 'sub_accounts', 0);
SELECT enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'drop_newest', 'created_at');
SELECT usage(3, 'sub_accounts') AS counted_at_registration;
SELECT pg_temp.error_of($$SELECT enforce_limit('subscription.account', 'presenters', 'parent_id')$$);  -- only sub_accounts
SELECT subscribe(3, 'cm_live', '30 days', 1, '2026-01-01') AS main \gset
SELECT purchase_addon(:main, 'cm_sub_accounts', 2, '2026-01-01') AS two, purchase_addon(:main, 'cm_sub_accounts', 1, '2026-01-01') AS one \gset
-- Lyon (4) exists since December; Nice and Lille join; a fourth sub-account is refused
UPDATE account SET created_at = '2025-12-01' WHERE id = 4;
INSERT INTO account (id, tenant_id, name, parent_id, created_at) VALUES (5, 3, 'Webinars Nice', 3, '2026-01-05'), (6, 3, 'Webinars Lille', 3, '2026-01-06');
SELECT pg_temp.error_of($$INSERT INTO account (id, tenant_id, name, parent_id) VALUES (7, 3, 'Webinars Brest', 3)$$);
-- (nothing lost, issue 15: a trim deletes only a sub-account that holds
-- nothing, no member, subscription or ledger line; Lille holds nothing yet)
-- K10: the single-unit batch is cancelled; it stays to the end of the cycle
SELECT cancel_addon(:one) AS ends_at;
SELECT renew_due('2026-01-30') AS handled;
SELECT count(*) AS sub_accounts_before FROM account WHERE parent_id = 3;
SELECT renew_due('2026-01-31') AS handled;
-- the newest, Lille, is deleted (K10); the archive keeps the row
SELECT id, name FROM account WHERE parent_id = 3 ORDER BY id;
SELECT relation, feature, action, row_id, old_row->>'name' AS name FROM trimmed;
SELECT usage(3, 'sub_accounts') AS sub_accounts, effective_limit(3, 'sub_accounts') AS sub_accounts_limit;
SELECT unenforce_limit('subscription.account', 'sub_accounts');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (7, 3, 'Webinars Brest', 3);
SELECT count(*) AS guards_still_attached FROM pg_trigger WHERE tgrelid = 'subscription.account'::regclass AND tgname LIKE 'subscription_limit_sub_accounts%';
ROLLBACK TO SAVEPOINT catalog;

-- C4-C6 at the renewal: the pending downgrade trims the account's data; a
-- 'block' limit keeps it due until the account removes the excess
INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_team', 'views', 1), ('zd_pro', 'views', 5),
                                                     ('zd_team', 'triggers', 1), ('zd_pro', 'triggers', 5);
CREATE TABLE public.support_view (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.support_trigger (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'public.support_view public.support_trigger'
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.support_view', 'views', 'account_id', 'block'),
       enforce_limit('public.support_trigger', 'triggers');
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') AS pro \gset
INSERT INTO public.support_view VALUES (1, 1), (2, 1), (3, 1);
INSERT INTO public.support_trigger VALUES (1, 1), (2, 1), (3, 1);
SELECT effective_at FROM change_plan(:pro, 'zd_team', '2026-01-20');
SELECT renew_due('2026-02-01') AS handled;
SELECT plan, pending_plan, period FROM subscription WHERE id = :pro;
SELECT (SELECT count(*) FROM public.support_trigger) AS triggers, (SELECT count(*) FROM trimmed) AS trimmed;
DELETE FROM public.support_view WHERE id > 1;
SELECT renew_due('2026-02-01') AS handled;
SELECT plan, pending_plan, period FROM subscription WHERE id = :pro;
SELECT id FROM public.support_trigger ORDER BY id;
SELECT amount, period, description FROM ledger WHERE subscription_id = :pro ORDER BY id;
ROLLBACK TO SAVEPOINT catalog;

ROLLBACK;

-- run_renewals: the same renewals, each batch committed (CALL outside a
-- transaction); in a database of its own, since what it commits stays
\set regress_db :DBNAME
CREATE DATABASE subscription_run_renewals;
\c subscription_run_renewals
SET client_min_messages = warning;
CREATE EXTENSION subscription;
RESET client_min_messages;
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) SELECT g, g, 'batch ' || g FROM generate_series(1, 5) AS g;
SELECT count(subscribe(g, 'zd_pro', '1 month', 1, '2026-01-01')) AS subscribed FROM generate_series(1, 5) AS g;
CALL run_renewals('2026-03-01', 2);
SELECT count(*) AS charges, count(DISTINCT (subscription_id, period)) AS periods FROM ledger;
SELECT pg_temp.error_of($$CALL run_renewals('2026-03-01', 0)$$);
SELECT pg_temp.error_of($$CALL run_renewals('infinity')$$);
SET subscription.actor = '1';
SELECT pg_temp.error_of($$CALL run_renewals('2026-03-01')$$);
RESET subscription.actor;
\c :regress_db
DROP DATABASE subscription_run_renewals;

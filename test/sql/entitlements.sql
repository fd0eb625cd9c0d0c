-- Entitlements for row-level security (issue 21, item 5): has_feature()
-- by the limits' rule (plans at their versions, add-ons, trials), in a
-- policy that hides a Premier-only table's rows from a Basic account, a
-- downgrade taking the feature away, a freeze keeping it, and bad input.
\set VERBOSITY default
\i test/sql/include/setup.psql
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name, downgrade) VALUES ('crm', 'CRM', 'immediate');
INSERT INTO plan (code, product, name, rank) VALUES
    ('crm_basic', 'crm', 'Basic', 1), ('crm_plus', 'crm', 'Plus', 2), ('crm_premier', 'crm', 'Premier', 3);
INSERT INTO plan_price (plan, cycle, amount, trial) VALUES
    ('crm_basic', '1 month', 10, NULL), ('crm_plus', '1 month', 20, NULL),
    ('crm_premier', '1 month', 40, NULL), ('crm_premier', '1 year', 400, '14 days');
-- reports: Premier only (unlimited); Plus has the feature at 0; dashboards: 2 on Plus
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('crm_premier', 'reports', NULL), ('crm_plus', 'reports', 0),
    ('crm_basic', 'dashboards', 0), ('crm_plus', 'dashboards', 2), ('crm_premier', 'dashboards', NULL);
-- an add-on that brings reports to any plan
INSERT INTO addon (code, product, name, feature, units) VALUES ('crm_reports', 'crm', 'Reports pack', 'reports', 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('crm_reports', '1 month', 5);
INSERT INTO plan_addon (plan, addon) VALUES ('crm_basic', 'crm_reports');
INSERT INTO account (tenant_id, id, name) VALUES (1, 1, 'Basic Co'), (2, 2, 'Premier Co'), (3, 3, 'Plus Co'), (4, 4, 'Addon Co'), (5, 5, 'Nothing Co'),
    (6, 6, 'Trial Co'), (7, 7, 'Loop Co');
SELECT subscribe(1, 'crm_basic', '1 month', 1, '2026-01-01') AS basic \gset
SELECT subscribe(2, 'crm_premier', '1 month', 1, '2026-01-01') AS premier \gset
SELECT subscribe(3, 'crm_plus', '1 month', 1, '2026-01-01') AS plus \gset
SELECT subscribe(4, 'crm_basic', '1 month', 1, '2026-01-01') AS addon_co \gset
SELECT count(*) FROM purchase_addon(:addon_co, 'crm_reports', 1, '2026-01-02');
SELECT subscribe(6, 'crm_premier', '1 year', 1, '2026-01-01') AS trial \gset
SELECT subscribe(7, 'crm_premier', '1 month', 1, '2026-01-01') AS loop_sub \gset

-- per account: Premier (unlimited) yes, Plus (0) no, Basic no, Basic with
-- the add-on yes, no subscription no, a Premier trial yes; an account
-- that does not exist has no feature
-- (the rows read first, has_feature() called beside them: on Citus a
-- function that reads a distributed table cannot run on its shards)
WITH r AS MATERIALIZED (
    SELECT a.id, a.name, s.status
      FROM account AS a LEFT JOIN subscription AS s ON s.tenant_id = a.tenant_id AND s.account_id = a.id)
SELECT r.id, r.name, r.status,
       has_feature(r.id, 'reports') AS reports, has_feature(r.id, 'dashboards') AS dashboards
  FROM r
 ORDER BY r.id;
SELECT has_feature(999, 'reports') AS unknown_account;
-- the same answers as the limits: a feature is included when its limit is above 0 or unlimited
WITH a AS MATERIALIZED (SELECT id FROM account)
SELECT count(*) AS disagreements
  FROM a, unnest('{reports,dashboards}'::text[]) AS f
 WHERE has_feature(a.id, f) IS DISTINCT FROM (limit_of(a.id, f) IS DISTINCT FROM 0);

-- bad input: an unknown feature is an error, not a hidden row; NULLs give NULL (a policy hides the row)
SELECT pg_temp.error_of($$SELECT subscription.has_feature(1, 'repotrs')$$);
SELECT has_feature(NULL, 'reports') IS NULL AS null_account, has_feature(1, NULL) IS NULL AS null_feature;
SELECT provolatile, proparallel, proisstrict, prosecdef FROM pg_proc WHERE oid = 'has_feature(bigint,text)'::regprocedure;

-- a policy: the application's reports table shows an account its own
-- rows, and only while its plans include reports
CREATE TABLE public.crm_report (account_id bigint NOT NULL, id bigint NOT NULL, title text NOT NULL,
                                PRIMARY KEY (account_id, id));
INSERT INTO public.crm_report SELECT a, n, 'report ' || n FROM generate_series(1, 6) AS a, generate_series(1, 3) AS n;
ALTER TABLE public.crm_report ENABLE ROW LEVEL SECURITY;
-- (app.account_id 'all': a report over every account, as the back office runs it)
CREATE POLICY by_entitlement ON public.crm_report
    USING (current_setting('app.account_id') IN (account_id::text, 'all')
           AND subscription.has_feature(account_id, 'reports'));
CREATE ROLE regress_crm_app;
SELECT grant_application('regress_crm_app');
GRANT SELECT ON public.crm_report TO regress_crm_app;
SET ROLE regress_crm_app;
SET app.account_id = 1;
SELECT count(*) AS basic_sees FROM public.crm_report;
SET app.account_id = 2;
SELECT count(*) AS premier_sees FROM public.crm_report;
SET app.account_id = 4;
SELECT count(*) AS addon_sees FROM public.crm_report;
-- one statement over every account's rows: each account answered by its own plans
SET app.account_id = 'all';
SELECT account_id, count(*) FROM public.crm_report GROUP BY account_id ORDER BY account_id;
RESET ROLE;

-- a PL/pgSQL expression keeps its call site for the whole transaction:
-- the answers it remembers do not outlive a change of the plans
CREATE FUNCTION pg_temp.reports_around_downgrade(sub bigint, account bigint) RETURNS text
LANGUAGE plpgsql AS $f$
DECLARE
    seen text := '';
BEGIN
    FOR i IN 1 .. 2 LOOP
        seen := seen || subscription.has_feature(account, 'reports')::text || ' ';
        IF i = 1 THEN
            PERFORM subscription.change_plan(sub, 'crm_plus', '2026-01-12');
        END IF;
    END LOOP;
    RETURN seen;
END
$f$;
SELECT pg_temp.reports_around_downgrade(:loop_sub, 7) AS before_and_after;

-- a downgrade takes the feature away at once (the product downgrades immediately)
SELECT count(*) FROM change_plan(:premier, 'crm_plus', '2026-01-10');
SET ROLE regress_crm_app;
SET app.account_id = 2;
SELECT count(*) AS premier_after_downgrade FROM public.crm_report;
RESET ROLE;
SELECT has_feature(2, 'reports') AS after_downgrade, has_feature(2, 'dashboards') AS dashboards_kept;
-- a cancelled add-on keeps its units to the period's end (K4), then takes the feature
-- (the batch read first, cancel_addon() called beside it: on Citus a
-- function that reads a distributed table cannot run on its shards)
WITH b AS MATERIALIZED (SELECT id FROM addon_batch WHERE subscription_id = :addon_co)
SELECT cancel_addon(b.id) AS addon_ends FROM b;
SELECT has_feature(4, 'reports') AS until_period_end;
SELECT renew_due('2026-02-01') > 0 AS renewed;
SELECT has_feature(4, 'reports') AS after_period_end;
-- a freeze stops growth (limits 0), not reading: the features stay
SELECT pause(:plus, '2026-02-05', NULL, 'freeze') AS resume_at;
SELECT paused_at, pause_mode FROM subscription WHERE id = :plus;
SELECT limit_of(3, 'dashboards') AS frozen_limit, has_feature(3, 'dashboards') AS frozen_keeps_feature;


-- Stored entitlements (issue 21, item 5): has_feature() reads one row of
-- subscription.entitlement, kept by refresh_account_limits in the
-- transaction of each change.  Drift: the accounts and catalog features
-- whose stored row (or its absence) differs from the rule, or whose
-- has_feature() answer does; 0 after every change below.  (On Citus
-- has_feature() computes the rule rather than reading the row, and a
-- catalog change writes no stored row, docs/citus.md: the drift is 0 by
-- construction there, and the answers printed below check the rule.)
CREATE FUNCTION pg_temp.entitlement_drift() RETURNS bigint
LANGUAGE sql AS $f$
    WITH a AS MATERIALIZED (SELECT tenant_id, id FROM subscription.account)
    SELECT count(*)
      FROM a
     CROSS JOIN (SELECT l.feature FROM subscription.plan_limit AS l
                 UNION SELECT d.feature FROM subscription.addon AS d) AS f
     WHERE subscription.has_feature(a.id, f.feature)
           IS DISTINCT FROM EXISTS (SELECT FROM subscription.granted_features(a.tenant_id, a.id, f.feature))
$f$;
SELECT pg_temp.entitlement_drift() AS drift_after_the_above;
-- the rows: one per granted feature, under the account's tenant
SELECT tenant_id, account_id, feature FROM entitlement ORDER BY account_id, feature;
-- has_feature() answers from the stored row (a row removed by hand is a
-- feature gone); on Citus by the rule, whatever the row says
DELETE FROM entitlement WHERE account_id = 2 AND feature = 'dashboards';
\if :on_citus
SELECT has_feature(2, 'dashboards') AS by_the_rule_without_its_row;
\else
SELECT has_feature(2, 'dashboards') AS without_its_row;
\endif
SELECT refresh_entitlements(2, 2, NULL);
SELECT has_feature(2, 'dashboards') AS row_refreshed;
-- the catalog, per statement (issue 18).  An UPDATE of a limit makes a
-- new version (the subscriptions keep theirs: nothing changes); the rows
-- deleted and inserted anew (as limit_version.sql does) reach the accounts
-- holding them at once, in the same transaction.
-- (on Citus a plain UPDATE of a limit that subscriptions hold is refused,
-- 55000: change_limit() makes the new version there, on every node)
\if :on_citus
SELECT pg_temp.error_of($$UPDATE subscription.plan_limit SET value = 0 WHERE plan = 'crm_premier' AND feature = 'dashboards'$$) AS held_on_citus;
SELECT change_limit('crm_premier', 'dashboards', 0) AS from_version \gset
\else
UPDATE plan_limit SET value = 0 WHERE plan = 'crm_premier' AND feature = 'dashboards';
\endif
SELECT has_feature(6, 'dashboards') AS premier_keeps_its_version, pg_temp.entitlement_drift() AS drift;
DELETE FROM plan_limit WHERE plan = 'crm_premier' AND feature = 'dashboards';
SELECT has_feature(6, 'dashboards') AS premier_limit_deleted, pg_temp.entitlement_drift() AS drift;
-- one statement over several plans: each account refreshed once
DELETE FROM plan_limit WHERE feature = 'dashboards';
\if :on_citus
-- (on Citus the catalog change left the stored rows as they were; the
-- answers below follow the rule all the same)
SELECT count(*) AS dashboards_rows_kept FROM entitlement WHERE feature = 'dashboards';
\else
SELECT count(*) AS dashboards_left FROM entitlement WHERE feature = 'dashboards';
\endif
INSERT INTO plan_limit (plan, feature, value) VALUES ('crm_basic', 'dashboards', 1), ('crm_plus', 'dashboards', 0),
    ('crm_premier', 'dashboards', NULL);
SELECT has_feature(1, 'dashboards') AS basic_1, has_feature(3, 'dashboards') AS plus_0,
       has_feature(6, 'dashboards') AS premier_unlimited, pg_temp.entitlement_drift() AS drift;
-- an add-on's feature moved: its buyers lose the old one and gain the new one
SELECT count(*) FROM purchase_addon(:basic, 'crm_reports', 1, '2026-02-02');
SELECT has_feature(1, 'reports') AS addon_bought;
UPDATE addon SET feature = 'exports' WHERE code = 'crm_reports';
SELECT has_feature(1, 'reports') AS reports_moved, has_feature(1, 'exports') AS exports_now,
       pg_temp.entitlement_drift() AS drift;
UPDATE addon SET feature = 'reports' WHERE code = 'crm_reports';
SELECT has_feature(1, 'reports') AS reports_back, pg_temp.entitlement_drift() AS drift;
-- an add-on ended at once (end_early of its subscription): the feature goes with the subscription
SELECT end_early(:basic, '2026-02-03') IS NOT NULL AS ended;
SELECT has_feature(1, 'reports') AS after_end, has_feature(1, 'dashboards') AS dashboards_after_end,
       pg_temp.entitlement_drift() AS drift;
-- expiry: a subscription cancelled at its period's end keeps its features to then
INSERT INTO account (tenant_id, id, name) VALUES (8, 8, 'Leaving Co');
SELECT subscribe(8, 'crm_premier', '1 month', 1, '2026-02-01') AS leaving \gset
SELECT cancel(:leaving) AS ends_at;
SELECT has_feature(8, 'reports') AS until_expiry;
SELECT renew_due('2026-03-01') > 0 AS renewed;
SELECT status FROM subscription WHERE id = :leaving;
SELECT has_feature(8, 'reports') AS after_expiry, pg_temp.entitlement_drift() AS drift;
-- K7: a sub-account is answered by its own plans, its row under its root's tenant
INSERT INTO account (tenant_id, id, name, parent_id) VALUES (2, 9, 'Premier Co / EU', 2);
SELECT has_feature(9, 'reports') AS sub_account_without_plan;
SELECT subscribe(9, 'crm_premier', '1 month', 1, '2026-02-01') IS NOT NULL AS sub_subscribed;
SELECT has_feature(9, 'reports') AS sub_account_premier, has_feature(2, 'reports') AS parent_still_plus;
SELECT tenant_id, account_id FROM entitlement WHERE account_id = 9 AND feature = 'reports';
SELECT pg_temp.entitlement_drift() AS drift;
-- Z3: a suite answers by its included plans at their current version.  A
-- limit change that a direct subscriber holds makes the included plan a
-- new version: the suite's account follows it in the same statement, the
-- direct subscriber keeps its own
INSERT INTO product (code, name) VALUES ('wiki', 'Wiki'), ('office', 'Office suite');
INSERT INTO plan (code, product, name, rank) VALUES ('wiki_pro', 'wiki', 'Wiki Pro', 2), ('office_pro', 'office', 'Office Pro', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('wiki_pro', '1 month', 8), ('office_pro', '1 month', 30);
INSERT INTO plan_limit (plan, feature, value) VALUES ('wiki_pro', 'pages', 5);
INSERT INTO suite_component (suite_plan, plan) VALUES ('office_pro', 'wiki_pro');
INSERT INTO account (tenant_id, id, name) VALUES (10, 10, 'Suite Co'), (11, 11, 'Wiki Co');
SELECT subscribe(10, 'office_pro', '1 month', 1, '2026-02-01') IS NOT NULL AS suite_subscribed,
       subscribe(11, 'wiki_pro', '1 month', 1, '2026-02-01') IS NOT NULL AS wiki_subscribed;
SELECT has_feature(10, 'pages') AS suite_pages, has_feature(11, 'pages') AS wiki_pages;
\if :on_citus
SELECT change_limit('wiki_pro', 'pages', 0) AS from_version \gset
\else
UPDATE plan_limit SET value = 0 WHERE plan = 'wiki_pro' AND feature = 'pages';
\endif
SELECT version FROM plan WHERE code = 'wiki_pro';
SELECT has_feature(10, 'pages') AS suite_at_version_2, has_feature(11, 'pages') AS wiki_keeps_version_1,
       pg_temp.entitlement_drift() AS drift;
-- the suite no longer includes the plan: the feature goes with it
\if :on_citus
SELECT change_limit('wiki_pro', 'pages', 3) AS from_version \gset
\else
UPDATE plan_limit SET value = 3 WHERE plan = 'wiki_pro' AND feature = 'pages' AND upper_inf(versions);
\endif
SELECT has_feature(10, 'pages') AS suite_back_at_3;
DELETE FROM suite_component WHERE suite_plan = 'office_pro';
SELECT has_feature(10, 'pages') AS suite_without_wiki, pg_temp.entitlement_drift() AS drift;
ROLLBACK;

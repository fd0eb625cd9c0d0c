-- Rules that only the data model carried, each shown by what it does:
-- K6, L1, L11, R3, R4 (docs/rules.md)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central'), ('clickmeeting', 'ClickMeeting'),
                                        ('rescue', 'LogMeIn Rescue');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('central_basic', 'central', 'Basic', 1, 'service'), ('central_premier', 'central', 'Premier', 3, 'service'),
    ('cm_live', 'clickmeeting', 'Live', 1, 'service'),
    ('rescue_tech', 'rescue', 'Technician', 1, 'service'), ('rescue_mobile', 'rescue', 'Mobile option', 1, 'option');
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_basic', '1 year', 25, 350), ('central_basic', '1 year', 50, 600),
    ('central_premier', '1 year', 25, 1500);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('cm_live', '30 days', 30, false), ('rescue_tech', '1 month', 100, true), ('rescue_mobile', '1 month', 20, true);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('central_basic', 'hosts', 1, true), ('central_premier', 'hosts', 1, true),
    ('central_basic', 'automation', 0, false), ('central_premier', 'automation', NULL, false),
    ('cm_live', 'parallel_events', 1, false);
INSERT INTO addon (code, product, name, feature, units) VALUES
    ('cm_parallel_events', 'clickmeeting', 'Parallel events', 'parallel_events', 1),
    ('rescue_recording', 'rescue', 'Session recording', NULL, 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES
    ('cm_parallel_events', '30 days', 20.00), ('rescue_recording', '1 month', 5.00);
INSERT INTO plan_addon (plan, addon) VALUES ('cm_live', 'cm_parallel_events'), ('rescue_tech', 'rescue_recording');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme IT'), (2, 2, 'Acme Lab'), (3, 3, 'Webinars'), (4, 4, 'Helpdesk');
-- one person, ann, works in both Acme accounts (L11); two logins share Webinars (K6)
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (1, 1, 1, 'ann@acme', 'owner'), (2, 2, 2, 'ann@acme', 'owner'), (3, 2, 2, 'bob@acme', 'member'),
    (4, 3, 3, 'kim@webinars', 'owner'), (5, 3, 3, 'lee@webinars', 'member'), (6, 4, 4, 'max@helpdesk', 'owner');

-- the application's tables: hosts of LogMeIn Central, running events of ClickMeeting
CREATE SCHEMA app;
CREATE TABLE app.host (id bigint, account_id bigint NOT NULL, name text NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE app.live_event (id bigint, account_id bigint NOT NULL, started_by bigint NOT NULL,
                             PRIMARY KEY (account_id, id));
\set app_tables 'app.host app.live_event'
\i test/sql/include/app_tables.psql
SELECT enforce_limit('app.host', 'hosts', 'account_id', 'drop_newest');
SELECT enforce_limit('app.live_event', 'parallel_events', 'account_id', 'block');

-- L1: the features follow the account's edition, never a host: the limit
-- is the account's (its subscriptions' sum), and any host of the account
-- may take the last place
SELECT subscribe(1, 'central_basic', '1 year', 25, '2026-01-01') AS basic \gset
SELECT effective_limit(1, 'hosts') AS l1_hosts, effective_limit(1, 'automation') AS l1_automation_basic;
INSERT INTO app.host SELECT i, 1, 'pc-' || i FROM generate_series(1, 25) AS i;
SELECT pg_temp.error_of($$INSERT INTO app.host VALUES (26, 1, 'pc-26')$$) AS l1_26th_host;
-- an upgrade of the edition changes what every host of the account gets
SELECT change_plan(:basic, 'central_premier', '2026-02-01') IS NOT NULL AS l1_upgraded;
SELECT effective_limit(1, 'hosts') AS l1_hosts_premier,
       effective_limit(1, 'automation') IS NULL AS l1_automation_premier_unlimited;
-- nothing is kept per host: the limits are keyed by account alone
SELECT count(*) AS l1_counter_rows, min(used) AS l1_used FROM usage_counter WHERE feature = 'hosts';

-- L11: within an account all hosts are alike; different treatment needs a
-- second account, and one person may work in both
SELECT subscribe(2, 'central_premier', '1 year', 25, '2026-01-01') AS lab \gset
INSERT INTO app.host VALUES (101, 2, 'lab-1');
SELECT account_id, usage(account_id, 'hosts') AS used, effective_limit(account_id, 'automation') IS NULL AS automation
  FROM (VALUES (1::bigint), (2)) AS a(account_id) ORDER BY 1;
SELECT external_id, array_agg(account_id ORDER BY account_id) AS l11_accounts
  FROM member WHERE external_id = 'ann@acme' GROUP BY 1;
-- ann holds a seat in each account, each counted there
SELECT license_consume(:basic, 1) AS l11_ann_in_it, license_consume(:lab, 2) AS l11_ann_in_lab;
SELECT subscription_id, count(*) AS seats FROM license WHERE member_id IN (1, 2) GROUP BY 1 ORDER BY 1;
-- but a member of one account takes no seat of the other's subscription:
-- of another tenant, the member does not exist for it (P0002, as on Citus,
-- where it is looked for in the subscription's tenant alone; issue 17)
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 3)', :basic)) AS l11_bob_not_in_it;

-- R3: one account can have the same plan several times over; limits and
-- seats add up, each subscription keeps its own
SELECT subscribe(4, 'rescue_tech', '1 month', 2, '2026-01-01') AS tech1 \gset
SELECT subscribe(4, 'rescue_tech', '1 month', 3, '2026-01-01') AS tech2 \gset
SELECT count(*) AS r3_same_plan, sum(quantity) AS r3_seats
  FROM subscription WHERE account_id = 4 AND plan = 'rescue_tech' AND status = 'active';
SELECT licenses_left(:tech1) AS r3_left_1, licenses_left(:tech2) AS r3_left_2;
SELECT subscribe(1, 'central_premier', '1 year', 25, '2026-03-01') AS premier2 \gset
SELECT effective_limit(1, 'hosts') AS r3_hosts_twice;
SELECT subscription_id, amount FROM ledger WHERE account_id = 4 ORDER BY subscription_id;

-- R4: extra options attach to a subscription: an add-on is bought on one
-- subscription and billed with it; an option plan is subscribed on its own
-- (tying it to the service subscription it extends is not built)
SELECT purchase_addon(:tech2, 'rescue_recording', 1, '2026-01-10') AS recording \gset
SELECT subscription_id = :tech2 AS r4_on_that_subscription, addon, quantity, status
  FROM addon_batch WHERE id = :recording;
SELECT subscription_id = :tech2 AS r4_billed_with_it, item, amount FROM ledger WHERE addon_batch_id = :recording;
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'rescue_recording', 1, '2026-02-10')$$, :basic))
       AS r4_not_sold_with_central;
SELECT subscribe(4, 'rescue_mobile', '1 month', 2, '2026-01-01') AS mobile \gset
SELECT p.kind AS r4_kind, s.quantity FROM subscription AS s JOIN plan AS p ON p.code = s.plan WHERE s.id = :mobile;

-- K6: several logins share one account, and only one event runs at once
-- unless parallel events are bought
SELECT subscribe(3, 'cm_live', '30 days', 1, '2026-01-01') AS live \gset
INSERT INTO app.live_event VALUES (1, 3, 4);    -- kim starts an event
SELECT pg_temp.error_of($$INSERT INTO app.live_event VALUES (2, 3, 5)$$) AS k6_lee_waits;
DELETE FROM app.live_event WHERE id = 1;        -- kim's event ends
INSERT INTO app.live_event VALUES (2, 3, 5);    -- now lee's may start
SELECT purchase_addon(:live, 'cm_parallel_events', 1, '2026-01-10') IS NOT NULL AS k6_parallel_bought;
INSERT INTO app.live_event VALUES (3, 3, 4);    -- two run at once
SELECT pg_temp.error_of($$INSERT INTO app.live_event VALUES (4, 3, 4)$$) AS k6_not_three;
SELECT usage(3, 'parallel_events') AS k6_running, effective_limit(3, 'parallel_events') AS k6_limit;

SELECT * FROM verify();
ROLLBACK;

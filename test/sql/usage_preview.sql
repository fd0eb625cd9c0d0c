-- Usage previews (issue 21, item 4; U6): preview_usage() is what the next
-- renewal bills, by the bill's own computation (usage_due); renewal_notice
-- shows it; current_usage lists the open period's figures; the invoice
-- shows the usage lines with their aggregate and period.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- the clock set below (SET LOCAL) reaches the guard on a Citus worker too
-- (docs/citus.md); on a single server it is this session's already.  So
-- does the style of the times that the invoice's lines show (pg_regress's)
SET LOCAL citus.propagate_set_commands = 'local';
SET LOCAL DateStyle = 'Postgres, MDY';

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central'), ('meet', 'ClickMeeting');
INSERT INTO plan (code, product, name, rank) VALUES ('central_usage', 'central', 'Per host-day', 1),
                                                    ('meet_live', 'meet', 'Live', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('central_usage', '1 month', 30), ('meet_live', '1 month', 25);
INSERT INTO plan_limit (plan, feature, value) VALUES ('central_usage', 'hosts', NULL), ('meet_live', 'attendee_minutes', NULL);
INSERT INTO account (tenant_id, id, name) VALUES (1, 1, 'Acme IT'), (2, 2, 'Webinars Ltd'), (3, 3, 'Nothing metered');
SELECT subscribe(1, 'central_usage', '1 month', 1, '2026-01-01') AS central \gset
SELECT subscribe(2, 'meet_live', '1 month', 1, '2026-01-01') AS live \gset
CREATE TABLE public.host (id bigserial, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.host
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.host', 'hosts', 'account_id');
SELECT meter('public.host', 'hosts', 'time_weighted', '1 day');
-- 300 host-days included, then 0.10 EUR each
SELECT plan_usage_price('central_usage', 'hosts', 300, 0.10, NULL, 'graduated', 'EUR');
-- attendee minutes, graduated: 100 included, 1,000 at 0.05, beyond at 0.03 plus 5
SELECT plan_usage_price('meet_live', 'attendee_minutes', 100, 0,
                        '[{"up_to": 1000, "unit_amount": 0.05}, {"up_to": null, "unit_amount": 0.03, "flat_amount": 5}]',
                        'graduated', 'EUR');

-- the hosts written in the period (the meters' clock moved there: a
-- write after the period's end would count in the next one, U3)
SET LOCAL subscription.clock = '2026-01-01';
INSERT INTO host (account_id) SELECT 1 FROM generate_series(1, 12);
RESET subscription.clock;
-- set the period's figures exactly, 12 hosts since the period began
UPDATE usage_counter SET since = '2026-01-01', integral = 0 WHERE account_id = 1 AND feature = 'hosts';
SELECT record_usage(2, 'attendee_minutes', 1200, 'webinar-1', '2026-01-10') AS total;
SELECT record_usage(2, 'attendee_minutes', 800, 'webinar-2', '2026-01-20') AS total;

-- U6: the preview: 12 hosts x 31 days = 372 host-days, 72 billed at 0.10 =
-- 7.20; 2,000 minutes less 100 included, 1,900 billed by the tiers:
-- 1,000 x 0.05 + 900 x 0.03 + 5 = 82.00
SELECT * FROM preview_usage(1);
SELECT * FROM preview_usage(2);
SELECT count(*) AS nothing_metered FROM preview_usage(3);
-- a preview writes nothing
SELECT (SELECT count(*) FROM usage_period) AS snapshots, (SELECT count(*) FROM ledger WHERE item LIKE 'usage %') AS usage_lines;

-- U6: renewal_notice shows the usage the renewal bills (the period ended:
-- overdue), its amount and its lines
SELECT subscription_id, amount, usage_amount, usage FROM renewal_notice ORDER BY subscription_id;

-- U6: current_usage: the open period's figures, the integral carried to now
-- (the clock set to now: on Citus the view's rows are computed on the
-- workers, each in its own transaction)
SELECT now() AS now \gset
SET LOCAL subscription.clock = :'now';
UPDATE usage_counter SET since = :'now'::timestamptz - interval '2 days', integral = 12 * 86400 * 3, peak = 15
 WHERE account_id = 1 AND feature = 'hosts';
-- 3 days' integral, then 12 hosts for 2 days: 5 x 12 = 60 host-days
SELECT account_id, feature, aggregation, used, peak, integral, time_weighted, unit FROM current_usage WHERE feature = 'hosts';
RESET subscription.clock;
-- (the integral of recorded usage runs on the server's clock: not shown)
SELECT account_id, feature, aggregation, used, peak FROM current_usage ORDER BY 1, 2;
UPDATE usage_counter SET since = '2026-01-01', integral = 0, peak = 12 WHERE account_id = 1 AND feature = 'hosts';

-- U3, U6: the renewal bills exactly what the preview showed
CREATE TEMP TABLE preview AS SELECT * FROM preview_usage(1) UNION ALL SELECT * FROM preview_usage(2);
SELECT renew_due('2026-02-01') AS renewed;
SELECT (SELECT count(*) FROM preview) AS previewed,
       (SELECT count(*) FROM usage_period AS p JOIN preview AS v
            ON v.subscription_id = p.subscription_id AND v.feature = p.feature AND v.aggregate = p.aggregate
           AND v.included = p.included AND v.billable = p.billable AND v.amount = p.amount
           AND v.currency = p.currency AND v.period = p.period) AS billed_the_same,
       (SELECT count(*) FROM ledger AS l JOIN preview AS v
            ON l.subscription_id = v.subscription_id AND l.item = 'usage ' || v.feature AND l.amount = v.amount
           AND l.period = v.period) AS lines_the_same;
-- the next period's preview starts again: 12 hosts held to its end
SELECT subscription_id, feature, aggregate, billable, amount, period FROM preview_usage(1);
SELECT subscription_id, feature, aggregate, billable, amount, period FROM preview_usage(2);

-- the invoice shows the usage lines, with their aggregate and period
SELECT i.subscription_id, x.line ->> 'item' AS item, x.line ->> 'amount' AS amount, x.line ->> 'period' AS period,
       x.line ->> 'description' AS description
  FROM invoice AS i CROSS JOIN LATERAL jsonb_array_elements(i.lines) AS x(line)
 WHERE x.line ->> 'item' LIKE 'usage %' ORDER BY 1;
SELECT i.id AS usage_invoice FROM invoice AS i
 WHERE i.subscription_id = :central AND i.lines @> '[{"item": "usage hosts"}]' \gset
SELECT position('Per host-day (usage hosts)' IN d) > 0 AS item_shown,
       position('2026-01-01 to 2026-02-01, overage: 372.000000 time_weighted of hosts, 300 included' IN d) > 0 AS aggregate_and_period_shown
  FROM invoice_document(:usage_invoice, 'text') AS d;

-- bad input: 22004, P0002
SELECT pg_temp.error_of($$SELECT * FROM subscription.preview_usage(NULL)$$);
SELECT pg_temp.error_of($$SELECT * FROM subscription.preview_usage(99)$$);
ROLLBACK;

-- An upgrade that restarts the period (C1) starts the period count again:
-- the renewal after it is the month after the restart, and each part of the
-- usage is billed once, at its plan's price (issue 21, item 2b: the period
-- number was kept, so the renewal jumped periods ahead)
BEGIN;
INSERT INTO product (code, name, upgrade) VALUES ('crowd', 'CrowdHandler', 'restart');
INSERT INTO plan (code, product, name, rank) VALUES ('crowd_basic', 'crowd', 'Basic', 1), ('crowd_pro', 'crowd', 'Pro', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('crowd_basic', '1 month', 10), ('crowd_pro', '1 month', 20);
INSERT INTO plan_limit (plan, feature, value) VALUES ('crowd_basic', 'api_calls', NULL), ('crowd_pro', 'api_calls', NULL);
SELECT plan_usage_price('crowd_basic', 'api_calls', 0, 0.01);
SELECT plan_usage_price('crowd_pro', 'api_calls', 0, 0.005);
INSERT INTO account (tenant_id, id, name) VALUES (4, 4, 'Queue Co');
SELECT subscribe(4, 'crowd_basic', '1 month', 1, '2026-01-01') AS crowd \gset
SELECT renew_due('2026-04-01') AS renewed;
SELECT period_number, period FROM subscription WHERE id = :crowd;
SELECT record_usage(4, 'api_calls', 100, 'k1', '2026-04-10') AS total;
SELECT effective_at FROM change_plan(:crowd, 'crowd_pro', '2026-04-15');
SELECT plan, period_number, period, anchor FROM subscription WHERE id = :crowd;
SELECT record_usage(4, 'api_calls', 1000, 'k2', '2026-04-20') AS total;
SELECT feature, aggregate, amount, period FROM preview_usage(4);
SELECT renew_due('2026-05-15') AS renewed;
SELECT plan, period_number, period FROM subscription WHERE id = :crowd;
SELECT plan, period, aggregate, amount FROM usage_period WHERE subscription_id = :crowd ORDER BY period;
SELECT item, amount, period FROM ledger WHERE subscription_id = :crowd AND item LIKE 'usage %' ORDER BY id;
ROLLBACK;

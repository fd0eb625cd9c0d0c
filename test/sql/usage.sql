-- Usage-based billing (issue 21): meters (U1), usage prices billed at
-- renewal (U2, U3), usage recorded with keys (U4, U5)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name, upgrade) VALUES ('central', 'LogMeIn Central', 'prorate'), ('meet', 'ClickMeeting', 'prorate');
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_basic', 'central', 'Basic', 1), ('central_pro', 'central', 'Pro', 2),
    ('meet_live', 'meet', 'Live', 1), ('meet_capped', 'meet', 'Capped', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES
    ('central_basic', '1 month', 30), ('central_pro', '1 month', 60),
    ('meet_live', '1 month', 25), ('meet_capped', '1 month', 25);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('central_basic', 'hosts', NULL, false), ('central_pro', 'hosts', NULL, false),
    ('central_basic', 'storage_gb', NULL, false), ('central_pro', 'storage_gb', NULL, false),
    ('meet_live', 'attendee_minutes', NULL, false), ('meet_capped', 'attendee_minutes', 1000, false);
INSERT INTO account (tenant_id, id, name) VALUES (1, 1, 'Acme IT'), (2, 2, 'Webinars Ltd'), (3, 3, 'Capped Co');
SELECT subscribe(1, 'central_basic', '1 month', 1, '2026-01-01') AS central \gset
SELECT subscribe(2, 'meet_live', '1 month', 1, '2026-01-01') AS live \gset
SELECT subscribe(3, 'meet_capped', '1 month', 1, '2026-01-01') AS capped \gset

CREATE TABLE public.host (id bigserial, account_id bigint NOT NULL, disk_gb integer NOT NULL DEFAULT 0, PRIMARY KEY (account_id, id));
\set app_tables public.host
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.host', 'hosts', 'account_id');

-- U1: a meter on a registered table; bad input refused, nothing written
SELECT meter('public.host', 'hosts', 'time_weighted');
SELECT feature, aggregation, unit FROM meter;
SELECT pg_temp.error_of($$SELECT subscription.meter('public.host', 'storage_gb', 'count')$$);
SELECT pg_temp.error_of($$SELECT subscription.meter('pg_catalog.pg_class', 'hosts', 'count')$$);
SELECT pg_temp.error_of($$SELECT subscription.meter('public.host', 'hosts', 'median')$$);
SELECT pg_temp.error_of($$SELECT subscription.meter('public.host', 'hosts', 'sum')$$);
SELECT pg_temp.error_of($$SELECT subscription.meter('public.host', 'hosts', 'count', '-1 day')$$);
SELECT pg_temp.error_of($$SELECT subscription.meter(NULL, 'hosts', 'count')$$);
SELECT feature, aggregation FROM meter;

-- U1: the guard keeps the accumulators in the counter row, in its one
-- UPDATE: peak = greatest(peak, used), integral += used * (t - since)
INSERT INTO host (account_id) SELECT 1 FROM generate_series(1, 3);
SELECT used, peak, integral FROM usage_counter WHERE account_id = 1 AND feature = 'hosts';
-- the counter was made by this statement: 0 rows until now, so no integral yet;
-- backdate its clock an hour: the next statement adds 3 rows x 3600 s
-- (the new time computed first: on Citus an UPDATE may not call a STABLE
-- function, timestamptz - interval, on its row's columns)
SELECT since - interval '1 hour' AS backdated FROM usage_counter WHERE account_id = 1 AND feature = 'hosts' \gset
UPDATE usage_counter SET since = :'backdated' WHERE account_id = 1 AND feature = 'hosts';
DELETE FROM host WHERE id = 1;
-- (the statements of this file take well under a minute)
SELECT used, peak, integral BETWEEN 3 * 3600 AND 3 * 3660 AS three_hours, since > now() AS since_moved
  FROM usage_counter WHERE account_id = 1 AND feature = 'hosts';
-- a clock behind the counter's (writers queued on the lock) never runs it backwards
SELECT since + interval '1 hour' AS ahead FROM usage_counter WHERE account_id = 1 AND feature = 'hosts' \gset
UPDATE usage_counter SET since = :'ahead' WHERE account_id = 1 AND feature = 'hosts';
INSERT INTO host (account_id) VALUES (1);
SELECT used, peak, integral BETWEEN 3 * 3600 AND 3 * 3660 AS unchanged, since > statement_timestamp() AS since_kept FROM usage_counter WHERE account_id = 1 AND feature = 'hosts';

-- U2: usage prices; the formula of each mode
SELECT plan_usage_price('central_basic', 'hosts', 10, 2, NULL, 'graduated', 'EUR');
SELECT plan_usage_price('meet_live', 'attendee_minutes', 100, 0,
                        '[{"up_to": 1000, "unit_amount": 0.05}, {"up_to": null, "unit_amount": 0.03, "flat_amount": 5}]',
                        'graduated', 'EUR');
SELECT plan_usage_price('meet_capped', 'attendee_minutes', 0, 0.001, NULL, 'graduated', 'KWD');
SELECT plan, feature, included, unit_amount, tiers, mode, currency FROM plan_usage_price ORDER BY 1, 2;
-- graduated: 900 at 0.05 + 1100 at 0.03 + 5 flat = 83; volume: 2000 at 0.03 + 5 = 65
SELECT m, usage_amount(2000, 0, '[{"up_to": 1000, "unit_amount": 0.05}, {"up_to": null, "unit_amount": 0.03, "flat_amount": 5}]', m) AS amount
  FROM unnest('{graduated,volume}'::text[]) AS m;
SELECT usage_amount(1000, 0, '[{"up_to": 1000, "unit_amount": 0.05}, {"up_to": null, "unit_amount": 0.03}]', 'volume') AS edge,
       usage_amount(1001, 0, '[{"up_to": 1000, "unit_amount": 0.05}, {"up_to": null, "unit_amount": 0.03}]', 'volume') AS past_edge,
       usage_amount(250, 9, '{"size": 100}', 'package') AS three_packages,
       usage_amount(200, 9, '{"size": 100}', 'package') AS two_packages,
       usage_amount(0, 9, '{"size": 100}', 'package') AS none;
-- exact amounts in currencies of exponent 0 and 3, rounded once
SELECT round_money(usage_amount(1234, 0.7, NULL, 'graduated'), 'JPY') AS jpy,
       round_money(usage_amount(1234, 0.0015, NULL, 'graduated'), 'KWD') AS kwd,
       round_money(usage_amount(3, 0.3333, '[{"up_to": 1, "unit_amount": 0.3333}, {"up_to": null, "unit_amount": 0.3334}]', 'graduated'), 'EUR') AS eur;
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', 0, 1, NULL, 'stairs')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', 0, 'NaN', NULL, 'graduated')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', -1, 1, NULL, 'graduated')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'nope', 0, 1, NULL, 'graduated')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_nope', 'hosts', 0, 1, NULL, 'graduated')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', 0, 1, NULL, 'graduated', 'XXX')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', 0, 1, '[{"up_to": 5}, {"up_to": 3}, {"up_to": null}]', 'graduated')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', 0, 1, '[{"up_to": 5}]', 'volume')$$);
SELECT pg_temp.error_of($$SELECT subscription.plan_usage_price('central_basic', 'hosts', 0, 1, NULL, 'package')$$);
SELECT pg_temp.error_of($$SELECT subscription.usage_amount(-1, 1, NULL, 'graduated')$$);
SELECT pg_temp.error_of($$SELECT subscription.usage_amount('NaN', 1, NULL, 'graduated')$$);
SELECT count(*) AS prices FROM plan_usage_price;

-- U4: usage recorded with keys; a retry counts once and returns the same total
SELECT record_usage(2, 'attendee_minutes', 600, 'webinar-1', '2026-01-10') AS total;
SELECT record_usage(2, 'attendee_minutes', 600, 'webinar-1', '2026-01-10') AS retry;
SELECT record_usage(2, 'attendee_minutes', 1500, 'webinar-2', '2026-01-20') AS total;
SELECT record_usage(2, 'attendee_minutes', 0, 'webinar-3', '2026-01-21') AS zero;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(2, 'attendee_minutes', -5, 'webinar-4')$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(2, 'hosts', 5, 'webinar-4')$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(2, 'nope', 5, 'webinar-4')$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(99, 'attendee_minutes', 5, 'webinar-4')$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(2, 'attendee_minutes', 5, NULL)$$);
-- a NULL argument of either form: 22004 (the checks' form with
-- require_arguments, src/usage.c), the keyed form's tenant checked first
SELECT pg_temp.error_of($$SELECT subscription.record_usage(2, 'attendee_minutes', 5, 'webinar-4', NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(2, 2, 'attendee_minutes', NULL, 'webinar-4', now())$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 2, 'attendee_minutes', NULL, 'webinar-4', now())$$);
-- an unknown account (tenant_of finds none: require_account's P0002 above),
-- with a NULL argument: the argument first
SELECT pg_temp.error_of($$SELECT subscription.record_usage(99, 'attendee_minutes', 5, NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 2, 'attendee_minutes', 5, 'webinar-4', now())$$);
-- a prepaid cap: 23514 at once, fail-closed, nothing recorded
SELECT record_usage(3, 'attendee_minutes', 900, 'c-1', '2026-01-05') AS capped_total;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(3, 'attendee_minutes', 101, 'c-2', '2026-01-06')$$);
SELECT record_usage(3, 'attendee_minutes', 100, 'c-3', '2026-01-06') AS at_the_cap;
-- Q1-Q3 (record_usage is C, src/usage.c): under an idempotency key the
-- call is idempotent()'s: a retry returns the kept total, another usage key
-- under the same request is 23505, the counter moved once (rolled back)
SAVEPOINT usage_request;
SET LOCAL subscription.idempotency_key = 'usage-request-1';
SELECT record_usage(2, 'attendee_minutes', 7, 'webinar-q1', '2026-01-22') AS first,
       record_usage(2, 'attendee_minutes', 7, 'webinar-q1', '2026-01-22') AS again;
SELECT regexp_replace(pg_temp.error_of($$SELECT subscription.record_usage(2, 'attendee_minutes', 7, 'webinar-q2', '2026-01-22')$$),
                      ' at [0-9TZ:.-]+\.', ' at (time).') AS another_key;
SELECT function, result FROM idempotency_key WHERE key = 'usage-request-1';
SELECT used FROM usage_counter WHERE account_id = 2 AND feature = 'attendee_minutes';
ROLLBACK TO SAVEPOINT usage_request;
SHOW subscription.idempotency_key;
SELECT account_id, key, quantity, total FROM usage_record ORDER BY account_id, key;

-- U5: a correction moves the counter by the difference, with its reason in history
SELECT correct_usage(2, 'attendee_minutes', 'webinar-2', 1400, 'one attendee counted twice') AS corrected;
SELECT operation, account_id, details FROM history WHERE operation = 'correct_usage';
SELECT pg_temp.error_of($$SELECT subscription.correct_usage(2, 'attendee_minutes', 'nope', 1, 'x')$$);
SELECT pg_temp.error_of($$SELECT subscription.correct_usage(2, 'attendee_minutes', 'webinar-2', -1, 'x')$$);
SELECT pg_temp.error_of($$SELECT subscription.correct_usage(2, 'attendee_minutes', 'webinar-2', 1, NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.correct_usage(3, 'attendee_minutes', 'c-1', 901, 'more')$$);

-- U3: billed in arrears at the renewal: one charge line per priced feature
-- for the ending period, then the accumulators reset.
-- hosts: 3 rows for 12 days and 2 for 19.5 before that... set exactly:
UPDATE usage_counter SET used = 30, peak = 31, integral = 30 * 86400 * 31, since = '2026-02-01'
 WHERE account_id = 1 AND feature = 'hosts';
SELECT renew_due('2026-02-01') AS renewed;
SELECT subscription_id, item, amount, currency, period, description FROM ledger
 WHERE item LIKE 'usage %' ORDER BY subscription_id, id;
-- (the integral of recorded usage runs on the server's clock: not shown)
SELECT subscription_id, feature, period, aggregation, used, peak,
       CASE WHEN aggregation = 'time_weighted' THEN integral END AS integral, aggregate, included, billable, amount, currency
  FROM usage_period ORDER BY subscription_id, feature, period;
SELECT account_id, feature, used, peak, integral, since >= '2026-02-01' AS since_the_period_end FROM usage_counter
 WHERE feature IN ('hosts', 'attendee_minutes') ORDER BY account_id, feature;
-- run twice: billed once
SELECT renew_due('2026-02-01') AS renewed_again, (SELECT count(*) FROM ledger WHERE item LIKE 'usage %') AS usage_lines,
       (SELECT count(*) FROM usage_period) AS snapshots;

-- catching up three periods: each billed from its own figures (30 hosts
-- all the time: 28, 31 and 30 days of 30 hosts, 10 included, at 2)
UPDATE usage_counter SET used = 30, peak = 30, integral = 0 WHERE account_id = 1 AND feature = 'hosts';
SELECT renew_due('2026-05-01') AS renewed;
SELECT feature, period, aggregate, billable, amount FROM usage_period
 WHERE subscription_id = :central ORDER BY period;

-- U3: a plan change mid-period bills the usage so far at the old plan's prices
SELECT plan_usage_price('central_pro', 'hosts', 100, 1, NULL, 'graduated', 'EUR');
SELECT effective_at FROM change_plan(:central, 'central_pro', '2026-05-11');
SELECT feature, plan, period, aggregate, amount FROM usage_period
 WHERE subscription_id = :central AND upper(period) > '2026-05-01' ORDER BY period;
SELECT renew_due('2026-06-11') AS renewed;
SELECT id, plan, period, status FROM subscription WHERE id = :central;
SELECT feature, plan, period, aggregate, billable, amount FROM usage_period
 WHERE subscription_id = :central AND upper(period) > '2026-05-01' ORDER BY period;

-- U3: ending early bills the usage up to the end; credit pays a usage charge
SELECT record_usage(2, 'attendee_minutes', 5000, 'webinar-9', '2026-06-20') AS total;
SELECT credit_account(2, 10, 'goodwill');
SELECT end_early(:live, '2026-06-21') > 0 AS credited;
SELECT item, kind, amount, period FROM ledger WHERE account_id = 2 AND item LIKE 'usage %' AND period && '[2026-06-01,2026-07-01)'
 ORDER BY id;

ROLLBACK;

-- The demo's usage-based billing (issue 21, item 8): a LogMeIn-style meter
-- per host-day, and ClickMeeting-style attendee minutes recorded with keys,
-- priced graduated; previews, then the renewal that bills them.
\set ON_ERROR_STOP on
\pset footer off
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET subscription.max_ahead = '3 years';

\echo
\echo '=== U1. LogMeIn Central pay-per-use: hosts billed per host-day beyond 300 included, 0.10 USD each'
INSERT INTO plan (code, product, name, rank) VALUES ('central_metered', 'central', 'Central pay per host-day', 0);
INSERT INTO plan_price (plan, cycle, amount, currency) VALUES ('central_metered', '1 month', 0, 'USD');
INSERT INTO plan_limit (plan, feature, value) VALUES ('central_metered', 'metered_hosts', NULL);
INSERT INTO account (id, name) SELECT max(id) + 1, 'Metered IT (LogMeIn Central)' FROM account RETURNING id AS metered_it \gset
SELECT subscribe(:metered_it, 'central_metered', '1 month', 1, '2027-01-01') AS metered_sub \gset
CREATE TABLE public.metered_host (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text NOT NULL);
SELECT enforce_limit('public.metered_host', 'metered_hosts', 'account_id');
SELECT meter('public.metered_host', 'metered_hosts', 'time_weighted', '1 day');
SELECT plan_usage_price('central_metered', 'metered_hosts', 300, 0.10, NULL, 'graduated', 'USD');
\echo 'Twelve hosts are registered: the limit guard counts them, and its meter integrates them over time'
INSERT INTO public.metered_host (account_id, name) SELECT :metered_it, 'host-' || g FROM generate_series(1, 12) AS g;
-- the demo's calendar is not the server's: the twelve hosts are set as
-- running since the period began (the guard keeps this from real writes)
UPDATE usage_counter SET since = '2027-01-01', integral = 0 WHERE account_id = :metered_it AND feature = 'metered_hosts';
SELECT account_id, feature, aggregation, used, peak FROM current_usage WHERE account_id = :metered_it;

\echo
\echo '=== U4. ClickMeeting attendee minutes, recorded with idempotency keys, graduated: 100 free, 0.05 to 1,000, 0.03 beyond'
INSERT INTO plan (code, product, name, rank) VALUES ('cm_metered', 'clickmeeting', 'Live, minutes billed', 0);
INSERT INTO plan_price (plan, cycle, amount, currency) VALUES ('cm_metered', '30 days', 25, 'USD');
INSERT INTO plan_limit (plan, feature, value) VALUES ('cm_metered', 'attendee_minutes', NULL);
SELECT plan_usage_price('cm_metered', 'attendee_minutes', 100, 0,
                        '[{"up_to": 1000, "unit_amount": 0.05}, {"up_to": null, "unit_amount": 0.03}]', 'graduated', 'USD');
INSERT INTO account (id, name) SELECT max(id) + 1, 'Webinar Hub (ClickMeeting)' FROM account RETURNING id AS hub \gset
SELECT subscribe(:hub, 'cm_metered', '30 days', 1, '2027-01-01') AS hub_sub \gset
\echo 'Each webinar reports its minutes once per key; the retry of webinar-1 counts once:'
SELECT record_usage(:hub, 'attendee_minutes', 600, 'webinar-1', '2027-01-10') AS first,
       record_usage(:hub, 'attendee_minutes', 600, 'webinar-1', '2027-01-10') AS retried,
       record_usage(:hub, 'attendee_minutes', 1500, 'webinar-2', '2027-01-20') AS second;
\echo 'One attendee was counted twice: the correction keeps its reason in history (U5)'
SELECT correct_usage(:hub, 'attendee_minutes', 'webinar-2', 1400, 'one attendee counted twice') AS corrected;

\echo
\echo '=== U6. What the next renewals will bill of the usage (preview_usage)'
SELECT subscription_id, feature, round(aggregate, 2) AS aggregate, included, round(billable, 2) AS billable, amount, currency
  FROM preview_usage(:metered_it) UNION ALL
SELECT subscription_id, feature, round(aggregate, 2), included, round(billable, 2), amount, currency FROM preview_usage(:hub);

\echo
\echo '=== U3. The renewals bill each period in arrears, once, exactly as previewed'
SELECT renew_due('2027-02-01') >= 2 AS renewed;
SELECT subscription_id, item, amount, currency, to_char(lower(period), 'YYYY-MM-DD') || ' to ' || to_char(upper(period), 'YYYY-MM-DD') AS period
  FROM ledger WHERE subscription_id IN (:metered_sub, :hub_sub) AND item LIKE 'usage %' ORDER BY id;
\echo 'Running the renewal again bills nothing twice:'
SELECT renew_due('2027-02-01') AS renewed_again,
       (SELECT count(*) FROM ledger WHERE subscription_id IN (:metered_sub, :hub_sub) AND item LIKE 'usage %') AS usage_lines;

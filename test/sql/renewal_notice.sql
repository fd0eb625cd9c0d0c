-- renewal_notice (L5, L8): what renews within subscription.notice_days, and for how much
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central'), ('rainbow', 'Rainbow');
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_plus', 'central', 'Plus', 2), ('central_premier', 'central', 'Premier', 3),
    ('rb_business', 'rainbow', 'Business', 1);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 250, 6878), ('central_premier', '1 year', 250, 10318);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('rb_business', '1 month', 5.99, true), ('rb_business', '1 year', 64.69, true),
    ('rb_business', '3 years', 172.51, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Initech');

-- renews in about 20 days: in the notice
SELECT subscribe(1, 'central_plus', '1 year', 250, now() - interval '345 days') AS central \gset
-- L7: the renewal is proposed on Premier (a pending change): the notice shows it
UPDATE subscription SET pending_plan = 'central_premier' WHERE id = :central;
-- renews in about 10 days, 12 licenses, prepaid 3 years then monthly (R6)
SELECT subscribe(2, 'rb_business', '3 years', 12, now() - interval '3 years' + interval '10 days', 'to_monthly') AS prepaid \gset
-- renews in about 40 days: not yet
SELECT subscribe(2, 'rb_business', '1 year', 3, now() - interval '325 days') AS later \gset
-- renews soon but will not: no renewal, or cancelled
SELECT subscribe(2, 'rb_business', '1 month', 1, now() - interval '20 days', 'none') AS no_renewal \gset
SELECT subscribe(2, 'rb_business', '1 month', 2, now() - interval '20 days') AS cancelled \gset
SELECT cancel(:cancelled) IS NOT NULL AS cancelled;

SELECT subscription_id, account_id, plan, cycle, quantity, tier, amount, currency, credit,
       renews_at > now() AND renews_at <= now() + interval '30 days' AS within_30_days
  FROM renewal_notice ORDER BY subscription_id;

-- subscription.notice_days widens or narrows the window
SET subscription.notice_days = 60;
SELECT array_agg(subscription_id ORDER BY subscription_id) AS within_60_days FROM renewal_notice;
SET subscription.notice_days = 15;
SELECT array_agg(subscription_id ORDER BY subscription_id) AS within_15_days FROM renewal_notice;
RESET subscription.notice_days;
SELECT current_setting('subscription.notice_days') AS default_days;
SELECT pg_temp.error_of($$SET subscription.notice_days = -1$$);

ROLLBACK;

-- announce_renewals takes no usage column: the view's usage join (one
-- row, joined on true) is removed from its query, and no preview_usage
-- runs for its notices; a reader of the usage calls it (issue 20)
BEGIN;
SET LOCAL track_functions = 'pl';
CREATE FUNCTION pg_temp.previews() RETURNS bigint
LANGUAGE sql AS $$
    SELECT coalesce((SELECT calls FROM pg_stat_xact_user_functions
                      WHERE schemaname = 'subscription' AND funcname = 'preview_usage'), 0)
$$;
INSERT INTO product (code, name) VALUES ('svc', 'Service');
INSERT INTO plan (code, product, name) VALUES ('metered', 'svc', 'Metered');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('metered', '1 month', 10, false);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('metered', 'calls', NULL, false);
SELECT plan_usage_price('metered', 'calls', 100, 0.01, NULL, 'graduated', 'EUR') IS NOT NULL AS priced;
INSERT INTO account (id, tenant_id, name) VALUES (7, 7, 'metered');
SELECT subscribe(7, 'metered', '1 month', 1, now() - interval '20 days') AS metered \gset
SELECT pg_temp.previews() AS p0 \gset
SELECT announce_renewals() AS notices;
SELECT pg_temp.previews() - :p0 AS previews_by_announce_renewals;
SELECT usage_amount FROM renewal_notice WHERE subscription_id = :metered;
SELECT pg_temp.previews() - :p0 AS previews_by_a_reader_of_usage;
ROLLBACK;

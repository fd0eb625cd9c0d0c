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

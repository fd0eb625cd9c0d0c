-- L7: a product that renews 'from_usage' proposes each renewal's quantity
-- from the account's use: the tier holding its hosts on a tiered plan (up
-- or down), the licenses assigned on a plan priced per license.
-- renewal_notice shows the proposal, and the renewal charges what the
-- notice showed when the use does not change.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central'), ('rainbow', 'Rainbow'), ('desk', 'Zendesk');
SELECT code, renewal_quantity AS default_renewal_quantity FROM product ORDER BY code;
-- only the two settings
-- (on Citus the constraint fails on the reference table's shard, whose
-- name the error gives: the table's own name shown)
SELECT regexp_replace(pg_temp.error_of($$UPDATE product SET renewal_quantity = 'from_use' WHERE code = 'central'$$),
                      '"product_[0-9]+"', '"product"') AS unknown_setting;
UPDATE product SET renewal_quantity = 'from_usage' WHERE code IN ('central', 'rainbow');
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_plus', 'central', 'Plus', 2),
    ('rb_business', 'rainbow', 'Business', 1), ('zd_pro', 'desk', 'Professional', 1);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 25, 1000), ('central_plus', '1 year', 100, 3000), ('central_plus', '1 year', 250, 6878);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('rb_business', '1 year', 64.69, true), ('zd_pro', '1 year', 55, true);
-- L12: a host per license of the tier
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('central_plus', 'hosts', 1, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('rb_seats', 'rainbow', 'Five more seats', 'licenses', 5);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('rb_seats', '1 year', 300);
INSERT INTO plan_addon (plan, addon) VALUES ('rb_business', 'rb_seats');
INSERT INTO account (tenant_id, id, name) SELECT g, g, 'account ' || g FROM generate_series(1, 9) AS g;

-- every subscription renews in 10 days
SELECT subscribe(1, 'central_plus', '1 year', 100, now() - interval '1 year' + interval '10 days') AS down \gset
SELECT subscribe(2, 'central_plus', '1 year', 25, now() - interval '1 year' + interval '10 days') AS up \gset
SELECT subscribe(3, 'central_plus', '1 year', 250, now() - interval '1 year' + interval '10 days') AS over \gset
SELECT subscribe(4, 'central_plus', '1 year', 100, now() - interval '1 year' + interval '10 days') AS uncounted \gset
SELECT subscribe(5, 'rb_business', '1 year', 10, now() - interval '1 year' + interval '10 days') AS seats \gset
SELECT subscribe(6, 'rb_business', '1 year', 10, now() - interval '1 year' + interval '10 days') AS pending \gset
SELECT subscribe(7, 'rb_business', '1 year', 4, now() - interval '1 year' + interval '10 days') AS no_seats \gset
SELECT subscribe(8, 'rb_business', '1 year', 10, now() - interval '1 year' + interval '10 days') AS addon_seats \gset
SELECT subscribe(9, 'zd_pro', '1 year', 5, now() - interval '1 year' + interval '10 days') AS kept \gset

-- the hosts of accounts 1 to 3 (registration counts the rows already there);
-- account 4's plan counts hosts, but its own are in no registered table
CREATE TABLE public.host (id bigint GENERATED ALWAYS AS IDENTITY, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.host
\i test/sql/include/app_tables.psql
INSERT INTO public.host (account_id)
SELECT a FROM (VALUES (1, 20), (2, 60), (3, 300)) AS h(a, n), generate_series(1, n);
SELECT enforce_limit('public.host', 'hosts');
DELETE FROM usage_counter WHERE account_id = 4;
SELECT account_id, used FROM usage_counter WHERE feature = 'hosts' ORDER BY account_id;

-- licenses (a new member takes a seat of the default subscription, R10):
-- 3 of 10 (5), 2 of 10 (6), none of 4 (7), 12 of 10 + 5 from an add-on (8), 1 of 5 (9)
SELECT purchase_addon(:addon_seats, 'rb_seats', 1, now() - interval '1 year' + interval '11 days') IS NOT NULL AS seats_bought;
INSERT INTO member (tenant_id, account_id) SELECT a, a FROM (VALUES (5, 3), (6, 2), (8, 12), (9, 1)) AS m(a, n), generate_series(1, n);
SELECT subscription_id, used, capacity FROM license_counter ORDER BY subscription_id;
-- L7 and a pending quantity: the account's (or sales') decision wins
UPDATE subscription SET pending_quantity = 8 WHERE id = :pending;

-- the proposal, from the current use
CREATE TEMP TABLE notice AS
SELECT subscription_id, plan, quantity, tier, amount, currency FROM renewal_notice;
SELECT n.*, s.quantity AS current_quantity
  FROM notice AS n JOIN subscription AS s ON s.id = n.subscription_id ORDER BY subscription_id;
-- one place (issue 15, fold 8): the notice's terms are next_terms'
-- (the rows read first, then next_terms() called with each, as the
-- extension calls it: on Citus a query of subscription runs on its
-- shards, where a row is of the shard's type, not subscription's)
WITH s AS MATERIALIZED (SELECT * FROM subscription)
SELECT count(*) AS notice_rows,
       count(*) FILTER (WHERE (t.plan, t.quantity) IS DISTINCT FROM (n.plan, n.quantity)) AS disagreeing
  FROM notice AS n JOIN s ON s.id = n.subscription_id, next_terms(s::subscription) AS t;
-- what each use asked for (over 250: the largest tier holds fewer)
WITH s AS MATERIALIZED (SELECT * FROM subscription)
SELECT s.id, t.needed FROM s, next_terms(s::subscription) AS t ORDER BY s.id;

-- the renewal: up, down, kept at the largest tier with a WARNING (L3: contact sales)
SELECT renew_due(now() + interval '11 days') AS renewed;
SELECT s.id, s.quantity, s.paid_quantity, s.pending_quantity, c.capacity AS seats, c.used AS seats_used
  FROM subscription AS s LEFT JOIN license_counter AS c ON c.tenant_id = s.tenant_id AND c.subscription_id = s.id ORDER BY s.id;
-- the charge is what the notice showed
SELECT n.subscription_id, n.amount AS notice_amount, l.amount AS charged, l.description,
       n.amount = l.amount AS agree
  FROM notice AS n
  JOIN ledger AS l ON l.subscription_id = n.subscription_id AND l.kind = 'charge' AND l.item = 'plan'
                  AND lower(l.period) > now()
 ORDER BY n.subscription_id;
-- the limit follows the new tier: account 1 has room for 5 more hosts, account 2 for 40
SELECT effective_limit(1, 'hosts') AS limit_1, effective_limit(2, 'hosts') AS limit_2;
INSERT INTO public.host (account_id) SELECT 1 FROM generate_series(1, 5);
SELECT pg_temp.error_of($$INSERT INTO public.host (account_id) VALUES (1)$$) ~ '^23514' AS the_26th_host_refused;

-- the next year's notice: the same use proposes the same quantities
SELECT subscription_id, quantity, amount FROM renewal_notice ORDER BY subscription_id;
SET LOCAL subscription.notice_days = 400;
SELECT subscription_id, quantity, amount FROM renewal_notice ORDER BY subscription_id;

-- account 2 drops to 10 hosts: the tier it renews at goes down to 25 ...
DELETE FROM public.host WHERE account_id = 2 AND id NOT IN (SELECT id FROM public.host WHERE account_id = 2 ORDER BY id LIMIT 10);
SELECT subscription_id, quantity, amount FROM renewal_notice WHERE subscription_id = :up;
-- ... unless the product keeps the quantity (the default)
UPDATE product SET renewal_quantity = 'keep' WHERE code = 'central';
SELECT subscription_id, quantity, amount FROM renewal_notice WHERE subscription_id = :up;
ROLLBACK;

-- coupons (Z10), credits (L9, L10) and the billing anchor (L4)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support'), ('central', 'LogMeIn Central');
INSERT INTO plan (code, product, name, rank) VALUES
    ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2), ('central_plus', 'central', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 49, false), ('zd_pro', '1 month', 55, true), ('zd_pro', '1 year', 588, true);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES ('central_plus', '1 year', 25, 1200);
INSERT INTO coupon (code, percent_off, amount_off, currency, cycles, redeem_by, max_redemptions) VALUES
    ('WELCOME20', 20, NULL, 'EUR', 2, NULL, NULL),
    ('TENOFF', NULL, 10, 'EUR', NULL, NULL, NULL),
    ('HUGE', NULL, 500, 'EUR', 1, NULL, NULL),
    ('LASTYEAR', 50, NULL, 'EUR', NULL, '2025-12-31', NULL),
    ('ONCE', 10, NULL, 'EUR', NULL, NULL, 1),
    ('DOLLARS', NULL, 5, 'USD', NULL, NULL, NULL);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech'), (3, 3, 'Acme IT');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (10, 1, 1, 'owner@globex', 'owner'), (11, 1, 1, 'admin@globex', 'admin');

-- Z10: 20% off the first 2 periods, as its own discount line
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-01', 'always', 'WELCOME20') AS welcome \gset
SELECT renew_due('2026-03-01') AS renewed;
-- ordered by period, not by id: on Citus the discount, written by the ledger's
-- trigger on the worker, takes an id of the worker's range (issue 17)
SELECT kind, amount, item, period, description FROM ledger WHERE subscription_id = :welcome ORDER BY lower(period), kind;
SELECT at, charged, balance FROM invoice WHERE subscription_id = :welcome ORDER BY at;
SELECT coupon, coupon_periods_left FROM subscription WHERE id = :welcome;
-- 10 off forever; an amount above the charge takes the charge, not more
SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'TENOFF') AS tenoff,
       subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'HUGE') AS huge \gset
SELECT renew_due('2026-02-01') AS renewed;
SELECT subscription_id, kind, amount FROM ledger WHERE subscription_id IN (:tenoff, :huge) ORDER BY lower(period), subscription_id, kind;
-- refusals
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'LASTYEAR')$$); -- 55000
SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'ONCE') IS NOT NULL AS redeemed;
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'ONCE')$$);     -- 55000
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'DOLLARS')$$);  -- 22023
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'FREE4EVER')$$);-- 42704

-- L9, L10: a credit with its reason; the next charges use it
SELECT credit_account(1, 50, 'apology for the outage of March 3') IS NOT NULL AS credited;
SELECT credit_balance(1) AS balance;
-- the renewal notice shows the coupon's discount (none left for WELCOME20,
-- 10 off for TENOFF) and the credit the renewal will use
SELECT subscription_id, renews_at, amount, discount, credit FROM renewal_notice
 WHERE subscription_id IN (:welcome, :tenoff) ORDER BY subscription_id;
SELECT renew_due('2026-04-01') AS renewed;
SELECT kind, amount, description FROM ledger WHERE subscription_id = :welcome AND period @> timestamptz '2026-04-15' ORDER BY id;
SELECT credit_balance(1) AS balance;

-- L9: a subscription ended early for consolidation: its unused days become
-- credit (1200 paid for 2026, ended July 1: 184 of 365 days = 604.93)
SELECT subscribe(3, 'central_plus', '1 year', 25, '2026-01-01') AS hosts \gset
SELECT end_early(:hosts, '2026-07-01') AS credited;
SELECT status FROM subscription WHERE id = :hosts;
-- and the consolidated subscription's first charge uses it
SELECT subscribe(3, 'zd_pro', '1 month', 5, '2026-07-01') AS consolidated \gset
SELECT ledger_id > 0 AS line, subscription_id, kind, change, balance, description FROM credit_statement WHERE account_id = 3 ORDER BY ledger_id;

-- errors
SELECT pg_temp.error_of($$SELECT credit_account(1, 0, 'nothing')$$);            -- 22023
SELECT pg_temp.error_of($$SELECT credit_account(1, 10.001, 'a tenth of a cent')$$); -- 22023
SELECT pg_temp.error_of($$SELECT credit_account(1, 'NaN', 'not a number')$$);    -- 22023
SELECT pg_temp.error_of($$SELECT credit_account(1, 'Infinity', 'everything')$$); -- 22023
SELECT pg_temp.error_of($$SELECT credit_account(1, -5, 'a debit')$$);            -- 22023
SELECT pg_temp.error_of($$SELECT credit_account(1, 10, 'yen', 'XXX')$$);         -- 42704
SELECT pg_temp.error_of($$SELECT credit_account(99, 10, 'nobody')$$);            -- P0002
SELECT pg_temp.error_of($$SELECT credit_account(1, 10, NULL)$$);                 -- 22004
SELECT pg_temp.error_of(format($$SELECT end_early(%s, '2026-08-01')$$, :hosts)); -- 55000: ended
SET LOCAL subscription.actor = '11';
SELECT pg_temp.error_of($$SELECT credit_account(1, 10, 'from an admin')$$);      -- 42501
RESET subscription.actor;

-- L4: an account with a billing date: a new subscription runs to the next
-- one and pays its days; then all renew together
UPDATE account SET billing_anchor = '2026-01-01' WHERE id = 2;
SELECT subscribe(2, 'zd_pro', '1 month', 1, '2026-01-20') AS m, subscribe(2, 'zd_pro', '1 year', 1, '2026-03-15') AS y,
       subscribe(2, 'zd_pro', '1 month', 1, '2026-02-01') AS on_the_day \gset
-- 55 x 12/31 = 21.29 to February 1; 588 x 292/365 = 470.40 to January 1, 2027; a full month from the billing date
SELECT id, period, anchor, period_number FROM subscription WHERE id IN (:m, :y, :on_the_day) ORDER BY id;
SELECT subscription_id, amount, period, description FROM ledger WHERE subscription_id IN (:m, :y, :on_the_day) ORDER BY id;
SELECT renew_due('2026-03-01') AS renewed;
SELECT id, period FROM subscription WHERE id IN (:m, :on_the_day) ORDER BY id;
-- before the billing anchor, the first period runs to it
UPDATE account SET billing_anchor = '2026-06-01' WHERE id = 1;
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-05-22') AS early \gset
SELECT period, period_number FROM subscription WHERE id = :early;
SELECT amount FROM ledger WHERE subscription_id = :early;
-- and then renews on the billing dates: June 1, July 1
SELECT renew_due('2026-07-01') >= 1 AS renewed;
SELECT period, period_number FROM subscription WHERE id = :early;
SELECT amount, period FROM ledger WHERE subscription_id = :early ORDER BY id;

-- L10 in one statement of charges of two accounts, their ids interleaved:
-- each account's credit goes to its own charges in the order of their ids
-- (Globex 2: 30 of credit pays 20, then 10; Initech 2: 50 pays 20 and 20)
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Globex 2'), (5, 5, 'Initech 2');
SELECT subscribe(4, 'zd_team', '1 month', 1, '2026-01-01') AS g2, subscribe(5, 'zd_team', '1 month', 1, '2026-01-01') AS i2 \gset
SELECT credit_account(4, 30, 'goodwill') IS NOT NULL AND credit_account(5, 50, 'goodwill') IS NOT NULL AS credited;
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
SELECT x.account_id, x.account_id, x.sub, 'charge', 20, 'EUR', tstzrange(x.starts, x.starts + interval '1 day'), 'plan', 'zd_team', 'a test charge'
  FROM (VALUES (4, :g2, timestamptz '2026-01-05'), (5, :i2, '2026-01-05'), (4, :g2, '2026-01-06'),
               (5, :i2, '2026-01-06')) AS x (account_id, sub, starts);
SELECT account_id, lower(period) AS charge_of, amount FROM ledger
 WHERE account_id IN (4, 5) AND kind = 'credit_used' ORDER BY account_id, charge_id;
SELECT credit_balance(4) AS globex2_left, credit_balance(5) AS initech2_left;

ROLLBACK;

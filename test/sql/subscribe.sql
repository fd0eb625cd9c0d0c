-- subscribe: the first period and its charge; the data model's constraints
\set VERBOSITY default
\i test/sql/include/setup.psql
-- on Citus the name of a table or constraint in an error carries its
-- shard's suffix (subscription_102441): left out, as a single server has none
ALTER FUNCTION pg_temp.error_of(text) RENAME TO error_of_shard;
CREATE FUNCTION pg_temp.error_of(statement text) RETURNS text
LANGUAGE sql RETURN regexp_replace(pg_temp.error_of_shard(statement), '_1\d{5}"', '"', 'g');
SET search_path = subscription, public;
-- the catalog rows of this file do not outlive it
BEGIN;
SET TimeZone = 'UTC';

INSERT INTO product (code, name) VALUES
    ('central', 'LogMeIn Central'), ('support', 'Zendesk Support'),
    ('rainbow', 'Rainbow'), ('meet', 'ClickMeeting');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('central_plus', 'central', 'Plus', 2, 'service'),
    ('support_pro', 'support', 'Professional', 2, 'service'),
    ('rainbow_business', 'rainbow', 'Business', 2, 'service'),
    ('meet_live', 'meet', 'Live', 1, 'service'),
    ('meet_yen', 'meet', 'Live (JPY)', 1, 'service');
INSERT INTO plan_price (plan, cycle, tier, amount, per_license, currency) VALUES
    ('central_plus', '1 year', 25, 1299.00, false, 'USD'),
    ('central_plus', '1 year', 100, 3999.00, false, 'USD'),
    ('support_pro', '1 month', NULL, 55.00, true, 'EUR'),
    ('support_pro', '1 year', NULL, 49.00 * 12, true, 'EUR'),
    ('rainbow_business', '1 month', NULL, 4.995, true, 'EUR'),
    ('rainbow_business', '3 years', NULL, 150.00, true, 'EUR'),
    ('meet_live', '30 days', NULL, 29.00, false, 'EUR'),
    ('meet_live', '365 days', NULL, 300.00, false, 'EUR'),
    ('meet_yen', '30 days', NULL, 3333.5, false, 'JPY');
INSERT INTO coupon (code, percent_off, cycles) VALUES ('WELCOME', 10, 3);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Globex');
UPDATE account SET billing_anchor = '2026-01-01' WHERE id = 2;

-- Z4, R2: per-license price times quantity, period [at, at + cycle)
SELECT subscribe(1, 'support_pro', '1 month', 5, '2026-01-31 09:00') AS support_id \gset
SELECT plan, cycle, quantity, period, anchor, renewal, status, is_default, cancel_at_period_end
  FROM subscription WHERE id = :support_id;
SELECT kind, amount, currency, period, description FROM ledger WHERE subscription_id = :support_id;

-- L3, L12: a tier price is flat; the quantity is the tier
SELECT subscribe(1, 'central_plus', '1 year', 100, '2028-02-29 00:00') AS central_id \gset
SELECT quantity, period FROM subscription WHERE id = :central_id;
SELECT amount, currency FROM ledger WHERE subscription_id = :central_id;

-- R2: prepaid 3 years; amounts round once, at the end, half away from zero
SELECT subscribe(1, 'rainbow_business', '1 month', 3, '2026-03-01', 'once') AS r1 \gset
SELECT subscribe(1, 'rainbow_business', '3 years', 2, '2026-03-01', 'to_monthly') AS r3 \gset
SELECT s.cycle, s.renewal, s.period, l.amount
  FROM subscription s JOIN ledger l ON l.tenant_id = s.tenant_id AND l.subscription_id = s.id
 WHERE s.id IN (:r1, :r3) ORDER BY s.id;

-- K2: 30-day and 365-day cycles are their own prices, not '1 month' or '1 year'
SELECT subscribe(1, 'meet_live', '30 days', 1, '2026-01-31') AS m30 \gset
SELECT subscribe(1, 'meet_live', '365 days', 1, '2028-01-01') AS m365 \gset
SELECT s.cycle, s.period, l.amount FROM subscription s JOIN ledger l ON l.tenant_id = s.tenant_id AND l.subscription_id = s.id
 WHERE s.id IN (:m30, :m365) ORDER BY s.id;
SELECT pg_temp.error_of($$SELECT subscribe(1, 'meet_live', '1 month', 1, '2026-01-01')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '30 days', 1, '2026-01-01')$$);

-- JPY has no minor unit: 3333.5 rounds half away from zero to 3334
SELECT subscribe(1, 'meet_yen', '30 days', 1, '2026-01-01') AS yen \gset
SELECT amount, currency FROM ledger WHERE subscription_id = :yen;

-- the period is computed in the session's time zone: a month from the 31st
SET TimeZone = 'Europe/Paris';
SELECT subscribe(1, 'support_pro', '1 month', 1, '2026-03-31 00:00+02') AS paris \gset
SELECT period FROM subscription WHERE id = :paris;
SET TimeZone = 'UTC';

-- L12: a tiered plan's quantity must be one of its tiers (55000)
SELECT pg_temp.error_of($$SELECT subscribe(1, 'central_plus', '1 year', 26, '2026-01-01')$$);
-- unknown plan (42704), unknown account (P0002)
SELECT pg_temp.error_of($$SELECT subscribe(1, 'nope', '1 month')$$);
SELECT pg_temp.error_of($$SELECT subscribe(999, 'support_pro', '1 month')$$);
-- bad values (22023)
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', 0)$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', -4)$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '0 days')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '-1 month')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month -3 days')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', 1, now(), 'sometimes')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', 1, 'infinity')$$);
-- NULL required arguments (22004)
SELECT pg_temp.error_of($$SELECT subscribe(NULL, 'support_pro', '1 month')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, NULL, '1 month')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', NULL)$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', NULL)$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', 1, NULL)$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', 1, now(), NULL)$$);
-- Z10: an unknown coupon is 42704 (coupons: test/sql/coupons_credits.sql)
SELECT pg_temp.error_of($$SELECT subscribe(1, 'support_pro', '1 month', 1, now(), 'always', 'NOPE')$$);
-- a refused call writes nothing
SELECT s.subscriptions, l.ledger_lines
  FROM (SELECT count(*) AS subscriptions FROM subscription) AS s, (SELECT count(*) AS ledger_lines FROM ledger) AS l;

-- C2: a period is charged at most once, by constraint
-- (the line's copy as an INSERT ... VALUES, which Citus sends to the
-- tenant's shard as it is: its INSERT ... SELECT answered XX000)
SELECT format($$INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, description)
    VALUES (%s, %s, %s, 'charge', %s, %L, %L, 'again')$$, tenant_id, account_id, subscription_id, amount, currency, period) AS charge_again
  FROM ledger WHERE tenant_id = 1 AND subscription_id = :support_id AND kind = 'charge' ORDER BY id LIMIT 1 \gset
SELECT pg_temp.error_of(:'charge_again');
-- a refund of that period, or a charge of the next one, is fine
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, description)
SELECT tenant_id, account_id, subscription_id, 'refund', 1, currency, period, 'goodwill' FROM ledger WHERE subscription_id = :support_id;
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, description)
SELECT tenant_id, account_id, subscription_id, 'charge', amount, currency, nth_period('2026-01-31 09:00', '1 month', 2), 'next'
  FROM ledger WHERE subscription_id = :support_id AND kind = 'charge';
SELECT kind, amount, period FROM ledger WHERE subscription_id = :support_id ORDER BY id;
-- amounts are positive and finite
SELECT pg_temp.error_of($$INSERT INTO ledger (tenant_id, account_id, kind, amount, currency, description, created_at) VALUES (1, 1, 'credit', -1, 'EUR', 'x', '2026-01-01')$$);
SELECT pg_temp.error_of($$INSERT INTO ledger (tenant_id, account_id, kind, amount, currency, description, created_at) VALUES (1, 1, 'credit', 'NaN', 'EUR', 'x', '2026-01-01')$$);
SELECT pg_temp.error_of($$INSERT INTO ledger (tenant_id, account_id, kind, amount, currency, description, created_at) VALUES (1, 1, 'gift', 1, 'EUR', 'x', '2026-01-01')$$);

-- R10: at most one default subscription per account
UPDATE subscription SET is_default = true WHERE id = :support_id;
SELECT pg_temp.error_of(format('UPDATE subscription SET is_default = true WHERE id = %s', :central_id));

-- text enums are checked
SELECT pg_temp.error_of(format($$UPDATE subscription SET status = 'paused' WHERE id = %s$$, :central_id));
SELECT pg_temp.error_of($$INSERT INTO member (tenant_id, account_id, role) VALUES (1, 1, 'boss')$$);
SELECT pg_temp.error_of($$INSERT INTO member (tenant_id, account_id, rights) VALUES (1, 1, '{sell_everything}')$$);
SELECT pg_temp.error_of($$INSERT INTO product (code, name, upgrade) VALUES ('x', 'x', 'later')$$);
SELECT pg_temp.error_of($$INSERT INTO plan (code, product, name, kind) VALUES ('x', 'central', 'x', 'bundle')$$);
SELECT pg_temp.error_of($$INSERT INTO coupon (code, percent_off, amount_off) VALUES ('BOTH', 10, 5)$$);
SELECT pg_temp.error_of($$INSERT INTO coupon (code, percent_off) VALUES ('TOOMUCH', 150)$$);
SELECT pg_temp.error_of($$INSERT INTO plan_price (plan, cycle, tier, amount, per_license) VALUES ('central_plus', '1 year', 250, 1, true)$$);
-- one price per plan, cycle and tier; '1 month' and '30 days' are different cycles
SELECT pg_temp.error_of($$INSERT INTO plan_price (plan, cycle, amount) VALUES ('support_pro', '1 month', 1)$$);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('support_pro', '30 days', 50);
SELECT cycle_key('1 month'), cycle_key('30 days'), cycle_key('1 year 2 days 00:00:01');

-- history is append-only (R8)
INSERT INTO history (operation, tenant_id, account_id, details) VALUES ('note', 1, 1, '{"by": "test"}');
SELECT pg_temp.error_of($$UPDATE history SET operation = 'other'$$);
SELECT pg_temp.error_of($$DELETE FROM history$$);
SELECT pg_temp.error_of($$TRUNCATE history$$);

-- Nothing lost (issue 15): an account that holds anything is not deleted,
-- its sub-accounts are not taken along (K9 is close_account now); its
-- history stays anyway (no foreign key, R8)
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (3, 1, 'Acme EMEA', 1);
-- (R10: alice gets a license of the default subscription on creation)
INSERT INTO member (tenant_id, account_id, external_id, role) VALUES (1, 1, 'alice', 'owner'), (1, 3, 'bob', 'owner');
INSERT INTO usage_counter (tenant_id, account_id, feature, used) VALUES (1, 3, 'rooms', 2);
SELECT count(*) AS licenses_before FROM license;
SELECT pg_temp.error_of($$DELETE FROM account WHERE id = 1$$);
SELECT pg_temp.error_of($$DELETE FROM account WHERE id = 3$$);
SELECT pg_temp.error_of($$DELETE FROM subscription WHERE id = 1$$);  -- one row: the refusal names it, whatever the scan order
SELECT (SELECT count(*) FROM account) AS accounts, (SELECT count(*) FROM member) AS members,
       (SELECT count(*) FROM subscription) AS subscriptions, (SELECT count(*) FROM license) AS licenses,
       (SELECT count(*) FROM ledger) AS ledger;
-- an account with nothing but history goes; its counters (derived data) with it
INSERT INTO account (id, tenant_id, name) VALUES (9, 9, 'Mistake');
INSERT INTO usage_counter (tenant_id, account_id, feature, used) VALUES (9, 9, 'rooms', 0);
DELETE FROM account WHERE id = 9;
SELECT (SELECT count(*) FROM usage_counter WHERE account_id = 9) AS counters,
       (SELECT count(*) > 0 FROM history WHERE account_id = 9 AND operation = 'account_delete') AS deletion_recorded;
-- a self-reference is checked as a foreign key would check it
SELECT pg_temp.error_of($$INSERT INTO account (id, tenant_id, name, parent_id) VALUES (10, 999, 'Orphan', 999)$$);
SELECT pg_temp.error_of($$UPDATE account SET parent_id = 999 WHERE id = 3$$);
-- one statement may hold both a parent and its sub-account, in any order
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (11, 12, 'Child first', 12), (12, 12, 'Parent second', NULL);
SELECT pg_temp.error_of($$INSERT INTO ledger (tenant_id, account_id, kind, amount, currency, charge_id, description)
                          VALUES (1, 1, 'refund', 1, 'EUR', 99999, 'x')$$);
-- a line that others point at stays
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, charge_id, description)
SELECT tenant_id, account_id, subscription_id, 'refund', 1, currency, id, 'goodwill' FROM ledger WHERE kind = 'charge' ORDER BY id LIMIT 1;
SELECT pg_temp.error_of($$DELETE FROM ledger WHERE kind = 'charge' AND id IN (SELECT charge_id FROM ledger)$$);

-- a plan in use cannot be deleted; one that is not in use, once its prices are gone
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Initech');
SELECT subscribe(4, 'central_plus', '1 year', 25, '2026-01-01') > 0 AS subscribed;
SELECT pg_temp.error_of($$DELETE FROM plan WHERE code = 'central_plus'$$);
SELECT pg_temp.error_of($$DELETE FROM plan_price WHERE plan = 'central_plus' AND tier = 25$$);
INSERT INTO plan (code, product, name) VALUES ('meet_unsold', 'meet', 'Never sold');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('meet_unsold', '30 days', 1);
SELECT pg_temp.error_of($$DELETE FROM plan WHERE code = 'meet_unsold'$$);
DELETE FROM plan_price WHERE plan = 'meet_unsold';
DELETE FROM plan WHERE code = 'meet_unsold';
SELECT count(*) FROM plan WHERE code = 'meet_unsold';

-- the mutating function is not executable by PUBLIC
SELECT has_function_privilege('public', 'subscription.subscribe(bigint,text,interval,integer,timestamptz,text,text)', 'EXECUTE');

ROLLBACK;

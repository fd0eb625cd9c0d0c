-- subscribe(): the first period and its gross charge, and every refusal.
BEGIN;
SELECT plan(28);
SET search_path = subscription, public;
SET TimeZone = 'UTC';

INSERT INTO product (code, name) VALUES ('rainbow', 'Rainbow'), ('central', 'LogMeIn Central');
INSERT INTO plan (code, product, name, rank) VALUES
    ('rb_business', 'rainbow', 'Business', 2), ('rb_essential', 'rainbow', 'Essential', 1),
    ('lc_premier', 'central', 'Premier', 3);
INSERT INTO plan_price (plan, cycle, tier, amount, per_license) VALUES
    ('rb_business', '1 month', NULL, 6.50, true),
    ('rb_business', '1 year', NULL, 70.00, true),
    ('rb_business', '5 years', NULL, 300.00, true),
    ('rb_essential', '1 month', NULL, 0, true),
    ('lc_premier', '1 year', 250, 12999.00, false),
    ('lc_premier', '1 year', 500, 22999.00, false);
INSERT INTO account (id, name) VALUES (10, 'Acme');
INSERT INTO coupon (code, amount_off) VALUES ('TENOFF', 10);

-- R2: a plan, a number of licenses, a billing mode and a renewal option
SELECT lives_ok($$SELECT set_config('t.sub', subscribe(10, 'rb_business', '5 years', 4, '2026-01-31 10:00', 'to_monthly')::text, true)$$,
                'R2: a prepaid 5-year subscription of 4 licenses');
SELECT results_eq(
    $$SELECT plan, cycle, quantity, period, anchor, renewal, status FROM subscription WHERE id = current_setting('t.sub')::bigint$$,
    $$VALUES ('rb_business'::text, '5 years'::interval, 4,
              tstzrange('2026-01-31 10:00+00', '2031-01-31 10:00+00', '[)'), '2026-01-31 10:00+00'::timestamptz,
              'to_monthly'::text, 'active'::text)$$,
    'the subscription starts its first period [at, at + cycle)');
SELECT results_eq(
    $$SELECT kind, amount, currency, period FROM ledger WHERE subscription_id = current_setting('t.sub')::bigint$$,
    $$VALUES ('charge'::text, 1200.00::numeric, 'EUR'::text, tstzrange('2026-01-31 10:00+00', '2031-01-31 10:00+00', '[)'))$$,
    'the first period is charged once, gross: 4 x 300.00');
SELECT is(subscribe(10, 'rb_essential', '1 month', 20, '2026-01-01') > 0, true, 'R1: a free plan subscribes');
SELECT is((SELECT amount FROM ledger l JOIN subscription s ON s.id = l.subscription_id WHERE s.plan = 'rb_essential'),
          0.00, 'R1: a free plan is charged 0.00, still a ledger line');
-- a monthly subscription from Jan 31 ends Feb 28 (periods come from the anchor)
SELECT lives_ok($$SELECT subscribe(10, 'rb_business', '1 month', 1, '2026-01-31')$$, 'a monthly subscription from Jan 31');
SELECT is((SELECT upper(period) FROM subscription WHERE plan = 'rb_business' AND cycle = '1 month'),
          '2026-02-28 00:00+00'::timestamptz, 'a month from Jan 31 ends Feb 28');
-- L12: tier price is flat, tier must exist
SELECT lives_ok($$SELECT subscribe(10, 'lc_premier', '1 year', 500, '2026-03-01')$$, 'L3: the 500-host tier');
SELECT is((SELECT l.amount FROM ledger l JOIN subscription s ON s.id = l.subscription_id WHERE s.plan = 'lc_premier'),
          22999.00, 'L12: the 500-host tier is charged its flat price');
SELECT throws_ok($$SELECT subscribe(10, 'lc_premier', '1 year', 300)$$, '55000',
                 'quantity 300 is not a tier of plan "lc_premier"', 'L12: 300 hosts is not a tier');
SELECT lives_ok($$SELECT subscribe(10, 'lc_premier', '1 year', tier_for_hosts('lc_premier', 300), '2026-03-01')$$,
                'L3: tier_for_hosts gives a quantity subscribe accepts');
SELECT is((SELECT max(l.amount) FILTER (WHERE s.quantity = 500) FROM ledger l JOIN subscription s ON s.id = l.subscription_id
            WHERE s.plan = 'lc_premier'), 22999.00, 'both 500-host subscriptions pay the tier price');

-- every refusal, with its SQLSTATE
SELECT throws_ok($$SELECT subscribe(10, 'nope', '1 month')$$, '42704', 'plan "nope" does not exist', 'unknown plan');
SELECT throws_ok($$SELECT subscribe(11, 'rb_business', '1 month')$$, 'P0002', 'account 11 does not exist', 'unknown account');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '3 years')$$, '22023', NULL, 'no price for the cycle');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '365 days')$$, '22023', NULL, '365 days is not 1 year');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '1 month', 0)$$, '22023', NULL, 'quantity 0');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '-1 month')$$, '22023', NULL, 'negative cycle');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '1 month', 1, now(), 'twice')$$, '22023', NULL, 'unknown renewal');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '1 month', 1, '-infinity')$$, '22023', NULL, 'infinite start');
SELECT throws_ok($$SELECT subscribe(NULL, 'rb_business', '1 month')$$, '22004', NULL, 'NULL account');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '1 month', 1, NULL)$$, '22004', NULL, 'NULL start');
SELECT throws_ok($$SELECT subscribe(10, 'rb_business', '1 month', 1, now(), 'always', 'NOPE')$$, '42704', NULL, 'unknown coupon');
SELECT lives_ok($$SELECT subscribe(10, 'rb_business', '1 month', 1, now(), 'always', 'TENOFF')$$,
                'a known coupon is redeemed (Z10)');
UPDATE account SET billing_anchor = '2026-01-01' WHERE id = 10;
SELECT lives_ok($$SELECT subscribe(10, 'rb_business', '1 month')$$,
                'an account with a billing anchor subscribes to its billing date (L4)');
UPDATE account SET billing_anchor = NULL WHERE id = 10;

-- refusals write nothing
SELECT is((SELECT count(*)::int FROM subscription), 7, 'seven subscriptions, from the seven successful calls');
SELECT is((SELECT count(*)::int FROM ledger WHERE kind = 'charge'), 7, 'one charge each');
SELECT is((SELECT count(*)::int FROM subscription s WHERE NOT EXISTS
              (SELECT FROM ledger l WHERE l.subscription_id = s.id AND l.kind = 'charge' AND l.period = s.period)),
          0, 'every subscription has its first period charged');

SELECT * FROM finish();
ROLLBACK;

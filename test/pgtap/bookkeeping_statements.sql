-- The bookkeeping triggers per statement (issue 18, item 1): a statement of
-- several rows does what as many statements of one row each did.
BEGIN;
SELECT plan(10);
SET search_path = subscription, public;
SET TimeZone = 'UTC';

INSERT INTO product (code, name) VALUES ('bk', 'Bookkeeping');
INSERT INTO plan (code, product, name) VALUES ('bk_plan', 'bk', 'Plan');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('bk_plan', '1 month', 50, true);
INSERT INTO coupon (code, percent_off, cycles) VALUES ('bk10', 10, 5);
INSERT INTO account (id, name) VALUES (992001, 'Many'), (992002, 'One by one');
SELECT set_config('t.s1', subscribe(992001, 'bk_plan', '1 month', 1, '2026-01-01', 'always', 'bk10')::text, true);
SELECT set_config('t.s2', subscribe(992002, 'bk_plan', '1 month', 1, '2026-01-01', 'always', 'bk10')::text, true);
-- one period of the coupon left, 100 of credit: the first charge takes the
-- coupon's last period, the charges take the credit in their order
UPDATE subscription SET coupon_periods_left = 1 WHERE account_id IN (992001, 992002);
SELECT credit_account(992001, 100, 'goodwill');
SELECT credit_account(992002, 100, 'goodwill');

-- Z10, L10: three charges in one statement ...
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
SELECT 992001, current_setting('t.s1')::bigint, 'charge', 50, 'EUR',
       tstzrange(m, m + interval '1 month'), 'plan', 'bk_plan', 'test charge'
  FROM generate_series(timestamptz '2026-02-01', '2026-04-01', '1 month') AS m;
-- ... and the same three, a statement each
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (992002, current_setting('t.s2')::bigint, 'charge', 50, 'EUR', '[2026-02-01,2026-03-01)', 'plan', 'bk_plan', 'test charge');
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (992002, current_setting('t.s2')::bigint, 'charge', 50, 'EUR', '[2026-03-01,2026-04-01)', 'plan', 'bk_plan', 'test charge');
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (992002, current_setting('t.s2')::bigint, 'charge', 50, 'EUR', '[2026-04-01,2026-05-01)', 'plan', 'bk_plan', 'test charge');

-- the lines of the charges of February to April, in the order of their ids,
-- a reduction named by its charge's period
CREATE TEMP VIEW bk_lines AS
SELECT l.account_id, row_number() OVER (PARTITION BY l.account_id ORDER BY l.id) AS n, l.kind, l.amount,
       lower(coalesce(c.period, l.period)) AS period,
       regexp_replace(l.description, 'charge [0-9]+', 'charge #') AS description
  FROM ledger AS l LEFT JOIN ledger AS c ON c.tenant_id = l.tenant_id AND c.id = l.charge_id
 WHERE l.account_id IN (992001, 992002) AND lower(coalesce(c.period, l.period)) >= '2026-02-01';

SELECT results_eq(
    $$SELECT n, kind, amount, period, description FROM bk_lines WHERE account_id = 992001 ORDER BY n$$,
    $$VALUES (1::bigint, 'charge', 50::numeric, '2026-02-01'::timestamptz, 'test charge'),
             (2, 'charge', 50, '2026-03-01', 'test charge'),
             (3, 'charge', 50, '2026-04-01', 'test charge'),
             (4, 'discount', 5.00, '2026-02-01', 'coupon bk10: 10% off'),
             (5, 'credit_used', 45.00, '2026-02-01', 'credit pays charge #'),
             (6, 'credit_used', 50, '2026-03-01', 'credit pays charge #'),
             (7, 'credit_used', 5.00, '2026-04-01', 'credit pays charge #')$$,
    'Z10, L10: three charges in one statement: the coupon''s last period on the first, the credit in their order');
SELECT results_eq(
    $$SELECT kind, amount, period, description FROM bk_lines WHERE account_id = 992001 AND kind <> 'charge' ORDER BY n$$,
    $$SELECT kind, amount, period, description FROM bk_lines WHERE account_id = 992002 AND kind <> 'charge' ORDER BY n$$,
    'Z10, L10: the same reductions as three statements of one charge each');
SELECT is((SELECT array_agg(coupon_periods_left ORDER BY account_id) FROM subscription WHERE account_id IN (992001, 992002)),
          ARRAY[0, 0], 'Z10: one period of the coupon used, by either');
SELECT is((SELECT array_agg(credit_balance(a, 'EUR') ORDER BY a) FROM unnest(ARRAY[992001, 992002]::bigint[]) AS a),
          ARRAY[0, 0]::numeric[], 'L10: the credit used up, by either');
SELECT is((SELECT count(*)::int FROM history WHERE account_id = 992001 AND operation = 'subscription_update'
             AND details ? 'coupon_periods_left' AND details -> 'coupon_periods_left' ->> 'new' = '0'), 1,
          'R8: the coupon''s period used is one subscription_update row');

-- issue 20: one event per history row of a statement of several rows
UPDATE subscription SET quantity = quantity + 1 WHERE account_id IN (992001, 992002);
SELECT is((SELECT count(*)::int FROM event AS e
            WHERE e.type = 'subscription.quantity_changed' AND e.account_id IN (992001, 992002)),
          (SELECT count(*)::int FROM history AS h
            WHERE h.operation = 'subscription_update' AND h.details ? 'quantity' AND h.account_id IN (992001, 992002)),
          'one quantity_changed event per history row of an UPDATE of two subscriptions');

-- the seat counters of both subscriptions follow the one UPDATE
SELECT results_eq(
    $$SELECT c.capacity FROM license_counter AS c JOIN subscription AS s ON s.tenant_id = c.tenant_id AND s.id = c.subscription_id
       WHERE s.account_id IN (992001, 992002) ORDER BY s.account_id$$,
    $$VALUES (2), (2)$$,
    'seat counters: an UPDATE of two subscriptions'' quantities moves both capacities');

-- the stored limits of two accounts follow one statement of add-on batches
INSERT INTO plan_limit (plan, feature, value) VALUES ('bk_plan', 'bk_rooms', 2);
INSERT INTO addon (code, product, name, feature, units) VALUES ('bk_rooms5', 'bk', 'Five rooms', 'bk_rooms', 5);
CREATE TABLE public.bk_room (id int PRIMARY KEY, account_id bigint NOT NULL);
SELECT enforce_limit('public.bk_room', 'bk_rooms');
INSERT INTO public.bk_room VALUES (1, 992001), (2, 992002);
INSERT INTO addon_batch (subscription_id, addon, quantity)
SELECT s.id, 'bk_rooms5', 1 FROM subscription AS s WHERE s.account_id IN (992001, 992002);
SELECT results_eq(
    $$SELECT account_id, limit_value FROM usage_counter WHERE feature = 'bk_rooms' ORDER BY account_id$$,
    $$VALUES (992001::bigint, 7::bigint), (992002, 7)$$,
    'limits: an INSERT of two add-on batches on two accounts refreshes both');
UPDATE addon_batch SET quantity = 2 WHERE addon = 'bk_rooms5';
SELECT results_eq(
    $$SELECT account_id, limit_value FROM usage_counter WHERE feature = 'bk_rooms' ORDER BY account_id$$,
    $$VALUES (992001::bigint, 12::bigint), (992002, 12)$$,
    'limits: an UPDATE of two add-on batches refreshes both accounts');
SELECT results_eq(
    $$SELECT c.capacity FROM license_counter AS c JOIN subscription AS s ON s.tenant_id = c.tenant_id AND s.id = c.subscription_id
       WHERE s.account_id IN (992001, 992002) ORDER BY s.account_id$$,
    $$VALUES (2), (2)$$,
    'seat counters: add-on batches of rooms take no seat');

SELECT * FROM finish();
ROLLBACK;

-- tier_for_hosts: the smallest tier that holds a host count (L3, L12)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
-- the catalog rows of this file do not outlive it
BEGIN;

-- L3: default tiers 25, 100, 250, 500, 1000, 2500
SELECT h, tier_for_hosts(h)
  FROM unnest('{0,1,24,25,26,99,100,101,250,251,500,999,1000,1001,2499,2500}'::int[]) AS h;

-- L12: one host more than a tier means the next tier, never tier + 1
SELECT tier_for_hosts(26) = 100 AS next_tier_not_one_more;

-- explicit tier lists
SELECT tier_for_hosts(7, '{5,10,20}'), tier_for_hosts(5, '{5,10,20}'), tier_for_hosts(0, '{5}');
SELECT tier_for_hosts(2147483647, '{2147483647}');

-- L3 decision: above the largest tier is 22003, with a hint to contact sales
SELECT pg_temp.error_of($$SELECT tier_for_hosts(2501)$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(21, '{5,10,20}')$$);

-- bad input is 22023
SELECT pg_temp.error_of($$SELECT tier_for_hosts(-1)$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{}')$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{{25,100},{250,500}}')$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{25,NULL,100}')$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{0,25}')$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{-5,25}')$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{25,25,100}')$$);
SELECT pg_temp.error_of($$SELECT tier_for_hosts(1, '{100,25}')$$);
-- a non-default lower bound is still one-dimensional and fine
SELECT tier_for_hosts(30, '[0:2]={25,50,75}');

-- STRICT: NULL in, NULL out
SELECT tier_for_hosts(NULL) IS NULL AS null_hosts, tier_for_hosts(1, NULL) IS NULL AS null_tiers;

-- volatility and parallel safety as the contract says
SELECT p.oid::regprocedure, p.provolatile, p.proparallel, p.proisstrict
  FROM pg_proc AS p
 WHERE p.pronamespace = 'subscription'::regnamespace AND p.proname = 'tier_for_hosts'
 ORDER BY 1::text;

-- tier_for_hosts(plan, hosts): the plan's tiers are those of plan_price
INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central');
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_basic', 'central', 'Basic', 1),
    ('central_plus', 'central', 'Plus', 2),
    ('flat', 'central', 'Flat', 0);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 25, 1299),
    ('central_plus', '1 year', 100, 3999),
    ('central_plus', '1 year', 250, 8999),
    ('central_plus', '1 month', 100, 399),   -- same tier, other cycle: counted once
    ('central_basic', '1 year', 10, 99);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('flat', '1 month', 10);

SELECT subscription.plan_tiers('central_plus'), subscription.plan_tiers('flat');
SELECT tier_for_hosts('central_plus', 0), tier_for_hosts('central_plus', 26),
       tier_for_hosts('central_plus', 250), tier_for_hosts('central_basic', 10);
SELECT pg_temp.error_of($$SELECT tier_for_hosts('central_plus', 251)$$);    -- 22003
SELECT pg_temp.error_of($$SELECT tier_for_hosts('central_plus', -3)$$);     -- 22023
SELECT pg_temp.error_of($$SELECT tier_for_hosts('nope', 10)$$);             -- 42704
SELECT pg_temp.error_of($$SELECT tier_for_hosts('flat', 10)$$);             -- 55000
SELECT tier_for_hosts(NULL::text, 10) IS NULL AS null_plan;

-- L12: a plan is tiered or not; mixing is refused either way round (23514)
SELECT pg_temp.error_of($$INSERT INTO plan_price (plan, cycle, amount) VALUES ('central_plus', '3 years', 9999)$$);
SELECT pg_temp.error_of($$INSERT INTO plan_price (plan, cycle, tier, amount) VALUES ('flat', '1 year', 25, 100)$$);
-- a plan whose every price changes in one statement stays consistent: allowed
SELECT pg_temp.error_of($$UPDATE plan_price SET tier = NULL WHERE plan = 'central_basic'$$);
SELECT subscription.plan_tiers('central_basic') AS now_untiered;
UPDATE plan_price SET tier = 10 WHERE plan = 'central_basic';
SELECT pg_temp.error_of($$UPDATE plan_price SET tier = NULL WHERE plan = 'central_plus' AND tier = 25$$);

-- the kept plan survives errors and repeated calls in one backend
SELECT count(*) FROM generate_series(1, 1000) AS g WHERE tier_for_hosts('central_plus', g % 250) >= 25;

ROLLBACK;


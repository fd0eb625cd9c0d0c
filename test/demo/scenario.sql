-- The narrated scenario: what subscription does, step by step.
\set ON_ERROR_STOP on
\pset footer off
SET search_path = subscription, public;
SET TimeZone = 'UTC';

-- show_error(statement): run a statement that must be refused and show why
CREATE FUNCTION pg_temp.show_error(statement text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE state text; message text; hint text;
BEGIN
    EXECUTE statement;
    RETURN 'accepted (unexpected)';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN format('refused %s: %s%s', state, message, CASE WHEN hint <> '' THEN ' (' || hint || ')' END);
END
$f$;

\echo
\echo '=== 1. The catalog: five products, editions ranked, prices per cycle'
SELECT p.product, p.code AS plan, p.rank, p.kind,
       string_agg(DISTINCT pp.cycle::text, ', ') AS cycles,
       string_agg(DISTINCT pp.tier::text, ', ') AS tiers
  FROM plan AS p JOIN plan_price AS pp ON pp.plan = p.code
 GROUP BY p.product, p.code, p.rank, p.kind
 ORDER BY p.product, p.rank;

\echo
\echo '=== 2. LogMeIn Central (L3, L12): Acme has 180 computers; which tier?'
SELECT tier_for_hosts(180) AS tier_for_180_hosts,
       tier_for_hosts('central_premier', 26) AS premier_tier_for_26_hosts;
\echo 'More hosts than the largest tier is refused, with a hint (L3):'
SELECT pg_temp.show_error($$SELECT tier_for_hosts(2600)$$) AS result;
\echo 'A tiered plan is sold only in its tiers (L12): 180 is not a tier, 250 is'
SELECT pg_temp.show_error($$SELECT subscribe(1, 'central_plus', '1 year', 180, '2026-01-15')$$) AS result;
SELECT subscribe(1, 'central_plus', '1 year', tier_for_hosts('central_plus', 180), '2026-01-15 09:00') AS acme_subscription;

\echo
\echo '=== 3. Zendesk (Z4, Z7): 10 agents of Professional, monthly; and the same seats annually'
SELECT subscribe(3, 'zd_professional', '1 month', 10, '2026-01-31 12:00') AS globex_monthly,
       subscribe(3, 'zd_professional', '1 year', 10, '2026-01-31 12:00') AS globex_annual;
\echo 'A month from January 31 ends on February 28: periods come from the anchor'

\echo
\echo '=== 4. Rainbow (R2, R6): 25 Business licenses prepaid for 3 years, then monthly'
SELECT subscribe(4, 'rb_business', '3 years', 25, '2026-02-01', 'to_monthly') AS initech_prepaid;

\echo
\echo '=== 5. ClickMeeting (K2): a 30-day cycle is not a month'
SELECT subscribe(5, 'cm_live', '30 days', 1, '2026-01-31') AS webinars_30_days;
SELECT pg_temp.show_error($$SELECT subscribe(5, 'cm_live', '1 month')$$) AS result;

\echo
\echo '=== 6. The ledger: one gross charge per first period, rounded once to the currency'
SELECT a.name AS account, s.plan, s.cycle, s.quantity, s.period, l.amount, l.currency, s.renewal
  FROM ledger AS l JOIN subscription AS s ON s.id = l.subscription_id JOIN account AS a ON a.id = s.account_id
 ORDER BY l.id;
\echo 'Charging the same period twice is refused by a constraint (C2):'
SELECT pg_temp.show_error($$INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, description)
                            SELECT account_id, subscription_id, 'charge', amount, currency, period, 'again'
                              FROM ledger ORDER BY id LIMIT 1$$) AS result;

\echo
\echo '=== 7. CrowdHandler (C1): Standard at 99.00 for January, upgraded on January 15'
\echo 'The unused days, January 15 to 31 (17 of 31, the day of the change included), are refunded:'
SELECT prorate_refund(99.00, '2026-01-01', '2026-02-01', '2026-01-15') AS refund,
       99.00 - prorate_refund(99.00, '2026-01-01', '2026-02-01', '2026-01-15') AS used;
\echo 'Days are calendar days in the session time zone: 23:30 UTC on January 14 is'
\echo 'still the 14th in UTC (18 days unused) but already the 15th in Tokyo (17 days):'
SELECT prorate_refund(31, '2026-01-01 00:00+00', '2026-02-01 00:00+00', '2026-01-14 23:30+00') AS refund_in_utc;
SET TimeZone = 'Asia/Tokyo';
SELECT prorate_refund(31, '2026-01-01 00:00+00', '2026-02-01 00:00+00', '2026-01-14 23:30+00') AS refund_in_tokyo;
SET TimeZone = 'UTC';

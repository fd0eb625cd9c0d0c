-- prorate_refund: the refund of the unused part of a paid period (C1, K3, L9)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';

-- C1: a monthly plan of 30.00 for January, changed on Jan 15: Jan 15..31
-- (17 of 31 days, the day of the change included) are refunded
SELECT prorate_refund(30.00, '2026-01-01', '2026-02-01', '2026-01-15');
SELECT 30.00 - prorate_refund(30.00, '2026-01-01', '2026-02-01', '2026-01-15') AS used;

-- before or at the start: everything; at or after the end: nothing
SELECT prorate_refund(30, '2026-01-01', '2026-02-01', '2025-12-01') AS before_start,
       prorate_refund(30, '2026-01-01', '2026-02-01', '2026-01-01') AS at_start,
       prorate_refund(30, '2026-01-01', '2026-02-01', '2026-02-01') AS at_end,
       prorate_refund(30, '2026-01-01', '2026-02-01', '2027-01-01') AS after_end;

-- the last day of the period still refunds that day
SELECT prorate_refund(31, '2026-01-01', '2026-02-01', '2026-01-31 23:59');

-- leap years: February 2028 has 29 days, a year from 2028-01-01 has 366
SELECT prorate_refund(29, '2028-02-01', '2028-03-01', '2028-02-29') AS leap_feb_last_day,
       prorate_refund(366, '2028-01-01', '2029-01-01', '2028-12-31') AS leap_year_last_day,
       prorate_refund(365, '2027-01-01', '2028-01-01', '2027-07-02') AS common_year_half;

-- month ends: a period anchored on Jan 31 runs to Feb 28
SELECT prorate_refund(28, '2026-01-31', '2026-02-28', '2026-02-01') AS jan31_to_feb28;

-- days are calendar days in the session's time zone, not 24-hour blocks
SET TimeZone = 'Europe/Paris';
-- 23:30 UTC on Jan 14 is already Jan 15 in Paris: 17 days unused there
SELECT prorate_refund(31, '2026-01-01 00:00+01', '2026-02-01 00:00+01', '2026-01-14 23:30+00') AS paris;
SET TimeZone = 'America/New_York';
-- the same instant is Jan 14 in New York: 18 days unused
SELECT prorate_refund(31, '2026-01-01 00:00-05', '2026-02-01 00:00-05', '2026-01-14 23:30+00') AS new_york;
-- a month containing the DST change still has 31 calendar days
SELECT prorate_refund(31, '2026-03-01 00:00-05', '2026-04-01 00:00-04', '2026-03-09 12:00-04') AS across_dst;
RESET TimeZone;
SET TimeZone = 'UTC';

-- a period inside one calendar day: that day is the day of the change
SELECT prorate_refund(10, '2026-01-01 08:00', '2026-01-01 20:00', '2026-01-01 12:00') AS same_day;

-- unit 'second' is exact to the microsecond
SELECT prorate_refund(100, '2026-01-01 00:00', '2026-01-01 00:00:04', '2026-01-01 00:00:01', 'second') AS three_quarters,
       prorate_refund(1, '2026-01-01', '2026-01-01 00:00:03', '2026-01-01 00:00:02', 'second', 6) AS one_third;

-- rounding: once, half away from zero, at the requested scale 0..6
SELECT s, prorate_refund(10, '2026-01-01', '2026-01-04', '2026-01-03', 'day', s) AS two_thirds_of_10
  FROM generate_series(0, 6) AS s;
-- exactly half a minor unit rounds up: 0.01 * 1/2 = 0.005 -> 0.01
SELECT prorate_refund(0.01, '2026-01-01', '2026-01-03', '2026-01-02') AS half_cent;
-- 0.05 * 1/10 = 0.005 -> 0.01, 0.04 * 1/10 = 0.004 -> 0.00
SELECT prorate_refund(0.05, '2026-01-01', '2026-01-11', '2026-01-10') AS up,
       prorate_refund(0.04, '2026-01-01', '2026-01-11', '2026-01-10') AS down;
-- amounts with more decimals than the scale are still exact
SELECT prorate_refund(10.005, '2026-01-01', '2026-01-03', '2026-01-01 12:00', 'day', 2) AS full_amount_rounded,
       prorate_refund(0.015, '2026-01-01', '2026-01-03', '2026-01-02', 'day', 2) AS exact_half_of_0_015;
-- no double rounding: 2/3 of 0.0149999 is 0.00999993..., which is 0.01
SELECT prorate_refund(0.0149999, '2026-01-01', '2026-01-04', '2026-01-02', 'day', 2);
-- zero amount
SELECT prorate_refund(0, '2026-01-01', '2026-02-01', '2026-01-15');

-- very large amounts stay exact
SELECT prorate_refund(123456789012345678901234567890.12, '2026-01-01', '2026-01-04', '2026-01-02') AS huge;
SELECT prorate_refund(1e100, '2026-01-01', '2026-01-04', '2026-01-02', 'day', 0) = round(2e100 / 3) AS huge_exact;
SELECT prorate_refund(99999999999.99, '1000-01-01', '294000-01-01', '200000-01-01', 'second', 6) >= 0 AS wide_period;

-- refund + used = amount, exactly, for every day of a month
SELECT bool_and(r + (30 - r) = 30 AND r BETWEEN 0 AND 30) AS adds_up,
       bool_and(r <= lag_r) FILTER (WHERE lag_r IS NOT NULL) AS never_grows
  FROM (SELECT r, lag(r) OVER (ORDER BY d) AS lag_r
          FROM (SELECT d, prorate_refund(30, '2026-01-01', '2026-02-01', d) AS r
                  FROM generate_series('2025-12-30'::timestamptz, '2026-02-02', '7 hours') AS d) AS x) AS y;

-- bad input is 22023
SELECT pg_temp.error_of($$SELECT prorate_refund(-1, '2026-01-01', '2026-02-01', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund('NaN', '2026-01-01', '2026-02-01', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund('Infinity', '2026-01-01', '2026-02-01', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund('-Infinity', '2026-01-01', '2026-02-01', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-02-01', '2026-01-01', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', '2026-01-01', '2026-01-01')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '-infinity', '2026-02-01', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', 'infinity', '2026-01-15')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', '2026-02-01', 'infinity')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', '2026-02-01', '2026-01-15', 'month')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', '2026-02-01', '2026-01-15', 'DAY')$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', '2026-02-01', '2026-01-15', 'day', -1)$$);
SELECT pg_temp.error_of($$SELECT prorate_refund(10, '2026-01-01', '2026-02-01', '2026-01-15', 'day', 7)$$);

-- STRICT: NULL in, NULL out
SELECT prorate_refund(NULL, '2026-01-01', '2026-02-01', '2026-01-15') IS NULL AS a,
       prorate_refund(10, NULL, '2026-02-01', '2026-01-15') IS NULL AS b,
       prorate_refund(10, '2026-01-01', '2026-02-01', NULL) IS NULL AS c,
       prorate_refund(10, '2026-01-01', '2026-02-01', '2026-01-15', NULL) IS NULL AS d,
       prorate_refund(10, '2026-01-01', '2026-02-01', '2026-01-15', 'day', NULL) IS NULL AS e;

-- it depends on the session's TimeZone, so it is STABLE, not IMMUTABLE
SELECT p.provolatile, p.proparallel, p.proisstrict
  FROM pg_proc AS p
 WHERE p.oid = 'subscription.prorate_refund(numeric,timestamptz,timestamptz,timestamptz,text,integer)'::regprocedure;

-- Properties of prorate_refund over thousands of random cases (C1, K3, L9).
BEGIN;
SELECT plan(9);
SET search_path = subscription, public;
SELECT setseed(0.4242);

CREATE TEMP TABLE cases AS
SELECT i,
       round((random() * 10 ^ (random() * 9))::numeric, (random() * 4)::int) AS amount,
       start_at,
       start_at + (random() * 800 + 0.01) * interval '1 day' AS end_at,
       (random() * 6)::int AS scale,
       (ARRAY['UTC', 'Europe/Paris', 'America/New_York', 'Asia/Kolkata', 'Pacific/Chatham'])[1 + (random() * 4)::int] AS zone
  FROM generate_series(1, 5000) AS i,
       LATERAL (SELECT timestamptz '2020-01-01' + random() * interval '3000 days' + i * interval '0 s' AS start_at) AS s;

-- for each case, 8 change times from before the start to after the end, in order
CREATE TEMP TABLE points AS
SELECT c.*, k, c.start_at + (c.end_at - c.start_at) * (k / 6.0 - 1 / 6.0 + random() / 12) AS at
  FROM cases AS c, generate_series(0, 7) AS k;

CREATE TEMP TABLE refunds AS
SELECT p.*, 0::numeric AS refund, 0 AS total_days, 0 AS unused_days FROM points AS p WHERE false;
-- days are counted in the session's TimeZone: each zone's cases run under it
CREATE FUNCTION pg_temp.refunds_in(zone text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM set_config('TimeZone', zone, true);
    INSERT INTO refunds
    SELECT p.*, prorate_refund(p.amount, p.start_at, p.end_at, p.at, 'day', p.scale),
           p.end_at::date - p.start_at::date,
           least(greatest(p.end_at::date - p.at::date, 0), p.end_at::date - p.start_at::date)
      FROM points AS p WHERE p.zone = refunds_in.zone;
END
$f$;
SELECT pg_temp.refunds_in(z) FROM (SELECT DISTINCT zone FROM points) AS d(z);
RESET TimeZone;

SELECT is((SELECT count(*)::int FROM refunds), 40000, '40000 random cases');
SELECT is_empty($$SELECT i, k FROM refunds WHERE NOT (refund >= 0 AND refund <= round(amount, scale))$$,
                '0 <= refund <= amount');
SELECT is_empty($$SELECT i, k FROM refunds WHERE scale(refund) <> scale$$,
                'the refund carries exactly the requested scale');
SELECT is_empty($$SELECT i FROM (SELECT i, refund, lag(refund) OVER (PARTITION BY i ORDER BY at) AS earlier FROM refunds) AS r
                   WHERE refund > earlier$$,
                'the refund never grows as the change moves later');
SELECT is_empty($$SELECT i, k FROM refunds WHERE refund + (amount - refund) <> amount$$,
                'refund + used = amount exactly');
-- the same number by an independent exact formula: round half up of
-- amount * unused / total is floor((2 * amount * 10^s * unused + total) / (2 * total))
SELECT is_empty(
    $$SELECT i, k, refund, expected FROM (
        SELECT i, k, refund,
               CASE WHEN at <= start_at THEN round(amount, scale)
                    WHEN at >= end_at THEN round(0, scale)
                    WHEN total_days = 0 THEN round(amount, scale)
                    ELSE round(div(2 * amount * 10::numeric ^ scale * unused_days + total_days, 2 * total_days)
                               / 10::numeric ^ scale, scale) END AS expected
          FROM refunds) AS r
       WHERE refund <> expected$$,
    'day refunds equal round(amount * unused / total) computed independently, in five time zones');
SELECT is_empty(
    $$SELECT i, k FROM (
        SELECT i, k, prorate_refund(amount, start_at, end_at, at, 'second', 6) AS refund,
               extract(epoch FROM end_at - start_at) * 1000000 AS total_us,
               extract(epoch FROM end_at - at) * 1000000 AS unused_us, amount, at, start_at, end_at
          FROM points WHERE k BETWEEN 1 AND 6) AS r
       WHERE at > start_at AND at < end_at
         AND refund <> round(div(2 * amount * 1000000 * unused_us + total_us, 2 * total_us) / 1000000, 6)$$,
    'second refunds are exact to the microsecond');
-- a change later by whole days never refunds more, whatever the scale
SELECT is_empty(
    $$SELECT s FROM generate_series(0, 6) AS s, generate_series(0, 400) AS d
       WHERE prorate_refund(1234.5678, '2026-01-01', '2027-01-01', timestamptz '2026-01-01' + d * interval '1 day', 'day', s)
           < prorate_refund(1234.5678, '2026-01-01', '2027-01-01', timestamptz '2026-01-02' + d * interval '1 day', 'day', s)$$,
    'monotonic day by day over a year, at every scale');
SELECT is(
    (SELECT sum(prorate_refund(100, timestamptz '2026-01-01' + k * interval '1 day', timestamptz '2026-01-02' + k * interval '1 day',
                               timestamptz '2026-01-01' + k * interval '1 day' + interval '12 hours'))
       FROM generate_series(0, 364) AS k),
    36500.00, 'a one-day period changed during its only day refunds that day in full');

SELECT * FROM finish();
ROLLBACK;

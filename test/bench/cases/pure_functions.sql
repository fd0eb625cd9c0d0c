-- tier_for_hosts and prorate_refund over 1M calls, against the same
-- computation written as an inline SQL expression (issue 2).
-- ratio = extension time / inline SQL time: below 1 the C function is faster.
SET search_path = subscription, public;
SET TimeZone = 'UTC';

CREATE TEMP TABLE inputs AS
SELECT g,
       ((g::bigint * 7919) % 2501)::int AS hosts,
       ((g::bigint * 104729) % 1000000) / 100.0 AS amount,
       timestamptz '2026-01-01' AS period_start,
       timestamptz '2026-02-01' AS period_end,
       timestamptz '2025-12-28' + ((g::bigint * 31) % 40) * interval '1 day' + (g % 86400) * interval '1 second' AS at
  FROM generate_series(1, 1000000) AS g;
VACUUM ANALYZE inputs;

-- both sides give the same answers before we time them
SELECT count(*) AS tier_mismatches FROM inputs
 WHERE tier_for_hosts(hosts) <> CASE WHEN hosts <= 25 THEN 25 WHEN hosts <= 100 THEN 100 WHEN hosts <= 250 THEN 250
                                     WHEN hosts <= 500 THEN 500 WHEN hosts <= 1000 THEN 1000 ELSE 2500 END;
SELECT count(*) AS refund_mismatches FROM inputs
 WHERE prorate_refund(amount, period_start, period_end, at)
       <> CASE WHEN at <= period_start THEN round(amount, 2)
               WHEN at >= period_end THEN 0
               ELSE round(amount * least(greatest(period_end::date - at::date, 0), period_end::date - period_start::date)
                          / (period_end::date - period_start::date), 2) END;

\pset footer off
SELECT * FROM bench.compare('tier_for_hosts, 1M calls',
    $$SELECT sum(tier_for_hosts(hosts)) FROM inputs$$,
    $$SELECT sum(CASE WHEN hosts <= 25 THEN 25 WHEN hosts <= 100 THEN 100 WHEN hosts <= 250 THEN 250
                      WHEN hosts <= 500 THEN 500 WHEN hosts <= 1000 THEN 1000 ELSE 2500 END) FROM inputs$$)
UNION ALL
SELECT * FROM bench.compare('prorate_refund, 1M calls',
    $$SELECT sum(prorate_refund(amount, period_start, period_end, at)) FROM inputs$$,
    $$SELECT sum(CASE WHEN at <= period_start THEN round(amount, 2)
                      WHEN at >= period_end THEN 0
                      ELSE round(amount * least(greatest(period_end::date - at::date, 0), period_end::date - period_start::date)
                                 / (period_end::date - period_start::date), 2) END) FROM inputs$$)
UNION ALL
SELECT * FROM bench.compare('scan only (overhead shared by both sides)',
    $$SELECT sum(hosts) FROM inputs$$,
    $$SELECT sum(hosts) FROM inputs$$);

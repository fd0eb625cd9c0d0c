-- U3 (issue 21): a write at or after the period's end, before the renewal
-- ran, counts in the new period.  The counter knows where its period
-- closes (usage_counter.closes); the guard's one UPDATE that crosses it
-- keeps the ending period's figures as they were at the end (count, peak,
-- the integral up to the end, sum), which the renewal bills, and starts
-- the next period's from the end.  The billing clock is moved to each
-- write's time (the meters' clock).
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('cloud', 'Cloud VMs');
INSERT INTO plan (code, product, name, rank) VALUES ('cloud_metered', 'cloud', 'Metered', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('cloud_metered', '1 month', 0);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('cloud_metered', 'vms', NULL), ('cloud_metered', 'vm_peak', NULL), ('cloud_metered', 'vm_hours', NULL),
    ('cloud_metered', 'vm_gb', NULL), ('cloud_metered', 'api_calls', NULL);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme Cloud');
CREATE TABLE public.vm (id bigserial, account_id bigint NOT NULL, gb integer NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.vm
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.vm', 'vms', 'account_id');
SELECT enforce_limit('public.vm', 'vm_peak', 'account_id');
SELECT enforce_limit('public.vm', 'vm_hours', 'account_id');
SELECT enforce_limit('public.vm', 'vm_gb', 'account_id', 'scale', NULL, 'gb');
SELECT meter('public.vm', 'vms', 'count');
SELECT meter('public.vm', 'vm_peak', 'peak');
SELECT meter('public.vm', 'vm_hours', 'time_weighted', '1 hour');
SELECT meter('public.vm', 'vm_gb', 'sum');
-- every unit at 1 EUR, nothing included: each amount is its aggregate
SELECT count(plan_usage_price('cloud_metered', f, 0, 1)) AS priced
  FROM unnest('{vms,vm_peak,vm_hours,vm_gb,api_calls}'::text[]) AS f;
SELECT subscribe(1, 'cloud_metered', '1 month', 1, '2026-03-01') AS sub \gset

-- March: 4 VMs of 10 GB on the 11th, 2 of 5 GB on the 21st, 3 of the
-- first gone on the 31st
SET LOCAL subscription.clock = '2026-03-11';
INSERT INTO vm (account_id, gb) SELECT 1, 10 FROM generate_series(1, 4);
SET LOCAL subscription.clock = '2026-03-21';
INSERT INTO vm (account_id, gb) SELECT 1, 5 FROM generate_series(1, 2);
SET LOCAL subscription.clock = '2026-03-31';
DELETE FROM vm WHERE id IN (1, 2, 3);
SELECT record_usage(1, 'api_calls', 100, 'march-1', '2026-03-15') AS calls;
-- the counters close with the period
SELECT feature, used, peak, closes, closed_at FROM usage_counter WHERE account_id = 1 ORDER BY feature;

-- April 2nd, the renewal not run yet: 5 VMs of 1 GB.  The write crosses
-- the end: each counter keeps March's figures at the end (3 VMs, peak 6,
-- 4 x 10 + 6 x 10 + 3 x 1 = 103 VM-days = 8,899,200 VM-seconds, 20 GB)
-- and starts April's from it (3 VMs for a day: 259,200 VM-seconds)
SET LOCAL subscription.clock = '2026-04-02';
INSERT INTO vm (account_id, gb) SELECT 1, 1 FROM generate_series(1, 5);
SELECT feature, used, peak, integral, since, closes, closed_at, closed_used, closed_peak, closed_integral
  FROM usage_counter WHERE account_id = 1 AND feature <> 'api_calls' ORDER BY feature;
-- recorded usage counts at its own time: a late record of March (a
-- backfill) is March's, one at the end is April's (and crosses)
SELECT record_usage(1, 'api_calls', 7, 'march-2', '2026-03-31 23:59') AS calls;
SELECT record_usage(1, 'api_calls', 50, 'april-1', '2026-04-01') AS calls;
SELECT feature, used, peak, closed_at, closed_used FROM usage_counter WHERE account_id = 1 AND feature = 'api_calls';
-- a usage at an infinite time is in no period: 22008, nothing written
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 5, 'never', 'infinity')$$);
SELECT count(*) AS never_recorded FROM usage_record WHERE key = 'never';

-- U6: the preview of the ending period is March's figures
SELECT feature, aggregate, amount, period FROM preview_usage(1) ORDER BY feature;
SET LOCAL subscription.clock = DEFAULT;

-- U3: the renewal bills March from the snapshots: count 3, peak 6, 2,472
-- VM-hours, 20 GB, 107 calls; the counters keep April's
SELECT renew_due('2026-04-02') AS renewed;
SELECT feature, period, aggregation, used, peak, integral, aggregate, amount FROM usage_period ORDER BY feature;
SELECT item, amount, period FROM ledger WHERE item LIKE 'usage %' ORDER BY item;
SELECT feature, used, peak, integral, since, closes, closed_at FROM usage_counter WHERE account_id = 1 ORDER BY feature;

-- April: a VM (1 GB) gone on the 10th, then the renewal at the end with no
-- write after it: April billed from the counters, to its end: count 7,
-- peak 8, 3 x 1 + 8 x 8 + 7 x 21 = 214 VM-days = 5,136 VM-hours, 24 GB,
-- 50 calls
SET LOCAL subscription.clock = '2026-04-10';
DELETE FROM vm WHERE id = 7;
SET LOCAL subscription.clock = DEFAULT;
SELECT renew_due('2026-05-01') AS renewed;
SELECT feature, period, used, peak, aggregate, amount FROM usage_period
 WHERE lower(period) = '2026-04-01' ORDER BY feature;
-- each period billed once: a renewal run again bills nothing
SELECT renew_due('2026-05-01') AS renewed_again, (SELECT count(*) FROM ledger WHERE item LIKE 'usage %') AS usage_lines;
-- a caller recording in a loop takes no subtransaction a call (an EXCEPTION
-- block would: past 64 in one transaction a backend's cache of them
-- overflows, and every snapshot of the cluster then reads pg_subtrans).
-- PostgreSQL 16 and later count them (the matrix runs 17 and 18); 15 says 0
CREATE FUNCTION pg_temp.subtransactions() RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE
    n integer := 0;
BEGIN
    IF current_setting('server_version_num')::integer >= 160000 THEN
        PERFORM pg_stat_clear_snapshot();
        EXECUTE 'SELECT s.subxact_count FROM pg_stat_get_backend_idset() AS b (id), pg_stat_get_backend_subxact(b.id) AS s
                  WHERE pg_stat_get_backend_pid(b.id) = pg_backend_pid()' INTO n;
    END IF;
    RETURN n;
END
$f$;
SELECT count(record_usage(1, 'api_calls', 0, 'loop-' || n, '2026-05-02')) AS recorded FROM generate_series(1, 3) AS n;
SELECT pg_temp.subtransactions() AS subtransactions;
ROLLBACK;

-- U3 (issue 21): a write after two or more period ends, before the
-- renewals ran.  The guard keeps the figures of each period ended since
-- (close_usage: the first from the accumulators, each later one, which no
-- write reached, from the use held through it), one element per end in
-- usage_counter.closed_*, and counts the write in the period that holds
-- it; the catch-up renewals bill each period from its own figures.  The
-- billing clock is moved to each write's time (the meters' clock).
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
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Three ends'), (2, 2, 'Two ends');
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
SELECT count(subscribe(a, 'cloud_metered', '1 month', 1, '2026-03-01')) AS subscribed FROM generate_series(1, 2) AS a;

-- March, account 1: 4 VMs of 10 GB on the 11th, 2 of 5 GB on the 21st,
-- 3 of the first gone on the 31st; 100 API calls on the 15th.  Account
-- 2: 2 VMs of 10 GB on the 11th.
SET LOCAL subscription.clock = '2026-03-11';
INSERT INTO vm (account_id, gb) SELECT 1, 10 FROM generate_series(1, 4);
INSERT INTO vm (account_id, gb) SELECT 2, 10 FROM generate_series(1, 2);
SET LOCAL subscription.clock = '2026-03-21';
INSERT INTO vm (account_id, gb) SELECT 1, 5 FROM generate_series(1, 2);
SET LOCAL subscription.clock = '2026-03-31';
DELETE FROM vm WHERE id IN (1, 2, 3);
SELECT record_usage(1, 'api_calls', 100, 'march-1', '2026-03-15') AS calls;

-- May 5th, no renewal run since March: account 2 adds a VM of 1 GB.  The
-- write comes after two ends (April 1st, May 1st): March's figures (2
-- VMs, peak 2, 2 x 21 days = 42 VM-days = 3,628,800 VM-seconds, 20 GB),
-- then April's, which no write reached (2 VMs held 30 days: 60 VM-days =
-- 5,184,000 VM-seconds, 20 GB); May counts from its start (2 VMs for 4
-- days: 691,200 VM-seconds) and closes on June 1st
SET LOCAL subscription.clock = '2026-05-05';
INSERT INTO vm (account_id, gb) VALUES (2, 1);
SELECT feature, used, peak, integral, since, closes, closed_at, closed_used, closed_peak, closed_integral
  FROM usage_counter WHERE account_id = 2 ORDER BY feature;

-- June 10th, still no renewal: account 1 adds a VM of 2 GB and records 9
-- calls.  Three ends: March (3 VMs, peak 6, 4 x 10 + 6 x 10 + 3 x 1 = 103
-- VM-days = 8,899,200 VM-seconds, 20 GB, peak 50 GB, 100 calls), April
-- (3 VMs for 30 days: 7,776,000, 20 GB; no call: recorded usage starts
-- each period from 0) and May (3 VMs for 31 days: 8,035,200); June from
-- its start (3 VMs for 9 days: 2,332,800)
SET LOCAL subscription.clock = '2026-06-10';
INSERT INTO vm (account_id, gb) VALUES (1, 2);
SELECT record_usage(1, 'api_calls', 9, 'june-1', '2026-06-10') AS calls;
SELECT feature, used, peak, integral, since, closes, closed_at, closed_used, closed_peak, closed_integral
  FROM usage_counter WHERE account_id = 1 ORDER BY feature;
-- a later write of the same period crosses nothing: O(1), no figures kept
SET LOCAL subscription.clock = '2026-06-11';
INSERT INTO vm (account_id, gb) VALUES (1, 3);
SELECT feature, used, peak, cardinality(closed_at) AS ended_kept, closes FROM usage_counter
 WHERE account_id = 1 AND feature IN ('vms', 'vm_gb') ORDER BY feature;

-- U6: the preview of the ending period (March) is March's figures
SELECT subscription_id, feature, aggregate, amount, period FROM preview_usage(1) ORDER BY feature;
SET LOCAL subscription.clock = DEFAULT;

-- U3: the catch-up renewal bills each period from its own figures.
-- Account 1: March 3 / 6 / 2,472 VM-hours / 20 GB / 100 calls; April 3 /
-- 3 / 2,160 / 20 / 0; May 3 / 3 / 2,232 / 20 / 0.  Account 2: March 2 /
-- 2 / 1,008 / 20; April 2 / 2 / 1,440 / 20; May from its counter, to the
-- end: 3 VMs, peak 3, 2 x 4 + 3 x 27 = 89 VM-days = 2,136 VM-hours, 21 GB
SELECT renew_due('2026-06-10') AS renewed;
SELECT s.account_id, p.feature, p.period, p.used, p.peak, p.integral, p.aggregate, p.amount
  FROM usage_period AS p JOIN subscription AS s ON s.tenant_id = p.tenant_id AND s.id = p.subscription_id
 WHERE p.feature <> 'api_calls' OR s.account_id = 1
 ORDER BY s.account_id, p.feature, p.period;
SELECT s.account_id, l.item, l.amount, l.period
  FROM ledger AS l JOIN subscription AS s ON s.tenant_id = l.tenant_id AND s.id = l.subscription_id
 WHERE l.item LIKE 'usage %' ORDER BY s.account_id, l.item, l.period;
-- every ended period billed: no figures kept; the counters hold June and
-- close at its end
SELECT account_id, feature, used, peak, integral, since, closes, closed_at FROM usage_counter
 WHERE feature <> 'api_calls' OR account_id = 1 ORDER BY account_id, feature;
-- each period billed once: the renewal run again bills nothing
SELECT renew_due('2026-06-10') AS renewed_again, (SELECT count(*) FROM ledger WHERE item LIKE 'usage %') AS usage_lines;

-- June, account 1, renewed on time with no write since the 11th: 5 VMs,
-- peak 5, 3 x 9 + 4 x 1 + 5 x 20 = 131 VM-days = 3,144 VM-hours, 25 GB,
-- 9 calls
SELECT renew_due('2026-07-01') AS renewed;
SELECT p.feature, p.period, p.used, p.peak, p.aggregate, p.amount FROM usage_period AS p
  JOIN subscription AS s ON s.tenant_id = p.tenant_id AND s.id = p.subscription_id
 WHERE s.account_id = 1 AND lower(p.period) = '2026-06-01' ORDER BY p.feature;

-- close_usage (internal, the guard's): an infinite time ends every period,
-- so it is in none (22008); NULLs are 22004; nothing written
SELECT pg_temp.error_of($$SELECT subscription.close_usage(1, 1, 'vms', 'infinity', true)$$);
SELECT pg_temp.error_of($$SELECT subscription.close_usage(1, 1, 'vms', '2026-08-01', NULL)$$);
SELECT count(*) AS none_kept FROM usage_counter WHERE closed_at IS NOT NULL;
ROLLBACK;

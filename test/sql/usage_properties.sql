-- Property (issue 21, U1-U3): 100,000 random inserts, updates and deletes
-- of registered rows, in statements of many rows, at random times over 45
-- days (the billing clock moved before each statement) across the end of
-- the first period (2026-02-01), before its renewal runs.  The meters'
-- figures kept by the guard (count, peak, time_weighted, sum) equal an
-- independent replay of the row log, each period's apart (U3: each row
-- change in exactly one period's figures, a write at or after the end in
-- the next one), and the bill of the period equals the tier formula,
-- rounded once.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO product (code, name) VALUES ('store', 'Storage');
INSERT INTO plan (code, product, name, rank) VALUES ('store_metered', 'store', 'Metered', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('store_metered', '1 month', 10);
INSERT INTO plan_limit (plan, feature, value) VALUES ('store_metered', 'objects', NULL), ('store_metered', 'object_gb', NULL);
INSERT INTO account (tenant_id, id, name) SELECT g, g, 'a' || g FROM generate_series(1, 3) AS g;
SELECT count(subscribe(g, 'store_metered', '1 month', 1, '2026-01-01')) AS subscribed FROM generate_series(1, 3) AS g;

CREATE TABLE public.obj (id bigserial PRIMARY KEY, account_id bigint NOT NULL, gb integer NOT NULL);
SELECT enforce_limit('public.obj', 'objects', 'account_id');
SELECT enforce_limit('public.obj', 'object_gb', 'account_id', 'scale', NULL, 'gb');
SELECT meter('public.obj', 'objects', 'time_weighted', '1 second');
SELECT meter('public.obj', 'object_gb', 'sum');
SELECT plan_usage_price('store_metered', 'objects', 1000, 0,
                        '[{"up_to": 100000, "unit_amount": 0.00013}, {"up_to": null, "unit_amount": 0.00007, "flat_amount": 1}]', 'volume');
SELECT plan_usage_price('store_metered', 'object_gb', 10, 0,
                        '[{"up_to": 100, "unit_amount": 0.013}, {"up_to": 1000, "unit_amount": 0.007}, {"up_to": null, "unit_amount": 0.0031, "flat_amount": 1}]',
                        'graduated');

-- the row log, independent of the guard: each row change with its statement
CREATE SEQUENCE public.stmt;
CREATE TABLE public.obj_log (stmt bigint, at timestamptz, account_id bigint, objects integer, gb integer);
CREATE FUNCTION public.obj_stmt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM nextval('public.stmt'); RETURN NULL; END $$;
CREATE FUNCTION public.obj_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO public.obj_log VALUES (currval('public.stmt'), current_setting('subscription.clock')::timestamptz, OLD.account_id, -1, -OLD.gb);
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        INSERT INTO public.obj_log VALUES (currval('public.stmt'), current_setting('subscription.clock')::timestamptz, NEW.account_id, 1, NEW.gb);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER obj_stmt BEFORE INSERT OR UPDATE OR DELETE ON public.obj FOR EACH STATEMENT EXECUTE FUNCTION public.obj_stmt();
CREATE TRIGGER obj_log AFTER INSERT OR UPDATE OR DELETE ON public.obj FOR EACH ROW EXECUTE FUNCTION public.obj_log();

-- :ops random row operations (100,000 here; test/bench/cases/
-- usage_properties.sh runs 1,000,000), generated set-based and run as
-- statements of many rows each (a batch of 1 to 99 operations of one
-- kind), so that the run takes few statements: inserts (of 1 to 9 GB),
-- updates of a row's size (a batch) or of its account (one row per
-- statement, so that a row moving between accounts is one statement's
-- change), deletes (a batch, some of a range of ids), on three accounts.
-- In one transaction: the file rolls back what it made.
\if :{?ops}
\else
\set ops 100000
\endif
SELECT setseed(0.21);
CREATE TEMP TABLE batch AS
WITH b AS (
    SELECT g AS batch, random() AS kind, 1 + floor(random() * 99)::int AS size FROM generate_series(1, :ops / 25) AS g),
s AS (
    SELECT b.batch, CASE WHEN b.kind < 0.42 THEN 'insert' WHEN b.kind < 0.62 THEN 'size'
                         WHEN b.kind < 0.70 THEN 'move' ELSE 'delete' END AS kind,
           CASE WHEN b.kind >= 0.62 AND b.kind < 0.70 THEN 1 ELSE b.size END AS size,
           sum(CASE WHEN b.kind >= 0.62 AND b.kind < 0.70 THEN 1 ELSE b.size END) OVER (ORDER BY b.batch) AS ops_so_far
      FROM b)
SELECT * FROM s WHERE s.ops_so_far - s.size < :ops;
CREATE TEMP TABLE op AS
SELECT b.batch, b.kind, 1 + floor(random() * 3)::int AS account, floor(random() * 10)::int AS gb,
       -- an id among those inserted so far (about 4 in 10 operations insert)
       1 + floor(random() * greatest(b.ops_so_far * 0.42, 1))::bigint AS target, random() < 0.1 AS ranged
  FROM batch AS b CROSS JOIN LATERAL generate_series(1, b.size) AS k;
CREATE INDEX ON op (batch);
ANALYZE op;
SELECT count(*) >= :ops AS enough_operations, count(DISTINCT batch) < :ops / 20 AS few_statements FROM op;
-- each statement's time, in whole seconds, rising over 45 days from the
-- period's start: about 3 in 10 after its end (2026-02-01)
ALTER TABLE batch ADD COLUMN at timestamptz;
UPDATE batch SET at = timestamptz '2026-01-01' + (batch::bigint * (45 * 86400) / (SELECT max(batch) FROM batch)) * interval '1 second';
SELECT count(*) FILTER (WHERE at < '2026-02-01') > 0 AND count(*) FILTER (WHERE at >= '2026-02-01') > count(*) / 5
       AS both_periods_written FROM batch;
\set ECHO none
SELECT format('SET subscription.clock = %L', b.at), CASE b.kind
       WHEN 'insert' THEN format('INSERT INTO public.obj (account_id, gb) SELECT account, gb FROM pg_temp.op WHERE batch = %s', b.batch)
       WHEN 'size' THEN format('UPDATE public.obj AS o SET gb = p.gb FROM pg_temp.op AS p WHERE p.batch = %s AND o.id = p.target', b.batch)
       WHEN 'move' THEN format('UPDATE public.obj AS o SET account_id = p.account FROM pg_temp.op AS p WHERE p.batch = %s AND o.id = p.target', b.batch)
       ELSE format('DELETE FROM public.obj AS o USING pg_temp.op AS p WHERE p.batch = %s AND o.id BETWEEN p.target AND p.target + CASE WHEN p.ranged THEN 5 ELSE 0 END', b.batch) END
  FROM batch AS b ORDER BY b.batch
\gexec
\set ECHO all
RESET subscription.clock;
SELECT count(*) > :ops / 2 AS many_rows_logged, count(DISTINCT stmt) > :ops / 60 AS many_statements FROM public.obj_log;

-- the replay: per account and period (the first ends at 2026-02-01, the
-- second runs on), from the totals after each statement that changed them
CREATE TEMP TABLE replay AS
WITH s AS (
    SELECT l.account_id, l.stmt, min(l.at) AS at, sum(l.objects) AS d_objects, sum(l.gb) AS d_gb
      FROM public.obj_log AS l GROUP BY 1, 2),
t AS (
    SELECT s.*, sum(s.d_objects) OVER w AS objects, sum(s.d_gb) OVER w AS gb, s.at >= '2026-02-01' AS later
      FROM s WINDOW w AS (PARTITION BY s.account_id ORDER BY s.stmt)),
-- the objects counter moves on the statements that change it
c AS (
    SELECT t.account_id, t.at, t.later, t.objects,
           lag(t.objects, 1, 0::numeric) OVER (PARTITION BY t.account_id ORDER BY t.stmt) AS before,
           lag(t.at) OVER (PARTITION BY t.account_id ORDER BY t.stmt) AS previous
      FROM t WHERE t.d_objects <> 0),
-- each period's end figures: the first's at its end, the second's at the last statement
e AS (
    SELECT a.account_id, p.later,
           coalesce((SELECT c.objects FROM c WHERE c.account_id = a.account_id AND c.later <= p.later
                      ORDER BY c.at DESC LIMIT 1), 0) AS objects,
           coalesce((SELECT c.at FROM c WHERE c.account_id = a.account_id AND c.later <= p.later
                      ORDER BY c.at DESC LIMIT 1), '2026-01-01') AS last_change,
           coalesce((SELECT t.gb FROM t WHERE t.account_id = a.account_id AND t.later <= p.later
                      ORDER BY t.stmt DESC LIMIT 1), 0) AS gb
      FROM (SELECT DISTINCT t.account_id FROM t) AS a CROSS JOIN (VALUES (false), (true)) AS p(later))
SELECT e.account_id, e.later, e.objects, e.gb,
       -- the peak: the second period's starts from the use at the first's end
       greatest(max(t.objects) FILTER (WHERE t.d_objects <> 0 AND t.later = e.later),
                CASE WHEN e.later THEN first.objects ELSE 0 END) AS objects_peak,
       greatest(max(t.gb) FILTER (WHERE t.d_gb <> 0 AND t.later = e.later),
                CASE WHEN e.later THEN first.gb ELSE 0 END) AS gb_peak,
       -- the integral over the period: each change's use before it, from
       -- the previous change (or the period's start); the first period's
       -- last use held to its end
       CASE WHEN e.later
            THEN (SELECT coalesce(sum(c.before * extract(epoch FROM c.at - greatest(c.previous, '2026-02-01'))), 0)
                    FROM c WHERE c.account_id = e.account_id AND c.later)
            ELSE (SELECT coalesce(sum(c.before * extract(epoch FROM c.at - c.previous)), 0)
                    FROM c WHERE c.account_id = e.account_id AND NOT c.later)
                 + e.objects * extract(epoch FROM timestamptz '2026-02-01' - e.last_change) END AS objects_seconds
  FROM e
  JOIN e AS first ON first.account_id = e.account_id AND NOT first.later
  JOIN t ON t.account_id = e.account_id
 GROUP BY e.account_id, e.later, e.objects, e.gb, e.last_change, first.objects, first.gb;

-- U2, U3: the renewal, after the writes past the period's end, bills the
-- first period: the aggregate of its replay, priced by the tier formula
-- written out here, rounded once
SELECT renew_due('2026-02-01') AS renewed;
SELECT p.account_id, p.feature, p.aggregate = CASE p.feature WHEN 'objects' THEN r.objects_seconds ELSE r.gb END AS aggregate_ok,
       p.used = CASE p.feature WHEN 'objects' THEN r.objects ELSE r.gb END AS count_ok,
       p.peak = CASE p.feature WHEN 'objects' THEN r.objects_peak ELSE r.gb_peak END AS peak_ok,
       p.amount = round(CASE p.feature
           WHEN 'objects' THEN
               CASE WHEN p.billable <= 0 THEN 0
                    WHEN p.billable <= 100000 THEN p.billable * 0.00013
                    ELSE p.billable * 0.00007 + 1 END
           ELSE 0.013 * least(p.billable, 100) + 0.007 * greatest(least(p.billable, 1000) - 100, 0)
                + 0.0031 * greatest(p.billable - 1000, 0) + CASE WHEN p.billable > 1000 THEN 1 ELSE 0 END
           END, 2) AS amount_ok,
       CASE WHEN p.amount > 0 THEN p.amount = (SELECT l.amount FROM ledger AS l WHERE l.id = p.ledger_id)
            ELSE p.ledger_id IS NULL END AS ledger_ok,
       p.amount > 0 AS billed
  FROM usage_period AS p JOIN replay AS r ON r.account_id = p.account_id AND NOT r.later
 ORDER BY 1, 2;

-- U1, U3: the counters hold the second period's figures exactly (the rows
-- written after the first's end, from its end), the snapshot billed
SELECT r.account_id,
       o.used = r.objects AND o.used = (SELECT count(*) FROM public.obj WHERE account_id = r.account_id) AS count_ok,
       o.peak = r.objects_peak AS peak_ok,
       o.integral = r.objects_seconds AS time_weighted_ok,
       g.used = r.gb AND g.used = (SELECT sum(gb) FROM public.obj WHERE account_id = r.account_id) AS sum_ok,
       g.peak = r.gb_peak AS sum_peak_ok,
       o.integral > 0 AS time_passed,
       o.closed_at IS NULL AND g.closed_at IS NULL AS snapshot_billed,
       o.closes = '2026-03-01' AND g.closes = '2026-03-01' AS next_end
  FROM replay AS r
  JOIN usage_counter AS o ON o.account_id = r.account_id AND o.feature = 'objects'
  JOIN usage_counter AS g ON g.account_id = r.account_id AND g.feature = 'object_gb'
 WHERE r.later
 ORDER BY 1;
ROLLBACK;

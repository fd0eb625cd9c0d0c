-- has_feature() in row-level security policies (issue 21, item 5), on a
-- 1M-row table (1,000 Premier accounts of 1,000 rows) against the same
-- rows in a table without a policy, asked the same question:
--   1. one account's rows (by its key, 200 statements), the policy written
--      as docs/limits.md shows it: the account from the setting, and
--      has_feature() in a sub-select, run once per statement: one index
--      probe of subscription.entitlement.  Target 1.3x.
--   2. the same with has_feature(account_id, ...) on each row: one probe
--      of subscription.entitlement for the first row, the call site's
--      memory after it.
--   3. every row of every account (a back-office count): 1M calls.
-- Serial plans, so that both sides do the same work.
SET search_path = subscription, public;
SET max_parallel_workers_per_gather = 0;
INSERT INTO product (code, name) VALUES ('rls', 'Entitlements');
INSERT INTO plan (code, product, name) VALUES ('rls_premier', 'rls', 'Premier');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('rls_premier', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('rls_premier', 'rls_reports', NULL);
INSERT INTO account (id, name) SELECT 100000 + a, 'rls ' || a FROM generate_series(1, 1000) AS a;
SELECT count(subscribe(100000 + a, 'rls_premier', '1 month', 1, '2026-01-01')) FROM generate_series(1, 1000) AS a;
CREATE TABLE public.rls_plain (account_id bigint NOT NULL, id bigint NOT NULL, body text NOT NULL,
                               PRIMARY KEY (account_id, id));
INSERT INTO public.rls_plain SELECT 100000 + a, n, 'report ' || n FROM generate_series(1, 1000) AS a, generate_series(1, 1000) AS n;
CREATE TABLE public.rls_once (LIKE public.rls_plain INCLUDING ALL);
INSERT INTO public.rls_once SELECT * FROM public.rls_plain;
CREATE TABLE public.rls_rows (LIKE public.rls_plain INCLUDING ALL);
INSERT INTO public.rls_rows SELECT * FROM public.rls_plain;
VACUUM ANALYZE public.rls_plain, public.rls_once, public.rls_rows;
ALTER TABLE public.rls_once ENABLE ROW LEVEL SECURITY;
CREATE POLICY entitled ON public.rls_once
    USING (account_id = (SELECT current_setting('app.account_id')::bigint)
           AND (SELECT subscription.has_feature(current_setting('app.account_id')::bigint, 'rls_reports')));
ALTER TABLE public.rls_rows ENABLE ROW LEVEL SECURITY;
CREATE POLICY entitled ON public.rls_rows
    USING (subscription.has_feature(account_id, 'rls_reports'));
DROP ROLE IF EXISTS bench_rls;
CREATE ROLE bench_rls;
SELECT grant_application('bench_rls');
GRANT SELECT ON public.rls_plain, public.rls_once, public.rls_rows TO bench_rls;
GRANT USAGE ON SCHEMA bench TO bench_rls;

SET ROLE bench_rls;
SET app.account_id = '100500';
-- every row is visible (the accounts are Premier): the same counts on each side
SELECT (SELECT count(*) FROM public.rls_once) = 1000 AND (SELECT count(*) FROM public.rls_rows) = 1000000 AS same_rows;
SELECT * FROM bench.compare('one account, 1,000 rows by key (x200), has_feature() once per statement vs no policy',
    $$DO 'BEGIN FOR i IN 1..200 LOOP PERFORM count(*) FROM public.rls_once; END LOOP; END'$$,
    $$DO 'BEGIN FOR i IN 1..200 LOOP PERFORM count(*) FROM public.rls_plain WHERE account_id = 100500; END LOOP; END'$$, 7);
SELECT * FROM bench.compare('one account, 1,000 rows by key (x200), has_feature() on each row vs no policy',
    $$DO 'BEGIN FOR i IN 1..200 LOOP PERFORM count(*) FROM public.rls_rows WHERE account_id = 100500; END LOOP; END'$$,
    $$DO 'BEGIN FOR i IN 1..200 LOOP PERFORM count(*) FROM public.rls_plain WHERE account_id = 100500; END LOOP; END'$$, 7);
SELECT * FROM bench.compare('every account, 1M rows, has_feature() on each row vs no policy',
    'SELECT count(*) FROM public.rls_rows', 'SELECT count(*) FROM public.rls_plain', 7);
RESET ROLE;
DROP OWNED BY bench_rls;
DROP ROLE bench_rls;

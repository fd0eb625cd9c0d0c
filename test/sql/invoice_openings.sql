-- The invoices' openings at the commit, set-based (issue 18, I8): one
-- event of the deferred trigger invoice_record_opened writes the openings
-- of every invoice its transaction inserted (its WHEN clause
-- opening_pending lists them), in the order inserted, each once, in one
-- statement of history; a rolled back savepoint's invoices have none, and
-- an event queued in it is queued again by the next invoice; SET
-- CONSTRAINTS ... IMMEDIATE writes them at the end of each statement;
-- write_histories of any accounts, and its bad input.
\set VERBOSITY default
\i test/sql/include/setup.psql
SELECT setval(pg_get_serial_sequence('subscription.invoice_record', 'id'), 1, false) IS NOT NULL AS reset;
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET client_min_messages = warning;
SET track_functions = 'all';  -- history_event is C (issue 20)
-- calls counted on the tenant's node, ids bounded per node (on Citus each
-- worker numbers from its own range)
\i test/sql/include/per_node.psql
-- the catalog and accounts of each transaction (each rolled back)
\set catalog 'INSERT INTO product (code, name) VALUES (''desk'', ''Zendesk Support''); INSERT INTO plan (code, product, name) VALUES (''zd_pro'', ''desk'', ''Professional''); INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES (''zd_pro'', ''1 month'', 55, true); INSERT INTO account (id, tenant_id, name) SELECT g, g, ''tenant '' || g FROM generate_series(1, 6) AS g;'

-- three invoices in one transaction, one of them in a savepoint rolled
-- back: at the commit (here SET CONSTRAINTS ALL IMMEDIATE, in the
-- transaction) one call of the trigger writes the two openings left, in
-- the order of their invoices, with one call of history's statement
-- trigger
BEGIN;
:catalog
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h0
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
SAVEPOINT two;
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-01') IS NOT NULL AS subscribed;
ROLLBACK TO two;
SELECT subscribe(3, 'zd_pro', '1 month', 3, '2026-01-01') IS NOT NULL AS subscribed;
SELECT pg_temp.calls('invoice_opened', 1) AS o0, pg_temp.calls('history_event', 1) AS t0 \gset
SET CONSTRAINTS ALL IMMEDIATE;
SELECT pg_temp.calls('invoice_opened', 1) - :o0 AS trigger_calls, pg_temp.calls('history_event', 1) - :t0 AS history_statements;
SELECT h.account_id, h.details ->> 'number' AS number, h.details ->> 'total' AS total, h.details ->> 'lines' AS lines
  FROM history AS h WHERE public.regress_ids_after(:'h0', h.id) AND h.operation = 'invoice_open' ORDER BY h.id;
SELECT i.account_id, i.announced FROM invoice_record AS i ORDER BY i.id;
ROLLBACK;

-- the first invoice in a savepoint rolled back, its event with it: the
-- next invoice queues another, and its opening is written
BEGIN;
:catalog
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h0
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SAVEPOINT first;
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
ROLLBACK TO first;
SELECT subscribe(4, 'zd_pro', '1 month', 4, '2026-01-01') IS NOT NULL AS subscribed;
SELECT subscribe(5, 'zd_pro', '1 month', 5, '2026-01-01') IS NOT NULL AS subscribed;
SET CONSTRAINTS ALL IMMEDIATE;
SELECT h.account_id, h.details ->> 'total' AS total, h.details ->> 'lines' AS lines
  FROM history AS h WHERE public.regress_ids_after(:'h0', h.id) AND h.operation = 'invoice_open' ORDER BY h.id;
-- a savepoint released keeps its invoices, and the event it queued
SET CONSTRAINTS ALL DEFERRED;
SAVEPOINT kept;
SELECT subscribe(6, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
RELEASE kept;
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-01') IS NOT NULL AS subscribed;
SELECT pg_temp.calls('invoice_opened', 6) AS o0 \gset
SET CONSTRAINTS ALL IMMEDIATE;
SELECT pg_temp.calls('invoice_opened', 6) - :o0 AS trigger_calls;
SELECT h.account_id FROM history AS h WHERE public.regress_ids_after(:'h0', h.id) AND h.operation = 'invoice_open' ORDER BY h.id;
SELECT count(*) FILTER (WHERE NOT i.announced) AS not_announced FROM invoice_record AS i;
ROLLBACK;

-- deferred: nothing before the commit
BEGIN;
:catalog
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h0
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-01') IS NOT NULL AS subscribed;
SELECT count(*) AS opened_before_the_commit FROM history AS h WHERE public.regress_ids_after(:'h0', h.id) AND h.operation = 'invoice_open';
SET CONSTRAINTS ALL IMMEDIATE;
SELECT h.account_id, h.details ->> 'total' AS total FROM history AS h
 WHERE public.regress_ids_after(:'h0', h.id) AND h.operation = 'invoice_open' ORDER BY h.id;
SELECT e.type, e.account_id FROM event AS e WHERE e.type = 'invoice.opened' ORDER BY e.id;
ROLLBACK;

-- a failed payment and a void of invoices this transaction opened
-- (announce_invoice, through invoice_for_change; issue 20): each
-- invoice's opening first, with its total and lines, then the change's
-- rows; none again at the commit, where the like invoice of account 3 is
-- opened with the same details
BEGIN;
:catalog
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h0
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT subscribe(g, 'zd_pro', '1 month', 2, '2026-01-01') IS NOT NULL AS subscribed FROM generate_series(1, 3) AS g;
-- (each invoice's id read first: on Citus the unkeyed forms find their
-- tenant by a query of their own, which a query of a shard cannot run)
SELECT i.id AS failed FROM invoice_record AS i WHERE i.account_id = 1 \gset
SELECT i.id AS voided FROM invoice_record AS i WHERE i.account_id = 2 \gset
SELECT record_payment_failure(:failed, 'card declined', '2026-01-02');
SELECT void_invoice(:voided, 'wrong customer', '2026-01-02') IS NOT NULL AS voided;
SELECT i.account_id, i.announced, i.status FROM invoice_record AS i ORDER BY i.id;
-- the openings written by key leave the transaction's plan settings as
-- they were (announce_invoices sets plan_cache_mode to the end of it)
SELECT current_setting('plan_cache_mode') AS plan_cache_mode;
SET CONSTRAINTS ALL IMMEDIATE;
-- and so do the openings written set-based (invoice_announcements)
SELECT current_setting('plan_cache_mode') AS plan_cache_mode_after_openings;
SELECT h.account_id, h.operation, h.details ->> 'total' AS total, h.details ->> 'lines' AS lines,
       h.details -> 'status' ->> 'new' AS status, h.details ->> 'reason' AS reason,
       h.details ->> 'attempt' AS attempt, h.details ->> 'due' AS due
  FROM history AS h
 WHERE public.regress_ids_after(:'h0', h.id) AND h.operation IN ('invoice_open', 'invoice_status', 'payment_failure') ORDER BY h.id;
SELECT count(*) AS openings, count(DISTINCT h.details ->> 'invoice_id') AS invoices
  FROM history AS h WHERE public.regress_ids_after(:'h0', h.id) AND h.operation = 'invoice_open';
SELECT e.account_id, e.type FROM event AS e
 WHERE e.type IN ('invoice.opened', 'payment.failed', 'invoice.voided') ORDER BY e.id;
ROLLBACK;

-- write_histories of any accounts: rows k of each array, in that order,
-- in one statement
BEGIN;
:catalog
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h1
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT pg_temp.calls('history_event', 3) AS t0 \gset
SELECT write_histories('{test_a,test_b,test_c}'::text[], '{3,4,NULL}'::bigint[], ARRAY[NULL, NULL, NULL]::bigint[],
                       ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], '{3,4,5}'::bigint[]);
SELECT write_histories('{}'::text[], '{}'::bigint[], '{}'::bigint[], '{}'::jsonb[], '{}'::bigint[]);
SELECT pg_temp.calls('history_event', 3) - :t0 AS trigger_calls;
SELECT operation, account_id, subscription_id, tenant_id, details, actor = current_actor() AS actor
  FROM history WHERE public.regress_ids_after(:'h1', id) ORDER BY id;
ROLLBACK;

-- bad input (docs/errors-and-settings.md): 22004, 22023, 42501
SELECT pg_temp.error_of($$SELECT subscription.write_histories(NULL::text[], '{1}'::bigint[], '{1}'::bigint[], '{"{}"}'::jsonb[], '{1}'::bigint[])$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a}'::text[], '{1}'::bigint[], '{1}'::bigint[], '{"{}"}'::jsonb[], NULL::bigint[])$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a,b}'::text[], '{1,1}'::bigint[], '{1}'::bigint[], '{"{}","{}"}'::jsonb[], '{1,1}'::bigint[])$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a}'::text[], '{1}'::bigint[], '{1}'::bigint[], '{"{}"}'::jsonb[], ARRAY[NULL]::bigint[])$$);
SELECT pg_temp.error_of($$SELECT subscription.announce_invoices('{1,2}', '{1}')$$);
SELECT pg_temp.error_of($$SELECT subscription.opening_pending(NULL, 1)$$);
BEGIN;
CREATE ROLE invoice_openings_office;
GRANT USAGE ON SCHEMA subscription TO invoice_openings_office;
GRANT EXECUTE ON FUNCTION write_histories(text[], bigint[], bigint[], jsonb[], bigint[]) TO invoice_openings_office;
SET LOCAL ROLE invoice_openings_office;
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a}'::text[], '{1}'::bigint[], '{1}'::bigint[], '{"{}"}'::jsonb[], '{1}'::bigint[])$$);
ROLLBACK;

-- Several history rows in one statement (issue 20, the simulation's top
-- cost): write_histories(), the writer of several rows of one account and
-- subscription, and record_payment's rows (the opening of an invoice of
-- its transaction, the payment, the status) written by it with one call
-- of history's statement trigger: the same rows and events, in the same
-- order, as when the opening was written before; end_past_due refreshes
-- the account's other subscriptions only when its dunning froze the
-- account; write_histories' bad input.
\set VERBOSITY default
\i test/sql/include/setup.psql
SELECT setval(pg_get_serial_sequence('subscription.invoice_record', 'id'), 1, false) IS NOT NULL AS reset;
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET client_min_messages = warning;
-- the calls of the trigger (C: 'all'; each writes its events with one
-- INSERT), counted in the transaction
SET track_functions = 'all';
-- calls counted on the tenant's node, ids bounded per node (on Citus each
-- worker numbers from its own range)
\i test/sql/include/per_node.psql
-- calls here and on the tenant's node: on Citus an unkeyed call in a
-- transaction block runs on the coordinator, and what it calls there is
-- counted there (refresh_freeze, from record_payment's end_past_due)
CREATE FUNCTION pg_temp.calls_anywhere(fn text, tenant bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT coalesce((SELECT sum(f.calls) FROM pg_catalog.pg_stat_xact_user_functions AS f
                      WHERE f.schemaname = 'subscription' AND f.funcname = fn), 0)
           + CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus')
                  THEN pg_temp.calls(fn, tenant) ELSE 0 END
$$;
BEGIN;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'pays in the transaction'), (2, 2, 'pays after the opening');
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h0
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
-- account 1: the invoice opened, then paid in its transaction: its
-- opening, the payment and the status in one statement
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-01') AS s1 \gset
SELECT id AS i1 FROM invoice_record WHERE subscription_id = :s1 \gset
SELECT pg_temp.calls('history_event', 1) AS t0 \gset
SELECT record_payment(:i1, 110, 'ch_1', '2026-01-02') IS NOT NULL AS paid;
SELECT pg_temp.calls('history_event', 1) - :t0 AS trigger_calls;
-- account 2: the opening written before the payment (SET CONSTRAINTS
-- IMMEDIATE fires the pending opening), then the payment and the status
-- in one statement
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-01') AS s2 \gset
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
SELECT id AS i2 FROM invoice_record WHERE subscription_id = :s2 \gset
SELECT pg_temp.calls('history_event', 2) AS t0 \gset
SELECT record_payment(:i2, 110, 'ch_2', '2026-01-02') IS NOT NULL AS paid;
SELECT pg_temp.calls('history_event', 2) - :t0 AS trigger_calls;
SET CONSTRAINTS subscription.invoice_record_opened DEFERRED;
-- the same rows in the same order (ids aside), ids consecutive
SELECT h.account_id, h.operation, h.id - lag(h.id) OVER (PARTITION BY h.account_id, h.id >> 48 ORDER BY h.id) AS step,
       h.details - '{invoice_id,payment_id,number,reference}'::text[] AS details
  FROM history AS h
 WHERE public.regress_ids_after(:'h0', h.id) AND h.operation IN ('invoice_open', 'payment', 'invoice_status')
 ORDER BY h.account_id, h.id;
-- their events, in the order of the rows
SELECT e.account_id, e.type, e.payload - '{invoice_id,payment_id,number,reference}'::text[] AS payload
  FROM event AS e
 WHERE e.type IN ('invoice.opened', 'payment.recorded', 'invoice.paid')
 ORDER BY e.account_id, e.id;
SELECT (SELECT array_agg(h.operation ORDER BY h.id) FROM history AS h
         WHERE public.regress_ids_after(:'h0', h.id) AND h.account_id = 1 AND h.operation IN ('invoice_open', 'payment', 'invoice_status'))
     = (SELECT array_agg(h.operation ORDER BY e.id) FROM event AS e
          JOIN history AS h ON h.tenant_id = e.tenant_id AND h.account_id = e.account_id AND public.regress_ids_after(:'h0', h.id)
                           AND h.operation = CASE e.type WHEN 'invoice.opened' THEN 'invoice_open'
                                                         WHEN 'payment.recorded' THEN 'payment'
                                                         ELSE 'invoice_status' END
         WHERE e.account_id = 1 AND e.type IN ('invoice.opened', 'payment.recorded', 'invoice.paid')) AS events_in_row_order;
-- a reference already recorded: the payment returned, nothing else written
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h1
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT record_payment(:i1, 110, 'ch_1', '2026-01-02') IS NOT NULL AS same_payment;
SELECT count(*) AS rows_written FROM history WHERE public.regress_ids_after(:'h1', id);
ROLLBACK;

-- the reference recorded in the transaction that opened the invoice: the
-- opening is written with the early return (a second invoice of the
-- account, its first payment's reference given again)
BEGIN;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'pays twice');
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-01') AS s1 \gset
SELECT id AS i1 FROM invoice_record WHERE subscription_id = :s1 \gset
SELECT record_payment(:i1, 110, 'ch_1', '2026-01-02') AS first_payment \gset
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h1
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT record_payment(:i1, 110, 'ch_1', '2026-01-03') = :first_payment AS same_payment;
SELECT count(*) AS rows_written FROM history WHERE public.regress_ids_after(:'h1', id);
ROLLBACK;

-- D5: a payment ends past due.  Not frozen: the account's other
-- subscription is not updated again (refresh_freeze not called); frozen
-- by its dunning: the other subscription's seat counter opens again
BEGIN;
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) VALUES (3, 3, 'past due'), (4, 4, 'frozen');
SELECT subscribe(3, 'zd_pro', '1 month', 1, '2026-01-01') AS a3 \gset
SELECT subscribe(3, 'zd_pro', '1 month', 1, '2026-01-01') AS b3 \gset
SELECT subscribe(4, 'zd_pro', '1 month', 1, '2026-01-01') AS a4 \gset
SELECT subscribe(4, 'zd_pro', '1 month', 1, '2026-01-01') AS b4 \gset
SELECT id AS i3 FROM invoice_record WHERE subscription_id = :a3 \gset
SELECT id AS i4 FROM invoice_record WHERE subscription_id = :a4 \gset
SELECT record_payment_failure(:i3, 'card_declined', '2026-01-02'), record_payment_failure(:i4, 'card_declined', '2026-01-02');
-- account 4 as its dunning's last step 'freeze' leaves it (dunning_final)
UPDATE subscription SET dunning_frozen = true WHERE id = :a4;
SELECT tenant_id AS t4, account_id AS account4 FROM subscription WHERE id = :a4 \gset
SELECT refresh_freeze(:t4, :account4);
SELECT s.account_id, s.id IN (:a3, :a4) AS past_due_one, s.status, s.dunning_frozen, c.active
  FROM subscription AS s JOIN license_counter AS c ON c.tenant_id = s.tenant_id AND c.subscription_id = s.id
 WHERE s.account_id IN (3, 4) ORDER BY s.id;
SELECT xmin::text AS b3_version FROM subscription WHERE id = :b3 \gset
SELECT pg_temp.calls_anywhere('refresh_freeze', 3) AS f0 \gset
SELECT record_payment(:i3, 55, 'ch_3', '2026-01-03') IS NOT NULL AS paid_3;
SELECT pg_temp.calls_anywhere('refresh_freeze', 3) - :f0 AS refreshes_3,
       (SELECT xmin::text FROM subscription WHERE id = :b3) = :'b3_version' AS other_untouched;
SELECT pg_temp.calls_anywhere('refresh_freeze', 4) AS f4 \gset
SELECT record_payment(:i4, 55, 'ch_4', '2026-01-03') IS NOT NULL AS paid_4;
SELECT pg_temp.calls_anywhere('refresh_freeze', 4) - :f4 AS refreshes_4;
SELECT s.account_id, s.status, s.dunning_frozen, c.active
  FROM subscription AS s JOIN license_counter AS c ON c.tenant_id = s.tenant_id AND c.subscription_id = s.id
 WHERE s.account_id IN (3, 4) ORDER BY s.id;
ROLLBACK;

-- write_histories: rows of one account and subscription in the order
-- given, in one statement (one call of the trigger); none for empty arrays
BEGIN;
INSERT INTO account (id, tenant_id, name) VALUES (5, 5, 'written');
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS h2
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT pg_temp.calls('history_event', 5) AS t0 \gset
SELECT write_histories('{test_a,test_b,test_c}', 5, NULL, ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[], 5);
SELECT write_histories('{}', 5, NULL, '{}', 5);
SELECT pg_temp.calls('history_event', 5) - :t0 AS trigger_calls;
SELECT operation, account_id, subscription_id, tenant_id, details, actor = current_actor() AS actor,
       db_user = current_user::text AS db_user
  FROM history WHERE public.regress_ids_after(:'h2', id) ORDER BY id;
ROLLBACK;

-- bad input (docs/errors-and-settings.md): 22004, 22023, 42501
SELECT pg_temp.error_of($$SELECT subscription.write_histories(NULL, 1, NULL, '{}', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a}', 1, NULL, NULL, 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a,b}', 1, NULL, '{"{}"}', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{{a}}', 1, NULL, '{{"{}"}}', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories(ARRAY[NULL::text], 1, NULL, '{"{}"}', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{a}', 1, NULL, ARRAY[NULL::jsonb], 1)$$);
BEGIN;
CREATE ROLE payment_history_office;
GRANT USAGE ON SCHEMA subscription TO payment_history_office;
GRANT EXECUTE ON FUNCTION write_histories(text[], bigint, bigint, jsonb[], bigint) TO payment_history_office;
SET LOCAL ROLE payment_history_office;
SELECT pg_temp.error_of($$SELECT subscription.write_histories('{forged}', 1, NULL, '{"{}"}', 1)$$) AS office_granted;
RESET ROLE;
ROLLBACK;
RESET track_functions;

-- The statuses that grant seats and limits in one place (status_grants,
-- issue 20): a subscription's move between two of them (active, trialing,
-- past due) recomputes neither its seat counter nor its account's limits,
-- a move out of them does; and record_payment of an invoice announced
-- already marks nothing (no invoice_announcement) and writes what is paid
-- with the status in one UPDATE (settle_invoice's paid_now, whose bad
-- input is refused), and license_consume in C reads the same set.
-- Counted with track_functions in the transaction,
-- the counters read as they are.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET client_min_messages = warning;
SET track_functions = 'pl';
-- calls and updates counted on the tenant's node (on Citus its worker)
\i test/sql/include/per_node.psql

-- the set, for every status a subscription can have
SELECT s AS status, status_grants(s) AS grants
  FROM unnest('{active,trialing,past_due,cancelled,expired}'::text[]) AS s;
SELECT status_grants(NULL) IS NULL AS null_unknown;

BEGIN;
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('zd_pro', 'calls', 100, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'fails, then pays'), (2, 2, 'ends');
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-01') AS s1 \gset
SELECT subscribe(2, 'zd_pro', '1 month', 3, '2026-01-01') AS s2 \gset
SELECT record_usage(a, 'calls', 5, 'first ' || a, '2026-01-01 12:00') IS NOT NULL AS used FROM generate_series(1, 2) AS a;
SELECT id AS i1 FROM invoice_record WHERE subscription_id = :s1 \gset
CREATE TEMP VIEW counters AS
SELECT s.account_id, s.status, c.capacity, c.active, u.limit_value
  FROM subscription AS s
  JOIN license_counter AS c ON c.tenant_id = s.tenant_id AND c.subscription_id = s.id
  LEFT JOIN usage_counter AS u ON u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = 'calls'
 WHERE s.account_id IN (1, 2) ORDER BY s.account_id;
SELECT * FROM counters;
-- active to past due (a failed charge, D1): the status moves within the
-- set, no counter and no limit recomputed, none changed
SELECT pg_temp.calls('refresh_account_limits', 1) AS r0, pg_temp.calls('license_capacity', 1) AS c0,
       pg_temp.calls('invoice_announcement', 1) AS a0,
       pg_temp.calls('refresh_account_limits', 2) AS r2, pg_temp.calls('license_capacity', 2) AS c2 \gset
SELECT record_payment_failure(:i1, 'card_declined', '2026-01-02');
SELECT pg_temp.calls('refresh_account_limits', 1) - :r0 AS limit_refreshes,
       pg_temp.calls('license_capacity', 1) - :c0 AS counter_refreshes;
SELECT * FROM counters;
-- paid (D5): past due to active, the same; the invoice was announced
-- (its opening written at once above): not marked again
SELECT pg_temp.calls('invoice_announcement', 1) - :a0 AS announcements;
SELECT record_payment(:i1, 110, 'ch_1', '2026-01-03') IS NOT NULL AS paid;
SELECT pg_temp.calls('refresh_account_limits', 1) - :r0 AS limit_refreshes,
       pg_temp.calls('license_capacity', 1) - :c0 AS counter_refreshes,
       pg_temp.calls('invoice_announcement', 1) - :a0 AS announcements;
SELECT * FROM counters;
-- active to cancelled (ended early): out of the set, both recomputed once,
-- the seats closed and the limit 0
SELECT end_early(:s2, '2026-01-10') IS NOT NULL AS ended;
SELECT pg_temp.calls('refresh_account_limits', 2) - :r2 AS limit_refreshes,
       pg_temp.calls('license_capacity', 2) - :c2 AS counter_refreshes;
SELECT * FROM counters;
-- a quantity, a change that is not the status's: recomputed as before
SELECT pg_temp.calls('refresh_account_limits', 1) AS r1 \gset
UPDATE subscription SET quantity = 4 WHERE id = :s1;
SELECT pg_temp.calls('refresh_account_limits', 1) - :r1 AS limit_refreshes;
SELECT * FROM counters;
ROLLBACK;

-- the payment's part written with the status: a part payment leaves it
-- open, the rest pays it (its status row once, after the payment's)
BEGIN;
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) VALUES (3, 3, 'pays in two parts');
SELECT subscribe(3, 'zd_pro', '1 month', 2, '2026-01-01') AS s3 \gset
SELECT id AS i3 FROM invoice_record WHERE subscription_id = :s3 \gset
SELECT record_payment(:i3, 10, 'part_1', '2026-01-02') IS NOT NULL AS first_part;
SELECT total, paid, status FROM invoice_record WHERE id = :i3;
SELECT record_payment(:i3, 100, 'part_2', '2026-01-03') IS NOT NULL AS second_part;
SELECT total, paid, status FROM invoice_record WHERE id = :i3;
SELECT operation, details ->> 'amount' AS amount, details -> 'status' AS status
  FROM history WHERE operation IN ('payment', 'invoice_status') AND details ->> 'invoice_id' = :'i3' ORDER BY id;
ROLLBACK;

-- an invoice opened in the payment's transaction (its opening at the
-- commit, not written yet): record_payment writes its opening, the payment
-- and its status in that order, marks it announced in the UPDATE that
-- writes the payment (one UPDATE of the invoice, no invoice_announcement),
-- and the commit's trigger writes no second opening
BEGIN;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) VALUES (5, 5, 'pays in the transaction that opened');
SELECT subscribe(5, 'zd_pro', '1 month', 2, '2026-01-01') AS s5 \gset
SELECT id AS i5, announced FROM invoice_record WHERE subscription_id = :s5 \gset
SELECT :'announced' AS announced_before;
SELECT pg_temp.calls('invoice_announcement', 5) AS a0 \gset
SELECT public.regress_xact_updates(a.tenant_id, 'invoice_record') AS u0 FROM account AS a WHERE a.tenant_id = 5 AND a.id = 5 \gset
SELECT record_payment(:i5, 110, 'same_tx', '2026-01-02') IS NOT NULL AS paid;
SELECT pg_temp.calls('invoice_announcement', 5) - :a0 AS announcements \gset
SELECT :announcements AS announcements, public.regress_xact_updates(a.tenant_id, 'invoice_record') - :u0 AS invoice_updates
  FROM account AS a WHERE a.tenant_id = 5 AND a.id = 5;
SELECT paid, status, announced FROM invoice_record WHERE id = :i5;
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
SELECT operation, details ->> 'total' AS total, details ->> 'amount' AS amount, details -> 'status' AS status
  FROM history WHERE operation IN ('invoice_open', 'payment', 'invoice_status') AND details ->> 'invoice_id' = :'i5' ORDER BY id;
SELECT type FROM event WHERE account_id = 5 AND (type LIKE 'invoice.%' OR type LIKE 'payment.%') ORDER BY id;
ROLLBACK;

-- settle_invoice's payment part: not negative, finite (22023), nothing written
SELECT pg_temp.error_of($$SELECT subscription.settle_invoice(1, 1, false, NULL, '{}', '{}', -1)$$);
SELECT pg_temp.error_of($$SELECT subscription.settle_invoice(1, 1, false, NULL, '{}', '{}', 'Infinity')$$);
SELECT pg_temp.error_of($$SELECT subscription.settle_invoice(1, 1, false, NULL, '{}', '{}', 'NaN')$$);
RESET track_functions;

-- license_consume reads the same set (src/licenses.c, D2): a past-due
-- subscription assigns; with status_grants() narrowed to active alone (in
-- this transaction) the same call is refused (55000) and writes nothing,
-- through its kept plans: the C code names no status of its own
BEGIN;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'past due, assigns');
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (41, 4, 4, 'ann'), (42, 4, 4, 'bob');
SELECT subscribe(4, 'zd_pro', '1 month', 3, '2026-01-01') AS s4 \gset
SELECT id AS i4 FROM invoice_record WHERE subscription_id = :s4 \gset
SELECT record_payment_failure(:i4, 'card_declined', '2026-01-02');
SELECT status FROM subscription WHERE id = :s4;
SELECT license_consume(:s4, 41) AS left_after_past_due_assign;
\set narrowed 'CREATE OR REPLACE FUNCTION subscription.status_grants(status text) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURN status_grants.status OPERATOR(pg_catalog.=) ''active'''
:narrowed;
-- and on the tenant's node, in this transaction (on Citus its worker,
-- where license_consume runs: Citus does not send the DDL of an
-- extension's function; on a single server the same statement again)
SELECT public.regress_on_node(a.tenant_id, :'narrowed') AS narrowed_on_the_tenants_node
  FROM account AS a WHERE a.tenant_id = 4 AND a.id = 4;
SELECT pg_temp.error_of($$SELECT subscription.license_consume($$ || :s4 || $$, 42)$$);
SELECT count(*) AS licenses FROM license WHERE subscription_id = :s4;
ROLLBACK;
SELECT status_grants('past_due') AS past_due_grants_again;

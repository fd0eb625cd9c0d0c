-- Invoice lines per statement (issue 18): invoice_line assigns each ledger
-- line its invoice (I2), invoice_totals adds a statement's lines to their
-- invoices' totals and settles those whose status changes (I3), and
-- open_invoices opens several invoices of a tenant at once, numbered in
-- the order given (I1); renew_common_group opens its batch's invoices with
-- it.  In a database of its own: the openings are written at the commit (I8).
\set VERBOSITY default
\set regress_db :DBNAME
CREATE DATABASE subscription_invoice_lines;
\c subscription_invoice_lines
SET client_min_messages = warning;
CREATE EXTENSION subscription;
RESET client_min_messages;
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET subscription.max_backdate = '100 years';
SET subscription.max_ahead = '100 years';

INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support'), ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name) VALUES ('zd_team', 'desk', 'Team'), ('ch_starter', 'crowd', 'Starter');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_team', '1 month', 19, true), ('ch_starter', '1 month', 49, false);
INSERT INTO addon (code, product, name) VALUES ('zd_collab', 'desk', 'Collaboration');
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_team', 'zd_collab');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech'), (3, 1, 'Globex Labs');
UPDATE account SET parent_id = 1 WHERE id = 3;
SELECT add_payment_method(2, 'card', 'pm_initech', 'Visa') AS initech_card \gset
SELECT subscribe(1, 'zd_team', '1 month', 2, '2026-01-01') AS a1 \gset
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-01-01') AS a2 \gset
SELECT subscribe(3, 'zd_team', '1 month', 1, '2026-01-01') AS a3 \gset
SELECT subscribe(2, 'zd_team', '1 month', 3, '2026-01-01') AS b1 \gset
SELECT tenant_id, issuer, last_number FROM invoice_series ORDER BY 1, 2;
SELECT max(id) AS last_invoice FROM invoice_record \gset
SELECT max(id) AS last_history FROM history \gset

-- I1, I2, I3: one statement writing the lines of five billing events of
-- two tenants and two issuers, interleaved: each event's lines on one
-- invoice, the numbers consecutive per tenant and issuer in the order of
-- the events' first lines, each total the sum of its lines (a charge
-- adds, a discount takes off), the invoice whose lines come to nothing
-- paid at the statement's end
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (1, :a1, 'charge', 38.00, 'EUR', '[2026-02-01,2026-03-01)', 'setup', 'zd_team', 'one'),
       (2, :b1, 'charge', 57.00, 'EUR', '[2026-02-01,2026-03-01)', 'setup', 'zd_team', 'two'),
       (1, :a2, 'charge', 49.00, 'EUR', '[2026-02-01,2026-03-01)', 'setup', 'ch_starter', 'three'),
       (1, :a1, 'discount', 3.80, 'EUR', '[2026-02-01,2026-03-01)', 'setup', 'zd_team', 'one, off'),
       (3, :a3, 'charge', 19.00, 'EUR', '[2026-02-01,2026-03-01)', 'setup', 'zd_team', 'four'),
       (2, :b1, 'charge', 10.00, 'EUR', '[2026-02-01,2026-03-01)', 'extra', 'zd_team', 'two, more'),
       (1, :a2, 'discount', 49.00, 'EUR', '[2026-02-01,2026-03-01)', 'setup', 'ch_starter', 'three, all off'),
       (1, NULL, 'charge', 5.00, 'EUR', NULL, 'fee', NULL, 'five');
SELECT i.tenant_id, i.account_id, i.subscription_id IS NOT NULL AS of_subscription, i.issuer, i.number, i.total,
       i.status, i.payment_method_id = :initech_card AS default_method,
       array_agg(l.description ORDER BY l.id) AS lines
  FROM invoice_record AS i JOIN ledger AS l ON l.tenant_id = i.tenant_id AND l.invoice_id = i.id
 WHERE i.id > :last_invoice
 GROUP BY i.tenant_id, i.id ORDER BY i.id;
SELECT tenant_id, issuer, last_number FROM invoice_series ORDER BY 1, 2;
-- every total is its lines' sum
SELECT count(*) AS totals_off FROM invoice_record AS i
 WHERE i.total <> (SELECT coalesce(sum(line_amount(l.kind, l.amount)), 0) FROM ledger AS l
                    WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id);
-- I8: one opening each at the commit (a statement outside a transaction
-- block), with its total and lines; the paid one's status after it
SELECT h.operation, h.account_id, h.details ->> 'number' AS number, h.details ->> 'total' AS total,
       h.details ->> 'lines' AS lines, h.details -> 'status' AS status
  FROM history AS h
 WHERE h.id > :last_history AND h.operation IN ('invoice_open', 'invoice_status')
 ORDER BY h.id;
SELECT e.type, count(*) FROM event AS e
 WHERE e.type LIKE 'invoice.%' AND (e.payload ->> 'invoice_id')::bigint > :last_invoice
 GROUP BY e.type ORDER BY e.type;

-- I1: a rolled-back statement leaves no hole: the numbers it took are the
-- next statement's
SELECT max(id) AS last_invoice FROM invoice_record \gset
BEGIN;
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (1, :a1, 'charge', 1.00, 'EUR', '[2026-03-01,2026-04-01)', 'setup', 'zd_team', 'rolled back'),
       (3, :a3, 'charge', 1.00, 'EUR', '[2026-03-01,2026-04-01)', 'setup', 'zd_team', 'rolled back');
SELECT array_agg(number ORDER BY number) AS taken FROM invoice_record WHERE id > :last_invoice;
ROLLBACK;
-- a statement that fails on its last line writes nothing, numbers
-- included (the ledger's check refuses a negative amount)
SELECT pg_temp.error_of(format($$INSERT INTO subscription.ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (1, %s, 'charge', 1.00, 'EUR', '[2026-03-01,2026-04-01)', 'setup', 'zd_team', 'fails'),
       (1, %s, 'charge', -1.00, 'EUR', '[2026-03-01,2026-04-01)', 'setup', 'ch_starter', 'fails')$$, :a1, :a2)) AS refused;
SELECT count(*) AS invoices_left, (SELECT count(*) FROM ledger WHERE description IN ('rolled back', 'fails')) AS lines_left
  FROM invoice_record WHERE id > :last_invoice;
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (3, :a3, 'charge', 2.00, 'EUR', '[2026-03-01,2026-04-01)', 'setup', 'zd_team', 'kept'),
       (1, :a1, 'charge', 2.00, 'EUR', '[2026-03-01,2026-04-01)', 'setup', 'zd_team', 'kept');
SELECT account_id, issuer, number, total FROM invoice_record WHERE id > :last_invoice ORDER BY id;

-- I2: a writer naming the invoice: its lines join it, the total follows
SELECT max(id) AS kept FROM invoice_record WHERE account_id = 1 \gset
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description, invoice_id)
VALUES (1, :a1, 'charge', 3.00, 'EUR', '[2026-03-01,2026-04-01)', 'named', 'zd_team', 'named', :kept);
SELECT total, (SELECT count(*) FROM ledger WHERE invoice_id = :kept) AS lines FROM invoice_record WHERE id = :kept;

-- I1: open_invoices: invoices of one tenant numbered per issuer in the
-- order given, one series update per issuer; its bad input
SELECT max(id) AS last_invoice FROM invoice_record \gset
BEGIN;
SELECT cardinality(open_invoices(1, '{1,3,1,1}', ARRAY[:a1, :a3, :a2, NULL]::bigint[], '{EUR,EUR,EUR,EUR}',
                                 '{2026-05-01,2026-05-01,2026-05-01,2026-05-01}', '{zd_team,NULL,NULL,NULL}', NULL)) AS opened;
SELECT account_id, issuer, number, at, due_at FROM invoice_record WHERE id > :last_invoice ORDER BY id;
ROLLBACK;
SELECT pg_temp.error_of($$SELECT subscription.open_invoices(1, '{1,3}', NULL, '{EUR}', '{2026-05-01,2026-05-01}', NULL, NULL)$$) AS lengths;
SELECT pg_temp.error_of($$SELECT subscription.open_invoices(NULL, '{1}', NULL, '{EUR}', '{2026-05-01}', NULL, NULL)$$) AS no_tenant;
SELECT pg_temp.error_of($$SELECT subscription.open_invoices(1, '{2}', NULL, '{EUR}', '{2026-05-01}', NULL, NULL)$$) AS other_tenants_account;
-- open_invoice, called directly, checks its arguments first
SELECT pg_temp.error_of($$SELECT subscription.open_invoice(1, 2, NULL, 'EUR', '2026-05-01', NULL, NULL)$$) AS open_invoice_checks;
SELECT open_invoices(1, '{}', NULL, '{}', '{}', NULL, NULL) AS none;
SELECT count(*) AS invoices_written FROM invoice_record WHERE id > :last_invoice;

-- renew_common_group: the batch's invoices opened set-based per tenant,
-- numbered in renewal order, each subscription's plan and add-on lines on
-- its invoice; a subscription with an invoice this transaction opened for
-- the period's start (a setup line written first) has its renewal's lines
-- on it
SELECT count(*) FROM purchase_addon(:a1, 'zd_collab', 1, '2026-01-10');
SELECT max(id) AS last_invoice FROM invoice_record \gset
BEGIN;
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (3, :a3, 'charge', 7.00, 'EUR', '[2026-02-01,2026-03-01)', 'onboarding', 'zd_team', 'before the renewal');
SELECT renew_due('2026-02-01') AS renewed;
SELECT i.tenant_id, i.account_id, i.issuer, i.number, i.total, array_agg(l.item ORDER BY l.id) AS items
  FROM invoice_record AS i JOIN ledger AS l ON l.tenant_id = i.tenant_id AND l.invoice_id = i.id
 WHERE i.id > :last_invoice
 GROUP BY i.tenant_id, i.id ORDER BY i.id;
SELECT count(*) AS totals_off FROM invoice_record AS i
 WHERE i.id > :last_invoice
   AND i.total <> (SELECT sum(line_amount(l.kind, l.amount)) FROM ledger AS l
                    WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id);
COMMIT;
SELECT e.payload ->> 'number' AS number, e.payload ->> 'total' AS total, e.payload ->> 'lines' AS lines
  FROM event AS e
 WHERE e.type = 'invoice.opened' AND (e.payload ->> 'invoice_id')::bigint > :last_invoice
 ORDER BY e.id;

-- I1 (issue 18): open_invoices_of opens the invoices of several tenants
-- in one call: each tenant's series moved once per issuer, the invoices
-- numbered in the order given within their series, each with its
-- account's default method; an invoice without its tenant, or arrays of
-- other lengths: refused, nothing written
SELECT max(id) AS last_invoice FROM invoice_record \gset
BEGIN;
SELECT cardinality(open_invoices_of('{2,1,2,1}', '{2,1,2,1}', ARRAY[:b1, :a1, NULL, :a2]::bigint[], '{EUR,EUR,EUR,EUR}',
                                    '{2026-06-01,2026-06-01,2026-06-01,2026-06-01}', '{NULL,NULL,zd_team,NULL}', NULL))
       AS opened;
SELECT tenant_id, account_id, issuer, number, payment_method_id IS NOT DISTINCT FROM :initech_card AS initech_card
  FROM invoice_record WHERE id > :last_invoice ORDER BY id;
SELECT tenant_id, issuer, last_number FROM invoice_series ORDER BY 1, 2;
ROLLBACK;
SELECT pg_temp.error_of($$SELECT subscription.open_invoices_of('{1,NULL}', '{1,2}', NULL, '{EUR,EUR}', '{2026-05-01,2026-05-01}', NULL, NULL)$$) AS tenant_missing;
SELECT pg_temp.error_of($$SELECT subscription.open_invoices_of('{1}', '{1,3}', NULL, '{EUR,EUR}', '{2026-05-01,2026-05-01}', NULL, NULL)$$) AS lengths;
SELECT pg_temp.error_of($$SELECT subscription.open_invoices_of(NULL, '{1}', NULL, '{EUR}', '{2026-05-01}', NULL, NULL)$$) AS no_tenants;
SELECT count(*) AS invoices_written FROM invoice_record WHERE id > :last_invoice;

-- Z10, L10 (issue 18): one statement's charges of two tenants with
-- coupons: reduce_charge writes each charge's discount then its credit
-- in the order of the charges (one INSERT), uses a period of each coupon
-- once (one UPDATE), its history rows in the order of the charges; the
-- invoices' totals follow (invoice_totals over both tenants)
INSERT INTO coupon (code, percent_off, currency, cycles) VALUES ('HALF', 50, 'EUR', 2);
SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'HALF') AS c2,
       subscribe(1, 'zd_team', '1 month', 1, '2026-01-01', 'always', 'HALF') AS c1 \gset
SELECT count(*) FROM credit_account(2, 4.00, 'goodwill');
SELECT max(id) AS last_line FROM ledger \gset
SELECT max(id) AS last_history FROM history \gset
BEGIN;
INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
VALUES (2, :c2, 'charge', 19.00, 'EUR', '[2026-07-01,2026-08-01)', 'plan', 'zd_team', 'c2'),
       (1, :c1, 'charge', 19.00, 'EUR', '[2026-07-01,2026-08-01)', 'plan', 'zd_team', 'c1');
SELECT l.subscription_id = :c2 AS is_c2, l.kind, l.amount, l.charge_id - :last_line AS charge
  FROM ledger AS l WHERE l.id > :last_line ORDER BY l.id;
SELECT id = :c2 AS is_c2, coupon_periods_left FROM subscription WHERE id IN (:c1, :c2) ORDER BY id;
SELECT h.subscription_id = :c2 AS is_c2, h.details -> 'coupon_periods_left' AS periods_left
  FROM history AS h WHERE h.id > :last_history AND h.details ? 'coupon_periods_left' ORDER BY h.id;
SELECT i.account_id, i.total FROM invoice_record AS i
 WHERE i.id IN (SELECT l.invoice_id FROM ledger AS l WHERE l.id > :last_line) ORDER BY i.id;
ROLLBACK;

-- I2: a line's account is its invoice's, held by its one key to the
-- invoice (issue 18: no key of its own to the account); a line naming an
-- invoice of another account is refused, as is a line of an unknown
-- account (its invoice's key refuses it) or currency, and nothing is
-- written
SELECT pg_temp.error_of(format($$INSERT INTO subscription.ledger (account_id, subscription_id, kind, amount, currency, period, item, plan, description, invoice_id)
VALUES (3, %s, 'charge', 3.00, 'EUR', '[2026-03-01,2026-04-01)', 'other account', 'zd_team', 'other account', %s)$$, :a3, :kept)) AS other_account;
SELECT pg_temp.error_of($$INSERT INTO subscription.ledger (tenant_id, account_id, kind, amount, currency, item, description)
VALUES (1, 99, 'credit', 3.00, 'EUR', 'credit', 'unknown account')$$) AS unknown_account;
SELECT pg_temp.error_of($$INSERT INTO subscription.ledger (account_id, kind, amount, currency, item, description)
VALUES (1, 'credit', 3.00, 'XTS', 'credit', 'unknown currency')$$) AS unknown_currency;
SELECT count(*) AS refused_lines_written FROM ledger WHERE description IN ('other account', 'unknown account', 'unknown currency');
-- a currency's new code reaches its invoices and their lines
BEGIN;
INSERT INTO currency (code, exponent) VALUES ('XTS', 2);
INSERT INTO ledger (account_id, kind, amount, currency, item, description)
VALUES (2, 'credit', 3.00, 'XTS', 'credit', 'in XTS');
UPDATE currency SET code = 'XTT' WHERE code = 'XTS';
SELECT l.currency AS line_currency, i.currency AS invoice_currency
  FROM ledger AS l JOIN invoice_record AS i ON i.tenant_id = l.tenant_id AND i.id = l.invoice_id
 WHERE l.description = 'in XTS';
ROLLBACK;

-- I2, I3 (issue 18): invoice_totals reads the lines of the invoices its
-- transaction opened by their key, whatever the planner's costs say: in a
-- new session (no plan of it cached) whose costs make a sequential scan
-- look free, a line's statement reads the ledger by index alone
\c subscription_invoice_lines
SET search_path = subscription, public;
BEGIN;
SET LOCAL seq_page_cost = 0;
SET LOCAL cpu_tuple_cost = 0;
SET LOCAL random_page_cost = 1000000;
INSERT INTO ledger (account_id, kind, amount, currency, item, description)
VALUES (2, 'credit', 1.00, 'EUR', 'credit', 'read by key');
SELECT seq_scan AS ledger_seq_scans, idx_scan > 0 AS ledger_by_index
  FROM pg_stat_xact_user_tables WHERE relid = 'subscription.ledger'::regclass;
SELECT i.total FROM invoice_record AS i JOIN ledger AS l ON l.tenant_id = i.tenant_id AND l.invoice_id = i.id
 WHERE l.description = 'read by key';
ROLLBACK;

\c :regress_db
DROP DATABASE subscription_invoice_lines;

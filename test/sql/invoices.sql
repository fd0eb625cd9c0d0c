-- Invoices and payments (issue 19, I1-I7): an invoice per billing event,
-- numbered per issuer; the documents; payments partial, over, duplicate
-- and in another currency; voiding; failures; payment methods; bad input.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
-- (on Citus the invoices, payments and some ledger lines are written on the
-- tenant's shard, numbered from the worker's range: there too from its
-- start, test/expected_citus)
\set worker_id_tables 'invoice_record payment payment_method ledger'
\i test/sql/include/worker_ids.psql
BEGIN;
-- on Citus the workers' parts of the transaction take its SET LOCALs too:
-- the payment terms
SET LOCAL citus.propagate_set_commands = 'local';
SET LOCAL subscription.payment_terms = 14;
-- I8: the case runs in one transaction: each invoice's opening (and the
-- status it reached) is written at the end of its statement, not at the commit
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
SELECT count(setval(pg_get_serial_sequence('subscription.' || t, 'id'), 1, false)) AS ids_from_1
  FROM unnest('{invoice_record,payment,payment_method}'::text[]) AS t;

INSERT INTO product (code, name, upgrade, downgrade) VALUES
    ('crowd', 'CrowdHandler', 'restart', 'end_of_period'),
    ('desk', 'Zendesk Support', 'prorate', 'immediate');
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter', 'crowd', 'Starter', 1), ('ch_standard', 'crowd', 'Standard', 2),
    ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('ch_starter', '1 month', 49, false), ('ch_standard', '1 month', 99, false),
    ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 49, true);
INSERT INTO plan_price (plan, cycle, amount, per_license, currency) VALUES ('zd_team', '1 year', 2000, true, 'JPY');
INSERT INTO coupon (code, percent_off, cycles) VALUES ('WELCOME10', 10, 3);
INSERT INTO account (tenant_id, id, name) VALUES (1, 1, 'Tickets Ltd'), (2, 2, 'Queue & Co <Ltd>'), (3, 3, 'Yen KK');

-- I7: payment methods: the provider's token; a card number is refused
-- (23514), in the reference or the label, spaced or not; one default
SELECT add_payment_method(1, 'card', 'pm_1Nvisa', 'Visa ending 4242') AS visa \gset
SELECT add_payment_method(1, 'paypal', 'BA-7781', 'billing@tickets', false) AS paypal;
SELECT pg_temp.error_of($$SELECT subscription.add_payment_method(1, 'card', '4242424242424242')$$) AS card_number;
SELECT pg_temp.error_of($$SELECT subscription.add_payment_method(1, 'card', 'tok', 'Visa 4111 1111 1111 1111')$$) AS card_in_label;
SELECT has_card_number('4242424242424241') AS not_luhn, has_card_number('order 123456789012') AS too_short,
       has_card_number('5555-5555-5555-4444') AS mastercard;
SELECT pg_temp.error_of($$INSERT INTO subscription.payment_method (tenant_id, account_id, kind, reference) VALUES (1, 1, 'card', '378282246310005')$$) AS by_insert;
SELECT pg_temp.error_of($$UPDATE subscription.payment_method SET is_default = true WHERE account_id = 1$$) AS two_defaults;
SELECT add_payment_method(2, 'transfer', 'IBAN DE** 1234', NULL) AS transfer \gset
SELECT add_payment_method(2, 'card', 'pm_2mc', 'Mastercard 4444') AS mc \gset
SELECT id, account_id, kind, is_default FROM payment_method ORDER BY id;

-- I1, I2: a Zendesk subscription (5 agents, 10% coupon) and its renewal:
-- one invoice per billing event, each line on one invoice, numbered per
-- issuer 1, 2, due 14 days after (payment_terms), the default method
SELECT subscribe(1, 'zd_team', '1 month', 5, '2026-01-01', coupon => 'WELCOME10') AS zd \gset
SELECT renew_due('2026-02-01');
-- I1: CrowdHandler Starter, then an upgrade to Standard on March 11 (C1):
-- its own series, numbers 1 and 2
SELECT subscribe(2, 'ch_starter', '1 month', 1, '2026-03-01') AS ch \gset
SELECT * FROM change_plan(:ch, 'ch_standard', '2026-03-11');
SELECT id, account_id, issuer, number, document_number, at, due_at, currency, total, paid, status,
       payment_method_id, corrects_invoice_id
  FROM invoice_record ORDER BY id;
SELECT l.id, l.invoice_id, l.kind, l.amount, l.plan, l.corrects_invoice_id FROM ledger AS l ORDER BY l.id;
SELECT count(*) AS lines_without_invoice FROM ledger WHERE invoice_id IS NULL;
-- C3: the view keeps 1.0's columns, one row per invoice
SELECT subscription_id, at, plan, charged, refunded, credited, balance, document_number, status FROM invoice ORDER BY id;

-- I3: the documents: the Zendesk renewal (5 x 19 = 95, coupon 9.50, due
-- 85.50) and the CrowdHandler upgrade (Standard 99, Starter's 21 of 31
-- days given back: 33.19, balance 65.81), as text and as a page
SELECT id AS zd_renewal FROM invoice_record WHERE subscription_id = :zd ORDER BY id DESC LIMIT 1 \gset
SELECT id AS ch_upgrade FROM invoice_record WHERE subscription_id = :ch ORDER BY id DESC LIMIT 1 \gset
SELECT invoice_document(:zd_renewal, 'text');
SELECT invoice_document(:ch_upgrade, 'text');
SELECT invoice_document(:ch_upgrade, 'html') LIKE '<!DOCTYPE html>%' AS is_a_page,
       invoice_document(:ch_upgrade) LIKE '%<td class="amount">99.00 EUR</td>%' AS charge,
       invoice_document(:ch_upgrade) LIKE '%<td class="amount">-33.19 EUR</td>%' AS refund,
       invoice_document(:ch_upgrade) LIKE '%<dd>Queue &amp; Co &lt;Ltd&gt;</dd>%' AS escaped,
       invoice_document(:ch_upgrade) LIKE '%<td class="amount">65.81 EUR</td>%' AS total,
       invoice_document(:zd_renewal) LIKE '%>-9.50 EUR<%' AS coupon;

-- I4: partial payments add up; the full amount makes it paid
SELECT record_payment(:zd_renewal, 50, 'ch_001', '2026-02-03') AS p1 \gset
SELECT status, paid, total - paid AS due FROM invoice_record WHERE id = :zd_renewal;
SELECT record_payment(:zd_renewal, 35.50, 'ch_002', '2026-02-05', 'EUR') AS p2 \gset
SELECT status, paid FROM invoice_record WHERE id = :zd_renewal;
-- I5: the same reference again: the first payment's id, nothing changes
SELECT record_payment(:zd_renewal, 35.50, 'ch_002', '2026-02-06') = :p2 AS same_payment;
SELECT count(*) AS payments, sum(amount) FROM payment WHERE invoice_id = :zd_renewal;
-- ... but not for another invoice
SELECT pg_temp.error_of(format('SELECT subscription.record_payment(%s, 1, %L)', :zd_renewal - 1, 'ch_002')) AS reused_reference;
-- I4: another currency is refused (22023)
SELECT pg_temp.error_of(format('SELECT subscription.record_payment(%s, 65.81, %L, %L, %L)', :ch_upgrade, 'x1', '2026-03-12', 'USD')) AS other_currency;
-- I4, L9: an overpayment: 65.81 due, 100 paid, 34.19 becomes credit (a
-- credit line correcting the invoice, on its own credit note)
SELECT record_payment(:ch_upgrade, 100, 'pp_9', '2026-03-12') AS p3 \gset
SELECT status, paid FROM invoice_record WHERE id = :ch_upgrade;
SELECT credit_balance(2) AS credit;
SELECT l.kind, l.amount, l.corrects_invoice_id = :ch_upgrade AS corrects_it, i.issuer, i.document_number, i.total, i.status
  FROM payment AS p JOIN ledger AS l ON l.tenant_id = p.tenant_id AND l.id = p.credit_line_id
  JOIN invoice_record AS i ON i.tenant_id = l.tenant_id AND i.id = l.invoice_id
 WHERE p.id = :p3;
-- I6: receipts, with the method the invoice was to be charged by
SELECT payment_id, document_number, amount, reference, payment_method, payment_method_label, credited, status
  FROM receipt ORDER BY payment_id;
SELECT receipt_document(:p3, 'text');
-- I3: void an open invoice: a correcting invoice gives back each charge
-- net of its coupon; nothing deleted.  The Zendesk March renewal: 85.50
SELECT renew_due('2026-03-01');
SELECT id AS zd_march FROM invoice_record WHERE subscription_id = :zd ORDER BY id DESC LIMIT 1 \gset
-- (the lines written before, by id: on Citus a worker numbers the lines it
-- writes from its own range, not after the coordinator's)
SELECT count(*) AS lines_before, array_agg(id) AS ids_before FROM ledger \gset
SELECT void_invoice(:zd_march, 'agents were never activated', '2026-03-02') AS correction \gset
SELECT id = :zd_march AS voided, status, total, void_reason, corrects_invoice_id FROM invoice_record
 WHERE id IN (:zd_march, :correction) ORDER BY id;
SELECT kind, amount, corrects_invoice_id = :zd_march AS corrects, invoice_id = :correction AS on_the_note
  FROM ledger WHERE id <> ALL (:'ids_before'::bigint[]);
SELECT count(*) - :lines_before AS lines_added FROM ledger;
SELECT pg_temp.error_of(format('SELECT subscription.void_invoice(%s, %L)', :zd_march, 'again')) AS void_twice;
SELECT pg_temp.error_of(format('SELECT subscription.void_invoice(%s, %L)', :zd_renewal, 'mistake')) AS void_paid;
SELECT pg_temp.error_of(format('SELECT subscription.record_payment(%s, 1, %L)', :zd_march, 'late')) AS pay_void;
SELECT invoice_document(:correction, 'text');

-- the next CrowdHandler charge takes the credit (L9): April renewal 99 - 34.19;
-- Zendesk renews for April too (95: the coupon's 3 periods are used)
SELECT renew_due('2026-04-11');
SELECT document_number, total, status FROM invoice_record WHERE subscription_id = :ch ORDER BY id DESC LIMIT 1;

-- I6: a failed charge: history and the event payment.failed
SELECT id AS zd_april FROM invoice_record WHERE subscription_id = :zd ORDER BY id DESC LIMIT 1 \gset
SELECT record_payment_failure(:zd_april, 'card_declined', '2026-04-02');
SELECT operation, details ->> 'reason' AS reason, details ->> 'due' AS due FROM history WHERE operation = 'payment_failure';
SELECT type, payload ->> 'reason' AS reason FROM event WHERE type = 'payment.failed';
SELECT pg_temp.error_of(format('SELECT subscription.record_payment_failure(%s, %L)', :zd_renewal, 'declined')) AS failure_of_paid;
-- I6: the open balance, invoice by invoice
SELECT account_id, document_number, due_at, total, paid, due, balance FROM open_balance ORDER BY account_id, due_at;
-- E1: the invoices' and payments' events
SELECT type, count(*) FROM event WHERE type ~ '^(invoice|payment)\.' GROUP BY type ORDER BY type;

-- a currency of no minor unit: JPY amounts are whole yen
SELECT subscribe(3, 'zd_team', '1 year', 2, '2026-01-01') AS yen \gset
SELECT id AS yen_invoice, total FROM invoice_record WHERE subscription_id = :yen \gset
SELECT :total AS yen_total, pg_temp.error_of(format('SELECT subscription.record_payment(%s, 10.5, %L)', :yen_invoice, 'jp1')) AS half_yen;

-- bad input: SQLSTATE, and nothing written
SELECT count(*) AS payments_before FROM payment \gset
SELECT count(*) AS history_before FROM history \gset
SELECT s.statement, pg_temp.error_of(s.statement) AS error
  FROM (VALUES
    ('SELECT subscription.record_payment(NULL, 1, ''r'')'),
    (format('SELECT subscription.record_payment(%s, NULL, ''r'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, 1, NULL)', :zd_april)),
    ('SELECT subscription.record_payment(999999, 1, ''r'')'),
    (format('SELECT subscription.record_payment(%s, -5, ''r'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, 0, ''r'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, ''NaN'', ''r'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, ''Infinity'', ''r'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, 1.005, ''r'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, 1, '' '')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, 1, ''r'', ''infinity'')', :zd_april)),
    (format('SELECT subscription.record_payment(%s, %s, 1, ''r'', now(), NULL)', 2, :zd_april)),
    ('SELECT subscription.record_payment_failure(NULL, ''x'')'),
    (format('SELECT subscription.record_payment_failure(%s, NULL)', :zd_april)),
    ('SELECT subscription.record_payment_failure(999999, ''x'')'),
    ('SELECT subscription.void_invoice(NULL, ''x'')'),
    (format('SELECT subscription.void_invoice(%s, ''x'', NULL)', :zd_april)),
    (format('SELECT subscription.void_invoice(%s, ''x'', ''-infinity'')', :zd_april)),
    (format('SELECT subscription.void_invoice(%s, NULL)', :zd_april)),
    (format('SELECT subscription.void_invoice(%s, '''')', :zd_april)),
    ('SELECT subscription.void_invoice(999999, ''x'')'),
    ('SELECT subscription.invoice_document(NULL)'),
    ('SELECT subscription.invoice_document(999999)'),
    (format('SELECT subscription.invoice_document(%s, ''pdf'')', :zd_april)),
    ('SELECT subscription.receipt_document(999999)'),
    (format('SELECT subscription.receipt_document(%s, NULL)', :p1)),
    ('SELECT subscription.add_payment_method(NULL, ''card'', ''t'')'),
    ('SELECT subscription.add_payment_method(999999, ''card'', ''t'')'),
    ('SELECT subscription.add_payment_method(1, ''Card!'', ''t'')'),
    ('SELECT subscription.add_payment_method(1, ''card'', NULL)'),
    ('SELECT subscription.add_payment_method(2, 1, ''card'', ''t'', NULL, true)')
  ) AS s (statement);
SELECT (SELECT count(*) FROM payment) - :payments_before AS payments_written,
       (SELECT count(*) FROM history) - :history_before AS history_written;
SELECT status, paid FROM invoice_record WHERE id = :zd_april;

-- keyed forms: the tenant first; another tenant's invoice is refused (22023)
SELECT record_payment(1, :zd_april, 95.00, 'keyed_1', '2026-04-03', NULL) IS NOT NULL AS keyed_payment;
SELECT status FROM invoice_record WHERE id = :zd_april;
SELECT pg_temp.error_of(format('SELECT subscription.void_invoice(2, %s, %L, now())', :zd_april, 'x')) AS other_tenant;

-- I1: a rolled-back invoice leaves no hole: the next one takes its number
SAVEPOINT before_renewal;
SELECT renew_due('2026-05-01') > 0 AS renewed;
SELECT max(number) AS desk_number FROM invoice_record WHERE issuer = 'desk' AND tenant_id = 1;
ROLLBACK TO before_renewal;
SELECT renew_due('2026-05-01') > 0 AS renewed;
SELECT array_agg(number ORDER BY number) AS desk_numbers FROM invoice_record WHERE issuer = 'desk' AND tenant_id = 1;

ROLLBACK;

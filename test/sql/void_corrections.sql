-- void_invoice on invoices that used credit or carry refunds (issue 19,
-- item 3 leftover; I3, L9): each charge is given back net of what was
-- taken off it, the credit the invoice used and what it gave back of
-- earlier charges return to the account as credit, exact amounts; no
-- line deleted or changed.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name, upgrade) VALUES ('crowd', 'CrowdHandler', 'restart');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_starter', 'crowd', 'Starter', 1), ('ch_standard', 'crowd', 'Standard', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49), ('ch_standard', '1 month', 99);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Queue Ltd'), (2, 2, 'Queue Two');
SELECT (SELECT count(*) FROM ledger) AS lines_before \gset

-- credit used: 20.00 of credit pays part of the 49.00 charge; the invoice asks 29.00
SELECT credit_account(1, 20, 'goodwill', 'EUR') IS NOT NULL AS credited;
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-03-01') AS s1 \gset
SELECT id AS inv1, total FROM invoice_record WHERE subscription_id = :s1 \gset
SELECT :'total' AS asked, credit_balance(1) AS credit_left;
-- voided: 29.00 given back on the charge, the 20.00 of credit returned
SELECT void_invoice(:inv1, 'sold by mistake', '2026-03-02') AS note1 \gset
SELECT kind, amount, charge_id IS NOT NULL AS names_charge, corrects_invoice_id = :inv1 AS corrects, description
  FROM ledger WHERE invoice_id = :note1 ORDER BY id;
SELECT id = :inv1 AS voided, status, total FROM invoice_record WHERE id IN (:inv1, :note1) ORDER BY id <> :inv1;
SELECT credit_balance(1) AS credit_after;

-- refunds on the invoice: the upgrade of March 11th gives back 33.19 of
-- the first invoice's charge on its own invoice (99.00 - 33.19 = 65.81);
-- voided: the 99.00 charge given back, the 33.19 kept by the account as credit
SELECT subscribe(2, 'ch_starter', '1 month', 1, '2026-03-01') AS s2 \gset
SELECT id AS inv2 FROM invoice_record WHERE subscription_id = :s2 \gset
SELECT refund, charge FROM change_plan(:s2, 'ch_standard', '2026-03-11');
SELECT id AS inv3, total FROM invoice_record WHERE subscription_id = :s2 AND id <> :inv2 \gset
SELECT :'total' AS upgrade_total;
SELECT void_invoice(:inv3, 'upgrade reverted', '2026-03-12') AS note3 \gset
SELECT kind, amount, charge_id IS NOT NULL AS names_charge, description FROM ledger WHERE invoice_id = :note3 ORDER BY id;
SELECT total, status FROM invoice_record WHERE id = :note3;
SELECT credit_balance(2) AS credit_after;
-- the first invoice, its charge partly given back already (33.19 by the
-- upgrade): only the rest, 15.81, is given back, by a line that cannot
-- name the charge again (one refund per charge)
SELECT void_invoice(:inv2, 'never used', '2026-03-12') AS note2 \gset
-- (the charge's id printed as N: on Citus a delegated call numbers from its worker's range)
SELECT id AS charge2 FROM ledger WHERE invoice_id = :inv2 AND kind = 'charge' \gset
SELECT kind, amount, charge_id IS NOT NULL AS names_charge, regexp_replace(description, 'charge \d+', 'charge N') AS description,
       substring(description FROM 'charge (\d+)')::bigint = :charge2 AS its_charge
  FROM ledger WHERE invoice_id = :note2 ORDER BY id;
SELECT status FROM invoice_record WHERE id IN (:inv2, :inv3) ORDER BY id;
-- nothing deleted or changed: every line before is still there
SELECT count(*) - :lines_before AS lines_written FROM ledger;

ROLLBACK;

-- S12 (issue 20's review): the back office executed every function but the
-- grants and the history writer, so it could call the internal invoice
-- writers that the extension's own functions call as its owner:
-- settle_invoice(..., paid_now) marked an invoice paid with no payment row,
-- open_invoices_of(..., totals) opened an invoice with a total and no lines.
-- 1.1: open_invoice, open_invoices, open_invoices_of and settle_invoice are
-- the extension owner's alone (role_rights); money moves through
-- record_payment and the other public functions, which still work.
BEGIN;
SELECT plan(8);
SELECT security_test.fixture();
SELECT security_test.sub_of(1) AS s1 \gset
SELECT i.id AS inv, i.tenant_id AS inv_tenant, i.total AS inv_total FROM subscription.invoice_record AS i
 WHERE i.subscription_id = :s1 ORDER BY i.id LIMIT 1 \gset
CREATE TEMP TABLE s12_invoices_before ON COMMIT DROP AS SELECT * FROM subscription.invoice_record;
GRANT SELECT ON s12_invoices_before TO backoffice;

SET ROLE backoffice;
SELECT is(security_test.sqlstate_of(format('SELECT subscription.settle_invoice(%s, %s, true, subscription.now(), NULL, NULL, %s)',
                                           :inv_tenant, :inv, :inv_total)),
          '42501', 'S12: the back office does not mark an invoice paid without a payment (settle_invoice)');
SELECT is(security_test.sqlstate_of(format($$SELECT subscription.open_invoices_of(ARRAY[%s]::bigint[], ARRAY[1]::bigint[], ARRAY[%s]::bigint[],
                                              '{EUR}', ARRAY[subscription.now()], '{x}', NULL, '{1000}')$$, :inv_tenant, :s1)),
          '42501', 'S12: the back office does not open an invoice with a total and no lines (open_invoices_of)');
SELECT is(security_test.sqlstate_of(format($$SELECT subscription.open_invoices(%s, ARRAY[1]::bigint[], ARRAY[%s]::bigint[],
                                              '{EUR}', ARRAY[subscription.now()], '{x}', NULL)$$, :inv_tenant, :s1)),
          '42501', 'S12: nor through open_invoices');
SELECT is(security_test.sqlstate_of(format($$SELECT subscription.open_invoice(%s, 1, %s, 'EUR', subscription.now(), 'x', NULL, false)$$,
                                           :inv_tenant, :s1)),
          '42501', 'S12: nor through open_invoice');
-- nothing was written
SELECT is((SELECT count(*) FROM subscription.invoice_record AS i
            WHERE NOT EXISTS (SELECT FROM s12_invoices_before AS b
                               WHERE b.id = i.id AND (b.status, b.paid, b.total) IS NOT DISTINCT FROM (i.status, i.paid, i.total))),
          0::bigint, 'S12: no invoice opened or changed');
-- the public way still works for the back office
SELECT ok(subscription.record_payment(:inv, :inv_total, 's12-wire', subscription.now()) IS NOT NULL,
          'S12: the back office records a payment through record_payment');
RESET ROLE;
SELECT is((SELECT status FROM subscription.invoice_record WHERE id = :inv), 'paid', 'S12: record_payment settled the invoice');
SELECT is((SELECT string_agg(p.proname, ',' ORDER BY p.proname) FROM pg_proc AS p
            WHERE p.pronamespace = 'subscription'::regnamespace
              AND p.proname IN ('open_invoice', 'open_invoices', 'open_invoices_of', 'settle_invoice')
              AND (has_function_privilege('backoffice', p.oid, 'EXECUTE') OR has_function_privilege('app', p.oid, 'EXECUTE'))),
          NULL, 'S12: neither the back office nor the application executes an internal invoice writer');

SELECT * FROM finish();
ROLLBACK;

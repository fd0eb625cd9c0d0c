-- S5: the mutating functions ran with the caller's rights, so the
-- application needed raw UPDATE on subscription and license_counter and
-- INSERT on ledger, and with exactly those grants minted credit and seats.
-- 1.1: the functions are SECURITY DEFINER; the application role has no DML
-- on money, seats, counters, the archive or history, and no credit_account.
BEGIN;
SELECT plan(6);
SELECT security_test.fixture();
SELECT security_test.sub_of(1) AS s1 \gset

SELECT is((SELECT string_agg(t || ':' || p, ', ' ORDER BY t, p)
             FROM unnest('{subscription,license,ledger,license_counter,usage_counter,service_seat,trimmed,history,addon_batch,limited_table,granted_role}'::text[]) AS t,
                  unnest('{INSERT,UPDATE,DELETE,TRUNCATE}'::text[]) AS p
            WHERE has_table_privilege('app', 'subscription.' || t, p)),
          NULL, 'S5: the application may not write money, seats, counters, the archive or history');

SET ROLE app;
SET LOCAL subscription.actor = '11';
SELECT is(security_test.sqlstate_of('INSERT INTO subscription.ledger (account_id, kind, amount, currency, description)
                                     VALUES (1, ''credit'', 1000000, ''EUR'', ''free money'')'),
          '42501', 'S5: no credit written straight into the ledger');
SELECT is(security_test.sqlstate_of('SELECT subscription.credit_account(1, 1000000, ''free money'')'),
          '42501', 'S5: credit is the back office''s to give, even to an account owner');
SELECT is(security_test.sqlstate_of(format('UPDATE subscription.license_counter SET capacity = 100000 WHERE subscription_id = %s', :s1)),
          '42501', 'S5: no free seats by raising a counter');
SELECT is(security_test.sqlstate_of(format('UPDATE subscription.subscription SET quantity = 100000 WHERE id = %s', :s1)),
          '42501', 'S5: no free seats by raising a quantity');
-- the functions still work for the application, as the extension's owner
SELECT is(subscription.license_consume(:s1, 13), 2, 'S5: the application assigns a license through the function');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

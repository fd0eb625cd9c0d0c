-- S7: licenses_left, credit_balance, usage, effective_limit and the views
-- returned other accounts' data whatever the actor.
-- 1.1: the reads check authorize(account, 'read'); the views show the rows
-- of the accounts the actor may read, and nothing without an actor.
BEGIN;
SELECT plan(12);
SELECT security_test.fixture();
SELECT security_test.sub_of(1) AS s1, security_test.sub_of(2) AS s2 \gset

SET ROLE app;
SET LOCAL subscription.actor = '11';   -- the owner of account 1
SELECT is(security_test.sqlstate_of(format('SELECT subscription.licenses_left(%s)', :s2)), '42501',
          'S7: licenses_left of another account is refused');
SELECT is(security_test.sqlstate_of('SELECT subscription.credit_balance(2)'), '42501',
          'S7: credit_balance of another account is refused');
SELECT is(security_test.sqlstate_of('SELECT subscription.usage(2, ''widgets'')'), '42501',
          'S7: usage of another account is refused');
SELECT is(security_test.sqlstate_of('SELECT subscription.effective_limit(2, ''widgets'')'), '42501',
          'S7: effective_limit of another account is refused');
SELECT is(subscription.credit_balance(1), 5.00, 'S7: the own account''s credit is read');
SELECT is(security_test.rows_seen('SELECT * FROM subscription.invoice WHERE account_id = 2'), 0::bigint,
          'S7: invoice shows no other account');
SELECT ok(security_test.rows_seen('SELECT * FROM subscription.invoice WHERE account_id = 1') > 0,
          'S7: invoice shows the own account');
SELECT is(security_test.rows_seen('SELECT * FROM subscription.license_holder WHERE account_id = 2'), 0::bigint,
          'S7: license_holder shows no other account');
SELECT is(security_test.rows_seen('SELECT * FROM subscription.credit_statement WHERE account_id = 2'), 0::bigint,
          'S7: credit_statement shows no other account');
SET LOCAL subscription.actor = '13';   -- a plain member of account 1
SELECT is(security_test.rows_seen('SELECT * FROM subscription.invoice'), 0::bigint,
          'S7: a plain member reads no invoice');
SET LOCAL subscription.actor = '';
SELECT is(security_test.rows_seen('SELECT * FROM subscription.license_holder'), 0::bigint,
          'S7: the application without an actor sees nothing');
RESET ROLE;
SET ROLE backoffice;
SELECT is(security_test.rows_seen('SELECT * FROM subscription.license_holder'), 3::bigint,
          'S7: the back office sees every account');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

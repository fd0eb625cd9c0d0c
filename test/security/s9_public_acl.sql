-- S9: PUBLIC could execute internal helpers and trigger functions, one of
-- them SECURITY DEFINER.
-- 1.1: PUBLIC executes nothing and reads nothing (test/sql/acl.sql pins the
-- rights of every object for each kind of role).
BEGIN;
SELECT plan(3);
SELECT is((SELECT string_agg(p.oid::regprocedure::text, ', ') FROM pg_proc AS p
            WHERE p.pronamespace = 'subscription'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')),
          NULL, 'S9: PUBLIC may execute no function of the extension');
SELECT is((SELECT string_agg(c.relname, ', ') FROM pg_class AS c
            WHERE c.relnamespace = 'subscription'::regnamespace AND c.relkind IN ('r', 'v', 'S')
              AND (has_table_privilege('public', c.oid, 'SELECT') OR has_table_privilege('public', c.oid, 'INSERT'))),
          NULL, 'S9: PUBLIC may read or write no table of the extension');
SET ROLE tenant_b;
SELECT is(security_test.sqlstate_of('SELECT subscription.redeemable_coupon(''X'', now(), ''EUR'')'), '42501',
          'S9: a role with no grant cannot call a helper');
RESET ROLE;
SELECT * FROM finish();
ROLLBACK;

-- S10: enforce_limit accepted a temporary table and left a registration
-- unenforce_limit could not remove; feature names of 44 characters or more
-- collided in trigger names (test/sql/tenant_code.sql); a non-superuser
-- pg_dump failed on the config-dumped sequences (test/dump_restore.sh).
-- 1.1: temporary tables are refused; only the table's owner registers it.
BEGIN;
SELECT plan(4);
SELECT security_test.fixture();
CREATE TEMP TABLE s10_temp (id int, account_id bigint);
SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('s10_temp', 'widgets')$$), '42809',
          'S10: a temporary table is refused');
SET ROLE tenant_a;
CREATE TABLE public.s10_mine (id int PRIMARY KEY, account_id bigint);
RESET ROLE;
-- the back office registers tables of owners whose rights it has, only
SET ROLE backoffice;
SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('public.s10_mine', 'widgets')$$), '42501',
          'S10: the back office may not attach guards to a table it does not own');
RESET ROLE;
GRANT tenant_a TO backoffice;
SET ROLE backoffice;
SELECT lives_ok($$SELECT subscription.enforce_limit('public.s10_mine', 'widgets')$$,
                'S10: ... and may, given the owner''s role');
RESET ROLE;
SET ROLE tenant_b;
SELECT is(security_test.sqlstate_of($$SELECT subscription.unenforce_limit('public.s10_mine', 'widgets')$$), '42501',
          'S10: another tenant cannot remove them');
RESET ROLE;
SELECT * FROM finish();
ROLLBACK;

-- S8: after ALTER COLUMN account_id TYPE text the guard read a pointer as the
-- account id and printed a heap address; a numeric value column gave
-- arbitrary deltas.
-- 1.1: registered numeric columns are smallint, integer or bigint: checked
-- at registration, by the event trigger, and whenever the guard's cache
-- entry is built (here the column is changed with the event triggers off).
BEGIN;
SELECT plan(4);
SELECT security_test.fixture();

SET ROLE tenant_a;
CREATE TABLE public.s8_text (id int PRIMARY KEY, account_id text);
CREATE TABLE public.s8_num (id int PRIMARY KEY, account_id bigint, volume numeric);
CREATE TABLE public.s8_later (id int PRIMARY KEY, account_id bigint);
RESET ROLE;
SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('public.s8_text', 'widgets')$$), '42804',
          'S8: a text account column is refused');
SELECT is(security_test.sqlstate_of($$SELECT subscription.enforce_limit('public.s8_num', 'volume', 'account_id', 'scale', NULL, 'volume')$$),
          '42804', 'S8: a numeric value column is refused under scale');
SELECT subscription.enforce_limit('public.s8_later', 'widgets');
-- a superuser changes the type in replica mode, where event triggers do not fire
SET LOCAL session_replication_role = replica;
ALTER TABLE public.s8_later ALTER COLUMN account_id TYPE text;
RESET session_replication_role;
SET ROLE tenant_a;
SELECT throws_ok($$INSERT INTO public.s8_later VALUES (1, '1'), (2, '1')$$, '42804',
                 'column "account_id" of table "s8_later" registered for feature "widgets" must be smallint, integer or bigint',
                 'S8: the guard refuses a column that is no longer an integer, and says so');
SELECT throws_ok($$INSERT INTO public.s8_later VALUES (3, '1')$$, '42804', NULL,
                 'S8: one row too');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;

-- S1: the limit guard read the transition tables as the extension owner (a
-- superuser) without SECURITY_RESTRICTED_OPERATION, casting the account
-- column with "c.account::bigint".  The owner of a limited table changed
-- that column to an enum of its own with a cast to bigint, and the cast's
-- function ran as the superuser on a two-row INSERT.
-- 1.1: a registered column cannot change type, be renamed or dropped (a
-- ddl_command_end event trigger), so the guard never casts a tenant's type;
-- whatever reaches the guard, tenant code never runs as another role.
BEGIN;
SELECT plan(12);
SELECT security_test.fixture();

SET ROLE tenant_a;
CREATE TABLE public.s1_widget (id int PRIMARY KEY, account_id bigint, speed int NOT NULL);
CREATE TABLE public.s1_gadget (id int PRIMARY KEY, account_id bigint);
CREATE TABLE public.s1_part (id int PRIMARY KEY, account_id bigint);
CREATE TABLE public.s1_control (id int PRIMARY KEY, account_id bigint, speed int NOT NULL);
GRANT ALL ON public.s1_widget, public.s1_gadget, public.s1_part TO app, backoffice;
-- the attacker's type: account ids (and speeds) as labels, cast to bigint by its own function
CREATE TYPE public.s1_acct AS ENUM ('1', '2', '3', '4', '5');
CREATE FUNCTION public.s1_to_bigint(a public.s1_acct) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM security_test.witness('tenant_a');
    RETURN a::text::bigint;
END
$$;
CREATE CAST (public.s1_acct AS bigint) WITH FUNCTION public.s1_to_bigint(public.s1_acct);
RESET ROLE;

SELECT subscription.enforce_limit('public.s1_widget', 'widgets');
SELECT subscription.enforce_limit('public.s1_widget', 'speed', 'account_id', 'cap', NULL, 'speed');
SELECT subscription.enforce_limit('public.s1_gadget', 'gadgets');
SELECT subscription.enforce_limit('public.s1_part', 'parts');

SET ROLE tenant_a;
-- control: the tenant may retype the columns of a table no limit guards
-- (so the refusals below are about the registration, not the statement)
SELECT lives_ok($$ALTER TABLE public.s1_control ALTER COLUMN account_id TYPE public.s1_acct
                  USING account_id::text::public.s1_acct$$,
                'control: the owner retypes a column of an unlimited table');

-- S1, the attack as reported: the registered account column becomes the tenant's enum
SELECT throws_ok($$ALTER TABLE public.s1_widget ALTER COLUMN account_id TYPE public.s1_acct
                   USING account_id::text::public.s1_acct$$,
                 NULL, NULL, 'S1: the registered account column cannot change type');
-- S1 on the cap policy: the guard cast the value column ("v::bigint") the same way
SELECT throws_ok($$ALTER TABLE public.s1_widget ALTER COLUMN speed TYPE public.s1_acct
                   USING speed::text::public.s1_acct$$,
                 NULL, NULL, 'S1: the registered value column cannot change type');
-- S1, the same by the back door: rename the column, add one of the tenant's type under its name
SELECT throws_ok($$ALTER TABLE public.s1_gadget RENAME COLUMN account_id TO old_account_id$$,
                 NULL, NULL, 'S1: the registered account column cannot be renamed');
SELECT security_test.attempt($$ALTER TABLE public.s1_gadget ADD COLUMN account_id public.s1_acct$$);
-- ... or drop it and add one of the tenant's type
SELECT throws_ok($$ALTER TABLE public.s1_part DROP COLUMN account_id$$,
                 NULL, NULL, 'S1: the registered account column cannot be dropped');
SELECT security_test.attempt($$ALTER TABLE public.s1_part ADD COLUMN account_id public.s1_acct$$);

-- the two-row statements that run the guard's queries over the transition tables
SELECT security_test.attempt($$INSERT INTO public.s1_widget (id, account_id, speed) VALUES (1, '1', '1'), (2, '1', '2')$$);
SELECT security_test.attempt($$UPDATE public.s1_widget SET account_id = '2', speed = '3'$$);
RESET ROLE;
SELECT * FROM security_test.no_escalation('S1: two-row INSERT and UPDATE of the widgets');

SET ROLE tenant_a;
SELECT security_test.attempt($$INSERT INTO public.s1_gadget (id, account_id) VALUES (1, '1'), (2, '1')$$);
SELECT security_test.attempt($$DELETE FROM public.s1_gadget$$);
RESET ROLE;
SELECT * FROM security_test.no_escalation('S1: after a rename, two-row INSERT and DELETE');

SET ROLE tenant_a;
SELECT security_test.attempt($$INSERT INTO public.s1_part (id, account_id) VALUES (1, '1'), (2, '1')$$);
RESET ROLE;
SELECT * FROM security_test.no_escalation('S1: after a drop, two-row INSERT');

-- the guard still counts the rows it guards (no registration was lost on the way)
SELECT is((SELECT count(*) FROM subscription.limited_table
            WHERE relation IN ('public.s1_widget'::regclass, 'public.s1_gadget'::regclass, 'public.s1_part'::regclass)),
          4::bigint, 'S1: the four registrations are still there');

SELECT * FROM finish();
ROLLBACK;

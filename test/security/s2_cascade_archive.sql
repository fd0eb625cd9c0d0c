-- S2: apply_downgrade archived the rows the application's own foreign keys
-- cascade into other limited tables with to_jsonb(o) as the extension owner;
-- a tenant type with a cast to json ran its owner's function as a superuser,
-- even in a dry run, and when a non-superuser back-office role downgraded.
-- 1.1: the archive's jsonb is built by the cascaded table's guard as that
-- table's owner, under SECURITY_RESTRICTED_OPERATION.
BEGIN;
SELECT plan(9);
SELECT security_test.fixture();

SET ROLE tenant_a;
CREATE TYPE public.s2_kind AS ENUM ('small', 'large');
CREATE FUNCTION public.s2_kind_json(k public.s2_kind) RETURNS json
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM security_test.witness('tenant_a');
    RETURN to_json(k::text);
END
$$;
CREATE CAST (public.s2_kind AS json) WITH FUNCTION public.s2_kind_json(public.s2_kind);
CREATE TABLE public.s2_domain (id int PRIMARY KEY, account_id bigint NOT NULL, kind public.s2_kind);
CREATE TABLE public.s2_room (id int PRIMARY KEY, account_id bigint NOT NULL,
                             domain_id int REFERENCES public.s2_domain ON DELETE CASCADE, kind public.s2_kind);
RESET ROLE;
SELECT subscription.enforce_limit('public.s2_domain', 'widgets');
SELECT subscription.enforce_limit('public.s2_room', 'gadgets');
INSERT INTO public.s2_domain SELECT i, 1, 'small' FROM generate_series(1, 4) AS i;
INSERT INTO public.s2_room SELECT 10 * d + r, 1, d, 'large' FROM generate_series(1, 4) AS d, generate_series(1, 2) AS r;
-- the downgrade to sec_small (2 widgets, 2 gadgets) waits for the period end
SELECT effective_at FROM subscription.change_plan(security_test.sub_of(1), 'sec_small', '2026-01-10');
SELECT security_test.reset_marks();

-- the dry run, by the superuser
SELECT security_test.attack(format('SELECT * FROM subscription.apply_downgrade(%s, true)', security_test.sub_of(1)));
SELECT * FROM security_test.no_escalation('S2: a dry-run downgrade by the superuser');

-- the same by a back-office role
SET ROLE backoffice;
SELECT security_test.attack(format('SELECT * FROM subscription.apply_downgrade(%s, true)', security_test.sub_of(1)));
RESET ROLE;
SELECT * FROM security_test.no_escalation('S2: a dry-run downgrade by the back office');

-- the real run, through renew_due at the period end
SELECT subscription.renew_due('2026-02-01');
SELECT * FROM security_test.no_escalation('S2: renew_due trimming with cascades');
-- the cascaded rooms were archived all the same, with the tenant's own json
SELECT is((SELECT count(*) FROM subscription.trimmed WHERE action = 'cascade' AND relation = 'public.s2_room'),
          4::bigint, 'S2: the rooms cascaded with the trimmed domains are archived');
SELECT is((SELECT DISTINCT old_row ->> 'kind' FROM subscription.trimmed WHERE action = 'cascade'),
          'large', 'S2: their jsonb was built by the tenant''s cast, as the tenant');
SELECT is(subscription.usage(1, 'gadgets'), (SELECT count(*) FROM public.s2_room WHERE account_id = 1),
          'S2: the counters follow the cascade and the trim');

SELECT * FROM finish();
ROLLBACK;

-- What held up in 1.0, kept as regression tests: a hostile search_path with
-- planted operators and functions is never used, hostile identifiers are
-- quoted, and ON CONFLICT, MERGE, COPY, views and cross-account UPDATEs are
-- refused at the limit.
BEGIN;
SELECT plan(11);
SELECT security_test.fixture();
SELECT security_test.sub_of(1) AS s1 \gset

-- tenant_a plants look-alikes in public and puts public first
SET ROLE tenant_a;
CREATE FUNCTION public.s_eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM security_test.witness('tenant_a');
    RETURN $1 OPERATOR(pg_catalog.=) $2;
END $$;
CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = public.s_eq);
CREATE FUNCTION public.lower(text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM security_test.witness('tenant_a');
    RETURN pg_catalog.lower($1);
END $$;
CREATE TABLE public."we""ird. room" (id int PRIMARY KEY, "acc ount" bigint NOT NULL, "size;drop" int);
CREATE VIEW public.s_room_view AS SELECT * FROM public."we""ird. room";
RESET ROLE;
SELECT subscription.enforce_limit('public."we""ird. room"', 'widgets', 'acc ount');
SELECT security_test.reset_marks();

SET ROLE backoffice;
SET LOCAL search_path = public, pg_catalog;
SELECT security_test.attack(format('SELECT subscription.set_quantity(%s, 7, ''2026-01-05'')', :s1));
SELECT security_test.attack(format('SELECT * FROM subscription.change_plan(%s, ''sec_small'', ''2026-01-10'')', :s1));
SELECT security_test.attack('SELECT subscription.renew_due(''2026-02-01'')');
SELECT security_test.attack('SELECT * FROM subscription.renewal_notice');
RESET search_path;
RESET ROLE;
SELECT * FROM security_test.no_escalation('held up: a hostile search_path');

-- the hostile identifiers are quoted: the guard counts and refuses
SET ROLE tenant_a;
INSERT INTO public."we""ird. room" SELECT i, 3, 1 FROM generate_series(1, 2) AS i;   -- Gamma: 2 widgets
SELECT is(security_test.sqlstate_of($$INSERT INTO public."we""ird. room" VALUES (3, 3, 1)$$), '23514',
          'held up: a quoted table and column are guarded');
-- ON CONFLICT DO UPDATE that moves a row into the full account
INSERT INTO public."we""ird. room" VALUES (10, 1, 1);
SELECT is(security_test.sqlstate_of($$INSERT INTO public."we""ird. room" VALUES (10, 1, 1)
                                      ON CONFLICT (id) DO UPDATE SET "acc ount" = 3$$), '23514',
          'held up: ON CONFLICT DO UPDATE into a full account is refused');
SELECT is(security_test.sqlstate_of($$MERGE INTO public."we""ird. room" AS t USING (VALUES (11, 3::bigint)) AS v(id, a)
                                      ON t.id = v.id WHEN NOT MATCHED THEN INSERT VALUES (v.id, v.a, 1)$$), '23514',
          'held up: MERGE is refused');
SELECT is(security_test.sqlstate_of($$INSERT INTO public.s_room_view VALUES (12, 3, 1)$$), '23514',
          'held up: an insert through a view is refused');
SELECT is(security_test.sqlstate_of($$UPDATE public."we""ird. room" SET "acc ount" = 3 WHERE id = 10$$), '23514',
          'held up: a cross-account UPDATE is refused');
RESET ROLE;
SELECT is(security_test.sqlstate_of($$COPY public."we""ird. room" FROM PROGRAM 'printf "13\t3\t1\n"'$$), '23514',
          'held up: COPY is refused');
SELECT is(subscription.usage(3, 'widgets'), 2::bigint, 'held up: the counter is exact');
SELECT * FROM security_test.no_escalation('held up: the hostile identifiers');

SELECT * FROM finish();
ROLLBACK;

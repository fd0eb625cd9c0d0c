-- S4: subscription.actor is a setting any session may set: an application
-- role that cleared it counted as trusted back-office code, plain DML on
-- subscription.license skipped authorize(), and history recorded only the
-- claimed actor.
-- 1.1: an empty actor is trusted only for back-office roles, never inside
-- tenant code the extension runs; the application has no DML on licenses;
-- history records the database roles too.
BEGIN;
SELECT plan(14);
SELECT security_test.fixture();
SELECT security_test.sub_of(1) AS s1, security_test.sub_of(2) AS s2 \gset

SET ROLE app;
SET LOCAL subscription.actor = '';
SELECT is(security_test.sqlstate_of(format('SELECT subscription.set_quantity(%s, 9, ''2026-01-05'')', :s1)),
          '42501', 'S4: the application without an actor may not change a quantity');
SELECT is(security_test.sqlstate_of(format('SELECT subscription.license_consume(%s, 13)', :s1)),
          '42501', 'S4: ... nor assign a license');
SELECT is(security_test.sqlstate_of('SELECT subscription.subscribe(3, ''sec_small'', ''1 month'', 1, ''2026-01-05'')'),
          '42501', 'S4: ... nor subscribe');
SELECT is(security_test.sqlstate_of(format('SELECT subscription.licenses_left(%s)', :s1)),
          '42501', 'S4: ... nor read');
SELECT is(security_test.sqlstate_of('SELECT subscription.renew_due(''2026-02-01'')'),
          '42501', 'S4: ... nor renew');
SELECT is(security_test.sqlstate_of(format('INSERT INTO subscription.license (subscription_id, member_id) VALUES (%s, 13)',
                                           :s1)),
          '42501', 'S4: plain DML on licenses is not granted to the application');
-- a member without rights, named as the actor, is refused
SET LOCAL subscription.actor = '13';
SELECT is(security_test.sqlstate_of(format('SELECT subscription.set_quantity(%s, 9, ''2026-01-05'')', :s1)),
          '42501', 'S4: a plain member may not change a quantity');
-- the owner may, and history records who claimed it and which role did it
SET LOCAL subscription.actor = '11';
SELECT is(subscription.set_quantity(:s1, 6, '2026-01-05'), 4, 'S4: the owner, named by the application, may');
RESET ROLE;
SELECT is((SELECT (actor, db_user, db_session_user)::text FROM subscription.history
            WHERE operation = 'subscription_update' ORDER BY id DESC LIMIT 1),
          format('(11,app,%s)', session_user), 'S4: history records the claimed actor and the database roles');

-- the back office is trusted without an actor
SET LOCAL subscription.actor = '';
SET ROLE backoffice;
SELECT is(subscription.set_quantity(:s2, 6, '2026-01-05'), 5, 'S4: the back office needs no actor');
RESET ROLE;

-- but not the code of a tenant that its work runs: the application's own
-- table, whose trigger tries a change with no actor while renew_due trims it
SELECT set_config('subscription.actor', '', true);
GRANT CREATE ON SCHEMA public TO app;
SET ROLE app;
CREATE TABLE public.s4_note (id int PRIMARY KEY, account_id bigint NOT NULL);
SELECT format($f$CREATE FUNCTION public.s4_free_seats() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subscription.set_quantity(%s, 50, '2026-01-31');
    RETURN OLD;
END
$$$f$, :s2) \gexec
CREATE TRIGGER s4_free_seats BEFORE DELETE ON public.s4_note FOR EACH ROW EXECUTE FUNCTION public.s4_free_seats();
RESET ROLE;
SELECT subscription.enforce_limit('public.s4_note', 'parts');
INSERT INTO public.s4_note SELECT i, 1 FROM generate_series(1, 5) AS i;
SELECT effective_at FROM subscription.change_plan(:s1, 'sec_small', '2026-01-10');
SET ROLE backoffice;
SELECT subscription.renew_due('2026-02-01');
RESET ROLE;
SELECT is((SELECT quantity FROM subscription.subscription WHERE id = :s2), 6,
          'S4: a tenant''s trigger run by the back office''s renewal is not trusted without an actor');
SELECT is((SELECT count(*) FROM public.s4_note), 5::bigint, 'S4: and its refusal held back that account''s trim');
SELECT is((SELECT plan FROM subscription.subscription WHERE id = :s1), 'sec_big',
          'S4: ... and that renewal only: it stays due');
SELECT is((SELECT upper(period) FROM subscription.subscription WHERE id = :s2), '2026-03-01'::timestamptz,
          'S4: the other accounts renewed');

SELECT * FROM finish();
ROLLBACK;

-- S11 (issue 19): run_dunning_tenant is SECURITY DEFINER and its final
-- actions write: 'downgrade' trims the tenant's own tables through
-- apply_downgrade, 'freeze' closes the account's limits and seats.  An
-- attacker owns a limited application table (a trigger on it that the trim
-- fires), or is a tenant's admin, the application or another tenant's
-- owner calling the dunning of a tenant that is not theirs.
-- 1.1: the dunning is back-office work (42501 for any other caller, an
-- actor named or not); the trim runs the table's code as its owner, under
-- SECURITY_RESTRICTED_OPERATION, and leaves the caller's session as it
-- was; every function of the path pins its search_path.
BEGIN;
SELECT plan(18);
SELECT security_test.fixture();
SELECT security_test.sub_of(1) AS s1, security_test.sub_of(4) AS s4 \gset

-- D4: product sec downgrades to its free plan at the ladder's end, sec_now freezes
UPDATE subscription.product SET dunning_days = '{1,1}', dunning_action = 'downgrade' WHERE code = 'sec';
UPDATE subscription.product SET dunning_days = '{1,1}', dunning_action = 'freeze' WHERE code = 'sec_now';
INSERT INTO subscription.plan (code, product, name, rank) VALUES ('sec_free', 'sec', 'Free', 0);
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES ('sec_free', '1 month', 0, true);
INSERT INTO subscription.plan_limit (plan, feature, value) VALUES ('sec_free', 'boxes', 1);

-- the tenant's table, with code that the trim fires
SET ROLE tenant_a;
SELECT security_test.trapped_table('s11_box', $$opened_at timestamptz NOT NULL DEFAULT '2026-01-01'$$);
RESET ROLE;
SELECT subscription.enforce_limit('public.s11_box', 'boxes');
INSERT INTO public.s11_box (id, account_id) SELECT i, 1 FROM generate_series(1, 5) AS i;
SELECT security_test.reset_marks();

-- the callers that are not back-office code: refused, nothing written
SET ROLE app;
SET LOCAL subscription.actor = '12';
SELECT is(security_test.sqlstate_of('SELECT subscription.run_dunning_tenant(2, ''2026-01-03'')'), '42501',
          'S11: a tenant''s admin, through the application, may not run another tenant''s dunning');
SELECT is(security_test.sqlstate_of('SELECT subscription.run_dunning_tenant(1, ''2026-01-03'')'), '42501',
          'S11: ... nor its own tenant''s');
SET LOCAL subscription.actor = '';
SELECT is(security_test.sqlstate_of('SELECT subscription.run_dunning_tenant(1, ''2026-01-03'')'), '42501',
          'S11: the application without an actor may not run it');
SELECT is(security_test.sqlstate_of('SELECT * FROM subscription.dunning_batch(''2026-01-03'', 10, 0)'), '42501',
          'S11: ... nor a batch of run_dunning');
RESET ROLE;
SET ROLE tenant_b;
SELECT is(security_test.sqlstate_of('SELECT subscription.run_dunning_tenant(1, ''2026-01-03'')'), '42501',
          'S11: another tenant''s table owner may not run it');
RESET ROLE;
SET ROLE backoffice;
SET LOCAL subscription.actor = '11';
SELECT is(security_test.sqlstate_of('SELECT subscription.run_dunning_tenant(1, ''2026-01-03'')'), '42501',
          'S11: the back office acting for a member may not either (back-office work)');
RESET subscription.actor;
RESET ROLE;
SELECT is((SELECT count(*) FROM subscription.history WHERE operation = 'dunning_step'), 0::bigint,
          'S11: the refused calls wrote nothing');
SELECT is((SELECT s.status FROM subscription.subscription AS s WHERE s.id = :s1), 'active',
          'S11: ... and moved no subscription');

-- the back office runs it: the ladder ends in a downgrade that trims the
-- tenant's table, whose code runs as its owner and changes nothing else
SET ROLE backoffice;
SELECT security_test.attack('SELECT subscription.run_dunning_tenant(1, ''2026-01-03'')');
RESET ROLE;
SELECT * FROM security_test.no_escalation('S11: run_dunning_tenant''s downgrade by the back office');
SELECT * FROM security_test.settings_kept('S11: run_dunning_tenant''s downgrade by the back office');

-- the superuser's run (pg_cron's): the same, and the trim and freeze happen
SELECT is(subscription.run_dunning_tenant(1, '2026-01-03'), 2, 'S11: the dunning moved tenant 1 (past due, its steps)');
SELECT * FROM security_test.no_escalation('S11: run_dunning_tenant by the superuser');
SELECT is((SELECT s.plan || ' ' || (SELECT count(*) FROM public.s11_box WHERE account_id = 1)
             FROM subscription.subscription AS s WHERE s.id = :s1),
          'sec_free 1', 'S11: the downgrade to the free plan trimmed the table to its limit');
SELECT is(to_regclass('pg_temp.s11_box_leftover'), NULL,
          'S11: the tenant''s code made no temporary table in the caller''s session');
SELECT subscription.run_dunning_tenant(4, '2026-01-03') AS moved \gset
SELECT is((:moved, (SELECT s.dunning_frozen FROM subscription.subscription AS s WHERE s.id = :s4))::text,
          '(2,t)', 'S11: the freeze of tenant 4');

-- every function of the path runs with its own search_path
SELECT is(array_agg(p.proname::text ORDER BY p.proname) FILTER (WHERE NOT coalesce(
              'search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)), NULL,
          'S11: every function of the dunning pins its search_path')
  FROM pg_proc AS p
 WHERE p.pronamespace = 'subscription'::regnamespace
   AND p.proname IN ('run_dunning_tenant', 'dunning_batch', 'enter_past_due', 'end_past_due', 'dunning_final',
                     'refresh_freeze', 'free_plan', 'apply_downgrade', 'invoice_status_history')
   AND p.prokind = 'f' AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c');

SELECT * FROM finish();
ROLLBACK;

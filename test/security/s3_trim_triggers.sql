-- S3: apply_downgrade's DELETE and UPDATE on tenant tables ran as whoever
-- called it: a tenant's BEFORE DELETE trigger ran as the superuser cron job
-- that ran the renewal, and made its owner a superuser.  Its code could
-- also poison the caller's session.
-- 1.1: trimming runs as the table's owner, under
-- SECURITY_RESTRICTED_OPERATION, in a GUC level that is rolled back.
BEGIN;
SELECT plan(10);
SELECT security_test.fixture();

SET ROLE tenant_a;
SELECT security_test.trapped_table('s3_box', $$volume int NOT NULL DEFAULT 10,
                            speed int NOT NULL DEFAULT 5$$);
RESET ROLE;
SELECT subscription.enforce_limit('public.s3_box', 'boxes');
INSERT INTO public.s3_box (id, account_id) SELECT i, 1 FROM generate_series(1, 5) AS i;
SELECT effective_at FROM subscription.change_plan(security_test.sub_of(1), 'sec_small', '2026-01-10');
SELECT security_test.reset_marks();

SELECT security_test.attack(format('SELECT * FROM subscription.apply_downgrade(%s)', security_test.sub_of(1)));
SELECT * FROM security_test.no_escalation('S3: apply_downgrade by the superuser');
SELECT * FROM security_test.settings_kept('S3: apply_downgrade by the superuser');

SET ROLE backoffice;
SELECT security_test.attack('SELECT subscription.renew_due(''2026-02-01'')');
RESET ROLE;
SELECT * FROM security_test.no_escalation('S3: renew_due by the back office');
SELECT * FROM security_test.settings_kept('S3: renew_due by the back office');

-- the real renewal trims, with the tenant's trigger run as the tenant
SELECT subscription.renew_due('2026-02-01');
SELECT * FROM security_test.no_escalation('S3: renew_due by the superuser');
SELECT is((SELECT count(*) FROM public.s3_box WHERE account_id = 1), 2::bigint, 'S3: the trim happened');
SELECT is(to_regclass('pg_temp.s3_box_leftover'), NULL, 'S3: the tenant''s code made no temporary table in the caller''s session');

SELECT * FROM finish();
ROLLBACK;

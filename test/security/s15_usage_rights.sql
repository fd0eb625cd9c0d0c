-- S15 (issue 21): record_usage keeps what it decided of a feature between
-- calls (src/usage.c), but never the caller's right to pay: an owner
-- demoted or removed, a role set, is refused at the very next call, in the
-- same session and transaction, and nothing is written.
BEGIN;
SELECT plan(7);
SELECT security_test.fixture();
INSERT INTO subscription.plan_limit (plan, feature, value) VALUES ('sec_big', 'api_calls', NULL);

SET ROLE backoffice;
SET LOCAL subscription.actor = '11';
SELECT is(subscription.record_usage(1, 'api_calls', 1, 's15-1', '2026-01-05'), 1::bigint,
          'S15: the owner, named by the back office, records usage');
RESET ROLE;
UPDATE subscription.member SET role = 'admin' WHERE id = 11;
SET ROLE backoffice;
SELECT is(security_test.sqlstate_of('SELECT subscription.record_usage(1, ''api_calls'', 1, ''s15-2'', ''2026-01-05'')'),
          '42501', 'S15: the owner made an admin is refused at the next call');
RESET ROLE;
UPDATE subscription.member SET role = 'owner' WHERE id = 11;
SET ROLE backoffice;
SELECT is(subscription.record_usage(1, 'api_calls', 1, 's15-3', '2026-01-05'), 2::bigint,
          'S15: owner again: allowed again');
RESET ROLE;
DELETE FROM subscription.member WHERE id = 11;
SET ROLE backoffice;
SELECT is(security_test.sqlstate_of('SELECT subscription.record_usage(1, ''api_calls'', 1, ''s15-4'', ''2026-01-05'')'),
          '42501', 'S15: the owner removed is refused at the next call');
-- another account's owner may not pay for account 1
SET LOCAL subscription.actor = '21';
SELECT is(security_test.sqlstate_of('SELECT subscription.record_usage(1, ''api_calls'', 1, ''s15-5'', ''2026-01-05'')'),
          '42501', 'S15: another account''s owner is refused');
-- the application, after the back office's calls, without an actor
SET LOCAL subscription.actor = '';
SET ROLE app;
SELECT is(security_test.sqlstate_of('SELECT subscription.record_usage(1, ''api_calls'', 1, ''s15-6'', ''2026-01-05'')'),
          '42501', 'S15: the application role may not record usage');
RESET ROLE;
SELECT is((SELECT string_agg(key, ',' ORDER BY key) FROM subscription.usage_record), 's15-1,s15-3',
          'S15: the refused calls wrote nothing');

SELECT * FROM finish();
ROLLBACK;

-- The limit guard's cache follows the registrations (issue 15): after
-- enforce_limit, unenforce_limit and a new enforce_limit with other
-- options, the very session that cached the guard acts on the new
-- registration, and unenforce_limit leaves no usage counter behind.  On an
-- application table and on the extension's own account table (K7).
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('meet', 'ClickMeeting');
INSERT INTO plan (code, product, name) VALUES ('cm_live', 'meet', 'Live');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('cm_live', '1 month', 25);
INSERT INTO plan_limit (plan, feature, value) VALUES ('cm_live', 'rooms', 2), ('cm_live', 'sub_accounts', 1);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Webinars');
SELECT subscribe(1, 'cm_live', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;

-- an application table: the cached guard counts rows, then is gone
CREATE TABLE public.room (id int, account_id bigint NOT NULL, seats int NOT NULL DEFAULT 1, PRIMARY KEY (account_id, id));
\set app_tables public.room
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.room', 'rooms');
INSERT INTO public.room (id, account_id) VALUES (1, 1), (2, 1);
SELECT pg_temp.error_of($$INSERT INTO public.room (id, account_id) VALUES (3, 1)$$);
SELECT unenforce_limit('public.room', 'rooms');
INSERT INTO public.room (id, account_id) VALUES (3, 1);
INSERT INTO public.room (id, account_id) VALUES (4, 1), (5, 1);
SELECT count(*) AS room_counters FROM usage_counter WHERE feature = 'rooms';
DELETE FROM public.room WHERE id > 2;
-- enforced again with other options: the seats are summed (scale), one row or many
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'scale', NULL, 'seats');
SELECT usage(1, 'rooms') AS seats_counted;
SELECT pg_temp.error_of($$INSERT INTO public.room (id, account_id, seats) VALUES (3, 1, 1)$$);
UPDATE public.room SET seats = 0 WHERE id = 2;
INSERT INTO public.room (id, account_id, seats) VALUES (3, 1, 1);
SELECT pg_temp.error_of($$INSERT INTO public.room (id, account_id, seats) VALUES (4, 1, 0), (5, 1, 1)$$);
SELECT usage(1, 'rooms') AS seats_counted;
-- and counting rows again, in one transaction with the unenforce
SAVEPOINT again;
SELECT unenforce_limit('public.room', 'rooms');
SELECT enforce_limit('public.room', 'rooms');
SELECT usage(1, 'rooms') AS rows_counted;
SELECT pg_temp.error_of($$INSERT INTO public.room (id, account_id) VALUES (4, 1)$$);
ROLLBACK TO SAVEPOINT again;
-- a rolled-back unenforce leaves the guard as it was
SELECT pg_temp.error_of($$INSERT INTO public.room (id, account_id, seats) VALUES (4, 1, 1)$$);

-- K7: sub-accounts on subscription.account, whose guard stays attached
SELECT enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'drop_newest', 'created_at');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (2, 1, 'Webinars Lyon', 1);
SELECT pg_temp.error_of($$INSERT INTO account (id, tenant_id, name, parent_id) VALUES (3, 1, 'Webinars Nice', 1)$$);
SELECT unenforce_limit('subscription.account', 'sub_accounts');
-- the session that cached the guard stops enforcing at once, and writes no counter
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (3, 1, 'Webinars Nice', 1);
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (4, 1, 'Webinars Lille', 1), (5, 1, 'Webinars Brest', 1);
DELETE FROM account WHERE id = 5;
SELECT count(*) AS sub_account_counters FROM usage_counter WHERE feature = 'sub_accounts';
SELECT count(*) AS guards_still_attached FROM pg_trigger
 WHERE tgrelid = 'subscription.account'::regclass AND tgname LIKE 'subscription_limit_sub_accounts%';
-- enforced again, with the block policy: three counted, the next refused
SELECT enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'block');
SELECT usage(1, 'sub_accounts') AS sub_accounts_counted;
SELECT pg_temp.error_of($$INSERT INTO account (id, tenant_id, name, parent_id) VALUES (5, 1, 'Webinars Brest', 1)$$);
DELETE FROM account WHERE id = 4;
SELECT usage(1, 'sub_accounts') AS sub_accounts_counted;

ROLLBACK;

-- the extension's owner (the owner of usage_counter), as whom the guards
-- write their counters and who is trusted without an actor, is read again
-- after an owner change
CREATE ROLE regress_cache_owner;
GRANT USAGE ON SCHEMA subscription TO regress_cache_owner;
GRANT EXECUTE ON FUNCTION caller_is_trusted() TO regress_cache_owner;
SELECT tableowner AS extension_owner FROM pg_tables
 WHERE schemaname = 'subscription' AND tablename = 'usage_counter' \gset
SET ROLE regress_cache_owner;
SELECT caller_is_trusted() AS trusted;
RESET ROLE;
ALTER TABLE usage_counter OWNER TO regress_cache_owner;
SET ROLE regress_cache_owner;
SELECT caller_is_trusted() AS trusted_as_owner;
RESET ROLE;
ALTER TABLE usage_counter OWNER TO :"extension_owner";
SET ROLE regress_cache_owner;
SELECT caller_is_trusted() AS trusted;
RESET ROLE;
REVOKE ALL ON FUNCTION caller_is_trusted() FROM regress_cache_owner;
REVOKE ALL ON SCHEMA subscription FROM regress_cache_owner;
DROP ROLE regress_cache_owner;

-- record_usage's checks (issue 21, U4, Z1): the caller's right to pay is
-- checked at every call, never kept: a change of the actor's role, of the
-- calling role (SET ROLE) or of the security context is seen at the next
-- call, in the same session and transaction.  What require_recorded_feature
-- decided is kept per backend (src/usage.c) until plan_limit, addon or
-- limited_table change: a feature removed or registered since is refused
-- at the next call.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('checks', 'Usage checks');
INSERT INTO plan (code, product, name) VALUES ('checks_api', 'checks', 'API');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('checks_api', '1 month', 10);
INSERT INTO plan_limit (plan, feature, value) VALUES ('checks_api', 'api_calls', NULL), ('checks_api', 'tokens', NULL);
INSERT INTO account (tenant_id, id, name) VALUES (1, 1, 'Calls Inc');
SELECT subscribe(1, 'checks_api', '1 month', 1, '2026-01-01') AS sub \gset
INSERT INTO member (tenant_id, id, account_id, role) VALUES (1, 11, 1, 'owner'), (1, 12, 1, 'admin');

-- back-office code without an actor
SELECT record_usage(1, 'api_calls', 1, 'k1', '2026-01-02') AS back_office;
-- the owner pays (Z1); the admin may not
SET subscription.actor = '11';
SELECT record_usage(1, 'api_calls', 1, 'k2', '2026-01-02') AS owner;
SET subscription.actor = '12';
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 1, 'k3', '2026-01-02')$$) AS admin;
-- the owner made an admin, in this transaction: refused at the next call
SET subscription.actor = '11';
SELECT record_usage(1, 'api_calls', 1, 'k4', '2026-01-02') AS owner_again;
UPDATE member SET role = 'admin' WHERE tenant_id = 1 AND id = 11;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 1, 'k5', '2026-01-02')$$) AS demoted;
-- made owner again, then removed: refused at once
UPDATE member SET role = 'owner' WHERE tenant_id = 1 AND id = 11;
SELECT record_usage(1, 'api_calls', 1, 'k6', '2026-01-02') AS owner_restored;
DELETE FROM member WHERE tenant_id = 1 AND id = 11;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 1, 'k7', '2026-01-02')$$) AS removed;
RESET subscription.actor;

-- the calling role: a role that may call record_usage but is not back
-- office must name an actor, at the call after a back-office one; back
-- again, trusted again; with the owner as actor, allowed
CREATE ROLE regress_usage_caller;
GRANT USAGE ON SCHEMA subscription TO regress_usage_caller;
GRANT EXECUTE ON FUNCTION record_usage(bigint, text, bigint, text, timestamptz) TO regress_usage_caller;
SELECT record_usage(1, 'api_calls', 1, 'k8', '2026-01-02') AS before_set_role;
SET ROLE regress_usage_caller;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 1, 'k9', '2026-01-02')$$) AS not_back_office;
RESET ROLE;
SELECT record_usage(1, 'api_calls', 1, 'k10', '2026-01-02') AS after_reset_role;
UPDATE member SET role = 'owner' WHERE tenant_id = 1 AND id = 12;
SET ROLE regress_usage_caller;
SET subscription.actor = '12';
SELECT record_usage(1, 'api_calls', 1, 'k11', '2026-01-02') AS with_the_owner;
RESET subscription.actor;
RESET ROLE;
-- a back-office role given in this transaction: trusted without an actor
SELECT grant_backoffice('regress_usage_caller');
SET ROLE regress_usage_caller;
SELECT record_usage(1, 'api_calls', 1, 'k12', '2026-01-02') AS back_office_role;
RESET ROLE;
-- trust taken back in this transaction is gone at the next call, not at
-- the next transaction (S15): a role that keeps EXECUTE (granted to it) and
-- was trusted as a member of a back-office role, the membership revoked;
-- then a member again, the back office taken from the role it is a member
-- of (revoke_backoffice)
CREATE ROLE regress_usage_member;
GRANT USAGE ON SCHEMA subscription TO regress_usage_member;
GRANT EXECUTE ON FUNCTION record_usage(bigint, text, bigint, text, timestamptz) TO regress_usage_member;
GRANT regress_usage_caller TO regress_usage_member;
SET ROLE regress_usage_member;
SELECT record_usage(1, 'api_calls', 1, 'k12a', '2026-01-02') AS member_of_back_office;
RESET ROLE;
REVOKE regress_usage_caller FROM regress_usage_member;
SET ROLE regress_usage_member;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 1, 'k12b', '2026-01-02')$$) AS membership_revoked;
RESET ROLE;
GRANT regress_usage_caller TO regress_usage_member;
SET ROLE regress_usage_member;
SELECT record_usage(1, 'api_calls', 1, 'k12c', '2026-01-02') AS member_again;
RESET ROLE;
SELECT revoke_backoffice('regress_usage_caller');
SET ROLE regress_usage_member;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'api_calls', 1, 'k12d', '2026-01-02')$$) AS back_office_revoked;
RESET ROLE;
SELECT grant_backoffice('regress_usage_caller');
-- a security-restricted operation (a materialized view's refresh runs as
-- its owner, restricted): a superuser is not trusted there
CREATE MATERIALIZED VIEW public.usage_in_refresh AS
    SELECT subscription.record_usage(1, 'api_calls', 1, 'k13', '2026-01-02') AS total WITH NO DATA;
SAVEPOINT restricted;
REFRESH MATERIALIZED VIEW public.usage_in_refresh;
ROLLBACK TO SAVEPOINT restricted;
SELECT record_usage(1, 'api_calls', 1, 'k14', '2026-01-02') AS unrestricted_again;

-- the feature: kept while the catalog does not change
SELECT record_usage(1, 'tokens', 5, 't1', '2026-01-02') AS tokens;
SAVEPOINT catalog;
-- its plan limit removed (no add-on names it): 42704 at the next call
DELETE FROM plan_limit WHERE plan = 'checks_api' AND feature = 'tokens';
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'tokens', 5, 't2', '2026-01-02')$$) AS removed_feature;
-- rolled back: the feature again
ROLLBACK TO SAVEPOINT catalog;
SELECT record_usage(1, 'tokens', 5, 't3', '2026-01-02') AS tokens_again;
-- named by an add-on only: still a feature
SAVEPOINT addon;
INSERT INTO addon (code, product, name, feature, units) VALUES ('more_tokens', 'checks', 'More tokens', 'tokens', 100);
DELETE FROM plan_limit WHERE plan = 'checks_api' AND feature = 'tokens';
-- (a feature: on to its limit, 0 without a batch of the add-on)
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'tokens', 5, 't4', '2026-01-02')$$) AS addon_feature;
DELETE FROM addon WHERE code = 'more_tokens';
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'tokens', 5, 't5', '2026-01-02')$$) AS addon_removed;
ROLLBACK TO SAVEPOINT addon;
-- the feature registered on a table since: counted from its rows, 22023
SAVEPOINT registered;
CREATE TABLE public.token_row (account_id bigint NOT NULL, id bigint NOT NULL, PRIMARY KEY (account_id, id));
-- (on Citus distributed with the tenants first, as a limited table is there:
-- enforce_limit refuses a local one, 55000, which enforce_limit.sql checks)
\set app_tables public.token_row
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.token_row', 'tokens', 'account_id');
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'tokens', 5, 't6', '2026-01-02')$$) AS registered_feature;
ROLLBACK TO SAVEPOINT registered;
SELECT record_usage(1, 'tokens', 5, 't7', '2026-01-02') AS unregistered_again;
-- registered in replica mode (a restore, a logical-replication
-- subscriber's apply, where ordinary triggers do not fire): refused too
SAVEPOINT replica;
CREATE TABLE public.token_row (account_id bigint NOT NULL, id bigint NOT NULL, PRIMARY KEY (account_id, id));
\i test/sql/include/app_tables.psql
SET LOCAL session_replication_role = replica;
INSERT INTO limited_table (relation, feature, account_column, on_downgrade)
VALUES ('public.token_row', 'tokens', 'account_id', 'drop_newest');
SET LOCAL session_replication_role = origin;
SELECT pg_temp.error_of($$SELECT subscription.record_usage(1, 'tokens', 5, 't8', '2026-01-02')$$) AS registered_in_replica_mode;
ROLLBACK TO SAVEPOINT replica;

-- what was recorded: every call that passed, once
SELECT key, quantity, total FROM usage_record WHERE account_id = 1 ORDER BY feature, at, total;
SELECT feature, used FROM usage_counter WHERE account_id = 1 ORDER BY feature;

ROLLBACK;

-- The intended rights of every function, table, view and sequence (S5,
-- S9): PUBLIC has none, and grant_application() / grant_backoffice() give
-- exactly these.  A new object without a decision changes this output.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_acl_app') THEN
        CREATE ROLE regress_acl_app;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'regress_acl_backoffice') THEN
        CREATE ROLE regress_acl_backoffice;
    END IF;
END
$$;
RESET client_min_messages;
SELECT subscription.grant_application('regress_acl_app');
SELECT subscription.grant_backoffice('regress_acl_backoffice');
SELECT role, kind FROM subscription.granted_role ORDER BY 1, 2;

-- every routine: who may call it
SELECT p.oid::regprocedure AS routine,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public,
       has_function_privilege('regress_acl_app', p.oid, 'EXECUTE') AS app,
       has_function_privilege('regress_acl_backoffice', p.oid, 'EXECUTE') AS backoffice,
       p.prosecdef AS definer
  FROM pg_proc AS p
 WHERE p.pronamespace = 'subscription'::regnamespace
 ORDER BY p.oid::regprocedure::text;

-- every table, view and sequence: what each may do with it
CREATE FUNCTION pg_temp.rights(role text, relation oid) RETURNS text
LANGUAGE sql RETURN (
    SELECT coalesce(string_agg(p, ',' ORDER BY n), '')
      FROM unnest('{SELECT,INSERT,UPDATE,DELETE,TRUNCATE,REFERENCES,TRIGGER}'::text[]) WITH ORDINALITY AS u(p, n)
     WHERE CASE WHEN (SELECT relkind FROM pg_class WHERE oid = relation) = 'S'
                THEN p IN ('SELECT', 'UPDATE') AND has_sequence_privilege(role, relation, p)
                ELSE has_table_privilege(role, relation, p) END);
SELECT c.relname, c.relkind,
       pg_temp.rights('public', c.oid) AS public,
       pg_temp.rights('regress_acl_app', c.oid) AS app,
       pg_temp.rights('regress_acl_backoffice', c.oid) AS backoffice
  FROM pg_class AS c
 WHERE c.relnamespace = 'subscription'::regnamespace AND c.relkind IN ('r', 'v', 'S', 'p', 'm')
 ORDER BY c.relname;

-- column rights: the application reads the ids of the accounts and members it creates
SELECT a.attrelid::regclass AS relation, a.attname,
       has_column_privilege('regress_acl_app', a.attrelid, a.attname, 'SELECT') AS app_select
  FROM pg_attribute AS a
 WHERE a.attrelid IN ('subscription.account'::regclass, 'subscription.member'::regclass)
   AND a.attnum > 0 AND NOT a.attisdropped
   AND has_column_privilege('regress_acl_app', a.attrelid, a.attname, 'SELECT')
 ORDER BY 1, 2;
SELECT has_schema_privilege('public', 'subscription', 'USAGE') AS public_usage,
       has_schema_privilege('regress_acl_app', 'subscription', 'USAGE') AS app_usage,
       has_schema_privilege('regress_acl_backoffice', 'subscription', 'USAGE') AS backoffice_usage;

-- a role that is both keeps the application's rights when back-office goes
SELECT subscription.grant_backoffice('regress_acl_app');
SELECT subscription.revoke_backoffice('regress_acl_app');
SELECT has_function_privilege('regress_acl_app', 'subscription.subscribe(bigint,text,interval,integer,timestamptz,text,text)', 'EXECUTE') AS still_subscribes,
       has_function_privilege('regress_acl_app', 'subscription.renew_due(timestamptz)', 'EXECUTE') AS renews,
       has_table_privilege('regress_acl_app', 'subscription.ledger', 'SELECT') AS reads_ledger;

-- revoking leaves nothing behind, so the roles can be dropped
SELECT subscription.revoke_application('regress_acl_app');
SELECT subscription.revoke_backoffice('regress_acl_backoffice');
\set ON_ERROR_STOP 0
SELECT subscription.revoke_backoffice('regress_acl_backoffice');
SELECT subscription.grant_application(NULL);
\set ON_ERROR_STOP 1
DROP ROLE regress_acl_app;
DROP ROLE regress_acl_backoffice;
SELECT count(*) AS granted_left FROM subscription.granted_role;

-- a granted role dropped without its revoke_*() (DROP OWNED BY, DROP
-- ROLE) leaves its rows in granted_role, naming no role: the next grant
-- or revoke forgets them (review h-rev7), so that no right is given to a
-- role that is gone, nor its kind to a later role of the same OID
CREATE ROLE regress_acl_gone;
SELECT subscription.grant_application('regress_acl_gone');
SELECT subscription.grant_backoffice('regress_acl_gone');
DROP OWNED BY regress_acl_gone;
DROP ROLE regress_acl_gone;
SELECT count(*) AS rows_of_dropped_role FROM subscription.granted_role AS g
 WHERE NOT EXISTS (SELECT FROM pg_roles AS r WHERE r.oid = g.role);
CREATE ROLE regress_acl_app;
SELECT subscription.grant_application('regress_acl_app');
SELECT count(*) AS rows_of_dropped_role FROM subscription.granted_role AS g
 WHERE NOT EXISTS (SELECT FROM pg_roles AS r WHERE r.oid = g.role);
SELECT role, kind FROM subscription.granted_role ORDER BY 1, 2;
SELECT subscription.revoke_application('regress_acl_app');
DROP ROLE regress_acl_app;

-- every table, view and routine says what it is (\dt+, \df+)
SELECT c.oid::regclass AS uncommented FROM pg_class AS c
 WHERE c.relnamespace = 'subscription'::regnamespace AND c.relkind IN ('r', 'v', 'p')
   AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT p.oid::regprocedure AS uncommented FROM pg_proc AS p
 WHERE p.pronamespace = 'subscription'::regnamespace AND obj_description(p.oid, 'pg_proc') IS NULL;

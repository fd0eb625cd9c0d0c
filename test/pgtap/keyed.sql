-- Keyed forms (issue 17, item 2; docs/design.md#keyed-forms): every
-- public function that writes touches one tenant and has a form whose
-- first argument is that tenant, listed by distributed_functions() for
-- Citus's create_distributed_function(..., colocate_with :=
-- 'subscription.account').  These checks read pg_proc, so a new function
-- that writes without a keyed form, or a keyed form left out of the list,
-- fails here.
BEGIN;
SELECT plan(10);
SET search_path = subscription, public;

-- The functions that write, in pg_proc: not STABLE or IMMUTABLE, no
-- trigger, not internal (their comment says so; they run inside the
-- public functions, on the node those run on), and none of these
-- exceptions, each with its reason:
CREATE TEMPORARY TABLE not_keyed (name text PRIMARY KEY, reason text NOT NULL);
INSERT INTO not_keyed VALUES
    ('enforce_limit', 'DDL on an application table: triggers and a registration for every tenant'),
    ('unenforce_limit', 'DDL on an application table: triggers and a registration for every tenant'),
    ('recount_usage', 'repairs the counters of an application table, of every tenant when account_id is NULL'),
    ('verify', 'reads the books of every tenant when account_id is NULL; writes nothing'),
    ('migrate_subscriptions', 'every subscription of a plan, across tenants'),
    ('preview_migration', 'every subscription of a plan, across tenants; writes nothing'),
    ('renew_due', 'every tenant''s due renewals; renew_account is the per-tenant form (issue 17, item 4)'),
    ('run_renewals', 'every tenant''s due renewals, in batches; renew_account is the per-tenant form'),
    ('run_dunning', 'every tenant''s dunning, in batches; run_dunning_tenant is the per-tenant form (issue 19, D3)'),
    ('preview_change_plan', 'writes nothing: the change runs in a subtransaction that is rolled back'),
    ('preview_set_quantity', 'writes nothing: the change runs in a subtransaction that is rolled back'),
    ('preview_purchase_addon', 'writes nothing: the change runs in a subtransaction that is rolled back'),
    ('preview_bundle_into_suite', 'writes nothing: the change runs in a subtransaction that is rolled back'),
    ('grant_application', 'rights of a role: no tenant row'),
    ('grant_backoffice', 'rights of a role: no tenant row'),
    ('grant_restore', 'rights of a role: no tenant row'),
    ('revoke_application', 'rights of a role: no tenant row'),
    ('revoke_backoffice', 'rights of a role: no tenant row'),
    ('revoke_restore', 'rights of a role: no tenant row'),
    ('create_account', 'creates a tenant: its key is the new account''s own id, or its parent''s tenant'),
    ('distribute', 'Citus DDL: distributes every table of the extension'),
    ('renew_local_tenants', 'the due tenants of the node it runs on, in batches; renew_account is the per-tenant form'),
    -- the outbox (issue 20): a consumer reads across tenants
    ('claim_events', 'a consumer''s position is across tenants: event_consumer is not a tenant table'),
    ('await_events', 'a listener of the database''s events, across tenants: no tenant'),
    ('ack_events', 'a consumer''s position is across tenants: event_consumer is not a tenant table'),
    ('prune_events', 'the events every consumer acknowledged, of every tenant'),
    ('prune_idempotency_keys', 'the idempotency keys past their retention, of every tenant'),
    ('announce_renewals', 'every tenant''s subscriptions entering the notice window, as renew_due'),
    -- usage-based billing (issue 21): the catalog
    ('meter', 'a meter is of a registered table, for every tenant: no tenant row'),
    ('plan_usage_price', 'a plan''s usage price, in the catalog: no tenant row'),
    -- a held price or limit changed on the coordinator (issue 17): the catalog
    ('change_price', 'a plan''s price, in the catalog: no tenant row'),
    ('change_limit', 'a plan''s limit, in the catalog: no tenant row');

CREATE TEMPORARY VIEW writer AS
SELECT p.oid, p.proname
  FROM pg_proc AS p
 WHERE p.pronamespace = 'subscription'::regnamespace
   AND p.prokind IN ('f', 'p') AND p.provolatile = 'v'
   AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
   AND coalesce(obj_description(p.oid, 'pg_proc'), '') !~ '^Internal'
   AND coalesce(p.proargnames[1], '') <> 'tenant_id'
   AND p.proname NOT IN (SELECT name FROM not_keyed);

-- the keyed form of a function: same name, the tenant then its arguments
CREATE TEMPORARY VIEW keyed_pair AS
SELECT w.oid AS unkeyed, k.oid AS keyed, w.proname
  FROM writer AS w
  JOIN pg_proc AS k ON k.pronamespace = 'subscription'::regnamespace AND k.proname = w.proname
                   AND k.proargnames[1] = 'tenant_id'
                   AND k.proargtypes::text = rtrim('20 ' || (SELECT p.proargtypes::text FROM pg_proc AS p WHERE p.oid = w.oid));

SELECT is_empty($$SELECT w.oid::regprocedure FROM writer AS w
                   WHERE NOT EXISTS (SELECT FROM keyed_pair AS k WHERE k.unkeyed = w.oid)$$,
    'every public function that writes has a keyed form: tenant_id bigint, then its own arguments');
SELECT cmp_ok((SELECT count(*)::int FROM keyed_pair), '>=', 20, 'at least the 20 keyed forms of issue 17');
SELECT is_empty($$SELECT name FROM not_keyed AS n
                   WHERE NOT EXISTS (SELECT FROM pg_proc AS p WHERE p.pronamespace = 'subscription'::regnamespace AND p.proname = n.name)$$,
    'every exception names a function that exists');

-- distributed_functions() lists exactly the functions whose first argument is tenant_id
SELECT set_eq($$SELECT function::oid, tenant_argument FROM distributed_functions()$$,
              $$SELECT p.oid, 'tenant_id'::text FROM pg_proc AS p
                 WHERE p.pronamespace = 'subscription'::regnamespace
                   AND pg_get_function_identity_arguments(p.oid) LIKE 'tenant_id bigint%'$$,
    'distributed_functions() lists every function of the schema whose first argument is tenant_id bigint');
SELECT is_empty($$SELECT k.keyed::regprocedure FROM keyed_pair AS k
                   WHERE k.keyed NOT IN (SELECT function::oid FROM distributed_functions())$$,
    'every keyed form is listed');
-- no function takes the tenant anywhere but first (the internal check excepted)
SELECT is_empty($$SELECT p.oid::regprocedure FROM pg_proc AS p
                   WHERE p.pronamespace = 'subscription'::regnamespace
                     AND 'tenant_id' = ANY (p.proargnames[2:]) AND p.proname <> 'require_tenant'$$,
    'no function of the schema takes tenant_id other than as its first argument');

-- no call of an unkeyed form can mean a keyed one: the keyed form takes
-- every argument (no defaults), one more than the unkeyed form's most
SELECT is_empty($$SELECT k.keyed::regprocedure FROM keyed_pair AS k
                     JOIN pg_proc AS kp ON kp.oid = k.keyed
                   WHERE kp.pronargdefaults <> 0
                      OR EXISTS (SELECT FROM pg_proc AS o
                                  WHERE o.pronamespace = kp.pronamespace AND o.proname = kp.proname
                                    AND o.oid <> kp.oid AND o.pronargs >= kp.pronargs
                                    AND o.pronargs - o.pronargdefaults <= kp.pronargs)$$,
    'a keyed form has no defaults, and no other function of its name can take as many arguments');

-- the same rights, security and settings as the unkeyed form
SELECT is_empty($$SELECT k.keyed::regprocedure FROM keyed_pair AS k
                     JOIN pg_proc AS kp ON kp.oid = k.keyed JOIN pg_proc AS up ON up.oid = k.unkeyed
                   WHERE kp.proacl IS DISTINCT FROM up.proacl OR kp.prosecdef <> up.prosecdef
                      OR kp.proconfig IS DISTINCT FROM up.proconfig OR kp.provolatile <> up.provolatile
                      OR kp.proowner <> up.proowner$$,
    'each keyed form has the rights, SECURITY DEFINER, settings and volatility of its unkeyed form');

-- the statements of a keyed form name the tenant: each tenant table it
-- reads, updates or deletes is filtered by its alias's tenant_id, and each INSERT
-- into one names tenant_id (on Citus, one shard group)
CREATE TEMPORARY VIEW tenant_table AS
SELECT c.relname::text AS name FROM pg_class AS c JOIN pg_attribute AS a ON a.attrelid = c.oid
 WHERE c.relnamespace = 'subscription'::regnamespace AND c.relkind = 'r' AND a.attname = 'tenant_id';
SELECT is_empty($$SELECT k.keyed::regprocedure, m[1] AS tenant_table, m[2] AS alias
                    FROM keyed_pair AS k JOIN pg_proc AS p ON p.oid = k.keyed,
                         regexp_matches(p.prosrc, '(?<!INSERT INTO )subscription\.(\w+) AS (\w+)', 'g') AS m
                   WHERE m[1] IN (SELECT name FROM tenant_table)
                     AND position(m[2] || '.tenant_id' IN p.prosrc) = 0$$,
    'every tenant table a keyed form reads or writes is filtered by its tenant_id');
SELECT is_empty($$SELECT k.keyed::regprocedure, m[1] AS tenant_table
                    FROM keyed_pair AS k JOIN pg_proc AS p ON p.oid = k.keyed,
                         regexp_matches(p.prosrc, 'INSERT INTO subscription\.(\w+)(?: AS \w+)?\s*\(([^)]*)\)', 'g') AS m
                   WHERE m[1] IN (SELECT name FROM tenant_table)
                     AND m[2] !~ '\mtenant_id\M'$$,
    'every INSERT of a keyed form into a tenant table names tenant_id');

SELECT * FROM finish();
ROLLBACK;

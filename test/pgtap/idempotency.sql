-- Idempotency keys (issue 20, item 4; Q1-Q4, docs/rules.md): every
-- mutating public function honours subscription.idempotency_key.  Read
-- from pg_proc, so that a new function that writes without it fails here:
-- its keyed form (or the C function) calls idempotent() with itself, and
-- its unkeyed form calls that keyed form.  test/sql/idempotency.sql calls
-- each kind of them.
BEGIN;
SELECT plan(7);
SET search_path = subscription, public;

-- The functions that write, as test/pgtap/keyed.sql finds them, keyed
-- forms included, but for these, each with its reason:
CREATE TEMPORARY TABLE not_idempotent (name text PRIMARY KEY, reason text NOT NULL);
INSERT INTO not_idempotent VALUES
    ('enforce_limit', 'DDL on an application table, run once by its owner'),
    ('unenforce_limit', 'DDL on an application table, run once by its owner'),
    ('recount_usage', 'a repair that sets the counters from the rows: a second run changes nothing'),
    ('verify', 'writes nothing'),
    ('migrate_subscriptions', 'every subscription of a plan, across tenants: a key is a tenant''s; a second run finds none left to migrate'),
    ('preview_migration', 'writes nothing'),
    ('renew_due', 'across tenants; renews each period once by itself (R1): a second run renews nothing'),
    ('run_renewals', 'across tenants; renews each period once by itself'),
    ('renew_local_tenants', 'across tenants; renews each period once by itself'),
    ('run_dunning', 'across tenants; takes each step of a ladder once by itself (D3)'),
    ('run_dunning_tenant', 'takes each step of a ladder once by itself (D3): a second run takes none'),
    ('preview_change_plan', 'writes nothing'),
    ('preview_set_quantity', 'writes nothing'),
    ('preview_purchase_addon', 'writes nothing'),
    ('preview_bundle_into_suite', 'writes nothing'),
    ('grant_application', 'rights of a role: no tenant'),
    ('grant_backoffice', 'rights of a role: no tenant'),
    ('grant_restore', 'rights of a role: no tenant'),
    ('revoke_application', 'rights of a role: no tenant'),
    ('revoke_backoffice', 'rights of a role: no tenant'),
    ('revoke_restore', 'rights of a role: no tenant'),
    ('create_account', 'creates the tenant a key would be kept under; the application keeps its own key of the account it creates'),
    ('distribute', 'Citus DDL, run once by the extension''s owner'),
    ('claim_events', 'a consumer''s claim is retried by design: at-least-once delivery (E4)'),
    ('ack_events', 'acknowledging again up to the same id changes nothing (E4)'),
    ('await_events', 'writes nothing: a listener''s hold of the doorbell for its session (events.c); again, it holds it once'),
    ('prune_events', 'a second run deletes what is left to delete'),
    ('prune_idempotency_keys', 'a second run deletes what is left to delete'),
    ('announce_renewals', 'writes renewal.upcoming once per period by itself (E5)'),
    ('apply_downgrade', 'applies the pending downgrade: a second call finds none and trims nothing (C4)'),
    ('meter', 'the catalog: no tenant'),
    ('plan_usage_price', 'the catalog: no tenant'),
    ('change_price', 'the catalog: no tenant'),
    ('change_limit', 'the catalog: no tenant');

CREATE TEMPORARY VIEW writer AS
SELECT p.oid, p.proname, p.prosrc, l.lanname, coalesce(p.proargnames[1], '') = 'tenant_id' AS keyed
  FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
 WHERE p.pronamespace = 'subscription'::regnamespace
   AND p.prokind IN ('f', 'p') AND p.provolatile = 'v'
   AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
   AND coalesce(obj_description(p.oid, 'pg_proc'), '') !~ '^Internal'
   AND p.proname NOT IN (SELECT name FROM not_idempotent);

-- the function a body passes to idempotent(): its first argument, a literal
CREATE TEMPORARY VIEW guarded AS
SELECT w.oid, (regexp_match(w.prosrc, 'subscription\.idempotent\(''([^'']+)'''))[1]::regprocedure AS passes
  FROM writer AS w
 WHERE w.lanname = 'plpgsql'
   AND w.prosrc ~ 'IF subscription\.idempotency_requested\(\) THEN';

SELECT cmp_ok((SELECT count(*)::int FROM writer), '>=', 50, 'at least the 50 writers of 1.1 are found');
SELECT is_empty($$SELECT w.oid::regprocedure FROM writer AS w
                   WHERE w.keyed AND w.lanname = 'plpgsql' AND NOT EXISTS (SELECT FROM guarded AS g WHERE g.oid = w.oid)$$,
    'every keyed form in PL/pgSQL starts with the idempotency key''s check');
SELECT is_empty($$SELECT g.oid::regprocedure, g.passes FROM guarded AS g WHERE g.passes::oid <> g.oid$$,
    'each passes itself to idempotent()');
SELECT is_empty($$SELECT w.oid::regprocedure FROM writer AS w
                   WHERE w.lanname = 'c' AND w.prosrc NOT IN ('license_consume', 'license_release', 'record_usage')$$,
    'the C functions that write are license_consume, license_release and record_usage (src/licenses.c and src/usage.c call idempotent())');
-- an unkeyed form calls its keyed form, which does it
SELECT is_empty($$SELECT w.oid::regprocedure FROM writer AS w
                   WHERE NOT w.keyed AND w.lanname <> 'c'
                     AND NOT EXISTS (SELECT FROM writer AS k JOIN guarded AS g ON g.oid = k.oid
                                      WHERE k.keyed AND k.proname = w.proname
                                        AND w.prosrc ~ format('subscription\.%s\(subscription\.tenant_of\w*\(', w.proname))$$,
    'every unkeyed form calls its keyed form, which checks the key');
SELECT is_empty($$SELECT name FROM not_idempotent AS n
                   WHERE NOT EXISTS (SELECT FROM pg_proc AS p WHERE p.pronamespace = 'subscription'::regnamespace AND p.proname = n.name)$$,
    'every exception names a function that exists');
-- the key is the tenant's: distribute() distributes it by tenant_id
SELECT is($$SELECT kind FROM distribution_plan() WHERE relation = 'subscription.idempotency_key'::regclass$$::text IS NOT NULL
          AND (SELECT kind FROM distribution_plan() WHERE relation = 'subscription.idempotency_key'::regclass) = 'distributed',
          true, 'idempotency_key is distributed by tenant_id (distribution_plan)');

SELECT * FROM finish();
ROLLBACK;

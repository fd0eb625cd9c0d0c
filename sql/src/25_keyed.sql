-- Keyed forms (docs/design.md#keyed-forms): every public function that
-- writes touches one tenant, and has a form whose first argument is that
-- tenant (tenant_id, the root account's id), which Citus routes to the
-- tenant's shard group in one hop.  The unkeyed form finds the tenant of
-- the id it is given (tenant_of) and calls the keyed form; the keyed form
-- first checks that the id is of that tenant (require_tenant).

-- The tenant of an account, a subscription or an add-on batch, by its id
-- alone (NULL for an unknown id), read through the index on the id
-- (src/tenants.c, as fill_tenant_id reads it).
CREATE FUNCTION subscription.tenant_of(kind text, id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'tenant_of'
LANGUAGE C STRICT STABLE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.tenant_of(text, bigint) IS
'Internal: the tenant of an account, a subscription or an add-on batch, by its id (NULL if unknown)';

-- A keyed form's first check: the id it is given is of the tenant it is
-- given, read by the key (one shard on Citus).  An unknown id, or a NULL
-- one, is left to the function, which says so as its unkeyed form does
-- (P0002, 22004); a NULL tenant with a known id is 22004, another tenant's
-- id 22023: nothing is written to another tenant.
CREATE FUNCTION subscription.require_tenant(fn text, tenant_id bigint, kind text, id bigint)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    owner bigint;
    found_by_key boolean;
BEGIN
    IF id IS NULL THEN
        RETURN;
    END IF;
    -- a statement per kind: one CASE of the three made a plan whose custom
    -- form (kind known) always looked cheaper than its generic one, so it
    -- was planned again at every call (about 0.1 ms, issue 21)
    IF kind = 'account' THEN
        found_by_key := EXISTS (SELECT FROM subscription.account AS a
                                 WHERE a.tenant_id = require_tenant.tenant_id AND a.id = require_tenant.id);
    ELSIF kind = 'subscription' THEN
        found_by_key := EXISTS (SELECT FROM subscription.subscription AS s
                                 WHERE s.tenant_id = require_tenant.tenant_id AND s.id = require_tenant.id);
    ELSIF kind = 'addon_batch' THEN
        found_by_key := EXISTS (SELECT FROM subscription.addon_batch AS b
                                 WHERE b.tenant_id = require_tenant.tenant_id AND b.id = require_tenant.id);
    END IF;
    IF found_by_key THEN
        RETURN;
    END IF;
    -- only on the way to an error: the id alone
    owner := subscription.tenant_of(kind, id);
    IF owner IS NULL THEN
        RETURN;
    END IF;
    IF require_tenant.tenant_id IS NULL THEN
        RAISE EXCEPTION 'argument "tenant_id" of %() must not be null', fn
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RAISE EXCEPTION '% % is not of tenant %', CASE kind WHEN 'addon_batch' THEN 'add-on batch' ELSE kind END,
                    id, require_tenant.tenant_id
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('%s() was given tenant %s and the id of a row of another tenant.', fn, require_tenant.tenant_id),
              HINT = format('The tenant is the root account''s id: subscription.%s(tenant_id, ...) takes the tenant of the %s first, or subscription.%s() without it finds it.',
                            fn, CASE kind WHEN 'addon_batch' THEN 'add-on batch' ELSE kind END, fn);
END
$$;

COMMENT ON FUNCTION subscription.require_tenant(text, bigint, text, bigint) IS
'Internal: a keyed form''s check that the id it is given is of its tenant (22023; 22004 for a NULL tenant)';

-- The keyed forms, for Citus's create_distributed_function(function,
-- tenant_argument, colocate_with := 'subscription.account'): every function
-- of the schema whose first argument is tenant_id.
CREATE FUNCTION subscription.distributed_functions()
RETURNS TABLE (function regprocedure, tenant_argument text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.oid::pg_catalog.regprocedure, p.proargnames[1]
      FROM pg_catalog.pg_proc AS p
     WHERE p.pronamespace OPERATOR(pg_catalog.=) 'subscription'::pg_catalog.regnamespace
       AND p.pronargs OPERATOR(pg_catalog.>) 0
       AND p.proargtypes[0] OPERATOR(pg_catalog.=) 'pg_catalog.int8'::pg_catalog.regtype
       AND p.proargnames[1] OPERATOR(pg_catalog.=) 'tenant_id'
     ORDER BY p.oid::pg_catalog.regprocedure::pg_catalog.text;
$$;

COMMENT ON FUNCTION subscription.distributed_functions() IS
'The keyed forms (first argument tenant_id) that Citus distributes with subscription.account: create_distributed_function(function, tenant_argument, colocate_with := ''subscription.account'')';

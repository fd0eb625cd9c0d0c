-- Rights: what an application role and a back-office role get (S5, S9).

-- The exact rights of each kind of role, one row per object: the single
-- list that grant_*, revoke_* and the ACL test read.
--   application: EXECUTE on what a member acting through the application
--     calls, and on what the views it reads call; SELECT on the catalog
--     and the views; new accounts and members, and their ids.
--   backoffice: the application's rights, EXECUTE on every function but
--     these grants, the history and event writers and the internal invoice
--     writers, SELECT on every table and sequence (reports, pg_dump),
--     and the catalog, accounts and members to write.
--   restore: what a restore of a dump by a role that is not a superuser
--     needs (docs/design.md#restores): EXECUTE and the tables to write as
--     back-office (the tables' checks call functions and lock the catalog,
--     the guards of restored tables are created), INSERT on every other
--     table, SELECT and UPDATE (setval) on every sequence.  Given for the
--     restore and taken back after it.
-- Neither the application nor the back-office writes subscriptions,
-- licenses, the ledger, the counters, the archive or history: the
-- functions do, as the extension's owner.
CREATE FUNCTION subscription.role_rights(kind text)
RETURNS TABLE (object_type text, object text, privileges text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    application_routines text[] := '{subscribe,set_quantity,change_plan,change_cycle,set_renewal,cancel,
        cancel_account,close_account,end_early,purchase_addon,cancel_addon,license_consume,license_release,licenses_left,
        apply_downgrade,preview_change_plan,preview_set_quantity,preview_purchase_addon,credit_balance,usage,
        bundle_into_suite,preview_bundle_into_suite,
        effective_limit,current_actor,calling_role,may_read,readable_accounts,coupon_discount,tier_for_hosts,prorate_refund,
        cycle_key,is_valid_cycle,renewal_options,plan_tiers,round_money,find_price,period_price,nth_period,
        cycle_text,sold_cycles,unknown_code,require_quantity,require_cycle,set_default,accept_terms,terms_in_effect,
        renewal_terms,renewal_notices,plan_version_or_current,next_plan,create_account,pause,resume,
        invoice_document,receipt_document,add_payment_method,has_feature,now,meter_now,preview_usage,integral_at}';
    catalog text[] := '{product,plan,plan_price,plan_limit,addon,addon_price,plan_addon,currency,terms,suite_component}';
    views text[] := '{license_holder,invoice,credit_statement,renewal_notice,receipt,open_balance,current_usage}';
BEGIN
    IF kind NOT IN ('application', 'backoffice', 'restore') THEN
        RAISE EXCEPTION 'unknown kind of role "%"', kind
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The kinds are application, backoffice and restore.';
    END IF;
    RETURN QUERY
    SELECT 'SCHEMA', 'subscription', 'USAGE'
    UNION ALL
    SELECT 'ROUTINE', p.oid::regprocedure::text, 'EXECUTE'
      FROM pg_catalog.pg_proc AS p
     WHERE p.pronamespace = 'subscription'::regnamespace
       AND CASE kind WHEN 'application' THEN p.proname = ANY (application_routines)
                     -- granting, writing history and events, and opening or settling
                     -- an invoice (which take their totals and what is paid from their
                     -- caller) are for the extension's owner alone
                     ELSE p.proname !~ '^((grant|revoke)_(application|backoffice|restore)|change_(column_)?rights|set_role_kind|(forget_)?dropped_roles?|write_histor(y|ies)|write_events?|insert_events|open_invoices?(_of)?|settle_invoice)$' END
    UNION ALL
    SELECT 'TABLE', 'subscription.' || c.relname,
           CASE WHEN kind IN ('backoffice', 'restore') AND (c.relname = ANY (catalog) OR c.relname IN ('coupon', 'account', 'member'))
                THEN 'SELECT, INSERT, UPDATE, DELETE'
                WHEN kind = 'restore' AND c.relkind = 'r' THEN 'SELECT, INSERT'
                WHEN kind = 'restore' AND c.relkind = 'S' THEN 'SELECT, UPDATE'
                ELSE 'SELECT' END
      FROM pg_catalog.pg_class AS c
     WHERE c.relnamespace = 'subscription'::regnamespace
       AND c.relkind IN ('r', 'v', 'S')
       AND CASE kind WHEN 'backoffice' THEN true
                     WHEN 'restore' THEN c.relkind IN ('r', 'S')
                     ELSE c.relname = ANY (catalog || views) END
    UNION ALL
    SELECT 'TABLE', 'subscription.' || t, 'INSERT, UPDATE' || CASE t WHEN 'member' THEN ', DELETE' ELSE '' END
      FROM unnest('{account,member}'::text[]) AS t
     WHERE kind = 'application'
    UNION ALL
    SELECT 'COLUMNS', 'subscription.' || t, 'SELECT (id)'
      FROM unnest('{account,member}'::text[]) AS t
     WHERE kind = 'application'
     ORDER BY 1, 2;
END
$$;

COMMENT ON FUNCTION subscription.role_rights(text) IS
'The exact rights grant_application() (kind application), grant_backoffice() (kind backoffice) and grant_restore() (kind restore) give';

-- GRANT (or REVOKE) the column rights of a kind of role (role_rights'
-- COLUMNS rows, the application's SELECT (id) on account and member) on
-- this node.  Citus refuses a column list in a GRANT on a distributed
-- table, propagates none, and makes its shards with the table's own rights
-- alone (issue 17): there each node gives them itself, on the table (the
-- coordinator's, or a worker's copy of it) and on each of its shards
-- placed on the node, with Citus' propagation off for these statements.
-- change_rights() runs it on the node of the call; the trigger
-- granted_role_columns on every placement of granted_role, written in the
-- same transaction, on every node (docs/citus.md#rights).
CREATE FUNCTION subscription.change_column_rights(role regrole, kind text, give boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    target text;
    targets text[];
    shards text[];
    on_citus boolean := subscription.distributed();
    propagation text;
BEGIN
    PERFORM subscription.require_arguments('change_column_rights', '{role,kind,give}',
        ARRAY[role IS NULL, kind IS NULL, give IS NULL]);
    -- a role dropped since its row in granted_role was written (DROP ROLE
    -- leaves the row, forget_dropped_roles() deletes it): nothing to give
    -- or take back
    IF subscription.dropped_role(role) THEN
        RETURN;
    END IF;
    IF on_citus THEN
        propagation := pg_catalog.current_setting('citus.enable_ddl_propagation');
        PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', 'off', true);
    END IF;
    FOR r IN SELECT * FROM subscription.role_rights(kind) AS x WHERE x.object_type = 'COLUMNS' LOOP
        -- only the tables' owner gives them (a GRANT by another role that
        -- holds rights on the table gives nothing, with a warning): on
        -- Citus a row of granted_role written by another role, a restore
        -- into a distributed database, is refused here on every node
        PERFORM subscription.require_table_owner(r.object::pg_catalog.regclass);
        targets := ARRAY[r.object];
        IF on_citus THEN
            EXECUTE 'SELECT pg_catalog.array_agg(pg_catalog.shard_name($1, s.shard) ORDER BY s.shard)
                       FROM pg_catalog.unnest(subscription.local_shards($1)) AS s (shard)
                      WHERE s.shard IS NOT NULL'
               INTO shards USING r.object::regclass;
            targets := targets || coalesce(shards, '{}');
        END IF;
        FOREACH target IN ARRAY targets LOOP
            EXECUTE format(CASE WHEN give THEN 'GRANT %s ON TABLE %s TO %s' ELSE 'REVOKE %s ON TABLE %s FROM %s' END,
                           r.privileges, target, role);
        END LOOP;
    END LOOP;
    IF on_citus THEN
        PERFORM pg_catalog.set_config('citus.enable_ddl_propagation', propagation, true);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.change_column_rights(regrole, text, boolean) IS
'Internal: GRANT or REVOKE the column rights of a kind of role (role_rights) on this node: the table and, on Citus, its shards placed here';

-- GRANT (or REVOKE) the rights of a kind of role.
CREATE FUNCTION subscription.change_rights(role regrole, kind text, give boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    on_citus boolean := subscription.distributed();
    mode text;
BEGIN
    PERFORM subscription.require_arguments('change_rights', '{role,kind,give}',
        ARRAY[role IS NULL, kind IS NULL, give IS NULL]);
    IF on_citus THEN
        -- Citus sends a GRANT on a distributed table to its shards over
        -- several connections a node, after which it refuses one on a
        -- reference table (the catalog) in the transaction: one connection,
        -- for these statements only (the caller's setting given back)
        mode := pg_catalog.current_setting('citus.multi_shard_modify_mode');
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    FOR r IN SELECT * FROM subscription.role_rights(kind) AS x WHERE x.object_type <> 'COLUMNS' LOOP
        EXECUTE format(CASE WHEN give THEN 'GRANT %s ON %s %s TO %s' ELSE 'REVOKE %s ON %s %s FROM %s' END,
                       r.privileges, r.object_type, r.object, role);
    END LOOP;
    PERFORM subscription.change_column_rights(role, kind, give);
    IF on_citus THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', mode, true);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.change_rights(regrole, text, boolean) IS 'Internal: GRANT or REVOKE the rights of a kind of role (role_rights)';

-- Whether a role named in granted_role was dropped since (DROP ROLE leaves
-- its rows: a role cannot depend on a row), by this node's roles: on
-- Citus each placement of granted_role names a role by the OID of its own
-- node (it resolved the role's name there), so each node decides by its
-- own.  Declared IMMUTABLE, which it is not, for that alone: Citus runs a
-- DELETE on a reference table's placements only with immutable functions
-- of its columns (refusing STABLE ones, so that placements cannot
-- diverge).  Its sublink keeps it from being inlined (a SQL-standard
-- body, bound at creation: no SET clause); it is called only on a column
-- or a variable, never where a plan could keep its result.
CREATE FUNCTION subscription.dropped_role(role oid)
RETURNS boolean
LANGUAGE sql IMMUTABLE
RETURN NOT EXISTS (SELECT FROM pg_catalog.pg_roles AS a WHERE a.oid = role);

COMMENT ON FUNCTION subscription.dropped_role(oid) IS
'Internal: whether a role named in granted_role was dropped, by this node''s roles';

-- The rows of granted_role whose role was dropped, deleted on every node:
-- distribute() and a grant_*() or revoke_*() would give or take rights to
-- a role that is gone (review h-rev7), and a role made later with the same
-- OID must not inherit its kind.
CREATE FUNCTION subscription.forget_dropped_roles()
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    DELETE FROM subscription.granted_role AS g WHERE subscription.dropped_role(g.role);
END;

COMMENT ON FUNCTION subscription.forget_dropped_roles() IS
'Internal: delete the rows of granted_role whose role was dropped';

-- grant_KIND: the rights, and the role remembered; revoke_KIND: the
-- rights taken back, except those its other kind still gives.
CREATE FUNCTION subscription.set_role_kind(role regrole, kind text, give boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    other text;
BEGIN
    IF role IS NULL THEN
        RAISE EXCEPTION 'argument "role" of %_%() must not be null', CASE WHEN give THEN 'grant' ELSE 'revoke' END, kind
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM subscription.forget_dropped_roles();
    IF give THEN
        PERFORM subscription.change_rights(role, kind, true);
        INSERT INTO subscription.granted_role AS g (role, kind) VALUES (role, kind) ON CONFLICT ON CONSTRAINT granted_role_pkey DO UPDATE SET kind = g.kind;
        RETURN;
    END IF;
    DELETE FROM subscription.granted_role AS g WHERE g.role = set_role_kind.role AND g.kind = set_role_kind.kind;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role % was not given the % rights', role, kind
            USING ERRCODE = 'undefined_object',
                  HINT = format('subscription.grant_%s() gives them.', kind);
    END IF;
    PERFORM subscription.change_rights(role, kind, false);
    FOR other IN SELECT g.kind FROM subscription.granted_role AS g WHERE g.role = set_role_kind.role LOOP
        PERFORM subscription.change_rights(role, other, true);
    END LOOP;
    -- on Citus the REVOKE of a table privilege reached the shards, where it
    -- took every column's too (the application's SELECT (id) of a role that
    -- was also back office), and the loop above gave the kinds left again on
    -- this node alone: their rows, touched, give them again on every node
    -- (granted_role_columns)
    IF subscription.distributed() THEN
        UPDATE subscription.granted_role AS g SET kind = g.kind WHERE g.role = set_role_kind.role;
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.set_role_kind(regrole, text, boolean) IS 'Internal: what grant_* and revoke_* do';

-- On Citus, the column rights of a role given (or taken back) reach every
-- node through its row in granted_role, a reference table written on
-- every node in the caller's transaction (so a role created in it is
-- there): this trigger fires on each placement and gives them on its node
-- (change_column_rights).  A second grant_*() updates the row, and gives
-- them again (shards made since, by a rebalance or a new node, which Citus
-- makes with the table's rights alone).  On a single server change_rights()
-- gives them, and the trigger does nothing.  It runs as the extension's
-- owner on every node (the functions it calls are granted on the
-- coordinator alone), and change_column_rights() lets only the tables'
-- owner give the rights: on a distributed database a restore role writing
-- granted_role is refused alike on every node (42501).
CREATE FUNCTION subscription.granted_role_columns()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subscription.distributed() THEN
        IF TG_OP = 'DELETE' THEN
            PERFORM subscription.change_column_rights(OLD.role, OLD.kind, false);
        ELSE
            PERFORM subscription.change_column_rights(NEW.role, NEW.kind, true);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.granted_role_columns() IS
'Trigger: on Citus, the column rights of a role given or taken back, on the node of each placement of granted_role';

CREATE TRIGGER granted_role_columns
    AFTER INSERT OR UPDATE OR DELETE ON subscription.granted_role
    FOR EACH ROW EXECUTE FUNCTION subscription.granted_role_columns();

COMMENT ON TRIGGER granted_role_columns ON subscription.granted_role IS
'On Citus, the column rights of a role given or taken back reach every node (granted_role_columns)';

CREATE FUNCTION subscription.grant_application(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'application', true);
END;

COMMENT ON FUNCTION subscription.grant_application(regrole) IS
'Give a role the rights of an application: EXECUTE on the application''s functions, the catalog and the views (see role_rights)';

CREATE FUNCTION subscription.grant_backoffice(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'backoffice', true);
END;

COMMENT ON FUNCTION subscription.grant_backoffice(regrole) IS
'Give a role the rights of back-office code, trusted without an actor (see role_rights)';

CREATE FUNCTION subscription.revoke_application(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'application', false);
END;

COMMENT ON FUNCTION subscription.revoke_application(regrole) IS
'Take back what grant_application() gave';

CREATE FUNCTION subscription.revoke_backoffice(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'backoffice', false);
END;

COMMENT ON FUNCTION subscription.revoke_backoffice(regrole) IS
'Take back what grant_backoffice() gave';

-- A restore by a role that is not a superuser (docs/design.md#restores):
-- the extension's owner gives the rights to the restoring role after
-- CREATE EXTENSION in the empty database, and takes them back after it.
CREATE FUNCTION subscription.grant_restore(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'restore', true);
END;

COMMENT ON FUNCTION subscription.grant_restore(regrole) IS
'Give a role what a restore of a dump needs, and mark its copied rows as such (see role_rights, restored_copy)';

CREATE FUNCTION subscription.revoke_restore(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'restore', false);
END;

COMMENT ON FUNCTION subscription.revoke_restore(regrole) IS
'Take back what grant_restore() gave';

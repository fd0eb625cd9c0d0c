-- Plan limits: what an account may use and what it uses, the limit guard
-- (C) on the application's own tables, their registration and the event
-- triggers that keep it intact (S6, S10), and the limits stored in the
-- usage counters.

-- A feature is named by a plan limit or an add-on; anything else is 42704.
CREATE FUNCTION subscription.require_feature(feature text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM subscription.plan_limit AS l WHERE l.feature = require_feature.feature
    UNION ALL
    SELECT FROM subscription.addon AS a WHERE a.feature = require_feature.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" does not exist', feature
            USING ERRCODE = 'undefined_object',
                  HINT = 'Features are those of subscription.plan_limit and subscription.addon.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_feature(text) IS 'Internal: 42704 unless a plan limit or add-on names the feature';

-- What an account's plans and add-ons grant, per feature (of one feature,
-- or of all when feature is NULL): over its active subscriptions, each
-- plan's value at the version the subscription holds (times the quantity
-- when per license: LogMeIn hosts are the tier, L12), plus the units of
-- active add-on batches (Z13, K1).  A suite subscription counts the values
-- of the plans it includes besides its own (at their current versions), at
-- its quantity, as if each were subscribed (Z3); with a separate
-- subscription of an included product they add up, like any two.  NULL is
-- unlimited: one unlimited plan makes the feature unlimited.  A trial has
-- its plan's limits, and so has a past-due subscription (D2).  A feature no active subscription or add-on names has
-- no row (name: the feature).  numeric, so that the caller's cast makes an overflow an error,
-- not a wrap.  One statement, naming the tenant (issue 17); the limits ask
-- it of one feature (granted_limit), the entitlements of all
-- (refresh_entitlements).
CREATE FUNCTION subscription.granted_limits(tenant_id bigint, account_id bigint, feature text)
RETURNS TABLE (name text, value numeric)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT x.feature, CASE WHEN bool_or(x.unlimited) THEN NULL ELSE coalesce(sum(x.units), 0) END
      FROM (SELECT l.feature, l.value IS NULL AS unlimited,
                   CASE WHEN l.per_license THEN l.value::numeric * s.quantity
                        ELSE l.value::numeric END AS units
              FROM subscription.subscription AS s
              CROSS JOIN LATERAL (SELECT s.plan, s.plan_version
                                  UNION ALL
                                  SELECT sc.plan, ip.version
                                    FROM subscription.suite_component AS sc
                                    JOIN subscription.plan AS ip ON ip.code = sc.plan
                                   WHERE sc.suite_plan = s.plan) AS p (plan, version)
              JOIN subscription.plan_limit AS l
                ON l.plan = p.plan
               AND (granted_limits.feature IS NULL OR l.feature = granted_limits.feature)
               -- the version of the plan the subscription holds (grandfathering)
               AND l.versions @> p.version
             WHERE s.tenant_id = granted_limits.tenant_id AND s.account_id = granted_limits.account_id
               AND subscription.status_grants(s.status)
            UNION ALL
            SELECT a.feature, false, b.quantity::numeric * a.units
              FROM subscription.subscription AS s
              JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id
              JOIN subscription.addon AS a ON a.code = b.addon
             WHERE s.tenant_id = granted_limits.tenant_id AND s.account_id = granted_limits.account_id
               AND subscription.status_grants(s.status)
               AND b.status = 'active'
               -- an add-on without a feature grants none
               AND a.feature IS NOT NULL
               AND (granted_limits.feature IS NULL OR a.feature = granted_limits.feature)) AS x
     GROUP BY x.feature;
END
$$;

COMMENT ON FUNCTION subscription.granted_limits(bigint, bigint, text) IS
'Internal: what the account''s active plans and add-ons grant per feature (of one, or all; NULL: unlimited), frozen or not';

-- What an account's plans and add-ons grant of a feature (granted_limits):
-- 0 when nothing grants it, NULL when unlimited.
CREATE FUNCTION subscription.granted_limit(tenant_id bigint, account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    granted numeric;
BEGIN
    SELECT g.value INTO granted
      FROM subscription.granted_limits(granted_limit.tenant_id, granted_limit.account_id, granted_limit.feature) AS g;
    IF NOT FOUND THEN
        RETURN 0;
    END IF;
    RETURN granted::bigint;
END
$$;

COMMENT ON FUNCTION subscription.granted_limit(bigint, bigint, text) IS
'Internal: what the account''s active plans and add-ons grant of a feature (NULL: unlimited), frozen or not';

-- The account's limit of a feature: what its plans and add-ons grant,
-- and 0 while it is frozen (issue 19): a frozen account may grow nothing.
CREATE FUNCTION subscription.limit_of(tenant_id bigint, account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subscription.freezing_subscription(limit_of.tenant_id, limit_of.account_id) IS NOT NULL THEN
        RETURN 0;
    END IF;
    RETURN subscription.granted_limit(limit_of.tenant_id, limit_of.account_id, limit_of.feature);
END
$$;

COMMENT ON FUNCTION subscription.limit_of(bigint, bigint, text) IS
'Internal: the account''s limit of a feature, unchecked (effective_limit checks) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form
CREATE FUNCTION subscription.limit_of(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.limit_of(subscription.tenant_of('account', limit_of.account_id), limit_of.account_id, limit_of.feature);
END
$$;

COMMENT ON FUNCTION subscription.limit_of(bigint, text) IS 'Internal: the account''s limit of a feature, unchecked (effective_limit checks)';

-- The catalog's limit version (issue 17): (rows, exclusive or of the
-- stamps) over the catalog tables limit_of() reads, each row stamped with a
-- hash of its content by stamp_limit_change() (10_catalog.sql, where the
-- argument is): the same on every node.  A view
-- (one row), read by limit_catalog_version() and, on Citus, directly: Citus
-- plans no statement into which a SQL function over its tables is inlined.
CREATE VIEW subscription.limit_catalog_versions (version) AS
    SELECT ARRAY[pg_catalog.count(*), coalesce(pg_catalog.bit_xor(x.stamp), 0)]
      FROM (SELECT l.limit_stamp FROM subscription.plan_limit AS l
            UNION ALL
            SELECT a.limit_stamp FROM subscription.addon AS a
            UNION ALL
            SELECT sc.limit_stamp FROM subscription.suite_component AS sc
            UNION ALL
            SELECT p.limit_stamp FROM subscription.plan AS p) AS x (stamp);

COMMENT ON VIEW subscription.limit_catalog_versions IS
'Internal: the catalog''s limit version (rows, exclusive or of their stamps) of the tables limit_of() reads, one row';

CREATE FUNCTION subscription.limit_catalog_version()
RETURNS SETOF bigint[]
LANGUAGE sql STABLE PARALLEL SAFE
-- one row; a set so that it is inlined where it is read (FROM ... AS c
-- (version)): the guard's cached plan reads the catalog, with no call
BEGIN ATOMIC
    SELECT v.version FROM subscription.limit_catalog_versions AS v;
END;

COMMENT ON FUNCTION subscription.limit_catalog_version() IS
'Internal: the catalog''s limit version (rows, exclusive or of their stamps) of the tables limit_of() reads';

-- A usage counter's limit as the guard checks it: the stored one while it
-- was computed at the catalog's current limit version, else limit_of()
-- (issue 17: a catalog change reaches the counters without writing them).
-- Inlined into the guard's statements (no SET clause), where a fresh
-- counter costs a comparison.
CREATE FUNCTION subscription.counter_limit(account_id bigint, feature text, stored bigint,
                                           stored_version bigint[], catalog_version bigint[],
                                           in_tenant bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN stored_version OPERATOR(pg_catalog.=) catalog_version THEN stored
            -- the counter's tenant when the caller names it (on Citus)
            WHEN in_tenant IS NOT NULL THEN subscription.limit_of(in_tenant, account_id, feature)
            ELSE subscription.limit_of(account_id, feature) END;

COMMENT ON FUNCTION subscription.counter_limit(bigint, text, bigint, bigint[], bigint[], bigint) IS
'Internal: a usage counter''s limit, stored or recomputed when the catalog''s limit version moved';

-- limit_of() for callers: unknown accounts and features are errors.
CREATE FUNCTION subscription.effective_limit(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_account(effective_limit.account_id);
    PERFORM subscription.authorize(effective_limit.account_id, 'read');
    PERFORM subscription.require_feature(effective_limit.feature);
    RETURN subscription.limit_of(account_id, feature);
END
$$;

COMMENT ON FUNCTION subscription.effective_limit(bigint, text) IS
'The account''s limit of a feature over its active subscriptions and add-ons (NULL: unlimited)';

-- What the account uses of a feature, as the limit triggers keep it.
CREATE FUNCTION subscription.usage(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    used bigint;
BEGIN
    PERFORM subscription.require_account(usage.account_id);
    PERFORM subscription.authorize(usage.account_id, 'read');
    SELECT u.used INTO used FROM subscription.usage_counter AS u
     WHERE u.account_id = usage.account_id AND u.feature = usage.feature;
    IF FOUND THEN
        RETURN used;
    END IF;
    PERFORM subscription.require_feature(usage.feature);
    RETURN 0;
END
$$;

COMMENT ON FUNCTION subscription.usage(bigint, text) IS
'What the account uses of a feature, from subscription.usage_counter';

CREATE FUNCTION subscription.limit_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'limit_guard'
LANGUAGE C;

COMMENT ON FUNCTION subscription.limit_guard() IS 'Trigger (C): keeps an account''s usage of a feature within its limit on an application table';

-- The column "name" of "relation" with its type, or an error naming what is wrong.
CREATE FUNCTION subscription.limited_column(relation regclass, name name, purpose text, integer_only boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_type regtype;
BEGIN
    SELECT a.atttypid::regtype INTO column_type
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = relation AND a.attname = name
       AND a.attnum > 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', name, relation
            USING ERRCODE = 'undefined_column', DETAIL = format('It was given as the %s.', purpose);
    END IF;
    IF integer_only AND column_type NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'column "%" of relation % must be an integer column to serve as the %', name, relation, purpose
            USING ERRCODE = 'datatype_mismatch', DETAIL = format('Its type is %s.', column_type);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.limited_column(regclass, name, text, boolean) IS 'Internal: the column of a registration exists, and is an integer where needed';

-- Make the usage counters of a registered table exact (all accounts, or
-- one), counting its rows as the table's owner; returns how many counters
-- changed.  enforce_limit and apply_downgrade call it; back-office code
-- may, to repair a counter after the guards were off.
CREATE FUNCTION subscription.recount_usage(relation regclass, feature text, account_id bigint DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'recount_usage'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.recount_usage(regclass, text, bigint) IS
'Recount a limited table''s usage counters (of one account, or of all) as the table''s owner; returns how many changed';

-- Citus (issue 17): the recount of a distributed table counts each shard
-- on its node, as the table's owner there; recount_usage calls it on the
-- coordinator over the extension owner's connections, once per shard
-- group or on one account's (src/limits.c, CountShardsOnNodes), so that
-- the counters' writes and enforce_limit's triggers follow on the
-- connections that read.
CREATE FUNCTION subscription.shard_usage(account_shard regclass, relation regclass, feature text,
                                         account bigint)
RETURNS TABLE (account_id bigint, used bigint, smallest bigint)
AS 'MODULE_PATHNAME', 'shard_usage'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.shard_usage(regclass, regclass, text, bigint) IS
'Internal (Citus): the recount (of one account, or of all) of the shard of a limited table colocated with a shard of account on this node, as the table''s owner';

-- Every backend drops what it cached of a table's limit registrations, at
-- the commit of the calling transaction: enforce_limit and unenforce_limit
-- call it, since on the extension's own tables no trigger is created or
-- dropped that would.
CREATE FUNCTION subscription.invalidate_limit_cache(relation regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'invalidate_limit_cache'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.invalidate_limit_cache(regclass) IS
'Internal (C): every backend drops its cached limit registrations of a table at commit';

-- The limit guard keeps the catalog's limit version between statements
-- (src/limits.c, GuardCatalogVersion) and reads it again only after a
-- statement changed one of the tables it is computed from: this trigger
-- invalidates the table's relcache entry, for every backend at the commit
-- (for this one at once, and again if it rolls back).  Enabled always, so
-- that a restore in replica mode invalidates too.
CREATE FUNCTION subscription.limit_catalog_invalidates()
RETURNS trigger
AS 'MODULE_PATHNAME', 'limit_catalog_invalidates'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.limit_catalog_invalidates() IS
'Internal (C trigger): a change of a table the catalog''s limit version is computed from invalidates the limit guard''s kept version';

CREATE TRIGGER limit_catalog_invalidates AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription.plan_limit
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_catalog_invalidates();
CREATE TRIGGER limit_catalog_invalidates AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription.addon
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_catalog_invalidates();
CREATE TRIGGER limit_catalog_invalidates AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription.suite_component
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_catalog_invalidates();
CREATE TRIGGER limit_catalog_invalidates AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription.plan
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_catalog_invalidates();
ALTER TABLE subscription.plan_limit ENABLE ALWAYS TRIGGER limit_catalog_invalidates;
ALTER TABLE subscription.addon ENABLE ALWAYS TRIGGER limit_catalog_invalidates;
ALTER TABLE subscription.suite_component ENABLE ALWAYS TRIGGER limit_catalog_invalidates;
ALTER TABLE subscription.plan ENABLE ALWAYS TRIGGER limit_catalog_invalidates;

-- A logical replication subscriber's apply worker fires row triggers only
-- (enabled replica or always), no statement trigger: the same
-- invalidation per row, in replica mode only, so that a catalog change
-- applied there reaches the kept versions of the subscriber's backends
-- (test/replica.sh).  A restore in replica mode fires both: one more
-- invalidation, the same effect.
CREATE TRIGGER limit_catalog_replica_invalidates AFTER INSERT OR UPDATE OR DELETE ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.limit_catalog_invalidates();
CREATE TRIGGER limit_catalog_replica_invalidates AFTER INSERT OR UPDATE OR DELETE ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.limit_catalog_invalidates();
CREATE TRIGGER limit_catalog_replica_invalidates AFTER INSERT OR UPDATE OR DELETE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.limit_catalog_invalidates();
CREATE TRIGGER limit_catalog_replica_invalidates AFTER INSERT OR UPDATE OR DELETE ON subscription.plan
    FOR EACH ROW EXECUTE FUNCTION subscription.limit_catalog_invalidates();
ALTER TABLE subscription.plan_limit ENABLE REPLICA TRIGGER limit_catalog_replica_invalidates;
ALTER TABLE subscription.addon ENABLE REPLICA TRIGGER limit_catalog_replica_invalidates;
ALTER TABLE subscription.suite_component ENABLE REPLICA TRIGGER limit_catalog_replica_invalidates;
ALTER TABLE subscription.plan ENABLE REPLICA TRIGGER limit_catalog_replica_invalidates;

-- A table's logical name, schema-qualified and quoted: how limited_table
-- names it (relation_name), and what the limit guard compares on a Citus
-- worker, where the registration's regclass is another node's OID.
CREATE FUNCTION subscription.relation_name(relation regclass)
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT pg_catalog.format('%I.%I', n.nspname, c.relname)
      FROM pg_catalog.pg_class AS c
      JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
     WHERE c.oid OPERATOR(pg_catalog.=) relation_name.relation;
END;

COMMENT ON FUNCTION subscription.relation_name(regclass) IS 'Internal: a table''s schema-qualified name, as limited_table names it';

-- A registration written without its table's name (a row of a 1.0 dump,
-- restored into 1.1) is named from its regclass.
CREATE FUNCTION subscription.name_limited_table()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.relation_name IS NULL THEN
        NEW.relation_name := subscription.relation_name(NEW.relation);
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.name_limited_table() IS 'Trigger: a limit registration without its table''s name is named from its regclass';

CREATE TRIGGER limited_table_named
    BEFORE INSERT ON subscription.limited_table
    FOR EACH ROW EXECUTE FUNCTION subscription.name_limited_table();
-- also in a restore with session_replication_role = replica
-- (docs/design.md#restores), which loads such rows
ALTER TABLE subscription.limited_table ENABLE ALWAYS TRIGGER limited_table_named;

-- Where Citus is present, a registration changed on the coordinator reaches
-- the guards' caches on every node: the trigger fires on each placement of
-- limited_table (a reference table) and drops every backend's cached
-- registrations there (src/limits.c); on a single server
-- invalidate_limit_cache() does it, table by table, and the trigger
-- invalidates limited_table's own entry: record_usage's kept checks of its
-- features (src/usage.c, issue 21) watch it.
CREATE FUNCTION subscription.limit_registrations_invalidate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'limit_registrations_invalidate'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.limit_registrations_invalidate() IS
'Trigger (C): on Citus, every backend of the node drops its cached limit registrations at commit; on a single server, record_usage''s kept feature checks';

CREATE TRIGGER limited_table_invalidates
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription.limited_table
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_registrations_invalidate();
ALTER TABLE subscription.limited_table ENABLE ALWAYS TRIGGER limited_table_invalidates;
-- in replica mode too, as limit_catalog_replica_invalidates: a registration
-- restored in replica mode, or applied by a logical-replication
-- subscriber (row triggers only), reaches record_usage's kept checks
CREATE TRIGGER limited_table_replica_invalidates
    AFTER INSERT OR UPDATE OR DELETE ON subscription.limited_table
    FOR EACH ROW EXECUTE FUNCTION subscription.limit_registrations_invalidate();
ALTER TABLE subscription.limited_table ENABLE REPLICA TRIGGER limited_table_replica_invalidates;

-- Whether this server is a Citus worker (its group is not the
-- coordinator's): a DDL command there is the coordinator's, propagated to
-- its shell tables and shards, and the registrations in limited_table (a
-- reference table) are the coordinator's, kept by its event triggers.
-- Citus's catalog is read only where it exists.
CREATE FUNCTION subscription.on_citus_worker()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    worker boolean;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_local_group') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_local_group WHERE groupid <> 0)' INTO worker;
    RETURN worker;
END
$$;

COMMENT ON FUNCTION subscription.on_citus_worker() IS 'Internal: whether this server is a Citus worker, whose DDL is the coordinator''s';

-- The guard triggers of a registration, by function and argument, not by
-- name: 4 when intact.
CREATE FUNCTION subscription.guard_triggers(relation regclass, feature text)
RETURNS TABLE (name name, enabled boolean)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT t.tgname, t.tgenabled OPERATOR(pg_catalog.=) ANY ('{O,A}')
      FROM pg_catalog.pg_trigger AS t
     WHERE t.tgrelid OPERATOR(pg_catalog.=) guard_triggers.relation
       AND t.tgfoid OPERATOR(pg_catalog.=) 'subscription.limit_guard()'::pg_catalog.regprocedure
       AND t.tgnargs OPERATOR(pg_catalog.=) 1
       AND pg_catalog.encode(t.tgargs, 'escape') OPERATOR(pg_catalog.=) (guard_triggers.feature OPERATOR(pg_catalog.||) '\000');
END;

COMMENT ON FUNCTION subscription.guard_triggers(regclass, text) IS 'The limit guard triggers of a registration, found by function and argument';

-- What is wrong with a registration, or NULL: its table must stay a plain
-- table outside any partition or inheritance tree, its columns must keep
-- their names and types, and its four guards must stay attached and enabled.
CREATE FUNCTION subscription.registration_problem(t subscription.limited_table)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c pg_catalog.pg_class;
    col record;
    guards integer;
    enabled integer;
BEGIN
    SELECT * INTO c FROM pg_catalog.pg_class AS x WHERE x.oid = t.relation;
    IF c.relkind <> 'r' OR c.relispartition
       OR EXISTS (SELECT FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid) THEN
        RETURN 'it would be part of a partition or inheritance tree, whose other tables its guards do not see';
    END IF;
    FOR col IN
        SELECT u.name, u.purpose, u.numeric_only, a.atttypid
          FROM (VALUES (t.account_column, 'account column', true),
                       (t.value_column, 'value column', t.on_downgrade = ANY ('{scale,cap}')),
                       (t.order_column, 'order column', false)) AS u(name, purpose, numeric_only)
          LEFT JOIN pg_catalog.pg_attribute AS a
            ON a.attrelid = t.relation AND a.attname = u.name AND a.attnum > 0 AND NOT a.attisdropped
         WHERE u.name IS NOT NULL
    LOOP
        IF col.atttypid IS NULL THEN
            RETURN format('its %s "%s" would be gone', col.purpose, col.name);
        ELSIF col.numeric_only AND col.atttypid <> ALL ('{int2,int4,int8}'::regtype[]) THEN
            RETURN format('its %s "%s" would be of type %s, not smallint, integer or bigint',
                          col.purpose, col.name, col.atttypid::regtype);
        END IF;
    END LOOP;
    SELECT count(*), count(*) FILTER (WHERE g.enabled) INTO guards, enabled
      FROM subscription.guard_triggers(t.relation, t.feature) AS g;
    IF t.relation <> 'subscription.account'::regclass AND (guards < 4 OR enabled < guards) THEN
        RETURN 'its limit guards would be dropped or disabled';
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.registration_problem(subscription.limited_table) IS 'What is wrong with a limit registration (tree, columns, guards), or NULL';

-- ddl_command_end: a registered table keeps what its guard relies on.  The
-- DDL that would break it is refused (the owner can unenforce_limit first),
-- except in a restore (restoring_role) while the table has no guard yet.
CREATE FUNCTION subscription.keep_limited_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t subscription.limited_table;
    problem text;
    renamed record;
BEGIN
    -- on a Citus worker the command is the coordinator's, which checks it
    IF subscription.on_citus_worker() THEN
        RETURN;
    END IF;
    -- a renamed table (or schema) keeps its registrations: their names
    -- follow it, one row at a time (Citus refuses an UPDATE of a reference
    -- table that calls a function on its columns)
    FOR renamed IN
        SELECT l.feature, subscription.relation_name(l.relation) AS name
          FROM subscription.limited_table AS l
         WHERE l.relation_name <> subscription.relation_name(l.relation)
    LOOP
        -- by its feature (unique): on Citus the statement runs on every
        -- node, where the regclass would be resolved by the table's name
        UPDATE subscription.limited_table AS l SET relation_name = renamed.name
         WHERE l.feature = renamed.feature;
    END LOOP;
    FOR t IN
        SELECT DISTINCT ON (l.relation, l.feature) l.*
          FROM pg_catalog.pg_event_trigger_ddl_commands() AS d
          JOIN subscription.limited_table AS l
            ON l.relation = d.objid
            -- a new child or partition of a registered table
            OR l.relation IN (SELECT i.inhparent FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = d.objid)
         WHERE d.classid = 'pg_catalog.pg_class'::regclass
    LOOP
        -- a restore by a role given grant_restore() creates a registered
        -- table's constraints before its guards: none of them exists yet
        CONTINUE WHEN subscription.restoring_role()
                  AND NOT EXISTS (SELECT FROM subscription.guard_triggers(t.relation, t.feature));
        problem := subscription.registration_problem(t);
        IF problem IS NOT NULL THEN
            RAISE EXCEPTION 'table % is limited for feature "%"', t.relation, t.feature
                USING ERRCODE = 'object_in_use',
                      DETAIL = format('After this command %s.', problem),
                      HINT = format('Run subscription.unenforce_limit(%L, %L) first.', t.relation::text, t.feature);
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.keep_limited_tables() IS 'Event trigger: refuses DDL that would break a limited table''s guards';

CREATE EVENT TRIGGER subscription_keep_limited_tables ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION subscription.keep_limited_tables();

-- sql_drop: a dropped table takes its registrations and counters along;
-- a guard trigger of a table still registered cannot be dropped.  It fires
-- on every DROP in the database, whoever drops: SECURITY DEFINER, so that
-- a role without rights on the extension's tables can still drop its own.
CREATE FUNCTION subscription.forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registration subscription.limited_table;
    dropped text[];
    features text[];
BEGIN
    -- On a Citus worker a DROP is the coordinator's, propagated to the
    -- shell tables and shards there (or Citus's own, of a shard): the
    -- registrations, a reference table, are the coordinator's and name
    -- its OIDs, and the coordinator's trigger forgets them.  Writing them
    -- from here would be refused, and fail every DROP.
    IF subscription.on_citus_worker() THEN
        RETURN;
    END IF;
    -- in steps of single-table statements, which Citus runs on a
    -- reference table and a distributed usage_counter alike; the tables
    -- by name (a table's identity is its schema-qualified name, as
    -- relation_name), which every node compares alike
    SELECT pg_catalog.array_agg(d.object_identity) INTO dropped
      FROM pg_catalog.pg_event_trigger_dropped_objects() AS d
     WHERE d.object_type = 'table';
    IF dropped IS NOT NULL THEN
        WITH gone AS (
            DELETE FROM subscription.limited_table AS t
             WHERE t.relation_name = ANY (dropped)
            RETURNING t.feature)
        SELECT pg_catalog.array_agg(gone.feature) INTO features FROM gone;
        IF features IS NOT NULL THEN
            DELETE FROM subscription.usage_counter AS u WHERE u.feature = ANY (features);
        END IF;
    END IF;

    FOR registration IN
        SELECT l.* FROM subscription.limited_table AS l
         WHERE l.relation IN (
               SELECT pg_catalog.to_regclass(pg_catalog.quote_ident(d.address_names[1]) || '.'
                                             || pg_catalog.quote_ident(d.address_names[2]))
                 FROM pg_catalog.pg_event_trigger_dropped_objects() AS d
                WHERE d.object_type = 'trigger')
    LOOP
        IF subscription.registration_problem(registration) IS NOT NULL THEN
            RAISE EXCEPTION 'the limit guards of table % cannot be dropped', registration.relation
                USING ERRCODE = 'object_in_use',
                      DETAIL = format('The table is limited for feature "%s".', registration.feature),
                      HINT = format('Run subscription.unenforce_limit(%L, %L) instead.',
                                    registration.relation::text, registration.feature);
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.forget_dropped_tables() IS 'Event trigger: a dropped table takes its registrations along; a guard of a registered table cannot be dropped';

CREATE EVENT TRIGGER subscription_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION subscription.forget_dropped_tables();

-- The guard triggers' name for a feature: a hash keeps long feature names apart.
CREATE FUNCTION subscription.guard_name(feature text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'subscription_limit_' OPERATOR(pg_catalog.||) left(feature, 30) OPERATOR(pg_catalog.||) '_'
       OPERATOR(pg_catalog.||) left(md5(feature), 8);

COMMENT ON FUNCTION subscription.guard_name(text) IS 'The limit guards'' trigger name for a feature, with a hash so long names never collide';

-- Only the table's owner (or a superuser) attaches or removes its guards.
CREATE FUNCTION subscription.require_table_owner(relation regclass)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(subscription.calling_role()::name,
                                  (SELECT c.relowner FROM pg_catalog.pg_class AS c WHERE c.oid = relation),
                                  'USAGE') THEN
        RAISE EXCEPTION 'must be owner of table %', relation
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('Role %s does not own it.', subscription.calling_role());
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_table_owner(regclass) IS 'Internal: 42501 unless the calling role owns the table';

CREATE FUNCTION subscription.enforce_limit(
    relation regclass,
    feature text,
    account_column name DEFAULT 'account_id',
    on_downgrade text DEFAULT 'drop_newest',
    order_column name DEFAULT NULL,
    value_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trigger_name text := subscription.guard_name(feature);
    target pg_catalog.pg_class;
    own_guard boolean;
    colocated boolean := true;
    distribution_column text;
BEGIN
    PERFORM subscription.require_arguments('enforce_limit', '{relation,feature,account_column,on_downgrade}',
        ARRAY[relation IS NULL, feature IS NULL, account_column IS NULL, on_downgrade IS NULL]);
    IF on_downgrade <> ALL (subscription.downgrade_policies()) THEN
        RAISE EXCEPTION 'unknown downgrade policy "%"', on_downgrade
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('The policies are %s and %s.',
                                array_to_string(trim_array(subscription.downgrade_policies(), 1), ', '),
                                (subscription.downgrade_policies())[cardinality(subscription.downgrade_policies())]);
    END IF;
    SELECT * INTO target FROM pg_catalog.pg_class AS c WHERE c.oid = relation;
    IF target.relkind = 'p' OR target.relispartition
       OR EXISTS (SELECT FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = relation OR i.inhparent = relation) THEN
        -- a statement naming another table of the tree would skip the guards (S6)
        RAISE EXCEPTION 'table % is part of a partition or inheritance tree', relation
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = 'A statement on another table of the tree would not fire its guards.',
                  HINT = 'Limit a plain table.';
    ELSIF target.relkind <> 'r' THEN
        RAISE EXCEPTION '% is not a table', relation USING ERRCODE = 'wrong_object_type';
    ELSIF target.relpersistence = 't' THEN
        RAISE EXCEPTION 'temporary table % cannot be limited', relation
            USING ERRCODE = 'wrong_object_type',
                  DETAIL = 'Its registration would outlive the session that sees it.';
    END IF;
    PERFORM subscription.require_table_owner(relation);
    -- K7, K10: the one limit on the extension's own tables, sub-accounts
    -- per parent account, whose guard the extension attaches itself
    own_guard := relation = 'subscription.account'::pg_catalog.regclass
                 AND feature = 'sub_accounts'
                 AND account_column = 'parent_id';
    IF NOT own_guard AND target.relnamespace = 'subscription'::regnamespace THEN
        RAISE EXCEPTION 'the extension''s own table % cannot be limited this way', relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Sub-accounts are limited with enforce_limit(''subscription.account'', ''sub_accounts'', ''parent_id'', ...).';
    END IF;
    PERFORM subscription.require_feature(enforce_limit.feature);
    IF subscription.distributed() THEN
        -- Citus: the count below reads every shard, then the guards are
        -- created (DDL) in the same transaction, which Citus allows over
        -- one connection per node only (issue 17)
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;

    PERFORM subscription.limited_column(relation, account_column, 'account column', true);
    IF on_downgrade = ANY (subscription.value_policies()) THEN
        IF value_column IS NULL THEN
            RAISE EXCEPTION 'policy % needs a value column', on_downgrade
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
        PERFORM subscription.limited_column(relation, value_column, 'value column', on_downgrade <> 'detach');
    ELSIF value_column IS NOT NULL THEN
        PERFORM subscription.limited_column(relation, value_column, 'value column', false);
    END IF;
    IF order_column IS NOT NULL THEN
        PERFORM subscription.limited_column(relation, order_column, 'order column', false);
    END IF;
    IF on_downgrade = 'keep_most_referenced' THEN
        -- a key of one column, or of several: a distributed table's starts
        -- with its tenant (Citus), and so do the foreign keys into it
        PERFORM FROM pg_catalog.pg_constraint AS c
         WHERE c.conrelid = relation AND c.contype = 'p';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'policy keep_most_referenced needs a primary key on %', relation
                USING ERRCODE = 'invalid_table_definition';
        END IF;
        PERFORM FROM pg_catalog.pg_constraint AS c
         WHERE c.confrelid = relation AND c.contype = 'f';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'policy keep_most_referenced needs a foreign key into %', relation
                USING ERRCODE = 'invalid_table_definition',
                      DETAIL = 'The rows kept are those most referenced through it (C5).';
        END IF;
    END IF;

    -- registering twice is refused: unenforce_limit first to change the options;
    -- a feature is one counter per account, so it lives on one table
    PERFORM FROM subscription.limited_table AS t WHERE t.feature = enforce_limit.feature;
    IF FOUND THEN
        RAISE EXCEPTION 'feature "%" is already enforced', feature
            USING ERRCODE = 'duplicate_object',
                  HINT = 'subscription.unenforce_limit() removes a registration, to register it again with other options.';
    END IF;
    -- Citus: the guards count a row on the node of its tenant's shards,
    -- into counters colocated with it; a local table (only on the
    -- coordinator, unknown to the workers that hold limited_table's
    -- placements) or one distributed otherwise could not be counted there
    IF NOT own_guard AND subscription.distributed() THEN
        EXECUTE 'SELECT pg_catalog.column_to_column_name(p.logicalrelid, p.partkey)
                   FROM pg_catalog.pg_dist_partition AS p
                   JOIN pg_catalog.pg_dist_partition AS a
                     ON a.logicalrelid = ''subscription.account''::pg_catalog.regclass
                    AND a.colocationid = p.colocationid
                  WHERE p.logicalrelid = $1 AND p.partmethod = ''h'''
           INTO distribution_column USING relation;
        colocated := distribution_column IS NOT NULL;
    END IF;
    IF NOT colocated THEN
        RAISE EXCEPTION 'table % is not distributed with subscription.account', relation
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'On Citus a limited table''s rows are counted on the node of their tenant''s shards.',
                  HINT = format('Distribute it first: SELECT create_distributed_table(%L, %L, colocate_with := ''subscription.account'').',
                                relation::text, account_column);
    END IF;
    -- colocated, but by a column that holds neither the row's account (a
    -- root account's rows) nor its tenant (tenant_id, the tenant key of
    -- docs/citus.md): a row would sit on a shard that does not hold its
    -- account, and be counted there as its own tenant's (review h-rev7)
    IF distribution_column IS NOT NULL AND distribution_column NOT IN (account_column, 'tenant_id') THEN
        RAISE EXCEPTION 'table % is distributed by %, not by its account column or tenant_id', relation, distribution_column
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'On Citus a limited table''s rows are counted on the shard that holds their account.',
                  HINT = format('Distribute it by its tenant (tenant_id) or, if its accounts are root accounts, by its account column: SELECT undistribute_table(%L); SELECT create_distributed_table(%L, %L, colocate_with := ''subscription.account'').',
                                relation::text, relation::text, account_column);
    END IF;

    INSERT INTO subscription.limited_table AS t (relation, feature, account_column, on_downgrade, order_column, value_column,
                                                 relation_name)
    VALUES (relation, feature, account_column, on_downgrade, order_column, value_column,
            subscription.relation_name(relation));

    -- lock the table against writes while the existing rows are counted
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', relation);
    PERFORM subscription.recount_usage(relation, feature);
    PERFORM subscription.invalidate_limit_cache(relation);

    IF own_guard THEN
        RETURN;                 -- the extension attached its guard already
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_i', relation, feature);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_u', relation, feature);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_d', relation, feature);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_t', relation, feature);
END
$$;

COMMENT ON FUNCTION subscription.enforce_limit(regclass, text, name, text, name, name) IS
'Attach the limit guard of a feature to an application table and count its rows';

CREATE FUNCTION subscription.unenforce_limit(relation regclass, feature text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    guard name;
    qualified text;
BEGIN
    PERFORM subscription.require_arguments('unenforce_limit', '{relation,feature}',
        ARRAY[relation IS NULL, feature IS NULL]);
    PERFORM subscription.require_table_owner(relation);
    DELETE FROM subscription.limited_table AS t
     WHERE t.relation = unenforce_limit.relation
       AND t.feature = unenforce_limit.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" is not enforced on %', feature, relation USING ERRCODE = 'undefined_object';
    END IF;
    -- wait for the table's writers, whose guards would count on (and
    -- create counters again), and make every backend forget the
    -- registration at commit
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', relation);
    PERFORM subscription.invalidate_limit_cache(relation);
    -- the extension's own guards stay attached, idle until registered again
    SELECT format('%I.%I', n.nspname, c.relname) INTO qualified
      FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
     WHERE c.oid = relation AND n.nspname <> 'subscription';
    IF qualified IS NOT NULL THEN
        FOR guard IN SELECT g.name FROM subscription.guard_triggers(relation, feature) AS g LOOP
            EXECUTE format('DROP TRIGGER %I ON %s', guard, qualified);
        END LOOP;
    END IF;
    DELETE FROM subscription.usage_counter AS u WHERE u.feature = unenforce_limit.feature;
END
$$;

COMMENT ON FUNCTION subscription.unenforce_limit(regclass, text) IS 'Remove a feature''s limit guard from a table, with its counters';

-- K7, K10: sub-accounts per parent account.  The guard is attached here,
-- as part of the extension (so a dump keeps it), and idle until
-- enforce_limit('subscription.account', 'sub_accounts', 'parent_id',
-- 'drop_newest', 'created_at') registers the limit.
CREATE TRIGGER subscription_limit_sub_accounts_i AFTER INSERT ON subscription.account
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');
CREATE TRIGGER subscription_limit_sub_accounts_u AFTER UPDATE ON subscription.account
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');
CREATE TRIGGER subscription_limit_sub_accounts_d AFTER DELETE ON subscription.account
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');
CREATE TRIGGER subscription_limit_sub_accounts_t AFTER TRUNCATE ON subscription.account
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');

-- One account's stored limits (of one feature, or all) follow what they
-- are computed from: the per-tenant refresh, one statement on the
-- account's counters (colocated with the account on Citus), then its
-- stored entitlements (refresh_entitlements).  It leaves
-- limit_version as it is: a writer that waited for this row and whose
-- snapshot predates the change still finds the version it knows, and
-- checks against the limit stored here.
CREATE FUNCTION subscription.refresh_account_limits(tenant_id bigint, account_id bigint, feature text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f text;
    new_limit bigint;
BEGIN
    -- a counter at a time, the limit computed apart from the UPDATE: on
    -- Citus no STABLE function takes a column in an UPDATE, and every
    -- statement names the tenant (issue 17)
    FOR f IN SELECT u.feature FROM subscription.usage_counter AS u
              WHERE u.tenant_id = refresh_account_limits.tenant_id
                AND u.account_id = refresh_account_limits.account_id
                AND (refresh_account_limits.feature IS NULL OR u.feature = refresh_account_limits.feature)
              ORDER BY u.feature LOOP
        new_limit := subscription.limit_of(refresh_account_limits.tenant_id, refresh_account_limits.account_id, f);
        UPDATE subscription.usage_counter AS u
           SET limit_value = new_limit
         WHERE u.tenant_id = refresh_account_limits.tenant_id
           AND u.account_id = refresh_account_limits.account_id
           AND u.feature = f
           AND u.limit_value IS DISTINCT FROM new_limit;
    END LOOP;
    -- and the features it is entitled to (has_feature, issue 21)
    PERFORM subscription.refresh_entitlements(refresh_account_limits.tenant_id, refresh_account_limits.account_id,
                                              refresh_account_limits.feature);
END
$$;

COMMENT ON FUNCTION subscription.refresh_account_limits(bigint, bigint, text) IS
'Internal: one account''s stored limits and entitlements (of a feature, or all) follow what they are computed from';

-- The limits stored in the usage counters follow what they are computed
-- from: an account's subscriptions and add-on batches (its own rows: its
-- counters are refreshed at once), a plan's limits, an add-on's feature
-- and units, a suite's plans (the catalog: on a single server each
-- account concerned is refreshed, by refresh_account_limits; on Citus a
-- trigger of a reference table writes no distributed table, and the
-- guard recomputes a counter whose limit version is not the catalog's).
-- Subscriptions and add-on batches per statement, over the transition
-- tables (issue 18): the accounts the statement concerns are read into a
-- local set first (on Citus a transition table is never joined with a
-- distributed table), each refreshed once, in the order of their keys.  An
-- UPDATE of subscriptions concerns the rows whose account, plan, quantity
-- or plan version changed or whose status moved into or out of the
-- statuses that grant (status_grants), and the rows it left as they were
-- (refresh_freeze() names an account's subscriptions so that their limits
-- follow a freeze): the old and the new account.  The catalog's rows per
-- statement too (issue 18): the (plan, feature) of the plan limits the
-- statement wrote, as they were and as they are, the suites of the suite
-- components, the add-ons whose feature or units changed; then each
-- account concerned once, of the feature concerned (all of them for a
-- suite or an add-on).
CREATE FUNCTION subscription.refresh_limits()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its transition tables joined by hash, whatever statement fired it (a
-- renewal's UPDATE runs with nested loops alone: renew_common_group)
SET enable_hashjoin = on
AS $$
DECLARE
    account bigint;
    accounts bigint[];
    tenants bigint[];
    plans text[];
    features text[];
    addons text[];
    -- the logical table, from the trigger's argument (issue 17)
    logical text := TG_ARGV[0];
    -- the setting to put back after a join of the transition tables
    nestloop text := current_setting('enable_nestloop');
BEGIN
    IF logical IN ('subscription', 'addon_batch') THEN
        -- the rows concerned, as they were and as they are: (tenant,
        -- account) of a subscription, (tenant, subscription) of a batch
        IF logical = 'subscription' AND TG_OP = 'INSERT' THEN
            SELECT array_agg(n.tenant_id), array_agg(n.account_id) INTO tenants, accounts FROM new_rows AS n;
        ELSIF logical = 'subscription' AND TG_OP = 'DELETE' THEN
            SELECT array_agg(o.tenant_id), array_agg(o.account_id) INTO tenants, accounts FROM old_rows AS o;
        ELSIF TG_OP = 'INSERT' THEN
            SELECT array_agg(n.tenant_id), array_agg(n.subscription_id) INTO tenants, accounts FROM new_rows AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(o.tenant_id), array_agg(o.subscription_id) INTO tenants, accounts FROM old_rows AS o;
        ELSIF logical = 'subscription' THEN
            -- by hash (sync_license_counter)
            PERFORM set_config('enable_nestloop', 'off', true);
            -- (each pair's two rows by unnest, not a lateral join: no
            -- nested loop at all, whose disabled cost would make the
            -- query look expensive enough to compile)
            SELECT array_agg(x.tenant_id), array_agg(x.account_id) INTO tenants, accounts
              FROM (SELECT unnest(ARRAY[o.tenant_id, n.tenant_id]) AS tenant_id,
                           unnest(ARRAY[o.account_id, n.account_id]) AS account_id
                      FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
                     WHERE (o.account_id, o.plan, o.quantity, o.plan_version, subscription.status_grants(o.status))
                           IS DISTINCT FROM (n.account_id, n.plan, n.quantity, n.plan_version,
                                             subscription.status_grants(n.status))
                        OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*)) AS x;
            PERFORM set_config('enable_nestloop', nestloop, true);
        ELSE
            SELECT array_agg(x.tenant_id), array_agg(x.subscription_id) INTO tenants, accounts
              FROM (SELECT o.tenant_id, o.subscription_id FROM old_rows AS o
                    UNION ALL
                    SELECT n.tenant_id, n.subscription_id FROM new_rows AS n) AS x;
        END IF;
        IF logical = 'addon_batch' THEN
            -- a batch's subscription's account, by its tenant (a SELECT
            -- INTO: Citus plans no assignment that reads a table)
            FOR k IN 1 .. coalesce(cardinality(accounts), 0) LOOP
                account := NULL;
                SELECT s.account_id INTO account FROM subscription.subscription AS s
                 WHERE s.tenant_id = tenants[k] AND s.id = accounts[k];
                accounts[k] := account;
            END LOOP;
        END IF;
        -- none concerned (a subscription's UPDATE that moved nothing
        -- watched above: a failed payment's past due, its end): no query more
        IF accounts IS NULL THEN
            RETURN NULL;
        END IF;
        -- each account once, in the order of the keys
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.account_id), array_agg(x.account_id ORDER BY x.tenant_id, x.account_id)
          INTO tenants, accounts
          FROM (SELECT DISTINCT t.tenant_id, t.account_id FROM unnest(tenants, accounts) AS t (tenant_id, account_id)
                 WHERE t.account_id IS NOT NULL) AS x;
        FOR k IN 1 .. coalesce(cardinality(accounts), 0) LOOP
            PERFORM subscription.refresh_account_limits(tenants[k], accounts[k], NULL);
        END LOOP;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_extension AS e WHERE e.extname = 'citus') THEN
        -- no fan-out from a reference table (issue 17): the limit version
        RETURN NULL;
    END IF;
    -- the catalog rows the statement wrote, as they were and as they are
    IF logical = 'plan_limit' THEN
        IF TG_OP <> 'INSERT' THEN
            SELECT array_agg(o.plan), array_agg(o.feature) INTO plans, features FROM old_rows AS o;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            SELECT coalesce(plans, '{}') || array_agg(n.plan), coalesce(features, '{}') || array_agg(n.feature)
              INTO plans, features FROM new_rows AS n;
        END IF;
    ELSIF logical = 'suite_component' THEN
        IF TG_OP <> 'INSERT' THEN
            SELECT array_agg(o.suite_plan) INTO plans FROM old_rows AS o;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            SELECT coalesce(plans, '{}') || array_agg(n.suite_plan) INTO plans FROM new_rows AS n;
        END IF;
    ELSE
        SELECT array_agg(n.code) INTO addons
          FROM old_rows AS o JOIN new_rows AS n ON n.code = o.code
         WHERE (o.feature, o.units) IS DISTINCT FROM (n.feature, n.units);
    END IF;
    -- the accounts concerned with their tenants, each (account, feature)
    -- once, in the order of the keys: the subscriptions of a plan and of
    -- the suites that include it (Z3), of a suite, of an add-on's batches
    IF logical = 'plan_limit' THEN
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.account_id, x.feature),
               array_agg(x.account_id ORDER BY x.tenant_id, x.account_id, x.feature),
               array_agg(x.feature ORDER BY x.tenant_id, x.account_id, x.feature)
          INTO tenants, accounts, features
          FROM (SELECT DISTINCT s.tenant_id, s.account_id, p.feature
                  FROM unnest(plans, features) AS p (plan, feature)
                  JOIN subscription.subscription AS s
                    ON s.plan = p.plan
                    OR s.plan IN (SELECT sc.suite_plan FROM subscription.suite_component AS sc
                                   WHERE sc.plan = p.plan)) AS x;
    ELSIF logical = 'suite_component' THEN
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.account_id),
               array_agg(x.account_id ORDER BY x.tenant_id, x.account_id), NULL
          INTO tenants, accounts, features
          FROM (SELECT DISTINCT s.tenant_id, s.account_id FROM subscription.subscription AS s
                 WHERE s.plan = ANY (plans)) AS x;
    ELSE
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.account_id),
               array_agg(x.account_id ORDER BY x.tenant_id, x.account_id), NULL
          INTO tenants, accounts, features
          FROM (SELECT DISTINCT s.tenant_id, s.account_id FROM subscription.subscription AS s
                  JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id
                 WHERE b.addon = ANY (addons)) AS x;
    END IF;
    FOR k IN 1 .. coalesce(cardinality(accounts), 0) LOOP
        PERFORM subscription.refresh_account_limits(tenants[k], accounts[k], features[k]);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.refresh_limits() IS 'Trigger: the limits stored in the usage counters follow what they are computed from';

-- per statement, one trigger per event (a trigger with transition tables
-- fires on one, and takes no column list: an add-on's UPDATE compares its
-- feature and units)
CREATE TRIGGER subscription_refresh_limits AFTER INSERT ON subscription.subscription
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('subscription');
CREATE TRIGGER subscription_refresh_limits_update AFTER UPDATE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('subscription');
CREATE TRIGGER subscription_refresh_limits_delete AFTER DELETE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('subscription');
CREATE TRIGGER addon_batch_refresh_limits AFTER INSERT ON subscription.addon_batch
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('addon_batch');
CREATE TRIGGER addon_batch_refresh_limits_update AFTER UPDATE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('addon_batch');
CREATE TRIGGER addon_batch_refresh_limits_delete AFTER DELETE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('addon_batch');
CREATE TRIGGER plan_limit_refresh_limits AFTER INSERT ON subscription.plan_limit
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('plan_limit');
CREATE TRIGGER plan_limit_refresh_limits_update AFTER UPDATE ON subscription.plan_limit
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('plan_limit');
CREATE TRIGGER plan_limit_refresh_limits_delete AFTER DELETE ON subscription.plan_limit
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('plan_limit');
CREATE TRIGGER suite_component_refresh_limits AFTER INSERT ON subscription.suite_component
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('suite_component');
CREATE TRIGGER suite_component_refresh_limits_update AFTER UPDATE ON subscription.suite_component
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('suite_component');
CREATE TRIGGER suite_component_refresh_limits_delete AFTER DELETE ON subscription.suite_component
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('suite_component');
CREATE TRIGGER addon_refresh_limits AFTER UPDATE ON subscription.addon
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refresh_limits('addon');

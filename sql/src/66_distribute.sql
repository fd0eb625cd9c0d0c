-- distribute(): one call turns the installed extension into a distributed
-- one on Citus (issue 17, docs/citus.md).  The catalog, the limited tables
-- and the granted roles become reference tables, on every node; the tenant
-- tables are distributed by tenant_id and colocated with account, so that
-- a tenant's rows, and every statement a trigger runs for them, stay on one
-- shard group (docs/design.md#tenant-keys).

-- Whether distribute() has run: account is a Citus distributed table.  On
-- Citus, a statement that a trigger runs on a shard must name the tenant.
CREATE FUNCTION subscription.distributed()
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = ''subscription.account''::pg_catalog.regclass)'
       INTO found;
    RETURN found;
END
$$;

COMMENT ON FUNCTION subscription.distributed() IS
'Internal: whether the extension''s tables are distributed on Citus (distribute() has run)';

-- Whether a trigger on a catalog table reads the tenant tables where it
-- fires.  On Citus the catalog is reference tables, written on every
-- placement in one transaction: the coordinator's placement reads the
-- tenant tables (their shards on every worker, over one connection per
-- node, as Citus requires of reads before the catalog's changes), which a
-- worker's placement may not (issue 17).  On a single server: always.
CREATE FUNCTION subscription.catalog_reads_tenants()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    coordinator boolean;
BEGIN
    IF NOT subscription.distributed() THEN
        RETURN true;
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO coordinator;
    IF coordinator THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    RETURN coordinator;
END
$$;

COMMENT ON FUNCTION subscription.catalog_reads_tenants() IS
'Internal: whether a trigger on a catalog table reads the tenant tables here (a single server, or the Citus coordinator''s placement)';

-- The extension's tables and what each becomes on Citus, in an order that
-- puts every table after the tables its foreign keys reference; then the
-- keyed forms (distributed_functions()), each a distributed function by
-- its tenant_id, colocated with account (kind 'function', relation NULL).
CREATE FUNCTION subscription.distribution_plan()
RETURNS TABLE (relation regclass, kind text, step integer, function regprocedure)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH RECURSIVE own AS (
    SELECT c.oid AS rel,
           CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_attribute AS a
                              WHERE a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped)
                THEN 'distributed' ELSE 'reference' END AS kind
      FROM pg_catalog.pg_class AS c
     WHERE c.relnamespace = 'subscription'::pg_catalog.regnamespace AND c.relkind IN ('r', 'p')),
depth (rel, d) AS (
    SELECT rel, 0 FROM own
    UNION ALL
    SELECT k.conrelid, depth.d + 1
      FROM depth JOIN pg_catalog.pg_constraint AS k ON k.confrelid = depth.rel AND k.contype = 'f'
     WHERE k.conrelid IN (SELECT rel FROM own) AND k.conrelid <> k.confrelid AND depth.d < 100),
tables AS (
    SELECT o.rel::pg_catalog.regclass AS relation, o.kind,
           (pg_catalog.row_number() OVER (ORDER BY o.kind DESC, d.d, o.rel::pg_catalog.regclass::text))::integer AS step
      FROM own AS o JOIN (SELECT rel, pg_catalog.max(d) AS d FROM depth GROUP BY rel) AS d USING (rel))
SELECT t.relation, t.kind, t.step, NULL::pg_catalog.regprocedure FROM tables AS t
UNION ALL
SELECT NULL, 'function',
       ((SELECT pg_catalog.count(*) FROM tables) OPERATOR(pg_catalog.+)
        pg_catalog.row_number() OVER (ORDER BY f.function::pg_catalog.text))::integer,
       f.function
  FROM subscription.distributed_functions() AS f
 ORDER BY 3
$$;

COMMENT ON FUNCTION subscription.distribution_plan() IS
'What distribute() makes of each table of the extension (reference or distributed by tenant_id), in foreign-key order, and of each keyed form (a function distributed by tenant_id)';

CREATE FUNCTION subscription.distribute()
RETURNS TABLE (relation regclass, kind text, function regprocedure)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
-- Citus's notices of each table's copy and truncation: not the caller's
SET client_min_messages = warning
AS $$
DECLARE
    t record;
    orphan record;
    done boolean;
    moved boolean := false;
    role_before text;
    failed text;
BEGIN
    -- K7: a sub-account lives in its parent's shard group; one moved under
    -- another tenant's account (parent_id changed on a single server) would
    -- not.  Once distributed, check_reference() keeps a parent in the tenant.
    IF NOT subscription.distributed() THEN
        SELECT a.id, a.tenant_id, p.id AS parent, p.tenant_id AS parent_tenant INTO orphan
          FROM subscription.account AS a JOIN subscription.account AS p ON p.id = a.parent_id
         WHERE a.tenant_id <> p.tenant_id
         ORDER BY a.id LIMIT 1;
        moved := FOUND;
    END IF;
    IF moved THEN
        RAISE EXCEPTION 'account % is a sub-account of account %, of another tenant', orphan.id, orphan.parent
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = pg_catalog.format('Account %s is of tenant %s, its parent of tenant %s; on Citus a sub-account shares its parent''s shard group.',
                                             orphan.id, orphan.tenant_id, orphan.parent_tenant),
                  HINT = 'Make it a root account again (parent_id = NULL) before distributing.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'subscription.distribute() needs the citus extension'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Load Citus (shared_preload_libraries = ''citus'') and run CREATE EXTENSION citus first.';
    END IF;
    -- what Citus needs: the extension's triggers on shards, and reference
    -- tables made while the tenant tables that reference them are still local
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    PERFORM pg_catalog.set_config('citus.enable_local_reference_table_foreign_keys', 'off', true);
    -- a table that holds rows (a database used before it is distributed,
    -- or updated from 1.0): Citus copies them into its shards by a COPY on
    -- each placement, which would fire the table's triggers there (history
    -- written into tables not distributed yet, guards counting rows that
    -- are moved, not written) and leave the checks of the foreign keys
    -- made deferred below pending on the workers.  The copies are a
    -- restore: they run in replica mode, on the coordinator and, as a SET
    -- LOCAL that Citus sends its connections (from a DO block), on the
    -- workers, until every table is distributed; the ALWAYS triggers take
    -- replica mode for a restore (docs/design.md#restores).
    -- Nothing to undo on an error: it ends with the transaction
    role_before := pg_catalog.current_setting('session_replication_role');
    EXECUTE 'DO $do$ BEGIN SET LOCAL citus.propagate_set_commands = ''local''; SET LOCAL session_replication_role = replica; END $do$';
    -- a row of the catalog is deleted on the workers' placements first, and
    -- on the coordinator's last, whose refuse_delete_in_use() alone reads
    -- the tenant tables: the foreign keys of the tenant tables into the
    -- catalog are checked at commit, so that the extension's check (2BP01,
    -- naming what refers to the row) decides, as on a single server, not a
    -- worker's foreign key (23503).  Before the tables are distributed:
    -- their shards are made with it.
    FOR t IN SELECT k.conrelid::pg_catalog.regclass AS relation, k.conname
               FROM pg_catalog.pg_constraint AS k
               JOIN subscription.distribution_plan() AS d ON d.relation = k.conrelid AND d.kind = 'distributed'
               JOIN subscription.distribution_plan() AS r ON r.relation = k.confrelid AND r.kind = 'reference'
              WHERE k.contype = 'f' AND NOT k.condeferrable AND k.confdeltype = 'a'
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS x WHERE x.logicalrelid = k.conrelid)
              ORDER BY 1, 2 LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ALTER CONSTRAINT %I DEFERRABLE INITIALLY DEFERRED', t.relation, t.conname);
    END LOOP;
    FOR t IN SELECT * FROM subscription.distribution_plan() AS p ORDER BY p.step LOOP
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1)'
           INTO done USING t.relation;
        IF t.kind = 'function' THEN
            -- item 2: a keyed form called alone from the coordinator runs
            -- on the node of its tenant's shards, in one hop
            EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_object AS o
                                      JOIN pg_catalog.pg_dist_partition AS a
                                        ON a.logicalrelid = ''subscription.account''::pg_catalog.regclass
                                       AND a.colocationid = o.colocationid
                                     WHERE o.classid = ''pg_catalog.pg_proc''::pg_catalog.regclass AND o.objid = $1
                                       AND o.distribution_argument_index = 0)'
               INTO done USING t.function;
            IF NOT done THEN
                EXECUTE 'SELECT create_distributed_function($1, ''tenant_id'', colocate_with := ''subscription.account'')'
                  USING t.function;
            END IF;
        ELSIF NOT done THEN
            IF t.kind = 'reference' THEN
                EXECUTE 'SELECT create_reference_table($1)' USING t.relation;
            ELSIF t.relation = 'subscription.account'::pg_catalog.regclass THEN
                EXECUTE 'SELECT create_distributed_table($1, ''tenant_id'')' USING t.relation;
            ELSE
                EXECUTE 'SELECT create_distributed_table($1, ''tenant_id'', colocate_with => ''subscription.account'')'
                  USING t.relation;
            END IF;
        END IF;
        relation := t.relation;
        kind := t.kind;
        function := t.function;
        RETURN NEXT;
    END LOOP;
    EXECUTE pg_catalog.format('DO $do$ BEGIN SET LOCAL session_replication_role = %L; END $do$', role_before);
    -- the rows are in the shards now; the tables themselves keep none (once
    -- no local table references them).  In replica mode: this TRUNCATE
    -- removes copies, which the guards' and history's TRUNCATE triggers
    -- must not take for a tenant's
    PERFORM pg_catalog.set_config('session_replication_role', 'replica', true);
    FOR t IN SELECT * FROM subscription.distribution_plan() AS p WHERE p.kind <> 'function' ORDER BY p.step DESC LOOP
        EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)' USING t.relation;
    END LOOP;
    PERFORM pg_catalog.set_config('session_replication_role', role_before, true);
    -- a keyed form delegated to a worker inserts there: the identity
    -- sequences of the tenant tables (made by CREATE EXTENSION on every
    -- node, so left alone by Citus) draw from the node's own range on each
    -- worker, as Citus's own ((group << 48) + 1 on), so that no id comes
    -- twice.  Idempotent; a node added later gets its range from the next
    -- distribute()
    FOR t IN SELECT * FROM subscription.distribution_plan() AS p WHERE p.kind = 'distributed' ORDER BY p.step LOOP
        EXECUTE 'SELECT pg_catalog.string_agg(w.nodename || '':'' || w.nodeport || '': '' || w.result, ''; '')
                   FROM run_command_on_workers(pg_catalog.format(''SELECT worker_adjust_identity_column_seq_ranges(%L::regclass)'', $1::text)) AS w
                  WHERE NOT w.success'
           INTO failed USING t.relation;
        IF failed IS NOT NULL THEN
            RAISE EXCEPTION 'the identity sequences of % could not be given their range on every worker', t.relation
                USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = failed;
        END IF;
    END LOOP;
    -- E3 on Citus: an event stored on a node is numbered by it, on every
    -- placement of the event table (event_numbered_here), so that a
    -- consumer's position per node is held back by that node's own
    -- transactions (claim_events)
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger AS g
                    WHERE g.tgrelid = 'subscription.event'::pg_catalog.regclass AND g.tgname = 'event_numbered_here') THEN
        CREATE TRIGGER event_numbered_here BEFORE INSERT ON subscription.event
            FOR EACH ROW EXECUTE FUNCTION subscription.event_numbered_here();
    END IF;
    -- the column rights of the roles given them before: Citus made the
    -- shards and the workers' tables with the tables' own rights alone
    -- (granted_role_columns gives them on every node), to the roles that
    -- still exist
    PERFORM subscription.forget_dropped_roles();
    UPDATE subscription.granted_role AS g SET kind = g.kind;
    -- no table of the extension is left local: its rows would split across nodes
    SELECT p.relation INTO t
      FROM subscription.distribution_plan() AS p
     WHERE p.kind <> 'function'
       AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS d WHERE d.logicalrelid = p.relation)
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'table % of the extension is still local', t.relation
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.distribute() IS
'Citus: make the catalog reference tables, distribute every tenant table by tenant_id, colocated with account, and register the keyed forms as functions distributed by tenant_id (docs/citus.md)';

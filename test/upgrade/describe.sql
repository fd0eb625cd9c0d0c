-- test/upgrade/describe.sql: a canonical text description of everything the
-- extension subscription owns, so that test/upgrade.sh can diff a database
-- updated from 1.0 against a fresh install.  What is described: the
-- extension's members (pg_depend deptype 'e') and everything in its schema,
-- with what hangs off them (columns, constraints, indexes, triggers,
-- policies, comments, privileges).  Names, never OIDs; every section sorted.
-- Each section starts with a line "@@ name", on which test/upgrade.sh
-- splits the output; a section may hold multi-line values (function bodies).
-- Run with psql -X -q -A -t.
\set ON_ERROR_STOP on
-- every name comes out schema-qualified, whatever the caller's search_path
SET search_path = pg_catalog;

------------------------------------------------------------------------
-- What is compared
------------------------------------------------------------------------
CREATE TEMP VIEW ext AS
SELECT e.oid, e.extnamespace FROM pg_extension AS e WHERE e.extname = 'subscription';
CREATE TEMP VIEW ext_member AS
SELECT d.classid, d.objid
  FROM pg_depend AS d JOIN ext ON d.refobjid = ext.oid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e';
CREATE TEMP VIEW ext_schema AS
SELECT n.oid FROM pg_namespace AS n
 WHERE n.nspname = 'subscription' OR n.oid IN (SELECT extnamespace FROM ext)
    OR n.oid IN (SELECT objid FROM ext_member WHERE classid = 'pg_namespace'::regclass);
-- relations of every kind: tables, views, sequences, indexes, composite types
CREATE TEMP VIEW ext_rel AS
SELECT c.oid, c.relkind FROM pg_class AS c
 WHERE c.relnamespace IN (SELECT oid FROM ext_schema)
    OR c.oid IN (SELECT objid FROM ext_member WHERE classid = 'pg_class'::regclass);
CREATE TEMP VIEW ext_proc AS
SELECT p.oid FROM pg_proc AS p
 WHERE p.pronamespace IN (SELECT oid FROM ext_schema)
    OR p.oid IN (SELECT objid FROM ext_member WHERE classid = 'pg_proc'::regclass);
CREATE TEMP VIEW ext_type AS
SELECT t.oid FROM pg_type AS t
 WHERE t.typnamespace IN (SELECT oid FROM ext_schema)
    OR t.oid IN (SELECT objid FROM ext_member WHERE classid = 'pg_type'::regclass);
CREATE TEMP VIEW ext_constraint AS
SELECT c.oid FROM pg_constraint AS c
 WHERE c.conrelid IN (SELECT oid FROM ext_rel) OR c.contypid IN (SELECT oid FROM ext_type)
    OR c.connamespace IN (SELECT oid FROM ext_schema);
-- user triggers only: the internal ones of foreign keys are their constraints
CREATE TEMP VIEW ext_trigger AS
SELECT t.oid FROM pg_trigger AS t
 WHERE t.tgrelid IN (SELECT oid FROM ext_rel) AND NOT t.tgisinternal;
CREATE TEMP VIEW ext_event_trigger AS
SELECT e.oid FROM pg_event_trigger AS e
 WHERE e.oid IN (SELECT objid FROM ext_member WHERE classid = 'pg_event_trigger'::regclass)
    OR e.evtfoid IN (SELECT oid FROM ext_proc);
-- every object above as (catalog, oid), for comments and initial privileges
CREATE TEMP VIEW ext_object AS
SELECT classid, objid FROM ext_member
UNION SELECT 'pg_extension'::regclass, oid FROM ext
UNION SELECT 'pg_namespace'::regclass, oid FROM ext_schema
UNION SELECT 'pg_class'::regclass, oid FROM ext_rel
UNION SELECT 'pg_proc'::regclass, oid FROM ext_proc
UNION SELECT 'pg_type'::regclass, oid FROM ext_type
UNION SELECT 'pg_constraint'::regclass, oid FROM ext_constraint
UNION SELECT 'pg_trigger'::regclass, oid FROM ext_trigger
UNION SELECT 'pg_event_trigger'::regclass, oid FROM ext_event_trigger
UNION SELECT 'pg_policy'::regclass, p.oid FROM pg_policy AS p WHERE p.polrelid IN (SELECT oid FROM ext_rel)
UNION SELECT 'pg_rewrite'::regclass, r.oid FROM pg_rewrite AS r WHERE r.ev_class IN (SELECT oid FROM ext_rel);

------------------------------------------------------------------------
\echo @@ members
-- object for object: what ALTER EXTENSION ... DROP/ADD and DROP EXTENSION act on
SELECT pg_describe_object(classid, objid, 0) FROM ext_member ORDER BY 1;

------------------------------------------------------------------------
\echo @@ tables
-- one line per relation that has columns, then its columns in order (the
-- position among the live columns: a dropped column leaves a hole in attnum)
SELECT line FROM (
    SELECT c.oid::regclass::text AS rel, 0 AS pos,
           format('%s: kind %s, persistence %s%s, owner %s, inherits %s, replica identity %s',
                  c.oid::regclass, c.relkind, c.relpersistence,
                  -- a view's options are in "views"
                  CASE WHEN c.relkind <> 'v' THEN ', options ' || coalesce(c.reloptions::text, '{}') END,
                  pg_get_userbyid(c.relowner),
                  coalesce((SELECT string_agg(i.inhparent::regclass::text, ', ' ORDER BY i.inhseqno)
                              FROM pg_inherits AS i WHERE i.inhrelid = c.oid), '-'),
                  c.relreplident) AS line
      FROM pg_class AS c
     WHERE c.oid IN (SELECT oid FROM ext_rel) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
    UNION ALL
    SELECT c.oid::regclass::text,
           row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
           format('%s.%s: %s (typmod %s)%s%s%s%s%s%s',
                  c.oid::regclass, quote_ident(a.attname), format_type(a.atttypid, a.atttypmod), a.atttypmod,
                  CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                  ' default ' || pg_get_expr(ad.adbin, ad.adrelid),
                  CASE a.attidentity WHEN 'a' THEN ' generated always as identity'
                                     WHEN 'd' THEN ' generated by default as identity' ELSE '' END,
                  CASE a.attgenerated WHEN 's' THEN ' generated always (stored)' ELSE '' END,
                  CASE WHEN a.attcollation <> t.typcollation
                       THEN ' collate ' || (SELECT quote_ident(co.collname) FROM pg_collation AS co
                                             WHERE co.oid = a.attcollation) ELSE '' END,
                  CASE WHEN a.attstorage <> t.typstorage THEN ' storage ' || a.attstorage::text ELSE '' END)
      FROM pg_class AS c
      JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      JOIN pg_type AS t ON t.oid = a.atttypid
      LEFT JOIN pg_attrdef AS ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
     WHERE c.oid IN (SELECT oid FROM ext_rel) AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
) AS x ORDER BY rel, pos;

------------------------------------------------------------------------
\echo @@ constraints
SELECT format('%s %s [%s]: %s', coalesce(c.conrelid::regclass::text, c.contypid::regtype::text),
              quote_ident(c.conname), c.contype, pg_get_constraintdef(c.oid))
  FROM pg_constraint AS c WHERE c.oid IN (SELECT oid FROM ext_constraint)
 ORDER BY 1;

------------------------------------------------------------------------
\echo @@ indexes
SELECT format('%s: %s%s%s%s', i.indexrelid::regclass, pg_get_indexdef(i.indexrelid),
              CASE WHEN i.indisprimary THEN ' [primary key]' ELSE '' END,
              CASE WHEN i.indisreplident THEN ' [replica identity]' ELSE '' END,
              CASE WHEN i.indisclustered THEN ' [clustered]' ELSE '' END)
  FROM pg_index AS i WHERE i.indrelid IN (SELECT oid FROM ext_rel)
 ORDER BY 1;

------------------------------------------------------------------------
\echo @@ triggers
SELECT format('%s %s (enabled %s): %s', t.tgrelid::regclass, quote_ident(t.tgname), t.tgenabled,
              pg_get_triggerdef(t.oid))
  FROM pg_trigger AS t WHERE t.oid IN (SELECT oid FROM ext_trigger)
 ORDER BY t.tgrelid::regclass::text, t.tgname;

------------------------------------------------------------------------
\echo @@ functions
-- pg_get_functiondef: arguments and defaults, result, language, volatility,
-- strictness, SECURITY DEFINER, LEAKPROOF, PARALLEL, COST, ROWS, SET
-- clauses and the body; plus kind, owner and privileges
SELECT format(E'function %s (kind %s, owner %s, acl %s)\n%s', p.oid::regprocedure, p.prokind,
              pg_get_userbyid(p.proowner), coalesce(p.proacl::text, 'default'),
              CASE WHEN p.prokind = 'a'
                   THEN (SELECT format('aggregate: kind %s, transition %s, final %s, combine %s, state %s, initial %s, sort operator %s',
                                       g.aggkind, g.aggtransfn, g.aggfinalfn, g.aggcombinefn,
                                       format_type(g.aggtranstype, NULL), coalesce(g.agginitval, '-'),
                                       g.aggsortop::regoperator)
                           FROM pg_aggregate AS g WHERE g.aggfnoid = p.oid)
                   ELSE pg_get_functiondef(p.oid) END)
  FROM pg_proc AS p WHERE p.oid IN (SELECT oid FROM ext_proc)
 ORDER BY p.oid::regprocedure::text;

------------------------------------------------------------------------
\echo @@ acls
-- privileges now, and the initial privileges the extension scripts
-- recorded (pg_dump dumps the difference between the two)
SELECT line FROM (
    SELECT format('schema %s: owner %s, acl %s', n.oid::regnamespace, pg_get_userbyid(n.nspowner),
                  coalesce(n.nspacl::text, 'default')) AS line
      FROM pg_namespace AS n WHERE n.oid IN (SELECT oid FROM ext_schema)
    UNION ALL
    SELECT format('relation %s (kind %s): acl %s', c.oid::regclass, c.relkind, coalesce(c.relacl::text, 'default'))
      FROM pg_class AS c WHERE c.oid IN (SELECT oid FROM ext_rel) AND c.relkind NOT IN ('i', 'I', 'c', 't')
    UNION ALL
    SELECT format('column %s.%s: acl %s', a.attrelid::regclass, quote_ident(a.attname), a.attacl)
      FROM pg_attribute AS a
     WHERE a.attrelid IN (SELECT oid FROM ext_rel) AND a.attacl IS NOT NULL AND NOT a.attisdropped
    UNION ALL
    SELECT format('type %s: acl %s', t.oid::regtype, t.typacl)
      FROM pg_type AS t WHERE t.oid IN (SELECT oid FROM ext_type) AND t.typacl IS NOT NULL
    UNION ALL
    SELECT format('default privileges of %s in %s for %s: %s', pg_get_userbyid(d.defaclrole),
                  d.defaclnamespace::regnamespace, d.defaclobjtype, d.defaclacl)
      FROM pg_default_acl AS d WHERE d.defaclnamespace IN (SELECT oid FROM ext_schema)
    UNION ALL
    SELECT format('initial privileges of %s (%s): %s', pg_describe_object(i.classoid, i.objoid, i.objsubid),
                  i.privtype, i.initprivs)
      FROM pg_init_privs AS i WHERE (i.classoid, i.objoid) IN (SELECT classid, objid FROM ext_object)
) AS x ORDER BY line;

------------------------------------------------------------------------
\echo @@ views
-- definitions and options (security_barrier, security_invoker, check_option),
-- then any rewrite rule other than a view's own
SELECT line FROM (
    SELECT 1 AS k, c.oid::regclass::text AS name,
           format(E'%s (kind %s, options %s)\n%s', c.oid::regclass, c.relkind, coalesce(c.reloptions::text, '{}'),
                  pg_get_viewdef(c.oid, true)) AS line
      FROM pg_class AS c WHERE c.oid IN (SELECT oid FROM ext_rel) AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT 2, r.ev_class::regclass::text || ' ' || r.rulename,
           format('rule %s on %s (enabled %s): %s', quote_ident(r.rulename), r.ev_class::regclass, r.ev_enabled,
                  pg_get_ruledef(r.oid))
      FROM pg_rewrite AS r
     WHERE r.ev_class IN (SELECT oid FROM ext_rel) AND r.rulename <> '_RETURN'
) AS x ORDER BY k, name;

------------------------------------------------------------------------
\echo @@ policies
SELECT line FROM (
    SELECT format('%s: row security %s, forced %s', c.oid::regclass, c.relrowsecurity, c.relforcerowsecurity) AS line
      FROM pg_class AS c WHERE c.oid IN (SELECT oid FROM ext_rel) AND c.relkind IN ('r', 'p')
    UNION ALL
    SELECT format('policy %s on %s.%s: %s for %s to %s using (%s) with check (%s)',
                  quote_ident(p.policyname), quote_ident(p.schemaname), quote_ident(p.tablename), p.permissive,
                  p.cmd, p.roles, p.qual, p.with_check)
      FROM pg_policies AS p
     WHERE format('%I.%I', p.schemaname, p.tablename)::regclass IN (SELECT oid FROM ext_rel)
) AS x ORDER BY line;

------------------------------------------------------------------------
\echo @@ event_triggers
SELECT format('%s: on %s executes %s, tags %s, enabled %s, owner %s', quote_ident(e.evtname), e.evtevent,
              e.evtfoid::regprocedure, coalesce(e.evttags::text, '-'), e.evtenabled, pg_get_userbyid(e.evtowner))
  FROM pg_event_trigger AS e WHERE e.oid IN (SELECT oid FROM ext_event_trigger)
 ORDER BY 1;

------------------------------------------------------------------------
\echo @@ comments
-- obj_description and col_description of every object above, and of the extension
SELECT format('%s: %s', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description)
  FROM pg_description AS d WHERE (d.classoid, d.objoid) IN (SELECT classid, objid FROM ext_object)
 ORDER BY 1;

------------------------------------------------------------------------
\echo @@ sequences
SELECT format('%s: as %s, start %s, increment %s, min %s, max %s, cache %s, cycle %s, owned by %s',
              s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
              s.seqcache, s.seqcycle,
              coalesce((SELECT string_agg(format('%s.%s (%s)', d.refobjid::regclass, quote_ident(a.attname), d.deptype), ', ')
                          FROM pg_depend AS d
                          JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                         WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')), '-'))
  FROM pg_sequence AS s WHERE s.seqrelid IN (SELECT oid FROM ext_rel)
 ORDER BY 1;

------------------------------------------------------------------------
\echo @@ types
-- enums with their labels in order, domains with their base, ranges with
-- their subtype; row and array types of the tables too (composite
-- attributes are in "tables", domain constraints in "constraints")
SELECT format('%s: type %s, category %s, owner %s%s', t.oid::regtype, t.typtype, t.typcategory,
              pg_get_userbyid(t.typowner),
              CASE t.typtype
                  WHEN 'e' THEN ', labels ' || (SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                                                 FROM pg_enum AS e WHERE e.enumtypid = t.oid)
                  WHEN 'd' THEN format(', over %s%s%s', format_type(t.typbasetype, t.typtypmod),
                                       CASE WHEN t.typnotnull THEN ' not null' ELSE '' END,
                                       ' default ' || t.typdefault)
                  WHEN 'r' THEN (SELECT format(', subtype %s', r.rngsubtype::regtype) FROM pg_range AS r WHERE r.rngtypid = t.oid)
                  ELSE coalesce(', elements ' || nullif(t.typelem, 0)::regtype::text, '')
              END)
  FROM pg_type AS t WHERE t.oid IN (SELECT oid FROM ext_type)
 ORDER BY 1;

------------------------------------------------------------------------
\echo @@ extension_rows
-- rows the extension scripts themselves write (the ISO 4217 currencies):
-- in each table of the extension, the rows that pg_dump does not dump as
-- the user's, i.e. all rows of a table that is not a config table and the
-- rows outside the condition of one that is
CREATE FUNCTION pg_temp.extension_rows() RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    t record;
    line text;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS rel, cfg.condition
          FROM pg_class AS c
          LEFT JOIN (SELECT u.rel, u.condition
                       FROM pg_extension AS e, unnest(e.extconfig, e.extcondition) AS u(rel, condition)
                      WHERE e.extname = 'subscription') AS cfg ON cfg.rel = c.oid
         WHERE c.oid IN (SELECT oid FROM ext_rel) AND c.relkind IN ('r', 'p')
         ORDER BY c.oid::regclass::text
    LOOP
        CONTINUE WHEN t.condition = '';     -- every row is the user's
        FOR line IN EXECUTE format('SELECT %L || '': '' || x::text FROM %s AS x WHERE %s ORDER BY x::text',
                                   t.rel, t.rel,
                                   CASE WHEN t.condition IS NULL THEN 'true'
                                        ELSE format('NOT (%s)', regexp_replace(t.condition, '^\s*WHERE\s+', '', 'i')) END)
        LOOP
            RETURN NEXT line;
        END LOOP;
    END LOOP;
END
$$;
SELECT * FROM pg_temp.extension_rows();

------------------------------------------------------------------------
\echo @@ config
-- the pg_extension row; extconfig as names, each with its condition
SELECT format('extension %s: version %s, schema %s, relocatable %s, owner %s, %s config relations, %s conditions',
              e.extname, e.extversion, e.extnamespace::regnamespace, e.extrelocatable, pg_get_userbyid(e.extowner),
              coalesce(cardinality(e.extconfig), 0), coalesce(cardinality(e.extcondition), 0))
  FROM pg_extension AS e WHERE e.extname = 'subscription';
SELECT format('config %s: %s', coalesce(u.rel::regclass::text, '(no relation)'), coalesce(quote_literal(u.condition), '(no condition)'))
  FROM pg_extension AS e, unnest(e.extconfig, e.extcondition) AS u(rel, condition)
 WHERE e.extname = 'subscription'
 ORDER BY 1;

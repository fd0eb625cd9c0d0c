/* subscription--1.0--1.1.sql: from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION subscription UPDATE TO '1.1'" to load this file. \quit

-- Every change here is also in its source file under sql/src, from which
-- the fresh subscription--1.1.sql is built; test/upgrade.sh proves that 1.0
-- plus this script equals a fresh 1.1, object for object.

------------------------------------------------------------------------
-- The billing clock (issue 20): first, because every section below calls
-- it (defaults, views, bodies); the rest of the clock's step is in its
-- section "The billing clock (issue 20)" before the Citus one.
------------------------------------------------------------------------

CREATE FUNCTION subscription.now()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'subscription_now'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.now() IS
'The billing clock: subscription.clock where subscription.allow_clock is on, else the transaction''s start';

-- The meters' clock (issue 21): the statement's start, so that a meter sees
-- time pass between the statements of one transaction; subscription.clock
-- where it is moved, as subscription.now().
CREATE FUNCTION subscription.meter_now()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'subscription_meter_now'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.meter_now() IS
'The meters'' clock: subscription.clock where it is moved, else the statement''s start';

-- PUBLIC executes nothing; the application's and back-office's roles get
-- them from role_rights(), given again to the roles granted at the end
REVOKE ALL ON FUNCTION subscription.now() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.meter_now() FROM PUBLIC;

------------------------------------------------------------------------
-- Who acts: database roles are the boundary (security model, README)
------------------------------------------------------------------------

-- The role that called: current_user as the caller saw it, before the
-- extension's SECURITY DEFINER functions changed it.
CREATE FUNCTION subscription.calling_role()
RETURNS text
AS 'MODULE_PATHNAME', 'calling_role'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.calling_role() IS
'The database role that called the extension (current_user outside its SECURITY DEFINER functions)';

-- The roles given grant_application() or grant_backoffice().  An empty
-- subscription.actor is trusted only for the back-office ones.
CREATE TABLE subscription.granted_role (
    role       regrole NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('application', 'backoffice')),
    granted_at timestamptz NOT NULL DEFAULT subscription.now(),
    PRIMARY KEY (role, kind)
);
SELECT pg_catalog.pg_extension_config_dump('subscription.granted_role', '');

CREATE FUNCTION subscription.caller_is_trusted()
RETURNS boolean
AS 'MODULE_PATHNAME', 'caller_is_trusted'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.caller_is_trusted() IS
'Whether the calling role is back-office code, trusted without an actor (never inside a security-restricted operation)';

CREATE FUNCTION subscription.require_trusted_caller()
RETURNS void
AS 'MODULE_PATHNAME', 'require_trusted_caller'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.require_trusted_caller() IS
'42501 unless subscription.actor names a member or the calling role is back-office code';

-- History records who claimed to act and which database roles did it.  A
-- row written in replica mode (a restore, a replica's apply) is a copy:
-- who wrote it is not known here, so the roles stay NULL.
ALTER TABLE subscription.history ADD COLUMN db_user text;
ALTER TABLE subscription.history ALTER COLUMN db_user SET DEFAULT
    CASE WHEN current_setting('session_replication_role') <> 'replica' THEN subscription.calling_role() END;
ALTER TABLE subscription.history ADD COLUMN db_session_user text;
ALTER TABLE subscription.history ALTER COLUMN db_session_user SET DEFAULT
    CASE WHEN current_setting('session_replication_role') <> 'replica' THEN SESSION_USER END;

COMMENT ON TABLE subscription.history IS
'Append-only record of every change (R8): the claimed actor, and the database roles db_user and db_session_user';
COMMENT ON COLUMN subscription.history.actor IS
'The member the application named in subscription.actor, else the session user';
COMMENT ON COLUMN subscription.history.db_user IS
'The database role that made the change (current_user of the caller); NULL before 1.1 and for restored rows';
COMMENT ON COLUMN subscription.history.db_session_user IS
'The session''s login role; NULL before 1.1 and for restored rows';

-- The refusal of the actor for an action on an account, as the end of a
-- sentence, or NULL when it is allowed: the one statement of Z1, R9, K8.
--   owner: everything on the own account, except buying and paying from a
--          sub-account (K8);
--   admin: read and assign_licenses, plus the rights in member.rights (R9);
--          decrease_monthly_licenses allows decrease_licenses on monthly
--          subscriptions only;
--   member: nothing; nobody acts on another account.
-- Without an actor, only back-office roles are trusted.
CREATE FUNCTION subscription.actor_refusal(account_id bigint, action text, monthly boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.actor_refusal(subscription.tenant_of('account', actor_refusal.account_id),
                                      actor_refusal.account_id, actor_refusal.action, actor_refusal.monthly);
END
$$;

-- What the views show: the actor's own account (owner or admin), or
-- everything to back-office code.
CREATE FUNCTION subscription.may_read(account_id bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.may_read(subscription.tenant_of('account', may_read.account_id), may_read.account_id);
END
$$;

COMMENT ON FUNCTION subscription.may_read(bigint) IS
'Whether the actor (or back-office code without one) may read the account''s rows';

------------------------------------------------------------------------
-- Renewals: one tenant's code cannot hold back the others'
------------------------------------------------------------------------

-- One batch of renew_due: at most batch_size due subscriptions after
-- (after_end, after_id) in (period end, id) order, taken FOR NO KEY UPDATE
-- SKIP LOCKED, so workers run side by side without waiting for each other
-- (a subscription locked by other work is left for the next run); each is
-- caught up one period at a time.  The keyset means that neither the rows
-- renewed nor those another worker holds are read twice.  A subscription
-- whose renewal cannot be done (a price missing, a 'block' limit exceeded)
-- stays due, with a WARNING; so does one whose trimming fails in the
-- account's own code (a trigger of an application table).  Returns how many it took and handled, and
-- where the next batch starts.
CREATE OR REPLACE FUNCTION subscription.renew_batch(
    at timestamptz, batch_size integer, after_end timestamptz, after_id bigint,
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    status text;
    problem text;
    may_trim boolean;
BEGIN
    taken := 0;
    handled := 0;
    last_end := after_end;
    last_id := after_id;
    FOR s IN
        SELECT * FROM subscription.subscription AS x
         WHERE x.status = 'active' AND upper(x.period) <= at
           AND (upper(x.period), x.id) > (after_end, after_id)
         ORDER BY upper(x.period), x.id
         LIMIT batch_size
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        taken := taken + 1;
        last_end := upper(s.period);
        last_id := s.id;
        LOOP
            problem := subscription.renewal_problem(s);
            -- asked before anything moves: the batches it ends are part of the answer
            may_trim := problem IS NULL AND subscription.renewal_may_trim(s);
            IF may_trim THEN
                -- only here can the renewal be refused after writing: a subtransaction
                BEGIN
                    status := subscription.renew_period(s, true);
                EXCEPTION WHEN check_violation THEN
                    problem := SQLERRM;
                WHEN OTHERS THEN
                    -- the trim ran the account's own triggers: whatever they
                    -- raise holds back this renewal only, never the others'
                    -- (a lost race is still the caller's to retry)
                    IF SQLSTATE LIKE '40%' THEN
                        RAISE;
                    END IF;
                    problem := format('its trimming failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
                END;
            ELSIF problem IS NULL THEN
                status := subscription.renew_period(s, false);
            END IF;
            IF problem IS NOT NULL THEN
                RAISE WARNING 'subscription % was not renewed: %', s.id, problem
                    USING DETAIL = 'It stays due; renew_due() tries again on its next run.';
                EXIT;
            END IF;
            EXIT WHEN status <> 'active';
            SELECT * INTO s FROM subscription.subscription AS x WHERE x.id = s.id;
            EXIT WHEN upper(s.period) > at;
        END LOOP;
        IF problem IS NULL THEN
            handled := handled + 1;
        END IF;
    END LOOP;
END
$$;

------------------------------------------------------------------------
-- Reads follow the actor (S7)
------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION subscription.effective_limit(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_account(effective_limit.account_id);
    PERFORM subscription.authorize(effective_limit.account_id, 'read');
    PERFORM subscription.require_feature(effective_limit.feature);
    RETURN subscription.limit_of(account_id, feature);
END
$$;

CREATE OR REPLACE FUNCTION subscription.usage(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
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

COMMENT ON VIEW subscription.license_holder IS
'The members holding licenses of each subscription (R7), of the accounts the actor may read';

------------------------------------------------------------------------
-- Plan limits: registration checks, exact counts, and no bypass (S6, S10)
------------------------------------------------------------------------

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

-- ddl_command_end: a registered table keeps what its guard relies on.  The
-- DDL that would break it is refused (the owner can unenforce_limit first).
-- (kept: the event trigger subscription_keep_limited_tables runs this text on the
-- DDL below; its next text, in "Restores by a role that is not a superuser", calls later functions)
CREATE FUNCTION subscription.keep_limited_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t subscription.limited_table;
    problem text;
BEGIN
    FOR t IN
        SELECT DISTINCT ON (l.relation, l.feature) l.*
          FROM pg_catalog.pg_event_trigger_ddl_commands() AS d
          JOIN subscription.limited_table AS l
            ON l.relation = d.objid
            -- a new child or partition of a registered table
            OR l.relation IN (SELECT i.inhparent FROM pg_catalog.pg_inherits AS i WHERE i.inhrelid = d.objid)
         WHERE d.classid = 'pg_catalog.pg_class'::regclass
    LOOP
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

CREATE EVENT TRIGGER subscription_keep_limited_tables ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE')
    EXECUTE FUNCTION subscription.keep_limited_tables();

-- sql_drop: a dropped table takes its registrations and counters along;
-- a guard trigger of a table still registered cannot be dropped.
-- (kept: the event trigger subscription_forget_dropped_tables runs this text on the
-- DDL below; its next text, in "The guards on Citus shards", reads columns added later)
CREATE OR REPLACE FUNCTION subscription.forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registration subscription.limited_table;
BEGIN
    WITH gone AS (
        DELETE FROM subscription.limited_table AS t
         USING pg_catalog.pg_event_trigger_dropped_objects() AS d
         WHERE d.objid = t.relation::oid AND d.object_type = 'table'
        RETURNING t.feature)
    DELETE FROM subscription.usage_counter AS u USING gone
     WHERE u.feature = gone.feature;

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

-- The guard triggers' name for a feature: a hash keeps long feature names apart.
CREATE FUNCTION subscription.guard_name(feature text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 'subscription_limit_' OPERATOR(pg_catalog.||) left(feature, 30) OPERATOR(pg_catalog.||) '_'
       OPERATOR(pg_catalog.||) left(md5(feature), 8);

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

------------------------------------------------------------------------
-- The functions are the only write path (S5)
------------------------------------------------------------------------

ALTER FUNCTION subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text) SECURITY DEFINER;
ALTER FUNCTION subscription.set_quantity(bigint, integer, timestamptz) SECURITY DEFINER;
ALTER FUNCTION subscription.change_plan(bigint, text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION subscription.change_cycle(bigint, interval) SECURITY DEFINER;
ALTER FUNCTION subscription.set_renewal(bigint, text) SECURITY DEFINER;
ALTER FUNCTION subscription.cancel(bigint) SECURITY DEFINER;
ALTER FUNCTION subscription.cancel_account(bigint) SECURITY DEFINER;
ALTER FUNCTION subscription.end_early(bigint, timestamptz) SECURITY DEFINER;
ALTER FUNCTION subscription.purchase_addon(bigint, text, integer, timestamptz) SECURITY DEFINER;
ALTER FUNCTION subscription.cancel_addon(bigint) SECURITY DEFINER;
ALTER FUNCTION subscription.credit_account(bigint, numeric, text, text) SECURITY DEFINER;
ALTER FUNCTION subscription.license_consume(bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION subscription.license_release(bigint, bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION subscription.apply_downgrade(bigint, boolean) SECURITY DEFINER;
ALTER FUNCTION subscription.renew_due(timestamptz) SECURITY DEFINER;
-- run_renewals commits, which a SECURITY DEFINER procedure cannot: it stays
-- invoker, and each of its batches (renew_batch, above) is a definer.
ALTER FUNCTION subscription.preview_change_plan(bigint, text, timestamptz) SECURITY DEFINER;
ALTER FUNCTION subscription.preview_set_quantity(bigint, integer, timestamptz) SECURITY DEFINER;
ALTER FUNCTION subscription.preview_purchase_addon(bigint, text, integer, timestamptz) SECURITY DEFINER;
-- the reads (SQL-standard bodies were bound at creation: no SET needed)
ALTER FUNCTION subscription.licenses_left(bigint) SECURITY DEFINER SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION subscription.credit_balance(bigint, text) SECURITY DEFINER;
ALTER FUNCTION subscription.usage(bigint, text) SECURITY DEFINER;
ALTER FUNCTION subscription.effective_limit(bigint, text) SECURITY DEFINER;
-- renewal_notice shows the coupon's discount to its reader
ALTER FUNCTION subscription.coupon_discount(bigint, numeric, text) SECURITY DEFINER;

------------------------------------------------------------------------
-- Rights: what an application role and a back-office role get (S5, S9)
------------------------------------------------------------------------

-- The exact rights of each kind of role, one row per object: the single
-- list that grant_*, revoke_* and the ACL test read.
--   application: EXECUTE on what a member acting through the application
--     calls, and on what the views it reads call; SELECT on the catalog
--     and the views; new accounts and members, and their ids.
--   backoffice: the application's rights, EXECUTE on every function but
--     these grants, SELECT on every table and sequence (reports, pg_dump),
--     and the catalog, accounts and members to write.
-- Neither writes subscriptions, licenses, the ledger, the counters, the
-- archive or history: the functions do, as the extension's owner.
-- The exact rights of each kind of role, one row per object: the single
-- list that grant_*, revoke_* and the ACL test read.
--   application: EXECUTE on what a member acting through the application
--     calls, and on what the views it reads call; SELECT on the catalog
--     and the views; new accounts and members, and their ids.
--   backoffice: the application's rights, EXECUTE on every function but
--     these grants, SELECT on every table and sequence (reports, pg_dump),
--     and the catalog, accounts and members to write.
-- Neither writes subscriptions, licenses, the ledger, the counters, the
-- archive or history: the functions do, as the extension's owner.
-- (kept: the SELECT subscription.change_rights() calls below run this text;
-- its final text follows in section "Citus: create_account(), distribute()")
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
        effective_limit,current_actor,calling_role,may_read,coupon_discount,tier_for_hosts,prorate_refund,
        cycle_key,is_valid_cycle,renewal_options,plan_tiers,round_money,find_price,period_price,nth_period,
        cycle_text,sold_cycles,unknown_code,require_quantity,require_cycle,set_default,accept_terms,terms_in_effect,
        renewal_terms,plan_version_or_current,next_plan}';
    catalog text[] := '{product,plan,plan_price,plan_limit,addon,addon_price,plan_addon,currency,terms,suite_component}';
    views text[] := '{license_holder,invoice,credit_statement,renewal_notice}';
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
                     -- granting, and writing history, are for the extension's owner alone
                     ELSE p.proname !~ '^((grant|revoke)_(application|backoffice|restore)|change_rights|set_role_kind|write_history)$' END
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

-- GRANT (or REVOKE) the rights of a kind of role.
CREATE FUNCTION subscription.change_rights(role regrole, kind text, give boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
    PERFORM subscription.require_arguments('change_rights', '{role,kind,give}',
        ARRAY[role IS NULL, kind IS NULL, give IS NULL]);
    FOR r IN SELECT * FROM subscription.role_rights(kind) LOOP
        IF r.object_type = 'COLUMNS' THEN
            EXECUTE format(CASE WHEN give THEN 'GRANT %s ON TABLE %s TO %s' ELSE 'REVOKE %s ON TABLE %s FROM %s' END,
                           r.privileges, r.object, role);
        ELSE
            EXECUTE format(CASE WHEN give THEN 'GRANT %s ON %s %s TO %s' ELSE 'REVOKE %s ON %s %s FROM %s' END,
                           r.privileges, r.object_type, r.object, role);
        END IF;
    END LOOP;
END
$$;

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
    IF give THEN
        PERFORM subscription.change_rights(role, kind, true);
        INSERT INTO subscription.granted_role AS g (role, kind) VALUES (role, kind) ON CONFLICT DO NOTHING;
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
END
$$;

CREATE FUNCTION subscription.grant_application(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'application', true);
END;

CREATE FUNCTION subscription.grant_backoffice(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'backoffice', true);
END;

CREATE FUNCTION subscription.revoke_application(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'application', false);
END;

CREATE FUNCTION subscription.revoke_backoffice(role regrole)
RETURNS void
LANGUAGE sql
BEGIN ATOMIC
    SELECT subscription.set_role_kind(role, 'backoffice', false);
END;

COMMENT ON FUNCTION subscription.grant_application(regrole) IS
'Give a role the rights of an application: EXECUTE on the application''s functions, the catalog and the views (see role_rights)';
COMMENT ON FUNCTION subscription.grant_backoffice(regrole) IS
'Give a role the rights of back-office code, trusted without an actor (see role_rights)';
COMMENT ON FUNCTION subscription.revoke_application(regrole) IS
'Take back what grant_application() gave';
COMMENT ON FUNCTION subscription.revoke_backoffice(regrole) IS
'Take back what grant_backoffice() gave';

-- PUBLIC executes nothing: every function is granted by a decision above.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA subscription FROM PUBLIC;

------------------------------------------------------------------------
-- Every object explains itself (\dt+, \df+)
------------------------------------------------------------------------

COMMENT ON TABLE subscription.currency IS 'Currencies and the digits of their minor unit (ISO 4217 seeded; add your own with iso4217 = false)';
COMMENT ON TABLE subscription.plan IS 'Plans (editions) of a product, ranked; kind service or option (R11)';
COMMENT ON TABLE subscription.addon IS 'Add-ons of a product: units of a feature, recurring or one-time (K1-K5)';
COMMENT ON TABLE subscription.addon_price IS 'An add-on''s price per cycle (NULL cycle: one-time)';
COMMENT ON TABLE subscription.plan_addon IS 'The add-ons a plan may buy, or includes (Z6)';
COMMENT ON TABLE subscription.coupon IS 'Coupons: a percentage or an amount off, for some cycles, until a date, a number of times (Z10)';
COMMENT ON TABLE subscription.member IS 'The people of an account: owner, admin (with rights, R9) or member';
COMMENT ON TABLE subscription.subscription IS 'An account''s plan, cycle, quantity and current period, with what takes effect at the next one';
COMMENT ON TABLE subscription.license IS 'Seats of a subscription held by members; guarded on every write path (Z4, R11)';
COMMENT ON TABLE subscription.license_counter IS 'The seat counter of a subscription: used never exceeds capacity';
COMMENT ON TABLE subscription.service_seat IS 'R11 as a key: one service license per member and product';
COMMENT ON TABLE subscription.addon_batch IS 'Add-on units bought for a subscription';
COMMENT ON TABLE subscription.ledger IS 'Money, append-only lines: charges, refunds, credits, discounts, credit uses; a period is charged once (C2)';
COMMENT ON TABLE subscription.trimmed IS 'Rows removed or changed by a downgrade, as they were (C9-C12)';
COMMENT ON TABLE subscription.usage_counter IS 'What each account uses of each limited feature, with its limit, kept by the guards';
COMMENT ON TABLE subscription.limited_table IS 'The application tables whose rows count against a feature''s limit (enforce_limit)';

COMMENT ON FUNCTION subscription.assign_default_license() IS 'Trigger: a new member gets a license of the account''s default subscription when one is free (R10)';
COMMENT ON FUNCTION subscription.cancel(bigint) IS 'Cancel at the end of the period (Z8); returns when it ends';
COMMENT ON FUNCTION subscription.cancel_account(bigint) IS 'Cancel every active subscription of the account, each at its period end (Z8)';
COMMENT ON FUNCTION subscription.cancel_addon(bigint) IS 'End an add-on batch with the period (K4, K5); returns when it ends';
COMMENT ON FUNCTION subscription.change_rights(regrole, text, boolean) IS 'Internal: GRANT or REVOKE the rights of a kind of role (role_rights)';
COMMENT ON FUNCTION subscription.current_actor() IS 'The actor written to history: subscription.actor, else the session user';
COMMENT ON FUNCTION subscription.forget_dropped_tables() IS 'Event trigger: a dropped table takes its registrations along; a guard of a registered table cannot be dropped';
COMMENT ON FUNCTION subscription.guard_name(text) IS 'The limit guards'' trigger name for a feature, with a hash so long names never collide';
COMMENT ON FUNCTION subscription.guard_triggers(regclass, text) IS 'The limit guard triggers of a registration, found by function and argument';
COMMENT ON FUNCTION subscription.is_valid_cycle(interval) IS 'Whether an interval is a positive billing cycle';
COMMENT ON FUNCTION subscription.keep_limited_tables() IS 'Event trigger: refuses DDL that would break a limited table''s guards';
COMMENT ON FUNCTION subscription.license_guard() IS 'Trigger (C): checks and counts every write of subscription.license';
COMMENT ON FUNCTION subscription.limit_guard() IS 'Trigger (C): keeps an account''s usage of a feature within its limit on an application table';
COMMENT ON FUNCTION subscription.limited_column(regclass, name, text, boolean) IS 'Internal: the column of a registration exists, and is an integer where needed';
COMMENT ON FUNCTION subscription.money_scale(text) IS 'The digits of a currency''s minor unit';
COMMENT ON FUNCTION subscription.period_containing(timestamptz, interval, timestamptz) IS 'The k of the anchored period that holds a time (L4)';
COMMENT ON FUNCTION subscription.redeemable_coupon(text, timestamptz, text) IS 'Internal: the Z10 checks of a coupon, locking it';
COMMENT ON FUNCTION subscription.registration_problem(subscription.limited_table) IS 'What is wrong with a limit registration (tree, columns, guards), or NULL';
COMMENT ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint) IS 'Internal: one batch of renew_due and run_renewals';
COMMENT ON FUNCTION subscription.renew_period(subscription.subscription, boolean) IS 'Internal: one period of one due subscription';
COMMENT ON FUNCTION subscription.renewal_may_trim(subscription.subscription) IS 'Internal: whether the next renewal can lower the account''s limits';
COMMENT ON FUNCTION subscription.require_arguments(text, text[], boolean[]) IS 'Internal: 22004 for a NULL required argument';
COMMENT ON FUNCTION subscription.require_feature(text) IS 'Internal: 42704 unless a plan limit or add-on names the feature';
COMMENT ON FUNCTION subscription.require_renewal(text) IS 'Internal: 22023 unless a renewal option (R6)';
COMMENT ON FUNCTION subscription.require_table_owner(regclass) IS 'Internal: 42501 unless the calling role owns the table';
COMMENT ON FUNCTION subscription.reseat_licenses(bigint[]) IS 'Internal (C): rebuild the service seats of subscriptions whose plan changed kind or product (R11)';
COMMENT ON FUNCTION subscription.round_money(numeric, text) IS 'Round an amount to its currency''s minor unit, half away from zero';
COMMENT ON FUNCTION subscription.set_renewal(bigint, text) IS 'The renewal option: none, once, always, to_monthly (R6)';
COMMENT ON FUNCTION subscription.set_role_kind(regrole, text, boolean) IS 'Internal: what grant_* and revoke_* do';
COMMENT ON FUNCTION subscription.unenforce_limit(regclass, text) IS 'Remove a feature''s limit guard from a table, with its counters';

------------------------------------------------------------------------
-- Hardening: errors as a user wants them, bounds on time and amounts (issue 15)
------------------------------------------------------------------------

-- renew_batch gains the subscriptions a run has capped (skip, capped)
DROP FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint);

-- A cycle as a catalog writes it ('1 month', '1 year', '30 days',
-- '1 week'), not as interval output prints it ('1 mon', '7 days'): for
-- messages.  Whole years and weeks are named so.
CREATE OR REPLACE FUNCTION subscription.cycle_text(cycle interval)
RETURNS text
LANGUAGE sql STRICT IMMUTABLE PARALLEL SAFE
RETURN (SELECT coalesce(nullif(concat_ws(' ',
            CASE WHEN k[1] = 0 THEN NULL
                 WHEN k[1] % 12 = 0 THEN (k[1] / 12)::text || CASE WHEN abs(k[1]) = 12 THEN ' year' ELSE ' years' END
                 ELSE k[1]::text || CASE WHEN abs(k[1]) = 1 THEN ' month' ELSE ' months' END END,
            CASE WHEN k[2] = 0 THEN NULL
                 WHEN k[2] % 7 = 0 THEN (k[2] / 7)::text || CASE WHEN abs(k[2]) = 7 THEN ' week' ELSE ' weeks' END
                 ELSE k[2]::text || CASE WHEN abs(k[2]) = 1 THEN ' day' ELSE ' days' END END,
            CASE WHEN k[3] = 0 THEN NULL ELSE (k[3] * interval '1 microsecond')::text END), ''), '0')
          FROM (SELECT subscription.cycle_key(cycle)) AS f(k));

COMMENT ON FUNCTION subscription.cycle_text(interval) IS 'A billing cycle as a catalog writes it, for messages (''1 month'', not ''1 mon'')';

-- The value checks that several functions share, each with its one message.
CREATE OR REPLACE FUNCTION subscription.require_cycle(cycle interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT subscription.is_valid_cycle(cycle) THEN
        RAISE EXCEPTION 'cycle % is not a positive billing cycle', subscription.cycle_text(cycle)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an interval such as ''1 month'', ''1 year'', ''30 days'' or ''3 years''.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_cycle(interval) IS 'Internal: 22023 unless a positive billing cycle';

-- The DETAIL of a missing price: the cycles a plan or add-on is sold for,
-- as its catalog writes them.
CREATE OR REPLACE FUNCTION subscription.sold_cycles(kind text, code text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT CASE WHEN count(c.cycle) OPERATOR(pg_catalog.=) 0 THEN format('%s "%s" has no recurring price.', upper(left(kind, 1)) || substr(kind, 2), code)
                ELSE format('%s "%s" is sold for %s.', upper(left(kind, 1)) || substr(kind, 2), code,
                            string_agg(DISTINCT subscription.cycle_text(c.cycle), ', ' ORDER BY subscription.cycle_text(c.cycle))) END
      FROM (SELECT pp.cycle FROM subscription.plan_price AS pp
             WHERE kind OPERATOR(pg_catalog.=) 'plan' AND pp.plan OPERATOR(pg_catalog.=) code
            UNION ALL
            SELECT ap.cycle FROM subscription.addon_price AS ap
             WHERE kind OPERATOR(pg_catalog.=) 'add-on' AND ap.addon OPERATOR(pg_catalog.=) code
               AND ap.cycle IS NOT NULL) AS c;
END;

COMMENT ON FUNCTION subscription.sold_cycles(text, text) IS 'Internal: the cycles a plan or add-on is sold for, for a DETAIL';

-- Bounds (issue 15), in C (src/bounds.c) so that they read their settings
-- typed: a quantity from 1 to subscription.max_quantity, an amount up to
-- subscription.max_amount, a time from subscription.now() - subscription.max_backdate
-- (and for renewals up to subscription.now() + subscription.max_ahead).
CREATE OR REPLACE FUNCTION subscription.require_quantity(quantity integer)
RETURNS void
AS 'MODULE_PATHNAME', 'require_quantity'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.require_quantity(integer) IS 'Internal: 22023 below 1, 22003 above subscription.max_quantity';

CREATE OR REPLACE FUNCTION subscription.require_amount(amount numeric, currency text)
RETURNS void
AS 'MODULE_PATHNAME', 'require_amount'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.require_amount(numeric, text) IS 'Internal: 22003 for an amount above subscription.max_amount';

CREATE OR REPLACE FUNCTION subscription.require_time(fn text, at timestamptz, renewal boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'require_time'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.require_time(text, timestamptz, boolean) IS 'Internal: a finite time, not before subscription.max_backdate, nor for renewals after subscription.max_ahead';

-- A time of a change to an active subscription must be in its current
-- period.  Past its end the subscription is overdue: the renewal that
-- ended it has not run, and the error says which (period end) and what to
-- run first.
CREATE OR REPLACE FUNCTION subscription.require_in_period(fn text, s subscription.subscription, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF at <@ s.period THEN
        RETURN;
    ELSIF at >= upper(s.period) THEN
        RAISE EXCEPTION 'subscription % is overdue: its renewal at % has not run', s.id, upper(s.period)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s() was given %s, after the current period %s.', fn, at, s.period),
                  HINT = format('Run subscription.renew_due() first: it renews the period that ended at %s.',
                                upper(s.period));
    END IF;
    RAISE EXCEPTION 'the time given to %() is before the current period of subscription %', fn, s.id
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('%s() was given %s; the current period is %s.', fn, at, s.period);
END
$$;

COMMENT ON FUNCTION subscription.require_in_period(text, subscription.subscription, timestamptz) IS 'Internal: 22023 unless a time is in the current period, saying which renewal is overdue';

-- 42704 for an unknown plan or add-on, with the closest codes as a HINT:
-- those sharing the most character pairs (bigrams, Dice coefficient), the
-- best three at 0.3 or more.
CREATE OR REPLACE FUNCTION subscription.unknown_code(kind text, code text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
-- the planner estimates the hint's query far above its cost (a series over
-- a computed length counts as 1,000 rows): JIT would compile it for seconds
SET jit = off
AS $$
DECLARE
    closest text;
BEGIN
    WITH codes AS (
        SELECT p.code AS c FROM subscription.plan AS p WHERE unknown_code.kind = 'plan'
        UNION ALL
        SELECT a.code FROM subscription.addon AS a WHERE unknown_code.kind = 'add-on'),
    grams AS (
        SELECT n.c, substr(lower(n.c), i, 2) AS g
          FROM (SELECT codes.c FROM codes UNION SELECT unknown_code.code) AS n(c)
          CROSS JOIN LATERAL generate_series(1, length(n.c) - 1) AS i)
    SELECT string_agg(format('"%s"', s.c), ', ' ORDER BY s.score DESC, s.c) INTO closest
      FROM (SELECT k.c,
                   2.0 * (SELECT count(*) FROM (SELECT g FROM grams WHERE grams.c = k.c
                                            INTERSECT SELECT g FROM grams WHERE grams.c = unknown_code.code) AS both_)
                   / nullif((SELECT count(DISTINCT g) FROM grams WHERE grams.c = k.c)
                         + (SELECT count(DISTINCT g) FROM grams WHERE grams.c = unknown_code.code), 0) AS score
              FROM codes AS k
             ORDER BY 2 DESC, 1 LIMIT 3) AS s
     WHERE s.score >= 0.3;
    RAISE EXCEPTION '% "%" does not exist', kind, code
        USING ERRCODE = 'undefined_object',
              HINT = CASE WHEN closest IS NULL
                          THEN format('The %ss are the rows of subscription.%s.', kind, replace(kind, '-', ''))
                          ELSE format('Did you mean %s?', closest) END;
END
$$;

COMMENT ON FUNCTION subscription.unknown_code(text, text) IS 'Internal: 42704 for an unknown plan or add-on, hinting the closest codes';

-- The k-th period (k >= 1) of a subscription anchored at anchor: computed
-- from the anchor, so month ends do not drift (Jan 31, Feb 28, Mar 31).
-- A cycle that is not positive, or an infinite anchor, is refused (22023).
CREATE OR REPLACE FUNCTION subscription.nth_period(anchor timestamptz, cycle interval, k integer)
RETURNS tstzrange
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_cycle(cycle);
    IF NOT isfinite(anchor) THEN
        RAISE EXCEPTION 'the anchor of a period must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('nth_period() was given %s.', anchor);
    END IF;
    RETURN tstzrange(anchor + ((k - 1) * cycle),
                     anchor + (k * cycle), '[)');
END
$$;

COMMENT ON FUNCTION subscription.nth_period(timestamptz, interval, integer) IS 'The k-th period of an anchored cycle, computed from the anchor';

-- A plan's tiers: the distinct tier values of its prices ('{}' if untiered).
CREATE OR REPLACE FUNCTION subscription.plan_tiers(plan text)
RETURNS integer[]
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tiers integer[];
BEGIN
    PERFORM FROM subscription.plan AS p WHERE p.code = plan_tiers.plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    SELECT coalesce(array_agg(DISTINCT pp.tier ORDER BY pp.tier), '{}')
      INTO tiers
      FROM subscription.plan_price AS pp
     WHERE pp.plan = plan_tiers.plan AND pp.tier IS NOT NULL;
    RETURN tiers;
END
$$;

COMMENT ON FUNCTION subscription.plan_tiers(text) IS 'A plan''s host tiers ({} when untiered)';

-- The exact gross price of one period of plan for quantity, not yet
-- rounded (callers round once, at the end): per-license prices times
-- quantity, tier prices flat; a tiered plan's quantity must be a tier (L12).
-- The price of a plan for a cycle and quantity, or why there is none
-- ('not_a_tier', 'no_price'): the lookup that period_price() raises on and
-- renew_due() checks without a subtransaction.
CREATE OR REPLACE FUNCTION subscription.find_price(
    plan text, cycle interval, quantity integer,
    OUT amount numeric, OUT currency text, OUT problem text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tiers integer[] := subscription.plan_tiers(plan);
    price subscription.plan_price;
BEGIN
    IF quantity < 1 THEN
        PERFORM subscription.require_quantity(quantity);
    END IF;
    IF cardinality(tiers) > 0 AND NOT quantity = ANY (tiers) THEN
        problem := 'not_a_tier';
        RETURN;
    END IF;
    SELECT * INTO price FROM subscription.plan_price AS pp
     WHERE pp.plan = find_price.plan
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(find_price.cycle)
       AND pp.tier IS NOT DISTINCT FROM CASE WHEN cardinality(tiers) > 0 THEN quantity END;
    IF NOT FOUND THEN
        problem := 'no_price';
        RETURN;
    END IF;
    amount := CASE WHEN price.per_license THEN price.amount * quantity
                   ELSE price.amount END;
    currency := price.currency;
END
$$;

COMMENT ON FUNCTION subscription.find_price(text, interval, integer) IS 'A plan''s price for a cycle and quantity, or why there is none (not_a_tier, no_price)';

CREATE OR REPLACE FUNCTION subscription.period_price(
    plan text, cycle interval, quantity integer,
    OUT amount numeric, OUT currency text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_price record := subscription.find_price(plan, cycle, quantity);
BEGIN
    IF found_price.problem = 'not_a_tier' THEN
        RAISE EXCEPTION 'quantity % is not a tier of plan "%"', quantity, plan
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The tiers of plan "%s" are %s.', plan, subscription.plan_tiers(plan)),
                  HINT = CASE WHEN quantity > (SELECT max(t) FROM unnest(subscription.plan_tiers(plan)) AS t)
                              THEN format('The largest tier of plan "%s" holds %s hosts: contact sales for more.',
                                          plan, (SELECT max(t) FROM unnest(subscription.plan_tiers(plan)) AS t))
                              ELSE format('Use subscription.tier_for_hosts(%L, %s) for the tier that holds %s hosts.',
                                          plan, quantity, quantity) END;
    ELSIF found_price.problem = 'no_price' THEN
        RAISE EXCEPTION 'plan "%" has no price for cycle %', plan, subscription.cycle_text(cycle)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = subscription.sold_cycles('plan', plan),
                  HINT = 'The cycles of a plan are those of its rows in subscription.plan_price.';
    END IF;
    amount := found_price.amount;
    currency := found_price.currency;
END
$$;

COMMENT ON FUNCTION subscription.period_price(text, interval, integer) IS 'The exact price of one period of a plan for a quantity, or an error saying why not';

-- The price of "quantity" units of an add-on for a cycle (NULL: the
-- one-time price); 22023 when the add-on is not sold so.
CREATE OR REPLACE FUNCTION subscription.addon_period_price(addon text, cycle interval, quantity integer,
                                                OUT amount numeric, OUT currency text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF quantity < 1 THEN
        PERFORM subscription.require_quantity(quantity);
    END IF;
    SELECT ap.amount * quantity, ap.currency INTO amount, currency
      FROM subscription.addon_price AS ap
     WHERE ap.addon = addon_period_price.addon
       AND subscription.cycle_key(ap.cycle) IS NOT DISTINCT FROM subscription.cycle_key(addon_period_price.cycle);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on "%" has no price for %', addon,
                        coalesce('cycle ' || subscription.cycle_text(cycle), 'a one-time purchase')
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = subscription.sold_cycles('add-on', addon),
                  HINT = 'The prices of an add-on are its rows in subscription.addon_price.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.addon_period_price(text, interval, integer) IS 'The price of units of an add-on for a cycle (NULL: one-time); 22023 when not sold so';

COMMENT ON FUNCTION subscription.end_early(bigint, timestamptz) IS 'End a subscription now; its unused days become credit (L9)';

COMMENT ON FUNCTION subscription.credit_account(bigint, numeric, text, text) IS 'Credit an account with a reason; the next charges use it (L9, L10)';

-- Why the next renewal of a subscription would fail (no price for its
-- plan, cycle and quantity, or for one of its add-on batches), or NULL.
-- A plain lookup: renew_due() checks every subscription without a
-- subtransaction.
CREATE OR REPLACE FUNCTION subscription.renewal_problem(s subscription.subscription)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    next_cycle interval := CASE WHEN s.renewal = 'to_monthly' THEN interval '1 month'
                                ELSE coalesce(s.pending_cycle, s.cycle) END;
    next_plan text := coalesce(s.pending_plan, s.plan);
    next_quantity integer := coalesce(s.pending_quantity, s.quantity);
    missing text;
BEGIN
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        RETURN NULL;
    END IF;
    CASE (subscription.find_price(next_plan, next_cycle, next_quantity)).problem
        WHEN 'not_a_tier' THEN
            RETURN format('quantity %s is not a tier of plan "%s"', next_quantity, next_plan);
        WHEN 'no_price' THEN
            RETURN format('plan "%s" has no price for cycle %s', next_plan, subscription.cycle_text(next_cycle));
        ELSE
    END CASE;
    missing := subscription.unpriced_addons(s.id, next_cycle);
    IF missing IS NOT NULL THEN
        RETURN format('add-on %s has no price for cycle %s', missing, subscription.cycle_text(next_cycle));
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.renewal_problem(subscription.subscription) IS 'Internal: why the next renewal could not be charged, or NULL';

-- One batch of renew_due: at most batch_size due subscriptions after
-- (after_end, after_id) in (period end, id) order, taken FOR NO KEY UPDATE
-- SKIP LOCKED, so workers run side by side without waiting for each other
-- (a subscription locked by other work is left for the next run); each is
-- caught up one period at a time.  The keyset means that neither the rows
-- renewed nor those another worker holds are read twice.  A subscription
-- whose renewal cannot be done (a price missing, a 'block' limit exceeded)
-- stays due, with a WARNING; so does one whose trimming fails in the
-- account's own code (a trigger of an application table).  One call
-- catches up at most subscription.max_catchup periods of a subscription:
-- past it, the subscription stays due with a WARNING, is listed in capped
-- (the caller's later batches pass it back in skip, so that its moved
-- period end does not bring it back in this run), and the next run goes on
-- from there.  Returns how many it took and handled, and where the next
-- batch starts.
CREATE FUNCTION subscription.renew_batch(
    at timestamptz, batch_size integer, after_end timestamptz, after_id bigint, skip bigint[],
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint, OUT capped bigint[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    n subscription.period_terms;
    status text;
    problem text;
    may_trim boolean;
    most integer := current_setting('subscription.max_catchup')::integer;
    renewed integer;
BEGIN
    taken := 0;
    handled := 0;
    last_end := after_end;
    last_id := after_id;
    capped := '{}';
    FOR s IN
        SELECT * FROM subscription.subscription AS x
         WHERE x.status = 'active' AND upper(x.period) <= at
           AND (upper(x.period), x.id) > (after_end, after_id)
           AND NOT x.id = ANY (skip)
         ORDER BY upper(x.period), x.id
         LIMIT batch_size
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        taken := taken + 1;
        last_end := upper(s.period);
        last_id := s.id;
        renewed := 0;
        LOOP
            -- the next period's terms, asked once (issue 15, fold 8; L7)
            n := subscription.next_terms(s);
            problem := subscription.renewal_problem(s, n);
            -- asked before anything moves: the batches it ends are part of the answer
            may_trim := problem IS NULL AND subscription.renewal_may_trim(s, n);
            IF may_trim THEN
                -- only here can the renewal be refused after writing: a subtransaction
                BEGIN
                    status := subscription.renew_period(s, n, true);
                EXCEPTION WHEN check_violation THEN
                    problem := SQLERRM;
                WHEN OTHERS THEN
                    -- the trim ran the account's own triggers: whatever they
                    -- raise holds back this renewal only, never the others'
                    -- (a lost race is still the caller's to retry)
                    IF SQLSTATE LIKE '40%' THEN
                        RAISE;
                    END IF;
                    problem := format('its trimming failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
                END;
            ELSIF problem IS NULL THEN
                status := subscription.renew_period(s, n, false);
            END IF;
            IF problem IS NOT NULL THEN
                RAISE WARNING 'subscription % was not renewed: %', s.id, problem
                    USING DETAIL = 'It stays due; renew_due() tries again on its next run.';
                EXIT;
            END IF;
            EXIT WHEN status <> 'active';
            SELECT * INTO s FROM subscription.subscription AS x WHERE x.id = s.id;
            EXIT WHEN upper(s.period) > at;
            renewed := renewed + 1;
            IF renewed >= most THEN
                RAISE WARNING 'subscription % caught up % periods, the most of one call', s.id, renewed
                    USING DETAIL = format('It stays due from %s; the next renewal run goes on from there.', upper(s.period)),
                          HINT = 'subscription.max_catchup sets how many periods one call catches up.';
                capped := capped || s.id;
                EXIT;
            END IF;
        END LOOP;
        IF problem IS NULL THEN
            handled := handled + 1;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint, bigint[]) IS 'Internal: one batch of renew_due and run_renewals';

-- Renewals are back-office work: no actor, and a trusted role; up to a
-- time neither further back than subscription.max_backdate nor further
-- ahead than subscription.max_ahead (a mistyped year bills no decades).
CREATE OR REPLACE FUNCTION subscription.require_renewal_run(fn text, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_time(fn, at, true);
    IF coalesce(current_setting('subscription.actor', true), '') <> '' THEN
        RAISE EXCEPTION '%() is back-office work', fn
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('subscription.actor is set to %s.', current_setting('subscription.actor')),
                  HINT = 'Run it with subscription.actor empty.';
    END IF;
    PERFORM subscription.require_trusted_caller();
END
$$;

COMMENT ON FUNCTION subscription.require_renewal_run(text, timestamptz) IS 'Internal: renewals run up to a time within the bounds, as back-office code';

-- PUBLIC executes none of the new functions; the roles given their rights
-- before get the new ones of their kind
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- Hardening: caches that follow the catalog (issue 15)
-- enforce_limit and unenforce_limit make every backend drop its cached
-- registrations of the table at commit; unenforce_limit waits for the
-- table's writers, so that no guard counts on after it.
CREATE FUNCTION subscription.invalidate_limit_cache(relation regclass)
RETURNS void
AS 'MODULE_PATHNAME', 'invalidate_limit_cache'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.invalidate_limit_cache(regclass) IS
'Internal (C): every backend drops its cached limit registrations of a table at commit';

REVOKE ALL ON FUNCTION subscription.invalidate_limit_cache(regclass) FROM PUBLIC;

CREATE OR REPLACE FUNCTION subscription.unenforce_limit(relation regclass, feature text)
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

-- Hardening: nothing lost (issue 15, item 1)
-- A DELETE never takes money or what it names along: the foreign keys into
-- accounts, subscriptions, add-on batches, the ledger and the catalog lose
-- their cascade, refuse_delete_in_use() names what a row still has (2BP01);
-- only derived data (usage_counter, license_counter) and a member's seats
-- still cascade.  account.parent_id and ledger.charge_id become checked by
-- a trigger (pg_dump reported them as circular foreign keys).  An account
-- is closed (close_account) and its personal data erased (erase_account).
ALTER TABLE subscription.account ADD COLUMN closed_at timestamptz;
COMMENT ON TABLE subscription.account IS 'Tenants; parent_id makes a sub-account (K7); an account that holds anything is closed (close_account), not deleted';
ALTER TABLE subscription.account DROP CONSTRAINT account_parent_id_fkey;
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_charge_id_fkey;
ALTER TABLE subscription.member DROP CONSTRAINT member_account_id_fkey,
    ADD CONSTRAINT member_account_id_fkey FOREIGN KEY (account_id) REFERENCES subscription.account (id);
ALTER TABLE subscription.subscription DROP CONSTRAINT subscription_account_id_fkey,
    ADD CONSTRAINT subscription_account_id_fkey FOREIGN KEY (account_id) REFERENCES subscription.account (id);
ALTER TABLE subscription.addon_batch DROP CONSTRAINT addon_batch_subscription_id_fkey,
    ADD CONSTRAINT addon_batch_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES subscription.subscription (id);
ALTER TABLE subscription.license DROP CONSTRAINT license_subscription_id_fkey,
    ADD CONSTRAINT license_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES subscription.subscription (id);
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_account_id_fkey,
    ADD CONSTRAINT ledger_account_id_fkey FOREIGN KEY (account_id) REFERENCES subscription.account (id);
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_subscription_id_fkey,
    ADD CONSTRAINT ledger_subscription_id_fkey FOREIGN KEY (subscription_id) REFERENCES subscription.subscription (id);
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_addon_batch_id_fkey,
    ADD CONSTRAINT ledger_addon_batch_id_fkey FOREIGN KEY (addon_batch_id) REFERENCES subscription.addon_batch (id);
ALTER TABLE subscription.trimmed DROP CONSTRAINT trimmed_account_id_fkey,
    ADD CONSTRAINT trimmed_account_id_fkey FOREIGN KEY (account_id) REFERENCES subscription.account (id);
ALTER TABLE subscription.plan_price DROP CONSTRAINT plan_price_plan_fkey,
    ADD CONSTRAINT plan_price_plan_fkey FOREIGN KEY (plan) REFERENCES subscription.plan (code) ON UPDATE CASCADE;
ALTER TABLE subscription.plan_limit DROP CONSTRAINT plan_limit_plan_fkey,
    ADD CONSTRAINT plan_limit_plan_fkey FOREIGN KEY (plan) REFERENCES subscription.plan (code) ON UPDATE CASCADE;
ALTER TABLE subscription.addon_price DROP CONSTRAINT addon_price_addon_fkey,
    ADD CONSTRAINT addon_price_addon_fkey FOREIGN KEY (addon) REFERENCES subscription.addon (code) ON UPDATE CASCADE;
ALTER TABLE subscription.plan_addon DROP CONSTRAINT plan_addon_plan_fkey,
    ADD CONSTRAINT plan_addon_plan_fkey FOREIGN KEY (plan) REFERENCES subscription.plan (code) ON UPDATE CASCADE;
ALTER TABLE subscription.plan_addon DROP CONSTRAINT plan_addon_addon_fkey,
    ADD CONSTRAINT plan_addon_addon_fkey FOREIGN KEY (addon) REFERENCES subscription.addon (code) ON UPDATE CASCADE;
CREATE INDEX ON subscription.ledger (charge_id);
CREATE INDEX ON subscription.ledger (plan);

-- "1 ledger line", "3 ledger lines", or NULL for none
CREATE FUNCTION subscription.count_phrase(n bigint, noun text, nouns text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN n OPERATOR(pg_catalog.=) 0 THEN NULL
            WHEN n OPERATOR(pg_catalog.=) 1 THEN '1 ' OPERATOR(pg_catalog.||) noun
            ELSE n::text OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) nouns END;

COMMENT ON FUNCTION subscription.count_phrase(bigint, text, text) IS 'Internal: "1 ledger line", "3 ledger lines", or NULL for none';

-- The rows of account (its sub-accounts) or ledger (the lines of a charge)
-- that name a row, read with the latest snapshot as a foreign key's check
-- reads them (src/references.c): the references that are not foreign keys
-- are then kept under REPEATABLE READ too.
CREATE FUNCTION subscription.self_referrers(relation text, id bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'self_referrers'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION subscription.self_referrers(text, bigint) IS
'Internal (C): the sub-accounts of an account, or the lines of a charge, read with the latest snapshot';

-- Before a row of account, subscription, addon_batch, ledger, plan,
-- plan_price, addon or addon_price is deleted: 2BP01 naming what still
-- refers to it.  The row is locked first, so that a writer that names it
-- (its foreign key check holds FOR KEY SHARE) commits before the count.
-- (kept: the statements below need refuse_delete_in_use(); its final text follows
-- in section "Citus: create_account(), distribute()")
CREATE FUNCTION subscription.refuse_delete_in_use()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the deleter needs no right on the ledger
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    what text;
    held text[];
    hint text;
    ledger_lines bigint;
BEGIN
    CASE TG_TABLE_NAME
    WHEN 'account' THEN
        PERFORM FROM subscription.account AS a WHERE a.id = OLD.id FOR UPDATE;
        what := format('account %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l WHERE l.account_id = OLD.id;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'active subscription', 'active subscriptions')
               FROM subscription.subscription AS s
              WHERE s.account_id = OLD.id AND s.status = 'active'),
            (SELECT subscription.count_phrase(count(*), 'ended subscription', 'ended subscriptions')
               FROM subscription.subscription AS s
              WHERE s.account_id = OLD.id AND s.status <> 'active'),
            (SELECT subscription.count_phrase(count(*), 'member', 'members')
               FROM subscription.member AS m WHERE m.account_id = OLD.id),
            subscription.count_phrase(subscription.self_referrers('account', OLD.id), 'sub-account', 'sub-accounts'),
            (SELECT subscription.count_phrase(count(*), 'archived row', 'archived rows')
               FROM subscription.trimmed AS t WHERE t.account_id = OLD.id)];
        hint := 'Close it with subscription.close_account(); subscription.erase_account() then removes its personal data and keeps the ledger.';
    WHEN 'subscription' THEN
        what := format('subscription %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l WHERE l.subscription_id = OLD.id;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'add-on batch', 'add-on batches')
               FROM subscription.addon_batch AS b WHERE b.subscription_id = OLD.id),
            (SELECT subscription.count_phrase(count(*), 'license', 'licenses')
               FROM subscription.license AS x WHERE x.subscription_id = OLD.id)];
        hint := 'End it with subscription.cancel() or subscription.end_early(), or close its account; the ledger keeps its lines.';
    WHEN 'addon_batch' THEN
        what := format('add-on batch %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l WHERE l.addon_batch_id = OLD.id;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'End it with subscription.cancel_addon(); the ledger keeps its lines.';
    WHEN 'ledger' THEN
        what := format('ledger line %s', OLD.id);
        ledger_lines := subscription.self_referrers('ledger', OLD.id);
        held := ARRAY[subscription.count_phrase(ledger_lines, 'line that gives back or pays it', 'lines that give back or pay it')];
        hint := 'The ledger is a record: correct it with a new line.';
    WHEN 'plan' THEN
        what := format('plan "%s"', OLD.code);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l WHERE l.plan = OLD.code;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'subscription', 'subscriptions')
               FROM subscription.subscription AS s
              WHERE s.plan = OLD.code OR s.pending_plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'price', 'prices')
               FROM subscription.plan_price AS pp WHERE pp.plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'limit', 'limits')
               FROM subscription.plan_limit AS pl WHERE pl.plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'add-on', 'add-ons')
               FROM subscription.plan_addon AS pa WHERE pa.plan = OLD.code)];
        hint := CASE WHEN ledger_lines > 0
                     THEN 'A plan that was billed stays in the catalog: the ledger names it.'
                     ELSE 'Delete its prices, limits and add-ons first.' END;
    WHEN 'plan_price' THEN
        what := format('a price of plan "%s" in %s%s', OLD.plan, OLD.currency,
                       CASE WHEN OLD.tier IS NOT NULL THEN format(' (tier %s)', OLD.tier) ELSE '' END);
        -- the lines charged for this plan, in this currency, to a subscription of this cycle
        SELECT count(*) INTO ledger_lines
          FROM subscription.ledger AS l
          JOIN subscription.subscription AS s ON s.id = l.subscription_id
         WHERE l.plan = OLD.plan AND l.currency = OLD.currency
           AND l.addon_batch_id IS NULL
           AND subscription.cycle_key(s.cycle) = subscription.cycle_key(OLD.cycle);
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'A price that was billed stays; change its amount, which applies from the next charge.';
    WHEN 'addon' THEN
        what := format('add-on "%s"', OLD.code);
        held := ARRAY[
            (SELECT subscription.count_phrase(count(*), 'batch', 'batches')
               FROM subscription.addon_batch AS b WHERE b.addon = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'price', 'prices')
               FROM subscription.addon_price AS ap WHERE ap.addon = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'plan', 'plans')
               FROM subscription.plan_addon AS pa WHERE pa.addon = OLD.code)];
        hint := 'An add-on that was sold stays in the catalog; delete the prices and plans of one that was not first.';
    WHEN 'addon_price' THEN
        what := format('a price of add-on "%s" in %s', OLD.addon, OLD.currency);
        SELECT count(*) INTO ledger_lines
          FROM subscription.ledger AS l
          JOIN subscription.addon_batch AS b ON b.id = l.addon_batch_id
         WHERE b.addon = OLD.addon AND l.currency = OLD.currency;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'A price that was billed stays; change its amount, which applies from the next charge.';
    END CASE;
    held := array_remove(held, NULL);
    IF cardinality(held) > 0 THEN
        RAISE EXCEPTION '% cannot be deleted', what
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('It still has %s.',
                                  CASE WHEN cardinality(held) = 1 THEN held[1]
                                       ELSE array_to_string(held[1:cardinality(held) - 1], ', ')
                                            || ' and ' || held[cardinality(held)] END),
                  HINT = hint, TABLE = TG_TABLE_NAME, SCHEMA = 'subscription';
    END IF;
    RETURN OLD;
END
$$;

COMMENT ON FUNCTION subscription.refuse_delete_in_use() IS
'Trigger: 2BP01 naming what still refers to a row being deleted (ledger lines, subscriptions, members, prices...): nothing lost';

CREATE TRIGGER account_refuse_delete_in_use BEFORE DELETE ON subscription.account
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER subscription_refuse_delete_in_use BEFORE DELETE ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER addon_batch_refuse_delete_in_use BEFORE DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER ledger_refuse_delete_in_use BEFORE DELETE ON subscription.ledger
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER plan_refuse_delete_in_use BEFORE DELETE ON subscription.plan
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER plan_price_refuse_delete_in_use BEFORE DELETE ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER addon_refuse_delete_in_use BEFORE DELETE ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();
CREATE TRIGGER addon_price_refuse_delete_in_use BEFORE DELETE ON subscription.addon_price
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use();

-- The references of a table to itself, as a foreign key would check them
-- (23503), without the dependency loop pg_dump warns of: an account's
-- parent, a line's charge.  The referenced row is locked FOR KEY SHARE, so
-- that refuse_delete_in_use() of a concurrent delete waits for us.  An
-- AFTER ROW trigger runs at the end of the statement, so that one COPY or
-- INSERT may hold both rows in any order.
-- (kept: the statements below need check_reference(); its final text follows
-- in section "Citus: create_account(), distribute()")
CREATE FUNCTION subscription.check_reference()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME = 'account' THEN
        PERFORM FROM subscription.account AS a WHERE a.id = NEW.parent_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'parent account % does not exist', NEW.parent_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Account %s names it as its parent (parent_id).', NEW.id),
                      TABLE = 'account', SCHEMA = 'subscription';
        END IF;
    ELSE
        PERFORM FROM subscription.ledger AS l WHERE l.id = NEW.charge_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger line % does not exist', NEW.charge_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Ledger line %s names it as its charge (charge_id).', NEW.id),
                      TABLE = 'ledger', SCHEMA = 'subscription';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.check_reference() IS
'Trigger: an account''s parent and a ledger line''s charge exist (23503), as a foreign key to the same table would check';

CREATE TRIGGER account_parent_exists AFTER INSERT OR UPDATE OF parent_id ON subscription.account
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference();
CREATE TRIGGER ledger_charge_exists AFTER INSERT OR UPDATE OF charge_id ON subscription.ledger
    FOR EACH ROW WHEN (NEW.charge_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference();

CREATE FUNCTION subscription.erased_details(details jsonb)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE jsonb_typeof(details)
        WHEN 'object' THEN
            (SELECT coalesce(jsonb_object_agg(e.key,
                        CASE WHEN e.key = ANY ('{name,external_id}')
                                  AND jsonb_typeof(e.value) <> 'null'
                             THEN '"erased"'::jsonb
                             ELSE subscription.erased_details(e.value) END), '{}')
               FROM jsonb_each(details) AS e)
        WHEN 'array' THEN
            (SELECT coalesce(jsonb_agg(subscription.erased_details(e.value) ORDER BY e.n), '[]')
               FROM jsonb_array_elements(details) WITH ORDINALITY AS e(value, n))
        ELSE details END;
END
$$;

COMMENT ON FUNCTION subscription.erased_details(jsonb) IS
'History details with their personal fields (name, external_id) erased, at any depth';

CREATE OR REPLACE FUNCTION subscription.refuse_history_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.details = subscription.erased_details(OLD.details)
       AND (to_jsonb(NEW) - 'details') = (to_jsonb(OLD) - 'details') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'history is append-only'
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('%s on subscription.history is not allowed.', TG_OP),
              HINT = 'Record a correction as a new history row.';
END
$$;

COMMENT ON FUNCTION subscription.refuse_history_change() IS 'Trigger: history is append-only (but for erasing personal fields, erased_details)';

-- A closed account (close_account) takes nothing new: P0002 unless the
-- account exists, 55000 if it is closed.
CREATE FUNCTION subscription.require_open_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
BEGIN
    PERFORM subscription.require_account(account_id);
    SELECT a.closed_at INTO closed FROM subscription.account AS a WHERE a.id = require_open_account.account_id;
    IF closed IS NOT NULL THEN
        RAISE EXCEPTION 'account % is closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was closed at %s.', closed),
                  HINT = 'A closed account takes no new subscription; open a new account.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_open_account(bigint) IS 'Internal: P0002 unless the account exists, 55000 if it is closed';

-- End everything of an account (once its sub-accounts are closed, K9) at
-- a time: every active subscription ends then, its unused days credited and
-- its add-on batches ended (end_early, L9); the seats are released; the
-- account is marked closed (history records it, R8) and takes no new
-- subscription.  Returns the subscriptions ended and what each credited.
-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.close_account(account_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS TABLE (subscription_id bigint, credited numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM subscription.close_account(subscription.tenant_of('account', close_account.account_id), close_account.account_id, close_account.at);
END
$$;

COMMENT ON FUNCTION subscription.close_account(bigint, timestamptz) IS
'Close an account: end every subscription (unused days credited, L9), release the seats, refuse new subscriptions';

-- GDPR: the personal data of a closed account (and of its sub-accounts):
-- its name, its members (and their external ids), and these fields in its
-- history.  The ledger keeps every line, its amounts and dates.  Back-office
-- code only: a member does not erase an account.
-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.erase_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.erase_account(subscription.tenant_of('account', erase_account.account_id), erase_account.account_id);
END
$$;

COMMENT ON FUNCTION subscription.erase_account(bigint) IS
'GDPR: erase the personal data (name, members, their external ids, in history too) of a closed account; the ledger stays';

REVOKE ALL ON FUNCTION subscription.count_phrase(bigint, text, text), subscription.self_referrers(text, bigint),
    subscription.refuse_delete_in_use(),
    subscription.check_reference(), subscription.erased_details(jsonb), subscription.require_open_account(bigint),
    subscription.close_account(bigint, timestamptz), subscription.erase_account(bigint) FROM PUBLIC;

------------------------------------------------------------------------
-- Hardening: verify(), the invariant checker (issue 15, item 9)
------------------------------------------------------------------------

-- verify(): the invariants of the extension's own tables, checked after
-- the fact, like amcheck for billing.  One row per broken invariant,
-- nothing when all hold.  See docs/design.md ("Checking the invariants").

-- The counters recount_usage() would change, without changing them: the
-- same count of the table's rows as its owner (C, limits.c RecountUsage).
CREATE FUNCTION subscription.usage_drift(relation regclass, feature text, account_id bigint DEFAULT NULL)
RETURNS TABLE (account_id bigint, counted bigint, stored bigint)
AS 'MODULE_PATHNAME', 'usage_drift'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.usage_drift(regclass, text, bigint) IS
'Internal: the usage counters of a limited table that differ from its rows, counted as recount_usage counts';

CREATE FUNCTION subscription.verify(account_id bigint DEFAULT NULL)
RETURNS TABLE ("check" text, account_id bigint, detail text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT subscription.require_account($1) WHERE $1 IS NOT NULL;
SELECT * FROM subscription.verify_findings($1)
$$;

REVOKE ALL ON FUNCTION subscription.usage_drift(regclass, text, bigint), subscription.verify(bigint) FROM PUBLIC;

------------------------------------------------------------------------
-- Operators spelled plainly inside functions that pin search_path (release issue)
------------------------------------------------------------------------

-- These functions run with search_path = pg_catalog, pg_temp, so a plain
-- operator can only be pg_catalog's: their bodies now say a = b instead of
-- a OPERATOR(pg_catalog.=) b, with the same parse.  OPERATOR(pg_catalog.x)
-- stays where the search_path is not pinned: SQL-standard bodies, views,
-- and the procedure run_renewals.  CREATE OR REPLACE keeps their rights
-- and comments.

CREATE OR REPLACE FUNCTION subscription.require_renewal(renewal text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT renewal = ANY (subscription.renewal_options()) THEN
        RAISE EXCEPTION 'unknown renewal option "%"', renewal
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('The renewal options are %s.', subscription.renewal_options());
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION subscription.redeemable_coupon(code text, at timestamptz, price_currency text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c subscription.coupon;
    redeemed bigint;
BEGIN
    SELECT * INTO c FROM subscription.coupon AS x WHERE x.code = redeemable_coupon.code FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'coupon "%" does not exist', code USING ERRCODE = 'undefined_object';
    END IF;
    IF at > c.redeem_by THEN
        RAISE EXCEPTION 'coupon "%" could be redeemed until %', code, c.redeem_by
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO redeemed FROM subscription.subscription AS s WHERE s.coupon = c.code;
    IF redeemed >= c.max_redemptions THEN
        RAISE EXCEPTION 'coupon "%" has been redeemed % times, its maximum', code, redeemed
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF c.amount_off IS NOT NULL AND c.currency <> price_currency THEN
        RAISE EXCEPTION 'coupon "%" takes % off, but the plan is priced in %', code, c.currency, price_currency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION subscription.require_feature(feature text)
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

CREATE OR REPLACE FUNCTION subscription.limited_column(relation regclass, name name, purpose text, integer_only boolean)
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

CREATE OR REPLACE FUNCTION subscription.renew_period(s subscription.subscription, may_trim boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ends timestamptz := upper(s.period);
    next_plan text := coalesce(s.pending_plan, s.plan);
    next_quantity integer := coalesce(s.pending_quantity, s.quantity);
    next_cycle interval := CASE WHEN s.renewal = 'to_monthly' THEN interval '1 month'
                                ELSE coalesce(s.pending_cycle, s.cycle) END;
    same_cycle boolean;
    next_period tstzrange;
    price record;
BEGIN
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.subscription_id = s.id AND b.status = 'active'
       AND (b.cancel_at_period_end OR s.cancel_at_period_end OR s.renewal = 'none');
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        UPDATE subscription.subscription AS x
           SET status = CASE WHEN s.cancel_at_period_end THEN 'cancelled' ELSE 'expired' END
         WHERE x.id = s.id
        RETURNING x.status INTO s.status;
        RETURN s.status;
    END IF;

    same_cycle := subscription.cycle_key(next_cycle) = subscription.cycle_key(s.cycle);
    -- a new cycle counts from the start of its first period (Z7)
    next_period := subscription.nth_period(CASE WHEN same_cycle THEN s.anchor ELSE ends END, next_cycle,
                                           CASE WHEN same_cycle THEN s.period_number + 1 ELSE 1 END);
    price := subscription.period_price(next_plan, next_cycle, next_quantity);
    IF same_cycle AND s.pending_plan IS NULL AND s.pending_quantity IS NULL THEN
        -- the common renewal: only the period moves, and the triggers on
        -- plan, quantity and status (limits, seats) have nothing to do
        UPDATE subscription.subscription AS x
           SET period_number = x.period_number + 1, period = next_period,
               paid_quantity = next_quantity, pending_cycle = NULL,
               renewal = CASE x.renewal WHEN 'once' THEN 'none' ELSE x.renewal END
         WHERE x.id = s.id;
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = next_plan, cycle = next_cycle, quantity = next_quantity, paid_quantity = next_quantity,
               pending_plan = NULL, pending_cycle = NULL, pending_quantity = NULL,
               anchor = CASE WHEN same_cycle THEN x.anchor ELSE ends END,
               period_number = CASE WHEN same_cycle THEN x.period_number + 1 ELSE 1 END,
               period = next_period,
               renewal = CASE x.renewal WHEN 'once' THEN 'none' WHEN 'to_monthly' THEN 'always' ELSE x.renewal END
         WHERE x.id = s.id;
    END IF;

    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.account_id, s.id, 'charge', subscription.round_money(price.amount, price.currency), price.currency,
            next_period, 'plan', next_plan,
            format('renewal: plan %s, cycle %s, quantity %s', next_plan, next_cycle, next_quantity))
    ON CONFLICT (subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    INSERT INTO subscription.ledger
           (account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
    SELECT s.account_id, s.id, b.id, 'charge', subscription.round_money(p.amount, p.currency), p.currency,
           next_period, 'addon', next_plan, format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, next_cycle)
      FROM subscription.addon_batch AS b
      JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time
     CROSS JOIN LATERAL subscription.addon_period_price(b.addon, next_cycle, b.quantity) AS p
     WHERE b.subscription_id = s.id AND b.status = 'active'
     ORDER BY b.id
    ON CONFLICT (subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;

    IF may_trim THEN
        PERFORM FROM subscription.apply_downgrade(s.id);
    END IF;
    RETURN 'active';
END
$$;

-- Hardening: what the bad-input suite found (issue 15, item 10)
-- period_containing refuses a cycle that is not positive and an infinite
-- time (22023), change_rights a NULL argument (22004); recount_usage's
-- unknown account (P0002) is in C.

CREATE OR REPLACE FUNCTION subscription.period_containing(anchor timestamptz, cycle interval, at timestamptz)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k integer;
BEGIN
    PERFORM subscription.require_cycle(cycle);
    IF NOT isfinite(anchor) OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'the anchor of a period and the time in it must be finite'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('period_containing() was given %s and %s.', anchor, at);
    END IF;
    -- a guess from the average length, then exact steps (months vary)
    k := floor(extract(epoch FROM at - anchor) / extract(epoch FROM cycle))::integer + 1;
    WHILE anchor + ((k - 1) * cycle) > at LOOP
        k := k - 1;
    END LOOP;
    WHILE anchor + (k * cycle) <= at LOOP
        k := k + 1;
    END LOOP;
    RETURN greatest(k, 0);
END
$$;

------------------------------------------------------------------------
-- Hardening: each rule in one place (issue 15, item 7)
------------------------------------------------------------------------

-- The downgrade policies are named once, in src/policies.c: enforce_limit
-- and limited_table's constraints read them through downgrade_policies()
-- and value_policies().
CREATE FUNCTION subscription.downgrade_policies()
RETURNS text[]
AS 'MODULE_PATHNAME', 'downgrade_policies'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.downgrade_policies() IS
'The downgrade policies of enforce_limit: drop_newest, keep_most_referenced, scale, cap, detach, block';

CREATE FUNCTION subscription.value_policies()
RETURNS text[]
AS 'MODULE_PATHNAME', 'value_policies'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.value_policies() IS
'The downgrade policies that need a value column: scale, cap, detach';

REVOKE ALL ON FUNCTION subscription.downgrade_policies(), subscription.value_policies() FROM PUBLIC;

ALTER TABLE subscription.limited_table
    DROP CONSTRAINT limited_table_on_downgrade_check,
    ADD CONSTRAINT limited_table_on_downgrade_check
        CHECK (on_downgrade = ANY (subscription.downgrade_policies())),
    DROP CONSTRAINT limited_table_value_column_needed,
    ADD CONSTRAINT limited_table_value_column_needed
        CHECK (value_column IS NOT NULL OR on_downgrade <> ALL (subscription.value_policies()));

-- "An empty actor is trusted", for back-office code only, is stated once
-- in C (src/identity.c): authorize and actor_refusal ask it.
CREATE FUNCTION subscription.actor_named()
RETURNS boolean
AS 'MODULE_PATHNAME', 'actor_named'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.actor_named() IS 'Whether subscription.actor names an actor (empty or unset: no)';

CREATE FUNCTION subscription.trusted_without_actor()
RETURNS boolean
AS 'MODULE_PATHNAME', 'trusted_without_actor'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.trusted_without_actor() IS
'True when no actor is named and the calling role is back-office code, 42501 when it is not, false when an actor is named';

REVOKE ALL ON FUNCTION subscription.actor_named(), subscription.trusted_without_actor() FROM PUBLIC;

-- Hardening: each rule in one place, continued (issue 15, item 7)
-- R11, "a service plan takes a seat", said once in C (src/licenses.c): the
-- license guard reads it, and sync_service_seats() through seat_product().

CREATE FUNCTION subscription.seat_product(kind text, product text)
RETURNS text
AS 'MODULE_PATHNAME', 'seat_product'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.seat_product(text, text) IS
'The product whose seat a plan of this kind takes, NULL when it takes none (an option) (R11)';

REVOKE ALL ON FUNCTION subscription.seat_product(text, text) FROM PUBLIC;

-- Hardening: each rule in one place, the money (issue 15, item 7)
-- round_money reads the currency's digits through money_scale, the one reader
-- of the rounding rule; unused_part() is "the part of a charge for its
-- unused days" (prorate_refund by day, rounded to the currency), which
-- subscribe, set_quantity, give_back_unused, change_plan and purchase_addon
-- call.

CREATE OR REPLACE FUNCTION subscription.round_money(amount numeric, currency text)
RETURNS numeric
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    digits integer := subscription.money_scale(currency);
BEGIN
    IF digits IS NULL THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN round(amount, digits);
END
$$;

CREATE FUNCTION subscription.unused_part(amount numeric, period tstzrange, at timestamptz, currency text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
RETURN subscription.prorate_refund(unused_part.amount, pg_catalog.lower(unused_part.period),
                                   pg_catalog.upper(unused_part.period), unused_part.at, 'day',
                                   subscription.money_scale(unused_part.currency));

COMMENT ON FUNCTION subscription.unused_part(numeric, tstzrange, timestamptz, text) IS
'The part of amount for the whole days of period from at on, rounded to the currency (prorate_refund by day)';

REVOKE ALL ON FUNCTION subscription.unused_part(numeric, tstzrange, timestamptz, text) FROM PUBLIC;

-- Default license, managed accounts, terms (issue 16: R10, Z2, Z11)

-- Z11: the terms versions, and who accepted which (user data: dumped)
CREATE TABLE subscription.terms (
    version      text PRIMARY KEY,
    effective_at timestamptz NOT NULL UNIQUE CHECK (isfinite(effective_at)),
    url          text
);

COMMENT ON TABLE subscription.terms IS 'Versions of the terms of service, each in effect from effective_at until the next one (Z11)';

CREATE TABLE subscription.terms_acceptance (
    account_id  bigint NOT NULL REFERENCES subscription.account (id) ON DELETE CASCADE,
    version     text NOT NULL REFERENCES subscription.terms (version) ON UPDATE CASCADE,
    accepted_at timestamptz NOT NULL,
    accepted_by text NOT NULL,
    PRIMARY KEY (account_id, version)
);
CREATE INDEX ON subscription.terms_acceptance (version);

COMMENT ON TABLE subscription.terms_acceptance IS 'The terms versions an account accepted, when and by whom (Z11)';

SELECT pg_catalog.pg_extension_config_dump('subscription.terms', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.terms_acceptance', '');

CREATE TRIGGER terms_acceptance_history AFTER INSERT OR UPDATE OR DELETE ON subscription.terms_acceptance
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history();

COMMENT ON FUNCTION subscription.record_history() IS 'Trigger: one history row per change of accounts, members, subscriptions, add-on batches and terms acceptances (R8, Z11)';

-- Z11: the terms check, and accepting them
CREATE FUNCTION subscription.terms_in_effect(at timestamptz DEFAULT subscription.now())
RETURNS subscription.terms
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT t.* FROM subscription.terms AS t
     WHERE t.effective_at OPERATOR(pg_catalog.<=) terms_in_effect.at
     ORDER BY t.effective_at DESC
     LIMIT 1;
END;

COMMENT ON FUNCTION subscription.terms_in_effect(timestamptz) IS
'The terms version in effect at a time: the latest effective_at not after it, NULL when none (Z11)';

CREATE FUNCTION subscription.require_terms(account_id bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_terms(subscription.tenant_of('account', require_terms.account_id),
                                       require_terms.account_id, require_terms.at);
END
$$;

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.accept_terms(account_id bigint, version text, at timestamptz DEFAULT subscription.now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.accept_terms(subscription.tenant_of('account', accept_terms.account_id), accept_terms.account_id, accept_terms.version, accept_terms.at);
END
$$;

COMMENT ON FUNCTION subscription.accept_terms(bigint, text, timestamptz) IS
'The account accepts a terms version; who accepted (the actor, else the session user) is recorded, in history too (Z11)';

-- R10: choosing the default subscription
-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.set_default(subscription_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.set_default(subscription.tenant_of('subscription', set_default.subscription_id), set_default.subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.set_default(bigint) IS
'Make an active subscription the account''s default one, whose licenses new members get (R10)';

COMMENT ON FUNCTION subscription.change_plan(bigint, text, timestamptz) IS 'Upgrade now (prorated or restarted) or downgrade at the period end (C1-C4, Z5)';

-- PUBLIC executes none of the new functions; the roles given their rights
-- before get the new ones of their kind
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- Restores by a role that is not a superuser (issue 15, item 5)
-- grant_restore() and revoke_restore(); restoring_role() and
-- restored_copy(), which the triggers that derive rows a dump also holds
-- ask, and the limit guards and the license guard (C) too.
ALTER TABLE subscription.granted_role
    DROP CONSTRAINT granted_role_kind_check,
    ADD CONSTRAINT granted_role_kind_check CHECK (kind IN ('application', 'backoffice', 'restore'));

COMMENT ON TABLE subscription.granted_role IS
'Roles set up by grant_application(), grant_backoffice() and grant_restore(); back-office roles are trusted without an actor';

CREATE FUNCTION subscription.restoring_role()
RETURNS boolean
AS 'MODULE_PATHNAME', 'restoring_role'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.restoring_role() IS
'Internal (C): whether the calling role is one given grant_restore()';

-- An inlinable SQL-standard body: the caller's CASE reads the sequence only
-- for a restoring role.  Its callers run as the extension's owner, who
-- reads the sequences.
CREATE FUNCTION subscription.restored_copy(id_sequence regclass, id bigint)
RETURNS boolean
LANGUAGE sql
RETURN CASE WHEN subscription.restoring_role()
            THEN restored_copy.id OPERATOR(pg_catalog.>)
                 coalesce(pg_catalog.pg_sequence_last_value(restored_copy.id_sequence), 0)
            ELSE false END;

COMMENT ON FUNCTION subscription.restored_copy(regclass, bigint) IS
'Internal: whether a row is copied in by a restore (a restoring role, an id its sequence has not issued)';

-- (kept: the event trigger subscription_keep_limited_tables runs this text on the
-- DDL below; its next text, in "The guards on Citus shards", reads columns added later)
CREATE OR REPLACE FUNCTION subscription.keep_limited_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t subscription.limited_table;
    problem text;
BEGIN
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

REVOKE ALL ON FUNCTION subscription.restoring_role(), subscription.restored_copy(regclass, bigint),
    subscription.grant_restore(regrole), subscription.revoke_restore(regrole) FROM PUBLIC;

-- Z3 suites (issue 16, item 3)
-- A suite is a plan of its own product whose price covers plans of other
-- products (subscription.suite_component).  Its service licenses take a
-- seat of each included product (R11, src/licenses.c), the included plans'
-- limits apply (limit_of, refresh_limits), a plan in a suite is not deleted
-- (refuse_delete_in_use), and bundle_into_suite (with
-- preview_bundle_into_suite, through the new lines_of_change) moves an
-- account's separate subscriptions into one suite subscription.

-- Z3: a suite is a plan of its own product whose price covers plans of
-- other products, the plans listed here.  A service license of the suite
-- counts as a license of each included product (R11, src/licenses.c), and
-- the included plans' limits apply (limit_of).  bundle_into_suite moves an
-- account's separate subscriptions into one of the suite.
CREATE TABLE subscription.suite_component (
    suite_plan text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    plan       text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    PRIMARY KEY (suite_plan, plan)
);
CREATE INDEX ON subscription.suite_component (plan);

COMMENT ON TABLE subscription.suite_component IS 'The plans a suite plan includes, of other products, one per product (Z3)';

-- Z3: what is wrong with the suite of suite_plan including plan, or NULL:
-- a suite includes neither itself, nor another suite, nor a plan of its
-- own product or of a product it already includes, and is included in no
-- suite.  The rule's one statement: check_suite_component() asks it of
-- every row a change touches.
CREATE FUNCTION subscription.suite_problem(suite_plan text, plan text)
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT CASE
        WHEN bad.suite_plan OPERATOR(pg_catalog.=) bad.plan
            THEN pg_catalog.format('suite "%s" cannot include itself', bad.suite_plan)
        WHEN EXISTS (SELECT FROM subscription.suite_component AS sc
                      WHERE sc.suite_plan OPERATOR(pg_catalog.=) bad.plan)
            THEN pg_catalog.format('suite "%s" cannot include plan "%s", which is a suite', bad.suite_plan, bad.plan)
        WHEN EXISTS (SELECT FROM subscription.suite_component AS sc
                      WHERE sc.plan OPERATOR(pg_catalog.=) bad.suite_plan)
            THEN pg_catalog.format('plan "%s" cannot be a suite: suite "%s" includes it', bad.suite_plan,
                        (SELECT pg_catalog.min(sc.suite_plan) FROM subscription.suite_component AS sc
                          WHERE sc.plan OPERATOR(pg_catalog.=) bad.suite_plan))
        WHEN ip.product OPERATOR(pg_catalog.=) sp.product
            THEN pg_catalog.format('suite "%s" cannot include plan "%s" of its own product "%s"',
                                   bad.suite_plan, bad.plan, sp.product)
        WHEN EXISTS (SELECT FROM subscription.suite_component AS sc
                       JOIN subscription.plan AS o ON o.code OPERATOR(pg_catalog.=) sc.plan
                      WHERE sc.suite_plan OPERATOR(pg_catalog.=) bad.suite_plan
                        AND sc.plan OPERATOR(pg_catalog.<>) bad.plan
                        AND o.product OPERATOR(pg_catalog.=) ip.product)
            THEN pg_catalog.format('suite "%s" cannot include two plans of product "%s"', bad.suite_plan, ip.product)
        END
      FROM (SELECT suite_problem.suite_plan, suite_problem.plan) AS bad (suite_plan, plan)
      JOIN subscription.plan AS sp ON sp.code OPERATOR(pg_catalog.=) bad.suite_plan
      JOIN subscription.plan AS ip ON ip.code OPERATOR(pg_catalog.=) bad.plan;
END;

COMMENT ON FUNCTION subscription.suite_problem(text, text) IS 'Internal: why a suite may not include a plan, or NULL (Z3)';

CREATE FUNCTION subscription.check_suite_component()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    a text;
    b text;
    c text;
BEGIN
    -- a suite row, or a plan that moved to another product (the logical
    -- table, from the trigger's argument: issue 17)
    IF TG_ARGV[0] = 'plan' THEN
        a := NEW.code;
        b := NEW.code;
    ELSE
        a := NEW.suite_plan;
        b := NEW.plan;
    END IF;
    -- serialize concurrent changes of the suites that involve these plans,
    -- in code order, by their advisory locks (no row lock: issue 17)
    FOR c IN SELECT DISTINCT x FROM unnest(ARRAY[a, b]) AS x ORDER BY 1 LOOP
        PERFORM subscription.lock_catalog('plan ' || c, false);
    END LOOP;
    FOR r IN SELECT sc.suite_plan, sc.plan, subscription.suite_problem(sc.suite_plan, sc.plan) AS problem
               FROM subscription.suite_component AS sc
              WHERE sc.suite_plan IN (a, b) OR sc.plan IN (a, b)
              -- the row written first: its problem is the one to tell
              ORDER BY (sc.suite_plan, sc.plan) = (a, b) DESC, 1, 2 LOOP
        IF r.problem IS NOT NULL THEN
            RAISE EXCEPTION '%', r.problem
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A suite includes plans of other products, one per product, and no suite.',
                      TABLE = 'suite_component', SCHEMA = 'subscription';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER suite_component_valid
    AFTER INSERT OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.check_suite_component();
CREATE CONSTRAINT TRIGGER plan_suite_component_valid
    AFTER UPDATE OF product ON subscription.plan
    FOR EACH ROW WHEN (OLD.product IS DISTINCT FROM NEW.product)
    EXECUTE FUNCTION subscription.check_suite_component();

SELECT pg_catalog.pg_extension_config_dump('subscription.suite_component', '');

CREATE TRIGGER suite_component_service_seats
    AFTER INSERT OR UPDATE OR DELETE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.sync_service_seats();

CREATE TRIGGER suite_component_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits();

-- Z3: move the account's separate subscriptions of a suite's included
-- products (those whose licenses take a seat of one, R11) into one new
-- subscription of the suite, with "quantity" licenses (NULL: the largest
-- quantity among those it replaces), on the longest of their cycles.  Each
-- ends as end_early ends it, its unused days credited (L9), and the
-- credit pays the suite's first charge (L10); the members holding their
-- licenses hold the suite's.  All or nothing: 23514 names the products
-- when the suite has fewer licenses than those members.
-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.bundle_into_suite(account_id bigint, suite_plan text, quantity integer DEFAULT NULL,
                                               at timestamptz DEFAULT subscription.now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.bundle_into_suite(subscription.tenant_of('account', bundle_into_suite.account_id), bundle_into_suite.account_id, bundle_into_suite.suite_plan, bundle_into_suite.quantity, bundle_into_suite.at);
END
$$;

COMMENT ON FUNCTION subscription.bundle_into_suite(bigint, text, integer, timestamptz) IS
'Move the account''s separate subscriptions of a suite''s products into one suite subscription, their unused days credited (Z3, L9)';

CREATE FUNCTION subscription.lines_of_change(account_id bigint, subscription_id bigint, change text)
RETURNS SETOF subscription.ledger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_line bigint;
    lines subscription.ledger[];
BEGIN
    PERFORM FROM subscription.subscription AS s
     WHERE s.id = lines_of_change.subscription_id FOR NO KEY UPDATE;
    PERFORM FROM subscription.account AS a
     WHERE lines_of_change.subscription_id IS NULL AND a.id = lines_of_change.account_id FOR NO KEY UPDATE;
    SELECT coalesce(max(l.id), 0) INTO last_line FROM subscription.ledger AS l
     WHERE l.subscription_id = lines_of_change.subscription_id
        OR (lines_of_change.subscription_id IS NULL AND l.account_id = lines_of_change.account_id);
    BEGIN
        EXECUTE change;
        SELECT array_agg(l ORDER BY l.id) INTO lines FROM subscription.ledger AS l
         WHERE (l.subscription_id = lines_of_change.subscription_id
                OR (lines_of_change.subscription_id IS NULL AND l.account_id = lines_of_change.account_id))
           AND l.id > last_line;
        RAISE EXCEPTION 'preview' USING ERRCODE = 'SBPRV';  -- undoes the change
    EXCEPTION WHEN SQLSTATE 'SBPRV' THEN
        NULL;
    END;
    RETURN QUERY SELECT * FROM unnest(lines);
END
$$;

COMMENT ON FUNCTION subscription.lines_of_change(bigint, bigint, text) IS 'Internal: the ledger lines a change would write for a subscription or an account, in a rolled-back subtransaction (Z9)';

-- (kept: the statements below need preview_bundle_into_suite(); its final text, the same, is made again
-- in section "Invoices as documents and payments" so that its SELECT * has the ledger's later columns)
CREATE FUNCTION subscription.preview_bundle_into_suite(account_id bigint, suite_plan text, quantity integer DEFAULT NULL,
                                                       at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.lines_of_change(account_id, NULL,
        format('SELECT subscription.bundle_into_suite(%L, %L, %L, %L)', account_id, suite_plan, quantity, at));
END;

REVOKE ALL ON FUNCTION subscription.suite_problem(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.check_suite_component() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.bundle_into_suite(bigint, text, integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.lines_of_change(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.preview_bundle_into_suite(bigint, text, integer, timestamptz) FROM PUBLIC;

-- the roles already given their rights get those of the new objects
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;

-- Hardening: each rule in one place, the history row (issue 15, item 7, fold 6)
-- One writer of a history row (src/history.c, RecordHistory): the license
-- guard calls it in C; record_history() and erase_account() through
-- write_history(), which only the extension's owner runs (no role is
-- granted it, back-office roles included: role_rights).

CREATE FUNCTION subscription.write_history(operation text, account_id bigint, subscription_id bigint, details jsonb)
RETURNS void
AS 'MODULE_PATHNAME', 'write_history'
LANGUAGE C;

COMMENT ON FUNCTION subscription.write_history(text, bigint, bigint, jsonb) IS
'Internal (C): write one history row, with the actor and the database roles (R8); the extension''s own functions only';

REVOKE ALL ON FUNCTION subscription.write_history(text, bigint, bigint, jsonb) FROM PUBLIC;

------------------------------------------------------------------------
-- The next terms of a renewal in one place (issue 15, item 7, fold 8),
-- and L7: renewal quantities from the account's use (issue 16, item 5).
-- next_terms(s) is the one place that knows a renewal's plan, cycle,
-- quantity and renewal option: renew_period, renewal_problem,
-- renewal_may_trim and (through renewal_terms) renewal_notice read it;
-- renew_batch asks it once per period and hands it to the three.
-- A product's renewal_quantity ('keep', 'from_usage') decides whether the
-- quantity comes from the use.

ALTER TABLE subscription.product ADD COLUMN renewal_quantity text NOT NULL DEFAULT 'keep'
    CHECK (renewal_quantity IN ('keep', 'from_usage'));

COMMENT ON TABLE subscription.product IS 'Products sold, with how their upgrades (restart, prorate) and downgrades (end_of_period, immediate) take effect, and what quantity their renewals take (keep, from_usage: L7)';

CREATE TYPE subscription.period_terms AS (plan text, cycle interval, quantity integer, renewal text, needed bigint,
                                         version integer);

COMMENT ON TYPE subscription.period_terms IS 'The plan, cycle, quantity and renewal option of a next period, and the plan''s version (next_terms)';

CREATE FUNCTION subscription.next_terms(s subscription.subscription)
RETURNS subscription.period_terms
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n subscription.period_terms;
    tiers integer[];
    v integer;
BEGIN
    SELECT np.plan, np.version INTO n.plan, n.version FROM subscription.next_plan(s) AS np;
    n.cycle := CASE WHEN s.renewal = 'to_monthly' THEN interval '1 month' ELSE coalesce(s.pending_cycle, s.cycle) END;
    n.quantity := coalesce(s.pending_quantity, s.quantity);
    n.renewal := CASE s.renewal WHEN 'once' THEN 'none' WHEN 'to_monthly' THEN 'always' ELSE s.renewal END;
    IF s.pending_quantity IS NOT NULL
       OR NOT EXISTS (SELECT FROM subscription.plan AS p
                        JOIN subscription.product AS pr ON pr.code = p.product
                       WHERE p.code = n.plan AND pr.renewal_quantity = 'from_usage') THEN
        RETURN n;
    END IF;
    -- L7: the licenses each used feature needs, beyond the units of the
    -- add-on batches that renew with the subscription
    tiers := subscription.plan_tiers(n.plan, n.version);
    v := subscription.plan_version_or_current(n.plan, n.version);
    SELECT max(ceil(greatest(f.used - coalesce(
               (SELECT sum(b.quantity::bigint * a.units)
                  FROM subscription.addon_batch AS b
                  JOIN subscription.addon AS a ON a.code = b.addon
                 WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
                   AND NOT b.cancel_at_period_end AND a.feature = f.feature), 0), 0)::numeric / f.per_license))::bigint
      INTO n.needed
      FROM (-- a tiered plan: its per-license features whose use is counted
            SELECT pl.feature, c.used, pl.value
              FROM subscription.plan_limit AS pl
              JOIN subscription.usage_counter AS c
                ON c.tenant_id = s.tenant_id AND c.account_id = s.account_id AND c.feature = pl.feature
             WHERE cardinality(tiers) > 0 AND pl.plan = n.plan AND pl.versions @> v AND pl.per_license AND pl.value > 0
            UNION ALL
            -- a plan priced per license: the licenses assigned
            SELECT 'licenses', lc.used, 1
              FROM subscription.license_counter AS lc
             WHERE cardinality(tiers) = 0 AND lc.tenant_id = s.tenant_id AND lc.subscription_id = s.id
               AND EXISTS (SELECT FROM subscription.plan_price AS pp
                            WHERE pp.plan = n.plan AND pp.versions @> v AND pp.per_license))
           AS f(feature, used, per_license);
    IF n.needed IS NOT NULL THEN
        n.quantity := CASE WHEN cardinality(tiers) > 0
                           THEN subscription.tier_for_hosts(least(n.needed, tiers[cardinality(tiers)])::integer, tiers)
                           ELSE greatest(n.needed, 1)::integer END;
    END IF;
    RETURN n;
END
$$;

-- (kept: the statements below need renewal_terms(); its final text follows
-- in section "Shard-safe lookups")
CREATE FUNCTION subscription.renewal_terms(subscription_id bigint)
RETURNS TABLE (plan text, cycle interval, quantity integer, renewal text, needed bigint, version integer)
LANGUAGE sql STABLE
SECURITY DEFINER
BEGIN ATOMIC
    SELECT t.plan, t.cycle, t.quantity, t.renewal, t.needed, t.version
      FROM subscription.subscription AS s
     CROSS JOIN LATERAL subscription.next_terms(s) AS t
     WHERE s.id OPERATOR(pg_catalog.=) renewal_terms.subscription_id
       AND subscription.may_read(s.account_id);
END;

COMMENT ON FUNCTION subscription.renewal_terms(bigint) IS
'The plan, cycle, quantity (L7: from the use on a ''from_usage'' product), renewal option and plan version of a subscription''s next period';

-- the renewal's steps take the terms that renew_batch asked once
DROP FUNCTION subscription.renew_period(subscription.subscription, boolean);
DROP FUNCTION subscription.renewal_problem(subscription.subscription);
DROP FUNCTION subscription.renewal_may_trim(subscription.subscription);

-- R12: renewals, plan changes and early ends bill the usage of the period
CREATE FUNCTION subscription.renew_period(s subscription.subscription, n subscription.period_terms, may_trim boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ends timestamptz := upper(s.period);
    same_cycle boolean;
    next_period tstzrange;
    price record;
    batch record;
BEGIN
    -- U3: the ending period's usage, billed in arrears
    PERFORM subscription.bill_usage(s, ends);
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
       AND (b.cancel_at_period_end OR s.cancel_at_period_end OR s.renewal = 'none');
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        UPDATE subscription.subscription AS x
           SET status = CASE WHEN s.cancel_at_period_end THEN 'cancelled' ELSE 'expired' END
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id
        RETURNING x.status INTO s.status;
        RETURN s.status;
    END IF;
    -- L6: a migration never takes away a feature in use; one that would
    -- now (the account's use grew since it was scheduled) is dropped
    IF coalesce(s.pending_plan IS NULL AND s.migrate_at <= ends AND NOT s.migrate_trim, false)
       AND EXISTS (SELECT FROM subscription.migration_shortfall(s.id, s.migrate_to, s.migrate_version)) THEN
        RAISE WARNING 'subscription % stays on its version of plan "%": plan "%" would take away features in use',
                      s.id, s.plan, s.migrate_to
            USING DETAIL = 'Its migration is dropped; subscription.preview_migration() lists the features.';
        UPDATE subscription.subscription AS x
           SET migrate_to = NULL, migrate_version = NULL, migrate_at = NULL, migrate_trim = NULL
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id
        RETURNING * INTO s;
        n := subscription.next_terms(s);
    END IF;

    -- L7: a use above the largest tier renews at the largest tier
    IF n.needed > n.quantity THEN
        RAISE WARNING 'subscription % uses more than the largest tier of plan "%"', s.id, n.plan
            USING DETAIL = format('Its use needs %s licenses; it renews at the largest tier, %s.', n.needed, n.quantity),
                  HINT = format('Contact sales for a plan above %s hosts.', n.quantity);
    END IF;
    same_cycle := subscription.cycle_key(n.cycle) = subscription.cycle_key(s.cycle);
    -- a new cycle counts from the start of its first period (Z7)
    next_period := subscription.nth_period(CASE WHEN same_cycle THEN s.anchor ELSE ends END, n.cycle,
                                           CASE WHEN same_cycle THEN s.period_number + 1 ELSE 1 END);
    price := subscription.period_price(n.plan, n.cycle, n.quantity, n.version);
    IF same_cycle AND n.plan = s.plan AND n.version = s.plan_version AND n.quantity = s.quantity
       AND s.pending_plan IS NULL AND s.pending_quantity IS NULL THEN
        -- the common renewal: only the period moves, and the triggers on
        -- plan, quantity and status (limits, seats) have nothing to do
        UPDATE subscription.subscription AS x
           SET period_number = x.period_number + 1, period = next_period,
               paid_quantity = n.quantity, pending_cycle = NULL, renewal = n.renewal
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = n.plan, plan_version = n.version,
               cycle = n.cycle, quantity = n.quantity, paid_quantity = n.quantity,
               pending_plan = NULL, pending_cycle = NULL, pending_quantity = NULL,
               anchor = CASE WHEN same_cycle THEN x.anchor ELSE ends END,
               period_number = CASE WHEN same_cycle THEN x.period_number + 1 ELSE 1 END,
               period = next_period, renewal = n.renewal
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    END IF;

    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(price.amount, price.currency), price.currency,
            next_period, 'plan', n.plan,
            format('renewal: plan %s, cycle %s, quantity %s', n.plan, n.cycle, n.quantity))
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- each batch priced apart from the statement that reads the batches:
    -- on Citus that one runs on the shard, where no other table is read
    FOR batch IN
        SELECT b.id, b.addon, b.quantity
          FROM subscription.addon_batch AS b
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time
         WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
         ORDER BY b.id
    LOOP
        price := subscription.addon_period_price(batch.addon, n.cycle, batch.quantity);
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
        VALUES (s.tenant_id, s.account_id, s.id, batch.id, 'charge', subscription.round_money(price.amount, price.currency),
                price.currency, next_period, 'addon', n.plan,
                format('renewal: add-on %s x %s, cycle %s', batch.addon, batch.quantity, n.cycle))
        ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
           WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    END LOOP;

    IF may_trim THEN
        PERFORM FROM subscription.apply_downgrade(s.id);
    END IF;
    RETURN 'active';
END
$$;

CREATE FUNCTION subscription.renewal_problem(s subscription.subscription, n subscription.period_terms)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing text;
BEGIN
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        RETURN NULL;
    END IF;
    CASE (subscription.find_price(n.plan, n.cycle, n.quantity, n.version)).problem
        WHEN 'not_a_tier' THEN
            RETURN format('quantity %s is not a tier of plan "%s"', n.quantity, n.plan);
        WHEN 'no_price' THEN
            RETURN format('plan "%s" has no price for cycle %s', n.plan, subscription.cycle_text(n.cycle));
        ELSE
    END CASE;
    missing := subscription.unpriced_addons(s.tenant_id, s.id, n.cycle);
    IF missing IS NOT NULL THEN
        RETURN format('add-on %s has no price for cycle %s', missing, subscription.cycle_text(n.cycle));
    END IF;
    RETURN NULL;
END
$$;

-- Can the next renewal lower the account's limits (and so trim, or be
-- refused by a 'block' limit)?  In PL/pgSQL: Citus plans no SQL function
-- with parameters, and an SQL-standard body that takes the row type would
-- keep the columns added below from being added.
CREATE FUNCTION subscription.renewal_may_trim(s subscription.subscription, n subscription.period_terms)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN s.pending_plan IS NOT NULL OR n.quantity < s.quantity
        OR s.migrate_at <= upper(s.period)
        OR s.cancel_at_period_end OR s.renewal = 'none'
        OR EXISTS (SELECT FROM subscription.addon_batch AS b
                    WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id
                      AND b.status = 'active' AND b.cancel_at_period_end);
END
$$;

COMMENT ON FUNCTION subscription.renewal_may_trim(subscription.subscription, subscription.period_terms) IS 'Internal: whether the next renewal can lower the account''s limits';

REVOKE ALL ON FUNCTION subscription.next_terms(subscription.subscription),
    subscription.renewal_terms(bigint),
    subscription.renew_period(subscription.subscription, subscription.period_terms, boolean),
    subscription.renewal_problem(subscription.subscription, subscription.period_terms),
    subscription.renewal_may_trim(subscription.subscription, subscription.period_terms) FROM PUBLIC;
-- the roles already given rights get renewal_terms, which the view calls
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;
------------------------------------------------------------------------
-- Plan and price versions (grandfathering), migrations, L6 (issue 16)
------------------------------------------------------------------------

-- Every plan is at version 1, and every price and limit covers it: the
-- subscriptions of 1.0 hold version 1, their plan's current one.
ALTER TABLE subscription.plan
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version > 0);
ALTER TABLE subscription.plan_price
    ADD COLUMN versions int4range NOT NULL DEFAULT '[1,)'
        CONSTRAINT plan_price_versions_valid CHECK (lower(versions) >= 1);
DROP INDEX subscription.plan_price_one_per_cycle_and_tier;
CREATE UNIQUE INDEX plan_price_one_per_cycle_and_tier
    ON subscription.plan_price (plan, subscription.cycle_key(cycle), tier, lower(versions)) NULLS NOT DISTINCT;
COMMENT ON TABLE subscription.plan_price IS 'A plan''s price per billing cycle, per license or flat, or per host tier (L12), for a range of plan versions';
ALTER TABLE subscription.plan_limit
    ADD COLUMN versions int4range NOT NULL DEFAULT '[1,)'
        CONSTRAINT plan_limit_versions_valid CHECK (lower(versions) >= 1),
    DROP CONSTRAINT plan_limit_pkey,
    ADD CONSTRAINT plan_limit_pkey PRIMARY KEY (plan, feature, versions);
COMMENT ON TABLE subscription.plan_limit IS 'How much of a feature a plan allows (NULL unlimited, 0 not included), optionally per license, for a range of plan versions';
-- a default, not an UPDATE: no row goes through the triggers.
ALTER TABLE subscription.subscription
    ADD COLUMN plan_version integer NOT NULL DEFAULT 1 CHECK (plan_version > 0),
    ADD COLUMN migrate_to text REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    ADD COLUMN migrate_version integer CHECK (migrate_version > 0),
    ADD COLUMN migrate_at timestamptz,
    ADD COLUMN migrate_trim boolean,
    ADD CONSTRAINT subscription_migration_whole
        CHECK (num_nulls(migrate_to, migrate_version, migrate_at, migrate_trim) IN (0, 4));

-- Grandfathering: a price or limit that a subscription holds (its plan at
-- the version it was sold, or the version a migration moves it to) is
-- never changed in place.  A plain UPDATE of it closes the row at a new
-- version of the plan and inserts the changed row from that version on:
-- new subscriptions are sold the plan's current version at once, and the
-- others keep theirs until they are migrated (migrate_subscriptions).  A
-- row no subscription holds is updated in place; a closed row is history,
-- which an UPDATE leaves (its row count says so).  An INSERT may not overlap the versions of a row of the same
-- price or limit (23505).  Renaming a plan is no change of price.
-- Grandfathering (issue 16), reading its logical table from its trigger
-- argument (issue 17), takes its plan lock only when an UPDATE makes a
-- version: an INSERT locks nothing, so Citus can copy a reference table's
-- rows through the trigger (issue 17)
CREATE FUNCTION subscription.version_catalog_row()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the catalog admin reads no subscription
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the logical table, as a trigger argument: a Citus shard has another name
    logical text := TG_ARGV[0];
    what text := CASE logical WHEN 'plan_price' THEN 'price' ELSE 'limit' END;
    current_version integer;
    held boolean;
    held_current boolean;
    new_version integer;
BEGIN
    -- the new version's row, inserted below while the old one is still open
    IF TG_OP = 'INSERT' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    ELSIF TG_OP = 'INSERT' THEN
        -- no row lock (an INSERT makes no version; on Citus the rows of a
        -- reference table are copied through this trigger): two new rows
        -- of one price or limit from the same version meet in the unique
        -- index of their lower bound
        IF logical = 'plan_price' THEN
            PERFORM FROM subscription.plan_price AS pp
             WHERE pp.plan = NEW.plan AND pp.versions && NEW.versions
               AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(NEW.cycle)
               AND pp.tier IS NOT DISTINCT FROM NEW.tier;
        ELSE
            PERFORM FROM subscription.plan_limit AS pl
             WHERE pl.plan = NEW.plan AND pl.versions && NEW.versions AND pl.feature = NEW.feature;
        END IF;
        IF FOUND THEN
            RAISE EXCEPTION 'plan "%" already has this %', NEW.plan, what
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A row of the same %s holds versions overlapping %s.', what, NEW.versions),
                      HINT = format('UPDATE the current row of subscription.%s: a change that subscriptions hold makes a new version.', logical),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT upper_inf(OLD.versions) THEN
        -- a closed row is history: an UPDATE changes the current rows only
        RETURN NULL;
    END IF;
    IF NEW.versions IS DISTINCT FROM OLD.versions OR NEW.plan IS DISTINCT FROM OLD.plan THEN
        RAISE EXCEPTION 'the plan and versions of a % are not changed with its terms', what
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Update the terms of the current row alone; the new version is made for you.',
                  TABLE = logical, SCHEMA = 'subscription';
    END IF;
    -- serialize the version changes of a plan, and its migrations, by the
    -- plan's advisory lock, not a row lock on plan (issue 17); each
    -- statement below reads what the previous holder committed
    PERFORM subscription.lock_catalog('plan ' || OLD.plan, false);
    SELECT p.version INTO current_version FROM subscription.plan AS p WHERE p.code = OLD.plan;
    SELECT coalesce(bool_or(true), false), coalesce(bool_or(h.version = current_version), false)
      INTO held, held_current
      FROM (SELECT s.plan_version AS version FROM subscription.subscription AS s
             WHERE s.plan = OLD.plan AND s.status = 'active'
            UNION ALL
            SELECT s.migrate_version FROM subscription.subscription AS s
             WHERE s.migrate_to = OLD.plan AND s.status = 'active') AS h
     WHERE OLD.versions @> h.version;
    IF NOT held THEN
        RETURN NEW;
    END IF;
    -- the versions held keep the old row; the change makes a new version
    -- unless the current one is held by nobody yet
    new_version := current_version + CASE WHEN held_current THEN 1 ELSE 0 END;
    UPDATE subscription.plan AS p SET version = new_version WHERE p.code = OLD.plan AND p.version <> new_version;
    NEW.versions := int4range(new_version, NULL);
    IF logical = 'plan_price' THEN
        INSERT INTO subscription.plan_price SELECT (NEW::subscription.plan_price).*;
    ELSE
        INSERT INTO subscription.plan_limit SELECT (NEW::subscription.plan_limit).*;
    END IF;
    OLD.versions := int4range(lower(OLD.versions), new_version);
    RETURN OLD;
END
$$;

CREATE TRIGGER plan_price_versions
    BEFORE INSERT OR UPDATE OF cycle, tier, amount, per_license, currency, versions ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.version_catalog_row();
CREATE TRIGGER plan_limit_versions
    BEFORE INSERT OR UPDATE OF feature, value, per_license, versions ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.version_catalog_row();

-- A subscription holds the version of its plan it was sold (subscribe()
-- names the current one); one whose plan changes (an upgrade, a downgrade
-- taking effect), the plan's current version unless the change names one
-- (a migration).  A
-- change of plan or version ends a pending migration.  Renaming a plan
-- (ON UPDATE CASCADE) changes neither.
CREATE FUNCTION subscription.hold_plan_version()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NEW.plan IS NOT DISTINCT FROM OLD.plan AND NEW.plan_version IS NOT DISTINCT FROM OLD.plan_version THEN
        RETURN NEW;
    END IF;
    IF NEW.plan <> OLD.plan AND NOT EXISTS (SELECT FROM subscription.plan AS p WHERE p.code = OLD.plan) THEN
        RETURN NEW;  -- the plan was renamed
    END IF;
    IF NEW.plan <> OLD.plan AND NEW.plan_version = OLD.plan_version
       AND NOT (NEW.plan = OLD.migrate_to AND NEW.plan_version = OLD.migrate_version) THEN
        NEW.plan_version := NULL;
    END IF;
    NEW.migrate_to := NULL;
    NEW.migrate_version := NULL;
    NEW.migrate_at := NULL;
    NEW.migrate_trim := NULL;
    IF NEW.plan_version IS NULL THEN
        SELECT p.version INTO NEW.plan_version FROM subscription.plan AS p WHERE p.code = NEW.plan;
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.hold_plan_version() IS
'Trigger: a subscription holds its plan''s current version when sold or moved, unless a migration names one';

CREATE TRIGGER subscription_plan_version
    BEFORE UPDATE OF plan, plan_version ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.hold_plan_version();

-- the lookups take a version (by default the current one): renewal_notice,
-- which calls period_price, is made again below
DROP VIEW subscription.renewal_notice;
DROP FUNCTION subscription.period_price(text, interval, integer);
DROP FUNCTION subscription.find_price(text, interval, integer);
DROP FUNCTION subscription.plan_tiers(text);

-- The version of a plan a lookup reads: the one named, or the plan's
-- current version (NULL when the plan does not exist).
CREATE FUNCTION subscription.plan_version_or_current(plan text, version integer)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(plan_version_or_current.version, p.version)
      FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) plan_version_or_current.plan;
END;

COMMENT ON FUNCTION subscription.plan_version_or_current(text, integer) IS 'Internal: the version named, or the plan''s current one';

-- A plan's tiers at a version (NULL: the current one, which new
-- subscriptions are sold): the distinct tier values of its prices ('{}'
-- if untiered).
CREATE FUNCTION subscription.plan_tiers(plan text, version integer DEFAULT NULL)
RETURNS integer[]
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tiers integer[];
    v integer;
BEGIN
    IF plan IS NULL THEN
        RETURN NULL;
    END IF;
    v := subscription.plan_version_or_current(plan, version);
    IF v IS NULL THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    SELECT coalesce(array_agg(DISTINCT pp.tier ORDER BY pp.tier), '{}')
      INTO tiers
      FROM subscription.plan_price AS pp
     WHERE pp.plan = plan_tiers.plan AND pp.tier IS NOT NULL AND pp.versions @> v;
    RETURN tiers;
END
$$;

COMMENT ON FUNCTION subscription.plan_tiers(text, integer) IS 'A plan''s host tiers at a version, by default the current one ({} when untiered)';

-- The exact gross price of one period of plan for quantity, not yet
-- rounded (callers round once, at the end): per-license prices times
-- quantity, tier prices flat; a tiered plan's quantity must be a tier (L12).
-- The price of a plan for a cycle and quantity, or why there is none
-- ('not_a_tier', 'no_price'): the lookup that period_price() raises on and
-- renew_due() checks without a subtransaction.  At a version of the plan
-- (grandfathering: a subscription's plan_version), by default the current
-- one.
CREATE FUNCTION subscription.find_price(
    plan text, cycle interval, quantity integer, version integer DEFAULT NULL,
    OUT amount numeric, OUT currency text, OUT problem text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v integer := subscription.plan_version_or_current(plan, version);
    tiers integer[] := subscription.plan_tiers(plan, v);
    price subscription.plan_price;
BEGIN
    IF quantity < 1 THEN
        PERFORM subscription.require_quantity(quantity);
    END IF;
    IF cardinality(tiers) > 0 AND NOT quantity = ANY (tiers) THEN
        problem := 'not_a_tier';
        RETURN;
    END IF;
    SELECT * INTO price FROM subscription.plan_price AS pp
     WHERE pp.plan = find_price.plan
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(find_price.cycle)
       AND pp.tier IS NOT DISTINCT FROM CASE WHEN cardinality(tiers) > 0 THEN quantity END
       AND pp.versions @> v;
    IF NOT FOUND THEN
        problem := 'no_price';
        RETURN;
    END IF;
    amount := CASE WHEN price.per_license THEN price.amount * quantity
                   ELSE price.amount END;
    currency := price.currency;
END
$$;

COMMENT ON FUNCTION subscription.find_price(text, interval, integer, integer) IS 'A plan''s price for a cycle and quantity at a version (default current), or why there is none (not_a_tier, no_price)';

CREATE FUNCTION subscription.period_price(
    plan text, cycle interval, quantity integer, version integer DEFAULT NULL,
    OUT amount numeric, OUT currency text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_price record := subscription.find_price(plan, cycle, quantity, version);
BEGIN
    IF found_price.problem = 'not_a_tier' THEN
        RAISE EXCEPTION 'quantity % is not a tier of plan "%"', quantity, plan
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The tiers of plan "%s" are %s.', plan, subscription.plan_tiers(plan, version)),
                  HINT = CASE WHEN quantity > (SELECT max(t) FROM unnest(subscription.plan_tiers(plan, version)) AS t)
                              THEN format('The largest tier of plan "%s" holds %s hosts: contact sales for more.',
                                          plan, (SELECT max(t) FROM unnest(subscription.plan_tiers(plan, version)) AS t))
                              ELSE format('Use subscription.tier_for_hosts(%L, %s) for the tier that holds %s hosts.',
                                          plan, quantity, quantity) END;
    ELSIF found_price.problem = 'no_price' THEN
        RAISE EXCEPTION 'plan "%" has no price for cycle %', plan, subscription.cycle_text(cycle)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = subscription.sold_cycles('plan', plan),
                  HINT = 'The cycles of a plan are those of its rows in subscription.plan_price.';
    END IF;
    amount := found_price.amount;
    currency := found_price.currency;
END
$$;

COMMENT ON FUNCTION subscription.period_price(text, interval, integer, integer) IS 'The exact price of one period of a plan for a quantity at a version (default current), or an error saying why not';

COMMENT ON FUNCTION subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text) IS 'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4)';

COMMENT ON FUNCTION subscription.set_quantity(bigint, integer, timestamptz) IS 'Change the licenses now: more are charged for the rest of the period, fewer refund nothing';

COMMENT ON FUNCTION subscription.change_cycle(bigint, interval) IS 'A new billing cycle from the next period (Z7); returns when it takes effect';

COMMENT ON FUNCTION subscription.purchase_addon(bigint, text, integer, timestamptz) IS 'Buy add-on units for the rest of the period, or once (K1-K3, Z6)';

-- What a subscription renews into: a pending plan change (C4) at that
-- plan's current version (NULL); else a migration due by the end of this
-- period, at the version it names; else its plan at the version it holds
-- (grandfathering).
CREATE FUNCTION subscription.next_plan(s subscription.subscription, OUT plan text, OUT version integer)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF s.pending_plan IS NOT NULL THEN
        plan := s.pending_plan;
    ELSIF s.migrate_at <= upper(s.period) THEN
        plan := s.migrate_to;
        version := s.migrate_version;
    ELSE
        plan := s.plan;
        version := s.plan_version;
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.next_plan(subscription.subscription) IS
'Internal: the plan and version a subscription renews into (NULL version: the plan''s current one)';

-- L5, L8: the subscriptions that renew within subscription.notice_days
-- (default 30), with what the renewal will be: plan (at the version held,
-- or a migration's when it takes effect then), cycle, quantity (the
-- tier on a tiered plan), the amount to be charged and the credit that
-- will apply (L10), after the coupon's discount (Z10).  A prepaid term renewed
-- "to_monthly" continues monthly; "none" and cancelled ones do not renew.
-- overdue: the renewal's time has passed and renew_due has not run yet.
-- (kept: the statements below need renewal_notice; its final text follows in section
-- "Usage previews, restart's period number", over columns added later)
CREATE VIEW subscription.renewal_notice WITH (security_barrier) AS
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       n.plan,
       n.cycle,
       n.quantity,
       CASE WHEN cardinality(subscription.plan_tiers(n.plan, n.version)) > 0 THEN n.quantity END AS tier,
       subscription.round_money(price.amount, price.currency) AS amount,
       price.currency,
       d.discount,
       least(subscription.credit_balance(s.account_id, price.currency),
             subscription.round_money(price.amount, price.currency) OPERATOR(pg_catalog.-) d.discount) AS credit,
       upper(s.period) OPERATOR(pg_catalog.<=) subscription.now() AS overdue,
       -- the version of the plan renewed into (grandfathering; a migration's)
       subscription.plan_version_or_current(n.plan, n.version) AS plan_version
  FROM subscription.subscription AS s
  CROSS JOIN LATERAL subscription.renewal_terms(s.id) AS n
  CROSS JOIN LATERAL subscription.period_price(n.plan, n.cycle, n.quantity, n.version) AS price
  CROSS JOIN LATERAL subscription.coupon_discount(s.id, subscription.round_money(price.amount, price.currency),
                                                  price.currency) AS d(discount)
 WHERE s.status OPERATOR(pg_catalog.=) 'active'
   AND NOT s.cancel_at_period_end
   AND s.renewal OPERATOR(pg_catalog.<>) 'none'
   AND upper(s.period) OPERATOR(pg_catalog.<=)
       (subscription.now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer))
   AND subscription.may_read(s.account_id);

-- L6: the features whose use the account's new limits would be below if
-- the subscription held plan at version, with the use and the new limit;
-- only limits the move lowers count (a feature already over stays so).
-- The move is made in a subtransaction that is rolled back, so that the
-- limits are those limit_of() computes, not a copy of its rule.
CREATE FUNCTION subscription.migration_shortfall(subscription_id bigint, plan text, version integer)
RETURNS TABLE (feature text, used bigint, new_limit bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    account bigint;
    before jsonb;
    over jsonb;
BEGIN
    PERFORM subscription.require_arguments('migration_shortfall', '{subscription_id,plan,version}',
        ARRAY[subscription_id IS NULL, plan IS NULL, version IS NULL]);
    IF subscription.plan_version_or_current(plan, NULL) IS NULL THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    IF version < 1 THEN
        RAISE EXCEPTION 'a plan version is at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT s.account_id INTO account FROM subscription.subscription AS s
     WHERE s.id = migration_shortfall.subscription_id;
    SELECT coalesce(jsonb_object_agg(u.feature, u.limit_value), '{}') INTO before
      FROM subscription.usage_counter AS u WHERE u.account_id = account;
    BEGIN
        UPDATE subscription.subscription AS x
           SET plan = migration_shortfall.plan, plan_version = migration_shortfall.version
         WHERE x.id = migration_shortfall.subscription_id;
        SELECT coalesce(jsonb_agg(jsonb_build_object('feature', u.feature, 'used', u.used, 'limit', u.limit_value)
                                  ORDER BY u.feature), '[]')
          INTO over
          FROM subscription.usage_counter AS u
         WHERE u.account_id = account
           AND u.used > u.limit_value
           AND (before -> u.feature = 'null' OR u.limit_value < (before ->> u.feature)::bigint);
        RAISE EXCEPTION 'preview' USING ERRCODE = 'SBPRV';  -- undoes the move
    EXCEPTION WHEN SQLSTATE 'SBPRV' THEN
        NULL;
    END;
    RETURN QUERY SELECT o ->> 'feature', (o ->> 'used')::bigint, (o ->> 'limit')::bigint
                   FROM jsonb_array_elements(over) AS o;
END
$$;

COMMENT ON FUNCTION subscription.migration_shortfall(bigint, text, integer) IS
'Internal: the features in use that moving a subscription to a plan version would take away (L6)';

-- The subscriptions a migration moves, with the renewal it takes effect
-- at (the first at least notice after at) and the version they move to:
-- the active ones of from_plan, or, when to_plan is from_plan, those on
-- an older version of it; not those that end at their period's end, nor
-- those with a plan change or a migration pending.  Checks the arguments
-- (22004, 42704, 22023) and that the caller is back-office code (42501).
CREATE FUNCTION subscription.migration_candidates(fn text, from_plan text, to_plan text, at timestamptz,
                                                  notice interval)
RETURNS TABLE (subscription_id bigint, takes_effect_at timestamptz, version integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    from_product text;
    target subscription.plan;
BEGIN
    PERFORM subscription.require_arguments(fn, '{from_plan,to_plan,at,notice}',
        ARRAY[from_plan IS NULL, to_plan IS NULL, at IS NULL, notice IS NULL]);
    PERFORM subscription.require_renewal_run(fn, at);
    IF notice < interval '0' THEN
        RAISE EXCEPTION 'the notice of a migration cannot be negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('%s() was given %s.', fn, notice);
    END IF;
    SELECT p.product INTO from_product FROM subscription.plan AS p WHERE p.code = from_plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', from_plan);
    END IF;
    -- the target's version cannot move while its subscriptions are chosen:
    -- the plan's lock, shared (version_catalog_row takes it alone; issue 17)
    PERFORM subscription.lock_catalog('plan ' || to_plan, true);
    SELECT * INTO target FROM subscription.plan AS p WHERE p.code = to_plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', to_plan);
    END IF;
    IF target.product <> from_product THEN
        RAISE EXCEPTION 'plan "%" is not a plan of product "%"', to_plan, from_product
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A migration moves subscriptions between the plans of one product.';
    END IF;
    RETURN QUERY
    SELECT s.id,
           CASE WHEN upper(s.period) >= at + notice THEN upper(s.period)
                WHEN lower(p.period) = at + notice THEN at + notice
                ELSE upper(p.period) END,
           target.version
      FROM subscription.subscription AS s
     CROSS JOIN LATERAL (SELECT subscription.nth_period(s.anchor, s.cycle,
                                    subscription.period_containing(s.anchor, s.cycle, at + notice))) AS p(period)
     WHERE s.status = 'active' AND s.plan = from_plan
       AND (to_plan <> from_plan OR s.plan_version < target.version)
       AND NOT s.cancel_at_period_end AND s.renewal <> 'none'
       AND s.pending_plan IS NULL AND s.migrate_to IS NULL
     ORDER BY s.id;
END
$$;

-- Moves every subscription migration_candidates() names to to_plan's
-- current version at its first renewal at least notice after at: stored
-- on the subscription (migrate_to, migrate_version, migrate_at), shown by
-- renewal_notice, taken by renew_due, cancelled by cancel_migration().
-- L6: one whose new limits are below the account's use stays on its
-- version, with a WARNING naming the features, unless "trim" (a keyword:
-- callers write "trim" => true): then the
-- renewal trims by the tables' rules (apply_downgrade), as a downgrade
-- does.  Back-office work.  Returns how many it moves.
CREATE FUNCTION subscription.migrate_subscriptions(from_plan text, to_plan text, at timestamptz,
                                                   notice interval DEFAULT '30 days', "trim" boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c record;
    over text;
    moved integer := 0;
BEGIN
    PERFORM subscription.require_arguments('migrate_subscriptions', '{trim}', ARRAY[migrate_subscriptions."trim" IS NULL]);
    FOR c IN SELECT * FROM subscription.migration_candidates('migrate_subscriptions', from_plan, to_plan, at, notice)
    LOOP
        -- the subscription's writers wait; one that moved on meanwhile is left
        PERFORM FROM subscription.subscription AS s
         WHERE s.id = c.subscription_id AND s.status = 'active' AND s.plan = from_plan
           AND s.pending_plan IS NULL AND s.migrate_to IS NULL
           FOR NO KEY UPDATE;
        CONTINUE WHEN NOT FOUND;
        -- the new plan must sell the subscription's cycle and quantity (22023, 55000)
        PERFORM subscription.period_price(to_plan, s.cycle, s.quantity, c.version)
           FROM subscription.subscription AS s WHERE s.id = c.subscription_id;
        IF NOT migrate_subscriptions."trim" THEN
            SELECT string_agg(format('%s: %s used, %s allowed', o.feature, o.used, o.new_limit), '; ')
              INTO over
              FROM subscription.migration_shortfall(c.subscription_id, to_plan, c.version) AS o;
            IF over IS NOT NULL THEN
                -- L6
                RAISE WARNING 'subscription % stays on its version of plan "%": plan "%" would take away features in use',
                              c.subscription_id, from_plan, to_plan
                    USING DETAIL = over || '.',
                          HINT = 'subscription.preview_migration() lists them; "trim" => true trims by the tables'' rules.';
                CONTINUE;
            END IF;
        END IF;
        -- a renewal that ran meanwhile (renew_due) moved the first renewal on
        UPDATE subscription.subscription AS s
           SET migrate_to = to_plan, migrate_version = c.version,
               migrate_at = greatest(c.takes_effect_at, upper(s.period)),
               migrate_trim = migrate_subscriptions."trim"
         WHERE s.id = c.subscription_id;
        moved := moved + 1;
    END LOOP;
    RETURN moved;
END
$$;

COMMENT ON FUNCTION subscription.migrate_subscriptions(text, text, timestamptz, interval, boolean) IS
'Move the subscriptions of a plan, or of its older versions, to a plan''s current version at a renewal after notice (L6: never taking away a feature in use unless trim)';

-- Z9, L6: what migrate_subscriptions() would do, without doing it: each
-- subscription it would move, when, and its first renewal's amount at the
-- new version; one row per feature in use the move would take away
-- (feature, used, new_limit; migrate_subscriptions leaves those unless
-- trim), or one row with feature NULL.
CREATE FUNCTION subscription.preview_migration(from_plan text, to_plan text, at timestamptz,
                                               notice interval DEFAULT '30 days')
RETURNS TABLE (subscription_id bigint, account_id bigint, takes_effect_at timestamptz, plan text,
               plan_version integer, amount numeric, currency text, feature text, used bigint, new_limit bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT s.id, s.account_id, c.takes_effect_at, to_plan, c.version,
           subscription.round_money(price.amount, price.currency), price.currency,
           o.feature, o.used, o.new_limit
      FROM subscription.migration_candidates('preview_migration', from_plan, to_plan, at, notice) AS c
      JOIN subscription.subscription AS s ON s.id = c.subscription_id
     CROSS JOIN LATERAL subscription.period_price(to_plan, s.cycle, s.quantity, c.version) AS price
      LEFT JOIN LATERAL subscription.migration_shortfall(s.id, to_plan, c.version) AS o ON true
     ORDER BY s.id, o.feature;
END
$$;

COMMENT ON FUNCTION subscription.preview_migration(text, text, timestamptz, interval) IS
'The subscriptions migrate_subscriptions would move, when, at what price, and the features in use it would take away (Z9, L6)';

-- Cancels a subscription's pending migration before it takes effect: it
-- keeps the version it holds.  Back-office work, as the migration.
-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.cancel_migration(subscription_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.cancel_migration(subscription.tenant_of('subscription', cancel_migration.subscription_id), cancel_migration.subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.cancel_migration(bigint) IS 'Cancel a subscription''s pending migration: it keeps the plan version it holds';

COMMENT ON FUNCTION subscription.role_rights(text) IS
'The exact rights grant_application() (kind application), grant_backoffice() (kind backoffice) and grant_restore() (kind restore) give';

-- the stored limits follow the version a subscription holds
DROP TRIGGER subscription_refresh_limits ON subscription.subscription;
CREATE TRIGGER subscription_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE OF account_id, plan, quantity, status, plan_version ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits();

-- PUBLIC executes none of the new functions; the roles given their rights
-- before get the new ones of their kind (and renewal_notice again)
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- Triggers that do not branch on a table's name (issue 17, item 3): each
-- trigger function reads the logical table from its trigger's argument
-- (TG_ARGV[0]), not TG_TABLE_NAME, which on Citus is a shard's name.  The
-- history rows' operations stay as they were (account_insert, ...).

DROP TRIGGER suite_component_valid ON subscription.suite_component;
CREATE CONSTRAINT TRIGGER suite_component_valid
    AFTER INSERT OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.check_suite_component('suite_component');

DROP TRIGGER plan_suite_component_valid ON subscription.plan;
CREATE CONSTRAINT TRIGGER plan_suite_component_valid
    AFTER UPDATE OF product ON subscription.plan
    FOR EACH ROW WHEN (OLD.product IS DISTINCT FROM NEW.product)
    EXECUTE FUNCTION subscription.check_suite_component('plan');

DROP TRIGGER account_history ON subscription.account;
CREATE TRIGGER account_history AFTER INSERT OR UPDATE OR DELETE ON subscription.account
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history('account');

DROP TRIGGER member_history ON subscription.member;
CREATE TRIGGER member_history AFTER INSERT OR UPDATE OR DELETE ON subscription.member
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history('member');

DROP TRIGGER subscription_history ON subscription.subscription;
CREATE TRIGGER subscription_history AFTER INSERT OR UPDATE OR DELETE ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history('subscription');

DROP TRIGGER addon_batch_history ON subscription.addon_batch;
CREATE TRIGGER addon_batch_history AFTER INSERT OR UPDATE OR DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history('addon_batch');

DROP TRIGGER terms_acceptance_history ON subscription.terms_acceptance;
CREATE TRIGGER terms_acceptance_history AFTER INSERT OR UPDATE OR DELETE ON subscription.terms_acceptance
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history('terms_acceptance');

DROP TRIGGER account_refuse_delete_in_use ON subscription.account;
CREATE TRIGGER account_refuse_delete_in_use BEFORE DELETE ON subscription.account
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('account');

DROP TRIGGER subscription_refuse_delete_in_use ON subscription.subscription;
CREATE TRIGGER subscription_refuse_delete_in_use BEFORE DELETE ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('subscription');

DROP TRIGGER addon_batch_refuse_delete_in_use ON subscription.addon_batch;
CREATE TRIGGER addon_batch_refuse_delete_in_use BEFORE DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('addon_batch');

DROP TRIGGER ledger_refuse_delete_in_use ON subscription.ledger;
CREATE TRIGGER ledger_refuse_delete_in_use BEFORE DELETE ON subscription.ledger
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('ledger');

DROP TRIGGER plan_refuse_delete_in_use ON subscription.plan;
CREATE TRIGGER plan_refuse_delete_in_use BEFORE DELETE ON subscription.plan
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('plan');

DROP TRIGGER plan_price_refuse_delete_in_use ON subscription.plan_price;
CREATE TRIGGER plan_price_refuse_delete_in_use BEFORE DELETE ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('plan_price');

DROP TRIGGER addon_refuse_delete_in_use ON subscription.addon;
CREATE TRIGGER addon_refuse_delete_in_use BEFORE DELETE ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('addon');

DROP TRIGGER addon_price_refuse_delete_in_use ON subscription.addon_price;
CREATE TRIGGER addon_price_refuse_delete_in_use BEFORE DELETE ON subscription.addon_price
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('addon_price');

DROP TRIGGER account_parent_exists ON subscription.account;
CREATE TRIGGER account_parent_exists AFTER INSERT OR UPDATE OF parent_id ON subscription.account
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference('account');

DROP TRIGGER ledger_charge_exists ON subscription.ledger;
CREATE TRIGGER ledger_charge_exists AFTER INSERT OR UPDATE OF charge_id ON subscription.ledger
    FOR EACH ROW WHEN (NEW.charge_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference('ledger');

DROP TRIGGER subscription_license_counter ON subscription.subscription;
CREATE TRIGGER subscription_license_counter
    AFTER INSERT OR UPDATE OF quantity, status ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.sync_license_counter('subscription');

DROP TRIGGER addon_batch_license_counter ON subscription.addon_batch;
CREATE TRIGGER addon_batch_license_counter
    AFTER INSERT OR UPDATE OR DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');

DROP TRIGGER subscription_service_seats ON subscription.subscription;
CREATE TRIGGER subscription_service_seats
    AFTER UPDATE OF plan ON subscription.subscription
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan)
    EXECUTE FUNCTION subscription.sync_service_seats('subscription');

DROP TRIGGER plan_service_seats ON subscription.plan;
CREATE TRIGGER plan_service_seats
    AFTER UPDATE OF kind, product ON subscription.plan
    FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.product IS DISTINCT FROM NEW.product)
    EXECUTE FUNCTION subscription.sync_service_seats('plan');

DROP TRIGGER suite_component_service_seats ON subscription.suite_component;
CREATE TRIGGER suite_component_service_seats
    AFTER INSERT OR UPDATE OR DELETE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.sync_service_seats('suite_component');

DROP TRIGGER subscription_refresh_limits ON subscription.subscription;
CREATE TRIGGER subscription_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE OF account_id, plan, quantity, status, plan_version ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits('subscription');

DROP TRIGGER addon_batch_refresh_limits ON subscription.addon_batch;
CREATE TRIGGER addon_batch_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits('addon_batch');

DROP TRIGGER plan_limit_refresh_limits ON subscription.plan_limit;
CREATE TRIGGER plan_limit_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits('plan_limit');

DROP TRIGGER suite_component_refresh_limits ON subscription.suite_component;
CREATE TRIGGER suite_component_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits('suite_component');

DROP TRIGGER addon_refresh_limits ON subscription.addon;
CREATE TRIGGER addon_refresh_limits
    AFTER UPDATE OF feature, units ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits('addon');

-- grandfathering's triggers (issue 16) take their logical table too (the
-- function, which reads it, is replaced in the last section)

DROP TRIGGER plan_price_versions ON subscription.plan_price;
CREATE TRIGGER plan_price_versions
    BEFORE INSERT OR UPDATE OF cycle, tier, amount, per_license, currency, versions ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.version_catalog_row('plan_price');
DROP TRIGGER plan_limit_versions ON subscription.plan_limit;
CREATE TRIGGER plan_limit_versions
    BEFORE INSERT OR UPDATE OF feature, value, per_license, versions ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.version_catalog_row('plan_limit');
-- Z11: an accepted terms version is refused like the rest of the catalog (2BP01)
CREATE TRIGGER terms_refuse_delete_in_use BEFORE DELETE ON subscription.terms
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('terms');

-- Tenant keys (issue 17, docs/design.md#tenant-keys) ----------------------
-- Every tenant table gets tenant_id, the root account's id, first in its
-- primary and foreign keys.  The rows are kept: each table is rewritten
-- once (ALTER COLUMN ... USING, which fires no trigger, so no history row
-- and no append-only refusal), from a map of every account to its root.
CREATE TABLE subscription.tenant_upgrade_map (account_id bigint PRIMARY KEY, tenant_id bigint NOT NULL);
-- each account's root: up its parents, an account in a loop of parents (or
-- with a parent gone) its own tenant
INSERT INTO subscription.tenant_upgrade_map
WITH RECURSIVE down (account_id, tenant_id) AS (
    SELECT a.id, a.id FROM subscription.account AS a WHERE a.parent_id IS NULL
    UNION ALL
    SELECT a.id, d.tenant_id FROM subscription.account AS a JOIN down AS d ON a.parent_id = d.account_id)
SELECT a.id, coalesce(d.tenant_id, a.id)
  FROM subscription.account AS a LEFT JOIN down AS d ON d.account_id = a.id;
CREATE FUNCTION subscription.tenant_upgrade_of_account(account_id bigint) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT m.tenant_id FROM subscription.tenant_upgrade_map AS m WHERE m.account_id = $1 $$;
CREATE FUNCTION subscription.tenant_upgrade_of_subscription(subscription_id bigint) RETURNS bigint
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT m.tenant_id FROM subscription.subscription AS s
        JOIN subscription.tenant_upgrade_map AS m ON m.account_id = s.account_id WHERE s.id = $1 $$;

-- the keys that name the old ones go first
ALTER TABLE subscription.member DROP CONSTRAINT member_account_id_fkey;
ALTER TABLE subscription.member DROP CONSTRAINT member_account_id_external_id_key;
ALTER TABLE subscription.terms_acceptance DROP CONSTRAINT terms_acceptance_account_id_fkey;
ALTER TABLE subscription.subscription DROP CONSTRAINT subscription_account_id_fkey;
ALTER TABLE subscription.subscription DROP CONSTRAINT subscription_one_default_per_account;
ALTER TABLE subscription.addon_batch DROP CONSTRAINT addon_batch_subscription_id_fkey;
ALTER TABLE subscription.license DROP CONSTRAINT license_subscription_id_fkey;
ALTER TABLE subscription.license DROP CONSTRAINT license_member_id_fkey;
ALTER TABLE subscription.license_counter DROP CONSTRAINT license_counter_subscription_id_fkey;
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_account_id_fkey;
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_subscription_id_fkey;
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_addon_batch_id_fkey;
ALTER TABLE subscription.usage_counter DROP CONSTRAINT usage_counter_account_id_fkey;
ALTER TABLE subscription.trimmed DROP CONSTRAINT trimmed_account_id_fkey;
DROP INDEX subscription.ledger_one_refund_per_charge;
DROP INDEX subscription.ledger_one_discount_per_charge;
DROP INDEX subscription.ledger_one_credit_use_per_charge;
DROP INDEX subscription.ledger_one_charge_per_period;

-- the subscription-keyed tables read subscription's account_id: before it is rewritten
ALTER TABLE subscription.addon_batch ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.addon_batch ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_subscription(subscription_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.license ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.license ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_subscription(subscription_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.license_counter ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.license_counter ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_subscription(subscription_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.service_seat ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.service_seat ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_subscription(subscription_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.account ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.account ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_account(id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.member ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.member ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_account(account_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.terms_acceptance ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.terms_acceptance ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_account(account_id), ALTER COLUMN tenant_id SET NOT NULL;
-- functions take subscription's row type, which forbids ALTER COLUMN ...
-- TYPE: an UPDATE in replica mode instead, which fires no trigger of ours
-- (no history row); the ALTER EXTENSION runs as a superuser
ALTER TABLE subscription.subscription ADD COLUMN tenant_id bigint;
DO $$
DECLARE
    role_before text := current_setting('session_replication_role');
BEGIN
    PERFORM set_config('session_replication_role', 'replica', true);
    UPDATE subscription.subscription SET tenant_id = subscription.tenant_upgrade_of_account(account_id);
    PERFORM set_config('session_replication_role', role_before, true);
END
$$;
ALTER TABLE subscription.subscription ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.ledger ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.ledger ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_account(account_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.usage_counter ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.usage_counter ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_account(account_id), ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE subscription.trimmed ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.trimmed ALTER COLUMN tenant_id TYPE bigint
    USING subscription.tenant_upgrade_of_account(account_id), ALTER COLUMN tenant_id SET NOT NULL;
-- history outlives accounts (R8): an erased one's rows are its own tenant's,
-- the catalog's rows tenant 0's
ALTER TABLE subscription.history ADD COLUMN tenant_id bigint;
ALTER TABLE subscription.history ALTER COLUMN tenant_id TYPE bigint
    USING coalesce(subscription.tenant_upgrade_of_account(account_id), account_id, 0), ALTER COLUMN tenant_id SET NOT NULL;
DROP FUNCTION subscription.tenant_upgrade_of_subscription(bigint);
DROP FUNCTION subscription.tenant_upgrade_of_account(bigint);
DROP TABLE subscription.tenant_upgrade_map;

-- the keys, as sql/src writes them
ALTER TABLE subscription.account DROP CONSTRAINT account_pkey,
    ADD CONSTRAINT account_pkey PRIMARY KEY (tenant_id, id);
CREATE INDEX ON subscription.account (id);
ALTER TABLE subscription.member DROP CONSTRAINT member_pkey,
    ADD CONSTRAINT member_pkey PRIMARY KEY (tenant_id, id),
    ADD CONSTRAINT member_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id),
    ADD CONSTRAINT member_account_id_external_id_key UNIQUE (tenant_id, account_id, external_id);
CREATE INDEX ON subscription.member (id);
ALTER TABLE subscription.terms_acceptance DROP CONSTRAINT terms_acceptance_pkey,
    ADD CONSTRAINT terms_acceptance_pkey PRIMARY KEY (tenant_id, account_id, version),
    ADD CONSTRAINT terms_acceptance_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE subscription.subscription DROP CONSTRAINT subscription_pkey,
    ADD CONSTRAINT subscription_pkey PRIMARY KEY (tenant_id, id),
    ADD CONSTRAINT subscription_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id),
    ADD CONSTRAINT subscription_one_default_per_account
        EXCLUDE (tenant_id WITH =, account_id WITH =) WHERE (is_default);
CREATE INDEX ON subscription.subscription (id);
ALTER TABLE subscription.addon_batch DROP CONSTRAINT addon_batch_pkey,
    ADD CONSTRAINT addon_batch_pkey PRIMARY KEY (tenant_id, id),
    ADD CONSTRAINT addon_batch_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id);
CREATE INDEX ON subscription.addon_batch (id);
ALTER TABLE subscription.license DROP CONSTRAINT license_pkey,
    ADD CONSTRAINT license_pkey PRIMARY KEY (tenant_id, subscription_id, member_id),
    ADD CONSTRAINT license_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id),
    ADD CONSTRAINT license_member_id_fkey FOREIGN KEY (tenant_id, member_id)
        REFERENCES subscription.member (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE subscription.license_counter DROP CONSTRAINT license_counter_pkey,
    ADD CONSTRAINT license_counter_pkey PRIMARY KEY (tenant_id, subscription_id),
    ADD CONSTRAINT license_counter_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id) ON DELETE CASCADE;
CREATE INDEX ON subscription.license_counter (subscription_id);
ALTER TABLE subscription.service_seat DROP CONSTRAINT service_seat_pkey,
    ADD CONSTRAINT service_seat_pkey PRIMARY KEY (tenant_id, member_id, product);
CREATE INDEX ON subscription.service_seat (member_id, product);
ALTER TABLE subscription.ledger DROP CONSTRAINT ledger_pkey,
    ADD CONSTRAINT ledger_pkey PRIMARY KEY (tenant_id, id),
    ADD CONSTRAINT ledger_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id),
    ADD CONSTRAINT ledger_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id),
    ADD CONSTRAINT ledger_addon_batch_id_fkey FOREIGN KEY (tenant_id, addon_batch_id)
        REFERENCES subscription.addon_batch (tenant_id, id);
CREATE INDEX ON subscription.ledger (id);
CREATE UNIQUE INDEX ledger_one_refund_per_charge
    ON subscription.ledger (tenant_id, charge_id) WHERE kind IN ('refund', 'credit');
CREATE UNIQUE INDEX ledger_one_discount_per_charge
    ON subscription.ledger (tenant_id, charge_id) WHERE kind = 'discount';
CREATE UNIQUE INDEX ledger_one_credit_use_per_charge
    ON subscription.ledger (tenant_id, charge_id) WHERE kind = 'credit_used';
CREATE UNIQUE INDEX ledger_one_charge_per_period
    ON subscription.ledger (tenant_id, subscription_id, addon_batch_id, period, item) NULLS NOT DISTINCT
    WHERE kind = 'charge' AND subscription_id IS NOT NULL;
ALTER TABLE subscription.history DROP CONSTRAINT history_pkey,
    ADD CONSTRAINT history_pkey PRIMARY KEY (tenant_id, id);
ALTER TABLE subscription.usage_counter DROP CONSTRAINT usage_counter_pkey,
    ADD CONSTRAINT usage_counter_pkey PRIMARY KEY (tenant_id, account_id, feature),
    ADD CONSTRAINT usage_counter_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id) ON DELETE CASCADE;
CREATE INDEX ON subscription.usage_counter (account_id, feature);
ALTER TABLE subscription.trimmed DROP CONSTRAINT trimmed_pkey,
    ADD CONSTRAINT trimmed_pkey PRIMARY KEY (tenant_id, id),
    ADD CONSTRAINT trimmed_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id);

CREATE FUNCTION subscription.fill_tenant_id()
RETURNS trigger
AS 'MODULE_PATHNAME', 'fill_tenant_id'
LANGUAGE C;

COMMENT ON FUNCTION subscription.fill_tenant_id() IS
'Trigger (C): a row inserted without tenant_id takes the tenant of the account or subscription it names';

CREATE TRIGGER account_fill_tenant_id BEFORE INSERT ON subscription.account
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('account', 'parent_id', 'account');
CREATE TRIGGER member_fill_tenant_id BEFORE INSERT ON subscription.member
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('member', 'account_id', 'account');
CREATE TRIGGER terms_acceptance_fill_tenant_id BEFORE INSERT ON subscription.terms_acceptance
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('terms_acceptance', 'account_id', 'account');
CREATE TRIGGER subscription_fill_tenant_id BEFORE INSERT ON subscription.subscription
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('subscription', 'account_id', 'account');
CREATE TRIGGER addon_batch_fill_tenant_id BEFORE INSERT ON subscription.addon_batch
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('addon_batch', 'subscription_id', 'subscription');
CREATE TRIGGER license_fill_tenant_id BEFORE INSERT ON subscription.license
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('license', 'subscription_id', 'subscription');
CREATE TRIGGER license_counter_fill_tenant_id BEFORE INSERT ON subscription.license_counter
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('license_counter', 'subscription_id', 'subscription');
CREATE TRIGGER service_seat_fill_tenant_id BEFORE INSERT ON subscription.service_seat
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('service_seat', 'subscription_id', 'subscription');
CREATE TRIGGER ledger_fill_tenant_id BEFORE INSERT ON subscription.ledger
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('ledger', 'account_id', 'account');
CREATE TRIGGER history_fill_tenant_id BEFORE INSERT ON subscription.history
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('history', 'account_id', 'account');
CREATE TRIGGER usage_counter_fill_tenant_id BEFORE INSERT ON subscription.usage_counter
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('usage_counter', 'account_id', 'account');
CREATE TRIGGER trimmed_fill_tenant_id BEFORE INSERT ON subscription.trimmed
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('trimmed', 'account_id', 'account');

-- also in replica mode: a restore of a dump without the tenant key (1.0's)
ALTER TABLE subscription.account ENABLE ALWAYS TRIGGER account_fill_tenant_id;
ALTER TABLE subscription.member ENABLE ALWAYS TRIGGER member_fill_tenant_id;
ALTER TABLE subscription.terms_acceptance ENABLE ALWAYS TRIGGER terms_acceptance_fill_tenant_id;
ALTER TABLE subscription.subscription ENABLE ALWAYS TRIGGER subscription_fill_tenant_id;
ALTER TABLE subscription.addon_batch ENABLE ALWAYS TRIGGER addon_batch_fill_tenant_id;
ALTER TABLE subscription.license ENABLE ALWAYS TRIGGER license_fill_tenant_id;
ALTER TABLE subscription.license_counter ENABLE ALWAYS TRIGGER license_counter_fill_tenant_id;
ALTER TABLE subscription.service_seat ENABLE ALWAYS TRIGGER service_seat_fill_tenant_id;
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_fill_tenant_id;
ALTER TABLE subscription.history ENABLE ALWAYS TRIGGER history_fill_tenant_id;
ALTER TABLE subscription.usage_counter ENABLE ALWAYS TRIGGER usage_counter_fill_tenant_id;
ALTER TABLE subscription.trimmed ENABLE ALWAYS TRIGGER trimmed_fill_tenant_id;

-- PUBLIC executes nothing (99_public.sql)
REVOKE ALL ON FUNCTION subscription.fill_tenant_id() FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- The guards on Citus shards (issue 17, item 3): limited_table names its
-- tables (relation_name, compared on the workers, where a regclass is
-- another node's OID), kept in step with renames; the event triggers do
-- nothing on a Citus worker, whose DDL is the coordinator's.
-- ---------------------------------------------------------------------------
ALTER TABLE subscription.limited_table ADD COLUMN relation_name text;

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

UPDATE subscription.limited_table AS t SET relation_name = subscription.relation_name(t.relation);
ALTER TABLE subscription.limited_table ALTER COLUMN relation_name SET NOT NULL;

CREATE OR REPLACE FUNCTION subscription.keep_limited_tables()
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

DROP EVENT TRIGGER subscription_keep_limited_tables;
CREATE EVENT TRIGGER subscription_keep_limited_tables ON ddl_command_end
    WHEN TAG IN ('ALTER TABLE', 'CREATE TABLE', 'ALTER SCHEMA')
    EXECUTE FUNCTION subscription.keep_limited_tables();

CREATE OR REPLACE FUNCTION subscription.forget_dropped_tables()
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

-- PUBLIC executes none of the new functions; the roles given their rights
-- before get the new ones of their kind
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- Keyed forms (issue 17, item 2): every public function that writes has a
-- form whose first argument is the tenant, whose statements name it; the
-- unkeyed form finds the tenant and calls it (docs/design.md#keyed-forms).

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
    found_by_key := CASE kind
        WHEN 'account' THEN EXISTS (SELECT FROM subscription.account AS a
                                     WHERE a.tenant_id = require_tenant.tenant_id AND a.id = require_tenant.id)
        WHEN 'subscription' THEN EXISTS (SELECT FROM subscription.subscription AS s
                                          WHERE s.tenant_id = require_tenant.tenant_id AND s.id = require_tenant.id)
        WHEN 'addon_batch' THEN EXISTS (SELECT FROM subscription.addon_batch AS b
                                         WHERE b.tenant_id = require_tenant.tenant_id AND b.id = require_tenant.id)
        END;
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

-- every mutating public function honours the key: its keyed form starts
-- with the call of idempotent() (the C ones: src/licenses.c)
CREATE FUNCTION subscription.accept_terms(tenant_id bigint, account_id bigint, version text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t subscription.terms;
    current subscription.terms;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.accept_terms(bigint,bigint,text,timestamptz)', accept_terms.tenant_id,
            pg_catalog.jsonb_build_array(accept_terms.tenant_id, accept_terms.account_id, accept_terms.version, accept_terms.at));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('accept_terms', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('accept_terms', '{account_id,version,at}',
        ARRAY[account_id IS NULL, version IS NULL, at IS NULL]);
    PERFORM subscription.require_time('accept_terms', at, false);
    PERFORM subscription.require_account(account_id);
    PERFORM subscription.authorize(account_id, 'accept_terms');
    PERFORM subscription.require_open_account(account_id);
    SELECT * INTO t FROM subscription.terms AS x WHERE x.version = accept_terms.version;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'terms version "%" does not exist', version
            USING ERRCODE = 'undefined_object',
                  HINT = 'The versions are the rows of subscription.terms.';
    END IF;
    current := subscription.terms_in_effect(at);
    IF t.effective_at < current.effective_at THEN
        RAISE EXCEPTION 'terms version "%" was replaced by version "%"', version, current.version
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Version "%s" is in effect since %s.', current.version, current.effective_at),
                  HINT = format('Accept the version in effect: subscription.accept_terms(%s, %L).',
                                account_id, current.version);
    END IF;
    INSERT INTO subscription.terms_acceptance AS a (tenant_id, account_id, version, accepted_at, accepted_by)
    VALUES (accept_terms.tenant_id, accept_terms.account_id, t.version, accept_terms.at, subscription.current_actor())
    ON CONFLICT ON CONSTRAINT terms_acceptance_pkey DO NOTHING;
END
$$;

COMMENT ON FUNCTION subscription.accept_terms(bigint, bigint, text, timestamptz) IS
'The account accepts a terms version; who accepted (the actor, else the session user) is recorded, in history too (Z11) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.subscribe(tenant_id bigint, account_id bigint, plan text, cycle interval, quantity integer, at timestamptz, renewal text, coupon text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    price     record;
    period    tstzrange;
    new_id    bigint;
    anchor_at timestamptz;
    k         integer;
    full_period tstzrange;
    plan_version integer;
    is_default boolean;
    coupon_cycles integer;
    trial     interval;
    product_plans text[];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.subscribe(bigint,bigint,text,interval,integer,timestamptz,text,text)', subscribe.tenant_id,
            pg_catalog.jsonb_build_array(subscribe.tenant_id, subscribe.account_id, subscribe.plan, subscribe.cycle, subscribe.quantity, subscribe.at, subscribe.renewal, subscribe.coupon)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('subscribe', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('subscribe',
        '{account_id,plan,cycle,quantity,at,renewal}',
        ARRAY[account_id IS NULL, plan IS NULL, cycle IS NULL, quantity IS NULL,
              at IS NULL, renewal IS NULL]);

    PERFORM subscription.require_quantity(quantity);
    PERFORM subscription.require_cycle(cycle);
    PERFORM subscription.require_renewal(renewal);
    PERFORM subscription.require_time('subscribe', at, false);

    SELECT a.billing_anchor INTO anchor_at
      FROM subscription.account AS a
     WHERE a.tenant_id = subscribe.tenant_id AND a.id = subscribe.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(account_id, 'purchase');
    PERFORM subscription.require_open_account(account_id);
    PERFORM subscription.require_terms(tenant_id, account_id, at);
    price := subscription.period_price(plan, cycle, quantity);
    PERFORM subscription.require_amount(price.amount, price.currency);
    IF coupon IS NOT NULL THEN
        PERFORM subscription.redeemable_coupon(coupon, at, price.currency);
    END IF;
    IF anchor_at IS NULL THEN
        k := 1;
        anchor_at := at;
    ELSE
        -- L4: the first period runs to the account's next billing date, whose
        -- period (of this cycle) it is part of, and is charged for its days
        k := subscription.period_containing(anchor_at, cycle, at);
    END IF;
    full_period := subscription.nth_period(anchor_at, cycle, k);
    period := tstzrange(at, upper(full_period), '[)');

    -- a trial (issue 19): the plan's price for the cycle names it; the
    -- subscription is 'trialing' to its end, charged nothing, with its
    -- plan's seats and limits; renew_account ends it (end_trial).  Each
    -- read a statement of its own (Citus, issue 17)
    SELECT max(pp.trial) INTO trial
      FROM subscription.plan_price AS pp
      JOIN subscription.plan AS p ON p.code = pp.plan
     WHERE pp.plan = subscribe.plan
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(subscribe.cycle)
       AND pp.versions @> p.version;
    IF trial IS NOT NULL THEN
        product_plans := ARRAY(SELECT o.code FROM subscription.plan AS p
                                 JOIN subscription.plan AS o ON o.product = p.product
                                WHERE p.code = subscribe.plan);
        IF EXISTS (SELECT FROM subscription.subscription AS d
                    WHERE d.tenant_id = subscribe.tenant_id AND d.account_id = subscribe.account_id
                      AND d.trial_ends IS NOT NULL AND d.plan = ANY (product_plans)) THEN
            RAISE EXCEPTION 'account % has had its trial of the product of plan "%"', account_id, plan
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'An account gets one trial per product.',
                      HINT = 'Subscribe to a plan or cycle of the product whose price has no trial.';
        END IF;
        -- its first period starts at the trial's end (period_number 0 ends there)
        anchor_at := at + trial;
        k := 0;
        full_period := tstzrange(at, anchor_at, '[)');
        period := full_period;
        price.amount := 0;
    END IF;

    -- R10: an account's first service subscription is its default one;
    -- it holds the plan's current version (grandfathering).  Each read a
    -- statement of its own, the catalog's apart from the tenant's: Citus
    -- runs no correlated subquery beside a reference table (issue 17)
    SELECT p.version, p.kind = 'service' INTO plan_version, is_default
      FROM subscription.plan AS p WHERE p.code = subscribe.plan;
    is_default := is_default AND NOT EXISTS (
        SELECT FROM subscription.subscription AS d
         WHERE d.tenant_id = subscribe.tenant_id AND d.account_id = subscribe.account_id AND d.is_default);
    coupon_cycles := (SELECT c.cycles FROM subscription.coupon AS c WHERE c.code = subscribe.coupon);
    INSERT INTO subscription.subscription AS s
           (tenant_id, account_id, plan, plan_version, cycle, quantity, paid_quantity, period, anchor, period_number, renewal,
            is_default, coupon, coupon_periods_left, status, trial_ends)
    VALUES (subscribe.tenant_id, subscribe.account_id, subscribe.plan, plan_version, subscribe.cycle, subscribe.quantity,
            subscribe.quantity, period, anchor_at, k, subscribe.renewal, is_default, subscribe.coupon, coupon_cycles,
            CASE WHEN trial IS NULL THEN 'active' ELSE 'trialing' END, CASE WHEN trial IS NOT NULL THEN anchor_at END)
    RETURNING s.id INTO new_id;

    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, plan, description)
    VALUES (subscribe.tenant_id, subscribe.account_id, new_id, 'charge',
            CASE WHEN period = full_period
                 THEN subscription.round_money(price.amount, price.currency)
                 ELSE subscription.unused_part(price.amount, full_period, at, price.currency) END,
            price.currency, period, plan,
            format('%splan %s, cycle %s, quantity %s%s', CASE WHEN trial IS NOT NULL THEN 'trial: ' ELSE '' END,
                   plan, cycle, quantity,
                   CASE WHEN period = full_period THEN ''
                        ELSE format(', to the billing date %s', upper(period)) END));

    RETURN new_id;
END
$$;

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.subscribe(
    account_id bigint,
    plan text,
    cycle interval,
    quantity integer DEFAULT 1,
    at timestamptz DEFAULT subscription.now(),
    renewal text DEFAULT 'always',
    coupon text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.subscribe(subscription.tenant_of('account', subscribe.account_id), subscribe.account_id, subscribe.plan, subscribe.cycle, subscribe.quantity, subscribe.at, subscribe.renewal, subscribe.coupon);
END
$$;

CREATE FUNCTION subscription.set_default(tenant_id bigint, subscription_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    account bigint;
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.set_default(bigint,bigint)', set_default.tenant_id,
            pg_catalog.jsonb_build_array(set_default.tenant_id, set_default.subscription_id));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('set_default', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_default', '{subscription_id}', ARRAY[subscription_id IS NULL]);
    SELECT x.account_id INTO account FROM subscription.subscription AS x
     WHERE x.tenant_id = set_default.tenant_id AND x.id = set_default.subscription_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM FROM subscription.subscription AS x WHERE x.tenant_id = set_default.tenant_id AND x.account_id = account
     ORDER BY x.id FOR NO KEY UPDATE;
    s := subscription.subscription_for_change('set_default', subscription_id, 'set_default');
    IF s.is_default THEN
        RETURN;
    END IF;
    UPDATE subscription.subscription AS x SET is_default = false
     WHERE x.tenant_id = set_default.tenant_id AND x.account_id = s.account_id AND x.is_default;
    UPDATE subscription.subscription AS x SET is_default = true
     WHERE x.tenant_id = set_default.tenant_id AND x.id = s.id;
END
$$;

COMMENT ON FUNCTION subscription.set_default(bigint, bigint) IS
'Make an active subscription the account''s default one, whose licenses new members get (R10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.set_quantity(tenant_id bigint, subscription_id bigint, quantity integer, at timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    counter subscription.license_counter;
    new_capacity integer;
    paid integer;
    monthly boolean;
    old_price record;
    new_price record;
    charge numeric;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.set_quantity(bigint,bigint,integer,timestamptz)', set_quantity.tenant_id,
            pg_catalog.jsonb_build_array(set_quantity.tenant_id, set_quantity.subscription_id, set_quantity.quantity, set_quantity.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('set_quantity', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_quantity', '{subscription_id,quantity,at}',
        ARRAY[subscription_id IS NULL, quantity IS NULL, at IS NULL]);
    PERFORM subscription.require_quantity(quantity);
    PERFORM subscription.require_time('set_quantity', at, false);

    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.tenant_id = set_quantity.tenant_id AND x.id = set_quantity.subscription_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    monthly := subscription.cycle_key(s.cycle) = '{1,0,0}';
    PERFORM subscription.authorize(s.account_id,
        CASE WHEN quantity > s.quantity THEN 'increase_licenses' ELSE 'decrease_licenses' END,
        monthly);
    IF s.status <> 'active' THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM subscription.require_in_period('set_quantity', s, at);
    IF quantity = s.quantity THEN
        RETURN subscription.licenses_left(subscription_id);
    END IF;
    PERFORM subscription.require_terms(set_quantity.tenant_id, s.account_id, at);

    -- the counter row is what concurrent license writes wait on
    SELECT * INTO counter FROM subscription.license_counter AS c
     WHERE c.tenant_id = set_quantity.tenant_id AND c.subscription_id = set_quantity.subscription_id FOR NO KEY UPDATE;
    -- the capacity keeps the add-on licenses and takes the new quantity
    new_capacity := counter.capacity - s.quantity + quantity;
    IF counter.used > new_capacity THEN
        RAISE EXCEPTION 'subscription % cannot have fewer licenses than it has assigned', subscription_id
            USING ERRCODE = 'check_violation',
                  DETAIL = format('Limit %s, in use %s.', new_capacity, counter.used),
                  HINT = 'Release licenses with subscription.license_release() first.';
    END IF;

    -- on a tiered plan the quantity is a tier (55000 otherwise)
    -- at the version the subscription holds (grandfathering)
    new_price := subscription.period_price(s.plan, s.cycle, quantity, s.plan_version);
    PERFORM subscription.require_amount(new_price.amount, new_price.currency);
    paid := coalesce(s.paid_quantity, s.quantity);
    IF quantity > paid THEN
        old_price := subscription.period_price(s.plan, s.cycle, paid, s.plan_version);
        charge := subscription.unused_part(new_price.amount - old_price.amount, s.period, at,
                                           new_price.currency);
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
        VALUES (set_quantity.tenant_id, s.account_id, s.id, 'charge', charge, new_price.currency,
                tstzrange(at, upper(s.period), '[)'), format('licenses %s-%s', paid + 1, quantity), s.plan,
                format('%s more licenses of plan %s for the rest of the period', quantity - paid, s.plan));
    END IF;

    UPDATE subscription.subscription AS x
       SET quantity = set_quantity.quantity, paid_quantity = greatest(paid, set_quantity.quantity)
     WHERE x.tenant_id = set_quantity.tenant_id AND x.id = s.id;
    RETURN subscription.licenses_left(subscription_id);
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.set_quantity(subscription_id bigint, quantity integer, at timestamptz DEFAULT subscription.now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.set_quantity(subscription.tenant_of('subscription', set_quantity.subscription_id), set_quantity.subscription_id, set_quantity.quantity, set_quantity.at);
END
$$;

CREATE FUNCTION subscription.change_cycle(tenant_id bigint, subscription_id bigint, cycle interval)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    missing text;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.change_cycle(bigint,bigint,interval)', change_cycle.tenant_id,
            pg_catalog.jsonb_build_array(change_cycle.tenant_id, change_cycle.subscription_id, change_cycle.cycle)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('change_cycle', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('change_cycle', '{subscription_id,cycle}',
        ARRAY[subscription_id IS NULL, cycle IS NULL]);
    PERFORM subscription.require_cycle(cycle);
    s := subscription.subscription_for_change(change_cycle.tenant_id, 'change_cycle', subscription_id, 'change_cycle');
    PERFORM subscription.require_terms(change_cycle.tenant_id, s.account_id, subscription.now());
    -- the plan must sell this cycle for the quantity, and so must the
    -- add-ons that will renew with it (22023 otherwise)
    PERFORM subscription.period_price(n.plan, cycle, coalesce(s.pending_quantity, s.quantity), n.version)
       FROM subscription.next_plan(s) AS n;
    missing := subscription.unpriced_addons(change_cycle.tenant_id, s.id, cycle);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'add-on "%" has no price for cycle %', missing, subscription.cycle_text(cycle)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = subscription.sold_cycles('add-on', missing),
                  HINT = 'The prices of an add-on are its rows in subscription.addon_price.';
    END IF;
    UPDATE subscription.subscription AS x
       SET pending_cycle = CASE WHEN subscription.cycle_key(change_cycle.cycle)
                                     = subscription.cycle_key(s.cycle)
                                THEN NULL ELSE change_cycle.cycle END
     WHERE x.tenant_id = change_cycle.tenant_id AND x.id = s.id;
    RETURN upper(s.period);
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.change_cycle(subscription_id bigint, cycle interval)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.change_cycle(subscription.tenant_of('subscription', change_cycle.subscription_id), change_cycle.subscription_id, change_cycle.cycle);
END
$$;

CREATE FUNCTION subscription.set_renewal(tenant_id bigint, subscription_id bigint, renewal text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.set_renewal(bigint,bigint,text)', set_renewal.tenant_id,
            pg_catalog.jsonb_build_array(set_renewal.tenant_id, set_renewal.subscription_id, set_renewal.renewal));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('set_renewal', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_renewal', '{subscription_id,renewal}',
        ARRAY[subscription_id IS NULL, renewal IS NULL]);
    PERFORM subscription.require_renewal(renewal);
    PERFORM subscription.subscription_for_change(set_renewal.tenant_id, 'set_renewal', subscription_id, 'change_renewal');
    UPDATE subscription.subscription AS x SET renewal = set_renewal.renewal
     WHERE x.tenant_id = set_renewal.tenant_id AND x.id = set_renewal.subscription_id;
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.set_renewal(subscription_id bigint, renewal text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.set_renewal(subscription.tenant_of('subscription', set_renewal.subscription_id), set_renewal.subscription_id, set_renewal.renewal);
END
$$;

CREATE FUNCTION subscription.cancel(tenant_id bigint, subscription_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.cancel(bigint,bigint)', cancel.tenant_id,
            pg_catalog.jsonb_build_array(cancel.tenant_id, cancel.subscription_id)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('cancel', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('cancel', '{subscription_id}', ARRAY[subscription_id IS NULL]);
    s := subscription.subscription_for_change(cancel.tenant_id, 'cancel', subscription_id, 'cancel');
    UPDATE subscription.subscription AS x SET cancel_at_period_end = true
     WHERE x.tenant_id = cancel.tenant_id AND x.id = s.id AND NOT x.cancel_at_period_end;
    RETURN upper(s.period);
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.cancel(subscription_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.cancel(subscription.tenant_of('subscription', cancel.subscription_id), cancel.subscription_id);
END
$$;

CREATE FUNCTION subscription.cancel_account(tenant_id bigint, account_id bigint)
RETURNS TABLE (subscription_id bigint, ends_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sub bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.cancel_account(bigint,bigint)', cancel_account.tenant_id,
            pg_catalog.jsonb_build_array(cancel_account.tenant_id, cancel_account.account_id)))
            AS r (subscription_id bigint, ends_at timestamptz);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('cancel_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('cancel_account', '{account_id}', ARRAY[account_id IS NULL]);
    PERFORM subscription.require_account(cancel_account.tenant_id, cancel_account.account_id);
    PERFORM subscription.authorize(cancel_account.tenant_id, cancel_account.account_id, 'cancel', false);
    -- each cancel() called from a loop, not from the query's target list:
    -- on Citus a query of a shard may not run a function that reads the
    -- tenant's tables (issue 17)
    FOR sub IN
        SELECT s.id FROM subscription.subscription AS s
         WHERE s.tenant_id = cancel_account.tenant_id AND s.account_id = cancel_account.account_id
           AND s.status = 'active'
         ORDER BY s.id
    LOOP
        subscription_id := sub;
        ends_at := subscription.cancel(cancel_account.tenant_id, sub);
        RETURN NEXT;
    END LOOP;
END
$$;

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.cancel_account(account_id bigint)
RETURNS TABLE (subscription_id bigint, ends_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM subscription.cancel_account(subscription.tenant_of('account', cancel_account.account_id), cancel_account.account_id);
END
$$;

-- (kept: the statements below need change_plan(); its final text follows
-- in section "Usage previews, restart's period number")
CREATE FUNCTION subscription.change_plan(tenant_id bigint, subscription_id bigint, plan text, at timestamptz)
RETURNS TABLE (effective_at timestamptz, refund numeric, charge numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    old_plan subscription.plan;
    new_plan subscription.plan;
    modes subscription.product;
    price record;
    new_period tstzrange;
BEGIN
    PERFORM subscription.require_tenant('change_plan', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('change_plan', '{subscription_id,plan,at}',
        ARRAY[subscription_id IS NULL, plan IS NULL, at IS NULL]);
    PERFORM subscription.require_time('change_plan', at, false);
    SELECT * INTO new_plan FROM subscription.plan AS p WHERE p.code = change_plan.plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    s := subscription.subscription_for_change('change_plan', subscription_id, 'change_plan');
    PERFORM subscription.require_in_period('change_plan', s, at);
    PERFORM subscription.require_terms(s.account_id, at);
    SELECT * INTO old_plan FROM subscription.plan AS p WHERE p.code = s.plan;
    IF new_plan.product <> old_plan.product THEN
        RAISE EXCEPTION 'plan "%" is not a plan of product "%"', plan, old_plan.product
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Subscribe to the other product with subscription.subscribe().';
    END IF;

    effective_at := at;
    refund := 0;
    charge := 0;
    IF new_plan.code = s.plan THEN
        UPDATE subscription.subscription AS x SET pending_plan = NULL
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id AND x.pending_plan IS NOT NULL;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO modes FROM subscription.product AS p WHERE p.code = new_plan.product;
    IF new_plan.rank < old_plan.rank AND modes.downgrade = 'end_of_period' THEN
        -- C4: the current plan runs to the end of the period; the new one
        -- must sell the cycle and quantity of the next (22023, 55000)
        PERFORM subscription.period_price(new_plan.code, coalesce(s.pending_cycle, s.cycle),
                                          coalesce(s.pending_quantity, s.quantity));
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
        effective_at := upper(s.period);
        RETURN NEXT;
        RETURN;
    END IF;

    -- the new plan must sell the cycle and the quantity (22023, 55000)
    price := subscription.period_price(new_plan.code, s.cycle, s.quantity);
    refund := subscription.give_back_unused(s, at, 'refund', format('change to plan %s', new_plan.code));
    IF new_plan.rank >= old_plan.rank AND modes.upgrade = 'restart' THEN
        -- C1: a new full period starts now
        new_period := subscription.nth_period(at, s.cycle, 1);
        charge := subscription.round_money(price.amount, price.currency);
    ELSE
        new_period := s.period;
        charge := subscription.unused_part(price.amount, s.period, at, price.currency);
    END IF;
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (change_plan.tenant_id, s.account_id, s.id, 'charge', charge, price.currency,
            tstzrange(at, upper(new_period), '[)'), format('change to %s', new_plan.code), new_plan.code,
            format('plan %s from %s, cycle %s, quantity %s', new_plan.code, at, s.cycle, s.quantity));

    IF new_plan.rank < old_plan.rank THEN
        -- immediate downgrade: apply_downgrade moves to the plan and trims
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code, paid_quantity = x.quantity
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
        PERFORM FROM subscription.apply_downgrade(change_plan.tenant_id, s.id, false);
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = new_plan.code, pending_plan = NULL, paid_quantity = x.quantity,
               period = new_period,
               anchor = CASE WHEN new_period = s.period THEN x.anchor ELSE at END
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
    END IF;
    RETURN NEXT;
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT subscription.now())
RETURNS TABLE (effective_at timestamptz, refund numeric, charge numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM subscription.change_plan(subscription.tenant_of('subscription', change_plan.subscription_id), change_plan.subscription_id, change_plan.plan, change_plan.at);
END
$$;

CREATE FUNCTION subscription.bundle_into_suite(tenant_id bigint, account_id bigint, suite_plan text, quantity integer, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    suite subscription.plan;
    included text[];
    replaced subscription.subscription[];
    ids bigint[];
    members bigint[];
    r subscription.subscription;
    bundle_cycle interval;
    was_default boolean;
    credited numeric := 0;
    new_id bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.bundle_into_suite(bigint,bigint,text,integer,timestamptz)', bundle_into_suite.tenant_id,
            pg_catalog.jsonb_build_array(bundle_into_suite.tenant_id, bundle_into_suite.account_id, bundle_into_suite.suite_plan, bundle_into_suite.quantity, bundle_into_suite.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('bundle_into_suite', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('bundle_into_suite', '{account_id,suite_plan,at}',
        ARRAY[account_id IS NULL, suite_plan IS NULL, at IS NULL]);
    IF quantity IS NOT NULL THEN
        PERFORM subscription.require_quantity(quantity);
    END IF;
    PERFORM subscription.require_time('bundle_into_suite', at, false);
    PERFORM subscription.require_account(bundle_into_suite.tenant_id, bundle_into_suite.account_id);
    PERFORM subscription.authorize(bundle_into_suite.tenant_id, bundle_into_suite.account_id, 'change_plan', false);
    SELECT * INTO suite FROM subscription.plan AS p WHERE p.code = bundle_into_suite.suite_plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', suite_plan);
    END IF;
    SELECT array_agg(DISTINCT ip.product ORDER BY ip.product) INTO included
      FROM subscription.suite_component AS sc
      JOIN subscription.plan AS ip ON ip.code = sc.plan
     WHERE sc.suite_plan = suite.code;
    IF included IS NULL THEN
        RAISE EXCEPTION 'plan "%" is not a suite', suite.code
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The plans a suite includes are its rows in subscription.suite_component.';
    END IF;

    -- the separate subscriptions, locked in id order
    SELECT array_agg(x ORDER BY x.id) INTO replaced
      FROM (SELECT x.* FROM subscription.subscription AS x
              JOIN subscription.plan AS p ON p.code = x.plan
             WHERE x.tenant_id = bundle_into_suite.tenant_id AND x.account_id = bundle_into_suite.account_id
               AND x.status = 'active'
               AND subscription.seat_product(p.kind, p.product) = ANY (included)
             ORDER BY x.id
               FOR NO KEY UPDATE OF x) AS x;
    IF replaced IS NULL THEN
        RAISE EXCEPTION 'account % has no subscription to bundle into suite "%"', account_id, suite.code
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It has no active subscription of product %s.',
                                  array_to_string(ARRAY(SELECT format('"%s"', i) FROM unnest(included) AS i), ', ')),
                  HINT = 'Subscribe to the suite with subscription.subscribe().';
    END IF;
    ids := ARRAY(SELECT x.id FROM unnest(replaced) AS x);
    quantity := coalesce(quantity, (SELECT max(x.quantity) FROM unnest(replaced) AS x));
    bundle_cycle := (SELECT max(x.cycle) FROM unnest(replaced) AS x);
    was_default := (SELECT bool_or(x.is_default) FROM unnest(replaced) AS x);

    -- their seats go to the suite: a member holding a license of an included product
    members := ARRAY(SELECT DISTINCT l.member_id FROM subscription.license AS l
                      WHERE l.tenant_id = bundle_into_suite.tenant_id AND l.subscription_id = ANY (ids) ORDER BY 1);
    IF cardinality(members) > quantity THEN
        RAISE EXCEPTION 'suite "%" with % licenses cannot seat the % members holding a license of product %',
                        suite.code, quantity, cardinality(members),
                        (SELECT string_agg(DISTINCT format('"%s"', p.product), ', ' ORDER BY format('"%s"', p.product))
                           FROM unnest(replaced) AS x
                           JOIN subscription.license AS l ON l.tenant_id = bundle_into_suite.tenant_id AND l.subscription_id = x.id
                           JOIN subscription.plan AS p ON p.code = x.plan)
            USING ERRCODE = 'check_violation',
                  DETAIL = format('Members %s hold a license of subscription %s.',
                                  array_to_string(members, ', '), array_to_string(ids, ', ')),
                  HINT = 'Bundle with a larger quantity, or release licenses first.';
    END IF;

    -- L9: each ends now, its unused days credited; its licenses released
    FOREACH r IN ARRAY replaced LOOP
        credited := credited + subscription.end_early(bundle_into_suite.tenant_id, r.id, at);
    END LOOP;
    DELETE FROM subscription.license AS l WHERE l.tenant_id = bundle_into_suite.tenant_id AND l.subscription_id = ANY (ids);
    IF was_default THEN
        UPDATE subscription.subscription AS x SET is_default = false
         WHERE x.tenant_id = bundle_into_suite.tenant_id AND x.id = ANY (ids) AND x.is_default;
    END IF;

    -- the suite, charged as any subscription (the credit pays it first)
    new_id := subscription.subscribe(bundle_into_suite.tenant_id, bundle_into_suite.account_id, suite.code, bundle_cycle, quantity, at,
                                     'always', NULL);
    IF was_default THEN
        UPDATE subscription.subscription AS x SET is_default = true WHERE x.tenant_id = bundle_into_suite.tenant_id AND x.id = new_id AND NOT x.is_default;
    END IF;
    INSERT INTO subscription.license (tenant_id, subscription_id, member_id)
    SELECT bundle_into_suite.tenant_id, new_id, m FROM unnest(members) AS m;

    INSERT INTO subscription.history (tenant_id, actor, operation, account_id, subscription_id, details)
    VALUES (bundle_into_suite.tenant_id, subscription.current_actor(), 'bundle_into_suite', bundle_into_suite.account_id, new_id,
            jsonb_build_object('suite_plan', suite.code, 'quantity', quantity, 'replaced', to_jsonb(ids),
                               'credited', credited, 'members', to_jsonb(members)));
    RETURN new_id;
END
$$;

CREATE FUNCTION subscription.credit_account(tenant_id bigint, account_id bigint, amount numeric, reason text, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.credit_account(bigint,bigint,numeric,text,text)', credit_account.tenant_id,
            pg_catalog.jsonb_build_array(credit_account.tenant_id, credit_account.account_id, credit_account.amount, credit_account.reason, credit_account.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('credit_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('credit_account', '{account_id,amount,reason,currency}',
        ARRAY[account_id IS NULL, amount IS NULL, reason IS NULL, currency IS NULL]);
    PERFORM subscription.require_account(credit_account.account_id);
    PERFORM subscription.authorize(credit_account.account_id, 'pay');
    PERFORM FROM subscription.currency AS c WHERE c.code = credit_account.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity'
       OR amount <> subscription.round_money(amount, currency) THEN
        RAISE EXCEPTION 'a credit must be a positive amount in the minor unit of %', currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, currency);
    INSERT INTO subscription.ledger AS l (tenant_id, account_id, kind, amount, currency, item, description)
    VALUES (credit_account.tenant_id, credit_account.account_id, 'credit', amount, currency, 'credit', reason)
    RETURNING l.id INTO line;
    RETURN line;
END
$$;

COMMENT ON FUNCTION subscription.credit_account(bigint, bigint, numeric, text, text) IS
'Credit an account with a reason; the next charges use it (L9, L10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.credit_account(account_id bigint, amount numeric, reason text,
                                            currency text DEFAULT 'EUR')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.credit_account(subscription.tenant_of('account', credit_account.account_id), credit_account.account_id, credit_account.amount, credit_account.reason, credit_account.currency);
END
$$;

CREATE FUNCTION subscription.end_early(tenant_id bigint, subscription_id bigint, at timestamptz)
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    credited numeric;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.end_early(bigint,bigint,timestamptz)', end_early.tenant_id,
            pg_catalog.jsonb_build_array(end_early.tenant_id, end_early.subscription_id, end_early.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('end_early', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('end_early', '{subscription_id,at}',
        ARRAY[subscription_id IS NULL, at IS NULL]);
    PERFORM subscription.require_time('end_early', at, false);
    s := subscription.subscription_for_change(end_early.tenant_id, 'end_early', subscription_id, 'cancel');
    PERFORM subscription.require_in_period('end_early', s, at);
    -- U3: the usage up to the end
    PERFORM subscription.bill_usage(s, at);
    credited := subscription.give_back_unused(s, at, 'credit', 'consolidation');
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.tenant_id = end_early.tenant_id AND b.subscription_id = s.id AND b.status = 'active';
    UPDATE subscription.subscription AS x SET status = 'cancelled' WHERE x.tenant_id = end_early.tenant_id AND x.id = s.id;
    RETURN credited;
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.end_early(subscription_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.end_early(subscription.tenant_of('subscription', end_early.subscription_id), end_early.subscription_id, end_early.at);
END
$$;

CREATE FUNCTION subscription.purchase_addon(tenant_id bigint, subscription_id bigint, addon text, quantity integer, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    a subscription.addon;
    offer subscription.plan_addon;
    price record;
    plan_price record;
    batch bigint;
    one_time boolean;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.purchase_addon(bigint,bigint,text,integer,timestamptz)', purchase_addon.tenant_id,
            pg_catalog.jsonb_build_array(purchase_addon.tenant_id, purchase_addon.subscription_id, purchase_addon.addon, purchase_addon.quantity, purchase_addon.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('purchase_addon', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('purchase_addon', '{subscription_id,addon,quantity,at}',
        ARRAY[subscription_id IS NULL, addon IS NULL, quantity IS NULL, at IS NULL]);
    PERFORM subscription.require_quantity(quantity);
    PERFORM subscription.require_time('purchase_addon', at, false);
    SELECT * INTO a FROM subscription.addon AS x WHERE x.code = purchase_addon.addon;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('add-on', addon);
    END IF;
    -- K8: members of a sub-account do not buy
    s := subscription.subscription_for_change(purchase_addon.tenant_id, 'purchase_addon', subscription_id, 'purchase');
    PERFORM subscription.require_in_period('purchase_addon', s, at);
    PERFORM subscription.require_terms(purchase_addon.tenant_id, s.account_id, at);

    SELECT * INTO offer FROM subscription.plan_addon AS o
     WHERE o.plan = s.plan AND o.addon = a.code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on "%" is not sold with plan "%"', a.code, s.plan
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The add-ons a plan may buy are its rows in subscription.plan_addon.';
    ELSIF offer.included THEN
        RAISE EXCEPTION 'add-on "%" is already included in plan "%"', a.code, s.plan   -- Z6
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('Plan "%s" gives what add-on "%s" sells: there is nothing to buy.', s.plan, a.code);
    END IF;
    plan_price := subscription.period_price(s.plan, s.cycle, s.quantity, s.plan_version);
    IF plan_price.amount = 0 THEN
        RAISE EXCEPTION 'add-ons are sold on paid plans only'                            -- K1
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Plan "%s" is free.', s.plan);
    END IF;

    one_time := a.one_time;
    price := subscription.addon_period_price(a.code, CASE WHEN one_time THEN NULL ELSE s.cycle END, quantity);
    PERFORM subscription.require_amount(price.amount, price.currency);
    -- the seats it adds stay within the largest quantity (an integer)
    IF a.feature = 'licenses'
       AND subscription.license_capacity(purchase_addon.tenant_id, s.id)::bigint + (quantity::bigint * a.units)
           > current_setting('subscription.max_quantity')::bigint THEN
        RAISE EXCEPTION 'subscription % would hold more licenses than the largest quantity allowed', s.id
            USING ERRCODE = 'numeric_value_out_of_range',
                  DETAIL = format('It holds %s; %s x %s more would pass subscription.max_quantity (%s).',
                                  subscription.license_capacity(purchase_addon.tenant_id, s.id), quantity, a.units,
                                  current_setting('subscription.max_quantity'));
    END IF;
    INSERT INTO subscription.addon_batch AS b (tenant_id, subscription_id, addon, quantity, purchased_at)
    VALUES (purchase_addon.tenant_id, s.id, a.code, quantity, at)
    RETURNING b.id INTO batch;
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
    SELECT purchase_addon.tenant_id, s.account_id, s.id, batch, 'charge', c.amount, price.currency,
           CASE WHEN one_time THEN NULL ELSE tstzrange(at, upper(s.period), '[)') END, 'addon', s.plan,
           CASE WHEN one_time
                THEN format('add-on %s x %s, one-time', a.code, quantity)
                ELSE format('add-on %s x %s for the rest of the period; full cycle %s %s', a.code, quantity,
                            subscription.round_money(price.amount, price.currency), price.currency) END
      FROM (SELECT CASE WHEN one_time THEN subscription.round_money(price.amount, price.currency)
                        ELSE subscription.unused_part(price.amount, s.period, at, price.currency) END) AS c(amount);
    RETURN batch;
END
$$;

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.purchase_addon(subscription_id bigint, addon text, quantity integer DEFAULT 1,
                                            at timestamptz DEFAULT subscription.now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.purchase_addon(subscription.tenant_of('subscription', purchase_addon.subscription_id), purchase_addon.subscription_id, purchase_addon.addon, purchase_addon.quantity, purchase_addon.at);
END
$$;

CREATE FUNCTION subscription.cancel_addon(tenant_id bigint, batch_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b subscription.addon_batch;
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.cancel_addon(bigint,bigint)', cancel_addon.tenant_id,
            pg_catalog.jsonb_build_array(cancel_addon.tenant_id, cancel_addon.batch_id)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('cancel_addon', tenant_id, 'addon_batch', batch_id);
    PERFORM subscription.require_arguments('cancel_addon', '{batch_id}', ARRAY[batch_id IS NULL]);
    SELECT * INTO b FROM subscription.addon_batch AS x WHERE x.tenant_id = cancel_addon.tenant_id AND x.id = cancel_addon.batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on batch % does not exist', batch_id USING ERRCODE = 'no_data_found';
    END IF;
    s := subscription.subscription_for_change(cancel_addon.tenant_id, 'cancel_addon', b.subscription_id, 'cancel');
    IF b.status <> 'active' THEN
        RAISE EXCEPTION 'add-on batch % is %', batch_id, b.status USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF (SELECT x.one_time FROM subscription.addon AS x WHERE x.code = b.addon) THEN
        RAISE EXCEPTION 'add-on batch % was a one-time purchase', batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'Nothing renews, so nothing can be cancelled.';
    END IF;
    UPDATE subscription.addon_batch AS x SET cancel_at_period_end = true
     WHERE x.tenant_id = cancel_addon.tenant_id AND x.id = b.id AND NOT x.cancel_at_period_end;
    RETURN upper(s.period);
END
$$;

-- the tenant of the addon batch, then the keyed form (docs/design.md#keyed-forms)
CREATE OR REPLACE FUNCTION subscription.cancel_addon(batch_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.cancel_addon(subscription.tenant_of('addon_batch', cancel_addon.batch_id), cancel_addon.batch_id);
END
$$;

CREATE FUNCTION subscription.close_account(tenant_id bigint, account_id bigint, at timestamptz)
RETURNS TABLE (subscription_id bigint, credited numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
    open_children text;
    s bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.close_account(bigint,bigint,timestamptz)', close_account.tenant_id,
            pg_catalog.jsonb_build_array(close_account.tenant_id, close_account.account_id, close_account.at)))
            AS r (subscription_id bigint, credited numeric);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('close_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('close_account', '{account_id,at}',
        ARRAY[account_id IS NULL, at IS NULL]);
    PERFORM subscription.require_account(close_account.account_id);
    PERFORM subscription.authorize(close_account.account_id, 'cancel');
    PERFORM subscription.require_time('close_account', at, false);
    SELECT a.closed_at INTO closed FROM subscription.account AS a
     WHERE a.tenant_id = close_account.tenant_id AND a.id = close_account.account_id FOR NO KEY UPDATE;
    IF closed IS NOT NULL THEN
        RAISE EXCEPTION 'account % is already closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was closed at %s.', closed);
    END IF;
    -- K9: a sub-account is closed by whom may act on it (Z1, K8), first
    SELECT string_agg(a.id::text, ', ' ORDER BY a.id) INTO open_children FROM subscription.account AS a
     WHERE a.tenant_id = close_account.tenant_id AND a.parent_id = close_account.account_id AND a.closed_at IS NULL;
    IF open_children IS NOT NULL THEN
        RAISE EXCEPTION 'account % has open sub-accounts', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Sub-accounts %s are open.', open_children),
                  HINT = 'Close them first with subscription.close_account().';
    END IF;
    FOR s IN SELECT x.id FROM subscription.subscription AS x
              WHERE x.tenant_id = close_account.tenant_id AND x.account_id = close_account.account_id
                AND x.status = 'active'
              ORDER BY x.id LOOP
        subscription_id := s;
        credited := subscription.end_early(close_account.tenant_id, s, at);
        RETURN NEXT;
    END LOOP;
    -- the seats of every subscription of the account, through the license guard
    DELETE FROM subscription.license AS l
     USING subscription.subscription AS x
     WHERE l.tenant_id = close_account.tenant_id
       AND x.tenant_id = close_account.tenant_id AND x.id = l.subscription_id
       AND x.account_id = close_account.account_id;
    UPDATE subscription.account AS a SET closed_at = close_account.at
     WHERE a.tenant_id = close_account.tenant_id AND a.id = close_account.account_id;
END
$$;

COMMENT ON FUNCTION subscription.close_account(bigint, bigint, timestamptz) IS
'Close an account: end every subscription (unused days credited, L9), release the seats, refuse new subscriptions (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.erase_account(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
    child bigint;
    members bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.erase_account(bigint,bigint)', erase_account.tenant_id,
            pg_catalog.jsonb_build_array(erase_account.tenant_id, erase_account.account_id));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('erase_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('erase_account', '{account_id}', ARRAY[account_id IS NULL]);
    IF coalesce(current_setting('subscription.actor', true), '') <> ''
       OR NOT subscription.caller_is_trusted() THEN
        RAISE EXCEPTION 'erase_account() is for back-office code'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Erasing an account is not an action of a member.',
                  HINT = 'Call it without subscription.actor, as a role given subscription.grant_backoffice().';
    END IF;
    PERFORM subscription.require_account(erase_account.account_id);
    SELECT a.closed_at INTO closed FROM subscription.account AS a
     WHERE a.tenant_id = erase_account.tenant_id AND a.id = erase_account.account_id FOR NO KEY UPDATE;
    IF closed IS NULL THEN
        RAISE EXCEPTION 'account % is not closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Close it first with subscription.close_account().';
    END IF;
    FOR child IN SELECT a.id FROM subscription.account AS a
                  WHERE a.tenant_id = erase_account.tenant_id AND a.parent_id = erase_account.account_id ORDER BY a.id LOOP
        PERFORM subscription.erase_account(erase_account.tenant_id, child);
    END LOOP;
    DELETE FROM subscription.member AS m WHERE m.tenant_id = erase_account.tenant_id AND m.account_id = erase_account.account_id;
    GET DIAGNOSTICS members = ROW_COUNT;
    UPDATE subscription.account AS a SET name = 'erased'
     WHERE a.tenant_id = erase_account.tenant_id AND a.id = erase_account.account_id;
    -- the one change history allows (refuse_history_change)
    UPDATE subscription.history AS h SET details = subscription.erased_details(h.details)
     WHERE h.tenant_id = erase_account.tenant_id AND h.account_id = erase_account.account_id
       AND h.details <> subscription.erased_details(h.details);
    PERFORM subscription.write_history('account_erase', erase_account.account_id, NULL,
                                       jsonb_build_object('members', members));
END
$$;

COMMENT ON FUNCTION subscription.erase_account(bigint, bigint) IS
'GDPR: erase the personal data (name, members, their external ids, in history too) of a closed account; the ledger stays (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.cancel_migration(tenant_id bigint, subscription_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.cancel_migration(bigint,bigint)', cancel_migration.tenant_id,
            pg_catalog.jsonb_build_array(cancel_migration.tenant_id, cancel_migration.subscription_id));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('cancel_migration', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('cancel_migration', '{subscription_id}', ARRAY[subscription_id IS NULL]);
    PERFORM subscription.require_renewal_run('cancel_migration', subscription.now());
    SELECT * INTO s FROM subscription.subscription AS x WHERE x.tenant_id = cancel_migration.tenant_id AND x.id = cancel_migration.subscription_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    IF s.migrate_to IS NULL THEN
        RAISE EXCEPTION 'subscription % has no pending migration', subscription_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It holds version %s of plan "%s".', s.plan_version, s.plan);
    END IF;
    UPDATE subscription.subscription AS x
       SET migrate_to = NULL, migrate_version = NULL, migrate_at = NULL, migrate_trim = NULL
     WHERE x.tenant_id = cancel_migration.tenant_id AND x.id = s.id;
END
$$;

COMMENT ON FUNCTION subscription.cancel_migration(bigint, bigint) IS
'Cancel a subscription''s pending migration: it keeps the plan version it holds (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- The keyed forms (docs/design.md#keyed-forms): the same code, given the
-- tenant first; the unkeyed forms look it up (src/licenses.c).
CREATE FUNCTION subscription.license_consume(tenant_id bigint, subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_consume'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.license_consume(bigint, bigint, bigint) IS
'Assign one license of the subscription to the member; returns the licenses left (R11, Z4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.license_release(tenant_id bigint, subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_release'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.license_release(bigint, bigint, bigint) IS
'Take the member''s license of the subscription back; returns the licenses left (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- The keyed form (docs/design.md#keyed-forms): the same code, given the
-- tenant first.
CREATE FUNCTION subscription.apply_downgrade(tenant_id bigint, subscription_id bigint, dry_run boolean)
RETURNS TABLE (feature text, relation regclass, action text, row_id text, old_value bigint, new_value bigint)
AS 'MODULE_PATHNAME', 'apply_downgrade'
LANGUAGE C VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.apply_downgrade(bigint, bigint, boolean) IS
'Apply the pending downgrade and trim the account''s registered tables to the new limits; dry_run previews it (C4-C12) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- PUBLIC executes none of the keyed forms; the roles already given rights get
-- theirs (role_rights names functions, so a keyed form has its unkeyed
-- form's rights)
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA subscription FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- ---------------------------------------------------------------------------
-- Renewals per tenant (issue 17, item 4): renew_account(tenant_id, at)
-- renews one tenant's due subscriptions, every statement naming the
-- tenant (a distributed function on Citus); renew_due, run_renewals and
-- renew_local_tenants (pg_cron on every node) drive it by tenant batches.
-- The renewal's own statements name the tenant too.
-- ---------------------------------------------------------------------------
DROP FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint, bigint[]);

COMMENT ON FUNCTION subscription.next_terms(subscription.subscription) IS
'Internal: the plan, cycle, quantity (L7: from the use on a ''from_usage'' product) and renewal option of a subscription''s next period';

CREATE FUNCTION subscription.renew_account(tenant_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bigint := renew_account.tenant_id;
    s subscription.subscription;
    n subscription.period_terms;
    status text;
    problem text;
    may_trim boolean;
    most integer;
    renewed integer;
    handled integer := 0;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.renew_account(bigint,timestamptz)', renew_account.tenant_id,
            pg_catalog.jsonb_build_array(renew_account.tenant_id, renew_account.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('renew_account', '{tenant_id,at}', ARRAY[t IS NULL, at IS NULL]);
    PERFORM subscription.require_renewal_run('renew_account', at);
    -- read once the checks (C) have loaded the module that defines it
    most := current_setting('subscription.max_catchup')::integer;
    -- the tenant's lock: its root account's row, on the node of its shards
    -- (on Citus, the coordinator's renew_due and each node's
    -- renew_local_tenants meet there)
    PERFORM FROM subscription.account AS a WHERE a.tenant_id = t AND a.id = t FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT FROM subscription.account AS a WHERE a.tenant_id = t AND a.id = t) THEN
            RAISE EXCEPTION 'tenant % does not exist', t
                USING ERRCODE = 'no_data_found',
                      HINT = 'A tenant is a root account: its id is the tenant_id of its sub-accounts and of everything they hold.';
        END IF;
        RAISE DEBUG 'tenant % is being renewed by another session', t;
        RETURN 0;
    END IF;
    FOR s IN
        SELECT * FROM subscription.subscription AS x
         WHERE x.tenant_id = t AND x.status IN ('active', 'trialing') AND upper(x.period) <= at
         ORDER BY upper(x.period), x.id
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        renewed := 0;
        LOOP
            -- issue 19: a pause ends at its resume_at (its period ends
            -- there while paused), a trial at its end
            IF s.paused_at IS NOT NULL THEN
                s := subscription.unpause(s, s.resume_at);
                EXIT WHEN upper(s.period) > at;
            END IF;
            IF s.status = 'trialing' THEN
                s := subscription.end_trial(s);
                EXIT WHEN s.status <> 'active';
            END IF;
            -- the next period's terms, asked once (issue 15, fold 8; L7)
            n := subscription.next_terms(s);
            problem := subscription.renewal_problem(s, n);
            -- asked before anything moves: the batches it ends are part of the answer
            may_trim := problem IS NULL AND subscription.renewal_may_trim(s, n);
            IF may_trim THEN
                -- only here can the renewal be refused after writing: a subtransaction
                BEGIN
                    status := subscription.renew_period(s, n, true);
                EXCEPTION WHEN check_violation THEN
                    problem := SQLERRM;
                WHEN OTHERS THEN
                    -- the trim ran the account's own triggers: whatever they
                    -- raise holds back this renewal only, never the others'
                    -- (a lost race is still the caller's to retry)
                    IF SQLSTATE LIKE '40%' THEN
                        RAISE;
                    END IF;
                    problem := format('its trimming failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
                END;
            ELSIF problem IS NULL THEN
                status := subscription.renew_period(s, n, false);
            END IF;
            IF problem IS NOT NULL THEN
                RAISE WARNING 'subscription % was not renewed: %', s.id, problem
                    USING DETAIL = 'It stays due; renew_due() tries again on its next run.';
                EXIT;
            END IF;
            EXIT WHEN status <> 'active';
            SELECT * INTO s FROM subscription.subscription AS x WHERE x.tenant_id = t AND x.id = s.id;
            EXIT WHEN upper(s.period) > at;
            renewed := renewed + 1;
            IF renewed >= most THEN
                RAISE WARNING 'subscription % caught up % periods, the most of one call', s.id, renewed
                    USING DETAIL = format('It stays due from %s; the next renewal run goes on from there.', upper(s.period)),
                          HINT = 'subscription.max_catchup sets how many periods one call catches up.';
                EXIT;
            END IF;
        END LOOP;
        IF problem IS NULL THEN
            handled := handled + 1;
        END IF;
    END LOOP;
    RETURN handled;
END
$$;

CREATE FUNCTION subscription.renew_batch(
    at timestamptz, batch_size integer, after_end timestamptz, after_id bigint, skip bigint[], shard bigint,
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint, OUT left_due bigint[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    t bigint;
    common record;
    single boolean := shard IS NULL AND subscription.local_subscription_shards() = '{NULL}';
BEGIN
    handled := 0;
    left_due := '{}';
    EXECUTE format(
        $q$WITH d AS (SELECT x.tenant_id, upper(x.period) AS e, x.id
                        FROM %s AS x
                       WHERE x.status IN ('active', 'trialing') AND upper(x.period) <= $1
                         AND (upper(x.period), x.id) > ($2, $3) AND NOT x.id = ANY ($4)
                       ORDER BY upper(x.period), x.id
                       LIMIT $5),
              k AS (SELECT d.*, row_number() OVER (ORDER BY d.e, d.id) AS k FROM d)
           SELECT (SELECT count(*) FROM k)::integer,
                  coalesce((SELECT k.e FROM k ORDER BY k.k DESC LIMIT 1), $2),
                  coalesce((SELECT k.id FROM k ORDER BY k.k DESC LIMIT 1), $3),
                  (SELECT array_agg(f.tenant_id ORDER BY f.first)
                     FROM (SELECT k.tenant_id, min(k.k) AS first FROM k GROUP BY k.tenant_id) AS f)$q$,
        CASE WHEN shard IS NULL THEN 'subscription.subscription'
             ELSE subscription.subscription_shard(shard) END)
      INTO taken, last_end, last_id, tenants
      USING at, after_end, after_id, skip, batch_size;
    IF single THEN
        common := subscription.renew_common(coalesce(tenants, '{}'), at);
        handled := common.handled;
        -- the tenants renew_account had
        tenants := common.rest;
    END IF;
    FOREACH t IN ARRAY coalesce(tenants, '{}') LOOP
        IF NOT single THEN
            handled := handled + subscription.renew_account(t, at);
        END IF;
        left_due := left_due || ARRAY(SELECT x.id FROM subscription.subscription AS x
                                       WHERE x.tenant_id = t AND x.status IN ('active', 'trialing')
                                         AND upper(x.period) <= at);
    END LOOP;
END
$$;

CREATE FUNCTION subscription.subscription_shard(shard bigint)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (shard = ANY (subscription.local_subscription_shards())) IS NOT TRUE THEN
        RAISE EXCEPTION 'shard % is not a shard of subscription.subscription on this node', shard
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN shard_name('subscription.subscription'::regclass, shard);
END
$$;

COMMENT ON FUNCTION subscription.subscription_shard(bigint) IS
'Internal: the name of a shard of subscription.subscription that this node holds (Citus)';

CREATE FUNCTION subscription.local_subscription_shards()
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shards bigint[];
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN '{NULL}';
    END IF;
    EXECUTE $q$SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
                                         WHERE p.logicalrelid = 'subscription.subscription'::regclass)
                           THEN ARRAY(SELECT s.shardid
                                        FROM pg_catalog.pg_dist_shard AS s
                                        JOIN pg_catalog.pg_dist_placement AS pl ON pl.shardid = s.shardid
                                       WHERE s.logicalrelid = 'subscription.subscription'::regclass
                                         AND pl.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group AS g)
                                       ORDER BY s.shardid)
                           ELSE '{NULL}' END$q$
      INTO shards;
    RETURN shards;
END
$$;

COMMENT ON FUNCTION subscription.local_subscription_shards() IS
'Internal: the shards of subscription.subscription on this node (Citus); {NULL} (the whole table) without Citus';

CREATE OR REPLACE FUNCTION subscription.renew_due(at timestamptz DEFAULT subscription.now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b record;
    total integer := 0;
    next_notice integer := 10000;
    after_end timestamptz := '-infinity';
    after_id bigint := 0;
    skip bigint[] := '{}';
BEGIN
    PERFORM subscription.require_arguments('renew_due', '{at}', ARRAY[at IS NULL]);
    PERFORM subscription.require_renewal_run('renew_due', at);
    LOOP
        b := subscription.renew_batch(at, 500, after_end, after_id, skip, NULL);
        EXIT WHEN b.taken = 0;
        skip := skip || b.left_due;
        total := total + b.handled;
        IF total >= next_notice THEN
            RAISE NOTICE 'renew_due: % subscriptions handled', total;
            next_notice := next_notice + 10000;
        END IF;
        after_end := b.last_end;
        after_id := b.last_id;
    END LOOP;
    RETURN total;
END
$$;

COMMENT ON FUNCTION subscription.renew_due(timestamptz) IS 'Renew, expire or cancel every subscription due by a time, catching up missed periods; back-office work';

CREATE PROCEDURE subscription.renew_in_batches(fn text, at timestamptz, batch_size integer, shards bigint[])
LANGUAGE plpgsql
AS $$
DECLARE
    b record;
    total bigint := 0;
    after_end timestamptz;
    after_id bigint;
    skip bigint[];
    shard bigint;
BEGIN
    PERFORM subscription.require_renewal_run(fn, at);
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH shard IN ARRAY shards LOOP
        after_end := '-infinity';
        after_id := 0;
        skip := '{}';
        LOOP
            b := subscription.renew_batch(at, batch_size, after_end, after_id, skip, shard);
            COMMIT;
            EXIT WHEN b.taken OPERATOR(pg_catalog.=) 0;
            skip := skip OPERATOR(pg_catalog.||) b.left_due;
            total := total OPERATOR(pg_catalog.+) b.handled;
            after_end := b.last_end;
            after_id := b.last_id;
            RAISE NOTICE '%: % subscriptions handled', fn, total;
        END LOOP;
    END LOOP;
END
$$;

COMMENT ON PROCEDURE subscription.renew_in_batches(text, timestamptz, integer, bigint[]) IS
'Internal: the committed tenant batches of run_renewals and renew_local_tenants';

CREATE OR REPLACE PROCEDURE subscription.run_renewals(at timestamptz DEFAULT subscription.now(), batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM subscription.require_arguments('run_renewals', '{at,batch_size}', ARRAY[at IS NULL, batch_size IS NULL]);
    CALL subscription.renew_in_batches('run_renewals', at, batch_size, '{NULL}');
END
$$;

COMMENT ON PROCEDURE subscription.run_renewals(timestamptz, integer) IS 'renew_due in committed batches, for large runs; CALL it outside a transaction block';

CREATE PROCEDURE subscription.renew_local_tenants(at timestamptz DEFAULT subscription.now(), batch integer DEFAULT 100)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM subscription.require_arguments('renew_local_tenants', '{at,batch}', ARRAY[at IS NULL, batch IS NULL]);
    CALL subscription.renew_in_batches('renew_local_tenants', at, batch, subscription.local_subscription_shards());
END
$$;

COMMENT ON PROCEDURE subscription.renew_local_tenants(timestamptz, integer) IS
'Renew the due tenants whose shards are on this node (Citus; every tenant on a single server), in committed batches, for pg_cron; CALL it outside a transaction block';

-- PUBLIC executes nothing (99_public.sql); the roles granted get the new routines
REVOKE ALL ON FUNCTION subscription.renew_account(bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint, bigint[], bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.subscription_shard(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.local_subscription_shards() FROM PUBLIC;
REVOKE ALL ON PROCEDURE subscription.renew_in_batches(text, timestamptz, integer, bigint[]) FROM PUBLIC;
REVOKE ALL ON PROCEDURE subscription.renew_local_tenants(timestamptz, integer) FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;

-- ---------------------------------------------------------------------------
-- Catalog triggers without cross-node row locks, and limit changes without
-- a fan-out UPDATE (issue 17, item 3): the catalog's rules serialize by
-- advisory transaction locks (lock_catalog), every catalog row a limit is
-- computed from is stamped (the catalog's limit version), each usage
-- counter stores the version its limit was computed at (limit_version,
-- added at the end of usage_counter), and the guard recomputes a limit
-- whose version moved (counter_limit); on a single server the catalog
-- triggers still refresh each account concerned, per tenant
-- (refresh_account_limits).
-- ---------------------------------------------------------------------------
ALTER TABLE subscription.plan ADD COLUMN limit_stamp bigint NOT NULL DEFAULT 0;
ALTER TABLE subscription.plan_limit ADD COLUMN limit_stamp bigint NOT NULL DEFAULT 0;
ALTER TABLE subscription.addon ADD COLUMN limit_stamp bigint NOT NULL DEFAULT 0;
ALTER TABLE subscription.suite_component ADD COLUMN limit_stamp bigint NOT NULL DEFAULT 0;

-- The catalog's limit version limit_value was computed at (issue 17): the
-- guard recomputes a limit whose version is not the catalog's
-- (counter_limit), so that a catalog change needs no write to the counters.
-- Added after the table (the tenant key's rework changes its definition).
ALTER TABLE subscription.usage_counter ADD COLUMN limit_version bigint[];

CREATE FUNCTION subscription.lock_catalog(name text, shared boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF shared THEN
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtextextended('subscription ' || name, 0));
    ELSE
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('subscription ' || name, 0));
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION subscription.check_plan_price_tiering()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- serialize concurrent price writes of the same plan (no row lock: issue 17)
    PERFORM subscription.lock_catalog('plan ' || NEW.plan, false);
    PERFORM FROM subscription.plan_price AS pp
     WHERE pp.plan = NEW.plan
       AND (pp.tier IS NULL) <> (NEW.tier IS NULL);
    IF FOUND THEN
        RAISE EXCEPTION 'plan "%" cannot mix tiered and untiered prices', NEW.plan
            USING ERRCODE = 'check_violation',
                  DETAIL = CASE WHEN NEW.tier IS NULL
                                THEN 'Its other prices name tiers; this one does not.'
                                ELSE 'Its other prices name no tier; this one names tier ' || NEW.tier || '.' END,
                  HINT = 'Give every price of a tiered plan a tier, or none.',
                  TABLE = 'plan_price', SCHEMA = 'subscription';
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.check_plan_price_tiering() IS 'Trigger: a plan''s prices all name a tier, or none does (L12)';

COMMENT ON FUNCTION subscription.version_catalog_row() IS
'Trigger: a price or limit that subscriptions hold changes by a new plan version; the old row is kept and closed (grandfathering)';

COMMENT ON FUNCTION subscription.check_suite_component() IS 'Trigger: a suite includes plans of other products, one per product, and no suite (Z3)';

-- The catalog's limit version (issue 17).  An account's limit of a feature
-- (limit_of) is computed from plan_limit, addon, suite_component and plan;
-- each usage counter stores it with the version of the catalog it was
-- computed from, and the limit guard recomputes it when the catalog's
-- version differs (counter_limit, 40_limits.sql).  The version is
-- (rows, last stamp) over those four tables (limit_catalog_version): every
-- row written gets a new stamp from this sequence, under one advisory lock
-- held to commit, so stamps follow the commit order; a deletion changes
-- the count.  Two different contents never have the same version: the rows
-- of a later content stamped no later than an earlier version's last stamp
-- are rows of that earlier content, unchanged.  No write leaves the row
-- itself, and no row of another table is locked: on Citus each node stamps
-- its own placement, in the same order (its own sequence, kept by pg_dump).
CREATE SEQUENCE subscription.limit_stamp;

COMMENT ON SEQUENCE subscription.limit_stamp IS 'The stamps of the catalog''s limit version (stamp_limit_change)';

CREATE FUNCTION subscription.stamp_limit_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- by column name (jsonb), so that a table whose columns were added in
    -- another order (an upgraded database) stamps the same row alike
    NEW.limit_stamp := pg_catalog.hashtextextended(
        (pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.-) 'limit_stamp'::text)::text, 0);
    RETURN NEW;
END
$$;

-- after version_catalog_row (BEFORE triggers fire in name order): the row
-- it closes is stamped too
CREATE TRIGGER plan_limit_with_stamp
    BEFORE INSERT OR UPDATE ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.stamp_limit_change('plan_limit');
CREATE TRIGGER addon_with_stamp
    BEFORE INSERT OR UPDATE ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.stamp_limit_change('addon');
CREATE TRIGGER suite_component_with_stamp
    BEFORE INSERT OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.stamp_limit_change('suite_component');
-- a suite counts its included plans at their current versions (limit_of)
CREATE TRIGGER plan_with_stamp
    BEFORE UPDATE OF version ON subscription.plan
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION subscription.stamp_limit_change('plan');

-- the stamps of the catalog's limit version (issue 17): restored rows keep
-- theirs, and new stamps come after them
SELECT pg_catalog.pg_extension_config_dump('subscription.limit_stamp', '');

-- (kept: the statements below need limit_catalog_version(); its final text follows
-- in section "Citus: create_account(), distribute()")
CREATE FUNCTION subscription.limit_catalog_version()
RETURNS SETOF bigint[]
LANGUAGE sql STABLE PARALLEL SAFE
-- one row; a set so that it is inlined where it is read (FROM ... AS c
-- (version)): the guard's cached plan reads the catalog, with no call
BEGIN ATOMIC
    SELECT ARRAY[pg_catalog.count(*), coalesce(pg_catalog.max(x.stamp), 0)]
      FROM (SELECT l.limit_stamp FROM subscription.plan_limit AS l
            UNION ALL
            SELECT a.limit_stamp FROM subscription.addon AS a
            UNION ALL
            SELECT sc.limit_stamp FROM subscription.suite_component AS sc
            UNION ALL
            SELECT p.limit_stamp FROM subscription.plan AS p) AS x (stamp);
END;

CREATE FUNCTION subscription.counter_limit(account_id bigint, feature text, stored bigint,
                                           stored_version bigint[], catalog_version bigint[])
RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN stored_version OPERATOR(pg_catalog.=) catalog_version THEN stored
            ELSE subscription.limit_of(account_id, feature) END;

COMMENT ON FUNCTION subscription.counter_limit(bigint, text, bigint, bigint[], bigint[]) IS
'Internal: a usage counter''s limit, stored or recomputed when the catalog''s limit version moved';

CREATE FUNCTION subscription.refresh_account_limits(account_id bigint, feature text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE subscription.usage_counter AS u
       SET limit_value = subscription.limit_of(u.account_id, u.feature)
     WHERE u.account_id = refresh_account_limits.account_id
       AND (refresh_account_limits.feature IS NULL OR u.feature = refresh_account_limits.feature)
       AND u.limit_value IS DISTINCT FROM subscription.limit_of(u.account_id, u.feature);
END
$$;

COMMENT ON FUNCTION subscription.refresh_account_limits(bigint, text) IS
'Internal: one account''s stored limits (of a feature, or all) follow what they are computed from';

COMMENT ON FUNCTION subscription.migration_candidates(text, text, text, timestamptz, interval) IS
'Internal: the subscriptions a migration moves, when, and to which version';

-- PUBLIC executes none of the new functions; the roles given their rights
-- before get the new ones of their kind (and the new sequence to read)
REVOKE ALL ON FUNCTION subscription.lock_catalog(text, boolean), subscription.stamp_limit_change(),
    subscription.limit_catalog_version(), subscription.counter_limit(bigint, text, bigint, bigint[], bigint[]),
    subscription.refresh_account_limits(bigint, text) FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- Citus: the seat path and the money it writes on the coordinator (issue 17) --
-- subscribe, the members' default licenses, license_consume and
-- license_release, set_quantity, purchase_addon and cancel run on Citus:
-- every statement they and their triggers run names the tenant (keyed
-- helpers: require_terms, license_capacity, limit_of,
-- refresh_account_limits, subscription_for_change, coupon_discount,
-- credit_balance), none joins a reference table in a correlated subquery
-- or takes a column in a STABLE function of an UPDATE.

DROP FUNCTION subscription.refresh_account_limits(bigint, text);
CREATE FUNCTION subscription.require_terms(tenant_id bigint, account_id bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t subscription.terms;
    in_effect_at timestamptz;
BEGIN
    t := subscription.terms_in_effect(at);
    IF t.version IS NULL THEN
        RETURN;
    END IF;
    -- a scalar, and the tenant named: Citus takes no composite variable
    -- in a query, and runs it on the tenant's shard alone (issue 17)
    in_effect_at := t.effective_at;
    IF EXISTS (SELECT FROM subscription.terms_acceptance AS a
                 JOIN subscription.terms AS y ON y.version = a.version
                WHERE a.tenant_id = require_terms.tenant_id AND a.account_id = require_terms.account_id
                  AND y.effective_at >= in_effect_at) THEN
        RETURN;
    END IF;
    RAISE EXCEPTION 'account % has not accepted the terms in effect', account_id
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = format('Terms version "%s" is in effect%s.', t.version,
                              coalesce(format(' (%s)', t.url), '')),
              HINT = format('Once the account accepts them, call subscription.accept_terms(%s, %L).',
                            account_id, t.version);
END
$$;

COMMENT ON FUNCTION subscription.require_terms(bigint, bigint, timestamptz) IS
'Internal: 55000 unless the account accepted the terms version in effect at a time, or a later one (Z11) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.require_terms(bigint, timestamptz) IS
'Internal: 55000 unless the account accepted the terms version in effect at a time, or a later one (Z11)';

CREATE FUNCTION subscription.license_capacity(tenant_id bigint, subscription_id bigint)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT s.quantity OPERATOR(pg_catalog.+) coalesce(
               (SELECT sum(b.quantity::bigint OPERATOR(pg_catalog.*) a.units)
                  FROM subscription.addon_batch AS b
                  JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon
                 WHERE b.tenant_id OPERATOR(pg_catalog.=) license_capacity.tenant_id
                   AND b.subscription_id OPERATOR(pg_catalog.=) license_capacity.subscription_id
                   AND b.status OPERATOR(pg_catalog.=) 'active'
                   AND a.feature OPERATOR(pg_catalog.=) 'licenses'), 0)::integer
          FROM subscription.subscription AS s
         WHERE s.tenant_id OPERATOR(pg_catalog.=) license_capacity.tenant_id
           AND s.id OPERATOR(pg_catalog.=) license_capacity.subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.license_capacity(bigint, bigint) IS
'Licenses a subscription may assign: its quantity plus license add-ons (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.license_capacity(subscription_id bigint)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
RETURN subscription.license_capacity(subscription.tenant_of('subscription', license_capacity.subscription_id),
                                     license_capacity.subscription_id);

COMMENT ON FUNCTION subscription.license_capacity(bigint) IS 'Licenses a subscription may assign: its quantity plus license add-ons';

COMMENT ON FUNCTION subscription.set_quantity(bigint, bigint, integer, timestamptz) IS
'Change the licenses now: more are charged for the rest of the period, fewer refund nothing (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- (kept: the statements below need limit_of(); its final text follows
-- in section "Citus: create_account(), distribute()")
CREATE FUNCTION subscription.limit_of(tenant_id bigint, account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
    SELECT CASE WHEN bool_or(x.unlimited) THEN NULL
                -- numeric, so that an overflow is an error, not a wrap
                ELSE coalesce(sum(x.units), 0)::bigint END
      FROM (SELECT l.value IS NULL AS unlimited,
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
                ON l.plan = p.plan AND l.feature = limit_of.feature
               -- the version of the plan the subscription holds (grandfathering)
               AND l.versions @> p.version
             WHERE s.tenant_id = limit_of.tenant_id AND s.account_id = limit_of.account_id
               AND s.status = 'active'
            UNION ALL
            SELECT false, b.quantity::numeric * a.units
              FROM subscription.subscription AS s
              JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id
              JOIN subscription.addon AS a ON a.code = b.addon
             WHERE s.tenant_id = limit_of.tenant_id AND s.account_id = limit_of.account_id
               AND s.status = 'active'
               AND b.status = 'active'
               AND a.feature = limit_of.feature) AS x);
END
$$;

COMMENT ON FUNCTION subscription.limit_of(bigint, text) IS 'Internal: the account''s limit of a feature, unchecked (effective_limit checks)';

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

CREATE FUNCTION subscription.subscription_for_change(tenant_id bigint, fn text, subscription_id bigint, action text)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- the tenant named: on Citus the row is locked on its shard (issue 17)
    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.tenant_id = subscription_for_change.tenant_id AND x.id = subscription_for_change.subscription_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(subscription_for_change.tenant_id, s.account_id, action, false);
    IF s.status <> 'active' THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s() changes active subscriptions only.', fn);
    END IF;
    -- issue 19: a paused subscription changes nothing until it is resumed
    IF s.paused_at IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is paused', subscription_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s() changes subscriptions that are not paused only.', fn),
                  HINT = format('Resume it first: subscription.resume(%s).', subscription_id);
    END IF;
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION subscription.subscription_for_change(fn text, subscription_id bigint, action text)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.subscription_for_change(subscription.tenant_of('subscription', subscription_for_change.subscription_id),
                                                subscription_for_change.fn, subscription_for_change.subscription_id,
                                                subscription_for_change.action);
END
$$;

COMMENT ON FUNCTION subscription.subscription_for_change(text, bigint, text) IS 'Internal: the subscription locked for a change, the actor''s right checked';

COMMENT ON FUNCTION subscription.cancel(bigint, bigint) IS
'Cancel at the end of the period (Z8); returns when it ends (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.coupon_discount(tenant_id bigint, subscription_id bigint, amount numeric, currency text)
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
-- renewal_notice shows the coupon's discount to its reader
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, its read naming the tenant: on Citus it runs on the
    -- tenant's shard, from the ledger's trigger too (issue 17)
    RETURN coalesce((
        SELECT subscription.round_money(
                   CASE WHEN c.percent_off IS NOT NULL
                        THEN coupon_discount.amount * c.percent_off / 100
                        ELSE least(c.amount_off, coupon_discount.amount) END, coupon_discount.currency)
          FROM subscription.subscription AS s
          JOIN subscription.coupon AS c ON c.code = s.coupon
         WHERE s.tenant_id = coupon_discount.tenant_id AND s.id = coupon_discount.subscription_id
           AND (s.coupon_periods_left IS NULL OR s.coupon_periods_left > 0)), 0);
END
$$;

COMMENT ON FUNCTION subscription.coupon_discount(bigint, bigint, numeric, text) IS
'What the subscription''s coupon takes off a plan charge, rounded once (Z10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.coupon_discount(subscription_id bigint, amount numeric, currency text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
SECURITY DEFINER
RETURN subscription.coupon_discount(subscription.tenant_of('subscription', coupon_discount.subscription_id),
                                    coupon_discount.subscription_id, coupon_discount.amount, coupon_discount.currency);

COMMENT ON FUNCTION subscription.coupon_discount(bigint, numeric, text) IS 'What the subscription''s coupon takes off a plan charge, rounded once (Z10)';

CREATE FUNCTION subscription.credit_balance(tenant_id bigint, account_id bigint, currency text)
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.authorize(credit_balance.tenant_id, credit_balance.account_id, 'read', false);
    RETURN (SELECT coalesce(sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE -l.amount END), 0)
              FROM subscription.ledger AS l
             WHERE l.tenant_id = credit_balance.tenant_id
               AND l.account_id = credit_balance.account_id
               AND l.currency = credit_balance.currency
               AND l.kind = ANY ('{credit,credit_used}'));
END
$$;

CREATE OR REPLACE FUNCTION subscription.credit_balance(account_id bigint, currency text DEFAULT 'EUR')
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.credit_balance(subscription.tenant_of('account', credit_balance.account_id),
                                       credit_balance.account_id, credit_balance.currency);
END
$$;

COMMENT ON FUNCTION subscription.credit_balance(bigint, text) IS 'The account''s credit not used yet, in a currency (L10)';

COMMENT ON FUNCTION subscription.reduce_charge() IS 'Trigger: a coupon''s discount and the account''s credit on every charge line';

COMMENT ON FUNCTION subscription.purchase_addon(bigint, bigint, text, integer, timestamptz) IS
'Buy add-on units for the rest of the period, or once (K1-K3, Z6) (keyed form: the tenant first, docs/design.md#keyed-forms)';

REVOKE ALL ON FUNCTION subscription.require_terms(bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.license_capacity(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.refresh_account_limits(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.subscription_for_change(bigint, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.coupon_discount(bigint, bigint, numeric, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.credit_balance(bigint, bigint, text) FROM PUBLIC;

-- Catalog limit versions on Citus (issue 17, item 3) ----------------------
-- A catalog row's limit stamp is a hash of its content, the same on every
-- node, and the catalog's version (rows, exclusive or of the stamps): a
-- limit change made on the coordinator reaches the guards on the workers,
-- which compare it.  The stamps' sequence goes.

COMMENT ON FUNCTION subscription.stamp_limit_change() IS
'Trigger: a catalog row a limit is computed from is stamped with a hash of its content, for the catalog''s limit version';

ALTER EXTENSION subscription DROP SEQUENCE subscription.limit_stamp;
DROP SEQUENCE subscription.limit_stamp;

COMMENT ON FUNCTION subscription.lock_catalog(text, boolean) IS
'Internal: the advisory transaction lock that serializes the writers of a part of the catalog (''plan <code>'')';

COMMENT ON FUNCTION subscription.limit_catalog_version() IS
'Internal: the catalog''s limit version (rows, exclusive or of their stamps) of the tables limit_of() reads';

-- Citus: the remaining writing functions and apply_downgrade (issue 17) --
-- change_plan, change_cycle, end_early, cancel_addon (and set_renewal,
-- cancel_account, bundle_into_suite) name the tenant in every statement
-- they and their helpers run: keyed forms of require_account,
-- actor_refusal, authorize and unpriced_addons (a PL/pgSQL function now:
-- Citus plans no SQL function's parameters); give_back_unused reads and
-- writes the ledger by the tenant.  apply_downgrade's statements
-- (src/downgrade.c) name it too.

CREATE FUNCTION subscription.require_account(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the tenant named: one shard on Citus (issue 17)
    PERFORM FROM subscription.account AS a
     WHERE a.tenant_id = require_account.tenant_id AND a.id = require_account.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_account(bigint, bigint) IS
'Internal: P0002 unless the account exists (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.actor_refusal(tenant_id bigint, account_id bigint, action text, monthly boolean)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor text := current_setting('subscription.actor', true);
    who record;
BEGIN
    IF NOT subscription.actor_named() THEN
        RETURN CASE WHEN subscription.caller_is_trusted() THEN NULL ELSE 'is not named' END;
    END IF;
    -- the tenant named: one shard on Citus (issue 17); an actor of another
    -- tenant is looked up by its id alone, on the way to a refusal only
    SELECT m.id, m.account_id, m.role, m.rights, a.parent_id INTO who
      FROM subscription.member AS m
      JOIN subscription.account AS a ON a.tenant_id = m.tenant_id AND a.id = m.account_id
     WHERE m.tenant_id = actor_refusal.tenant_id AND m.id::text = actor;
    IF NOT FOUND THEN
        SELECT m.id, m.account_id, m.role, m.rights, NULL::bigint AS parent_id INTO who
          FROM subscription.member AS m WHERE m.id::text = actor;
    END IF;
    IF who.id IS NULL THEN
        RETURN 'is not a member';
    ELSIF who.account_id IS DISTINCT FROM actor_refusal.account_id THEN
        RETURN format('belongs to account %s, not to account %s', who.account_id, actor_refusal.account_id);
    ELSIF who.parent_id IS NOT NULL AND action = ANY ('{purchase,pay,increase_licenses,change_plan}') THEN
        RETURN 'is a member of a sub-account, and only the main account buys and pays (K8)';
    ELSIF who.role = 'owner' THEN
        RETURN NULL;
    ELSIF who.role = 'admin' AND (
            action = ANY ('{read,assign_licenses,set_default}')
            OR action = ANY (who.rights)
            OR (action = 'decrease_licenses' AND monthly AND 'decrease_monthly_licenses' = ANY (who.rights))) THEN
        RETURN NULL;
    ELSIF action = ANY ('{increase_licenses,decrease_licenses,change_renewal}') THEN
        RETURN format('is %s %s without the right "%s"',
                      CASE who.role WHEN 'admin' THEN 'an' ELSE 'a' END, who.role,
                      CASE WHEN action = 'decrease_licenses' AND monthly
                           THEN 'decrease_licenses" or "decrease_monthly_licenses'
                           ELSE action END);
    END IF;
    RETURN format('is %s %s; only the account owner%s may %s',
                  CASE who.role WHEN 'admin' THEN 'an' ELSE 'a' END, who.role,
                  CASE WHEN action = ANY ('{read,assign_licenses,set_default}') THEN ' or an admin' ELSE '' END,
                  replace(action, '_', ' '));
END
$$;

COMMENT ON FUNCTION subscription.actor_refusal(bigint, bigint, text, boolean) IS
'Why the actor may not do an action on an account, or NULL when it may (Z1, R9, K8) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.authorize(tenant_id bigint, account_id bigint, action text, monthly boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor text := current_setting('subscription.actor', true);
    refusal text;
BEGIN
    IF subscription.trusted_without_actor() THEN
        RETURN;
    END IF;
    refusal := subscription.actor_refusal(tenant_id, account_id, action, monthly);
    IF refusal IS NULL THEN
        -- Z2: a managed account's cycle, renewal and cancellations are the
        -- sales representative's
        IF action = ANY ('{change_cycle,change_renewal,cancel}')
           AND EXISTS (SELECT FROM subscription.account AS a
                        WHERE a.tenant_id = authorize.tenant_id AND a.id = authorize.account_id AND a.managed) THEN
            RAISE LOG 'subscription: actor % refused % on managed account %', actor, action, account_id;
            RAISE EXCEPTION 'actor % may not % on managed account %', actor, replace(action, '_', ' '), account_id
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = format('Account %s is managed: its billing cycle, renewal and cancellations are agreed with sales (Z2).',
                                      account_id),
                      HINT = 'A sales representative makes this change, from back-office code without subscription.actor.';
        END IF;
        RETURN;
    END IF;
    -- a refused transaction rolls back, so the refusal cannot stay in history
    RAISE LOG 'subscription: actor % refused % on account %: %', actor, action, account_id, refusal;
    RAISE EXCEPTION 'actor % may not % on account %', actor, replace(action, '_', ' '), account_id
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('Actor %s %s.', actor, refusal),
              HINT = CASE WHEN refusal LIKE '%(K8)'
                          THEN 'The owner of the main account (the sub-account''s parent) can do it.'
                          WHEN action = ANY ('{increase_licenses,decrease_licenses,change_renewal}')
                          THEN 'The account owner can do it, or grant the right in subscription.member.rights.'
                          ELSE 'The account owner can do it.' END;
END
$$;

COMMENT ON FUNCTION subscription.authorize(bigint, bigint, text, boolean) IS
'42501 unless the actor may do the action on the account (Z1, R9, K8, Z2); without an actor, unless the caller is back-office code (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- The add-ons of a subscription that renew with it (active, recurring,
-- not cancelled) and have no price for "cycle", as a list, or NULL
-- (priceless_addons).  In PL/pgSQL, the tenant named: Citus plans neither
-- a SQL function's parameters nor a read of the batches by subscription
-- alone (issue 17).
CREATE FUNCTION subscription.unpriced_addons(tenant_id bigint, subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    batches text[];
BEGIN
    SELECT array_agg(DISTINCT b.addon) INTO batches
      FROM subscription.addon_batch AS b
     WHERE b.tenant_id = unpriced_addons.tenant_id AND b.subscription_id = unpriced_addons.subscription_id
       AND b.status = 'active' AND NOT b.cancel_at_period_end;
    RETURN subscription.priceless_addons(batches, unpriced_addons.cycle);
END
$$;

CREATE OR REPLACE FUNCTION subscription.require_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_account(subscription.tenant_of('account', require_account.account_id),
                                         require_account.account_id);
END
$$;

COMMENT ON FUNCTION subscription.require_account(bigint) IS 'Internal: P0002 unless the account exists';

COMMENT ON FUNCTION subscription.actor_refusal(bigint, text, boolean) IS
'Why the actor may not do an action on an account, or NULL when it may (Z1, R9, K8)';

CREATE OR REPLACE FUNCTION subscription.authorize(account_id bigint, action text, monthly boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- without an actor nothing is read, nor the tenant looked up (a
    -- trigger on a Citus worker reads by the tenant only)
    IF subscription.trusted_without_actor() THEN
        RETURN;
    END IF;
    PERFORM subscription.authorize(subscription.tenant_of('account', authorize.account_id),
                                   authorize.account_id, authorize.action, authorize.monthly);
END
$$;

COMMENT ON FUNCTION subscription.authorize(bigint, text, boolean) IS
'42501 unless the actor may do the action on the account (Z1, R9, K8, Z2); without an actor, unless the caller is back-office code';

CREATE OR REPLACE FUNCTION subscription.unpriced_addons(subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.unpriced_addons(subscription.tenant_of('subscription', unpriced_addons.subscription_id),
                                        unpriced_addons.subscription_id, unpriced_addons.cycle);
END
$$;

COMMENT ON FUNCTION subscription.unpriced_addons(bigint, interval) IS 'Internal: the renewing add-ons of a subscription with no price for a cycle';

CREATE OR REPLACE FUNCTION subscription.give_back_unused(s subscription.subscription, at timestamptz, kind text, reason text)
RETURNS numeric
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total numeric;
    -- scalars, and the tenant named in every read and the write: Citus
    -- takes no composite variable in a query, and runs these on the
    -- tenant's shard group alone (issue 17)
    tenant bigint := s.tenant_id;
    sub bigint := s.id;
    account bigint := s.account_id;
    current_period tstzrange := s.period;
BEGIN
    WITH open_charges AS (
        SELECT c.id, c.currency, c.period, c.plan, c.item,
               c.amount - coalesce((
                   SELECT sum(d.amount) FROM subscription.ledger AS d
                    WHERE d.tenant_id = tenant AND d.charge_id = c.id
                      AND d.kind = 'discount'), 0) AS paid
          FROM subscription.ledger AS c
         WHERE c.tenant_id = tenant AND c.subscription_id = sub
           AND c.kind = 'charge'
           AND c.addon_batch_id IS NULL
           AND c.period && current_period
           AND NOT EXISTS (SELECT FROM subscription.ledger AS r
                            WHERE r.tenant_id = tenant AND r.charge_id = c.id
                              AND r.kind = ANY ('{refund,credit}'))),
    given AS (
        INSERT INTO subscription.ledger AS l
               (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, charge_id, description)
        SELECT tenant, account, sub, give_back_unused.kind,
               subscription.unused_part(o.paid, o.period, at, o.currency),
               o.currency, tstzrange(at, upper(o.period), '[)'), o.item, o.plan, o.id,
               format('%s: unused part of charge %s (plan %s)', reason, o.id, o.plan)
          FROM open_charges AS o
         WHERE o.paid > 0 AND at < upper(o.period)
        RETURNING l.amount)
    SELECT coalesce(sum(g.amount), 0) INTO total FROM given AS g;
    RETURN total;
END
$$;

COMMENT ON FUNCTION subscription.give_back_unused(subscription.subscription, timestamptz, text, text) IS 'Internal: refund or credit the unused part of the period''s open charges, once per charge';

COMMENT ON FUNCTION subscription.bundle_into_suite(bigint, bigint, text, integer, timestamptz) IS
'Move the account''s separate subscriptions of a suite''s products into one suite subscription, their unused days credited (Z3, L9) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.change_cycle(bigint, bigint, interval) IS
'A new billing cycle from the next period (Z7); returns when it takes effect (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.set_renewal(bigint, bigint, text) IS
'The renewal option: none, once, always, to_monthly (R6) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.cancel_account(bigint, bigint) IS
'Cancel every active subscription of the account, each at its period end (Z8) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.credit_balance(bigint, bigint, text) IS
'The account''s credit not used yet, in a currency (L10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.cancel_addon(bigint, bigint) IS
'End an add-on batch with the period (K4, K5); returns when it ends (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.enforce_limit(
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
        IF (SELECT cardinality(c.conkey) FROM pg_catalog.pg_constraint AS c
             WHERE c.conrelid = relation AND c.contype = 'p')
           IS DISTINCT FROM 1 THEN
            RAISE EXCEPTION 'policy keep_most_referenced needs a single-column primary key on %', relation
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

REVOKE ALL ON FUNCTION subscription.require_account(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.actor_refusal(bigint, bigint, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.authorize(bigint, bigint, text, boolean) FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;

-- The outbox of billing events and its consumers (issue 20, docs/integrating.md) --
-- The outbox (issue 20, docs/integrating.md): one row per billing event,
-- written in the transaction of the change by write_event(), and the
-- position of each consumer that reads it (claim_events, ack_events).

-- An event of an account: a tenant table (docs/design.md#tenant-keys).
-- next_xid: the next transaction id when the id was taken (events.c): an
-- event is handed out once every transaction below it has ended.
CREATE TABLE subscription.event (
    id              bigint GENERATED BY DEFAULT AS IDENTITY,
    type            text NOT NULL,
    account_id      bigint,
    subscription_id bigint,
    payload         jsonb NOT NULL,
    at              timestamptz NOT NULL,
    next_xid        xid8 NOT NULL,
    tenant_id       bigint NOT NULL,
    CONSTRAINT event_pkey PRIMARY KEY (tenant_id, id)
);
-- claims read across tenants in id order
CREATE INDEX event_id_idx ON subscription.event (id);
-- renewal.upcoming: once per subscription and period (announce_renewals)
CREATE UNIQUE INDEX event_renewal_upcoming_key ON subscription.event (tenant_id, subscription_id, (payload ->> 'renews_at'))
    WHERE type = 'renewal.upcoming';

COMMENT ON TABLE subscription.event IS
'The outbox: billing events, written in the transaction of the change (docs/integrating.md)';
COMMENT ON COLUMN subscription.event.payload IS
'The event''s versioned JSON payload ("version": 1), documented per type in docs/integrating.md';
COMMENT ON COLUMN subscription.event.next_xid IS
'The next transaction id when the event''s id was taken: claim_events() hands it out once no transaction below it runs';

-- Each consumer's position: read across tenants, so not a tenant table.
-- A claim (claimed_up_to) is held until claimed_until or its ack.
CREATE TABLE subscription.event_consumer (
    consumer      text PRIMARY KEY CHECK (consumer <> ''),
    position      bigint NOT NULL DEFAULT 0,
    claimed_up_to bigint,
    claimed_until timestamptz,
    acked_at      timestamptz
);

COMMENT ON TABLE subscription.event_consumer IS
'Each event consumer''s position (the last event it acknowledged) and its claim in flight';

-- The outbox (issue 20, docs/integrating.md): every billing change writes
-- its events in its own transaction.  The events are derived in one place
-- from the history rows (R8) that every change already writes: a row
-- trigger on history maps each operation to its events (history_events),
-- whatever path wrote the row (record_history, the license guard, C).
-- Events without a history row come from announce_renewals (the notice
-- window) and from the trimmed archive (data.trimmed).  Consumers read
-- them with claim_events and ack_events; prune_events deletes what every
-- consumer has acknowledged.

-- Internal (C, events.c): the next transaction id to be assigned, read now.
CREATE FUNCTION subscription.event_next_xid()
RETURNS xid8
AS 'MODULE_PATHNAME', 'event_next_xid'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.event_next_xid() IS
'Internal (C): the next transaction id to be assigned, read at the call (the outbox''s horizon)';

-- The one writer of an event (E1-E3, docs/rules.md):
--   E2, E3: the id is taken before next_xid is read (events.c);
--   NOTIFY subscription_events with the id, sent on commit (not from a
--   Citus worker, docs/citus.md).
-- A renewal.upcoming already written for its period is not written again
-- (NULL).  Only the extension's owner calls it: no role is granted it.
CREATE FUNCTION subscription.write_event(tenant_id bigint, type text, account_id bigint, subscription_id bigint,
                                         payload jsonb, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- the conflict target names the table's columns
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    PERFORM subscription.require_arguments('write_event', '{tenant_id,type,payload,at}',
        ARRAY[write_event.tenant_id IS NULL, write_event.type IS NULL, write_event.payload IS NULL, write_event.at IS NULL]);
    IF jsonb_typeof(write_event.payload -> 'version') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'the payload of an event must carry its version'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The payload was %s.', write_event.payload);
    END IF;
    new_id := pg_catalog.nextval('subscription.event_id_seq');
    INSERT INTO subscription.event AS e (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
    VALUES (new_id, write_event.type, write_event.account_id, write_event.subscription_id, write_event.payload,
            write_event.at, subscription.event_next_xid(), write_event.tenant_id)
    ON CONFLICT (tenant_id, subscription_id, (payload ->> 'renews_at')) WHERE type = 'renewal.upcoming' DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- a Citus worker commits its part of a distributed transaction with
    -- PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll;
    -- and so do they where subscription.notify_events is off
    IF pg_catalog.current_setting('subscription.notify_events', true) IS DISTINCT FROM 'off'
       AND NOT subscription.on_citus_worker() THEN
        PERFORM pg_catalog.pg_notify('subscription_events', new_id::text);
    END IF;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.write_event(bigint, text, bigint, bigint, jsonb, timestamptz) IS
'Internal: write one event in the transaction of the change (E1-E3); the extension''s own functions only';

-- A time in an event's payload: UTC, ISO 8601 with a Z, whatever the
-- session's TimeZone, so that a payload is the same for every reader.
-- STABLE as to_jsonb() is, so that it is inlined where it is called: an
-- IMMUTABLE SQL function over a STABLE one is not, and its body was read
-- and parsed again on each call (about 0.1 ms, three times per event)
CREATE FUNCTION subscription.event_time(t timestamptz)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (pg_catalog.to_jsonb(t AT TIME ZONE 'UTC') OPERATOR(pg_catalog.#>>) '{}') OPERATOR(pg_catalog.||) 'Z';

COMMENT ON FUNCTION subscription.event_time(timestamptz) IS
'Internal: a time as an event payload shows it (UTC, ISO 8601, Z)';

-- The events of a history row (E1): one place for the mapping of an
-- operation to event types and versioned payloads (docs/integrating.md).
-- details is the history row's: the row on insert, {"column": {"old",
-- "new"}} on update, {"members": [...]} for licenses.
-- (kept: the statements below need history_events(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.history_events(operation text, details jsonb)
RETURNS TABLE (type text, payload jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL keeps this statement's plan for the session; a SQL function
    -- with SET planned the whole union again for every history row
    RETURN QUERY
SELECT x.type, pg_catalog.jsonb_build_object('version', 1) OPERATOR(pg_catalog.||) x.payload
  FROM (
    SELECT 'subscription.created', pg_catalog.jsonb_build_object(
               'plan', details -> 'plan', 'cycle', details -> 'cycle', 'quantity', details -> 'quantity',
               'status', details -> 'status', 'renewal', details -> 'renewal',
               'period_start', subscription.event_time(pg_catalog.lower((details OPERATOR(pg_catalog.->>) 'period')::pg_catalog.tstzrange)),
               'period_end', subscription.event_time(pg_catalog.upper((details OPERATOR(pg_catalog.->>) 'period')::pg_catalog.tstzrange)))
     WHERE operation = 'subscription_insert'
    UNION ALL
    SELECT 'subscription.renewed', pg_catalog.jsonb_build_object(
               'period_number', details -> 'period_number' -> 'new',
               'period_start', subscription.event_time(pg_catalog.lower((details -> 'period' OPERATOR(pg_catalog.->>) 'new')::pg_catalog.tstzrange)),
               'period_end', subscription.event_time(pg_catalog.upper((details -> 'period' OPERATOR(pg_catalog.->>) 'new')::pg_catalog.tstzrange)))
     WHERE operation = 'subscription_update'
       AND (details -> 'period_number' OPERATOR(pg_catalog.->>) 'new')::integer
           OPERATOR(pg_catalog.>) (details -> 'period_number' OPERATOR(pg_catalog.->>) 'old')::integer
    UNION ALL
    SELECT 'subscription.plan_changed', pg_catalog.jsonb_build_object(
               'from', details -> 'plan' -> 'old', 'to', details -> 'plan' -> 'new')
     WHERE operation = 'subscription_update' AND details ? 'plan'
    UNION ALL
    SELECT 'subscription.quantity_changed', pg_catalog.jsonb_build_object(
               'from', details -> 'quantity' -> 'old', 'to', details -> 'quantity' -> 'new')
     WHERE operation = 'subscription_update' AND details ? 'quantity'
    UNION ALL
    SELECT 'subscription.' || (details -> 'status' OPERATOR(pg_catalog.->>) 'new'),
           pg_catalog.jsonb_build_object('previous_status', details -> 'status' -> 'old')
     WHERE operation = 'subscription_update'
       AND details -> 'status' OPERATOR(pg_catalog.->>) 'new' IN ('cancelled', 'expired')
    UNION ALL
    -- past due and its end (issue 19, D1, D5)
    SELECT 'subscription.past_due', pg_catalog.jsonb_build_object(
               'invoice_id', details -> 'past_due_invoice_id' -> 'new',
               'since', subscription.event_time((details -> 'past_due_since' OPERATOR(pg_catalog.->>) 'new')::pg_catalog.timestamptz))
     WHERE operation = 'subscription_update'
       AND details -> 'status' OPERATOR(pg_catalog.->>) 'new' = 'past_due'
    UNION ALL
    SELECT 'subscription.past_due_ended', pg_catalog.jsonb_build_object(
               'status', details -> 'status' -> 'new', 'invoice_id', details -> 'past_due_invoice_id' -> 'old')
     WHERE operation = 'subscription_update'
       AND details -> 'status' OPERATOR(pg_catalog.->>) 'old' = 'past_due'
    UNION ALL
    SELECT 'subscription.dunning_step', pg_catalog.jsonb_build_object(
               'invoice_id', details -> 'invoice_id', 'step', details -> 'step', 'steps', details -> 'steps',
               'action', details -> 'action', 'amount', details -> 'due', 'currency', details -> 'currency',
               'step_at', subscription.event_time((details OPERATOR(pg_catalog.->>) 'at')::pg_catalog.timestamptz))
     WHERE operation = 'dunning_step'
    UNION ALL
    SELECT 'addon.purchased', pg_catalog.jsonb_build_object(
               'batch_id', details -> 'id', 'addon', details -> 'addon', 'quantity', details -> 'quantity')
     WHERE operation = 'addon_batch_insert'
    UNION ALL
    SELECT 'addon.ended', pg_catalog.jsonb_build_object(
               'batch_id', details -> 'batch_id', 'status', details -> 'status' -> 'new')
     WHERE operation = 'addon_batch_update'
       AND details -> 'status' OPERATOR(pg_catalog.->>) 'new' IN ('cancelled', 'expired')
    UNION ALL
    SELECT CASE operation WHEN 'license_assign' THEN 'license.assigned' ELSE 'license.released' END,
           pg_catalog.jsonb_build_object('members', details -> 'members')
     WHERE operation IN ('license_assign', 'license_release')
    UNION ALL
    -- invoices and payments (issue 19, I3, I6; the payloads docs/integrating.md reserved)
    SELECT 'invoice.opened', pg_catalog.jsonb_build_object(
               'invoice_id', details -> 'invoice_id', 'issuer', details -> 'issuer', 'number', details -> 'number',
               'currency', details -> 'currency',
               'due_at', subscription.event_time((details OPERATOR(pg_catalog.->>) 'due_at')::pg_catalog.timestamptz),
               'corrects_invoice_id', details -> 'corrects_invoice_id')
     WHERE operation = 'invoice_open'
    UNION ALL
    SELECT 'invoice.' || (details -> 'status' OPERATOR(pg_catalog.->>) 'new'), pg_catalog.jsonb_build_object(
               'invoice_id', details -> 'invoice_id', 'issuer', details -> 'issuer', 'number', details -> 'number',
               'amount', details -> 'total', 'paid', details -> 'paid', 'currency', details -> 'currency',
               (details -> 'status' OPERATOR(pg_catalog.->>) 'new') OPERATOR(pg_catalog.||) '_at',
               subscription.event_time((details OPERATOR(pg_catalog.->>) 'at')::pg_catalog.timestamptz))
     WHERE operation = 'invoice_status'
       AND details -> 'status' OPERATOR(pg_catalog.->>) 'new' IN ('paid', 'void', 'uncollectible')
    UNION ALL
    SELECT 'payment.recorded', pg_catalog.jsonb_build_object(
               'payment_id', details -> 'payment_id', 'invoice_id', details -> 'invoice_id', 'amount', details -> 'amount',
               'currency', details -> 'currency', 'reference', details -> 'reference', 'credited', details -> 'credited')
     WHERE operation = 'payment'
    UNION ALL
    SELECT 'payment.failed', pg_catalog.jsonb_build_object(
               'invoice_id', details -> 'invoice_id', 'amount', details -> 'due', 'currency', details -> 'currency',
               'attempt', details -> 'attempt', 'reason', details -> 'reason')
     WHERE operation = 'payment_failure'
  ) AS x (type, payload);
END
$$;

-- Trigger: the events of each history row, in its transaction (E1).  A
-- restore copies the events with the history: none is written again.
CREATE FUNCTION subscription.history_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e record;
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    FOR e IN SELECT * FROM subscription.history_events(NEW.operation, NEW.details) LOOP
        PERFORM subscription.write_event(NEW.tenant_id, e.type, NEW.account_id, NEW.subscription_id, e.payload, NEW.at);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.history_event() IS
'Trigger: the events of a history row, written in its transaction (E1)';

CREATE TRIGGER history_events AFTER INSERT ON subscription.history
    FOR EACH ROW EXECUTE FUNCTION subscription.history_event();

-- Trigger: data.trimmed, one event per statement of the archive and
-- subscription, with the count of rows per table (E1).
CREATE FUNCTION subscription.trimmed_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e record;
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    FOR e IN SELECT t.tenant_id, t.account_id, t.subscription_id, pg_catalog.max(t.at) AS at,
                    pg_catalog.jsonb_object_agg(t.relation, t.n) AS tables
               FROM (SELECT n.tenant_id, n.account_id, n.subscription_id, n.relation,
                            pg_catalog.max(n.at) AS at, pg_catalog.count(*) AS n
                       FROM new_rows AS n GROUP BY 1, 2, 3, 4) AS t
              GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 LOOP
        PERFORM subscription.write_event(e.tenant_id, 'data.trimmed', e.account_id, e.subscription_id,
                                         pg_catalog.jsonb_build_object('version', 1, 'tables', e.tables), e.at);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.trimmed_event() IS
'Trigger: a data.trimmed event per account and subscription with the rows trimmed per table (E1)';

CREATE TRIGGER trimmed_events AFTER INSERT ON subscription.trimmed
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.trimmed_event();

-- renewal.upcoming (E5): once per subscription and period, when it enters
-- the notice window, that is when it appears in renewal_notice (the one
-- definition of the window).  Idempotent: run it with the renewals, as
-- often as wanted.  Returns how many events it wrote.
-- (kept: the statements below need announce_renewals(); its final text follows
-- in section "Idempotency keys")
CREATE FUNCTION subscription.announce_renewals()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
    written integer := 0;
BEGIN
    FOR n IN SELECT r.*, s.tenant_id
               FROM subscription.renewal_notice AS r
               JOIN subscription.subscription AS s ON s.id = r.subscription_id
              WHERE NOT r.overdue
                AND NOT EXISTS (SELECT FROM subscription.event AS e
                                 WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                   AND e.type = 'renewal.upcoming'
                                   AND e.payload ->> 'renews_at' = subscription.event_time(r.renews_at))
              ORDER BY s.tenant_id, r.account_id, r.subscription_id LOOP
        IF subscription.write_event(n.tenant_id, 'renewal.upcoming', n.account_id, n.subscription_id,
               pg_catalog.jsonb_build_object('version', 1, 'renews_at', subscription.event_time(n.renews_at), 'plan', n.plan,
                   'plan_version', n.plan_version, 'cycle', n.cycle, 'quantity', n.quantity,
                   'amount', n.amount, 'currency', n.currency, 'discount', n.discount, 'credit', n.credit),
               subscription.now()) IS NOT NULL THEN
            written := written + 1;
        END IF;
    END LOOP;
    RETURN written;
END
$$;

-- E4: hand out the next events of a consumer: those after its position
-- whose every earlier id has committed or ended (next_xid below the
-- snapshot's oldest running transaction, events.c), in id order, at most
-- max.  One claim per consumer at a time (E6): a claim in flight (until
-- acknowledged or until its lease ends) or another worker claiming this
-- instant gives nothing.  A new consumer starts at the oldest event.
CREATE FUNCTION subscription.claim_events(consumer text, max integer DEFAULT 100, lease interval DEFAULT '1 minute')
RETURNS SETOF subscription.event
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := claim_events.consumer;
    k subscription.event_consumer;
BEGIN
    PERFORM subscription.require_arguments('claim_events', '{consumer,max,lease}',
                                           ARRAY[c IS NULL, max IS NULL, lease IS NULL]);
    IF c = '' THEN
        RAISE EXCEPTION 'a consumer''s name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max < 1 OR max > 100000 THEN
        RAISE EXCEPTION 'max % is out of range', max
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Claim between 1 and 100000 events at a time.';
    END IF;
    IF lease <= interval '0' THEN
        RAISE EXCEPTION 'lease % is not a positive interval', lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- E6: another worker of the consumer claiming now: nothing for this
    -- one, at once
    SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM subscription.event_consumer AS x WHERE x.consumer = c) THEN
            RETURN;
        END IF;
        -- a new consumer, from the oldest event
        INSERT INTO subscription.event_consumer (consumer) VALUES (c) ON CONFLICT DO NOTHING;
        SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    IF k.claimed_until > pg_catalog.clock_timestamp() THEN  -- wall time: a lease
        RETURN;
    END IF;
    RETURN QUERY
    WITH batch AS (
        SELECT e.* FROM subscription.event AS e
         WHERE e.id > k.position
           AND e.next_xid <= pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())
         ORDER BY e.id
         LIMIT max),
    claim AS (
        UPDATE subscription.event_consumer AS x
           SET claimed_up_to = b.up_to, claimed_until = pg_catalog.clock_timestamp() + lease  -- wall time: a lease
          FROM (SELECT pg_catalog.max(batch.id) AS up_to FROM batch) AS b
         WHERE x.consumer = c AND b.up_to IS NOT NULL)
    SELECT * FROM batch ORDER BY batch.id;
END
$$;

COMMENT ON FUNCTION subscription.claim_events(text, integer, interval) IS
'The consumer''s next events in commit order, at most max, held for it until acknowledged or the lease ends (E4, E6)';

-- Acknowledge a consumer's events up to an id it claimed: its position
-- moves there (never back); the claim ends when all of it is acknowledged.
-- Returns the position.
CREATE FUNCTION subscription.ack_events(consumer text, up_to bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := ack_events.consumer;
    k subscription.event_consumer;
BEGIN
    PERFORM subscription.require_arguments('ack_events', '{consumer,up_to}', ARRAY[c IS NULL, up_to IS NULL]);
    SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event consumer "%" does not exist', c
            USING ERRCODE = 'no_data_found', HINT = 'A consumer exists from its first claim_events().';
    END IF;
    IF up_to <= k.position THEN
        RETURN k.position;
    END IF;
    IF k.claimed_up_to IS NULL OR up_to > k.claimed_up_to THEN
        RAISE EXCEPTION 'event % was not claimed by consumer "%"', up_to, c
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The consumer''s position is %s and its claim ends at %s.',
                                  k.position, coalesce(k.claimed_up_to::text, 'none')),
                  HINT = 'Acknowledge the events claim_events() returned, up to the last one delivered.';
    END IF;
    UPDATE subscription.event_consumer AS x
       SET position = up_to, acked_at = pg_catalog.clock_timestamp(),  -- wall time: when a consumer acknowledged
           claimed_up_to = CASE WHEN up_to < k.claimed_up_to THEN k.claimed_up_to END,
           claimed_until = CASE WHEN up_to < k.claimed_up_to THEN k.claimed_until END
     WHERE x.consumer = c;
    RETURN up_to;
END
$$;

COMMENT ON FUNCTION subscription.ack_events(text, bigint) IS
'Acknowledge a consumer''s claimed events up to an id: its position moves there (E6)';

-- E7: delete the events older than subscription.event_retention that every
-- consumer has acknowledged (with no consumer, every event older than it).
CREATE PROCEDURE subscription.prune_events(INOUT pruned bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    horizon bigint;
BEGIN
    -- loads the module, which defines subscription.event_retention
    PERFORM subscription.event_next_xid();
    SELECT pg_catalog.min(k.position) INTO horizon FROM subscription.event_consumer AS k;
    DELETE FROM subscription.event AS e
     WHERE e.at < subscription.now() - pg_catalog.current_setting('subscription.event_retention')::interval
       AND (horizon IS NULL OR e.id <= horizon);
    GET DIAGNOSTICS pruned = ROW_COUNT;
END
$$;

COMMENT ON PROCEDURE subscription.prune_events(bigint) IS
'Delete the events older than subscription.event_retention that every consumer has acknowledged (E7)';

-- the outbox and its consumers' positions (issue 20)
SELECT pg_catalog.pg_extension_config_dump('subscription.event', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.event_consumer', '');

REVOKE ALL ON FUNCTION subscription.event_next_xid() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.write_event(bigint, text, bigint, bigint, jsonb, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.event_time(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.history_events(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.history_event() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.trimmed_event() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.announce_renewals() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.claim_events(text, integer, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.ack_events(text, bigint) FROM PUBLIC;
REVOKE ALL ON PROCEDURE subscription.prune_events(bigint) FROM PUBLIC;

-- Trials, pause and resume (issue 19) ----------------------------------------
-- Trials: plan_price.trial, product.trial_end, status 'trialing'; pause
-- and resume, keeping access or freezing the account (docs/lifecycle.md).
ALTER TABLE subscription.product ADD COLUMN trial_end text NOT NULL DEFAULT 'convert'
    CHECK (trial_end IN ('convert', 'downgrade', 'expire'));
ALTER TABLE subscription.plan_price ADD COLUMN trial interval CHECK (trial > '0');
ALTER TABLE subscription.subscription DROP CONSTRAINT subscription_status_check;
ALTER TABLE subscription.subscription ADD CONSTRAINT subscription_status_check
    CHECK (status IN ('active', 'trialing', 'cancelled', 'expired'));
ALTER TABLE subscription.subscription
    ADD COLUMN trial_ends timestamptz,
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN resume_at timestamptz,
    ADD COLUMN pause_mode text CHECK (pause_mode IN ('keep_access', 'freeze')),
    ADD COLUMN paused_period_end timestamptz,
    ADD CONSTRAINT subscription_pause_whole
        CHECK (num_nulls(paused_at, pause_mode, paused_period_end) IN (0, 3)
               AND (resume_at IS NULL OR paused_at IS NOT NULL));
-- renew_due walks the due subscriptions, trials too, in this order
DROP INDEX subscription.subscription_upper_id_idx;
CREATE INDEX ON subscription.subscription (upper(period), id) WHERE status IN ('active', 'trialing');

-- The paused subscription that freezes an account (pause(..., mode =>
-- 'freeze'), issue 19), or NULL: while one does, the account's limits are 0
-- (limit_of) and its seat counters closed (assigns_licenses), so that the
-- guards refuse every growing write from the counter rows they already
-- lock, and only their refusals call this to say why (55000, with a HINT to
-- resume).  PL/pgSQL, as Citus plans no statement of a SQL function with
-- parameters.
-- (kept: the statements below need freezing_subscription(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.freezing_subscription(tenant_id bigint, account_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT min(s.id) FROM subscription.subscription AS s
             WHERE s.tenant_id OPERATOR(pg_catalog.=) freezing_subscription.tenant_id
               AND s.account_id OPERATOR(pg_catalog.=) freezing_subscription.account_id
               AND s.pause_mode OPERATOR(pg_catalog.=) 'freeze');
END
$$;

-- Whether a subscription assigns licenses: it is active or trialing, and
-- its account is not frozen.  Its seat counter's "active", which the
-- license guard reads.  Of columns, not of the row: on Citus a trigger on
-- a shard reads rows of the shard's own row type (issue 17).
-- (kept: the statements below need assigns_licenses(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.assigns_licenses(tenant_id bigint, account_id bigint, status text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN assigns_licenses.status IN ('active', 'trialing')
           AND subscription.freezing_subscription(assigns_licenses.tenant_id, assigns_licenses.account_id) IS NULL;
END
$$;

-- The account's stored limits and seat counters follow a freeze or its
-- end: its subscriptions' triggers on status recompute them.
CREATE FUNCTION subscription.refresh_freeze(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE subscription.subscription AS x SET status = x.status
     WHERE x.tenant_id = refresh_freeze.tenant_id AND x.account_id = refresh_freeze.account_id;
END
$$;

COMMENT ON FUNCTION subscription.refresh_freeze(bigint, bigint) IS
'Internal: an account''s stored limits and seat counters recomputed after a freeze begins or ends (issue 19)';

CREATE FUNCTION subscription.pause(tenant_id bigint, subscription_id bigint, at timestamptz, resume_at timestamptz, mode text)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.pause(bigint,bigint,timestamptz,timestamptz,text)', pause.tenant_id,
            pg_catalog.jsonb_build_array(pause.tenant_id, pause.subscription_id, pause.at, pause.resume_at, pause.mode)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('pause', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('pause', '{subscription_id,at,mode}',
        ARRAY[subscription_id IS NULL, at IS NULL, mode IS NULL]);
    IF mode NOT IN ('keep_access', 'freeze') THEN
        RAISE EXCEPTION 'unknown pause mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The modes are keep_access and freeze.';
    END IF;
    PERFORM subscription.require_time('pause', at, false);
    s := subscription.subscription_for_change(pause.tenant_id, 'pause', subscription_id, 'change_renewal');
    PERFORM subscription.require_in_period('pause', s, at);
    IF resume_at IS NOT NULL AND NOT resume_at > at THEN
        RAISE EXCEPTION 'resume_at % is not after the pause at %', resume_at, at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE subscription.subscription AS x
       SET paused_at = pause.at, resume_at = pause.resume_at, pause_mode = pause.mode,
           paused_period_end = upper(x.period),
           period = tstzrange(lower(x.period), coalesce(pause.resume_at, 'infinity'), '[)')
     WHERE x.tenant_id = pause.tenant_id AND x.id = s.id;
    IF mode = 'freeze' THEN
        PERFORM subscription.refresh_freeze(pause.tenant_id, s.account_id);
    END IF;
    RETURN resume_at;
END
$$;

COMMENT ON FUNCTION subscription.pause(bigint, bigint, timestamptz, timestamptz, text) IS
'Pause a subscription at a time, to resume at resume_at (NULL: by resume()), keeping access or freezing the account (issue 19) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.pause(subscription_id bigint, at timestamptz DEFAULT subscription.now(),
                                   resume_at timestamptz DEFAULT NULL, mode text DEFAULT 'keep_access')
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.pause(subscription.tenant_of('subscription', pause.subscription_id), pause.subscription_id,
                              pause.at, pause.resume_at, pause.mode);
END
$$;

COMMENT ON FUNCTION subscription.pause(bigint, timestamptz, timestamptz, text) IS
'Pause a subscription at a time, to resume at resume_at (NULL: by resume()), keeping access or freezing the account (issue 19)';

-- A paused subscription resumed at a time (after its pause): its period
-- ends the time it was paused later than it did, that extension is a
-- ledger line of 0.00 (so that the period is charged to its end, as
-- verify() checks), and the next period starts there (anchor, period 0).
-- resume() and renew_account (at resume_at) call it.
CREATE FUNCTION subscription.unpause(s subscription.subscription, at timestamptz)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paused interval := at - s.paused_at;
    ends timestamptz := s.paused_period_end + paused;
    frozen boolean := s.pause_mode = 'freeze';
BEGIN
    UPDATE subscription.subscription AS x
       SET period = tstzrange(lower(x.period), ends, '[)'), anchor = ends, period_number = 0,
           paused_at = NULL, resume_at = NULL, pause_mode = NULL, paused_period_end = NULL
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    -- C2: the extension is a period of its own, charged 0.00 once
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    SELECT s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(0, l.currency), l.currency,
           tstzrange(ends - paused, ends, '[)'), 'plan', s.plan, format('pause: period extended by %s', paused)
      FROM subscription.ledger AS l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.kind = 'charge'
     ORDER BY l.id DESC LIMIT 1;
    IF frozen THEN
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    END IF;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.unpause(subscription.subscription, timestamptz) IS
'Internal: a paused subscription resumed at a time, its period extended by the time it was paused (issue 19)';

CREATE FUNCTION subscription.resume(tenant_id bigint, subscription_id bigint, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.resume(bigint,bigint,timestamptz)', resume.tenant_id,
            pg_catalog.jsonb_build_array(resume.tenant_id, resume.subscription_id, resume.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('resume', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('resume', '{subscription_id,at}', ARRAY[subscription_id IS NULL, at IS NULL]);
    PERFORM subscription.require_time('resume', at, false);
    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.tenant_id = resume.tenant_id AND x.id = resume.subscription_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(s.account_id, 'change_renewal');
    IF s.paused_at IS NULL THEN
        RAISE EXCEPTION 'subscription % is not paused', subscription_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF at < s.paused_at OR at > s.resume_at THEN
        RAISE EXCEPTION 'subscription % cannot be resumed at %', subscription_id, at
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is paused from %s%s.', s.paused_at,
                                  coalesce(' to ' || s.resume_at, ''));
    END IF;
    s := subscription.unpause(s, at);
    RETURN upper(s.period);
END
$$;

COMMENT ON FUNCTION subscription.resume(bigint, bigint, timestamptz) IS
'Resume a paused subscription; its period is extended by the time it was paused; returns when it ends (issue 19) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.resume(subscription_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.resume(subscription.tenant_of('subscription', resume.subscription_id), resume.subscription_id,
                               resume.at);
END
$$;

COMMENT ON FUNCTION subscription.resume(bigint, timestamptz) IS
'Resume a paused subscription; its period is extended by the time it was paused; returns when it ends (issue 19)';

-- A trial at its end (issue 19), by its product's trial_end: 'convert'
-- makes it active, and renew_period charges its first period (from the
-- trial's end: anchor, period 0); 'downgrade' does the same toward the
-- product's free plan (its lowest-ranked service plan priced 0 for the
-- cycle), a pending change that renew_period makes through
-- apply_downgrade, trimming by the tables' rules; 'expire' (or a downgrade
-- with no free plan, with a WARNING) expires it.  Returns the subscription.
-- (kept: the statements below need end_trial(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.end_trial(s subscription.subscription)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trial_end text;
    free_plan text;
BEGIN
    SELECT pr.trial_end INTO trial_end
      FROM subscription.plan AS p JOIN subscription.product AS pr ON pr.code = p.product
     WHERE p.code = s.plan;
    IF trial_end = 'downgrade' THEN
        SELECT f.code INTO free_plan
          FROM subscription.plan AS p
          JOIN subscription.plan AS f ON f.product = p.product AND f.kind = 'service'
          JOIN subscription.plan_price AS pp
            ON pp.plan = f.code AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(s.cycle)
           AND pp.versions @> f.version AND pp.amount = 0
         WHERE p.code = s.plan
         ORDER BY f.rank, f.code
         LIMIT 1;
        IF free_plan IS NULL THEN
            RAISE WARNING 'subscription % expires at the end of its trial: plan "%" has no free plan for cycle %',
                          s.id, s.plan, subscription.cycle_text(s.cycle);
            trial_end := 'expire';
        END IF;
    END IF;
    UPDATE subscription.subscription AS x
       SET status = CASE WHEN trial_end = 'expire' THEN 'expired' ELSE 'active' END,
           pending_plan = CASE WHEN free_plan <> x.plan THEN free_plan ELSE x.pending_plan END
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.subscribe(bigint, bigint, text, interval, integer, timestamptz, text, text) IS
'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.subscription_for_change(bigint, text, bigint, text) IS
'Internal: the subscription locked for a change, the actor''s right checked (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- PUBLIC executes nothing (99_public.sql)
REVOKE ALL ON FUNCTION subscription.freezing_subscription(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.assigns_licenses(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.refresh_freeze(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.pause(bigint, bigint, timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.pause(bigint, timestamptz, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.unpause(subscription.subscription, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.resume(bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.resume(bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.end_trial(subscription.subscription) FROM PUBLIC;

-- Renewals on Citus (issue 17, items 2 and 4) ------------------------------
-- The renewal path runs on the node of the tenant's shards: the add-ons'
-- price check keyed by tenant (unpriced_addons, made above), renewal_may_trim in
-- PL/pgSQL (Citus plans no SQL function with parameters), each add-on
-- batch priced apart from the statement that reads the batches, and the
-- tenant's lock the root account's row instead of an advisory lock of the
-- node that runs the call.  verify() runs on the coordinator after
-- distribute(), over copies of the tables (verify_findings).

COMMENT ON FUNCTION subscription.renewal_problem(subscription.subscription, subscription.period_terms) IS 'Internal: why the next renewal could not be charged, or NULL';

COMMENT ON FUNCTION subscription.renew_account(bigint, timestamptz) IS
'Renew, expire or cancel every due subscription of a tenant (a root account and its sub-accounts), catching up missed periods; back-office work';

-- The checks are one query over the extension's tables, run by EXECUTE
-- over the tables themselves on a single server.  On Citus (after
-- distribute()) the query, with its joins by id and its correlated
-- subqueries, is not one that Citus plans: it runs on the coordinator over
-- copies of the tables the checks read, made for the call (temporary
-- tables, dropped at commit; of the account's tenant when an account is
-- given), and the functions it calls read the distributed tables from
-- there.  The same text, the same findings (issue 17).
-- verify()'s checks (a PL/pgSQL function cannot name a parameter as its
-- result column, account_id).
CREATE FUNCTION subscription.verify_findings(account bigint)
RETURNS TABLE (check_name text, account_id bigint, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    src text := 'subscription';
    tbl text;
    tenant bigint;
BEGIN
    IF subscription.distributed() THEN
        src := 'pg_temp';
        IF verify_findings.account IS NOT NULL THEN
            tenant := subscription.tenant_of('account', verify_findings.account);
        END IF;
        FOREACH tbl IN ARRAY ARRAY['account', 'member', 'subscription', 'addon_batch', 'license', 'license_counter',
                                   'usage_counter', 'ledger', 'history', 'limited_table'] LOOP
            IF to_regclass(format('pg_temp.%I', tbl)) IS NOT NULL THEN
                EXECUTE format('DROP TABLE pg_temp.%I', tbl);
            END IF;
            EXECUTE format('CREATE TEMPORARY TABLE %I ON COMMIT DROP AS SELECT * FROM subscription.%I AS x %s', tbl, tbl,
                           CASE WHEN tenant IS NOT NULL AND tbl <> 'limited_table' THEN 'WHERE x.tenant_id = $1' ELSE '' END)
              USING tenant;
        END LOOP;
    END IF;
    RETURN QUERY EXECUTE replace($q$
        SELECT v.* FROM (
            -- seats: the counter is the licenses held, its capacity the subscription's,
            -- and no subscription holds more than its capacity
            SELECT x.check_name, t.account_id, x.detail
              FROM (SELECT s.account_id, s.id, c.subscription_id IS NOT NULL AS has_counter, c.used, c.capacity, c.active,
                           subscription.license_capacity(s.id) AS capacity_now,
                           subscription.assigns_licenses(s.tenant_id, s.account_id, s.status) AS active_now,
                           (SELECT count(*) FROM @@.license AS l
                             WHERE l.subscription_id = s.id) AS held
                      FROM @@.subscription AS s
                      LEFT JOIN @@.license_counter AS c ON c.subscription_id = s.id
                     WHERE $1 IS NULL OR s.account_id = $1) AS t,
                   LATERAL (VALUES
                       ('license_counter',
                        CASE WHEN NOT t.has_counter THEN format('subscription %s has no seat counter', t.id)
                             WHEN t.used <> t.held
                             THEN format('subscription %s: the seat counter says %s used, %s licenses are held', t.id, t.used, t.held) END),
                       ('license_capacity',
                        CASE WHEN t.has_counter AND (t.capacity, t.active) IS DISTINCT FROM (t.capacity_now, t.active_now)
                             THEN format('subscription %s: the seat counter has capacity %s (active %s), the subscription %s (active %s)',
                                         t.id, t.capacity, t.active, t.capacity_now, t.active_now) END),
                       ('seats_over_capacity',
                        CASE WHEN t.held > t.capacity_now
                             THEN format('subscription %s holds %s licenses, its capacity is %s', t.id, t.held, t.capacity_now) END))
                       AS x(check_name, detail)
             WHERE x.detail IS NOT NULL
            UNION ALL
            -- usage: each counter is its table's rows, counted as recount_usage counts
            -- them (cap counts nothing) ...
            SELECT 'usage_counter', d.account_id,
                   format('%s of %s: the counter says %s, the table has %s', t.feature, t.relation, d.stored, d.counted)
              FROM @@.limited_table AS t,
                   LATERAL subscription.usage_drift(t.relation, t.feature, $1) AS d
            UNION ALL
            -- ... and carries the account's limit; no counter outlives its registration
            SELECT CASE WHEN t.feature IS NULL THEN 'usage_counter' ELSE 'usage_limit' END, u.account_id,
                   CASE WHEN t.feature IS NULL
                        THEN format('a counter of feature %s remains, and no table is registered for it', u.feature)
                        ELSE format('%s: the counter''s limit is %s, the account''s limit %s', u.feature,
                                    coalesce(u.limit_value::text, 'unlimited'),
                                    coalesce(subscription.limit_of(u.account_id, u.feature)::text, 'unlimited')) END
              FROM @@.usage_counter AS u
              LEFT JOIN @@.limited_table AS t ON t.feature = u.feature
             WHERE ($1 IS NULL OR u.account_id = $1)
               AND (t.feature IS NULL
                    -- the limit the guard checks: a counter computed at an older
                    -- catalog limit version is recomputed by it (issue 17)
                    OR subscription.counter_limit(u.account_id, u.feature, u.limit_value, u.limit_version,
                                                  (SELECT c.version FROM subscription.limit_catalog_version() AS c (version)))
                       IS DISTINCT FROM subscription.limit_of(u.account_id, u.feature))
            UNION ALL
            -- periods (C2): the plan charges of a subscription, less what was given
            -- back, follow each other with no gap and no overlap ...
            SELECT CASE WHEN p.next_lower > p.charged_upper THEN 'period_gap' ELSE 'period_overlap' END,
                   p.account_id,
                   format('subscription %s: charge %s covers %s to %s, charge %s starts at %s',
                          p.subscription_id, p.id, p.charged_lower, p.charged_upper, p.next_id, p.next_lower)
              FROM (SELECT c.*,
                           lead(c.charged_lower) OVER w AS next_lower,
                           lead(c.id) OVER w AS next_id
                      FROM (SELECT l.id, l.account_id, l.subscription_id, lower(l.period) AS charged_lower,
                                   coalesce(lower(g.period), upper(l.period)) AS charged_upper
                              FROM @@.ledger AS l
                              LEFT JOIN @@.ledger AS g
                                ON g.charge_id = l.id AND g.kind IN ('refund', 'credit')
                             WHERE l.kind = 'charge' AND l.addon_batch_id IS NULL
                               AND (l.item = 'plan' OR l.item ~~ 'change to %')
                               AND ($1 IS NULL OR l.account_id = $1)) AS c
                     WHERE c.charged_lower < c.charged_upper
                    WINDOW w AS (PARTITION BY c.subscription_id ORDER BY c.charged_lower, c.id)) AS p
             WHERE p.next_lower <> p.charged_upper
            UNION ALL
            -- ... and an active subscription's current period is charged to its end
            SELECT 'period_uncharged', s.account_id,
                   format('subscription %s: its current period %s is charged up to %s', s.id, s.period,
                          coalesce(c.charged_to::text, 'nothing'))
              FROM @@.subscription AS s
              LEFT JOIN LATERAL (
                   SELECT max(coalesce(lower(g.period), upper(l.period))) AS charged_to
                     FROM @@.ledger AS l
                     LEFT JOIN @@.ledger AS g
                       ON g.charge_id = l.id AND g.kind IN ('refund', 'credit')
                    WHERE l.subscription_id = s.id AND l.kind = 'charge'
                      AND l.addon_batch_id IS NULL
                      AND (l.item = 'plan' OR l.item ~~ 'change to %')) AS c ON true
             WHERE s.status = 'active' AND s.paused_at IS NULL
               AND ($1 IS NULL OR s.account_id = $1)
               AND (c.charged_to IS NULL OR c.charged_to < upper(s.period))
            UNION ALL
            -- money: what is given back or taken off a charge never exceeds it
            SELECT 'refund_over_charge', l.account_id,
                   format('charge %s of %s %s: %s given back or taken off', l.id, l.amount, l.currency, g.total)
              FROM @@.ledger AS l
              JOIN (SELECT g.charge_id, sum(g.amount) AS total FROM @@.ledger AS g
                     WHERE g.kind IN ('refund', 'credit', 'discount') GROUP BY g.charge_id) AS g
                ON g.charge_id = l.id
             WHERE l.kind = 'charge' AND g.total > l.amount
               AND ($1 IS NULL OR l.account_id = $1)
            UNION ALL
            -- history (R8): every account, member, subscription, add-on batch and
            -- license has the history row that created it
            SELECT 'history_missing', h.account_id, h.detail
              FROM (SELECT a.id AS account_id, format('account %s has no account_insert row', a.id) AS detail
                      FROM @@.account AS a
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.account_id = a.id
                                          AND h.operation = 'account_insert')
                    UNION ALL
                    SELECT m.account_id, format('member %s has no member_insert row', m.id)
                      FROM @@.member AS m
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.account_id = m.account_id
                                          AND h.operation = 'member_insert'
                                          AND h.details ->> 'id' = m.id::text)
                    UNION ALL
                    SELECT s.account_id, format('subscription %s has no subscription_insert row', s.id)
                      FROM @@.subscription AS s
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.subscription_id = s.id
                                          AND h.operation = 'subscription_insert')
                    UNION ALL
                    SELECT s.account_id, format('add-on batch %s has no addon_batch_insert row', b.id)
                      FROM @@.addon_batch AS b
                      JOIN @@.subscription AS s ON s.id = b.subscription_id
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.subscription_id = b.subscription_id
                                          AND h.operation = 'addon_batch_insert'
                                          AND h.details ->> 'id' = b.id::text)
                    UNION ALL
                    SELECT s.account_id, format('the license of member %s on subscription %s has no license_assign row',
                                                l.member_id, l.subscription_id)
                      FROM @@.license AS l
                      JOIN @@.subscription AS s ON s.id = l.subscription_id
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.subscription_id = l.subscription_id
                                          AND h.operation = 'license_assign'
                                          AND h.details -> 'members'
                                              @> pg_catalog.jsonb_build_array(l.member_id))) AS h
             WHERE $1 IS NULL OR h.account_id = $1
        ) AS v("check", account_id, detail)
        ORDER BY 1, 2, 3
$q$, '@@', src) USING verify_findings.account;
END
$$;

COMMENT ON FUNCTION subscription.verify_findings(bigint) IS
'Internal: verify()''s checks, over the tables (a single server) or over copies of them on the coordinator (Citus)';

COMMENT ON FUNCTION subscription.verify(bigint) IS
'The invariants of seats, usage, periods, money and history: one row per broken one (of an account, or of all), nothing when all hold';

REVOKE ALL ON FUNCTION subscription.unpriced_addons(bigint, bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.verify_findings(bigint) FROM PUBLIC;

-- After the merges: the final text of functions that several sections above replace

-- Entitlements for row-level security (issue 21, item 5) -----------------
-- what plans and add-ons grant, apart from a freeze: limit_of() (below,
-- in the Citus section) and has_feature() both read it
-- What an account's plans and add-ons grant of a feature: over its active
-- subscriptions, each plan's value at the version the subscription holds
-- (times the quantity when per license: LogMeIn hosts are the tier, L12),
-- plus the units of active add-on batches (Z13, K1).  A suite subscription
-- counts the values of the plans it includes besides its own (at their
-- current versions), at its quantity, as if each were subscribed (Z3); with
-- a separate subscription of an included product they add up, like any
-- two.  NULL is unlimited: one unlimited plan makes the feature unlimited.
-- A trial has its plan's limits.  A feature no active subscription defines
-- has limit 0, plus its add-ons.  One
-- statement in PL/pgSQL, whose plan is cached per session: the limit
-- guard's hot path (a SQL function with a sub-select is planned per call).
-- (kept: the statements below need granted_limit(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.granted_limit(tenant_id bigint, account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
    SELECT CASE WHEN bool_or(x.unlimited) THEN NULL
                -- numeric, so that an overflow is an error, not a wrap
                ELSE coalesce(sum(x.units), 0)::bigint END
      FROM (SELECT l.value IS NULL AS unlimited,
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
                ON l.plan = p.plan AND l.feature = granted_limit.feature
               -- the version of the plan the subscription holds (grandfathering)
               AND l.versions @> p.version
             WHERE s.tenant_id = granted_limit.tenant_id AND s.account_id = granted_limit.account_id
               AND s.status IN ('active', 'trialing')
            UNION ALL
            SELECT false, b.quantity::numeric * a.units
              FROM subscription.subscription AS s
              JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id
              JOIN subscription.addon AS a ON a.code = b.addon
             WHERE s.tenant_id = granted_limit.tenant_id AND s.account_id = granted_limit.account_id
               AND s.status IN ('active', 'trialing')
               AND b.status = 'active'
               AND a.feature = granted_limit.feature) AS x);
END
$$;

-- The rule: a feature is included when what the account's active plans
-- and add-ons grant of it (granted_limit, as the limits) is above 0 or
-- unlimited; a freeze, which only stops growth, takes nothing away.  An
-- unknown account has no feature; an unknown feature is 42704 (checked
-- only on a refusal: a feature something grants exists).  A SQL body, so
-- that has_feature()'s statement inlines it.
CREATE FUNCTION subscription.feature_granted(account_id bigint, feature text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN subscription.granted_limit(subscription.tenant_of('account', account_id), account_id, feature)
                 IS DISTINCT FROM 0 THEN true
            ELSE (SELECT false FROM subscription.require_feature(feature)) END;

COMMENT ON FUNCTION subscription.feature_granted(bigint, text) IS
'Internal: whether the account''s active plans and add-ons grant the feature (has_feature''s rule)';

-- The entitlement for policies.  In C, which remembers per call site the
-- answer of each account it met (the result cannot change within a
-- statement): a policy over a million rows runs the rule once per account.
-- No SET clause: it would wrap every row's call in a GUC save and restore;
-- the function's one statement runs with search_path pinned, as the
-- extension's owner.
CREATE FUNCTION subscription.has_feature(account_id bigint, feature text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'has_feature'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

REVOKE ALL ON FUNCTION subscription.granted_limit(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.feature_granted(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.has_feature(bigint, text) FROM PUBLIC;

-- Bookkeeping triggers set-based (issue 18) --------------------------------
-- record_history() in C, per statement over the transition tables
-- (src/history.c): one trigger per event and table.
DROP TRIGGER account_history ON subscription.account;
DROP TRIGGER member_history ON subscription.member;
DROP TRIGGER subscription_history ON subscription.subscription;
DROP TRIGGER addon_batch_history ON subscription.addon_batch;
DROP TRIGGER terms_acceptance_history ON subscription.terms_acceptance;

CREATE OR REPLACE FUNCTION subscription.record_history()
RETURNS trigger
AS 'MODULE_PATHNAME', 'record_history'
LANGUAGE C;

CREATE TRIGGER account_history AFTER INSERT ON subscription.account
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('account');
CREATE TRIGGER account_history_update AFTER UPDATE ON subscription.account
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('account');
CREATE TRIGGER account_history_delete AFTER DELETE ON subscription.account
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('account');
CREATE TRIGGER member_history AFTER INSERT ON subscription.member
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('member');
CREATE TRIGGER member_history_update AFTER UPDATE ON subscription.member
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('member');
CREATE TRIGGER member_history_delete AFTER DELETE ON subscription.member
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('member');
CREATE TRIGGER subscription_history AFTER INSERT ON subscription.subscription
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('subscription');
CREATE TRIGGER subscription_history_update AFTER UPDATE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('subscription');
CREATE TRIGGER subscription_history_delete AFTER DELETE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('subscription');
CREATE TRIGGER addon_batch_history AFTER INSERT ON subscription.addon_batch
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('addon_batch');
CREATE TRIGGER addon_batch_history_update AFTER UPDATE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('addon_batch');
CREATE TRIGGER addon_batch_history_delete AFTER DELETE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('addon_batch');
CREATE TRIGGER terms_acceptance_history AFTER INSERT ON subscription.terms_acceptance
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('terms_acceptance');
CREATE TRIGGER terms_acceptance_history_update AFTER UPDATE ON subscription.terms_acceptance
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('terms_acceptance');
CREATE TRIGGER terms_acceptance_history_delete AFTER DELETE ON subscription.terms_acceptance
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('terms_acceptance');

-- reduce_charge(): per statement over the ledger's new rows
DROP TRIGGER ledger_reduce_charge ON subscription.ledger;
CREATE OR REPLACE FUNCTION subscription.reduce_charge()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c subscription.coupon;
    ids bigint[];
    tenants bigint[];
    accounts bigint[];
    subs bigint[];
    batches bigint[];
    amounts numeric[];
    currencies text[];
    periods tstzrange[];
    items text[];
    plans text[];
    -- the rank of a plan charge among the statement's plan charges of its
    -- subscription: the coupon's periods are used in that order
    ranks bigint[];
    discounts numeric[];
    notes text[];
    i integer;
    -- the charges in the order of their accounts, then ids (L10 below)
    by_account integer[];
    credits_used numeric[];
    balance numeric;
    discount numeric;
    used numeric;
    rounds bigint;
BEGIN
    -- a restore copies the charge's discount and credit lines, and the
    -- coupon's periods left, with it (restored_copy); the lines written
    -- here are no charges and end the nested statement at once
    SELECT array_agg(x.id ORDER BY x.id), array_agg(x.tenant_id ORDER BY x.id), array_agg(x.account_id ORDER BY x.id),
           array_agg(x.subscription_id ORDER BY x.id), array_agg(x.addon_batch_id ORDER BY x.id),
           array_agg(x.amount ORDER BY x.id), array_agg(x.currency ORDER BY x.id), array_agg(x.period ORDER BY x.id),
           array_agg(x.item ORDER BY x.id), array_agg(x.plan ORDER BY x.id), array_agg(x.rank ORDER BY x.id)
      INTO ids, tenants, accounts, subs, batches, amounts, currencies, periods, items, plans, ranks
      FROM (SELECT n.id, n.tenant_id, n.account_id, n.subscription_id, n.addon_batch_id, n.amount, n.currency,
                   n.period, n.item, n.plan,
                   CASE WHEN n.subscription_id IS NOT NULL AND n.item = 'plan'
                        THEN row_number() OVER (PARTITION BY n.tenant_id, n.subscription_id, n.item = 'plan'
                                                ORDER BY n.id) END AS rank
              FROM new_rows AS n
             WHERE n.kind = 'charge'
               AND NOT subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS x;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    discounts := array_fill(0::numeric, ARRAY[cardinality(ids)]);
    notes := array_fill(NULL::text, ARRAY[cardinality(ids)]);

    -- Z10: the coupon, a round per rank, so that a second plan charge of a
    -- subscription finds the periods the first one used
    SELECT coalesce(max(k), 0) INTO rounds FROM unnest(ranks) AS k;
    FOR r IN 1 .. rounds LOOP
        FOR i IN 1 .. cardinality(ids) LOOP
            CONTINUE WHEN ranks[i] IS DISTINCT FROM r;
            discount := subscription.coupon_discount(tenants[i], subs[i], amounts[i], currencies[i]);
            CONTINUE WHEN discount <= 0;
            SELECT x.* INTO c FROM subscription.subscription AS s
              JOIN subscription.coupon AS x ON x.code = s.coupon
             WHERE s.tenant_id = tenants[i] AND s.id = subs[i];
            discounts[i] := discount;
            notes[i] := format('coupon %s: %s off', c.code,
                               coalesce(c.percent_off::text || '%', c.amount_off::text || ' ' || c.currency));
            UPDATE subscription.subscription AS s
               SET coupon_periods_left = s.coupon_periods_left - 1
             WHERE s.tenant_id = tenants[i] AND s.id = subs[i] AND s.coupon_periods_left IS NOT NULL;
        END LOOP;
    END LOOP;

    -- L10: an account's credit in a currency, read once per statement,
    -- without a lock first (the common case is none); what one charge uses
    -- is gone for the next.  Accounts are independent, so one pass over
    -- the charges sorted by account (ids in order within each) gives each
    -- charge what the id order would, at a cost that grows with the
    -- charges, not with their square; the lines follow in the ids' order.
    credits_used := array_fill(0::numeric, ARRAY[cardinality(ids)]);
    SELECT array_agg(o ORDER BY tenants[o], accounts[o], currencies[o], o) INTO by_account
      FROM generate_subscripts(ids, 1) AS o;
    FOR k IN 1 .. cardinality(by_account) LOOP
        i := by_account[k];
        IF k = 1 OR (tenants[i], accounts[i], currencies[i])
                    IS DISTINCT FROM (tenants[by_account[k - 1]], accounts[by_account[k - 1]], currencies[by_account[k - 1]]) THEN
            balance := subscription.credit_balance(tenants[i], accounts[i], currencies[i]);
            IF balance > 0 THEN
                -- concurrent charges of the account take its credit one at a time
                PERFORM FROM subscription.account AS a WHERE a.tenant_id = tenants[i] AND a.id = accounts[i]
                    FOR NO KEY UPDATE;
                balance := subscription.credit_balance(tenants[i], accounts[i], currencies[i]);
            END IF;
        END IF;
        used := least(balance, amounts[i] - discounts[i]);
        IF used > 0 THEN
            credits_used[i] := used;
            balance := balance - used;
        END IF;
    END LOOP;

    FOR i IN 1 .. cardinality(ids) LOOP
        IF discounts[i] > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, charge_id, description)
            VALUES (tenants[i], accounts[i], subs[i], 'discount', discounts[i], currencies[i], periods[i], items[i],
                    plans[i], ids[i], notes[i]);
        END IF;
        IF credits_used[i] > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description)
            VALUES (tenants[i], accounts[i], subs[i], batches[i], 'credit_used', credits_used[i], currencies[i],
                    periods[i], items[i], plans[i], ids[i], format('credit pays charge %s', ids[i]));
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_reduce_charge AFTER INSERT ON subscription.ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.reduce_charge();

-- sync_license_counter(): per statement over subscriptions and add-on batches
DROP TRIGGER subscription_license_counter ON subscription.subscription;
DROP TRIGGER addon_batch_license_counter ON subscription.addon_batch;
CREATE OR REPLACE FUNCTION subscription.sync_license_counter()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    subs bigint[];
    is_active boolean;
    capacity integer;
    -- the logical table, from the trigger's argument (issue 17)
    logical text := TG_ARGV[0];
BEGIN
    -- a restore copies the counter (restored_copy): the copy is trusted,
    -- and verify() compares it with the licenses afterwards
    IF TG_OP = 'INSERT' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM new_rows AS n
         WHERE NOT subscription.restored_copy('subscription.subscription_id_seq', n.id);
    ELSIF TG_OP = 'UPDATE' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE (o.quantity, o.status) IS DISTINCT FROM (n.quantity, n.status)
            OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id FROM old_rows AS b) AS x;
    ELSE
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id
                  FROM new_rows AS b
                 WHERE TG_OP = 'UPDATE'
                    OR NOT subscription.restored_copy('subscription.addon_batch_id_seq', b.id)) AS x;
    END IF;
    FOR k IN 1 .. coalesce(cardinality(subs), 0) LOOP
        -- each statement names the tenant: on Citus a trigger on a shard
        -- runs only statements on its own node (issue 17)
        SELECT subscription.assigns_licenses(s.tenant_id, s.account_id, s.status) INTO is_active
          FROM subscription.subscription AS s WHERE s.tenant_id = tenants[k] AND s.id = subs[k];
        CONTINUE WHEN NOT FOUND;
        capacity := subscription.license_capacity(tenants[k], subs[k]);
        INSERT INTO subscription.license_counter AS c (tenant_id, subscription_id, capacity, active)
        VALUES (tenants[k], subs[k], capacity, is_active)
        ON CONFLICT (tenant_id, subscription_id) DO UPDATE
           SET capacity = excluded.capacity, active = excluded.active
         WHERE (c.capacity, c.active) IS DISTINCT FROM (excluded.capacity, excluded.active);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.sync_license_counter() IS 'Trigger: seat capacities follow quantities, statuses and add-on batches';

-- one trigger per event: a trigger with transition tables fires on one
CREATE TRIGGER subscription_license_counter AFTER INSERT ON subscription.subscription
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('subscription');
CREATE TRIGGER subscription_license_counter_update AFTER UPDATE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('subscription');
CREATE TRIGGER addon_batch_license_counter AFTER INSERT ON subscription.addon_batch
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');
CREATE TRIGGER addon_batch_license_counter_update AFTER UPDATE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');
CREATE TRIGGER addon_batch_license_counter_delete AFTER DELETE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');

-- sync_service_seats(): per statement
DROP TRIGGER subscription_service_seats ON subscription.subscription;
DROP TRIGGER plan_service_seats ON subscription.plan;
DROP TRIGGER suite_component_service_seats ON subscription.suite_component;
COMMENT ON FUNCTION subscription.sync_service_seats() IS 'Trigger: service seats follow plan and suite changes (R11, Z3)';

-- one trigger per event: a trigger with transition tables fires on one
CREATE TRIGGER subscription_service_seats AFTER UPDATE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('subscription');
CREATE TRIGGER plan_service_seats AFTER UPDATE ON subscription.plan
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('plan');
CREATE TRIGGER suite_component_service_seats AFTER INSERT ON subscription.suite_component
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('suite_component');
CREATE TRIGGER suite_component_service_seats_update AFTER UPDATE ON subscription.suite_component
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('suite_component');
CREATE TRIGGER suite_component_service_seats_delete AFTER DELETE ON subscription.suite_component
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('suite_component');

-- refresh_limits(): subscriptions and add-on batches per statement
DROP TRIGGER subscription_refresh_limits ON subscription.subscription;
DROP TRIGGER addon_batch_refresh_limits ON subscription.addon_batch;
-- subscriptions and add-on batches per statement, one trigger per event (a
-- trigger with transition tables fires on one); the catalog per row
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
-- end of: bookkeeping triggers set-based (issue 18)

-- Usage-based billing: meters, usage prices, record_usage (issue 21) ---------
-- The meters' accumulators, kept in each usage counter by the guard's one
-- UPDATE (src/limits.c, METER_ACCUMULATORS): the peak of used since the
-- period's reset, and the integral of used over time in row-seconds up to
-- since, the time of the last change.  Added after the table's other
-- columns (an upgrade adds them last).
ALTER TABLE subscription.usage_counter
    ADD COLUMN peak bigint NOT NULL DEFAULT 0 CHECK (peak >= 0),
    ADD COLUMN integral numeric NOT NULL DEFAULT 0 CHECK (integral >= 0),
    ADD COLUMN since timestamptz NOT NULL DEFAULT subscription.meter_now();

COMMENT ON COLUMN subscription.usage_counter.peak IS
'The largest use since the period began (a meter''s peak, issue 21)';
COMMENT ON COLUMN subscription.usage_counter.integral IS
'The use integrated over time since the period began, in row-seconds, up to since (a meter''s time_weighted, issue 21)';
COMMENT ON COLUMN subscription.usage_counter.since IS
'When the use last changed, or the period began: the integral runs to here';

-- A meter: what of a registered table's counter a usage price bills
-- (issue 21).  One per feature, on the feature's registration.
CREATE TABLE subscription.meter (
    feature     text PRIMARY KEY
                REFERENCES subscription.limited_table (feature) ON DELETE CASCADE ON UPDATE CASCADE,
    aggregation text NOT NULL CHECK (aggregation IN ('count', 'peak', 'time_weighted', 'sum')),
    -- time_weighted: the unit of time its figure counts (row-days)
    unit        interval NOT NULL DEFAULT '1 day' CHECK (unit > interval '0')
);

COMMENT ON TABLE subscription.meter IS
'Meters on registered tables: the aggregation (count, peak, time_weighted, sum) a usage price bills (issue 21)';

-- A plan's price for the use of a feature beyond what it includes, billed
-- in arrears at each renewal (issue 21).  mode: graduated, volume or
-- package; tiers: for graduated and volume, a JSON array of
-- {"up_to": n (null: the last), "unit_amount": a, "flat_amount": f};
-- NULL prices every unit at unit_amount; for package, {"size": n}.
CREATE TABLE subscription.plan_usage_price (
    plan        text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    feature     text NOT NULL,
    included    bigint NOT NULL DEFAULT 0 CHECK (included >= 0),
    unit_amount numeric NOT NULL CHECK (unit_amount >= 0 AND unit_amount < 'Infinity'),
    tiers       jsonb,
    mode        text NOT NULL CHECK (mode IN ('graduated', 'volume', 'package')),
    currency    text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code) ON UPDATE CASCADE,
    PRIMARY KEY (plan, feature)
);

COMMENT ON TABLE subscription.plan_usage_price IS
'Usage prices: a plan''s price of the use of a feature beyond what it includes, billed in arrears (issue 21)';

-- Usage recorded without rows (record_usage), one row per key: a retry
-- with the same key counts once and returns the total it returned.
-- Kept for the period and subscription.usage_key_grace after it.
CREATE TABLE subscription.usage_record (
    tenant_id  bigint NOT NULL,
    account_id bigint NOT NULL,
    feature    text NOT NULL,
    key        text NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity >= 0),
    total      bigint NOT NULL,
    at         timestamptz NOT NULL,
    CONSTRAINT usage_record_pkey PRIMARY KEY (tenant_id, account_id, feature, key),
    CONSTRAINT usage_record_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX ON subscription.usage_record (tenant_id, account_id, feature, at);

COMMENT ON TABLE subscription.usage_record IS
'Usage recorded without rows (record_usage), one row per idempotency key (issue 21)';

-- What each ended period of a subscription used of each priced feature,
-- and what it was billed: one row per (subscription, feature, period),
-- written with the overage line by bill_usage (append-only).
CREATE TABLE subscription.usage_period (
    tenant_id       bigint NOT NULL,
    subscription_id bigint NOT NULL,
    account_id      bigint NOT NULL,
    feature         text NOT NULL,
    period          tstzrange NOT NULL,
    plan            text NOT NULL,
    aggregation     text NOT NULL,
    used            bigint NOT NULL,
    peak            bigint NOT NULL,
    integral        numeric NOT NULL,
    aggregate       numeric NOT NULL,
    included        bigint NOT NULL,
    billable        numeric NOT NULL,
    amount          numeric NOT NULL,
    currency        text NOT NULL,
    ledger_id       bigint,
    CONSTRAINT usage_period_pkey PRIMARY KEY (tenant_id, subscription_id, feature, period),
    CONSTRAINT usage_period_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id)
);

COMMENT ON TABLE subscription.usage_period IS
'Per-period snapshots of the usage billed: the accumulators, the aggregate, the billable quantity and the amount (issue 21)';
-- usage-based billing (issue 21): meters, usage prices, keys, snapshots
SELECT pg_catalog.pg_extension_config_dump('subscription.meter', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.plan_usage_price', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.usage_record', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.usage_period', '');

-- The counter moved by the limit guard's own code (src/limits.c,
-- MoveUsage): the same limit (23514) and the same meter accumulators as a
-- write of a registered table.  Returns the new use.  in_tenant: the
-- account's tenant, where an unknown account is P0002.
CREATE FUNCTION subscription.move_usage(account_id bigint, feature text, delta bigint, in_tenant bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'move_usage'
LANGUAGE C;

COMMENT ON FUNCTION subscription.move_usage(bigint, text, bigint, bigint) IS
'Internal (C): move an account''s usage counter (of tenant in_tenant) by delta under its limit, as the limit guard does; the new use';

-- U1: a meter on a feature registered with enforce_limit (its limit may
-- be unlimited): which figure of the feature's counter a usage price
-- bills.  count: the rows at the period's end; peak: the most during the
-- period; time_weighted: the rows integrated over the period, in row-units
-- of unit (row-days by default); sum: the sum of the registration's value
-- column (a registration that sums it: on_downgrade 'scale').
CREATE FUNCTION subscription.meter(relation regclass, feature text, aggregation text, unit interval DEFAULT '1 day')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registration subscription.limited_table;
BEGIN
    PERFORM subscription.require_arguments('meter', '{relation,feature,aggregation,unit}',
        ARRAY[relation IS NULL, feature IS NULL, aggregation IS NULL, unit IS NULL]);
    SELECT t.* INTO registration FROM subscription.limited_table AS t
     WHERE t.relation = meter.relation AND t.feature = meter.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" is not enforced on table "%"', feature, relation
            USING ERRCODE = 'undefined_object',
                  HINT = 'A meter counts the rows of a table registered with subscription.enforce_limit(); usage without rows is recorded with subscription.record_usage().';
    END IF;
    IF aggregation NOT IN ('count', 'peak', 'time_weighted', 'sum') THEN
        RAISE EXCEPTION 'unknown aggregation "%"', aggregation
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The aggregations are count, peak, time_weighted and sum.';
    END IF;
    IF aggregation = 'sum' AND registration.on_downgrade <> 'scale' THEN
        RAISE EXCEPTION 'feature "%" does not count the sum of a value column', feature
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Register the table with on_downgrade => ''scale'' and its value_column, whose sum the counter then keeps.';
    END IF;
    IF unit <= interval '0' THEN
        RAISE EXCEPTION 'the unit of a meter must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', unit);
    END IF;
    INSERT INTO subscription.meter AS m (feature, aggregation, unit)
    VALUES (meter.feature, meter.aggregation, meter.unit)
    ON CONFLICT ON CONSTRAINT meter_pkey DO UPDATE SET aggregation = excluded.aggregation, unit = excluded.unit;
END
$$;

COMMENT ON FUNCTION subscription.meter(regclass, text, text, interval) IS
'Meter a feature registered with enforce_limit: count, peak, time_weighted (in row-units of unit) or sum, billed by its usage price (U1)';

-- 22023 unless tiers suit mode (U2): graduated and volume take NULL or a
-- non-empty array of {"up_to", "unit_amount", "flat_amount"}, up_to
-- increasing positive integers and null for the last tier only; package
-- takes {"size": n}, n a positive integer.
CREATE FUNCTION subscription.require_usage_tiers(mode text, tiers jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
BEGIN
    IF mode = 'package' THEN
        IF jsonb_typeof(tiers) IS DISTINCT FROM 'object' OR jsonb_typeof(tiers -> 'size') IS DISTINCT FROM 'number'
           OR (tiers ->> 'size')::numeric < 1 OR (tiers ->> 'size')::numeric <> trunc((tiers ->> 'size')::numeric) THEN
            problem := 'package takes {"size": n}, n a positive integer';
        END IF;
    ELSIF tiers IS NOT NULL THEN
        IF jsonb_typeof(tiers) <> 'array' OR jsonb_array_length(tiers) = 0 THEN
            problem := 'tiers are a non-empty JSON array';
        ELSE
            -- the first problem of any tier
            SELECT p INTO problem FROM (
                SELECT CASE
                       WHEN jsonb_typeof(t.value) <> 'object' THEN format('tier %s is not an object', t.n)
                       WHEN jsonb_typeof(t.value -> 'up_to') IS NULL OR jsonb_typeof(t.value -> 'up_to') NOT IN ('number', 'null')
                            THEN format('tier %s has no up_to (null for the last)', t.n)
                       WHEN jsonb_typeof(t.value -> 'up_to') = 'null' AND t.n < jsonb_array_length(tiers)
                            THEN format('tier %s: only the last tier has up_to null', t.n)
                       WHEN jsonb_typeof(t.value -> 'up_to') = 'number' AND t.n = jsonb_array_length(tiers)
                            THEN 'the last tier has up_to null'
                       WHEN jsonb_typeof(t.value -> 'up_to') = 'number'
                            AND ((t.value ->> 'up_to')::numeric <> trunc((t.value ->> 'up_to')::numeric)
                                 OR (t.value ->> 'up_to')::numeric
                                    <= coalesce(lag(CASE WHEN jsonb_typeof(t.value -> 'up_to') = 'number' THEN (t.value ->> 'up_to')::numeric END)
                                                OVER (ORDER BY t.n), 0))
                            THEN format('tier %s: up_to must be an integer above the previous tier''s', t.n)
                       WHEN jsonb_typeof(coalesce(t.value -> 'unit_amount', '0')) <> 'number'
                            OR coalesce((t.value ->> 'unit_amount')::numeric, 0) < 0
                            THEN format('tier %s: unit_amount must be a number of 0 or more', t.n)
                       WHEN jsonb_typeof(coalesce(t.value -> 'flat_amount', '0')) <> 'number'
                            OR coalesce((t.value ->> 'flat_amount')::numeric, 0) < 0
                            THEN format('tier %s: flat_amount must be a number of 0 or more', t.n)
                       END AS p, t.n
                  FROM jsonb_array_elements(tiers) WITH ORDINALITY AS t(value, n)) AS x
             WHERE x.p IS NOT NULL
             ORDER BY x.n
             LIMIT 1;
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid tiers for mode %: %', mode, problem
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The tiers were %s.', tiers);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_usage_tiers(text, jsonb) IS
'Internal: 22023 unless the tiers suit the mode of a usage price (U2)';

-- U2: the price of a billable quantity (the aggregate less what the plan
-- includes), unrounded: the one tier formula, for the bill and its tests.
--   graduated: each unit at the price of the tier it falls in, plus the
--     flat amount of every tier it reaches;
--   volume: every unit at the price of the tier the whole quantity falls
--     in, plus that tier's flat amount;
--   package: unit_amount per started package of tiers.size units;
--   tiers NULL (graduated, volume): every unit at unit_amount.
-- A tier's unit_amount defaults to unit_amount, its flat_amount to 0.
CREATE FUNCTION subscription.usage_amount(quantity numeric, unit_amount numeric, tiers jsonb, mode text)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    amount numeric;
BEGIN
    PERFORM subscription.require_arguments('usage_amount', '{quantity,unit_amount,mode}',
        ARRAY[quantity IS NULL, unit_amount IS NULL, mode IS NULL]);
    IF quantity < 0 OR quantity = 'NaN' OR quantity >= 'Infinity' THEN
        RAISE EXCEPTION 'a billable quantity must be a finite number of 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity);
    END IF;
    IF mode NOT IN ('graduated', 'volume', 'package') THEN
        RAISE EXCEPTION 'unknown usage price mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The modes are graduated, volume and package.';
    END IF;
    PERFORM subscription.require_usage_tiers(mode, tiers);
    IF quantity = 0 THEN
        RETURN 0;
    END IF;
    IF mode = 'package' THEN
        RETURN ceil(quantity / (tiers ->> 'size')::numeric) * unit_amount;
    END IF;
    IF tiers IS NULL THEN
        RETURN quantity * unit_amount;
    END IF;
    WITH t AS (
        SELECT coalesce(lag((e.value ->> 'up_to')::numeric) OVER (ORDER BY e.n), 0) AS from_,
               (e.value ->> 'up_to')::numeric AS up_to,
               coalesce((e.value ->> 'unit_amount')::numeric, usage_amount.unit_amount) AS unit,
               coalesce((e.value ->> 'flat_amount')::numeric, 0) AS flat
          FROM jsonb_array_elements(tiers) WITH ORDINALITY AS e(value, n))
    SELECT CASE mode
           WHEN 'graduated' THEN
               (SELECT sum((least(quantity, coalesce(t.up_to, quantity)) - t.from_) * t.unit + t.flat)
                  FROM t WHERE quantity > t.from_)
           ELSE
               (SELECT quantity * t.unit + t.flat
                  FROM t WHERE quantity > t.from_ AND (t.up_to IS NULL OR quantity <= t.up_to))
           END
      INTO amount;
    RETURN amount;
END
$$;

COMMENT ON FUNCTION subscription.usage_amount(numeric, numeric, jsonb, text) IS
'The price of a billable quantity of usage by mode (graduated, volume, package) and tiers, unrounded (U2)';

-- U2: set a plan's price of the use of a feature beyond what it includes
-- (replacing the one it had), billed in arrears at each renewal.
CREATE FUNCTION subscription.plan_usage_price(plan text, feature text, included bigint, unit_amount numeric,
                                              tiers jsonb DEFAULT NULL, mode text DEFAULT 'graduated',
                                              currency text DEFAULT 'EUR')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('plan_usage_price', '{plan,feature,included,unit_amount,mode,currency}',
        ARRAY[plan IS NULL, feature IS NULL, included IS NULL, unit_amount IS NULL, mode IS NULL, currency IS NULL]);
    IF NOT EXISTS (SELECT FROM subscription.plan AS p WHERE p.code = plan_usage_price.plan) THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    PERFORM subscription.require_feature(feature);
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = plan_usage_price.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    IF included < 0 THEN
        RAISE EXCEPTION 'a usage price includes 0 units or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was given %s.', included);
    END IF;
    IF unit_amount < 0 OR unit_amount = 'NaN' OR unit_amount >= 'Infinity' THEN
        RAISE EXCEPTION 'the unit amount of a usage price must be a finite amount of 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', unit_amount);
    END IF;
    -- the mode and the tiers, checked by the formula itself
    PERFORM subscription.usage_amount(0, unit_amount, tiers, mode);
    INSERT INTO subscription.plan_usage_price AS u (plan, feature, included, unit_amount, tiers, mode, currency)
    VALUES (plan_usage_price.plan, plan_usage_price.feature, plan_usage_price.included, plan_usage_price.unit_amount,
            plan_usage_price.tiers, plan_usage_price.mode, plan_usage_price.currency)
    ON CONFLICT ON CONSTRAINT plan_usage_price_pkey DO UPDATE
       SET included = excluded.included, unit_amount = excluded.unit_amount, tiers = excluded.tiers,
           mode = excluded.mode, currency = excluded.currency;
END
$$;

COMMENT ON FUNCTION subscription.plan_usage_price(text, text, bigint, numeric, jsonb, text, text) IS
'Set a plan''s price of the use of a feature beyond what it includes: graduated, volume or package, billed in arrears at each renewal (U2)';

-- U3: bill the usage of a subscription's period, from its start until
-- "until" (its end at a renewal; the moment of a cancellation or plan
-- change mid-period), for each usage price of its plan: the counter read
-- and locked (the guard's writers queue behind it), its figure for the
-- period (the meter's aggregation; the recorded total without rows),
-- price(aggregate - included) rounded once to the currency, one charge
-- line 'usage <feature>' through ledger_one_charge_per_period, the
-- period's snapshot in usage_period, and the counter's accumulators reset
-- for the next period, all in the caller's transaction.  What is billed
-- runs from the period's start, or from the end of its last bill (a plan
-- change mid-period billed up to then); a period billed up to until
-- already is skipped: a renewal run twice bills once.  The time-weighted figure runs to until, or to the counter's last
-- change when that came later (nothing is counted twice: the next period
-- starts there).  Renewals (renew_period) call it before the period moves.
-- (kept: the statements below need bill_usage(); its final text follows
-- in section "Usage previews, restart's period number")
CREATE FUNCTION subscription.bill_usage(s subscription.subscription, until timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    c record;
    billed tstzrange;
    starts timestamptz;
    upto timestamptz;
    integral numeric;
    aggregate numeric;
    billable numeric;
    amount numeric;
    line bigint;
BEGIN
    FOR p IN
        SELECT u.feature, u.included, u.unit_amount, u.tiers, u.mode, u.currency,
               coalesce(m.aggregation, CASE WHEN t.feature IS NULL THEN 'recorded' ELSE 'count' END) AS aggregation,
               coalesce(m.unit, interval '1 day') AS unit, t.feature IS NOT NULL AS from_rows
          FROM subscription.plan_usage_price AS u
          LEFT JOIN subscription.limited_table AS t ON t.feature = u.feature
          LEFT JOIN subscription.meter AS m ON m.feature = u.feature
         WHERE u.plan = s.plan
         ORDER BY u.feature
    LOOP
        -- from the period's start, or where a bill of this period ended (a
        -- plan change mid-period); nothing left: billed already
        SELECT coalesce(max(upper(x.period)), lower(s.period)) INTO starts
          FROM subscription.usage_period AS x
         WHERE x.tenant_id = s.tenant_id AND x.subscription_id = s.id AND x.feature = p.feature
           AND x.period && tstzrange(lower(s.period), until, '[]');
        CONTINUE WHEN starts >= until;
        billed := tstzrange(starts, until);
        SELECT u.used, u.peak, u.integral, u.since INTO c
          FROM subscription.usage_counter AS u
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = p.feature
           FOR UPDATE OF u;
        upto := greatest(coalesce(c.since, until), until);
        integral := coalesce(c.integral, 0) + coalesce(c.used, 0) * extract(epoch FROM upto - coalesce(c.since, until));
        aggregate := CASE p.aggregation
                     WHEN 'peak' THEN greatest(c.peak, c.used)
                     WHEN 'time_weighted' THEN integral / extract(epoch FROM p.unit)
                     ELSE c.used END;
        aggregate := coalesce(aggregate, 0);
        billable := greatest(aggregate - p.included, 0);
        amount := subscription.round_money(subscription.usage_amount(billable, p.unit_amount, p.tiers, p.mode), p.currency);
        line := NULL;
        IF amount > 0 THEN
            INSERT INTO subscription.ledger AS l
                   (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
            VALUES (s.tenant_id, s.account_id, s.id, 'charge', amount, p.currency, billed, 'usage ' || p.feature, s.plan,
                    format('overage: %s %s of %s, %s included', round(aggregate, 6), p.aggregation, p.feature, p.included))
            ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
               WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING
            RETURNING l.id INTO line;
        END IF;
        INSERT INTO subscription.usage_period
               (tenant_id, subscription_id, account_id, feature, period, plan, aggregation, used, peak, integral,
                aggregate, included, billable, amount, currency, ledger_id)
        VALUES (s.tenant_id, s.id, s.account_id, p.feature, billed, s.plan, p.aggregation, coalesce(c.used, 0),
                coalesce(greatest(c.peak, c.used), 0), integral, aggregate, p.included, billable, amount, p.currency, line);
        -- the next period's accumulators: rows stay, recorded usage starts again
        UPDATE subscription.usage_counter AS u
           SET used = CASE WHEN p.from_rows THEN c.used ELSE 0 END,
               peak = CASE WHEN p.from_rows THEN c.used ELSE 0 END,
               integral = 0, since = upto
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = p.feature;
        IF NOT p.from_rows THEN
            -- keys are kept for the period and the grace after it
            DELETE FROM subscription.usage_record AS r
             WHERE r.tenant_id = s.tenant_id AND r.account_id = s.account_id AND r.feature = p.feature
               AND r.at < lower(s.period) - current_setting('subscription.usage_key_grace')::interval;
        END IF;
    END LOOP;
END
$$;

-- U4: a feature used without rows (API calls, tokens, minutes): 42704
-- for an unknown feature, 22023 for one counted from a table's rows.
CREATE FUNCTION subscription.require_recorded_feature(fn text, feature text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_feature(feature);
    IF EXISTS (SELECT FROM subscription.limited_table AS t WHERE t.feature = require_recorded_feature.feature) THEN
        RAISE EXCEPTION 'feature "%" is counted from the rows of a table', feature
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('%s() records usage without rows; the rows of the registered table count themselves.', fn);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_recorded_feature(text, text) IS
'Internal: 42704 for an unknown feature, 22023 for one counted from a registered table''s rows (U4)';

-- U4: record usage without rows, once per key: the counter moves by
-- quantity under the feature's limit (a prepaid cap: 23514 at once), and
-- the new total is returned; a retry with the same key (kept for the
-- period and subscription.usage_key_grace) moves nothing and returns the
-- total the first call returned.  Two sessions with one key: the second
-- waits for the first's key and returns its total.
CREATE FUNCTION subscription.record_usage(tenant_id bigint, account_id bigint, feature text, quantity bigint, key text,
                                          at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_total bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_usage(bigint,bigint,text,bigint,text,timestamptz)', record_usage.tenant_id,
            pg_catalog.jsonb_build_array(record_usage.tenant_id, record_usage.account_id, record_usage.feature, record_usage.quantity, record_usage.key, record_usage.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('record_usage', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('record_usage', '{account_id,feature,quantity,key,at}',
        ARRAY[account_id IS NULL, feature IS NULL, quantity IS NULL, key IS NULL, at IS NULL]);
    PERFORM subscription.require_account(record_usage.tenant_id, record_usage.account_id);
    -- usage becomes a charge: as paying, Z1
    PERFORM subscription.authorize(record_usage.tenant_id, record_usage.account_id, 'pay', false);
    PERFORM subscription.require_recorded_feature('record_usage', feature);
    IF quantity < 0 THEN
        RAISE EXCEPTION 'a quantity of usage must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity),
                  HINT = 'subscription.correct_usage() corrects a quantity recorded, with its reason.';
    END IF;
    INSERT INTO subscription.usage_record AS r (tenant_id, account_id, feature, key, quantity, total, at)
    VALUES (record_usage.tenant_id, record_usage.account_id, record_usage.feature, record_usage.key,
            record_usage.quantity, 0, record_usage.at)
    ON CONFLICT ON CONSTRAINT usage_record_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT r.total INTO new_total FROM subscription.usage_record AS r
         WHERE r.tenant_id = record_usage.tenant_id AND r.account_id = record_usage.account_id
           AND r.feature = record_usage.feature AND r.key = record_usage.key;
        RETURN new_total;
    END IF;
    -- a query, not an expression: the counter's triggers fire at its end
    SELECT subscription.move_usage(record_usage.account_id, record_usage.feature, record_usage.quantity,
                                   record_usage.tenant_id) INTO new_total;
    UPDATE subscription.usage_record AS r SET total = new_total
     WHERE r.tenant_id = record_usage.tenant_id AND r.account_id = record_usage.account_id
       AND r.feature = record_usage.feature AND r.key = record_usage.key;
    RETURN new_total;
END
$$;

COMMENT ON FUNCTION subscription.record_usage(bigint, bigint, text, bigint, text, timestamptz) IS
'Record usage without rows once per key, under the feature''s limit; the new total (U4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.record_usage(account_id bigint, feature text, quantity bigint, key text,
                                          at timestamptz DEFAULT subscription.now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.record_usage(subscription.tenant_of('account', record_usage.account_id), record_usage.account_id,
                                     record_usage.feature, record_usage.quantity, record_usage.key, record_usage.at);
END
$$;

COMMENT ON FUNCTION subscription.record_usage(bigint, text, bigint, text, timestamptz) IS
'Record usage without rows once per key, under the feature''s limit; the new total (U4)';

-- U5: correct the quantity recorded with a key: the counter moves by the
-- difference (an increase under the limit, 23514), and history keeps the
-- old and new quantities with the reason.  Returns the new total.
CREATE FUNCTION subscription.correct_usage(tenant_id bigint, account_id bigint, feature text, key text, quantity bigint,
                                           reason text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r subscription.usage_record;
    used bigint;
    new_total bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.correct_usage(bigint,bigint,text,text,bigint,text)', correct_usage.tenant_id,
            pg_catalog.jsonb_build_array(correct_usage.tenant_id, correct_usage.account_id, correct_usage.feature, correct_usage.key, correct_usage.quantity, correct_usage.reason)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('correct_usage', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('correct_usage', '{account_id,feature,key,quantity,reason}',
        ARRAY[account_id IS NULL, feature IS NULL, key IS NULL, quantity IS NULL, reason IS NULL]);
    PERFORM subscription.require_account(correct_usage.tenant_id, correct_usage.account_id);
    PERFORM subscription.authorize(correct_usage.tenant_id, correct_usage.account_id, 'pay', false);
    PERFORM subscription.require_recorded_feature('correct_usage', feature);
    IF quantity < 0 THEN
        RAISE EXCEPTION 'a quantity of usage must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity);
    END IF;
    SELECT x.* INTO r FROM subscription.usage_record AS x
     WHERE x.tenant_id = correct_usage.tenant_id AND x.account_id = correct_usage.account_id
       AND x.feature = correct_usage.feature AND x.key = correct_usage.key
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no usage of feature "%" was recorded with key "%" for account %', feature, key, account_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Keys are kept for their period and subscription.usage_key_grace after it.';
    END IF;
    SELECT u.used INTO used FROM subscription.usage_counter AS u
     WHERE u.tenant_id = correct_usage.tenant_id AND u.account_id = correct_usage.account_id
       AND u.feature = correct_usage.feature;
    IF coalesce(used, 0) + quantity - r.quantity < 0 THEN
        RAISE EXCEPTION 'the usage recorded with key "%" was billed already', key
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The period''s counter holds %s; the correction takes away %s.', coalesce(used, 0),
                                  r.quantity - quantity),
                  HINT = 'Give the difference back with subscription.credit_account().';
    END IF;
    SELECT subscription.move_usage(correct_usage.account_id, correct_usage.feature, correct_usage.quantity - r.quantity,
                                   correct_usage.tenant_id) INTO new_total;
    UPDATE subscription.usage_record AS x SET quantity = correct_usage.quantity, total = new_total
     WHERE x.tenant_id = correct_usage.tenant_id AND x.account_id = correct_usage.account_id
       AND x.feature = correct_usage.feature AND x.key = correct_usage.key;
    PERFORM subscription.write_history('correct_usage', account_id, NULL,
        jsonb_build_object('feature', feature, 'key', key, 'from', r.quantity, 'to', quantity, 'reason', reason),
        correct_usage.tenant_id);
    RETURN new_total;
END
$$;

COMMENT ON FUNCTION subscription.correct_usage(bigint, bigint, text, text, bigint, text) IS
'Correct the quantity recorded with a key, with the reason in history; the new total (U5) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.correct_usage(account_id bigint, feature text, key text, quantity bigint, reason text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.correct_usage(subscription.tenant_of('account', correct_usage.account_id), correct_usage.account_id,
                                      correct_usage.feature, correct_usage.key, correct_usage.quantity, correct_usage.reason);
END
$$;

COMMENT ON FUNCTION subscription.correct_usage(bigint, text, text, bigint, text) IS
'Correct the quantity recorded with a key, with the reason in history; the new total (U5)';

COMMENT ON FUNCTION subscription.renew_period(subscription.subscription, subscription.period_terms, boolean) IS 'Internal: one period of one due subscription';

COMMENT ON FUNCTION subscription.end_early(bigint, bigint, timestamptz) IS
'End a subscription now; its unused days become credit (L9) (keyed form: the tenant first, docs/design.md#keyed-forms)';

REVOKE ALL ON FUNCTION subscription.move_usage(bigint, text, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.meter(regclass, text, text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.require_usage_tiers(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.usage_amount(numeric, numeric, jsonb, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.plan_usage_price(text, text, bigint, numeric, jsonb, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.bill_usage(subscription.subscription, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.require_recorded_feature(text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_usage(bigint, bigint, text, bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_usage(bigint, text, bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.correct_usage(bigint, bigint, text, text, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.correct_usage(bigint, text, text, bigint, text) FROM PUBLIC;

-- Invoices as documents and payments (issue 19, items 3-4, docs/invoices.md) --
-- An invoice per billing event, numbered gapless per issuer, payments,
-- payment methods, the documents (I1-I7).
-- Invoices and payments (issue 19, 1.1): the invoice a billing event's
-- ledger lines belong to, numbered gapless per issuer (I1, I2), the
-- payments that settle it (I4-I6) and the accounts' payment methods (I7).

-- I7: whether a text holds what looks like a card number, a run of 13 to
-- 19 digits (spaces and dashes between them allowed) that passes Luhn's
-- check.  A payment method keeps the provider's token, never the number.
CREATE FUNCTION subscription.has_card_number(t text)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    run text;
    digits text;
    len integer;
    first integer;
    sum integer;
    d integer;
BEGIN
    IF t IS NULL THEN
        RETURN false;
    END IF;
    FOR run IN SELECT m[1] FROM regexp_matches(t, '[0-9](?:[ -]?[0-9])*', 'g') AS m LOOP
        digits := translate(run, ' -', '');
        -- every window of 13 to 19 digits of the run
        FOR len IN 13 .. least(19, length(digits)) LOOP
            FOR first IN 1 .. length(digits) - len + 1 LOOP
                sum := 0;
                FOR i IN 0 .. len - 1 LOOP
                    d := substr(digits, first + len - 1 - i, 1)::integer;
                    IF i % 2 = 1 THEN
                        d := d * 2;
                        IF d > 9 THEN
                            d := d - 9;
                        END IF;
                    END IF;
                    sum := sum + d;
                END LOOP;
                IF sum % 10 = 0 THEN
                    RETURN true;
                END IF;
            END LOOP;
        END LOOP;
    END LOOP;
    RETURN false;
END
$$;

COMMENT ON FUNCTION subscription.has_card_number(text) IS
'Whether a text holds a Luhn-valid run of 13 to 19 digits, what looks like a card number (I7)';

-- I7: how an account pays: the provider's token, never a card number; one
-- default per account, which an invoice records at its creation.
CREATE TABLE subscription.payment_method (
    id          bigint GENERATED BY DEFAULT AS IDENTITY,
    account_id  bigint NOT NULL,
    kind        text NOT NULL CHECK (kind ~ '^[a-z][a-z_]*$'),
    reference   text NOT NULL CHECK (reference <> ''),
    label       text,
    is_default  boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT subscription.now(),
    tenant_id   bigint NOT NULL,
    CONSTRAINT payment_method_no_card_number
        CHECK (NOT subscription.has_card_number(reference) AND NOT subscription.has_card_number(label)),
    CONSTRAINT payment_method_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT payment_method_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id)
);
CREATE INDEX ON subscription.payment_method (id);
CREATE INDEX ON subscription.payment_method (account_id);
-- one default per account
CREATE UNIQUE INDEX payment_method_one_default
    ON subscription.payment_method (tenant_id, account_id) WHERE is_default;

COMMENT ON TABLE subscription.payment_method IS
'How an account pays: the provider''s token (never a card number), one default per account (I7)';

-- I1: the last number of each issuer's series, per tenant: a number is
-- taken by updating this row in the transaction that writes the invoice,
-- so a rollback gives it back and a concurrent one waits (gapless, in order).
CREATE TABLE subscription.invoice_series (
    issuer      text NOT NULL,
    last_number bigint NOT NULL CHECK (last_number > 0),
    tenant_id   bigint NOT NULL,
    CONSTRAINT invoice_series_pkey PRIMARY KEY (tenant_id, issuer)
);

COMMENT ON TABLE subscription.invoice_series IS
'The last invoice number of each issuer, per tenant (I1)';

-- I1, I2: one row per billing event: the lines one transaction writes for
-- a subscription (or, without one, for the account) at one time, in one
-- currency.  The view subscription.invoice shows it with its lines.
CREATE TABLE subscription.invoice_record (
    id                bigint GENERATED BY DEFAULT AS IDENTITY,
    account_id        bigint NOT NULL,
    subscription_id   bigint,
    -- the product whose plan the lines are for; '' for the account's own
    -- lines (a credit, an overpayment)
    issuer            text NOT NULL,
    number            bigint NOT NULL CHECK (number > 0),
    at                timestamptz NOT NULL,
    currency          text NOT NULL REFERENCES subscription.currency (code) ON UPDATE CASCADE,
    -- the sum of its lines, a charge added and every other kind taken off
    total             numeric NOT NULL DEFAULT 0,
    paid              numeric NOT NULL DEFAULT 0 CHECK (paid >= 0),
    due_at            timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'paid', 'void', 'uncollectible')),
    -- the account's default method when it was written: the one to charge
    payment_method_id bigint,
    -- an invoice of corrections (a void's reversing lines): the one it corrects
    corrects_invoice_id bigint,
    void_reason       text,
    created_at        timestamptz NOT NULL DEFAULT subscription.now(),
    -- the transaction that writes its lines: a later one writes another
    xact              xid8 NOT NULL DEFAULT pg_current_xact_id(),
    tenant_id         bigint NOT NULL,
    -- the number printed: issuer, tenant and number
    document_number   text GENERATED ALWAYS AS
                      (upper(CASE issuer WHEN '' THEN 'CR' ELSE issuer END) || '-' || tenant_id::text || '-'
                       || lpad(number::text, 6, '0')) STORED,
    CONSTRAINT invoice_record_void_has_reason CHECK ((status = 'void') = (void_reason IS NOT NULL)),
    CONSTRAINT invoice_record_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT invoice_record_number_key UNIQUE (tenant_id, issuer, number),
    CONSTRAINT invoice_record_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id),
    CONSTRAINT invoice_record_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id),
    CONSTRAINT invoice_record_payment_method_id_fkey FOREIGN KEY (tenant_id, payment_method_id)
        REFERENCES subscription.payment_method (tenant_id, id)
);
CREATE INDEX ON subscription.invoice_record (id);
CREATE INDEX ON subscription.invoice_record (tenant_id, account_id, at);
CREATE INDEX ON subscription.invoice_record (subscription_id);

COMMENT ON TABLE subscription.invoice_record IS
'Invoices: one per billing event, numbered gapless per issuer, with total, due date and status (I1-I3); shown by the view invoice';

-- I4-I6: money received for an invoice, append-only; its reference (the
-- provider's id) makes it once.
CREATE TABLE subscription.payment (
    id                bigint GENERATED BY DEFAULT AS IDENTITY,
    invoice_id        bigint NOT NULL,
    account_id        bigint NOT NULL,
    amount            numeric NOT NULL CHECK (amount > 0 AND amount < 'Infinity'),
    currency          text NOT NULL REFERENCES subscription.currency (code) ON UPDATE CASCADE,
    reference         text NOT NULL CHECK (reference <> ''),
    payment_method_id bigint,
    at                timestamptz NOT NULL,
    -- the part above what was due, credited to the account (L9)
    credit_line_id    bigint,
    created_at        timestamptz NOT NULL DEFAULT subscription.now(),
    tenant_id         bigint NOT NULL,
    CONSTRAINT payment_pkey PRIMARY KEY (tenant_id, id),
    CONSTRAINT payment_reference_key UNIQUE (tenant_id, reference),
    CONSTRAINT payment_invoice_id_fkey FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES subscription.invoice_record (tenant_id, id),
    CONSTRAINT payment_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id),
    CONSTRAINT payment_payment_method_id_fkey FOREIGN KEY (tenant_id, payment_method_id)
        REFERENCES subscription.payment_method (tenant_id, id),
    CONSTRAINT payment_credit_line_id_fkey FOREIGN KEY (tenant_id, credit_line_id)
        REFERENCES subscription.ledger (tenant_id, id)
);
CREATE INDEX ON subscription.payment (id);
CREATE INDEX ON subscription.payment (tenant_id, invoice_id);

COMMENT ON TABLE subscription.payment IS
'Payments of invoices, append-only, once per reference; an overpayment''s credit line (I4-I6, L9)';

-- I2: every ledger line belongs to one invoice; a refund or credit line
-- names the invoice it corrects.  Filled by invoice_line() (57_invoices.sql).
ALTER TABLE subscription.ledger
    ADD COLUMN invoice_id bigint,
    ADD COLUMN corrects_invoice_id bigint,
    ADD CONSTRAINT ledger_invoice_id_fkey FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES subscription.invoice_record (tenant_id, id),
    ADD CONSTRAINT ledger_corrects_invoice_id_fkey FOREIGN KEY (tenant_id, corrects_invoice_id)
        REFERENCES subscription.invoice_record (tenant_id, id);
CREATE INDEX ON subscription.ledger (tenant_id, invoice_id);

-- the lines written before 1.1: one invoice per billing event as the view
-- invoice grouped them (account, subscription, time, currency), numbered
-- per issuer and tenant in the order of their first line; status paid
-- when nothing is due (no payment was recorded before 1.1)
INSERT INTO subscription.invoice_record
       (tenant_id, account_id, subscription_id, issuer, number, at, currency, total, due_at, status, created_at)
SELECT b.tenant_id, b.account_id, b.subscription_id, b.issuer,
       pg_catalog.row_number() OVER (PARTITION BY b.tenant_id, b.issuer ORDER BY b.first_line),
       b.at, b.currency, b.total, b.at, CASE WHEN b.total <= 0 THEN 'paid' ELSE 'open' END, b.created_at
  FROM (SELECT l.tenant_id, l.account_id, l.subscription_id, l.currency,
               coalesce(pg_catalog.lower(l.period), l.created_at) AS at,
               pg_catalog.min(l.id) AS first_line,
               pg_catalog.min(l.created_at) AS created_at,
               coalesce((SELECT p.product FROM subscription.plan AS p
                          WHERE p.code = coalesce((pg_catalog.array_agg(l.plan ORDER BY l.id) FILTER (WHERE l.plan IS NOT NULL))[1],
                                                  (SELECT s.plan FROM subscription.subscription AS s
                                                    WHERE s.tenant_id = l.tenant_id AND s.id = l.subscription_id))), '') AS issuer,
               pg_catalog.sum(CASE l.kind WHEN 'charge' THEN l.amount ELSE -l.amount END) AS total
          FROM subscription.ledger AS l
         GROUP BY l.tenant_id, l.account_id, l.subscription_id, l.currency,
                  coalesce(pg_catalog.lower(l.period), l.created_at)) AS b
 ORDER BY b.first_line;
INSERT INTO subscription.invoice_series (tenant_id, issuer, last_number)
SELECT i.tenant_id, i.issuer, pg_catalog.max(i.number) FROM subscription.invoice_record AS i GROUP BY i.tenant_id, i.issuer;
UPDATE subscription.ledger AS l SET invoice_id = i.id
  FROM subscription.invoice_record AS i
 WHERE i.tenant_id = l.tenant_id AND i.account_id = l.account_id
   AND i.subscription_id IS NOT DISTINCT FROM l.subscription_id AND i.currency = l.currency
   AND i.at = coalesce(pg_catalog.lower(l.period), l.created_at);
UPDATE subscription.ledger AS l SET corrects_invoice_id = c.invoice_id
  FROM subscription.ledger AS c
 WHERE l.kind IN ('refund', 'credit') AND l.charge_id IS NOT NULL
   AND c.tenant_id = l.tenant_id AND c.id = l.charge_id;
ALTER TABLE subscription.ledger ALTER COLUMN invoice_id SET NOT NULL;

-- the previews return ledger rows: their column lists, with the new columns
CREATE OR REPLACE FUNCTION subscription.ledger_lines_of(subscription_id bigint, change text)
RETURNS SETOF subscription.ledger
LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM subscription.lines_of_change(NULL, subscription_id, change);
END;

COMMENT ON FUNCTION subscription.ledger_lines_of(bigint, text) IS 'Internal: the ledger lines a change would write, in a rolled-back subtransaction (Z9)';

CREATE OR REPLACE FUNCTION subscription.preview_change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT * FROM subscription.change_plan(%L, %L, %L)', subscription_id, plan, at));
END;

COMMENT ON FUNCTION subscription.preview_change_plan(bigint, text, timestamptz) IS 'The ledger lines change_plan would write, without writing them (Z9)';

CREATE OR REPLACE FUNCTION subscription.preview_set_quantity(subscription_id bigint, quantity integer, at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT subscription.set_quantity(%L, %L, %L)', subscription_id, quantity, at));
END;

COMMENT ON FUNCTION subscription.preview_set_quantity(bigint, integer, timestamptz) IS 'The ledger lines set_quantity would write, without writing them (Z9)';

CREATE OR REPLACE FUNCTION subscription.preview_purchase_addon(subscription_id bigint, addon text, quantity integer DEFAULT 1,
                                                    at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT subscription.purchase_addon(%L, %L, %L, %L)', subscription_id, addon, quantity, at));
END;

COMMENT ON FUNCTION subscription.preview_purchase_addon(bigint, text, integer, timestamptz) IS 'The ledger lines purchase_addon would write, without writing them (Z9)';

CREATE OR REPLACE FUNCTION subscription.preview_bundle_into_suite(account_id bigint, suite_plan text, quantity integer DEFAULT NULL,
                                                       at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.lines_of_change(account_id, NULL,
        format('SELECT subscription.bundle_into_suite(%L, %L, %L, %L)', account_id, suite_plan, quantity, at));
END;

COMMENT ON FUNCTION subscription.preview_bundle_into_suite(bigint, text, integer, timestamptz) IS 'The ledger lines bundle_into_suite would write, without writing them (Z9)';

-- Invoices and payments (issue 19, 1.1; docs/invoices.md): the invoice a
-- billing event's lines belong to (I1-I3), voiding it (I3), payments,
-- failures and payment methods (I4-I7), and what the customer downloads.

-- I1: a new invoice of the account, numbered in its issuer's series in this
-- transaction: the series row stays locked until the commit, so a
-- concurrent invoice of the series waits and takes the next number, and a
-- rollback gives the number back.  Its due date is subscription.payment_terms
-- days later; the method to charge is the account's default now.
CREATE FUNCTION subscription.open_invoice(tenant_id bigint, account_id bigint, subscription_id bigint,
                                          currency text, at timestamptz, plan text, corrects bigint,
                                          quiet boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    the_issuer text;
    next_number bigint;
    new_id bigint;
    method bigint;
    due timestamptz := at + make_interval(days => coalesce(current_setting('subscription.payment_terms', true), '0')::integer);
BEGIN
    PERFORM subscription.require_arguments('open_invoice', '{tenant_id,account_id,currency,at}',
        ARRAY[tenant_id IS NULL, account_id IS NULL, currency IS NULL, at IS NULL]);
    PERFORM subscription.require_account(open_invoice.tenant_id, open_invoice.account_id);
    IF subscription_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM subscription.subscription AS s
                        WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id) THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = open_invoice.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    -- every statement names the tenant, or reads the catalog alone: on
    -- Citus this runs in the ledger's trigger on the tenant's shard
    IF plan IS NULL AND subscription_id IS NOT NULL THEN
        plan := (SELECT s.plan FROM subscription.subscription AS s
                  WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id);
    END IF;
    the_issuer := coalesce((SELECT p.product FROM subscription.plan AS p WHERE p.code = open_invoice.plan), '');
    INSERT INTO subscription.invoice_series AS x (tenant_id, issuer, last_number)
    VALUES (open_invoice.tenant_id, the_issuer, 1)
    ON CONFLICT ON CONSTRAINT invoice_series_pkey DO UPDATE SET last_number = x.last_number + 1
    RETURNING x.last_number INTO next_number;
    -- no subquery in INSERT ... VALUES: Citus refuses it
    method := (SELECT m.id FROM subscription.payment_method AS m
                WHERE m.tenant_id = open_invoice.tenant_id AND m.account_id = open_invoice.account_id AND m.is_default);
    INSERT INTO subscription.invoice_record AS i
           (tenant_id, account_id, subscription_id, issuer, number, at, currency, due_at, payment_method_id,
            corrects_invoice_id)
    VALUES (open_invoice.tenant_id, open_invoice.account_id, open_invoice.subscription_id, the_issuer, next_number,
            open_invoice.at, open_invoice.currency, due, method, open_invoice.corrects)
    RETURNING i.id INTO new_id;
    IF quiet THEN
        RETURN new_id;
    END IF;
    PERFORM subscription.write_history('invoice_open', open_invoice.account_id, open_invoice.subscription_id,
        jsonb_build_object('invoice_id', new_id, 'issuer', the_issuer, 'number', next_number,
                           'currency', open_invoice.currency, 'corrects_invoice_id', open_invoice.corrects,
                           'due_at', due),
        open_invoice.tenant_id);
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.open_invoice(bigint, bigint, bigint, text, timestamptz, text, bigint, boolean) IS
'Internal: a new invoice, numbered gapless in its issuer''s series in this transaction, due after subscription.payment_terms days; quiet: no history (a restore) (I1, I3)';

-- I3: an invoice's status from its total and what was paid: paid once
-- nothing is due; a void or uncollectible invoice stays so.  A change of
-- status is a history row (and its event, E1).
-- (kept: the statements below need settle_invoice(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    new_status := CASE WHEN i.status IN ('void', 'uncollectible') THEN i.status
                       WHEN i.total - i.paid <= 0 THEN 'paid' ELSE 'open' END;
    IF new_status IS DISTINCT FROM i.status THEN
        UPDATE subscription.invoice_record AS r SET status = new_status
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
        IF quiet THEN
            RETURN new_status;
        END IF;
        PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id,
            jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                               'status', jsonb_build_object('old', i.status, 'new', new_status),
                               'total', i.total, 'paid', i.paid, 'currency', i.currency,
                               'at', coalesce(settle_invoice.at, i.at)),
            i.tenant_id);
    END IF;
    RETURN new_status;
END
$$;

-- I2: before each ledger line, the invoice it belongs to: the one this
-- transaction opened for the same account, subscription, time and
-- currency, or a new one; a refund or credit of a charge names the
-- charge's invoice as the one it corrects.  The invoice's total follows.
-- The one place lines meet invoices, whatever function writes them.
CREATE FUNCTION subscription.invoice_line()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line_at timestamptz := coalesce(lower(NEW.period), NEW.created_at);
    part numeric;
    -- a restore: by a restoring role, or as the docs say, with
    -- session_replication_role = replica (this trigger fires ALWAYS)
    restored boolean := current_setting('session_replication_role') = 'replica'
                        OR subscription.restored_copy('subscription.ledger_id_seq', NEW.id);
BEGIN
    -- a restore copies the invoices with their lines and totals; the lines
    -- of a dump from before 1.1 get theirs, as the upgrade gives them,
    -- without history (the dump's history is restored as it was)
    IF restored AND NEW.invoice_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    IF NEW.corrects_invoice_id IS NULL AND NEW.charge_id IS NOT NULL AND NEW.kind IN ('refund', 'credit') THEN
        NEW.corrects_invoice_id := (SELECT l.invoice_id FROM subscription.ledger AS l
                                     WHERE l.tenant_id = NEW.tenant_id AND l.id = NEW.charge_id);
    END IF;
    IF NEW.invoice_id IS NULL THEN
        NEW.invoice_id := (SELECT i.id FROM subscription.invoice_record AS i
                            WHERE i.tenant_id = NEW.tenant_id AND i.account_id = NEW.account_id
                              AND i.at = line_at AND i.currency = NEW.currency
                              AND i.subscription_id IS NOT DISTINCT FROM NEW.subscription_id
                              AND i.corrects_invoice_id IS NULL
                              AND i.xact = pg_current_xact_id()
                            ORDER BY i.id DESC LIMIT 1);
    END IF;
    IF NEW.invoice_id IS NULL THEN
        NEW.invoice_id := subscription.open_invoice(NEW.tenant_id, NEW.account_id, NEW.subscription_id, NEW.currency,
                                                    line_at, NEW.plan, NULL, restored);
    END IF;
    -- a value, not the (inlined) expression: Citus deparses an inlined
    -- CASE of parameters in an UPDATE wrongly
    part := subscription.line_amount(NEW.kind, NEW.amount);
    UPDATE subscription.invoice_record AS i
       SET total = i.total + part
     WHERE i.tenant_id = NEW.tenant_id AND i.id = NEW.invoice_id;
    PERFORM subscription.settle_invoice(NEW.tenant_id, NEW.invoice_id, restored, line_at);
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.invoice_line() IS
'Trigger: the invoice each ledger line belongs to, opened by the billing event''s first line, and its total (I1, I2)';

CREATE TRIGGER ledger_invoice BEFORE INSERT ON subscription.ledger
    FOR EACH ROW EXECUTE FUNCTION subscription.invoice_line();
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_invoice;

-- the tenant of a row written without one, from its account (as the other
-- tenant tables, 17_tenant_keys.sql)
CREATE TRIGGER payment_method_fill_tenant_id BEFORE INSERT ON subscription.payment_method
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('payment_method', 'account_id', 'account');
CREATE TRIGGER invoice_record_fill_tenant_id BEFORE INSERT ON subscription.invoice_record
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('invoice_record', 'account_id', 'account');
CREATE TRIGGER payment_fill_tenant_id BEFORE INSERT ON subscription.payment
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('payment', 'account_id', 'account');
ALTER TABLE subscription.payment_method ENABLE ALWAYS TRIGGER payment_method_fill_tenant_id;
ALTER TABLE subscription.invoice_record ENABLE ALWAYS TRIGGER invoice_record_fill_tenant_id;
ALTER TABLE subscription.payment ENABLE ALWAYS TRIGGER payment_fill_tenant_id;

-- The tenant of an invoice or a payment, by its id alone (NULL if unknown),
-- for the unkeyed forms.
-- PL/pgSQL: Citus cannot plan an SQL function's parameter
CREATE FUNCTION subscription.tenant_of_invoice(invoice_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT i.tenant_id FROM subscription.invoice_record AS i WHERE i.id = tenant_of_invoice.invoice_id);
END
$$;

COMMENT ON FUNCTION subscription.tenant_of_invoice(bigint) IS 'Internal: the tenant of an invoice, by its id (NULL if unknown)';

-- An invoice of the tenant, locked for a change: P0002 unless it exists,
-- 22023 if it is another tenant's.
CREATE FUNCTION subscription.invoice_for_change(fn text, tenant bigint, invoice_id bigint)
RETURNS subscription.invoice_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    owner bigint;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = invoice_for_change.tenant AND r.id = invoice_for_change.invoice_id FOR UPDATE;
    IF FOUND THEN
        RETURN i;
    END IF;
    owner := subscription.tenant_of_invoice(invoice_id);
    IF owner IS NULL THEN
        RAISE EXCEPTION 'invoice % does not exist', invoice_id USING ERRCODE = 'no_data_found';
    END IF;
    IF invoice_for_change.tenant IS NULL THEN
        RAISE EXCEPTION 'argument "tenant_id" of %() must not be null', fn USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RAISE EXCEPTION 'invoice % is not of tenant %', invoice_id, invoice_for_change.tenant
        USING ERRCODE = 'invalid_parameter_value',
              HINT = format('subscription.%s(invoice_id, ...) without the tenant finds it.', fn);
END
$$;

COMMENT ON FUNCTION subscription.invoice_for_change(text, bigint, bigint) IS
'Internal: an invoice of the tenant, locked (P0002 unless it exists, 22023 if another tenant''s)';

-- A ledger line's part of an invoice's total: a charge adds, every other
-- kind takes off (the invoice view's balance, I2).
CREATE FUNCTION subscription.line_amount(kind text, amount numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE line_amount.kind WHEN 'charge' THEN line_amount.amount ELSE OPERATOR(pg_catalog.-) line_amount.amount END;

COMMENT ON FUNCTION subscription.line_amount(text, numeric) IS
'Internal: a ledger line''s part of its invoice''s total: a charge adds, every other kind takes off (I2)';

-- I3: void an open invoice that nothing paid: a correcting invoice gives
-- each charge back net of its coupon (a refund line naming it), and the
-- invoice is void.  No line is deleted.
-- (kept: the statements below need void_invoice(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.void_invoice(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    correction bigint;
    c record;
BEGIN
    PERFORM subscription.require_arguments('void_invoice', '{invoice_id,reason,at}',
        ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('void_invoice', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('void_invoice', at, false);
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'a void needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status <> 'open' OR i.paid > 0 THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number,
                        CASE WHEN i.status = 'open' THEN 'partly paid' ELSE i.status END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only an open invoice without payments can be voided; give money back with a refund or a credit.';
    END IF;
    IF EXISTS (SELECT FROM subscription.ledger AS l
                WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind NOT IN ('charge', 'discount'))
       OR EXISTS (SELECT FROM subscription.ledger AS l JOIN subscription.ledger AS g
                    ON g.tenant_id = l.tenant_id AND g.charge_id = l.id AND g.kind IN ('refund', 'credit')
                   WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id) THEN
        RAISE EXCEPTION 'invoice % has credits, refunds or credit used', i.document_number
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only charges and their coupons can be voided; give money back with a refund or a credit.';
    END IF;
    correction := subscription.open_invoice(i.tenant_id, i.account_id, i.subscription_id, i.currency,
                                            void_invoice.at, NULL, i.id);
    FOR c IN SELECT l.*, coalesce((SELECT d.amount FROM subscription.ledger AS d
                                    WHERE d.tenant_id = l.tenant_id AND d.charge_id = l.id AND d.kind = 'discount'), 0) AS off
               FROM subscription.ledger AS l
              WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind = 'charge'
              ORDER BY l.id LOOP
        IF c.amount - c.off > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description, invoice_id, corrects_invoice_id)
            VALUES (i.tenant_id, i.account_id, c.subscription_id, c.addon_batch_id, 'refund', c.amount - c.off,
                    c.currency, c.period, c.item, c.plan, c.id,
                    format('void of invoice %s: %s', i.document_number, reason), correction, i.id);
        END IF;
    END LOOP;
    UPDATE subscription.invoice_record AS r SET status = 'void', void_reason = reason
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                           'status', jsonb_build_object('old', i.status, 'new', 'void'), 'reason', reason,
                           'correcting_invoice_id', correction, 'total', i.total, 'paid', i.paid,
                           'currency', i.currency, 'at', void_invoice.at),
        i.tenant_id);
    RETURN correction;
END
$$;

CREATE FUNCTION subscription.void_invoice(invoice_id bigint, reason text, at timestamptz DEFAULT subscription.now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.void_invoice(subscription.tenant_of_invoice(void_invoice.invoice_id), void_invoice.invoice_id,
                                     void_invoice.reason, void_invoice.at);
END
$$;

-- I4, I5: money received for an invoice.  Payments add up; what is above
-- what was due becomes the account's credit (L9: a credit line the next
-- charges use); a reference already recorded returns its payment and
-- changes nothing; the invoice's currency only.  Paid in full: status paid.
CREATE FUNCTION subscription.record_payment(tenant_id bigint, invoice_id bigint, amount numeric, reference text,
                                            at timestamptz, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    earlier subscription.payment;
    excess numeric;
    credit_line bigint;
    new_id bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_payment(bigint,bigint,numeric,text,timestamptz,text)', record_payment.tenant_id,
            pg_catalog.jsonb_build_array(record_payment.tenant_id, record_payment.invoice_id, record_payment.amount, record_payment.reference, record_payment.at, record_payment.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('record_payment', '{invoice_id,amount,reference,at}',
        ARRAY[invoice_id IS NULL, amount IS NULL, reference IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('record_payment', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    -- I5: once per reference
    SELECT * INTO earlier FROM subscription.payment AS p
     WHERE p.tenant_id = i.tenant_id AND p.reference = record_payment.reference;
    IF FOUND THEN
        IF earlier.invoice_id <> i.id THEN
            RAISE EXCEPTION 'payment reference "%" is already recorded for another invoice', reference
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Payment %s of invoice %s has it.', earlier.id, earlier.invoice_id);
        END IF;
        RETURN earlier.id;
    END IF;
    PERFORM subscription.require_time('record_payment', at, false);
    IF currency IS NOT NULL AND currency <> i.currency THEN
        RAISE EXCEPTION 'invoice % is in %, not %', i.document_number, i.currency, currency
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Record the payment in the invoice''s currency.';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity' OR amount <> subscription.round_money(amount, i.currency) THEN
        RAISE EXCEPTION 'a payment must be a positive amount in the minor unit of %', i.currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, i.currency);
    IF btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment needs the provider''s reference' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status IN ('void', 'uncollectible') THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    excess := amount - greatest(i.total - i.paid, 0);
    IF excess > 0 THEN
        INSERT INTO subscription.ledger AS l
               (tenant_id, account_id, kind, amount, currency, item, description, corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, 'credit', excess, i.currency, 'credit',
                format('overpayment of invoice %s (%s)', i.document_number, reference), i.id)
        RETURNING l.id INTO credit_line;
    END IF;
    INSERT INTO subscription.payment AS p
           (tenant_id, invoice_id, account_id, amount, currency, reference, payment_method_id, at, credit_line_id)
    VALUES (i.tenant_id, i.id, i.account_id, amount, i.currency, reference, i.payment_method_id, at, credit_line)
    RETURNING p.id INTO new_id;
    UPDATE subscription.invoice_record AS r SET paid = r.paid + amount - greatest(excess, 0)
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.write_history('payment', i.account_id, i.subscription_id,
        jsonb_build_object('payment_id', new_id, 'invoice_id', i.id, 'amount', amount, 'currency', i.currency,
                           'reference', reference, 'credited', greatest(excess, 0)),
        i.tenant_id);
    PERFORM subscription.settle_invoice(i.tenant_id, i.id, false, at);
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.record_payment(bigint, bigint, numeric, text, timestamptz, text) IS
'Record a payment of an invoice: payments add up, an overpayment becomes credit, once per reference (I4, I5, L9) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.record_payment(invoice_id bigint, amount numeric, reference text,
                                            at timestamptz DEFAULT subscription.now(), currency text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.record_payment(subscription.tenant_of_invoice(record_payment.invoice_id), record_payment.invoice_id,
                                       record_payment.amount, record_payment.reference, record_payment.at,
                                       record_payment.currency);
END
$$;

COMMENT ON FUNCTION subscription.record_payment(bigint, numeric, text, timestamptz, text) IS
'Record a payment of an invoice: payments add up, an overpayment becomes credit, once per reference (I4, I5, L9)';

-- I6: a failed attempt to charge an invoice, in history (and its event
-- payment.failed, E1); what follows a failure is the dunning's.
-- (kept: the statements below need record_payment_failure(); its final text follows
-- in section "Past due and dunning")
CREATE FUNCTION subscription.record_payment_failure(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
BEGIN
    PERFORM subscription.require_arguments('record_payment_failure', '{invoice_id,reason,at}',
        ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('record_payment_failure', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('record_payment_failure', at, false);
    IF i.status <> 'open' THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only an open invoice can fail to be paid.';
    END IF;
    PERFORM subscription.write_history('payment_failure', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'reason', reason, 'at', at, 'payment_method_id', i.payment_method_id,
                           'due', i.total - i.paid, 'currency', i.currency,
                           'attempt', 1 + (SELECT count(*) FROM subscription.history AS h
                                            WHERE h.tenant_id = i.tenant_id AND h.account_id = i.account_id
                                              AND h.operation = 'payment_failure'
                                              AND h.details -> 'invoice_id' = to_jsonb(i.id))),
        i.tenant_id);
END
$$;

CREATE FUNCTION subscription.record_payment_failure(invoice_id bigint, reason text, at timestamptz DEFAULT subscription.now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.record_payment_failure(subscription.tenant_of_invoice(record_payment_failure.invoice_id),
                                                record_payment_failure.invoice_id, record_payment_failure.reason,
                                                record_payment_failure.at);
END
$$;

COMMENT ON FUNCTION subscription.record_payment_failure(bigint, text, timestamptz) IS
'Record a failed charge of an open invoice in history, and its event payment.failed (I6)';

-- I7: a payment method of an account; a default one takes over from the
-- previous default.  A card number in reference or label is refused (23514).
CREATE FUNCTION subscription.add_payment_method(tenant_id bigint, account_id bigint, kind text, reference text,
                                                label text, is_default boolean)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.add_payment_method(bigint,bigint,text,text,text,boolean)', add_payment_method.tenant_id,
            pg_catalog.jsonb_build_array(add_payment_method.tenant_id, add_payment_method.account_id, add_payment_method.kind, add_payment_method.reference, add_payment_method.label, add_payment_method.is_default)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('add_payment_method', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('add_payment_method', '{account_id,kind,reference,is_default}',
        ARRAY[account_id IS NULL, kind IS NULL, reference IS NULL, is_default IS NULL]);
    PERFORM subscription.require_account(add_payment_method.tenant_id, add_payment_method.account_id);
    PERFORM subscription.authorize(add_payment_method.tenant_id, add_payment_method.account_id, 'pay', false);
    IF subscription.has_card_number(reference) OR subscription.has_card_number(label) THEN
        RAISE EXCEPTION 'a payment method must not hold a card number'
            USING ERRCODE = 'check_violation',
                  DETAIL = 'The reference or the label holds a Luhn-valid run of 13 to 19 digits.',
                  HINT = 'Store the payment provider''s token, and at most the last four digits in the label.';
    END IF;
    IF kind !~ '^[a-z][a-z_]*$' OR btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment method needs a kind in lower case and the provider''s reference'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The kind was "%s".', kind);
    END IF;
    IF is_default THEN
        -- the account's row first: two new defaults of one account one after the other
        PERFORM FROM subscription.account AS a
         WHERE a.tenant_id = add_payment_method.tenant_id AND a.id = add_payment_method.account_id FOR NO KEY UPDATE;
        UPDATE subscription.payment_method AS m SET is_default = false
         WHERE m.tenant_id = add_payment_method.tenant_id AND m.account_id = add_payment_method.account_id
           AND m.is_default;
    END IF;
    INSERT INTO subscription.payment_method AS m (tenant_id, account_id, kind, reference, label, is_default)
    VALUES (add_payment_method.tenant_id, add_payment_method.account_id, kind, reference, label, is_default)
    RETURNING m.id INTO new_id;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.add_payment_method(bigint, bigint, text, text, text, boolean) IS
'Add a payment method (the provider''s token, never a card number) to an account, the default one if asked (I7) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.add_payment_method(account_id bigint, kind text, reference text, label text DEFAULT NULL,
                                                is_default boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.add_payment_method(subscription.tenant_of('account', add_payment_method.account_id),
                                           add_payment_method.account_id, add_payment_method.kind,
                                           add_payment_method.reference, add_payment_method.label,
                                           add_payment_method.is_default);
END
$$;

COMMENT ON FUNCTION subscription.add_payment_method(bigint, text, text, text, boolean) IS
'Add a payment method (the provider''s token, never a card number) to an account, the default one if asked (I7)';

-- I6: one row per payment, the receipt: what was paid for which invoice,
-- with what method, and what of it became credit.
-- (kept: the statements below need receipt; its final text follows in section
-- "Shard-safe lookups", with may_read(tenant_id, account_id), made there)
CREATE VIEW subscription.receipt WITH (security_barrier) AS
SELECT p.id AS payment_id,
       p.account_id,
       p.invoice_id,
       i.document_number,
       p.at,
       p.amount,
       p.currency,
       p.reference,
       m.kind AS payment_method,
       m.label AS payment_method_label,
       coalesce(c.amount, 0) AS credited,
       i.total,
       i.status
  FROM subscription.payment AS p
  JOIN subscription.invoice_record AS i ON i.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND i.id OPERATOR(pg_catalog.=) p.invoice_id
  LEFT JOIN subscription.payment_method AS m
    ON m.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND m.id OPERATOR(pg_catalog.=) p.payment_method_id
  LEFT JOIN subscription.ledger AS c ON c.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND c.id OPERATOR(pg_catalog.=) p.credit_line_id
 WHERE subscription.may_read(p.account_id);

COMMENT ON VIEW subscription.receipt IS
'One row per payment: its invoice, amount, method, and the part credited to the account (I6)';

-- I6: each account's open balance, invoice by invoice: what is still due on
-- each open invoice, and the account's running total, oldest due first.
-- (kept: the statements below need open_balance; its final text follows in section
-- "Shard-safe lookups", with may_read(tenant_id, account_id), made there)
CREATE VIEW subscription.open_balance WITH (security_barrier) AS
SELECT i.account_id,
       i.id AS invoice_id,
       i.document_number,
       i.at,
       i.due_at,
       i.currency,
       i.total,
       i.paid,
       i.total OPERATOR(pg_catalog.-) i.paid AS due,
       sum(i.total OPERATOR(pg_catalog.-) i.paid)
           OVER (PARTITION BY i.account_id, i.currency ORDER BY i.due_at, i.id) AS balance
  FROM subscription.invoice_record AS i
 WHERE i.status OPERATOR(pg_catalog.=) 'open' AND subscription.may_read(i.account_id);

COMMENT ON VIEW subscription.open_balance IS
'Each account''s open invoices, what is due on each and the running balance, oldest due first (I6)';

-- Text made safe for an HTML page.
CREATE FUNCTION subscription.html_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(html_escape.t, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
                       '"', '&quot;'), '''', '&#39;');

COMMENT ON FUNCTION subscription.html_escape(text) IS 'Internal: text made safe for an HTML page';

-- An amount as the currency prints it: all the digits of its minor unit.
CREATE FUNCTION subscription.money_text(amount numeric, currency text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.round(money_text.amount, subscription.money_scale(money_text.currency))::text OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) money_text.currency;

COMMENT ON FUNCTION subscription.money_text(numeric, text) IS 'Internal: an amount with every digit of its currency''s minor unit, and the currency';

-- A document (invoice or receipt) in a format: its title, its header
-- fields, its lines (label, detail, amount) and its closing fields, as a
-- self-contained HTML page or as text.  The one renderer of both.
CREATE FUNCTION subscription.render_document(format text, title text, head text[], lines text[], foot text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out text;
    k integer;
BEGIN
    IF format = 'text' THEN
        out := title || E'\n' || repeat('=', length(title)) || E'\n';
        FOR k IN 1 .. coalesce(array_length(head, 1), 0) / 2 LOOP
            out := out || rpad(head[2 * k - 1] || ':', 16) || head[2 * k] || E'\n';
        END LOOP;
        out := out || E'\n';
        -- a line: its label and amount, then its detail below it
        FOR k IN 1 .. coalesce(array_length(lines, 1), 0) / 3 LOOP
            out := out || lines[3 * k - 2] || repeat(' ', greatest(1, 56 - length(lines[3 * k - 2])))
                       || lpad(lines[3 * k], 16) || E'\n'
                       || coalesce('    ' || nullif(lines[3 * k - 1], '') || E'\n', '');
        END LOOP;
        out := out || E'\n';
        FOR k IN 1 .. coalesce(array_length(foot, 1), 0) / 2 LOOP
            out := out || foot[2 * k - 1] || ':' || repeat(' ', greatest(1, 55 - length(foot[2 * k - 1])))
                       || lpad(foot[2 * k], 16) || E'\n';
        END LOOP;
        RETURN out;
    ELSIF format = 'html' THEN
        out := '<!DOCTYPE html>' || E'\n' || '<html><head><meta charset="utf-8"><title>'
            || subscription.html_escape(title) || '</title><style>'
            || 'body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.4em}'
            || 'table{border-collapse:collapse;width:100%}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}'
            || 'td.amount,th.amount{text-align:right;white-space:nowrap}dl{display:grid;grid-template-columns:10em auto}'
            || 'dt{font-weight:bold}tfoot td{font-weight:bold}'
            || '</style></head><body>' || E'\n<h1>' || subscription.html_escape(title) || E'</h1>\n<dl>';
        FOR k IN 1 .. coalesce(array_length(head, 1), 0) / 2 LOOP
            out := out || '<dt>' || subscription.html_escape(head[2 * k - 1]) || '</dt><dd>'
                       || subscription.html_escape(head[2 * k]) || '</dd>';
        END LOOP;
        out := out || E'</dl>\n<table><thead><tr><th>Item</th><th>Detail</th><th class="amount">Amount</th></tr></thead><tbody>\n';
        FOR k IN 1 .. coalesce(array_length(lines, 1), 0) / 3 LOOP
            out := out || '<tr><td>' || subscription.html_escape(lines[3 * k - 2]) || '</td><td>'
                       || subscription.html_escape(coalesce(lines[3 * k - 1], '')) || '</td><td class="amount">'
                       || subscription.html_escape(lines[3 * k]) || E'</td></tr>\n';
        END LOOP;
        out := out || '</tbody><tfoot>';
        FOR k IN 1 .. coalesce(array_length(foot, 1), 0) / 2 LOOP
            out := out || '<tr><td colspan="2">' || subscription.html_escape(foot[2 * k - 1])
                       || '</td><td class="amount">' || subscription.html_escape(foot[2 * k]) || '</td></tr>';
        END LOOP;
        RETURN out || E'</tfoot></table>\n</body></html>\n';
    END IF;
    RAISE EXCEPTION 'unknown document format "%"', format
        USING ERRCODE = 'invalid_parameter_value', HINT = 'The formats are html and text.';
END
$$;

COMMENT ON FUNCTION subscription.render_document(text, text, text[], text[], text[]) IS
'Internal: an invoice or receipt as a self-contained HTML page or as text';

-- I3: the invoice a customer downloads: issuer, number, dates, each line
-- with its plan and period, coupons and credits, the total, and what was
-- paid with which method.
CREATE FUNCTION subscription.invoice_document(invoice_id bigint, format text DEFAULT 'html')
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    m subscription.payment_method;
    a subscription.account;
    lines text[] := '{}';
    l record;
    -- a value first: on Citus the lookup may not run inside the shard's query
    tenant bigint := subscription.tenant_of_invoice(invoice_document.invoice_id);
BEGIN
    PERFORM subscription.require_arguments('invoice_document', '{invoice_id,format}',
        ARRAY[invoice_id IS NULL, format IS NULL]);
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = tenant AND r.id = invoice_document.invoice_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % does not exist', invoice_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'read', false);
    SELECT * INTO a FROM subscription.account AS x WHERE x.tenant_id = i.tenant_id AND x.id = i.account_id;
    SELECT * INTO m FROM subscription.payment_method AS x WHERE x.tenant_id = i.tenant_id AND x.id = i.payment_method_id;
    FOR l IN SELECT x.kind, x.amount, x.item, x.period, x.description, p.name AS plan_name
               FROM subscription.ledger AS x LEFT JOIN subscription.plan AS p ON p.code = x.plan
              WHERE x.tenant_id = i.tenant_id AND x.invoice_id = i.id ORDER BY x.id LOOP
        lines := lines || ARRAY[
            CASE l.kind WHEN 'charge' THEN coalesce(l.plan_name, l.description)
                        WHEN 'discount' THEN 'Coupon' WHEN 'credit_used' THEN 'Credit applied'
                        WHEN 'refund' THEN 'Refund' ELSE 'Credit' END
              || CASE WHEN l.kind = 'charge' AND l.item <> 'plan' THEN ' (' || l.item || ')' ELSE '' END,
            concat_ws(', ',
                CASE WHEN l.period IS NOT NULL
                     THEN to_char(lower(l.period) AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' to '
                          || to_char(upper(l.period) AT TIME ZONE 'UTC', 'YYYY-MM-DD') END,
                CASE WHEN l.kind <> 'charge' OR l.plan_name IS NOT NULL THEN l.description END),
            subscription.money_text(subscription.line_amount(l.kind, l.amount), i.currency)];
    END LOOP;
    RETURN subscription.render_document(format,
        CASE WHEN i.corrects_invoice_id IS NOT NULL THEN 'Credit note ' ELSE 'Invoice ' END || i.document_number,
        ARRAY['Issuer', coalesce((SELECT p.name FROM subscription.product AS p WHERE p.code = i.issuer), 'Account'),
              'Billed to', coalesce(a.name, 'account ' || a.id),
              'Date', to_char(i.at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              'Due', to_char(i.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              'Status', i.status],
        lines,
        ARRAY['Total', subscription.money_text(i.total, i.currency),
              'Paid' || coalesce(' by ' || m.kind || coalesce(' ' || m.label, ''), ''),
              subscription.money_text(i.paid, i.currency),
              'Due', subscription.money_text(greatest(i.total - i.paid, 0), i.currency)]);
END
$$;

COMMENT ON FUNCTION subscription.invoice_document(bigint, text) IS
'The invoice a customer downloads, as a self-contained HTML page or as text (I3)';

-- I6: the receipt of a payment, as a page or as text.
CREATE FUNCTION subscription.receipt_document(payment_id bigint, format text DEFAULT 'html')
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    billed_to text;
    credited numeric;
BEGIN
    PERFORM subscription.require_arguments('receipt_document', '{payment_id,format}',
        ARRAY[payment_id IS NULL, format IS NULL]);
    SELECT p.*, i.document_number, i.issuer, i.total, i.paid AS invoice_paid, m.kind AS method, m.label
      INTO r
      FROM subscription.payment AS p
      JOIN subscription.invoice_record AS i ON i.tenant_id = p.tenant_id AND i.id = p.invoice_id
      LEFT JOIN subscription.payment_method AS m ON m.tenant_id = p.tenant_id AND m.id = p.payment_method_id
     WHERE p.id = receipt_document.payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % does not exist', payment_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(r.tenant_id, r.account_id, 'read', false);
    -- the tenant's rows read first: on Citus a statement that reads one
    -- may not also call what reads the catalog (money_text)
    billed_to := coalesce((SELECT a.name FROM subscription.account AS a
                            WHERE a.tenant_id = r.tenant_id AND a.id = r.account_id), 'account ' || r.account_id);
    credited := (SELECT c.amount FROM subscription.ledger AS c WHERE c.tenant_id = r.tenant_id AND c.id = r.credit_line_id);
    RETURN subscription.render_document(format, 'Receipt for invoice ' || r.document_number,
        ARRAY['Issuer', coalesce((SELECT p.name FROM subscription.product AS p WHERE p.code = r.issuer), 'Account'),
              'Billed to', billed_to,
              'Paid on', to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              'Reference', r.reference,
              'Method', coalesce(r.method || coalesce(' ' || r.label, ''), 'not recorded')],
        ARRAY['Payment', 'invoice ' || r.document_number, subscription.money_text(r.amount, r.currency)]
          || CASE WHEN r.credit_line_id IS NOT NULL
                  THEN ARRAY['Credited to the account', 'above what was due',
                             subscription.money_text(-credited, r.currency)]
                  ELSE '{}' END,
        ARRAY['Invoice total', subscription.money_text(r.total, r.currency),
              'Paid on the invoice', subscription.money_text(r.invoice_paid, r.currency)]);
END
$$;

COMMENT ON FUNCTION subscription.receipt_document(bigint, text) IS
'The receipt of a payment, as a self-contained HTML page or as text (I6)';

-- pg_dump keeps the invoices, payments and payment methods (issue 19)
SELECT pg_catalog.pg_extension_config_dump('subscription.payment_method', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.invoice_series', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.invoice_record', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.payment', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.payment_method_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.invoice_record_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.payment_id_seq', '');

REVOKE ALL ON FUNCTION subscription.has_card_number(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.open_invoice(bigint, bigint, bigint, text, timestamptz, text, bigint, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_line() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.tenant_of_invoice(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_for_change(text, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.line_amount(text, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.void_invoice(bigint, bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.void_invoice(bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_payment(bigint, bigint, numeric, text, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_payment(bigint, numeric, text, timestamptz, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_payment_failure(bigint, bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_payment_failure(bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.add_payment_method(bigint, bigint, text, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.add_payment_method(bigint, text, text, text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.html_escape(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.money_text(numeric, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.render_document(text, text, text[], text[], text[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_document(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.receipt_document(bigint, text) FROM PUBLIC;

-- Set-based renewals (issue 18, item 2) ----------------------------------
-- renew_common and renew_common_group: the common renewals of a batch,
-- set-based; renew_batch (its final text) calls them on a single server.

-- The renewals of one batch of renew_batch on a single server (issue 18):
-- its tenants in their order, those whose every due subscription renews
-- the common way set-based, the others by renew_account.  Consecutive
-- common tenants are renewed together in a few statements: one UPDATE
-- moving their periods, one INSERT of their charges (the plan, and each
-- recurring add-on batch, C2), subscription by subscription in the order
-- and with the columns that renew_account gives them, so that the
-- triggers (history, coupon and credit, events) write the same rows.  The
-- common way: active, not paused, no pending plan, cycle or quantity (C4,
-- Z7), no migration due (L6), renewal 'always' (R6), a product that keeps
-- its quantity (L7), no batch cancelled for the period end (K4: nothing to
-- trim, renewal_may_trim), a price for the plan (find_price) and its
-- batches, and one period to catch up (the next one ends after "at").  A
-- tenant is taken as renew_account takes it (the lock of its root
-- account, SKIP LOCKED) and so are its subscriptions (FOR NO KEY UPDATE
-- SKIP LOCKED); a tenant held by another session, or a common one with a
-- subscription still due (held by another transaction), goes to
-- renew_account.  Returns how many it handled, and the tenants that
-- renew_account had (whose subscriptions may be left due).  Single server:
-- on Citus each tenant is renewed by renew_account on the node of its
-- shards (docs/citus.md).
-- the set-based path asks it once per add-on and cycle
CREATE FUNCTION subscription.renew_common(tenants bigint[], at timestamptz, OUT handled integer, OUT rest bigint[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint[];
    ts bigint[];
    ids bigint[];
    pos bigint[];
    tenant bigint;
    other bigint;
    n integer := 0;
    first_n integer;
    left_to bigint[];
BEGIN
    handled := 0;
    rest := '{}';
    -- the tenants' locks, as renew_account takes them
    locked := ARRAY(SELECT a.id FROM subscription.account AS a
                     WHERE a.tenant_id = ANY (tenants) AND a.id = a.tenant_id
                     ORDER BY a.id
                       FOR NO KEY UPDATE SKIP LOCKED);
    -- their due subscriptions, locked; the tenants all of whose due
    -- subscriptions renew the common way
    WITH due AS (
        SELECT x.tenant_id, x.id, upper(x.period) AS e, x.plan, x.cycle, x.quantity, x.plan_version,
               x.status = 'active' AND x.paused_at IS NULL AND NOT x.cancel_at_period_end AND x.renewal = 'always'
               AND x.pending_plan IS NULL AND x.pending_cycle IS NULL AND x.pending_quantity IS NULL
               AND NOT coalesce(x.migrate_at <= upper(x.period), false)
               AND upper(subscription.nth_period(x.anchor, x.cycle, x.period_number + 1)) > at AS plain
          FROM subscription.subscription AS x
         WHERE x.tenant_id = ANY (locked) AND x.status IN ('active', 'trialing') AND upper(x.period) <= at
           FOR NO KEY UPDATE OF x SKIP LOCKED),
         -- each plan, cycle, quantity and version priced once
         terms AS (
        SELECT DISTINCT ON (d.plan, d.cycle::text, d.quantity, d.plan_version)
               d.plan, d.cycle, d.quantity, d.plan_version,
               (subscription.find_price(d.plan, d.cycle, d.quantity, d.plan_version)).problem IS NULL
               AND pr.renewal_quantity = 'keep'
               -- usage billed in arrears (issue 21): renew_period bills it
               AND NOT EXISTS (SELECT FROM subscription.plan_usage_price AS up WHERE up.plan = d.plan) AS plain
          FROM due AS d
          JOIN subscription.plan AS p ON p.code = d.plan
          JOIN subscription.product AS pr ON pr.code = p.product
         WHERE d.plain),
         -- the active batches of the plain ones, and whether each add-on
         -- renews priced at its cycle (priceless_addons, renewal_problem's
         -- rule), asked once per add-on and cycle
         batches AS (
        SELECT d.tenant_id, d.id, b.addon, d.cycle, b.cancel_at_period_end
          FROM due AS d
          JOIN subscription.addon_batch AS b ON b.tenant_id = d.tenant_id AND b.subscription_id = d.id
         WHERE d.plain AND b.status = 'active'),
         addon_terms AS (
        SELECT t.addon, t.cycle, subscription.priceless_addons(ARRAY[t.addon], t.cycle) IS NULL AS priced
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text) b.addon, b.cycle FROM batches AS b) AS t),
         checked AS (
        SELECT d.tenant_id, d.id, d.e,
               d.plain AND coalesce(tm.plain, false)
               -- a batch cancelled for the period end (K4) goes to renew_account
               AND NOT EXISTS (SELECT FROM batches AS b
                                 JOIN addon_terms AS pt ON pt.addon = b.addon AND pt.cycle::text = b.cycle::text
                                WHERE b.tenant_id = d.tenant_id AND b.id = d.id
                                  AND (b.cancel_at_period_end OR NOT pt.priced)) AS plain
          FROM due AS d
          LEFT JOIN terms AS tm
            ON tm.plan = d.plan AND tm.cycle::text = d.cycle::text AND tm.quantity = d.quantity
           AND tm.plan_version = d.plan_version)
    -- each tenant's in its order, as renew_account renews them
    SELECT array_agg(c.tenant_id ORDER BY u.k, c.e, c.id), array_agg(c.id ORDER BY u.k, c.e, c.id),
           array_agg(u.k ORDER BY u.k, c.e, c.id)
      INTO ts, ids, pos
      FROM checked AS c
      JOIN unnest(tenants) WITH ORDINALITY AS u(tenant_id, k) ON u.tenant_id = c.tenant_id
     WHERE c.tenant_id IN (SELECT x.tenant_id FROM checked AS x GROUP BY x.tenant_id HAVING bool_and(x.plain));
    ts := coalesce(ts, '{}');

    -- the tenants in their order; a NULL at the end renews the last group
    FOREACH tenant IN ARRAY tenants || NULL::bigint LOOP
        n := n + 1;
        IF tenant = ANY (ts) THEN
            first_n := coalesce(first_n, n);
            CONTINUE;
        END IF;
        IF first_n IS NOT NULL THEN
            PERFORM subscription.renew_common_group(
                ARRAY(SELECT g.t FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1),
                ARRAY(SELECT g.id FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1));
            handled := handled + (SELECT count(*) FROM unnest(pos) AS g(k) WHERE g.k BETWEEN first_n AND n - 1);
            -- a common tenant with a subscription still due: renew_account's
            left_to := ARRAY(SELECT u.t FROM unnest(tenants) WITH ORDINALITY AS u(t, k)
                              WHERE u.k BETWEEN first_n AND n - 1
                                AND EXISTS (SELECT FROM subscription.subscription AS x
                                             WHERE x.tenant_id = u.t AND x.status IN ('active', 'trialing')
                                               AND upper(x.period) <= at)
                              ORDER BY u.k);
            FOREACH other IN ARRAY left_to LOOP
                handled := handled + subscription.renew_account(other, at);
            END LOOP;
            rest := rest || left_to;
            first_n := NULL;
        END IF;
        IF tenant IS NOT NULL THEN
            handled := handled + subscription.renew_account(tenant, at);
            rest := rest || tenant;
        END IF;
    END LOOP;
END
$$;

-- One group of common renewals of renew_common (issue 18), subscriptions
-- given in renewal order and locked: one UPDATE moving their periods as
-- renew_period's common renewal does, one INSERT of their charges.  The
-- row triggers fire in the order of the rows: the UPDATE takes them in
-- the order given (a nested loop over the key; no hash or merge join,
-- which would take them in the table's order), the INSERT by its ORDER BY,
-- so that history, events and credit uses come in renewal order.
CREATE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    -- the periods move (renew_period's common renewal)
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;

    -- C2: the constraint makes a second charge of the period impossible;
    -- each subscription's plan line, then its batches', in renewal order
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS (
        SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
               s.plan, s.cycle, s.quantity, s.plan_version, pp.amount, pp.currency
          FROM s CROSS JOIN LATERAL subscription.period_price(s.plan, s.cycle, s.quantity, s.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS (
        SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity, ap.amount, ap.currency
          FROM batches AS b CROSS JOIN LATERAL subscription.addon_period_price(b.addon, b.cycle, b.quantity) AS ap)
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, subscription.round_money(p.amount, p.currency) AS amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, s.cycle, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT s.k, b.id, s.tenant_id, s.account_id, s.id, b.id,
                   subscription.round_money(ap.amount, ap.currency), ap.currency, s.period, 'addon', s.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, s.cycle)
              FROM s
              JOIN batches AS b ON b.k = s.k
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l
     ORDER BY l.k, l.batch_order
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
END
$$;

COMMENT ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) IS
'Internal: one group of common renewals, set-based: one UPDATE moving the periods, one INSERT of the charges';

COMMENT ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint, bigint[], bigint) IS
'Internal: one batch of renew_due, run_renewals and renew_local_tenants: the tenants of the next due subscriptions, each by renew_account';

-- PUBLIC executes nothing (99_public.sql)
REVOKE ALL ON FUNCTION subscription.renew_common(bigint[], timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) FROM PUBLIC;

------------------------------------------------------------------------
-- The billing clock (issue 20): subscription.now() itself is created at
-- the top of this script, since every section calls it; here, the 1.0
-- objects that no earlier section replaces.
------------------------------------------------------------------------

ALTER TABLE subscription.account ALTER COLUMN created_at SET DEFAULT subscription.now();
ALTER TABLE subscription.subscription ALTER COLUMN created_at SET DEFAULT subscription.now();
ALTER TABLE subscription.license ALTER COLUMN assigned_at SET DEFAULT subscription.now();
ALTER TABLE subscription.addon_batch ALTER COLUMN purchased_at SET DEFAULT subscription.now();
ALTER TABLE subscription.ledger ALTER COLUMN created_at SET DEFAULT subscription.now();
ALTER TABLE subscription.history ALTER COLUMN at SET DEFAULT subscription.now();
ALTER TABLE subscription.trimmed ALTER COLUMN at SET DEFAULT subscription.now();
ALTER TABLE subscription.limited_table ALTER COLUMN registered_at SET DEFAULT subscription.now();

-- Entitlements stored, has_feature() one index probe; the catalog's
-- refresh_limits triggers per statement (issue 21 item 5, issue 18) ------

-- The features each account's plans and add-ons grant (issue 21, item 5):
-- one row per (account, feature) granted, that is whose granted_limit is
-- above 0 or unlimited (granted_features), kept by refresh_account_limits in
-- the transaction that changes what it is computed from, so that
-- has_feature() answers with one index probe.  Derived data: it cascades
-- with its account.
CREATE TABLE subscription.entitlement (
    tenant_id  bigint NOT NULL,
    account_id bigint NOT NULL,
    feature    text NOT NULL,
    CONSTRAINT entitlement_pkey PRIMARY KEY (tenant_id, account_id, feature),
    CONSTRAINT entitlement_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id) ON DELETE CASCADE
);
-- has_feature() finds a row by its account and feature
CREATE INDEX ON subscription.entitlement (account_id, feature);

COMMENT ON TABLE subscription.entitlement IS 'The features each account''s plans and add-ons grant (has_feature), kept with the stored limits';

SELECT pg_catalog.pg_extension_config_dump('subscription.entitlement', '');

-- the rule in one place: granted_limits (of one feature, or all),
-- granted_limit and granted_features read it
DROP FUNCTION subscription.feature_granted(bigint, text);

-- What an account's plans and add-ons grant, per feature (of one feature,
-- or of all when feature is NULL): over its active subscriptions, each
-- plan's value at the version the subscription holds (times the quantity
-- when per license: LogMeIn hosts are the tier, L12), plus the units of
-- active add-on batches (Z13, K1).  A suite subscription counts the values
-- of the plans it includes besides its own (at their current versions), at
-- its quantity, as if each were subscribed (Z3); with a separate
-- subscription of an included product they add up, like any two.  NULL is
-- unlimited: one unlimited plan makes the feature unlimited.  A trial has
-- its plan's limits.  A feature no active subscription or add-on names has
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
               AND s.status IN ('active', 'trialing', 'past_due')
            UNION ALL
            SELECT a.feature, false, b.quantity::numeric * a.units
              FROM subscription.subscription AS s
              JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id
              JOIN subscription.addon AS a ON a.code = b.addon
             WHERE s.tenant_id = granted_limits.tenant_id AND s.account_id = granted_limits.account_id
               AND s.status IN ('active', 'trialing', 'past_due')
               AND b.status = 'active'
               -- an add-on without a feature grants none
               AND a.feature IS NOT NULL
               AND (granted_limits.feature IS NULL OR a.feature = granted_limits.feature)) AS x
     GROUP BY x.feature;
END
$$;

COMMENT ON FUNCTION subscription.granted_limits(bigint, bigint, text) IS
'Internal: what the account''s active plans and add-ons grant per feature (of one, or all; NULL: unlimited), frozen or not';

-- The rule: a feature is included when what the account's active plans
-- and add-ons grant of it (granted_limits, as the limits) is above 0 or
-- unlimited; a freeze, which only stops growth, takes nothing away.  Of
-- one feature, or of all when feature is NULL.  Only refresh_entitlements()
-- asks it: has_feature() reads what it stored.
CREATE FUNCTION subscription.granted_features(tenant_id bigint, account_id bigint, feature text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT g.name
      FROM subscription.granted_limits(granted_features.tenant_id, granted_features.account_id,
                                       granted_features.feature) AS g
     WHERE g.value IS DISTINCT FROM 0;
END
$$;

COMMENT ON FUNCTION subscription.granted_features(bigint, bigint, text) IS
'Internal: the features the account''s active plans and add-ons grant (of one, or all): has_feature''s rule, stored by refresh_entitlements';

-- One account's stored entitlements (of one feature, or all) follow the
-- rule: called by refresh_account_limits, in the same transaction as the
-- change of the account's subscriptions, add-on batches or of the catalog.
-- What is stored and what the rule grants are compared; a row is written
-- only where they differ.  Every statement names the tenant (issue 17).
CREATE FUNCTION subscription.refresh_entitlements(tenant_id bigint, account_id bigint, feature text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held text[];
    granted text[];
    f text;
BEGIN
    SELECT coalesce(array_agg(e.feature), '{}') INTO held
      FROM subscription.entitlement AS e
     WHERE e.tenant_id = refresh_entitlements.tenant_id AND e.account_id = refresh_entitlements.account_id
       AND (refresh_entitlements.feature IS NULL OR e.feature = refresh_entitlements.feature);
    SELECT coalesce(array_agg(g.feature ORDER BY g.feature), '{}') INTO granted
      FROM subscription.granted_features(refresh_entitlements.tenant_id, refresh_entitlements.account_id,
                                         refresh_entitlements.feature) AS g (feature);
    IF held @> granted AND granted @> held THEN
        RETURN;
    END IF;
    DELETE FROM subscription.entitlement AS e
     WHERE e.tenant_id = refresh_entitlements.tenant_id AND e.account_id = refresh_entitlements.account_id
       AND e.feature = ANY (held) AND e.feature <> ALL (granted);
    -- a row at a time (on Citus an INSERT of the rows of a function is not
    -- planned on the tenant's shard)
    FOREACH f IN ARRAY granted LOOP
        IF f <> ALL (held) THEN
            INSERT INTO subscription.entitlement (tenant_id, account_id, feature)
            VALUES (refresh_entitlements.tenant_id, refresh_entitlements.account_id, f);
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.refresh_entitlements(bigint, bigint, text) IS
'Internal: one account''s stored entitlements (of a feature, or all) follow its plans and add-ons';

COMMENT ON FUNCTION subscription.has_feature(bigint, text) IS
'Whether the account''s plans and add-ons include the feature (a limit above 0, or unlimited): for row-level security policies';

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
-- UPDATE of subscriptions concerns the rows whose account, plan, quantity,
-- status or plan version changed, and the rows it left as they were
-- (refresh_freeze() names an account's subscriptions so that their limits
-- follow a freeze): the old and the new account.  The catalog's rows per
-- statement too (issue 18): the (plan, feature) of the plan limits the
-- statement wrote, as they were and as they are, the suites of the suite
-- components, the add-ons whose feature or units changed; then each
-- account concerned once, of the feature concerned (all of them for a
-- suite or an add-on).
CREATE OR REPLACE FUNCTION subscription.refresh_limits()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
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
            SELECT array_agg(x.tenant_id), array_agg(x.account_id) INTO tenants, accounts
              FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
             CROSS JOIN LATERAL (VALUES (o.tenant_id, o.account_id), (n.tenant_id, n.account_id)) AS x (tenant_id, account_id)
             WHERE (o.account_id, o.plan, o.quantity, o.status, o.plan_version)
                   IS DISTINCT FROM (n.account_id, n.plan, n.quantity, n.status, n.plan_version)
                OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
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

-- the catalog's triggers per statement, one per event
DROP TRIGGER plan_limit_refresh_limits ON subscription.plan_limit;
DROP TRIGGER suite_component_refresh_limits ON subscription.suite_component;
DROP TRIGGER addon_refresh_limits ON subscription.addon;
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

-- the add-ons' pricing rule in one place for both renewal paths (issue 18)
-- The rule (issue 18: one for both renewal paths): of the add-ons given,
-- those that renew (not one-time) and have no price for "cycle", as a
-- list, or NULL.  Reads the catalog alone.  unpriced_addons asks it of a
-- subscription's batches; renew_common of each add-on and cycle of its
-- batch once.
CREATE FUNCTION subscription.priceless_addons(addons text[], cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT string_agg(DISTINCT a.code, ', ')
              FROM subscription.addon AS a
             WHERE a.code = ANY (priceless_addons.addons) AND NOT a.one_time
               AND NOT EXISTS (SELECT FROM subscription.addon_price AS ap
                                WHERE ap.addon = a.code
                                  AND subscription.cycle_key(ap.cycle) = subscription.cycle_key(priceless_addons.cycle)));
END
$$;

COMMENT ON FUNCTION subscription.priceless_addons(text[], interval) IS
'Internal: of the add-ons given, those that renew and have no price for a cycle (unpriced_addons, renew_common)';

COMMENT ON FUNCTION subscription.unpriced_addons(bigint, bigint, interval) IS
'Internal: the renewing add-ons of a subscription with no price for a cycle (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.renew_common(bigint[], timestamptz) IS
'Internal: the renewals of one batch on a single server: its common ones set-based (renew_common_group), the others by renew_account';

REVOKE ALL ON FUNCTION subscription.priceless_addons(text[], interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.granted_limits(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.granted_features(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.refresh_entitlements(bigint, bigint, text) FROM PUBLIC;

-- every account's entitlements, as its plans and add-ons grant them now
SELECT pg_catalog.count(subscription.refresh_entitlements(a.tenant_id, a.id, NULL))
  FROM (SELECT a.tenant_id, a.id FROM subscription.account AS a ORDER BY a.tenant_id, a.id) AS a;

-- end of: entitlements stored (issue 21 item 5, issue 18)

-- Shard-safe lookups (issue 17): the views read by the row's tenant, ------
-- cancel_account() cancels from a loop, the catalog's triggers read the
-- tenant tables on the Citus coordinator's placement alone

CREATE FUNCTION subscription.may_read(tenant_id bigint, account_id bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subscription.actor_named() THEN
        IF NOT EXISTS (SELECT FROM subscription.member AS m
                        WHERE m.tenant_id = may_read.tenant_id
                          AND m.id::text = current_setting('subscription.actor', true)) THEN
            RETURN false;
        END IF;
    END IF;
    RETURN subscription.actor_refusal(may_read.tenant_id, may_read.account_id, 'read', false) IS NULL;
END
$$;

COMMENT ON FUNCTION subscription.may_read(bigint, bigint) IS
'Whether the actor (or back-office code without one) may read the account''s rows (keyed form: the tenant first, docs/design.md#keyed-forms)';

REVOKE ALL ON FUNCTION subscription.may_read(bigint, bigint) FROM PUBLIC;

CREATE OR REPLACE VIEW subscription.license_holder WITH (security_barrier) AS
SELECT l.subscription_id, s.plan, m.id AS member_id, m.external_id, m.role, l.assigned_at, s.account_id
  FROM subscription.license AS l
  -- joined and read by the tenant too: one shard group on Citus (issue 17)
  JOIN subscription.member AS m ON m.tenant_id OPERATOR(pg_catalog.=) l.tenant_id AND m.id OPERATOR(pg_catalog.=) l.member_id
  JOIN subscription.subscription AS s
    ON s.tenant_id OPERATOR(pg_catalog.=) l.tenant_id AND s.id OPERATOR(pg_catalog.=) l.subscription_id
 WHERE subscription.may_read(s.tenant_id, s.account_id);

CREATE OR REPLACE VIEW subscription.credit_statement WITH (security_barrier) AS
SELECT l.account_id,
       l.id AS ledger_id,
       l.created_at,
       l.subscription_id,
       l.kind,
       CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END AS change,
       sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END)
           OVER (PARTITION BY l.account_id, l.currency ORDER BY l.id) AS balance,
       l.currency,
       l.description
  FROM subscription.ledger AS l
 WHERE l.kind OPERATOR(pg_catalog.=) ANY ('{credit,credit_used}') AND subscription.may_read(l.tenant_id, l.account_id);

CREATE OR REPLACE VIEW subscription.invoice WITH (security_barrier) AS
SELECT i.account_id,
       i.subscription_id,
       i.at,
       (array_agg(l.plan ORDER BY l.id DESC) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'))[1] AS plan,
       i.currency,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'), 0)
         OPERATOR(pg_catalog.-) coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'discount'), 0) AS charged,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'refund'), 0) AS refunded,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'credit'), 0) AS credited,
       i.total AS balance,
       jsonb_agg(jsonb_build_object('kind', l.kind, 'amount', l.amount, 'item', l.item,
                                    'period', l.period, 'description', l.description) ORDER BY l.id) AS lines,
       i.id,
       i.issuer,
       i.number,
       i.document_number,
       i.status,
       i.total,
       i.paid,
       i.due_at,
       i.payment_method_id,
       i.corrects_invoice_id
  FROM subscription.invoice_record AS i
  JOIN subscription.ledger AS l ON l.tenant_id OPERATOR(pg_catalog.=) i.tenant_id AND l.invoice_id OPERATOR(pg_catalog.=) i.id
 WHERE subscription.may_read(i.tenant_id, i.account_id)
 GROUP BY i.tenant_id, i.id;

COMMENT ON VIEW subscription.invoice IS
'One row per invoice (billing event): plan, charged, refunded, credited, balance and lines (C3), then number, status, total, paid and due date (I1-I3)';

CREATE OR REPLACE VIEW subscription.receipt WITH (security_barrier) AS
SELECT p.id AS payment_id,
       p.account_id,
       p.invoice_id,
       i.document_number,
       p.at,
       p.amount,
       p.currency,
       p.reference,
       m.kind AS payment_method,
       m.label AS payment_method_label,
       coalesce(c.amount, 0) AS credited,
       i.total,
       i.status
  FROM subscription.payment AS p
  JOIN subscription.invoice_record AS i ON i.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND i.id OPERATOR(pg_catalog.=) p.invoice_id
  LEFT JOIN subscription.payment_method AS m
    ON m.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND m.id OPERATOR(pg_catalog.=) p.payment_method_id
  LEFT JOIN subscription.ledger AS c ON c.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND c.id OPERATOR(pg_catalog.=) p.credit_line_id
 WHERE subscription.may_read(p.tenant_id, p.account_id);

CREATE OR REPLACE VIEW subscription.open_balance WITH (security_barrier) AS
SELECT i.account_id,
       i.id AS invoice_id,
       i.document_number,
       i.at,
       i.due_at,
       i.currency,
       i.total,
       i.paid,
       i.total OPERATOR(pg_catalog.-) i.paid AS due,
       sum(i.total OPERATOR(pg_catalog.-) i.paid)
           OVER (PARTITION BY i.account_id, i.currency ORDER BY i.due_at, i.id) AS balance
  FROM subscription.invoice_record AS i
 WHERE i.status OPERATOR(pg_catalog.=) 'open' AND subscription.may_read(i.tenant_id, i.account_id);

CREATE OR REPLACE FUNCTION subscription.renewal_terms(subscription_id bigint)
RETURNS TABLE (plan text, cycle interval, quantity integer, renewal text, needed bigint, version integer)
LANGUAGE sql STABLE
SECURITY DEFINER
BEGIN ATOMIC
    SELECT t.plan, t.cycle, t.quantity, t.renewal, t.needed, t.version
      FROM subscription.subscription AS s
     CROSS JOIN LATERAL subscription.next_terms(s) AS t
     WHERE s.id OPERATOR(pg_catalog.=) renewal_terms.subscription_id
       AND subscription.may_read(s.tenant_id, s.account_id);
END;

-- Service seats follow plan and suite changes (R11, Z3), per statement over
-- the transition tables (issue 18): the subscriptions whose seats are
-- rebuilt are gathered first, then rebuilt in one call.
CREATE OR REPLACE FUNCTION subscription.sync_service_seats()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ids bigint[];
    old_plans text[];
    new_plans text[];
    subs bigint[];
BEGIN
    -- the logical table, from the trigger's argument (issue 17)
    IF TG_ARGV[0] IN ('plan', 'suite_component') AND NOT subscription.catalog_reads_tenants() THEN
        -- a Citus worker's placement of the catalog: the coordinator's
        -- rebuilds the seats, on every shard
        RETURN NULL;
    ELSIF TG_ARGV[0] = 'plan' THEN
        -- the plans whose seat or product changed, read first
        SELECT array_agg(n.code) FILTER (WHERE subscription.seat_product(o.kind, o.product) IS DISTINCT FROM
                                                subscription.seat_product(n.kind, n.product)),
               array_agg(n.code) FILTER (WHERE o.product IS DISTINCT FROM n.product)
          INTO old_plans, new_plans
          FROM old_rows AS o JOIN new_rows AS n ON n.code = o.code;
        -- the plan's own subscriptions, and (Z3) those of the suites that include it
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s
             WHERE s.plan = ANY (old_plans)
                OR s.plan IN (SELECT sc.suite_plan FROM subscription.suite_component AS sc
                               WHERE sc.plan = ANY (new_plans))));
    ELSIF TG_ARGV[0] = 'suite_component' THEN
        -- Z3: a suite's licenses seat the products of the plans it includes
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(n.suite_plan) INTO old_plans FROM new_rows AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(o.suite_plan) INTO old_plans FROM old_rows AS o;
        ELSE
            SELECT array_agg(x.suite_plan) INTO old_plans
              FROM (SELECT o.suite_plan FROM old_rows AS o UNION SELECT n.suite_plan FROM new_rows AS n) AS x;
        END IF;
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s WHERE s.plan = ANY (old_plans)));
    ELSE
        -- the subscriptions whose plan changed, read into a local set first
        -- (on Citus a transition table is never joined with another table)
        SELECT array_agg(n.id ORDER BY n.tenant_id, n.id), array_agg(o.plan ORDER BY n.tenant_id, n.id),
               array_agg(n.plan ORDER BY n.tenant_id, n.id)
          INTO ids, old_plans, new_plans
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE o.plan IS DISTINCT FROM n.plan;
        FOR k IN 1 .. coalesce(cardinality(ids), 0) LOOP
            IF (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = old_plans[k])
               IS DISTINCT FROM
               (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = new_plans[k])
               -- Z3: from or to a suite, the included products may change
               OR EXISTS (SELECT FROM subscription.suite_component AS sc
                           WHERE sc.suite_plan IN (old_plans[k], new_plans[k])) THEN
                subs := subs || ids[k];
            END IF;
        END LOOP;
        IF subs IS NOT NULL THEN
            PERFORM subscription.reseat_licenses(subs);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Idempotency keys (issue 20, item 4; docs/integrating.md#idempotency-keys) --
-- the keys, each with the first call made under it (I1-I5)

-- A tenant table (docs/design.md#tenant-keys): the key is the tenant's,
-- and its actor's (current_actor()): another actor's call under it is
-- another call, so a key never hands one actor's result to another.
-- result: the first call's result as JSON (null for a void function, an
-- array of its rows for a set-returning one); NULL while the call runs.
CREATE TABLE subscription.idempotency_key (
    tenant_id bigint NOT NULL,
    key       text NOT NULL CHECK (key <> '' AND pg_catalog.length(key) <= 255),
    function  text NOT NULL,
    arguments jsonb NOT NULL,
    actor     text NOT NULL,
    result    jsonb,
    at        timestamptz NOT NULL,
    CONSTRAINT idempotency_key_pkey PRIMARY KEY (tenant_id, key)
);
-- prune_idempotency_keys reads by age, across tenants
CREATE INDEX idempotency_key_at_idx ON subscription.idempotency_key (at);

COMMENT ON TABLE subscription.idempotency_key IS
'The first call made under each idempotency key: its function, arguments, actor and result (Q1-Q4, docs/integrating.md)';
SELECT pg_catalog.pg_extension_config_dump('subscription.idempotency_key', '');

-- Whether the call is made under a key (and is not the call idempotent()
-- itself makes, which runs with the key cleared); in C, for the C
-- functions too (src/licenses.c).
CREATE FUNCTION subscription.idempotency_requested()
RETURNS boolean
AS 'MODULE_PATHNAME', 'idempotency_requested'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.idempotency_requested() IS
'Internal: whether the call is made under subscription.idempotency_key (Q1)';

-- Q1-Q4: the call of fn (a keyed form: the tenant first) with arguments
-- (all of them, in order, as a JSON array), made under the request's key:
--   Q1 the first call under a key runs fn, with the key cleared (a call it
--      makes is its own, not a request), and keeps its arguments and result
--      with the key, in the caller's transaction: a rollback keeps nothing;
--   Q2 a later call under the key, with the same function and arguments
--      (but at: a retry comes later), runs nothing and returns the kept
--      result; a concurrent one waits for the first (the key's row) and
--      then returns its result, or runs if the first rolled back;
--   Q3 the key with another function, other arguments or another actor
--      (current_actor()) is refused (23505), naming the first call;
--   Q4 a key is not blank and at most 255 characters long (22023).
-- Not SECURITY DEFINER: it runs fn with the caller's rights (the mutating
-- functions call it as the extension's owner).
CREATE FUNCTION subscription.idempotent(fn regprocedure, tenant bigint, arguments jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request text := pg_catalog.current_setting('subscription.idempotency_key', true);
    p record;
    compared jsonb;
    call text;
    first record;
    outcome jsonb;
BEGIN
    IF request IS NULL OR request = '' THEN
        RAISE EXCEPTION 'idempotent() runs under subscription.idempotency_key only'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fn IS NULL THEN
        RAISE EXCEPTION 'argument "fn" of idempotent() must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Q4
    IF pg_catalog.btrim(request) = '' THEN
        RAISE EXCEPTION 'an idempotency key must not be blank'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'RESET subscription.idempotency_key to call without a key.';
    END IF;
    IF pg_catalog.length(request) > 255 THEN
        RAISE EXCEPTION 'an idempotency key is at most 255 characters long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('subscription.idempotency_key has %s characters.', pg_catalog.length(request));
    END IF;
    SELECT pr.proname, pr.proargnames, pr.proargtypes::oid[] AS types, pr.proretset,
           pr.prorettype, pr.pronargs
      INTO p FROM pg_catalog.pg_proc AS pr WHERE pr.oid = fn;
    -- the call, with its arguments cast back to their types
    call := format('SELECT %s FROM subscription.%I(%s) AS r',
                   CASE WHEN p.proretset OR p.prorettype = 'pg_catalog.record'::pg_catalog.regtype
                        THEN 'COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r)), ''[]'')'
                        WHEN p.prorettype = 'pg_catalog.void'::pg_catalog.regtype THEN '''null''::pg_catalog.jsonb'
                        ELSE 'pg_catalog.to_jsonb(r)' END,
                   p.proname,
                   (SELECT pg_catalog.string_agg(format('($1 OPERATOR(pg_catalog.->>) %s)::%s', i - 1,
                                                        pg_catalog.format_type(p.types[i - 1], NULL)), ', ' ORDER BY i)
                      FROM pg_catalog.generate_series(1, p.pronargs) AS i));
    -- a NULL tenant (an unknown id): the function's own error, nothing kept
    IF idempotent.tenant IS NULL THEN
        PERFORM pg_catalog.set_config('subscription.idempotency_key', '', true);
        EXECUTE call INTO outcome USING arguments;
        PERFORM pg_catalog.set_config('subscription.idempotency_key', request, true);
        RETURN outcome;
    END IF;
    -- Q2: what a retry must repeat, the time of the call aside
    SELECT pg_catalog.jsonb_agg(a.value ORDER BY a.n) INTO compared
      FROM pg_catalog.jsonb_array_elements(arguments) WITH ORDINALITY AS a (value, n)
     WHERE p.proargnames[a.n] IS DISTINCT FROM 'at';
    -- the key's row: a concurrent call with the key waits here for the first
    INSERT INTO subscription.idempotency_key AS k (tenant_id, key, function, arguments, actor, at)
    VALUES (idempotent.tenant, request, fn::text, COALESCE(compared, '[]'), subscription.current_actor(), subscription.now())
    ON CONFLICT ON CONSTRAINT idempotency_key_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.function, k.arguments, k.actor, k.result, k.at INTO first
          FROM subscription.idempotency_key AS k
         WHERE k.tenant_id = idempotent.tenant AND k.key = request;
        -- Q3
        IF first.function <> fn::text OR first.arguments <> COALESCE(compared, '[]')
           OR first.actor <> subscription.current_actor() THEN
            RAISE EXCEPTION 'idempotency key "%" was used by another call', request
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('The key was first used by %s with arguments %s, actor %s, at %s.',
                                      first.function, first.arguments, first.actor, subscription.event_time(first.at)),
                      HINT = 'A retry repeats the arguments of the first call; another call takes a new key.';
        END IF;
        -- Q2
        RETURN first.result;
    END IF;
    -- Q1
    PERFORM pg_catalog.set_config('subscription.idempotency_key', '', true);
    EXECUTE call INTO outcome USING arguments;
    PERFORM pg_catalog.set_config('subscription.idempotency_key', request, true);
    UPDATE subscription.idempotency_key AS k SET result = outcome
     WHERE k.tenant_id = idempotent.tenant AND k.key = request;
    RETURN outcome;
END
$$;

COMMENT ON FUNCTION subscription.idempotent(regprocedure, bigint, jsonb) IS
'Internal: a mutating function''s call under subscription.idempotency_key: run once and kept, or the kept result (Q1-Q4)';

-- Q5: the keys older than subscription.idempotency_retention are deleted
-- (a retry after that runs again).
CREATE PROCEDURE subscription.prune_idempotency_keys(INOUT pruned bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- loads the module, which defines subscription.idempotency_retention
    PERFORM subscription.event_next_xid();
    DELETE FROM subscription.idempotency_key AS k
     WHERE k.at < subscription.now() - pg_catalog.current_setting('subscription.idempotency_retention')::interval;
    GET DIAGNOSTICS pruned = ROW_COUNT;
END
$$;

COMMENT ON PROCEDURE subscription.prune_idempotency_keys(bigint) IS
'Delete the idempotency keys older than subscription.idempotency_retention (Q5)';

-- trial.ending (issue 20): announce_renewals writes it once per trial
CREATE UNIQUE INDEX event_trial_ending_key ON subscription.event (tenant_id, subscription_id)
    WHERE type = 'trial.ending';

CREATE OR REPLACE FUNCTION subscription.announce_renewals()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
    written integer := 0;
BEGIN
    FOR n IN SELECT r.*, s.tenant_id
               FROM subscription.renewal_notice AS r
               JOIN subscription.subscription AS s ON s.id = r.subscription_id
              WHERE NOT r.overdue
                AND NOT EXISTS (SELECT FROM subscription.event AS e
                                 WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                   AND e.type = 'renewal.upcoming'
                                   AND e.payload ->> 'renews_at' = subscription.event_time(r.renews_at))
              ORDER BY s.tenant_id, r.account_id, r.subscription_id LOOP
        IF subscription.write_event(n.tenant_id, 'renewal.upcoming', n.account_id, n.subscription_id,
               pg_catalog.jsonb_build_object('version', 1, 'renews_at', subscription.event_time(n.renews_at), 'plan', n.plan,
                   'plan_version', n.plan_version, 'cycle', n.cycle, 'quantity', n.quantity,
                   'amount', n.amount, 'currency', n.currency, 'discount', n.discount, 'credit', n.credit),
               subscription.now()) IS NOT NULL THEN
            written := written + 1;
        END IF;
    END LOOP;
    -- trial.ending: once per trial (one per subscription), when its end
    -- enters the notice window; then, what its product makes of it
    FOR n IN SELECT r.*, s.tenant_id, s.plan AS trial_plan
               FROM subscription.renewal_notice AS r
               JOIN subscription.subscription AS s ON s.id = r.subscription_id
              WHERE NOT r.overdue AND r.trial_end IS NOT NULL
                AND NOT EXISTS (SELECT FROM subscription.event AS e
                                 WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                   AND e.type = 'trial.ending')
              ORDER BY s.tenant_id, r.account_id, r.subscription_id LOOP
        PERFORM subscription.write_event(n.tenant_id, 'trial.ending', n.account_id, n.subscription_id,
            pg_catalog.jsonb_build_object('version', 1, 'trial_end', subscription.event_time(n.renews_at),
                'plan', n.trial_plan, 'then', n.trial_end),
            subscription.now());
        written := written + 1;
    END LOOP;
    RETURN written;
END
$$;

COMMENT ON FUNCTION subscription.announce_renewals() IS
'Write renewal.upcoming once per subscription and period, and trial.ending once per trial, entering the notice window (renewal_notice); idempotent (E5)';

-- PUBLIC executes nothing; the granted roles get the new functions
REVOKE ALL ON FUNCTION subscription.idempotency_requested(), subscription.idempotent(regprocedure, bigint, jsonb) FROM PUBLIC;
REVOKE ALL ON PROCEDURE subscription.prune_idempotency_keys(bigint) FROM PUBLIC;
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g;
-- end of: idempotency keys (issue 20)

-- Past due and dunning (issue 19, item 5, docs/dunning.md) ------------------
-- A subscription past due for an invoice unpaid after its due date or
-- whose charge failed (D1), keeping its access (D2), moved along its
-- product's ladder by run_dunning (D3) to the final action (D4), active
-- again once the invoice is paid or void (D5).
ALTER TABLE subscription.product
    ADD COLUMN dunning_days integer[] NOT NULL DEFAULT '{3,5,7}'
              CHECK (cardinality(dunning_days) BETWEEN 1 AND 20 AND array_position(dunning_days, NULL) IS NULL
                     AND 0 < ALL (dunning_days) AND 366 >= ALL (dunning_days)),
    ADD COLUMN dunning_action text NOT NULL DEFAULT 'keep'
              CHECK (dunning_action IN ('cancel', 'freeze', 'downgrade', 'keep'));
ALTER TABLE subscription.subscription DROP CONSTRAINT subscription_status_check;
ALTER TABLE subscription.subscription ADD CONSTRAINT subscription_status_check
    CHECK (status IN ('active', 'trialing', 'cancelled', 'expired', 'past_due'));
ALTER TABLE subscription.subscription
    ADD COLUMN past_due_since timestamptz,
    ADD COLUMN past_due_invoice_id bigint,
    ADD COLUMN dunning_step integer NOT NULL DEFAULT 0 CHECK (dunning_step >= 0),
    ADD COLUMN dunning_frozen boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT subscription_past_due_whole
        CHECK ((status = 'past_due') = (past_due_since IS NOT NULL)
               AND (past_due_since IS NULL) = (past_due_invoice_id IS NULL)
               AND (status = 'past_due' OR (dunning_step = 0 AND NOT dunning_frozen)));

-- The paused subscription that freezes an account (pause(..., mode =>
-- 'freeze'), issue 19), or the past-due one whose dunning ladder froze it
-- (D4), or NULL: while one does, the account's limits are 0
-- (limit_of) and its seat counters closed (assigns_licenses), so that the
-- guards refuse every growing write from the counter rows they already
-- lock, and only their refusals call this to say why (55000, with a HINT to
-- resume).  PL/pgSQL, as Citus plans no statement of a SQL function with
-- parameters.
CREATE OR REPLACE FUNCTION subscription.freezing_subscription(tenant_id bigint, account_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT min(s.id) FROM subscription.subscription AS s
             WHERE s.tenant_id OPERATOR(pg_catalog.=) freezing_subscription.tenant_id
               AND s.account_id OPERATOR(pg_catalog.=) freezing_subscription.account_id
               AND (s.pause_mode OPERATOR(pg_catalog.=) 'freeze' OR s.dunning_frozen));
END
$$;

COMMENT ON FUNCTION subscription.freezing_subscription(bigint, bigint) IS
'Internal: the paused subscription that freezes the account (pause mode freeze), or the past-due one its dunning froze (D4), or NULL';

-- D4: the invoice whose dunning froze an account (its ladder's final
-- action 'freeze'), or NULL (not frozen, or frozen by a pause): what the
-- guards' refusals name as the way out.  Read only on the way to a refusal.
CREATE FUNCTION subscription.dunning_freeze_invoice(tenant_id bigint, account_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT s.past_due_invoice_id FROM subscription.subscription AS s
             WHERE s.tenant_id OPERATOR(pg_catalog.=) dunning_freeze_invoice.tenant_id
               AND s.account_id OPERATOR(pg_catalog.=) dunning_freeze_invoice.account_id
               AND s.dunning_frozen AND s.pause_mode IS NULL
             ORDER BY s.id LIMIT 1);
END
$$;

COMMENT ON FUNCTION subscription.dunning_freeze_invoice(bigint, bigint) IS
'Internal: the past-due invoice whose dunning froze the account (D4), or NULL';

-- Whether a subscription assigns licenses: it is active, trialing or past
-- due (D2), and its account is not frozen.  Its seat counter's "active", which the
-- license guard reads.  Of columns, not of the row: on Citus a trigger on
-- a shard reads rows of the shard's own row type (issue 17).
CREATE OR REPLACE FUNCTION subscription.assigns_licenses(tenant_id bigint, account_id bigint, status text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN assigns_licenses.status IN ('active', 'trialing', 'past_due')
           AND subscription.freezing_subscription(assigns_licenses.tenant_id, assigns_licenses.account_id) IS NULL;
END
$$;

COMMENT ON FUNCTION subscription.assigns_licenses(bigint, bigint, text) IS
'Internal: whether a subscription assigns licenses (active, trialing or past due, its account not frozen): its seat counter''s "active"';

-- What an account's plans and add-ons grant of a feature: over its active
-- subscriptions, each plan's value at the version the subscription holds
-- (times the quantity when per license: LogMeIn hosts are the tier, L12),
-- plus the units of active add-on batches (Z13, K1).  A suite subscription
-- counts the values of the plans it includes besides its own (at their
-- current versions), at its quantity, as if each were subscribed (Z3); with
-- a separate subscription of an included product they add up, like any
-- two.  NULL is unlimited: one unlimited plan makes the feature unlimited.
-- A trial has its plan's limits, and so has a past-due subscription (D2).  A feature no active subscription defines
-- has limit 0, plus its add-ons.  One
-- statement in PL/pgSQL, whose plan is cached per session: the limit
-- guard's hot path (a SQL function with a sub-select is planned per call).
CREATE OR REPLACE FUNCTION subscription.granted_limit(tenant_id bigint, account_id bigint, feature text)
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

-- The free plan of a plan's product for a cycle: its lowest-ranked
-- service plan priced 0 for the cycle, or NULL.  Where a trial's
-- 'downgrade' (end_trial) and a dunning's (D4, dunning_final) go.
CREATE FUNCTION subscription.free_plan(plan text, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT f.code
              FROM subscription.plan AS p
              JOIN subscription.plan AS f ON f.product = p.product AND f.kind = 'service'
              JOIN subscription.plan_price AS pp
                ON pp.plan = f.code AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(free_plan.cycle)
               AND pp.versions @> f.version AND pp.amount = 0
             WHERE p.code = free_plan.plan
             ORDER BY f.rank, f.code
             LIMIT 1);
END
$$;

COMMENT ON FUNCTION subscription.free_plan(text, interval) IS
'Internal: the free plan of a plan''s product for a cycle (its lowest-ranked service plan priced 0), or NULL';

-- A trial at its end (issue 19), by its product's trial_end: 'convert'
-- makes it active, and renew_period charges its first period (from the
-- trial's end: anchor, period 0); 'downgrade' does the same toward the
-- product's free plan (free_plan), a pending change that renew_period makes through
-- apply_downgrade, trimming by the tables' rules; 'expire' (or a downgrade
-- with no free plan, with a WARNING) expires it.  Returns the subscription.
CREATE OR REPLACE FUNCTION subscription.end_trial(s subscription.subscription)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trial_end text;
    free_plan text;
BEGIN
    SELECT pr.trial_end INTO trial_end
      FROM subscription.plan AS p JOIN subscription.product AS pr ON pr.code = p.product
     WHERE p.code = s.plan;
    IF trial_end = 'downgrade' THEN
        free_plan := subscription.free_plan(s.plan, s.cycle);
        IF free_plan IS NULL THEN
            RAISE WARNING 'subscription % expires at the end of its trial: plan "%" has no free plan for cycle %',
                          s.id, s.plan, subscription.cycle_text(s.cycle);
            trial_end := 'expire';
        END IF;
    END IF;
    UPDATE subscription.subscription AS x
       SET status = CASE WHEN trial_end = 'expire' THEN 'expired' ELSE 'active' END,
           pending_plan = CASE WHEN free_plan <> x.plan THEN free_plan ELSE x.pending_plan END
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.end_trial(subscription.subscription) IS
'Internal: a trial at its end, by its product''s trial_end: converted, downgraded to the free plan, or expired (issue 19)';

-- I3: an invoice's status from its total and what was paid: paid once
-- nothing is due; a void or uncollectible invoice stays so.  A change of
-- status is a history row (and its event, E1).  Paid: the subscription
-- past due for it is active again, in this transaction (D5).
CREATE OR REPLACE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    new_status := CASE WHEN i.status IN ('void', 'uncollectible') THEN i.status
                       WHEN i.total - i.paid <= 0 THEN 'paid' ELSE 'open' END;
    IF new_status IS DISTINCT FROM i.status THEN
        UPDATE subscription.invoice_record AS r SET status = new_status
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
        IF quiet THEN
            RETURN new_status;
        END IF;
        PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id,
            jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                               'status', jsonb_build_object('old', i.status, 'new', new_status),
                               'total', i.total, 'paid', i.paid, 'currency', i.currency,
                               'at', coalesce(settle_invoice.at, i.at)),
            i.tenant_id);
        IF new_status = 'paid' AND i.subscription_id IS NOT NULL THEN
            PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
        END IF;
    END IF;
    RETURN new_status;
END
$$;

COMMENT ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz) IS
'Internal: an invoice''s status from its total and payments, its change recorded in history unless quiet (I3)';

-- I3: void an open invoice that nothing paid: a correcting invoice gives
-- each charge back net of what was already taken off it (its coupon, the
-- credit that paid part of it, a refund or credit of it given before: a
-- refund line naming it), returns to the account as credit what the
-- invoice took off with the account's credit or gave back of earlier
-- charges (one credit line), and the invoice is void.  No line is deleted.
CREATE OR REPLACE FUNCTION subscription.void_invoice(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    correction bigint;
    c record;
    returned numeric;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.void_invoice(bigint,bigint,text,timestamptz)', void_invoice.tenant_id,
            pg_catalog.jsonb_build_array(void_invoice.tenant_id, void_invoice.invoice_id, void_invoice.reason, void_invoice.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('void_invoice', '{invoice_id,reason,at}',
        ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('void_invoice', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('void_invoice', at, false);
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'a void needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status <> 'open' OR i.paid > 0 THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number,
                        CASE WHEN i.status = 'open' THEN 'partly paid' ELSE i.status END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only an open invoice without payments can be voided; give money back with a refund or a credit.';
    END IF;
    correction := subscription.open_invoice(i.tenant_id, i.account_id, i.subscription_id, i.currency,
                                            void_invoice.at, NULL, i.id);
    -- each charge, net of what its coupon, the credit that paid it and
    -- the refunds and credits of it given before took off
    FOR c IN SELECT l.*, coalesce((SELECT sum(d.amount) FROM subscription.ledger AS d
                                    WHERE d.tenant_id = l.tenant_id AND d.charge_id = l.id
                                      AND d.kind IN ('discount', 'credit_used', 'refund', 'credit')), 0) AS off,
                    -- a charge is given back once by a line naming it (ledger_one_refund_per_charge)
                    EXISTS (SELECT FROM subscription.ledger AS g
                             WHERE g.tenant_id = l.tenant_id AND g.charge_id = l.id
                               AND g.kind IN ('refund', 'credit')) AS given_back
               FROM subscription.ledger AS l
              WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind = 'charge'
              ORDER BY l.id LOOP
        IF c.amount - c.off > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description, invoice_id, corrects_invoice_id)
            VALUES (i.tenant_id, i.account_id, c.subscription_id, c.addon_batch_id, 'refund', c.amount - c.off,
                    c.currency, c.period, c.item, c.plan, CASE WHEN NOT c.given_back THEN c.id END,
                    format('void of invoice %s: %s', i.document_number, reason)
                      || CASE WHEN c.given_back THEN format(' (the rest of charge %s)', c.id) ELSE '' END,
                    correction, i.id);
        END IF;
    END LOOP;
    -- the account's credit this invoice used, and what it gave back of
    -- earlier charges, stay the account's: one credit line (L9)
    returned := (SELECT sum(l.amount) FROM subscription.ledger AS l
                  WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind IN ('credit_used', 'refund', 'credit'));
    IF returned > 0 THEN
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, item, description, invoice_id,
                corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, i.subscription_id, 'credit', subscription.round_money(returned, i.currency),
                i.currency, 'credit',
                format('void of invoice %s: credit used and given back returned to the account (%s)',
                       i.document_number, reason), correction, i.id);
    END IF;
    UPDATE subscription.invoice_record AS r SET status = 'void', void_reason = reason
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                           'status', jsonb_build_object('old', i.status, 'new', 'void'), 'reason', reason,
                           'correcting_invoice_id', correction, 'total', i.total, 'paid', i.paid,
                           'currency', i.currency, 'at', void_invoice.at),
        i.tenant_id);
    -- D5: nothing is owed on it any more
    IF i.subscription_id IS NOT NULL THEN
        PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
    END IF;
    RETURN correction;
END
$$;

COMMENT ON FUNCTION subscription.void_invoice(bigint, bigint, text, timestamptz) IS
'Void an open unpaid invoice: a correcting invoice gives its charges back and returns credit used or given back to the account, nothing is deleted (I3) (keyed form: the tenant first, docs/design.md#keyed-forms)';

COMMENT ON FUNCTION subscription.void_invoice(bigint, text, timestamptz) IS
'Void an open unpaid invoice: a correcting invoice gives its charges back and returns credit used or given back to the account, nothing is deleted (I3)';

-- I6: a failed attempt to charge an invoice, in history (and its event
-- payment.failed, E1); its subscription is past due from then on (D1), and
-- what follows is the dunning's (61_dunning.sql).
CREATE OR REPLACE FUNCTION subscription.record_payment_failure(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.record_payment_failure(bigint,bigint,text,timestamptz)', record_payment_failure.tenant_id,
            pg_catalog.jsonb_build_array(record_payment_failure.tenant_id, record_payment_failure.invoice_id, record_payment_failure.reason, record_payment_failure.at));
        RETURN;
    END IF;
    PERFORM subscription.require_arguments('record_payment_failure', '{invoice_id,reason,at}',
        ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('record_payment_failure', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('record_payment_failure', at, false);
    IF i.status <> 'open' THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only an open invoice can fail to be paid.';
    END IF;
    PERFORM subscription.write_history('payment_failure', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'reason', reason, 'at', at, 'payment_method_id', i.payment_method_id,
                           'due', i.total - i.paid, 'currency', i.currency,
                           'attempt', 1 + (SELECT count(*) FROM subscription.history AS h
                                            WHERE h.tenant_id = i.tenant_id AND h.account_id = i.account_id
                                              AND h.operation = 'payment_failure'
                                              AND h.details -> 'invoice_id' = to_jsonb(i.id))),
        i.tenant_id);
    -- D1: a failed charge makes the subscription past due at once
    IF i.subscription_id IS NOT NULL THEN
        PERFORM subscription.enter_past_due(i.tenant_id, i.subscription_id, i.id, at);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.record_payment_failure(bigint, bigint, text, timestamptz) IS
'Record a failed charge of an open invoice in history, and its event payment.failed (I6) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- D3: when step k of a ladder falls: "since" plus the days of its first k
-- steps (each the days from the step before).
CREATE FUNCTION subscription.dunning_step_at(since timestamptz, days integer[], k integer)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN dunning_step_at.since OPERATOR(pg_catalog.+)
       pg_catalog.make_interval(days => (SELECT coalesce(pg_catalog.sum(d), 0)::integer
                                           FROM pg_catalog.unnest(dunning_step_at.days[1:dunning_step_at.k]) AS d));

COMMENT ON FUNCTION subscription.dunning_step_at(timestamptz, integer[], integer) IS
'Internal: when step k of a dunning ladder falls, from the time the subscription became past due (D3)';

-- D1: an active subscription becomes past due for an invoice, since a
-- time (the invoice's due date, or the failed charge).  Its status change
-- is a history row, and the event subscription.past_due (E1).  Returns
-- whether it did (a paused, trialing, ended or already past-due one does not).
CREATE FUNCTION subscription.enter_past_due(tenant_id bigint, subscription_id bigint, invoice_id bigint,
                                            since timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('enter_past_due', '{tenant_id,subscription_id,invoice_id,since}',
        ARRAY[tenant_id IS NULL, subscription_id IS NULL, invoice_id IS NULL, since IS NULL]);
    UPDATE subscription.subscription AS x
       SET status = 'past_due', past_due_since = enter_past_due.since,
           past_due_invoice_id = enter_past_due.invoice_id, dunning_step = 0
     WHERE x.tenant_id = enter_past_due.tenant_id AND x.id = enter_past_due.subscription_id
       AND x.status = 'active' AND x.paused_at IS NULL;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION subscription.enter_past_due(bigint, bigint, bigint, timestamptz) IS
'Internal: an active subscription past due for an invoice since a time (D1)';

-- D5: the invoice a subscription is past due for is paid in full or void:
-- the subscription is active again and a freeze of its dunning lifted,
-- in the caller's transaction.  settle_invoice and void_invoice call it.
CREATE FUNCTION subscription.end_past_due(tenant_id bigint, subscription_id bigint, invoice_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    UPDATE subscription.subscription AS x
       SET status = 'active', past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           dunning_frozen = false
     WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
       AND x.status = 'past_due' AND x.past_due_invoice_id = end_past_due.invoice_id
    RETURNING * INTO s;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- the account's limits and seat counters as they were (a freeze's end)
    PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    RETURN true;
END
$$;

COMMENT ON FUNCTION subscription.end_past_due(bigint, bigint, bigint) IS
'Internal: a past-due subscription active again once its invoice is paid or void, its dunning''s freeze lifted (D5)';

-- D4: the last step of a subscription's ladder: its product's final action.
--   cancel:    the subscription is cancelled now, the invoice uncollectible;
--   freeze:    it stays past due and the account is frozen (as a pause in
--              mode freeze: limits 0, seat counters closed) until paid;
--   downgrade: it moves to the product's free plan now (apply_downgrade,
--              trimming by the tables' rules), the invoice uncollectible
--              (no free plan for its cycle: cancelled, with a WARNING);
--   keep:      it is active again with its access, the invoice uncollectible.
CREATE FUNCTION subscription.dunning_final(s subscription.subscription, i subscription.invoice_record,
                                           action text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    free text;
BEGIN
    PERFORM subscription.require_arguments('dunning_final', '{s,i,action,at}',
        ARRAY[(s).id IS NULL, (i).id IS NULL, action IS NULL, at IS NULL]);
    IF action NOT IN ('cancel', 'freeze', 'downgrade', 'keep') THEN
        RAISE EXCEPTION 'unknown final action of a dunning "%"', action
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The final actions are cancel, freeze, downgrade and keep.';
    END IF;
    IF action = 'freeze' THEN
        UPDATE subscription.subscription AS x SET dunning_frozen = true
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
        RETURN;
    END IF;
    IF action = 'downgrade' THEN
        free := subscription.free_plan(s.plan, s.cycle);
        IF free IS NULL THEN
            RAISE WARNING 'subscription % is cancelled at the end of its dunning: plan "%" has no free plan for cycle %',
                          s.id, s.plan, subscription.cycle_text(s.cycle);
            action := 'cancel';
        END IF;
    END IF;
    UPDATE subscription.invoice_record AS r SET status = 'uncollectible'
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                           'status', jsonb_build_object('old', i.status, 'new', 'uncollectible'),
                           'total', i.total, 'paid', i.paid, 'currency', i.currency, 'at', dunning_final.at),
        i.tenant_id);
    UPDATE subscription.subscription AS x
       SET status = CASE WHEN action = 'cancel' THEN 'cancelled' ELSE 'active' END,
           past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           pending_plan = CASE WHEN action = 'downgrade' AND free <> x.plan THEN free ELSE x.pending_plan END
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    IF action = 'downgrade' AND free <> s.plan THEN
        PERFORM FROM subscription.apply_downgrade(s.tenant_id, s.id, false);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.dunning_final(subscription.subscription, subscription.invoice_record, text, timestamptz) IS
'Internal: the final action of a dunning ladder: cancel, freeze, downgrade to the free plan, or keep (D4)';

-- D1, D3, D4: one tenant's dunning up to a time.  The subscriptions with
-- an open invoice due by then become past due (since its due date); each
-- past-due one takes the steps of its product's ladder that have fallen
-- by then, each once: a history row 'dunning_step' (the event
-- subscription.dunning_step), every step but the last a retry that the
-- view dunning_retry lists, the last the final action.  A subscription or
-- invoice another session holds is skipped (SKIP LOCKED: that session is
-- paying it, or another worker runs it) and taken by a later run; the
-- steps taken are in the subscription's row, so a run again takes none
-- twice.  Returns how many moves it made (a subscription becoming past
-- due; one taking the steps that fell).  Every statement names
-- the tenant (Citus: one shard group).
CREATE FUNCTION subscription.run_dunning_tenant(tenant_id bigint, at timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    s subscription.subscription;
    i subscription.invoice_record;
    ladder integer[];
    action text;
    k integer;
    step_at timestamptz;
    moved integer := 0;
BEGIN
    PERFORM subscription.require_arguments('run_dunning_tenant', '{tenant_id,at}',
        ARRAY[tenant_id IS NULL, at IS NULL]);
    PERFORM subscription.require_renewal_run('run_dunning_tenant', at);
    -- D1: the oldest open invoice due by "at" of each active subscription
    FOR r IN SELECT DISTINCT ON (v.subscription_id) v.subscription_id, v.id, v.due_at
               FROM subscription.invoice_record AS v
              WHERE v.tenant_id = run_dunning_tenant.tenant_id AND v.status = 'open'
                AND v.due_at <= run_dunning_tenant.at AND v.subscription_id IS NOT NULL
              ORDER BY v.subscription_id, v.due_at, v.id LOOP
        -- the subscription, then its invoice, as record_payment takes them
        -- the other way round: neither waits, so neither deadlocks
        SELECT * INTO s FROM subscription.subscription AS x
         WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = r.subscription_id
           AND x.status = 'active' AND x.paused_at IS NULL
           FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM FROM subscription.invoice_record AS v
         WHERE v.tenant_id = run_dunning_tenant.tenant_id AND v.id = r.id AND v.status = 'open'
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        IF subscription.enter_past_due(run_dunning_tenant.tenant_id, s.id, r.id, r.due_at) THEN
            moved := moved + 1;
        END IF;
    END LOOP;
    -- D3, D4: the ladder's steps that have fallen
    FOR r IN SELECT x.id FROM subscription.subscription AS x
              WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.status = 'past_due' AND NOT x.dunning_frozen
              ORDER BY x.id LOOP
        SELECT * INTO s FROM subscription.subscription AS x
         WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = r.id
           AND x.status = 'past_due' AND NOT x.dunning_frozen
           FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO i FROM subscription.invoice_record AS v
         WHERE v.tenant_id = run_dunning_tenant.tenant_id AND v.id = s.past_due_invoice_id AND v.status = 'open'
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT pr.dunning_days, pr.dunning_action INTO ladder, action
          FROM subscription.plan AS p JOIN subscription.product AS pr ON pr.code = p.product
         WHERE p.code = s.plan;
        IF s.dunning_step < cardinality(ladder)
           AND subscription.dunning_step_at(s.past_due_since, ladder, s.dunning_step + 1) <= run_dunning_tenant.at THEN
            moved := moved + 1;
        END IF;
        WHILE s.dunning_step < cardinality(ladder) LOOP
            k := s.dunning_step + 1;
            step_at := subscription.dunning_step_at(s.past_due_since, ladder, k);
            EXIT WHEN step_at > run_dunning_tenant.at;
            PERFORM subscription.write_history('dunning_step', s.account_id, s.id,
                jsonb_build_object('invoice_id', i.id, 'step', k, 'steps', cardinality(ladder),
                                   'action', CASE WHEN k < cardinality(ladder) THEN 'retry' ELSE action END,
                                   'due', i.total - i.paid, 'currency', i.currency, 'at', step_at),
                s.tenant_id);
            IF k < cardinality(ladder) THEN
                UPDATE subscription.subscription AS x SET dunning_step = k
                 WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = s.id
                RETURNING * INTO s;
            ELSE
                UPDATE subscription.subscription AS x SET dunning_step = k
                 WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = s.id
                RETURNING * INTO s;
                PERFORM subscription.dunning_final(s, i, action, step_at);
                EXIT;
            END IF;
        END LOOP;
    END LOOP;
    RETURN moved;
END
$$;

COMMENT ON FUNCTION subscription.run_dunning_tenant(bigint, timestamptz) IS
'One tenant''s dunning up to a time: overdue subscriptions past due, each ladder''s fallen steps taken once, to the final action (D1, D3, D4); returns how many moves it made';

-- run_dunning_tenant for every tenant with an open invoice due by "at", in
-- committed batches of batch_size tenants, by the keyset of their ids: a
-- run reads no tenant twice, and several workers may run at once (each
-- subscription a worker holds, another skips).  For pg_cron, next to
-- run_renewals.  CALL it outside a transaction block.
CREATE PROCEDURE subscription.run_dunning(at timestamptz DEFAULT subscription.now(), batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
    tenants bigint[];
    t bigint;
    after_tenant bigint := -1;
BEGIN
    PERFORM subscription.require_arguments('run_dunning', '{at,batch_size}',
        ARRAY[run_dunning.at IS NULL, run_dunning.batch_size IS NULL]);
    PERFORM subscription.require_renewal_run('run_dunning', run_dunning.at);
    IF run_dunning.batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch_size must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        tenants := ARRAY(SELECT DISTINCT v.tenant_id FROM subscription.invoice_record AS v
                          WHERE v.status OPERATOR(pg_catalog.=) 'open' AND v.due_at OPERATOR(pg_catalog.<=) run_dunning.at
                            AND v.subscription_id IS NOT NULL AND v.tenant_id OPERATOR(pg_catalog.>) after_tenant
                          ORDER BY v.tenant_id LIMIT run_dunning.batch_size);
        EXIT WHEN pg_catalog.cardinality(tenants) OPERATOR(pg_catalog.=) 0;
        FOREACH t IN ARRAY tenants LOOP
            PERFORM subscription.run_dunning_tenant(t, run_dunning.at);
        END LOOP;
        after_tenant := tenants[pg_catalog.cardinality(tenants)];
        COMMIT;
    END LOOP;
END
$$;

COMMENT ON PROCEDURE subscription.run_dunning(timestamptz, integer) IS
'Dunning for every tenant (run_dunning_tenant) in committed batches, for pg_cron; CALL it outside a transaction block (D3)';

-- D3: the retries due, for the application's payment job: each past-due
-- subscription whose ladder's latest step is a retry that no failure
-- recorded since (record_payment_failure) has answered, with what to charge.
CREATE VIEW subscription.dunning_retry WITH (security_barrier) AS
SELECT s.id AS subscription_id,
       s.account_id,
       i.id AS invoice_id,
       i.document_number,
       i.total OPERATOR(pg_catalog.-) i.paid AS due,
       i.currency,
       i.payment_method_id,
       s.dunning_step AS step,
       pg_catalog.cardinality(pr.dunning_days) AS steps,
       s.past_due_since,
       subscription.dunning_step_at(s.past_due_since, pr.dunning_days, s.dunning_step) AS retry_at
  FROM subscription.subscription AS s
  JOIN subscription.invoice_record AS i
    ON i.tenant_id OPERATOR(pg_catalog.=) s.tenant_id AND i.id OPERATOR(pg_catalog.=) s.past_due_invoice_id
  JOIN subscription.plan AS p ON p.code OPERATOR(pg_catalog.=) s.plan
  JOIN subscription.product AS pr ON pr.code OPERATOR(pg_catalog.=) p.product
 WHERE s.status OPERATOR(pg_catalog.=) 'past_due' AND NOT s.dunning_frozen
   AND s.dunning_step OPERATOR(pg_catalog.>=) 1
   AND i.status OPERATOR(pg_catalog.=) 'open'
   AND NOT EXISTS (SELECT FROM subscription.history AS h
                    WHERE h.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
                      AND h.subscription_id OPERATOR(pg_catalog.=) s.id
                      AND h.operation OPERATOR(pg_catalog.=) 'payment_failure'
                      AND h.details OPERATOR(pg_catalog.->) 'invoice_id' OPERATOR(pg_catalog.=) pg_catalog.to_jsonb(i.id)
                      AND (h.details OPERATOR(pg_catalog.->>) 'at')::pg_catalog.timestamptz
                          OPERATOR(pg_catalog.>=) subscription.dunning_step_at(s.past_due_since, pr.dunning_days, s.dunning_step))
   AND subscription.may_read(s.account_id);

COMMENT ON VIEW subscription.dunning_retry IS
'The retries due: past-due subscriptions whose dunning step is a retry not yet answered by a recorded failure, with the invoice and what is due (D3)';

REVOKE ALL ON FUNCTION subscription.dunning_freeze_invoice(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.free_plan(text, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.dunning_step_at(timestamptz, integer[], integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.enter_past_due(bigint, bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.end_past_due(bigint, bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.dunning_final(subscription.subscription, subscription.invoice_record, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.run_dunning_tenant(bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON PROCEDURE subscription.run_dunning(timestamptz, integer) FROM PUBLIC;
-- end of: past due and dunning (issue 19)

-- Usage previews, restart's period number (issue 21, items 4 and 2) ---
-- bill_usage's computation moved into usage_due(), which the previews share

-- U1: a counter's integral (row-seconds) carried from since to t at its
-- use: the SQL readers' one form of the guard's accumulation (the guard's
-- own is METER_ACCUMULATORS in src/limits.c, in its one UPDATE).
CREATE FUNCTION subscription.integral_at(integral numeric, used bigint, since timestamptz, t timestamptz)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN integral + used * extract(epoch FROM greatest(t, since) - since);

COMMENT ON FUNCTION subscription.integral_at(numeric, bigint, timestamptz, timestamptz) IS
'Internal: a usage counter''s integral in row-seconds carried from since to a later time at its use (U1)';

-- U3: what the usage of a subscription's period, from its start until
-- "until", comes to, per usage price of its plan: the one computation of
-- the bill (bill_usage, which locks the counters first) and of its preview
-- (preview_usage, renewal_notice, current_usage's open figures).  For each
-- price: its counter's figure for the period (the meter's aggregation; the
-- recorded total without rows), price(aggregate - included) rounded once
-- to the currency.  What is billed runs from the period's start, or from
-- the end of its last bill (a plan change mid-period billed up to then);
-- a price billed up to until already gives no row.  The time-weighted
-- figure runs to until (the current use held until then), or to the
-- counter's last change when that came later (nothing is counted twice:
-- the next period starts there).
CREATE FUNCTION subscription.usage_due(s subscription.subscription, until timestamptz)
RETURNS TABLE(feature text, aggregation text, from_rows boolean, period tstzrange, upto timestamptz,
              used bigint, peak bigint, integral numeric, aggregate numeric, included bigint, billable numeric,
              amount numeric, currency text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    c record;
    starts timestamptz;
BEGIN
    FOR p IN
        SELECT u.feature, u.included, u.unit_amount, u.tiers, u.mode, u.currency,
               coalesce(m.aggregation, CASE WHEN t.feature IS NULL THEN 'recorded' ELSE 'count' END) AS aggregation,
               coalesce(m.unit, interval '1 day') AS unit, t.feature IS NOT NULL AS from_rows
          FROM subscription.plan_usage_price AS u
          LEFT JOIN subscription.limited_table AS t ON t.feature = u.feature
          LEFT JOIN subscription.meter AS m ON m.feature = u.feature
         WHERE u.plan = s.plan
         ORDER BY u.feature
    LOOP
        -- from the period's start, or where a bill of this period ended (a
        -- plan change mid-period); nothing left: billed already
        SELECT coalesce(max(upper(x.period)), lower(s.period)) INTO starts
          FROM subscription.usage_period AS x
         WHERE x.tenant_id = s.tenant_id AND x.subscription_id = s.id AND x.feature = p.feature
           AND x.period && tstzrange(lower(s.period), until, '[]');
        CONTINUE WHEN starts >= until;
        SELECT u.used, u.peak, u.integral, u.since INTO c
          FROM subscription.usage_counter AS u
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = p.feature;
        feature := p.feature;
        aggregation := p.aggregation;
        from_rows := p.from_rows;
        period := tstzrange(starts, until);
        upto := greatest(coalesce(c.since, until), until);
        used := coalesce(c.used, 0);
        peak := coalesce(greatest(c.peak, c.used), 0);
        integral := subscription.integral_at(coalesce(c.integral, 0), coalesce(c.used, 0), coalesce(c.since, until), upto);
        aggregate := coalesce(CASE p.aggregation
                              WHEN 'peak' THEN greatest(c.peak, c.used)
                              WHEN 'time_weighted' THEN integral / extract(epoch FROM p.unit)
                              ELSE c.used END, 0);
        included := p.included;
        billable := greatest(aggregate - p.included, 0);
        amount := subscription.round_money(subscription.usage_amount(billable, p.unit_amount, p.tiers, p.mode), p.currency);
        currency := p.currency;
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.usage_due(subscription.subscription, timestamptz) IS
'Internal: what a subscription''s usage comes to up to a time, per usage price, not yet billed: the one computation of bill_usage and its previews (U3, U6)';

-- U3: bill the usage of a subscription's period, from its start until
-- "until" (its end at a renewal; the moment of a cancellation or plan
-- change mid-period): the counters of its plan's usage prices locked (the
-- guard's writers queue behind them), then for each line of usage_due one
-- charge line 'usage <feature>' through ledger_one_charge_per_period, the
-- period's snapshot in usage_period, and the counter's accumulators reset
-- for the next period, all in the caller's transaction.  A period billed
-- up to until already is skipped: a renewal run twice bills once.
-- Renewals (renew_period) call it before the period moves.
CREATE OR REPLACE FUNCTION subscription.bill_usage(s subscription.subscription, until timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    line bigint;
    -- a value first: on Citus the catalog's lookup may not run inside the shard's query
    features text[] := ARRAY(SELECT x.feature FROM subscription.plan_usage_price AS x WHERE x.plan = s.plan);
BEGIN
    -- the counters first, in the order of the features (as usage_due reads them)
    PERFORM FROM subscription.usage_counter AS u
     WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = ANY (features)
     ORDER BY u.feature
       FOR UPDATE OF u;
    FOR d IN SELECT * FROM subscription.usage_due(s, until) LOOP
        line := NULL;
        IF d.amount > 0 THEN
            INSERT INTO subscription.ledger AS l
                   (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
            VALUES (s.tenant_id, s.account_id, s.id, 'charge', d.amount, d.currency, d.period, 'usage ' || d.feature, s.plan,
                    format('overage: %s %s of %s, %s included', round(d.aggregate, 6), d.aggregation, d.feature, d.included))
            ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
               WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING
            RETURNING l.id INTO line;
        END IF;
        INSERT INTO subscription.usage_period
               (tenant_id, subscription_id, account_id, feature, period, plan, aggregation, used, peak, integral,
                aggregate, included, billable, amount, currency, ledger_id)
        VALUES (s.tenant_id, s.id, s.account_id, d.feature, d.period, s.plan, d.aggregation, d.used,
                d.peak, d.integral, d.aggregate, d.included, d.billable, d.amount, d.currency, line);
        -- the next period's accumulators: rows stay, recorded usage starts again
        UPDATE subscription.usage_counter AS u
           SET used = CASE WHEN d.from_rows THEN d.used ELSE 0 END,
               peak = CASE WHEN d.from_rows THEN d.used ELSE 0 END,
               integral = 0, since = d.upto
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = d.feature;
        IF NOT d.from_rows THEN
            -- keys are kept for the period and the grace after it
            DELETE FROM subscription.usage_record AS r
             WHERE r.tenant_id = s.tenant_id AND r.account_id = s.account_id AND r.feature = d.feature
               AND r.at < lower(s.period) - current_setting('subscription.usage_key_grace')::interval;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.bill_usage(subscription.subscription, timestamptz) IS
'Internal: bill the usage of a subscription''s period up to a time, once, and reset the counters'' accumulators (U3)';

-- U6: what the next renewal of each of an account's subscriptions would
-- bill of its usage: usage_due up to the period's end, the use of now
-- held until then (the time-weighted figure projected).  The bill's own
-- computation, nothing written.
CREATE FUNCTION subscription.preview_usage(account_id bigint)
RETURNS TABLE(subscription_id bigint, feature text, aggregate numeric, included bigint, billable numeric,
              amount numeric, currency text, period tstzrange)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant bigint;
    s subscription.subscription;
BEGIN
    PERFORM subscription.require_arguments('preview_usage', '{account_id}', ARRAY[account_id IS NULL]);
    tenant := subscription.tenant_of('account', preview_usage.account_id);
    PERFORM subscription.require_account(tenant, preview_usage.account_id);
    PERFORM subscription.authorize(tenant, preview_usage.account_id, 'read', false);
    FOR s IN SELECT x.* FROM subscription.subscription AS x
              WHERE x.tenant_id = tenant AND x.account_id = preview_usage.account_id
                AND x.status IN ('active', 'trialing')
              ORDER BY x.id LOOP
        RETURN QUERY
        SELECT s.id, d.feature, d.aggregate, d.included, d.billable, d.amount, d.currency, d.period
          FROM subscription.usage_due(s, upper(s.period)) AS d;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.preview_usage(bigint) IS
'What the next renewal of each of an account''s subscriptions would bill of its usage, by the bill''s own computation (U6)';

-- U6: the open period's figures of every usage counter, now: used, the
-- peak, the integral carried to now (row-seconds) and, with a meter, the
-- time-weighted figure in its unit.
CREATE VIEW subscription.current_usage WITH (security_barrier) AS
SELECT u.account_id,
       u.feature,
       m.aggregation,
       u.used,
       greatest(u.peak, u.used) AS peak,
       subscription.integral_at(u.integral, u.used, u.since, subscription.now()) AS integral,
       subscription.integral_at(u.integral, u.used, u.since, subscription.now())
           OPERATOR(pg_catalog./) extract(epoch FROM coalesce(m.unit, interval '1 day')) AS time_weighted,
       coalesce(m.unit, interval '1 day') AS unit
  FROM subscription.usage_counter AS u
  LEFT JOIN subscription.meter AS m ON m.feature OPERATOR(pg_catalog.=) u.feature
 WHERE subscription.may_read(u.account_id);

COMMENT ON VIEW subscription.current_usage IS
'Per account and feature, the open period''s usage: used, peak, and the time-weighted figure carried to now (U6)';

-- L5, L8: the subscriptions that renew within subscription.notice_days
-- (default 30), with what the renewal will be (next_terms): plan (at the
-- version held, or a migration's when it takes effect then), cycle,
-- quantity (the tier on a tiered plan; from the current use on a
-- 'from_usage' product, L7), the amount to be charged and the credit that
-- will apply (L10), after the coupon's discount (Z10).  A prepaid term renewed
-- "to_monthly" continues monthly; "none" and cancelled ones do not renew.
-- overdue: the renewal's time has passed and renew_due has not run yet.
CREATE OR REPLACE VIEW subscription.renewal_notice WITH (security_barrier) AS
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       n.plan,
       n.cycle,
       n.quantity,
       CASE WHEN cardinality(subscription.plan_tiers(n.plan, n.version)) > 0 THEN n.quantity END AS tier,
       subscription.round_money(price.amount, price.currency) AS amount,
       price.currency,
       d.discount,
       least(subscription.credit_balance(s.account_id, price.currency),
             subscription.round_money(price.amount, price.currency) OPERATOR(pg_catalog.-) d.discount) AS credit,
       upper(s.period) OPERATOR(pg_catalog.<=) subscription.now() AS overdue,
       -- the version of the plan renewed into (grandfathering; a migration's)
       subscription.plan_version_or_current(n.plan, n.version) AS plan_version,
       -- a trial ending: what its product makes of it (issue 19), else NULL
       CASE WHEN s.status OPERATOR(pg_catalog.=) 'trialing'
            THEN (SELECT pr.trial_end FROM subscription.plan AS p
                    JOIN subscription.product AS pr ON pr.code OPERATOR(pg_catalog.=) p.product
                   WHERE p.code OPERATOR(pg_catalog.=) s.plan) END AS trial_end,
       -- U6: the usage the renewal bills of the ending period (preview_usage),
       -- its amount in the renewal's currency and its lines
       u.usage_amount,
       u.usage
  FROM subscription.subscription AS s
  CROSS JOIN LATERAL subscription.renewal_terms(s.id) AS n
  CROSS JOIN LATERAL subscription.period_price(n.plan, n.cycle, n.quantity, n.version) AS price
  CROSS JOIN LATERAL subscription.coupon_discount(s.id, subscription.round_money(price.amount, price.currency),
                                                  price.currency) AS d(discount)
  CROSS JOIN LATERAL (
      SELECT coalesce(sum(p.amount) FILTER (WHERE p.currency OPERATOR(pg_catalog.=) price.currency), 0) AS usage_amount,
             jsonb_agg(jsonb_build_object('feature', p.feature, 'aggregate', p.aggregate, 'included', p.included,
                                          'billable', p.billable, 'amount', p.amount, 'currency', p.currency)
                       ORDER BY p.feature) AS usage
        FROM subscription.preview_usage(s.account_id) AS p
       WHERE p.subscription_id OPERATOR(pg_catalog.=) s.id) AS u
 WHERE s.status OPERATOR(pg_catalog.=) ANY ('{active,trialing}')
   AND s.paused_at IS NULL
   AND NOT s.cancel_at_period_end
   AND s.renewal OPERATOR(pg_catalog.<>) 'none'
   AND upper(s.period) OPERATOR(pg_catalog.<=)
       (subscription.now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer))
   AND subscription.may_read(s.tenant_id, s.account_id);

COMMENT ON VIEW subscription.renewal_notice IS
'Subscriptions renewing within subscription.notice_days, and trials ending (trial_end), with the renewal''s plan, cycle, quantity and amount (L5, L8), and the usage it bills (usage_amount, usage: U6)';

-- a restart (C1) starts the period count again (its period_number was kept)
-- C1-C4, Z5.  A higher (or equal) rank is an upgrade, by the product's
-- upgrade mode: 'restart' gives back the unused part of what was paid and
-- starts a new full period now at the new price (C1); 'prorate' keeps the
-- period, gives back the unused part and charges the new price for the
-- rest of it.  An upgrade drops a pending downgrade.  A lower rank is a
-- downgrade, by the downgrade mode: 'end_of_period' stores it as
-- pending_plan for renew_due (C4); 'immediate' prorates like an upgrade
-- and trims the account's data now through apply_downgrade.  Changing to
-- the current plan drops a pending downgrade.
CREATE OR REPLACE FUNCTION subscription.change_plan(tenant_id bigint, subscription_id bigint, plan text, at timestamptz)
RETURNS TABLE (effective_at timestamptz, refund numeric, charge numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    old_plan subscription.plan;
    new_plan subscription.plan;
    modes subscription.product;
    price record;
    new_period tstzrange;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.change_plan(bigint,bigint,text,timestamptz)', change_plan.tenant_id,
            pg_catalog.jsonb_build_array(change_plan.tenant_id, change_plan.subscription_id, change_plan.plan, change_plan.at)))
            AS r (effective_at timestamptz, refund numeric, charge numeric);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('change_plan', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('change_plan', '{subscription_id,plan,at}',
        ARRAY[subscription_id IS NULL, plan IS NULL, at IS NULL]);
    PERFORM subscription.require_time('change_plan', at, false);
    SELECT * INTO new_plan FROM subscription.plan AS p WHERE p.code = change_plan.plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    s := subscription.subscription_for_change(change_plan.tenant_id, 'change_plan', subscription_id, 'change_plan');
    PERFORM subscription.require_in_period('change_plan', s, at);
    PERFORM subscription.require_terms(change_plan.tenant_id, s.account_id, at);
    SELECT * INTO old_plan FROM subscription.plan AS p WHERE p.code = s.plan;
    IF new_plan.product <> old_plan.product THEN
        RAISE EXCEPTION 'plan "%" is not a plan of product "%"', plan, old_plan.product
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Subscribe to the other product with subscription.subscribe().';
    END IF;

    effective_at := at;
    refund := 0;
    charge := 0;
    IF new_plan.code = s.plan THEN
        UPDATE subscription.subscription AS x SET pending_plan = NULL
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id AND x.pending_plan IS NOT NULL;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO modes FROM subscription.product AS p WHERE p.code = new_plan.product;
    IF new_plan.rank < old_plan.rank AND modes.downgrade = 'end_of_period' THEN
        -- C4: the current plan runs to the end of the period; the new one
        -- must sell the cycle and quantity of the next (22023, 55000)
        PERFORM subscription.period_price(new_plan.code, coalesce(s.pending_cycle, s.cycle),
                                          coalesce(s.pending_quantity, s.quantity));
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
        effective_at := upper(s.period);
        RETURN NEXT;
        RETURN;
    END IF;

    -- the new plan must sell the cycle and the quantity (22023, 55000)
    price := subscription.period_price(new_plan.code, s.cycle, s.quantity);
    -- U3: the usage so far, at the old plan's usage prices
    PERFORM subscription.bill_usage(s, at);
    refund := subscription.give_back_unused(s, at, 'refund', format('change to plan %s', new_plan.code));
    IF new_plan.rank >= old_plan.rank AND modes.upgrade = 'restart' THEN
        -- C1: a new full period starts now
        new_period := subscription.nth_period(at, s.cycle, 1);
        charge := subscription.round_money(price.amount, price.currency);
    ELSE
        new_period := s.period;
        charge := subscription.unused_part(price.amount, s.period, at, price.currency);
    END IF;
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (change_plan.tenant_id, s.account_id, s.id, 'charge', charge, price.currency,
            tstzrange(at, upper(new_period), '[)'), format('change to %s', new_plan.code), new_plan.code,
            format('plan %s from %s, cycle %s, quantity %s', new_plan.code, at, s.cycle, s.quantity));

    IF new_plan.rank < old_plan.rank THEN
        -- immediate downgrade: apply_downgrade moves to the plan and trims
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code, paid_quantity = x.quantity
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
        PERFORM FROM subscription.apply_downgrade(change_plan.tenant_id, s.id, false);
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = new_plan.code, pending_plan = NULL, paid_quantity = x.quantity,
               period = new_period,
               -- a restart (C1): its period is the first of the new anchor's
               anchor = CASE WHEN new_period = s.period THEN x.anchor ELSE at END,
               period_number = CASE WHEN new_period = s.period THEN x.period_number ELSE 1 END
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
    END IF;
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION subscription.change_plan(bigint, bigint, text, timestamptz) IS
'Upgrade now (prorated or restarted) or downgrade at the period end (C1-C4, Z5) (keyed form: the tenant first, docs/design.md#keyed-forms)';

REVOKE ALL ON FUNCTION subscription.integral_at(numeric, bigint, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.usage_due(subscription.subscription, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.preview_usage(bigint) FROM PUBLIC;
-- end of the usage previews (issue 21, item 4)

-- invoice.opened at the commit, dunning security, batching (issue 19) ------

-- I8: an invoice's opening is written once, at the commit of the
-- transaction that wrote it, with its total; the invoices before the
-- upgrade have theirs already
ALTER TABLE subscription.invoice_record ADD COLUMN announced boolean NOT NULL DEFAULT true;
ALTER TABLE subscription.invoice_record ALTER COLUMN announced SET DEFAULT false;

CREATE FUNCTION subscription.invoice_status_history(i subscription.invoice_record, new_status text, at timestamptz,
                                                    extra jsonb, at_commit boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('invoice_status_history', '{i,new_status,at,extra,at_commit}',
        ARRAY[(i).id IS NULL, new_status IS NULL, at IS NULL, extra IS NULL, at_commit IS NULL]);
    IF NOT at_commit AND NOT i.announced THEN
        RETURN;
    END IF;
    PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                           'status', jsonb_build_object('old', CASE WHEN at_commit THEN 'open' ELSE i.status END,
                                                        'new', new_status),
                           'total', i.total, 'paid', i.paid, 'currency', i.currency, 'at', at) || extra,
        i.tenant_id);
END
$$;

COMMENT ON FUNCTION subscription.invoice_status_history(subscription.invoice_record, text, timestamptz, jsonb, boolean) IS
'Internal: the history row of an invoice''s change of status; for an invoice of this transaction, written at its commit (I3, I8)';

CREATE FUNCTION subscription.announce_invoice(tenant_id bigint, invoice_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    lines bigint;
BEGIN
    PERFORM subscription.require_arguments('announce_invoice', '{tenant_id,invoice_id}',
        ARRAY[tenant_id IS NULL, invoice_id IS NULL]);
    -- once: a restore copies rows already announced, and announces
    -- without history the invoices of a dump from before 1.1
    UPDATE subscription.invoice_record AS r SET announced = true
     WHERE r.tenant_id = announce_invoice.tenant_id AND r.id = announce_invoice.invoice_id AND NOT r.announced
    RETURNING * INTO i;
    IF NOT FOUND OR subscription.restoring_role() THEN
        RETURN;
    END IF;
    lines := (SELECT count(*) FROM subscription.ledger AS l
               WHERE l.tenant_id = announce_invoice.tenant_id AND l.invoice_id = announce_invoice.invoice_id);
    PERFORM subscription.write_history('invoice_open', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                           'currency', i.currency, 'corrects_invoice_id', i.corrects_invoice_id,
                           'due_at', i.due_at, 'total', i.total, 'lines', lines),
        i.tenant_id);
    IF i.status <> 'open' THEN
        PERFORM subscription.invoice_status_history(i, i.status,
            CASE i.status WHEN 'paid' THEN coalesce((SELECT max(p.at) FROM subscription.payment AS p
                                                      WHERE p.tenant_id = announce_invoice.tenant_id
                                                        AND p.invoice_id = announce_invoice.invoice_id), i.at)
                          ELSE i.at END,
            CASE WHEN i.status = 'void' THEN
                jsonb_build_object('reason', i.void_reason, 'correcting_invoice_id',
                                   (SELECT c.id FROM subscription.invoice_record AS c
                                     WHERE c.tenant_id = announce_invoice.tenant_id
                                       AND c.corrects_invoice_id = announce_invoice.invoice_id))
                 ELSE '{}' END,
            true);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.announce_invoice(bigint, bigint) IS
'Internal: an invoice''s opening with its total and lines (the event invoice.opened), then a status its transaction reached, once (I8)';

CREATE FUNCTION subscription.invoice_opened()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.announce_invoice(NEW.tenant_id, NEW.id);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.invoice_opened() IS
'Trigger, at the commit: an invoice''s opening with its total and lines (announce_invoice, I8)';

CREATE OR REPLACE FUNCTION subscription.open_invoice(tenant_id bigint, account_id bigint, subscription_id bigint,
                                          currency text, at timestamptz, plan text, corrects bigint,
                                          quiet boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    the_issuer text;
    next_number bigint;
    new_id bigint;
    method bigint;
    due timestamptz := at + make_interval(days => coalesce(current_setting('subscription.payment_terms', true), '0')::integer);
BEGIN
    PERFORM subscription.require_arguments('open_invoice', '{tenant_id,account_id,currency,at}',
        ARRAY[tenant_id IS NULL, account_id IS NULL, currency IS NULL, at IS NULL]);
    PERFORM subscription.require_account(open_invoice.tenant_id, open_invoice.account_id);
    IF subscription_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM subscription.subscription AS s
                        WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id) THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = open_invoice.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    -- every statement names the tenant, or reads the catalog alone: on
    -- Citus this runs in the ledger's trigger on the tenant's shard
    IF plan IS NULL AND subscription_id IS NOT NULL THEN
        plan := (SELECT s.plan FROM subscription.subscription AS s
                  WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id);
    END IF;
    the_issuer := coalesce((SELECT p.product FROM subscription.plan AS p WHERE p.code = open_invoice.plan), '');
    INSERT INTO subscription.invoice_series AS x (tenant_id, issuer, last_number)
    VALUES (open_invoice.tenant_id, the_issuer, 1)
    ON CONFLICT ON CONSTRAINT invoice_series_pkey DO UPDATE SET last_number = x.last_number + 1
    RETURNING x.last_number INTO next_number;
    -- no subquery in INSERT ... VALUES: Citus refuses it
    method := (SELECT m.id FROM subscription.payment_method AS m
                WHERE m.tenant_id = open_invoice.tenant_id AND m.account_id = open_invoice.account_id AND m.is_default);
    INSERT INTO subscription.invoice_record AS i
           (tenant_id, account_id, subscription_id, issuer, number, at, currency, due_at, payment_method_id,
            corrects_invoice_id)
    VALUES (open_invoice.tenant_id, open_invoice.account_id, open_invoice.subscription_id, the_issuer, next_number,
            open_invoice.at, open_invoice.currency, due, method, open_invoice.corrects)
    RETURNING i.id INTO new_id;
    -- its history row and event invoice.opened are written at the commit,
    -- once its lines are all there (invoice_opened, I8)
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.open_invoice(bigint, bigint, bigint, text, timestamptz, text, bigint, boolean) IS
'Internal: a new invoice, numbered gapless in its issuer''s series in this transaction, due after subscription.payment_terms days; its opening recorded at the commit (I1, I3, I8)';

CREATE OR REPLACE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    new_status := CASE WHEN i.status IN ('void', 'uncollectible') THEN i.status
                       WHEN i.total - i.paid <= 0 THEN 'paid' ELSE 'open' END;
    IF new_status IS DISTINCT FROM i.status THEN
        UPDATE subscription.invoice_record AS r SET status = new_status
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
        IF quiet THEN
            RETURN new_status;
        END IF;
        PERFORM subscription.invoice_status_history(i, new_status, coalesce(settle_invoice.at, i.at), '{}', false);
        IF new_status = 'paid' AND i.subscription_id IS NOT NULL THEN
            PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
        END IF;
    END IF;
    RETURN new_status;
END
$$;

COMMENT ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz) IS
'Internal: an invoice''s status from its total and payments, its change recorded in history unless quiet (I3)';

CREATE OR REPLACE FUNCTION subscription.invoice_for_change(fn text, tenant bigint, invoice_id bigint)
RETURNS subscription.invoice_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    owner bigint;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = invoice_for_change.tenant AND r.id = invoice_for_change.invoice_id FOR UPDATE;
    IF FOUND AND NOT i.announced THEN
        -- I8: opened in this transaction: its opening before the change's events
        PERFORM subscription.announce_invoice(i.tenant_id, i.id);
        SELECT * INTO i FROM subscription.invoice_record AS r WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    END IF;
    IF FOUND THEN
        RETURN i;
    END IF;
    owner := subscription.tenant_of_invoice(invoice_id);
    IF owner IS NULL THEN
        RAISE EXCEPTION 'invoice % does not exist', invoice_id USING ERRCODE = 'no_data_found';
    END IF;
    IF invoice_for_change.tenant IS NULL THEN
        RAISE EXCEPTION 'argument "tenant_id" of %() must not be null', fn USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RAISE EXCEPTION 'invoice % is not of tenant %', invoice_id, invoice_for_change.tenant
        USING ERRCODE = 'invalid_parameter_value',
              HINT = format('subscription.%s(invoice_id, ...) without the tenant finds it.', fn);
END
$$;

COMMENT ON FUNCTION subscription.invoice_for_change(text, bigint, bigint) IS
'Internal: an invoice of the tenant, locked (P0002 unless it exists, 22023 if another tenant''s)';

CREATE OR REPLACE FUNCTION subscription.void_invoice(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    correction bigint;
    c record;
    returned numeric;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.void_invoice(bigint,bigint,text,timestamptz)', void_invoice.tenant_id,
            pg_catalog.jsonb_build_array(void_invoice.tenant_id, void_invoice.invoice_id, void_invoice.reason, void_invoice.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('void_invoice', '{invoice_id,reason,at}',
        ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('void_invoice', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('void_invoice', at, false);
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'a void needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status <> 'open' OR i.paid > 0 THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number,
                        CASE WHEN i.status = 'open' THEN 'partly paid' ELSE i.status END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only an open invoice without payments can be voided; give money back with a refund or a credit.';
    END IF;
    correction := subscription.open_invoice(i.tenant_id, i.account_id, i.subscription_id, i.currency,
                                            void_invoice.at, NULL, i.id);
    -- each charge, net of what its coupon, the credit that paid it and
    -- the refunds and credits of it given before took off
    FOR c IN SELECT l.*, coalesce((SELECT sum(d.amount) FROM subscription.ledger AS d
                                    WHERE d.tenant_id = l.tenant_id AND d.charge_id = l.id
                                      AND d.kind IN ('discount', 'credit_used', 'refund', 'credit')), 0) AS off,
                    -- a charge is given back once by a line naming it (ledger_one_refund_per_charge)
                    EXISTS (SELECT FROM subscription.ledger AS g
                             WHERE g.tenant_id = l.tenant_id AND g.charge_id = l.id
                               AND g.kind IN ('refund', 'credit')) AS given_back
               FROM subscription.ledger AS l
              WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind = 'charge'
              ORDER BY l.id LOOP
        IF c.amount - c.off > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description, invoice_id, corrects_invoice_id)
            VALUES (i.tenant_id, i.account_id, c.subscription_id, c.addon_batch_id, 'refund', c.amount - c.off,
                    c.currency, c.period, c.item, c.plan, CASE WHEN NOT c.given_back THEN c.id END,
                    format('void of invoice %s: %s', i.document_number, reason)
                      || CASE WHEN c.given_back THEN format(' (the rest of charge %s)', c.id) ELSE '' END,
                    correction, i.id);
        END IF;
    END LOOP;
    -- the account's credit this invoice used, and what it gave back of
    -- earlier charges, stay the account's: one credit line (L9)
    returned := (SELECT sum(l.amount) FROM subscription.ledger AS l
                  WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind IN ('credit_used', 'refund', 'credit'));
    IF returned > 0 THEN
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, item, description, invoice_id,
                corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, i.subscription_id, 'credit', subscription.round_money(returned, i.currency),
                i.currency, 'credit',
                format('void of invoice %s: credit used and given back returned to the account (%s)',
                       i.document_number, reason), correction, i.id);
    END IF;
    UPDATE subscription.invoice_record AS r SET status = 'void', void_reason = reason
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.invoice_status_history(i, 'void', void_invoice.at,
        jsonb_build_object('reason', reason, 'correcting_invoice_id', correction), false);
    -- D5: nothing is owed on it any more
    IF i.subscription_id IS NOT NULL THEN
        PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
    END IF;
    RETURN correction;
END
$$;

COMMENT ON FUNCTION subscription.void_invoice(bigint, bigint, text, timestamptz) IS
'Void an open unpaid invoice: a correcting invoice gives its charges back and returns credit used or given back to the account, nothing is deleted (I3) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.history_events(operation text, details jsonb)
RETURNS TABLE (type text, payload jsonb)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v1 CONSTANT jsonb := '{"version": 1}';
BEGIN
    -- a branch per operation, of simple expressions that PL/pgSQL evaluates
    -- without starting an executor: a union of every event type, filtered
    -- by operation, started one for each history row (about half of what
    -- the outbox cost license_consume)
    CASE operation
    WHEN 'subscription_insert' THEN
        type := 'subscription.created';
        payload := v1 || jsonb_build_object(
            'plan', details -> 'plan', 'cycle', details -> 'cycle', 'quantity', details -> 'quantity',
            'status', details -> 'status', 'renewal', details -> 'renewal',
            'period_start', subscription.event_time(lower((details ->> 'period')::tstzrange)),
            'period_end', subscription.event_time(upper((details ->> 'period')::tstzrange)));
        RETURN NEXT;
    WHEN 'subscription_update' THEN
        IF (details -> 'period_number' ->> 'new')::integer > (details -> 'period_number' ->> 'old')::integer THEN
            type := 'subscription.renewed';
            payload := v1 || jsonb_build_object(
                'period_number', details -> 'period_number' -> 'new',
                'period_start', subscription.event_time(lower((details -> 'period' ->> 'new')::tstzrange)),
                'period_end', subscription.event_time(upper((details -> 'period' ->> 'new')::tstzrange)));
            RETURN NEXT;
        END IF;
        IF details ? 'plan' THEN
            type := 'subscription.plan_changed';
            payload := v1 || jsonb_build_object('from', details -> 'plan' -> 'old', 'to', details -> 'plan' -> 'new');
            RETURN NEXT;
        END IF;
        IF details ? 'quantity' THEN
            type := 'subscription.quantity_changed';
            payload := v1 || jsonb_build_object('from', details -> 'quantity' -> 'old', 'to', details -> 'quantity' -> 'new');
            RETURN NEXT;
        END IF;
        IF details -> 'status' ->> 'new' IN ('cancelled', 'expired') THEN
            type := 'subscription.' || (details -> 'status' ->> 'new');
            payload := v1 || jsonb_build_object('previous_status', details -> 'status' -> 'old');
            RETURN NEXT;
        END IF;
        -- past due and its end (issue 19, D1, D5)
        IF details -> 'status' ->> 'new' = 'past_due' THEN
            type := 'subscription.past_due';
            payload := v1 || jsonb_build_object(
                'invoice_id', details -> 'past_due_invoice_id' -> 'new',
                'since', subscription.event_time((details -> 'past_due_since' ->> 'new')::timestamptz));
            RETURN NEXT;
        END IF;
        IF details -> 'status' ->> 'old' = 'past_due' THEN
            type := 'subscription.past_due_ended';
            payload := v1 || jsonb_build_object(
                'status', details -> 'status' -> 'new', 'invoice_id', details -> 'past_due_invoice_id' -> 'old');
            RETURN NEXT;
        END IF;
    WHEN 'dunning_step' THEN
        type := 'subscription.dunning_step';
        payload := v1 || jsonb_build_object(
            'invoice_id', details -> 'invoice_id', 'step', details -> 'step', 'steps', details -> 'steps',
            'action', details -> 'action', 'amount', details -> 'due', 'currency', details -> 'currency',
            'step_at', subscription.event_time((details ->> 'at')::timestamptz));
        RETURN NEXT;
    WHEN 'addon_batch_insert' THEN
        type := 'addon.purchased';
        payload := v1 || jsonb_build_object(
            'batch_id', details -> 'id', 'addon', details -> 'addon', 'quantity', details -> 'quantity');
        RETURN NEXT;
    WHEN 'addon_batch_update' THEN
        IF details -> 'status' ->> 'new' IN ('cancelled', 'expired') THEN
            type := 'addon.ended';
            payload := v1 || jsonb_build_object('batch_id', details -> 'batch_id', 'status', details -> 'status' -> 'new');
            RETURN NEXT;
        END IF;
    WHEN 'license_assign', 'license_release' THEN
        type := CASE operation WHEN 'license_assign' THEN 'license.assigned' ELSE 'license.released' END;
        payload := v1 || jsonb_build_object('members', details -> 'members');
        RETURN NEXT;
    -- invoices and payments (issue 19, I3, I6; the payloads docs/integrating.md reserved)
    WHEN 'invoice_open' THEN
        -- version 2 (I8): written at the commit, with the invoice's total and lines
        type := 'invoice.opened';
        payload := jsonb_build_object(
            'version', 2,
            'invoice_id', details -> 'invoice_id', 'issuer', details -> 'issuer', 'number', details -> 'number',
            'total', details -> 'total', 'lines', details -> 'lines', 'currency', details -> 'currency',
            'due_at', subscription.event_time((details ->> 'due_at')::timestamptz),
            'corrects_invoice_id', details -> 'corrects_invoice_id');
        RETURN NEXT;
    WHEN 'invoice_status' THEN
        IF details -> 'status' ->> 'new' IN ('paid', 'void', 'uncollectible') THEN
            type := 'invoice.' || (details -> 'status' ->> 'new');
            payload := v1 || jsonb_build_object(
                'invoice_id', details -> 'invoice_id', 'issuer', details -> 'issuer', 'number', details -> 'number',
                'amount', details -> 'total', 'paid', details -> 'paid', 'currency', details -> 'currency',
                (details -> 'status' ->> 'new') || '_at', subscription.event_time((details ->> 'at')::timestamptz));
            RETURN NEXT;
        END IF;
    WHEN 'payment' THEN
        type := 'payment.recorded';
        payload := v1 || jsonb_build_object(
            'payment_id', details -> 'payment_id', 'invoice_id', details -> 'invoice_id', 'amount', details -> 'amount',
            'currency', details -> 'currency', 'reference', details -> 'reference', 'credited', details -> 'credited');
        RETURN NEXT;
    WHEN 'payment_failure' THEN
        type := 'payment.failed';
        payload := v1 || jsonb_build_object(
            'invoice_id', details -> 'invoice_id', 'amount', details -> 'due', 'currency', details -> 'currency',
            'attempt', details -> 'attempt', 'reason', details -> 'reason');
        RETURN NEXT;
    ELSE
        NULL;  -- an operation without events
    END CASE;
END
$$;

COMMENT ON FUNCTION subscription.history_events(text, jsonb) IS
'The events of a history row: event types and versioned payloads per operation (E1, docs/integrating.md)';

CREATE OR REPLACE FUNCTION subscription.dunning_final(s subscription.subscription, i subscription.invoice_record,
                                           action text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    free text;
BEGIN
    PERFORM subscription.require_arguments('dunning_final', '{s,i,action,at}',
        ARRAY[(s).id IS NULL, (i).id IS NULL, action IS NULL, at IS NULL]);
    IF action NOT IN ('cancel', 'freeze', 'downgrade', 'keep') THEN
        RAISE EXCEPTION 'unknown final action of a dunning "%"', action
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The final actions are cancel, freeze, downgrade and keep.';
    END IF;
    IF action = 'freeze' THEN
        UPDATE subscription.subscription AS x SET dunning_frozen = true
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
        RETURN;
    END IF;
    IF action = 'downgrade' THEN
        free := subscription.free_plan(s.plan, s.cycle);
        IF free IS NULL THEN
            RAISE WARNING 'subscription % is cancelled at the end of its dunning: plan "%" has no free plan for cycle %',
                          s.id, s.plan, subscription.cycle_text(s.cycle);
            action := 'cancel';
        END IF;
    END IF;
    UPDATE subscription.invoice_record AS r SET status = 'uncollectible'
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.invoice_status_history(i, 'uncollectible', dunning_final.at, '{}', false);
    UPDATE subscription.subscription AS x
       SET status = CASE WHEN action = 'cancel' THEN 'cancelled' ELSE 'active' END,
           past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           pending_plan = CASE WHEN action = 'downgrade' AND free <> x.plan THEN free ELSE x.pending_plan END
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    IF action = 'downgrade' AND free <> s.plan THEN
        PERFORM FROM subscription.apply_downgrade(s.tenant_id, s.id, false);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.dunning_final(subscription.subscription, subscription.invoice_record, text, timestamptz) IS
'Internal: the final action of a dunning ladder: cancel, freeze, downgrade to the free plan, or keep (D4)';

CREATE FUNCTION subscription.dunning_batch(
    at timestamptz, batch_size integer, after_id bigint,
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint, OUT left_due bigint[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    t bigint;
BEGIN
    PERFORM subscription.require_arguments('dunning_batch', '{at,batch_size,after_id}',
        ARRAY[at IS NULL, batch_size IS NULL, after_id IS NULL]);
    tenants := ARRAY(SELECT DISTINCT v.tenant_id FROM subscription.invoice_record AS v
                      WHERE v.status = 'open' AND v.due_at <= dunning_batch.at
                        AND v.subscription_id IS NOT NULL AND v.tenant_id > dunning_batch.after_id
                      ORDER BY v.tenant_id LIMIT dunning_batch.batch_size);
    taken := cardinality(tenants);
    handled := 0;
    last_id := coalesce(tenants[taken], after_id);
    left_due := '{}';
    FOREACH t IN ARRAY tenants LOOP
        handled := handled + subscription.run_dunning_tenant(t, dunning_batch.at);
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.dunning_batch(timestamptz, integer, bigint) IS
'Internal: one batch of run_dunning: the next tenants with an open invoice due, each by run_dunning_tenant';

CREATE OR REPLACE PROCEDURE subscription.renew_in_batches(fn text, at timestamptz, batch_size integer, shards bigint[])
LANGUAGE plpgsql
AS $$
DECLARE
    b record;
    total bigint := 0;
    after_end timestamptz;
    after_id bigint;
    skip bigint[];
    shard bigint;
    -- run_dunning's batches are dunning_batch's, without a NOTICE
    dunning boolean := fn OPERATOR(pg_catalog.=) 'run_dunning';
BEGIN
    PERFORM subscription.require_renewal_run(fn, at);
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH shard IN ARRAY shards LOOP
        after_end := '-infinity';
        after_id := 0;
        skip := '{}';
        LOOP
            IF dunning THEN
                b := subscription.dunning_batch(at, batch_size, after_id);
            ELSE
                b := subscription.renew_batch(at, batch_size, after_end, after_id, skip, shard);
            END IF;
            COMMIT;
            EXIT WHEN b.taken OPERATOR(pg_catalog.=) 0;
            skip := skip OPERATOR(pg_catalog.||) b.left_due;
            total := total OPERATOR(pg_catalog.+) b.handled;
            after_end := b.last_end;
            after_id := b.last_id;
            IF NOT dunning THEN
                RAISE NOTICE '%: % subscriptions handled', fn, total;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

COMMENT ON PROCEDURE subscription.renew_in_batches(text, timestamptz, integer, bigint[]) IS
'Internal: the committed tenant batches of run_renewals, renew_local_tenants and run_dunning';

CREATE OR REPLACE PROCEDURE subscription.run_dunning(at timestamptz DEFAULT subscription.now(), batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM subscription.require_arguments('run_dunning', '{at,batch_size}',
        ARRAY[run_dunning.at IS NULL, run_dunning.batch_size IS NULL]);
    CALL subscription.renew_in_batches('run_dunning', run_dunning.at, run_dunning.batch_size, '{NULL}');
END
$$;

COMMENT ON PROCEDURE subscription.run_dunning(timestamptz, integer) IS
'Dunning for every tenant (run_dunning_tenant) in committed batches, for pg_cron; CALL it outside a transaction block (D3)';

CREATE OR REPLACE FUNCTION subscription.close_account(tenant_id bigint, account_id bigint, at timestamptz)
RETURNS TABLE (subscription_id bigint, credited numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
    open_children text;
    s bigint;
    st text;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.close_account(bigint,bigint,timestamptz)', close_account.tenant_id,
            pg_catalog.jsonb_build_array(close_account.tenant_id, close_account.account_id, close_account.at)))
            AS r (subscription_id bigint, credited numeric);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('close_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('close_account', '{account_id,at}',
        ARRAY[account_id IS NULL, at IS NULL]);
    PERFORM subscription.require_account(close_account.account_id);
    PERFORM subscription.authorize(close_account.account_id, 'cancel');
    PERFORM subscription.require_time('close_account', at, false);
    SELECT a.closed_at INTO closed FROM subscription.account AS a
     WHERE a.tenant_id = close_account.tenant_id AND a.id = close_account.account_id FOR NO KEY UPDATE;
    IF closed IS NOT NULL THEN
        RAISE EXCEPTION 'account % is already closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was closed at %s.', closed);
    END IF;
    -- K9: a sub-account is closed by whom may act on it (Z1, K8), first
    SELECT string_agg(a.id::text, ', ' ORDER BY a.id) INTO open_children FROM subscription.account AS a
     WHERE a.tenant_id = close_account.tenant_id AND a.parent_id = close_account.account_id AND a.closed_at IS NULL;
    IF open_children IS NOT NULL THEN
        RAISE EXCEPTION 'account % has open sub-accounts', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Sub-accounts %s are open.', open_children),
                  HINT = 'Close them first with subscription.close_account().';
    END IF;
    FOR s, st IN SELECT x.id, x.status FROM subscription.subscription AS x
              WHERE x.tenant_id = close_account.tenant_id AND x.account_id = close_account.account_id
                AND x.status IN ('active', 'past_due')
              ORDER BY x.id LOOP
        subscription_id := s;
        IF st = 'past_due' THEN
            -- D6: ended too, without credit (its unpaid period gives nothing
            -- back); its invoice stays open, still owed, and its dunning stops
            UPDATE subscription.addon_batch AS b SET status = 'expired'
             WHERE b.tenant_id = close_account.tenant_id AND b.subscription_id = s AND b.status = 'active';
            UPDATE subscription.subscription AS x
               SET status = 'cancelled', past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
                   dunning_frozen = false
             WHERE x.tenant_id = close_account.tenant_id AND x.id = s;
            credited := 0;
        ELSE
            credited := subscription.end_early(close_account.tenant_id, s, at);
        END IF;
        RETURN NEXT;
    END LOOP;
    -- the seats of every subscription of the account, through the license guard
    DELETE FROM subscription.license AS l
     USING subscription.subscription AS x
     WHERE l.tenant_id = close_account.tenant_id
       AND x.tenant_id = close_account.tenant_id AND x.id = l.subscription_id
       AND x.account_id = close_account.account_id;
    UPDATE subscription.account AS a SET closed_at = close_account.at
     WHERE a.tenant_id = close_account.tenant_id AND a.id = close_account.account_id;
END
$$;

COMMENT ON FUNCTION subscription.close_account(bigint, bigint, timestamptz) IS
'Close an account: end every subscription (unused days credited, L9), release the seats, refuse new subscriptions (keyed form: the tenant first, docs/design.md#keyed-forms)';


CREATE CONSTRAINT TRIGGER invoice_record_opened AFTER INSERT ON subscription.invoice_record
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION subscription.invoice_opened();

REVOKE ALL ON FUNCTION subscription.invoice_status_history(subscription.invoice_record, text, timestamptz, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.announce_invoice(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_opened() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.dunning_batch(timestamptz, integer, bigint) FROM PUBLIC;

-- end of: invoice.opened at the commit, dunning security, batching (issue 19)

-- Usage written after the period's end, usage in the set-based renewals (issue 21, U3) --
-- The counter knows where its period closes; the guard's UPDATE that
-- crosses it snapshots the ending period (src/limits.c, METER_ACCUMULATORS),
-- which bill_usage bills; renew_common_group bills usage (bill_usage).
-- U3: the end of the counter's billing period (closes), and the ending
-- period's figures that the guard's UPDATE snapshots when a write comes
-- at or after it and before the renewal ran (closed_at: the snapshot's
-- end; NULL: none).  bill_usage bills the snapshot; open_usage sets closes.
ALTER TABLE subscription.usage_counter
    ADD COLUMN closes timestamptz,
    ADD COLUMN closed_at timestamptz,
    ADD COLUMN closed_used bigint CHECK (closed_used >= 0),
    ADD COLUMN closed_peak bigint CHECK (closed_peak >= 0),
    ADD COLUMN closed_integral numeric CHECK (closed_integral >= 0);

COMMENT ON COLUMN subscription.usage_counter.closes IS
'The end of the billing period of the feature''s usage price (U3): a write at or after it snapshots the period''s figures first';
COMMENT ON COLUMN subscription.usage_counter.closed_at IS
'The end of the ended period whose figures are kept in closed_used, closed_peak and closed_integral until its renewal bills them (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_used IS
'The use at closed_at: the ended period''s count or sum (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_peak IS
'The ended period''s peak (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_integral IS
'The ended period''s integral in row-seconds, up to closed_at (U3)';

-- move_usage takes the usage's time (record_usage's at)
DROP FUNCTION subscription.move_usage(bigint, text, bigint, bigint);
CREATE FUNCTION subscription.move_usage(account_id bigint, feature text, delta bigint, in_tenant bigint, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'move_usage'
LANGUAGE C;

COMMENT ON FUNCTION subscription.move_usage(bigint, text, bigint, bigint, timestamptz) IS
'Internal (C): move an account''s usage counter (of tenant in_tenant) by delta at a time under its limit, as the limit guard does; the new use';

CREATE OR REPLACE FUNCTION subscription.usage_closes(tenant_id bigint, account_id bigint, feature text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plans text[] := ARRAY(SELECT p.plan FROM subscription.plan_usage_price AS p WHERE p.feature = usage_closes.feature);
BEGIN
    IF cardinality(plans) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT min(upper(s.period)) FROM subscription.subscription AS s
             WHERE s.tenant_id = usage_closes.tenant_id AND s.account_id = usage_closes.account_id
               AND s.status IN ('active', 'trialing') AND s.plan = ANY (plans));
END
$$;

COMMENT ON FUNCTION subscription.usage_closes(bigint, bigint, text) IS
'Internal: where an account''s usage counter of a feature closes its billing period: the earliest period end of the subscriptions that price its usage (U3)';

CREATE OR REPLACE FUNCTION subscription.open_usage(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    features text[] := ARRAY(SELECT DISTINCT p.feature FROM subscription.plan_usage_price AS p);
    f text;
    ends timestamptz;
BEGIN
    IF cardinality(features) = 0 THEN
        RETURN;
    END IF;
    FOR f IN SELECT u.feature FROM subscription.usage_counter AS u
              WHERE u.tenant_id = open_usage.tenant_id AND u.account_id = open_usage.account_id
                AND u.feature = ANY (features)
              ORDER BY u.feature LOOP
        ends := subscription.usage_closes(open_usage.tenant_id, open_usage.account_id, f);
        UPDATE subscription.usage_counter AS u SET closes = ends
         WHERE u.tenant_id = open_usage.tenant_id AND u.account_id = open_usage.account_id AND u.feature = f
           AND u.closes IS DISTINCT FROM ends;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.open_usage(bigint, bigint) IS
'Internal: set where an account''s usage counters close their billing period, after a period moved (U3)';

CREATE OR REPLACE FUNCTION subscription.usage_due(s subscription.subscription, until timestamptz)
RETURNS TABLE(feature text, aggregation text, from_rows boolean, period tstzrange, upto timestamptz,
              used bigint, peak bigint, integral numeric, aggregate numeric, included bigint, billable numeric,
              amount numeric, currency text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    c record;
    starts timestamptz;
BEGIN
    FOR p IN
        SELECT u.feature, u.included, u.unit_amount, u.tiers, u.mode, u.currency,
               coalesce(m.aggregation, CASE WHEN t.feature IS NULL THEN 'recorded' ELSE 'count' END) AS aggregation,
               coalesce(m.unit, interval '1 day') AS unit, t.feature IS NOT NULL AS from_rows
          FROM subscription.plan_usage_price AS u
          LEFT JOIN subscription.limited_table AS t ON t.feature = u.feature
          LEFT JOIN subscription.meter AS m ON m.feature = u.feature
         WHERE u.plan = s.plan
         ORDER BY u.feature
    LOOP
        -- from the period's start, or where a bill of this period ended (a
        -- plan change mid-period); nothing left: billed already
        SELECT coalesce(max(upper(x.period)), lower(s.period)) INTO starts
          FROM subscription.usage_period AS x
         WHERE x.tenant_id = s.tenant_id AND x.subscription_id = s.id AND x.feature = p.feature
           AND x.period && tstzrange(lower(s.period), until, '[]');
        CONTINUE WHEN starts >= until;
        SELECT u.used, u.peak, u.integral, u.since, u.closed_at, u.closed_used, u.closed_peak, u.closed_integral INTO c
          FROM subscription.usage_counter AS u
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = p.feature;
        IF c.closed_at IS NOT NULL THEN
            -- U3: a write at or after the period's end began the next
            -- period in the counter: the ending period's figures are the
            -- snapshot that write took, up to the end
            c.used := c.closed_used;
            c.peak := c.closed_peak;
            c.integral := c.closed_integral;
            c.since := c.closed_at;
        END IF;
        feature := p.feature;
        aggregation := p.aggregation;
        from_rows := p.from_rows;
        period := tstzrange(starts, until);
        upto := greatest(coalesce(c.since, until), until);
        used := coalesce(c.used, 0);
        peak := coalesce(greatest(c.peak, c.used), 0);
        integral := subscription.integral_at(coalesce(c.integral, 0), coalesce(c.used, 0), coalesce(c.since, until), upto);
        aggregate := coalesce(CASE p.aggregation
                              WHEN 'peak' THEN greatest(c.peak, c.used)
                              WHEN 'time_weighted' THEN integral / extract(epoch FROM p.unit)
                              ELSE c.used END, 0);
        included := p.included;
        billable := greatest(aggregate - p.included, 0);
        amount := subscription.round_money(subscription.usage_amount(billable, p.unit_amount, p.tiers, p.mode), p.currency);
        currency := p.currency;
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.usage_due(subscription.subscription, timestamptz) IS
'Internal: what a subscription''s usage comes to up to a time, per usage price, not yet billed: the one computation of bill_usage and its previews (U3, U6)';

CREATE OR REPLACE FUNCTION subscription.bill_usage(s subscription.subscription, until timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    line bigint;
    -- a value first: on Citus the catalog's lookup may not run inside the shard's query
    features text[] := ARRAY(SELECT x.feature FROM subscription.plan_usage_price AS x WHERE x.plan = s.plan);
BEGIN
    -- the counters first, in the order of the features (as usage_due reads them)
    PERFORM FROM subscription.usage_counter AS u
     WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = ANY (features)
     ORDER BY u.feature
       FOR UPDATE OF u;
    FOR d IN SELECT * FROM subscription.usage_due(s, until) LOOP
        line := NULL;
        IF d.amount > 0 THEN
            INSERT INTO subscription.ledger AS l
                   (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
            VALUES (s.tenant_id, s.account_id, s.id, 'charge', d.amount, d.currency, d.period, 'usage ' || d.feature, s.plan,
                    format('overage: %s %s of %s, %s included', round(d.aggregate, 6), d.aggregation, d.feature, d.included))
            ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
               WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING
            RETURNING l.id INTO line;
        END IF;
        INSERT INTO subscription.usage_period
               (tenant_id, subscription_id, account_id, feature, period, plan, aggregation, used, peak, integral,
                aggregate, included, billable, amount, currency, ledger_id)
        VALUES (s.tenant_id, s.id, s.account_id, d.feature, d.period, s.plan, d.aggregation, d.used,
                d.peak, d.integral, d.aggregate, d.included, d.billable, d.amount, d.currency, line);
        -- the next period's accumulators: rows stay, recorded usage starts
        -- again; a snapshot billed (U3): the counter is in the next period
        -- already, its snapshot goes; the period's end is open_usage's
        UPDATE subscription.usage_counter AS u
           SET used = CASE WHEN u.closed_at IS NOT NULL THEN u.used WHEN d.from_rows THEN d.used ELSE 0 END,
               peak = CASE WHEN u.closed_at IS NOT NULL THEN u.peak WHEN d.from_rows THEN d.used ELSE 0 END,
               integral = CASE WHEN u.closed_at IS NOT NULL THEN u.integral ELSE 0 END,
               since = CASE WHEN u.closed_at IS NOT NULL THEN u.since ELSE d.upto END,
               closes = NULL, closed_at = NULL, closed_used = NULL, closed_peak = NULL, closed_integral = NULL
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = d.feature;
        IF NOT d.from_rows THEN
            -- keys are kept for the period and the grace after it
            DELETE FROM subscription.usage_record AS r
             WHERE r.tenant_id = s.tenant_id AND r.account_id = s.account_id AND r.feature = d.feature
               AND r.at < lower(s.period) - current_setting('subscription.usage_key_grace')::interval;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.bill_usage(subscription.subscription, timestamptz) IS
'Internal: bill the usage of a subscription''s period up to a time, once, and reset the counters'' accumulators (U3)';

CREATE OR REPLACE FUNCTION subscription.record_usage(tenant_id bigint, account_id bigint, feature text, quantity bigint, key text,
                                          at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_total bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_usage(bigint,bigint,text,bigint,text,timestamptz)', record_usage.tenant_id,
            pg_catalog.jsonb_build_array(record_usage.tenant_id, record_usage.account_id, record_usage.feature, record_usage.quantity, record_usage.key, record_usage.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('record_usage', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('record_usage', '{account_id,feature,quantity,key,at}',
        ARRAY[account_id IS NULL, feature IS NULL, quantity IS NULL, key IS NULL, at IS NULL]);
    PERFORM subscription.require_account(record_usage.tenant_id, record_usage.account_id);
    -- usage becomes a charge: as paying, Z1
    PERFORM subscription.authorize(record_usage.tenant_id, record_usage.account_id, 'pay', false);
    PERFORM subscription.require_recorded_feature('record_usage', feature);
    IF quantity < 0 THEN
        RAISE EXCEPTION 'a quantity of usage must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity),
                  HINT = 'subscription.correct_usage() corrects a quantity recorded, with its reason.';
    END IF;
    INSERT INTO subscription.usage_record AS r (tenant_id, account_id, feature, key, quantity, total, at)
    VALUES (record_usage.tenant_id, record_usage.account_id, record_usage.feature, record_usage.key,
            record_usage.quantity, 0, record_usage.at)
    ON CONFLICT ON CONSTRAINT usage_record_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT r.total INTO new_total FROM subscription.usage_record AS r
         WHERE r.tenant_id = record_usage.tenant_id AND r.account_id = record_usage.account_id
           AND r.feature = record_usage.feature AND r.key = record_usage.key;
        RETURN new_total;
    END IF;
    -- a query, not an expression: the counter's triggers fire at its end
    SELECT subscription.move_usage(record_usage.account_id, record_usage.feature, record_usage.quantity,
                                   record_usage.tenant_id, record_usage.at) INTO new_total;
    UPDATE subscription.usage_record AS r SET total = new_total
     WHERE r.tenant_id = record_usage.tenant_id AND r.account_id = record_usage.account_id
       AND r.feature = record_usage.feature AND r.key = record_usage.key;
    RETURN new_total;
END
$$;

COMMENT ON FUNCTION subscription.record_usage(bigint, bigint, text, bigint, text, timestamptz) IS
'Record usage without rows once per key, under the feature''s limit; the new total (U4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.correct_usage(tenant_id bigint, account_id bigint, feature text, key text, quantity bigint,
                                           reason text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r subscription.usage_record;
    used bigint;
    new_total bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.correct_usage(bigint,bigint,text,text,bigint,text)', correct_usage.tenant_id,
            pg_catalog.jsonb_build_array(correct_usage.tenant_id, correct_usage.account_id, correct_usage.feature, correct_usage.key, correct_usage.quantity, correct_usage.reason)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('correct_usage', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('correct_usage', '{account_id,feature,key,quantity,reason}',
        ARRAY[account_id IS NULL, feature IS NULL, key IS NULL, quantity IS NULL, reason IS NULL]);
    PERFORM subscription.require_account(correct_usage.tenant_id, correct_usage.account_id);
    PERFORM subscription.authorize(correct_usage.tenant_id, correct_usage.account_id, 'pay', false);
    PERFORM subscription.require_recorded_feature('correct_usage', feature);
    IF quantity < 0 THEN
        RAISE EXCEPTION 'a quantity of usage must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity);
    END IF;
    SELECT x.* INTO r FROM subscription.usage_record AS x
     WHERE x.tenant_id = correct_usage.tenant_id AND x.account_id = correct_usage.account_id
       AND x.feature = correct_usage.feature AND x.key = correct_usage.key
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no usage of feature "%" was recorded with key "%" for account %', feature, key, account_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Keys are kept for their period and subscription.usage_key_grace after it.';
    END IF;
    SELECT u.used INTO used FROM subscription.usage_counter AS u
     WHERE u.tenant_id = correct_usage.tenant_id AND u.account_id = correct_usage.account_id
       AND u.feature = correct_usage.feature;
    IF coalesce(used, 0) + quantity - r.quantity < 0 THEN
        RAISE EXCEPTION 'the usage recorded with key "%" was billed already', key
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The period''s counter holds %s; the correction takes away %s.', coalesce(used, 0),
                                  r.quantity - quantity),
                  HINT = 'Give the difference back with subscription.credit_account().';
    END IF;
    SELECT subscription.move_usage(correct_usage.account_id, correct_usage.feature, correct_usage.quantity - r.quantity,
                                   correct_usage.tenant_id, r.at) INTO new_total;
    UPDATE subscription.usage_record AS x SET quantity = correct_usage.quantity, total = new_total
     WHERE x.tenant_id = correct_usage.tenant_id AND x.account_id = correct_usage.account_id
       AND x.feature = correct_usage.feature AND x.key = correct_usage.key;
    PERFORM subscription.write_history('correct_usage', account_id, NULL,
        jsonb_build_object('feature', feature, 'key', key, 'from', r.quantity, 'to', quantity, 'reason', reason),
        correct_usage.tenant_id);
    RETURN new_total;
END
$$;

COMMENT ON FUNCTION subscription.correct_usage(bigint, bigint, text, text, bigint, text) IS
'Correct the quantity recorded with a key, with the reason in history; the new total (U5) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.subscribe(tenant_id bigint, account_id bigint, plan text, cycle interval, quantity integer, at timestamptz, renewal text, coupon text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    price     record;
    period    tstzrange;
    new_id    bigint;
    anchor_at timestamptz;
    k         integer;
    full_period tstzrange;
    plan_version integer;
    is_default boolean;
    coupon_cycles integer;
    trial     interval;
    product_plans text[];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.subscribe(bigint,bigint,text,interval,integer,timestamptz,text,text)', subscribe.tenant_id,
            pg_catalog.jsonb_build_array(subscribe.tenant_id, subscribe.account_id, subscribe.plan, subscribe.cycle, subscribe.quantity, subscribe.at, subscribe.renewal, subscribe.coupon)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('subscribe', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('subscribe',
        '{account_id,plan,cycle,quantity,at,renewal}',
        ARRAY[account_id IS NULL, plan IS NULL, cycle IS NULL, quantity IS NULL,
              at IS NULL, renewal IS NULL]);

    PERFORM subscription.require_quantity(quantity);
    PERFORM subscription.require_cycle(cycle);
    PERFORM subscription.require_renewal(renewal);
    PERFORM subscription.require_time('subscribe', at, false);

    SELECT a.billing_anchor INTO anchor_at
      FROM subscription.account AS a
     WHERE a.tenant_id = subscribe.tenant_id AND a.id = subscribe.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(account_id, 'purchase');
    PERFORM subscription.require_open_account(account_id);
    PERFORM subscription.require_terms(tenant_id, account_id, at);
    price := subscription.period_price(plan, cycle, quantity);
    PERFORM subscription.require_amount(price.amount, price.currency);
    IF coupon IS NOT NULL THEN
        PERFORM subscription.redeemable_coupon(coupon, at, price.currency);
    END IF;
    IF anchor_at IS NULL THEN
        k := 1;
        anchor_at := at;
    ELSE
        -- L4: the first period runs to the account's next billing date, whose
        -- period (of this cycle) it is part of, and is charged for its days
        k := subscription.period_containing(anchor_at, cycle, at);
    END IF;
    full_period := subscription.nth_period(anchor_at, cycle, k);
    period := tstzrange(at, upper(full_period), '[)');

    -- a trial (issue 19): the plan's price for the cycle names it; the
    -- subscription is 'trialing' to its end, charged nothing, with its
    -- plan's seats and limits; renew_account ends it (end_trial).  Each
    -- read a statement of its own (Citus, issue 17)
    SELECT max(pp.trial) INTO trial
      FROM subscription.plan_price AS pp
      JOIN subscription.plan AS p ON p.code = pp.plan
     WHERE pp.plan = subscribe.plan
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(subscribe.cycle)
       AND pp.versions @> p.version;
    IF trial IS NOT NULL THEN
        product_plans := ARRAY(SELECT o.code FROM subscription.plan AS p
                                 JOIN subscription.plan AS o ON o.product = p.product
                                WHERE p.code = subscribe.plan);
        IF EXISTS (SELECT FROM subscription.subscription AS d
                    WHERE d.tenant_id = subscribe.tenant_id AND d.account_id = subscribe.account_id
                      AND d.trial_ends IS NOT NULL AND d.plan = ANY (product_plans)) THEN
            RAISE EXCEPTION 'account % has had its trial of the product of plan "%"', account_id, plan
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'An account gets one trial per product.',
                      HINT = 'Subscribe to a plan or cycle of the product whose price has no trial.';
        END IF;
        -- its first period starts at the trial's end (period_number 0 ends there)
        anchor_at := at + trial;
        k := 0;
        full_period := tstzrange(at, anchor_at, '[)');
        period := full_period;
        price.amount := 0;
    END IF;

    -- R10: an account's first service subscription is its default one;
    -- it holds the plan's current version (grandfathering).  Each read a
    -- statement of its own, the catalog's apart from the tenant's: Citus
    -- runs no correlated subquery beside a reference table (issue 17)
    SELECT p.version, p.kind = 'service' INTO plan_version, is_default
      FROM subscription.plan AS p WHERE p.code = subscribe.plan;
    is_default := is_default AND NOT EXISTS (
        SELECT FROM subscription.subscription AS d
         WHERE d.tenant_id = subscribe.tenant_id AND d.account_id = subscribe.account_id AND d.is_default);
    coupon_cycles := (SELECT c.cycles FROM subscription.coupon AS c WHERE c.code = subscribe.coupon);
    INSERT INTO subscription.subscription AS s
           (tenant_id, account_id, plan, plan_version, cycle, quantity, paid_quantity, period, anchor, period_number, renewal,
            is_default, coupon, coupon_periods_left, status, trial_ends)
    VALUES (subscribe.tenant_id, subscribe.account_id, subscribe.plan, plan_version, subscribe.cycle, subscribe.quantity,
            subscribe.quantity, period, anchor_at, k, subscribe.renewal, is_default, subscribe.coupon, coupon_cycles,
            CASE WHEN trial IS NULL THEN 'active' ELSE 'trialing' END, CASE WHEN trial IS NOT NULL THEN anchor_at END)
    RETURNING s.id INTO new_id;

    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, plan, description)
    VALUES (subscribe.tenant_id, subscribe.account_id, new_id, 'charge',
            CASE WHEN period = full_period
                 THEN subscription.round_money(price.amount, price.currency)
                 ELSE subscription.unused_part(price.amount, full_period, at, price.currency) END,
            price.currency, period, plan,
            format('%splan %s, cycle %s, quantity %s%s', CASE WHEN trial IS NOT NULL THEN 'trial: ' ELSE '' END,
                   plan, cycle, quantity,
                   CASE WHEN period = full_period THEN ''
                        ELSE format(', to the billing date %s', upper(period)) END));
    -- U3: the usage counters close with its period
    PERFORM subscription.open_usage(subscribe.tenant_id, subscribe.account_id);

    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.subscribe(bigint, bigint, text, interval, integer, timestamptz, text, text) IS
'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.pause(tenant_id bigint, subscription_id bigint, at timestamptz, resume_at timestamptz, mode text)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.pause(bigint,bigint,timestamptz,timestamptz,text)', pause.tenant_id,
            pg_catalog.jsonb_build_array(pause.tenant_id, pause.subscription_id, pause.at, pause.resume_at, pause.mode)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('pause', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('pause', '{subscription_id,at,mode}',
        ARRAY[subscription_id IS NULL, at IS NULL, mode IS NULL]);
    IF mode NOT IN ('keep_access', 'freeze') THEN
        RAISE EXCEPTION 'unknown pause mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The modes are keep_access and freeze.';
    END IF;
    PERFORM subscription.require_time('pause', at, false);
    s := subscription.subscription_for_change(pause.tenant_id, 'pause', subscription_id, 'change_renewal');
    PERFORM subscription.require_in_period('pause', s, at);
    IF resume_at IS NOT NULL AND NOT resume_at > at THEN
        RAISE EXCEPTION 'resume_at % is not after the pause at %', resume_at, at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE subscription.subscription AS x
       SET paused_at = pause.at, resume_at = pause.resume_at, pause_mode = pause.mode,
           paused_period_end = upper(x.period),
           period = tstzrange(lower(x.period), coalesce(pause.resume_at, 'infinity'), '[)')
     WHERE x.tenant_id = pause.tenant_id AND x.id = s.id;
    -- U3: the usage counters close with the paused period
    PERFORM subscription.open_usage(pause.tenant_id, s.account_id);
    IF mode = 'freeze' THEN
        PERFORM subscription.refresh_freeze(pause.tenant_id, s.account_id);
    END IF;
    RETURN resume_at;
END
$$;

COMMENT ON FUNCTION subscription.pause(bigint, bigint, timestamptz, timestamptz, text) IS
'Pause a subscription at a time, to resume at resume_at (NULL: by resume()), keeping access or freezing the account (issue 19) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.unpause(s subscription.subscription, at timestamptz)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paused interval := at - s.paused_at;
    ends timestamptz := s.paused_period_end + paused;
    frozen boolean := s.pause_mode = 'freeze';
BEGIN
    UPDATE subscription.subscription AS x
       SET period = tstzrange(lower(x.period), ends, '[)'), anchor = ends, period_number = 0,
           paused_at = NULL, resume_at = NULL, pause_mode = NULL, paused_period_end = NULL
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    -- U3: the usage counters close with the extended period
    PERFORM subscription.open_usage(s.tenant_id, s.account_id);
    -- C2: the extension is a period of its own, charged 0.00 once
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    SELECT s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(0, l.currency), l.currency,
           tstzrange(ends - paused, ends, '[)'), 'plan', s.plan, format('pause: period extended by %s', paused)
      FROM subscription.ledger AS l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.kind = 'charge'
     ORDER BY l.id DESC LIMIT 1;
    IF frozen THEN
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    END IF;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.unpause(subscription.subscription, timestamptz) IS
'Internal: a paused subscription resumed at a time, its period extended by the time it was paused (issue 19)';

CREATE OR REPLACE FUNCTION subscription.change_plan(tenant_id bigint, subscription_id bigint, plan text, at timestamptz)
RETURNS TABLE (effective_at timestamptz, refund numeric, charge numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    old_plan subscription.plan;
    new_plan subscription.plan;
    modes subscription.product;
    price record;
    new_period tstzrange;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.change_plan(bigint,bigint,text,timestamptz)', change_plan.tenant_id,
            pg_catalog.jsonb_build_array(change_plan.tenant_id, change_plan.subscription_id, change_plan.plan, change_plan.at)))
            AS r (effective_at timestamptz, refund numeric, charge numeric);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('change_plan', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('change_plan', '{subscription_id,plan,at}',
        ARRAY[subscription_id IS NULL, plan IS NULL, at IS NULL]);
    PERFORM subscription.require_time('change_plan', at, false);
    SELECT * INTO new_plan FROM subscription.plan AS p WHERE p.code = change_plan.plan;
    IF NOT FOUND THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    s := subscription.subscription_for_change(change_plan.tenant_id, 'change_plan', subscription_id, 'change_plan');
    PERFORM subscription.require_in_period('change_plan', s, at);
    PERFORM subscription.require_terms(change_plan.tenant_id, s.account_id, at);
    SELECT * INTO old_plan FROM subscription.plan AS p WHERE p.code = s.plan;
    IF new_plan.product <> old_plan.product THEN
        RAISE EXCEPTION 'plan "%" is not a plan of product "%"', plan, old_plan.product
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Subscribe to the other product with subscription.subscribe().';
    END IF;

    effective_at := at;
    refund := 0;
    charge := 0;
    IF new_plan.code = s.plan THEN
        UPDATE subscription.subscription AS x SET pending_plan = NULL
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id AND x.pending_plan IS NOT NULL;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO modes FROM subscription.product AS p WHERE p.code = new_plan.product;
    IF new_plan.rank < old_plan.rank AND modes.downgrade = 'end_of_period' THEN
        -- C4: the current plan runs to the end of the period; the new one
        -- must sell the cycle and quantity of the next (22023, 55000)
        PERFORM subscription.period_price(new_plan.code, coalesce(s.pending_cycle, s.cycle),
                                          coalesce(s.pending_quantity, s.quantity));
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
        effective_at := upper(s.period);
        RETURN NEXT;
        RETURN;
    END IF;

    -- the new plan must sell the cycle and the quantity (22023, 55000)
    price := subscription.period_price(new_plan.code, s.cycle, s.quantity);
    -- U3: the usage so far, at the old plan's usage prices
    PERFORM subscription.bill_usage(s, at);
    refund := subscription.give_back_unused(s, at, 'refund', format('change to plan %s', new_plan.code));
    IF new_plan.rank >= old_plan.rank AND modes.upgrade = 'restart' THEN
        -- C1: a new full period starts now
        new_period := subscription.nth_period(at, s.cycle, 1);
        charge := subscription.round_money(price.amount, price.currency);
    ELSE
        new_period := s.period;
        charge := subscription.unused_part(price.amount, s.period, at, price.currency);
    END IF;
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (change_plan.tenant_id, s.account_id, s.id, 'charge', charge, price.currency,
            tstzrange(at, upper(new_period), '[)'), format('change to %s', new_plan.code), new_plan.code,
            format('plan %s from %s, cycle %s, quantity %s', new_plan.code, at, s.cycle, s.quantity));

    IF new_plan.rank < old_plan.rank THEN
        -- immediate downgrade: apply_downgrade moves to the plan and trims
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code, paid_quantity = x.quantity
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
        PERFORM FROM subscription.apply_downgrade(change_plan.tenant_id, s.id, false);
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = new_plan.code, pending_plan = NULL, paid_quantity = x.quantity,
               period = new_period,
               -- a restart (C1): its period is the first of the new anchor's
               anchor = CASE WHEN new_period = s.period THEN x.anchor ELSE at END,
               period_number = CASE WHEN new_period = s.period THEN x.period_number ELSE 1 END
         WHERE x.tenant_id = change_plan.tenant_id AND x.id = s.id;
    END IF;
    -- U3: the usage counters close with the new plan's period
    PERFORM subscription.open_usage(change_plan.tenant_id, s.account_id);
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION subscription.change_plan(bigint, bigint, text, timestamptz) IS
'Upgrade now (prorated or restarted) or downgrade at the period end (C1-C4, Z5) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE OR REPLACE FUNCTION subscription.renew_period(s subscription.subscription, n subscription.period_terms, may_trim boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ends timestamptz := upper(s.period);
    same_cycle boolean;
    next_period tstzrange;
    price record;
    batch record;
BEGIN
    -- U3: the ending period's usage, billed in arrears
    PERFORM subscription.bill_usage(s, ends);
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
       AND (b.cancel_at_period_end OR s.cancel_at_period_end OR s.renewal = 'none');
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        UPDATE subscription.subscription AS x
           SET status = CASE WHEN s.cancel_at_period_end THEN 'cancelled' ELSE 'expired' END
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id
        RETURNING x.status INTO s.status;
        PERFORM subscription.open_usage(s.tenant_id, s.account_id);
        RETURN s.status;
    END IF;
    -- L6: a migration never takes away a feature in use; one that would
    -- now (the account's use grew since it was scheduled) is dropped
    IF coalesce(s.pending_plan IS NULL AND s.migrate_at <= ends AND NOT s.migrate_trim, false)
       AND EXISTS (SELECT FROM subscription.migration_shortfall(s.id, s.migrate_to, s.migrate_version)) THEN
        RAISE WARNING 'subscription % stays on its version of plan "%": plan "%" would take away features in use',
                      s.id, s.plan, s.migrate_to
            USING DETAIL = 'Its migration is dropped; subscription.preview_migration() lists the features.';
        UPDATE subscription.subscription AS x
           SET migrate_to = NULL, migrate_version = NULL, migrate_at = NULL, migrate_trim = NULL
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id
        RETURNING * INTO s;
        n := subscription.next_terms(s);
    END IF;

    -- L7: a use above the largest tier renews at the largest tier
    IF n.needed > n.quantity THEN
        RAISE WARNING 'subscription % uses more than the largest tier of plan "%"', s.id, n.plan
            USING DETAIL = format('Its use needs %s licenses; it renews at the largest tier, %s.', n.needed, n.quantity),
                  HINT = format('Contact sales for a plan above %s hosts.', n.quantity);
    END IF;
    same_cycle := subscription.cycle_key(n.cycle) = subscription.cycle_key(s.cycle);
    -- a new cycle counts from the start of its first period (Z7)
    next_period := subscription.nth_period(CASE WHEN same_cycle THEN s.anchor ELSE ends END, n.cycle,
                                           CASE WHEN same_cycle THEN s.period_number + 1 ELSE 1 END);
    price := subscription.period_price(n.plan, n.cycle, n.quantity, n.version);
    IF same_cycle AND n.plan = s.plan AND n.version = s.plan_version AND n.quantity = s.quantity
       AND s.pending_plan IS NULL AND s.pending_quantity IS NULL THEN
        -- the common renewal: only the period moves, and the triggers on
        -- plan, quantity and status (limits, seats) have nothing to do
        UPDATE subscription.subscription AS x
           SET period_number = x.period_number + 1, period = next_period,
               paid_quantity = n.quantity, pending_cycle = NULL, renewal = n.renewal
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = n.plan, plan_version = n.version,
               cycle = n.cycle, quantity = n.quantity, paid_quantity = n.quantity,
               pending_plan = NULL, pending_cycle = NULL, pending_quantity = NULL,
               anchor = CASE WHEN same_cycle THEN x.anchor ELSE ends END,
               period_number = CASE WHEN same_cycle THEN x.period_number + 1 ELSE 1 END,
               period = next_period, renewal = n.renewal
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    END IF;
    -- U3: the usage counters close with the new period
    PERFORM subscription.open_usage(s.tenant_id, s.account_id);

    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(price.amount, price.currency), price.currency,
            next_period, 'plan', n.plan,
            format('renewal: plan %s, cycle %s, quantity %s', n.plan, n.cycle, n.quantity))
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- each batch priced apart from the statement that reads the batches:
    -- on Citus that one runs on the shard, where no other table is read
    FOR batch IN
        SELECT b.id, b.addon, b.quantity
          FROM subscription.addon_batch AS b
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time
         WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
         ORDER BY b.id
    LOOP
        price := subscription.addon_period_price(batch.addon, n.cycle, batch.quantity);
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
        VALUES (s.tenant_id, s.account_id, s.id, batch.id, 'charge', subscription.round_money(price.amount, price.currency),
                price.currency, next_period, 'addon', n.plan,
                format('renewal: add-on %s x %s, cycle %s', batch.addon, batch.quantity, n.cycle))
        ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
           WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    END LOOP;

    IF may_trim THEN
        PERFORM FROM subscription.apply_downgrade(s.id);
    END IF;
    RETURN 'active';
END
$$;

COMMENT ON FUNCTION subscription.renew_period(subscription.subscription, subscription.period_terms, boolean) IS 'Internal: one period of one due subscription';

CREATE OR REPLACE FUNCTION subscription.renew_common(tenants bigint[], at timestamptz, OUT handled integer, OUT rest bigint[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint[];
    ts bigint[];
    ids bigint[];
    pos bigint[];
    tenant bigint;
    other bigint;
    n integer := 0;
    first_n integer;
    left_to bigint[];
BEGIN
    handled := 0;
    rest := '{}';
    -- the tenants' locks, as renew_account takes them
    locked := ARRAY(SELECT a.id FROM subscription.account AS a
                     WHERE a.tenant_id = ANY (tenants) AND a.id = a.tenant_id
                     ORDER BY a.id
                       FOR NO KEY UPDATE SKIP LOCKED);
    -- their due subscriptions, locked; the tenants all of whose due
    -- subscriptions renew the common way
    WITH due AS (
        SELECT x.tenant_id, x.id, upper(x.period) AS e, x.plan, x.cycle, x.quantity, x.plan_version,
               x.status = 'active' AND x.paused_at IS NULL AND NOT x.cancel_at_period_end AND x.renewal = 'always'
               AND x.pending_plan IS NULL AND x.pending_cycle IS NULL AND x.pending_quantity IS NULL
               AND NOT coalesce(x.migrate_at <= upper(x.period), false)
               AND upper(subscription.nth_period(x.anchor, x.cycle, x.period_number + 1)) > at AS plain
          FROM subscription.subscription AS x
         WHERE x.tenant_id = ANY (locked) AND x.status IN ('active', 'trialing') AND upper(x.period) <= at
           FOR NO KEY UPDATE OF x SKIP LOCKED),
         -- each plan, cycle, quantity and version priced once
         terms AS (
        SELECT DISTINCT ON (d.plan, d.cycle::text, d.quantity, d.plan_version)
               d.plan, d.cycle, d.quantity, d.plan_version,
               (subscription.find_price(d.plan, d.cycle, d.quantity, d.plan_version)).problem IS NULL
               AND pr.renewal_quantity = 'keep' AS plain,
               -- usage billed in arrears (issue 21): renew_common_group bills it
               EXISTS (SELECT FROM subscription.plan_usage_price AS up WHERE up.plan = d.plan) AS metered
          FROM due AS d
          JOIN subscription.plan AS p ON p.code = d.plan
          JOIN subscription.product AS pr ON pr.code = p.product
         WHERE d.plain),
         -- the active batches of the plain ones, and whether each add-on
         -- renews priced at its cycle (priceless_addons, renewal_problem's
         -- rule), asked once per add-on and cycle
         batches AS (
        SELECT d.tenant_id, d.id, b.addon, d.cycle, b.cancel_at_period_end
          FROM due AS d
          JOIN subscription.addon_batch AS b ON b.tenant_id = d.tenant_id AND b.subscription_id = d.id
         WHERE d.plain AND b.status = 'active'),
         addon_terms AS (
        SELECT t.addon, t.cycle, subscription.priceless_addons(ARRAY[t.addon], t.cycle) IS NULL AS priced
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text) b.addon, b.cycle FROM batches AS b) AS t),
         checked AS (
        SELECT d.tenant_id, d.id, d.e, coalesce(tm.metered, false) AS metered,
               d.plain AND coalesce(tm.plain, false)
               -- a batch cancelled for the period end (K4) goes to renew_account
               AND NOT EXISTS (SELECT FROM batches AS b
                                 JOIN addon_terms AS pt ON pt.addon = b.addon AND pt.cycle::text = b.cycle::text
                                WHERE b.tenant_id = d.tenant_id AND b.id = d.id
                                  AND (b.cancel_at_period_end OR NOT pt.priced)) AS plain
          FROM due AS d
          LEFT JOIN terms AS tm
            ON tm.plan = d.plan AND tm.cycle::text = d.cycle::text AND tm.quantity = d.quantity
           AND tm.plan_version = d.plan_version)
    -- each tenant's in its order, as renew_account renews them
    SELECT array_agg(c.tenant_id ORDER BY u.k, c.e, c.id), array_agg(c.id ORDER BY u.k, c.e, c.id),
           array_agg(u.k ORDER BY u.k, c.e, c.id)
      INTO ts, ids, pos
      FROM checked AS c
      JOIN unnest(tenants) WITH ORDINALITY AS u(tenant_id, k) ON u.tenant_id = c.tenant_id
     WHERE c.tenant_id IN (SELECT x.tenant_id FROM checked AS x GROUP BY x.tenant_id
                            -- a metered one renews set-based alone in its tenant: its usage line
                            -- comes first, as renew_period writes it (credit pays in that order)
                            HAVING bool_and(x.plain) AND (count(*) = 1 OR NOT bool_or(x.metered)));
    ts := coalesce(ts, '{}');

    -- the tenants in their order; a NULL at the end renews the last group
    FOREACH tenant IN ARRAY tenants || NULL::bigint LOOP
        n := n + 1;
        IF tenant = ANY (ts) THEN
            first_n := coalesce(first_n, n);
            CONTINUE;
        END IF;
        IF first_n IS NOT NULL THEN
            PERFORM subscription.renew_common_group(
                ARRAY(SELECT g.t FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1),
                ARRAY(SELECT g.id FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1));
            handled := handled + (SELECT count(*) FROM unnest(pos) AS g(k) WHERE g.k BETWEEN first_n AND n - 1);
            -- a common tenant with a subscription still due: renew_account's
            left_to := ARRAY(SELECT u.t FROM unnest(tenants) WITH ORDINALITY AS u(t, k)
                              WHERE u.k BETWEEN first_n AND n - 1
                                AND EXISTS (SELECT FROM subscription.subscription AS x
                                             WHERE x.tenant_id = u.t AND x.status IN ('active', 'trialing')
                                               AND upper(x.period) <= at)
                              ORDER BY u.k);
            FOREACH other IN ARRAY left_to LOOP
                handled := handled + subscription.renew_account(other, at);
            END LOOP;
            rest := rest || left_to;
            first_n := NULL;
        END IF;
        IF tenant IS NOT NULL THEN
            handled := handled + subscription.renew_account(tenant, at);
            rest := rest || tenant;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.renew_common(bigint[], timestamptz) IS
'Internal: the renewals of one batch on a single server: its common ones set-based (renew_common_group), the others by renew_account';

CREATE OR REPLACE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    due subscription.subscription;
    metered subscription.subscription[] := '{}';
BEGIN
    -- U3: the ending periods' usage, billed in arrears as renew_period
    -- bills it (bill_usage: usage_due's pricing), in renewal order
    FOR due IN SELECT x.* FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)
               JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id
              WHERE x.plan IN (SELECT up.plan FROM subscription.plan_usage_price AS up)
              ORDER BY r.k LOOP
        PERFORM subscription.bill_usage(due, upper(due.period));
        metered := metered || due;
    END LOOP;
    -- the periods move (renew_period's common renewal)
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;

    -- C2: the constraint makes a second charge of the period impossible;
    -- each subscription's plan line, then its batches', in renewal order
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS (
        SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
               s.plan, s.cycle, s.quantity, s.plan_version, pp.amount, pp.currency
          FROM s CROSS JOIN LATERAL subscription.period_price(s.plan, s.cycle, s.quantity, s.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS (
        SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity, ap.amount, ap.currency
          FROM batches AS b CROSS JOIN LATERAL subscription.addon_period_price(b.addon, b.cycle, b.quantity) AS ap)
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, subscription.round_money(p.amount, p.currency) AS amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, s.cycle, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT s.k, b.id, s.tenant_id, s.account_id, s.id, b.id,
                   subscription.round_money(ap.amount, ap.currency), ap.currency, s.period, 'addon', s.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, s.cycle)
              FROM s
              JOIN batches AS b ON b.k = s.k
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l
     ORDER BY l.k, l.batch_order
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- U3: their usage counters close with the new periods
    PERFORM subscription.open_usage(m.tenant_id, m.account_id)
       FROM (SELECT DISTINCT m.tenant_id, m.account_id FROM unnest(metered) AS m ORDER BY m.tenant_id, m.account_id) AS m;
END
$$;

COMMENT ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) IS
'Internal: one group of common renewals, set-based: one UPDATE moving the periods, one INSERT of the charges';

REVOKE ALL ON FUNCTION subscription.move_usage(bigint, text, bigint, bigint, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.usage_closes(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.open_usage(bigint, bigint) FROM PUBLIC;
-- end of: usage written after the period's end (issue 21, U3)

-- Simulation speed: the renewal path at 1,000 subscriptions (issue 20, items 5 and 7) ---
CREATE OR REPLACE FUNCTION subscription.announce_renewals()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n record;
    written integer := 0;
    unannounced bigint[];
    trials bigint[];
BEGIN
    -- E5: renewal_notice (the window, the amounts) is read for the
    -- subscriptions not announced yet alone: its usage and prices cost
    -- a call per subscription, and every monthly subscription is in a
    -- 30-day window at every step (the 3-year simulation, issue 20)
    unannounced := ARRAY(SELECT s.id FROM subscription.subscription AS s
                          WHERE NOT EXISTS (SELECT FROM subscription.event AS e
                                             WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                               AND e.type = 'renewal.upcoming'
                                               AND e.payload ->> 'renews_at' = subscription.event_time(upper(s.period))));
    FOR n IN SELECT r.*, s.tenant_id
               FROM subscription.renewal_notice AS r
               JOIN subscription.subscription AS s ON s.id = r.subscription_id
              WHERE NOT r.overdue AND r.subscription_id = ANY (unannounced)
              ORDER BY s.tenant_id, r.account_id, r.subscription_id LOOP
        IF subscription.write_event(n.tenant_id, 'renewal.upcoming', n.account_id, n.subscription_id,
               pg_catalog.jsonb_build_object('version', 1, 'renews_at', subscription.event_time(n.renews_at), 'plan', n.plan,
                   'plan_version', n.plan_version, 'cycle', n.cycle, 'quantity', n.quantity,
                   'amount', n.amount, 'currency', n.currency, 'discount', n.discount, 'credit', n.credit),
               subscription.now()) IS NOT NULL THEN
            written := written + 1;
        END IF;
    END LOOP;
    -- trial.ending: once per trial (one per subscription), when its end
    -- enters the notice window; then, what its product makes of it.  The
    -- view is read for the trials not announced yet alone.
    trials := ARRAY(SELECT s.id FROM subscription.subscription AS s
                     WHERE s.status = 'trialing'
                       AND NOT EXISTS (SELECT FROM subscription.event AS e
                                        WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                          AND e.type = 'trial.ending'));
    FOR n IN SELECT r.*, s.tenant_id, s.plan AS trial_plan
               FROM subscription.renewal_notice AS r
               JOIN subscription.subscription AS s ON s.id = r.subscription_id
              WHERE NOT r.overdue AND r.trial_end IS NOT NULL AND r.subscription_id = ANY (trials)
              ORDER BY s.tenant_id, r.account_id, r.subscription_id LOOP
        PERFORM subscription.write_event(n.tenant_id, 'trial.ending', n.account_id, n.subscription_id,
            pg_catalog.jsonb_build_object('version', 1, 'trial_end', subscription.event_time(n.renews_at),
                'plan', n.trial_plan, 'then', n.trial_end),
            subscription.now());
        written := written + 1;
    END LOOP;
    RETURN written;
END
$$;

CREATE OR REPLACE FUNCTION subscription.end_past_due(tenant_id bigint, subscription_id bigint, invoice_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- looked up (and locked) before the UPDATE: an UPDATE of no row still
    -- fires the table's statement triggers (history, limits, seats), and
    -- most paid invoices are of a subscription that is not past due
    PERFORM FROM subscription.subscription AS x
      WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
        AND x.status = 'past_due' AND x.past_due_invoice_id = end_past_due.invoice_id
        FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE subscription.subscription AS x
       SET status = 'active', past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           dunning_frozen = false
     WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
    RETURNING * INTO s;
    -- the account's limits and seat counters as they were (a freeze's end)
    PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    RETURN true;
END
$$;

-- end of the simulation speed (issue 20)

-- Invoice lines per statement (issue 18, docs/invoices.md, docs/benchmarks.md) ---
-- invoice_line keeps per line only the invoice a line belongs to (opened by
-- open_invoices, without open_invoice's checks, which the line's foreign
-- keys make); the totals and the status follow per statement (invoice_totals,
-- the trigger ledger_invoice_total); the status rule in one place
-- (invoice_status); renew_common_group opens its batch's invoices
-- set-based per tenant (open_invoices) and names them in its INSERT.

CREATE FUNCTION subscription.open_invoices(tenant_id bigint, account_ids bigint[], subscription_ids bigint[],
                                           currencies text[], ats timestamptz[], plans text[], corrects bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(account_ids);
    terms interval := make_interval(days => coalesce(current_setting('subscription.payment_terms', true), '0')::integer);
    issuers text[];
    numbers bigint[];
    ids bigint[];
    methods bigint[];
    sub bigint;
    plan text;
    issuer text;
    last bigint;
    taken integer;
    made record;
BEGIN
    PERFORM subscription.require_arguments('open_invoices', '{tenant_id,account_ids,currencies,ats}',
        ARRAY[tenant_id IS NULL, account_ids IS NULL, currencies IS NULL, ats IS NULL]);
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    IF cardinality(currencies) <> n OR cardinality(ats) <> n
       OR cardinality(coalesce(subscription_ids, '{}')) NOT IN (0, n) OR cardinality(coalesce(plans, '{}')) NOT IN (0, n)
       OR cardinality(coalesce(corrects, '{}')) NOT IN (0, n) THEN
        RAISE EXCEPTION 'the arrays of open_invoices() must be of one length' USING ERRCODE = 'array_subscript_error';
    END IF;
    plans := coalesce(plans, array_fill(NULL::text, ARRAY[n]));
    FOR k IN 1 .. n LOOP
        IF plans[k] IS NULL AND subscription_ids[k] IS NOT NULL THEN
            -- a scalar first: Citus fails to parse an array element
            -- assigned a query of a distributed table
            sub := subscription_ids[k];
            plan := (SELECT s.plan FROM subscription.subscription AS s
                      WHERE s.tenant_id = open_invoices.tenant_id AND s.id = sub);
            plans[k] := plan;
        END IF;
    END LOOP;
    -- the issuer of each, and the method to charge: its account's default now
    SELECT array_agg(coalesce(p.product, '') ORDER BY e.k), array_agg(m.id ORDER BY e.k) INTO issuers, methods
      FROM unnest(plans, account_ids) WITH ORDINALITY AS e(plan, account_id, k)
      LEFT JOIN subscription.plan AS p ON p.code = e.plan
      LEFT JOIN subscription.payment_method AS m
        ON m.tenant_id = open_invoices.tenant_id AND m.account_id = e.account_id AND m.is_default;
    -- each issuer's numbers: the series moved once by the count, then the
    -- invoices of the issuer numbered in their order
    numbers := array_fill(NULL::bigint, ARRAY[n]);
    FOR issuer, taken IN SELECT i.issuer, count(*) FROM unnest(issuers) AS i(issuer) GROUP BY i.issuer ORDER BY i.issuer LOOP
        INSERT INTO subscription.invoice_series AS x (tenant_id, issuer, last_number)
        VALUES (open_invoices.tenant_id, issuer, taken)
        ON CONFLICT ON CONSTRAINT invoice_series_pkey DO UPDATE SET last_number = x.last_number + taken
        RETURNING x.last_number INTO last;
        last := last - taken;
        FOR k IN 1 .. n LOOP
            IF issuers[k] = issuer THEN
                last := last + 1;
                numbers[k] := last;
            END IF;
        END LOOP;
    END LOOP;
    -- one INSERT, its rows (and so RETURNING's) in the order given; on
    -- Citus from no distributed table, no subquery
    ids := '{}';
    FOR made IN
        INSERT INTO subscription.invoice_record AS i
               (tenant_id, account_id, subscription_id, issuer, number, at, currency, due_at, payment_method_id,
                corrects_invoice_id)
        SELECT open_invoices.tenant_id, e.account_id, e.subscription_id, e.issuer, e.number, e.at, e.currency,
               e.at + terms, e.method, e.corrects
          FROM unnest(account_ids, coalesce(subscription_ids, array_fill(NULL::bigint, ARRAY[n])), issuers, numbers, ats,
                      currencies, methods, coalesce(corrects, array_fill(NULL::bigint, ARRAY[n])))
               WITH ORDINALITY AS e(account_id, subscription_id, issuer, number, at, currency, method, corrects, k)
         ORDER BY e.k
        RETURNING i.id, i.issuer, i.number
    LOOP
        ids := ids || made.id;
        IF (made.issuer, made.number) IS DISTINCT FROM (issuers[cardinality(ids)], numbers[cardinality(ids)]) THEN
            RAISE EXCEPTION 'open_invoices(): invoice % returned out of order', made.id USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;
    -- their history rows and events invoice.opened are written at the
    -- commit, once their lines are all there (invoice_opened, I8)
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.open_invoices(bigint, bigint[], bigint[], text[], timestamptz[], text[], bigint[]) IS
'Internal: new invoices of one tenant, numbered gapless in their issuers'' series in the order given, one series update per issuer and one INSERT (I1, I3)';

CREATE OR REPLACE FUNCTION subscription.open_invoice(tenant_id bigint, account_id bigint, subscription_id bigint,
                                          currency text, at timestamptz, plan text, corrects bigint,
                                          quiet boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('open_invoice', '{tenant_id,account_id,currency,at}',
        ARRAY[tenant_id IS NULL, account_id IS NULL, currency IS NULL, at IS NULL]);
    PERFORM subscription.require_account(open_invoice.tenant_id, open_invoice.account_id);
    IF subscription_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM subscription.subscription AS s
                        WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id) THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = open_invoice.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    RETURN (subscription.open_invoices(open_invoice.tenant_id, ARRAY[open_invoice.account_id],
                                       ARRAY[open_invoice.subscription_id], ARRAY[open_invoice.currency],
                                       ARRAY[open_invoice.at], ARRAY[open_invoice.plan], ARRAY[open_invoice.corrects]))[1];
END
$$;

COMMENT ON FUNCTION subscription.open_invoice(bigint, bigint, bigint, text, timestamptz, text, bigint, boolean) IS
'Internal: a new invoice, numbered gapless in its issuer''s series in this transaction, due after subscription.payment_terms days; its opening recorded at the commit (I1, I3, I8)';

CREATE FUNCTION subscription.invoice_status(status text, total numeric, paid numeric)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN invoice_status.status OPERATOR(pg_catalog.=) ANY ('{void,uncollectible}'::text[]) THEN invoice_status.status
            WHEN invoice_status.total OPERATOR(pg_catalog.-) invoice_status.paid OPERATOR(pg_catalog.<=) 0 THEN 'paid'
            ELSE 'open' END;

COMMENT ON FUNCTION subscription.invoice_status(text, numeric, numeric) IS
'Internal: an invoice''s status from its status, total and payments: paid once nothing is due, void and uncollectible stay (I3)';

CREATE OR REPLACE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    new_status := subscription.invoice_status(i.status, i.total, i.paid);
    IF new_status IS DISTINCT FROM i.status THEN
        UPDATE subscription.invoice_record AS r SET status = new_status
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
        IF quiet THEN
            RETURN new_status;
        END IF;
        PERFORM subscription.invoice_status_history(i, new_status, coalesce(settle_invoice.at, i.at), '{}', false);
        IF new_status = 'paid' AND i.subscription_id IS NOT NULL THEN
            PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
        END IF;
    END IF;
    RETURN new_status;
END
$$;

COMMENT ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz) IS
'Internal: an invoice''s status from its total and payments, its change recorded in history unless quiet (I3)';

CREATE OR REPLACE FUNCTION subscription.invoice_line()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line_at timestamptz;
BEGIN
    -- a restore copies the invoices with their lines and totals; the lines
    -- of a dump from before 1.1 get theirs, as the upgrade gives them,
    -- without history (the dump's history is restored as it was); a
    -- restore, by a restoring role, or as the docs say, with
    -- session_replication_role = replica (this trigger fires ALWAYS)
    IF NEW.invoice_id IS NOT NULL
       AND (current_setting('session_replication_role') = 'replica'
            OR subscription.restored_copy('subscription.ledger_id_seq', NEW.id)) THEN
        RETURN NEW;
    END IF;
    IF NEW.corrects_invoice_id IS NULL AND NEW.charge_id IS NOT NULL AND NEW.kind IN ('refund', 'credit') THEN
        NEW.corrects_invoice_id := (SELECT l.invoice_id FROM subscription.ledger AS l
                                     WHERE l.tenant_id = NEW.tenant_id AND l.id = NEW.charge_id);
    END IF;
    IF NEW.invoice_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    line_at := coalesce(lower(NEW.period), NEW.created_at);
    NEW.invoice_id := (SELECT i.id FROM subscription.invoice_record AS i
                        WHERE i.tenant_id = NEW.tenant_id AND i.account_id = NEW.account_id
                          AND i.at = line_at AND i.currency = NEW.currency
                          AND i.subscription_id IS NOT DISTINCT FROM NEW.subscription_id
                          AND i.corrects_invoice_id IS NULL
                          AND i.xact = pg_current_xact_id()
                        ORDER BY i.id DESC LIMIT 1);
    IF NEW.invoice_id IS NULL THEN
        -- the line's foreign keys check its account, subscription and
        -- currency: no need to check them again here (open_invoice does)
        NEW.invoice_id := (subscription.open_invoices(NEW.tenant_id, ARRAY[NEW.account_id], ARRAY[NEW.subscription_id],
                                                      ARRAY[NEW.currency], ARRAY[line_at], ARRAY[NEW.plan], NULL))[1];
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.invoice_line() IS
'Trigger: the invoice each ledger line belongs to, opened by the billing event''s first line (I1, I2)';

CREATE FUNCTION subscription.invoice_totals()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replica boolean := current_setting('session_replication_role') = 'replica';
    t record;
    changed record;
    -- the invoices of the tenant whose status changes, by first line
    settle bigint[];
    k bigint;
BEGIN
    -- per tenant, in the order of its first line, its invoices in the
    -- order of theirs: each one's lines' sum, the time of its last line
    -- (what settle_invoice records), whether all are a restore's
    FOR t IN
        SELECT x.tenant_id, array_agg(x.invoice_id ORDER BY x.first) AS invoices,
               array_agg(x.part ORDER BY x.first) AS parts, array_agg(x.at ORDER BY x.first) AS ats,
               array_agg(x.quiet ORDER BY x.first) AS quiets
          FROM (SELECT n.tenant_id, n.invoice_id, min(n.id) AS first,
                       sum(subscription.line_amount(n.kind, n.amount)) AS part,
                       (array_agg(coalesce(lower(n.period), n.created_at) ORDER BY n.id DESC))[1] AS at,
                       bool_and(replica OR subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS quiet
                  FROM new_rows AS n
                 GROUP BY n.tenant_id, n.invoice_id) AS x
         GROUP BY x.tenant_id
         ORDER BY min(x.first)
    LOOP
        settle := '{}';
        FOR changed IN
            UPDATE subscription.invoice_record AS i
               SET total = i.total + d.part
              FROM unnest(t.invoices, t.parts, t.quiets) WITH ORDINALITY AS d(invoice_id, part, quiet, k)
             WHERE i.tenant_id = t.tenant_id AND i.id = d.invoice_id
               AND (NOT d.quiet OR i.xact = pg_current_xact_id())
            RETURNING i.status, i.total, i.paid, d.k
        LOOP
            IF subscription.invoice_status(changed.status, changed.total, changed.paid) IS DISTINCT FROM changed.status THEN
                settle := settle || changed.k;
            END IF;
        END LOOP;
        FOREACH k IN ARRAY (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(settle) AS x) LOOP
            PERFORM subscription.settle_invoice(t.tenant_id, t.invoices[k], t.quiets[k], t.ats[k]);
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.invoice_totals() IS
'Trigger, per statement: the totals of the invoices of the statement''s ledger lines, and the status of those it changes (I2, I3)';

CREATE TRIGGER ledger_invoice_total AFTER INSERT ON subscription.ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.invoice_totals();
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_invoice_total;

CREATE OR REPLACE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
DECLARE
    due subscription.subscription;
    metered subscription.subscription[] := '{}';
    -- the charge lines, in renewal order
    lt bigint[]; la bigint[]; ls bigint[]; lb bigint[]; lamount numeric[]; lcurrency text[];
    lperiod tstzrange[]; litem text[]; lplan text[]; ldescription text[];
    -- their billing events, in the order of their first lines, and invoices
    et bigint[]; ea bigint[]; es bigint[]; ecurrency text[]; eat timestamptz[]; eplan text[]; einvoice bigint[];
    -- the billing event of each line, whether it is the event's first
    levent bigint[];
    lfirst boolean[];
    g record;
    opened bigint[];
BEGIN
    -- U3: the ending periods' usage, billed in arrears as renew_period
    -- bills it (bill_usage: usage_due's pricing), in renewal order
    FOR due IN SELECT x.* FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)
               JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id
              WHERE x.plan IN (SELECT up.plan FROM subscription.plan_usage_price AS up)
              ORDER BY r.k LOOP
        PERFORM subscription.bill_usage(due, upper(due.period));
        metered := metered || due;
    END LOOP;
    -- the periods move (renew_period's common renewal)
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;

    -- each subscription's plan line, then its batches', in renewal order
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS (
        SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
               s.plan, s.cycle, s.quantity, s.plan_version, pp.amount, pp.currency
          FROM s CROSS JOIN LATERAL subscription.period_price(s.plan, s.cycle, s.quantity, s.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS (
        SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity, ap.amount, ap.currency
          FROM batches AS b CROSS JOIN LATERAL subscription.addon_period_price(b.addon, b.cycle, b.quantity) AS ap)
    SELECT array_agg(l.tenant_id ORDER BY l.k, l.batch_order), array_agg(l.account_id ORDER BY l.k, l.batch_order),
           array_agg(l.subscription_id ORDER BY l.k, l.batch_order), array_agg(l.addon_batch_id ORDER BY l.k, l.batch_order),
           array_agg(l.amount ORDER BY l.k, l.batch_order), array_agg(l.currency ORDER BY l.k, l.batch_order),
           array_agg(l.period ORDER BY l.k, l.batch_order), array_agg(l.item ORDER BY l.k, l.batch_order),
           array_agg(l.plan ORDER BY l.k, l.batch_order), array_agg(l.description ORDER BY l.k, l.batch_order)
      INTO lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, subscription.round_money(p.amount, p.currency) AS amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, s.cycle, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT s.k, b.id, s.tenant_id, s.account_id, s.id, b.id,
                   subscription.round_money(ap.amount, ap.currency), ap.currency, s.period, 'addon', s.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, s.cycle)
              FROM s
              JOIN batches AS b ON b.k = s.k
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l;
    -- I1, I2: the invoice of each billing event (a subscription's lines at
    -- the period's start, in a currency), as invoice_line would find or
    -- open it for the event's first line: one this transaction opened, or
    -- new ones, opened set-based per tenant (open_invoices), numbered in
    -- the lines' order; the lines name them (issue 18)
    SELECT array_agg(l.event ORDER BY l.n), array_agg(l.n = l.first ORDER BY l.n) INTO levent, lfirst
      FROM (SELECT l.n, l.first, dense_rank() OVER (ORDER BY l.first) AS event
              FROM (SELECT l.n, min(l.n) OVER (PARTITION BY l.tenant_id, l.account_id, l.subscription_id, l.currency,
                                                            lower(l.period)) AS first
                      FROM unnest(lt, la, ls, lcurrency, lperiod) WITH ORDINALITY
                           AS l(tenant_id, account_id, subscription_id, currency, period, n)) AS l) AS l;
    SELECT array_agg(l.tenant_id ORDER BY l.n), array_agg(l.account_id ORDER BY l.n),
           array_agg(l.subscription_id ORDER BY l.n), array_agg(l.currency ORDER BY l.n),
           array_agg(lower(l.period) ORDER BY l.n), array_agg(l.plan ORDER BY l.n),
           array_agg((SELECT i.id FROM subscription.invoice_record AS i
                       WHERE i.tenant_id = l.tenant_id AND i.account_id = l.account_id AND i.at = lower(l.period)
                         AND i.currency = l.currency AND i.subscription_id = l.subscription_id
                         AND i.corrects_invoice_id IS NULL AND i.xact = pg_current_xact_id()
                       ORDER BY i.id DESC LIMIT 1) ORDER BY l.n)
      INTO et, ea, es, ecurrency, eat, eplan, einvoice
      FROM unnest(lt, la, ls, lcurrency, lperiod, lplan, lfirst) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, currency, period, plan, first, n)
     -- each event's first line
     WHERE l.first;
    FOR g IN
        SELECT e.tenant_id, array_agg(e.k ORDER BY e.k) AS ks, array_agg(e.account_id ORDER BY e.k) AS accounts,
               array_agg(e.subscription_id ORDER BY e.k) AS subs, array_agg(e.currency ORDER BY e.k) AS currencies,
               array_agg(e.at ORDER BY e.k) AS ats, array_agg(e.plan ORDER BY e.k) AS plans
          FROM unnest(et, ea, es, ecurrency, eat, eplan, einvoice) WITH ORDINALITY
               AS e(tenant_id, account_id, subscription_id, currency, at, plan, invoice_id, k)
         WHERE e.invoice_id IS NULL
         GROUP BY e.tenant_id ORDER BY min(e.k)
    LOOP
        opened := subscription.open_invoices(g.tenant_id, g.accounts, g.subs, g.currencies, g.ats, g.plans, NULL);
        FOR o IN 1 .. cardinality(g.ks) LOOP
            einvoice[g.ks[o]] := opened[o];
        END LOOP;
    END LOOP;
    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description,
            invoice_id)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description, einvoice[l.event]
      FROM unnest(lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription, levent) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, addon_batch_id, amount, currency, period, item, plan, description,
                event, n)
     ORDER BY l.n
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- U3: their usage counters close with the new periods
    PERFORM subscription.open_usage(m.tenant_id, m.account_id)
       FROM (SELECT DISTINCT m.tenant_id, m.account_id FROM unnest(metered) AS m ORDER BY m.tenant_id, m.account_id) AS m;
END
$$;

COMMENT ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) IS
'Internal: one group of common renewals, set-based: one UPDATE moving the periods, one INSERT of the charges';

REVOKE ALL ON FUNCTION subscription.open_invoices(bigint, bigint[], bigint[], text[], timestamptz[], text[], bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_status(text, numeric, numeric) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_totals() FROM PUBLIC;

-- end of: invoice lines per statement (issue 18)

-- record_usage throughput and several period crossings (issue 21) -------
-- require_tenant: a statement per kind (planned once, not at every call)
CREATE OR REPLACE FUNCTION subscription.require_tenant(fn text, tenant_id bigint, kind text, id bigint)
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

-- usage_record: no index on at (record_usage's UPDATE of the key's total
-- took it in its generic plan and scanned every key of the account)
DROP INDEX subscription.usage_record_tenant_id_account_id_feature_at_idx;

-- usage_counter: the figures of every ended period not billed yet, one
-- element each (U3: close_usage keeps them, bill_usage bills the first)
ALTER TABLE subscription.usage_counter
    DROP CONSTRAINT usage_counter_closed_used_check,
    DROP CONSTRAINT usage_counter_closed_peak_check,
    DROP CONSTRAINT usage_counter_closed_integral_check;
ALTER TABLE subscription.usage_counter
    ALTER COLUMN closed_at TYPE timestamptz[] USING CASE WHEN closed_at IS NOT NULL THEN ARRAY[closed_at] END,
    ALTER COLUMN closed_used TYPE bigint[] USING CASE WHEN closed_at IS NOT NULL THEN ARRAY[closed_used] END,
    ALTER COLUMN closed_peak TYPE bigint[] USING CASE WHEN closed_at IS NOT NULL THEN ARRAY[closed_peak] END,
    ALTER COLUMN closed_integral TYPE numeric[] USING CASE WHEN closed_at IS NOT NULL THEN ARRAY[closed_integral] END;
ALTER TABLE subscription.usage_counter
    ADD CONSTRAINT usage_counter_closed_used_check CHECK (0 <= ALL (closed_used)),
    ADD CONSTRAINT usage_counter_closed_peak_check CHECK (0 <= ALL (closed_peak)),
    ADD CONSTRAINT usage_counter_closed_integral_check CHECK (0 <= ALL (closed_integral));

COMMENT ON COLUMN subscription.usage_counter.closes IS
'The end of the billing period of the feature''s usage price (U3): a write at or after it keeps the ended periods'' figures first';
COMMENT ON COLUMN subscription.usage_counter.closed_at IS
'The ends of the ended periods whose figures are kept in closed_used, closed_peak and closed_integral until their renewals bill them, in order (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_used IS
'The use at each end of closed_at: each ended period''s count or sum (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_peak IS
'Each ended period''s peak (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_integral IS
'Each ended period''s integral in row-seconds, up to its end (U3)';

-- U3: several period ends crossed by one write (close_usage), each
-- ended period billed from its own figures
CREATE OR REPLACE FUNCTION subscription.open_usage(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    features text[] := ARRAY(SELECT DISTINCT p.feature FROM subscription.plan_usage_price AS p);
    f text;
    ends timestamptz;
BEGIN
    IF cardinality(features) = 0 THEN
        RETURN;
    END IF;
    FOR f IN SELECT u.feature FROM subscription.usage_counter AS u
              WHERE u.tenant_id = open_usage.tenant_id AND u.account_id = open_usage.account_id
                AND u.feature = ANY (features)
              ORDER BY u.feature LOOP
        ends := subscription.usage_closes(open_usage.tenant_id, open_usage.account_id, f);
        -- a counter whose later periods ended already (close_usage) stays
        -- where it closes until the renewals reach its period
        UPDATE subscription.usage_counter AS u SET closes = ends
         WHERE u.tenant_id = open_usage.tenant_id AND u.account_id = open_usage.account_id AND u.feature = f
           AND u.closes IS DISTINCT FROM ends
           AND (u.closed_at IS NULL OR ends > u.closed_at[cardinality(u.closed_at)]);
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.open_usage(bigint, bigint) IS
'Internal: set where an account''s usage counters close their billing period, after a period moved (U3)';

CREATE FUNCTION subscription.close_usage(tenant_id bigint, account_id bigint, feature text, at timestamptz,
                                         from_rows boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- a value first: on Citus the catalog's lookup may not run inside the shard's query
    plans text[] := ARRAY(SELECT p.plan FROM subscription.plan_usage_price AS p WHERE p.feature = close_usage.feature);
    tenant bigint := close_usage.tenant_id;
    c record;
    s record;
    ends timestamptz;
    next_end timestamptz;
    base bigint;
    k integer := 1;
    at_ends timestamptz[];
    used_ends bigint[];
    peak_ends bigint[];
    integral_ends numeric[];
BEGIN
    PERFORM subscription.require_arguments('close_usage', '{account_id,feature,at,from_rows}',
        ARRAY[account_id IS NULL, feature IS NULL, at IS NULL, from_rows IS NULL]);
    -- an infinite time ends every period: in none (as move_usage)
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'the time of usage must be finite'
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    IF tenant IS NULL THEN
        -- the guard's write of a registered table (a single server)
        SELECT a.tenant_id INTO tenant FROM subscription.account AS a WHERE a.id = close_usage.account_id;
    END IF;
    SELECT u.used, u.peak, u.integral, u.since, u.closes INTO c
      FROM subscription.usage_counter AS u
     WHERE u.tenant_id = tenant AND u.account_id = close_usage.account_id AND u.feature = close_usage.feature
       FOR UPDATE OF u;
    IF NOT FOUND OR c.closes IS NULL OR c.closes > at THEN
        RETURN;
    END IF;
    SELECT x.anchor, x.cycle, x.period_number INTO s
      FROM subscription.subscription AS x
     WHERE x.tenant_id = tenant AND x.account_id = close_usage.account_id
       AND x.status IN ('active', 'trialing') AND x.plan = ANY (plans) AND upper(x.period) = c.closes
     ORDER BY x.id
     LIMIT 1;
    -- the period that ends at closes: its accumulators
    ends := c.closes;
    base := CASE WHEN from_rows THEN c.used ELSE 0 END;
    at_ends := ARRAY[ends];
    used_ends := ARRAY[c.used];
    peak_ends := ARRAY[greatest(c.peak, c.used)];
    integral_ends := ARRAY[subscription.integral_at(c.integral, c.used, c.since, ends)];
    LOOP
        next_end := upper(subscription.nth_period(s.anchor, s.cycle, s.period_number + k));
        EXIT WHEN next_end IS NULL OR next_end > at;
        -- a period that no write reached: the use held through it
        at_ends := at_ends || next_end;
        used_ends := used_ends || base;
        peak_ends := peak_ends || base;
        integral_ends := integral_ends || subscription.integral_at(0, base, ends, next_end);
        ends := next_end;
        k := k + 1;
    END LOOP;
    UPDATE subscription.usage_counter AS u
       SET used = base, peak = base, integral = 0, since = greatest(u.since, ends), closes = next_end,
           closed_at = coalesce(u.closed_at, '{}') || at_ends, closed_used = coalesce(u.closed_used, '{}') || used_ends,
           closed_peak = coalesce(u.closed_peak, '{}') || peak_ends,
           closed_integral = coalesce(u.closed_integral, '{}') || integral_ends
     WHERE u.tenant_id = tenant AND u.account_id = close_usage.account_id AND u.feature = close_usage.feature;
END
$$;

COMMENT ON FUNCTION subscription.close_usage(bigint, bigint, text, timestamptz, boolean) IS
'Internal: keep the figures of each period a usage counter''s write at a time comes after, and start the period that holds it (U3)';
REVOKE ALL ON FUNCTION subscription.close_usage(bigint, bigint, text, timestamptz, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION subscription.usage_due(s subscription.subscription, until timestamptz)
RETURNS TABLE(feature text, aggregation text, from_rows boolean, period tstzrange, upto timestamptz,
              used bigint, peak bigint, integral numeric, aggregate numeric, included bigint, billable numeric,
              amount numeric, currency text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    c record;
    starts timestamptz;
BEGIN
    FOR p IN
        SELECT u.feature, u.included, u.unit_amount, u.tiers, u.mode, u.currency,
               coalesce(m.aggregation, CASE WHEN t.feature IS NULL THEN 'recorded' ELSE 'count' END) AS aggregation,
               coalesce(m.unit, interval '1 day') AS unit, t.feature IS NOT NULL AS from_rows
          FROM subscription.plan_usage_price AS u
          LEFT JOIN subscription.limited_table AS t ON t.feature = u.feature
          LEFT JOIN subscription.meter AS m ON m.feature = u.feature
         WHERE u.plan = s.plan
         ORDER BY u.feature
    LOOP
        -- from the period's start, or where a bill of this period ended (a
        -- plan change mid-period); nothing left: billed already
        SELECT coalesce(max(upper(x.period)), lower(s.period)) INTO starts
          FROM subscription.usage_period AS x
         WHERE x.tenant_id = s.tenant_id AND x.subscription_id = s.id AND x.feature = p.feature
           AND x.period && tstzrange(lower(s.period), until, '[]');
        CONTINUE WHEN starts >= until;
        SELECT u.used, u.peak, u.integral, u.since, u.closed_at, u.closed_used, u.closed_peak, u.closed_integral INTO c
          FROM subscription.usage_counter AS u
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = p.feature;
        IF c.closed_at[1] <= until THEN
            -- U3: a write after the period's end began a later period in
            -- the counter: the ending period's figures are the first
            -- ended period's kept (close_usage), up to its end
            c.used := c.closed_used[1];
            c.peak := c.closed_peak[1];
            c.integral := c.closed_integral[1];
            c.since := c.closed_at[1];
        END IF;
        feature := p.feature;
        aggregation := p.aggregation;
        from_rows := p.from_rows;
        period := tstzrange(starts, until);
        upto := greatest(coalesce(c.since, until), until);
        used := coalesce(c.used, 0);
        peak := coalesce(greatest(c.peak, c.used), 0);
        integral := subscription.integral_at(coalesce(c.integral, 0), coalesce(c.used, 0), coalesce(c.since, until), upto);
        aggregate := coalesce(CASE p.aggregation
                              WHEN 'peak' THEN greatest(c.peak, c.used)
                              WHEN 'time_weighted' THEN integral / extract(epoch FROM p.unit)
                              ELSE c.used END, 0);
        included := p.included;
        billable := greatest(aggregate - p.included, 0);
        amount := subscription.round_money(subscription.usage_amount(billable, p.unit_amount, p.tiers, p.mode), p.currency);
        currency := p.currency;
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.usage_due(subscription.subscription, timestamptz) IS
'Internal: what a subscription''s usage comes to up to a time, per usage price, not yet billed: the one computation of bill_usage and its previews (U3, U6)';

CREATE OR REPLACE FUNCTION subscription.bill_usage(s subscription.subscription, until timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    line bigint;
    -- a value first: on Citus the catalog's lookup may not run inside the shard's query
    features text[] := ARRAY(SELECT x.feature FROM subscription.plan_usage_price AS x WHERE x.plan = s.plan);
BEGIN
    -- the counters first, in the order of the features (as usage_due reads them)
    PERFORM FROM subscription.usage_counter AS u
     WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = ANY (features)
     ORDER BY u.feature
       FOR UPDATE OF u;
    FOR d IN SELECT * FROM subscription.usage_due(s, until) LOOP
        line := NULL;
        IF d.amount > 0 THEN
            INSERT INTO subscription.ledger AS l
                   (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
            VALUES (s.tenant_id, s.account_id, s.id, 'charge', d.amount, d.currency, d.period, 'usage ' || d.feature, s.plan,
                    format('overage: %s %s of %s, %s included', round(d.aggregate, 6), d.aggregation, d.feature, d.included))
            ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
               WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING
            RETURNING l.id INTO line;
        END IF;
        INSERT INTO subscription.usage_period
               (tenant_id, subscription_id, account_id, feature, period, plan, aggregation, used, peak, integral,
                aggregate, included, billable, amount, currency, ledger_id)
        VALUES (s.tenant_id, s.id, s.account_id, d.feature, d.period, s.plan, d.aggregation, d.used,
                d.peak, d.integral, d.aggregate, d.included, d.billable, d.amount, d.currency, line);
        -- the next period's accumulators: rows stay, recorded usage starts
        -- again; an ended period's figures billed (U3): the counter is in
        -- a later period already, the first figures kept go, and it keeps
        -- where it closes while later ones are kept; the period's end is
        -- open_usage's
        UPDATE subscription.usage_counter AS u
           SET used = CASE WHEN u.closed_at[1] <= until THEN u.used WHEN d.from_rows THEN d.used ELSE 0 END,
               peak = CASE WHEN u.closed_at[1] <= until THEN u.peak WHEN d.from_rows THEN d.used ELSE 0 END,
               integral = CASE WHEN u.closed_at[1] <= until THEN u.integral ELSE 0 END,
               since = CASE WHEN u.closed_at[1] <= until THEN u.since ELSE d.upto END,
               closes = CASE WHEN cardinality(u.closed_at) > 1 THEN u.closes END,
               closed_at = CASE WHEN u.closed_at[1] <= until THEN nullif(u.closed_at[2:], '{}') END,
               closed_used = CASE WHEN u.closed_at[1] <= until THEN nullif(u.closed_used[2:], '{}') END,
               closed_peak = CASE WHEN u.closed_at[1] <= until THEN nullif(u.closed_peak[2:], '{}') END,
               closed_integral = CASE WHEN u.closed_at[1] <= until THEN nullif(u.closed_integral[2:], '{}') END
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = d.feature;
        IF NOT d.from_rows THEN
            -- keys are kept for the period and the grace after it
            DELETE FROM subscription.usage_record AS r
             WHERE r.tenant_id = s.tenant_id AND r.account_id = s.account_id AND r.feature = d.feature
               AND r.at < lower(s.period) - current_setting('subscription.usage_key_grace')::interval;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.bill_usage(subscription.subscription, timestamptz) IS
'Internal: bill the usage of a subscription''s period up to a time, once, and reset the counters'' accumulators (U3)';

-- end of record_usage throughput and several period crossings (issue 21)

-- Events per statement (issue 20, with issue 18's floor) ----------------
-- write_events(): a statement's events with one INSERT, the one writer;
-- write_event() one of them.  history_event a statement trigger over the
-- transition table (rowwrite.c makes a RowWrites' rows one statement).

-- The one writer of events (E1-E3, docs/rules.md): the events of a
-- statement, in the order given, with one INSERT:
--   E3: the transaction has its id before it takes an event id
--   (pg_current_xact_id), and next_xid is read once, after every id of the
--   statement was taken (events.c): so for each event, every transaction
--   at or above its next_xid takes its ids after it;
--   NOTIFY subscription_events once per statement, with the last id
--   written, sent on commit (not from a Citus worker, docs/citus.md).
-- A renewal.upcoming already written for its period is not written again.
-- Returns the ids written, in order.  Only the extension's owner calls it:
-- no role is granted it.
CREATE FUNCTION subscription.write_events(tenant_ids bigint[], types text[], account_ids bigint[],
                                          subscription_ids bigint[], payloads jsonb[], ats timestamptz[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- the conflict target names the table's columns
#variable_conflict use_column
DECLARE
    n integer := pg_catalog.cardinality(types);
    ids bigint[];
    horizon xid8;
    written bigint;
    bad jsonb;
BEGIN
    PERFORM subscription.require_arguments('write_events',
        '{tenant_ids,types,account_ids,subscription_ids,payloads,ats}',
        ARRAY[tenant_ids IS NULL, types IS NULL, account_ids IS NULL, subscription_ids IS NULL,
              payloads IS NULL, ats IS NULL]);
    IF pg_catalog.array_ndims(types) > 1
       OR n IS DISTINCT FROM pg_catalog.cardinality(tenant_ids) OR n IS DISTINCT FROM pg_catalog.cardinality(account_ids)
       OR n IS DISTINCT FROM pg_catalog.cardinality(subscription_ids) OR n IS DISTINCT FROM pg_catalog.cardinality(payloads)
       OR n IS DISTINCT FROM pg_catalog.cardinality(ats) THEN
        RAISE EXCEPTION 'the arrays of write_events() must be of one dimension and of the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_position(tenant_ids, NULL) IS NOT NULL OR pg_catalog.array_position(types, NULL) IS NOT NULL
       OR pg_catalog.array_position(payloads, NULL) IS NOT NULL OR pg_catalog.array_position(ats, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'an event must have its tenant, type, payload and time'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT p INTO bad FROM pg_catalog.unnest(payloads) AS p
     WHERE pg_catalog.jsonb_typeof(p OPERATOR(pg_catalog.->) 'version') IS DISTINCT FROM 'number' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the payload of an event must carry its version'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The payload was %s.', bad);
    END IF;
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    -- E3: the transaction's id first, then the event ids, then next_xid
    PERFORM pg_catalog.pg_current_xact_id();
    ids := ARRAY(SELECT pg_catalog.nextval('subscription.event_id_seq') FROM pg_catalog.generate_series(1, n));
    horizon := subscription.event_next_xid();
    -- the arrays read in one pass (a subscript walks a text or jsonb array
    -- from its start)
    INSERT INTO subscription.event AS e (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
    SELECT x.id, x.type, x.account_id, x.subscription_id, x.payload, x.at, horizon, x.tenant_id
      FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(types), pg_catalog.unnest(account_ids),
                      pg_catalog.unnest(subscription_ids), pg_catalog.unnest(payloads), pg_catalog.unnest(ats),
                      pg_catalog.unnest(tenant_ids)) AS x (id, type, account_id, subscription_id, payload, at, tenant_id)
    ON CONFLICT (tenant_id, subscription_id, (payload ->> 'renews_at')) WHERE type = 'renewal.upcoming' DO NOTHING;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < n THEN
        -- renewal.upcoming already written: the ids that were
        ids := ARRAY(SELECT e.id FROM subscription.event AS e
                      WHERE e.tenant_id = ANY (tenant_ids) AND e.id = ANY (ids) ORDER BY e.id);
    END IF;
    -- a Citus worker commits its part of a distributed transaction with
    -- PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll;
    -- and so do they where subscription.notify_events is off.  One
    -- notification per statement: a listener claims on it, whatever the id
    IF written > 0
       AND pg_catalog.current_setting('subscription.notify_events', true) IS DISTINCT FROM 'off'
       AND NOT subscription.on_citus_worker() THEN
        PERFORM pg_catalog.pg_notify('subscription_events', ids[pg_catalog.cardinality(ids)]::text);
    END IF;
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.write_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) IS
'Internal: write a statement''s events with one INSERT, in the transaction of the change (E1-E3); the extension''s own functions only';

-- One event: write_events() with one (NULL: a renewal.upcoming already
-- written for its period).
CREATE OR REPLACE FUNCTION subscription.write_event(tenant_id bigint, type text, account_id bigint, subscription_id bigint,
                                         payload jsonb, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (subscription.write_events(ARRAY[write_event.tenant_id], ARRAY[write_event.type], ARRAY[write_event.account_id],
                                      ARRAY[write_event.subscription_id], ARRAY[write_event.payload],
                                      ARRAY[write_event.at]))[1];
END
$$;

COMMENT ON FUNCTION subscription.write_event(bigint, text, bigint, bigint, jsonb, timestamptz) IS
'Internal: write one event in the transaction of the change (write_events, E1-E3); the extension''s own functions only';

REVOKE ALL ON FUNCTION subscription.write_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) FROM PUBLIC;

-- Trigger: the events of a statement's history rows, in its transaction,
-- with one write_events() (E1): in the order of the history rows, each
-- row's in the order history_events() gives them.  Every history row is
-- written by RecordHistory() (history.c), whose rows of one RowWrites are
-- one statement here (rowwrite.c).  The transition rows are read alone:
-- on a Citus worker no statement joins them with a distributed table.  A
-- restore copies the events with the history: none is written again.
CREATE OR REPLACE FUNCTION subscription.history_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    types text[];
    accounts bigint[];
    subs bigint[];
    payloads jsonb[];
    ats timestamptz[];
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(h.tenant_id ORDER BY h.id, e.n), array_agg(e.type ORDER BY h.id, e.n),
           array_agg(h.account_id ORDER BY h.id, e.n), array_agg(h.subscription_id ORDER BY h.id, e.n),
           array_agg(e.payload ORDER BY h.id, e.n), array_agg(h.at ORDER BY h.id, e.n)
      INTO tenants, types, accounts, subs, payloads, ats
      FROM new_rows AS h
     CROSS JOIN LATERAL subscription.history_events(h.operation, h.details) WITH ORDINALITY AS e (type, payload, n);
    IF types IS NOT NULL THEN
        PERFORM subscription.write_events(tenants, types, accounts, subs, payloads, ats);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.history_event() IS
'Trigger: the events of a statement''s history rows, written in its transaction with one INSERT (E1)';

DROP TRIGGER history_events ON subscription.history;
CREATE TRIGGER history_events AFTER INSERT ON subscription.history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.history_event();

-- Trigger: data.trimmed, one event per statement of the archive and
-- subscription, with the count of rows per table (E1), with one
-- write_events().
CREATE OR REPLACE FUNCTION subscription.trimmed_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    accounts bigint[];
    subs bigint[];
    payloads jsonb[];
    ats timestamptz[];
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(e.tenant_id ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(e.account_id ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(e.subscription_id ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(pg_catalog.jsonb_build_object('version', 1, 'tables', e.tables)
                     ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(e.at ORDER BY e.tenant_id, e.account_id, e.subscription_id)
      INTO tenants, accounts, subs, payloads, ats
      FROM (SELECT t.tenant_id, t.account_id, t.subscription_id, pg_catalog.max(t.at) AS at,
                   pg_catalog.jsonb_object_agg(t.relation, t.n) AS tables
              FROM (SELECT n.tenant_id, n.account_id, n.subscription_id, n.relation,
                           pg_catalog.max(n.at) AS at, pg_catalog.count(*) AS n
                      FROM new_rows AS n GROUP BY 1, 2, 3, 4) AS t
             GROUP BY 1, 2, 3) AS e;
    IF tenants IS NOT NULL THEN
        PERFORM subscription.write_events(tenants, array_fill('data.trimmed'::text, ARRAY[cardinality(tenants)]),
                                          accounts, subs, payloads, ats);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.trimmed_event() IS
'Trigger: a data.trimmed event per account and subscription with the rows trimmed per table (E1)';

-- E4: hand out the next events of a consumer: those after its position
-- whose every earlier id has committed or ended (next_xid below the
-- snapshot's oldest running transaction, events.c, for each of them and
-- every earlier one), in id order, at most max.  One claim per consumer
-- at a time (E6): a claim in flight (until acknowledged or until its lease
-- ends) or another worker claiming this instant gives nothing.  A new
-- consumer starts at the oldest event.
CREATE OR REPLACE FUNCTION subscription.claim_events(consumer text, max integer DEFAULT 100, lease interval DEFAULT '1 minute')
RETURNS SETOF subscription.event
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := claim_events.consumer;
    k subscription.event_consumer;
BEGIN
    PERFORM subscription.require_arguments('claim_events', '{consumer,max,lease}',
                                           ARRAY[c IS NULL, max IS NULL, lease IS NULL]);
    IF c = '' THEN
        RAISE EXCEPTION 'a consumer''s name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max < 1 OR max > 100000 THEN
        RAISE EXCEPTION 'max % is out of range', max
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Claim between 1 and 100000 events at a time.';
    END IF;
    IF lease <= interval '0' THEN
        RAISE EXCEPTION 'lease % is not a positive interval', lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- E6: another worker of the consumer claiming now: nothing for this
    -- one, at once
    SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM subscription.event_consumer AS x WHERE x.consumer = c) THEN
            RETURN;
        END IF;
        -- a new consumer, from the oldest event
        INSERT INTO subscription.event_consumer (consumer) VALUES (c) ON CONFLICT DO NOTHING;
        SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    IF k.claimed_until > pg_catalog.clock_timestamp() THEN  -- wall time: a lease
        RETURN;
    END IF;
    -- E3: the prefix of the next ids whose next_xid is below the oldest
    -- running transaction, up to the first that is not: ids are not taken
    -- in the order next_xid is read (write_events takes a statement's ids,
    -- then reads it once), so a later id may be ready before an earlier one
    RETURN QUERY
    WITH head AS (
        SELECT e AS event,
               pg_catalog.bool_and(e.next_xid <= pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()))
                   OVER (ORDER BY e.id) AS ready
          FROM (SELECT e.* FROM subscription.event AS e
                 WHERE e.id > k.position
                 ORDER BY e.id
                 LIMIT max) AS e),
    batch AS (
        SELECT (h.event).* FROM head AS h WHERE h.ready),
    claim AS (
        UPDATE subscription.event_consumer AS x
           SET claimed_up_to = b.up_to, claimed_until = pg_catalog.clock_timestamp() + lease  -- wall time: a lease
          FROM (SELECT pg_catalog.max(batch.id) AS up_to FROM batch) AS b
         WHERE x.consumer = c AND b.up_to IS NOT NULL)
    SELECT * FROM batch ORDER BY batch.id;
END
$$;

COMMENT ON FUNCTION subscription.claim_events(text, integer, interval) IS
'The consumer''s next events in commit order, at most max, held for it until acknowledged or the lease ends (E4, E6)';

-- end of events per statement (issue 20)

-- The history trigger's events without checking them again (issue 18, license_consume) --
-- insert_events(): the E3 order and the INSERT, which write_events() calls
-- after its checks and the history trigger calls directly.

-- The one writer of events (E1-E3, docs/rules.md): the events of a
-- statement, in the order given, with one INSERT:
--   E3: the transaction has its id before it takes an event id
--   (pg_current_xact_id), and next_xid is read once, after every id of the
--   statement was taken (events.c): so for each event, every transaction
--   at or above its next_xid takes its ids after it;
--   NOTIFY subscription_events once per statement, with the last id
--   written, sent on commit (not from a Citus worker, docs/citus.md).
-- A renewal.upcoming already written for its period is not written again.
-- Returns the ids written, in order.  It trusts its arrays: write_events()
-- checks them first; the history trigger builds them from its own rows.
-- Only the extension's owner calls it: no role is granted it.
CREATE FUNCTION subscription.insert_events(tenant_ids bigint[], types text[], account_ids bigint[],
                                           subscription_ids bigint[], payloads jsonb[], ats timestamptz[])
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- the conflict target names the table's columns
#variable_conflict use_column
DECLARE
    n integer := pg_catalog.cardinality(types);
    own_xid xid8;
    ids bigint[];
    horizon xid8;
    written bigint;
BEGIN
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    -- E3: the transaction's id first, then the event ids, then next_xid;
    -- assignments, so that one event (a seat, a quantity) runs no query
    -- but its INSERT
    own_xid := pg_catalog.pg_current_xact_id();
    IF n = 1 THEN
        ids := ARRAY[pg_catalog.nextval('subscription.event_id_seq')];
    ELSE
        ids := ARRAY(SELECT pg_catalog.nextval('subscription.event_id_seq') FROM pg_catalog.generate_series(1, n));
    END IF;
    horizon := subscription.event_next_xid();
    -- the arrays read in one pass (a subscript walks a text or jsonb array
    -- from its start)
    INSERT INTO subscription.event AS e (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
    SELECT x.id, x.type, x.account_id, x.subscription_id, x.payload, x.at, horizon, x.tenant_id
      FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(types), pg_catalog.unnest(account_ids),
                      pg_catalog.unnest(subscription_ids), pg_catalog.unnest(payloads), pg_catalog.unnest(ats),
                      pg_catalog.unnest(tenant_ids)) AS x (id, type, account_id, subscription_id, payload, at, tenant_id)
    ON CONFLICT (tenant_id, subscription_id, (payload ->> 'renews_at')) WHERE type = 'renewal.upcoming' DO NOTHING;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < n THEN
        -- renewal.upcoming already written: the ids that were
        ids := ARRAY(SELECT e.id FROM subscription.event AS e
                      WHERE e.tenant_id = ANY (tenant_ids) AND e.id = ANY (ids) ORDER BY e.id);
    END IF;
    -- a Citus worker commits its part of a distributed transaction with
    -- PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll;
    -- and so do they where subscription.notify_events is off.  One
    -- notification per statement: a listener claims on it, whatever the id
    IF written > 0
       AND pg_catalog.current_setting('subscription.notify_events', true) IS DISTINCT FROM 'off'
       AND NOT subscription.on_citus_worker() THEN
        PERFORM pg_catalog.pg_notify('subscription_events', ids[pg_catalog.cardinality(ids)]::text);
    END IF;
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.insert_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) IS
'Internal: insert a statement''s events, already checked, with one INSERT in the E3 order (E1-E3); write_events() and the history trigger only';

-- write_events(): the events of a statement, checked (every array given,
-- of one length, each event with its tenant, type, payload with its
-- version, and time), then insert_events().  Only the extension's owner
-- calls it: no role is granted it.
CREATE OR REPLACE FUNCTION subscription.write_events(tenant_ids bigint[], types text[], account_ids bigint[],
                                          subscription_ids bigint[], payloads jsonb[], ats timestamptz[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := pg_catalog.cardinality(types);
    bad jsonb;
BEGIN
    PERFORM subscription.require_arguments('write_events',
        '{tenant_ids,types,account_ids,subscription_ids,payloads,ats}',
        ARRAY[tenant_ids IS NULL, types IS NULL, account_ids IS NULL, subscription_ids IS NULL,
              payloads IS NULL, ats IS NULL]);
    IF pg_catalog.array_ndims(types) > 1
       OR n IS DISTINCT FROM pg_catalog.cardinality(tenant_ids) OR n IS DISTINCT FROM pg_catalog.cardinality(account_ids)
       OR n IS DISTINCT FROM pg_catalog.cardinality(subscription_ids) OR n IS DISTINCT FROM pg_catalog.cardinality(payloads)
       OR n IS DISTINCT FROM pg_catalog.cardinality(ats) THEN
        RAISE EXCEPTION 'the arrays of write_events() must be of one dimension and of the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_position(tenant_ids, NULL) IS NOT NULL OR pg_catalog.array_position(types, NULL) IS NOT NULL
       OR pg_catalog.array_position(payloads, NULL) IS NOT NULL OR pg_catalog.array_position(ats, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'an event must have its tenant, type, payload and time'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT p INTO bad FROM pg_catalog.unnest(payloads) AS p
     WHERE pg_catalog.jsonb_typeof(p OPERATOR(pg_catalog.->) 'version') IS DISTINCT FROM 'number' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the payload of an event must carry its version'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The payload was %s.', bad);
    END IF;
    RETURN subscription.insert_events(tenant_ids, types, account_ids, subscription_ids, payloads, ats);
END
$$;

COMMENT ON FUNCTION subscription.write_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) IS
'Internal: write a statement''s events with one INSERT, in the transaction of the change (E1-E3); the extension''s own functions only';

REVOKE ALL ON FUNCTION subscription.insert_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) FROM PUBLIC;

-- Trigger: the events of a statement's history rows, in its transaction,
-- with one write_events() (E1): in the order of the history rows, each
-- row's in the order history_events() gives them.  Every history row is
-- written by RecordHistory() (history.c), whose rows of one RowWrites are
-- one statement here (rowwrite.c).  The transition rows are read alone:
-- on a Citus worker no statement joins them with a distributed table.  A
-- restore copies the events with the history: none is written again.
CREATE OR REPLACE FUNCTION subscription.history_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    -- one query: the rows' own columns (checked by history's constraints)
    -- and the payloads (versioned by history_events()) need no check
    PERFORM subscription.insert_events(
               array_agg(h.tenant_id ORDER BY h.id, e.n), array_agg(e.type ORDER BY h.id, e.n),
               array_agg(h.account_id ORDER BY h.id, e.n), array_agg(h.subscription_id ORDER BY h.id, e.n),
               array_agg(e.payload ORDER BY h.id, e.n), array_agg(h.at ORDER BY h.id, e.n))
      FROM new_rows AS h
     CROSS JOIN LATERAL subscription.history_events(h.operation, h.details) WITH ORDINALITY AS e (type, payload, n)
    HAVING count(*) > 0;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.history_event() IS
'Trigger: the events of a statement''s history rows, written in its transaction with one INSERT (E1)';

-- an operation gives at most a few events: the default estimate of 1,000
-- could cost a history trigger's plan over a large statement enough to be
-- JIT-compiled at each statement
ALTER FUNCTION subscription.history_events(text, jsonb) ROWS 2;

-- end of: the history trigger's events without checking them again (issue 18)

-- Meters: the guard without the accumulators when no meter; move_usage in its tenant (issue 21) --
-- U1: the guard of a feature without a meter leaves the peak and the
-- integral out of its counter's UPDATE (src/limits.c); a new meter starts
-- them; a meter's change invalidates the guard's cache of its tables;
-- current_usage shows no peak or integral where none is kept.
CREATE OR REPLACE FUNCTION subscription.meter(relation regclass, feature text, aggregation text, unit interval DEFAULT '1 day')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registration subscription.limited_table;
    -- a value first: Citus updates the counters with no function of their columns
    t timestamptz := subscription.meter_now();
BEGIN
    PERFORM subscription.require_arguments('meter', '{relation,feature,aggregation,unit}',
        ARRAY[relation IS NULL, feature IS NULL, aggregation IS NULL, unit IS NULL]);
    SELECT t.* INTO registration FROM subscription.limited_table AS t
     WHERE t.relation = meter.relation AND t.feature = meter.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" is not enforced on table "%"', feature, relation
            USING ERRCODE = 'undefined_object',
                  HINT = 'A meter counts the rows of a table registered with subscription.enforce_limit(); usage without rows is recorded with subscription.record_usage().';
    END IF;
    IF aggregation NOT IN ('count', 'peak', 'time_weighted', 'sum') THEN
        RAISE EXCEPTION 'unknown aggregation "%"', aggregation
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The aggregations are count, peak, time_weighted and sum.';
    END IF;
    IF aggregation = 'sum' AND registration.on_downgrade <> 'scale' THEN
        RAISE EXCEPTION 'feature "%" does not count the sum of a value column', feature
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Register the table with on_downgrade => ''scale'' and its value_column, whose sum the counter then keeps.';
    END IF;
    IF unit <= interval '0' THEN
        RAISE EXCEPTION 'the unit of a meter must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', unit);
    END IF;
    INSERT INTO subscription.meter AS m (feature, aggregation, unit)
    VALUES (meter.feature, meter.aggregation, meter.unit)
    ON CONFLICT ON CONSTRAINT meter_pkey DO NOTHING;
    IF NOT FOUND THEN
        UPDATE subscription.meter AS m SET aggregation = meter.aggregation, unit = meter.unit
         WHERE m.feature = meter.feature;
        RETURN;
    END IF;
    -- U1: a new meter: its feature's accumulators start now, from the use
    UPDATE subscription.usage_counter AS u SET peak = u.used, integral = 0, since = greatest(u.since, t)
     WHERE u.feature = meter.feature;
END
$$;

COMMENT ON FUNCTION subscription.meter(regclass, text, text, interval) IS
'Meter a feature registered with enforce_limit: count, peak, time_weighted (in row-units of unit) or sum, billed by its usage price (U1)';

CREATE FUNCTION subscription.meter_invalidates()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subscription.distributed() THEN
        RETURN NULL;
    END IF;
    PERFORM subscription.invalidate_limit_cache(t.relation)
       FROM subscription.limited_table AS t
      WHERE t.feature IN (OLD.feature, NEW.feature);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.meter_invalidates() IS
'Internal (trigger): a meter created, changed or removed invalidates the limit guard''s cache of its feature''s tables (U1)';

CREATE TRIGGER meter_invalidates AFTER INSERT OR UPDATE OR DELETE ON subscription.meter
    FOR EACH ROW EXECUTE FUNCTION subscription.meter_invalidates();
REVOKE ALL ON FUNCTION subscription.meter_invalidates() FROM PUBLIC;

CREATE OR REPLACE VIEW subscription.current_usage WITH (security_barrier) AS
SELECT u.account_id,
       u.feature,
       m.aggregation,
       u.used,
       CASE WHEN m.feature IS NOT NULL OR t.feature IS NULL THEN greatest(u.peak, u.used) END AS peak,
       CASE WHEN m.feature IS NOT NULL OR t.feature IS NULL
            THEN subscription.integral_at(u.integral, u.used, u.since, subscription.now()) END AS integral,
       CASE WHEN m.feature IS NOT NULL OR t.feature IS NULL
            THEN subscription.integral_at(u.integral, u.used, u.since, subscription.now())
                 OPERATOR(pg_catalog./) extract(epoch FROM coalesce(m.unit, interval '1 day')) END AS time_weighted,
       coalesce(m.unit, interval '1 day') AS unit
  FROM subscription.usage_counter AS u
  LEFT JOIN subscription.meter AS m ON m.feature OPERATOR(pg_catalog.=) u.feature
  -- a registered table's feature (one registration per feature) without a meter: not kept
  LEFT JOIN subscription.limited_table AS t ON t.feature OPERATOR(pg_catalog.=) u.feature
 WHERE subscription.may_read(u.tenant_id, u.account_id);

COMMENT ON VIEW subscription.current_usage IS
'Per account and feature, the open period''s usage: used, peak, and the time-weighted figure carried to now (U6)';
-- end of: meters, the guard without the accumulators (issue 21)

-- Citus: the regression cases and the upgrade of a distributed database (issue 17) ---
-- renewal_notice reads the renewing subscriptions in a CTE, which Citus
-- plans apart (on the shards) when the whole does not push down, and calls
-- its functions on the coordinator (on a single server the CTE is inlined:
-- the same plan as before); renewal_terms in PL/pgSQL, as Citus plans no
-- SQL function whose statements take parameters; coupon_discount and
-- unpause round after their statement on the tenant's shard, not in it.
--
-- A Citus worker keeps no catalog rows of its own (10_catalog.sql seeds
-- the currencies on the coordinator alone; distribute() copies them to
-- every node): version 1.0, which cannot have been distributed, seeded
-- them on every node that ran its CREATE EXTENSION, the workers too.
DO $seed$
DECLARE
    coordinator boolean := true;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO coordinator;
    END IF;
    IF NOT coordinator THEN
        DELETE FROM subscription.currency;
    END IF;
END
$seed$;

CREATE OR REPLACE FUNCTION subscription.unpause(s subscription.subscription, at timestamptz)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paused interval := at - s.paused_at;
    ends timestamptz := s.paused_period_end + paused;
    frozen boolean := s.pause_mode = 'freeze';
    last_currency text;
BEGIN
    UPDATE subscription.subscription AS x
       SET period = tstzrange(lower(x.period), ends, '[)'), anchor = ends, period_number = 0,
           paused_at = NULL, resume_at = NULL, pause_mode = NULL, paused_period_end = NULL
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    -- U3: the usage counters close with the extended period
    PERFORM subscription.open_usage(s.tenant_id, s.account_id);
    -- C2: the extension is a period of its own, charged 0.00 once, in the
    -- currency of the last charge (rounded here, not in the statement on
    -- the tenant's shard, which Citus refuses a read of the catalog: issue 17)
    SELECT l.currency INTO last_currency
      FROM subscription.ledger AS l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.kind = 'charge'
     ORDER BY l.id DESC LIMIT 1;
    IF FOUND THEN
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
        VALUES (s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(0, last_currency), last_currency,
                tstzrange(ends - paused, ends, '[)'), 'plan', s.plan, format('pause: period extended by %s', paused));
    END IF;
    IF frozen THEN
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    END IF;
    RETURN s;
END
$$;

CREATE OR REPLACE FUNCTION subscription.coupon_discount(tenant_id bigint, subscription_id bigint, amount numeric, currency text)
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
-- renewal_notice shows the coupon's discount to its reader
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    off numeric;
BEGIN
    -- PL/pgSQL, its read naming the tenant: on Citus it runs on the
    -- tenant's shard, from the ledger's trigger too; rounded after it, as
    -- Citus refuses a read of the catalog from a statement sent to a
    -- shard (renewal_notice on the coordinator: issue 17)
    SELECT CASE WHEN c.percent_off IS NOT NULL
                THEN coupon_discount.amount * c.percent_off / 100
                ELSE least(c.amount_off, coupon_discount.amount) END INTO off
      FROM subscription.subscription AS s
      JOIN subscription.coupon AS c ON c.code = s.coupon
     WHERE s.tenant_id = coupon_discount.tenant_id AND s.id = coupon_discount.subscription_id
       AND (s.coupon_periods_left IS NULL OR s.coupon_periods_left > 0);
    RETURN coalesce(subscription.round_money(off, coupon_discount.currency), 0);
END
$$;

CREATE OR REPLACE FUNCTION subscription.renewal_terms(subscription_id bigint)
RETURNS TABLE (plan text, cycle interval, quantity integer, renewal text, needed bigint, version integer)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- PL/pgSQL, its statements one by one: Citus plans no SQL function
    -- whose statements take parameters (issue 17)
    SELECT * INTO s FROM subscription.subscription AS x WHERE x.id = renewal_terms.subscription_id;
    IF NOT FOUND OR NOT subscription.may_read(s.tenant_id, s.account_id) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT t.plan, t.cycle, t.quantity, t.renewal, t.needed, t.version FROM subscription.next_terms(s) AS t;
END
$$;

CREATE OR REPLACE VIEW subscription.renewal_notice WITH (security_barrier) AS
-- s: the subscriptions that renew, by their own columns alone; on Citus
-- read from the shards (the CTE, planned apart when the whole does not push
-- down), the rest on the coordinator, so that the functions below read the
-- tenant tables from there (issue 17); on a single server inlined as if
-- written in place
WITH s AS (
    SELECT * FROM subscription.subscription AS s
     WHERE s.status OPERATOR(pg_catalog.=) ANY ('{active,trialing}')
       AND s.paused_at IS NULL
       AND NOT s.cancel_at_period_end
       AND s.renewal OPERATOR(pg_catalog.<>) 'none')
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       n.plan,
       n.cycle,
       n.quantity,
       CASE WHEN cardinality(subscription.plan_tiers(n.plan, n.version)) > 0 THEN n.quantity END AS tier,
       subscription.round_money(price.amount, price.currency) AS amount,
       price.currency,
       d.discount,
       least(subscription.credit_balance(s.account_id, price.currency),
             subscription.round_money(price.amount, price.currency) OPERATOR(pg_catalog.-) d.discount) AS credit,
       upper(s.period) OPERATOR(pg_catalog.<=) subscription.now() AS overdue,
       -- the version of the plan renewed into (grandfathering; a migration's)
       subscription.plan_version_or_current(n.plan, n.version) AS plan_version,
       -- a trial ending: what its product makes of it (issue 19), else NULL
       CASE WHEN s.status OPERATOR(pg_catalog.=) 'trialing'
            THEN (SELECT pr.trial_end FROM subscription.plan AS p
                    JOIN subscription.product AS pr ON pr.code OPERATOR(pg_catalog.=) p.product
                   WHERE p.code OPERATOR(pg_catalog.=) s.plan) END AS trial_end,
       -- U6: the usage the renewal bills of the ending period (preview_usage),
       -- its amount in the renewal's currency and its lines
       u.usage_amount,
       u.usage
  FROM s
  CROSS JOIN LATERAL subscription.renewal_terms(s.id) AS n
  CROSS JOIN LATERAL subscription.period_price(n.plan, n.cycle, n.quantity, n.version) AS price
  CROSS JOIN LATERAL subscription.coupon_discount(s.id, subscription.round_money(price.amount, price.currency),
                                                  price.currency) AS d(discount)
  CROSS JOIN LATERAL (
      SELECT coalesce(sum(p.amount) FILTER (WHERE p.currency OPERATOR(pg_catalog.=) price.currency), 0) AS usage_amount,
             jsonb_agg(jsonb_build_object('feature', p.feature, 'aggregate', p.aggregate, 'included', p.included,
                                          'billable', p.billable, 'amount', p.amount, 'currency', p.currency)
                       ORDER BY p.feature) AS usage
        FROM subscription.preview_usage(s.account_id) AS p
       WHERE p.subscription_id OPERATOR(pg_catalog.=) s.id) AS u WHERE upper(s.period) OPERATOR(pg_catalog.<=)
       (subscription.now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer))
   AND subscription.may_read(s.tenant_id, s.account_id);

-- end of: the regression cases on Citus (issue 17)

-- The 3-year simulation in 60 s: record_payment, announce_renewals (issue 20, item 7) --
-- the open invoices alone (open_balance): the paid ones pile up, every period's
CREATE INDEX invoice_record_open ON subscription.invoice_record (tenant_id, account_id) WHERE status = 'open';

CREATE OR REPLACE FUNCTION subscription.announce_renewals()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unannounced bigint[];
    trials bigint[];
    tenants bigint[];
    types text[];
    accounts bigint[];
    subs bigint[];
    payloads jsonb[];
BEGIN
    -- E5: renewal_notice (the window, the amounts) is read for the
    -- subscriptions not announced yet alone: its usage and prices cost
    -- a call per subscription, and every monthly subscription is in a
    -- 30-day window at every step (the 3-year simulation, issue 20)
    unannounced := ARRAY(SELECT s.id FROM subscription.subscription AS s
                          WHERE NOT EXISTS (SELECT FROM subscription.event AS e
                                             WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                               AND e.type = 'renewal.upcoming'
                                               AND e.payload ->> 'renews_at' = subscription.event_time(upper(s.period))));
    -- trial.ending: once per trial (one per subscription), when its end
    -- enters the notice window; then, what its product makes of it.  The
    -- view is read for the trials not announced yet alone.
    trials := ARRAY(SELECT s.id FROM subscription.subscription AS s
                     WHERE s.status = 'trialing'
                       AND NOT EXISTS (SELECT FROM subscription.event AS e
                                        WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                          AND e.type = 'trial.ending'));
    -- the renewals' events, then the trials', each in the order of the
    -- tenant, account and subscription: one write_events (issue 20: one
    -- INSERT a run, not one a notice)
    SELECT array_agg(n.tenant_id ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.type ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.account_id ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.subscription_id ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.payload ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id)
      INTO tenants, types, accounts, subs, payloads
      FROM (SELECT 1 AS o, s.tenant_id, r.account_id, r.subscription_id, 'renewal.upcoming' AS type,
                   pg_catalog.jsonb_build_object('version', 1, 'renews_at', subscription.event_time(r.renews_at),
                       'plan', r.plan, 'plan_version', r.plan_version, 'cycle', r.cycle, 'quantity', r.quantity,
                       'amount', r.amount, 'currency', r.currency, 'discount', r.discount, 'credit', r.credit) AS payload
              FROM subscription.renewal_notice AS r
              JOIN subscription.subscription AS s ON s.id = r.subscription_id
             WHERE NOT r.overdue AND r.subscription_id = ANY (unannounced)
            UNION ALL
            SELECT 2, s.tenant_id, r.account_id, r.subscription_id, 'trial.ending',
                   pg_catalog.jsonb_build_object('version', 1, 'trial_end', subscription.event_time(r.renews_at),
                       'plan', s.plan, 'then', r.trial_end)
              FROM subscription.renewal_notice AS r
              JOIN subscription.subscription AS s ON s.id = r.subscription_id
             WHERE NOT r.overdue AND r.trial_end IS NOT NULL AND r.subscription_id = ANY (trials)) AS n;
    IF types IS NULL THEN
        RETURN 0;
    END IF;
    -- a renewal.upcoming already written for its period is not written again
    RETURN pg_catalog.cardinality(subscription.write_events(tenants, types, accounts, subs, payloads,
        pg_catalog.array_fill(subscription.now(), ARRAY[pg_catalog.cardinality(types)])));
END
$$;

-- renewal_notice: a subscription's usage previewed only where its plan has
-- usage prices (usage_due prices those alone)
CREATE OR REPLACE VIEW subscription.renewal_notice WITH (security_barrier) AS
-- s: the subscriptions that renew, by their own columns alone; on Citus
-- read from the shards (the CTE, planned apart when the whole does not push
-- down), the rest on the coordinator, so that the functions below read the
-- tenant tables from there (issue 17); on a single server inlined as if
-- written in place
WITH s AS (
    SELECT * FROM subscription.subscription AS s
     WHERE s.status OPERATOR(pg_catalog.=) ANY ('{active,trialing}')
       AND s.paused_at IS NULL
       AND NOT s.cancel_at_period_end
       AND s.renewal OPERATOR(pg_catalog.<>) 'none')
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       n.plan,
       n.cycle,
       n.quantity,
       CASE WHEN cardinality(subscription.plan_tiers(n.plan, n.version)) > 0 THEN n.quantity END AS tier,
       subscription.round_money(price.amount, price.currency) AS amount,
       price.currency,
       d.discount,
       least(subscription.credit_balance(s.account_id, price.currency),
             subscription.round_money(price.amount, price.currency) OPERATOR(pg_catalog.-) d.discount) AS credit,
       upper(s.period) OPERATOR(pg_catalog.<=) subscription.now() AS overdue,
       -- the version of the plan renewed into (grandfathering; a migration's)
       subscription.plan_version_or_current(n.plan, n.version) AS plan_version,
       -- a trial ending: what its product makes of it (issue 19), else NULL
       CASE WHEN s.status OPERATOR(pg_catalog.=) 'trialing'
            THEN (SELECT pr.trial_end FROM subscription.plan AS p
                    JOIN subscription.product AS pr ON pr.code OPERATOR(pg_catalog.=) p.product
                   WHERE p.code OPERATOR(pg_catalog.=) s.plan) END AS trial_end,
       -- U6: the usage the renewal bills of the ending period (preview_usage),
       -- its amount in the renewal's currency and its lines
       u.usage_amount,
       u.usage
  FROM s
  CROSS JOIN LATERAL subscription.renewal_terms(s.id) AS n
  CROSS JOIN LATERAL subscription.period_price(n.plan, n.cycle, n.quantity, n.version) AS price
  CROSS JOIN LATERAL subscription.coupon_discount(s.id, subscription.round_money(price.amount, price.currency),
                                                  price.currency) AS d(discount)
  CROSS JOIN LATERAL (
      SELECT coalesce(sum(p.amount) FILTER (WHERE p.currency OPERATOR(pg_catalog.=) price.currency), 0) AS usage_amount,
             jsonb_agg(jsonb_build_object('feature', p.feature, 'aggregate', p.aggregate, 'included', p.included,
                                          'billable', p.billable, 'amount', p.amount, 'currency', p.currency)
                       ORDER BY p.feature) AS usage
        FROM subscription.preview_usage(s.account_id) AS p
       WHERE p.subscription_id OPERATOR(pg_catalog.=) s.id
         -- usage_due prices a plan's usage prices alone: without any, no
         -- call (a millisecond a subscription, issue 20)
         AND EXISTS (SELECT FROM subscription.plan_usage_price AS up WHERE up.plan OPERATOR(pg_catalog.=) s.plan)) AS u
 WHERE upper(s.period) OPERATOR(pg_catalog.<=)
       (subscription.now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer))
   AND subscription.may_read(s.tenant_id, s.account_id);

-- end of the 3-year simulation in 60 s (issue 20)

-- Invoices opened and totalled over tenants (issue 18, docs/benchmarks.md) ---
-- open_invoices_of opens the invoices of any tenants with one INSERT moving
-- their series and one of the invoices (open_invoices, open_invoice,
-- invoice_line and renew_common_group call it: a batch's invoices by one
-- call over its tenants); invoice_totals adds a statement's lines with one
-- UPDATE over its tenants on a single server, one per tenant on Citus;
-- reduce_charge uses the coupons' periods with one UPDATE per round and
-- writes the discount and credit lines with one INSERT; renew_common and
-- renew_common_group price each distinct key once, and turn hash and merge
-- joins off for the UPDATE of the periods alone (its statement triggers
-- join their transition tables by hash again).

CREATE FUNCTION subscription.open_invoices_of(tenant_ids bigint[], account_ids bigint[], subscription_ids bigint[],
                                              currencies text[], ats timestamptz[], plans text[], corrects bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(account_ids);
    terms interval := make_interval(days => coalesce(current_setting('subscription.payment_terms', true), '0')::integer);
    issuers text[];
    numbers bigint[];
    ids bigint[];
    methods bigint[];
    -- the series moved: tenant, issuer, last number taken
    st bigint[] := '{}';
    si text[] := '{}';
    sl bigint[] := '{}';
    tenant bigint;
    sub bigint;
    plan text;
    made record;
BEGIN
    PERFORM subscription.require_arguments('open_invoices_of', '{tenant_ids,account_ids,currencies,ats}',
        ARRAY[tenant_ids IS NULL, account_ids IS NULL, currencies IS NULL, ats IS NULL]);
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    IF cardinality(tenant_ids) <> n OR cardinality(currencies) <> n OR cardinality(ats) <> n
       OR cardinality(coalesce(subscription_ids, '{}')) NOT IN (0, n) OR cardinality(coalesce(plans, '{}')) NOT IN (0, n)
       OR cardinality(coalesce(corrects, '{}')) NOT IN (0, n) THEN
        RAISE EXCEPTION 'the arrays of open_invoices() must be of one length' USING ERRCODE = 'array_subscript_error';
    END IF;
    IF array_position(tenant_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'open_invoices_of(): every invoice must name its tenant' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    plans := coalesce(plans, array_fill(NULL::text, ARRAY[n]));
    FOR k IN 1 .. n LOOP
        IF plans[k] IS NULL AND subscription_ids[k] IS NOT NULL THEN
            -- scalars first: Citus fails to parse an array element
            -- assigned a query of a distributed table
            tenant := tenant_ids[k];
            sub := subscription_ids[k];
            plan := (SELECT s.plan FROM subscription.subscription AS s
                      WHERE s.tenant_id = tenant AND s.id = sub);
            plans[k] := plan;
        END IF;
    END LOOP;
    -- the issuer of each, and the method to charge: its account's default now
    SELECT array_agg(coalesce(p.product, '') ORDER BY e.k), array_agg(m.id ORDER BY e.k) INTO issuers, methods
      FROM unnest(plans, account_ids, tenant_ids) WITH ORDINALITY AS e(plan, account_id, tenant_id, k)
      LEFT JOIN subscription.plan AS p ON p.code = e.plan
      LEFT JOIN subscription.payment_method AS m
        ON m.tenant_id = ANY (tenant_ids) AND m.tenant_id = e.tenant_id AND m.account_id = e.account_id AND m.is_default;
    -- each series moved once by its count, in (tenant, issuer) order, so
    -- that concurrent openings lock them in one order
    FOR made IN
        INSERT INTO subscription.invoice_series AS x (tenant_id, issuer, last_number)
        SELECT c.tenant_id, c.issuer, c.taken
          FROM (SELECT e.tenant_id, e.issuer, count(*) AS taken
                  FROM unnest(tenant_ids, issuers) AS e(tenant_id, issuer)
                 GROUP BY e.tenant_id, e.issuer) AS c
         ORDER BY c.tenant_id, c.issuer
        ON CONFLICT ON CONSTRAINT invoice_series_pkey DO UPDATE SET last_number = x.last_number + excluded.last_number
        RETURNING x.tenant_id, x.issuer, x.last_number
    LOOP
        st := st || made.tenant_id;
        si := si || made.issuer;
        sl := sl || made.last_number;
    END LOOP;
    -- then the invoices of each series numbered in their order: the last
    -- number taken, less those after them
    SELECT array_agg(e.number ORDER BY e.k) INTO numbers
      FROM (SELECT e.k, s.last - count(*) OVER (PARTITION BY e.tenant_id, e.issuer ORDER BY e.k DESC) + 1 AS number
              FROM unnest(tenant_ids, issuers) WITH ORDINALITY AS e(tenant_id, issuer, k)
              JOIN unnest(st, si, sl) AS s(tenant_id, issuer, last)
                ON s.tenant_id = e.tenant_id AND s.issuer = e.issuer) AS e;
    -- one INSERT, its rows (and so RETURNING's) in the order given; on
    -- Citus from no distributed table, no subquery
    ids := '{}';
    FOR made IN
        INSERT INTO subscription.invoice_record AS i
               (tenant_id, account_id, subscription_id, issuer, number, at, currency, due_at, payment_method_id,
                corrects_invoice_id)
        SELECT e.tenant_id, e.account_id, e.subscription_id, e.issuer, e.number, e.at, e.currency,
               e.at + terms, e.method, e.corrects
          FROM unnest(tenant_ids, account_ids, coalesce(subscription_ids, array_fill(NULL::bigint, ARRAY[n])), issuers,
                      numbers, ats, currencies, methods, coalesce(corrects, array_fill(NULL::bigint, ARRAY[n])))
               WITH ORDINALITY AS e(tenant_id, account_id, subscription_id, issuer, number, at, currency, method, corrects, k)
         ORDER BY e.k
        RETURNING i.id, i.tenant_id, i.issuer, i.number
    LOOP
        ids := ids || made.id;
        IF (made.tenant_id, made.issuer, made.number)
           IS DISTINCT FROM (tenant_ids[cardinality(ids)], issuers[cardinality(ids)], numbers[cardinality(ids)]) THEN
            RAISE EXCEPTION 'open_invoices(): invoice % returned out of order', made.id USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;
    -- their history rows and events invoice.opened are written at the
    -- commit, once their lines are all there (invoice_opened, I8)
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.open_invoices_of(bigint[], bigint[], bigint[], text[], timestamptz[], text[], bigint[]) IS
'Internal: new invoices of any tenants, numbered gapless in their issuers'' series in the order given, one INSERT moving the series and one of the invoices (I1, I3; issue 18)';

REVOKE ALL ON FUNCTION subscription.open_invoices_of(bigint[], bigint[], bigint[], text[], timestamptz[], text[], bigint[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION subscription.open_invoices(tenant_id bigint, account_ids bigint[], subscription_ids bigint[],
                                           currencies text[], ats timestamptz[], plans text[], corrects bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('open_invoices', '{tenant_id,account_ids,currencies,ats}',
        ARRAY[tenant_id IS NULL, account_ids IS NULL, currencies IS NULL, ats IS NULL]);
    RETURN subscription.open_invoices_of(array_fill(open_invoices.tenant_id, ARRAY[cardinality(account_ids)]),
                                         account_ids, subscription_ids, currencies, ats, plans, corrects);
END
$$;

COMMENT ON FUNCTION subscription.open_invoices(bigint, bigint[], bigint[], text[], timestamptz[], text[], bigint[]) IS
'Internal: new invoices of one tenant, numbered gapless in their issuers'' series in the order given (open_invoices_of; I1, I3)';

CREATE OR REPLACE FUNCTION subscription.open_invoice(tenant_id bigint, account_id bigint, subscription_id bigint,
                                          currency text, at timestamptz, plan text, corrects bigint,
                                          quiet boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('open_invoice', '{tenant_id,account_id,currency,at}',
        ARRAY[tenant_id IS NULL, account_id IS NULL, currency IS NULL, at IS NULL]);
    PERFORM subscription.require_account(open_invoice.tenant_id, open_invoice.account_id);
    IF subscription_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM subscription.subscription AS s
                        WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id) THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = open_invoice.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    RETURN (subscription.open_invoices_of(ARRAY[open_invoice.tenant_id], ARRAY[open_invoice.account_id],
                                          ARRAY[open_invoice.subscription_id], ARRAY[open_invoice.currency],
                                          ARRAY[open_invoice.at], ARRAY[open_invoice.plan], ARRAY[open_invoice.corrects]))[1];
END
$$;

COMMENT ON FUNCTION subscription.open_invoice(bigint, bigint, bigint, text, timestamptz, text, bigint, boolean) IS
'Internal: a new invoice, numbered gapless in its issuer''s series in this transaction, due after subscription.payment_terms days; its opening recorded at the commit (I1, I3, I8)';

CREATE OR REPLACE FUNCTION subscription.invoice_line()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line_at timestamptz;
BEGIN
    -- a restore copies the invoices with their lines and totals; the lines
    -- of a dump from before 1.1 get theirs, as the upgrade gives them,
    -- without history (the dump's history is restored as it was); a
    -- restore, by a restoring role, or as the docs say, with
    -- session_replication_role = replica (this trigger fires ALWAYS)
    IF NEW.invoice_id IS NOT NULL
       AND (current_setting('session_replication_role') = 'replica'
            OR subscription.restored_copy('subscription.ledger_id_seq', NEW.id)) THEN
        RETURN NEW;
    END IF;
    IF NEW.corrects_invoice_id IS NULL AND NEW.charge_id IS NOT NULL AND NEW.kind IN ('refund', 'credit') THEN
        NEW.corrects_invoice_id := (SELECT l.invoice_id FROM subscription.ledger AS l
                                     WHERE l.tenant_id = NEW.tenant_id AND l.id = NEW.charge_id);
    END IF;
    IF NEW.invoice_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    line_at := coalesce(lower(NEW.period), NEW.created_at);
    NEW.invoice_id := (SELECT i.id FROM subscription.invoice_record AS i
                        WHERE i.tenant_id = NEW.tenant_id AND i.account_id = NEW.account_id
                          AND i.at = line_at AND i.currency = NEW.currency
                          AND i.subscription_id IS NOT DISTINCT FROM NEW.subscription_id
                          AND i.corrects_invoice_id IS NULL
                          AND i.xact = pg_current_xact_id()
                        ORDER BY i.id DESC LIMIT 1);
    IF NEW.invoice_id IS NULL THEN
        -- the line's foreign keys check its account, subscription and
        -- currency: no need to check them again here (open_invoice does)
        NEW.invoice_id := (subscription.open_invoices_of(ARRAY[NEW.tenant_id], ARRAY[NEW.account_id],
                                                         ARRAY[NEW.subscription_id], ARRAY[NEW.currency], ARRAY[line_at],
                                                         ARRAY[NEW.plan], NULL))[1];
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.invoice_line() IS
'Trigger: the invoice each ledger line belongs to, opened by the billing event''s first line (I1, I2)';

CREATE OR REPLACE FUNCTION subscription.invoice_totals()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replica boolean := current_setting('session_replication_role') = 'replica';
    -- one UPDATE per tenant where the tables are distributed
    per_tenant boolean := subscription.distributed();
    t record;
    changed record;
    -- the invoices whose status changes, by first line
    settle bigint[];
    k bigint;
BEGIN
    -- per group (every tenant, or one), by tenant in the order of its
    -- first line, its invoices in the order of theirs: each one's lines'
    -- sum, the time of its last line (what settle_invoice records),
    -- whether all are a restore's
    FOR t IN
        SELECT array_agg(DISTINCT x.tenant_id) AS tenant_set,
               array_agg(x.tenant_id ORDER BY x.tenant_first, x.first) AS tenants,
               array_agg(x.invoice_id ORDER BY x.tenant_first, x.first) AS invoices,
               array_agg(x.part ORDER BY x.tenant_first, x.first) AS parts,
               array_agg(x.at ORDER BY x.tenant_first, x.first) AS ats,
               array_agg(x.quiet ORDER BY x.tenant_first, x.first) AS quiets
          FROM (SELECT x.*, min(x.first) OVER (PARTITION BY x.tenant_id) AS tenant_first
                  FROM (SELECT n.tenant_id, n.invoice_id, min(n.id) AS first,
                               sum(subscription.line_amount(n.kind, n.amount)) AS part,
                               (array_agg(coalesce(lower(n.period), n.created_at) ORDER BY n.id DESC))[1] AS at,
                               bool_and(replica OR subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS quiet
                          FROM new_rows AS n
                         GROUP BY n.tenant_id, n.invoice_id) AS x) AS x
         GROUP BY CASE WHEN per_tenant THEN x.tenant_id END
         ORDER BY min(x.first)
    LOOP
        settle := '{}';
        FOR changed IN
            UPDATE subscription.invoice_record AS i
               SET total = i.total + d.part
              FROM unnest(t.tenants, t.invoices, t.parts, t.quiets) WITH ORDINALITY AS d(tenant_id, invoice_id, part, quiet, k)
             WHERE i.tenant_id = ANY (t.tenant_set) AND i.tenant_id = d.tenant_id AND i.id = d.invoice_id
               AND (NOT d.quiet OR i.xact = pg_current_xact_id())
            RETURNING i.status, i.total, i.paid, d.k
        LOOP
            IF subscription.invoice_status(changed.status, changed.total, changed.paid) IS DISTINCT FROM changed.status THEN
                settle := settle || changed.k;
            END IF;
        END LOOP;
        FOREACH k IN ARRAY (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(settle) AS x) LOOP
            PERFORM subscription.settle_invoice(t.tenants[k], t.invoices[k], t.quiets[k], t.ats[k]);
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.invoice_totals() IS
'Trigger, per statement: the totals of the invoices of the statement''s ledger lines, and the status of those it changes (I2, I3)';

CREATE OR REPLACE FUNCTION subscription.reduce_charge()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- one UPDATE per tenant where the tables are distributed
    per_tenant boolean := subscription.distributed();
    joins text[] := ARRAY[current_setting('enable_hashjoin'), current_setting('enable_mergejoin')];
    c subscription.coupon;
    ids bigint[];
    tenants bigint[];
    accounts bigint[];
    subs bigint[];
    batches bigint[];
    amounts numeric[];
    currencies text[];
    periods tstzrange[];
    items text[];
    plans text[];
    -- the rank of a plan charge among the statement's plan charges of its
    -- subscription: the coupon's periods are used in that order
    ranks bigint[];
    discounts numeric[];
    notes text[];
    i integer;
    -- the charges in the order of their accounts, then ids (L10 below)
    by_account integer[];
    credits_used numeric[];
    balance numeric;
    discount numeric;
    used numeric;
    rounds bigint;
    -- the charges a round's coupons reduce
    reduced integer[];
    g record;
    -- whether any discount or credit line is to be written
    any_line boolean := false;
BEGIN
    -- a restore copies the charge's discount and credit lines, and the
    -- coupon's periods left, with it (restored_copy); the lines written
    -- here are no charges and end the nested statement at once
    SELECT array_agg(x.id ORDER BY x.id), array_agg(x.tenant_id ORDER BY x.id), array_agg(x.account_id ORDER BY x.id),
           array_agg(x.subscription_id ORDER BY x.id), array_agg(x.addon_batch_id ORDER BY x.id),
           array_agg(x.amount ORDER BY x.id), array_agg(x.currency ORDER BY x.id), array_agg(x.period ORDER BY x.id),
           array_agg(x.item ORDER BY x.id), array_agg(x.plan ORDER BY x.id), array_agg(x.rank ORDER BY x.id)
      INTO ids, tenants, accounts, subs, batches, amounts, currencies, periods, items, plans, ranks
      FROM (SELECT n.id, n.tenant_id, n.account_id, n.subscription_id, n.addon_batch_id, n.amount, n.currency,
                   n.period, n.item, n.plan,
                   CASE WHEN n.subscription_id IS NOT NULL AND n.item = 'plan'
                        THEN row_number() OVER (PARTITION BY n.tenant_id, n.subscription_id, n.item = 'plan'
                                                ORDER BY n.id) END AS rank
              FROM new_rows AS n
             WHERE n.kind = 'charge'
               AND NOT subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS x;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    discounts := array_fill(0::numeric, ARRAY[cardinality(ids)]);
    notes := array_fill(NULL::text, ARRAY[cardinality(ids)]);

    -- Z10: the coupon, a round per rank, so that a second plan charge of a
    -- subscription finds the periods the first one used
    SELECT coalesce(max(k), 0) INTO rounds FROM unnest(ranks) AS k;
    FOR r IN 1 .. rounds LOOP
        reduced := '{}';
        FOR i IN 1 .. cardinality(ids) LOOP
            CONTINUE WHEN ranks[i] IS DISTINCT FROM r;
            discount := subscription.coupon_discount(tenants[i], subs[i], amounts[i], currencies[i]);
            CONTINUE WHEN discount <= 0;
            SELECT x.* INTO c FROM subscription.subscription AS s
              JOIN subscription.coupon AS x ON x.code = s.coupon
             WHERE s.tenant_id = tenants[i] AND s.id = subs[i];
            discounts[i] := discount;
            notes[i] := format('coupon %s: %s off', c.code,
                               coalesce(c.percent_off::text || '%', c.amount_off::text || ' ' || c.currency));
            reduced := reduced || i;
            any_line := true;
        END LOOP;
        -- a period of each coupon used (a subscription once a round)
        FOR g IN
            SELECT array_agg(DISTINCT tenants[u.i]) AS tenant_set, array_agg(tenants[u.i] ORDER BY u.k) AS ts,
                   array_agg(subs[u.i] ORDER BY u.k) AS ss
              FROM unnest(reduced) WITH ORDINALITY AS u(i, k)
             GROUP BY CASE WHEN per_tenant THEN tenants[u.i] END
             ORDER BY min(u.k)
        LOOP
            PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
            UPDATE subscription.subscription AS s
               SET coupon_periods_left = s.coupon_periods_left - 1
              FROM (SELECT d.tenant_id, d.id FROM unnest(g.ts, g.ss) WITH ORDINALITY AS d(tenant_id, id, k)
                     ORDER BY d.k) AS d
             WHERE s.tenant_id = ANY (g.tenant_set) AND s.tenant_id = d.tenant_id AND s.id = d.id
               AND s.coupon_periods_left IS NOT NULL;
            PERFORM set_config('enable_hashjoin', joins[1], true), set_config('enable_mergejoin', joins[2], true);
        END LOOP;
    END LOOP;

    -- L10: an account's credit in a currency, read once per statement,
    -- without a lock first (the common case is none); what one charge uses
    -- is gone for the next.  Accounts are independent, so one pass over
    -- the charges sorted by account (ids in order within each) gives each
    -- charge what the id order would, at a cost that grows with the
    -- charges, not with their square; the lines follow in the ids' order.
    credits_used := array_fill(0::numeric, ARRAY[cardinality(ids)]);
    SELECT array_agg(x.o ORDER BY x.tenant_id, x.account_id, x.currency, x.o) INTO by_account
      FROM ROWS FROM (unnest(tenants), unnest(accounts), unnest(currencies)) WITH ORDINALITY
           AS x(tenant_id, account_id, currency, o);
    FOR k IN 1 .. cardinality(by_account) LOOP
        i := by_account[k];
        IF k = 1 OR (tenants[i], accounts[i], currencies[i])
                    IS DISTINCT FROM (tenants[by_account[k - 1]], accounts[by_account[k - 1]], currencies[by_account[k - 1]]) THEN
            balance := subscription.credit_balance(tenants[i], accounts[i], currencies[i]);
            IF balance > 0 THEN
                -- concurrent charges of the account take its credit one at a time
                PERFORM FROM subscription.account AS a WHERE a.tenant_id = tenants[i] AND a.id = accounts[i]
                    FOR NO KEY UPDATE;
                balance := subscription.credit_balance(tenants[i], accounts[i], currencies[i]);
            END IF;
        END IF;
        used := least(balance, amounts[i] - discounts[i]);
        IF used > 0 THEN
            credits_used[i] := used;
            balance := balance - used;
            any_line := true;
        END IF;
    END LOOP;

    -- each charge's discount, then its credit, in the order of the
    -- charges: one INSERT from the arrays, read in one pass (none, and so
    -- no statement triggers, without a line)
    IF NOT any_line THEN
        RETURN NULL;
    END IF;
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
            charge_id, description)
    SELECT x.tenant_id, x.account_id, x.subscription_id, l.batch, l.kind, l.amount, x.currency, x.period, x.item, x.plan,
           x.id, l.description
      FROM ROWS FROM (unnest(ids), unnest(tenants), unnest(accounts), unnest(subs), unnest(batches), unnest(currencies),
                      unnest(periods), unnest(items), unnest(plans), unnest(discounts), unnest(notes),
                      unnest(credits_used)) WITH ORDINALITY
           AS x(id, tenant_id, account_id, subscription_id, batch, currency, period, item, plan, discount, note, used, k)
     CROSS JOIN LATERAL (VALUES (1, 'discount', x.discount, NULL::bigint, x.note),
                                (2, 'credit_used', x.used, x.batch, format('credit pays charge %s', x.id)))
           AS l(o, kind, amount, batch, description)
     WHERE l.amount > 0
     ORDER BY x.k, l.o;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.reduce_charge() IS 'Trigger: a coupon''s discount and the account''s credit on every charge line';

CREATE OR REPLACE FUNCTION subscription.sync_license_counter()
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
    tenants bigint[];
    subs bigint[];
    is_active boolean;
    capacity integer;
    -- the logical table, from the trigger's argument (issue 17)
    logical text := TG_ARGV[0];
BEGIN
    -- a restore copies the counter (restored_copy): the copy is trusted,
    -- and verify() compares it with the licenses afterwards
    IF TG_OP = 'INSERT' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM new_rows AS n
         WHERE NOT subscription.restored_copy('subscription.subscription_id_seq', n.id);
    ELSIF TG_OP = 'UPDATE' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE (o.quantity, o.status) IS DISTINCT FROM (n.quantity, n.status)
            OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id FROM old_rows AS b) AS x;
    ELSE
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id
                  FROM new_rows AS b
                 WHERE TG_OP = 'UPDATE'
                    OR NOT subscription.restored_copy('subscription.addon_batch_id_seq', b.id)) AS x;
    END IF;
    FOR k IN 1 .. coalesce(cardinality(subs), 0) LOOP
        -- each statement names the tenant: on Citus a trigger on a shard
        -- runs only statements on its own node (issue 17)
        SELECT subscription.assigns_licenses(s.tenant_id, s.account_id, s.status) INTO is_active
          FROM subscription.subscription AS s WHERE s.tenant_id = tenants[k] AND s.id = subs[k];
        CONTINUE WHEN NOT FOUND;
        capacity := subscription.license_capacity(tenants[k], subs[k]);
        INSERT INTO subscription.license_counter AS c (tenant_id, subscription_id, capacity, active)
        VALUES (tenants[k], subs[k], capacity, is_active)
        ON CONFLICT (tenant_id, subscription_id) DO UPDATE
           SET capacity = excluded.capacity, active = excluded.active
         WHERE (c.capacity, c.active) IS DISTINCT FROM (excluded.capacity, excluded.active);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.sync_license_counter() IS 'Trigger: seat capacities follow quantities, statuses and add-on batches';

CREATE OR REPLACE FUNCTION subscription.sync_service_seats()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its transition tables joined by hash, whatever statement fired it (a
-- renewal's UPDATE runs with nested loops alone: renew_common_group)
SET enable_hashjoin = on
AS $$
DECLARE
    ids bigint[];
    old_plans text[];
    new_plans text[];
    subs bigint[];
BEGIN
    -- the logical table, from the trigger's argument (issue 17)
    IF TG_ARGV[0] IN ('plan', 'suite_component') AND NOT subscription.catalog_reads_tenants() THEN
        -- a Citus worker's placement of the catalog: the coordinator's
        -- rebuilds the seats, on every shard
        RETURN NULL;
    ELSIF TG_ARGV[0] = 'plan' THEN
        -- the plans whose seat or product changed, read first
        SELECT array_agg(n.code) FILTER (WHERE subscription.seat_product(o.kind, o.product) IS DISTINCT FROM
                                                subscription.seat_product(n.kind, n.product)),
               array_agg(n.code) FILTER (WHERE o.product IS DISTINCT FROM n.product)
          INTO old_plans, new_plans
          FROM old_rows AS o JOIN new_rows AS n ON n.code = o.code;
        -- the plan's own subscriptions, and (Z3) those of the suites that include it
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s
             WHERE s.plan = ANY (old_plans)
                OR s.plan IN (SELECT sc.suite_plan FROM subscription.suite_component AS sc
                               WHERE sc.plan = ANY (new_plans))));
    ELSIF TG_ARGV[0] = 'suite_component' THEN
        -- Z3: a suite's licenses seat the products of the plans it includes
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(n.suite_plan) INTO old_plans FROM new_rows AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(o.suite_plan) INTO old_plans FROM old_rows AS o;
        ELSE
            SELECT array_agg(x.suite_plan) INTO old_plans
              FROM (SELECT o.suite_plan FROM old_rows AS o UNION SELECT n.suite_plan FROM new_rows AS n) AS x;
        END IF;
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s WHERE s.plan = ANY (old_plans)));
    ELSE
        -- the subscriptions whose plan changed, read into a local set first
        -- (on Citus a transition table is never joined with another table)
        SELECT array_agg(n.id ORDER BY n.tenant_id, n.id), array_agg(o.plan ORDER BY n.tenant_id, n.id),
               array_agg(n.plan ORDER BY n.tenant_id, n.id)
          INTO ids, old_plans, new_plans
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE o.plan IS DISTINCT FROM n.plan;
        FOR k IN 1 .. coalesce(cardinality(ids), 0) LOOP
            IF (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = old_plans[k])
               IS DISTINCT FROM
               (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = new_plans[k])
               -- Z3: from or to a suite, the included products may change
               OR EXISTS (SELECT FROM subscription.suite_component AS sc
                           WHERE sc.suite_plan IN (old_plans[k], new_plans[k])) THEN
                subs := subs || ids[k];
            END IF;
        END LOOP;
        IF subs IS NOT NULL THEN
            PERFORM subscription.reseat_licenses(subs);
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.sync_service_seats() IS 'Trigger: service seats follow plan and suite changes (R11, Z3)';

CREATE OR REPLACE FUNCTION subscription.refresh_limits()
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
            SELECT array_agg(x.tenant_id), array_agg(x.account_id) INTO tenants, accounts
              FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
             CROSS JOIN LATERAL (VALUES (o.tenant_id, o.account_id), (n.tenant_id, n.account_id)) AS x (tenant_id, account_id)
             WHERE (o.account_id, o.plan, o.quantity, o.status, o.plan_version)
                   IS DISTINCT FROM (n.account_id, n.plan, n.quantity, n.status, n.plan_version)
                OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
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

CREATE OR REPLACE FUNCTION subscription.renew_common(tenants bigint[], at timestamptz, OUT handled integer, OUT rest bigint[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint[];
    ts bigint[];
    ids bigint[];
    pos bigint[];
    tenant bigint;
    other bigint;
    n integer := 0;
    first_n integer;
    left_to bigint[];
BEGIN
    handled := 0;
    rest := '{}';
    -- the tenants' locks, as renew_account takes them
    locked := ARRAY(SELECT a.id FROM subscription.account AS a
                     WHERE a.tenant_id = ANY (tenants) AND a.id = a.tenant_id
                     ORDER BY a.id
                       FOR NO KEY UPDATE SKIP LOCKED);
    -- their due subscriptions, locked; the tenants all of whose due
    -- subscriptions renew the common way
    WITH due AS (
        SELECT x.tenant_id, x.id, upper(x.period) AS e, x.plan, x.cycle, x.quantity, x.plan_version,
               x.status = 'active' AND x.paused_at IS NULL AND NOT x.cancel_at_period_end AND x.renewal = 'always'
               AND x.pending_plan IS NULL AND x.pending_cycle IS NULL AND x.pending_quantity IS NULL
               AND NOT coalesce(x.migrate_at <= upper(x.period), false)
               AND upper(subscription.nth_period(x.anchor, x.cycle, x.period_number + 1)) > at AS plain
          FROM subscription.subscription AS x
         WHERE x.tenant_id = ANY (locked) AND x.status IN ('active', 'trialing') AND upper(x.period) <= at
           FOR NO KEY UPDATE OF x SKIP LOCKED),
         -- each plan, cycle, quantity and version priced once
         terms AS MATERIALIZED (
        SELECT d.plan, d.cycle, d.quantity, d.plan_version,
               (subscription.find_price(d.plan, d.cycle, d.quantity, d.plan_version)).problem IS NULL
               AND pr.renewal_quantity = 'keep' AS plain,
               -- usage billed in arrears (issue 21): renew_common_group bills it
               EXISTS (SELECT FROM subscription.plan_usage_price AS up WHERE up.plan = d.plan) AS metered
          FROM (SELECT DISTINCT ON (d.plan, d.cycle::text, d.quantity, d.plan_version)
                       d.plan, d.cycle, d.quantity, d.plan_version
                  FROM due AS d
                 WHERE d.plain) AS d
          JOIN subscription.plan AS p ON p.code = d.plan
          JOIN subscription.product AS pr ON pr.code = p.product),
         -- the active batches of the plain ones, and whether each add-on
         -- renews priced at its cycle (priceless_addons, renewal_problem's
         -- rule), asked once per add-on and cycle
         batches AS (
        SELECT d.tenant_id, d.id, b.addon, d.cycle, b.cancel_at_period_end
          FROM due AS d
          JOIN subscription.addon_batch AS b ON b.tenant_id = d.tenant_id AND b.subscription_id = d.id
         WHERE d.plain AND b.status = 'active'),
         addon_terms AS MATERIALIZED (
        SELECT t.addon, t.cycle, subscription.priceless_addons(ARRAY[t.addon], t.cycle) IS NULL AS priced
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text) b.addon, b.cycle FROM batches AS b) AS t),
         checked AS (
        SELECT d.tenant_id, d.id, d.e, coalesce(tm.metered, false) AS metered,
               d.plain AND coalesce(tm.plain, false)
               -- a batch cancelled for the period end (K4) goes to renew_account
               AND NOT EXISTS (SELECT FROM batches AS b
                                 JOIN addon_terms AS pt ON pt.addon = b.addon AND pt.cycle::text = b.cycle::text
                                WHERE b.tenant_id = d.tenant_id AND b.id = d.id
                                  AND (b.cancel_at_period_end OR NOT pt.priced)) AS plain
          FROM due AS d
          LEFT JOIN terms AS tm
            ON tm.plan = d.plan AND tm.cycle::text = d.cycle::text AND tm.quantity = d.quantity
           AND tm.plan_version = d.plan_version)
    -- each tenant's in its order, as renew_account renews them
    SELECT array_agg(c.tenant_id ORDER BY u.k, c.e, c.id), array_agg(c.id ORDER BY u.k, c.e, c.id),
           array_agg(u.k ORDER BY u.k, c.e, c.id)
      INTO ts, ids, pos
      FROM checked AS c
      JOIN unnest(tenants) WITH ORDINALITY AS u(tenant_id, k) ON u.tenant_id = c.tenant_id
     WHERE c.tenant_id IN (SELECT x.tenant_id FROM checked AS x GROUP BY x.tenant_id
                            -- a metered one renews set-based alone in its tenant: its usage line
                            -- comes first, as renew_period writes it (credit pays in that order)
                            HAVING bool_and(x.plain) AND (count(*) = 1 OR NOT bool_or(x.metered)));
    ts := coalesce(ts, '{}');

    -- the tenants in their order; a NULL at the end renews the last group
    FOREACH tenant IN ARRAY tenants || NULL::bigint LOOP
        n := n + 1;
        IF tenant = ANY (ts) THEN
            first_n := coalesce(first_n, n);
            CONTINUE;
        END IF;
        IF first_n IS NOT NULL THEN
            PERFORM subscription.renew_common_group(
                ARRAY(SELECT g.t FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1),
                ARRAY(SELECT g.id FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1));
            handled := handled + (SELECT count(*) FROM unnest(pos) AS g(k) WHERE g.k BETWEEN first_n AND n - 1);
            -- a common tenant with a subscription still due: renew_account's
            left_to := ARRAY(SELECT u.t FROM unnest(tenants) WITH ORDINALITY AS u(t, k)
                              WHERE u.k BETWEEN first_n AND n - 1
                                AND EXISTS (SELECT FROM subscription.subscription AS x
                                             WHERE x.tenant_id = u.t AND x.status IN ('active', 'trialing')
                                               AND upper(x.period) <= at)
                              ORDER BY u.k);
            FOREACH other IN ARRAY left_to LOOP
                handled := handled + subscription.renew_account(other, at);
            END LOOP;
            rest := rest || left_to;
            first_n := NULL;
        END IF;
        IF tenant IS NOT NULL THEN
            handled := handled + subscription.renew_account(tenant, at);
            rest := rest || tenant;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.renew_common(bigint[], timestamptz) IS
'Internal: the renewals of one batch on a single server: its common ones set-based (renew_common_group), the others by renew_account';

CREATE OR REPLACE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    joins text[];
    due subscription.subscription;
    metered subscription.subscription[] := '{}';
    -- the charge lines, in renewal order
    lt bigint[]; la bigint[]; ls bigint[]; lb bigint[]; lamount numeric[]; lcurrency text[];
    lperiod tstzrange[]; litem text[]; lplan text[]; ldescription text[];
    -- their billing events, in the order of their first lines, and invoices
    et bigint[]; ea bigint[]; es bigint[]; ecurrency text[]; eat timestamptz[]; eplan text[]; einvoice bigint[];
    -- the billing event of each line, whether it is the event's first
    levent bigint[];
    lfirst boolean[];
    g record;
    opened bigint[];
BEGIN
    -- U3: the ending periods' usage, billed in arrears as renew_period
    -- bills it (bill_usage: usage_due's pricing), in renewal order
    FOR due IN SELECT x.* FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)
               JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id
              WHERE x.plan IN (SELECT up.plan FROM subscription.plan_usage_price AS up)
              ORDER BY r.k LOOP
        PERFORM subscription.bill_usage(due, upper(due.period));
        metered := metered || due;
    END LOOP;
    -- the periods move (renew_period's common renewal), in the order given
    joins := ARRAY[current_setting('enable_hashjoin'), current_setting('enable_mergejoin')];
    PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;
    PERFORM set_config('enable_hashjoin', joins[1], true), set_config('enable_mergejoin', joins[2], true);

    -- each subscription's plan line, then its batches', in renewal order
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS MATERIALIZED (
        SELECT d.plan, d.cycle, d.quantity, d.plan_version, pp.amount, pp.currency
          FROM (SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
                       s.plan, s.cycle, s.quantity, s.plan_version
                  FROM s) AS d
          CROSS JOIN LATERAL subscription.period_price(d.plan, d.cycle, d.quantity, d.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS MATERIALIZED (
        SELECT d.addon, d.cycle, d.quantity, ap.amount, ap.currency
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity
                  FROM batches AS b) AS d
          CROSS JOIN LATERAL subscription.addon_period_price(d.addon, d.cycle, d.quantity) AS ap)
    SELECT array_agg(l.tenant_id ORDER BY l.k, l.batch_order), array_agg(l.account_id ORDER BY l.k, l.batch_order),
           array_agg(l.subscription_id ORDER BY l.k, l.batch_order), array_agg(l.addon_batch_id ORDER BY l.k, l.batch_order),
           array_agg(l.amount ORDER BY l.k, l.batch_order), array_agg(l.currency ORDER BY l.k, l.batch_order),
           array_agg(l.period ORDER BY l.k, l.batch_order), array_agg(l.item ORDER BY l.k, l.batch_order),
           array_agg(l.plan ORDER BY l.k, l.batch_order), array_agg(l.description ORDER BY l.k, l.batch_order)
      INTO lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, subscription.round_money(p.amount, p.currency) AS amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, s.cycle, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT s.k, b.id, s.tenant_id, s.account_id, s.id, b.id,
                   subscription.round_money(ap.amount, ap.currency), ap.currency, s.period, 'addon', s.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, s.cycle)
              FROM s
              JOIN batches AS b ON b.k = s.k
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l;
    -- I1, I2: the invoice of each billing event (a subscription's lines at
    -- the period's start, in a currency), as invoice_line would find or
    -- open it for the event's first line: one this transaction opened, or
    -- new ones, opened set-based over the group's tenants
    -- (open_invoices_of), numbered in the lines' order; the lines name
    -- them (issue 18)
    SELECT array_agg(l.event ORDER BY l.n), array_agg(l.n = l.first ORDER BY l.n) INTO levent, lfirst
      FROM (SELECT l.n, l.first, dense_rank() OVER (ORDER BY l.first) AS event
              FROM (SELECT l.n, min(l.n) OVER (PARTITION BY l.tenant_id, l.account_id, l.subscription_id, l.currency,
                                                            lower(l.period)) AS first
                      FROM unnest(lt, la, ls, lcurrency, lperiod) WITH ORDINALITY
                           AS l(tenant_id, account_id, subscription_id, currency, period, n)) AS l) AS l;
    SELECT array_agg(l.tenant_id ORDER BY l.n), array_agg(l.account_id ORDER BY l.n),
           array_agg(l.subscription_id ORDER BY l.n), array_agg(l.currency ORDER BY l.n),
           array_agg(lower(l.period) ORDER BY l.n), array_agg(l.plan ORDER BY l.n),
           array_agg((SELECT i.id FROM subscription.invoice_record AS i
                       WHERE i.tenant_id = l.tenant_id AND i.account_id = l.account_id AND i.at = lower(l.period)
                         AND i.currency = l.currency AND i.subscription_id = l.subscription_id
                         AND i.corrects_invoice_id IS NULL AND i.xact = pg_current_xact_id()
                       ORDER BY i.id DESC LIMIT 1) ORDER BY l.n)
      INTO et, ea, es, ecurrency, eat, eplan, einvoice
      FROM unnest(lt, la, ls, lcurrency, lperiod, lplan, lfirst) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, currency, period, plan, first, n)
     -- each event's first line
     WHERE l.first;
    -- the events without one: their invoices opened by one call over
    -- every tenant of the group, in the order of the events
    SELECT array_agg(e.k ORDER BY e.k) AS ks, array_agg(e.tenant_id ORDER BY e.k) AS tenants,
           array_agg(e.account_id ORDER BY e.k) AS accounts, array_agg(e.subscription_id ORDER BY e.k) AS subs,
           array_agg(e.currency ORDER BY e.k) AS currencies, array_agg(e.at ORDER BY e.k) AS ats,
           array_agg(e.plan ORDER BY e.k) AS plans
      INTO g
      FROM unnest(et, ea, es, ecurrency, eat, eplan, einvoice) WITH ORDINALITY
           AS e(tenant_id, account_id, subscription_id, currency, at, plan, invoice_id, k)
     WHERE e.invoice_id IS NULL;
    IF g.ks IS NOT NULL THEN
        opened := subscription.open_invoices_of(g.tenants, g.accounts, g.subs, g.currencies, g.ats, g.plans, NULL);
        FOR o IN 1 .. cardinality(g.ks) LOOP
            einvoice[g.ks[o]] := opened[o];
        END LOOP;
    END IF;
    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description,
            invoice_id)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description, einvoice[l.event]
      FROM unnest(lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription, levent) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, addon_batch_id, amount, currency, period, item, plan, description,
                event, n)
     ORDER BY l.n
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- U3: their usage counters close with the new periods
    PERFORM subscription.open_usage(m.tenant_id, m.account_id)
       FROM (SELECT DISTINCT m.tenant_id, m.account_id FROM unnest(metered) AS m ORDER BY m.tenant_id, m.account_id) AS m;
END
$$;

COMMENT ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) IS
'Internal: one group of common renewals, set-based: one UPDATE moving the periods, one INSERT of the charges';

-- end of invoices opened and totalled over tenants (issue 18)

-- Citus: create_account(), distribute() (issue 17, docs/citus.md) ---------
-- A new account with its tenant key, in one INSERT that names it: on Citus
-- the coordinator routes the row by tenant_id, which an INSERT that leaves
-- it to fill_tenant_id() does not give (a root account is its own tenant,
-- by an id the sequence has not issued yet).  On a single server the same
-- as an INSERT into account.
CREATE FUNCTION subscription.create_account(name text, parent_id bigint DEFAULT NULL,
                                            billing_anchor timestamptz DEFAULT NULL,
                                            managed boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
-- the caller may insert accounts (grant_application); the id comes from the
-- account's own sequence, which it need not use
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint := pg_catalog.nextval('subscription.account_id_seq');
    tenant bigint := new_id;
BEGIN
    IF create_account.name IS NULL THEN
        RAISE EXCEPTION 'argument "name" of create_account() must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF create_account.parent_id IS NOT NULL THEN
        -- K7: a sub-account is of its parent's tenant
        SELECT a.tenant_id INTO tenant FROM subscription.account AS a WHERE a.id = create_account.parent_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'parent account % does not exist', create_account.parent_id
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    INSERT INTO subscription.account (tenant_id, id, name, parent_id, billing_anchor, managed)
    VALUES (tenant, new_id, create_account.name, create_account.parent_id, create_account.billing_anchor,
            coalesce(create_account.managed, false));
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.create_account(text, bigint, timestamptz, boolean) IS
'A new account (a sub-account of parent_id, K7) with its tenant key; its id';

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
    -- the rows are in the shards now; the tables themselves keep none (once
    -- no local table references them).  In replica mode: this TRUNCATE
    -- removes copies, which the guards' and history's TRUNCATE triggers
    -- must not take for a tenant's
    role_before := pg_catalog.current_setting('session_replication_role');
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

REVOKE ALL ON FUNCTION subscription.catalog_reads_tenants() FROM PUBLIC;
-- The rows of account (its sub-accounts) or ledger (the lines of a charge)
-- that name a row, read with the latest snapshot as a foreign key's check
-- reads them (src/references.c): the references that are not foreign keys
-- are then kept under REPEATABLE READ too.  In the tenant given (on Citus,
-- the statement of a trigger on a shard), or in every tenant when NULL (a
-- single server, where a sub-account may have been moved under an account
-- of another tenant).
CREATE FUNCTION subscription.self_referrers(relation text, id bigint, in_tenant bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'self_referrers'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.self_referrers(text, bigint, bigint) IS
'Internal (C): the sub-accounts of an account, or the lines of a charge, read with the latest snapshot, in a tenant or all';


-- history in its tenant: write_history() is given it
DROP FUNCTION subscription.write_history(text, bigint, bigint, jsonb);
CREATE FUNCTION subscription.write_history(operation text, account_id bigint, subscription_id bigint, details jsonb,
                                           in_tenant bigint DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'write_history'
LANGUAGE C;

COMMENT ON FUNCTION subscription.write_history(text, bigint, bigint, jsonb, bigint) IS
'Internal (C): write one history row, with the actor and the database roles (R8), in its tenant; the extension''s own functions only';

REVOKE ALL ON FUNCTION subscription.write_history(text, bigint, bigint, jsonb, bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION subscription.keep_limited_tables()
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

CREATE OR REPLACE FUNCTION subscription.forget_dropped_tables()
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

CREATE OR REPLACE FUNCTION subscription.role_rights(kind text)
RETURNS TABLE (object_type text, object text, privileges text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    application_routines text[] := '{subscribe,set_quantity,change_plan,change_cycle,set_renewal,cancel,
        cancel_account,close_account,end_early,purchase_addon,cancel_addon,license_consume,license_release,licenses_left,
        apply_downgrade,preview_change_plan,preview_set_quantity,preview_purchase_addon,credit_balance,usage,
        bundle_into_suite,preview_bundle_into_suite,
        effective_limit,current_actor,calling_role,may_read,coupon_discount,tier_for_hosts,prorate_refund,
        cycle_key,is_valid_cycle,renewal_options,plan_tiers,round_money,find_price,period_price,nth_period,
        cycle_text,sold_cycles,unknown_code,require_quantity,require_cycle,set_default,accept_terms,terms_in_effect,
        renewal_terms,plan_version_or_current,next_plan,create_account,pause,resume,
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
                     -- granting, and writing history, are for the extension's owner alone
                     ELSE p.proname !~ '^((grant|revoke)_(application|backoffice|restore)|change_rights|set_role_kind|write_history|write_events?|insert_events)$' END
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

CREATE OR REPLACE FUNCTION subscription.check_reference()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the logical table, from the trigger's argument (issue 17)
    IF TG_ARGV[0] = 'account' THEN
        -- K7: in the tenant first, the one statement Citus runs on a shard;
        -- on a single server a parent set later may be of another tenant
        PERFORM FROM subscription.account AS a
         WHERE a.tenant_id = NEW.tenant_id AND a.id = NEW.parent_id FOR KEY SHARE;
        IF NOT FOUND AND NOT subscription.distributed() THEN
            PERFORM FROM subscription.account AS a WHERE a.id = NEW.parent_id FOR KEY SHARE;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'parent account % does not exist', NEW.parent_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Account %s names it as its parent (parent_id).', NEW.id),
                      TABLE = 'account', SCHEMA = 'subscription';
        END IF;
    ELSE
        PERFORM FROM subscription.ledger AS l
         WHERE l.tenant_id = NEW.tenant_id AND l.id = NEW.charge_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger line % does not exist', NEW.charge_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Ledger line %s names it as its charge (charge_id).', NEW.id),
                      TABLE = 'ledger', SCHEMA = 'subscription';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION subscription.refuse_delete_in_use()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the deleter needs no right on the ledger
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    what text;
    held text[];
    hint text;
    ledger_lines bigint;
    -- the logical table, from the trigger's argument (issue 17: a shard's
    -- name is not its table's)
    logical text := TG_ARGV[0];
    tenants_readable boolean := true;
    tenant_rows bigint;
BEGIN
    IF logical IN ('plan', 'plan_price', 'addon', 'addon_price', 'terms') THEN
        -- each placement of the catalog checks the catalog, and the
        -- coordinator's the tenant tables too (issue 17)
        tenants_readable := subscription.catalog_reads_tenants();
    END IF;
    CASE logical
    WHEN 'account' THEN
        PERFORM FROM subscription.account AS a WHERE a.tenant_id = OLD.tenant_id AND a.id = OLD.id FOR UPDATE;
        what := format('account %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l
         WHERE l.tenant_id = OLD.tenant_id AND l.account_id = OLD.id;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'active subscription', 'active subscriptions')
               FROM subscription.subscription AS s
              WHERE s.tenant_id = OLD.tenant_id AND s.account_id = OLD.id AND s.status = 'active'),
            (SELECT subscription.count_phrase(count(*), 'ended subscription', 'ended subscriptions')
               FROM subscription.subscription AS s
              WHERE s.tenant_id = OLD.tenant_id AND s.account_id = OLD.id AND s.status <> 'active'),
            (SELECT subscription.count_phrase(count(*), 'member', 'members')
               FROM subscription.member AS m WHERE m.tenant_id = OLD.tenant_id AND m.account_id = OLD.id),
            subscription.count_phrase(subscription.self_referrers('account', OLD.id,
                                                                   CASE WHEN subscription.distributed() THEN OLD.tenant_id END),
                                      'sub-account', 'sub-accounts'),
            (SELECT subscription.count_phrase(count(*), 'archived row', 'archived rows')
               FROM subscription.trimmed AS t WHERE t.tenant_id = OLD.tenant_id AND t.account_id = OLD.id)];
        hint := 'Close it with subscription.close_account(); subscription.erase_account() then removes its personal data and keeps the ledger.';
    WHEN 'subscription' THEN
        what := format('subscription %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l
         WHERE l.tenant_id = OLD.tenant_id AND l.subscription_id = OLD.id;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'add-on batch', 'add-on batches')
               FROM subscription.addon_batch AS b WHERE b.tenant_id = OLD.tenant_id AND b.subscription_id = OLD.id),
            (SELECT subscription.count_phrase(count(*), 'license', 'licenses')
               FROM subscription.license AS x WHERE x.tenant_id = OLD.tenant_id AND x.subscription_id = OLD.id)];
        hint := 'End it with subscription.cancel() or subscription.end_early(), or close its account; the ledger keeps its lines.';
    WHEN 'addon_batch' THEN
        what := format('add-on batch %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l
         WHERE l.tenant_id = OLD.tenant_id AND l.addon_batch_id = OLD.id;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'End it with subscription.cancel_addon(); the ledger keeps its lines.';
    WHEN 'ledger' THEN
        what := format('ledger line %s', OLD.id);
        ledger_lines := subscription.self_referrers('ledger', OLD.id, OLD.tenant_id);
        held := ARRAY[subscription.count_phrase(ledger_lines, 'line that gives back or pays it', 'lines that give back or pay it')];
        hint := 'The ledger is a record: correct it with a new line.';
    WHEN 'plan' THEN
        what := format('plan "%s"', OLD.code);
        IF tenants_readable THEN
            SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l WHERE l.plan = OLD.code;
            SELECT count(*) INTO tenant_rows FROM subscription.subscription AS s
             WHERE s.plan = OLD.code OR s.pending_plan = OLD.code OR s.migrate_to = OLD.code;
        END IF;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            subscription.count_phrase(tenant_rows, 'subscription', 'subscriptions'),
            (SELECT subscription.count_phrase(count(*), 'price', 'prices')
               FROM subscription.plan_price AS pp WHERE pp.plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'limit', 'limits')
               FROM subscription.plan_limit AS pl WHERE pl.plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'add-on', 'add-ons')
               FROM subscription.plan_addon AS pa WHERE pa.plan = OLD.code),
            -- Z3: the suite it is, or the suites it is in
            (SELECT subscription.count_phrase(count(*), 'suite component', 'suite components')
               FROM subscription.suite_component AS sc WHERE OLD.code IN (sc.suite_plan, sc.plan))];
        hint := CASE WHEN ledger_lines > 0
                     THEN 'A plan that was billed stays in the catalog: the ledger names it.'
                     ELSE 'Delete its prices, limits and add-ons first.' END;
    WHEN 'plan_price' THEN
        what := format('a price of plan "%s" in %s%s', OLD.plan, OLD.currency,
                       CASE WHEN OLD.tier IS NOT NULL THEN format(' (tier %s)', OLD.tier) ELSE '' END);
        -- the lines charged for this plan, in this currency, to a subscription of this cycle
        IF tenants_readable THEN
            SELECT count(*) INTO ledger_lines
              FROM subscription.ledger AS l
              JOIN subscription.subscription AS s ON s.tenant_id = l.tenant_id AND s.id = l.subscription_id
             WHERE l.plan = OLD.plan AND l.currency = OLD.currency
               AND l.addon_batch_id IS NULL
               AND subscription.cycle_key(s.cycle) = subscription.cycle_key(OLD.cycle);
        END IF;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'A price that was billed stays; change its amount, which applies from the next charge.';
    WHEN 'addon' THEN
        what := format('add-on "%s"', OLD.code);
        IF tenants_readable THEN
            SELECT count(*) INTO tenant_rows FROM subscription.addon_batch AS b WHERE b.addon = OLD.code;
        END IF;
        held := ARRAY[
            subscription.count_phrase(tenant_rows, 'batch', 'batches'),
            (SELECT subscription.count_phrase(count(*), 'price', 'prices')
               FROM subscription.addon_price AS ap WHERE ap.addon = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'plan', 'plans')
               FROM subscription.plan_addon AS pa WHERE pa.addon = OLD.code)];
        hint := 'An add-on that was sold stays in the catalog; delete the prices and plans of one that was not first.';
    WHEN 'addon_price' THEN
        what := format('a price of add-on "%s" in %s', OLD.addon, OLD.currency);
        IF tenants_readable THEN
            SELECT count(*) INTO ledger_lines
              FROM subscription.ledger AS l
              JOIN subscription.addon_batch AS b ON b.tenant_id = l.tenant_id AND b.id = l.addon_batch_id
             WHERE b.addon = OLD.addon AND l.currency = OLD.currency;
        END IF;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'A price that was billed stays; change its amount, which applies from the next charge.';
    WHEN 'terms' THEN
        -- Z11: who accepted a version is a record
        what := format('terms version "%s"', OLD.version);
        IF tenants_readable THEN
            SELECT count(*) INTO tenant_rows FROM subscription.terms_acceptance AS t WHERE t.version = OLD.version;
        END IF;
        held := ARRAY[subscription.count_phrase(tenant_rows, 'acceptance', 'acceptances')];
        hint := 'Terms that were accepted stay; publish a new version instead.';
    END CASE;
    held := array_remove(held, NULL);
    IF cardinality(held) > 0 THEN
        RAISE EXCEPTION '% cannot be deleted', what
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('It still has %s.',
                                  CASE WHEN cardinality(held) = 1 THEN held[1]
                                       ELSE array_to_string(held[1:cardinality(held) - 1], ', ')
                                            || ' and ' || held[cardinality(held)] END),
                  HINT = hint, TABLE = logical, SCHEMA = 'subscription';
    END IF;
    RETURN OLD;
END
$$;

CREATE OR REPLACE FUNCTION subscription.assign_default_license()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sub bigint;
BEGIN
    -- a restore copies the member's licenses with it (restored_copy)
    IF subscription.restored_copy('subscription.member_id_seq', NEW.id) THEN
        RETURN NULL;
    END IF;
    SELECT s.id INTO sub FROM subscription.subscription AS s
     WHERE s.tenant_id = NEW.tenant_id AND s.account_id = NEW.account_id AND s.is_default
       AND s.status = 'active';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        INSERT INTO subscription.license (tenant_id, subscription_id, member_id) VALUES (NEW.tenant_id, sub, NEW.id);
    EXCEPTION WHEN check_violation THEN
        RAISE WARNING 'member % was created without a license', NEW.id
            USING DETAIL = SQLERRM,
                  HINT = format('Raise the quantity of default subscription %s, or release a license.', sub);
    END;
    RETURN NULL;
END
$$;

-- the limit of an account of a tenant (issue 17: on Citus, routed to its shard group)
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

CREATE OR REPLACE FUNCTION subscription.limit_catalog_version()
RETURNS SETOF bigint[]
LANGUAGE sql STABLE PARALLEL SAFE
-- one row; a set so that it is inlined where it is read (FROM ... AS c
-- (version)): the guard's cached plan reads the catalog, with no call
BEGIN ATOMIC
    SELECT v.version FROM subscription.limit_catalog_versions AS v;
END;


CREATE OR REPLACE FUNCTION subscription.limit_of(tenant_id bigint, account_id bigint, feature text)
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
CREATE OR REPLACE FUNCTION subscription.limit_of(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.limit_of(subscription.tenant_of('account', limit_of.account_id), limit_of.account_id, limit_of.feature);
END
$$;

DROP FUNCTION subscription.counter_limit(bigint, text, bigint, bigint[], bigint[]);
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

REVOKE ALL ON FUNCTION subscription.limit_of(bigint, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.counter_limit(bigint, text, bigint, bigint[], bigint[], bigint) FROM PUBLIC;

DROP FUNCTION subscription.self_referrers(text, bigint);
REVOKE ALL ON FUNCTION subscription.self_referrers(text, bigint, bigint) FROM PUBLIC;

REVOKE ALL ON FUNCTION subscription.create_account(text, bigint, timestamptz, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.distribute() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.distribution_plan() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.distributed() FROM PUBLIC;
-- the roles already given their rights get create_account()
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;

-- issue 18: renew_common_group rounds each price once per key (round_money
-- in its prices and addon_prices), not once per charge line
CREATE OR REPLACE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    joins text[];
    due subscription.subscription;
    metered subscription.subscription[] := '{}';
    -- the charge lines, in renewal order
    lt bigint[]; la bigint[]; ls bigint[]; lb bigint[]; lamount numeric[]; lcurrency text[];
    lperiod tstzrange[]; litem text[]; lplan text[]; ldescription text[];
    -- their billing events, in the order of their first lines, and invoices
    et bigint[]; ea bigint[]; es bigint[]; ecurrency text[]; eat timestamptz[]; eplan text[]; einvoice bigint[];
    -- the billing event of each line, whether it is the event's first
    levent bigint[];
    lfirst boolean[];
    g record;
    opened bigint[];
BEGIN
    -- U3: the ending periods' usage, billed in arrears as renew_period
    -- bills it (bill_usage: usage_due's pricing), in renewal order
    FOR due IN SELECT x.* FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)
               JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id
              WHERE x.plan IN (SELECT up.plan FROM subscription.plan_usage_price AS up)
              ORDER BY r.k LOOP
        PERFORM subscription.bill_usage(due, upper(due.period));
        metered := metered || due;
    END LOOP;
    -- the periods move (renew_period's common renewal), in the order given
    joins := ARRAY[current_setting('enable_hashjoin'), current_setting('enable_mergejoin')];
    PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;
    PERFORM set_config('enable_hashjoin', joins[1], true), set_config('enable_mergejoin', joins[2], true);

    -- each subscription's plan line, then its batches', in renewal order;
    -- each price rounded once per key (round_money), not once per line
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS MATERIALIZED (
        SELECT d.plan, d.cycle, d.quantity, d.plan_version, subscription.round_money(pp.amount, pp.currency) AS amount,
               pp.currency
          FROM (SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
                       s.plan, s.cycle, s.quantity, s.plan_version
                  FROM s) AS d
          CROSS JOIN LATERAL subscription.period_price(d.plan, d.cycle, d.quantity, d.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS MATERIALIZED (
        SELECT d.addon, d.cycle, d.quantity, subscription.round_money(ap.amount, ap.currency) AS amount, ap.currency
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity
                  FROM batches AS b) AS d
          CROSS JOIN LATERAL subscription.addon_period_price(d.addon, d.cycle, d.quantity) AS ap)
    SELECT array_agg(l.tenant_id ORDER BY l.k, l.batch_order), array_agg(l.account_id ORDER BY l.k, l.batch_order),
           array_agg(l.subscription_id ORDER BY l.k, l.batch_order), array_agg(l.addon_batch_id ORDER BY l.k, l.batch_order),
           array_agg(l.amount ORDER BY l.k, l.batch_order), array_agg(l.currency ORDER BY l.k, l.batch_order),
           array_agg(l.period ORDER BY l.k, l.batch_order), array_agg(l.item ORDER BY l.k, l.batch_order),
           array_agg(l.plan ORDER BY l.k, l.batch_order), array_agg(l.description ORDER BY l.k, l.batch_order)
      INTO lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, p.amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, s.cycle, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT s.k, b.id, s.tenant_id, s.account_id, s.id, b.id,
                   ap.amount, ap.currency, s.period, 'addon', s.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, s.cycle)
              FROM s
              JOIN batches AS b ON b.k = s.k
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l;
    -- I1, I2: the invoice of each billing event (a subscription's lines at
    -- the period's start, in a currency), as invoice_line would find or
    -- open it for the event's first line: one this transaction opened, or
    -- new ones, opened set-based over the group's tenants
    -- (open_invoices_of), numbered in the lines' order; the lines name
    -- them (issue 18)
    SELECT array_agg(l.event ORDER BY l.n), array_agg(l.n = l.first ORDER BY l.n) INTO levent, lfirst
      FROM (SELECT l.n, l.first, dense_rank() OVER (ORDER BY l.first) AS event
              FROM (SELECT l.n, min(l.n) OVER (PARTITION BY l.tenant_id, l.account_id, l.subscription_id, l.currency,
                                                            lower(l.period)) AS first
                      FROM unnest(lt, la, ls, lcurrency, lperiod) WITH ORDINALITY
                           AS l(tenant_id, account_id, subscription_id, currency, period, n)) AS l) AS l;
    SELECT array_agg(l.tenant_id ORDER BY l.n), array_agg(l.account_id ORDER BY l.n),
           array_agg(l.subscription_id ORDER BY l.n), array_agg(l.currency ORDER BY l.n),
           array_agg(lower(l.period) ORDER BY l.n), array_agg(l.plan ORDER BY l.n),
           array_agg((SELECT i.id FROM subscription.invoice_record AS i
                       WHERE i.tenant_id = l.tenant_id AND i.account_id = l.account_id AND i.at = lower(l.period)
                         AND i.currency = l.currency AND i.subscription_id = l.subscription_id
                         AND i.corrects_invoice_id IS NULL AND i.xact = pg_current_xact_id()
                       ORDER BY i.id DESC LIMIT 1) ORDER BY l.n)
      INTO et, ea, es, ecurrency, eat, eplan, einvoice
      FROM unnest(lt, la, ls, lcurrency, lperiod, lplan, lfirst) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, currency, period, plan, first, n)
     -- each event's first line
     WHERE l.first;
    -- the events without one: their invoices opened by one call over
    -- every tenant of the group, in the order of the events
    SELECT array_agg(e.k ORDER BY e.k) AS ks, array_agg(e.tenant_id ORDER BY e.k) AS tenants,
           array_agg(e.account_id ORDER BY e.k) AS accounts, array_agg(e.subscription_id ORDER BY e.k) AS subs,
           array_agg(e.currency ORDER BY e.k) AS currencies, array_agg(e.at ORDER BY e.k) AS ats,
           array_agg(e.plan ORDER BY e.k) AS plans
      INTO g
      FROM unnest(et, ea, es, ecurrency, eat, eplan, einvoice) WITH ORDINALITY
           AS e(tenant_id, account_id, subscription_id, currency, at, plan, invoice_id, k)
     WHERE e.invoice_id IS NULL;
    IF g.ks IS NOT NULL THEN
        opened := subscription.open_invoices_of(g.tenants, g.accounts, g.subs, g.currencies, g.ats, g.plans, NULL);
        FOR o IN 1 .. cardinality(g.ks) LOOP
            einvoice[g.ks[o]] := opened[o];
        END LOOP;
    END IF;
    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description,
            invoice_id)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description, einvoice[l.event]
      FROM unnest(lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription, levent) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, addon_batch_id, amount, currency, period, item, plan, description,
                event, n)
     ORDER BY l.n
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- U3: their usage counters close with the new periods
    PERFORM subscription.open_usage(m.tenant_id, m.account_id)
       FROM (SELECT DISTINCT m.tenant_id, m.account_id FROM unnest(metered) AS m ORDER BY m.tenant_id, m.account_id) AS m;
END
$$;
-- The limit guard keeps the catalog's limit version between statements (issue 21, docs/benchmarks.md) --

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

REVOKE ALL ON FUNCTION subscription.limit_catalog_invalidates() FROM PUBLIC;
-- the roles already given their rights get limit_catalog_invalidates()
-- issue 20: record_payment's history rows (the invoice's opening, the
-- payment, the invoice's status) in one statement, by write_histories():
-- one call of history's statement trigger and one write of their events
-- instead of three.  invoice_status_history and announce_invoice split in
-- what their rows are (invoice_status_details, invoice_announcement) and
-- the writing; settle_invoice writes its caller's rows with its own;
-- invoice_for_change may leave the opening to its caller.  end_past_due
-- refreshes the account's subscriptions only when a freeze of its dunning
-- ends.
CREATE FUNCTION subscription.write_histories(operations text[], account_id bigint, subscription_id bigint,
                                             details jsonb[], in_tenant bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'write_histories'
LANGUAGE C;

COMMENT ON FUNCTION subscription.write_histories(text[], bigint, bigint, jsonb[], bigint) IS
'Internal (C): write several history rows of one account and subscription, operation k with details k, in one statement (R8); the extension''s own functions only';

REVOKE ALL ON FUNCTION subscription.write_histories(text[], bigint, bigint, jsonb[], bigint) FROM PUBLIC;

CREATE OR REPLACE FUNCTION subscription.role_rights(kind text)
RETURNS TABLE (object_type text, object text, privileges text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    application_routines text[] := '{subscribe,set_quantity,change_plan,change_cycle,set_renewal,cancel,
        cancel_account,close_account,end_early,purchase_addon,cancel_addon,license_consume,license_release,licenses_left,
        apply_downgrade,preview_change_plan,preview_set_quantity,preview_purchase_addon,credit_balance,usage,
        bundle_into_suite,preview_bundle_into_suite,
        effective_limit,current_actor,calling_role,may_read,coupon_discount,tier_for_hosts,prorate_refund,
        cycle_key,is_valid_cycle,renewal_options,plan_tiers,round_money,find_price,period_price,nth_period,
        cycle_text,sold_cycles,unknown_code,require_quantity,require_cycle,set_default,accept_terms,terms_in_effect,
        renewal_terms,plan_version_or_current,next_plan,create_account,pause,resume,
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
                     -- granting, and writing history, are for the extension's owner alone
                     ELSE p.proname !~ '^((grant|revoke)_(application|backoffice|restore)|change_rights|set_role_kind|write_histor(y|ies)|write_events?|insert_events)$' END
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

CREATE FUNCTION subscription.invoice_status_details(i subscription.invoice_record, new_status text, at timestamptz,
                                                    extra jsonb, at_commit boolean)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT at_commit AND NOT i.announced THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                              'status', jsonb_build_object('old', CASE WHEN at_commit THEN 'open' ELSE i.status END,
                                                           'new', new_status),
                              'total', i.total, 'paid', i.paid, 'currency', i.currency, 'at', at) || extra;
END
$$;

COMMENT ON FUNCTION subscription.invoice_status_details(subscription.invoice_record, text, timestamptz, jsonb, boolean) IS
'Internal: the details of the history row of an invoice''s change of status, NULL for an invoice of this transaction not yet announced (I3, I8)';


CREATE OR REPLACE FUNCTION subscription.invoice_status_history(i subscription.invoice_record, new_status text, at timestamptz,
                                                    extra jsonb, at_commit boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    details jsonb;
BEGIN
    PERFORM subscription.require_arguments('invoice_status_history', '{i,new_status,at,extra,at_commit}',
        ARRAY[(i).id IS NULL, new_status IS NULL, at IS NULL, extra IS NULL, at_commit IS NULL]);
    details := subscription.invoice_status_details(i, new_status, at, extra, at_commit);
    IF details IS NOT NULL THEN
        PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id, details, i.tenant_id);
    END IF;
END
$$;

CREATE FUNCTION subscription.invoice_announcement(tenant_id bigint, invoice_id bigint,
                                                  OUT account_id bigint, OUT subscription_id bigint,
                                                  OUT operations text[], OUT details jsonb[])
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    lines bigint;
BEGIN
    operations := '{}';
    details := '{}';
    -- once: a restore copies rows already announced, and announces
    -- without history the invoices of a dump from before 1.1
    UPDATE subscription.invoice_record AS r SET announced = true
     WHERE r.tenant_id = invoice_announcement.tenant_id AND r.id = invoice_announcement.invoice_id AND NOT r.announced
    RETURNING * INTO i;
    IF NOT FOUND OR subscription.restoring_role() THEN
        RETURN;
    END IF;
    account_id := i.account_id;
    subscription_id := i.subscription_id;
    lines := (SELECT count(*) FROM subscription.ledger AS l
               WHERE l.tenant_id = invoice_announcement.tenant_id AND l.invoice_id = invoice_announcement.invoice_id);
    operations := ARRAY['invoice_open'];
    details := ARRAY[jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                                        'currency', i.currency, 'corrects_invoice_id', i.corrects_invoice_id,
                                        'due_at', i.due_at, 'total', i.total, 'lines', lines)];
    IF i.status <> 'open' THEN
        operations := operations || 'invoice_status'::text;
        details := details || subscription.invoice_status_details(i, i.status,
            CASE i.status WHEN 'paid' THEN coalesce((SELECT max(p.at) FROM subscription.payment AS p
                                                      WHERE p.tenant_id = invoice_announcement.tenant_id
                                                        AND p.invoice_id = invoice_announcement.invoice_id), i.at)
                          ELSE i.at END,
            CASE WHEN i.status = 'void' THEN
                jsonb_build_object('reason', i.void_reason, 'correcting_invoice_id',
                                   (SELECT c.id FROM subscription.invoice_record AS c
                                     WHERE c.tenant_id = invoice_announcement.tenant_id
                                       AND c.corrects_invoice_id = invoice_announcement.invoice_id))
                 ELSE '{}' END,
            true);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.invoice_announcement(bigint, bigint) IS
'Internal: mark an invoice announced and return its opening''s history rows (and a status its transaction reached), once (I8)';


CREATE OR REPLACE FUNCTION subscription.announce_invoice(tenant_id bigint, invoice_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
BEGIN
    PERFORM subscription.require_arguments('announce_invoice', '{tenant_id,invoice_id}',
        ARRAY[tenant_id IS NULL, invoice_id IS NULL]);
    SELECT * INTO a FROM subscription.invoice_announcement(announce_invoice.tenant_id, announce_invoice.invoice_id);
    -- at the commit most were announced already (record_payment): no rows
    IF cardinality(a.operations) > 0 THEN
        PERFORM subscription.write_histories(a.operations, a.account_id, a.subscription_id, a.details,
                                             announce_invoice.tenant_id);
    END IF;
END
$$;

DROP FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz);
CREATE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL, before_operations text[] DEFAULT '{}',
                                            before_details jsonb[] DEFAULT '{}')
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
    operations text[] := coalesce(before_operations, '{}');
    details jsonb[] := coalesce(before_details, '{}');
    status_details jsonb;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    IF NOT FOUND THEN
        -- no invoice, no rows of it (record_payment, which gives rows, has it locked)
        RETURN NULL;
    END IF;
    new_status := subscription.invoice_status(i.status, i.total, i.paid);
    IF new_status IS DISTINCT FROM i.status THEN
        UPDATE subscription.invoice_record AS r SET status = new_status
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
        IF NOT quiet THEN
            status_details := subscription.invoice_status_details(i, new_status, coalesce(settle_invoice.at, i.at),
                                                                  '{}', false);
        END IF;
        IF status_details IS NOT NULL THEN
            operations := operations || 'invoice_status'::text;
            details := details || status_details;
        END IF;
    END IF;
    IF cardinality(operations) > 0 THEN
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
    END IF;
    IF new_status IS DISTINCT FROM i.status AND NOT quiet AND new_status = 'paid' AND i.subscription_id IS NOT NULL THEN
        PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
    END IF;
    RETURN new_status;
END
$$;

COMMENT ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz, text[], jsonb[]) IS
'Internal: an invoice''s status from its total and payments, its change recorded in history unless quiet, after the caller''s rows of it (I3)';


DROP FUNCTION subscription.invoice_for_change(text, bigint, bigint);
CREATE FUNCTION subscription.invoice_for_change(fn text, tenant bigint, invoice_id bigint, announce boolean DEFAULT true)
RETURNS subscription.invoice_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    owner bigint;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = invoice_for_change.tenant AND r.id = invoice_for_change.invoice_id FOR UPDATE;
    IF FOUND AND NOT i.announced AND announce IS NOT false THEN
        -- I8: opened in this transaction: its opening before the change's events
        PERFORM subscription.announce_invoice(i.tenant_id, i.id);
        SELECT * INTO i FROM subscription.invoice_record AS r WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    END IF;
    IF FOUND THEN
        RETURN i;
    END IF;
    owner := subscription.tenant_of_invoice(invoice_id);
    IF owner IS NULL THEN
        RAISE EXCEPTION 'invoice % does not exist', invoice_id USING ERRCODE = 'no_data_found';
    END IF;
    IF invoice_for_change.tenant IS NULL THEN
        RAISE EXCEPTION 'argument "tenant_id" of %() must not be null', fn USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RAISE EXCEPTION 'invoice % is not of tenant %', invoice_id, invoice_for_change.tenant
        USING ERRCODE = 'invalid_parameter_value',
              HINT = format('subscription.%s(invoice_id, ...) without the tenant finds it.', fn);
END
$$;

COMMENT ON FUNCTION subscription.invoice_for_change(text, bigint, bigint, boolean) IS
'Internal: an invoice of the tenant, locked (P0002 unless it exists, 22023 if another tenant''s)';


CREATE OR REPLACE FUNCTION subscription.record_payment(tenant_id bigint, invoice_id bigint, amount numeric, reference text,
                                            at timestamptz, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    earlier subscription.payment;
    excess numeric;
    credit_line bigint;
    new_id bigint;
    -- the history rows of the invoice written with its status's, in one
    -- statement (settle_invoice): its opening (I8), then the payment
    opening record;
    operations text[];
    details jsonb[];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_payment(bigint,bigint,numeric,text,timestamptz,text)', record_payment.tenant_id,
            pg_catalog.jsonb_build_array(record_payment.tenant_id, record_payment.invoice_id, record_payment.amount, record_payment.reference, record_payment.at, record_payment.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('record_payment', '{invoice_id,amount,reference,at}',
        ARRAY[invoice_id IS NULL, amount IS NULL, reference IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('record_payment', tenant_id, invoice_id, false);
    -- I8: opened in this transaction: its opening before the payment's rows
    SELECT * INTO opening FROM subscription.invoice_announcement(i.tenant_id, i.id);
    operations := opening.operations;
    details := opening.details;
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    -- I5: once per reference
    SELECT * INTO earlier FROM subscription.payment AS p
     WHERE p.tenant_id = i.tenant_id AND p.reference = record_payment.reference;
    IF FOUND THEN
        IF earlier.invoice_id <> i.id THEN
            RAISE EXCEPTION 'payment reference "%" is already recorded for another invoice', reference
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Payment %s of invoice %s has it.', earlier.id, earlier.invoice_id);
        END IF;
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        RETURN earlier.id;
    END IF;
    PERFORM subscription.require_time('record_payment', at, false);
    IF currency IS NOT NULL AND currency <> i.currency THEN
        RAISE EXCEPTION 'invoice % is in %, not %', i.document_number, i.currency, currency
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Record the payment in the invoice''s currency.';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity' OR amount <> subscription.round_money(amount, i.currency) THEN
        RAISE EXCEPTION 'a payment must be a positive amount in the minor unit of %', i.currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, i.currency);
    IF btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment needs the provider''s reference' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status IN ('void', 'uncollectible') THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    excess := amount - greatest(i.total - i.paid, 0);
    IF excess > 0 THEN
        -- the credit's line may settle other invoices (invoice_totals): the
        -- opening before their rows
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        operations := '{}';
        details := '{}';
        INSERT INTO subscription.ledger AS l
               (tenant_id, account_id, kind, amount, currency, item, description, corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, 'credit', excess, i.currency, 'credit',
                format('overpayment of invoice %s (%s)', i.document_number, reference), i.id)
        RETURNING l.id INTO credit_line;
    END IF;
    INSERT INTO subscription.payment AS p
           (tenant_id, invoice_id, account_id, amount, currency, reference, payment_method_id, at, credit_line_id)
    VALUES (i.tenant_id, i.id, i.account_id, amount, i.currency, reference, i.payment_method_id, at, credit_line)
    RETURNING p.id INTO new_id;
    UPDATE subscription.invoice_record AS r SET paid = r.paid + amount - greatest(excess, 0)
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    operations := operations || 'payment'::text;
    details := details || jsonb_build_object('payment_id', new_id, 'invoice_id', i.id, 'amount', amount,
                                             'currency', i.currency, 'reference', reference,
                                             'credited', greatest(excess, 0));
    PERFORM subscription.settle_invoice(i.tenant_id, i.id, false, at, operations, details);
    RETURN new_id;
END
$$;

CREATE OR REPLACE FUNCTION subscription.end_past_due(tenant_id bigint, subscription_id bigint, invoice_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    froze boolean;
BEGIN
    -- looked up (and locked) before the UPDATE: an UPDATE of no row still
    -- fires the table's statement triggers (history, limits, seats), and
    -- most paid invoices are of a subscription that is not past due
    SELECT x.dunning_frozen INTO froze FROM subscription.subscription AS x
     WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
       AND x.status = 'past_due' AND x.past_due_invoice_id = end_past_due.invoice_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE subscription.subscription AS x
       SET status = 'active', past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           dunning_frozen = false
     WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
    RETURNING * INTO s;
    -- the account's limits and seat counters as they were (a freeze's
    -- end): only where its dunning froze the account.  Otherwise no
    -- subscription's freeze changed (freezing_subscription), and the
    -- UPDATE above already refreshed this one's counter and its account's
    -- limits (its status changed): a second UPDATE of the account's
    -- subscriptions, with their statement triggers, would change nothing
    IF froze THEN
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    END IF;
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION subscription.invoice_status_details(subscription.invoice_record, text, timestamptz, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_announcement(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz, text[], jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.invoice_for_change(text, bigint, bigint, boolean) FROM PUBLIC;
-- the roles already given their rights get the new functions
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;
-- distribute() of a database that holds rows (issue 17) ------------------
-- Its tables' enabled user triggers disabled for Citus's copy of their rows
-- into the shards, and enabled again in the same call.
CREATE OR REPLACE FUNCTION subscription.distribute()
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
-- issue 17: the service seats rebuilt tenant by tenant, every statement
-- naming the tenant (reseat_licenses), so that Citus plans them on the
-- tenant's shards
-- One tenant's subscriptions, every statement naming the tenant: on Citus
-- from a trigger on the tenant's shard of subscription (issue 17).
CREATE FUNCTION subscription.reseat_licenses(tenant_id bigint, subscription_ids bigint[])
RETURNS void
AS 'MODULE_PATHNAME', 'reseat_licenses'
LANGUAGE C STRICT;

COMMENT ON FUNCTION subscription.reseat_licenses(bigint, bigint[]) IS 'Internal (C): rebuild the service seats of one tenant''s subscriptions whose plan changed kind or product (R11)';
REVOKE ALL ON FUNCTION subscription.reseat_licenses(bigint, bigint[]) FROM PUBLIC;
CREATE OR REPLACE FUNCTION subscription.sync_service_seats()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its transition tables joined by hash, whatever statement fired it (a
-- renewal's UPDATE runs with nested loops alone: renew_common_group)
SET enable_hashjoin = on
AS $$
DECLARE
    ids bigint[];
    old_plans text[];
    new_plans text[];
    subs bigint[];
    tenants bigint[];
    sub_tenants bigint[];
    t bigint;
BEGIN
    -- the logical table, from the trigger's argument (issue 17)
    IF TG_ARGV[0] IN ('plan', 'suite_component') AND NOT subscription.catalog_reads_tenants() THEN
        -- a Citus worker's placement of the catalog: the coordinator's
        -- rebuilds the seats, on every shard
        RETURN NULL;
    ELSIF TG_ARGV[0] = 'plan' THEN
        -- the plans whose seat or product changed, read first
        SELECT array_agg(n.code) FILTER (WHERE subscription.seat_product(o.kind, o.product) IS DISTINCT FROM
                                                subscription.seat_product(n.kind, n.product)),
               array_agg(n.code) FILTER (WHERE o.product IS DISTINCT FROM n.product)
          INTO old_plans, new_plans
          FROM old_rows AS o JOIN new_rows AS n ON n.code = o.code;
        -- the plan's own subscriptions, and (Z3) those of the suites that include it
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s
             WHERE s.plan = ANY (old_plans)
                OR s.plan IN (SELECT sc.suite_plan FROM subscription.suite_component AS sc
                               WHERE sc.plan = ANY (new_plans))));
    ELSIF TG_ARGV[0] = 'suite_component' THEN
        -- Z3: a suite's licenses seat the products of the plans it includes
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(n.suite_plan) INTO old_plans FROM new_rows AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(o.suite_plan) INTO old_plans FROM old_rows AS o;
        ELSE
            SELECT array_agg(x.suite_plan) INTO old_plans
              FROM (SELECT o.suite_plan FROM old_rows AS o UNION SELECT n.suite_plan FROM new_rows AS n) AS x;
        END IF;
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s WHERE s.plan = ANY (old_plans)));
    ELSE
        -- the subscriptions whose plan changed, read into a local set first
        -- (on Citus a transition table is never joined with another table)
        SELECT array_agg(n.id ORDER BY n.tenant_id, n.id), array_agg(o.plan ORDER BY n.tenant_id, n.id),
               array_agg(n.plan ORDER BY n.tenant_id, n.id), array_agg(n.tenant_id ORDER BY n.tenant_id, n.id)
          INTO ids, old_plans, new_plans, tenants
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE o.plan IS DISTINCT FROM n.plan;
        FOR k IN 1 .. coalesce(cardinality(ids), 0) LOOP
            IF (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = old_plans[k])
               IS DISTINCT FROM
               (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = new_plans[k])
               -- Z3: from or to a suite, the included products may change
               OR EXISTS (SELECT FROM subscription.suite_component AS sc
                           WHERE sc.suite_plan IN (old_plans[k], new_plans[k])) THEN
                subs := subs || ids[k];
                sub_tenants := sub_tenants || tenants[k];
            END IF;
        END LOOP;
        -- tenant by tenant, each statement naming it (on Citus, this shard's)
        FOR t, ids IN SELECT u.t, array_agg(u.s ORDER BY u.s) FROM unnest(sub_tenants, subs) AS u (t, s)
                       GROUP BY 1 ORDER BY 1 LOOP
            PERFORM subscription.reseat_licenses(t, ids);
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

-- issue 17: a change of a held price or limit decided before the catalog
-- is written (change_price, change_limit), the one way on Citus, where a
-- plain UPDATE of a held row is refused; version_catalog_row lets them
-- close the held row at the plan's new version
-- The plan version from which a change of a current price or limit row of
-- the plan (over versions) takes effect: NULL when no active subscription
-- holds one of its versions (the row is changed in place); else the plan's
-- current version, or the next one when a subscription holds the current
-- one already.  A read of the tenant tables: on a single server from the
-- catalog's trigger (version_catalog_row), and from change_price() and
-- change_limit(), which on Citus decide on the coordinator (issue 17).
CREATE FUNCTION subscription.catalog_change_version(plan text, versions int4range)
RETURNS integer
LANGUAGE plpgsql STABLE
-- the extension's own bookkeeping: the catalog admin reads no subscription
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    current_version integer;
    held boolean;
    held_current boolean;
BEGIN
    SELECT p.version INTO current_version FROM subscription.plan AS p WHERE p.code = catalog_change_version.plan;
    SELECT coalesce(bool_or(true), false), coalesce(bool_or(h.version = current_version), false)
      INTO held, held_current
      FROM (SELECT s.plan_version AS version FROM subscription.subscription AS s
             WHERE s.plan = catalog_change_version.plan AND s.status = 'active'
            UNION ALL
            SELECT s.migrate_version FROM subscription.subscription AS s
             WHERE s.migrate_to = catalog_change_version.plan AND s.status = 'active') AS h
     WHERE catalog_change_version.versions @> h.version;
    IF NOT held THEN
        RETURN NULL;
    END IF;
    RETURN current_version + CASE WHEN held_current THEN 1 ELSE 0 END;
END
$$;

COMMENT ON FUNCTION subscription.catalog_change_version(text, int4range) IS
'Internal: the plan version from which a change of a current price or limit row takes effect, NULL when no subscription holds it (grandfathering)';

-- Grandfathering: a price or limit that a subscription holds (its plan at
-- the version it was sold, or the version a migration moves it to) is
-- never changed in place.  A plain UPDATE of it closes the row at a new
-- version of the plan and inserts the changed row from that version on:
-- new subscriptions are sold the plan's current version at once, and the
-- others keep theirs until they are migrated (migrate_subscriptions).  A
-- row no subscription holds is updated in place; a closed row is history,
-- which an UPDATE leaves (its row count says so).  An INSERT may not overlap the versions of a row of the same
-- price or limit (23505).  Renaming a plan is no change of price.
-- On Citus (issue 17) the placements of a reference table cannot all read
-- the holders: the change of a held row is decided on the coordinator by
-- change_price() or change_limit(), which make the plan's new version,
-- close the held row at it (an UPDATE of its versions alone, which this
-- trigger checks against the catalog) and insert the change from it on.
-- A plain UPDATE of a held row is refused there (55000), by the
-- coordinator's placement, which reads the holders.
CREATE OR REPLACE FUNCTION subscription.version_catalog_row()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the catalog admin reads no subscription
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the logical table, as a trigger argument: a Citus shard has another name
    logical text := TG_ARGV[0];
    what text := CASE logical WHEN 'plan_price' THEN 'price' ELSE 'limit' END;
    new_version integer;
BEGIN
    -- the new version's row, inserted below while the old one is still open
    IF TG_OP = 'INSERT' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    ELSIF TG_OP = 'INSERT' THEN
        -- no row lock (an INSERT makes no version; on Citus the rows of a
        -- reference table are copied through this trigger): two new rows
        -- of one price or limit from the same version meet in the unique
        -- index of their lower bound
        IF logical = 'plan_price' THEN
            PERFORM FROM subscription.plan_price AS pp
             WHERE pp.plan = NEW.plan AND pp.versions && NEW.versions
               AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(NEW.cycle)
               AND pp.tier IS NOT DISTINCT FROM NEW.tier;
        ELSE
            PERFORM FROM subscription.plan_limit AS pl
             WHERE pl.plan = NEW.plan AND pl.versions && NEW.versions AND pl.feature = NEW.feature;
        END IF;
        IF FOUND THEN
            RAISE EXCEPTION 'plan "%" already has this %', NEW.plan, what
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A row of the same %s holds versions overlapping %s.', what, NEW.versions),
                      HINT = format('UPDATE the current row of subscription.%s: a change that subscriptions hold makes a new version.', logical),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT upper_inf(OLD.versions) THEN
        -- a closed row is history: an UPDATE changes the current rows only
        RETURN NULL;
    END IF;
    -- change_price()/change_limit() close the held row at the plan's
    -- current version, which they made, its terms as they were, and
    -- insert the change from that version on; nothing else moves the
    -- versions, nor the plan
    IF NEW.plan IS DISTINCT FROM OLD.plan
       OR (NEW.versions IS DISTINCT FROM OLD.versions
           AND (upper_inf(NEW.versions) OR lower(NEW.versions) IS DISTINCT FROM lower(OLD.versions)
                OR upper(NEW.versions) IS DISTINCT FROM (SELECT p.version FROM subscription.plan AS p WHERE p.code = OLD.plan)
                OR to_jsonb(NEW) - 'versions' - 'limit_stamp' IS DISTINCT FROM to_jsonb(OLD) - 'versions' - 'limit_stamp')) THEN
        RAISE EXCEPTION 'the plan and versions of a % are not changed with its terms', what
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Update the terms of the current row alone; the new version is made for you.',
                  TABLE = logical, SCHEMA = 'subscription';
    ELSIF NEW.versions IS DISTINCT FROM OLD.versions THEN
        RETURN NEW;
    ELSIF subscription.distributed() THEN
        -- Citus: a worker's placement cannot read the holders; the
        -- coordinator's refuses the change of a held row, for every node
        IF subscription.catalog_reads_tenants()
           AND subscription.catalog_change_version(OLD.plan, OLD.versions) IS NOT NULL THEN
            RAISE EXCEPTION 'subscriptions hold this % of plan "%"', what, OLD.plan
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'On Citus a plain UPDATE changes prices and limits that no subscription holds.',
                      HINT = format('Change it with subscription.change_%s(), which makes the plan''s new version on every node.', what),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    -- serialize the version changes of a plan, and its migrations, by the
    -- plan's advisory lock, not a row lock on plan (issue 17); each
    -- statement below reads what the previous holder committed
    PERFORM subscription.lock_catalog('plan ' || OLD.plan, false);
    new_version := subscription.catalog_change_version(OLD.plan, OLD.versions);
    IF new_version IS NULL THEN
        RETURN NEW;
    END IF;
    -- the versions held keep the old row; the change makes a new version
    UPDATE subscription.plan AS p SET version = new_version WHERE p.code = OLD.plan AND p.version <> new_version;
    NEW.versions := int4range(new_version, NULL);
    IF logical = 'plan_price' THEN
        INSERT INTO subscription.plan_price SELECT (NEW::subscription.plan_price).*;
    ELSE
        INSERT INTO subscription.plan_limit SELECT (NEW::subscription.plan_limit).*;
    END IF;
    OLD.versions := int4range(lower(OLD.versions), new_version);
    RETURN OLD;
END
$$;

-- A change of a plan's current price or limit, versioned as a plain UPDATE
-- is on a single server (grandfathering, above), decided before the
-- catalog is written: the holders read (catalog_change_version), the plan's
-- new version made, the held row closed at it and the changed row inserted
-- from it on.  On Citus the one way to change a price or limit that
-- subscriptions hold (issue 17): no placement of the catalog reads a
-- tenant table.  change_price() and change_limit() return the plan version
-- the change takes effect from.  Their first step: the plan, locked as
-- version_catalog_row locks it (22004, 42704).
CREATE FUNCTION subscription.lock_catalog_plan(plan text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF plan IS NULL THEN
        RAISE EXCEPTION 'plan must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT EXISTS (SELECT FROM subscription.plan AS p WHERE p.code = lock_catalog_plan.plan) THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    PERFORM subscription.lock_catalog('plan ' || plan, false);
END
$$;

COMMENT ON FUNCTION subscription.lock_catalog_plan(text) IS
'Internal: change_price() and change_limit(): 22004 or 42704 unless the plan exists, then its catalog lock';

-- Then: the version the change of the current row (of versions; NULL: no
-- such row, P0002) takes effect from, the plan's new version made; NULL
-- when nobody holds the row (changed in place)
CREATE FUNCTION subscription.catalog_change_from(logical text, plan text, versions int4range)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    from_version integer;
BEGIN
    IF versions IS NULL THEN
        RAISE EXCEPTION 'plan "%" has no such current %', plan, CASE logical WHEN 'plan_price' THEN 'price' ELSE 'limit' END
            USING ERRCODE = 'no_data_found',
                  HINT = format('INSERT INTO subscription.%s adds one.', logical);
    END IF;
    -- on Citus the holders read over one connection per node, as the
    -- catalog's writes after it need (catalog_reads_tenants)
    PERFORM subscription.catalog_reads_tenants();
    from_version := subscription.catalog_change_version(plan, versions);
    UPDATE subscription.plan AS p SET version = from_version
     WHERE p.code = catalog_change_from.plan AND p.version <> from_version;
    RETURN from_version;
END
$$;

COMMENT ON FUNCTION subscription.catalog_change_from(text, text, int4range) IS
'Internal: change_price() and change_limit(): the plan version a change of a current row takes effect from (NULL: in place), made the plan''s';

CREATE FUNCTION subscription.change_price(plan text, cycle interval, amount numeric, tier integer DEFAULT NULL,
                                          per_license boolean DEFAULT NULL, currency text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_versions int4range;
    from_version integer;
    held subscription.plan_price;
BEGIN
    IF cycle IS NULL OR amount IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN cycle IS NULL THEN 'cycle' ELSE 'amount' END
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT (amount >= 0 AND amount < 'Infinity') THEN
        RAISE EXCEPTION 'amount % is not a price', amount
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A price is 0 or more, and finite.';
    ELSIF currency IS NOT NULL AND NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = change_price.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM subscription.lock_catalog_plan(plan);
    SELECT pp.versions INTO row_versions FROM subscription.plan_price AS pp
     WHERE pp.plan = change_price.plan AND upper_inf(pp.versions) AND pp.tier IS NOT DISTINCT FROM change_price.tier
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(change_price.cycle);
    from_version := subscription.catalog_change_from('plan_price', plan, row_versions);
    IF from_version IS NULL THEN
        UPDATE subscription.plan_price AS pp
           SET amount = change_price.amount, per_license = coalesce(change_price.per_license, pp.per_license),
               currency = coalesce(change_price.currency, pp.currency)
         WHERE pp.plan = change_price.plan AND pp.versions = row_versions AND pp.tier IS NOT DISTINCT FROM change_price.tier
           AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(change_price.cycle);
        RETURN lower(row_versions);
    END IF;
    -- the held row closed, the change from the new version on
    UPDATE subscription.plan_price AS pp SET versions = int4range(lower(row_versions), from_version)
     WHERE pp.plan = change_price.plan AND pp.versions = row_versions AND pp.tier IS NOT DISTINCT FROM change_price.tier
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(change_price.cycle)
    RETURNING pp.* INTO held;
    INSERT INTO subscription.plan_price (plan, cycle, tier, amount, per_license, currency, versions, trial)
    VALUES (held.plan, held.cycle, held.tier, change_price.amount, coalesce(change_price.per_license, held.per_license),
            coalesce(change_price.currency, held.currency), int4range(from_version, NULL), held.trial);
    RETURN from_version;
END
$$;

COMMENT ON FUNCTION subscription.change_price(text, interval, numeric, integer, boolean, text) IS
'Change the amount (and per_license, currency unless NULL) of a plan''s current price for a cycle and tier; subscriptions that hold it keep theirs (a new plan version). Returns the version it takes effect from';

CREATE FUNCTION subscription.change_limit(plan text, feature text, value bigint, per_license boolean DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_versions int4range;
    from_version integer;
    held subscription.plan_limit;
BEGIN
    IF feature IS NULL THEN
        RAISE EXCEPTION 'feature must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF value < 0 THEN
        RAISE EXCEPTION 'limit % is below 0', value
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A limit is 0 or more, or NULL: unlimited.';
    END IF;
    PERFORM subscription.lock_catalog_plan(plan);
    SELECT pl.versions INTO row_versions FROM subscription.plan_limit AS pl
     WHERE pl.plan = change_limit.plan AND upper_inf(pl.versions) AND pl.feature = change_limit.feature;
    from_version := subscription.catalog_change_from('plan_limit', plan, row_versions);
    IF from_version IS NULL THEN
        UPDATE subscription.plan_limit AS pl
           SET value = change_limit.value, per_license = coalesce(change_limit.per_license, pl.per_license)
         WHERE pl.plan = change_limit.plan AND pl.versions = row_versions AND pl.feature = change_limit.feature;
        RETURN lower(row_versions);
    END IF;
    -- the held row closed, the change from the new version on
    UPDATE subscription.plan_limit AS pl SET versions = int4range(lower(row_versions), from_version)
     WHERE pl.plan = change_limit.plan AND pl.versions = row_versions AND pl.feature = change_limit.feature
    RETURNING pl.* INTO held;
    INSERT INTO subscription.plan_limit (plan, feature, value, per_license, versions)
    VALUES (held.plan, held.feature, change_limit.value, coalesce(change_limit.per_license, held.per_license),
            int4range(from_version, NULL));
    RETURN from_version;
END
$$;

COMMENT ON FUNCTION subscription.change_limit(text, text, bigint, boolean) IS
'Change a plan''s current limit of a feature (value NULL: unlimited; per_license unless NULL); subscriptions that hold it keep theirs (a new plan version). Returns the version it takes effect from';
REVOKE ALL ON FUNCTION subscription.catalog_change_version(text, int4range) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.lock_catalog_plan(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.catalog_change_from(text, text, int4range) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.change_price(text, interval, numeric, integer, boolean, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.change_limit(text, text, bigint, boolean) FROM PUBLIC;
-- the roles already given their rights get the new functions
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;







-- issue 18 (h-ren4): the common renewals open each invoice with the total
-- of its lines (open_invoices_of's totals), and invoice_totals writes the
-- total of an invoice of this transaction only when the sum of its lines
-- differs from it (an UPDATE of a row its own transaction inserted checks
-- every foreign key of the row again)
DROP FUNCTION subscription.open_invoices_of(bigint[], bigint[], bigint[], text[], timestamptz[], text[], bigint[]);
CREATE FUNCTION subscription.open_invoices_of(tenant_ids bigint[], account_ids bigint[], subscription_ids bigint[],
                                              currencies text[], ats timestamptz[], plans text[], corrects bigint[],
                                              totals numeric[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(account_ids);
    terms interval := make_interval(days => coalesce(current_setting('subscription.payment_terms', true), '0')::integer);
    issuers text[];
    numbers bigint[];
    ids bigint[];
    methods bigint[];
    -- the series moved: tenant, issuer, last number taken
    st bigint[] := '{}';
    si text[] := '{}';
    sl bigint[] := '{}';
    tenant bigint;
    sub bigint;
    plan text;
    made record;
BEGIN
    PERFORM subscription.require_arguments('open_invoices_of', '{tenant_ids,account_ids,currencies,ats}',
        ARRAY[tenant_ids IS NULL, account_ids IS NULL, currencies IS NULL, ats IS NULL]);
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    IF cardinality(tenant_ids) <> n OR cardinality(currencies) <> n OR cardinality(ats) <> n
       OR cardinality(coalesce(subscription_ids, '{}')) NOT IN (0, n) OR cardinality(coalesce(plans, '{}')) NOT IN (0, n)
       OR cardinality(coalesce(corrects, '{}')) NOT IN (0, n) OR cardinality(coalesce(totals, '{}')) NOT IN (0, n) THEN
        RAISE EXCEPTION 'the arrays of open_invoices() must be of one length' USING ERRCODE = 'array_subscript_error';
    END IF;
    IF array_position(tenant_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'open_invoices_of(): every invoice must name its tenant' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    plans := coalesce(plans, array_fill(NULL::text, ARRAY[n]));
    FOR k IN 1 .. n LOOP
        IF plans[k] IS NULL AND subscription_ids[k] IS NOT NULL THEN
            -- scalars first: Citus fails to parse an array element
            -- assigned a query of a distributed table
            tenant := tenant_ids[k];
            sub := subscription_ids[k];
            plan := (SELECT s.plan FROM subscription.subscription AS s
                      WHERE s.tenant_id = tenant AND s.id = sub);
            plans[k] := plan;
        END IF;
    END LOOP;
    -- the issuer of each, and the method to charge: its account's default now
    SELECT array_agg(coalesce(p.product, '') ORDER BY e.k), array_agg(m.id ORDER BY e.k) INTO issuers, methods
      FROM unnest(plans, account_ids, tenant_ids) WITH ORDINALITY AS e(plan, account_id, tenant_id, k)
      LEFT JOIN subscription.plan AS p ON p.code = e.plan
      LEFT JOIN subscription.payment_method AS m
        ON m.tenant_id = ANY (tenant_ids) AND m.tenant_id = e.tenant_id AND m.account_id = e.account_id AND m.is_default;
    -- each series moved once by its count, in (tenant, issuer) order, so
    -- that concurrent openings lock them in one order
    FOR made IN
        INSERT INTO subscription.invoice_series AS x (tenant_id, issuer, last_number)
        SELECT c.tenant_id, c.issuer, c.taken
          FROM (SELECT e.tenant_id, e.issuer, count(*) AS taken
                  FROM unnest(tenant_ids, issuers) AS e(tenant_id, issuer)
                 GROUP BY e.tenant_id, e.issuer) AS c
         ORDER BY c.tenant_id, c.issuer
        ON CONFLICT ON CONSTRAINT invoice_series_pkey DO UPDATE SET last_number = x.last_number + excluded.last_number
        RETURNING x.tenant_id, x.issuer, x.last_number
    LOOP
        st := st || made.tenant_id;
        si := si || made.issuer;
        sl := sl || made.last_number;
    END LOOP;
    -- then the invoices of each series numbered in their order: the last
    -- number taken, less those after them
    SELECT array_agg(e.number ORDER BY e.k) INTO numbers
      FROM (SELECT e.k, s.last - count(*) OVER (PARTITION BY e.tenant_id, e.issuer ORDER BY e.k DESC) + 1 AS number
              FROM unnest(tenant_ids, issuers) WITH ORDINALITY AS e(tenant_id, issuer, k)
              JOIN unnest(st, si, sl) AS s(tenant_id, issuer, last)
                ON s.tenant_id = e.tenant_id AND s.issuer = e.issuer) AS e;
    -- one INSERT, its rows (and so RETURNING's) in the order given; on
    -- Citus from no distributed table, no subquery
    ids := '{}';
    FOR made IN
        INSERT INTO subscription.invoice_record AS i
               (tenant_id, account_id, subscription_id, issuer, number, at, currency, due_at, payment_method_id,
                corrects_invoice_id, total)
        SELECT e.tenant_id, e.account_id, e.subscription_id, e.issuer, e.number, e.at, e.currency,
               e.at + terms, e.method, e.corrects, coalesce(e.total, 0)
          FROM unnest(tenant_ids, account_ids, coalesce(subscription_ids, array_fill(NULL::bigint, ARRAY[n])), issuers,
                      numbers, ats, currencies, methods, coalesce(corrects, array_fill(NULL::bigint, ARRAY[n])),
                      coalesce(totals, array_fill(NULL::numeric, ARRAY[n])))
               WITH ORDINALITY AS e(tenant_id, account_id, subscription_id, issuer, number, at, currency, method, corrects,
                                    total, k)
         ORDER BY e.k
        RETURNING i.id, i.tenant_id, i.issuer, i.number
    LOOP
        ids := ids || made.id;
        IF (made.tenant_id, made.issuer, made.number)
           IS DISTINCT FROM (tenant_ids[cardinality(ids)], issuers[cardinality(ids)], numbers[cardinality(ids)]) THEN
            RAISE EXCEPTION 'open_invoices(): invoice % returned out of order', made.id USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;
    -- their history rows and events invoice.opened are written at the
    -- commit, once their lines are all there (invoice_opened, I8)
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.open_invoices_of(bigint[], bigint[], bigint[], text[], timestamptz[], text[], bigint[], numeric[]) IS
'Internal: new invoices of any tenants, numbered gapless in their issuers'' series in the order given, one INSERT moving the series and one of the invoices, each with the total of the lines to come if given (I1, I3; issue 18)';

REVOKE ALL ON FUNCTION subscription.open_invoices_of(bigint[], bigint[], bigint[], text[], timestamptz[], text[], bigint[], numeric[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION subscription.invoice_totals()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replica boolean := current_setting('session_replication_role') = 'replica';
    -- one UPDATE per tenant where the tables are distributed
    per_tenant boolean := subscription.distributed();
    t record;
    changed record;
    -- the invoices (by first line): whether of this transaction, their
    -- status, total and payments; the sums of the lines of those of this
    -- transaction; those to write, and the totals of those of this
    -- transaction
    ks bigint[];
    mine boolean[];
    statuses text[];
    was numeric[];
    paids numeric[];
    sum_tenants bigint[];
    sum_invoices bigint[];
    sum_totals numeric[];
    written bigint[];
    sums numeric[];
    -- the invoices whose status changes, by first line
    settle bigint[];
    k bigint;
BEGIN
    -- per group (every tenant, or one), by tenant in the order of its
    -- first line, its invoices in the order of theirs: each one's lines'
    -- sum, the time of its last line (what settle_invoice records),
    -- whether all are a restore's
    FOR t IN
        SELECT array_agg(DISTINCT x.tenant_id) AS tenant_set,
               array_agg(x.tenant_id ORDER BY x.tenant_first, x.first) AS tenants,
               array_agg(x.invoice_id ORDER BY x.tenant_first, x.first) AS invoices,
               array_agg(x.part ORDER BY x.tenant_first, x.first) AS parts,
               array_agg(x.at ORDER BY x.tenant_first, x.first) AS ats,
               array_agg(x.quiet ORDER BY x.tenant_first, x.first) AS quiets
          FROM (SELECT x.*, min(x.first) OVER (PARTITION BY x.tenant_id) AS tenant_first
                  FROM (SELECT n.tenant_id, n.invoice_id, min(n.id) AS first,
                               sum(subscription.line_amount(n.kind, n.amount)) AS part,
                               (array_agg(coalesce(lower(n.period), n.created_at) ORDER BY n.id DESC))[1] AS at,
                               bool_and(replica OR subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS quiet
                          FROM new_rows AS n
                         GROUP BY n.tenant_id, n.invoice_id) AS x) AS x
         GROUP BY CASE WHEN per_tenant THEN x.tenant_id END
         ORDER BY min(x.first)
    LOOP
        -- each invoice, whether this transaction opened it; then the sum
        -- of the lines of those it did, each statement naming its tenants
        -- (no correlated read: on Citus each runs on the tenant's shard,
        -- and the first's decision is the one the UPDATE follows)
        SELECT array_agg(x.k ORDER BY x.k), array_agg(x.mine ORDER BY x.k), array_agg(x.status ORDER BY x.k),
               array_agg(x.total ORDER BY x.k), array_agg(x.paid ORDER BY x.k)
          INTO ks, mine, statuses, was, paids
          FROM (SELECT d.k, i.xact = pg_current_xact_id() AS mine, i.status, i.total, i.paid
                  FROM unnest(t.tenants, t.invoices, t.quiets) WITH ORDINALITY AS d(tenant_id, invoice_id, quiet, k)
                  JOIN subscription.invoice_record AS i
                    ON i.tenant_id = ANY (t.tenant_set) AND i.tenant_id = d.tenant_id AND i.id = d.invoice_id
                 WHERE NOT d.quiet OR i.xact = pg_current_xact_id()) AS x;
        SELECT array_agg(l.tenant_id), array_agg(l.invoice_id), array_agg(l.total) INTO sum_tenants, sum_invoices, sum_totals
          FROM (SELECT l.tenant_id, l.invoice_id, sum(subscription.line_amount(l.kind, l.amount)) AS total
                  FROM subscription.ledger AS l
                 WHERE l.tenant_id = ANY (t.tenant_set)
                   AND l.invoice_id = ANY (ARRAY(SELECT t.invoices[m.k] FROM unnest(ks, mine) AS m(k, mine) WHERE m.mine))
                 GROUP BY l.tenant_id, l.invoice_id) AS l;
        -- written unless it holds that sum, in its scale too (0.00, not 0);
        -- the status of those left as they are
        SELECT coalesce(array_agg(x.k ORDER BY x.k) FILTER (WHERE x.write), '{}'),
               coalesce(array_agg(x.total ORDER BY x.k) FILTER (WHERE x.write), '{}'),
               coalesce(array_agg(x.k ORDER BY x.k)
                            FILTER (WHERE NOT x.write
                                      AND subscription.invoice_status(x.status, x.total, x.paid) IS DISTINCT FROM x.status),
                        '{}')
          INTO written, sums, settle
          FROM (SELECT x.*, x.total IS NULL OR x.total <> x.was OR scale(x.total) <> scale(x.was) AS write
                  FROM (SELECT x.k, x.status, x.paid, x.was, CASE WHEN x.mine THEN s.total END AS total
                          FROM unnest(ks, mine, statuses, was, paids) AS x(k, mine, status, was, paid)
                          LEFT JOIN unnest(sum_tenants, sum_invoices, sum_totals) AS s(tenant_id, invoice_id, total)
                            ON s.tenant_id = t.tenants[x.k] AND s.invoice_id = t.invoices[x.k]) AS x) AS x;
        FOR changed IN
            UPDATE subscription.invoice_record AS i
               SET total = coalesce(d.total, i.total + t.parts[d.k])
              FROM unnest(written, sums) AS d(k, total)
             WHERE i.tenant_id = ANY (t.tenant_set) AND i.tenant_id = t.tenants[d.k] AND i.id = t.invoices[d.k]
            RETURNING i.status, i.total, i.paid, d.k
        LOOP
            IF subscription.invoice_status(changed.status, changed.total, changed.paid) IS DISTINCT FROM changed.status THEN
                settle := settle || changed.k;
            END IF;
        END LOOP;
        FOREACH k IN ARRAY (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(settle) AS x) LOOP
            PERFORM subscription.settle_invoice(t.tenants[k], t.invoices[k], t.quiets[k], t.ats[k]);
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.invoice_totals() IS
'Trigger, per statement: the totals of the invoices of the statement''s ledger lines, and the status of those it changes (I2, I3)';

CREATE OR REPLACE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    joins text[];
    due subscription.subscription;
    metered subscription.subscription[] := '{}';
    -- the charge lines, in renewal order
    lt bigint[]; la bigint[]; ls bigint[]; lb bigint[]; lamount numeric[]; lcurrency text[];
    lperiod tstzrange[]; litem text[]; lplan text[]; ldescription text[];
    -- their billing events, in the order of their first lines, and invoices
    et bigint[]; ea bigint[]; es bigint[]; ecurrency text[]; eat timestamptz[]; eplan text[]; einvoice bigint[];
    -- the billing event of each line, whether it is the event's first;
    -- each event's lines' total
    levent bigint[];
    lfirst boolean[];
    etotal numeric[];
    g record;
    opened bigint[];
    written bigint;
BEGIN
    -- U3: the ending periods' usage, billed in arrears as renew_period
    -- bills it (bill_usage: usage_due's pricing), in renewal order
    FOR due IN SELECT x.* FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)
               JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id
              WHERE x.plan IN (SELECT up.plan FROM subscription.plan_usage_price AS up)
              ORDER BY r.k LOOP
        PERFORM subscription.bill_usage(due, upper(due.period));
        metered := metered || due;
    END LOOP;
    -- the periods move (renew_period's common renewal), in the order given
    joins := ARRAY[current_setting('enable_hashjoin'), current_setting('enable_mergejoin')];
    PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;
    PERFORM set_config('enable_hashjoin', joins[1], true), set_config('enable_mergejoin', joins[2], true);

    -- each subscription's plan line, then its batches', in renewal order;
    -- each price rounded once per key (round_money), not once per line
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS MATERIALIZED (
        SELECT d.plan, d.cycle, d.quantity, d.plan_version, subscription.round_money(pp.amount, pp.currency) AS amount,
               pp.currency
          FROM (SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
                       s.plan, s.cycle, s.quantity, s.plan_version
                  FROM s) AS d
          CROSS JOIN LATERAL subscription.period_price(d.plan, d.cycle, d.quantity, d.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS MATERIALIZED (
        SELECT d.addon, d.cycle, d.quantity, subscription.round_money(ap.amount, ap.currency) AS amount, ap.currency
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity
                  FROM batches AS b) AS d
          CROSS JOIN LATERAL subscription.addon_period_price(d.addon, d.cycle, d.quantity) AS ap)
    SELECT array_agg(l.tenant_id ORDER BY l.k, l.batch_order), array_agg(l.account_id ORDER BY l.k, l.batch_order),
           array_agg(l.subscription_id ORDER BY l.k, l.batch_order), array_agg(l.addon_batch_id ORDER BY l.k, l.batch_order),
           array_agg(l.amount ORDER BY l.k, l.batch_order), array_agg(l.currency ORDER BY l.k, l.batch_order),
           array_agg(l.period ORDER BY l.k, l.batch_order), array_agg(l.item ORDER BY l.k, l.batch_order),
           array_agg(l.plan ORDER BY l.k, l.batch_order), array_agg(l.description ORDER BY l.k, l.batch_order)
      INTO lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, p.amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, s.cycle, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT s.k, b.id, s.tenant_id, s.account_id, s.id, b.id,
                   ap.amount, ap.currency, s.period, 'addon', s.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, s.cycle)
              FROM s
              JOIN batches AS b ON b.k = s.k
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l;
    -- I1, I2: the invoice of each billing event (a subscription's lines at
    -- the period's start, in a currency), as invoice_line would find or
    -- open it for the event's first line: one this transaction opened, or
    -- new ones, opened set-based over the group's tenants
    -- (open_invoices_of), numbered in the lines' order; the lines name
    -- them (issue 18)
    SELECT array_agg(l.event ORDER BY l.n), array_agg(l.n = l.first ORDER BY l.n) INTO levent, lfirst
      FROM (SELECT l.n, l.first, dense_rank() OVER (ORDER BY l.first) AS event
              FROM (SELECT l.n, min(l.n) OVER (PARTITION BY l.tenant_id, l.account_id, l.subscription_id, l.currency,
                                                            lower(l.period)) AS first
                      FROM unnest(lt, la, ls, lcurrency, lperiod) WITH ORDINALITY
                           AS l(tenant_id, account_id, subscription_id, currency, period, n)) AS l) AS l;
    SELECT array_agg(e.total ORDER BY e.event) INTO etotal
      FROM (SELECT l.event, sum(subscription.line_amount('charge', l.amount)) AS total
              FROM unnest(levent, lamount) AS l(event, amount)
             GROUP BY l.event) AS e;
    SELECT array_agg(l.tenant_id ORDER BY l.n), array_agg(l.account_id ORDER BY l.n),
           array_agg(l.subscription_id ORDER BY l.n), array_agg(l.currency ORDER BY l.n),
           array_agg(lower(l.period) ORDER BY l.n), array_agg(l.plan ORDER BY l.n),
           array_agg((SELECT i.id FROM subscription.invoice_record AS i
                       WHERE i.tenant_id = l.tenant_id AND i.account_id = l.account_id AND i.at = lower(l.period)
                         AND i.currency = l.currency AND i.subscription_id = l.subscription_id
                         AND i.corrects_invoice_id IS NULL AND i.xact = pg_current_xact_id()
                       ORDER BY i.id DESC LIMIT 1) ORDER BY l.n)
      INTO et, ea, es, ecurrency, eat, eplan, einvoice
      FROM unnest(lt, la, ls, lcurrency, lperiod, lplan, lfirst) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, currency, period, plan, first, n)
     -- each event's first line
     WHERE l.first;
    -- the events without one: their invoices opened by one call over
    -- every tenant of the group, in the order of the events, each with the
    -- total of its lines, so that invoice_totals has none to write (its
    -- UPDATE of a row opened in this transaction would check every
    -- foreign key of the invoice again: issue 18)
    SELECT array_agg(e.k ORDER BY e.k) AS ks, array_agg(e.tenant_id ORDER BY e.k) AS tenants,
           array_agg(e.account_id ORDER BY e.k) AS accounts, array_agg(e.subscription_id ORDER BY e.k) AS subs,
           array_agg(e.currency ORDER BY e.k) AS currencies, array_agg(e.at ORDER BY e.k) AS ats,
           array_agg(e.plan ORDER BY e.k) AS plans, array_agg(etotal[e.k] ORDER BY e.k) AS totals
      INTO g
      FROM unnest(et, ea, es, ecurrency, eat, eplan, einvoice) WITH ORDINALITY
           AS e(tenant_id, account_id, subscription_id, currency, at, plan, invoice_id, k)
     WHERE e.invoice_id IS NULL;
    IF g.ks IS NOT NULL THEN
        opened := subscription.open_invoices_of(g.tenants, g.accounts, g.subs, g.currencies, g.ats, g.plans, NULL,
                                                g.totals);
        FOR o IN 1 .. cardinality(g.ks) LOOP
            einvoice[g.ks[o]] := opened[o];
        END LOOP;
    END IF;
    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description,
            invoice_id)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description, einvoice[l.event]
      FROM unnest(lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription, levent) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, addon_batch_id, amount, currency, period, item, plan, description,
                event, n)
     ORDER BY l.n
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- a line charged already: invoice_totals gave the invoices that have
    -- lines the sum of theirs; one opened for lines none of which was
    -- written has none, and no total
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < cardinality(lt) AND opened IS NOT NULL THEN
        UPDATE subscription.invoice_record AS i SET total = 0
         WHERE i.tenant_id = ANY (t) AND i.id = ANY (opened) AND i.total <> 0
           AND NOT EXISTS (SELECT FROM subscription.ledger AS l WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id);
    END IF;
    -- U3: their usage counters close with the new periods
    PERFORM subscription.open_usage(m.tenant_id, m.account_id)
       FROM (SELECT DISTINCT m.tenant_id, m.account_id FROM unnest(metered) AS m ORDER BY m.tenant_id, m.account_id) AS m;
END
$$;

COMMENT ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) IS
'Internal: one group of common renewals, set-based: one UPDATE moving the periods, one INSERT of the charges';

DROP TRIGGER ledger_invoice ON subscription.ledger;
-- only for a line that names no invoice, or a refund or credit of a charge
-- that names no corrected invoice: a line naming its invoice (the common
-- renewals', issue 18) has nothing to be given
CREATE TRIGGER ledger_invoice BEFORE INSERT ON subscription.ledger
    FOR EACH ROW
    WHEN (NEW.invoice_id IS NULL
          OR (NEW.corrects_invoice_id IS NULL AND NEW.charge_id IS NOT NULL AND NEW.kind IN ('refund', 'credit')))
    EXECUTE FUNCTION subscription.invoice_line();
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_invoice;

-- issue 18 (h-ren4): write_history and write_histories pin their
-- search_path, as every function
ALTER FUNCTION subscription.write_history(text, bigint, bigint, jsonb, bigint) SET search_path = pg_catalog, pg_temp;
ALTER FUNCTION subscription.write_histories(text[], bigint, bigint, jsonb[], bigint) SET search_path = pg_catalog, pg_temp;
CREATE OR REPLACE FUNCTION subscription.invoice_announcement(tenant_id bigint, invoice_id bigint,
                                                  OUT account_id bigint, OUT subscription_id bigint,
                                                  OUT operations text[], OUT details jsonb[])
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    lines bigint;
    total numeric;
BEGIN
    operations := '{}';
    details := '{}';
    -- once: a restore copies rows already announced, and announces
    -- without history the invoices of a dump from before 1.1
    UPDATE subscription.invoice_record AS r SET announced = true
     WHERE r.tenant_id = invoice_announcement.tenant_id AND r.id = invoice_announcement.invoice_id AND NOT r.announced
    RETURNING * INTO i;
    IF NOT FOUND OR subscription.restoring_role() THEN
        RETURN;
    END IF;
    account_id := i.account_id;
    subscription_id := i.subscription_id;
    -- its lines, and their total: its total once invoice_totals has
    -- counted them, and none before them (an opening written at the end of
    -- its statement: SET CONSTRAINTS invoice_record_opened IMMEDIATE),
    -- though renew_common_group opens an invoice with the total of the
    -- lines it writes next (issue 18)
    SELECT count(*), coalesce(sum(subscription.line_amount(l.kind, l.amount)), 0) INTO lines, total
      FROM subscription.ledger AS l
     WHERE l.tenant_id = invoice_announcement.tenant_id AND l.invoice_id = invoice_announcement.invoice_id;
    operations := ARRAY['invoice_open'];
    details := ARRAY[jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                                        'currency', i.currency, 'corrects_invoice_id', i.corrects_invoice_id,
                                        'due_at', i.due_at, 'total', total, 'lines', lines)];
    IF i.status <> 'open' THEN
        operations := operations || 'invoice_status'::text;
        details := details || subscription.invoice_status_details(i, i.status,
            CASE i.status WHEN 'paid' THEN coalesce((SELECT max(p.at) FROM subscription.payment AS p
                                                      WHERE p.tenant_id = invoice_announcement.tenant_id
                                                        AND p.invoice_id = invoice_announcement.invoice_id), i.at)
                          ELSE i.at END,
            CASE WHEN i.status = 'void' THEN
                jsonb_build_object('reason', i.void_reason, 'correcting_invoice_id',
                                   (SELECT c.id FROM subscription.invoice_record AS c
                                     WHERE c.tenant_id = invoice_announcement.tenant_id
                                       AND c.corrects_invoice_id = invoice_announcement.invoice_id))
                 ELSE '{}' END,
            true);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.invoice_announcement(bigint, bigint) IS
'Internal: mark an invoice announced and return its opening''s history rows (and a status its transaction reached), once (I8)';


-- issue 18 (h-ren4): is_valid_cycle in C, nth_period's check an expression
CREATE OR REPLACE FUNCTION subscription.is_valid_cycle(cycle interval)
RETURNS boolean
AS 'MODULE_PATHNAME', 'is_valid_cycle'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.is_valid_cycle(interval) IS 'Whether an interval is a positive billing cycle';

CREATE OR REPLACE FUNCTION subscription.nth_period(anchor timestamptz, cycle interval, k integer)
RETURNS tstzrange
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the check an expression (no statement per call: issue 18), its error require_cycle's
    IF NOT subscription.is_valid_cycle(cycle) THEN
        PERFORM subscription.require_cycle(cycle);
    END IF;
    IF NOT isfinite(anchor) THEN
        RAISE EXCEPTION 'the anchor of a period must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('nth_period() was given %s.', anchor);
    END IF;
    RETURN tstzrange(anchor + ((k - 1) * cycle),
                     anchor + (k * cycle), '[)');
END
$$;

COMMENT ON FUNCTION subscription.nth_period(timestamptz, interval, integer) IS 'The k-th period of an anchored cycle, computed from the anchor';

-- issue 20: the statuses that grant seats and limits in one place
-- (status_grants: active, trialing, past due), read by assigns_licenses and
-- granted_limits; the subscription's triggers
-- sync_license_counter and refresh_limits recompute a counter or a limit
-- only when the status moves into or out of that set (a failed charge's
-- past due, its payment's end of it, a trial's end change neither).
-- record_payment marks nothing of an invoice announced already.
CREATE FUNCTION subscription.status_grants(status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN status_grants.status OPERATOR(pg_catalog.=) ANY ('{active,trialing,past_due}'::text[]);

COMMENT ON FUNCTION subscription.status_grants(text) IS
'Whether a subscription in this status grants its plan''s seats and limits: active, trialing or past due (D2)';

CREATE OR REPLACE FUNCTION subscription.assigns_licenses(tenant_id bigint, account_id bigint, status text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.status_grants(assigns_licenses.status)
           AND subscription.freezing_subscription(assigns_licenses.tenant_id, assigns_licenses.account_id) IS NULL;
END
$$;

CREATE OR REPLACE FUNCTION subscription.sync_license_counter()
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
    tenants bigint[];
    subs bigint[];
    is_active boolean;
    capacity integer;
    -- the logical table, from the trigger's argument (issue 17)
    logical text := TG_ARGV[0];
BEGIN
    -- a restore copies the counter (restored_copy): the copy is trusted,
    -- and verify() compares it with the licenses afterwards
    IF TG_OP = 'INSERT' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM new_rows AS n
         WHERE NOT subscription.restored_copy('subscription.subscription_id_seq', n.id);
    ELSIF TG_OP = 'UPDATE' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE o.quantity IS DISTINCT FROM n.quantity
            OR subscription.status_grants(o.status) IS DISTINCT FROM subscription.status_grants(n.status)
            OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id FROM old_rows AS b) AS x;
    ELSE
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id
                  FROM new_rows AS b
                 WHERE TG_OP = 'UPDATE'
                    OR NOT subscription.restored_copy('subscription.addon_batch_id_seq', b.id)) AS x;
    END IF;
    FOR k IN 1 .. coalesce(cardinality(subs), 0) LOOP
        -- each statement names the tenant: on Citus a trigger on a shard
        -- runs only statements on its own node (issue 17)
        SELECT subscription.assigns_licenses(s.tenant_id, s.account_id, s.status) INTO is_active
          FROM subscription.subscription AS s WHERE s.tenant_id = tenants[k] AND s.id = subs[k];
        CONTINUE WHEN NOT FOUND;
        capacity := subscription.license_capacity(tenants[k], subs[k]);
        INSERT INTO subscription.license_counter AS c (tenant_id, subscription_id, capacity, active)
        VALUES (tenants[k], subs[k], capacity, is_active)
        ON CONFLICT (tenant_id, subscription_id) DO UPDATE
           SET capacity = excluded.capacity, active = excluded.active
         WHERE (c.capacity, c.active) IS DISTINCT FROM (excluded.capacity, excluded.active);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION subscription.granted_limits(tenant_id bigint, account_id bigint, feature text)
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

CREATE OR REPLACE FUNCTION subscription.refresh_limits()
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
            SELECT array_agg(x.tenant_id), array_agg(x.account_id) INTO tenants, accounts
              FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
             CROSS JOIN LATERAL (VALUES (o.tenant_id, o.account_id), (n.tenant_id, n.account_id)) AS x (tenant_id, account_id)
             WHERE (o.account_id, o.plan, o.quantity, o.plan_version, subscription.status_grants(o.status))
                   IS DISTINCT FROM (n.account_id, n.plan, n.quantity, n.plan_version, subscription.status_grants(n.status))
                OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
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

CREATE OR REPLACE FUNCTION subscription.record_payment(tenant_id bigint, invoice_id bigint, amount numeric, reference text,
                                            at timestamptz, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    earlier subscription.payment;
    excess numeric;
    credit_line bigint;
    new_id bigint;
    -- the history rows of the invoice written with its status's, in one
    -- statement (settle_invoice): its opening (I8), then the payment
    opening record;
    operations text[];
    details jsonb[];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_payment(bigint,bigint,numeric,text,timestamptz,text)', record_payment.tenant_id,
            pg_catalog.jsonb_build_array(record_payment.tenant_id, record_payment.invoice_id, record_payment.amount, record_payment.reference, record_payment.at, record_payment.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('record_payment', '{invoice_id,amount,reference,at}',
        ARRAY[invoice_id IS NULL, amount IS NULL, reference IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('record_payment', tenant_id, invoice_id, false);
    -- I8: opened in this transaction: its opening before the payment's rows
    -- (an invoice announced already, as most are, has none: its row is
    -- locked, so it stays so; no UPDATE of no row)
    operations := '{}';
    details := '{}';
    IF NOT i.announced THEN
        SELECT * INTO opening FROM subscription.invoice_announcement(i.tenant_id, i.id);
        operations := opening.operations;
        details := opening.details;
    END IF;
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    -- I5: once per reference
    SELECT * INTO earlier FROM subscription.payment AS p
     WHERE p.tenant_id = i.tenant_id AND p.reference = record_payment.reference;
    IF FOUND THEN
        IF earlier.invoice_id <> i.id THEN
            RAISE EXCEPTION 'payment reference "%" is already recorded for another invoice', reference
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Payment %s of invoice %s has it.', earlier.id, earlier.invoice_id);
        END IF;
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        RETURN earlier.id;
    END IF;
    PERFORM subscription.require_time('record_payment', at, false);
    IF currency IS NOT NULL AND currency <> i.currency THEN
        RAISE EXCEPTION 'invoice % is in %, not %', i.document_number, i.currency, currency
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Record the payment in the invoice''s currency.';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity' OR amount <> subscription.round_money(amount, i.currency) THEN
        RAISE EXCEPTION 'a payment must be a positive amount in the minor unit of %', i.currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, i.currency);
    IF btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment needs the provider''s reference' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status IN ('void', 'uncollectible') THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    excess := amount - greatest(i.total - i.paid, 0);
    IF excess > 0 THEN
        -- the credit's line may settle other invoices (invoice_totals): the
        -- opening before their rows
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        operations := '{}';
        details := '{}';
        INSERT INTO subscription.ledger AS l
               (tenant_id, account_id, kind, amount, currency, item, description, corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, 'credit', excess, i.currency, 'credit',
                format('overpayment of invoice %s (%s)', i.document_number, reference), i.id)
        RETURNING l.id INTO credit_line;
    END IF;
    INSERT INTO subscription.payment AS p
           (tenant_id, invoice_id, account_id, amount, currency, reference, payment_method_id, at, credit_line_id)
    VALUES (i.tenant_id, i.id, i.account_id, amount, i.currency, reference, i.payment_method_id, at, credit_line)
    RETURNING p.id INTO new_id;
    UPDATE subscription.invoice_record AS r SET paid = r.paid + amount - greatest(excess, 0)
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    operations := operations || 'payment'::text;
    details := details || jsonb_build_object('payment_id', new_id, 'invoice_id', i.id, 'amount', amount,
                                             'currency', i.currency, 'reference', reference,
                                             'credited', greatest(excess, 0));
    PERFORM subscription.settle_invoice(i.tenant_id, i.id, false, at, operations, details);
    RETURN new_id;
END
$$;

REVOKE ALL ON FUNCTION subscription.status_grants(text) FROM PUBLIC;
-- the roles already given their rights get status_grants()
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;
-- issue 20: record_payment writes what is paid with the invoice's status
-- in one UPDATE (settle_invoice's new argument paid_now) instead of two.
DROP FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz, text[], jsonb[]);
CREATE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL, before_operations text[] DEFAULT '{}',
                                            before_details jsonb[] DEFAULT '{}', paid_now numeric DEFAULT 0)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
    operations text[] := coalesce(before_operations, '{}');
    details jsonb[] := coalesce(before_details, '{}');
    status_details jsonb;
BEGIN
    IF paid_now < 0 OR paid_now >= 'Infinity' THEN
        RAISE EXCEPTION 'a payment''s part of an invoice must be a finite amount, not negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', paid_now);
    END IF;
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    IF NOT FOUND THEN
        -- no invoice, no rows of it (record_payment, which gives rows, has it locked)
        RETURN NULL;
    END IF;
    i.paid := i.paid + coalesce(paid_now, 0);
    new_status := subscription.invoice_status(i.status, i.total, i.paid);
    IF new_status IS DISTINCT FROM i.status OR paid_now <> 0 THEN
        UPDATE subscription.invoice_record AS r SET status = new_status, paid = i.paid
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    END IF;
    IF new_status IS DISTINCT FROM i.status THEN
        IF NOT quiet THEN
            status_details := subscription.invoice_status_details(i, new_status, coalesce(settle_invoice.at, i.at),
                                                                  '{}', false);
        END IF;
        IF status_details IS NOT NULL THEN
            operations := operations || 'invoice_status'::text;
            details := details || status_details;
        END IF;
    END IF;
    IF cardinality(operations) > 0 THEN
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
    END IF;
    IF new_status IS DISTINCT FROM i.status AND NOT quiet AND new_status = 'paid' AND i.subscription_id IS NOT NULL THEN
        PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
    END IF;
    RETURN new_status;
END
$$;

COMMENT ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz, text[], jsonb[], numeric) IS
'Internal: an invoice''s status from its total and payments (and what its caller''s payment adds, written with it), its change recorded in history unless quiet, after the caller''s rows of it (I3)';

CREATE OR REPLACE FUNCTION subscription.record_payment(tenant_id bigint, invoice_id bigint, amount numeric, reference text,
                                            at timestamptz, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    earlier subscription.payment;
    excess numeric;
    credit_line bigint;
    new_id bigint;
    -- the history rows of the invoice written with its status's, in one
    -- statement (settle_invoice): its opening (I8), then the payment
    opening record;
    operations text[];
    details jsonb[];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_payment(bigint,bigint,numeric,text,timestamptz,text)', record_payment.tenant_id,
            pg_catalog.jsonb_build_array(record_payment.tenant_id, record_payment.invoice_id, record_payment.amount, record_payment.reference, record_payment.at, record_payment.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('record_payment', '{invoice_id,amount,reference,at}',
        ARRAY[invoice_id IS NULL, amount IS NULL, reference IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('record_payment', tenant_id, invoice_id, false);
    -- I8: opened in this transaction: its opening before the payment's rows
    -- (an invoice announced already, as most are, has none: its row is
    -- locked, so it stays so; no UPDATE of no row)
    operations := '{}';
    details := '{}';
    IF NOT i.announced THEN
        SELECT * INTO opening FROM subscription.invoice_announcement(i.tenant_id, i.id);
        operations := opening.operations;
        details := opening.details;
    END IF;
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    -- I5: once per reference
    SELECT * INTO earlier FROM subscription.payment AS p
     WHERE p.tenant_id = i.tenant_id AND p.reference = record_payment.reference;
    IF FOUND THEN
        IF earlier.invoice_id <> i.id THEN
            RAISE EXCEPTION 'payment reference "%" is already recorded for another invoice', reference
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Payment %s of invoice %s has it.', earlier.id, earlier.invoice_id);
        END IF;
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        RETURN earlier.id;
    END IF;
    PERFORM subscription.require_time('record_payment', at, false);
    IF currency IS NOT NULL AND currency <> i.currency THEN
        RAISE EXCEPTION 'invoice % is in %, not %', i.document_number, i.currency, currency
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Record the payment in the invoice''s currency.';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity' OR amount <> subscription.round_money(amount, i.currency) THEN
        RAISE EXCEPTION 'a payment must be a positive amount in the minor unit of %', i.currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, i.currency);
    IF btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment needs the provider''s reference' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status IN ('void', 'uncollectible') THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    excess := amount - greatest(i.total - i.paid, 0);
    IF excess > 0 THEN
        -- the credit's line may settle other invoices (invoice_totals): the
        -- opening before their rows
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        operations := '{}';
        details := '{}';
        INSERT INTO subscription.ledger AS l
               (tenant_id, account_id, kind, amount, currency, item, description, corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, 'credit', excess, i.currency, 'credit',
                format('overpayment of invoice %s (%s)', i.document_number, reference), i.id)
        RETURNING l.id INTO credit_line;
    END IF;
    INSERT INTO subscription.payment AS p
           (tenant_id, invoice_id, account_id, amount, currency, reference, payment_method_id, at, credit_line_id)
    VALUES (i.tenant_id, i.id, i.account_id, amount, i.currency, reference, i.payment_method_id, at, credit_line)
    RETURNING p.id INTO new_id;
    operations := operations || 'payment'::text;
    details := details || jsonb_build_object('payment_id', new_id, 'invoice_id', i.id, 'amount', amount,
                                             'currency', i.currency, 'reference', reference,
                                             'credited', greatest(excess, 0));
    -- what is paid, written with the status in one UPDATE
    PERFORM subscription.settle_invoice(i.tenant_id, i.id, false, at, operations, details, amount - greatest(excess, 0));
    RETURN new_id;
END
$$;

REVOKE ALL ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz, text[], jsonb[], numeric) FROM PUBLIC;
-- the roles already given their rights get the new settle_invoice()
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;

-- issue 20: the doorbell.  A writer of events sends NOTIFY
-- subscription_events only when a listener awaits one (await_events(),
-- subscription.notify_events = on, the default; always: the former
-- behaviour), since PostgreSQL serializes the commits of notifying
-- transactions (events.c).  insert_events asks the doorbell first, and
-- whether this is a Citus worker only when it would notify.
CREATE FUNCTION subscription.event_doorbell()
RETURNS boolean
AS 'MODULE_PATHNAME', 'event_doorbell'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.event_doorbell() IS
'Internal (C): whether a writer of events sends NOTIFY subscription_events (subscription.notify_events; on: when a listener awaits, await_events())';

CREATE FUNCTION subscription.await_events(waiting boolean DEFAULT true)
RETURNS boolean
AS 'MODULE_PATHNAME', 'await_events'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.await_events(boolean) IS
'Declare this session a listener awaiting NOTIFY subscription_events (true, once the writers that found none have ended), or no longer (false)';

CREATE OR REPLACE FUNCTION subscription.insert_events(tenant_ids bigint[], types text[], account_ids bigint[],
                                           subscription_ids bigint[], payloads jsonb[], ats timestamptz[])
RETURNS bigint[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
-- the conflict target names the table's columns
#variable_conflict use_column
DECLARE
    n integer := pg_catalog.cardinality(types);
    own_xid xid8;
    ids bigint[];
    horizon xid8;
    written bigint;
BEGIN
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    -- E3: the transaction's id first, then the event ids, then next_xid;
    -- assignments, so that one event (a seat, a quantity) runs no query
    -- but its INSERT
    own_xid := pg_catalog.pg_current_xact_id();
    IF n = 1 THEN
        ids := ARRAY[pg_catalog.nextval('subscription.event_id_seq')];
    ELSE
        ids := ARRAY(SELECT pg_catalog.nextval('subscription.event_id_seq') FROM pg_catalog.generate_series(1, n));
    END IF;
    horizon := subscription.event_next_xid();
    -- the arrays read in one pass (a subscript walks a text or jsonb array
    -- from its start)
    INSERT INTO subscription.event AS e (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
    SELECT x.id, x.type, x.account_id, x.subscription_id, x.payload, x.at, horizon, x.tenant_id
      FROM ROWS FROM (pg_catalog.unnest(ids), pg_catalog.unnest(types), pg_catalog.unnest(account_ids),
                      pg_catalog.unnest(subscription_ids), pg_catalog.unnest(payloads), pg_catalog.unnest(ats),
                      pg_catalog.unnest(tenant_ids)) AS x (id, type, account_id, subscription_id, payload, at, tenant_id)
    ON CONFLICT (tenant_id, subscription_id, (payload ->> 'renews_at')) WHERE type = 'renewal.upcoming' DO NOTHING;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < n THEN
        -- renewal.upcoming already written: the ids that were
        ids := ARRAY(SELECT e.id FROM subscription.event AS e
                      WHERE e.tenant_id = ANY (tenant_ids) AND e.id = ANY (ids) ORDER BY e.id);
    END IF;
    -- a Citus worker commits its part of a distributed transaction with
    -- PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll.
    -- The doorbell decides first (event_doorbell(), events.c: by default
    -- a listener that awaits is told), as it costs less than asking
    -- whether this is a Citus worker.  One notification per statement: a
    -- listener claims on it, whatever the id
    IF written > 0 AND subscription.event_doorbell() AND NOT subscription.on_citus_worker() THEN
        PERFORM pg_catalog.pg_notify('subscription_events', ids[pg_catalog.cardinality(ids)]::text);
    END IF;
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.insert_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) IS
'Internal: insert a statement''s events, already checked, with one INSERT in the E3 order (E1-E3); write_events() and the history trigger only';

REVOKE ALL ON FUNCTION subscription.event_doorbell() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.await_events(boolean) FROM PUBLIC;
-- the roles already given their rights get the new functions
SELECT subscription.change_rights(g.role, g.kind, true) FROM subscription.granted_role AS g ORDER BY g.role, g.kind;

-- The limit catalog's invalidation on a logical replication subscriber
-- (issue 21 review): the apply worker fires row triggers only, so the same
-- invalidation per row, enabled in replica mode alone.
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

-- record_usage() for 5,000 calls a second (issue 21, item 7): the key
-- written once, with its total, after the counter moved (a concurrent
-- duplicate undone by the block's subtransaction), and the checks after
-- require_tenant in one query; the usage counter's CHECK constraints on
-- the meters' figures dropped (the guard keeps them: sql/src/15_usage.sql).
ALTER TABLE subscription.usage_counter
    DROP CONSTRAINT usage_counter_peak_check,
    DROP CONSTRAINT usage_counter_integral_check,
    DROP CONSTRAINT usage_counter_closed_used_check,
    DROP CONSTRAINT usage_counter_closed_peak_check,
    DROP CONSTRAINT usage_counter_closed_integral_check;

CREATE OR REPLACE FUNCTION subscription.record_usage(tenant_id bigint, account_id bigint, feature text, quantity bigint, key text,
                                          at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_total bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_usage(bigint,bigint,text,bigint,text,timestamptz)', record_usage.tenant_id,
            pg_catalog.jsonb_build_array(record_usage.tenant_id, record_usage.account_id, record_usage.feature, record_usage.quantity, record_usage.key, record_usage.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('record_usage', tenant_id, 'account', account_id);
    -- the other checks in one query, in this order (each raises its error)
    PERFORM subscription.require_arguments('record_usage', '{account_id,feature,quantity,key,at}',
                ARRAY[account_id IS NULL, feature IS NULL, quantity IS NULL, key IS NULL, at IS NULL]),
            subscription.require_account(record_usage.tenant_id, record_usage.account_id),
            -- usage becomes a charge: as paying, Z1
            subscription.authorize(record_usage.tenant_id, record_usage.account_id, 'pay', false),
            subscription.require_recorded_feature('record_usage', feature);
    IF quantity < 0 THEN
        RAISE EXCEPTION 'a quantity of usage must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity),
                  HINT = 'subscription.correct_usage() corrects a quantity recorded, with its reason.';
    END IF;
    -- a retry: the total its key's first call returned
    SELECT r.total INTO new_total FROM subscription.usage_record AS r
     WHERE r.tenant_id = record_usage.tenant_id AND r.account_id = record_usage.account_id
       AND r.feature = record_usage.feature AND r.key = record_usage.key;
    IF FOUND THEN
        RETURN new_total;
    END IF;
    BEGIN
        -- the counter moved (in a query: its triggers fire at the end of
        -- its UPDATE), then the key with the new total
        INSERT INTO subscription.usage_record AS r (tenant_id, account_id, feature, key, quantity, total, at)
        VALUES (record_usage.tenant_id, record_usage.account_id, record_usage.feature, record_usage.key,
                record_usage.quantity,
                subscription.move_usage(record_usage.account_id, record_usage.feature, record_usage.quantity,
                                        record_usage.tenant_id, record_usage.at),
                record_usage.at)
        RETURNING r.total INTO new_total;
    EXCEPTION WHEN unique_violation OR check_violation THEN
        -- a concurrent call with the key came first: its total
        SELECT r.total INTO new_total FROM subscription.usage_record AS r
         WHERE r.tenant_id = record_usage.tenant_id AND r.account_id = record_usage.account_id
           AND r.feature = record_usage.feature AND r.key = record_usage.key;
        IF NOT FOUND THEN
            RAISE;
        END IF;
    END;
    RETURN new_total;
END
$$;

-- Review (issue 17): a plain UPDATE that closes a current price or limit
-- at the plan's version (as change_price() and change_limit() do) is
-- refused where a subscription holds that version or a later one, which
-- would lose its price or limit.
CREATE OR REPLACE FUNCTION subscription.version_catalog_row()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the catalog admin reads no subscription
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the logical table, as a trigger argument: a Citus shard has another name
    logical text := TG_ARGV[0];
    what text := CASE logical WHEN 'plan_price' THEN 'price' ELSE 'limit' END;
    new_version integer;
BEGIN
    -- the new version's row, inserted below while the old one is still open
    IF TG_OP = 'INSERT' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    ELSIF TG_OP = 'INSERT' THEN
        -- no row lock (an INSERT makes no version; on Citus the rows of a
        -- reference table are copied through this trigger): two new rows
        -- of one price or limit from the same version meet in the unique
        -- index of their lower bound
        IF logical = 'plan_price' THEN
            PERFORM FROM subscription.plan_price AS pp
             WHERE pp.plan = NEW.plan AND pp.versions && NEW.versions
               AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(NEW.cycle)
               AND pp.tier IS NOT DISTINCT FROM NEW.tier;
        ELSE
            PERFORM FROM subscription.plan_limit AS pl
             WHERE pl.plan = NEW.plan AND pl.versions && NEW.versions AND pl.feature = NEW.feature;
        END IF;
        IF FOUND THEN
            RAISE EXCEPTION 'plan "%" already has this %', NEW.plan, what
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A row of the same %s holds versions overlapping %s.', what, NEW.versions),
                      HINT = format('UPDATE the current row of subscription.%s: a change that subscriptions hold makes a new version.', logical),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT upper_inf(OLD.versions) THEN
        -- a closed row is history: an UPDATE changes the current rows only
        RETURN NULL;
    END IF;
    -- change_price()/change_limit() close the held row at the plan's
    -- current version, which they made, its terms as they were, and
    -- insert the change from that version on; nothing else moves the
    -- versions, nor the plan
    IF NEW.plan IS DISTINCT FROM OLD.plan
       OR (NEW.versions IS DISTINCT FROM OLD.versions
           AND (upper_inf(NEW.versions) OR lower(NEW.versions) IS DISTINCT FROM lower(OLD.versions)
                OR upper(NEW.versions) IS DISTINCT FROM (SELECT p.version FROM subscription.plan AS p WHERE p.code = OLD.plan)
                OR to_jsonb(NEW) - 'versions' - 'limit_stamp' IS DISTINCT FROM to_jsonb(OLD) - 'versions' - 'limit_stamp')) THEN
        RAISE EXCEPTION 'the plan and versions of a % are not changed with its terms', what
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Update the terms of the current row alone; the new version is made for you.',
                  TABLE = logical, SCHEMA = 'subscription';
    ELSIF NEW.versions IS DISTINCT FROM OLD.versions THEN
        -- the close keeps every version a subscription holds: none from
        -- its end on (change_price()/change_limit() close the row at a
        -- version nobody holds yet), else those subscriptions would lose
        -- their price or limit.  On a single server (on Citus a worker's
        -- placement cannot read the holders)
        IF NOT subscription.distributed()
           AND subscription.catalog_change_version(OLD.plan, int4range(upper(NEW.versions), NULL)) IS NOT NULL THEN
            RAISE EXCEPTION 'subscriptions hold version % of plan "%", which this % would no longer cover',
                            upper(NEW.versions), OLD.plan, what
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Change it with subscription.change_%s(), which makes the plan''s new version.', what),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    ELSIF subscription.distributed() THEN
        -- Citus: a worker's placement cannot read the holders; the
        -- coordinator's refuses the change of a held row, for every node
        IF subscription.catalog_reads_tenants()
           AND subscription.catalog_change_version(OLD.plan, OLD.versions) IS NOT NULL THEN
            RAISE EXCEPTION 'subscriptions hold this % of plan "%"', what, OLD.plan
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'On Citus a plain UPDATE changes prices and limits that no subscription holds.',
                      HINT = format('Change it with subscription.change_%s(), which makes the plan''s new version on every node.', what),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    -- serialize the version changes of a plan, and its migrations, by the
    -- plan's advisory lock, not a row lock on plan (issue 17); each
    -- statement below reads what the previous holder committed
    PERFORM subscription.lock_catalog('plan ' || OLD.plan, false);
    new_version := subscription.catalog_change_version(OLD.plan, OLD.versions);
    IF new_version IS NULL THEN
        RETURN NEW;
    END IF;
    -- the versions held keep the old row; the change makes a new version
    UPDATE subscription.plan AS p SET version = new_version WHERE p.code = OLD.plan AND p.version <> new_version;
    NEW.versions := int4range(new_version, NULL);
    IF logical = 'plan_price' THEN
        INSERT INTO subscription.plan_price SELECT (NEW::subscription.plan_price).*;
    ELSE
        INSERT INTO subscription.plan_limit SELECT (NEW::subscription.plan_limit).*;
    END IF;
    OLD.versions := int4range(lower(OLD.versions), new_version);
    RETURN OLD;
END
$$;

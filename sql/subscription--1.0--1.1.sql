/* subscription--1.0--1.1.sql: from 1.0 to 1.1 */

\echo Use "ALTER EXTENSION subscription UPDATE TO '1.1'" to load this file. \quit

-- Every change here is also in its source file under sql/src, from which
-- the fresh subscription--1.1.sql is built; test/upgrade.sh proves that 1.0
-- plus this script equals a fresh 1.1, object for object.

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
    granted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (role, kind)
);
SELECT pg_catalog.pg_extension_config_dump('subscription.granted_role', '');

COMMENT ON TABLE subscription.granted_role IS
'Roles set up by grant_application() and grant_backoffice(); back-office roles are trusted without an actor';

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
DECLARE
    actor text := current_setting('subscription.actor', true);
    who record;
BEGIN
    IF coalesce(actor, '') = '' THEN
        RETURN CASE WHEN subscription.caller_is_trusted() THEN NULL ELSE 'is not named' END;
    END IF;
    SELECT m.id, m.account_id, m.role, m.rights, a.parent_id INTO who
      FROM subscription.member AS m JOIN subscription.account AS a ON a.id = m.account_id
     WHERE m.id::text = actor;
    IF NOT FOUND THEN
        RETURN 'is not a member';
    ELSIF who.account_id IS DISTINCT FROM actor_refusal.account_id THEN
        RETURN format('belongs to account %s, not to account %s', who.account_id, actor_refusal.account_id);
    ELSIF who.parent_id IS NOT NULL AND action = ANY ('{purchase,pay,increase_licenses}') THEN
        RETURN 'is a member of a sub-account, and only the main account buys and pays (K8)';
    ELSIF who.role = 'owner' THEN
        RETURN NULL;
    ELSIF who.role = 'admin' AND (
            action = ANY ('{read,assign_licenses}')
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
                  CASE WHEN action = ANY ('{read,assign_licenses}') THEN ' or an admin' ELSE '' END,
                  replace(action, '_', ' '));
END
$$;

COMMENT ON FUNCTION subscription.actor_refusal(bigint, text, boolean) IS
'Why the actor may not do an action on an account, or NULL when it may (Z1, R9, K8)';

-- The one permission check every function calls.  Without an actor the
-- caller must be back-office code (42501 otherwise).
CREATE OR REPLACE FUNCTION subscription.authorize(account_id bigint, action text, monthly boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor text := current_setting('subscription.actor', true);
    refusal text;
BEGIN
    IF coalesce(actor, '') = '' THEN
        PERFORM subscription.require_trusted_caller();
        RETURN;
    END IF;
    refusal := subscription.actor_refusal(account_id, action, monthly);
    IF refusal IS NULL THEN
        RETURN;
    END IF;
    -- a refused transaction rolls back, so the refusal cannot stay in history
    RAISE LOG 'subscription: actor % refused % on account %: %', actor, action, account_id, refusal;
    RAISE EXCEPTION 'actor % may not % on account %', actor, replace(action, '_', ' '), account_id
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('Actor %s %s.', actor, refusal),
              HINT = CASE WHEN action = ANY ('{increase_licenses,decrease_licenses,change_renewal}')
                          THEN 'The account owner can do it, or grant the right in subscription.member.rights.'
                          ELSE 'The account owner can do it.' END;
END
$$;

COMMENT ON FUNCTION subscription.authorize(bigint, text, boolean) IS
'42501 unless the actor may do the action on the account (Z1, R9, K8); without an actor, unless the caller is back-office code';

-- What the views show: the actor's own account (owner or admin), or
-- everything to back-office code.
CREATE FUNCTION subscription.may_read(account_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
SECURITY DEFINER
RETURN subscription.actor_refusal(account_id, 'read') IS NULL;

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
         WHERE x.status OPERATOR(pg_catalog.=) 'active' AND upper(x.period) OPERATOR(pg_catalog.<=) at
           AND (upper(x.period), x.id) OPERATOR(pg_catalog.>) (after_end, after_id)
         ORDER BY upper(x.period), x.id
         LIMIT batch_size
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        taken := taken OPERATOR(pg_catalog.+) 1;
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
            EXIT WHEN status OPERATOR(pg_catalog.<>) 'active';
            SELECT * INTO s FROM subscription.subscription AS x WHERE x.id OPERATOR(pg_catalog.=) s.id;
            EXIT WHEN upper(s.period) OPERATOR(pg_catalog.>) at;
        END LOOP;
        IF problem IS NULL THEN
            handled := handled OPERATOR(pg_catalog.+) 1;
        END IF;
    END LOOP;
END
$$;

-- Renewals are back-office work: no actor, and a trusted role.
CREATE OR REPLACE FUNCTION subscription.require_renewal_run(fn text, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'renewal time must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('%s() was given %s.', fn, at);
    END IF;
    IF coalesce(current_setting('subscription.actor', true), '') <> '' THEN
        RAISE EXCEPTION '%() is back-office work', fn
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('subscription.actor is set to %s.', current_setting('subscription.actor')),
                  HINT = 'Run it with subscription.actor empty.';
    END IF;
    PERFORM subscription.require_trusted_caller();
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

-- The account's credit not used yet, in a currency (L10).
CREATE OR REPLACE FUNCTION subscription.credit_balance(account_id bigint, currency text DEFAULT 'EUR')
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.authorize(credit_balance.account_id, 'read');
    RETURN (SELECT coalesce(sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE -l.amount END), 0)
              FROM subscription.ledger AS l
             WHERE l.account_id = credit_balance.account_id
               AND l.currency = credit_balance.currency
               AND l.kind = ANY ('{credit,credit_used}'));
END
$$;

CREATE OR REPLACE VIEW subscription.license_holder WITH (security_barrier) AS
SELECT l.subscription_id, s.plan, m.id AS member_id, m.external_id, m.role, l.assigned_at, s.account_id
  FROM subscription.license AS l
  JOIN subscription.member AS m ON m.id OPERATOR(pg_catalog.=) l.member_id
  JOIN subscription.subscription AS s ON s.id OPERATOR(pg_catalog.=) l.subscription_id
 WHERE subscription.may_read(s.account_id);

CREATE OR REPLACE VIEW subscription.invoice WITH (security_barrier) AS
SELECT l.account_id,
       l.subscription_id,
       coalesce(lower(l.period), l.created_at) AS at,
       (array_agg(l.plan ORDER BY l.id DESC) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'))[1] AS plan,
       l.currency,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'), 0)
         OPERATOR(pg_catalog.-) coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'discount'), 0) AS charged,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'refund'), 0) AS refunded,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'credit'), 0) AS credited,
       coalesce(sum(CASE l.kind WHEN 'charge' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END), 0) AS balance,
       jsonb_agg(jsonb_build_object('kind', l.kind, 'amount', l.amount, 'item', l.item,
                                    'period', l.period, 'description', l.description) ORDER BY l.id) AS lines
  FROM subscription.ledger AS l
 WHERE l.subscription_id IS NOT NULL AND subscription.may_read(l.account_id)
 GROUP BY l.account_id, l.subscription_id, coalesce(lower(l.period), l.created_at), l.currency;

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
 WHERE l.kind OPERATOR(pg_catalog.=) ANY ('{credit,credit_used}') AND subscription.may_read(l.account_id);

CREATE OR REPLACE VIEW subscription.renewal_notice WITH (security_barrier) AS
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       n.plan,
       n.cycle,
       n.quantity,
       CASE WHEN cardinality(subscription.plan_tiers(n.plan)) > 0 THEN n.quantity END AS tier,
       subscription.round_money(price.amount, price.currency) AS amount,
       price.currency,
       d.discount,
       least(subscription.credit_balance(s.account_id, price.currency),
             subscription.round_money(price.amount, price.currency) OPERATOR(pg_catalog.-) d.discount) AS credit
  FROM subscription.subscription AS s
  CROSS JOIN LATERAL (
       SELECT coalesce(s.pending_plan, s.plan) AS plan,
              CASE WHEN s.renewal OPERATOR(pg_catalog.=) 'to_monthly' THEN interval '1 month'
                   ELSE coalesce(s.pending_cycle, s.cycle) END AS cycle,
              coalesce(s.pending_quantity, s.quantity) AS quantity) AS n
  CROSS JOIN LATERAL subscription.period_price(n.plan, n.cycle, n.quantity) AS price
  CROSS JOIN LATERAL subscription.coupon_discount(s.id, subscription.round_money(price.amount, price.currency),
                                                  price.currency) AS d(discount)
 WHERE s.status OPERATOR(pg_catalog.=) 'active'
   AND NOT s.cancel_at_period_end
   AND s.renewal OPERATOR(pg_catalog.<>) 'none'
   AND upper(s.period) OPERATOR(pg_catalog.<=)
       (now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer))
   AND subscription.may_read(s.account_id);

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
    IF on_downgrade <> ALL ('{drop_newest,keep_most_referenced,scale,cap,detach,block}') THEN
        RAISE EXCEPTION 'unknown downgrade policy "%"', on_downgrade
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The policies are drop_newest, keep_most_referenced, scale, cap, detach and block.';
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

    PERFORM subscription.limited_column(relation, account_column, 'account column', true);
    IF on_downgrade = ANY ('{scale,cap,detach}') THEN
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

    INSERT INTO subscription.limited_table AS t (relation, feature, account_column, on_downgrade, order_column, value_column)
    VALUES (relation, feature, account_column, on_downgrade, order_column, value_column);

    -- lock the table against writes while the existing rows are counted
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', relation);
    PERFORM subscription.recount_usage(relation, feature);

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
CREATE FUNCTION subscription.role_rights(kind text)
RETURNS TABLE (object_type text, object text, privileges text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    application_routines text[] := '{subscribe,set_quantity,change_plan,change_cycle,set_renewal,cancel,
        cancel_account,end_early,purchase_addon,cancel_addon,license_consume,license_release,licenses_left,
        apply_downgrade,preview_change_plan,preview_set_quantity,preview_purchase_addon,credit_balance,usage,
        effective_limit,current_actor,calling_role,may_read,coupon_discount,tier_for_hosts,prorate_refund,
        cycle_key,is_valid_cycle,renewal_options,plan_tiers,round_money,find_price,period_price,nth_period}';
    catalog text[] := '{product,plan,plan_price,plan_limit,addon,addon_price,plan_addon,currency}';
    views text[] := '{license_holder,invoice,credit_statement,renewal_notice}';
BEGIN
    IF kind NOT IN ('application', 'backoffice') THEN
        RAISE EXCEPTION 'unknown kind of role "%"', kind
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The kinds are application and backoffice.';
    END IF;
    RETURN QUERY
    SELECT 'SCHEMA', 'subscription', 'USAGE'
    UNION ALL
    SELECT 'ROUTINE', p.oid::regprocedure::text, 'EXECUTE'
      FROM pg_catalog.pg_proc AS p
     WHERE p.pronamespace = 'subscription'::regnamespace
       AND CASE kind WHEN 'application' THEN p.proname = ANY (application_routines)
                     -- granting is for the extension's owner alone
                     ELSE p.proname !~ '^((grant|revoke)_(application|backoffice)|change_rights|set_role_kind)$' END
    UNION ALL
    SELECT 'TABLE', 'subscription.' || c.relname,
           CASE WHEN kind = 'backoffice' AND (c.relname = ANY (catalog) OR c.relname IN ('coupon', 'account', 'member'))
                THEN 'SELECT, INSERT, UPDATE, DELETE' ELSE 'SELECT' END
      FROM pg_catalog.pg_class AS c
     WHERE c.relnamespace = 'subscription'::regnamespace AND c.relkind IN ('r', 'v', 'S')
       AND (kind = 'backoffice' OR c.relname = ANY (catalog || views))
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
'The exact rights grant_application() (kind application) and grant_backoffice() (kind backoffice) give';

-- GRANT (or REVOKE) the rights of a kind of role.
CREATE FUNCTION subscription.change_rights(role regrole, kind text, give boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
BEGIN
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
COMMENT ON TABLE subscription.product IS 'Products sold, with how their upgrades (restart, prorate) and downgrades (end_of_period, immediate) take effect';
COMMENT ON TABLE subscription.plan IS 'Plans (editions) of a product, ranked; kind service or option (R11)';
COMMENT ON TABLE subscription.plan_price IS 'A plan''s price per billing cycle, per license or flat, or per host tier (L12)';
COMMENT ON TABLE subscription.plan_limit IS 'How much of a feature a plan allows (NULL unlimited, 0 not included), optionally per license';
COMMENT ON TABLE subscription.addon IS 'Add-ons of a product: units of a feature, recurring or one-time (K1-K5)';
COMMENT ON TABLE subscription.addon_price IS 'An add-on''s price per cycle (NULL cycle: one-time)';
COMMENT ON TABLE subscription.plan_addon IS 'The add-ons a plan may buy, or includes (Z6)';
COMMENT ON TABLE subscription.coupon IS 'Coupons: a percentage or an amount off, for some cycles, until a date, a number of times (Z10)';
COMMENT ON TABLE subscription.account IS 'Tenants; parent_id makes a sub-account (K7), and deleting an account deletes all its rows (K9)';
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

COMMENT ON FUNCTION subscription.addon_period_price(text, interval, integer) IS 'The price of units of an add-on for a cycle (NULL: one-time); 22023 when not sold so';
COMMENT ON FUNCTION subscription.assign_default_license() IS 'Trigger: a new member gets a license of the account''s default subscription when one is free (R10)';
COMMENT ON FUNCTION subscription.cancel(bigint) IS 'Cancel at the end of the period (Z8); returns when it ends';
COMMENT ON FUNCTION subscription.cancel_account(bigint) IS 'Cancel every active subscription of the account, each at its period end (Z8)';
COMMENT ON FUNCTION subscription.cancel_addon(bigint) IS 'End an add-on batch with the period (K4, K5); returns when it ends';
COMMENT ON FUNCTION subscription.change_cycle(bigint, interval) IS 'A new billing cycle from the next period (Z7); returns when it takes effect';
COMMENT ON FUNCTION subscription.change_plan(bigint, text, timestamptz) IS 'Upgrade now (prorated or restarted) or downgrade at the period end (C1-C4, Z5)';
COMMENT ON FUNCTION subscription.change_rights(regrole, text, boolean) IS 'Internal: GRANT or REVOKE the rights of a kind of role (role_rights)';
COMMENT ON FUNCTION subscription.check_plan_price_tiering() IS 'Trigger: a plan''s prices all name a tier, or none does (L12)';
COMMENT ON FUNCTION subscription.coupon_discount(bigint, numeric, text) IS 'What the subscription''s coupon takes off a plan charge, rounded once (Z10)';
COMMENT ON FUNCTION subscription.credit_account(bigint, numeric, text, text) IS 'Credit an account with a reason; the next charges use it (L9, L10)';
COMMENT ON FUNCTION subscription.credit_balance(bigint, text) IS 'The account''s credit not used yet, in a currency (L10)';
COMMENT ON FUNCTION subscription.current_actor() IS 'The actor written to history: subscription.actor, else the session user';
COMMENT ON FUNCTION subscription.end_early(bigint, timestamptz) IS 'End a subscription now; its unused days become credit (L9)';
COMMENT ON FUNCTION subscription.find_price(text, interval, integer) IS 'A plan''s price for a cycle and quantity, or why there is none (not_a_tier, no_price)';
COMMENT ON FUNCTION subscription.forget_dropped_tables() IS 'Event trigger: a dropped table takes its registrations along; a guard of a registered table cannot be dropped';
COMMENT ON FUNCTION subscription.give_back_unused(subscription.subscription, timestamptz, text, text) IS 'Internal: refund or credit the unused part of the period''s open charges, once per charge';
COMMENT ON FUNCTION subscription.guard_name(text) IS 'The limit guards'' trigger name for a feature, with a hash so long names never collide';
COMMENT ON FUNCTION subscription.guard_triggers(regclass, text) IS 'The limit guard triggers of a registration, found by function and argument';
COMMENT ON FUNCTION subscription.is_valid_cycle(interval) IS 'Whether an interval is a positive billing cycle';
COMMENT ON FUNCTION subscription.keep_limited_tables() IS 'Event trigger: refuses DDL that would break a limited table''s guards';
COMMENT ON FUNCTION subscription.ledger_lines_of(bigint, text) IS 'Internal: the ledger lines a change would write, in a rolled-back subtransaction (Z9)';
COMMENT ON FUNCTION subscription.license_capacity(bigint) IS 'Licenses a subscription may assign: its quantity plus license add-ons';
COMMENT ON FUNCTION subscription.license_guard() IS 'Trigger (C): checks and counts every write of subscription.license';
COMMENT ON FUNCTION subscription.limit_guard() IS 'Trigger (C): keeps an account''s usage of a feature within its limit on an application table';
COMMENT ON FUNCTION subscription.limit_of(bigint, text) IS 'Internal: the account''s limit of a feature, unchecked (effective_limit checks)';
COMMENT ON FUNCTION subscription.limited_column(regclass, name, text, boolean) IS 'Internal: the column of a registration exists, and is an integer where needed';
COMMENT ON FUNCTION subscription.money_scale(text) IS 'The digits of a currency''s minor unit';
COMMENT ON FUNCTION subscription.nth_period(timestamptz, interval, integer) IS 'The k-th period of an anchored cycle, computed from the anchor';
COMMENT ON FUNCTION subscription.period_containing(timestamptz, interval, timestamptz) IS 'The k of the anchored period that holds a time (L4)';
COMMENT ON FUNCTION subscription.period_price(text, interval, integer) IS 'The exact price of one period of a plan for a quantity, or an error saying why not';
COMMENT ON FUNCTION subscription.plan_tiers(text) IS 'A plan''s host tiers ({} when untiered)';
COMMENT ON FUNCTION subscription.preview_change_plan(bigint, text, timestamptz) IS 'The ledger lines change_plan would write, without writing them (Z9)';
COMMENT ON FUNCTION subscription.preview_purchase_addon(bigint, text, integer, timestamptz) IS 'The ledger lines purchase_addon would write, without writing them (Z9)';
COMMENT ON FUNCTION subscription.preview_set_quantity(bigint, integer, timestamptz) IS 'The ledger lines set_quantity would write, without writing them (Z9)';
COMMENT ON FUNCTION subscription.purchase_addon(bigint, text, integer, timestamptz) IS 'Buy add-on units for the rest of the period, or once (K1-K3, Z6)';
COMMENT ON FUNCTION subscription.record_history() IS 'Trigger: one history row per change of accounts, members, subscriptions and add-on batches (R8)';
COMMENT ON FUNCTION subscription.redeemable_coupon(text, timestamptz, text) IS 'Internal: the Z10 checks of a coupon, locking it';
COMMENT ON FUNCTION subscription.reduce_charge() IS 'Trigger: a coupon''s discount and the account''s credit on every charge line';
COMMENT ON FUNCTION subscription.refresh_limits() IS 'Trigger: the limits stored in the usage counters follow what they are computed from';
COMMENT ON FUNCTION subscription.refuse_history_change() IS 'Trigger: history is append-only';
COMMENT ON FUNCTION subscription.registration_problem(subscription.limited_table) IS 'What is wrong with a limit registration (tree, columns, guards), or NULL';
COMMENT ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint) IS 'Internal: one batch of renew_due and run_renewals';
COMMENT ON FUNCTION subscription.renew_due(timestamptz) IS 'Renew, expire or cancel every subscription due by a time, catching up missed periods; back-office work';
COMMENT ON FUNCTION subscription.renew_period(subscription.subscription, boolean) IS 'Internal: one period of one due subscription';
COMMENT ON FUNCTION subscription.renewal_may_trim(subscription.subscription) IS 'Internal: whether the next renewal can lower the account''s limits';
COMMENT ON FUNCTION subscription.renewal_problem(subscription.subscription) IS 'Internal: why the next renewal could not be charged, or NULL';
COMMENT ON FUNCTION subscription.require_account(bigint) IS 'Internal: P0002 unless the account exists';
COMMENT ON FUNCTION subscription.require_arguments(text, text[], boolean[]) IS 'Internal: 22004 for a NULL required argument';
COMMENT ON FUNCTION subscription.require_cycle(interval) IS 'Internal: 22023 unless a positive billing cycle';
COMMENT ON FUNCTION subscription.require_feature(text) IS 'Internal: 42704 unless a plan limit or add-on names the feature';
COMMENT ON FUNCTION subscription.require_renewal(text) IS 'Internal: 22023 unless a renewal option (R6)';
COMMENT ON FUNCTION subscription.require_renewal_run(text, timestamptz) IS 'Internal: renewals run up to a finite time, as back-office code';
COMMENT ON FUNCTION subscription.require_table_owner(regclass) IS 'Internal: 42501 unless the calling role owns the table';
COMMENT ON FUNCTION subscription.reseat_licenses(bigint[]) IS 'Internal (C): rebuild the service seats of subscriptions whose plan changed kind or product (R11)';
COMMENT ON FUNCTION subscription.round_money(numeric, text) IS 'Round an amount to its currency''s minor unit, half away from zero';
COMMENT ON PROCEDURE subscription.run_renewals(timestamptz, integer) IS 'renew_due in committed batches, for large runs; CALL it outside a transaction block';
COMMENT ON FUNCTION subscription.set_quantity(bigint, integer, timestamptz) IS 'Change the licenses now: more are charged for the rest of the period, fewer refund nothing';
COMMENT ON FUNCTION subscription.set_renewal(bigint, text) IS 'The renewal option: none, once, always, to_monthly (R6)';
COMMENT ON FUNCTION subscription.set_role_kind(regrole, text, boolean) IS 'Internal: what grant_* and revoke_* do';
COMMENT ON FUNCTION subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text) IS 'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4)';
COMMENT ON FUNCTION subscription.subscription_for_change(text, bigint, text) IS 'Internal: the subscription locked for a change, the actor''s right checked';
COMMENT ON FUNCTION subscription.sync_license_counter() IS 'Trigger: seat capacities follow quantities, statuses and add-on batches';
COMMENT ON FUNCTION subscription.sync_service_seats() IS 'Trigger: service seats follow plan changes (R11)';
COMMENT ON FUNCTION subscription.unenforce_limit(regclass, text) IS 'Remove a feature''s limit guard from a table, with its counters';
COMMENT ON FUNCTION subscription.unpriced_addons(bigint, interval) IS 'Internal: the renewing add-ons of a subscription with no price for a cycle';

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
SELECT v.* FROM (
    -- seats: the counter is the licenses held, its capacity the subscription's,
    -- and no subscription holds more than its capacity
    SELECT x.check_name, t.account_id, x.detail
      FROM (SELECT s.account_id, s.id, c.subscription_id IS NOT NULL AS has_counter, c.used, c.capacity, c.active,
                   subscription.license_capacity(s.id) AS capacity_now,
                   s.status OPERATOR(pg_catalog.=) 'active' AS active_now,
                   (SELECT count(*) FROM subscription.license AS l
                     WHERE l.subscription_id OPERATOR(pg_catalog.=) s.id) AS held
              FROM subscription.subscription AS s
              LEFT JOIN subscription.license_counter AS c ON c.subscription_id OPERATOR(pg_catalog.=) s.id
             WHERE $1 IS NULL OR s.account_id OPERATOR(pg_catalog.=) $1) AS t,
           LATERAL (VALUES
               ('license_counter',
                CASE WHEN NOT t.has_counter THEN format('subscription %s has no seat counter', t.id)
                     WHEN t.used OPERATOR(pg_catalog.<>) t.held
                     THEN format('subscription %s: the seat counter says %s used, %s licenses are held', t.id, t.used, t.held) END),
               ('license_capacity',
                CASE WHEN t.has_counter AND (t.capacity, t.active) IS DISTINCT FROM (t.capacity_now, t.active_now)
                     THEN format('subscription %s: the seat counter has capacity %s (active %s), the subscription %s (active %s)',
                                 t.id, t.capacity, t.active, t.capacity_now, t.active_now) END),
               ('seats_over_capacity',
                CASE WHEN t.held OPERATOR(pg_catalog.>) t.capacity_now
                     THEN format('subscription %s holds %s licenses, its capacity is %s', t.id, t.held, t.capacity_now) END))
               AS x(check_name, detail)
     WHERE x.detail IS NOT NULL
    UNION ALL
    -- usage: each counter is its table's rows, counted as recount_usage counts
    -- them (cap counts nothing) ...
    SELECT 'usage_counter', d.account_id,
           format('%s of %s: the counter says %s, the table has %s', t.feature, t.relation, d.stored, d.counted)
      FROM subscription.limited_table AS t,
           LATERAL subscription.usage_drift(t.relation, t.feature, $1) AS d
    UNION ALL
    -- ... and carries the account's limit; no counter outlives its registration
    SELECT CASE WHEN t.feature IS NULL THEN 'usage_counter' ELSE 'usage_limit' END, u.account_id,
           CASE WHEN t.feature IS NULL
                THEN format('a counter of feature %s remains, and no table is registered for it', u.feature)
                ELSE format('%s: the counter''s limit is %s, the account''s limit %s', u.feature,
                            coalesce(u.limit_value::text, 'unlimited'),
                            coalesce(subscription.limit_of(u.account_id, u.feature)::text, 'unlimited')) END
      FROM subscription.usage_counter AS u
      LEFT JOIN subscription.limited_table AS t ON t.feature OPERATOR(pg_catalog.=) u.feature
     WHERE ($1 IS NULL OR u.account_id OPERATOR(pg_catalog.=) $1)
       AND (t.feature IS NULL
            OR u.limit_value IS DISTINCT FROM subscription.limit_of(u.account_id, u.feature))
    UNION ALL
    -- periods (C2): the plan charges of a subscription, less what was given
    -- back, follow each other with no gap and no overlap ...
    SELECT CASE WHEN p.next_lower OPERATOR(pg_catalog.>) p.charged_upper THEN 'period_gap' ELSE 'period_overlap' END,
           p.account_id,
           format('subscription %s: charge %s covers %s to %s, charge %s starts at %s',
                  p.subscription_id, p.id, p.charged_lower, p.charged_upper, p.next_id, p.next_lower)
      FROM (SELECT c.*,
                   lead(c.charged_lower) OVER w AS next_lower,
                   lead(c.id) OVER w AS next_id
              FROM (SELECT l.id, l.account_id, l.subscription_id, lower(l.period) AS charged_lower,
                           coalesce(lower(g.period), upper(l.period)) AS charged_upper
                      FROM subscription.ledger AS l
                      LEFT JOIN subscription.ledger AS g
                        ON g.charge_id OPERATOR(pg_catalog.=) l.id AND g.kind IN ('refund', 'credit')
                     WHERE l.kind OPERATOR(pg_catalog.=) 'charge' AND l.addon_batch_id IS NULL
                       AND (l.item OPERATOR(pg_catalog.=) 'plan' OR l.item OPERATOR(pg_catalog.~~) 'change to %')
                       AND ($1 IS NULL OR l.account_id OPERATOR(pg_catalog.=) $1)) AS c
             WHERE c.charged_lower OPERATOR(pg_catalog.<) c.charged_upper
            WINDOW w AS (PARTITION BY c.subscription_id ORDER BY c.charged_lower, c.id)) AS p
     WHERE p.next_lower OPERATOR(pg_catalog.<>) p.charged_upper
    UNION ALL
    -- ... and an active subscription's current period is charged to its end
    SELECT 'period_uncharged', s.account_id,
           format('subscription %s: its current period %s is charged up to %s', s.id, s.period,
                  coalesce(c.charged_to::text, 'nothing'))
      FROM subscription.subscription AS s
      LEFT JOIN LATERAL (
           SELECT max(coalesce(lower(g.period), upper(l.period))) AS charged_to
             FROM subscription.ledger AS l
             LEFT JOIN subscription.ledger AS g
               ON g.charge_id OPERATOR(pg_catalog.=) l.id AND g.kind IN ('refund', 'credit')
            WHERE l.subscription_id OPERATOR(pg_catalog.=) s.id AND l.kind OPERATOR(pg_catalog.=) 'charge'
              AND l.addon_batch_id IS NULL
              AND (l.item OPERATOR(pg_catalog.=) 'plan' OR l.item OPERATOR(pg_catalog.~~) 'change to %')) AS c ON true
     WHERE s.status OPERATOR(pg_catalog.=) 'active'
       AND ($1 IS NULL OR s.account_id OPERATOR(pg_catalog.=) $1)
       AND (c.charged_to IS NULL OR c.charged_to OPERATOR(pg_catalog.<) upper(s.period))
    UNION ALL
    -- money: what is given back or taken off a charge never exceeds it
    SELECT 'refund_over_charge', l.account_id,
           format('charge %s of %s %s: %s given back or taken off', l.id, l.amount, l.currency, g.total)
      FROM subscription.ledger AS l
      JOIN (SELECT g.charge_id, sum(g.amount) AS total FROM subscription.ledger AS g
             WHERE g.kind IN ('refund', 'credit', 'discount') GROUP BY g.charge_id) AS g
        ON g.charge_id OPERATOR(pg_catalog.=) l.id
     WHERE l.kind OPERATOR(pg_catalog.=) 'charge' AND g.total OPERATOR(pg_catalog.>) l.amount
       AND ($1 IS NULL OR l.account_id OPERATOR(pg_catalog.=) $1)
    UNION ALL
    -- history (R8): every account, member, subscription, add-on batch and
    -- license has the history row that created it
    SELECT 'history_missing', h.account_id, h.detail
      FROM (SELECT a.id AS account_id, format('account %s has no account_insert row', a.id) AS detail
              FROM subscription.account AS a
             WHERE NOT EXISTS (SELECT FROM subscription.history AS h
                                WHERE h.account_id OPERATOR(pg_catalog.=) a.id
                                  AND h.operation OPERATOR(pg_catalog.=) 'account_insert')
            UNION ALL
            SELECT m.account_id, format('member %s has no member_insert row', m.id)
              FROM subscription.member AS m
             WHERE NOT EXISTS (SELECT FROM subscription.history AS h
                                WHERE h.account_id OPERATOR(pg_catalog.=) m.account_id
                                  AND h.operation OPERATOR(pg_catalog.=) 'member_insert'
                                  AND h.details OPERATOR(pg_catalog.->>) 'id' OPERATOR(pg_catalog.=) m.id::text)
            UNION ALL
            SELECT s.account_id, format('subscription %s has no subscription_insert row', s.id)
              FROM subscription.subscription AS s
             WHERE NOT EXISTS (SELECT FROM subscription.history AS h
                                WHERE h.subscription_id OPERATOR(pg_catalog.=) s.id
                                  AND h.operation OPERATOR(pg_catalog.=) 'subscription_insert')
            UNION ALL
            SELECT s.account_id, format('add-on batch %s has no addon_batch_insert row', b.id)
              FROM subscription.addon_batch AS b
              JOIN subscription.subscription AS s ON s.id OPERATOR(pg_catalog.=) b.subscription_id
             WHERE NOT EXISTS (SELECT FROM subscription.history AS h
                                WHERE h.subscription_id OPERATOR(pg_catalog.=) b.subscription_id
                                  AND h.operation OPERATOR(pg_catalog.=) 'addon_batch_insert'
                                  AND h.details OPERATOR(pg_catalog.->>) 'id' OPERATOR(pg_catalog.=) b.id::text)
            UNION ALL
            SELECT s.account_id, format('the license of member %s on subscription %s has no license_assign row',
                                        l.member_id, l.subscription_id)
              FROM subscription.license AS l
              JOIN subscription.subscription AS s ON s.id OPERATOR(pg_catalog.=) l.subscription_id
             WHERE NOT EXISTS (SELECT FROM subscription.history AS h
                                WHERE h.subscription_id OPERATOR(pg_catalog.=) l.subscription_id
                                  AND h.operation OPERATOR(pg_catalog.=) 'license_assign'
                                  AND h.details OPERATOR(pg_catalog.->) 'members'
                                      OPERATOR(pg_catalog.@>) pg_catalog.jsonb_build_array(l.member_id))) AS h
     WHERE $1 IS NULL OR h.account_id OPERATOR(pg_catalog.=) $1
) AS v("check", account_id, detail)
ORDER BY 1, 2, 3
$$;

COMMENT ON FUNCTION subscription.verify(bigint) IS
'The invariants of seats, usage, periods, money and history: one row per broken one (of an account, or of all), nothing when all hold';

REVOKE ALL ON FUNCTION subscription.usage_drift(regclass, text, bigint), subscription.verify(bigint) FROM PUBLIC;

-- Who acts, and what they may do (Z1, R9, K8): the actor the application
-- names, the database role that calls, the one permission check; and the
-- history rows every change writes (R8).

-- The actor written to history: subscription.actor, else the session user.
-- In C: the license guard writes it without a query.
CREATE FUNCTION subscription.current_actor()
RETURNS text
AS 'MODULE_PATHNAME', 'current_actor'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.current_actor() IS 'The actor written to history: subscription.actor, else the session user';

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

-- "An empty actor is trusted", for back-office code only, stated once in
-- C (src/identity.c) for authorize, actor_refusal and the C callers.
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

-- The refusal of the actor for an action on an account, as the end of a
-- sentence, or NULL when it is allowed: the one statement of Z1, R9, K8.
--   owner: everything on the own account, except buying, paying and
--          changing the plan (an upgrade is paid) from a sub-account (K8);
--   admin: read, assign_licenses and set_default (R10), plus the rights in
--          member.rights (R9);
--          decrease_monthly_licenses allows decrease_licenses on monthly
--          subscriptions only;
--   member: nothing; nobody acts on another account.
-- Without an actor, only back-office roles are trusted.
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

-- the tenant of the account, then the keyed form
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

COMMENT ON FUNCTION subscription.actor_refusal(bigint, text, boolean) IS
'Why the actor may not do an action on an account, or NULL when it may (Z1, R9, K8)';

-- The one permission check every function calls.  Without an actor the
-- caller must be back-office code (42501 otherwise).  Actions: read,
-- assign_licenses, set_default, increase_licenses, decrease_licenses,
-- change_renewal, purchase, pay, change_plan, change_cycle, cancel,
-- accept_terms.  Z2: on a managed account an actor, whatever its role, is
-- refused change_cycle, change_renewal and cancel (cancel, cancel_account,
-- close_account, end_early, cancel_addon): a sales representative makes
-- those changes, from back-office code without an actor.
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

-- the tenant of the account, then the keyed form
CREATE FUNCTION subscription.authorize(account_id bigint, action text, monthly boolean DEFAULT false)
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

-- What the views show: the actor's own account (owner or admin), or
-- everything to back-office code.  The rights check once per statement
-- (issue 17): the accounts the actor may read, each (tenant_id,
-- account_id), or one row "everything" for back-office code without an
-- actor, none when nothing may be read (the tenant first, as every
-- function of the schema has it).  The views read it in a
-- MATERIALIZED CTE: on Citus a subplan run on the coordinator before the
-- shards are read (a query on a shard may call no function that reads a
-- distributed table), on a single server once, not once per row.  The
-- actor is looked up by its id in every tenant; actor_refusal() decides
-- for each of its rows (its own tenant named: an actor of another tenant
-- reads none of this one's rows, Z1).
CREATE FUNCTION subscription.readable_accounts()
RETURNS TABLE (tenant_id bigint, account_id bigint, everything boolean)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- read here: on Citus the query below runs on the workers, where the
    -- session's setting is not
    actor text := current_setting('subscription.actor', true);
    who record;
BEGIN
    IF NOT subscription.actor_named() THEN
        IF subscription.caller_is_trusted() THEN
            RETURN QUERY SELECT NULL::bigint, NULL::bigint, true;
        END IF;
        RETURN;
    END IF;
    FOR who IN SELECT m.tenant_id, m.account_id FROM subscription.member AS m WHERE m.id::text = actor
    LOOP
        IF subscription.actor_refusal(who.tenant_id, who.account_id, 'read', false) IS NULL THEN
            RETURN QUERY SELECT who.tenant_id, who.account_id, false;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.readable_accounts() IS
'Internal: the accounts the actor may read (Z1, R9), or everything for back-office code without an actor; what may_read() and the views check';

-- Keyed (issue 17): the tenant of the row.
CREATE FUNCTION subscription.may_read(tenant_id bigint, account_id bigint)
RETURNS boolean
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN EXISTS (SELECT FROM subscription.readable_accounts() AS r
                    WHERE r.everything
                       OR (r.tenant_id = may_read.tenant_id AND r.account_id = may_read.account_id));
END
$$;

COMMENT ON FUNCTION subscription.may_read(bigint, bigint) IS
'Whether the actor (or back-office code without one) may read the account''s rows (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form
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

-- Statement trigger of subscription, account, member, addon_batch and
-- terms_acceptance (Z11), in C (src/history.c): one history row per
-- changed row, computed in one query over the transition tables, with the
-- changed columns as jsonb ({"column": {"old": .., "new": ..}} on UPDATE,
-- the row on INSERT and DELETE).  One trigger per event, as a trigger with
-- transition tables fires on one: <table>_history on INSERT (the name the
-- row trigger had), <table>_history_update and <table>_history_delete.
-- License writes are recorded per statement and subscription by the
-- license guard.
CREATE FUNCTION subscription.record_history()
RETURNS trigger
AS 'MODULE_PATHNAME', 'record_history'
LANGUAGE C;

COMMENT ON FUNCTION subscription.record_history() IS 'Trigger: one history row per change of accounts, members, subscriptions, add-on batches and terms acceptances (R8, Z11)';

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

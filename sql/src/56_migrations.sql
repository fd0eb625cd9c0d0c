-- Migrations (grandfathering, L6): moving the subscriptions of a plan, or
-- of older versions of a plan, to a plan's current version at a renewal.

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

COMMENT ON FUNCTION subscription.migration_candidates(text, text, text, timestamptz, interval) IS
'Internal: the subscriptions a migration moves, when, and to which version';

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
    -- each subscription read and written by its tenant: one shard on Citus (issue 17)
    tenant bigint;
    sold record;
BEGIN
    PERFORM subscription.require_arguments('migrate_subscriptions', '{trim}', ARRAY[migrate_subscriptions."trim" IS NULL]);
    FOR c IN SELECT * FROM subscription.migration_candidates('migrate_subscriptions', from_plan, to_plan, at, notice)
    LOOP
        tenant := subscription.tenant_of('subscription', c.subscription_id);
        -- the subscription's writers wait; one that moved on meanwhile is left
        PERFORM FROM subscription.subscription AS s
         WHERE s.tenant_id = tenant AND s.id = c.subscription_id AND s.status = 'active' AND s.plan = from_plan
           AND s.pending_plan IS NULL AND s.migrate_to IS NULL
           FOR NO KEY UPDATE;
        CONTINUE WHEN NOT FOUND;
        -- the new plan must sell the subscription's cycle and quantity (22023,
        -- 55000), priced here (on Citus not in a query of the shard)
        SELECT s.cycle, s.quantity INTO sold FROM subscription.subscription AS s
         WHERE s.tenant_id = tenant AND s.id = c.subscription_id;
        PERFORM subscription.period_price(to_plan, sold.cycle, sold.quantity, c.version);
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
         WHERE s.tenant_id = tenant AND s.id = c.subscription_id;
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
DECLARE
    c record;
    s subscription.subscription;
    price record;
BEGIN
    -- candidate by candidate, each read by itself: on Citus a join of the
    -- candidates with subscription whose lateral calls read the tenant
    -- tables is not one query the workers can run (issue 17)
    FOR c IN SELECT * FROM subscription.migration_candidates('preview_migration', from_plan, to_plan, at, notice)
    LOOP
        SELECT x.* INTO s FROM subscription.subscription AS x WHERE x.id = c.subscription_id;
        SELECT p.* INTO price FROM subscription.period_price(to_plan, s.cycle, s.quantity, c.version) AS p;
        RETURN QUERY
        SELECT s.id, s.account_id, c.takes_effect_at, to_plan, c.version,
               subscription.round_money(price.amount, price.currency), price.currency,
               o.feature, o.used, o.new_limit
          FROM (SELECT) AS one
          LEFT JOIN (SELECT * FROM subscription.migration_shortfall(s.id, to_plan, c.version)) AS o ON true
         ORDER BY o.feature;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.preview_migration(text, text, timestamptz, interval) IS
'The subscriptions migrate_subscriptions would move, when, at what price, and the features in use it would take away (Z9, L6)';

-- Cancels a subscription's pending migration before it takes effect: it
-- keeps the version it holds.  Back-office work, as the migration.
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

-- Lifecycle: what takes effect at the next period (Z7, Z8, R6).

-- The subscription, locked for a change, with the actor's right checked;
-- 55000 unless it is active.
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
    PERFORM subscription.authorize(s.account_id, action);
    IF s.status <> 'active' THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s() changes active subscriptions only.', fn);
    END IF;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.subscription_for_change(bigint, text, bigint, text) IS
'Internal: the subscription locked for a change, the actor''s right checked (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form
CREATE FUNCTION subscription.subscription_for_change(fn text, subscription_id bigint, action text)
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

-- The add-ons of a subscription that renew with it (active, recurring,
-- not cancelled) and have no price for "cycle", as a list, or NULL.
CREATE FUNCTION subscription.unpriced_addons(tenant_id bigint, subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT string_agg(DISTINCT b.addon, ', ')
              FROM subscription.addon_batch AS b
              JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon AND NOT a.one_time
             WHERE b.tenant_id OPERATOR(pg_catalog.=) unpriced_addons.tenant_id
               AND b.subscription_id OPERATOR(pg_catalog.=) unpriced_addons.subscription_id
               AND b.status OPERATOR(pg_catalog.=) 'active' AND NOT b.cancel_at_period_end
               AND NOT EXISTS (SELECT FROM subscription.addon_price AS ap
                                WHERE ap.addon OPERATOR(pg_catalog.=) b.addon
                                  AND subscription.cycle_key(ap.cycle) OPERATOR(pg_catalog.=)
                                      subscription.cycle_key(unpriced_addons.cycle)));
END
$$;

COMMENT ON FUNCTION subscription.unpriced_addons(bigint, bigint, interval) IS
'Internal: the renewing add-ons of a subscription with no price for a cycle (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form
CREATE FUNCTION subscription.unpriced_addons(subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN subscription.unpriced_addons(subscription.tenant_of('subscription', unpriced_addons.subscription_id),
                                    unpriced_addons.subscription_id, unpriced_addons.cycle);

COMMENT ON FUNCTION subscription.unpriced_addons(bigint, interval) IS 'Internal: the renewing add-ons of a subscription with no price for a cycle';

-- Z7: a new cycle takes effect when the next period starts (switching an
-- annual plan to monthly in its first month takes effect eleven months
-- later); the plan must have a price for it.  Returns when it takes effect.
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
    PERFORM subscription.require_tenant('change_cycle', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('change_cycle', '{subscription_id,cycle}',
        ARRAY[subscription_id IS NULL, cycle IS NULL]);
    PERFORM subscription.require_cycle(cycle);
    s := subscription.subscription_for_change('change_cycle', subscription_id, 'change_cycle');
    PERFORM subscription.require_terms(s.account_id, now());
    -- the plan must sell this cycle for the quantity, and so must the
    -- add-ons that will renew with it (22023 otherwise)
    PERFORM subscription.period_price(n.plan, cycle, coalesce(s.pending_quantity, s.quantity), n.version)
       FROM subscription.next_plan(s) AS n;
    missing := subscription.unpriced_addons(s.id, cycle);
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

COMMENT ON FUNCTION subscription.change_cycle(bigint, bigint, interval) IS
'A new billing cycle from the next period (Z7); returns when it takes effect (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.change_cycle(subscription_id bigint, cycle interval)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.change_cycle(subscription.tenant_of('subscription', change_cycle.subscription_id), change_cycle.subscription_id, change_cycle.cycle);
END
$$;

COMMENT ON FUNCTION subscription.change_cycle(bigint, interval) IS 'A new billing cycle from the next period (Z7); returns when it takes effect';

-- R6: the renewal option; admins need the right change_renewal (R9).
CREATE FUNCTION subscription.set_renewal(tenant_id bigint, subscription_id bigint, renewal text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_tenant('set_renewal', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_renewal', '{subscription_id,renewal}',
        ARRAY[subscription_id IS NULL, renewal IS NULL]);
    PERFORM subscription.require_renewal(renewal);
    PERFORM subscription.subscription_for_change('set_renewal', subscription_id, 'change_renewal');
    UPDATE subscription.subscription AS x SET renewal = set_renewal.renewal
     WHERE x.tenant_id = set_renewal.tenant_id AND x.id = set_renewal.subscription_id;
END
$$;

COMMENT ON FUNCTION subscription.set_renewal(bigint, bigint, text) IS
'The renewal option: none, once, always, to_monthly (R6) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.set_renewal(subscription_id bigint, renewal text)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.set_renewal(subscription.tenant_of('subscription', set_renewal.subscription_id), set_renewal.subscription_id, set_renewal.renewal);
END
$$;

COMMENT ON FUNCTION subscription.set_renewal(bigint, text) IS 'The renewal option: none, once, always, to_monthly (R6)';

-- Z8: a cancellation takes effect at the end of the period; until then the
-- subscription stays active.  Returns when it ends.  Cancelling again is
-- harmless and returns the same time.
CREATE FUNCTION subscription.cancel(tenant_id bigint, subscription_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    PERFORM subscription.require_tenant('cancel', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('cancel', '{subscription_id}', ARRAY[subscription_id IS NULL]);
    s := subscription.subscription_for_change(cancel.tenant_id, 'cancel', subscription_id, 'cancel');
    UPDATE subscription.subscription AS x SET cancel_at_period_end = true
     WHERE x.tenant_id = cancel.tenant_id AND x.id = s.id AND NOT x.cancel_at_period_end;
    RETURN upper(s.period);
END
$$;

COMMENT ON FUNCTION subscription.cancel(bigint, bigint) IS
'Cancel at the end of the period (Z8); returns when it ends (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.cancel(subscription_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.cancel(subscription.tenant_of('subscription', cancel.subscription_id), cancel.subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.cancel(bigint) IS 'Cancel at the end of the period (Z8); returns when it ends';

-- Z8: the whole account: every active subscription, each at its period end.
CREATE FUNCTION subscription.cancel_account(tenant_id bigint, account_id bigint)
RETURNS TABLE (subscription_id bigint, ends_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_tenant('cancel_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('cancel_account', '{account_id}', ARRAY[account_id IS NULL]);
    PERFORM subscription.require_account(cancel_account.account_id);
    PERFORM subscription.authorize(account_id, 'cancel');
    RETURN QUERY
    SELECT s.id, subscription.cancel(s.id)
      FROM subscription.subscription AS s
     WHERE s.tenant_id = cancel_account.tenant_id AND s.account_id = cancel_account.account_id
       AND s.status = 'active'
     ORDER BY s.id;
END
$$;

COMMENT ON FUNCTION subscription.cancel_account(bigint, bigint) IS
'Cancel every active subscription of the account, each at its period end (Z8) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.cancel_account(account_id bigint)
RETURNS TABLE (subscription_id bigint, ends_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM subscription.cancel_account(subscription.tenant_of('account', cancel_account.account_id), cancel_account.account_id);
END
$$;

COMMENT ON FUNCTION subscription.cancel_account(bigint) IS 'Cancel every active subscription of the account, each at its period end (Z8)';

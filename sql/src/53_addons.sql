-- Add-ons (K1-K5, Z6).

-- The price of "quantity" units of an add-on for a cycle (NULL: the
-- one-time price); 22023 when the add-on is not sold so.
CREATE FUNCTION subscription.addon_period_price(addon text, cycle interval, quantity integer,
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

-- K1-K3, Z6: a batch of add-on units for the subscription.  A recurring
-- add-on is charged for the rest of the current period, prorated by day,
-- and renews with the plan; the ledger line names the full-cycle amount
-- (K3).  A one-time add-on is charged in full, once (K2).
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

COMMENT ON FUNCTION subscription.purchase_addon(bigint, bigint, text, integer, timestamptz) IS
'Buy add-on units for the rest of the period, or once (K1-K3, Z6) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.purchase_addon(subscription_id bigint, addon text, quantity integer DEFAULT 1,
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

COMMENT ON FUNCTION subscription.purchase_addon(bigint, text, integer, timestamptz) IS 'Buy add-on units for the rest of the period, or once (K1-K3, Z6)';

-- K4, K5: the whole batch ends with the period and is not billed again;
-- it can be bought again.  Returns when it ends.
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

COMMENT ON FUNCTION subscription.cancel_addon(bigint, bigint) IS
'End an add-on batch with the period (K4, K5); returns when it ends (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the addon batch, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.cancel_addon(batch_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.cancel_addon(subscription.tenant_of('addon_batch', cancel_addon.batch_id), cancel_addon.batch_id);
END
$$;

COMMENT ON FUNCTION subscription.cancel_addon(bigint) IS 'End an add-on batch with the period (K4, K5); returns when it ends';

-- Subscribing: a coupon's checks, the terms (Z11), and subscribe() with its
-- first charge.

-- Z10: the coupon exists (42704), is not past its redeem-by date nor out
-- of redemptions (55000), and is in the plan's currency when it takes an
-- amount off (22023).  Locks the coupon: concurrent redemptions of the
-- last one queue.
CREATE FUNCTION subscription.redeemable_coupon(code text, at timestamptz, price_currency text)
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

COMMENT ON FUNCTION subscription.redeemable_coupon(text, timestamptz, text) IS 'Internal: the Z10 checks of a coupon, locking it';

-- Z11: the terms version in effect at a time: the one with the latest
-- effective_at not after it (NULL when none is).
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

-- Z11: 55000 unless the account accepted the terms version in effect at
-- "at" (or a later one).  No version in effect: nothing to accept.  The
-- changes that ask for it: subscribe (so an account's first subscription),
-- change_plan, change_cycle, set_quantity and purchase_addon; renewals,
-- cancellations and license assignments do not.
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

-- the tenant of the account, then the keyed form
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

COMMENT ON FUNCTION subscription.require_terms(bigint, timestamptz) IS
'Internal: 55000 unless the account accepted the terms version in effect at a time, or a later one (Z11)';

-- Z11: the account accepts a terms version (in effect, or taking effect
-- later) at "at"; the actor, else the session user, is recorded as the
-- one who accepted, in terms_acceptance and in history.  Accepting a
-- version again changes nothing.  Only the account owner accepts (or
-- back-office code); a version older than the one in effect cannot be
-- accepted (55000).
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
                   plan, subscription.cycle_text(cycle), quantity,
                   CASE WHEN period = full_period THEN ''
                        ELSE format(', to the billing date %s', subscription.event_time(upper(period))) END));
    -- U3: the usage counters close with its period
    PERFORM subscription.open_usage(subscribe.tenant_id, subscribe.account_id);

    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.subscribe(bigint, bigint, text, interval, integer, timestamptz, text, text) IS
'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.subscribe(
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

COMMENT ON FUNCTION subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text) IS 'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4)';

-- Subscribing: a coupon's checks, and subscribe() with its first charge.

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

CREATE FUNCTION subscription.subscribe(
    account_id bigint,
    plan text,
    cycle interval,
    quantity integer DEFAULT 1,
    at timestamptz DEFAULT now(),
    renewal text DEFAULT 'always',
    coupon text DEFAULT NULL)
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
BEGIN
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
     WHERE a.id = subscribe.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(account_id, 'purchase');
    PERFORM subscription.require_open_account(account_id);
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

    -- R10: an account's first service subscription is its default one;
    -- it holds the plan's current version (grandfathering)
    INSERT INTO subscription.subscription AS s
           (account_id, plan, plan_version, cycle, quantity, paid_quantity, period, anchor, period_number, renewal,
            is_default, coupon, coupon_periods_left)
    SELECT subscribe.account_id, subscribe.plan, p.version, subscribe.cycle, subscribe.quantity, subscribe.quantity,
           period, anchor_at, k, subscribe.renewal,
           p.kind = 'service' AND NOT EXISTS (
               SELECT FROM subscription.subscription AS d
                WHERE d.account_id = subscribe.account_id AND d.is_default),
           subscribe.coupon, (SELECT c.cycles FROM subscription.coupon AS c WHERE c.code = subscribe.coupon)
      FROM subscription.plan AS p
     WHERE p.code = subscribe.plan
    RETURNING s.id INTO new_id;

    INSERT INTO subscription.ledger
           (account_id, subscription_id, kind, amount, currency, period, plan, description)
    VALUES (subscribe.account_id, new_id, 'charge',
            CASE WHEN period = full_period
                 THEN subscription.round_money(price.amount, price.currency)
                 ELSE subscription.unused_part(price.amount, full_period, at, price.currency) END,
            price.currency, period, plan,
            format('plan %s, cycle %s, quantity %s%s', plan, cycle, quantity,
                   CASE WHEN period = full_period THEN ''
                        ELSE format(', to the billing date %s', upper(period)) END));

    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text) IS 'Subscribe an account to a plan and charge the first period, prorated to the billing anchor (L4)';

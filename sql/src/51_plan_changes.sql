-- Lifecycle: plan changes (C1-C4, Z5), and the invoice they show in (C3).

-- Gives back the unused part [at, end) of every charge of the
-- subscription's current period not given back yet: the plan and the
-- licenses added since, each charge as it was really paid (less its
-- discounts), not at the list price.  kind 'refund' pays it back, 'credit'
-- keeps it on the account (L9).  One line per charge, linked to it, so
-- that no charge is given back twice.  Returns the total.
CREATE FUNCTION subscription.give_back_unused(s subscription.subscription, at timestamptz, kind text, reason text)
RETURNS numeric
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total numeric;
BEGIN
    WITH open_charges AS (
        SELECT c.id, c.currency, c.period, c.plan, c.item,
               c.amount - coalesce((
                   SELECT sum(d.amount) FROM subscription.ledger AS d
                    WHERE d.charge_id = c.id
                      AND d.kind = 'discount'), 0) AS paid
          FROM subscription.ledger AS c
         WHERE c.subscription_id = s.id
           AND c.kind = 'charge'
           AND c.addon_batch_id IS NULL
           AND c.period && s.period
           AND NOT EXISTS (SELECT FROM subscription.ledger AS r
                            WHERE r.charge_id = c.id
                              AND r.kind = ANY ('{refund,credit}'))),
    given AS (
        INSERT INTO subscription.ledger AS l
               (account_id, subscription_id, kind, amount, currency, period, item, plan, charge_id, description)
        SELECT s.account_id, s.id, give_back_unused.kind,
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

-- C1-C4, Z5.  A higher (or equal) rank is an upgrade, by the product's
-- upgrade mode: 'restart' gives back the unused part of what was paid and
-- starts a new full period now at the new price (C1); 'prorate' keeps the
-- period, gives back the unused part and charges the new price for the
-- rest of it.  An upgrade drops a pending downgrade.  A lower rank is a
-- downgrade, by the downgrade mode: 'end_of_period' stores it as
-- pending_plan for renew_due (C4); 'immediate' prorates like an upgrade
-- and trims the account's data now through apply_downgrade.  Changing to
-- the current plan drops a pending downgrade.
CREATE FUNCTION subscription.change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT now())
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
         WHERE x.id = s.id AND x.pending_plan IS NOT NULL;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO modes FROM subscription.product AS p WHERE p.code = new_plan.product;
    IF new_plan.rank < old_plan.rank AND modes.downgrade = 'end_of_period' THEN
        -- C4: the current plan runs to the end of the period; the new one
        -- must sell the cycle and quantity of the next (22023, 55000)
        PERFORM subscription.period_price(new_plan.code, coalesce(s.pending_cycle, s.cycle),
                                          coalesce(s.pending_quantity, s.quantity));
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code WHERE x.id = s.id;
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
           (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.account_id, s.id, 'charge', charge, price.currency,
            tstzrange(at, upper(new_period), '[)'), format('change to %s', new_plan.code), new_plan.code,
            format('plan %s from %s, cycle %s, quantity %s', new_plan.code, at, s.cycle, s.quantity));

    IF new_plan.rank < old_plan.rank THEN
        -- immediate downgrade: apply_downgrade moves to the plan and trims
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code, paid_quantity = x.quantity
         WHERE x.id = s.id;
        PERFORM FROM subscription.apply_downgrade(s.id);
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = new_plan.code, pending_plan = NULL, paid_quantity = x.quantity,
               period = new_period,
               anchor = CASE WHEN new_period = s.period THEN x.anchor ELSE at END
         WHERE x.id = s.id;
    END IF;
    RETURN NEXT;
END
$$;

COMMENT ON FUNCTION subscription.change_plan(bigint, text, timestamptz) IS 'Upgrade now (prorated or restarted) or downgrade at the period end (C1-C4, Z5)';

-- C3: one row per billing event of a subscription, the lines effective at
-- one time (a change gives back from and charges from its time): the
-- plan, what was charged net of discounts (the invoice), what was given
-- back, and the balance paid (the receipt).
CREATE VIEW subscription.invoice WITH (security_barrier) AS
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

COMMENT ON VIEW subscription.invoice IS
'One row per billing event of a subscription: plan, charged, refunded, credited and the balance (C3)';

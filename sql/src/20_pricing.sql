-- Pricing: catalog look-ups, one place for each rule: tiers, rounding to
-- a currency's minor unit, the price of a plan for a cycle and quantity,
-- and the proration in C.

CREATE FUNCTION subscription.tier_for_hosts(
    hosts integer,
    tiers integer[] DEFAULT '{25,100,250,500,1000,2500}')
RETURNS integer
AS 'MODULE_PATHNAME', 'tier_for_hosts'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.tier_for_hosts(integer, integer[]) IS
'The smallest tier holding hosts (L3, L12)';

CREATE FUNCTION subscription.prorate_refund(
    amount numeric,
    period_start timestamptz,
    period_end timestamptz,
    at timestamptz,
    unit text DEFAULT 'day',
    scale integer DEFAULT 2)
RETURNS numeric
AS 'MODULE_PATHNAME', 'prorate_refund'
-- STABLE: whole days are counted in the session's TimeZone
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.prorate_refund(numeric, timestamptz, timestamptz, timestamptz, text, integer) IS
'Refund of the unused part [at, period_end) of amount, rounded once half away from zero';

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

CREATE FUNCTION subscription.tier_for_hosts(plan text, hosts integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'tier_for_hosts_plan'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.tier_for_hosts(text, integer) IS
'The smallest tier of a tiered plan holding hosts (L3, L12)';

-- Digits of a currency's minor unit: the one reader of the rounding rule,
-- for round_money and for the scale prorate_refund rounds to.
CREATE FUNCTION subscription.money_scale(currency text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT c.exponent FROM subscription.currency AS c WHERE c.code OPERATOR(pg_catalog.=) money_scale.currency;
END;

COMMENT ON FUNCTION subscription.money_scale(text) IS 'The digits of a currency''s minor unit';

-- Rounds an amount to its currency's minor unit, half away from zero.
CREATE FUNCTION subscription.round_money(amount numeric, currency text)
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

COMMENT ON FUNCTION subscription.round_money(numeric, text) IS 'Round an amount to its currency''s minor unit, half away from zero';

-- The part of amount for the days of period from at on, rounded once to
-- the currency's minor unit (prorate_refund by whole days): the refund of
-- a charge's unused days, and the charge for what is left of a period.
CREATE FUNCTION subscription.unused_part(amount numeric, period tstzrange, at timestamptz, currency text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
RETURN subscription.prorate_refund(unused_part.amount, pg_catalog.lower(unused_part.period),
                                   pg_catalog.upper(unused_part.period), unused_part.at, 'day',
                                   subscription.money_scale(unused_part.currency));

COMMENT ON FUNCTION subscription.unused_part(numeric, tstzrange, timestamptz, text) IS
'The part of amount for the whole days of period from at on, rounded to the currency (prorate_refund by day)';

-- The DETAIL of a missing price: the cycles a plan or add-on is sold for,
-- as its catalog writes them.
CREATE FUNCTION subscription.sold_cycles(kind text, code text)
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

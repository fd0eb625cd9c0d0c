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

-- C1-C4, Z5.  A higher (or equal) rank is an upgrade, by the product's
-- upgrade mode: 'restart' gives back the unused part of what was paid and
-- starts a new full period now at the new price (C1); 'prorate' keeps the
-- period, gives back the unused part and charges the new price for the
-- rest of it.  An upgrade drops a pending downgrade.  A lower rank is a
-- downgrade, by the downgrade mode: 'end_of_period' stores it as
-- pending_plan for renew_due (C4); 'immediate' prorates like an upgrade
-- and trims the account's data now through apply_downgrade.  Changing to
-- the current plan drops a pending downgrade.
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
            format('plan %s from %s, cycle %s, quantity %s', new_plan.code, subscription.event_time(at),
                   subscription.cycle_text(s.cycle), s.quantity));

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

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT subscription.now())
RETURNS TABLE (effective_at timestamptz, refund numeric, charge numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM subscription.change_plan(subscription.tenant_of('subscription', change_plan.subscription_id), change_plan.subscription_id, change_plan.plan, change_plan.at);
END
$$;

COMMENT ON FUNCTION subscription.change_plan(bigint, text, timestamptz) IS 'Upgrade now (prorated or restarted) or downgrade at the period end (C1-C4, Z5)';

-- Z3: move the account's separate subscriptions of a suite's included
-- products (those whose licenses take a seat of one, R11) into one new
-- subscription of the suite, with "quantity" licenses (NULL: the largest
-- quantity among those it replaces), on the longest of their cycles.  Each
-- ends as end_early ends it, its unused days credited (L9), and the
-- credit pays the suite's first charge (L10); the members holding their
-- licenses hold the suite's.  All or nothing: 23514 names the products
-- when the suite has fewer licenses than those members.
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

    -- the separate subscriptions, locked in id order (row by row: Citus
    -- sends no row of a subquery's anonymous type, issue 17)
    FOR r IN SELECT x.* FROM subscription.subscription AS x
               JOIN subscription.plan AS p ON p.code = x.plan
              WHERE x.tenant_id = bundle_into_suite.tenant_id AND x.account_id = bundle_into_suite.account_id
                AND x.status = 'active'
                AND subscription.seat_product(p.kind, p.product) = ANY (included)
              ORDER BY x.id
                FOR NO KEY UPDATE OF x LOOP
        replaced := replaced || r;
    END LOOP;
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

COMMENT ON FUNCTION subscription.bundle_into_suite(bigint, bigint, text, integer, timestamptz) IS
'Move the account''s separate subscriptions of a suite''s products into one suite subscription, their unused days credited (Z3, L9) (keyed form: the tenant first, docs/design.md#keyed-forms)';

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

-- the view invoice (C3) is over the invoices: 57_invoices.sql

-- Usage-based billing (issue 21): meters, usage prices billed in arrears
-- at each renewal, and usage recorded without rows (U1-U5).

-- The counter moved by the limit guard's own code (src/limits.c,
-- MoveUsage): the same limit (23514) and the same meter accumulators as a
-- write of a registered table.  Returns the new use.  in_tenant: the
-- account's tenant, where an unknown account is P0002.  at: the usage's
-- time, which the meters and the period's end (U3) take; NULL: the
-- meters' clock.
CREATE FUNCTION subscription.move_usage(account_id bigint, feature text, delta bigint, in_tenant bigint, at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'move_usage'
LANGUAGE C;

COMMENT ON FUNCTION subscription.move_usage(bigint, text, bigint, bigint, timestamptz) IS
'Internal (C): move an account''s usage counter (of tenant in_tenant) by delta at a time under its limit, as the limit guard does; the new use';

-- U1: a meter on a feature registered with enforce_limit (its limit may
-- be unlimited): which figure of the feature's counter a usage price
-- bills.  count: the rows at the period's end; peak: the most during the
-- period; time_weighted: the rows integrated over the period, in row-units
-- of unit (row-days by default); sum: the sum of the registration's value
-- column (a registration that sums it: on_downgrade 'scale').  The guard
-- of a feature without a meter leaves the peak and the integral as they
-- are (src/limits.c, MoveUsage): a new meter starts them, from the use of
-- now, at the meters' time.
CREATE FUNCTION subscription.meter(relation regclass, feature text, aggregation text, unit interval DEFAULT '1 day')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    registration subscription.limited_table;
    -- a value first: Citus updates the counters with no function of their columns
    t timestamptz := subscription.meter_now();
BEGIN
    PERFORM subscription.require_arguments('meter', '{relation,feature,aggregation,unit}',
        ARRAY[relation IS NULL, feature IS NULL, aggregation IS NULL, unit IS NULL]);
    SELECT t.* INTO registration FROM subscription.limited_table AS t
     WHERE t.relation = meter.relation AND t.feature = meter.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" is not enforced on table "%"', feature, relation
            USING ERRCODE = 'undefined_object',
                  HINT = 'A meter counts the rows of a table registered with subscription.enforce_limit(); usage without rows is recorded with subscription.record_usage().';
    END IF;
    IF aggregation NOT IN ('count', 'peak', 'time_weighted', 'sum') THEN
        RAISE EXCEPTION 'unknown aggregation "%"', aggregation
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The aggregations are count, peak, time_weighted and sum.';
    END IF;
    IF aggregation = 'sum' AND registration.on_downgrade <> 'scale' THEN
        RAISE EXCEPTION 'feature "%" does not count the sum of a value column', feature
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Register the table with on_downgrade => ''scale'' and its value_column, whose sum the counter then keeps.';
    END IF;
    IF unit <= interval '0' THEN
        RAISE EXCEPTION 'the unit of a meter must be a positive interval'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', unit);
    END IF;
    INSERT INTO subscription.meter AS m (feature, aggregation, unit)
    VALUES (meter.feature, meter.aggregation, meter.unit)
    ON CONFLICT ON CONSTRAINT meter_pkey DO NOTHING;
    IF NOT FOUND THEN
        UPDATE subscription.meter AS m SET aggregation = meter.aggregation, unit = meter.unit
         WHERE m.feature = meter.feature;
        RETURN;
    END IF;
    -- U1: a new meter: its feature's accumulators start now, from the use
    UPDATE subscription.usage_counter AS u SET peak = u.used, integral = 0, since = greatest(u.since, t)
     WHERE u.feature = meter.feature;
END
$$;

COMMENT ON FUNCTION subscription.meter(regclass, text, text, interval) IS
'Meter a feature registered with enforce_limit: count, peak, time_weighted (in row-units of unit) or sum, billed by its usage price (U1)';

-- U1: whether a feature has a meter is part of its tables' registration
-- as the guard caches it (src/limits.c, GetLimitEntry): a meter created,
-- changed or removed (meter(), unenforce_limit's cascade, the extension
-- owner's DELETE, a restore) invalidates it on every backend at commit.
-- On Citus the guard reads the meter with each write (MoveCitusUsage), and
-- a worker's placement names another node's relations: nothing to do.
CREATE FUNCTION subscription.meter_invalidates()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF subscription.distributed() THEN
        RETURN NULL;
    END IF;
    PERFORM subscription.invalidate_limit_cache(t.relation)
       FROM subscription.limited_table AS t
      WHERE t.feature IN (OLD.feature, NEW.feature);
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.meter_invalidates() IS
'Internal (trigger): a meter created, changed or removed invalidates the limit guard''s cache of its feature''s tables (U1)';

CREATE TRIGGER meter_invalidates AFTER INSERT OR UPDATE OR DELETE ON subscription.meter
    FOR EACH ROW EXECUTE FUNCTION subscription.meter_invalidates();

-- 22023 unless tiers suit mode (U2): graduated and volume take NULL or a
-- non-empty array of {"up_to", "unit_amount", "flat_amount"}, up_to
-- increasing positive integers and null for the last tier only; package
-- takes {"size": n}, n a positive integer.
CREATE FUNCTION subscription.require_usage_tiers(mode text, tiers jsonb)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem text;
BEGIN
    IF mode = 'package' THEN
        IF jsonb_typeof(tiers) IS DISTINCT FROM 'object' OR jsonb_typeof(tiers -> 'size') IS DISTINCT FROM 'number'
           OR (tiers ->> 'size')::numeric < 1 OR (tiers ->> 'size')::numeric <> trunc((tiers ->> 'size')::numeric) THEN
            problem := 'package takes {"size": n}, n a positive integer';
        END IF;
    ELSIF tiers IS NOT NULL THEN
        IF jsonb_typeof(tiers) <> 'array' OR jsonb_array_length(tiers) = 0 THEN
            problem := 'tiers are a non-empty JSON array';
        ELSE
            -- the first problem of any tier
            SELECT p INTO problem FROM (
                SELECT CASE
                       WHEN jsonb_typeof(t.value) <> 'object' THEN format('tier %s is not an object', t.n)
                       WHEN jsonb_typeof(t.value -> 'up_to') IS NULL OR jsonb_typeof(t.value -> 'up_to') NOT IN ('number', 'null')
                            THEN format('tier %s has no up_to (null for the last)', t.n)
                       WHEN jsonb_typeof(t.value -> 'up_to') = 'null' AND t.n < jsonb_array_length(tiers)
                            THEN format('tier %s: only the last tier has up_to null', t.n)
                       WHEN jsonb_typeof(t.value -> 'up_to') = 'number' AND t.n = jsonb_array_length(tiers)
                            THEN 'the last tier has up_to null'
                       WHEN jsonb_typeof(t.value -> 'up_to') = 'number'
                            AND ((t.value ->> 'up_to')::numeric <> trunc((t.value ->> 'up_to')::numeric)
                                 OR (t.value ->> 'up_to')::numeric
                                    <= coalesce(lag(CASE WHEN jsonb_typeof(t.value -> 'up_to') = 'number' THEN (t.value ->> 'up_to')::numeric END)
                                                OVER (ORDER BY t.n), 0))
                            THEN format('tier %s: up_to must be an integer above the previous tier''s', t.n)
                       WHEN jsonb_typeof(coalesce(t.value -> 'unit_amount', '0')) <> 'number'
                            OR coalesce((t.value ->> 'unit_amount')::numeric, 0) < 0
                            THEN format('tier %s: unit_amount must be a number of 0 or more', t.n)
                       WHEN jsonb_typeof(coalesce(t.value -> 'flat_amount', '0')) <> 'number'
                            OR coalesce((t.value ->> 'flat_amount')::numeric, 0) < 0
                            THEN format('tier %s: flat_amount must be a number of 0 or more', t.n)
                       END AS p, t.n
                  FROM jsonb_array_elements(tiers) WITH ORDINALITY AS t(value, n)) AS x
             WHERE x.p IS NOT NULL
             ORDER BY x.n
             LIMIT 1;
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'invalid tiers for mode %: %', mode, problem
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The tiers were %s.', tiers);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_usage_tiers(text, jsonb) IS
'Internal: 22023 unless the tiers suit the mode of a usage price (U2)';

-- U2: the price of a billable quantity (the aggregate less what the plan
-- includes), unrounded: the one tier formula, for the bill and its tests.
--   graduated: each unit at the price of the tier it falls in, plus the
--     flat amount of every tier it reaches;
--   volume: every unit at the price of the tier the whole quantity falls
--     in, plus that tier's flat amount;
--   package: unit_amount per started package of tiers.size units;
--   tiers NULL (graduated, volume): every unit at unit_amount.
-- A tier's unit_amount defaults to unit_amount, its flat_amount to 0.
CREATE FUNCTION subscription.usage_amount(quantity numeric, unit_amount numeric, tiers jsonb, mode text)
RETURNS numeric
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    amount numeric;
BEGIN
    PERFORM subscription.require_arguments('usage_amount', '{quantity,unit_amount,mode}',
        ARRAY[quantity IS NULL, unit_amount IS NULL, mode IS NULL]);
    IF quantity < 0 OR quantity = 'NaN' OR quantity >= 'Infinity' THEN
        RAISE EXCEPTION 'a billable quantity must be a finite number of 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity);
    END IF;
    IF mode NOT IN ('graduated', 'volume', 'package') THEN
        RAISE EXCEPTION 'unknown usage price mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The modes are graduated, volume and package.';
    END IF;
    PERFORM subscription.require_usage_tiers(mode, tiers);
    IF quantity = 0 THEN
        RETURN 0;
    END IF;
    IF mode = 'package' THEN
        RETURN ceil(quantity / (tiers ->> 'size')::numeric) * unit_amount;
    END IF;
    IF tiers IS NULL THEN
        RETURN quantity * unit_amount;
    END IF;
    WITH t AS (
        SELECT coalesce(lag((e.value ->> 'up_to')::numeric) OVER (ORDER BY e.n), 0) AS from_,
               (e.value ->> 'up_to')::numeric AS up_to,
               coalesce((e.value ->> 'unit_amount')::numeric, usage_amount.unit_amount) AS unit,
               coalesce((e.value ->> 'flat_amount')::numeric, 0) AS flat
          FROM jsonb_array_elements(tiers) WITH ORDINALITY AS e(value, n))
    SELECT CASE mode
           WHEN 'graduated' THEN
               (SELECT sum((least(quantity, coalesce(t.up_to, quantity)) - t.from_) * t.unit + t.flat)
                  FROM t WHERE quantity > t.from_)
           ELSE
               (SELECT quantity * t.unit + t.flat
                  FROM t WHERE quantity > t.from_ AND (t.up_to IS NULL OR quantity <= t.up_to))
           END
      INTO amount;
    RETURN amount;
END
$$;

COMMENT ON FUNCTION subscription.usage_amount(numeric, numeric, jsonb, text) IS
'The price of a billable quantity of usage by mode (graduated, volume, package) and tiers, unrounded (U2)';

-- U2: set a plan's price of the use of a feature beyond what it includes
-- (replacing the one it had), billed in arrears at each renewal.
CREATE FUNCTION subscription.plan_usage_price(plan text, feature text, included bigint, unit_amount numeric,
                                              tiers jsonb DEFAULT NULL, mode text DEFAULT 'graduated',
                                              currency text DEFAULT 'EUR')
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('plan_usage_price', '{plan,feature,included,unit_amount,mode,currency}',
        ARRAY[plan IS NULL, feature IS NULL, included IS NULL, unit_amount IS NULL, mode IS NULL, currency IS NULL]);
    IF NOT EXISTS (SELECT FROM subscription.plan AS p WHERE p.code = plan_usage_price.plan) THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    PERFORM subscription.require_feature(feature);
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = plan_usage_price.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    IF included < 0 THEN
        RAISE EXCEPTION 'a usage price includes 0 units or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was given %s.', included);
    END IF;
    IF unit_amount < 0 OR unit_amount = 'NaN' OR unit_amount >= 'Infinity' THEN
        RAISE EXCEPTION 'the unit amount of a usage price must be a finite amount of 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', unit_amount);
    END IF;
    -- the mode and the tiers, checked by the formula itself
    PERFORM subscription.usage_amount(0, unit_amount, tiers, mode);
    INSERT INTO subscription.plan_usage_price AS u (plan, feature, included, unit_amount, tiers, mode, currency)
    VALUES (plan_usage_price.plan, plan_usage_price.feature, plan_usage_price.included, plan_usage_price.unit_amount,
            plan_usage_price.tiers, plan_usage_price.mode, plan_usage_price.currency)
    ON CONFLICT ON CONSTRAINT plan_usage_price_pkey DO UPDATE
       SET included = excluded.included, unit_amount = excluded.unit_amount, tiers = excluded.tiers,
           mode = excluded.mode, currency = excluded.currency;
END
$$;

COMMENT ON FUNCTION subscription.plan_usage_price(text, text, bigint, numeric, jsonb, text, text) IS
'Set a plan''s price of the use of a feature beyond what it includes: graduated, volume or package, billed in arrears at each renewal (U2)';

-- U1: a counter's integral (row-seconds) carried from since to t at its
-- use: the SQL readers' one form of the guard's accumulation (the guard's
-- own is METER_ACCUMULATORS in src/limits.c, in its one UPDATE).
CREATE FUNCTION subscription.integral_at(integral numeric, used bigint, since timestamptz, t timestamptz)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN integral + used * extract(epoch FROM greatest(t, since) - since);

COMMENT ON FUNCTION subscription.integral_at(numeric, bigint, timestamptz, timestamptz) IS
'Internal: a usage counter''s integral in row-seconds carried from since to a later time at its use (U1)';

-- U3: where an account's counter of a feature closes its billing period:
-- the earliest end of the periods of the account's active subscriptions
-- whose plan prices the feature's usage, or NULL (nothing to close).  The
-- guard stores it in a counter it creates (EnsureCounter in
-- src/limits.c), open_usage in the counters that exist.  PL/pgSQL, the
-- catalog read first: Citus plans no SQL function with parameters.
CREATE FUNCTION subscription.usage_closes(tenant_id bigint, account_id bigint, feature text)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    plans text[] := ARRAY(SELECT p.plan FROM subscription.plan_usage_price AS p WHERE p.feature = usage_closes.feature);
BEGIN
    IF cardinality(plans) = 0 THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT min(upper(s.period)) FROM subscription.subscription AS s
             WHERE s.tenant_id = usage_closes.tenant_id AND s.account_id = usage_closes.account_id
               AND s.status IN ('active', 'trialing') AND s.plan = ANY (plans));
END
$$;

COMMENT ON FUNCTION subscription.usage_closes(bigint, bigint, text) IS
'Internal: where an account''s usage counter of a feature closes its billing period: the earliest period end of the subscriptions that price its usage (U3)';

-- U3: the account's usage counters of priced features told where their
-- period now closes (usage_closes), after a period moved (subscribe,
-- renew_period, renew_common_group, change_plan, pause, unpause).  One
-- UPDATE per counter whose end moved, each naming its tenant (a router
-- query on Citus).
CREATE FUNCTION subscription.open_usage(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    features text[] := ARRAY(SELECT DISTINCT p.feature FROM subscription.plan_usage_price AS p);
    f text;
    ends timestamptz;
BEGIN
    IF cardinality(features) = 0 THEN
        RETURN;
    END IF;
    FOR f IN SELECT u.feature FROM subscription.usage_counter AS u
              WHERE u.tenant_id = open_usage.tenant_id AND u.account_id = open_usage.account_id
                AND u.feature = ANY (features)
              ORDER BY u.feature LOOP
        ends := subscription.usage_closes(open_usage.tenant_id, open_usage.account_id, f);
        -- a counter whose later periods ended already (close_usage) stays
        -- where it closes until the renewals reach its period
        UPDATE subscription.usage_counter AS u SET closes = ends
         WHERE u.tenant_id = open_usage.tenant_id AND u.account_id = open_usage.account_id AND u.feature = f
           AND u.closes IS DISTINCT FROM ends
           AND (u.closed_at IS NULL OR ends > u.closed_at[cardinality(u.closed_at)]);
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.open_usage(bigint, bigint) IS
'Internal: set where an account''s usage counters close their billing period, after a period moved (U3)';

-- U3: a counter's ended periods closed, up to "at": the guard (MoveUsage
-- in src/limits.c) calls it when a write at "at" finds the counter's
-- period end (closes) at or before it, then moves the counter; no write
-- that stays in the period calls it.  Each period ended since is kept in
-- the counter (closed_at: its end; closed_used: the use then, the count or
-- sum; closed_peak; closed_integral: up to its end), which the renewals
-- bill in order, one each: the first from the accumulators, each later
-- one, which no write reached, from the use held through it (the rows stay
-- counted: from_rows; recorded usage starts each period from 0).  The
-- later ends are the periods of the subscription whose period ends at
-- closes, at its anchor and cycle.  The counter then holds the period that
-- contains "at", from its start, and closes at its end.  The counter row
-- locked first: a writer that closed it meanwhile leaves nothing to do.
CREATE FUNCTION subscription.close_usage(tenant_id bigint, account_id bigint, feature text, at timestamptz,
                                         from_rows boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- a value first: on Citus the catalog's lookup may not run inside the shard's query
    plans text[] := ARRAY(SELECT p.plan FROM subscription.plan_usage_price AS p WHERE p.feature = close_usage.feature);
    tenant bigint := close_usage.tenant_id;
    c record;
    s record;
    ends timestamptz;
    next_end timestamptz;
    base bigint;
    k integer := 1;
    at_ends timestamptz[];
    used_ends bigint[];
    peak_ends bigint[];
    integral_ends numeric[];
BEGIN
    PERFORM subscription.require_arguments('close_usage', '{account_id,feature,at,from_rows}',
        ARRAY[account_id IS NULL, feature IS NULL, at IS NULL, from_rows IS NULL]);
    -- an infinite time ends every period: in none (as move_usage)
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'the time of usage must be finite'
            USING ERRCODE = 'datetime_field_overflow';
    END IF;
    IF tenant IS NULL THEN
        -- the guard's write of a registered table (a single server)
        SELECT a.tenant_id INTO tenant FROM subscription.account AS a WHERE a.id = close_usage.account_id;
    END IF;
    SELECT u.used, u.peak, u.integral, u.since, u.closes INTO c
      FROM subscription.usage_counter AS u
     WHERE u.tenant_id = tenant AND u.account_id = close_usage.account_id AND u.feature = close_usage.feature
       FOR UPDATE OF u;
    IF NOT FOUND OR c.closes IS NULL OR c.closes > at THEN
        RETURN;
    END IF;
    SELECT x.anchor, x.cycle, x.period_number INTO s
      FROM subscription.subscription AS x
     WHERE x.tenant_id = tenant AND x.account_id = close_usage.account_id
       AND x.status IN ('active', 'trialing') AND x.plan = ANY (plans) AND upper(x.period) = c.closes
     ORDER BY x.id
     LIMIT 1;
    -- the period that ends at closes: its accumulators
    ends := c.closes;
    base := CASE WHEN from_rows THEN c.used ELSE 0 END;
    at_ends := ARRAY[ends];
    used_ends := ARRAY[c.used];
    peak_ends := ARRAY[greatest(c.peak, c.used)];
    integral_ends := ARRAY[subscription.integral_at(c.integral, c.used, c.since, ends)];
    LOOP
        next_end := upper(subscription.nth_period(s.anchor, s.cycle, s.period_number + k));
        EXIT WHEN next_end IS NULL OR next_end > at;
        -- a period that no write reached: the use held through it
        at_ends := at_ends || next_end;
        used_ends := used_ends || base;
        peak_ends := peak_ends || base;
        integral_ends := integral_ends || subscription.integral_at(0, base, ends, next_end);
        ends := next_end;
        k := k + 1;
    END LOOP;
    UPDATE subscription.usage_counter AS u
       SET used = base, peak = base, integral = 0, since = greatest(u.since, ends), closes = next_end,
           closed_at = coalesce(u.closed_at, '{}') || at_ends, closed_used = coalesce(u.closed_used, '{}') || used_ends,
           closed_peak = coalesce(u.closed_peak, '{}') || peak_ends,
           closed_integral = coalesce(u.closed_integral, '{}') || integral_ends
     WHERE u.tenant_id = tenant AND u.account_id = close_usage.account_id AND u.feature = close_usage.feature;
END
$$;

COMMENT ON FUNCTION subscription.close_usage(bigint, bigint, text, timestamptz, boolean) IS
'Internal: keep the figures of each period a usage counter''s write at a time comes after, and start the period that holds it (U3)';

-- U3: what the usage of a subscription's period, from its start until
-- "until", comes to, per usage price of its plan: the one computation of
-- the bill (bill_usage, which locks the counters first) and of its preview
-- (preview_usage, renewal_notice, current_usage's open figures).  For each
-- price: its counter's figure for the period (the meter's aggregation; the
-- recorded total without rows), price(aggregate - included) rounded once
-- to the currency.  What is billed runs from the period's start, or from
-- the end of its last bill (a plan change mid-period billed up to then);
-- a price billed up to until already gives no row.  The time-weighted
-- figure runs to until (the current use held until then), or to the
-- counter's last change when that came later (nothing is counted twice:
-- the next period starts there).
CREATE FUNCTION subscription.usage_due(s subscription.subscription, until timestamptz)
RETURNS TABLE(feature text, aggregation text, from_rows boolean, period tstzrange, upto timestamptz,
              used bigint, peak bigint, integral numeric, aggregate numeric, included bigint, billable numeric,
              amount numeric, currency text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    c record;
    starts timestamptz;
BEGIN
    FOR p IN
        SELECT u.feature, u.included, u.unit_amount, u.tiers, u.mode, u.currency,
               coalesce(m.aggregation, CASE WHEN t.feature IS NULL THEN 'recorded' ELSE 'count' END) AS aggregation,
               coalesce(m.unit, interval '1 day') AS unit, t.feature IS NOT NULL AS from_rows
          FROM subscription.plan_usage_price AS u
          LEFT JOIN subscription.limited_table AS t ON t.feature = u.feature
          LEFT JOIN subscription.meter AS m ON m.feature = u.feature
         WHERE u.plan = s.plan
         ORDER BY u.feature
    LOOP
        -- from the period's start, or where a bill of this period ended (a
        -- plan change mid-period); nothing left: billed already
        SELECT coalesce(max(upper(x.period)), lower(s.period)) INTO starts
          FROM subscription.usage_period AS x
         WHERE x.tenant_id = s.tenant_id AND x.subscription_id = s.id AND x.feature = p.feature
           AND x.period && tstzrange(lower(s.period), until, '[]');
        CONTINUE WHEN starts >= until;
        SELECT u.used, u.peak, u.integral, u.since, u.closed_at, u.closed_used, u.closed_peak, u.closed_integral INTO c
          FROM subscription.usage_counter AS u
         WHERE u.tenant_id = s.tenant_id AND u.account_id = s.account_id AND u.feature = p.feature;
        IF c.closed_at[1] <= until THEN
            -- U3: a write after the period's end began a later period in
            -- the counter: the ending period's figures are the first
            -- ended period's kept (close_usage), up to its end
            c.used := c.closed_used[1];
            c.peak := c.closed_peak[1];
            c.integral := c.closed_integral[1];
            c.since := c.closed_at[1];
        END IF;
        feature := p.feature;
        aggregation := p.aggregation;
        from_rows := p.from_rows;
        period := tstzrange(starts, until);
        upto := greatest(coalesce(c.since, until), until);
        used := coalesce(c.used, 0);
        peak := coalesce(greatest(c.peak, c.used), 0);
        integral := subscription.integral_at(coalesce(c.integral, 0), coalesce(c.used, 0), coalesce(c.since, until), upto);
        aggregate := coalesce(CASE p.aggregation
                              WHEN 'peak' THEN greatest(c.peak, c.used)
                              WHEN 'time_weighted' THEN integral / extract(epoch FROM p.unit)
                              ELSE c.used END, 0);
        included := p.included;
        billable := greatest(aggregate - p.included, 0);
        amount := subscription.round_money(subscription.usage_amount(billable, p.unit_amount, p.tiers, p.mode), p.currency);
        currency := p.currency;
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.usage_due(subscription.subscription, timestamptz) IS
'Internal: what a subscription''s usage comes to up to a time, per usage price, not yet billed: the one computation of bill_usage and its previews (U3, U6)';

-- U3: take the usage of a subscription's period, from its start until
-- "until", for its bill: the counters of its plan's usage prices locked
-- (the guard's writers queue behind them), then for each line of
-- usage_due the counter's accumulators reset for the next period (and its
-- keys past their grace dropped), the period's snapshot returned (a
-- usage_period row without its charge line), in the order of the
-- features.  Its caller, in the same transaction, writes the charges
-- (usage_charges) and keeps the snapshots (keep_usage_periods):
-- bill_usage one subscription's, renew_common_group a group's, folded into
-- its one INSERT of the renewals' charges (issue 20).  A period billed up
-- to until already gives nothing: a renewal run twice bills once.
CREATE FUNCTION subscription.take_usage(s subscription.subscription, until timestamptz)
RETURNS SETOF subscription.usage_period
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
    u subscription.usage_period;
    -- a value first: on Citus the catalog's lookup may not run inside the shard's query
    features text[] := ARRAY(SELECT x.feature FROM subscription.plan_usage_price AS x WHERE x.plan = s.plan);
BEGIN
    -- the counters first, in the order of the features (as usage_due reads them)
    PERFORM FROM subscription.usage_counter AS c
     WHERE c.tenant_id = s.tenant_id AND c.account_id = s.account_id AND c.feature = ANY (features)
     ORDER BY c.feature
       FOR UPDATE OF c;
    FOR d IN SELECT * FROM subscription.usage_due(s, until) LOOP
        -- the next period's accumulators: rows stay, recorded usage starts
        -- again; an ended period's figures billed (U3): the counter is in
        -- a later period already, the first figures kept go, and it keeps
        -- where it closes while later ones are kept; the period's end is
        -- open_usage's
        UPDATE subscription.usage_counter AS c
           SET used = CASE WHEN c.closed_at[1] <= until THEN c.used WHEN d.from_rows THEN d.used ELSE 0 END,
               peak = CASE WHEN c.closed_at[1] <= until THEN c.peak WHEN d.from_rows THEN d.used ELSE 0 END,
               integral = CASE WHEN c.closed_at[1] <= until THEN c.integral ELSE 0 END,
               since = CASE WHEN c.closed_at[1] <= until THEN c.since ELSE d.upto END,
               closes = CASE WHEN cardinality(c.closed_at) > 1 THEN c.closes END,
               closed_at = CASE WHEN c.closed_at[1] <= until THEN nullif(c.closed_at[2:], '{}') END,
               closed_used = CASE WHEN c.closed_at[1] <= until THEN nullif(c.closed_used[2:], '{}') END,
               closed_peak = CASE WHEN c.closed_at[1] <= until THEN nullif(c.closed_peak[2:], '{}') END,
               closed_integral = CASE WHEN c.closed_at[1] <= until THEN nullif(c.closed_integral[2:], '{}') END
         WHERE c.tenant_id = s.tenant_id AND c.account_id = s.account_id AND c.feature = d.feature;
        IF NOT d.from_rows THEN
            -- keys are kept for the period and the grace after it
            DELETE FROM subscription.usage_record AS r
             WHERE r.tenant_id = s.tenant_id AND r.account_id = s.account_id AND r.feature = d.feature
               AND r.at < lower(s.period) - current_setting('subscription.usage_key_grace')::interval;
        END IF;
        u := ROW(s.tenant_id, s.id, s.account_id, d.feature, d.period, s.plan, d.aggregation, d.used, d.peak, d.integral,
                 d.aggregate, d.included, d.billable, d.amount, d.currency, NULL);
        RETURN NEXT u;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.take_usage(subscription.subscription, timestamptz) IS
'Internal: the usage of a subscription''s period up to a time, for its bill: the counters locked and their accumulators reset, the periods'' snapshots returned, once (U3)';

-- U3: the charge line of each usage period taken (take_usage) that comes
-- to an amount, in the order given: 'usage <feature>' for the period
-- billed, under the plan it was billed on, with its figures (its tenant
-- named "tenant": a tenant_id comes first or not at all, keyed.sql).
CREATE FUNCTION subscription.usage_charges(periods subscription.usage_period[])
RETURNS TABLE(tenant bigint, account bigint, subscription bigint, amount numeric, currency text,
              period tstzrange, item text, plan text, description text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT p.tenant_id, p.account_id, p.subscription_id, p.amount, p.currency, p.period, 'usage ' || p.feature, p.plan,
       format('overage: %s %s of %s, %s included', round(p.aggregate, 6), p.aggregation, p.feature, p.included)
  FROM unnest(periods) WITH ORDINALITY AS p
 WHERE p.amount > 0
 ORDER BY p.ordinality
$$;

COMMENT ON FUNCTION subscription.usage_charges(subscription.usage_period[]) IS
'Internal: the charge lines of usage periods taken, one per period with an amount, in their order (U3)';

-- U3: keep usage periods taken (take_usage), once their charges are
-- written (usage_charges): their rows in usage_period, in the order
-- given, each naming its charge line, the subscription's 'usage
-- <feature>' charge of the period (none without an amount), one
-- statement a period, each naming its tenant (Citus: bill_usage runs on
-- the tenant's node).
CREATE FUNCTION subscription.keep_usage_periods(periods subscription.usage_period[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p subscription.usage_period;
BEGIN
    FOREACH p IN ARRAY coalesce(periods, '{}') LOOP
        IF p.amount > 0 THEN
            SELECT l.id INTO p.ledger_id FROM subscription.ledger AS l
             WHERE l.tenant_id = p.tenant_id AND l.subscription_id = p.subscription_id AND l.addon_batch_id IS NULL
               AND l.period = p.period AND l.item = 'usage ' || p.feature AND l.kind = 'charge';
        END IF;
        INSERT INTO subscription.usage_period
               (tenant_id, subscription_id, account_id, feature, period, plan, aggregation, used, peak, integral,
                aggregate, included, billable, amount, currency, ledger_id)
        VALUES (p.tenant_id, p.subscription_id, p.account_id, p.feature, p.period, p.plan, p.aggregation, p.used,
                p.peak, p.integral, p.aggregate, p.included, p.billable, p.amount, p.currency, p.ledger_id);
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.keep_usage_periods(subscription.usage_period[]) IS
'Internal: the snapshots of usage periods taken, kept in usage_period with their charge lines (U3)';

-- U3: bill the usage of a subscription's period, from its start until
-- "until" (its end at a renewal; the moment of a cancellation or plan
-- change mid-period), all in the caller's transaction: the usage taken
-- (take_usage: the counters locked and reset), each charge line
-- (usage_charges) written by a statement of its own, through
-- ledger_one_charge_per_period, then the periods' snapshots kept
-- (keep_usage_periods).  Renewals one by one (renew_period), plan changes
-- and cancellations call it; renew_common_group folds a group's usage
-- lines into its one INSERT of charges (issue 20).
CREATE FUNCTION subscription.bill_usage(s subscription.subscription, until timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    taken subscription.usage_period[] := ARRAY(SELECT t FROM subscription.take_usage(s, until) AS t);
    c record;
BEGIN
    FOR c IN SELECT * FROM subscription.usage_charges(taken) LOOP
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
        VALUES (c.tenant, c.account, c.subscription, 'charge', c.amount, c.currency, c.period, c.item, c.plan,
                c.description)
        ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
           WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    END LOOP;
    PERFORM subscription.keep_usage_periods(taken);
END
$$;

COMMENT ON FUNCTION subscription.bill_usage(subscription.subscription, timestamptz) IS
'Internal: bill the usage of a subscription''s period up to a time, once, and reset the counters'' accumulators (U3)';

-- U6: what the next renewal of each of an account's subscriptions would
-- bill of its usage: usage_due up to the period's end, the use of now
-- held until then (the time-weighted figure projected).  The bill's own
-- computation, nothing written.
CREATE FUNCTION subscription.preview_usage(account_id bigint)
RETURNS TABLE(subscription_id bigint, feature text, aggregate numeric, included bigint, billable numeric,
              amount numeric, currency text, period tstzrange)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenant bigint;
    s subscription.subscription;
BEGIN
    PERFORM subscription.require_arguments('preview_usage', '{account_id}', ARRAY[account_id IS NULL]);
    tenant := subscription.tenant_of('account', preview_usage.account_id);
    PERFORM subscription.require_account(tenant, preview_usage.account_id);
    PERFORM subscription.authorize(tenant, preview_usage.account_id, 'read', false);
    FOR s IN SELECT x.* FROM subscription.subscription AS x
              WHERE x.tenant_id = tenant AND x.account_id = preview_usage.account_id
                AND x.status IN ('active', 'trialing')
              ORDER BY x.id LOOP
        RETURN QUERY
        SELECT s.id, d.feature, d.aggregate, d.included, d.billable, d.amount, d.currency, d.period
          FROM subscription.usage_due(s, upper(s.period)) AS d;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.preview_usage(bigint) IS
'What the next renewal of each of an account''s subscriptions would bill of its usage, by the bill''s own computation (U6)';

-- U6: the open period's figures of every usage counter, now: used, the
-- peak, the integral carried to now (row-seconds) and, with a meter, the
-- time-weighted figure in its unit.  The peak and the integral of a
-- registered table's feature without a meter are not kept (U1): NULL.
CREATE VIEW subscription.current_usage WITH (security_barrier) AS
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
SELECT u.account_id,
       u.feature,
       m.aggregation,
       u.used,
       CASE WHEN m.feature IS NOT NULL OR t.feature IS NULL THEN greatest(u.peak, u.used) END AS peak,
       CASE WHEN m.feature IS NOT NULL OR t.feature IS NULL
            THEN subscription.integral_at(u.integral, u.used, u.since, subscription.now()) END AS integral,
       CASE WHEN m.feature IS NOT NULL OR t.feature IS NULL
            THEN subscription.integral_at(u.integral, u.used, u.since, subscription.now())
                 OPERATOR(pg_catalog./) extract(epoch FROM coalesce(m.unit, interval '1 day')) END AS time_weighted,
       coalesce(m.unit, interval '1 day') AS unit
  FROM subscription.usage_counter AS u
  LEFT JOIN subscription.meter AS m ON m.feature OPERATOR(pg_catalog.=) u.feature
  -- a registered table's feature (one registration per feature) without a meter: not kept
  LEFT JOIN subscription.limited_table AS t ON t.feature OPERATOR(pg_catalog.=) u.feature
  CROSS JOIN readable
 WHERE (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) u.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) u.account_id));

COMMENT ON VIEW subscription.current_usage IS
'Per account and feature, the open period''s usage: used, peak, and the time-weighted figure carried to now (U6)';

-- U4: a feature used without rows (API calls, tokens, minutes): 42704
-- for an unknown feature, 22023 for one counted from a table's rows.
CREATE FUNCTION subscription.require_recorded_feature(fn text, feature text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_feature(feature);
    IF EXISTS (SELECT FROM subscription.limited_table AS t WHERE t.feature = require_recorded_feature.feature) THEN
        RAISE EXCEPTION 'feature "%" is counted from the rows of a table', feature
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('%s() records usage without rows; the rows of the registered table count themselves.', fn);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_recorded_feature(text, text) IS
'Internal: 42704 for an unknown feature, 22023 for one counted from a registered table''s rows (U4)';

-- U4: record usage without rows, once per key: the counter moves by
-- quantity under the feature's limit (a prepaid cap: 23514 at once), and
-- the new total is returned; a retry with the same key (kept for the
-- period and subscription.usage_key_grace) moves nothing and returns the
-- total the first call returned.  Two sessions with one key: the second
-- waits for the first's lock on the counter and returns its total.  The
-- counter is locked before the key is read, without a subtransaction: an
-- EXCEPTION block would give every call a subtransaction id, and a caller
-- recording usage in a loop would overflow its cache of 64, slowing every
-- snapshot of the cluster (the review of issue 21).  In C (src/usage.c), as
-- kept plans of fixed statements: its checks in order (require_tenant,
-- require_arguments for a NULL argument, require_account in one query;
-- authorize at every call, whose first rule, without an actor, is C's;
-- require_recorded_feature, its passes kept until plan_limit, addon or
-- limited_table change), the counter locked (created on its first use),
-- the key read under the lock, the counter moved by the guard's code (as
-- move_usage moves it), the key written once, with its total.
CREATE FUNCTION subscription.record_usage(tenant_id bigint, account_id bigint, feature text, quantity bigint, key text,
                                          at timestamptz)
RETURNS bigint
AS 'MODULE_PATHNAME', 'record_usage'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.record_usage(bigint, bigint, text, bigint, text, timestamptz) IS
'Record usage without rows once per key, under the feature''s limit; the new total (U4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.record_usage(account_id bigint, feature text, quantity bigint, key text,
                                          at timestamptz DEFAULT subscription.now())
RETURNS bigint
AS 'MODULE_PATHNAME', 'record_usage'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.record_usage(bigint, text, bigint, text, timestamptz) IS
'Record usage without rows once per key, under the feature''s limit; the new total (U4)';

-- U5: correct the quantity recorded with a key: the counter moves by the
-- difference (an increase under the limit, 23514), and history keeps the
-- old and new quantities with the reason.  Returns the new total.
CREATE FUNCTION subscription.correct_usage(tenant_id bigint, account_id bigint, feature text, key text, quantity bigint,
                                           reason text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r subscription.usage_record;
    used bigint;
    new_total bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.correct_usage(bigint,bigint,text,text,bigint,text)', correct_usage.tenant_id,
            pg_catalog.jsonb_build_array(correct_usage.tenant_id, correct_usage.account_id, correct_usage.feature, correct_usage.key, correct_usage.quantity, correct_usage.reason)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('correct_usage', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('correct_usage', '{account_id,feature,key,quantity,reason}',
        ARRAY[account_id IS NULL, feature IS NULL, key IS NULL, quantity IS NULL, reason IS NULL]);
    PERFORM subscription.require_account(correct_usage.tenant_id, correct_usage.account_id);
    PERFORM subscription.authorize(correct_usage.tenant_id, correct_usage.account_id, 'pay', false);
    PERFORM subscription.require_recorded_feature('correct_usage', feature);
    IF quantity < 0 THEN
        RAISE EXCEPTION 'a quantity of usage must be 0 or more'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('It was %s.', quantity);
    END IF;
    SELECT x.* INTO r FROM subscription.usage_record AS x
     WHERE x.tenant_id = correct_usage.tenant_id AND x.account_id = correct_usage.account_id
       AND x.feature = correct_usage.feature AND x.key = correct_usage.key
       FOR UPDATE OF x;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no usage of feature "%" was recorded with key "%" for account %', feature, key, account_id
            USING ERRCODE = 'no_data_found',
                  HINT = 'Keys are kept for their period and subscription.usage_key_grace after it.';
    END IF;
    SELECT u.used INTO used FROM subscription.usage_counter AS u
     WHERE u.tenant_id = correct_usage.tenant_id AND u.account_id = correct_usage.account_id
       AND u.feature = correct_usage.feature;
    IF coalesce(used, 0) + quantity - r.quantity < 0 THEN
        RAISE EXCEPTION 'the usage recorded with key "%" was billed already', key
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The period''s counter holds %s; the correction takes away %s.', coalesce(used, 0),
                                  r.quantity - quantity),
                  HINT = 'Give the difference back with subscription.credit_account().';
    END IF;
    SELECT subscription.move_usage(correct_usage.account_id, correct_usage.feature, correct_usage.quantity - r.quantity,
                                   correct_usage.tenant_id, r.at) INTO new_total;
    UPDATE subscription.usage_record AS x SET quantity = correct_usage.quantity, total = new_total
     WHERE x.tenant_id = correct_usage.tenant_id AND x.account_id = correct_usage.account_id
       AND x.feature = correct_usage.feature AND x.key = correct_usage.key;
    PERFORM subscription.write_history('correct_usage', account_id, NULL,
        jsonb_build_object('feature', feature, 'key', key, 'from', r.quantity, 'to', quantity, 'reason', reason),
        correct_usage.tenant_id);
    RETURN new_total;
END
$$;

COMMENT ON FUNCTION subscription.correct_usage(bigint, bigint, text, text, bigint, text) IS
'Correct the quantity recorded with a key, with the reason in history; the new total (U5) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.correct_usage(account_id bigint, feature text, key text, quantity bigint, reason text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.correct_usage(subscription.tenant_of('account', correct_usage.account_id), correct_usage.account_id,
                                      correct_usage.feature, correct_usage.key, correct_usage.quantity, correct_usage.reason);
END
$$;

COMMENT ON FUNCTION subscription.correct_usage(bigint, text, text, bigint, text) IS
'Correct the quantity recorded with a key, with the reason in history; the new total (U5)';

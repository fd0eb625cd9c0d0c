-- Renewals (C4, Z7, Z8, R6, K2, K4, K10), and the notice of the coming
-- ones (L5, L8).

-- The terms of a subscription's next period.
CREATE TYPE subscription.period_terms AS (plan text, cycle interval, quantity integer, renewal text, needed bigint,
                                         version integer);

COMMENT ON TYPE subscription.period_terms IS 'The plan, cycle, quantity and renewal option of a next period, and the plan''s version (next_terms)';

-- What a subscription renews into: a pending plan change (C4) at that
-- plan's current version (NULL); else a migration due by the end of this
-- period, at the version it names; else its plan at the version it holds
-- (grandfathering).
CREATE FUNCTION subscription.next_plan(s subscription.subscription, OUT plan text, OUT version integer)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF s.pending_plan IS NOT NULL THEN
        plan := s.pending_plan;
    ELSIF s.migrate_at <= upper(s.period) THEN
        plan := s.migrate_to;
        version := s.migrate_version;
    ELSE
        plan := s.plan;
        version := s.plan_version;
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.next_plan(subscription.subscription) IS
'Internal: the plan and version a subscription renews into (NULL version: the plan''s current one)';

-- The terms of a subscription's next period (issue 15, fold 8: the one
-- place that knows them, for the renewal, its check and its notice): the
-- plan and its version (next_plan: a pending one takes effect, C4, or a
-- migration due, L6; else the version held), the cycle (a pending one, Z7;
-- monthly once a prepaid term renewed 'to_monthly', R6), the quantity, and
-- the renewal option after it ('once' becomes 'none', 'to_monthly'
-- becomes 'always': its periods are monthly from then on).
-- The quantity is the pending one when set (a decision of the account or
-- of sales wins); otherwise, when the plan's product renews 'from_usage'
-- (L7), it comes from the account's use:
--   - a tiered plan: the tier holding the licenses that its per-license
--     features need (each counted use, less the units of the add-on
--     batches that renew with the subscription, over the value per
--     license, rounded up; the largest wins), down as well as up; the
--     largest tier when the use is above it (renew_period warns); with no
--     counted use (the feature not under enforce_limit), as now;
--   - a plan priced per license: the licenses assigned, less those that
--     the renewing add-on batches give, and at least 1;
--   - any other plan: as now.
-- needed: what the use asks for when the quantity came from it (above
-- the quantity only when the use passed the largest tier).
-- renew_batch asks it once per period and hands it to renewal_problem,
-- renewal_may_trim and renew_period; a 'keep' product costs one look-up.
CREATE FUNCTION subscription.next_terms(s subscription.subscription)
RETURNS subscription.period_terms
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n subscription.period_terms;
    tiers integer[];
    v integer;
BEGIN
    SELECT np.plan, np.version INTO n.plan, n.version FROM subscription.next_plan(s) AS np;
    n.cycle := CASE WHEN s.renewal = 'to_monthly' THEN interval '1 month' ELSE coalesce(s.pending_cycle, s.cycle) END;
    n.quantity := coalesce(s.pending_quantity, s.quantity);
    n.renewal := CASE s.renewal WHEN 'once' THEN 'none' WHEN 'to_monthly' THEN 'always' ELSE s.renewal END;
    IF s.pending_quantity IS NOT NULL
       OR NOT EXISTS (SELECT FROM subscription.plan AS p
                        JOIN subscription.product AS pr ON pr.code = p.product
                       WHERE p.code = n.plan AND pr.renewal_quantity = 'from_usage') THEN
        RETURN n;
    END IF;
    -- L7: the licenses each used feature needs, beyond the units of the
    -- add-on batches that renew with the subscription
    tiers := subscription.plan_tiers(n.plan, n.version);
    v := subscription.plan_version_or_current(n.plan, n.version);
    SELECT max(ceil(greatest(f.used - coalesce(
               (SELECT sum(b.quantity::bigint * a.units)
                  FROM subscription.addon_batch AS b
                  JOIN subscription.addon AS a ON a.code = b.addon
                 WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
                   AND NOT b.cancel_at_period_end AND a.feature = f.feature), 0), 0)::numeric / f.per_license))::bigint
      INTO n.needed
      FROM (-- a tiered plan: its per-license features whose use is counted
            SELECT pl.feature, c.used, pl.value
              FROM subscription.plan_limit AS pl
              JOIN subscription.usage_counter AS c
                ON c.tenant_id = s.tenant_id AND c.account_id = s.account_id AND c.feature = pl.feature
             WHERE cardinality(tiers) > 0 AND pl.plan = n.plan AND pl.versions @> v AND pl.per_license AND pl.value > 0
            UNION ALL
            -- a plan priced per license: the licenses assigned
            SELECT 'licenses', lc.used, 1
              FROM subscription.license_counter AS lc
             WHERE cardinality(tiers) = 0 AND lc.tenant_id = s.tenant_id AND lc.subscription_id = s.id
               AND EXISTS (SELECT FROM subscription.plan_price AS pp
                            WHERE pp.plan = n.plan AND pp.versions @> v AND pp.per_license))
           AS f(feature, used, per_license);
    IF n.needed IS NOT NULL THEN
        n.quantity := CASE WHEN cardinality(tiers) > 0
                           THEN subscription.tier_for_hosts(least(n.needed, tiers[cardinality(tiers)])::integer, tiers)
                           ELSE greatest(n.needed, 1)::integer END;
    END IF;
    RETURN n;
END
$$;

COMMENT ON FUNCTION subscription.next_terms(subscription.subscription) IS
'Internal: the plan, cycle, quantity (L7: from the use on a ''from_usage'' product) and renewal option of a subscription''s next period';

-- next_terms() for a reader of renewal_notice: the next terms of one
-- subscription the caller may read (nothing otherwise).  SECURITY DEFINER,
-- as the view's readers do not read the counters that the use comes from;
-- by id, so that no made-up row can ask for another account's use.
CREATE FUNCTION subscription.renewal_terms(subscription_id bigint)
RETURNS TABLE (plan text, cycle interval, quantity integer, renewal text, needed bigint, version integer)
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- PL/pgSQL, its statements one by one: Citus plans no SQL function
    -- whose statements take parameters (issue 17)
    SELECT * INTO s FROM subscription.subscription AS x WHERE x.id = renewal_terms.subscription_id;
    IF NOT FOUND OR NOT subscription.may_read(s.tenant_id, s.account_id) THEN
        RETURN;
    END IF;
    RETURN QUERY SELECT t.plan, t.cycle, t.quantity, t.renewal, t.needed, t.version FROM subscription.next_terms(s) AS t;
END
$$;

COMMENT ON FUNCTION subscription.renewal_terms(bigint) IS
'The plan, cycle, quantity (L7: from the use on a ''from_usage'' product), renewal option and plan version of a subscription''s next period';

-- One period of one due subscription, locked by the caller, to the terms
-- that next_terms gave: the batches
-- cancelled for this period end (K4); a cancelled subscription (Z8) or
-- one that does not renew (R6 'none') ends; otherwise the pending plan,
-- cycle and quantity take effect (C4, Z7), the renewal option moves on
-- (next_terms: 'once' becomes 'none', 'to_monthly' continues monthly;
-- the quantity from the use on a 'from_usage' product, L7), a migration
-- due takes effect unless it would take away a feature in use (L6), the
-- new period
-- is charged, the plan and each recurring add-on batch once (C2), and when
-- the limits may have dropped (may_trim: renewal_may_trim() asked by the
-- caller before anything moved), apply_downgrade trims the account's data
-- (C5-C11, K10).  Returns the new status.
CREATE FUNCTION subscription.renew_period(s subscription.subscription, n subscription.period_terms, may_trim boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ends timestamptz := upper(s.period);
    same_cycle boolean;
    next_period tstzrange;
    price record;
    batch record;
BEGIN
    -- U3: the ending period's usage, billed in arrears
    PERFORM subscription.bill_usage(s, ends);
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
       AND (b.cancel_at_period_end OR s.cancel_at_period_end OR s.renewal = 'none');
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        UPDATE subscription.subscription AS x
           SET status = CASE WHEN s.cancel_at_period_end THEN 'cancelled' ELSE 'expired' END
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id
        RETURNING x.status INTO s.status;
        PERFORM subscription.open_usage(s.tenant_id, s.account_id);
        RETURN s.status;
    END IF;
    -- L6: a migration never takes away a feature in use; one that would
    -- now (the account's use grew since it was scheduled) is dropped
    IF coalesce(s.pending_plan IS NULL AND s.migrate_at <= ends AND NOT s.migrate_trim, false)
       AND EXISTS (SELECT FROM subscription.migration_shortfall(s.id, s.migrate_to, s.migrate_version)) THEN
        RAISE WARNING 'subscription % stays on its version of plan "%": plan "%" would take away features in use',
                      s.id, s.plan, s.migrate_to
            USING DETAIL = 'Its migration is dropped; subscription.preview_migration() lists the features.';
        UPDATE subscription.subscription AS x
           SET migrate_to = NULL, migrate_version = NULL, migrate_at = NULL, migrate_trim = NULL
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id
        RETURNING * INTO s;
        n := subscription.next_terms(s);
    END IF;

    -- L7: a use above the largest tier renews at the largest tier
    IF n.needed > n.quantity THEN
        RAISE WARNING 'subscription % uses more than the largest tier of plan "%"', s.id, n.plan
            USING DETAIL = format('Its use needs %s licenses; it renews at the largest tier, %s.', n.needed, n.quantity),
                  HINT = format('Contact sales for a plan above %s hosts.', n.quantity);
    END IF;
    same_cycle := subscription.cycle_key(n.cycle) = subscription.cycle_key(s.cycle);
    -- a new cycle counts from the start of its first period (Z7)
    next_period := subscription.nth_period(CASE WHEN same_cycle THEN s.anchor ELSE ends END, n.cycle,
                                           CASE WHEN same_cycle THEN s.period_number + 1 ELSE 1 END);
    price := subscription.period_price(n.plan, n.cycle, n.quantity, n.version);
    IF same_cycle AND n.plan = s.plan AND n.version = s.plan_version AND n.quantity = s.quantity
       AND s.pending_plan IS NULL AND s.pending_quantity IS NULL THEN
        -- the common renewal: only the period moves, and the triggers on
        -- plan, quantity and status (limits, seats) have nothing to do
        UPDATE subscription.subscription AS x
           SET period_number = x.period_number + 1, period = next_period,
               paid_quantity = n.quantity, pending_cycle = NULL, renewal = n.renewal
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = n.plan, plan_version = n.version,
               cycle = n.cycle, quantity = n.quantity, paid_quantity = n.quantity,
               pending_plan = NULL, pending_cycle = NULL, pending_quantity = NULL,
               anchor = CASE WHEN same_cycle THEN x.anchor ELSE ends END,
               period_number = CASE WHEN same_cycle THEN x.period_number + 1 ELSE 1 END,
               period = next_period, renewal = n.renewal
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    END IF;
    -- U3: the usage counters close with the new period
    PERFORM subscription.open_usage(s.tenant_id, s.account_id);

    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(price.amount, price.currency), price.currency,
            next_period, 'plan', n.plan,
            format('renewal: plan %s, cycle %s, quantity %s', n.plan, subscription.cycle_text(n.cycle), n.quantity))
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- each batch priced apart from the statement that reads the batches:
    -- on Citus that one runs on the shard, where no other table is read
    FOR batch IN
        SELECT b.id, b.addon, b.quantity
          FROM subscription.addon_batch AS b
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time
         WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
         ORDER BY b.id
    LOOP
        price := subscription.addon_period_price(batch.addon, n.cycle, batch.quantity);
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
        VALUES (s.tenant_id, s.account_id, s.id, batch.id, 'charge', subscription.round_money(price.amount, price.currency),
                price.currency, next_period, 'addon', n.plan,
                format('renewal: add-on %s x %s, cycle %s', batch.addon, batch.quantity, subscription.cycle_text(n.cycle)))
        ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
           WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    END LOOP;

    IF may_trim THEN
        PERFORM FROM subscription.apply_downgrade(s.id);
    END IF;
    RETURN 'active';
END
$$;

COMMENT ON FUNCTION subscription.renew_period(subscription.subscription, subscription.period_terms, boolean) IS 'Internal: one period of one due subscription';

-- Why the next renewal of a subscription, to the terms that next_terms
-- gave, would fail (no price for its plan, cycle and quantity, or for one of its add-on batches), or NULL.
-- A plain lookup: renew_due() checks every subscription without a
-- subtransaction.
CREATE FUNCTION subscription.renewal_problem(s subscription.subscription, n subscription.period_terms)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing text;
BEGIN
    IF s.cancel_at_period_end OR s.renewal = 'none' THEN
        RETURN NULL;
    END IF;
    CASE (subscription.find_price(n.plan, n.cycle, n.quantity, n.version)).problem
        WHEN 'not_a_tier' THEN
            RETURN format('quantity %s is not a tier of plan "%s"', n.quantity, n.plan);
        WHEN 'no_price' THEN
            RETURN format('plan "%s" has no price for cycle %s', n.plan, subscription.cycle_text(n.cycle));
        ELSE
    END CASE;
    missing := subscription.unpriced_addons(s.tenant_id, s.id, n.cycle);
    IF missing IS NOT NULL THEN
        RETURN format('add-on %s has no price for cycle %s', missing, subscription.cycle_text(n.cycle));
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.renewal_problem(subscription.subscription, subscription.period_terms) IS 'Internal: why the next renewal could not be charged, or NULL';

-- Can the next renewal lower the account's limits (and so trim, or be
-- refused by a 'block' limit)?  A lower quantity is next_terms' (a pending
-- one, or one from the use, L7).
-- PL/pgSQL: Citus plans no SQL function with parameters (issue 17).
CREATE FUNCTION subscription.renewal_may_trim(s subscription.subscription, n subscription.period_terms)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN s.pending_plan IS NOT NULL OR n.quantity < s.quantity
        OR s.migrate_at <= upper(s.period)
        OR s.cancel_at_period_end OR s.renewal = 'none'
        OR EXISTS (SELECT FROM subscription.addon_batch AS b
                    WHERE b.tenant_id = s.tenant_id AND b.subscription_id = s.id
                      AND b.status = 'active' AND b.cancel_at_period_end);
END
$$;

COMMENT ON FUNCTION subscription.renewal_may_trim(subscription.subscription, subscription.period_terms) IS 'Internal: whether the next renewal can lower the account''s limits';

-- The free plan of a plan's product for a cycle: its lowest-ranked
-- service plan priced 0 for the cycle, or NULL.  Where a trial's
-- 'downgrade' (end_trial) and a dunning's (D4, dunning_final) go.
CREATE FUNCTION subscription.free_plan(plan text, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT f.code
              FROM subscription.plan AS p
              JOIN subscription.plan AS f ON f.product = p.product AND f.kind = 'service'
              JOIN subscription.plan_price AS pp
                ON pp.plan = f.code AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(free_plan.cycle)
               AND pp.versions @> f.version AND pp.amount = 0
             WHERE p.code = free_plan.plan
             ORDER BY f.rank, f.code
             LIMIT 1);
END
$$;

COMMENT ON FUNCTION subscription.free_plan(text, interval) IS
'Internal: the free plan of a plan''s product for a cycle (its lowest-ranked service plan priced 0), or NULL';

-- A trial at its end (issue 19), by its product's trial_end: 'convert'
-- makes it active, and renew_period charges its first period (from the
-- trial's end: anchor, period 0); 'downgrade' does the same toward the
-- product's free plan (free_plan), a pending change that renew_period makes through
-- apply_downgrade, trimming by the tables' rules; 'expire' (or a downgrade
-- with no free plan, with a WARNING) expires it; a trial cancelled
-- (cancel()) ends cancelled, whatever its product makes of trials.  Returns
-- the subscription.
CREATE FUNCTION subscription.end_trial(s subscription.subscription)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trial_end text;
    free_plan text;
BEGIN
    SELECT pr.trial_end INTO trial_end
      FROM subscription.plan AS p JOIN subscription.product AS pr ON pr.code = p.product
     WHERE p.code = s.plan;
    IF trial_end = 'downgrade' AND NOT s.cancel_at_period_end THEN
        free_plan := subscription.free_plan(s.plan, s.cycle);
        IF free_plan IS NULL THEN
            RAISE WARNING 'subscription % expires at the end of its trial: plan "%" has no free plan for cycle %',
                          s.id, s.plan, subscription.cycle_text(s.cycle);
            trial_end := 'expire';
        END IF;
    END IF;
    UPDATE subscription.subscription AS x
       SET status = CASE WHEN x.cancel_at_period_end THEN 'cancelled'
                         WHEN trial_end = 'expire' THEN 'expired' ELSE 'active' END,
           pending_plan = CASE WHEN free_plan <> x.plan THEN free_plan ELSE x.pending_plan END
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.end_trial(subscription.subscription) IS
'Internal: a trial at its end, by its product''s trial_end: converted, downgraded to the free plan, or expired (issue 19)';

-- Renews every due subscription of one tenant (docs/design.md#tenant-keys:
-- the root account and its sub-accounts, K7), as renew_due() does: each,
-- in (period end, id) order, caught up one period at a time by
-- renew_period, at most subscription.max_catchup periods a call.  Every
-- statement it runs names the tenant, so that on Citus it is a function
-- distributed by its first argument, colocated with subscription.account,
-- that runs on the node holding the tenant's shards.
-- One session renews a tenant at a time: the lock of the tenant's root
-- account row (FOR NO KEY UPDATE SKIP LOCKED, held to the end of the
-- transaction: on Citus it is taken on the node of the tenant's shards,
-- whichever node runs the renewal); a tenant another session holds is left to it
-- (0 renewed, nothing waits), and so is a subscription another
-- transaction holds (FOR NO KEY UPDATE SKIP LOCKED), as in renew_due.  A
-- subscription whose renewal cannot be done (a price missing, a 'block'
-- limit exceeded) stays due, with a WARNING; so does one whose trimming
-- fails in the account's own code (a trigger of an application table).
-- A period is charged once whatever runs (C2): a second call charges
-- nothing.  Returns how many subscriptions it handled.
CREATE FUNCTION subscription.renew_account(tenant_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t bigint := renew_account.tenant_id;
    s subscription.subscription;
    n subscription.period_terms;
    status text;
    problem text;
    may_trim boolean;
    most integer;
    renewed integer;
    handled integer := 0;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.renew_account(bigint,timestamptz)', renew_account.tenant_id,
            pg_catalog.jsonb_build_array(renew_account.tenant_id, renew_account.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('renew_account', '{tenant_id,at}', ARRAY[t IS NULL, at IS NULL]);
    PERFORM subscription.require_renewal_run('renew_account', at);
    -- read once the checks (C) have loaded the module that defines it
    most := current_setting('subscription.max_catchup')::integer;
    -- the tenant's lock: its root account's row, on the node of its shards
    -- (on Citus, the coordinator's renew_due and each node's
    -- renew_local_tenants meet there)
    PERFORM FROM subscription.account AS a WHERE a.tenant_id = t AND a.id = t FOR NO KEY UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT FROM subscription.account AS a WHERE a.tenant_id = t AND a.id = t) THEN
            RAISE EXCEPTION 'tenant % does not exist', t
                USING ERRCODE = 'no_data_found',
                      HINT = 'A tenant is a root account: its id is the tenant_id of its sub-accounts and of everything they hold.';
        END IF;
        RAISE DEBUG 'tenant % is being renewed by another session', t;
        RETURN 0;
    END IF;
    FOR s IN
        SELECT * FROM subscription.subscription AS x
         WHERE x.tenant_id = t AND x.status IN ('active', 'trialing') AND upper(x.period) <= at
         ORDER BY upper(x.period), x.id
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        renewed := 0;
        LOOP
            -- issue 19: a pause ends at its resume_at (its period ends
            -- there while paused), a trial at its end
            IF s.paused_at IS NOT NULL THEN
                s := subscription.unpause(s, s.resume_at);
                EXIT WHEN upper(s.period) > at;
            END IF;
            IF s.status = 'trialing' THEN
                s := subscription.end_trial(s);
                EXIT WHEN s.status <> 'active';
            END IF;
            -- the next period's terms, asked once (issue 15, fold 8; L7)
            n := subscription.next_terms(s);
            problem := subscription.renewal_problem(s, n);
            -- asked before anything moves: the batches it ends are part of the answer
            may_trim := problem IS NULL AND subscription.renewal_may_trim(s, n);
            IF may_trim THEN
                -- only here can the renewal be refused after writing: a subtransaction
                BEGIN
                    status := subscription.renew_period(s, n, true);
                EXCEPTION WHEN check_violation THEN
                    problem := SQLERRM;
                WHEN OTHERS THEN
                    -- the trim ran the account's own triggers: whatever they
                    -- raise holds back this renewal only, never the others'
                    -- (a lost race is still the caller's to retry)
                    IF SQLSTATE LIKE '40%' THEN
                        RAISE;
                    END IF;
                    problem := format('its trimming failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
                END;
            ELSIF problem IS NULL THEN
                status := subscription.renew_period(s, n, false);
            END IF;
            IF problem IS NOT NULL THEN
                RAISE WARNING 'subscription % was not renewed: %', s.id, problem
                    USING DETAIL = 'It stays due; renew_due() tries again on its next run.';
                EXIT;
            END IF;
            EXIT WHEN status <> 'active';
            SELECT * INTO s FROM subscription.subscription AS x WHERE x.tenant_id = t AND x.id = s.id;
            EXIT WHEN upper(s.period) > at;
            renewed := renewed + 1;
            IF renewed >= most THEN
                RAISE WARNING 'subscription % caught up % periods, the most of one call', s.id, renewed
                    USING DETAIL = format('It stays due from %s; the next renewal run goes on from there.', upper(s.period)),
                          HINT = 'subscription.max_catchup sets how many periods one call catches up.';
                EXIT;
            END IF;
        END LOOP;
        IF problem IS NULL THEN
            handled := handled + 1;
        END IF;
    END LOOP;
    RETURN handled;
END
$$;

COMMENT ON FUNCTION subscription.renew_account(bigint, timestamptz) IS
'Renew, expire or cancel every due subscription of a tenant (a root account and its sub-accounts), catching up missed periods; back-office work';

-- The renewals of one batch of renew_batch on a single server (issue 18):
-- its tenants in their order, those whose every due subscription renews
-- the common way set-based, the others by renew_account.  Consecutive
-- common tenants are renewed together in a few statements: one UPDATE
-- moving their periods, one INSERT of their charges (the plan, and each
-- recurring add-on batch, C2), subscription by subscription in the order
-- and with the columns that renew_account gives them, so that the
-- triggers (history, coupon and credit, events) write the same rows.  The
-- common way: active, not paused, no pending plan, cycle or quantity (C4,
-- Z7), no migration due (L6), renewal 'always' (R6), a product that keeps
-- its quantity (L7), no batch cancelled for the period end (K4: nothing to
-- trim, renewal_may_trim), a price for the plan (find_price) and its
-- batches, and one period to catch up (the next one ends after "at").  A
-- tenant is taken as renew_account takes it (the lock of its root
-- account, SKIP LOCKED) and so are its subscriptions (FOR NO KEY UPDATE
-- SKIP LOCKED); a tenant held by another session, or a common one with a
-- subscription still due (held by another transaction), goes to
-- renew_account.  Returns how many it handled, and the tenants that
-- renew_account had (whose subscriptions may be left due).  Single server:
-- on Citus each tenant is renewed by renew_account on the node of its
-- shards (docs/citus.md).
CREATE FUNCTION subscription.renew_common(tenants bigint[], at timestamptz, OUT handled integer, OUT rest bigint[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    locked bigint[];
    ts bigint[];
    ids bigint[];
    pos bigint[];
    tenant bigint;
    other bigint;
    n integer := 0;
    first_n integer;
    left_to bigint[];
BEGIN
    handled := 0;
    rest := '{}';
    -- the tenants' locks, as renew_account takes them
    locked := ARRAY(SELECT a.id FROM subscription.account AS a
                     WHERE a.tenant_id = ANY (tenants) AND a.id = a.tenant_id
                     ORDER BY a.id
                       FOR NO KEY UPDATE SKIP LOCKED);
    -- their due subscriptions, locked; the tenants all of whose due
    -- subscriptions renew the common way
    WITH due AS (
        SELECT x.tenant_id, x.id, upper(x.period) AS e, x.plan, x.cycle, x.quantity, x.plan_version,
               x.status = 'active' AND x.paused_at IS NULL AND NOT x.cancel_at_period_end AND x.renewal = 'always'
               AND x.pending_plan IS NULL AND x.pending_cycle IS NULL AND x.pending_quantity IS NULL
               AND NOT coalesce(x.migrate_at <= upper(x.period), false)
               AND upper(subscription.nth_period(x.anchor, x.cycle, x.period_number + 1)) > at AS plain
          FROM subscription.subscription AS x
         WHERE x.tenant_id = ANY (locked) AND x.status IN ('active', 'trialing') AND upper(x.period) <= at
           FOR NO KEY UPDATE OF x SKIP LOCKED),
         -- each plan, cycle, quantity and version priced once
         terms AS MATERIALIZED (
        SELECT d.plan, d.cycle, d.quantity, d.plan_version,
               (subscription.find_price(d.plan, d.cycle, d.quantity, d.plan_version)).problem IS NULL
               AND pr.renewal_quantity = 'keep' AS plain,
               -- usage billed in arrears (issue 21): renew_common_group bills it
               EXISTS (SELECT FROM subscription.plan_usage_price AS up WHERE up.plan = d.plan) AS metered
          FROM (SELECT DISTINCT ON (d.plan, d.cycle::text, d.quantity, d.plan_version)
                       d.plan, d.cycle, d.quantity, d.plan_version
                  FROM due AS d
                 WHERE d.plain) AS d
          JOIN subscription.plan AS p ON p.code = d.plan
          JOIN subscription.product AS pr ON pr.code = p.product),
         -- the active batches of the plain ones, and whether each add-on
         -- renews priced at its cycle (priceless_addons, renewal_problem's
         -- rule), asked once per add-on and cycle
         batches AS (
        SELECT d.tenant_id, d.id, b.addon, d.cycle, b.cancel_at_period_end
          FROM due AS d
          JOIN subscription.addon_batch AS b ON b.tenant_id = d.tenant_id AND b.subscription_id = d.id
         WHERE d.plain AND b.status = 'active'),
         addon_terms AS MATERIALIZED (
        SELECT t.addon, t.cycle, subscription.priceless_addons(ARRAY[t.addon], t.cycle) IS NULL AS priced
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text) b.addon, b.cycle FROM batches AS b) AS t),
         checked AS (
        SELECT d.tenant_id, d.id, d.e, coalesce(tm.metered, false) AS metered,
               d.plain AND coalesce(tm.plain, false)
               -- a batch cancelled for the period end (K4) goes to renew_account
               AND NOT EXISTS (SELECT FROM batches AS b
                                 JOIN addon_terms AS pt ON pt.addon = b.addon AND pt.cycle::text = b.cycle::text
                                WHERE b.tenant_id = d.tenant_id AND b.id = d.id
                                  AND (b.cancel_at_period_end OR NOT pt.priced)) AS plain
          FROM due AS d
          LEFT JOIN terms AS tm
            ON tm.plan = d.plan AND tm.cycle::text = d.cycle::text AND tm.quantity = d.quantity
           AND tm.plan_version = d.plan_version)
    -- each tenant's in its order, as renew_account renews them
    SELECT array_agg(c.tenant_id ORDER BY u.k, c.e, c.id), array_agg(c.id ORDER BY u.k, c.e, c.id),
           array_agg(u.k ORDER BY u.k, c.e, c.id)
      INTO ts, ids, pos
      FROM checked AS c
      JOIN unnest(tenants) WITH ORDINALITY AS u(tenant_id, k) ON u.tenant_id = c.tenant_id
     WHERE c.tenant_id IN (SELECT x.tenant_id FROM checked AS x GROUP BY x.tenant_id
                            -- a metered one renews set-based alone in its tenant: its usage line
                            -- comes first, as renew_period writes it (credit pays in that order)
                            HAVING bool_and(x.plain) AND (count(*) = 1 OR NOT bool_or(x.metered)));
    ts := coalesce(ts, '{}');

    -- the tenants in their order; a NULL at the end renews the last group
    FOREACH tenant IN ARRAY tenants || NULL::bigint LOOP
        n := n + 1;
        IF tenant = ANY (ts) THEN
            first_n := coalesce(first_n, n);
            CONTINUE;
        END IF;
        IF first_n IS NOT NULL THEN
            PERFORM subscription.renew_common_group(
                ARRAY(SELECT g.t FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1),
                ARRAY(SELECT g.id FROM unnest(ts, ids, pos) AS g(t, id, k) WHERE g.k BETWEEN first_n AND n - 1));
            handled := handled + (SELECT count(*) FROM unnest(pos) AS g(k) WHERE g.k BETWEEN first_n AND n - 1);
            -- a common tenant with a subscription still due: renew_account's
            left_to := ARRAY(SELECT u.t FROM unnest(tenants) WITH ORDINALITY AS u(t, k)
                              WHERE u.k BETWEEN first_n AND n - 1
                                AND EXISTS (SELECT FROM subscription.subscription AS x
                                             WHERE x.tenant_id = u.t AND x.status IN ('active', 'trialing')
                                               AND upper(x.period) <= at)
                              ORDER BY u.k);
            FOREACH other IN ARRAY left_to LOOP
                handled := handled + subscription.renew_account(other, at);
            END LOOP;
            rest := rest || left_to;
            first_n := NULL;
        END IF;
        IF tenant IS NOT NULL THEN
            handled := handled + subscription.renew_account(tenant, at);
            rest := rest || tenant;
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.renew_common(bigint[], timestamptz) IS
'Internal: the renewals of one batch on a single server: its common ones set-based (renew_common_group), the others by renew_account';

-- One group of common renewals of renew_common (issue 18), subscriptions
-- given in renewal order and locked: one UPDATE moving their periods as
-- renew_period's common renewal does, one INSERT of their charges.  The
-- row triggers fire in the order of the rows: the UPDATE takes them in
-- the order given (a nested loop over the key; no hash or merge join,
-- which would take them in the table's order: both off for that statement
-- and the lines' query; its triggers join their transition tables by
-- hash), the INSERT by its ORDER BY, so
-- that history, events and credit uses come in renewal order.  Each
-- plan's and add-on's price is looked up once per distinct key.
CREATE FUNCTION subscription.renew_common_group(t bigint[], ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    joins text[];
    due subscription.subscription;
    metered subscription.subscription[] := '{}';
    -- their usage periods taken, charged by the INSERT below (issue 20)
    taken subscription.usage_period[] := '{}';
    -- the charge lines, in renewal order
    lt bigint[]; la bigint[]; ls bigint[]; lb bigint[]; lamount numeric[]; lcurrency text[];
    lperiod tstzrange[]; litem text[]; lplan text[]; ldescription text[];
    -- their billing events, in the order of their first lines, and invoices
    et bigint[]; ea bigint[]; es bigint[]; ecurrency text[]; eat timestamptz[]; eplan text[]; einvoice bigint[];
    -- the billing event of each line, whether it is the event's first;
    -- each event's lines' total
    levent bigint[];
    lfirst boolean[];
    etotal numeric[];
    g record;
    opened bigint[];
    written bigint;
BEGIN
    -- U3: the ending periods' usage, billed in arrears as renew_period
    -- bills it (bill_usage: take_usage, its lines charged by the INSERT
    -- below, issue 20), in renewal order
    FOR due IN SELECT x.* FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)
               JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id
              WHERE x.plan IN (SELECT up.plan FROM subscription.plan_usage_price AS up)
              ORDER BY r.k LOOP
        taken := taken || ARRAY(SELECT u FROM subscription.take_usage(due, upper(due.period)) AS u);
        metered := metered || due;
    END LOOP;
    -- the periods move (renew_period's common renewal), in the order given
    joins := ARRAY[current_setting('enable_hashjoin'), current_setting('enable_mergejoin')];
    PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
    UPDATE subscription.subscription AS x
       SET period_number = x.period_number + 1,
           period = subscription.nth_period(x.anchor, x.cycle, x.period_number + 1),
           paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
      FROM (SELECT r.tenant_id, r.id FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k) ORDER BY r.k) AS r
     WHERE x.tenant_id = r.tenant_id AND x.id = r.id;

    -- each subscription's plan line, then its batches', in renewal order;
    -- each price rounded once per key (round_money), not once per line.
    -- Nested loops over the keys too: a hash join read every subscription
    -- of the table for each group (issue 18: 10,000 rows read for a group
    -- of 500, growing with the table)
    WITH r AS (SELECT r.tenant_id, r.id, r.k FROM unnest(t, ids) WITH ORDINALITY AS r(tenant_id, id, k)),
         s AS (SELECT x.*, r.k FROM r JOIN subscription.subscription AS x ON x.tenant_id = r.tenant_id AND x.id = r.id),
         prices AS MATERIALIZED (
        SELECT d.plan, d.cycle, d.quantity, d.plan_version, subscription.round_money(pp.amount, pp.currency) AS amount,
               pp.currency, subscription.cycle_text(d.cycle) AS cycle_text
          FROM (SELECT DISTINCT ON (s.plan, s.cycle::text, s.quantity, s.plan_version)
                       s.plan, s.cycle, s.quantity, s.plan_version
                  FROM s) AS d
          CROSS JOIN LATERAL subscription.period_price(d.plan, d.cycle, d.quantity, d.plan_version) AS pp),
         batches AS (
        SELECT s.k, b.id, b.addon, b.quantity, s.cycle, s.tenant_id, s.account_id, s.id AS subscription_id, s.period,
               s.plan
          FROM s
          JOIN subscription.addon_batch AS b ON b.tenant_id = s.tenant_id AND b.subscription_id = s.id AND b.status = 'active'
          JOIN subscription.addon AS a ON a.code = b.addon AND NOT a.one_time),
         addon_prices AS MATERIALIZED (
        SELECT d.addon, d.cycle, d.quantity, subscription.round_money(ap.amount, ap.currency) AS amount, ap.currency,
               subscription.cycle_text(d.cycle) AS cycle_text
          FROM (SELECT DISTINCT ON (b.addon, b.cycle::text, b.quantity) b.addon, b.cycle, b.quantity
                  FROM batches AS b) AS d
          CROSS JOIN LATERAL subscription.addon_period_price(d.addon, d.cycle, d.quantity) AS ap)
    SELECT array_agg(l.tenant_id ORDER BY l.k, l.batch_order), array_agg(l.account_id ORDER BY l.k, l.batch_order),
           array_agg(l.subscription_id ORDER BY l.k, l.batch_order), array_agg(l.addon_batch_id ORDER BY l.k, l.batch_order),
           array_agg(l.amount ORDER BY l.k, l.batch_order), array_agg(l.currency ORDER BY l.k, l.batch_order),
           array_agg(l.period ORDER BY l.k, l.batch_order), array_agg(l.item ORDER BY l.k, l.batch_order),
           array_agg(l.plan ORDER BY l.k, l.batch_order), array_agg(l.description ORDER BY l.k, l.batch_order)
      INTO lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription
      FROM (SELECT s.k, 0::bigint AS batch_order, s.tenant_id, s.account_id, s.id AS subscription_id,
                   NULL::bigint AS addon_batch_id, p.amount, p.currency,
                   s.period, 'plan' AS item, s.plan,
                   format('renewal: plan %s, cycle %s, quantity %s', s.plan, p.cycle_text, s.quantity) AS description
              FROM s JOIN prices AS p
                ON p.plan = s.plan AND p.cycle::text = s.cycle::text AND p.quantity = s.quantity
               AND p.plan_version = s.plan_version
            UNION ALL
            SELECT b.k, b.id, b.tenant_id, b.account_id, b.subscription_id, b.id,
                   ap.amount, ap.currency, b.period, 'addon', b.plan,
                   format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, ap.cycle_text)
              FROM batches AS b
              JOIN addon_prices AS ap ON ap.addon = b.addon AND ap.cycle::text = b.cycle::text AND ap.quantity = b.quantity)
           AS l;
    PERFORM set_config('enable_hashjoin', joins[1], true), set_config('enable_mergejoin', joins[2], true);
    -- U3: the usage lines first, in renewal order, as bill_usage wrote
    -- them before the group's charges (issue 20: one statement, so one
    -- invoice_totals and one reduce_charge for the group)
    SELECT array_agg(c.tenant_id ORDER BY c.n) || lt, array_agg(c.account_id ORDER BY c.n) || la,
           array_agg(c.subscription_id ORDER BY c.n) || ls, array_agg(NULL::bigint ORDER BY c.n) || lb,
           array_agg(c.amount ORDER BY c.n) || lamount, array_agg(c.currency ORDER BY c.n) || lcurrency,
           array_agg(c.period ORDER BY c.n) || lperiod, array_agg(c.item ORDER BY c.n) || litem,
           array_agg(c.plan ORDER BY c.n) || lplan, array_agg(c.description ORDER BY c.n) || ldescription
      INTO lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription
      FROM subscription.usage_charges(taken) WITH ORDINALITY
           AS c(tenant_id, account_id, subscription_id, amount, currency, period, item, plan, description, n);
    -- I1, I2: the invoice of each billing event (a subscription's lines at
    -- the period's start, in a currency), as invoice_line would find or
    -- open it for the event's first line: one this transaction opened, or
    -- new ones, opened set-based over the group's tenants
    -- (open_invoices_of), numbered in the lines' order; the lines name
    -- them (issue 18)
    SELECT array_agg(l.event ORDER BY l.n), array_agg(l.n = l.first ORDER BY l.n) INTO levent, lfirst
      FROM (SELECT l.n, l.first, dense_rank() OVER (ORDER BY l.first) AS event
              FROM (SELECT l.n, min(l.n) OVER (PARTITION BY l.tenant_id, l.account_id, l.subscription_id, l.currency,
                                                            lower(l.period)) AS first
                      FROM unnest(lt, la, ls, lcurrency, lperiod) WITH ORDINALITY
                           AS l(tenant_id, account_id, subscription_id, currency, period, n)) AS l) AS l;
    SELECT array_agg(e.total ORDER BY e.event) INTO etotal
      FROM (SELECT l.event, sum(subscription.line_amount('charge', l.amount)) AS total
              FROM unnest(levent, lamount) AS l(event, amount)
             GROUP BY l.event) AS e;
    SELECT array_agg(l.tenant_id ORDER BY l.n), array_agg(l.account_id ORDER BY l.n),
           array_agg(l.subscription_id ORDER BY l.n), array_agg(l.currency ORDER BY l.n),
           array_agg(lower(l.period) ORDER BY l.n), array_agg(l.plan ORDER BY l.n),
           array_agg((SELECT i.id FROM subscription.invoice_record AS i
                       WHERE i.tenant_id = l.tenant_id AND i.account_id = l.account_id AND i.at = lower(l.period)
                         AND i.currency = l.currency AND i.subscription_id = l.subscription_id
                         AND i.corrects_invoice_id IS NULL AND i.xact = pg_current_xact_id()
                       ORDER BY i.id DESC LIMIT 1) ORDER BY l.n)
      INTO et, ea, es, ecurrency, eat, eplan, einvoice
      FROM unnest(lt, la, ls, lcurrency, lperiod, lplan, lfirst) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, currency, period, plan, first, n)
     -- each event's first line
     WHERE l.first;
    -- the events without one: their invoices opened by one call over
    -- every tenant of the group, in the order of the events, each with the
    -- total of its lines, so that invoice_totals has none to write (its
    -- UPDATE of a row opened in this transaction would check every
    -- foreign key of the invoice again: issue 18)
    SELECT array_agg(e.k ORDER BY e.k) AS ks, array_agg(e.tenant_id ORDER BY e.k) AS tenants,
           array_agg(e.account_id ORDER BY e.k) AS accounts, array_agg(e.subscription_id ORDER BY e.k) AS subs,
           array_agg(e.currency ORDER BY e.k) AS currencies, array_agg(e.at ORDER BY e.k) AS ats,
           array_agg(e.plan ORDER BY e.k) AS plans, array_agg(etotal[e.k] ORDER BY e.k) AS totals
      INTO g
      FROM unnest(et, ea, es, ecurrency, eat, eplan, einvoice) WITH ORDINALITY
           AS e(tenant_id, account_id, subscription_id, currency, at, plan, invoice_id, k)
     WHERE e.invoice_id IS NULL;
    IF g.ks IS NOT NULL THEN
        opened := subscription.open_invoices_of(g.tenants, g.accounts, g.subs, g.currencies, g.ats, g.plans, NULL,
                                                g.totals);
        FOR o IN 1 .. cardinality(g.ks) LOOP
            einvoice[g.ks[o]] := opened[o];
        END LOOP;
    END IF;
    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description,
            invoice_id)
    SELECT l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, 'charge', l.amount, l.currency, l.period,
           l.item, l.plan, l.description, einvoice[l.event]
      FROM unnest(lt, la, ls, lb, lamount, lcurrency, lperiod, litem, lplan, ldescription, levent) WITH ORDINALITY
           AS l(tenant_id, account_id, subscription_id, addon_batch_id, amount, currency, period, item, plan, description,
                event, n)
     ORDER BY l.n
    ON CONFLICT (tenant_id, subscription_id, addon_batch_id, period, item)
       WHERE kind = 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    -- a line charged already: invoice_totals gave the invoices that have
    -- lines the sum of theirs; one opened for lines none of which was
    -- written has none, and no total
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written < cardinality(lt) AND opened IS NOT NULL THEN
        UPDATE subscription.invoice_record AS i SET total = 0
         WHERE i.tenant_id = ANY (t) AND i.id = ANY (opened) AND i.total <> 0
           AND NOT EXISTS (SELECT FROM subscription.ledger AS l WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id);
    END IF;
    -- U3: their usage periods kept, naming their lines; their usage
    -- counters close with the new periods
    PERFORM subscription.keep_usage_periods(taken);
    PERFORM subscription.open_usage(m.tenant_id, m.account_id)
       FROM (SELECT DISTINCT m.tenant_id, m.account_id FROM unnest(metered) AS m ORDER BY m.tenant_id, m.account_id) AS m;
END
$$;

COMMENT ON FUNCTION subscription.renew_common_group(bigint[], bigint[]) IS
'Internal: one group of common renewals, set-based: one UPDATE moving the periods, one INSERT of the charges';

-- One batch of renew_due, run_renewals and renew_local_tenants, by
-- tenant: the next batch_size due subscriptions after (after_end,
-- after_id) in (period end, id) order, by the keyset on the due index of
-- subscription.subscription, or of its Citus shard "shard" (its tenants'
-- rows only: renew_local_tenants); each of their tenants, in the order of
-- its first due subscription, renewed by one renew_account call; on a
-- single server (no shard, the table not distributed), by renew_common:
-- the tenants whose due subscriptions all renew the common way
-- set-based, renew_account the others (issue 18).  A
-- subscription a tenant's call left due (not renewable, capped at
-- subscription.max_catchup, held by another worker, its tenant held by
-- another session) is returned in left_due: the caller's later batches
-- pass it back in skip, so that the run does not take its tenant twice
-- (the next run does).  The keyset means that no subscription is read
-- twice.  Returns how many subscriptions it read (0: the run is over) and
-- handled, and where the next batch starts.
CREATE FUNCTION subscription.renew_batch(
    at timestamptz, batch_size integer, after_end timestamptz, after_id bigint, skip bigint[], shard bigint,
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint, OUT left_due bigint[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    t bigint;
    common record;
    single boolean := shard IS NULL AND subscription.local_subscription_shards() = '{NULL}';
BEGIN
    handled := 0;
    left_due := '{}';
    EXECUTE format(
        $q$WITH d AS (SELECT x.tenant_id, upper(x.period) AS e, x.id
                        FROM %s AS x
                       WHERE x.status IN ('active', 'trialing') AND upper(x.period) <= $1
                         AND (upper(x.period), x.id) > ($2, $3) AND NOT x.id = ANY ($4)
                       ORDER BY upper(x.period), x.id
                       LIMIT $5),
              k AS (SELECT d.*, row_number() OVER (ORDER BY d.e, d.id) AS k FROM d)
           SELECT (SELECT count(*) FROM k)::integer,
                  coalesce((SELECT k.e FROM k ORDER BY k.k DESC LIMIT 1), $2),
                  coalesce((SELECT k.id FROM k ORDER BY k.k DESC LIMIT 1), $3),
                  (SELECT array_agg(f.tenant_id ORDER BY f.first)
                     FROM (SELECT k.tenant_id, min(k.k) AS first FROM k GROUP BY k.tenant_id) AS f)$q$,
        CASE WHEN shard IS NULL THEN 'subscription.subscription'
             ELSE subscription.subscription_shard(shard) END)
      INTO taken, last_end, last_id, tenants
      USING at, after_end, after_id, skip, batch_size;
    IF single THEN
        common := subscription.renew_common(coalesce(tenants, '{}'), at);
        handled := common.handled;
        -- the tenants renew_account had
        tenants := common.rest;
    END IF;
    FOREACH t IN ARRAY coalesce(tenants, '{}') LOOP
        IF NOT single THEN
            handled := handled + subscription.renew_account(t, at);
        END IF;
        left_due := left_due || ARRAY(SELECT x.id FROM subscription.subscription AS x
                                       WHERE x.tenant_id = t AND x.status IN ('active', 'trialing')
                                         AND upper(x.period) <= at);
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint, bigint[], bigint) IS
'Internal: one batch of renew_due, run_renewals and renew_local_tenants: the tenants of the next due subscriptions, each by renew_account';

-- The name of a shard of subscription.subscription that this node holds
-- (Citus), for renew_batch; 42704 for any other shard.
CREATE FUNCTION subscription.subscription_shard(shard bigint)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (shard = ANY (subscription.local_subscription_shards())) IS NOT TRUE THEN
        RAISE EXCEPTION 'shard % is not a shard of subscription.subscription on this node', shard
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN shard_name('subscription.subscription'::regclass, shard);
END
$$;

COMMENT ON FUNCTION subscription.subscription_shard(bigint) IS
'Internal: the name of a shard of subscription.subscription that this node holds (Citus)';

-- The shards of a table that this node holds, from Citus' metadata
-- (pg_dist_shard, pg_dist_placement, pg_dist_local_group); {NULL}, the
-- whole table, without Citus or while the table is not distributed; {} on
-- a node that holds none of its shards.
CREATE FUNCTION subscription.local_shards(relation regclass)
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shards bigint[];
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN '{NULL}';
    END IF;
    EXECUTE $q$SELECT CASE WHEN EXISTS (SELECT FROM pg_catalog.pg_dist_partition AS p
                                         WHERE p.logicalrelid = $1)
                           THEN ARRAY(SELECT s.shardid
                                        FROM pg_catalog.pg_dist_shard AS s
                                        JOIN pg_catalog.pg_dist_placement AS pl ON pl.shardid = s.shardid
                                       WHERE s.logicalrelid = $1
                                         AND pl.groupid = (SELECT g.groupid FROM pg_catalog.pg_dist_local_group AS g)
                                       ORDER BY s.shardid)
                           ELSE '{NULL}' END$q$
      INTO shards USING relation;
    RETURN shards;
END
$$;

COMMENT ON FUNCTION subscription.local_shards(regclass) IS
'Internal: the shards of a table on this node (Citus); {NULL} (the whole table) without Citus';

-- The shards of subscription.subscription that this node holds
-- (local_shards), for renew_batch and renew_local_tenants (a SQL-standard
-- body, bound at creation: no SET clause).
CREATE FUNCTION subscription.local_subscription_shards()
RETURNS bigint[]
LANGUAGE sql STABLE
RETURN subscription.local_shards('subscription.subscription');

COMMENT ON FUNCTION subscription.local_subscription_shards() IS
'Internal: the shards of subscription.subscription on this node (Citus); {NULL} (the whole table) without Citus';

-- Renewals are back-office work: no actor, and a trusted role; up to a
-- time neither further back than subscription.max_backdate nor further
-- ahead than subscription.max_ahead (a mistyped year bills no decades).
CREATE FUNCTION subscription.require_renewal_run(fn text, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_time(fn, at, true);
    IF coalesce(current_setting('subscription.actor', true), '') <> '' THEN
        RAISE EXCEPTION '%() is back-office work', fn
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('subscription.actor is set to %s.', current_setting('subscription.actor')),
                  HINT = 'Run it with subscription.actor empty.';
    END IF;
    PERFORM subscription.require_trusted_caller();
END
$$;

COMMENT ON FUNCTION subscription.require_renewal_run(text, timestamptz) IS 'Internal: renewals run up to a time within the bounds, as back-office code';

-- Renews, expires or cancels every subscription whose period ended by
-- "at", catching up missed periods, in one transaction: by tenant
-- batches (renew_batch), each tenant by one renew_account call; returns
-- how many it handled.  Safe to run concurrently and repeatedly: a tenant
-- is renewed by one session at a time, and a period is charged once
-- whatever runs (C2).  Progress is a NOTICE every 10,000.
CREATE FUNCTION subscription.renew_due(at timestamptz DEFAULT subscription.now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b record;
    total integer := 0;
    next_notice integer := 10000;
    after_end timestamptz := '-infinity';
    after_id bigint := 0;
    skip bigint[] := '{}';
BEGIN
    PERFORM subscription.require_arguments('renew_due', '{at}', ARRAY[at IS NULL]);
    PERFORM subscription.require_renewal_run('renew_due', at);
    LOOP
        b := subscription.renew_batch(at, 500, after_end, after_id, skip, NULL);
        EXIT WHEN b.taken = 0;
        skip := skip || b.left_due;
        total := total + b.handled;
        IF total >= next_notice THEN
            RAISE NOTICE 'renew_due: % subscriptions handled', total;
            next_notice := next_notice + 10000;
        END IF;
        after_end := b.last_end;
        after_id := b.last_id;
    END LOOP;
    RETURN total;
END
$$;

COMMENT ON FUNCTION subscription.renew_due(timestamptz) IS 'Renew, expire or cancel every subscription due by a time, catching up missed periods; back-office work';

-- The committed batches of run_renewals, renew_local_tenants and
-- run_dunning (fn, for the NOTICE), over the shards given
-- (local_subscription_shards; NULL: the whole table).  Each batch is
-- renew_batch's (run_dunning: dunning_batch's, of the same shape), by a
-- keyset that SKIP LOCKED leaves no row behind, committed as it is done,
-- so that memory and locks stay bounded by one batch however many
-- subscriptions are due: the one loop of both procedures.  A procedure that commits cannot carry SET
-- search_path: everything in it is schema-qualified, and the functions it
-- calls pin their own.  It commits, which a SECURITY DEFINER procedure
-- cannot: each of its batches (renew_batch) is SECURITY DEFINER instead.
CREATE PROCEDURE subscription.renew_in_batches(fn text, at timestamptz, batch_size integer, shards bigint[])
LANGUAGE plpgsql
AS $$
DECLARE
    b record;
    total bigint := 0;
    after_end timestamptz;
    after_id bigint;
    skip bigint[];
    shard bigint;
    -- run_dunning's batches are dunning_batch's, without a NOTICE
    dunning boolean := fn OPERATOR(pg_catalog.=) 'run_dunning';
BEGIN
    PERFORM subscription.require_renewal_run(fn, at);
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    FOREACH shard IN ARRAY shards LOOP
        after_end := '-infinity';
        after_id := 0;
        skip := '{}';
        LOOP
            IF dunning THEN
                b := subscription.dunning_batch(at, batch_size, after_id);
            ELSE
                b := subscription.renew_batch(at, batch_size, after_end, after_id, skip, shard);
            END IF;
            COMMIT;
            EXIT WHEN b.taken OPERATOR(pg_catalog.=) 0;
            skip := skip OPERATOR(pg_catalog.||) b.left_due;
            total := total OPERATOR(pg_catalog.+) b.handled;
            after_end := b.last_end;
            after_id := b.last_id;
            IF NOT dunning THEN
                RAISE NOTICE '%: % subscriptions handled', fn, total;
            END IF;
        END LOOP;
    END LOOP;
END
$$;

COMMENT ON PROCEDURE subscription.renew_in_batches(text, timestamptz, integer, bigint[]) IS
'Internal: the committed tenant batches of run_renewals, renew_local_tenants and run_dunning';

-- renew_due() for large runs: the same tenant batches, each committed as
-- it is done.  CALL it outside a transaction block.
CREATE PROCEDURE subscription.run_renewals(at timestamptz DEFAULT subscription.now(), batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM subscription.require_arguments('run_renewals', '{at,batch_size}', ARRAY[at IS NULL, batch_size IS NULL]);
    CALL subscription.renew_in_batches('run_renewals', at, batch_size, '{NULL}');
END
$$;

COMMENT ON PROCEDURE subscription.run_renewals(timestamptz, integer) IS 'renew_due in committed batches, for large runs; CALL it outside a transaction block';

-- run_renewals() for pg_cron on every node of a Citus cluster: the due
-- tenants whose subscriptions this node's shards hold
-- (local_subscription_shards), in committed batches of the tenants of
-- "batch" due subscriptions; each tenant's renew_account then runs on
-- this node.  Without Citus, or before the tables are distributed: every
-- tenant, as run_renewals.  CALL it outside a transaction block.
CREATE PROCEDURE subscription.renew_local_tenants(at timestamptz DEFAULT subscription.now(), batch integer DEFAULT 100)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM subscription.require_arguments('renew_local_tenants', '{at,batch}', ARRAY[at IS NULL, batch IS NULL]);
    CALL subscription.renew_in_batches('renew_local_tenants', at, batch, subscription.local_subscription_shards());
END
$$;

COMMENT ON PROCEDURE subscription.renew_local_tenants(timestamptz, integer) IS
'Renew the due tenants whose shards are on this node (Citus; every tenant on a single server), in committed batches, for pg_cron; CALL it outside a transaction block';

-- L5, L8: the notices' terms and prices of the subscriptions given (by id,
-- so that no made-up row can ask for another account's use; only those
-- the caller may read): what renewal_notice shows of each beyond its own
-- columns, the one place that prices a notice.  Set-based (issue 20): the
-- next terms (next_terms), the coupon's discount and the credit per
-- subscription, but each plan, cycle, quantity and version priced once
-- for all the subscriptions given (period_price, plan_tiers,
-- plan_version_or_current), not once per subscription.  renewal_notice
-- calls it for each subscription it shows (a reader of one prices one),
-- announce_renewals once for every notice it writes.  SECURITY DEFINER,
-- as the view's readers do not read the counters that the use comes from.
-- PL/pgSQL, the subscriptions read first by id alone: on Citus from the
-- shards, the functions then reading the tenant tables on the coordinator
-- (issue 17).
CREATE TYPE subscription.notice_terms AS (subscription_id bigint, tenant_id bigint, plan text, cycle interval,
                                          quantity integer, tier integer, amount numeric, currency text,
                                          discount numeric, credit numeric, plan_version integer);

COMMENT ON TYPE subscription.notice_terms IS
'A renewal notice''s plan, cycle, quantity, tier, amount, discount, credit and plan version (renewal_notices)';

CREATE FUNCTION subscription.renewal_notices(subscription_ids bigint[])
RETURNS SETOF subscription.notice_terms
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    subs subscription.subscription[];
BEGIN
    subs := ARRAY(SELECT x FROM subscription.subscription AS x WHERE x.id = ANY (renewal_notices.subscription_ids));
    RETURN QUERY
    WITH t AS MATERIALIZED (
        SELECT s.id, s.tenant_id, s.account_id, n.plan, n.cycle, n.cycle::text AS cycle_text, n.quantity, n.version
          FROM unnest(subs) AS s
          CROSS JOIN LATERAL subscription.next_terms(s) AS n
         WHERE subscription.may_read(s.tenant_id, s.account_id)),
    -- each plan, cycle (by its text: 1 month is not 30 days), quantity
    -- and version once
    p AS MATERIALIZED (
        SELECT k.plan, k.cycle_text, k.quantity, k.version,
               subscription.round_money(price.amount, price.currency) AS amount, price.currency,
               cardinality(subscription.plan_tiers(k.plan, k.version)) > 0 AS tiered,
               subscription.plan_version_or_current(k.plan, k.version) AS plan_version
          FROM (SELECT t.plan, t.cycle_text, (array_agg(t.cycle))[1] AS cycle, t.quantity, t.version
                  FROM t GROUP BY t.plan, t.cycle_text, t.quantity, t.version) AS k
          CROSS JOIN LATERAL subscription.period_price(k.plan, k.cycle, k.quantity, k.version) AS price)
    SELECT t.id, t.tenant_id, t.plan, t.cycle, t.quantity, CASE WHEN p.tiered THEN t.quantity END,
           p.amount, p.currency, d.discount,
           least(subscription.credit_balance(t.tenant_id, t.account_id, p.currency), p.amount - d.discount),
           p.plan_version
      FROM t
      JOIN p ON p.plan IS NOT DISTINCT FROM t.plan AND p.cycle_text IS NOT DISTINCT FROM t.cycle_text
            AND p.quantity IS NOT DISTINCT FROM t.quantity AND p.version IS NOT DISTINCT FROM t.version
      -- the keyed forms, with the subscription's tenant: no lookup of it
      -- per row (issue 20)
      CROSS JOIN LATERAL subscription.coupon_discount(t.tenant_id, t.id, p.amount, p.currency) AS d(discount);
END
$$;

COMMENT ON FUNCTION subscription.renewal_notices(bigint[]) IS
'The renewal''s plan, cycle, quantity, tier, amount, discount, credit and plan version of each subscription given that the caller may read (renewal_notice; L5, L8), each price looked up once for all of them';

-- L5, L8: the subscriptions that renew within subscription.notice_days
-- (default 30), with what the renewal will be (next_terms): plan (at the
-- version held, or a migration's when it takes effect then), cycle,
-- quantity (the tier on a tiered plan; from the current use on a
-- 'from_usage' product, L7), the amount to be charged and the credit that
-- will apply (L10), after the coupon's discount (Z10): renewal_notices.
-- A prepaid term renewed "to_monthly" continues monthly; "none" and
-- cancelled ones do not renew.  overdue: the renewal's time has passed and
-- renew_due has not run yet.
CREATE VIEW subscription.renewal_notice WITH (security_barrier) AS
-- s: the subscriptions that renew, by their own columns alone; on Citus
-- read from the shards (the CTE, planned apart when the whole does not push
-- down), the rest on the coordinator, so that the functions below read the
-- tenant tables from there (issue 17); on a single server inlined as if
-- written in place
WITH s AS (
    SELECT * FROM subscription.subscription AS s
     WHERE s.status OPERATOR(pg_catalog.=) ANY ('{active,trialing}')
       AND s.paused_at IS NULL
       AND NOT s.cancel_at_period_end
       AND s.renewal OPERATOR(pg_catalog.<>) 'none')
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       (r.n).plan,
       (r.n).cycle,
       (r.n).quantity,
       (r.n).tier,
       (r.n).amount,
       (r.n).currency,
       (r.n).discount,
       (r.n).credit,
       upper(s.period) OPERATOR(pg_catalog.<=) subscription.now() AS overdue,
       -- the version of the plan renewed into (grandfathering; a migration's)
       (r.n).plan_version,
       -- a trial ending: what its product makes of it (issue 19), else NULL
       CASE WHEN s.status OPERATOR(pg_catalog.=) 'trialing'
            THEN (SELECT pr.trial_end FROM subscription.plan AS p
                    JOIN subscription.product AS pr ON pr.code OPERATOR(pg_catalog.=) p.product
                   WHERE p.code OPERATOR(pg_catalog.=) s.plan) END AS trial_end,
       -- U6: the usage the renewal bills of the ending period (preview_usage),
       -- its amount in the renewal's currency and its lines
       u.usage_amount,
       u.usage
  FROM s
  -- the terms and prices (renewal_notices), of this subscription alone:
  -- one row (an aggregate) joined on true, so that a reader that takes
  -- none of their columns (announce_renewals, which prices its notices at
  -- once) has the join removed, and no call (issue 20)
  LEFT JOIN LATERAL (
      SELECT (array_agg(n))[1] AS n FROM subscription.renewal_notices(ARRAY[s.id]) AS n) AS r ON true
  -- one row (an aggregate) joined on true: a reader that takes neither
  -- usage column (announce_renewals) has the join removed, and no
  -- preview_usage call (issue 20)
  LEFT JOIN LATERAL (
      SELECT coalesce(sum(p.amount) FILTER (WHERE p.currency OPERATOR(pg_catalog.=) (r.n).currency), 0) AS usage_amount,
             jsonb_agg(jsonb_build_object('feature', p.feature, 'aggregate', p.aggregate, 'included', p.included,
                                          'billable', p.billable, 'amount', p.amount, 'currency', p.currency)
                       ORDER BY p.feature) AS usage
        FROM subscription.preview_usage(s.account_id) AS p
       WHERE p.subscription_id OPERATOR(pg_catalog.=) s.id
         -- usage_due prices a plan's usage prices alone: without any, no
         -- call (a millisecond a subscription, issue 20)
         AND EXISTS (SELECT FROM subscription.plan_usage_price AS up WHERE up.plan OPERATOR(pg_catalog.=) s.plan)) AS u ON true
 WHERE upper(s.period) OPERATOR(pg_catalog.<=)
       (subscription.now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer))
   AND subscription.may_read(s.tenant_id, s.account_id);

COMMENT ON VIEW subscription.renewal_notice IS
'Subscriptions renewing within subscription.notice_days, and trials ending (trial_end), with the renewal''s plan, cycle, quantity and amount (L5, L8), and the usage it bills (usage_amount, usage: U6)';

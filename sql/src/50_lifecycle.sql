-- Lifecycle: what takes effect at the next period (Z7, Z8, R6).

-- The subscription, locked for a change, with the actor's right checked;
-- 55000 unless it is active (or trialing, for cancel(): a trial cancelled
-- ends at its end instead of converting).
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
    PERFORM subscription.authorize(subscription_for_change.tenant_id, s.account_id, action, false);
    IF s.status <> 'active' AND NOT (s.status = 'trialing' AND fn = 'cancel') THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s() changes active subscriptions only.', fn);
    END IF;
    -- issue 19: a paused subscription changes nothing until it is resumed
    IF s.paused_at IS NOT NULL THEN
        RAISE EXCEPTION 'subscription % is paused', subscription_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s() changes subscriptions that are not paused only.', fn),
                  HINT = format('Resume it first: subscription.resume(%s).', subscription_id);
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

-- The rule (issue 18: one for both renewal paths): of the add-ons given,
-- those that renew (not one-time) and have no price for "cycle", as a
-- list, or NULL.  Reads the catalog alone.  unpriced_addons asks it of a
-- subscription's batches; renew_common of each add-on and cycle of its
-- batch once.
CREATE FUNCTION subscription.priceless_addons(addons text[], cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT string_agg(DISTINCT a.code, ', ')
              FROM subscription.addon AS a
             WHERE a.code = ANY (priceless_addons.addons) AND NOT a.one_time
               AND NOT EXISTS (SELECT FROM subscription.addon_price AS ap
                                WHERE ap.addon = a.code
                                  AND subscription.cycle_key(ap.cycle) = subscription.cycle_key(priceless_addons.cycle)));
END
$$;

COMMENT ON FUNCTION subscription.priceless_addons(text[], interval) IS
'Internal: of the add-ons given, those that renew and have no price for a cycle (unpriced_addons, renew_common)';

-- The add-ons of a subscription that renew with it (active, recurring,
-- not cancelled) and have no price for "cycle", as a list, or NULL
-- (priceless_addons).  In PL/pgSQL, the tenant named: Citus plans neither
-- a SQL function's parameters nor a read of the batches by subscription
-- alone (issue 17).
CREATE FUNCTION subscription.unpriced_addons(tenant_id bigint, subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    batches text[];
BEGIN
    SELECT array_agg(DISTINCT b.addon) INTO batches
      FROM subscription.addon_batch AS b
     WHERE b.tenant_id = unpriced_addons.tenant_id AND b.subscription_id = unpriced_addons.subscription_id
       AND b.status = 'active' AND NOT b.cancel_at_period_end;
    RETURN subscription.priceless_addons(batches, unpriced_addons.cycle);
END
$$;

COMMENT ON FUNCTION subscription.unpriced_addons(bigint, bigint, interval) IS
'Internal: the renewing add-ons of a subscription with no price for a cycle (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form
CREATE FUNCTION subscription.unpriced_addons(subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.unpriced_addons(subscription.tenant_of('subscription', unpriced_addons.subscription_id),
                                        unpriced_addons.subscription_id, unpriced_addons.cycle);
END
$$;

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
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.change_cycle(bigint,bigint,interval)', change_cycle.tenant_id,
            pg_catalog.jsonb_build_array(change_cycle.tenant_id, change_cycle.subscription_id, change_cycle.cycle)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('change_cycle', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('change_cycle', '{subscription_id,cycle}',
        ARRAY[subscription_id IS NULL, cycle IS NULL]);
    PERFORM subscription.require_cycle(cycle);
    s := subscription.subscription_for_change(change_cycle.tenant_id, 'change_cycle', subscription_id, 'change_cycle');
    PERFORM subscription.require_terms(change_cycle.tenant_id, s.account_id, subscription.now());
    -- the plan must sell this cycle for the quantity, and so must the
    -- add-ons that will renew with it (22023 otherwise)
    PERFORM subscription.period_price(n.plan, cycle, coalesce(s.pending_quantity, s.quantity), n.version)
       FROM subscription.next_plan(s) AS n;
    missing := subscription.unpriced_addons(change_cycle.tenant_id, s.id, cycle);
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
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.set_renewal(bigint,bigint,text)', set_renewal.tenant_id,
            pg_catalog.jsonb_build_array(set_renewal.tenant_id, set_renewal.subscription_id, set_renewal.renewal));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('set_renewal', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_renewal', '{subscription_id,renewal}',
        ARRAY[subscription_id IS NULL, renewal IS NULL]);
    PERFORM subscription.require_renewal(renewal);
    PERFORM subscription.subscription_for_change(set_renewal.tenant_id, 'set_renewal', subscription_id, 'change_renewal');
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
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.cancel(bigint,bigint)', cancel.tenant_id,
            pg_catalog.jsonb_build_array(cancel.tenant_id, cancel.subscription_id)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
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

-- Z8: the whole account: every active subscription, each at its period
-- end, and every trial, at its end.
CREATE FUNCTION subscription.cancel_account(tenant_id bigint, account_id bigint)
RETURNS TABLE (subscription_id bigint, ends_at timestamptz)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sub bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.cancel_account(bigint,bigint)', cancel_account.tenant_id,
            pg_catalog.jsonb_build_array(cancel_account.tenant_id, cancel_account.account_id)))
            AS r (subscription_id bigint, ends_at timestamptz);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('cancel_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('cancel_account', '{account_id}', ARRAY[account_id IS NULL]);
    PERFORM subscription.require_account(cancel_account.tenant_id, cancel_account.account_id);
    PERFORM subscription.authorize(cancel_account.tenant_id, cancel_account.account_id, 'cancel', false);
    -- each cancel() called from a loop, not from the query's target list:
    -- on Citus a query of a shard may not run a function that reads the
    -- tenant's tables (issue 17)
    FOR sub IN
        SELECT s.id FROM subscription.subscription AS s
         WHERE s.tenant_id = cancel_account.tenant_id AND s.account_id = cancel_account.account_id
           AND s.status IN ('active', 'trialing')
         ORDER BY s.id
    LOOP
        subscription_id := sub;
        ends_at := subscription.cancel(cancel_account.tenant_id, sub);
        RETURN NEXT;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.cancel_account(bigint, bigint) IS
'Cancel every active subscription of the account, each at its period end, and every trial at its end (Z8) (keyed form: the tenant first, docs/design.md#keyed-forms)';

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

COMMENT ON FUNCTION subscription.cancel_account(bigint) IS 'Cancel every active subscription of the account, each at its period end, and every trial at its end (Z8)';

-- Pause and resume (issue 19).  A paused subscription is not charged while
-- paused: its period is extended by the time it was paused (resume), so
-- the days paid for and not used before the pause are used after it.
-- Extending, not crediting: no amount is computed or rounded, nothing is
-- refunded or carried as credit, the ledger gets no correcting line, and
-- the next charge is the plan's full price, a pause later.  While paused,
-- the period ends at resume_at (infinity: until resume()), so that
-- renew_due finds it due when it is to be resumed and resumes it there,
-- and its period end before the pause is kept in paused_period_end.
-- Mode 'keep_access' keeps seats and limits; 'freeze' makes the account's
-- limits 0 and closes its seat counters (freezing_subscription): the
-- guards refuse every growing write with 55000, nothing is deleted, and
-- resuming restores the limits as they were (refresh_limits recomputes
-- them, sync_license_counter reopens the seats).

-- The account's stored limits and seat counters follow a freeze or its
-- end: its subscriptions' triggers on status recompute them.
CREATE FUNCTION subscription.refresh_freeze(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE subscription.subscription AS x SET status = x.status
     WHERE x.tenant_id = refresh_freeze.tenant_id AND x.account_id = refresh_freeze.account_id;
END
$$;

COMMENT ON FUNCTION subscription.refresh_freeze(bigint, bigint) IS
'Internal: an account''s stored limits and seat counters recomputed after a freeze begins or ends (issue 19)';

CREATE FUNCTION subscription.pause(tenant_id bigint, subscription_id bigint, at timestamptz, resume_at timestamptz, mode text)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.pause(bigint,bigint,timestamptz,timestamptz,text)', pause.tenant_id,
            pg_catalog.jsonb_build_array(pause.tenant_id, pause.subscription_id, pause.at, pause.resume_at, pause.mode)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('pause', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('pause', '{subscription_id,at,mode}',
        ARRAY[subscription_id IS NULL, at IS NULL, mode IS NULL]);
    IF mode NOT IN ('keep_access', 'freeze') THEN
        RAISE EXCEPTION 'unknown pause mode "%"', mode
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The modes are keep_access and freeze.';
    END IF;
    PERFORM subscription.require_time('pause', at, false);
    s := subscription.subscription_for_change(pause.tenant_id, 'pause', subscription_id, 'change_renewal');
    PERFORM subscription.require_in_period('pause', s, at);
    IF resume_at IS NOT NULL AND NOT resume_at > at THEN
        RAISE EXCEPTION 'resume_at % is not after the pause at %', resume_at, at
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE subscription.subscription AS x
       SET paused_at = pause.at, resume_at = pause.resume_at, pause_mode = pause.mode,
           paused_period_end = upper(x.period),
           period = tstzrange(lower(x.period), coalesce(pause.resume_at, 'infinity'), '[)')
     WHERE x.tenant_id = pause.tenant_id AND x.id = s.id;
    -- U3: the usage counters close with the paused period
    PERFORM subscription.open_usage(pause.tenant_id, s.account_id);
    IF mode = 'freeze' THEN
        PERFORM subscription.refresh_freeze(pause.tenant_id, s.account_id);
    END IF;
    RETURN resume_at;
END
$$;

COMMENT ON FUNCTION subscription.pause(bigint, bigint, timestamptz, timestamptz, text) IS
'Pause a subscription at a time, to resume at resume_at (NULL: by resume()), keeping access or freezing the account (issue 19) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.pause(subscription_id bigint, at timestamptz DEFAULT subscription.now(),
                                   resume_at timestamptz DEFAULT NULL, mode text DEFAULT 'keep_access')
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.pause(subscription.tenant_of('subscription', pause.subscription_id), pause.subscription_id,
                              pause.at, pause.resume_at, pause.mode);
END
$$;

COMMENT ON FUNCTION subscription.pause(bigint, timestamptz, timestamptz, text) IS
'Pause a subscription at a time, to resume at resume_at (NULL: by resume()), keeping access or freezing the account (issue 19)';

-- A paused subscription resumed at a time (after its pause): its period
-- ends the time it was paused later than it did, that extension is a
-- ledger line of 0.00 (so that the period is charged to its end, as
-- verify() checks), and the next period starts there (anchor, period 0).
-- resume() and renew_account (at resume_at) call it.
CREATE FUNCTION subscription.unpause(s subscription.subscription, at timestamptz)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    paused interval := at - s.paused_at;
    ends timestamptz := s.paused_period_end + paused;
    frozen boolean := s.pause_mode = 'freeze';
    last_currency text;
BEGIN
    UPDATE subscription.subscription AS x
       SET period = tstzrange(lower(x.period), ends, '[)'), anchor = ends, period_number = 0,
           paused_at = NULL, resume_at = NULL, pause_mode = NULL, paused_period_end = NULL
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id
    RETURNING * INTO s;
    -- U3: the usage counters close with the extended period
    PERFORM subscription.open_usage(s.tenant_id, s.account_id);
    -- C2: the extension is a period of its own, charged 0.00 once, in the
    -- currency of the last charge (rounded here, not in the statement on
    -- the tenant's shard, which Citus refuses a read of the catalog: issue 17)
    SELECT l.currency INTO last_currency
      FROM subscription.ledger AS l
     WHERE l.tenant_id = s.tenant_id AND l.subscription_id = s.id AND l.kind = 'charge'
     ORDER BY l.id DESC LIMIT 1;
    IF FOUND THEN
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
        VALUES (s.tenant_id, s.account_id, s.id, 'charge', subscription.round_money(0, last_currency), last_currency,
                tstzrange(ends - paused, ends, '[)'), 'plan', s.plan, format('pause: period extended by %s', paused));
    END IF;
    IF frozen THEN
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    END IF;
    RETURN s;
END
$$;

COMMENT ON FUNCTION subscription.unpause(subscription.subscription, timestamptz) IS
'Internal: a paused subscription resumed at a time, its period extended by the time it was paused (issue 19)';

CREATE FUNCTION subscription.resume(tenant_id bigint, subscription_id bigint, at timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.resume(bigint,bigint,timestamptz)', resume.tenant_id,
            pg_catalog.jsonb_build_array(resume.tenant_id, resume.subscription_id, resume.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('resume', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('resume', '{subscription_id,at}', ARRAY[subscription_id IS NULL, at IS NULL]);
    PERFORM subscription.require_time('resume', at, false);
    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.tenant_id = resume.tenant_id AND x.id = resume.subscription_id
       FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(s.account_id, 'change_renewal');
    IF s.paused_at IS NULL THEN
        RAISE EXCEPTION 'subscription % is not paused', subscription_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF at < s.paused_at OR at > s.resume_at THEN
        RAISE EXCEPTION 'subscription % cannot be resumed at %', subscription_id, at
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('It is paused from %s%s.', s.paused_at,
                                  coalesce(' to ' || s.resume_at, ''));
    END IF;
    s := subscription.unpause(s, at);
    RETURN upper(s.period);
END
$$;

COMMENT ON FUNCTION subscription.resume(bigint, bigint, timestamptz) IS
'Resume a paused subscription; its period is extended by the time it was paused; returns when it ends (issue 19) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.resume(subscription_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS timestamptz
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.resume(subscription.tenant_of('subscription', resume.subscription_id), resume.subscription_id,
                               resume.at);
END
$$;

COMMENT ON FUNCTION subscription.resume(bigint, timestamptz) IS
'Resume a paused subscription; its period is extended by the time it was paused; returns when it ends (issue 19)';

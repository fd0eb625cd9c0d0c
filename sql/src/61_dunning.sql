-- Past due and dunning (issue 19, item 5; docs/dunning.md; rules D1-D5).
-- An open invoice of a subscription unpaid after its due date, or whose
-- charge failed, makes the subscription past_due (D1).  It keeps its seats
-- and limits (D2: the status counts as active in granted_limit and
-- assigns_licenses, which the guards' counter rows store) and is neither
-- renewed nor changed until paid.  run_dunning moves it along its
-- product's ladder, once per step (D3), to the final action (D4); a full
-- payment, or a void, ends it in the same transaction (D5).

-- D3: when step k of a ladder falls: "since" plus the days of its first k
-- steps (each the days from the step before).
CREATE FUNCTION subscription.dunning_step_at(since timestamptz, days integer[], k integer)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN dunning_step_at.since OPERATOR(pg_catalog.+)
       pg_catalog.make_interval(days => (SELECT coalesce(pg_catalog.sum(d), 0)::integer
                                           FROM pg_catalog.unnest(dunning_step_at.days[1:dunning_step_at.k]) AS d));

COMMENT ON FUNCTION subscription.dunning_step_at(timestamptz, integer[], integer) IS
'Internal: when step k of a dunning ladder falls, from the time the subscription became past due (D3)';

-- D1: an active subscription becomes past due for an invoice, since a
-- time (the invoice's due date, or the failed charge).  Its status change
-- is a history row, and the event subscription.past_due (E1).  Returns
-- whether it did (a paused, trialing, ended or already past-due one does not).
CREATE FUNCTION subscription.enter_past_due(tenant_id bigint, subscription_id bigint, invoice_id bigint,
                                            since timestamptz)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    missing boolean[] := ARRAY[tenant_id IS NULL, subscription_id IS NULL, invoice_id IS NULL, since IS NULL];
BEGIN
    IF true = ANY (missing) THEN
        PERFORM subscription.require_arguments('enter_past_due', '{tenant_id,subscription_id,invoice_id,since}', missing);
    END IF;
    UPDATE subscription.subscription AS x
       SET status = 'past_due', past_due_since = enter_past_due.since,
           past_due_invoice_id = enter_past_due.invoice_id, dunning_step = 0
     WHERE x.tenant_id = enter_past_due.tenant_id AND x.id = enter_past_due.subscription_id
       AND x.status = 'active' AND x.paused_at IS NULL;
    RETURN FOUND;
END
$$;

COMMENT ON FUNCTION subscription.enter_past_due(bigint, bigint, bigint, timestamptz) IS
'Internal: an active subscription past due for an invoice since a time (D1)';

-- D5: the invoice a subscription is past due for is paid in full or void:
-- the subscription is active again and a freeze of its dunning lifted,
-- in the caller's transaction.  settle_invoice and void_invoice call it.
CREATE FUNCTION subscription.end_past_due(tenant_id bigint, subscription_id bigint, invoice_id bigint)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    froze boolean;
BEGIN
    -- looked up (and locked) before the UPDATE: an UPDATE of no row still
    -- fires the table's statement triggers (history, limits, seats), and
    -- most paid invoices are of a subscription that is not past due
    SELECT x.dunning_frozen INTO froze FROM subscription.subscription AS x
     WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
       AND x.status = 'past_due' AND x.past_due_invoice_id = end_past_due.invoice_id
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE subscription.subscription AS x
       SET status = 'active', past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           dunning_frozen = false
     WHERE x.tenant_id = end_past_due.tenant_id AND x.id = end_past_due.subscription_id
    RETURNING * INTO s;
    -- the account's limits and seat counters as they were (a freeze's
    -- end): only where its dunning froze the account.  Otherwise no
    -- subscription's freeze changed (freezing_subscription), and the
    -- UPDATE above already refreshed this one's counter and its account's
    -- limits (its status changed): a second UPDATE of the account's
    -- subscriptions, with their statement triggers, would change nothing
    IF froze THEN
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
    END IF;
    RETURN true;
END
$$;

COMMENT ON FUNCTION subscription.end_past_due(bigint, bigint, bigint) IS
'Internal: a past-due subscription active again once its invoice is paid or void, its dunning''s freeze lifted (D5)';

-- D4: the last step of a subscription's ladder: its product's final action.
--   cancel:    the subscription is cancelled now, the invoice uncollectible;
--   freeze:    it stays past due and the account is frozen (as a pause in
--              mode freeze: limits 0, seat counters closed) until paid;
--   downgrade: it moves to the product's free plan now (apply_downgrade,
--              trimming by the tables' rules), the invoice uncollectible
--              (no free plan for its cycle: cancelled, with a WARNING);
--   keep:      it is active again with its access, the invoice uncollectible.
CREATE FUNCTION subscription.dunning_final(s subscription.subscription, i subscription.invoice_record,
                                           action text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    free text;
BEGIN
    PERFORM subscription.require_arguments('dunning_final', '{s,i,action,at}',
        ARRAY[(s).id IS NULL, (i).id IS NULL, action IS NULL, at IS NULL]);
    IF action NOT IN ('cancel', 'freeze', 'downgrade', 'keep') THEN
        RAISE EXCEPTION 'unknown final action of a dunning "%"', action
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The final actions are cancel, freeze, downgrade and keep.';
    END IF;
    IF action = 'freeze' THEN
        UPDATE subscription.subscription AS x SET dunning_frozen = true
         WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
        PERFORM subscription.refresh_freeze(s.tenant_id, s.account_id);
        RETURN;
    END IF;
    IF action = 'downgrade' THEN
        free := subscription.free_plan(s.plan, s.cycle);
        IF free IS NULL THEN
            RAISE WARNING 'subscription % is cancelled at the end of its dunning: plan "%" has no free plan for cycle %',
                          s.id, s.plan, subscription.cycle_text(s.cycle);
            action := 'cancel';
        END IF;
    END IF;
    UPDATE subscription.invoice_record AS r SET status = 'uncollectible'
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.invoice_status_history(i, 'uncollectible', dunning_final.at, '{}', false);
    UPDATE subscription.subscription AS x
       SET status = CASE WHEN action = 'cancel' THEN 'cancelled' ELSE 'active' END,
           past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
           pending_plan = CASE WHEN action = 'downgrade' AND free <> x.plan THEN free ELSE x.pending_plan END
     WHERE x.tenant_id = s.tenant_id AND x.id = s.id;
    IF action = 'downgrade' AND free <> s.plan THEN
        PERFORM FROM subscription.apply_downgrade(s.tenant_id, s.id, false);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.dunning_final(subscription.subscription, subscription.invoice_record, text, timestamptz) IS
'Internal: the final action of a dunning ladder: cancel, freeze, downgrade to the free plan, or keep (D4)';

-- D1, D3, D4: one tenant's dunning up to a time.  The subscriptions with
-- an open invoice due by then become past due (since its due date); each
-- past-due one takes the steps of its product's ladder that have fallen
-- by then, each once: a history row 'dunning_step' (the event
-- subscription.dunning_step), every step but the last a retry that the
-- view dunning_retry lists, the last the final action.  A subscription or
-- invoice another session holds is skipped (SKIP LOCKED: that session is
-- paying it, or another worker runs it) and taken by a later run; the
-- steps taken are in the subscription's row, so a run again takes none
-- twice.  Returns how many moves it made (a subscription becoming past
-- due; one taking the steps that fell).  Every statement names
-- the tenant (Citus: one shard group).
CREATE FUNCTION subscription.run_dunning_tenant(tenant_id bigint, at timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    s subscription.subscription;
    i subscription.invoice_record;
    ladder integer[];
    action text;
    k integer;
    step_at timestamptz;
    moved integer := 0;
BEGIN
    PERFORM subscription.require_arguments('run_dunning_tenant', '{tenant_id,at}',
        ARRAY[tenant_id IS NULL, at IS NULL]);
    PERFORM subscription.require_renewal_run('run_dunning_tenant', at);
    -- D1: the oldest open invoice due by "at" of each active subscription
    FOR r IN SELECT DISTINCT ON (v.subscription_id) v.subscription_id, v.id, v.due_at
               FROM subscription.invoice_record AS v
              WHERE v.tenant_id = run_dunning_tenant.tenant_id AND v.status = 'open'
                AND v.due_at <= run_dunning_tenant.at AND v.subscription_id IS NOT NULL
              ORDER BY v.subscription_id, v.due_at, v.id LOOP
        -- the subscription, then its invoice, as record_payment takes them
        -- the other way round: neither waits, so neither deadlocks
        SELECT * INTO s FROM subscription.subscription AS x
         WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = r.subscription_id
           AND x.status = 'active' AND x.paused_at IS NULL
           FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        PERFORM FROM subscription.invoice_record AS v
         WHERE v.tenant_id = run_dunning_tenant.tenant_id AND v.id = r.id AND v.status = 'open'
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        IF subscription.enter_past_due(run_dunning_tenant.tenant_id, s.id, r.id, r.due_at) THEN
            moved := moved + 1;
        END IF;
    END LOOP;
    -- D3, D4: the ladder's steps that have fallen
    FOR r IN SELECT x.id FROM subscription.subscription AS x
              WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.status = 'past_due' AND NOT x.dunning_frozen
              ORDER BY x.id LOOP
        SELECT * INTO s FROM subscription.subscription AS x
         WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = r.id
           AND x.status = 'past_due' AND NOT x.dunning_frozen
           FOR NO KEY UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT * INTO i FROM subscription.invoice_record AS v
         WHERE v.tenant_id = run_dunning_tenant.tenant_id AND v.id = s.past_due_invoice_id AND v.status = 'open'
           FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        SELECT pr.dunning_days, pr.dunning_action INTO ladder, action
          FROM subscription.plan AS p JOIN subscription.product AS pr ON pr.code = p.product
         WHERE p.code = s.plan;
        IF s.dunning_step < cardinality(ladder)
           AND subscription.dunning_step_at(s.past_due_since, ladder, s.dunning_step + 1) <= run_dunning_tenant.at THEN
            moved := moved + 1;
        END IF;
        WHILE s.dunning_step < cardinality(ladder) LOOP
            k := s.dunning_step + 1;
            step_at := subscription.dunning_step_at(s.past_due_since, ladder, k);
            EXIT WHEN step_at > run_dunning_tenant.at;
            PERFORM subscription.write_history('dunning_step', s.account_id, s.id,
                jsonb_build_object('invoice_id', i.id, 'step', k, 'steps', cardinality(ladder),
                                   'action', CASE WHEN k < cardinality(ladder) THEN 'retry' ELSE action END,
                                   'due', i.total - i.paid, 'currency', i.currency, 'at', step_at),
                s.tenant_id);
            IF k < cardinality(ladder) THEN
                UPDATE subscription.subscription AS x SET dunning_step = k
                 WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = s.id
                RETURNING * INTO s;
            ELSE
                UPDATE subscription.subscription AS x SET dunning_step = k
                 WHERE x.tenant_id = run_dunning_tenant.tenant_id AND x.id = s.id
                RETURNING * INTO s;
                PERFORM subscription.dunning_final(s, i, action, step_at);
                EXIT;
            END IF;
        END LOOP;
    END LOOP;
    RETURN moved;
END
$$;

COMMENT ON FUNCTION subscription.run_dunning_tenant(bigint, timestamptz) IS
'One tenant''s dunning up to a time: overdue subscriptions past due, each ladder''s fallen steps taken once, to the final action (D1, D3, D4); returns how many moves it made';

-- One batch of run_dunning: the next batch_size tenants after after_id,
-- by the keyset of their ids, with an open invoice of a subscription due
-- by "at", each by run_dunning_tenant.  The shape of renew_batch, so that
-- one loop commits both (renew_in_batches): how many tenants it read (0:
-- the run is over), the moves made, and where the next batch starts
-- (last_id; last_end and left_due are renew_batch's, unused here).
CREATE FUNCTION subscription.dunning_batch(
    at timestamptz, batch_size integer, after_id bigint,
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint, OUT left_due bigint[])
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    t bigint;
BEGIN
    PERFORM subscription.require_arguments('dunning_batch', '{at,batch_size,after_id}',
        ARRAY[at IS NULL, batch_size IS NULL, after_id IS NULL]);
    tenants := ARRAY(SELECT DISTINCT v.tenant_id FROM subscription.invoice_record AS v
                      WHERE v.status = 'open' AND v.due_at <= dunning_batch.at
                        AND v.subscription_id IS NOT NULL AND v.tenant_id > dunning_batch.after_id
                      ORDER BY v.tenant_id LIMIT dunning_batch.batch_size);
    taken := cardinality(tenants);
    handled := 0;
    last_id := coalesce(tenants[taken], after_id);
    left_due := '{}';
    FOREACH t IN ARRAY tenants LOOP
        handled := handled + subscription.run_dunning_tenant(t, dunning_batch.at);
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.dunning_batch(timestamptz, integer, bigint) IS
'Internal: one batch of run_dunning: the next tenants with an open invoice due, each by run_dunning_tenant';

-- run_dunning_tenant for every tenant with an open invoice due by "at", in
-- committed batches of batch_size tenants (dunning_batch), by the keyset
-- of their ids: a run reads no tenant twice, and several workers may run
-- at once (each subscription a worker holds, another skips).  The loop
-- that commits is run_renewals' (renew_in_batches).  For pg_cron, next to
-- run_renewals.  CALL it outside a transaction block.
CREATE PROCEDURE subscription.run_dunning(at timestamptz DEFAULT subscription.now(), batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM subscription.require_arguments('run_dunning', '{at,batch_size}',
        ARRAY[run_dunning.at IS NULL, run_dunning.batch_size IS NULL]);
    CALL subscription.renew_in_batches('run_dunning', run_dunning.at, run_dunning.batch_size, '{NULL}');
END
$$;

COMMENT ON PROCEDURE subscription.run_dunning(timestamptz, integer) IS
'Dunning for every tenant (run_dunning_tenant) in committed batches, for pg_cron; CALL it outside a transaction block (D3)';

-- D3: the retries due, for the application's payment job: each past-due
-- subscription whose ladder's latest step is a retry that no failure
-- recorded since (record_payment_failure) has answered, with what to charge.
CREATE VIEW subscription.dunning_retry WITH (security_barrier) AS
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
SELECT s.id AS subscription_id,
       s.account_id,
       i.id AS invoice_id,
       i.document_number,
       i.total OPERATOR(pg_catalog.-) i.paid AS due,
       i.currency,
       i.payment_method_id,
       s.dunning_step AS step,
       pg_catalog.cardinality(pr.dunning_days) AS steps,
       s.past_due_since,
       subscription.dunning_step_at(s.past_due_since, pr.dunning_days, s.dunning_step) AS retry_at
  FROM subscription.subscription AS s
  JOIN subscription.invoice_record AS i
    ON i.tenant_id OPERATOR(pg_catalog.=) s.tenant_id AND i.id OPERATOR(pg_catalog.=) s.past_due_invoice_id
  JOIN subscription.plan AS p ON p.code OPERATOR(pg_catalog.=) s.plan
  JOIN subscription.product AS pr ON pr.code OPERATOR(pg_catalog.=) p.product
  CROSS JOIN readable
 WHERE s.status OPERATOR(pg_catalog.=) 'past_due' AND NOT s.dunning_frozen
   AND s.dunning_step OPERATOR(pg_catalog.>=) 1
   AND i.status OPERATOR(pg_catalog.=) 'open'
   AND NOT EXISTS (SELECT FROM subscription.history AS h
                    WHERE h.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
                      AND h.subscription_id OPERATOR(pg_catalog.=) s.id
                      AND h.operation OPERATOR(pg_catalog.=) 'payment_failure'
                      AND h.details OPERATOR(pg_catalog.->) 'invoice_id' OPERATOR(pg_catalog.=) pg_catalog.to_jsonb(i.id)
                      AND (h.details OPERATOR(pg_catalog.->>) 'at')::pg_catalog.timestamptz
                          OPERATOR(pg_catalog.>=) subscription.dunning_step_at(s.past_due_since, pr.dunning_days, s.dunning_step))
   AND (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) s.account_id));

COMMENT ON VIEW subscription.dunning_retry IS
'The retries due: past-due subscriptions whose dunning step is a retry not yet answered by a recorded failure, with the invoice and what is due (D3)';

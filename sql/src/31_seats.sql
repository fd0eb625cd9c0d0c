-- Seats (Z4, R2, R10, R11, R12): capacity, the counter and service seats
-- kept by triggers, the license guard (C), default licenses, the license
-- holders, and changing a subscription's quantity.

-- Licenses a subscription may assign: its quantity plus the license units
-- of its active add-on batches (add-ons whose feature is 'licenses').
-- Every read names the tenant: on Citus it runs on the tenant's shards,
-- from a trigger on them too (issue 17); PL/pgSQL, as Citus plans no
-- statement of a SQL function with parameters.
CREATE FUNCTION subscription.license_capacity(tenant_id bigint, subscription_id bigint)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT s.quantity OPERATOR(pg_catalog.+) coalesce(
               (SELECT sum(b.quantity::bigint OPERATOR(pg_catalog.*) a.units)
                  FROM subscription.addon_batch AS b
                  JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon
                 WHERE b.tenant_id OPERATOR(pg_catalog.=) license_capacity.tenant_id
                   AND b.subscription_id OPERATOR(pg_catalog.=) license_capacity.subscription_id
                   AND b.status OPERATOR(pg_catalog.=) 'active'
                   AND a.feature OPERATOR(pg_catalog.=) 'licenses'), 0)::integer
          FROM subscription.subscription AS s
         WHERE s.tenant_id OPERATOR(pg_catalog.=) license_capacity.tenant_id
           AND s.id OPERATOR(pg_catalog.=) license_capacity.subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.license_capacity(bigint, bigint) IS
'Licenses a subscription may assign: its quantity plus license add-ons (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form
CREATE FUNCTION subscription.license_capacity(subscription_id bigint)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
RETURN subscription.license_capacity(subscription.tenant_of('subscription', license_capacity.subscription_id),
                                     license_capacity.subscription_id);

COMMENT ON FUNCTION subscription.license_capacity(bigint) IS 'Licenses a subscription may assign: its quantity plus license add-ons';

-- The paused subscription that freezes an account (pause(..., mode =>
-- 'freeze'), issue 19), or the past-due one whose dunning ladder froze it
-- (D4), or NULL: while one does, the account's limits are 0
-- (limit_of) and its seat counters closed (assigns_licenses), so that the
-- guards refuse every growing write from the counter rows they already
-- lock, and only their refusals call this to say why (55000, with a HINT to
-- resume).  PL/pgSQL, as Citus plans no statement of a SQL function with
-- parameters.
CREATE FUNCTION subscription.freezing_subscription(tenant_id bigint, account_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT min(s.id) FROM subscription.subscription AS s
             WHERE s.tenant_id OPERATOR(pg_catalog.=) freezing_subscription.tenant_id
               AND s.account_id OPERATOR(pg_catalog.=) freezing_subscription.account_id
               AND (s.pause_mode OPERATOR(pg_catalog.=) 'freeze' OR s.dunning_frozen));
END
$$;

COMMENT ON FUNCTION subscription.freezing_subscription(bigint, bigint) IS
'Internal: the paused subscription that freezes the account (pause mode freeze), or the past-due one its dunning froze (D4), or NULL';

-- D4: the invoice whose dunning froze an account (its ladder's final
-- action 'freeze'), or NULL (not frozen, or frozen by a pause): what the
-- guards' refusals name as the way out.  Read only on the way to a refusal.
CREATE FUNCTION subscription.dunning_freeze_invoice(tenant_id bigint, account_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT s.past_due_invoice_id FROM subscription.subscription AS s
             WHERE s.tenant_id OPERATOR(pg_catalog.=) dunning_freeze_invoice.tenant_id
               AND s.account_id OPERATOR(pg_catalog.=) dunning_freeze_invoice.account_id
               AND s.dunning_frozen AND s.pause_mode IS NULL
             ORDER BY s.id LIMIT 1);
END
$$;

COMMENT ON FUNCTION subscription.dunning_freeze_invoice(bigint, bigint) IS
'Internal: the past-due invoice whose dunning froze the account (D4), or NULL';

-- D2: the statuses in which a subscription grants its plan's seats and
-- limits: active, trialing and past due (a past-due one keeps them until
-- its dunning ends).  The one place of that set: assigns_licenses,
-- granted_limits, the triggers that recompute counters and limits on a
-- change of status, which a move between two of these statuses changes
-- neither of (issue 20), and the statements of license_consume in
-- src/licenses.c (on a 1.0 schema, which has no such function, those read
-- 1.0's rule, its seat counter's "active").  An SQL-standard body, inlined
-- where it is called.
CREATE FUNCTION subscription.status_grants(status text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN status_grants.status OPERATOR(pg_catalog.=) ANY ('{active,trialing,past_due}'::text[]);

COMMENT ON FUNCTION subscription.status_grants(text) IS
'Whether a subscription in this status grants its plan''s seats and limits: active, trialing or past due (D2)';

-- Whether a subscription assigns licenses: it is active, trialing or past
-- due (D2, status_grants), and its account is not frozen.  Its seat counter's "active", which the
-- license guard reads.  Of columns, not of the row: on Citus a trigger on
-- a shard reads rows of the shard's own row type (issue 17).
CREATE FUNCTION subscription.assigns_licenses(tenant_id bigint, account_id bigint, status text)
RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.status_grants(assigns_licenses.status)
           AND subscription.freezing_subscription(assigns_licenses.tenant_id, assigns_licenses.account_id) IS NULL;
END
$$;

COMMENT ON FUNCTION subscription.assigns_licenses(bigint, bigint, text) IS
'Internal: whether a subscription assigns licenses (active, trialing or past due, its account not frozen): its seat counter''s "active"';

-- Keeps a subscription's seat counter in step with its quantity, status and
-- add-on batches.  Lowering the capacity below the licenses in use fails on
-- the counter's CHECK (23514): release licenses first.  Per statement over
-- the transition tables (issue 18): the subscriptions the statement
-- concerns are read into a local set first (on Citus a transition table is
-- never joined with a distributed table), each counter is written once,
-- in the order of the subscriptions' keys, by statements that name its
-- tenant.  An UPDATE of subscriptions concerns the rows whose quantity
-- changed or whose status moved into or out of the statuses that grant
-- (status_grants: from active to past due, or a trial's end, changes no
-- counter), and the rows it left as they were (refresh_freeze()
-- names an account's subscriptions so that their counters follow a
-- freeze); an UPDATE of add-on batches, every row.
CREATE FUNCTION subscription.sync_license_counter()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its transition tables joined by hash, whatever statement fired it (a
-- renewal's UPDATE runs with nested loops alone: renew_common_group)
SET enable_hashjoin = on
AS $$
DECLARE
    tenants bigint[];
    subs bigint[];
    is_active boolean;
    capacity integer;
    -- the logical table, from the trigger's argument (issue 17)
    logical text := TG_ARGV[0];
    -- the setting to put back after a join of the transition tables
    nestloop text := current_setting('enable_nestloop');
BEGIN
    -- a restore copies the counter (restored_copy): the copy is trusted,
    -- and verify() compares it with the licenses afterwards
    IF TG_OP = 'INSERT' AND logical = 'subscription' THEN
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM new_rows AS n
         WHERE NOT subscription.restored_copy('subscription.subscription_id_seq', n.id);
    ELSIF TG_OP = 'UPDATE' AND logical = 'subscription' THEN
        -- old and new rows joined by hash, never by a nested loop: the
        -- cached plan's estimate of a transition table is the row count of
        -- the statement that first fired the trigger in the session (one
        -- row, as often as not), and a nested loop over the renewal of 500
        -- subscriptions compared 250,000 pairs (issue 18)
        PERFORM set_config('enable_nestloop', 'off', true);
        SELECT array_agg(n.tenant_id ORDER BY n.tenant_id, n.id), array_agg(n.id ORDER BY n.tenant_id, n.id)
          INTO tenants, subs
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE o.quantity IS DISTINCT FROM n.quantity
            OR subscription.status_grants(o.status) IS DISTINCT FROM subscription.status_grants(n.status)
            OR ROW(o.*) IS NOT DISTINCT FROM ROW(n.*);
        PERFORM set_config('enable_nestloop', nestloop, true);
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id FROM old_rows AS b) AS x;
    ELSE
        SELECT array_agg(x.tenant_id ORDER BY x.tenant_id, x.subscription_id),
               array_agg(x.subscription_id ORDER BY x.tenant_id, x.subscription_id)
          INTO tenants, subs
          FROM (SELECT DISTINCT b.tenant_id, b.subscription_id
                  FROM new_rows AS b
                 WHERE TG_OP = 'UPDATE'
                    OR NOT subscription.restored_copy('subscription.addon_batch_id_seq', b.id)) AS x;
    END IF;
    FOR k IN 1 .. coalesce(cardinality(subs), 0) LOOP
        -- each statement names the tenant: on Citus a trigger on a shard
        -- runs only statements on its own node (issue 17)
        SELECT subscription.assigns_licenses(s.tenant_id, s.account_id, s.status) INTO is_active
          FROM subscription.subscription AS s WHERE s.tenant_id = tenants[k] AND s.id = subs[k];
        CONTINUE WHEN NOT FOUND;
        capacity := subscription.license_capacity(tenants[k], subs[k]);
        INSERT INTO subscription.license_counter AS c (tenant_id, subscription_id, capacity, active)
        VALUES (tenants[k], subs[k], capacity, is_active)
        ON CONFLICT (tenant_id, subscription_id) DO UPDATE
           SET capacity = excluded.capacity, active = excluded.active
         WHERE (c.capacity, c.active) IS DISTINCT FROM (excluded.capacity, excluded.active);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.sync_license_counter() IS 'Trigger: seat capacities follow quantities, statuses and add-on batches';

-- one trigger per event: a trigger with transition tables fires on one
CREATE TRIGGER subscription_license_counter AFTER INSERT ON subscription.subscription
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('subscription');
CREATE TRIGGER subscription_license_counter_update AFTER UPDATE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('subscription');
CREATE TRIGGER addon_batch_license_counter AFTER INSERT ON subscription.addon_batch
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');
CREATE TRIGGER addon_batch_license_counter_update AFTER UPDATE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');
CREATE TRIGGER addon_batch_license_counter_delete AFTER DELETE ON subscription.addon_batch
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_license_counter('addon_batch');

-- A subscription whose plan turns from a service into an option, or back, or
-- to another product, gets its licenses' service seats rebuilt (R11).
CREATE FUNCTION subscription.reseat_licenses(subscription_ids bigint[])
RETURNS void
AS 'MODULE_PATHNAME', 'reseat_licenses'
LANGUAGE C STRICT;

COMMENT ON FUNCTION subscription.reseat_licenses(bigint[]) IS 'Internal (C): rebuild the service seats of subscriptions whose plan changed kind or product (R11)';

-- One tenant's subscriptions, every statement naming the tenant: on Citus
-- from a trigger on the tenant's shard of subscription (issue 17).
CREATE FUNCTION subscription.reseat_licenses(tenant_id bigint, subscription_ids bigint[])
RETURNS void
AS 'MODULE_PATHNAME', 'reseat_licenses'
LANGUAGE C STRICT;

COMMENT ON FUNCTION subscription.reseat_licenses(bigint, bigint[]) IS 'Internal (C): rebuild the service seats of one tenant''s subscriptions whose plan changed kind or product (R11)';

-- R11: which plans take a seat, said once in C (src/licenses.c), where the
-- license guard reads it too.
CREATE FUNCTION subscription.seat_product(kind text, product text)
RETURNS text
AS 'MODULE_PATHNAME', 'seat_product'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.seat_product(text, text) IS
'The product whose seat a plan of this kind takes, NULL when it takes none (an option) (R11)';

-- Per statement over the transition tables (issue 18): the subscriptions
-- whose seats are rebuilt are gathered first, then rebuilt in one call.
CREATE FUNCTION subscription.sync_service_seats()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
-- its transition tables joined by hash, whatever statement fired it (a
-- renewal's UPDATE runs with nested loops alone: renew_common_group)
SET enable_hashjoin = on
AS $$
DECLARE
    ids bigint[];
    old_plans text[];
    new_plans text[];
    subs bigint[];
    tenants bigint[];
    sub_tenants bigint[];
    t bigint;
    -- the setting to put back after a join of the transition tables
    nestloop text := current_setting('enable_nestloop');
BEGIN
    -- the logical table, from the trigger's argument (issue 17)
    IF TG_ARGV[0] IN ('plan', 'suite_component') AND NOT subscription.catalog_reads_tenants() THEN
        -- a Citus worker's placement of the catalog: the coordinator's
        -- rebuilds the seats, on every shard
        RETURN NULL;
    ELSIF TG_ARGV[0] = 'plan' THEN
        -- the plans whose seat or product changed, read first
        SELECT array_agg(n.code) FILTER (WHERE subscription.seat_product(o.kind, o.product) IS DISTINCT FROM
                                                subscription.seat_product(n.kind, n.product)),
               array_agg(n.code) FILTER (WHERE o.product IS DISTINCT FROM n.product)
          INTO old_plans, new_plans
          FROM old_rows AS o JOIN new_rows AS n ON n.code = o.code;
        -- the plan's own subscriptions, and (Z3) those of the suites that include it
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s
             WHERE s.plan = ANY (old_plans)
                OR s.plan IN (SELECT sc.suite_plan FROM subscription.suite_component AS sc
                               WHERE sc.plan = ANY (new_plans))));
    ELSIF TG_ARGV[0] = 'suite_component' THEN
        -- Z3: a suite's licenses seat the products of the plans it includes
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(n.suite_plan) INTO old_plans FROM new_rows AS n;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(o.suite_plan) INTO old_plans FROM old_rows AS o;
        ELSE
            SELECT array_agg(x.suite_plan) INTO old_plans
              FROM (SELECT o.suite_plan FROM old_rows AS o UNION SELECT n.suite_plan FROM new_rows AS n) AS x;
        END IF;
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s WHERE s.plan = ANY (old_plans)));
    ELSE
        -- the subscriptions whose plan changed, read into a local set first
        -- (on Citus a transition table is never joined with another table)
        -- by hash (sync_license_counter)
        PERFORM set_config('enable_nestloop', 'off', true);
        SELECT array_agg(n.id ORDER BY n.tenant_id, n.id), array_agg(o.plan ORDER BY n.tenant_id, n.id),
               array_agg(n.plan ORDER BY n.tenant_id, n.id), array_agg(n.tenant_id ORDER BY n.tenant_id, n.id)
          INTO ids, old_plans, new_plans, tenants
          FROM old_rows AS o JOIN new_rows AS n ON n.tenant_id = o.tenant_id AND n.id = o.id
         WHERE o.plan IS DISTINCT FROM n.plan;
        PERFORM set_config('enable_nestloop', nestloop, true);
        FOR k IN 1 .. coalesce(cardinality(ids), 0) LOOP
            IF (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = old_plans[k])
               IS DISTINCT FROM
               (SELECT subscription.seat_product(p.kind, p.product) FROM subscription.plan AS p WHERE p.code = new_plans[k])
               -- Z3: from or to a suite, the included products may change
               OR EXISTS (SELECT FROM subscription.suite_component AS sc
                           WHERE sc.suite_plan IN (old_plans[k], new_plans[k])) THEN
                subs := subs || ids[k];
                sub_tenants := sub_tenants || tenants[k];
            END IF;
        END LOOP;
        -- tenant by tenant, each statement naming it (on Citus, this shard's);
        -- none to rebuild (no plan changed: a failed payment's past due, its
        -- end), no query more
        IF subs IS NOT NULL THEN
            FOR t, ids IN SELECT u.t, array_agg(u.s ORDER BY u.s) FROM unnest(sub_tenants, subs) AS u (t, s)
                           GROUP BY 1 ORDER BY 1 LOOP
                PERFORM subscription.reseat_licenses(t, ids);
            END LOOP;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.sync_service_seats() IS 'Trigger: service seats follow plan and suite changes (R11, Z3)';

-- one trigger per event: a trigger with transition tables fires on one
CREATE TRIGGER subscription_service_seats AFTER UPDATE ON subscription.subscription
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('subscription');
CREATE TRIGGER plan_service_seats AFTER UPDATE ON subscription.plan
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('plan');
CREATE TRIGGER suite_component_service_seats AFTER INSERT ON subscription.suite_component
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('suite_component');
CREATE TRIGGER suite_component_service_seats_update AFTER UPDATE ON subscription.suite_component
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('suite_component');
CREATE TRIGGER suite_component_service_seats_delete AFTER DELETE ON subscription.suite_component
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.sync_service_seats('suite_component');

-- The guard of subscription.license (C): per statement, over the transition
-- table, it checks every assigned row (the member belongs to the
-- subscription's account, 22023; at most one service license per member
-- and product, R11, 23514, through subscription.service_seat), moves each
-- subscription's counter once, in
-- subscription order (55000 when not active, 23514 when full), and writes
-- one history row per subscription and direction.
CREATE FUNCTION subscription.license_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'license_guard'
LANGUAGE C;

COMMENT ON FUNCTION subscription.license_guard() IS 'Trigger (C): checks and counts every write of subscription.license';

CREATE TRIGGER license_guard_insert AFTER INSERT ON subscription.license
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
CREATE TRIGGER license_guard_update AFTER UPDATE ON subscription.license
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
CREATE TRIGGER license_guard_delete AFTER DELETE ON subscription.license
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
CREATE TRIGGER license_guard_truncate AFTER TRUNCATE ON subscription.license
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();

CREATE FUNCTION subscription.license_consume(subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_consume'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.license_consume(bigint, bigint) IS
'Assign one license of the subscription to the member; returns the licenses left (R11, Z4)';

CREATE FUNCTION subscription.license_release(subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_release'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.license_release(bigint, bigint) IS
'Take the member''s license of the subscription back; returns the licenses left';

-- The keyed forms (docs/design.md#keyed-forms): the same code, given the
-- tenant first; the unkeyed forms look it up (src/licenses.c).
CREATE FUNCTION subscription.license_consume(tenant_id bigint, subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_consume'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.license_consume(bigint, bigint, bigint) IS
'Assign one license of the subscription to the member; returns the licenses left (R11, Z4) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.license_release(tenant_id bigint, subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_release'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.license_release(bigint, bigint, bigint) IS
'Take the member''s license of the subscription back; returns the licenses left (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.licenses_left(subscription_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'licenses_left'
LANGUAGE C STRICT STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.licenses_left(bigint) IS
'Licenses of the subscription not assigned yet (R11)';

-- R10: a new member gets a license of the account's default subscription
-- when one is free; otherwise the member is still created, with a WARNING.
CREATE FUNCTION subscription.assign_default_license()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sub bigint;
BEGIN
    -- a restore copies the member's licenses with it (restored_copy)
    IF subscription.restored_copy('subscription.member_id_seq', NEW.id) THEN
        RETURN NULL;
    END IF;
    SELECT s.id INTO sub FROM subscription.subscription AS s
     WHERE s.tenant_id = NEW.tenant_id AND s.account_id = NEW.account_id AND s.is_default
       AND s.status = 'active';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        INSERT INTO subscription.license (tenant_id, subscription_id, member_id) VALUES (NEW.tenant_id, sub, NEW.id);
    EXCEPTION WHEN check_violation THEN
        RAISE WARNING 'member % was created without a license', NEW.id
            USING DETAIL = SQLERRM,
                  HINT = format('Raise the quantity of default subscription %s, or release a license.', sub);
    END;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.assign_default_license() IS 'Trigger: a new member gets a license of the account''s default subscription when one is free (R10)';

CREATE TRIGGER member_default_license AFTER INSERT ON subscription.member
    FOR EACH ROW EXECUTE FUNCTION subscription.assign_default_license();

-- R10: the account's default subscription, chosen: its previous default
-- is unset and this one set, in one call, so that the exclusion constraint
-- subscription_one_default_per_account holds at every statement.  A service
-- or an option may be the default; it must be active (55000).  The owner or
-- an admin may choose it (42501 otherwise).  Every subscription of the
-- account is locked first, in id order (as close_account and cancel_account
-- take them), so that two calls for one account queue and the second reads
-- the default the first committed, also when the account had none; the
-- account row is not locked, as charges lock it after their subscription.
-- A new member's default license, taken at the same time, is one of the
-- old or of the new default (its trigger reads one committed state).
-- History records both updates.
CREATE FUNCTION subscription.set_default(tenant_id bigint, subscription_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    account bigint;
    s subscription.subscription;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.set_default(bigint,bigint)', set_default.tenant_id,
            pg_catalog.jsonb_build_array(set_default.tenant_id, set_default.subscription_id));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('set_default', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_default', '{subscription_id}', ARRAY[subscription_id IS NULL]);
    SELECT x.account_id INTO account FROM subscription.subscription AS x
     WHERE x.tenant_id = set_default.tenant_id AND x.id = set_default.subscription_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM FROM subscription.subscription AS x WHERE x.tenant_id = set_default.tenant_id AND x.account_id = account
     ORDER BY x.id FOR NO KEY UPDATE;
    s := subscription.subscription_for_change('set_default', subscription_id, 'set_default');
    IF s.is_default THEN
        RETURN;
    END IF;
    UPDATE subscription.subscription AS x SET is_default = false
     WHERE x.tenant_id = set_default.tenant_id AND x.account_id = s.account_id AND x.is_default;
    UPDATE subscription.subscription AS x SET is_default = true
     WHERE x.tenant_id = set_default.tenant_id AND x.id = s.id;
END
$$;

COMMENT ON FUNCTION subscription.set_default(bigint, bigint) IS
'Make an active subscription the account''s default one, whose licenses new members get (R10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.set_default(subscription_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.set_default(subscription.tenant_of('subscription', set_default.subscription_id), set_default.subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.set_default(bigint) IS
'Make an active subscription the account''s default one, whose licenses new members get (R10)';

-- R7: the members holding licenses of each subscription
CREATE VIEW subscription.license_holder WITH (security_barrier) AS
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
SELECT l.subscription_id, s.plan, m.id AS member_id, m.external_id, m.role, l.assigned_at, s.account_id
  FROM subscription.license AS l
  -- joined and read by the tenant too: one shard group on Citus (issue 17)
  JOIN subscription.member AS m ON m.tenant_id OPERATOR(pg_catalog.=) l.tenant_id AND m.id OPERATOR(pg_catalog.=) l.member_id
  JOIN subscription.subscription AS s
    ON s.tenant_id OPERATOR(pg_catalog.=) l.tenant_id AND s.id OPERATOR(pg_catalog.=) l.subscription_id
  CROSS JOIN readable
 WHERE (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) s.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) s.account_id));

COMMENT ON VIEW subscription.license_holder IS
'The members holding licenses of each subscription (R7), of the accounts the actor may read';

-- More licenses take effect now and the rest of the period is charged for
-- the licenses above those already paid this period (prorate_refund's
-- fraction, rounded once); fewer take effect now too, refund nothing, and
-- cannot go below the licenses assigned (23514).  Returns the licenses left.
CREATE FUNCTION subscription.set_quantity(tenant_id bigint, subscription_id bigint, quantity integer, at timestamptz)
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    counter subscription.license_counter;
    new_capacity integer;
    paid integer;
    monthly boolean;
    old_price record;
    new_price record;
    charge numeric;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.set_quantity(bigint,bigint,integer,timestamptz)', set_quantity.tenant_id,
            pg_catalog.jsonb_build_array(set_quantity.tenant_id, set_quantity.subscription_id, set_quantity.quantity, set_quantity.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('set_quantity', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('set_quantity', '{subscription_id,quantity,at}',
        ARRAY[subscription_id IS NULL, quantity IS NULL, at IS NULL]);
    PERFORM subscription.require_quantity(quantity);
    PERFORM subscription.require_time('set_quantity', at, false);

    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.tenant_id = set_quantity.tenant_id AND x.id = set_quantity.subscription_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    monthly := subscription.cycle_key(s.cycle) = '{1,0,0}';
    PERFORM subscription.authorize(s.account_id,
        CASE WHEN quantity > s.quantity THEN 'increase_licenses' ELSE 'decrease_licenses' END,
        monthly);
    IF s.status <> 'active' THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    PERFORM subscription.require_in_period('set_quantity', s, at);
    IF quantity = s.quantity THEN
        RETURN subscription.licenses_left(subscription_id);
    END IF;
    PERFORM subscription.require_terms(set_quantity.tenant_id, s.account_id, at);

    -- the counter row is what concurrent license writes wait on
    SELECT * INTO counter FROM subscription.license_counter AS c
     WHERE c.tenant_id = set_quantity.tenant_id AND c.subscription_id = set_quantity.subscription_id FOR NO KEY UPDATE;
    -- the capacity keeps the add-on licenses and takes the new quantity
    new_capacity := counter.capacity - s.quantity + quantity;
    IF counter.used > new_capacity THEN
        RAISE EXCEPTION 'subscription % cannot have fewer licenses than it has assigned', subscription_id
            USING ERRCODE = 'check_violation',
                  DETAIL = format('Limit %s, in use %s.', new_capacity, counter.used),
                  HINT = 'Release licenses with subscription.license_release() first.';
    END IF;

    -- on a tiered plan the quantity is a tier (55000 otherwise)
    -- at the version the subscription holds (grandfathering)
    new_price := subscription.period_price(s.plan, s.cycle, quantity, s.plan_version);
    PERFORM subscription.require_amount(new_price.amount, new_price.currency);
    paid := coalesce(s.paid_quantity, s.quantity);
    IF quantity > paid THEN
        old_price := subscription.period_price(s.plan, s.cycle, paid, s.plan_version);
        charge := subscription.unused_part(new_price.amount - old_price.amount, s.period, at,
                                           new_price.currency);
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
        VALUES (set_quantity.tenant_id, s.account_id, s.id, 'charge', charge, new_price.currency,
                tstzrange(at, upper(s.period), '[)'), format('licenses %s-%s', paid + 1, quantity), s.plan,
                format('%s more licenses of plan %s for the rest of the period', quantity - paid, s.plan));
    END IF;

    UPDATE subscription.subscription AS x
       SET quantity = set_quantity.quantity, paid_quantity = greatest(paid, set_quantity.quantity)
     WHERE x.tenant_id = set_quantity.tenant_id AND x.id = s.id;
    RETURN subscription.licenses_left(subscription_id);
END
$$;

COMMENT ON FUNCTION subscription.set_quantity(bigint, bigint, integer, timestamptz) IS
'Change the licenses now: more are charged for the rest of the period, fewer refund nothing (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.set_quantity(subscription_id bigint, quantity integer, at timestamptz DEFAULT subscription.now())
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.set_quantity(subscription.tenant_of('subscription', set_quantity.subscription_id), set_quantity.subscription_id, set_quantity.quantity, set_quantity.at);
END
$$;

COMMENT ON FUNCTION subscription.set_quantity(bigint, integer, timestamptz) IS 'Change the licenses now: more are charged for the rest of the period, fewer refund nothing';

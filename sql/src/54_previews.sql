-- Previews (Z9): the lines a change would write, without writing them.

-- Runs "change" (one of the functions below) in a subtransaction that is
-- rolled back, and returns the ledger lines it wrote for the subscription,
-- or, with subscription_id NULL, for the account: the preview is the change
-- itself, so it cannot drift from it.  Every writer of a subscription's
-- lines locks the subscription first, so the lines after the last one are
-- the change's.  For an account, its row is locked, as a charge that uses
-- credit locks it: a change of several subscriptions (a bundle) reads as
-- its own the lines of the account written meanwhile by other changes that
-- use no credit.
CREATE FUNCTION subscription.lines_of_change(account_id bigint, subscription_id bigint, change text)
RETURNS SETOF subscription.ledger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_line bigint;
    lines subscription.ledger[];
    -- every read names the tenant: one shard group on Citus (issue 17)
    tenant bigint := CASE WHEN lines_of_change.subscription_id IS NOT NULL
                          THEN subscription.tenant_of('subscription', lines_of_change.subscription_id)
                          ELSE subscription.tenant_of('account', lines_of_change.account_id) END;
BEGIN
    PERFORM FROM subscription.subscription AS s
     WHERE s.tenant_id = tenant AND s.id = lines_of_change.subscription_id FOR NO KEY UPDATE;
    PERFORM FROM subscription.account AS a
     WHERE lines_of_change.subscription_id IS NULL AND a.tenant_id = tenant AND a.id = lines_of_change.account_id
       FOR NO KEY UPDATE;
    SELECT coalesce(max(l.id), 0) INTO last_line FROM subscription.ledger AS l
     WHERE l.tenant_id = tenant
       AND (l.subscription_id = lines_of_change.subscription_id
            OR (lines_of_change.subscription_id IS NULL AND l.account_id = lines_of_change.account_id));
    BEGIN
        EXECUTE change;
        SELECT array_agg(l ORDER BY l.id) INTO lines FROM subscription.ledger AS l
         WHERE l.tenant_id = tenant
           AND (l.subscription_id = lines_of_change.subscription_id
                OR (lines_of_change.subscription_id IS NULL AND l.account_id = lines_of_change.account_id))
           AND l.id > last_line;
        RAISE EXCEPTION 'preview' USING ERRCODE = 'SBPRV';  -- undoes the change
    EXCEPTION WHEN SQLSTATE 'SBPRV' THEN
        NULL;
    END;
    RETURN QUERY SELECT * FROM unnest(lines);
END
$$;

COMMENT ON FUNCTION subscription.lines_of_change(bigint, bigint, text) IS 'Internal: the ledger lines a change would write for a subscription or an account, in a rolled-back subtransaction (Z9)';

CREATE FUNCTION subscription.ledger_lines_of(subscription_id bigint, change text)
RETURNS SETOF subscription.ledger
LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM subscription.lines_of_change(NULL, subscription_id, change);
END;

COMMENT ON FUNCTION subscription.ledger_lines_of(bigint, text) IS 'Internal: the ledger lines a change would write, in a rolled-back subtransaction (Z9)';

CREATE FUNCTION subscription.preview_change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT * FROM subscription.change_plan(%L, %L, %L)', subscription_id, plan, at));
END;

COMMENT ON FUNCTION subscription.preview_change_plan(bigint, text, timestamptz) IS 'The ledger lines change_plan would write, without writing them (Z9)';

CREATE FUNCTION subscription.preview_set_quantity(subscription_id bigint, quantity integer, at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT subscription.set_quantity(%L, %L, %L)', subscription_id, quantity, at));
END;

COMMENT ON FUNCTION subscription.preview_set_quantity(bigint, integer, timestamptz) IS 'The ledger lines set_quantity would write, without writing them (Z9)';

CREATE FUNCTION subscription.preview_purchase_addon(subscription_id bigint, addon text, quantity integer DEFAULT 1,
                                                    at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT subscription.purchase_addon(%L, %L, %L, %L)', subscription_id, addon, quantity, at));
END;

COMMENT ON FUNCTION subscription.preview_purchase_addon(bigint, text, integer, timestamptz) IS 'The ledger lines purchase_addon would write, without writing them (Z9)';

CREATE FUNCTION subscription.preview_bundle_into_suite(account_id bigint, suite_plan text, quantity integer DEFAULT NULL,
                                                       at timestamptz DEFAULT subscription.now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
SECURITY DEFINER
BEGIN ATOMIC
    SELECT * FROM subscription.lines_of_change(account_id, NULL,
        format('SELECT subscription.bundle_into_suite(%L, %L, %L, %L)', account_id, suite_plan, quantity, at));
END;

COMMENT ON FUNCTION subscription.preview_bundle_into_suite(bigint, text, integer, timestamptz) IS 'The ledger lines bundle_into_suite would write, without writing them (Z9)';

-- Closing and erasing an account (issue 15): an account that holds anything
-- is never deleted (24_keep.sql).  close_account() ends what it has, by
-- the lifecycle functions; erase_account() then removes the personal data
-- of a closed account, and the ledger keeps its amounts and dates.

-- End everything of an account (once its sub-accounts are closed, K9) at
-- a time: every active subscription ends then, its unused days credited and
-- its add-on batches ended (end_early, L9); a past-due one ends then too,
-- its add-on batches ended, without credit, its invoice still owed (D6);
-- a trial ends then, charged nothing, so that its end never converts it
-- into a charge on a closed account; the seats are released; the
-- account is marked closed (history records it, R8) and takes no new
-- subscription.  Returns the subscriptions ended and what each credited.
CREATE FUNCTION subscription.close_account(tenant_id bigint, account_id bigint, at timestamptz)
RETURNS TABLE (subscription_id bigint, credited numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
    open_children text;
    s bigint;
    st text;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN QUERY SELECT * FROM pg_catalog.jsonb_to_recordset(subscription.idempotent('subscription.close_account(bigint,bigint,timestamptz)', close_account.tenant_id,
            pg_catalog.jsonb_build_array(close_account.tenant_id, close_account.account_id, close_account.at)))
            AS r (subscription_id bigint, credited numeric);
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('close_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('close_account', '{account_id,at}',
        ARRAY[account_id IS NULL, at IS NULL]);
    PERFORM subscription.require_account(close_account.account_id);
    PERFORM subscription.authorize(close_account.account_id, 'cancel');
    PERFORM subscription.require_time('close_account', at, false);
    SELECT a.closed_at INTO closed FROM subscription.account AS a
     WHERE a.tenant_id = close_account.tenant_id AND a.id = close_account.account_id FOR NO KEY UPDATE;
    IF closed IS NOT NULL THEN
        RAISE EXCEPTION 'account % is already closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was closed at %s.', closed);
    END IF;
    -- K9: a sub-account is closed by whom may act on it (Z1, K8), first
    SELECT string_agg(a.id::text, ', ' ORDER BY a.id) INTO open_children FROM subscription.account AS a
     WHERE a.tenant_id = close_account.tenant_id AND a.parent_id = close_account.account_id AND a.closed_at IS NULL;
    IF open_children IS NOT NULL THEN
        RAISE EXCEPTION 'account % has open sub-accounts', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Sub-accounts %s are open.', open_children),
                  HINT = 'Close them first with subscription.close_account().';
    END IF;
    FOR s, st IN SELECT x.id, x.status FROM subscription.subscription AS x
              WHERE x.tenant_id = close_account.tenant_id AND x.account_id = close_account.account_id
                AND x.status IN ('active', 'past_due', 'trialing')
              ORDER BY x.id LOOP
        subscription_id := s;
        IF st = 'trialing' THEN
            -- a trial paid nothing, so nothing comes back; no add-on is
            -- bought during a trial (subscription_for_change)
            UPDATE subscription.subscription AS x SET status = 'cancelled'
             WHERE x.tenant_id = close_account.tenant_id AND x.id = s;
            credited := 0;
        ELSIF st = 'past_due' THEN
            -- D6: ended too, without credit (its unpaid period gives nothing
            -- back); its invoice stays open, still owed, and its dunning stops
            UPDATE subscription.addon_batch AS b SET status = 'expired'
             WHERE b.tenant_id = close_account.tenant_id AND b.subscription_id = s AND b.status = 'active';
            UPDATE subscription.subscription AS x
               SET status = 'cancelled', past_due_since = NULL, past_due_invoice_id = NULL, dunning_step = 0,
                   dunning_frozen = false
             WHERE x.tenant_id = close_account.tenant_id AND x.id = s;
            credited := 0;
        ELSE
            credited := subscription.end_early(close_account.tenant_id, s, at);
        END IF;
        RETURN NEXT;
    END LOOP;
    -- the seats of every subscription of the account, through the license guard
    DELETE FROM subscription.license AS l
     USING subscription.subscription AS x
     WHERE l.tenant_id = close_account.tenant_id
       AND x.tenant_id = close_account.tenant_id AND x.id = l.subscription_id
       AND x.account_id = close_account.account_id;
    UPDATE subscription.account AS a SET closed_at = close_account.at
     WHERE a.tenant_id = close_account.tenant_id AND a.id = close_account.account_id;
END
$$;

COMMENT ON FUNCTION subscription.close_account(bigint, bigint, timestamptz) IS
'Close an account: end every subscription (unused days credited, L9), release the seats, refuse new subscriptions (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.close_account(account_id bigint, at timestamptz DEFAULT subscription.now())
RETURNS TABLE (subscription_id bigint, credited numeric)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY SELECT * FROM subscription.close_account(subscription.tenant_of('account', close_account.account_id), close_account.account_id, close_account.at);
END
$$;

COMMENT ON FUNCTION subscription.close_account(bigint, timestamptz) IS
'Close an account: end every subscription (unused days credited, L9), release the seats, refuse new subscriptions';

-- GDPR: the personal data of a closed account (and of its sub-accounts):
-- its name, its members (and their external ids), and these fields in its
-- history.  The ledger keeps every line, its amounts and dates.  Back-office
-- code only: a member does not erase an account.
CREATE FUNCTION subscription.erase_account(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
    child bigint;
    members bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.erase_account(bigint,bigint)', erase_account.tenant_id,
            pg_catalog.jsonb_build_array(erase_account.tenant_id, erase_account.account_id));
        RETURN;
    END IF;
    PERFORM subscription.require_tenant('erase_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('erase_account', '{account_id}', ARRAY[account_id IS NULL]);
    IF coalesce(current_setting('subscription.actor', true), '') <> ''
       OR NOT subscription.caller_is_trusted() THEN
        RAISE EXCEPTION 'erase_account() is for back-office code'
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Erasing an account is not an action of a member.',
                  HINT = 'Call it without subscription.actor, as a role given subscription.grant_backoffice().';
    END IF;
    PERFORM subscription.require_account(erase_account.account_id);
    SELECT a.closed_at INTO closed FROM subscription.account AS a
     WHERE a.tenant_id = erase_account.tenant_id AND a.id = erase_account.account_id FOR NO KEY UPDATE;
    IF closed IS NULL THEN
        RAISE EXCEPTION 'account % is not closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Close it first with subscription.close_account().';
    END IF;
    FOR child IN SELECT a.id FROM subscription.account AS a
                  WHERE a.tenant_id = erase_account.tenant_id AND a.parent_id = erase_account.account_id ORDER BY a.id LOOP
        PERFORM subscription.erase_account(erase_account.tenant_id, child);
    END LOOP;
    DELETE FROM subscription.member AS m WHERE m.tenant_id = erase_account.tenant_id AND m.account_id = erase_account.account_id;
    GET DIAGNOSTICS members = ROW_COUNT;
    UPDATE subscription.account AS a SET name = 'erased'
     WHERE a.tenant_id = erase_account.tenant_id AND a.id = erase_account.account_id;
    -- the one change history allows (refuse_history_change)
    UPDATE subscription.history AS h SET details = subscription.erased_details(h.details)
     WHERE h.tenant_id = erase_account.tenant_id AND h.account_id = erase_account.account_id
       AND h.details <> subscription.erased_details(h.details);
    PERFORM subscription.write_history('account_erase', erase_account.account_id, NULL,
                                       jsonb_build_object('members', members));
END
$$;

COMMENT ON FUNCTION subscription.erase_account(bigint, bigint) IS
'GDPR: erase the personal data (name, members, their external ids, in history too) of a closed account; the ledger stays (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.erase_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.erase_account(subscription.tenant_of('account', erase_account.account_id), erase_account.account_id);
END
$$;

COMMENT ON FUNCTION subscription.erase_account(bigint) IS
'GDPR: erase the personal data (name, members, their external ids, in history too) of a closed account; the ledger stays';

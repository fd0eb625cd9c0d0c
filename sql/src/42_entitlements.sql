-- Entitlements for row-level security (issue 21, item 5): whether an
-- account's plans and add-ons include a feature, by the limits' own rule,
-- stored per account (subscription.entitlement) so that a policy's call
-- reads one index entry.

-- The rule: a feature is included when what the account's active plans
-- and add-ons grant of it (granted_limits, as the limits) is above 0 or
-- unlimited; a freeze, which only stops growth, takes nothing away.  Of
-- one feature, or of all when feature is NULL.  Only refresh_entitlements()
-- asks it: has_feature() reads what it stored.
CREATE FUNCTION subscription.granted_features(tenant_id bigint, account_id bigint, feature text)
RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT g.name
      FROM subscription.granted_limits(granted_features.tenant_id, granted_features.account_id,
                                       granted_features.feature) AS g
     WHERE g.value IS DISTINCT FROM 0;
END
$$;

COMMENT ON FUNCTION subscription.granted_features(bigint, bigint, text) IS
'Internal: the features the account''s active plans and add-ons grant (of one, or all): has_feature''s rule, stored by refresh_entitlements';

-- One account's stored entitlements (of one feature, or all) follow the
-- rule: called by refresh_account_limits, in the same transaction as the
-- change of the account's subscriptions, add-on batches or of the catalog.
-- What is stored and what the rule grants are compared; a row is written
-- only where they differ.  Every statement names the tenant (issue 17).
CREATE FUNCTION subscription.refresh_entitlements(tenant_id bigint, account_id bigint, feature text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    held text[];
    granted text[];
    f text;
BEGIN
    SELECT coalesce(array_agg(e.feature), '{}') INTO held
      FROM subscription.entitlement AS e
     WHERE e.tenant_id = refresh_entitlements.tenant_id AND e.account_id = refresh_entitlements.account_id
       AND (refresh_entitlements.feature IS NULL OR e.feature = refresh_entitlements.feature);
    SELECT coalesce(array_agg(g.feature ORDER BY g.feature), '{}') INTO granted
      FROM subscription.granted_features(refresh_entitlements.tenant_id, refresh_entitlements.account_id,
                                         refresh_entitlements.feature) AS g (feature);
    IF held @> granted AND granted @> held THEN
        RETURN;
    END IF;
    DELETE FROM subscription.entitlement AS e
     WHERE e.tenant_id = refresh_entitlements.tenant_id AND e.account_id = refresh_entitlements.account_id
       AND e.feature = ANY (held) AND e.feature <> ALL (granted);
    -- a row at a time (on Citus an INSERT of the rows of a function is not
    -- planned on the tenant's shard)
    FOREACH f IN ARRAY granted LOOP
        IF f <> ALL (held) THEN
            INSERT INTO subscription.entitlement (tenant_id, account_id, feature)
            VALUES (refresh_entitlements.tenant_id, refresh_entitlements.account_id, f);
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.refresh_entitlements(bigint, bigint, text) IS
'Internal: one account''s stored entitlements (of a feature, or all) follow its plans and add-ons';

-- The entitlement for policies.  In C: one probe of the entitlement index
-- by (account_id, feature); the call site remembers the answer of each
-- account it met under the same snapshot.  An unknown feature (42704) is
-- checked on a refusal only, once per call site.  No SET clause: it would
-- wrap every row's call in a GUC save and restore.
CREATE FUNCTION subscription.has_feature(account_id bigint, feature text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'has_feature'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.has_feature(bigint, text) IS
'Whether the account''s plans and add-ons include the feature (a limit above 0, or unlimited): for row-level security policies';

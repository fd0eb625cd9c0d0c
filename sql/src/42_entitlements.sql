-- Entitlements for row-level security (issue 21, item 5): whether an
-- account's plans and add-ons include a feature, by the limits' own rule.

-- The rule: a feature is included when what the account's active plans
-- and add-ons grant of it (granted_limit, as the limits) is above 0 or
-- unlimited; a freeze, which only stops growth, takes nothing away.  An
-- unknown account has no feature; an unknown feature is 42704 (checked
-- only on a refusal: a feature something grants exists).  A SQL body, so
-- that has_feature()'s statement inlines it.
CREATE FUNCTION subscription.feature_granted(account_id bigint, feature text)
RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
RETURN CASE WHEN subscription.granted_limit(subscription.tenant_of('account', account_id), account_id, feature)
                 IS DISTINCT FROM 0 THEN true
            ELSE (SELECT false FROM subscription.require_feature(feature)) END;

COMMENT ON FUNCTION subscription.feature_granted(bigint, text) IS
'Internal: whether the account''s active plans and add-ons grant the feature (has_feature''s rule)';

-- The entitlement for policies.  In C, which remembers per call site the
-- answer of each account it met (the result cannot change within a
-- statement): a policy over a million rows runs the rule once per account.
-- No SET clause: it would wrap every row's call in a GUC save and restore;
-- the function's one statement runs with search_path pinned, as the
-- extension's owner.
CREATE FUNCTION subscription.has_feature(account_id bigint, feature text)
RETURNS boolean
AS 'MODULE_PATHNAME', 'has_feature'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.has_feature(bigint, text) IS
'Whether the account''s plans and add-ons include the feature (a limit above 0, or unlimited): for row-level security policies';

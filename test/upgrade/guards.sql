-- test/upgrade/guards.sql: do the extension's guards still refuse what 1.0
-- refused?  Run against a database holding test/upgrade/fixture.sql (after
-- an update, or restored from a dump); prints "name result" lines that
-- test/upgrade.sh checks, and changes nothing: one transaction, rolled back.
-- Run with psql -X -q -A -t.
\set ON_ERROR_STOP on
SET client_min_messages = error;
BEGIN;

-- the SQLSTATE of a statement's error, or 'accepted'; the statement's
-- writes stay when it is accepted (until the ROLLBACK at the end)
CREATE FUNCTION pg_temp.sqlstate_of(statement text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;

-- A plan limit on an application table (the limit guard): Acme may add
-- devices up to its hosts limit, and not one more.
SELECT 'device_room ' || (subscription.effective_limit(1, 'hosts') - subscription.usage(1, 'hosts'));
SELECT 'device_fill ' || pg_temp.sqlstate_of($$
    INSERT INTO public.device (account_id)
    SELECT 1 FROM generate_series(1, subscription.effective_limit(1, 'hosts') - subscription.usage(1, 'hosts'))$$);
SELECT 'device_over ' || pg_temp.sqlstate_of($$INSERT INTO public.device (account_id) VALUES (1)$$);

-- Licenses beyond the quantity (the license guard): Initech's recording
-- option is filled by six new members (a plain INSERT, the bulk path), then
-- one more license_consume (the one-row path) is refused.  An option, so
-- that R11 (one service per member and product) cannot be the reason.
SELECT id AS option FROM subscription.subscription WHERE plan = 'rb_recording' \gset
INSERT INTO subscription.member (tenant_id, account_id, external_id)
SELECT 4, 4, 'guard' || g || '@initech' FROM generate_series(1, 6) AS g;
SELECT subscription.licenses_left(:option) AS room \gset
SELECT 'license_fill ' || pg_temp.sqlstate_of(format($$
    INSERT INTO subscription.license (tenant_id, subscription_id, member_id)
    SELECT 4, %1$s, m.id FROM subscription.member AS m
     WHERE m.tenant_id = 4 AND m.account_id = 4
       AND NOT EXISTS (SELECT FROM subscription.license AS l
                        WHERE l.tenant_id = 4 AND l.subscription_id = %1$s AND l.member_id = m.id)
     ORDER BY m.id LIMIT %2$s$$, :option, :room));
SELECT 'license_left ' || subscription.licenses_left(:option);
SELECT 'license_over ' || pg_temp.sqlstate_of(format($$
    SELECT subscription.license_consume(%s, (SELECT max(id) FROM subscription.member WHERE external_id LIKE 'guard%%'))$$,
    :option));

-- The seat counter still moves: ida's Business license released, then taken again.
SELECT id AS business FROM subscription.subscription WHERE plan = 'rb_business' \gset
SELECT id AS ida FROM subscription.member WHERE external_id = 'ida@initech' \gset
SELECT subscription.licenses_left(:business) AS left_before \gset
SELECT 'seat_release ' || (subscription.license_release(:business, :ida) - :left_before);
SELECT 'seat_assign ' || (subscription.license_consume(:business, :ida) - :left_before);

-- History is append-only.
SELECT 'history_update ' || pg_temp.sqlstate_of($$UPDATE subscription.history SET actor = 'someone else'$$);
SELECT 'history_delete ' || pg_temp.sqlstate_of($$DELETE FROM subscription.history$$);

-- The sub-account limit on the extension's own table (K7): Webinars has its
-- one sub-account already.
SELECT 'sub_account_over ' || pg_temp.sqlstate_of($$
    INSERT INTO subscription.account (tenant_id, name, parent_id) VALUES (5, 'Webinars Lyon', 5)$$);

-- Entitlements (issue 21, item 5): the rows the update (or the restore's
-- triggers) stored are the rule's answers, for every account and feature,
-- and some feature is granted.
SELECT 'entitlement_drift ' || count(*)
  FROM subscription.account AS a
 CROSS JOIN (SELECT l.feature FROM subscription.plan_limit AS l
             UNION SELECT d.feature FROM subscription.addon AS d WHERE d.feature IS NOT NULL) AS f
 WHERE subscription.has_feature(a.id, f.feature)
       IS DISTINCT FROM EXISTS (SELECT FROM subscription.granted_features(a.tenant_id, a.id, f.feature));
SELECT 'entitlements_stored ' || (count(*) > 0) FROM subscription.entitlement;

ROLLBACK;

-- verify(): the invariants of the extension's own tables, checked after
-- the fact, like amcheck for billing.  One row per broken invariant,
-- nothing when all hold.  See docs/design.md ("Checking the invariants").

-- The counters recount_usage() would change, without changing them: the
-- same count of the table's rows as its owner (C, limits.c RecountUsage).
CREATE FUNCTION subscription.usage_drift(relation regclass, feature text, account_id bigint DEFAULT NULL)
RETURNS TABLE (account_id bigint, counted bigint, stored bigint)
AS 'MODULE_PATHNAME', 'usage_drift'
LANGUAGE C
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.usage_drift(regclass, text, bigint) IS
'Internal: the usage counters of a limited table that differ from its rows, counted as recount_usage counts';

-- The checks are one query over the extension's tables, run by EXECUTE
-- over the tables themselves on a single server.  On Citus (after
-- distribute()) the query, with its joins by id and its correlated
-- subqueries, is not one that Citus plans: it runs on the coordinator over
-- copies of the tables the checks read, made for the call (temporary
-- tables named verify_<table>, emptied and filled again by the next call
-- in the transaction, dropped at commit; of the account's tenant when an
-- account is given), and the functions it calls read the distributed
-- tables from there.  The same text, the same findings (issue 17).  A copy
-- is never named as its table: pg_temp comes first in every search path,
-- so until commit the caller's unqualified names (SET search_path =
-- subscription) would read and write the copy, not the table; nor is one
-- dropped in the transaction, whose sql_drop event trigger would write the
-- reference table limited_table after the copies' multi-shard reads.
-- verify()'s checks (a PL/pgSQL function cannot name a parameter as its
-- result column, account_id).
CREATE FUNCTION subscription.verify_findings(account bigint)
RETURNS TABLE (check_name text, account_id bigint, detail text)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the tables' schema, or the copies' names: pg_temp.verify_<table>
    src text := 'subscription.';
    tbl text;
    tenant bigint;
BEGIN
    IF subscription.distributed() THEN
        src := 'pg_temp.verify_';
        IF verify_findings.account IS NOT NULL THEN
            tenant := subscription.tenant_of('account', verify_findings.account);
        END IF;
        FOREACH tbl IN ARRAY ARRAY['account', 'member', 'subscription', 'addon_batch', 'license', 'license_counter',
                                   'usage_counter', 'ledger', 'history', 'limited_table'] LOOP
            IF to_regclass(format('pg_temp.%I', 'verify_' || tbl)) IS NULL THEN
                EXECUTE format('CREATE TEMPORARY TABLE %I ON COMMIT DROP AS SELECT * FROM subscription.%I WITH NO DATA',
                               'verify_' || tbl, tbl);
            ELSE
                EXECUTE format('TRUNCATE pg_temp.%I', 'verify_' || tbl);
            END IF;
            EXECUTE format('INSERT INTO pg_temp.%I SELECT * FROM subscription.%I AS x %s', 'verify_' || tbl, tbl,
                           CASE WHEN tenant IS NOT NULL AND tbl <> 'limited_table' THEN 'WHERE x.tenant_id = $1' ELSE '' END)
              USING tenant;
        END LOOP;
    END IF;
    RETURN QUERY EXECUTE replace($q$
        SELECT v.* FROM (
            -- seats: the counter is the licenses held, its capacity the subscription's,
            -- and no subscription holds more than its capacity
            SELECT x.check_name, t.account_id, x.detail
              FROM (SELECT s.account_id, s.id, c.subscription_id IS NOT NULL AS has_counter, c.used, c.capacity, c.active,
                           subscription.license_capacity(s.id) AS capacity_now,
                           subscription.assigns_licenses(s.tenant_id, s.account_id, s.status) AS active_now,
                           (SELECT count(*) FROM @@.license AS l
                             WHERE l.subscription_id = s.id) AS held
                      FROM @@.subscription AS s
                      LEFT JOIN @@.license_counter AS c ON c.subscription_id = s.id
                     WHERE $1 IS NULL OR s.account_id = $1) AS t,
                   LATERAL (VALUES
                       ('license_counter',
                        CASE WHEN NOT t.has_counter THEN format('subscription %s has no seat counter', t.id)
                             WHEN t.used <> t.held
                             THEN format('subscription %s: the seat counter says %s used, %s licenses are held', t.id, t.used, t.held) END),
                       ('license_capacity',
                        CASE WHEN t.has_counter AND (t.capacity, t.active) IS DISTINCT FROM (t.capacity_now, t.active_now)
                             THEN format('subscription %s: the seat counter has capacity %s (active %s), the subscription %s (active %s)',
                                         t.id, t.capacity, t.active, t.capacity_now, t.active_now) END),
                       ('seats_over_capacity',
                        CASE WHEN t.held > t.capacity_now
                             THEN format('subscription %s holds %s licenses, its capacity is %s', t.id, t.held, t.capacity_now) END))
                       AS x(check_name, detail)
             WHERE x.detail IS NOT NULL
            UNION ALL
            -- usage: each counter is its table's rows, counted as recount_usage counts
            -- them (cap counts nothing) ...
            SELECT 'usage_counter', d.account_id,
                   format('%s of %s: the counter says %s, the table has %s', t.feature, t.relation, d.stored, d.counted)
              FROM @@.limited_table AS t,
                   LATERAL subscription.usage_drift(t.relation, t.feature, $1) AS d
            UNION ALL
            -- ... and carries the account's limit; no counter outlives its registration
            SELECT CASE WHEN t.feature IS NULL THEN 'usage_counter' ELSE 'usage_limit' END, u.account_id,
                   CASE WHEN t.feature IS NULL
                        THEN format('a counter of feature %s remains, and no table is registered for it', u.feature)
                        ELSE format('%s: the counter''s limit is %s, the account''s limit %s', u.feature,
                                    coalesce(u.limit_value::text, 'unlimited'),
                                    coalesce(subscription.limit_of(u.account_id, u.feature)::text, 'unlimited')) END
              FROM @@.usage_counter AS u
              LEFT JOIN @@.limited_table AS t ON t.feature = u.feature
             WHERE ($1 IS NULL OR u.account_id = $1)
               AND (t.feature IS NULL
                    -- the limit the guard checks: a counter computed at an older
                    -- catalog limit version is recomputed by it (issue 17); the
                    -- version read from the view, which Citus plans (inlined from
                    -- limit_catalog_version(), the catalog's empty shell tables
                    -- were read: {0,0}, every stored limit taken as stale)
                    OR subscription.counter_limit(u.account_id, u.feature, u.limit_value, u.limit_version,
                                                  (SELECT c.version FROM subscription.limit_catalog_versions AS c))
                       IS DISTINCT FROM subscription.limit_of(u.account_id, u.feature))
            UNION ALL
            -- periods (C2): the plan charges of a subscription, less what was given
            -- back, follow each other with no gap and no overlap ...
            SELECT CASE WHEN p.next_lower > p.charged_upper THEN 'period_gap' ELSE 'period_overlap' END,
                   p.account_id,
                   format('subscription %s: charge %s covers %s to %s, charge %s starts at %s',
                          p.subscription_id, p.id, p.charged_lower, p.charged_upper, p.next_id, p.next_lower)
              FROM (SELECT c.*,
                           lead(c.charged_lower) OVER w AS next_lower,
                           lead(c.id) OVER w AS next_id
                      FROM (SELECT l.id, l.account_id, l.subscription_id, lower(l.period) AS charged_lower,
                                   coalesce(lower(g.period), upper(l.period)) AS charged_upper
                              FROM @@.ledger AS l
                              LEFT JOIN @@.ledger AS g
                                ON g.charge_id = l.id AND g.kind IN ('refund', 'credit')
                             WHERE l.kind = 'charge' AND l.addon_batch_id IS NULL
                               AND (l.item = 'plan' OR l.item ~~ 'change to %')
                               AND ($1 IS NULL OR l.account_id = $1)) AS c
                     WHERE c.charged_lower < c.charged_upper
                    WINDOW w AS (PARTITION BY c.subscription_id ORDER BY c.charged_lower, c.id)) AS p
             WHERE p.next_lower <> p.charged_upper
            UNION ALL
            -- ... and an active subscription's current period is charged to its end
            SELECT 'period_uncharged', s.account_id,
                   format('subscription %s: its current period %s is charged up to %s', s.id, s.period,
                          coalesce(c.charged_to::text, 'nothing'))
              FROM @@.subscription AS s
              LEFT JOIN LATERAL (
                   SELECT max(coalesce(lower(g.period), upper(l.period))) AS charged_to
                     FROM @@.ledger AS l
                     LEFT JOIN @@.ledger AS g
                       ON g.charge_id = l.id AND g.kind IN ('refund', 'credit')
                    WHERE l.subscription_id = s.id AND l.kind = 'charge'
                      AND l.addon_batch_id IS NULL
                      AND (l.item = 'plan' OR l.item ~~ 'change to %')) AS c ON true
             WHERE s.status = 'active' AND s.paused_at IS NULL
               AND ($1 IS NULL OR s.account_id = $1)
               AND (c.charged_to IS NULL OR c.charged_to < upper(s.period))
            UNION ALL
            -- money: what is given back or taken off a charge never exceeds it
            SELECT 'refund_over_charge', l.account_id,
                   format('charge %s of %s %s: %s given back or taken off', l.id, l.amount, l.currency, g.total)
              FROM @@.ledger AS l
              JOIN (SELECT g.charge_id, sum(g.amount) AS total FROM @@.ledger AS g
                     WHERE g.kind IN ('refund', 'credit', 'discount') GROUP BY g.charge_id) AS g
                ON g.charge_id = l.id
             WHERE l.kind = 'charge' AND g.total > l.amount
               AND ($1 IS NULL OR l.account_id = $1)
            UNION ALL
            -- history (R8): every account, member, subscription, add-on batch and
            -- license has the history row that created it
            SELECT 'history_missing', h.account_id, h.detail
              FROM (SELECT a.id AS account_id, format('account %s has no account_insert row', a.id) AS detail
                      FROM @@.account AS a
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.account_id = a.id
                                          AND h.operation = 'account_insert')
                    UNION ALL
                    SELECT m.account_id, format('member %s has no member_insert row', m.id)
                      FROM @@.member AS m
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.account_id = m.account_id
                                          AND h.operation = 'member_insert'
                                          AND h.details ->> 'id' = m.id::text)
                    UNION ALL
                    SELECT s.account_id, format('subscription %s has no subscription_insert row', s.id)
                      FROM @@.subscription AS s
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.subscription_id = s.id
                                          AND h.operation = 'subscription_insert')
                    UNION ALL
                    SELECT s.account_id, format('add-on batch %s has no addon_batch_insert row', b.id)
                      FROM @@.addon_batch AS b
                      JOIN @@.subscription AS s ON s.id = b.subscription_id
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.subscription_id = b.subscription_id
                                          AND h.operation = 'addon_batch_insert'
                                          AND h.details ->> 'id' = b.id::text)
                    UNION ALL
                    SELECT s.account_id, format('the license of member %s on subscription %s has no license_assign row',
                                                l.member_id, l.subscription_id)
                      FROM @@.license AS l
                      JOIN @@.subscription AS s ON s.id = l.subscription_id
                     WHERE NOT EXISTS (SELECT FROM @@.history AS h
                                        WHERE h.subscription_id = l.subscription_id
                                          AND h.operation = 'license_assign'
                                          AND h.details -> 'members'
                                              @> pg_catalog.jsonb_build_array(l.member_id))) AS h
             WHERE $1 IS NULL OR h.account_id = $1
        ) AS v("check", account_id, detail)
        ORDER BY 1, 2, 3
$q$, '@@.', src) USING verify_findings.account;
END
$$;

COMMENT ON FUNCTION subscription.verify_findings(bigint) IS
'Internal: verify()''s checks, over the tables (a single server) or over copies of them on the coordinator (Citus)';

CREATE FUNCTION subscription.verify(account_id bigint DEFAULT NULL)
RETURNS TABLE ("check" text, account_id bigint, detail text)
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
SELECT subscription.require_account($1) WHERE $1 IS NOT NULL;
SELECT * FROM subscription.verify_findings($1)
$$;

COMMENT ON FUNCTION subscription.verify(bigint) IS
'The invariants of seats, usage, periods, money and history: one row per broken one (of an account, or of all), nothing when all hold';

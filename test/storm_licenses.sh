#!/usr/bin/env bash
# Storm: 8 concurrent writers assign licenses of one subscription with 100
# seats to random members among 400, 1600 attempts in all.  Exactly 100 are
# assigned and the counter equals the rows.  Prints TAP.
set -uo pipefail
db=subscription_storm
. "$(dirname "$0")/storm_lib.sh"
q -d $db >/dev/null <<'SQL'
INSERT INTO subscription.product (code, name) VALUES ('support', 'Zendesk Support');
INSERT INTO subscription.plan (code, product, name) VALUES ('zd_pro', 'support', 'Professional');
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO subscription.account (id, name) VALUES (1, 'Globex');
INSERT INTO subscription.member (id, account_id, external_id) SELECT g, 1, 'agent' || g FROM generate_series(1, 400) AS g;
SELECT subscription.subscribe(1, 'zd_pro', '1 month', 100, '2026-01-01');
-- a refused attempt is part of the storm, not a failure of the client
CREATE FUNCTION public.try_consume(member bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subscription.license_consume(1, member);
    RETURN 'assigned';
EXCEPTION WHEN check_violation OR unique_violation THEN
    RETURN SQLSTATE;
END
$$;
SQL
cat > "$dir/storm.sql" <<'EOF2'
\set member random(1, 400)
SELECT public.try_consume(:member);
EOF2
pgbench -n -c 8 -j 8 -t 200 -f "$dir/storm.sql" $db > "$dir/pgbench.out" 2>&1
status=$?
echo "1..4"
pgbench_ok $status "8 clients made 1600 attempts without a client error"
assigned=$(q -d $db -c "SELECT count(*) FROM subscription.license")
counted=$(q -d $db -c "SELECT used FROM subscription.license_counter")
distinct=$(q -d $db -c "SELECT count(DISTINCT member_id) FROM subscription.license")
[ "$assigned" = 100 ] && echo "ok 2 - exactly 100 of 100 seats assigned" || echo "not ok 2 - exactly 100 of 100 seats assigned (got $assigned)"
[ "$counted" = "$assigned" ] && echo "ok 3 - the counter equals the rows" || echo "not ok 3 - the counter equals the rows ($counted vs $assigned)"
[ "$distinct" = "$assigned" ] && echo "ok 4 - no member holds two seats" || echo "not ok 4 - no member holds two seats"

#!/usr/bin/env bash
# Storm: 8 concurrent writers assign licenses of two service subscriptions
# of one product, 100 seats each, to random members among 400, 1600 attempts
# in all.  Exactly 100 are assigned in each, the counters equal the rows, and
# no member holds both (R11).  Prints TAP.
set -uo pipefail
db=subscription_storm
. "$(dirname "$0")/storm_lib.sh"
q -d $db >/dev/null <<'SQL'
INSERT INTO subscription.product (code, name) VALUES ('support', 'Zendesk Support');
INSERT INTO subscription.plan (code, product, name, rank) VALUES
    ('zd_pro', 'support', 'Professional', 1), ('zd_ent', 'support', 'Enterprise', 2);
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_pro', '1 month', 55, true), ('zd_ent', '1 month', 99, true);
INSERT INTO subscription.account (id, name) VALUES (1, 'Globex');
INSERT INTO subscription.member (id, account_id, external_id) SELECT g, 1, 'agent' || g FROM generate_series(1, 400) AS g;
SELECT setval(pg_get_serial_sequence('subscription.subscription', 'id'), 1, false);
SELECT subscription.subscribe(1, 'zd_pro', '1 month', 100, '2026-01-01');
SELECT subscription.subscribe(1, 'zd_ent', '1 month', 100, '2026-01-01');
-- a refused attempt is part of the storm, not a failure of the client
CREATE FUNCTION public.try_consume(sub bigint, member bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subscription.license_consume(sub, member);
    RETURN 'assigned';
EXCEPTION WHEN check_violation OR unique_violation THEN
    RETURN SQLSTATE;
END
$$;
SQL
cat > "$dir/storm.sql" <<'EOF2'
\set sub random(1, 2)
\set member random(1, 400)
SELECT public.try_consume(:sub, :member);
EOF2
pgbench -n -c 8 -j 8 -t 200 -f "$dir/storm.sql" $db > "$dir/pgbench.out" 2>&1
status=$?
echo "1..5"
pgbench_ok $status "8 clients made 1600 attempts without a client error"
per_sub=$(q -d $db -c "SELECT string_agg(n::text, ',' ORDER BY s) FROM (SELECT subscription_id AS s, count(*) AS n FROM subscription.license GROUP BY 1) AS x")
counters=$(q -d $db -c "SELECT bool_and(c.used = (SELECT count(*) FROM subscription.license AS l WHERE l.subscription_id = c.subscription_id)) FROM subscription.license_counter AS c")
rows=$(q -d $db -c "SELECT count(*) FROM subscription.license")
distinct=$(q -d $db -c "SELECT count(DISTINCT member_id) FROM subscription.license")
seats=$(q -d $db -c "SELECT count(*) FROM subscription.service_seat AS x JOIN subscription.license AS l USING (member_id, subscription_id)")
[ "$per_sub" = 100,100 ] && echo "ok 2 - exactly 100 of 100 seats assigned in each subscription" || echo "not ok 2 - exactly 100 of 100 seats assigned in each subscription (got $per_sub)"
[ "$counters" = t ] && echo "ok 3 - the counters equal the rows" || echo "not ok 3 - the counters equal the rows"
[ "$distinct" = "$rows" ] && echo "ok 4 - no member holds two service licenses of the product (R11)" || echo "not ok 4 - no member holds two service licenses of the product (R11): $distinct members, $rows licenses"
[ "$seats" = "$rows" ] && echo "ok 5 - each license has its service seat" || echo "not ok 5 - each license has its service seat ($seats of $rows)"

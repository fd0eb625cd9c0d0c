#!/usr/bin/env bash
# Storm: 4 concurrent renew_due() workers, each run 3 times, over 2000
# monthly subscriptions three periods behind.  Every period is charged
# exactly once (C2) and nothing stays due.  Prints TAP.
set -uo pipefail
db=subscription_storm_renewals
. "$(dirname "$0")/storm_lib.sh"
q -d $db >/dev/null <<'SQL'
INSERT INTO subscription.product (code, name) VALUES ('support', 'Zendesk Support');
INSERT INTO subscription.plan (code, product, name) VALUES ('zd_pro', 'support', 'Professional');
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO subscription.account (id, name) SELECT g, 'a' || g FROM generate_series(1, 2000) AS g;
SELECT count(subscription.subscribe(g, 'zd_pro', '1 month', 1 + g % 5, '2026-01-01')) FROM generate_series(1, 2000) AS g;
SQL
echo "SELECT subscription.renew_due('2026-04-15');" > "$dir/renew.sql"
pgbench -n -c 4 -j 4 -t 3 -f "$dir/renew.sql" $db > "$dir/pgbench.out" 2>&1
status=$?
echo "1..3"
pgbench_ok $status "4 workers ran renew_due 12 times without an error"
read -r charges distinct <<<"$(q -F ' ' -d $db -c "SELECT count(*), count(DISTINCT (subscription_id, period)) FROM subscription.ledger WHERE kind = 'charge'")"
due=$(q -d $db -c "SELECT count(*) FROM subscription.subscription WHERE upper(period) <= '2026-04-15'")
[ "$charges" = 8000 ] && [ "$distinct" = 8000 ] \
    && echo "ok 2 - 2000 subscriptions x 4 periods: 8000 charges, each period once" \
    || echo "not ok 2 - 2000 subscriptions x 4 periods: 8000 charges, each period once (got $charges, $distinct distinct)"
[ "$due" = 0 ] && echo "ok 3 - nothing stays due" || echo "not ok 3 - nothing stays due ($due)"

#!/usr/bin/env bash
# Faults: a mixed workload (license storms, bulk inserts into a limited
# table, run_renewals with two workers, downgrades and apply_downgrade) on a
# server of its own, killed with `pg_ctl -m immediate` at random points.
# After each restart verify() finds nothing and no period was charged twice
# or lost.  Prints TAP.
#   bash test/faults.sh            FAULTS kills (default 20), short sleeps, fixed seed
#   bash test/faults.sh --long     100 kills, then a few minutes of sqlsmith on the demo
# FAULTS_SEED fixes the random points (default 15).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

LONG=
[ "${1:-}" = --long ] && LONG=1
FAULTS=${FAULTS:-$([ -n "$LONG" ] && echo 100 || echo 20)}
RANDOM=${FAULTS_SEED:-15}
DIR=/tmp/subscription-faults
DB=faults

use_pg_config >/dev/null 2>&1 || true
if [ -z "${PGBIN:-}" ] || [ ! -x "$PGBIN/pg_ctl" ]; then
    echo "1..0 # SKIP no local PostgreSQL binaries to run a server of our own"
    exit 0
fi
# a server of our own, whatever PGHOST says: this one is killed
pg() { as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" "$@"; }
as_postgres "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w -s stop >/dev/null 2>&1
rm -rf "$DIR"
mkdir -p "$DIR"
[ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
as_postgres "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null || exit 1
start() {
    pg -l "$DIR/server.log" -w -s -t 120 \
        -o "-c listen_addresses='' -k $DIR -p 5432 -c max_connections=40" start >/dev/null
}
start || { echo "not ok 1 - the fault server starts"; exit 1; }
export PGHOST=$DIR PGPORT=5432 PGUSER=postgres
unset PGDATABASE
STOP=$DIR/stop
trap 'touch "$STOP"; wait 2>/dev/null; pg -m immediate -w -s stop >/dev/null 2>&1' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

n=0
tap() {  # tap OK TITLE [DIAGNOSTICS]
    n=$((n + 1))
    if [ "$1" = 1 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; [ -n "${3:-}" ] && echo "$3" | sed 's/^/# /'; fi
}

echo "1..$((FAULTS + 3 + $([ -n "$LONG" ] && echo 1 || echo 0)))"

# the demo, healthy: verify() finds nothing
q -d postgres -c "CREATE DATABASE demo" >/dev/null
q -d demo -c "CREATE EXTENSION subscription" -f "$ROOT/test/demo/catalog.sql" >/dev/null
psql -X -q -d demo -f "$ROOT/test/demo/scenario.sql" >/dev/null 2>&1
found=$(q -d demo -c "SELECT string_agg(concat_ws(' | ', \"check\", account_id, detail), E'\n') FROM subscription.verify()")
tap "$([ -z "$found" ] && echo 1)" "verify() finds nothing on the demo" "$found"

# the workload's data: 40 accounts of 8 members on a per-seat plan whose
# periods started 24 months ago, a limited table of rooms
q -d postgres -c "CREATE DATABASE $DB" >/dev/null
q -d $DB >/dev/null <<'SQL'
CREATE EXTENSION subscription;
SET search_path = subscription, public;
INSERT INTO product (code, name, upgrade, downgrade) VALUES ('desk', 'Desk', 'prorate', 'end_of_period');
INSERT INTO plan (code, product, name, rank) VALUES ('starter', 'desk', 'Starter', 1), ('standard', 'desk', 'Standard', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('starter', '1 month', 5, true), ('standard', '1 month', 9, true);
INSERT INTO plan_limit (plan, feature, value) VALUES ('starter', 'rooms', 3), ('standard', 'rooms', 40);
INSERT INTO account (id, name) SELECT g, 'account ' || g FROM generate_series(1, 40) AS g;
INSERT INTO member (account_id, external_id) SELECT a, 'm' || a || '.' || m FROM generate_series(1, 40) AS a, generate_series(1, 8) AS m;
SELECT count(subscribe(g, 'standard', '1 month', 6, date_trunc('month', now()) - interval '24 months'))
  FROM generate_series(1, 40) AS g;
CREATE TABLE public.room (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id bigint NOT NULL, name text);
SELECT enforce_limit('public.room', 'rooms');
SQL
START=$(q -d $DB -c "SELECT date_trunc('month', now()) - interval '24 months'")

# workers: each loops over short statements until the stop file appears,
# reconnecting after a kill; their errors (limits, races, the server gone)
# are expected and ignored
worker() {
    local sql=$1
    while [ ! -e "$STOP" ]; do
        psql -X -qAt -d $DB -c "$sql" >/dev/null 2>&1 || sleep 0.05
    done
}
LICENSES="SELECT CASE WHEN random() < 0.55
    THEN subscription.license_consume(s.id, m.id) ELSE subscription.license_release(s.id, m.id) END
  FROM subscription.member AS m JOIN subscription.subscription AS s ON s.account_id = m.account_id
 ORDER BY random() LIMIT 1"
ROOMS="WITH a AS (SELECT 1 + (random() * 39)::int AS id)
  INSERT INTO public.room (account_id, name) SELECT a.id, 'r' FROM a, generate_series(1, 1 + (random() * 6)::int)"
UNROOMS="DELETE FROM public.room WHERE id IN (SELECT id FROM public.room ORDER BY random() LIMIT 2)"
DOWNGRADE="SELECT subscription.change_plan(s.id, CASE WHEN random() < 0.5 THEN 'starter' ELSE 'standard' END,
                                           lower(s.period) + interval '1 hour'),
       subscription.apply_downgrade(s.id)
  FROM subscription.subscription AS s WHERE s.status = 'active' ORDER BY random() LIMIT 1"

charged_once() {  # the checks after a restart: empty when all hold
    q -d $DB -c "SELECT string_agg(x, E'\n') FROM (
        SELECT concat_ws(' | ', \"check\", account_id, detail) AS x FROM subscription.verify()
        UNION ALL
        SELECT format('subscription %s: period %s charged %s times', subscription_id, period, count(*))
          FROM subscription.ledger WHERE kind = 'charge' AND item = 'plan'
         GROUP BY subscription_id, period HAVING count(*) > 1
        UNION ALL
        SELECT format('subscription %s: %s periods charged, %s expected', s.id, c.n,
                      s.period_number)
          FROM subscription.subscription AS s
          JOIN (SELECT subscription_id, count(DISTINCT lower(period)) AS n FROM subscription.ledger
                 WHERE kind = 'charge' AND item = 'plan' GROUP BY 1) AS c ON c.subscription_id = s.id
         WHERE c.n < s.period_number) AS t" 2>&1
}

for ((k = 1; k <= FAULTS; k++)); do
    rm -f "$STOP"
    # renew up to month k of the 24 the subscriptions are behind, two workers
    at="$START'::timestamptz + interval '$((k % 24 + 1)) months 1 day"
    worker "$LICENSES" & worker "$LICENSES" &
    worker "$ROOMS" & worker "$UNROOMS" &
    worker "$DOWNGRADE" &
    worker "CALL subscription.run_renewals('$at', 5)" & worker "CALL subscription.run_renewals('$at', 5)" &
    # a random point: 0.3 to 1.5 s into the work
    pause=$((3 + RANDOM % 13))
    sleep "$((pause / 10)).$((pause % 10))"
    pg -m immediate -w -s stop >/dev/null 2>&1
    touch "$STOP"
    wait
    if ! start; then
        tap 0 "kill $k: the server restarts" "$(tail -20 "$DIR/server.log")"
        continue
    fi
    found=$(charged_once)
    tap "$([ -z "$found" ] && echo 1)" "kill $k: verify() finds nothing, no period charged twice or lost" "$found"
done

# the workload did work
read -r licenses rooms charges trims <<<"$(q -F ' ' -d $DB -c "SELECT (SELECT count(*) FROM subscription.history WHERE operation LIKE 'license%'),
    (SELECT count(*) FROM public.room), (SELECT count(*) FROM subscription.ledger WHERE kind = 'charge'),
    (SELECT count(*) FROM subscription.history WHERE operation = 'subscription_update')")"
tap "$([ "${licenses:-0}" -gt 0 ] && [ "${charges:-0}" -gt 40 ] && [ "${trims:-0}" -gt 0 ] && echo 1)" \
    "the workload wrote licenses, rooms, renewals and plan changes ($licenses license changes, $rooms rooms, $charges charges, $trims subscription changes)"
crashes=$(grep -E 'terminated by signal|PANIC' "$DIR/server.log")
tap "$([ -z "$crashes" ] && echo 1)" "no backend terminated by a signal, no PANIC" "$crashes"

if [ -n "$LONG" ]; then
    ok=
    if command -v sqlsmith >/dev/null || { apt-get install -y -q sqlsmith >/dev/null 2>&1 && command -v sqlsmith >/dev/null; }; then
        as_postgres timeout 240 sqlsmith --target="host=$DIR port=5432 user=postgres dbname=demo" \
            --max-queries=100000 >"$DIR/sqlsmith.log" 2>&1
        found=$(q -d demo -c "SELECT string_agg(concat_ws(' | ', \"check\", account_id, detail), E'\n') FROM subscription.verify()")
        crashes=$(grep -E 'terminated by signal|PANIC' "$DIR/server.log")
        [ -z "$found" ] && [ -z "$crashes" ] && ok=1
        tap "$ok" "sqlsmith for 4 minutes on the demo: no crash, verify() finds nothing" "$found$crashes"
    else
        echo "ok $((n + 1)) # SKIP sqlsmith does not install here"
    fi
fi

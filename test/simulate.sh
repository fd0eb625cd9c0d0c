#!/usr/bin/env bash
# Three years of monthly billing by the billing clock (issue 20, item 5):
# SUBS subscriptions (1,000) in a database of their own, the clock moved a
# week at a time from 2040 to 2043, each step one transaction that sets
# subscription.clock and calls what an application's jobs call, every "at"
# left to its default: renew_due() (renewals, trials ending), announce_renewals()
# (renewal notices), record_usage() (a usage meter billed at renewal),
# record_payment() and record_payment_failure() (dunning's inputs).  Needs
# a server with subscription.allow_clock on (test/lib.sh).  Prints TAP, and
# "# simulated N steps in S s" for test/bench/cases/simulation.sh.
#   SUBS=1000 bash test/simulate.sh
# Statistics: a deployment has a week between two steps, in which
# autovacuum analyzes every table whose changes passed its threshold
# (autovacuum_analyze_threshold + scale_factor x rows); here steps follow
# each other within a second, and autovacuum (a minute between its rounds)
# lags dozens of steps behind, when a table grows tenfold in a minute.
# SIMULATE_STATS=autovacuum analyzes after each step, in another backend
# (its CPU is not the steps'), each table autovacuum would have: the
# statistics a deployment has.  Unset: as autovacuum gets to them.
set -uo pipefail
db=${SIMULATE_DB:-subscription_simulate}
subs=${SUBS:-1000}
dir=$(mktemp -d /tmp/subscription-simulate.XXXXXX)
trap 'rm -rf "$dir"; [ -z "${SIMULATE_KEEP:-}" ] && psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
q -d "$db" -c "CREATE EXTENSION subscription"

start='2040-01-01 00:00+00'
finish='2043-01-06 00:00+00'
# 6/10 of the accounts on a monthly plan per license, 2/10 on a plan with a
# 14-day trial, 2/10 on a plan with a usage price; each starts on its own
# day of January 2040 (1 to 28: every month has it)
q -d "$db" > /dev/null <<SQL
SET TimeZone = 'UTC';
BEGIN;
SET LOCAL subscription.clock = '2040-01-29 00:00+00';
INSERT INTO subscription.product (code, name, trial_end) VALUES ('svc', 'Service', 'convert');
INSERT INTO subscription.plan (code, product, name, rank) VALUES
    ('basic', 'svc', 'Basic', 1), ('pro', 'svc', 'Pro', 2), ('metered', 'svc', 'Metered', 1);
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license, trial) VALUES
    ('basic', '1 month', 20, true, NULL), ('pro', '1 month', 50, false, '14 days'),
    ('metered', '1 month', 10, false, NULL);
INSERT INTO subscription.plan_limit (plan, feature, value, per_license) VALUES ('metered', 'calls', NULL, false);
SELECT subscription.plan_usage_price('metered', 'calls', 100, 0.01, NULL, 'graduated', 'EUR');
INSERT INTO subscription.account (id, name) SELECT g, 'account ' || g FROM generate_series(1, $subs) AS g;
SELECT count(subscription.subscribe(g, CASE WHEN g % 10 < 6 THEN 'basic' WHEN g % 10 < 8 THEN 'pro' ELSE 'metered' END,
                                    '1 month', 1 + g % 5, timestamptz '$start' + (g % 28) * interval '1 day'))
  FROM generate_series(1, $subs) AS g;
COMMIT;
SQL

# what autovacuum would analyze in the week between two steps
# (SIMULATE_STATS=autovacuum, above): each table of the extension whose
# changes since its last analysis passed autovacuum's threshold
cat > "$dir/analyze.sql" <<'SQL'
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT t.relid::regclass AS rel
               FROM pg_stat_user_tables AS t JOIN pg_class AS c ON c.oid = t.relid
              WHERE t.schemaname = 'subscription'
                AND t.n_mod_since_analyze > current_setting('autovacuum_analyze_threshold')::integer
                    + current_setting('autovacuum_analyze_scale_factor')::float8 * greatest(c.reltuples, 0) LOOP
        EXECUTE format('ANALYZE %s', r.rel);
    END LOOP;
END
$$;
SQL

# one step a week: each one transaction at its time
steps=0
{
    echo "SET TimeZone = 'UTC';"
    echo "SET client_min_messages = warning;"
    # test/bench/profile_simulation.sh: the statistics of the steps alone
    [ -n "${SIMULATE_RESET_STATS:-}" ] && echo "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset(), pg_stat_reset();"
    [ -n "${SIMULATE_TIMING:-}" ] && echo "\\timing on"
    t=$(date -u -d "2040-02-05" +%s)
    end=$(date -u -d "${finish% *}" +%s)
    while [ "$t" -le "$end" ] && [ "$steps" -lt "${MAX_STEPS:-100000}" ]; do
        at=$(date -u -d "@$t" '+%Y-%m-%d 00:00+00')
        steps=$((steps + 1))
        cat <<SQL
BEGIN;
SET LOCAL subscription.clock = '$at';
SELECT subscription.renew_due();
SELECT subscription.announce_renewals();
SELECT count(subscription.record_usage(s.account_id, 'calls', 50, 'step $steps')) FROM subscription.subscription AS s WHERE s.plan = 'metered';
-- one account in ten fails its first attempt; every invoice is paid a week later at most
SELECT count(subscription.record_payment_failure(b.invoice_id, 'card declined'))
  FROM subscription.open_balance AS b
 WHERE b.due > 0 AND b.account_id % 10 = 0 AND b.at > subscription.now() - interval '7 days';
SELECT count(subscription.record_payment(b.invoice_id, b.due, 'sim ' || b.invoice_id))
  FROM subscription.open_balance AS b
 WHERE b.due > 0 AND (b.account_id % 10 <> 0 OR b.at <= subscription.now() - interval '7 days');
COMMIT;
SQL
        [ "${SIMULATE_STATS:-}" = autovacuum ] && echo "\\! psql -X -qAt -d $db -f $dir/analyze.sql >/dev/null"
        last=$at
        t=$((t + 7 * 86400))
    done
    echo "\\echo $steps"
    # the steps' backend's own CPU (user and system, clock ticks from
    # /proc/self/stat: the backend reads its own), a measure the machine's
    # load changes far less than the wall time (test/bench/ab_simulation.sh)
    [ -n "${SIMULATE_CPU:-}" ] && echo "SELECT '# steps backend CPU ticks ' || (split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint) FROM pg_read_file('/proc/self/stat') AS s;"
} > "$dir/steps.sql"
steps=$(grep -c '^BEGIN;' "$dir/steps.sql")
last=$(sed -n "s/^SET LOCAL subscription.clock = '\(.*\)';$/\1/p" "$dir/steps.sql" | tail -1)
began=$(date +%s%N)
if ! q -d "$db" -f "$dir/steps.sql" > "$dir/steps.out" 2>&1; then
    echo "1..1"
    echo "not ok 1 - $steps weekly steps of the clock run without an error"
    tail -20 "$dir/steps.out" | sed 's/^/# /'
    exit 1
fi
ended=$(date +%s%N)
[ -n "${SIMULATE_TIMING:-}" ] && cat "$dir/steps.out" >&2
echo "# simulated $steps steps ($subs subscriptions, $start to $last) in $(( (ended - began) / 1000000 )) ms"
[ -n "${SIMULATE_CPU:-}" ] && grep '^# steps backend CPU ticks' "$dir/steps.out"

n=0
check() {  # check TITLE SQL: ok when the query returns t
    local got
    n=$((n + 1))
    got=$(q -d "$db" -c "SET TimeZone = 'UTC'" -c "$2" 2>&1)
    if [ "$got" = t ]; then echo "ok $n - $1"; else echo "not ok $n - $1"; echo "$got" | sed 's/^/# /' | head -20; fi
}
echo "1..8"
echo "ok 1 - $steps weekly steps of the clock, $start to $last, run without an error"
n=1
# C2: each period of each subscription charged once, every item once
check "each subscription's period is charged once (ledger lines per subscription, period and item)" "
SELECT count(*) = 0 FROM (SELECT 1 FROM subscription.ledger WHERE kind = 'charge'
                           GROUP BY subscription_id, period, item HAVING count(*) > 1) AS d"
# every period from the start to the one holding the clock's last time is charged, without gap
check "every subscription is charged for each period from its start to the one holding the last step, without gap" "
WITH c AS (SELECT l.subscription_id, count(DISTINCT l.period) AS periods, min(lower(l.period)) AS first,
                  max(upper(l.period)) AS last, sum(upper(l.period) - lower(l.period)) AS covered
             FROM subscription.ledger AS l WHERE l.kind = 'charge' AND l.item = 'plan' GROUP BY 1)
SELECT count(*) = $subs
       AND bool_and(c.last = upper(s.period) AND upper(s.period) > '$last' AND lower(s.period) <= '$last'
                    AND c.covered = c.last - c.first AND c.periods >= 36)
  FROM c JOIN subscription.subscription AS s ON s.id = c.subscription_id"
check "trials: 14 days at 0.00, then converted and charged every month" "
SELECT bool_and(s.status = 'active' AND s.trial_ends = l.first + interval '14 days' AND l.zero = 1)
       AND count(*) = $subs / 5
  FROM subscription.subscription AS s
  JOIN (SELECT subscription_id, min(lower(period)) AS first, count(*) FILTER (WHERE amount = 0) AS zero
          FROM subscription.ledger WHERE kind = 'charge' AND item = 'plan' GROUP BY 1) AS l ON l.subscription_id = s.id
 WHERE s.plan = 'pro'"
check "usage: each period of a metered subscription billed once at its renewal, its overage charged once" "
SELECT bool_and(p.n = 1 AND p.amount_lines = p.charged AND p.charges <= 1) AND count(*) >= $subs / 5 * 35
       AND sum(p.charges) > 0
  FROM (SELECT u.subscription_id, u.period, count(*) AS n, count(*) FILTER (WHERE u.amount > 0) AS amount_lines,
               count(u.ledger_id) AS charged,
               (SELECT count(*) FROM subscription.ledger AS l
                 WHERE l.subscription_id = u.subscription_id AND l.period = u.period AND l.item = 'usage calls'
                   AND l.kind = 'charge') AS charges
          FROM subscription.usage_period AS u GROUP BY 1, 2) AS p
  JOIN subscription.subscription AS s ON s.id = p.subscription_id AND s.plan = 'metered'"
check "renewal notices: each renewal announced once (renewal.upcoming), before it" "
SELECT (SELECT count(*) = count(DISTINCT (subscription_id, payload ->> 'renews_at'))
          FROM subscription.event WHERE type = 'renewal.upcoming')
   AND (SELECT count(*) >= $subs * 35 FROM subscription.event WHERE type = 'subscription.renewed')
   AND NOT EXISTS (SELECT FROM subscription.ledger AS l
                    -- the renewals after the first steps (the subscriptions start backdated)
                    WHERE l.kind = 'charge' AND l.item = 'plan' AND lower(l.period) > '2040-03-01 00:00+00'
                      AND NOT EXISTS (SELECT FROM subscription.event AS e
                                       WHERE e.type = 'renewal.upcoming' AND e.subscription_id = l.subscription_id
                                         AND e.payload ->> 'renews_at' = subscription.event_time(lower(l.period))
                                         AND e.at <= lower(l.period)))"
check "payments: every invoice paid, one account in ten after a failed attempt" "
SELECT (SELECT count(*) FROM subscription.open_balance WHERE due > 0 AND at <= '$last'::timestamptz - interval '7 days') = 0
   AND (SELECT count(*) FROM subscription.payment) > 0"
# every time the extension wrote is the clock's: in the simulated years,
# none near real time (every timestamptz and tstzrange column of its tables)
check "no timestamp written is near real time: all within 2040-2043" "
DO \$\$
DECLARE
    c record;
    bad bigint;
    total bigint := 0;
BEGIN
    FOR c IN SELECT a.attrelid::regclass AS rel, a.attname
               FROM pg_attribute AS a JOIN pg_class AS r ON r.oid = a.attrelid
              WHERE r.relnamespace = 'subscription'::regnamespace AND r.relkind = 'r'
                AND a.attnum > 0 AND NOT a.attisdropped
                AND a.atttypid IN ('timestamptz'::regtype, 'tstzrange'::regtype) LOOP
        -- a time or a range: each must lie within them
        EXECUTE format('SELECT count(*) FROM %s WHERE NOT %I <@ tstzrange(%L, %L)',
                       c.rel, c.attname, '$start', '2043-03-01 00:00+00') INTO bad;
        IF bad > 0 THEN
            RAISE WARNING '% rows of %.% outside the simulated years', bad, c.rel, c.attname;
        END IF;
        total := total + bad;
    END LOOP;
    PERFORM set_config('sim.outside', total::text, false);
END
\$\$;
SELECT current_setting('sim.outside') = '0'"

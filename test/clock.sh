#!/usr/bin/env bash
# The billing clock (issue 20, item 5), what pg_regress cannot test:
#  - the lint: no clock but subscription.now() in the extension's SQL
#    (sql/src, the upgrade step to 1.1) and C (src), except lines that say
#    "wall time:" and why (test/clock_lint.pl); and the lint itself catches
#    each form it names;
#  - a server that does not allow the clock (subscription.allow_clock off,
#    the default): a clock set there is refused (55000), real time is kept.
# The test server allows it (test/lib.sh); here it is turned off with ALTER
# SYSTEM and a reload, and back on at the end.  Prints TAP.
set -uo pipefail
cd "$(dirname "$0")/.."
db=subscription_clock
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
n=0
ok() {  # ok CONDITION-STATUS TITLE [DETAIL]
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; [ -n "${3:-}" ] && echo "$3" | sed 's/^/# /'; fi
}
echo "1..9"

out=$(perl test/clock_lint.pl sql/src/*.sql sql/subscription--1.0--1.1.sql src/*.c)
ok $? "lint: no clock but subscription.now() in sql/src, the 1.0--1.1 step and src/*.c" "$out"

# the lint finds every form it names, and lets an annotated line through
sample=$(mktemp /tmp/subscription-clock.XXXXXX)
trap 'rm -f "$sample"; psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1' EXIT
cat > "$sample" <<'SAMPLE'
    created_at timestamptz NOT NULL DEFAULT now(),
    at timestamptz DEFAULT pg_catalog.now())
    WHERE e.at < CURRENT_TIMESTAMP - interval '1 day'
    SELECT statement_timestamp(), transaction_timestamp()
    SET x = clock_timestamp()
    SELECT localtimestamp, current_date
    SELECT 'now'::timestamptz
	TimestampTz t = GetCurrentTimestamp();
	TimestampTz s = GetCurrentStatementStartTimestamp();
	TimestampTz u = GetCurrentTransactionStartTimestamp();
SAMPLE
found=$(perl test/clock_lint.pl "$sample" | wc -l)
[ "$found" -eq 10 ]
ok $? "lint: each of 10 sample lines with a clock call is found" "found $found"
printf '%s\n' "    SET until = clock_timestamp() + lease  -- wall time: a lease" \
    "    at timestamptz DEFAULT subscription.now()," "    -- Upgrade now (prorated) or later" > "$sample"
perl test/clock_lint.pl "$sample" >/dev/null
ok $? "lint: a line annotated \"wall time:\", subscription.now() and the word now pass"

q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
q -d $db -c "CREATE EXTENSION subscription"

# setting_is VALUE: wait (5 s at most) until a new session sees allow_clock so
setting_is() {
    local i
    for i in $(seq 50); do
        [ "$(q -d $db -c "LOAD 'subscription'" -c 'SHOW subscription.allow_clock')" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
q -d $db -c "LOAD 'subscription'" -c "ALTER SYSTEM SET subscription.allow_clock = off" -c "SELECT pg_reload_conf()" >/dev/null
setting_is off
ok $? "a server turned to subscription.allow_clock = off (ALTER SYSTEM, reload)"

got=$(q -d $db -c "SELECT subscription.now() = now()")
[ "$got" = t ]
ok $? "not allowed, clock unset: subscription.now() is the transaction's start" "$got"

err=$(q -d $db -c "SET subscription.clock = '2040-01-01 00:00+00'" -c "\\set VERBOSITY verbose" -c "SELECT subscription.now()" 2>&1)
echo "$err" | grep -q '^ERROR:  55000: subscription.clock is set but this server does not allow the clock to be moved'
ok $? "not allowed, clock set: subscription.now() is refused (55000)" "$err"

# where the extension reads it, the statement is refused whole: no row written
err=$(q -d $db -c "\\set VERBOSITY verbose" -c "BEGIN" -c "SET LOCAL subscription.clock = '2040-01-01 00:00+00'" \
        -c "INSERT INTO subscription.account (id, name) VALUES (1, 'Acme')" 2>&1)
rows=$(q -d $db -c "SELECT count(*) FROM subscription.account")
echo "$err" | grep -q '^ERROR:  55000:' && [ "$rows" = 0 ]
ok $? "not allowed, clock set: a default that reads it refuses the insert (55000), nothing written" "$err; $rows rows"

# a session cannot allow itself (a server setting)
err=$(q -d $db -c "LOAD 'subscription'" -c "\\set VERBOSITY verbose" -c "SET subscription.allow_clock = on" 2>&1)
echo "$err" | grep -q '^ERROR:  55P02:'
ok $? "a session cannot turn subscription.allow_clock on (55P02)" "$err"

q -d $db -c "LOAD 'subscription'" -c "ALTER SYSTEM RESET subscription.allow_clock" -c "SELECT pg_reload_conf()" >/dev/null
setting_is on
ok $? "the test server allows the clock again (ALTER SYSTEM RESET, reload)"

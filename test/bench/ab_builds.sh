#!/usr/bin/env bash
# The hot paths' cost across builds: the backend's own CPU time per call of a
# guarded single-row INSERT (the limit guard), of license_consume (the
# license guard and its history row) and of record_usage with a fresh key
# (issue 21; '-' for a build without it), for each git revision given.  Each
# revision is built in a worktree of its own, each gets a database of its
# own, and the rounds alternate the builds (installing each in turn before
# its measure) so that the machine's load falls on all of them alike.
# User CPU, not throughput: a loaded machine changes the wall time of a call
# far more than the CPU it takes (docs/benchmarks.md, "Past due on the hot
# path").
#   bash test/bench/ab_builds.sh REV [REV ...]
# It replaces the installed extension (and reinstalls the work tree's at the
# end): run it where nobody else uses that install, in a Debian root
# (docs/testing.md) or a machine of its own.  BENCH_ROUNDS (3) rounds of
# BENCH_CALLS (3000) calls each.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 REV [REV ...]" >&2; exit 2; }
ensure_packages
start_cluster /tmp/subscription-ab
rounds=${BENCH_ROUNDS:-3} calls=${BENCH_CALLS:-3000}
work=$(mktemp -d /tmp/subscription-ab.XXXXXX)
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

builds=()
for rev in "$@"; do
    name=$(git -C "$ROOT" rev-parse --short "$rev")
    git -C "$ROOT" worktree add -q --detach "$work/$name" "$rev"
    make -C "$work/$name" -s >/dev/null
    builds+=("$name")
done
cleanup_worktrees() {
    for name in "${builds[@]}"; do git -C "$ROOT" worktree remove --force "$work/$name" 2>/dev/null || true; done
    rm -rf "$work"
}
trap 'cleanup_worktrees; stop_cluster_in "${SUBSCRIPTION_OWN_CLUSTER:-/nonexistent}"; make -C "$ROOT" -s install >/dev/null' EXIT

install_build() { make -C "$work/$1" -s install >/dev/null; }

for name in "${builds[@]}"; do
    install_build "$name"
    q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS ab_$name" -c "CREATE DATABASE ab_$name"
    q -d "ab_$name" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION subscription;
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('seats', 'Seats');
INSERT INTO plan (code, product, name, kind) VALUES ('seats_service', 'seats', 'Service', 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('seats_service', '1 month', 1, true);
INSERT INTO account (id, name) VALUES (200, 'seats');
-- members first: no default license is assigned on creation
INSERT INTO member (id, account_id, external_id) SELECT 2000000 + g, 200, 'm' || g FROM generate_series(1, 20000) AS g;
SELECT setval(pg_get_serial_sequence('subscription.subscription', 'id'), 1000, false);
SELECT subscribe(200, 'seats_service', '1 month', 1000000, '2026-01-01');
CREATE SEQUENCE public.next_member START 2000001;
INSERT INTO product (code, name) VALUES ('devices', 'Devices');
INSERT INTO plan (code, product, name) VALUES ('devices_big', 'devices', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('devices_big', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('devices_big', 'devices', 100000000), ('devices_big', 'api_calls', NULL);
CREATE SEQUENCE public.next_key;
INSERT INTO account (id, name) VALUES (400, 'devices');
SELECT subscribe(400, 'devices_big', '1 month', 1, '2026-01-01');
CREATE TABLE public.device (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
SELECT enforce_limit('public.device', 'devices');
VACUUM ANALYZE;
SQL
done

# cpu_per_call DB STATEMENT N: the backend's user CPU (1/100 s ticks, from
# /proc) for N autocommitted runs of STATEMENT, after one to warm its caches
cpu_per_call() {
    local db=$1 statement=$2 n=$3 script=$work/calls.sql
    {
        echo 'SELECT pg_backend_pid() AS pid \gset'
        echo '\setenv PID :pid'
        echo "$statement"
        echo "\\! awk '{ print \$14 }' /proc/\$PID/stat > $work/cpu.before"
        for _ in $(seq "$n"); do echo "$statement"; done
        echo "\\! awk '{ print \$14 }' /proc/\$PID/stat > $work/cpu.after"
    } > "$script"
    # a build older than the billing clock warns of its setting: not an error
    { q -d "$db" -f "$script" 2>&1 >/dev/null | grep -v -e 'subscription.allow_clock' -e 'reserved prefix' >&2; } || true
    echo $(( $(cat "$work/cpu.after") - $(cat "$work/cpu.before") ))
}

ticks_hz=$(getconf CLK_TCK)
results=$work/results
: > "$results"
for round in $(seq "$rounds"); do
    for name in "${builds[@]}"; do
        install_build "$name"
        guard=$(cpu_per_call "ab_$name" "INSERT INTO public.device (account_id, name) VALUES (400, 'd');" "$calls")
        consume=$(cpu_per_call "ab_$name" "SELECT subscription.license_consume(1000, nextval('public.next_member'));" $((calls / 2)))
        usage=-1
        if [ "$(q -d "ab_$name" -c "SELECT to_regprocedure('subscription.record_usage(bigint,text,bigint,text,timestamptz)') IS NOT NULL")" = t ]; then
            usage=$(cpu_per_call "ab_$name" "SELECT subscription.record_usage(400, 'api_calls', 1, 'k' || nextval('public.next_key'));" $((calls / 2)))
        fi
        echo "$name $guard $consume $usage" >> "$results"
        echo "round $round $name: guarded insert ${guard} ticks / $calls calls, license_consume ${consume} ticks / $((calls / 2)) calls, record_usage ${usage} ticks / $((calls / 2)) calls"
    done
done

# the median of each build's rounds, in microseconds per call, and against the first build
printf '\n%-12s %22s %22s %22s\n' build 'guarded insert (us)' 'license_consume (us)' 'record_usage (us)'
first_guard='' first_consume='' first_usage=''
for name in "${builds[@]}"; do
    read -r guard consume usage < <(awk -v b="$name" -v n="$calls" -v hz="$ticks_hz" '
        $1 == b { g[++k] = $2 * 1e6 / hz / n; c[k] = $3 * 1e6 / hz / (n / 2); u[k] = $4 < 0 ? -1 : $4 * 1e6 / hz / (n / 2) }
        function median(a, k,   i, j, t) {
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
            return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
        }
        END { printf "%.0f %.0f %.0f\n", median(g, k), median(c, k), median(u, k) }' "$results")
    first_guard=${first_guard:-$guard} first_consume=${first_consume:-$consume}
    [ "$usage" -ge 0 ] && first_usage=${first_usage:-$usage}
    printf '%-12s %14s (%5.2f x) %14s (%5.2f x) %14s (%5s x)\n' "$name" "$guard" \
        "$(awk -v a="$guard" -v b="$first_guard" 'BEGIN { print a / b }')" "$consume" \
        "$(awk -v a="$consume" -v b="$first_consume" 'BEGIN { print a / b }')" \
        "$([ "$usage" -ge 0 ] && echo "$usage" || echo -)" \
        "$([ "$usage" -ge 0 ] && awk -v a="$usage" -v b="$first_usage" 'BEGIN { printf "%.2f", a / b }' || echo -)"
done

# record_usage's cost as instructions (issue 21), which the machine's load
# does not change: per library given, the instructions (Ir) of one call of
# record_usage with a fresh key, each call its own transaction, against a
# bare insert of the same row (usage_record's columns and primary key) in
# a table without the extension, in one run.  The libraries (builds of
# subscription.so: BENCH_LIBS="name=/path/a.so name=/path/b.so") take
# turns as $libdir/subscription.so (each session's backend loads the one
# in place when it starts: renamed in, never overwritten), in alternating
# rounds (BENCH_ROUNDS).  A cluster of its own in BENCH_DIR (port
# BENCH_PORT) runs under valgrind --tool=callgrind (every backend writes
# its count at its exit); per variant one session makes BENCH_FEW calls and
# one BENCH_MANY: the difference over the difference of calls is a call's
# instructions, the session's start and warm-up cancelled.  As root (the
# library is replaced; the server runs as postgres); needs valgrind.
# The limit guard's single-row INSERT (issue 21, h-rec5) the same way: into
# a registered table with a meter (time_weighted), into one without, and
# into the same table without the guard (their ratios are the guard's
# targets of cases/usage_pgbench.sh, measured without the load).
#   BENCH_LIBS="before=/tmp/a.so after=/tmp/b.so" bash test/bench/ab_usage_callgrind.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/../lib.sh"
use_pg_config
dir=${BENCH_DIR:-/tmp/subscription-ab-usage}
port=${BENCH_PORT:-5432}
few=${BENCH_FEW:-20}
many=${BENCH_MANY:-220}
rounds=${BENCH_ROUNDS:-2}
libs=${BENCH_LIBS:?BENCH_LIBS="name=/path/subscription.so ..."}
. "$here/callgrind_lib.sh"
pkglib=$("$PG_CONFIG" --pkglibdir)
installed=$(mktemp /tmp/subscription-ab-usage-lib.XXXXXX)
cp "$pkglib/subscription.so" "$installed"

callgrind_cluster "$dir" "$port"
cleanup() {
    callgrind_stop
    install -m 0755 "$installed" "$pkglib/.subscription.so.ab" && mv "$pkglib/.subscription.so.ab" "$pkglib/subscription.so"
    rm -f "$installed"
}
trap cleanup EXIT

psql -X -q -d postgres -c "CREATE DATABASE ab"
psql -X -q -d ab -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
CREATE EXTENSION subscription CASCADE;
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('useab', 'Usage A/B');
INSERT INTO plan (code, product, name) VALUES ('useab', 'useab', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('useab', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('useab', 'api_calls', NULL);
SELECT plan_usage_price('useab', 'api_calls', 0, 0.001);
INSERT INTO account (id, name) VALUES (500, 'client');
SELECT subscribe(500, 'useab', '1 month', 1, '2026-01-01');
CREATE TABLE public.record_bare (LIKE subscription.usage_record INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
                                 PRIMARY KEY (tenant_id, account_id, feature, key));
CREATE SEQUENCE public.ab_key;
INSERT INTO plan_limit (plan, feature, value) VALUES ('useab', 'metered_devices', NULL), ('useab', 'plain_devices', NULL);
CREATE TABLE public.mdevice_enforced (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.mdevice_plain (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.mdevice_bare (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
SELECT enforce_limit('public.mdevice_enforced', 'metered_devices');
SELECT meter('public.mdevice_enforced', 'metered_devices', 'time_weighted');
SELECT enforce_limit('public.mdevice_plain', 'plain_devices');
SQL
callgrind_restart
session() { callgrind_session ab "$1" "$2"; }
call="SELECT subscription.record_usage(500, 'api_calls', 1, 'k' || nextval('public.ab_key'));"
bare="INSERT INTO public.record_bare VALUES (500, 500, 'api_calls', 'k' || nextval('public.ab_key'), 1, 1, now());"
per_call() { local a b; a=$(session "$1" "$few"); b=$(session "$1" "$many"); echo $(((b - a) / (many - few))); }

# a first session pays the cluster's first costs (the relcache's init file): not a variant's
session "$call" 2 >/dev/null
device() { echo "INSERT INTO public.mdevice_$1 (account_id, name) VALUES (500, 'd');"; }
# and the tables' first rows (the counters created, their periods closed)
for t in enforced plain bare; do session "$(device $t)" 2 >/dev/null; done
printf '%-8s %-10s %14s %14s %14s\n' round variant record_usage metered_insert guard_insert
for round in $(seq "$rounds"); do
    for v in $libs; do
        install -m 0755 "${v#*=}" "$pkglib/.subscription.so.ab" && mv "$pkglib/.subscription.so.ab" "$pkglib/subscription.so"
        printf '%-8s %-10s %14s %14s %14s\n' "$round" "${v%%=*}" "$(per_call "$call")" \
            "$(per_call "$(device enforced)")" "$(per_call "$(device plain)")"
    done
    printf '%-8s %-10s %14s %14s %14s\n' "$round" bare "$(per_call "$bare")" "$(per_call "$(device bare)")" -
done
psql -X -qAt -d ab -c "SELECT 'recorded equals counted: ' || bool_and(u.used = (SELECT count(*) FROM subscription.usage_record AS r WHERE r.account_id = u.account_id AND r.feature = 'api_calls')) FROM subscription.usage_counter AS u WHERE u.feature = 'api_calls'"

#!/usr/bin/env bash
# Where the 3-year simulation's time goes (issue 20, item 7): test/simulate.sh
# at SUBS subscriptions (300 by default) on a throwaway cluster of its own
# with pg_stat_statements (track = all) and track_functions = all, the
# statistics reset after the setup (SIMULATE_RESET_STATS), then
#   - the steps' statements (top level): total ms, calls, ms a call;
#   - the nested statements, by total time;
#   - the functions, by self time and by total time.
# Run it in a Debian root (it installs the extension):
#   SUBS=300 bash test/bench/profile_simulation.sh
# track_functions = all keeps SQL functions from being inlined: every figure
# is above the real one.  PROFILE_ROWS (default 30) rows a table.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"

ensure_packages
build_and_install
dir=${PROFILE_CLUSTER:-/tmp/subscription-profile}
stop_cluster_in "$dir"
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
cat >> "$dir/data/postgresql.conf" <<'CONF'
subscription.allow_clock = on
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
pg_stat_statements.max = 10000
track_functions = all
CONF
as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
    -o "-c listen_addresses='' -k $dir -p 5432 -c fsync=off -c max_connections=20" start
export PGHOST=$dir PGPORT=5432 PGUSER=postgres SUBSCRIPTION_OWN_CLUSTER=$dir
trap 'stop_cluster_in "$dir"' EXIT

db=subscription_profile
SUBS=${SUBS:-300} SIMULATE_DB=$db SIMULATE_KEEP=1 SIMULATE_RESET_STATS=1 bash "$ROOT/test/simulate.sh"
rows=${PROFILE_ROWS:-30}
psql -X -q -d "$db" -v ON_ERROR_STOP=1 <<SQL
\pset footer off
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
\echo '# the steps (top-level statements)'
SELECT round(total_exec_time)::bigint AS ms, calls, round((total_exec_time / nullif(calls, 0))::numeric, 3) AS ms_a_call,
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
  FROM pg_stat_statements WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY total_exec_time DESC LIMIT $rows;
\echo '# nested statements, by total time'
SELECT round(total_exec_time)::bigint AS ms, calls, round((total_exec_time / nullif(calls, 0))::numeric, 3) AS ms_a_call,
       left(regexp_replace(query, '\s+', ' ', 'g'), 110) AS statement
  FROM pg_stat_statements WHERE NOT toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY total_exec_time DESC LIMIT $rows;
\echo '# functions, by self time'
SELECT round(self_time)::bigint AS self_ms, round(total_time)::bigint AS total_ms, calls,
       round((self_time / nullif(calls, 0))::numeric, 3) AS self_ms_a_call, funcname
  FROM pg_stat_user_functions ORDER BY self_time DESC LIMIT $rows;
\echo '# functions, by total time'
SELECT round(total_time)::bigint AS total_ms, calls, round((total_time / nullif(calls, 0))::numeric, 3) AS ms_a_call, funcname
  FROM pg_stat_user_functions ORDER BY total_time DESC LIMIT $rows;
SQL
psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $db"

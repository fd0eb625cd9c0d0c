#!/usr/bin/env bash
# The limit guard's kept catalog version on a logical replication
# subscriber (issue 21 review): the apply worker fires no statement
# trigger, so the invalidation that makes every backend read the catalog's
# limit version again is also a row trigger enabled in replica mode only
# (limit_catalog_replica_invalidates, sql/src/40_limits.sql).  A cluster of
# its own (wal_level logical), the limit catalog published from one
# database to another; on the subscriber a session writes a guarded row
# (it keeps the version), the publisher lowers the limit, and once the
# change is applied the same session's next write meets the new limit.
# With the row trigger disabled, the same steps oversell: the test can
# fail.  Prints TAP.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
ensure_packages >/dev/null || exit 1
dir=/tmp/subscription-replica
stop_cluster_in "$dir"
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s \
    -o "-c listen_addresses='' -k $dir -p 5432 -c fsync=off -c wal_level=logical -c max_connections=20" start
trap 'stop_cluster_in "$dir"' EXIT
export PGHOST=$dir PGPORT=5432 PGUSER=postgres
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
n=0
ok() {  # ok CONDITION-STATUS TITLE [DETAIL]
    n=$((n + 1))
    if [ "$1" -eq 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; [ -n "${3:-}" ] && echo "$3" | sed 's/^/# /'; fi
}
echo "1..5"

q -d postgres -c 'CREATE DATABASE publisher' -c 'CREATE DATABASE subscriber'
for db in publisher subscriber; do q -d $db -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION subscription'; done
q -d publisher >/dev/null <<'SQL'
INSERT INTO subscription.product (code, name) VALUES ('rooms', 'Meeting rooms');
INSERT INTO subscription.plan (code, product, name) VALUES ('rooms_basic', 'rooms', 'Basic');
INSERT INTO subscription.plan_price (plan, cycle, amount) VALUES ('rooms_basic', '1 month', 10);
INSERT INTO subscription.plan_limit (plan, feature, value) VALUES ('rooms_basic', 'rooms', 5);
CREATE PUBLICATION limits FOR TABLE subscription.product, subscription.plan, subscription.plan_price,
                                    subscription.plan_limit;
SELECT pg_create_logical_replication_slot('limits', 'pgoutput');
SQL
q -d subscriber -c "CREATE SUBSCRIPTION limits CONNECTION 'host=$dir port=5432 dbname=publisher user=postgres'
                    PUBLICATION limits WITH (create_slot = false, slot_name = 'limits')"

# wait_limit VALUE: until the subscriber has applied the limit
wait_limit() {
    local i
    for i in $(seq 600); do
        [ "$(q -d subscriber -c "SELECT value FROM subscription.plan_limit WHERE plan = 'rooms_basic' AND feature = 'rooms'")" = "$1" ] && return 0
        sleep 0.1
    done
    return 1
}
wait_limit 5
ok $? "the subscriber has the publisher's limit catalog (limit 5)"

q -d subscriber >/dev/null <<'SQL'
INSERT INTO subscription.account (id, name) VALUES (1, 'Acme');
SELECT subscription.subscribe(1, 'rooms_basic', '1 month', 1, '2026-01-01');
CREATE TABLE public.room (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
SELECT subscription.enforce_limit('public.room', 'rooms');
SQL

# one session on the subscriber: a room (the guard keeps the catalog's
# version), the limit lowered to LIMIT on the publisher and applied here,
# then another room; prints the second INSERT's SQLSTATE (00000: written)
session() {
    local limit=$1
    q -d subscriber 2>&1 <<SQL
\\set VERBOSITY sqlstate
\\set ON_ERROR_STOP 0
INSERT INTO public.room (account_id) VALUES (1);
\\! psql -X -qAt -d publisher -c "UPDATE subscription.plan_limit SET value = $limit WHERE plan = 'rooms_basic' AND feature = 'rooms'"
\\! for i in \$(seq 600); do [ "\$(psql -X -qAt -d subscriber -c "SELECT value FROM subscription.plan_limit WHERE feature = 'rooms'")" = $limit ] && break; sleep 0.1; done
INSERT INTO public.room (account_id) VALUES (1);
\\echo :SQLSTATE
SQL
}
reset_rooms() {
    q -d subscriber -c 'DELETE FROM public.room'
    q -d publisher -c "UPDATE subscription.plan_limit SET value = 5 WHERE plan = 'rooms_basic' AND feature = 'rooms'"
    wait_limit 5
}

# the control: without the row trigger the apply sends no invalidation, and
# the session checks the limit stored at the version it kept (5): oversold
q -d subscriber -c 'ALTER TABLE subscription.plan_limit DISABLE TRIGGER limit_catalog_replica_invalidates'
out=$(session 1)
[ "$(echo "$out" | tail -1)" = 00000 ]
ok $? "control: without the replica row trigger, a session that kept the version oversells after the limit 1 is applied" "$out"
reset_rooms
q -d subscriber -c 'ALTER TABLE subscription.plan_limit ENABLE REPLICA TRIGGER limit_catalog_replica_invalidates'

out=$(session 1)
[ "$(echo "$out" | tail -1)" = 23514 ]
ok $? "with it, the same session's next write meets the limit 1 applied from the publisher (23514)" "$out"
[ "$(q -d subscriber -c 'SELECT count(*) FROM public.room')" = 1 ] \
    && [ "$(q -d subscriber -c "SELECT used FROM subscription.usage_counter WHERE feature = 'rooms'")" = 1 ]
ok $? "nothing written beyond the limit: one room, counted once"

# each table the version is computed from has the row trigger, enabled in
# replica mode only (tgenabled R), and the statement trigger, always (A)
triggers=$(q -d subscriber -c "SELECT string_agg(format('%s %s %s', c.relname, t.tgname, t.tgenabled), ', ' ORDER BY c.relname, t.tgname)
                                 FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
                                WHERE t.tgname LIKE 'limit_catalog%invalidates'")
[ "$triggers" = "addon limit_catalog_invalidates A, addon limit_catalog_replica_invalidates R, plan limit_catalog_invalidates A, plan limit_catalog_replica_invalidates R, plan_limit limit_catalog_invalidates A, plan_limit limit_catalog_replica_invalidates R, suite_component limit_catalog_invalidates A, suite_component limit_catalog_replica_invalidates R" ]
ok $? "the four tables of the catalog's limit version: the row trigger in replica mode, the statement trigger always" "$triggers"

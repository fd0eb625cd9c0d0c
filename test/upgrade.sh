#!/usr/bin/env bash
# The upgrade from 1.0: ALTER EXTENSION subscription UPDATE gives, object for
# object, what a fresh install of the default version gives; it loses or
# changes no row and every guard still refuses; and a dump of a 1.0 database
# restores into the new version.
#   1.0 + fixture --ALTER EXTENSION UPDATE--> $upgraded   compared with $fresh
#   1.0 + fixture --pg_dump / pg_restore----> $restored   (a fresh install + the rows)
# The fixture, the catalog description and the guard probes are in test/upgrade/.
# Prints TAP; needs PGHOST/PGPORT/PGUSER of a server, as a superuser, with
# the extension's files installed (test/check.sh provides them).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bindir=$(pg_config --bindir)
upgraded=subscription_upgrade_updated   # 1.0 + fixture, then ALTER EXTENSION UPDATE
fresh=subscription_upgrade_fresh        # CREATE EXTENSION at the default version
dumped=subscription_upgrade_dumped      # 1.0 + fixture, dumped with pg_dump -Fc
restored=subscription_upgrade_restored  # that dump restored into an empty database
work=$(mktemp -d /tmp/subscription-upgrade.XXXXXX)
n=0
failed=0

q() { "$bindir/psql" -X -qAt -v ON_ERROR_STOP=1 "$@"; }
drop_databases() {
    for db in $upgraded $fresh $dumped $restored; do
        q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" >/dev/null
    done
}
cleanup() {
    drop_databases
    # the descriptions and fingerprints help to read a failure: keep them then
    if [ "$failed" -eq 0 ]; then rm -rf "$work"; else echo "# descriptions and fingerprints kept in $work"; fi
}
trap cleanup EXIT

check() {  # check DESCRIPTION COMMAND...
    n=$((n + 1))
    local desc=$1; shift
    if "$@"; then
        echo "ok $n - $desc"
    else
        echo "not ok $n - $desc"
        failed=$((failed + 1))
    fi
}
# same A B: the files are equal; otherwise print the diff's first 100 lines
same() {
    [ -f "$1" ] && [ -f "$2" ] || { echo "# missing: $1 or $2"; return 1; }
    diff -u --label "${3:-$1}" --label "${4:-$2}" "$1" "$2" > "$work/diff" && return 0
    head -n 100 "$work/diff" | sed 's/^/# /'
    [ "$(wc -l < "$work/diff")" -gt 100 ] && echo "# ... $(wc -l < "$work/diff") lines of diff in all"
    return 1
}
# has_lines TEXT LINE...: every LINE is a line of TEXT
has_lines() {
    local text=$1 line; shift
    for line in "$@"; do
        grep -qxF -- "$line" <<<"$text" || return 1
    done
}
bail() { echo "Bail out! $*"; failed=$((failed + 1)); exit 1; }

default_version=$(q -d postgres -c "SELECT default_version FROM pg_available_extensions WHERE name = 'subscription'")
[ -n "$default_version" ] || bail "the extension subscription is not installed"
echo "# from 1.0 to the default version $default_version"

# --- the databases ---------------------------------------------------------
drop_databases
for db in $upgraded $fresh $restored; do
    q -d postgres -c "CREATE DATABASE $db" || bail "cannot create database $db"
done
# the fixture's output is the API's answers; errors still reach stderr
check "the fixture loads on 1.0 (test/upgrade/fixture.sql)" \
    q -d $upgraded -c "CREATE EXTENSION subscription VERSION '1.0'" -f "$here/upgrade/fixture.sql" -o /dev/null
[ "$(q -d $upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'subscription'")" = 1.0 ] \
    || bail "database $upgraded does not hold version 1.0 with the fixture"
# the database to dump: the same 1.0 database, copied before the update
q -d postgres -c "CREATE DATABASE $dumped TEMPLATE $upgraded" || bail "cannot copy $upgraded"
check "CREATE EXTENSION subscription installs the default version $default_version" \
    test "$(q -d $fresh -c 'CREATE EXTENSION subscription' -c "SELECT extversion FROM pg_extension WHERE extname = 'subscription'")" = "$default_version"

# --- fingerprints ----------------------------------------------------------
# fingerprint_sql DB: a query over DB as its catalog is now, one line per
# table outside the system schemas ("table NAME MD5 ROWS": the md5 of its
# rows sorted as text, these columns only, in this order) and per sequence
# ("sequence NAME LAST_VALUE IS_CALLED").  Built before the update, so the
# columns a new version adds are left out and the rows of 1.0 compare.
fingerprint_sql() {
    q -d "$1" <<'SQL'
SET search_path = pg_catalog;   -- every name schema-qualified
SELECT string_agg(part, E'\nUNION ALL\n' ORDER BY name) || E'\nORDER BY 1;'
  FROM (SELECT c.oid::regclass::text AS name,
               CASE c.relkind
               WHEN 'r' THEN format($f$SELECT 'table ' || %L || ' ' || md5(coalesce(string_agg(r::text, E'\n' ORDER BY r::text), '')) || ' ' || count(*) FROM (SELECT %s FROM ONLY %s) AS r$f$,
                                    c.oid::regclass, coalesce(cols.list, ''), c.oid::regclass)
               ELSE format($f$SELECT 'sequence ' || %L || ' ' || last_value || ' ' || is_called FROM %s$f$,
                           c.oid::regclass, c.oid::regclass) END AS part
          FROM pg_class AS c
          JOIN pg_namespace AS s ON s.oid = c.relnamespace
         CROSS JOIN LATERAL (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) AS list
                               FROM pg_attribute AS a
                              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS cols
         WHERE c.relkind IN ('r', 'S')
           AND s.nspname NOT IN ('pg_catalog', 'information_schema') AND s.nspname NOT LIKE 'pg\_%') AS x;
SQL
}
fingerprint() {  # fingerprint DB QUERYFILE, with the same settings every time
    q -d "$1" -c "SET TimeZone = 'UTC'" -c "SET DateStyle = 'ISO, YMD'" -c "SET search_path = pg_catalog" -f "$2"
}
# the three parts of a fingerprint: the extension's tables, the others, the sequences
part() {  # part extension|application|sequences FILE
    case $1 in
        extension) grep '^table subscription\.' "$2" ;;
        application) grep '^table ' "$2" | grep -v '^table subscription\.' ;;
        sequences) grep '^sequence ' "$2" ;;
    esac > "$2.$1"
}
# same_rows WHAT BEFORE AFTER: one TAP line per part of the fingerprints
same_rows() {
    local p
    for p in extension application sequences; do part $p "$2"; part $p "$3"; done
    check "$1: no row of the extension's tables lost or changed (their 1.0 columns)" \
        same_fingerprint "$2.extension" "$3.extension"
    check "$1: no row of the application tables lost or changed" \
        same_fingerprint "$2.application" "$3.application"
    check "$1: every sequence keeps its position" \
        same_fingerprint "$2.sequences" "$3.sequences"
}
# two empty fingerprints (of a server that went away) are no success
same_fingerprint() {
    [ -s "$1" ] || { echo "# no fingerprint taken before"; return 1; }
    same "$1" "$2" before after
}

fingerprint_sql $upgraded > "$work/fingerprint.sql"
fingerprint $upgraded "$work/fingerprint.sql" > "$work/rows-before"
part extension "$work/rows-before"; part application "$work/rows-before"
# the comparison means something only if the fixture wrote every table
check "the fixture leaves no table empty (the extension's $(wc -l < "$work/rows-before.extension") and the application's $(wc -l < "$work/rows-before.application"))" \
    test "$(wc -l < "$work/rows-before.extension")" -ge 20 -a "$(wc -l < "$work/rows-before.application")" -ge 2 \
         -a -z "$(awk '$1 == "table" && $4 == 0' "$work/rows-before")"

# --- the update ------------------------------------------------------------
update_out=$(q -d $upgraded -c "ALTER EXTENSION subscription UPDATE" 2>&1)
check "ALTER EXTENSION subscription UPDATE succeeds" test -z "$update_out"
[ -n "$update_out" ] && echo "$update_out" | sed 's/^/# /'
check "the update reaches the default version $default_version" \
    test "$(q -d $upgraded -c "SELECT extversion FROM pg_extension WHERE extname = 'subscription'")" = "$default_version" \
         -a "$default_version" != 1.0

# --- no row lost or changed -----------------------------------------------
fingerprint $upgraded "$work/fingerprint.sql" > "$work/rows-after"
same_rows "update" "$work/rows-before" "$work/rows-after"

# --- the updated database equals a fresh install ---------------------------
# describe DB LABEL: test/upgrade/describe.sql of DB in $work/LABEL.txt, and
# each of its sections in $work/LABEL/SECTION
describe() {
    mkdir -p "$work/$2"
    q -d "$1" -f "$here/upgrade/describe.sql" > "$work/$2.txt" || return 1
    awk -v dir="$work/$2" '/^@@ / { file = dir "/" $2; printf "" > file; next } { print > file }' "$work/$2.txt"
}
check "the fresh install can be described (test/upgrade/describe.sql)" describe $fresh fresh
check "the updated database can be described" describe $upgraded updated
# a description that says nothing would compare equal: it must hold the extension
check "the description covers the extension ($(wc -l 2>/dev/null < "$work/fresh/members") members)" \
    test "$(wc -l 2>/dev/null < "$work/fresh/members" || echo 0)" -ge 100 -a -s "$work/fresh/functions" \
         -a -s "$work/fresh/constraints" -a -s "$work/fresh/triggers" -a -s "$work/fresh/config"
while IFS='|' read -r section what; do
    check "updated = fresh: $what" \
        same "$work/fresh/$section" "$work/updated/$section" "fresh $default_version: $section" "1.0 updated: $section"
done <<'LIST'
members|the extension's members, object for object
tables|tables and columns (order, type, typmod, not null, default, identity, generated)
constraints|constraints (pg_get_constraintdef)
indexes|indexes (pg_get_indexdef)
triggers|triggers on the extension's tables (pg_get_triggerdef, tgenabled)
functions|functions and procedures (pg_get_functiondef, owner, proacl)
acls|ACLs of the schema, tables, sequences, columns, types and the initial privileges
views|views (pg_get_viewdef, reloptions) and rules
policies|row level security and policies
event_triggers|event triggers
comments|comments
sequences|sequence parameters and owning columns
types|types
extension_rows|rows the extension scripts write (ISO 4217 currencies)
config|the pg_extension row (version, extconfig with extcondition)
LIST

# --- the guards still refuse after the update ------------------------------
# check_guards WHEN DB: test/upgrade/guards.sql against DB, one TAP line per guard
check_guards() {
    local out before=$failed
    out=$(q -d "$2" -f "$here/upgrade/guards.sql" 2>&1)
    check "$1: a plan limit admits rows up to it and refuses one more (23514)" \
        has_lines "$out" 'device_fill accepted' 'device_over 23514'
    [ -n "$(awk '$1 == "device_room" && $2 > 0' <<<"$out")" ] || echo "# the hosts limit had no room left: the fill proved nothing"
    check "$1: a license beyond the subscription's quantity is refused (23514)" \
        has_lines "$out" 'license_fill accepted' 'license_left 0' 'license_over 23514'
    check "$1: releasing and assigning a seat moves licenses_left" \
        has_lines "$out" 'seat_release 1' 'seat_assign 0'
    check "$1: history refuses UPDATE and DELETE (42501)" \
        has_lines "$out" 'history_update 42501' 'history_delete 42501'
    check "$1: the sub-account limit on subscription.account refuses (23514)" \
        has_lines "$out" 'sub_account_over 23514'
    check "$1: has_feature() reads stored entitlements that are the rule's answers" \
        has_lines "$out" 'entitlement_drift 0' 'entitlements_stored true'
    [ "$failed" -eq "$before" ] || sed 's/^/# guards: /' <<<"$out"
}
check_guards "after the update" $upgraded

# --- a 1.0 dump restores into the new version ------------------------------
fingerprint_sql $dumped > "$work/fingerprint-dumped.sql"
fingerprint $dumped "$work/fingerprint-dumped.sql" > "$work/rows-dumped"
dumpfile="$work/dumped.custom"
# pg_dump warns that account and ledger reference themselves: harmless
"$bindir/pg_dump" -Fc -d $dumped -f "$dumpfile" 2>&1 | sed 's/^/# /'
check "pg_dump of the 1.0 database succeeds" test -s "$dumpfile"
# the dump says CREATE EXTENSION subscription without a version: the restore
# installs the default one; triggers off, as the README's Backups section says
restore_out=$(PGOPTIONS='-c session_replication_role=replica' \
              "$bindir/pg_restore" -d $restored --exit-on-error "$dumpfile" 2>&1)
check "pg_restore into an empty database succeeds" test -z "$restore_out"
[ -n "$restore_out" ] && echo "$restore_out" | sed 's/^/# /'
check "the restored extension is at the default version $default_version" \
    test "$(q -d $restored -c "SELECT extversion FROM pg_extension WHERE extname = 'subscription'")" = "$default_version"
fingerprint $restored "$work/fingerprint-dumped.sql" > "$work/rows-restored"
same_rows "restore" "$work/rows-dumped" "$work/rows-restored"
check "the restored database can be described" describe $restored restored
check "restored = fresh: the restore leaves the extension's objects as a fresh install has them" \
    same "$work/fresh.txt" "$work/restored.txt" "fresh $default_version" "1.0 dump restored"
# a 1.0 dump holds no entitlements (issue 21): the step docs/design.md#restores
# names stores them, as the update does
q -d $restored -c "SELECT count(subscription.refresh_entitlements(a.tenant_id, a.id, NULL)) FROM subscription.account AS a" >/dev/null
check_guards "after the restore" $restored

echo "1..$n"
[ "$failed" -eq 0 ]

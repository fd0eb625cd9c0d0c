#!/usr/bin/env bash
# The security regression suite (test/security, pgTAP): each file replays an
# attack of the 1.0 security review against the installed extension and
# checks its outcome (no role gained a right, no tenant code ran as another
# role, nothing was written).
#   bash test/security.sh [file.sql ...]
# Needs PGHOST/PGPORT/PGUSER of a server with the extension installed, as a
# superuser; creates (and recreates) the database subscription_security and
# the cluster-wide roles tenant_a, tenant_b, app and backoffice, and drops
# at the end the database and those of the roles it created (the docs'
# examples create an "app" of their own).  Prints pg_prove's output; exits
# non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
db=subscription_security
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

suite_roles="'tenant_a','tenant_b','app','backoffice'"
created_roles=$(q -d postgres -c "SELECT r FROM unnest(ARRAY[$suite_roles]) AS r
                                   WHERE r NOT IN (SELECT rolname FROM pg_roles)")
cleanup() {
    local r
    q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db" >/dev/null
    for r in $created_roles; do
        q -d postgres -c "DROP ROLE IF EXISTS \"$r\"" >/dev/null
    done
}
trap cleanup EXIT

q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null || exit 1
q -d $db -c 'SET client_min_messages = warning' -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION subscription' >/dev/null || exit 1
q -d $db -f test/security/setup.sql >/dev/null || exit 1

if [ $# -gt 0 ]; then
    files=("$@")
else
    # s1 ... s10 (not setup.sql), then what held up in 1.0
    files=(test/security/s[0-9]*.sql test/security/held_up.sql)
fi
# one file at a time: the files share the witness's counters (setup.sql)
pg_prove -d $db "${files[@]}"

#!/usr/bin/env bash
# Runs every SQL example of README.md and docs/*.md and compares each shown
# result with the real output.  Prints TAP; needs PGHOST/PGPORT/PGUSER of a
# server with the extension installed, as a superuser (test/check.sh gives one).
#
# Per page: a fresh database, CREATE EXTENSION subscription, then the page's
# ```sql blocks in order in one psql session, so a block sees what the blocks
# before it made.  A ```sql block followed by a ```text block (blank lines
# between allowed) must print exactly that text, trailing whitespace of each
# line and blank lines around the whole ignored, psql's "psql:<stdin>:N: "
# prefix removed from error lines, CONTEXT lines not shown (SHOW_CONTEXT
# never; ERROR, DETAIL and HINT are).  A ```sql block without one must run
# without an ERROR.
#   bash test/docs.sh [page.md ...]
# docs/citus.md needs a Citus cluster: test/citus.sh runs it on its
# coordinator, in a database of its own (DOCS_DATABASE: used as it is, not
# created nor dropped); without arguments this script leaves it out.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
unset PGDATABASE
work=$(mktemp -d /tmp/subscription-docs.XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ $# -gt 0 ]; then pages=("$@"); else pages=(README.md $(ls docs/*.md | grep -vx docs/citus.md)); fi
DOCS_DATABASE=${DOCS_DATABASE:-}
sentinel='@@docs-example-block'
n=0
bad=0

for page in "${pages[@]}"; do
    name=$(basename "$page" .md)
    db=docs_$(printf '%s' "$name" | tr -c 'A-Za-z0-9_' '_' | tr 'A-Z' 'a-z')
    rm -f "$work"/*
    # the session's script (a sentinel line before each block) and one file
    # per block: sql.K, and expected.K when the page shows a result
    awk -v dir="$work" -v sentinel="$sentinel" '
        function flush_pending() { pending = 0 }
        /^```sql[ \t]*$/ && !inblock {
            k++; inblock = "sql"; pending = 0
            printf "\\echo %s %d@@\n", sentinel, k >> (dir "/script.sql")
            printf "" > (dir "/sql." k)
            next
        }
        /^```text[ \t]*$/ && !inblock {
            if (pending) { inblock = "text"; printf "" > (dir "/expected." k) }
            else inblock = "other"
            pending = 0
            next
        }
        /^```/ && !inblock { inblock = "other"; pending = 0; next }
        /^```[ \t]*$/ && inblock {
            pending = (inblock == "sql"); inblock = ""; next
        }
        inblock == "sql"  { print >> (dir "/script.sql"); print >> (dir "/sql." k); next }
        inblock == "text" { print >> (dir "/expected." k); next }
        inblock           { next }
        /^[ \t]*$/        { next }
                          { pending = 0 }
        END { printf "\\echo %s end@@\n", sentinel >> (dir "/script.sql"); print k + 0 > (dir "/count") }
    ' "$page"
    blocks=$(cat "$work/count")
    [ "$blocks" -eq 0 ] && continue

    if [ -n "$DOCS_DATABASE" ]; then
        db=$DOCS_DATABASE
    else
        psql -X -q -v ON_ERROR_STOP=1 -d postgres \
            -c 'SET client_min_messages = warning' \
            -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null &&
        psql -X -q -v ON_ERROR_STOP=1 -d "$db" -c 'CREATE EXTENSION subscription' >/dev/null ||
            { n=$((n + 1)); bad=$((bad + 1)); echo "not ok $n - $page: a fresh database with the extension"; continue; }
    fi

    roles_before=$(psql -X -qAt -d postgres -c 'SELECT rolname FROM pg_roles' | LC_ALL=C sort)
    # CONTEXT lines name the extension's internal line numbers: not shown
    psql -X -q -v SHOW_CONTEXT=never -d "$db" <"$work/script.sql" >"$work/out" 2>&1
    # split the session's output at the sentinels: out.K is block K's output
    awk -v dir="$work" -v sentinel="$sentinel" '
        index($0, sentinel " ") == 1 {
            k = substr($0, length(sentinel) + 2); sub(/@@$/, "", k)
            file = dir "/out." k; printf "" > file; next
        }
        file { sub(/^psql:<stdin>:[0-9]+: /, ""); print > file }
    ' "$work/out"

    # normalize FILE: trailing whitespace of each line, blank lines around the whole
    normalize() {
        sed -e 's/[[:space:]]*$//' "$1" | awk '
            NF { for (; blank > 0; blank--) print ""; print; seen = 1; next }
            seen { blank++ }'
    }
    for k in $(seq 1 "$blocks"); do
        n=$((n + 1))
        [ -f "$work/out.$k" ] || : >"$work/out.$k"
        # DOCS_OUT=DIR keeps each block's real output, to paste into a page
        [ -n "${DOCS_OUT:-}" ] && cp "$work/out.$k" "$DOCS_OUT/$name.$k"
        if [ -f "$work/expected.$k" ]; then
            if diff -u <(normalize "$work/expected.$k") <(normalize "$work/out.$k") >"$work/diff"; then
                echo "ok $n - $page: block $k"
            else
                echo "not ok $n - $page: block $k (its shown result differs)"
                sed -e 's/^/#   /' "$work/sql.$k"
                sed -e 's/^/# /' "$work/diff"
                bad=$((bad + 1))
            fi
        elif grep -qE '^(ERROR|FATAL|PANIC): ' "$work/out.$k"; then
            echo "not ok $n - $page: block $k (an error)"
            sed -e 's/^/#   /' "$work/sql.$k"
            sed -e 's/^/# /' "$work/out.$k"
            bad=$((bad + 1))
        else
            echo "ok $n - $page: block $k"
        fi
    done
    # the roles a page created are the cluster's: drop them with the database
    [ -z "$DOCS_DATABASE" ] && psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
    LC_ALL=C comm -13 <(printf '%s\n' "$roles_before") \
             <(psql -X -qAt -d postgres -c 'SELECT rolname FROM pg_roles' | LC_ALL=C sort) |
    while read -r role; do
        psql -X -q -d postgres -c "DROP ROLE \"$role\"" >/dev/null 2>&1
    done
done
echo "1..$n"
[ "$bad" -eq 0 ]

#!/usr/bin/env bash
# Bad input: every function and procedure of schema subscription, found in
# pg_proc (a new one is covered without being listed), called with NULL in
# each argument, then with bad values of each argument's type (0, -1, the
# type's maximum, NaN and +-Infinity, +-infinity timestamps, empty and
# 10,000-character strings, unknown ids, cancelled and expired
# subscriptions), the other arguments valid, and once with all of them
# valid.  Each function starts from the same small dataset (a database
# copied from a template; after a stable function, the same copy).  All the
# calls run in one psql session.  Asserts:
#   - the server does not crash (a backend terminated by a signal);
#   - no XX000 and no "cache lookup failed";
#   - no message names an internal constraint or index ("..._pkey", ...);
#   - a call that errored wrote nothing: each call runs in its own
#     transaction (procedures commit inside), and an md5 of every extension
#     table is taken before and after it;
#   - its SQLSTATE is one that docs/errors-and-settings.md lists for the
#     function ("SQLSTATEs by function").
# Known failures are listed, each with its reason, in
# test/badinput-known-failures.txt; they are reported as TODO, never
# skipped silently.  Prints TAP: one line for the server's survival, then
# one per function (with the failing calls as comments).
#   bash test/badinput.sh [--table]
# --table also prints the section of docs/errors-and-settings.md from the
# codes raised in the run (to review, then update the docs with).
set -uo pipefail
. "$(dirname "$0")/lib.sh"

DOCS=$ROOT/docs/errors-and-settings.md
KNOWN=$ROOT/test/badinput-known-failures.txt
work=$(mktemp -d /tmp/subscription-badinput.XXXXXX)
[ "$(id -u)" -eq 0 ] && chmod 755 "$work"
trap 'rm -rf "$work"; psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS bad_work" -c "DROP DATABASE IF EXISTS bad_base" >/dev/null 2>&1' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS bad_work" \
    -c "DROP DATABASE IF EXISTS bad_base" -c "CREATE DATABASE bad_base" >/dev/null
q -d bad_base >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION subscription;
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('desk', 'Desk');
INSERT INTO plan (code, product, name, rank) VALUES ('team', 'desk', 'Team', 1), ('pro', 'desk', 'Pro', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('team', '1 month', 10, true), ('pro', '1 month', 20, true), ('team', '1 year', 100, true);
INSERT INTO plan_limit (plan, feature, value) VALUES ('team', 'rooms', 5), ('pro', 'rooms', 50);
INSERT INTO addon (code, product, name, feature, units) VALUES ('seats5', 'desk', 'Five seats', 'licenses', 5);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('seats5', '1 month', 30);
INSERT INTO plan_addon (plan, addon) VALUES ('team', 'seats5'), ('pro', 'seats5');
INSERT INTO coupon (code, percent_off, cycles) VALUES ('WELCOME', 10, 2);
INSERT INTO account (id, name) OVERRIDING SYSTEM VALUE VALUES (1, 'Active'), (2, 'Cancelled'), (3, 'Expired');
INSERT INTO member (id, account_id, external_id, role) OVERRIDING SYSTEM VALUE VALUES
    (1, 1, 'owner1', 'owner'), (2, 1, 'm1', 'member'), (3, 2, 'owner2', 'owner'), (4, 3, 'owner3', 'owner');
SELECT setval(pg_get_serial_sequence('subscription.account', 'id'), 3),
       setval(pg_get_serial_sequence('subscription.member', 'id'), 4);
-- subscription 1 active, 2 cancelled, 3 expired
SELECT subscribe(1, 'team', '1 month', 3, date_trunc('month', now())),
       subscribe(2, 'team', '1 month', 1, date_trunc('month', now())),
       subscribe(3, 'team', '1 month', 1, date_trunc('month', now()) - interval '3 months');
SELECT license_consume(1, 2);
SELECT purchase_addon(1, 'seats5', 1, date_trunc('month', now()) + interval '1 day');
SELECT end_early(2, date_trunc('month', now()) + interval '1 day');
SELECT set_renewal(3, 'none');
SELECT renew_due(date_trunc('month', now()) - interval '1 day');
CREATE TABLE public.room (id int PRIMARY KEY, account_id bigint NOT NULL);
SELECT enforce_limit('public.room', 'rooms');
INSERT INTO public.room VALUES (1, 1), (2, 1);
DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bad_role') THEN CREATE ROLE bad_role; END IF; END $$;
-- the md5 of every table of the extension, to compare around a call
CREATE SCHEMA bad;
\set sums_schema bad
\i test/sql/include/table_sums.psql
SQL
if [ $? -ne 0 ]; then
    echo "1..1"
    echo "not ok 1 - the bad-input dataset loads"
    exit 1
fi

# the calls: per routine, NULL in each argument, then each bad value of its
# type, the other arguments valid; routines whose arguments cannot be
# written as literals (triggers, event triggers, row types) get what can
q -d bad_base > "$work/calls" <<'SQL'
WITH routine AS (
    SELECT p.oid, p.proname, p.prokind, p.pronargs, p.provolatile,
           p.oid::regprocedure::text AS signature,
           coalesce(p.proargnames[1:p.pronargs], array_fill(''::text, ARRAY[p.pronargs])) AS names,
           -- (an oidvector cast to oid[] counts from 0; its text from 1)
           string_to_array(nullif(p.proargtypes::text, ''), ' ')::oid[] AS types
      FROM pg_proc AS p
     WHERE p.pronamespace = 'subscription'::regnamespace
       AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
),
arg AS (
    SELECT r.oid, i, r.names[i] AS name, format_type(r.types[i], NULL) AS type
      FROM routine AS r, generate_subscripts(r.types, 1) AS i
),
-- a valid value for each argument, by name and type
good AS (
    SELECT a.oid, a.i,
           CASE WHEN a.type = 'bigint' OR a.type = 'integer' OR a.type = 'smallint' THEN
                     CASE WHEN a.name ~ 'member' THEN '2' WHEN a.name ~ 'quantity|hosts|units' THEN '4'
                          WHEN a.name ~ 'scale|digits' THEN '2' WHEN a.name ~ 'batch_size' THEN '10'
                          WHEN a.name ~ '^k$|^n$|number' THEN '1' ELSE '1' END || '::' || a.type
                WHEN a.type = 'text' THEN quote_literal(CASE
                     WHEN a.name ~ 'plan' THEN 'pro' WHEN a.name ~ 'feature' THEN 'rooms'
                     WHEN a.name ~ 'addon' THEN 'seats5' WHEN a.name ~ 'currency' THEN 'EUR'
                     WHEN a.name ~ 'coupon' THEN 'WELCOME' WHEN a.name ~ 'renewal|option' THEN 'always'
                     WHEN a.name ~ 'kind' THEN 'application' WHEN a.name ~ 'unit' THEN 'day'
                     WHEN a.name ~ 'right|operation|what' THEN 'read'
                     WHEN a.name ~ 'column' THEN 'account_id' WHEN a.name ~ 'policy|on_downgrade' THEN 'drop_newest'
                     WHEN a.name ~ 'actor' THEN '1' WHEN a.name = 'change' THEN 'SELECT 1'
                     ELSE 'x' END) || '::text'
                WHEN a.type = 'name' THEN quote_literal(CASE WHEN a.name ~ 'account' THEN 'account_id' ELSE 'id' END) || '::name'
                WHEN a.type = 'interval' THEN '''1 month''::interval'
                WHEN a.type = 'timestamp with time zone' THEN quote_literal(date_trunc('month', now()) + interval '5 days') || '::timestamptz'
                WHEN a.type = 'numeric' THEN '10::numeric'
                WHEN a.type = 'boolean' THEN 'false'
                WHEN a.type = 'regclass' THEN '''public.room''::regclass'
                WHEN a.type = 'regrole' THEN '''bad_role''::regrole'
                WHEN a.type = 'jsonb' THEN '''{}''::jsonb'
                WHEN a.type LIKE '%[]' THEN quote_literal('{}') || '::' || a.type
                ELSE 'NULL::' || a.type END AS value
      FROM arg AS a
),
-- the bad values of a type
bad AS (
    SELECT a.oid, a.i, v.value, v.what
      FROM arg AS a
      JOIN LATERAL (
           SELECT 'NULL::' || a.type, 'NULL'
           UNION ALL
           SELECT x.v || '::' || a.type, x.w FROM (VALUES ('0', '0'), ('-1', '-1'), ('999999', 'an unknown id')) AS x(v, w)
            WHERE a.type IN ('bigint', 'integer', 'smallint', 'numeric')
           UNION ALL
           SELECT x.v, x.w FROM (VALUES ('2'::text, 'a cancelled subscription'), ('3', 'an expired subscription')) AS x(v, w)
            WHERE a.type = 'bigint' AND a.name ~ 'subscription'
           UNION ALL
           SELECT CASE a.type WHEN 'bigint' THEN '9223372036854775807::bigint' WHEN 'integer' THEN '2147483647'
                              WHEN 'smallint' THEN '32767::smallint' ELSE '1e300::numeric' END, 'the maximum'
            WHERE a.type IN ('bigint', 'integer', 'smallint', 'numeric')
           UNION ALL
           SELECT x.v, x.w FROM (VALUES ('''NaN''::numeric', 'NaN'), ('''Infinity''::numeric', 'Infinity'),
                                        ('''-Infinity''::numeric', '-Infinity')) AS x(v, w)
            WHERE a.type = 'numeric'
           UNION ALL
           SELECT x.v, x.w FROM (VALUES ('''infinity''::timestamptz', 'infinity'), ('''-infinity''::timestamptz', '-infinity'),
                                        ('''294000-01-01''::timestamptz', 'year 294000'), ('''0026-01-01''::timestamptz', 'year 26')) AS x(v, w)
            WHERE a.type = 'timestamp with time zone'
           UNION ALL
           SELECT x.v, x.w FROM (VALUES ('''0''::interval', '0'), ('''-1 month''::interval', '-1 month'),
                                        ('''178000000 years''::interval', 'the maximum')) AS x(v, w)
            WHERE a.type = 'interval'
           UNION ALL
           SELECT x.v || '::' || a.type, x.w FROM (VALUES ('''''', 'empty'), ('repeat(''x'', 10000)', '10,000 characters'),
                                                          ('''no_such''', 'unknown')) AS x(v, w)
            WHERE a.type IN ('text', 'name')
           UNION ALL
           SELECT '''pg_class''::regclass', 'a catalog table' WHERE a.type = 'regclass'
           UNION ALL
           SELECT '''{NULL}''::' || a.type, 'an array of NULL' WHERE a.type LIKE '%[]'
      ) AS v(value, what) ON true
),
-- each bad value in one argument, the others valid; then once with all of
-- them valid (argument 0), so that a routine is also seen to work
call AS (
    SELECT r.signature, r.prokind, r.provolatile, b.i, r.names[b.i] AS name, b.what,
           (SELECT string_agg(CASE WHEN g.i = b.i THEN b.value ELSE g.value END, ', ' ORDER BY g.i)
              FROM good AS g WHERE g.oid = r.oid) AS args
      FROM routine AS r JOIN bad AS b ON b.oid = r.oid
    UNION ALL
    SELECT r.signature, r.prokind, r.provolatile, 0, '', 'valid arguments',
           (SELECT string_agg(g.value, ', ' ORDER BY g.i) FROM good AS g WHERE g.oid = r.oid)
      FROM routine AS r
)
SELECT format('%s|%s|%s|%s|%s%s(%s)', c.signature, c.provolatile,
              CASE WHEN c.i = 0 THEN 'all arguments' ELSE format('argument %s (%s)', c.i, c.name) END, c.what,
              CASE WHEN c.prokind = 'p' THEN 'CALL ' ELSE 'SELECT * FROM ' END,
              split_part(c.signature, '(', 1), coalesce(c.args, ''))
  FROM call AS c
 ORDER BY c.signature, c.i, c.what;
SQL

# one psql script: a fresh copy of the dataset before each routine that
# follows a volatile one (a stable routine cannot write), then each call in
# its own transaction between two checksums.  Each call's error (message,
# DETAIL, HINT, CONTEXT) goes to stderr after a marker line.
{
    echo '\set QUIET on'
    echo '\pset tuples_only on'
    echo '\pset format unaligned'
    prev=
    dirty=1
    k=0
    while IFS='|' read -r signature volatile arg what call; do
        k=$((k + 1))
        if [ "$signature" != "$prev" ]; then
            if [ "$dirty" = 1 ]; then
                echo '\connect postgres'
                echo 'DROP DATABASE IF EXISTS bad_work;'
                echo 'CREATE DATABASE bad_work TEMPLATE bad_base;'
                echo '\connect bad_work'
                echo 'SET client_min_messages = error;'
                echo "SET TimeZone = 'UTC';"
                echo "SET statement_timeout = '20s';"
                # the bounds as a user has them (test/check.sh widens them)
                echo "SET subscription.max_backdate = '5 years';"
                echo "SET subscription.max_ahead = '1 year';"
                dirty=0
            fi
            [ "$volatile" = v ] && dirty=1
            prev=$signature
        fi
        echo "\\set k $k"
        echo "\\warn CALL $k"
        echo 'SELECT bad.sums() AS before \gset'
        echo "$call;"
        echo '\if :ERROR'
        echo "SELECT format('RESULT|%s|%s|%s|%s', :k, :'LAST_ERROR_SQLSTATE', :'before' = bad.sums(), left(replace(:'LAST_ERROR_MESSAGE', E'\\n', ' '), 160));"
        echo '\else'
        echo "SELECT format('RESULT|%s|00000|t|', :k);"
        echo '\endif'
    done < "$work/calls"
} > "$work/script.sql"
psql -X -d postgres -f "$work/script.sql" 2> "$work/stderr" | grep '^RESULT|' > "$work/results"
psql_status=${PIPESTATUS[0]}

# the calls whose error text (any line of it) names an internal constraint
# or index, as "k"
awk '/^CALL [0-9]+$/ { k = $2; next }
     k != "" && /"[a-z0-9_]+_(pkey|fkey|check|key|excl)"/ { print k; k = "" }' "$work/stderr" > "$work/named"

# the documented SQLSTATEs of each routine: "| `signature` | 22004, 22023 |"
awk '/^## / { on = ($0 == "## SQLSTATEs by function") } on' "$DOCS" \
    | sed -n 's/^| `\([^`]*\)` | \(.*\) |$/\1|\2/p' > "$work/documented"

total=$(cut -d'|' -f1 "$work/calls" | sort -u | wc -l)
echo "1..$((total + 1))"
alive=$(psql -X -qAt -d postgres -c 'SELECT 1' 2>/dev/null)
log=$(server_log)
crashed=
[ -n "$log" ] && crashed=$(grep -E 'terminated by signal|PANIC' "$log" | tail -5)
survived=1
if [ "$alive" = 1 ] && [ -z "$crashed" ] && [ "$psql_status" -ne 2 ]; then
    echo "ok 1 - the server survived every call ($(wc -l < "$work/calls") calls)"
else
    survived=0
    echo "not ok 1 - the server survived every call"
    echo "$crashed" | sed 's/^/# /'
    tail -5 "$work/stderr" | sed 's/^/# /'
fi

# per routine: ok, or what went wrong with which call; the SQLSTATEs each
# routine raised go to $work/raised ("signature|22004, 42704")
awk -F'|' -v calls="$work/calls" -v documented="$work/documented" -v known="$KNOWN" \
    -v named="$work/named" -v raised="$work/raised" '
    BEGIN {
        k = 0
        while ((getline line < calls) > 0) {
            k++; split(line, c, "|"); sig[k] = c[1]; what[k] = c[3] ": " c[4]; text[k] = c[5]
            if (length(text[k]) > 300) text[k] = substr(text[k], 1, 300) "..."
            if (!(c[1] in seen)) { seen[c[1]] = 1; order[++nsig] = c[1] }
        }
        ncalls = k
        while ((getline line < documented) > 0) {
            split(line, d, "|"); n = split(d[2], s, /, */)
            for (i = 1; i <= n; i++) ok_state[d[1] "|" s[i]] = 1
            listed[d[1]] = 1
        }
        while ((getline line < known) > 0) {
            if (line ~ /^#/ || line == "") continue
            split(line, f, "|"); todo[f[1]] = f[2]
        }
        while ((getline line < named) > 0) names_constraint[line] = 1
    }
    function problem(n, why) {
        problems[sig[n]] = problems[sig[n]] "\n# " what[n] ": " why "\n#   " text[n]
    }
    {
        n = $2; state = $3; same = $4; msg = $5
        answered[n] = 1
        if (state == "00000") next
        if (state == "XX000") problem(n, "XX000 (" msg ")")
        else if (msg ~ /cache lookup failed/) problem(n, "cache lookup failed (" msg ")")
        else if (n in names_constraint) problem(n, "names an internal constraint or index (" state ": " msg ")")
        else if (same != "t") problem(n, "wrote although it failed (" state ": " msg ")")
        else if (!((sig[n] "|" state) in ok_state)) problem(n, "SQLSTATE " state " not listed for it (" msg ")")
        if (!((sig[n] "|" state) in got)) { got[sig[n] "|" state] = 1; states[sig[n]] = states[sig[n]] ", " state }
    }
    END {
        for (n = 1; n <= ncalls; n++) if (!(n in answered)) problem(n, "no answer (the server or psql died)")
        for (i = 1; i <= nsig; i++) {
            sg = order[i]
            if (!(sg in listed)) problems[sg] = problems[sg] "\n# not listed in docs/errors-and-settings.md"
            if (sg in problems) {
                if (sg in todo) printf "not ok %d - %s # TODO %s%s\n", i + 1, sg, todo[sg], problems[sg]
                else printf "not ok %d - %s%s\n", i + 1, sg, problems[sg]
            } else printf "ok %d - %s\n", i + 1, sg
            print sg "|" substr(states[sg], 3) > raised
        }
        # listed but not raised in this run: a note, not a failure (a code
        # may need a state this dataset does not have)
        for (key in ok_state) if (!(key in got) && key !~ /\|none$/) {
            split(key, u, "|"); printf "# note: %s lists %s, not raised in this run\n", u[1], u[2]
        }
    }' "$work/results" > "$work/tap"
cat "$work/tap"
[ "$(grep -c '^\(not \)\?ok ' "$work/tap")" -eq "$total" ] || { echo "# the results could not be read"; exit 1; }
# --table: print the section for docs/errors-and-settings.md from what the
# routines raised in this run (to review, never to paste blindly)
if [ "${1:-}" = --table ]; then
    echo "# | function | SQLSTATEs |"
    sort "$work/raised" | awk -F'|' '{
        n = split($2, c, ", ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (c[j] < c[i]) { t = c[i]; c[i] = c[j]; c[j] = t }
        s = n ? c[1] : "none"
        for (i = 2; i <= n; i++) s = s ", " c[i]
        printf "# | `%s` | %s |\n", $1, s
    }'
fi
failures=$(grep '^not ok' "$work/tap" | grep -vc '# TODO')
[ "$survived" = 1 ] && [ "$failures" -eq 0 ]

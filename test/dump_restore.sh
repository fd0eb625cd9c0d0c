#!/usr/bin/env bash
# pg_dump keeps the catalog and tenant rows (pg_extension_config_dump) and
# the identity sequences; the ISO 4217 seed rows are not dumped twice.
# Prints TAP; needs PGHOST/PGPORT/PGUSER of a server with the extension installed.
set -uo pipefail
src=subscription_dump_src
dst=subscription_dump_dst
dst_plain=subscription_dump_dst_plain
# restored by the database's owner, not a superuser (issue 15, item 5)
dst_owner=subscription_dump_dst_owner
dst_owner_plain=subscription_dump_dst_owner_plain
dst_owner_split=subscription_dump_dst_owner_split
owner=dump_owner
dumpfile=$(mktemp /tmp/subscription-dump.XXXXXX)
trap 'rm -f "$dumpfile"' EXIT
n=0
check() {  # check DESCRIPTION COMMAND...
    n=$((n + 1))
    local desc=$1; shift
    if "$@"; then echo "ok $n - $desc"; else echo "not ok $n - $desc"; fi
}
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

for db in $src $dst $dst_plain $dst_owner $dst_owner_plain $dst_owner_split; do
    q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
done
q -d $src >/dev/null <<'SQL'
CREATE EXTENSION subscription;
INSERT INTO subscription.currency (code, exponent) VALUES ('XTS', 3);
INSERT INTO subscription.product (code, name) VALUES ('central', 'LogMeIn Central');
INSERT INTO subscription.plan (code, product, name, rank) VALUES ('central_plus', 'central', 'Plus', 2);
INSERT INTO subscription.plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 25, 1299), ('central_plus', '1 year', 100, 3999);
INSERT INTO subscription.plan_limit (plan, feature, value, per_license) VALUES
    ('central_plus', 'hosts', 1, true), ('central_plus', 'sub_accounts', 1, false);
INSERT INTO subscription.addon (code, product, name) VALUES ('extra', 'central', 'Extra');
INSERT INTO subscription.addon_price (addon, cycle, amount) VALUES ('extra', '1 year', 10);
INSERT INTO subscription.plan_addon (plan, addon) VALUES ('central_plus', 'extra');
INSERT INTO subscription.coupon (code, percent_off, cycles) VALUES ('WELCOME', 10, 3);
INSERT INTO subscription.account (name) VALUES ('Acme');
SELECT subscription.subscribe(1, 'central_plus', '1 year', 100, '2026-01-15 10:00+00');
-- alice gets a license of the default subscription (R10): a license row,
-- a counter at 1 and history rows, none of which may double on restore
INSERT INTO subscription.member (account_id, external_id, role) VALUES (1, 'alice', 'owner');
INSERT INTO subscription.history (operation, account_id, details) VALUES ('note', 1, '{"x": 1}');
-- a sub-account stored before its parent: the self-referencing key still restores
INSERT INTO subscription.account (id, name) VALUES (100, 'Parent');
INSERT INTO subscription.account (id, name, parent_id) VALUES (101, 'Child', 100);
UPDATE subscription.account SET name = 'Parent, renamed' WHERE id = 100;
-- a coupon's discount line names its charge (ledger.charge_id, a reference
-- to the same table that a trigger checks): restored once, not doubled
SELECT subscription.subscribe(100, 'central_plus', '1 year', 25, '2026-01-15 10:00+00', 'always', 'WELCOME');
-- an application table under a plan limit: registration, counter and trigger survive
CREATE TABLE public.device (id serial PRIMARY KEY, account_id bigint NOT NULL);
INSERT INTO public.device (account_id) SELECT 1 FROM generate_series(1, 30);
SELECT subscription.enforce_limit('public.device', 'hosts');
-- sub-accounts limited on the extension's own table (K7): Parent's plan allows one, it has one
SELECT subscription.enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'drop_newest', 'created_at');
SQL

# one line per table of the extension and of the application: its name and
# an md5 of its rows in key order
fingerprint() {
    q -d "$1" <<'SQL'
SELECT c.oid::regclass || ' ' || (xpath('/row/c/text()',
         query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, %L ORDER BY t::text), %L)) AS c FROM %s AS t',
                             E'\n', '', c.oid::regclass), false, true, '')))[1]::text
  FROM pg_class AS c
 WHERE c.relnamespace IN ('subscription'::regnamespace, 'public'::regnamespace) AND c.relkind = 'r'
 ORDER BY c.oid::regclass::text;
SQL
}

dump_out=$(pg_dump -Fc -d $src -f "$dumpfile" 2>&1)
[ -n "$dump_out" ] && echo "$dump_out" | sed 's/^/# /'
check "pg_dump of a database with the extension succeeds" test -s "$dumpfile"
# no table references itself by a foreign key (account.parent_id and
# ledger.charge_id are checked by a trigger): no dependency loop to report
check "pg_dump reports no circular foreign keys" test -z "$dump_out"
# S10: a back-office role, not a superuser, dumps too (it reads every table
# and sequence of the extension; grant_backoffice gives it that)
q -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dump_backoffice') THEN
                   CREATE ROLE dump_backoffice LOGIN; END IF; END \$\$" >/dev/null
q -d $src -c "SELECT subscription.grant_backoffice('dump_backoffice')" >/dev/null
q -d $src -c "GRANT SELECT ON public.device, public.device_id_seq TO dump_backoffice" >/dev/null
backoffice_dump_ok() {
    pg_dump -U dump_backoffice -Fc -d $src -f "$dumpfile.backoffice" 2>&1 | grep -i error | sed 's/^/# /'
    [ "${PIPESTATUS[0]}" -eq 0 ] && test -s "$dumpfile.backoffice"
}
check "a back-office role (not a superuser) can pg_dump the database" backoffice_dump_ok
rm -f "$dumpfile.backoffice"
q -d $src -c "SELECT subscription.revoke_backoffice('dump_backoffice')" \
      -c "REVOKE SELECT ON public.device, public.device_id_seq FROM dump_backoffice" >/dev/null
# The dump holds what the extension's triggers derived (history, seat
# counters, default licenses): restore with triggers off, as for replication.
restore_out=$(PGOPTIONS='-c session_replication_role=replica' pg_restore -d $dst --exit-on-error "$dumpfile" 2>&1)
check "pg_restore succeeds" test -z "$restore_out"
[ -n "$restore_out" ] && echo "$restore_out" | sed 's/^/# /'

before=$(fingerprint $src)
after=$(fingerprint $dst)
check "every table has the same rows after restore" \
    test -n "$before" -a "$before" = "$after" -a "$(echo "$before" | wc -l)" -ge 18
[ "$before" = "$after" ] || diff <(echo "$before") <(echo "$after") | sed 's/^/# /'

# the same with a plain-format dump, restored by psql (docs/errors-and-settings.md#backups)
plain_out=$(pg_dump -Fp -d $src -f "$dumpfile.sql" 2>&1)
check "pg_dump in plain format succeeds, without a warning" test -z "$plain_out" -a -s "$dumpfile.sql"
plain_restore_out=$(PGOPTIONS='-c session_replication_role=replica' psql -X -q -v ON_ERROR_STOP=1 -d $dst_plain -f "$dumpfile.sql" 2>&1 >/dev/null)
check "psql restores the plain-format dump" test -z "$plain_restore_out"
[ -n "$plain_restore_out" ] && echo "$plain_restore_out" | sed 's/^/# /'
after_plain=$(fingerprint $dst_plain)
check "every table has the same rows after the plain-format restore" test -n "$before" -a "$before" = "$after_plain"
[ "$before" = "$after_plain" ] || diff <(echo "$before") <(echo "$after_plain") | sed 's/^/# /'
rm -f "$dumpfile.sql"

# The database's owner restores, without superuser (docs/design.md#restores).
# A superuser creates the extension in the empty database and gives the owner
# grant_restore(); the owner's restore runs the extension's triggers, which
# skip the rows it copies in (their ids not issued yet) and what the dump
# holds of them; then the grant is taken back and verify() finds nothing.
q -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$owner') THEN
                   CREATE ROLE $owner LOGIN; END IF; END \$\$" >/dev/null
for db in $dst_owner $dst_owner_plain $dst_owner_split; do
    q -d postgres -c "ALTER DATABASE $db OWNER TO $owner" >/dev/null
    q -d $db -c "CREATE EXTENSION subscription" -c "SELECT subscription.grant_restore('$owner')" >/dev/null
done
# what CREATE EXTENSION did already: the schema, the extension's comment
pg_restore -l "$dumpfile" | grep -v -e ' SCHEMA - subscription ' -e ' COMMENT - EXTENSION subscription' >"$dumpfile.list"
owner_out=$(pg_restore -U $owner --no-owner --exit-on-error -L "$dumpfile.list" -d $dst_owner "$dumpfile" 2>&1)
check "the database's owner, not a superuser, runs pg_restore without an error" test -z "$owner_out"
[ -n "$owner_out" ] && echo "$owner_out" | sed 's/^/# /'
# in two steps, as a data-only restore does: the guards of the application
# table exist before its rows come, and the counters after them
split_out=$( { pg_restore -U $owner --no-owner --exit-on-error -L "$dumpfile.list" --schema-only -d $dst_owner_split "$dumpfile" &&
               pg_restore -U $owner --no-owner --exit-on-error -L "$dumpfile.list" --data-only -d $dst_owner_split "$dumpfile"; } 2>&1)
check "the owner restores the schema, then the data alone (--data-only), without an error" test -z "$split_out"
[ -n "$split_out" ] && echo "$split_out" | sed 's/^/# /'
pg_dump -Fp --no-owner -d $src -f "$dumpfile.sql" 2>&1 | sed 's/^/# /'
owner_plain_out=$(psql -X -q -U $owner -d $dst_owner_plain -f "$dumpfile.sql" 2>&1 >/dev/null)
check "psql of a plain-format dump by the owner fails only on what CREATE EXTENSION did" \
    test "$(echo "$owner_plain_out" | grep -c ERROR)" = 2 \
         -a "$(echo "$owner_plain_out" | grep -c -e 'ERROR:  schema "subscription" already exists' \
                                                -e 'ERROR:  must be owner of extension subscription')" = 2
echo "$owner_plain_out" | grep ERROR | grep -v -e 'schema "subscription" already exists' -e 'must be owner of extension' | sed 's/^/# /'
rm -f "$dumpfile.sql" "$dumpfile.list"

for db in $dst_owner $dst_owner_plain $dst_owner_split; do
    q -d $db -c "SELECT subscription.revoke_restore('$owner')" >/dev/null
done
for db in $dst_owner $dst_owner_plain $dst_owner_split; do
    after_owner=$(fingerprint $db)
    check "every row of every table is restored once by the owner ($db)" test -n "$before" -a "$before" = "$after_owner"
    [ "$before" = "$after_owner" ] || diff <(echo "$before") <(echo "$after_owner") | sed 's/^/# /'
    problems=$(q -d $db -c "SELECT * FROM subscription.verify()")
    check "verify() finds every counter equal to its rows after the owner's restore ($db)" test -z "$problems"
    [ -n "$problems" ] && echo "$problems" | sed 's/^/# /'
done
check "the owner's restore keeps the guards: 71 more hosts are refused" \
    test "$(q -U $owner -d $dst_owner -c "INSERT INTO public.device (account_id) SELECT 1 FROM generate_series(1, 71)" 2>&1 | grep -c 'would exceed its hosts limit')" = 1

# attacks while a restore role is given: a tenant (the application's role)
# writing rows with ids that no sequence issued gets no restore treatment
q -d $dst_owner -c "SELECT subscription.grant_restore('$owner')" >/dev/null
q -d postgres -c "DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'dump_tenant') THEN
                   CREATE ROLE dump_tenant LOGIN; END IF; END \$\$" >/dev/null
q -d $dst_owner -c "SELECT subscription.grant_application('dump_tenant')" >/dev/null
tenant() { psql -X -qAt -U dump_tenant -d $dst_owner "$@" 2>&1; }
tenant_out=$(tenant -c "INSERT INTO subscription.account (id, name, parent_id) VALUES (900001, 'Sneaky', 100)")
check "K7: a tenant's sub-account with an id no sequence issued is refused over the limit" \
    test "$(echo "$tenant_out" | grep -c 'would exceed its sub_accounts limit')" = 1
[ "$(echo "$tenant_out" | grep -c 'would exceed')" = 1 ] || echo "$tenant_out" | sed 's/^/# /'
tenant -c "INSERT INTO subscription.account (id, name) VALUES (900002, 'Sneaky too')" | sed 's/^/# /'
check "R8: a tenant's account with an id no sequence issued writes its history" \
    test "$(q -d $dst_owner -c "SELECT count(*) FROM subscription.history WHERE account_id = 900002 AND operation = 'account_insert'")" = 1
# the restore role itself, once the restore has set the sequences: its new
# rows are not copies
q -U $owner -d $dst_owner -c "INSERT INTO subscription.member (account_id, external_id, role) VALUES (1, 'bob', 'admin')" >/dev/null
check "R8, R10: a member the restore role adds after the restore gets its history and its default license" \
    test "$(q -d $dst_owner -c "SELECT count(*) FROM subscription.history WHERE operation = 'member_insert' AND details ->> 'external_id' = 'bob'")" = 1 \
         -a "$(q -d $dst_owner -c "SELECT used FROM subscription.license_counter WHERE subscription_id = 1")" = 2
problems=$(q -d $dst_owner -c "SELECT * FROM subscription.verify()")
check "verify() finds nothing after the attacks" test -z "$problems"
[ -n "$problems" ] && echo "$problems" | sed 's/^/# /'
q -d $dst_owner -c "SELECT subscription.revoke_restore('$owner')" -c "SELECT subscription.revoke_application('dump_tenant')" >/dev/null

check "the coupon's discount line and its charge came back once" \
    test "$(q -d $dst -c "SELECT count(*) FILTER (WHERE kind = 'discount') || ',' || count(*) FILTER (WHERE kind = 'discount' AND charge_id IN (SELECT id FROM subscription.ledger WHERE kind = 'charge')) FROM subscription.ledger")" = "1,1"

check "the catalog rows came back" \
    test "$(q -d $dst -c "SELECT count(*) FROM subscription.plan_price WHERE plan = 'central_plus'")" = 2
check "the tenant rows came back" \
    test "$(q -d $dst -c "SELECT count(*) FROM subscription.ledger WHERE account_id = 1 AND kind = 'charge'")" = 1
check "seeded currencies are not duplicated and the user's one is kept" \
    test "$(q -d $dst -c "SELECT count(*) FILTER (WHERE code = 'EUR') || ',' || count(*) FILTER (WHERE code = 'XTS') FROM subscription.currency")" = "1,1"
check "identity sequences continue after restore" \
    test "$(q -d $dst -c "INSERT INTO subscription.account (name) VALUES ('Beta') RETURNING id")" = 2
check "seat counters are restored, not counted twice" \
    test "$(q -d $dst -c "SELECT used FROM subscription.license_counter WHERE subscription_id = 1")" = 1
check "a limited table keeps its registration, usage and guard" \
    test "$(q -d $dst -c "SELECT feature || ':' || subscription.usage(1, 'hosts') FROM subscription.limited_table WHERE feature = 'hosts'")" = "hosts:30"
check "the restored guard still enforces the limit (100 hosts)" \
    test "$(q -d $dst -c "INSERT INTO public.device (account_id) SELECT 1 FROM generate_series(1, 71)" 2>&1 | grep -c 'would exceed its hosts limit')" = 1
check "sub-accounts keep their parent" \
    test "$(q -d $dst -c "SELECT p.name FROM subscription.account c JOIN subscription.account p ON p.id = c.parent_id WHERE c.id = 101")" = "Parent, renamed"
check "the sub-account limit is kept: its guard came back with the extension" \
    test "$(q -d $dst -c "INSERT INTO subscription.account (name, parent_id) VALUES ('Second child', 100)" 2>&1 | grep -c 'would exceed its sub_accounts limit')" = 1
check "a restored subscription renews its ids too" \
    test "$(q -d $dst -c "SELECT subscription.subscribe(2, 'central_plus', '1 year', 25, '2026-02-01')")" = 3
check "R11 holds after restore: alice's service seat came back" \
    test "$(q -d $dst -c "SELECT subscription.license_consume(subscription.subscribe(1, 'central_plus', '1 year', 25, '2026-02-01'), 1)" 2>&1 | grep -c 'already holds a service license')" = 1
echo "1..$n"
for db in $src $dst $dst_plain $dst_owner $dst_owner_plain $dst_owner_split; do q -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null; done

#!/usr/bin/env bash
# The ledger's keys (issue 18): the backend CPU of renewing 10k due
# subscriptions (renew_due and its commit, with the invoices' openings) with
# the ledger's keys as in 1.1 (its account held by its key to
# its invoice) against the keys before (a key to the account and one to
# the invoice alone), in one run.  One populated database
# (renewals_lib.sh's populate: monthly subscriptions, an add-on batch each,
# a coupon on one in ten) is the template of every round's copy; the old
# keys are put back in the copy of an "old" round, both copies are
# VACUUM ANALYZEd, and the rounds alternate the order old/new so that the
# machine's load falls on both alike.  CPU is the backend's own, read from
# /proc/self/schedstat (run time, ns) before, between and after, so the
# load changes it little.  Every round prints the md5 of history, ledger,
# invoices and events (clock fixed; transaction ids left out): old and new
# must write the same rows.
#   PGHOST=... PGPORT=... bash test/bench/ab_ledger_keys.sh
# AB_ROUNDS (3) rounds of each; AB_SUBSCRIPTIONS (10000).  Other variants:
# AB_OLD_SQL and AB_NEW_SQL name files of SQL run in the copies of the "old"
# and "new" rounds instead (e.g. a function's former body); AB_REUSE=1 keeps
# the populated database of an earlier run with AB_KEEP=1.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/renewals_lib.sh"
rounds=${AB_ROUNDS:-3} n=${AB_SUBSCRIPTIONS:-10000}
base=subscription_ab_keys
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }

old_keys() {
    cat <<'SQL'
ALTER TABLE subscription.ledger
    DROP CONSTRAINT ledger_invoice_id_fkey,
    ADD CONSTRAINT ledger_invoice_id_fkey FOREIGN KEY (tenant_id, invoice_id)
        REFERENCES subscription.invoice_record (tenant_id, id),
    ADD CONSTRAINT ledger_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id);
ALTER TABLE subscription.invoice_record DROP CONSTRAINT invoice_record_line_key;
SQL
}

# one round: DB's copy with VARIANT's keys renews; prints
# "VARIANT renew_ms commit_ms md5"
round() {
    local variant=$1 db=${base}_round
    q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" \
      -c "CREATE DATABASE $db TEMPLATE $base"
    if [ "$variant" = old ]; then
        if [ -n "${AB_OLD_SQL:-}" ]; then q -d "$db" -f "$AB_OLD_SQL" >/dev/null; else old_keys | q -d "$db" >/dev/null; fi
    elif [ -n "${AB_NEW_SQL:-}" ]; then
        q -d "$db" -f "$AB_NEW_SQL" >/dev/null
    fi
    q -d "$db" -c "VACUUM ANALYZE" >/dev/null
    q -d "$db" <<SQL | tr '\n' ' '
SET client_min_messages = warning;
SET subscription.clock = '2026-02-01 00:00:00+00';
SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS t0 \gset
BEGIN;
SELECT subscription.renew_due('2026-02-01') \g /dev/null
SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS t1 \gset
COMMIT;
SELECT split_part(pg_read_file('/proc/self/schedstat'), ' ', 1)::bigint AS t2 \gset
SELECT round((:t1 - :t0) / 1e6), round((:t2 - :t1) / 1e6);
$(rows_md5_sql)
SQL
    echo
}

if [ -z "${AB_REUSE:-}" ]; then
    populate "$base" "$n"
fi
echo "variant renew_ms commit_ms md5 (load: $(cut -d' ' -f1-3 /proc/loadavg))"
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="old new"; else order="new old"; fi
    for v in $order; do
        echo "$v $(round "$v")"
    done
done
echo "(load: $(cut -d' ' -f1-3 /proc/loadavg))"
q -d postgres -c "DROP DATABASE IF EXISTS ${base}_round"
[ -n "${AB_KEEP:-}" ] || q -d postgres -c "DROP DATABASE IF EXISTS $base"

#!/usr/bin/env bash
# A failed payment and the payment that ends its past due, across builds
# (issue 20): the backend's own CPU (user and system, from /proc/self/stat)
# per call of record_payment_failure (the subscription past due: an UPDATE
# with the subscription table's statement triggers) and of record_payment
# of the same invoice (paid: end_past_due, the same UPDATE back), one
# invoice per subscription, in a transaction rolled back, so that every
# round measures the same rows (a reference of its own each round; the
# rows rolled back vacuumed before each measure).  One database per build
# (ACCOUNTS monthly subscriptions renewed for half a year without a
# payment), the rounds alternating the builds (each installed in turn
# before its measure) so that the machine's load falls on all of them alike.
#   bash test/bench/ab_dunning.sh DIR [DIR ...]
# Each DIR is a source tree of the extension (a checkout of another
# revision).  It replaces the installed extension (and reinstalls the work
# tree's at the end): run it in a Debian root (docs/testing.md).
# AB_ROUNDS (4) rounds, ACCOUNTS (300) subscriptions.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 DIR [DIR ...]" >&2; exit 2; }
ensure_packages
start_cluster /tmp/subscription-ab-dunning
trap 'stop_cluster_in "${SUBSCRIPTION_OWN_CLUSTER:-/nonexistent}"; make -C "$ROOT" -s install >/dev/null' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
accounts=${ACCOUNTS:-300}
k=0
for dir in "$@"; do
    k=$((k + 1))
    make -C "$dir" -s >/dev/null
    make -C "$dir" -s install >/dev/null
    q -d postgres -c 'SET client_min_messages = warning' -c "DROP DATABASE IF EXISTS ab_dunning_$k" -c "CREATE DATABASE ab_dunning_$k"
    {
        cat <<SQL
SET TimeZone = 'UTC';
SET client_min_messages = warning;
CREATE EXTENSION subscription;
BEGIN;
SET LOCAL subscription.clock = '2040-01-29 00:00+00';
INSERT INTO subscription.product (code, name) VALUES ('svc', 'Service');
INSERT INTO subscription.plan (code, product, name) VALUES ('basic', 'svc', 'Basic');
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES ('basic', '1 month', 20, true);
INSERT INTO subscription.account (id, name) SELECT g, 'account ' || g FROM generate_series(1, $accounts) AS g;
SELECT count(subscription.subscribe(g, 'basic', '1 month', 1 + g % 5, timestamptz '2040-01-01' + (g % 28) * interval '1 day'))
  FROM generate_series(1, $accounts) AS g;
COMMIT;
SQL
        for w in $(seq 1 26); do
            echo "BEGIN; SET LOCAL subscription.clock = '$(date -u -d "2040-02-05 + $((w * 7)) days" +%F) 00:00+00'; SELECT subscription.renew_due(); COMMIT;"
        done
        cat <<'SQL'
CREATE FUNCTION public.ticks() RETURNS bigint LANGUAGE sql
AS $$ SELECT split_part(s, ' ', 14)::bigint + split_part(s, ' ', 15)::bigint FROM pg_read_file('/proc/self/stat') AS s $$;
-- the latest open invoice of each subscription: failed, then paid
CREATE FUNCTION public.measure(OUT failures integer, OUT fail_ticks bigint, OUT pay_ticks bigint)
LANGUAGE plpgsql AS $$
DECLARE
    invoices bigint[];
    dues numeric[];
    t bigint;
BEGIN
    SELECT array_agg(b.invoice_id ORDER BY b.invoice_id), array_agg(b.due ORDER BY b.invoice_id) INTO invoices, dues
      FROM (SELECT DISTINCT ON (o.account_id) o.invoice_id, o.due FROM subscription.open_balance AS o
             WHERE o.due > 0 ORDER BY o.account_id, o.invoice_id DESC) AS b;
    failures := cardinality(invoices);
    t := public.ticks();
    FOR k IN 1 .. failures LOOP
        PERFORM subscription.record_payment_failure(invoices[k], 'card declined');
    END LOOP;
    fail_ticks := public.ticks() - t;
    t := public.ticks();
    FOR k IN 1 .. failures LOOP
        PERFORM subscription.record_payment(invoices[k], dues[k], 'ab ' || invoices[k] || ' ' || txid_current());
    END LOOP;
    pay_ticks := public.ticks() - t;
END
$$;
VACUUM ANALYZE;
SQL
    } | q -d "ab_dunning_$k" >/dev/null
done
hz=$(getconf CLK_TCK)
for round in $(seq 1 "${AB_ROUNDS:-4}"); do
    k=0
    for dir in "$@"; do
        k=$((k + 1))
        make -C "$dir" -s install >/dev/null
        # the rolled-back rows of the rounds before, away (another backend)
        q -d "ab_dunning_$k" -c 'VACUUM'
        IFS='|' read -r n fail pay < <(q -d "ab_dunning_$k" -c "SET TimeZone = 'UTC'" \
            -c "BEGIN" -c "SET LOCAL subscription.clock = '2040-08-10 00:00+00'" -c "SELECT * FROM public.measure()" -c "ROLLBACK")
        echo "round $round, $dir: $n failures $(awk -v t="$fail" -v n="$n" -v h="$hz" 'BEGIN { printf "%.0f", t * 1e6 / h / n }') us CPU each, their payments $(awk -v t="$pay" -v n="$n" -v h="$hz" 'BEGIN { printf "%.0f", t * 1e6 / h / n }') us each, load $(cut -d' ' -f1-3 /proc/loadavg)"
    done
done

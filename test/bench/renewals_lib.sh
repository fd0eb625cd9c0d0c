# What the renewal cases share (test/bench/cases/renew_*.sh).

# populate DB N [PER_ACCOUNT]: a database of its own with N due monthly
# subscriptions (1 to 5 licenses), each with an add-on batch, PER_ACCOUNT
# (default 1) to an account, a coupon (10% off) on one in ten.  The
# subscriptions and their batches are written in chunks of
# POPULATE_CHUNK (1000), each committed by a session of its own after an
# ANALYZE: in one transaction on fresh tables, the extension's
# statements keep the plans made while the tables were empty (PL/pgSQL's
# cached generic plans; no ANALYZE sees uncommitted rows), sequential
# scans of invoice_record and subscription that grow with every row, and
# the populate grew with the square of N (docs/benchmarks.md, issue 18)
populate() {
    local db=$1 n=$2 per=${3:-1} chunk=${POPULATE_CHUNK:-1000} from
    psql -X -qAt -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
CREATE EXTENSION subscription;
SET search_path = subscription;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO addon (code, product, name) VALUES ('zd_collab', 'desk', 'Collaboration');
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'zd_collab');
INSERT INTO coupon (code, percent_off, currency) VALUES ('TEN', 10, 'EUR');
INSERT INTO account (id, name) SELECT g, 'a' || g FROM generate_series(1, $n / $per) AS g;
SQL
    for (( from = 1; from <= n; from += chunk )); do
        psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
ANALYZE;
SET search_path = subscription;
SELECT count(subscribe(1 + (g - 1) / $per, 'zd_pro', '1 month', 1 + g % 5, '2026-01-01', 'always', CASE WHEN g % 10 = 0 THEN 'TEN' END))
  FROM generate_series($from, least($n, $from + $chunk - 1)) AS g;
SQL
    done
    for (( from = 1; from <= n; from += chunk )); do
        psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" >/dev/null <<SQL
ANALYZE;
SET search_path = subscription;
SELECT count(purchase_addon(id, 'zd_collab', 1, '2026-01-10')) FROM (SELECT id FROM subscription ORDER BY id OFFSET $from - 1 LIMIT $chunk) AS s;
SQL
    done
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$db" -c "VACUUM ANALYZE" >/dev/null
}

# rows_md5_sql: the md5 of history, ledger, invoices and events
# (transaction ids left out), which two variants of a renewal must both
# print (the A/B tools)
rows_md5_sql() {
    cat <<'SQL'
SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
    SELECT 'h' || (to_jsonb(h) - 'xact')::text AS x FROM subscription.history AS h
    UNION ALL SELECT 'l' || (to_jsonb(l) - 'xact')::text FROM subscription.ledger AS l
    UNION ALL SELECT 'i' || (to_jsonb(i) - 'xact')::text FROM subscription.invoice_record AS i
    UNION ALL SELECT 'e' || (to_jsonb(e) - 'next_xid')::text FROM subscription.event AS e) AS x;
SQL
}

# floor_sql: the set-based floor of the writes renew_due makes for the
# subscriptions due on 2026-02-01 (issue 18): one UPDATE moving every due
# period as renew_period does, one INSERT of every plan and add-on charge
# (the coupons' discounts and the credit checks by the ledger's trigger),
# with every trigger, key and check of the extension firing; no choosing,
# no locking of tenants, no pricing.  The one text renew_due.sh and
# renew_floor.sh time.
floor_sql() {
    cat <<'SQL'
UPDATE subscription.subscription AS x
   SET period_number = x.period_number + 1, period = tstzrange(upper(x.period), upper(x.period) + x.cycle),
       paid_quantity = x.quantity, pending_cycle = NULL, renewal = x.renewal
 WHERE x.status = 'active' AND upper(x.period) <= '2026-02-01';
INSERT INTO subscription.ledger
       (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
SELECT x.tenant_id, x.account_id, x.id, b.id, 'charge', CASE WHEN b.id IS NULL THEN 55.00 * x.quantity ELSE 10.00 END,
       'EUR', x.period, CASE WHEN b.id IS NULL THEN 'plan' ELSE 'addon' END, x.plan, 'renewal'
  FROM subscription.subscription AS x
  CROSS JOIN LATERAL (SELECT NULL::bigint AS id
                      UNION ALL
                      SELECT b.id FROM subscription.addon_batch AS b
                       WHERE b.tenant_id = x.tenant_id AND b.subscription_id = x.id) AS b
 WHERE lower(x.period) = '2026-02-01';
SQL
}

# sample_peak DB APP: until the caller's background jobs end, the peak
# RssAnon (kB: the backend's private memory) of the backend whose
# application_name is APP, sampled every 20 ms from /proc, in PEAK; call it
# in the shell that started the jobs
sample_peak() {
    local db=$1 app=$2 pid rss
    PEAK=0
    while [ "$(jobs -r | wc -l)" -gt 0 ]; do
        pid=$(psql -X -qAt -d "$db" -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$app'" || true)
        if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
            rss=$(awk '/^RssAnon:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
            [ "${rss:-0}" -gt "$PEAK" ] && PEAK=$rss
        fi
        sleep 0.02
    done
}

# claim/ack throughput (issue 20, item 7): 4 consumers, each a pgbench
# client claiming 1,000 events at a time and acknowledging them, over
# 1,000,000 committed events.  Target: at least 20,000 events per second in
# all on a 2-core machine.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"
seconds=${BENCH_SECONDS:-10}

q >/dev/null <<'SQL'
-- events as the writer leaves them, committed long ago (next_xid 1)
INSERT INTO subscription.event (type, account_id, subscription_id, payload, at, next_xid, tenant_id)
SELECT 'license.assigned', 1 + g % 1000, 1 + g % 5000, jsonb_build_object('version', 1, 'members', jsonb_build_array(g)),
       now(), '1'::xid8, 1 + g % 1000
  FROM generate_series(1, 1000000) AS g;
VACUUM ANALYZE subscription.event;
CHECKPOINT;
SQL

cat > "$dir/consume.sql" <<'EOF2'
SELECT coalesce(max(id), 0) AS last FROM subscription.claim_events('bench' || :client_id, 1000) \gset
SELECT subscription.ack_events('bench' || :client_id, :last);
EOF2
before=$(q -c "SELECT coalesce(sum(position), 0) FROM subscription.event_consumer")
pgbench -n -c 4 -j 4 -T "$seconds" -f "$dir/consume.sql" "$BENCH_DB" | grep -E '^(tps|number of transactions actually)'
after=$(q -c "SELECT coalesce(sum(position), 0) FROM subscription.event_consumer")
awk -v n="$((after - before))" -v s="$seconds" 'BEGIN { printf "claim/ack, 4 consumers: %d events in %d s = %.0f events/s (target >= 20000)\n", n, s, n / s }'
q -c "SELECT 'each consumer at: ' || string_agg(consumer || '=' || position, ', ' ORDER BY consumer) FROM subscription.event_consumer"
q -c "TRUNCATE subscription.event, subscription.event_consumer" >/dev/null

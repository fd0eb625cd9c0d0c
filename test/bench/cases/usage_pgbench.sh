# Issue 21, item 7: the limit guard with a meter (time_weighted) on,
# single-row inserts, 4 pgbench clients on 4 accounts, against the same
# table without the guard (at least 0.7 of its throughput, as without a
# meter); and record_usage() with a fresh key per call, 4 clients, in
# calls per second (at least 5,000 on a durable cluster).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"

q >/dev/null <<'SQL'
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('usepg', 'Usage pgbench');
INSERT INTO plan (code, product, name) VALUES ('usepg_big', 'usepg', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('usepg_big', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('usepg_big', 'metered_devices', NULL), ('usepg_big', 'api_calls', NULL);
INSERT INTO account (id, name) SELECT 500 + c, 'client ' || c FROM generate_series(0, 3) AS c;
SELECT subscribe(500 + c, 'usepg_big', '1 month', 1, '2026-01-01') FROM generate_series(0, 3) AS c;
CREATE TABLE public.mdevice_enforced (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.mdevice_bare (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
SELECT enforce_limit('public.mdevice_enforced', 'metered_devices');
SELECT meter('public.mdevice_enforced', 'metered_devices', 'time_weighted');
SQL

echo "INSERT INTO public.mdevice_enforced (account_id, name) VALUES (500 + :client_id, 'd');" > "$dir/enforced.sql"
echo "INSERT INTO public.mdevice_bare (account_id, name) VALUES (500 + :client_id, 'd');" > "$dir/bare.sql"
compare_tps "metered single-row insert, 4 clients" "$dir/enforced.sql" "$dir/bare.sql" ">= 0.7"

printf '%s\n' '\set k random(1, 1000000000000)' \
    "SELECT subscription.record_usage(500 + :client_id, 'api_calls', 1, 'call-' || :k);" > "$dir/record.sql"
calls=$(pgbench -n -c 4 -j 4 -T "${BENCH_SECONDS:-10}" -f "$dir/record.sql" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p')
printf '%-52s %12.0f calls/s %s\n' "record_usage, 4 clients, a fresh key each" "$calls" ">= 5000"
q -c "SELECT 'recorded equals counted: ' || bool_and(u.used = (SELECT count(*) FROM subscription.usage_record r WHERE r.account_id = u.account_id AND r.feature = 'api_calls')) FROM subscription.usage_counter u WHERE u.feature = 'api_calls'"

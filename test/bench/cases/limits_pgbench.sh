# Single-row inserts into an enforced application table, 4 pgbench clients
# on 4 accounts, against the same table without the guard (issue 4: at
# least 0.7 of its throughput).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"

q >/dev/null <<'SQL'
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('limpg', 'Limits pgbench');
INSERT INTO plan (code, product, name) VALUES ('limpg_big', 'limpg', 'Big');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('limpg_big', '1 month', 1);
INSERT INTO plan_limit (plan, feature, value) VALUES ('limpg_big', 'devices', 100000000);
INSERT INTO account (id, name) SELECT 400 + c, 'client ' || c FROM generate_series(0, 3) AS c;
SELECT subscribe(400 + c, 'limpg_big', '1 month', 1, '2026-01-01') FROM generate_series(0, 3) AS c;
CREATE TABLE public.device_enforced (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.device_bare (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
SELECT enforce_limit('public.device_enforced', 'devices');
SQL

echo "INSERT INTO public.device_enforced (account_id, name) VALUES (400 + :client_id, 'd');" > "$dir/enforced.sql"
echo "INSERT INTO public.device_bare (account_id, name) VALUES (400 + :client_id, 'd');" > "$dir/bare.sql"
compare_tps "enforced single-row insert, 4 clients" "$dir/enforced.sql" "$dir/bare.sql" ">= 0.7"
q -c "SELECT 'usage equals rows: ' || bool_and(u.used = (SELECT count(*) FROM public.device_enforced d WHERE d.account_id = u.account_id)) FROM subscription.usage_counter u WHERE u.feature = 'devices'"

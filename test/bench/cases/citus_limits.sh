# Citus (issue 17, item 7): single-row inserts into a distributed
# application table limited with enforce_limit, 4 pgbench clients on 4
# accounts spread over both workers, against the same inserts into the same
# table distributed without the guard.  Run by test/citus.sh on its
# coordinator with SUBSCRIPTION_CITUS_BENCH=1 (test/bench/run.sh leaves the
# citus_ cases out: they need the cluster).  Two workers on two cores show
# no speedup; the ratio is the guard's cost on the shards.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"

q >/dev/null <<'SQL'
SET citus.enable_unsafe_triggers = on;
SET client_min_messages = warning;
INSERT INTO subscription.product (code, name) VALUES ('citus_bench', 'Citus bench');
INSERT INTO subscription.plan (code, product, name) VALUES ('citus_bench', 'citus_bench', 'Bench');
INSERT INTO subscription.plan_limit (plan, feature, value) VALUES ('citus_bench', 'bench_rooms', 1000000000);
CREATE TABLE public.bench_guarded (tenant_id bigint NOT NULL, account_id bigint NOT NULL, id bigserial,
                                   name text, PRIMARY KEY (tenant_id, id));
CREATE TABLE public.bench_bare (tenant_id bigint NOT NULL, account_id bigint NOT NULL, id bigserial,
                                name text, PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('public.bench_guarded', 'tenant_id', colocate_with => 'subscription.account');
SELECT create_distributed_table('public.bench_bare', 'tenant_id', colocate_with => 'subscription.account');
SELECT subscription.enforce_limit('public.bench_guarded', 'bench_rooms');
SQL
# four accounts, two on each worker when the cluster has them
accounts=$(q -c "SELECT string_agg(id::text, ' ' ORDER BY id) FROM (SELECT id FROM subscription.account
                   WHERE parent_id IS NULL ORDER BY id LIMIT 4) AS a")
set -- $accounts
[ $# -eq 4 ] || { echo "citus_limits: needs 4 accounts, found $#"; exit 1; }
# the limits come from subscriptions, which Citus cannot make yet (docs/citus.md):
# each account's counter gets a limit no run reaches
for a in "$@"; do
    q -c "INSERT INTO subscription.usage_counter (tenant_id, account_id, feature, used, limit_value)
          VALUES ($a, $a, 'bench_rooms', 0, 1000000000)" >/dev/null
done
cat > "$dir/guarded.sql" <<SQL
\\set a (:client_id % 4)
\\set acct (CASE WHEN :a = 0 THEN $1 WHEN :a = 1 THEN $2 WHEN :a = 2 THEN $3 ELSE $4 END)
INSERT INTO public.bench_guarded (tenant_id, account_id, name) VALUES (:acct, :acct, 'r');
SQL
sed 's/bench_guarded/bench_bare/' "$dir/guarded.sql" > "$dir/bare.sql"
compare_tps "Citus: limited insert into a distributed table, 4 clients" "$dir/guarded.sql" "$dir/bare.sql" "report"
q -c "SELECT 'usage equals rows: ' || bool_and(u.used = (SELECT count(*) FROM public.bench_guarded AS g
                                                         WHERE g.tenant_id = u.tenant_id AND g.account_id = u.account_id))
        FROM subscription.usage_counter AS u WHERE u.feature = 'bench_rooms'"
q -c "DROP TABLE public.bench_guarded, public.bench_bare" >/dev/null

# Citus (issue 17, item 7): single-row license_consume(tenant_id, ...),
# 4 pgbench clients on 4 subscriptions of 4 accounts spread over both
# workers, each call delegated to the tenant's worker (a distributed
# function, one hop), against a bare single-row INSERT into a distributed
# table of the same columns and key, colocated with account, without
# triggers.  Each transaction of both sides first takes its member id from
# a sequence on the coordinator (a distributed call is delegated only with
# constant arguments).  Run by test/citus.sh on its coordinator with
# SUBSCRIPTION_CITUS_BENCH=1; two workers on two cores show no speedup.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"

members=${BENCH_CITUS_MEMBERS:-15000}
q >/dev/null <<SQL
SET client_min_messages = warning;
INSERT INTO subscription.product (code, name) VALUES ('citus_seats', 'Citus seats');
INSERT INTO subscription.plan (code, product, name, kind) VALUES ('citus_seats', 'citus_seats', 'Service', 'service');
INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES ('citus_seats', '1 month', 1, true);
CREATE TABLE public.bench_bare_license (tenant_id bigint NOT NULL, subscription_id bigint NOT NULL,
                                        member_id bigint NOT NULL, assigned_at timestamptz NOT NULL DEFAULT now(),
                                        PRIMARY KEY (tenant_id, subscription_id, member_id));
SELECT create_distributed_table('public.bench_bare_license', 'tenant_id', colocate_with => 'subscription.account');
SQL
# four accounts of their own, two on each worker
accounts=""
for w in 1 2; do
    found=0
    while [ "$found" -lt 2 ]; do
        a=$(q -c "SELECT subscription.create_account('license bench')")
        if [ "$(q -c "SELECT nodeport FROM pg_dist_shard_placement
                      WHERE shardid = get_shard_id_for_distribution_column('subscription.account', $a)")" \
             = "$(q -c "SELECT nodeport FROM pg_dist_node WHERE groupid > 0 ORDER BY groupid LIMIT 1 OFFSET $((w - 1))")" ]; then
            accounts="$accounts $a"
            found=$((found + 1))
        fi
    done
done
set -- $accounts
c=0
for a in "$@"; do
    # members first: no default license is assigned on creation
    q >/dev/null <<SQL
INSERT INTO subscription.member (tenant_id, account_id, external_id)
SELECT $a, $a, 'm' || g FROM generate_series(1, $members) AS g;
SELECT subscription.subscribe($a, 'citus_seats', '1 month', 1000000, '2026-01-01');
SELECT min(id) AS first FROM subscription.member WHERE tenant_id = $a \\gset
CREATE SEQUENCE public.bench_next$c START :first;
CREATE SEQUENCE public.bench_bare$c START :first;
SQL
    c=$((c + 1))
done
subs=$(for a in "$@"; do q -c "SELECT id FROM subscription.subscription WHERE tenant_id = $a AND plan = 'citus_seats'"; done)
set -- $accounts $subs
cat > "$dir/consume.sql" <<SQL
\\set c (:client_id % 4)
\\set t (CASE WHEN :c = 0 THEN $1 WHEN :c = 1 THEN $2 WHEN :c = 2 THEN $3 ELSE $4 END)
\\set s (CASE WHEN :c = 0 THEN $5 WHEN :c = 1 THEN $6 WHEN :c = 2 THEN $7 ELSE $8 END)
SELECT nextval(('public.bench_next' || :c)::regclass) AS m \\gset
SELECT subscription.license_consume(:t, :s, :m);
SQL
cat > "$dir/bare.sql" <<SQL
\\set c (:client_id % 4)
\\set t (CASE WHEN :c = 0 THEN $1 WHEN :c = 1 THEN $2 WHEN :c = 2 THEN $3 ELSE $4 END)
\\set s (CASE WHEN :c = 0 THEN $5 WHEN :c = 1 THEN $6 WHEN :c = 2 THEN $7 ELSE $8 END)
SELECT nextval(('public.bench_bare' || :c)::regclass) AS m \\gset
INSERT INTO public.bench_bare_license (tenant_id, subscription_id, member_id) VALUES (:t, :s, :m);
SQL
compare_tps "Citus: license_consume (delegated), 4 clients" "$dir/consume.sql" "$dir/bare.sql" "report"
q -c "SELECT 'counters equal licenses: ' || bool_and(c.used = (SELECT count(*) FROM subscription.license AS l
                                                              WHERE l.tenant_id = c.tenant_id AND l.subscription_id = c.subscription_id))
        || ', licenses: ' || sum(c.used)
        FROM subscription.license_counter AS c
       WHERE c.tenant_id IN ($1, $2, $3, $4) AND c.subscription_id IN ($5, $6, $7, $8)"
q -c "DROP TABLE public.bench_bare_license" >/dev/null
for c in 0 1 2 3; do q -c "DROP SEQUENCE public.bench_next$c, public.bench_bare$c" >/dev/null; done

# Issue 21, item 7: renewals with one meter per subscription against the
# same renewals without: 10k due monthly subscriptions (renewals_lib's
# populate), and in a second database the same with a usage price on the
# plan and a time_weighted meter on a registered table holding one row per
# account, so that every renewal bills (and snapshots) one meter.  Each
# run renews in a transaction that is rolled back; best of 3.  Target: the
# metered rate at least 0.8 of the plain one.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/../pgbench_compare.sh"
. "$(dirname "${BASH_SOURCE[0]}")/../renewals_lib.sh"

n=${RENEW_METERED_N:-10000}
populate subscription_bench_renew_plain "$n"
populate subscription_bench_renew_metered "$n"
psql -X -qAt -v ON_ERROR_STOP=1 -d subscription_bench_renew_metered >/dev/null <<'SQL'
SET search_path = subscription, public;
INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_pro', 'metered_agents', NULL);
CREATE TABLE public.metered_agent (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
SELECT enforce_limit('public.metered_agent', 'metered_agents', 'account_id');
SELECT meter('public.metered_agent', 'metered_agents', 'time_weighted');
SELECT plan_usage_price('zd_pro', 'metered_agents', 0, 0.01);
INSERT INTO public.metered_agent (account_id) SELECT id FROM account;
VACUUM ANALYZE;
SQL
renew_ms() {
    local start end
    start=$(date +%s%N)
    psql -X -qAt -v ON_ERROR_STOP=1 -d "$1" -c "SET client_min_messages = warning" \
         -c "BEGIN" -c "SELECT subscription.renew_due('2026-02-01')" -c "ROLLBACK" > "$dir/renew.out"
    end=$(date +%s%N)
    echo $(( (end - start) / 1000000 ))
}
plain=(); metered=()
for run in 1 2 3; do
    plain+=("$(renew_ms subscription_bench_renew_plain)")
    metered+=("$(renew_ms subscription_bench_renew_metered)")
done
tp=$(printf '%s\n' "${plain[@]}" | sort -n | head -1)
tm=$(printf '%s\n' "${metered[@]}" | sort -n | head -1)
billed=$(psql -X -qAt -d subscription_bench_renew_metered -c "BEGIN" -c "SELECT subscription.renew_due('2026-02-01')" \
         -c "SELECT count(*) FROM subscription.usage_period" -c "ROLLBACK" | sed -n 2p)
printf '%-44s %10s %14s\n' case ms renewals_per_s
printf '%-44s %10s %14.0f\n' "renew_due ${n}, no meter" "$tp" "$(awk -v t="$tp" -v n="$n" 'BEGIN { print n / t * 1000 }')"
printf '%-44s %10s %14.0f  (%s periods billed)\n' "renew_due ${n}, one meter each" "$tm" "$(awk -v t="$tm" -v n="$n" 'BEGIN { print n / t * 1000 }')" "$billed"
printf '%-44s %10.2f  (target >= 0.8)\n' "metered rate / plain rate" "$(awk -v a="$tp" -v b="$tm" 'BEGIN { print a / b }')"
for db in subscription_bench_renew_plain subscription_bench_renew_metered; do
    psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $db"
done

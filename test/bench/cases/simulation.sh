# The 3-year simulation by the billing clock (issue 20, item 5):
# test/simulate.sh with SUBS subscriptions (default 1,000): 153 weekly
# steps from 2040 to 2043, each one transaction that sets
# subscription.clock and runs renew_due(), announce_renewals(),
# record_usage() and the payments.  Reports the time of the steps against
# the target (at most 60 s: the ratio, target <= 1) and per renewal, and
# fails when a check of the simulation fails.
set -euo pipefail
subs=${SIM_SUBS:-1000}
out=$(SUBS=$subs SIMULATE_DB=subscription_bench_simulate bash "$(dirname "${BASH_SOURCE[0]}")/../../simulate.sh")
echo "$out" | sed 's/^/  /'
ms=$(echo "$out" | sed -n 's/^# simulated [0-9]* steps .* in \([0-9]*\) ms$/\1/p')
[ -n "$ms" ] || { echo "simulation: no time reported"; exit 1; }
echo "simulation, $subs subscriptions, 3 years: $ms ms; against the 60 s target: $(awk -v m="$ms" 'BEGIN { printf "%.2f", m / 60000 }')"
! echo "$out" | grep -q '^not ok'

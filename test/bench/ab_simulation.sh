#!/usr/bin/env bash
# The 3-year simulation across builds, by the steps' backend CPU (issue 20):
# test/simulate.sh (SUBS subscriptions, 1,000 by default) with SIMULATE_CPU,
# on one throwaway cluster (fsync off), for each source tree given, the
# rounds alternating the builds (each installed in turn before its run) so
# that the machine's load falls on all of them alike.  Prints per run the
# steps' wall time and their backend's own CPU (user and system): on a
# loaded machine the wall time moves with the load, the CPU far less.
#   bash test/bench/ab_simulation.sh DIR [DIR ...]
# Each DIR is a source tree of the extension (a checkout of another
# revision); the work tree's test/simulate.sh runs them all.  It replaces
# the installed extension (and reinstalls the work tree's at the end): run
# it in a Debian root (docs/testing.md).  AB_ROUNDS (1) rounds.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
[ $# -ge 1 ] || { echo "usage: $0 DIR [DIR ...]" >&2; exit 2; }
ensure_packages
start_cluster /tmp/subscription-ab-simulation
trap 'stop_cluster_in "${SUBSCRIPTION_OWN_CLUSTER:-/nonexistent}"; make -C "$ROOT" -s install >/dev/null' EXIT
for dir in "$@"; do make -C "$dir" -s >/dev/null; done
for round in $(seq 1 "${AB_ROUNDS:-1}"); do
    for dir in "$@"; do
        make -C "$dir" -s install >/dev/null
        out=$(SUBS=${SUBS:-1000} SIMULATE_DB=subscription_ab_simulation SIMULATE_CPU=1 bash "$ROOT/test/simulate.sh")
        ms=$(echo "$out" | sed -n 's/^# simulated [0-9]* steps .* in \([0-9]*\) ms$/\1/p')
        ticks=$(echo "$out" | sed -n 's/^# steps backend CPU ticks \([0-9]*\)$/\1/p')
        checks=$(echo "$out" | grep -c '^ok ' || true)
        echo "round $round, $dir: steps $ms ms wall, backend CPU $(awk -v t="$ticks" -v h="$(getconf CLK_TCK)" 'BEGIN { printf "%.1f", t / h }') s, $checks of 8 checks ok, load $(cut -d' ' -f1-3 /proc/loadavg)"
    done
done

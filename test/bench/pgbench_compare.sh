# Sourced by the pgbench cases of test/bench/cases.  Gives them $dir, a
# scratch directory for their scripts, and q, psql on the bench database.
dir=$(mktemp -d /tmp/subscription-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 -d "$BENCH_DB" "$@"; }

# compare_tps LABEL
# EXTENSION_SCRIPT BASELINE_SCRIPT TARGET runs both scripts with 4 clients,
# alternating, best of 2 each so that drift hits both sides, and prints one
# line: tps of each side and their ratio.
compare_tps() {
    local label=$1 extension=$2 baseline=$3 target=$4 seconds=${BENCH_SECONDS:-10}
    local b1 e1 b2 e2 bare ext
    tps() { pgbench -n -c 4 -j 4 -T "$seconds" -f "$1" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'; }
    b1=$(tps "$baseline"); e1=$(tps "$extension")
    b2=$(tps "$baseline"); e2=$(tps "$extension")
    bare=$(printf '%s\n%s\n' "$b1" "$b2" | sort -g | tail -1)
    ext=$(printf '%s\n%s\n' "$e1" "$e2" | sort -g | tail -1)
    printf '%-52s %12s %12s %8s %s\n' case extension_tps baseline_tps ratio target
    printf '%-52s %12.0f %12.0f %8.2f %s\n' "$label (${seconds}s runs)" "$ext" "$bare" \
        "$(awk -v e="$ext" -v b="$bare" 'BEGIN { print e / b }')" "$target"
}

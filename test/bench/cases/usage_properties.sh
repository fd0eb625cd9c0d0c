# Issue 21, item 6: the usage property test (test/sql/usage_properties.sql)
# over 1,000,000 random row operations instead of the test command's
# 100,000: the same file, every check of it true, and its time.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
ops=${USAGE_PROPERTY_OPS:-1000000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
started=$(date +%s%N)
(cd "$ROOT" && PGOPTIONS="${PGOPTIONS:-} -c subscription.max_backdate=P1000Y -c subscription.max_ahead=P1000Y" \
    psql -X -d "$BENCH_DB" -v ON_ERROR_STOP=1 -v ops="$ops" -f test/sql/usage_properties.sql) > "$out" 2>&1
ended=$(date +%s%N)
# the file's checks are boolean columns: a lone f in a result row fails
if grep -qE '\| f( |$)|^ f( |$)' "$out"; then
    echo "usage property test over $ops operations: a check FAILED"
    grep -B4 -E '\| f( |$)|^ f( |$)' "$out" | head -40
    exit 1
fi
trues=$(grep -oE '(\||^) t( |$)' "$out" | wc -l)
printf '%-52s %8.1f s (%s checks, all true)\n' "usage properties, $ops row operations" \
    "$(awk -v a="$started" -v b="$ended" 'BEGIN { print (b - a) / 1e9 }')" "$trues"

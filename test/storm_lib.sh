# What the storm tests share: a scratch database $db with the extension,
# a scratch directory $dir, and the check of a pgbench run.  Source it
# after setting db.
dir=$(mktemp -d /tmp/subscription-storm.XXXXXX)
trap 'rm -rf "$dir"; psql -X -qAt -d postgres -c "DROP DATABASE IF EXISTS $db" >/dev/null' EXIT
q() { psql -X -qAt -v ON_ERROR_STOP=1 "$@"; }
q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null
q -d "$db" -c "CREATE EXTENSION subscription"

# pgbench_ok STATUS TITLE: TAP line 1, from pgbench's exit status and output
pgbench_ok() {
    if [ "$1" -eq 0 ] && grep -q 'number of failed transactions: 0' "$dir/pgbench.out"; then
        echo "ok 1 - $2"
    else
        echo "not ok 1 - $2"
        sed 's/^/# /' "$dir/pgbench.out"
    fi
}

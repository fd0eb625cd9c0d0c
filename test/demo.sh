#!/usr/bin/env bash
# The demo: a throwaway cluster, the extension, the sample catalog of the five
# source systems and a narrated scenario; the server is left running for you.
#   bash test/demo.sh
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DEMO_DIR=/tmp/subscription-demo
ensure_packages
build_and_install
start_cluster "$DEMO_DIR"

psql -X -q -d postgres -c 'SET client_min_messages = warning' -c 'DROP DATABASE IF EXISTS demo' -c 'CREATE DATABASE demo'
psql -X -q -d demo -v ON_ERROR_STOP=1 -c 'CREATE EXTENSION subscription'
say "loading the sample catalog (test/demo/catalog.sql)"
psql -X -q -d demo -v ON_ERROR_STOP=1 -f "$ROOT/test/demo/catalog.sql" >/dev/null
say "the scenario (test/demo/scenario.sql)"
psql -X -q -d demo -v ON_ERROR_STOP=1 -f "$ROOT/test/demo/scenario.sql"

# --- usage-based billing (issue 21, item 8): meters, recorded usage, previews
say "usage-based billing (test/demo/usage.sql)"
psql -X -q -d demo -v ON_ERROR_STOP=1 -f "$ROOT/test/demo/usage.sql"
# --- end of usage-based billing

say "connect"
if [ -n "${SUBSCRIPTION_OWN_CLUSTER:-}" ]; then
    cat <<TXT
The demo server keeps running. Connect with:
    psql -h $DEMO_DIR -U postgres demo
and try, for example:
    SET search_path = subscription, public;
    SELECT * FROM ledger;
    SELECT tier_for_hosts(600);
Stop it with:
    runuser -u postgres -- $PGBIN/pg_ctl -D $DEMO_DIR/data stop
TXT
else
    echo "Connect with: psql demo   (on the server named by PGHOST=$PGHOST)"
fi

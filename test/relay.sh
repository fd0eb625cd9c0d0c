#!/usr/bin/env bash
# The relay (contrib/relay) killed at random during a storm of billing
# changes: every event arrives at least once, in commit order per account,
# none invented (test/relay.py).  Prints TAP.
set -uo pipefail
db=subscription_relay
. "$(dirname "$0")/storm_lib.sh"
/usr/bin/python3 "$(dirname "$0")/relay.py" "$db"

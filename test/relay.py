#!/usr/bin/python3
"""The relay under fire (issue 20, item 3): contrib/relay/subscription_relay.py
delivers the outbox to a local HTTP receiver while writers make billing
changes on several accounts, and the relay is killed (SIGKILL) at random
points and restarted.  Then every event arrived at least once, none was
invented, and each account's events arrived in the order of its commits.

Each account has one writer making its changes one transaction after the
other, and logging what it committed: that log is the commit order the
deliveries are compared with.  The receiver refuses a few requests (503)
so that the relay's retries are exercised too.  Prints TAP.

usage: relay.py DBNAME  (libpq's environment names the server)
"""

import http.server
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import psycopg

DB = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
RELAY = os.path.join(HERE, "..", "contrib", "relay", "subscription_relay.py")
ACCOUNTS = 6
STORM_SECONDS = float(os.environ.get("RELAY_STORM_SECONDS", "6"))
LEASE = 1.0

rng = random.Random(int(os.environ.get("RELAY_SEED", "20")))
arrivals = []           # event bodies, in the order they arrived
arrivals_lock = threading.Lock()
refused = [0]


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with arrivals_lock:
            if rng.random() < 0.03:
                refused[0] += 1
                self.send_response(503)
                self.end_headers()
                return
            event = json.loads(body)
            if self.headers["Idempotency-Key"] != "event-%d" % event["id"]:
                event["bad_key"] = self.headers["Idempotency-Key"]
            arrivals.append(event)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def connect():
    return psycopg.connect("dbname=" + DB, autocommit=True)


def setup():
    with connect() as conn:
        conn.execute("""
            INSERT INTO subscription.product (code, name) VALUES ('desk', 'Zendesk Support');
            INSERT INTO subscription.plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1);
            INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES ('zd_team', '1 month', 19, true)""")
        subscriptions = {}
        for a in range(1, ACCOUNTS + 1):
            conn.execute("INSERT INTO subscription.account (id, name) VALUES (%s, %s)", (a, "account %d" % a))
            conn.execute("INSERT INTO subscription.member (id, account_id, external_id, role)"
                         " SELECT %s * 100 + m, %s, 'm' || m || '@' || %s, 'admin'"
                         "   FROM generate_series(1, 3) AS m", (a, a, a))
            subscriptions[a] = conn.execute(
                "SELECT subscription.subscribe(%s, 'zd_team', '1 month', 3, now())", (a,)).fetchone()[0]
        return subscriptions


def writer(account, subscription, log, stop):
    """One account's changes, one transaction each; log what committed."""
    rnd = random.Random(account)
    assigned = set()
    quantity = 3
    with connect() as conn:
        while not stop.is_set():
            member = account * 100 + rnd.randint(1, 3)
            choice = rnd.random()
            if choice < 0.4 and member not in assigned:
                conn.execute("SELECT subscription.license_consume(%s, %s)", (subscription, member))
                assigned.add(member)
                log.append(("license.assigned", [member]))
            elif choice < 0.8 and member in assigned:
                conn.execute("SELECT subscription.license_release(%s, %s)", (subscription, member))
                assigned.discard(member)
                log.append(("license.released", [member]))
            elif choice >= 0.8:
                to = 3 if quantity == 4 else 4
                conn.execute("SELECT subscription.set_quantity(%s, %s)", (subscription, to))
                log.append(("subscription.quantity_changed", {"from": quantity, "to": to}))
                quantity = to
            time.sleep(rnd.random() * 0.02)


# what the writers log; their changes write other events too (an invoice
# opened by a charge), which are delivered and checked like every event
LOGGED = {"subscription.created", "license.assigned", "license.released", "subscription.quantity_changed"}


def what_of(event):
    """An event as the writers log it."""
    payload = event["payload"]
    if event["type"] == "subscription.quantity_changed":
        return (event["type"], {"from": payload["from"], "to": payload["to"]})
    if event["type"] == "subscription.created":
        return (event["type"], payload["quantity"])
    return (event["type"], payload["members"])


def start_relay(url, poll=0.2):
    return subprocess.Popen(
        ["/usr/bin/python3", RELAY, "--dsn", "dbname=" + DB, "--consumer", "webhooks",
         "--url", url, "--batch", "20", "--lease", str(LEASE), "--poll", str(poll), "--timeout", "2"],
        stderr=subprocess.DEVNULL)


def doorbell(conn):
    """The listeners' hold of the doorbell (events.c): granted, waiting."""
    return conn.execute(
        "SELECT count(*) FILTER (WHERE granted), count(*) FILTER (WHERE NOT granted) FROM pg_locks"
        " WHERE locktype = 'advisory' AND objsubid = 20 AND mode = 'RowExclusiveLock'"
        "   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())").fetchone()


def until(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def arrived(event_id):
    with arrivals_lock:
        return any(e["id"] == event_id for e in arrivals)


def asleep_relay(url, subscription):
    """The doorbell wakes a relay that polls once a minute (issue 20): a
    change committed while it sleeps arrives at once; so does one whose
    transaction, open while no listener awaited, sent no NOTIFY: the
    relay's await_events() waits for its commit, then it claims once
    more.  Returns the seconds each took to arrive, and whether the relay
    was seen waiting for the open transaction."""
    relay = start_relay(url, poll=60)
    try:
        with connect() as conn:
            if not until(lambda: doorbell(conn) == (1, 0), 20):
                return None, None, False
            start = time.monotonic()
            conn.execute("SELECT subscription.set_quantity(%s, 5)", (subscription,))
            first = conn.execute("SELECT max(id) FROM subscription.event").fetchone()[0]
            woke = until(lambda: arrived(first), 10) and time.monotonic() - start
        relay.send_signal(signal.SIGTERM)
        relay.wait(timeout=10)
        # a transaction writes an event while no listener awaits (no
        # NOTIFY), and is still open when the relay starts and awaits
        with connect() as writer, connect() as conn:
            until(lambda: doorbell(conn) == (0, 0), 10)
            writer.execute("BEGIN")
            writer.execute("SELECT subscription.set_quantity(%s, 6)", (subscription,))
            second = writer.execute("SELECT max(id) FROM subscription.event").fetchone()[0]
            relay = start_relay(url, poll=60)
            queued = until(lambda: doorbell(conn) == (0, 1), 20)
            writer.execute("COMMIT")
            start = time.monotonic()
            late = until(lambda: arrived(second), 10) and time.monotonic() - start
        return woke, late, queued
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(timeout=10)
        except subprocess.TimeoutExpired:
            relay.kill()


def main():
    subscriptions = setup()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://127.0.0.1:%d/billing" % server.server_address[1]

    logs = {a: [("subscription.created", 3)] for a in subscriptions}
    stop = threading.Event()
    writers = [threading.Thread(target=writer, args=(a, s, logs[a], stop)) for a, s in subscriptions.items()]
    for w in writers:
        w.start()

    kills = 0
    relay = start_relay(url)
    end = time.monotonic() + STORM_SECONDS
    while time.monotonic() < end:
        time.sleep(rng.uniform(0.2, 0.9))
        relay.send_signal(signal.SIGKILL)
        relay.wait()
        kills += 1
        relay = start_relay(url)
    stop.set()
    for w in writers:
        w.join()

    # drain: the relay, left alone, delivers the rest
    with connect() as conn:
        last = conn.execute("SELECT max(id) FROM subscription.event").fetchone()[0]
        deadline = time.monotonic() + 60
        position = None
        while time.monotonic() < deadline:
            row = conn.execute("SELECT position FROM subscription.event_consumer WHERE consumer = 'webhooks'").fetchone()
            position = row and row[0]
            if position == last:
                break
            time.sleep(0.2)
        table = {r[0]: r for r in conn.execute(
            "SELECT id, type, account_id, subscription_id, payload, at FROM subscription.event ORDER BY id")}
    relay.send_signal(signal.SIGTERM)
    try:
        relay.wait(timeout=10)
    except subprocess.TimeoutExpired:
        relay.kill()
    # what the storm delivered; then the doorbell's own deliveries
    with arrivals_lock:
        got = list(arrivals)
    woke, late, queued = asleep_relay(url, subscriptions[1])
    server.shutdown()
    delivered = {e["id"] for e in got}
    committed = sum(len(l) for l in logs.values())
    print("1..7")
    print("# %d events committed by %d writers, %d deliveries (%d repeated), %d refused with 503, %d relay kills"
          % (len(table), len(logs), len(got), len(got) - len(delivered), refused[0], kills))

    def tap(n, ok, title, diagnostics=""):
        print("%s %d - %s" % ("ok" if ok else "not ok", n, title))
        if not ok and diagnostics:
            print("# " + str(diagnostics)[:2000].replace("\n", "\n# "))

    tap(1, kills >= 5 and position == last,
        "the relay, killed %d times during the storm, acknowledged every event (%s of %s)" % (kills, position, last))
    logged_events = sum(1 for r in table.values() if r[1] in LOGGED)
    tap(2, logged_events == committed and delivered == set(table),
        "every event committed arrived at least once (%d events; the writers' %d changes, %d events of theirs)"
        % (len(table), committed, logged_events),
        sorted(set(table) - delivered))
    invented = [e for e in got
                if e["id"] not in table or "bad_key" in e
                or (e["type"], e["account_id"], e["subscription_id"], e["payload"])
                != tuple(table[e["id"]][1:5])
                or e["at"] != table[e["id"]][5].isoformat()]
    tap(3, not invented, "none invented: each delivery is its event's row, keyed by its id", invented[:3])
    order_ok = True
    diag = []
    for a in logs:
        first = []
        seen = set()
        for e in got:
            if e["account_id"] == a and e["type"] in LOGGED and e["id"] not in seen:
                seen.add(e["id"])
                first.append(what_of(e))
        if first != logs[a]:
            order_ok = False
            at = next((i for i, (x, y) in enumerate(zip(first, logs[a])) if x != y), min(len(first), len(logs[a])))
            diag.append("account %d, change %d: delivered %s, committed %s"
                        % (a, at, first[at:at + 3], logs[a][at:at + 3]))
    tap(4, order_ok, "each account's events arrived in the order of its commits", diag)
    tap(5, refused[0] > 0, "the receiver's refusals (503) were retried: %d" % refused[0])
    tap(6, woke is not None and woke is not False and woke < 5,
        "a relay asleep (a poll a minute, awaiting) is woken by a commit's NOTIFY: its event arrived in %.2f s" % (woke or 0))
    tap(7, queued and late is not False and late < 5,
        "an event committed without a NOTIFY by a transaction open when the relay awaited arrived %.2f s after"
        " its commit (the relay waited for it: %s)" % (late or 0, queued))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Relay subscription's billing events to an HTTP endpoint.

A consumer of the outbox (docs/integrating.md): it LISTENs on
subscription_events (ringing the doorbell, subscription.await_events(),
before it sleeps), claims the consumer's next events with
subscription.claim_events(), POSTs each one as JSON to a URL, and
acknowledges them with subscription.ack_events().  Delivery is at least
once: a relay killed between a POST and its ack sends those events again
after its restart (once the claim's lease has ended), so the receiver
makes its handling idempotent on the event's id, which every request
carries in its body and in the Idempotency-Key header.

Run as many relays of one consumer as you like: one holds the claim, the
others wait for the next one.  Needs Debian's python3-psycopg only.

    subscription_relay.py --dsn 'dbname=app' --consumer webhooks \\
        --url https://hooks.example.com/billing
"""

import argparse
import json
import os
import select
import signal
import sys
import time
import urllib.error
import urllib.request

import psycopg

CHANNEL = "subscription_events"


def event_body(row):
    """The JSON document POSTed for one event row."""
    event_id, event_type, account_id, subscription_id, payload, at = row
    return {
        "id": event_id,
        "type": event_type,
        "account_id": account_id,
        "subscription_id": subscription_id,
        "at": at.isoformat(),
        "payload": payload,
    }


def post(url, body, timeout):
    """POST one event; True when the receiver answered 2xx."""
    data = json.dumps(body, sort_keys=True).encode()
    request = urllib.request.Request(
        url, data=data, method="POST",
        headers={"Content-Type": "application/json",
                 "Idempotency-Key": "event-%d" % body["id"]})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


class Relay:
    def __init__(self, args):
        self.args = args
        self.stopping = False
        self.conn = None
        self.awaiting = False
        self.notified = False
        # a signal ends a sleep at once: Python writes its number here
        self.wakeup, signalled = os.pipe()
        os.set_blocking(self.wakeup, False)
        os.set_blocking(signalled, False)
        signal.set_wakeup_fd(signalled)

    def connect(self):
        self.conn = psycopg.connect(self.args.dsn, autocommit=True)
        # a notification read with a query's results (the claim's) is
        # dispatched here, not to the socket the sleep watches
        self.conn.add_notify_handler(self.on_notify)
        self.conn.execute("LISTEN " + CHANNEL)
        self.awaiting = False
        self.notified = False

    def on_notify(self, notify):
        self.notified = True

    def await_events(self, waiting):
        """Ring the doorbell (True: writers notify from now on, once those
        that found no listener have ended) or stop (False).  Waiting for
        those writers is bounded by the poll interval: past it, the relay
        claims again, as a poll."""
        try:
            with self.conn.transaction():
                if waiting:
                    self.conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)",
                                      ("%dms" % max(1, int(self.args.poll * 1000)),))
                self.conn.execute("SELECT subscription.await_events(%s)", (waiting,))
            self.awaiting = waiting
        except psycopg.errors.LockNotAvailable:
            pass

    def claim(self):
        """The consumer's next events, or none while another relay holds its claim."""
        with self.conn.transaction():
            return self.conn.execute(
                "SELECT id, type, account_id, subscription_id, payload, at"
                "  FROM subscription.claim_events(%s, %s, %s::interval)"
                " ORDER BY id",
                (self.args.consumer, self.args.batch,
                 "%s seconds" % self.args.lease)).fetchall()

    def ack(self, up_to):
        with self.conn.transaction():
            self.conn.execute("SELECT subscription.ack_events(%s, %s)",
                              (self.args.consumer, up_to))

    def deliver(self, rows):
        """POST the claimed events in order, retrying one until it is taken.

        The ack follows each success, so a crash resends at most the event
        in flight; past the lease another relay may take the claim over,
        and this one stops: its ack would be refused."""
        deadline = time.monotonic() + self.args.lease
        backoff = 0.05
        for row in rows:
            while not post(self.args.url, event_body(row), self.args.timeout):
                if self.stopping or time.monotonic() + backoff >= deadline:
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            self.ack(row[0])

    def wait(self):
        """Until a NOTIFY arrives or the poll interval ends."""
        if self.notified:
            self.notified = False
            return
        ready, _, _ = select.select([self.conn.fileno(), self.wakeup], [], [], self.args.poll)
        if self.wakeup in ready:
            # a signal (stop)
            os.read(self.wakeup, 512)
        if self.conn.fileno() in ready:
            # reading the socket consumes the notifications; their
            # payload (an event id) is not needed: claim_events decides
            self.conn.execute("SELECT 1")
        self.notified = False

    def run(self):
        """Claim and deliver; with nothing to claim, ring the doorbell and
        claim once more (what a writer that did not notify committed is
        there), then sleep; on waking, stop ringing, so that writers do not
        notify while the relay is busy."""
        while not self.stopping:
            try:
                if self.conn is None or self.conn.closed:
                    self.connect()
                rows = self.claim()
                if rows:
                    if self.awaiting:
                        self.await_events(False)
                    self.deliver(rows)
                elif not self.awaiting:
                    self.await_events(True)
                else:
                    self.wait()
                    self.await_events(False)
            except psycopg.Error as error:
                # a lost connection or a refused ack (another relay took
                # the claim over after the lease): start again from a claim
                print("subscription_relay: %s" % str(error).strip(), file=sys.stderr)
                if self.conn is not None and not self.conn.closed:
                    self.conn.close()
                self.conn = None
                time.sleep(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", required=True, help="libpq connection string")
    parser.add_argument("--consumer", required=True, help="the consumer's name in subscription.event_consumer")
    parser.add_argument("--url", required=True, help="where to POST each event")
    parser.add_argument("--batch", type=int, default=100, help="events per claim (default 100)")
    parser.add_argument("--lease", type=float, default=60, help="seconds a claim is held (default 60)")
    parser.add_argument("--timeout", type=float, default=10, help="seconds per HTTP request (default 10)")
    parser.add_argument("--poll", type=float, default=5, help="seconds between claims without a NOTIFY (default 5)")
    args = parser.parse_args()
    relay = Relay(args)

    def stop(signum, frame):
        relay.stopping = True
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    relay.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

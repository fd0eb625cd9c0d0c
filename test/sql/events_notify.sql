-- The doorbell (issue 20, E1, events.c): a writer of events notifies only
-- when a listener awaits (await_events()).  What one session shows: the
-- writer's hold of the doorbell for its transaction when no listener
-- awaits (what a listener's await_events() waits for), none when it
-- notifies regardless (always) or never (off); a listener's own hold,
-- taken once and given back; the setting's values; bad input.  The
-- notifications themselves and the wait are in
-- test/specs/events_doorbell.spec.
\set VERBOSITY default
\set regress_db :DBNAME
CREATE DATABASE subscription_notify;
\c subscription_notify
SET client_min_messages = warning;
CREATE EXTENSION subscription;
RESET client_min_messages;
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
INSERT INTO product (code, name) VALUES ('bell', 'Doorbell');
INSERT INTO plan (code, product, name) VALUES ('bell_team', 'bell', 'Team');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('bell_team', '1 month', 19, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Doorbell Inc');
SELECT subscribe(1, 'bell_team', '1 month', 1, '2026-01-01') AS sub \gset
CREATE VIEW pg_temp.doorbell AS
SELECT mode, granted, pid = pg_backend_pid() AS mine
  FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 20 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY mode;

-- no listener awaits: the writer holds the doorbell until its commit
BEGIN;
SELECT set_quantity(:sub, 2, '2026-01-05');
SELECT * FROM pg_temp.doorbell;
COMMIT;
SELECT * FROM pg_temp.doorbell;

-- always and off do not try it
BEGIN;
SET LOCAL subscription.notify_events = always;
SELECT set_quantity(:sub, 3, '2026-01-06');
SELECT * FROM pg_temp.doorbell;
SET LOCAL subscription.notify_events = off;
SELECT set_quantity(:sub, 4, '2026-01-07');
SELECT * FROM pg_temp.doorbell;
COMMIT;

-- a listener: one hold for its session, however often it awaits, given
-- back once; its own changes do not ring for it
SELECT await_events() AS awaiting, await_events(true) AS again;
SELECT * FROM pg_temp.doorbell;
BEGIN;
SELECT set_quantity(:sub, 5, '2026-01-08');
SELECT * FROM pg_temp.doorbell;
COMMIT;
SELECT await_events(false) AS awaiting, await_events(false) AS again;
SELECT * FROM pg_temp.doorbell;

-- pg_advisory_unlock_all() (and DISCARD ALL) release the listener's hold
-- with every advisory lock of the session: await_events() takes it again
-- (else no writer would notify it: a lost wake-up), and await_events(false)
-- then has nothing to give back
SELECT await_events() AS awaiting;
SELECT pg_advisory_unlock_all();
SELECT * FROM pg_temp.doorbell;
SELECT await_events() AS awaiting;
SELECT * FROM pg_temp.doorbell;
SELECT pg_advisory_unlock_all();
SELECT await_events(false) AS awaiting;
SELECT * FROM pg_temp.doorbell;

-- the setting: on (the default), always, off; the boolean spellings of its
-- first version
SHOW subscription.notify_events;
SET subscription.notify_events = true;
SHOW subscription.notify_events;
SET subscription.notify_events = false;
SHOW subscription.notify_events;
SET subscription.notify_events = 'always';
SHOW subscription.notify_events;
RESET subscription.notify_events;
SET subscription.notify_events = 'sometimes';

-- bad input: 22004
SELECT pg_temp.error_of('SELECT subscription.await_events(NULL)');

\c :regress_db
DROP DATABASE subscription_notify;

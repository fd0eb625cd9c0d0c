-- What the extension stores as text reads the same whatever the writing
-- session's IntervalStyle and DateStyle (E2: a payload is a documented
-- shape): history's details and events' payloads render intervals and
-- timestamps in the extension's styles (PostgreSQL's defaults), not the
-- session's.  On Citus a worker's connection writes them with its own
-- settings, so the same holds there.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
-- in a transaction of its own, rolled back: the cases after it see nothing of it
BEGIN;
INSERT INTO product (code, name, upgrade, downgrade) VALUES ('st', 'Styles', 'prorate', 'end_of_period');
INSERT INTO plan (code, product, name, rank) VALUES ('st_basic', 'st', 'Basic', 1), ('st_plus', 'st', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('st_basic', '1 month', 10, true), ('st_basic', '1 year', 100, true), ('st_plus', '1 month', 20, true), ('st_plus', '1 year', 200, true);
INSERT INTO account (id, tenant_id, name) VALUES (701, 701, 'Styles A'), (702, 702, 'Styles B');

-- two sessions' styles, far from the defaults, writing the same changes
-- (styles whose dates any node reads back: Citus sends a statement's
-- constants to the workers as the session prints them, and a worker whose
-- DateStyle orders days and months otherwise would misread '15/03/2026')
SET IntervalStyle = 'sql_standard';
SET DateStyle = 'SQL, MDY';
SELECT subscribe(701, 'st_basic', '1 year', 2, '2026-01-01') AS a \gset
SELECT change_plan(:a, 'st_plus', '2026-03-15');
SELECT change_cycle(:a, '1 month');
SET IntervalStyle = 'iso_8601';
SET DateStyle = 'Postgres, DMY';
SELECT subscribe(702, 'st_basic', '1 year', 2, '2026-01-01') AS b \gset
SELECT change_plan(:b, 'st_plus', '2026-03-15');
SELECT change_cycle(:b, '1 month');
RESET IntervalStyle;
RESET DateStyle;

-- the sessions' styles show in what they read, not in what was stored
SET IntervalStyle = 'sql_standard';
SELECT cycle, pending_cycle FROM subscription WHERE id = :a;
RESET IntervalStyle;
SELECT h.account_id, h.operation, h.details -> 'cycle' AS cycle, h.details -> 'period' AS period,
       h.details -> 'pending_cycle' AS pending_cycle
  FROM history AS h
 WHERE h.account_id IN (701, 702) AND h.operation IN ('subscription_insert', 'subscription_update')
 ORDER BY h.account_id, h.id;
SELECT e.account_id, e.type, e.payload -> 'cycle' AS cycle
  FROM event AS e
 WHERE e.account_id IN (701, 702) AND e.type = 'subscription.created'
 ORDER BY e.account_id;
-- the two accounts' stored text is the same, byte for byte
SELECT count(DISTINCT (h.details - '{id,account_id,created_at}'::text[])::text) AS distinct_details
  FROM history AS h
 WHERE h.account_id IN (701, 702) AND h.operation = 'subscription_insert';
SELECT count(DISTINCT e.payload::text) AS distinct_payloads
  FROM event AS e
 WHERE e.account_id IN (701, 702) AND e.type = 'subscription.created';
-- renewal.upcoming's payload (built in SQL, not by the history's C)
SET LOCAL subscription.clock = '2026-12-20';
SET IntervalStyle = 'sql_standard';
SELECT announce_renewals() > 0 AS announced;
RESET IntervalStyle;
SELECT e.account_id, e.type, e.payload -> 'cycle' AS cycle
  FROM event AS e
 WHERE e.account_id IN (701, 702) AND e.type = 'renewal.upcoming'
 ORDER BY e.account_id;
-- ledger descriptions: the cycle as the catalog writes it, times as
-- events show them, whatever the session wrote them with
SELECT l.account_id, l.description
  FROM ledger AS l
 WHERE l.account_id IN (701, 702) AND l.kind = 'charge'
 ORDER BY l.account_id, l.id;
ROLLBACK;

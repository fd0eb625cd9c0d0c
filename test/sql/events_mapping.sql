-- The mapping of a history row to its events (issue 20, E1): one place,
-- in C (events.c HistoryRowEvents), which history_events() shows and the
-- history trigger calls.  Every event type's payload, pinned, with its
-- edge cases: fields absent or JSON null, details that are not an object
-- (or NULL), open, infinite and empty periods, fractional seconds, times
-- shown in UTC whatever the session's TimeZone, strings where numbers are
-- expected, and the errors of values that do not read as their types.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'America/New_York';
CREATE TEMP TABLE cases (operation text, details jsonb);
INSERT INTO cases VALUES
 ('subscription_insert', '{"plan":"p","cycle":"1 mon","quantity":3,"status":"active","renewal":"auto","period":"[\"2026-01-01 00:00:00+00\",\"2026-02-01 00:00:00.123456+00\")"}'),
 ('subscription_insert', '{"plan":"p","period":"[\"2026-01-01 00:00:00+00\",)"}'),
 ('subscription_insert', '{"plan":"p","period":"empty"}'),
 ('subscription_insert', '{"plan":"p","period":"[-infinity,infinity)"}'),
 ('subscription_insert', '{}'),
 ('subscription_insert', NULL),
 ('subscription_insert', '[1,2]'),
 ('subscription_insert', '"x"'),
 ('subscription_update', '{"period_number":{"old":1,"new":2},"period":{"old":"[2026-01-01,2026-02-01)","new":"[2026-02-01 10:00+02,2026-03-01)"},"plan":{"old":"a","new":"b"},"quantity":{"old":1,"new":null},"status":{"old":"past_due","new":"cancelled"},"past_due_invoice_id":{"old":7,"new":null}}'),
 ('subscription_update', '{"period_number":{"old":"2","new":"10"}}'),
 ('subscription_update', '{"period_number":{"old":null,"new":3}}'),
 ('subscription_update', '{"status":{"old":"active","new":"past_due"},"past_due_since":{"new":"2026-05-05 12:00:00.5+03"},"past_due_invoice_id":{"new":42}}'),
 ('subscription_update', '{"status":{"old":"active","new":"past_due"}}'),
 ('subscription_update', '{"status":{"old":"trialing","new":"expired"}}'),
 ('subscription_update', '{"status":"cancelled"}'),
 ('subscription_update', '["plan","quantity"]'),
 ('subscription_update', '{"quantity":{"old":{"a":[1,{"b":null}]},"new":1.50}}'),
 ('dunning_step', '{"invoice_id":1,"step":2,"steps":3,"action":"email","due":"12.30","currency":"EUR","at":"2026-01-01T00:00:00+00:00"}'),
 ('dunning_step', '{}'),
 ('addon_batch_insert', '{"id":5,"addon":"x","quantity":2,"extra":true}'),
 ('addon_batch_update', '{"batch_id":5,"status":{"old":"active","new":"expired"}}'),
 ('addon_batch_update', '{"batch_id":5,"status":{"old":"active","new":"active"}}'),
 ('license_assign', '{"members":[1,2,3]}'),
 ('license_release', '{"members":[{"id":1,"external_id":"e"}]}'),
 ('license_assign', NULL),
 ('invoice_open', '{"invoice_id":1,"issuer":"i","number":"N-1","total":10.00,"lines":[{"a":1}],"currency":"USD","due_at":"2026-01-31 23:59:59.999999+00","corrects_invoice_id":null}'),
 ('invoice_open', '{"invoice_id":1}'),
 ('invoice_status', '{"invoice_id":1,"issuer":"i","number":"N","total":"5","paid":"5","currency":"USD","status":{"old":"open","new":"paid"},"at":"2026-03-01"}'),
 ('invoice_status', '{"status":{"old":"open","new":"void"},"at":null}'),
 ('invoice_status', '{"status":{"old":"open","new":"uncollectible"}}'),
 ('invoice_status', '{"status":{"old":"draft","new":"open"}}'),
 ('payment', '{"payment_id":1,"invoice_id":2,"amount":"3.00","currency":"EUR","reference":"r","credited":false}'),
 ('payment_failure', '{"invoice_id":2,"due":4,"currency":"EUR","attempt":1,"reason":"card"}'),
 ('something_else', '{"a":1}'),
 (NULL, '{"a":1}');
SELECT c.n, c.operation, e.type, e.payload
  FROM (SELECT row_number() OVER () AS n, * FROM cases) AS c
  LEFT JOIN LATERAL history_events(c.operation, c.details) WITH ORDINALITY AS e (type, payload, k) ON true
 ORDER BY c.n, e.k;
SELECT t, event_time(t) FROM (VALUES ('2026-01-01 00:00:00.5+05'::timestamptz), ('infinity'), ('-infinity'), (NULL),
                                     ('0044-03-15 12:00 BC')) AS v (t);
-- the trigger writes the same: a row of each case, as one statement
BEGIN;
SELECT coalesce(max(id), 0) AS last FROM event \gset
INSERT INTO history (operation, account_id, subscription_id, details, tenant_id, at)
SELECT c.operation, 1, 2, coalesce(c.details, '{}'), 99, '2026-01-01'
  FROM cases AS c WHERE c.operation IS NOT NULL AND c.details IS NOT NULL;
SELECT (SELECT array_agg(ROW(e.type, e.payload)::text ORDER BY e.id) FROM event AS e WHERE e.id > :last AND e.tenant_id = 99)
     = (SELECT array_agg(ROW(m.type, m.payload)::text ORDER BY h.id, m.k)
          FROM history AS h, history_events(h.operation, h.details) WITH ORDINALITY AS m (type, payload, k)
         WHERE h.tenant_id = 99) AS trigger_writes_the_mapping,
       (SELECT count(*) FROM event WHERE id > :last AND tenant_id = 99) AS events;
ROLLBACK;
-- errors: a value that does not read as its type
SELECT pg_temp.error_of($$SELECT * FROM history_events('subscription_update', '{"period_number":{"old":"x","new":2}}')$$);
SELECT pg_temp.error_of($$SELECT * FROM history_events('subscription_insert', '{"period":"nonsense"}')$$);
SELECT pg_temp.error_of($$SELECT * FROM history_events('dunning_step', '{"at":"yesterdayish"}')$$);

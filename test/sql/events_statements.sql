-- Events per statement (issue 20, with issue 18's floor): the history rows
-- that one statement writes get their events from one statement trigger
-- (history_event) with one INSERT (InsertEvents, the one writer, C; E1-E3):
-- the same events as row by row, ids ascending in the order of the
-- history rows, next_xid read after the transaction had its id (E3), and
-- write_events' bad input.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET client_min_messages = warning;
\i test/sql/include/per_node.psql
-- E3: an event that is its transaction's first write: the transaction
-- takes its id before the event's, so next_xid is above it
BEGIN;
SELECT write_event(99, 'test.first', 1, NULL, '{"version": 1}', '2026-02-02') AS first \gset
-- (the transaction's id on the node that stores the event: on Citus the
-- tenant's worker, which numbers an event written through the coordinator
-- itself, its id and next_xid, event_numbered_here)
SELECT next_xid > public.regress_xact_id(tenant_id) AS after_own_xid FROM event WHERE tenant_id = 99 AND type = 'test.first';
ROLLBACK;

-- the calls of the trigger (C: 'all'), counted in the transaction
SET track_functions = 'all';
BEGIN;
-- I8: each invoice's opening at the end of its statement, not at the commit
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
-- tenant 1 renews its three subscriptions in one statement (renew_due's
-- common path, issue 18); tenant 2 the same three one by one (renew_account)
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'in one statement'), (2, 2, 'one by one');
SELECT count(*) AS subscribed
  FROM (VALUES (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)) AS v (account, quantity),
       LATERAL (SELECT subscribe(v.account, 'zd_pro', '1 month', v.quantity, '2026-01-01')) AS s;
-- the largest ids before, per node (on Citus each worker numbers from
-- its own range)
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS last
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM event GROUP BY 1) AS b \gset
SELECT coalesce(jsonb_object_agg(b.node, b.id), '{}') AS last_history
  FROM (SELECT id >> 48 AS node, max(id) AS id FROM history GROUP BY 1) AS b \gset
SELECT renew_account(2, '2026-02-01') AS one_by_one;
SELECT pg_temp.calls('history_event', 1) AS writes_before \gset
SELECT renew_due('2026-02-01') AS in_one_statement;
-- E1: the same events, type and payload, in the same order per tenant
SELECT tenant_id, string_agg(type || ' ' || (payload ->> 'period_number'), ', ' ORDER BY id) AS events
  FROM event WHERE public.regress_ids_after(:'last', id) AND type LIKE 'subscription.%' GROUP BY tenant_id ORDER BY tenant_id;
SELECT (SELECT array_agg(ROW(e.type, e.payload, s.quantity)::text ORDER BY e.id)
          FROM event AS e JOIN subscription AS s ON s.tenant_id = e.tenant_id AND s.id = e.subscription_id
         WHERE public.regress_ids_after(:'last', e.id) AND e.tenant_id = 1 AND e.type LIKE 'subscription.%')
     = (SELECT array_agg(ROW(e.type, e.payload, s.quantity)::text ORDER BY e.id)
          FROM event AS e JOIN subscription AS s ON s.tenant_id = e.tenant_id AND s.id = e.subscription_id
         WHERE public.regress_ids_after(:'last', e.id) AND e.tenant_id = 2 AND e.type LIKE 'subscription.%') AS same_events;
-- the three renewals of tenant 1 were written by one call of the trigger,
-- which writes its events with one call of the writer: the renewals'
-- statement, and the openings of their invoices at the commit (one event
-- of invoice_record_opened for them all, issue 18), one call each
SELECT pg_temp.calls('history_event', 1) - :writes_before AS writes \gset
SELECT (SELECT count(*) FROM event WHERE public.regress_ids_after(:'last', id) AND tenant_id = 1) AS events, :writes AS writes;
-- ids ascending in the order of the history rows that gave them
SELECT (SELECT array_agg(e.subscription_id ORDER BY e.id) FROM event AS e
         WHERE public.regress_ids_after(:'last', e.id) AND e.tenant_id = 1 AND e.type = 'subscription.renewed')
     = (SELECT array_agg(h.subscription_id ORDER BY h.id) FROM history AS h
         WHERE public.regress_ids_after(:'last_history', h.id) AND h.tenant_id = 1 AND h.operation = 'subscription_update'
           AND h.details ? 'period_number') AS history_order;
-- E3: every event's next_xid is above the transaction's own id, read once
-- the ids were taken (on Citus the id on the tenant's worker, where the
-- history's trigger wrote them)
SELECT bool_and(next_xid > public.regress_xact_id(tenant_id)) AS after_own_xid FROM event WHERE public.regress_ids_after(:'last', id);
ROLLBACK;

-- write_events: the ids written, in order; a renewal.upcoming already
-- written for its period is not written again (E5), in one call as in two
BEGIN;
SELECT cardinality(write_events('{1,1,1}', '{renewal.upcoming,renewal.upcoming,test.other}', '{1,1,1}', '{1,1,NULL}',
                                ARRAY['{"version": 1, "renews_at": "2026-03-01T00:00:00Z"}',
                                      '{"version": 1, "renews_at": "2026-03-01T00:00:00Z"}', '{"version": 1}']::jsonb[],
                                '{2026-02-20,2026-02-20,2026-02-20}')) AS written;
SELECT write_event(1, 'renewal.upcoming', 1, 1, '{"version": 1, "renews_at": "2026-03-01T00:00:00Z"}', '2026-02-21') AS again;
SELECT write_events('{}', '{}', '{}', '{}', '{}', '{}') AS none;
ROLLBACK;

-- E3: a claim hands out a prefix.  A statement takes all its ids, then
-- reads next_xid once, so an id of another statement taken later can be
-- ready before an earlier one: the claim stops at the first id not ready
-- and hands out the later one only with it (a filter would hand it out and
-- move the position past the earlier one for ever)
BEGIN;
SELECT coalesce(max(id), 0) AS top FROM event \gset
INSERT INTO event_consumer (consumer, position) VALUES ('prefix', :top);
INSERT INTO event (id, type, payload, at, next_xid, tenant_id) VALUES
    (:top + 1, 'test.earlier', '{"version": 1}', '2026-01-01', (pg_current_xact_id()::text::bigint + 1000)::text::xid8, 1),
    (:top + 2, 'test.later', '{"version": 1}', '2026-01-01', '3', 1);
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
-- on Citus (docs/citus.md) each worker numbers the events it stores and
-- the claim reads each node's committed events there, in a connection of
-- its own: none of this transaction's (test/citus.sh checks the prefix
-- per node, with a transaction in flight on a worker)
SELECT count(*) FILTER (WHERE type LIKE 'test.%') AS uncommitted_claimed FROM claim_events('prefix', 100000);
\else
SELECT id - :top AS id, type FROM claim_events('prefix');
UPDATE event SET next_xid = '3' WHERE id = :top + 1;
SELECT id - :top AS id, type FROM claim_events('prefix');
\endif
ROLLBACK;

-- bad input (docs/errors-and-settings.md): 22004, 22023
SELECT pg_temp.error_of($$SELECT subscription.write_events(NULL, '{a}', '{1}', '{1}', '{"{\"version\": 1}"}', '{2026-01-01}')$$);
SELECT pg_temp.error_of($$SELECT subscription.write_events('{1}', '{a,b}', '{1}', '{1}', '{"{\"version\": 1}"}', '{2026-01-01}')$$);
SELECT pg_temp.error_of($$SELECT subscription.write_events('{{1}}', '{{a}}', '{{1}}', '{{1}}', '{{"{\"version\": 1}"}}', '{{2026-01-01}}')$$);
SELECT pg_temp.error_of($$SELECT subscription.write_events('{1}', ARRAY[NULL::text], '{1}', '{1}', '{"{\"version\": 1}"}', '{2026-01-01}')$$);
SELECT pg_temp.error_of($$SELECT subscription.write_events('{1,1}', '{a,b}', '{1,1}', '{1,1}', '{"{\"version\": 1}","{\"v\": 1}"}', '{2026-01-01,2026-01-01}')$$);
SELECT pg_temp.error_of($$SELECT subscription.write_event(NULL, 'a', 1, 1, '{"version": 1}', '2026-01-01')$$);
SELECT pg_temp.error_of($$SELECT subscription.write_event(1, 'a', 1, 1, '{"v": 1}', '2026-01-01')$$);
RESET track_functions;

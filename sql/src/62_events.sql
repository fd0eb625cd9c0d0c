-- The outbox (issue 20, docs/integrating.md): every billing change writes
-- its events in its own transaction.  The events are derived in one place
-- from the history rows (R8) that every change already writes: a row
-- trigger on history maps each operation to its events (history_events),
-- whatever path wrote the row (record_history, the license guard, C).
-- Events without a history row come from announce_renewals (the notice
-- window) and from the trimmed archive (data.trimmed).  Consumers read
-- them with claim_events and ack_events; prune_events deletes what every
-- consumer has acknowledged.

-- Internal (C, events.c): the next transaction id to be assigned, read now.
CREATE FUNCTION subscription.event_next_xid()
RETURNS xid8
AS 'MODULE_PATHNAME', 'event_next_xid'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.event_next_xid() IS
'Internal (C): the next transaction id to be assigned, read at the call (the outbox''s horizon)';

-- Internal (C, events.c): whether a writer of events notifies
-- (subscription.notify_events; on: whether a listener awaits, the
-- doorbell tried for the transaction).
CREATE FUNCTION subscription.event_doorbell()
RETURNS boolean
AS 'MODULE_PATHNAME', 'event_doorbell'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.event_doorbell() IS
'Internal (C): whether a writer of events sends NOTIFY subscription_events (subscription.notify_events; on: when a listener awaits, await_events())';

-- A listener of NOTIFY subscription_events declares itself waiting (C,
-- events.c): true returns once every writer that found no listener has
-- ended; from then on every writer notifies, until false.  A listener
-- calls it, claims once more, then sleeps.
CREATE FUNCTION subscription.await_events(waiting boolean DEFAULT true)
RETURNS boolean
AS 'MODULE_PATHNAME', 'await_events'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.await_events(boolean) IS
'Declare this session a listener awaiting NOTIFY subscription_events (true, once the writers that found none have ended), or no longer (false)';

-- The one writer of events (E1-E3, docs/rules.md; C, events.c
-- InsertEvents): the events of a statement, in the order given, with one
-- INSERT:
--   E3: the transaction has its id before it takes an event id, and
--   next_xid is read once, after every id of the statement was taken: so
--   for each event, every transaction at or above its next_xid takes its
--   ids after it;
--   NOTIFY subscription_events once per statement, with the last id
--   written, sent on commit, when the doorbell rings (event_doorbell; not
--   from a Citus worker, docs/citus.md).
-- A renewal.upcoming already written for its period is not written again.
-- Returns the ids written, in order.  It trusts its arrays: write_events()
-- checks them first; the history trigger (history_event, C) builds them
-- from its own rows and calls the same C writer.  Only the extension's
-- owner calls it: no role is granted it.
CREATE FUNCTION subscription.insert_events(tenant_ids bigint[], types text[], account_ids bigint[],
                                           subscription_ids bigint[], payloads jsonb[], ats timestamptz[])
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'insert_events'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.insert_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) IS
'Internal: insert a statement''s events, already checked, with one INSERT in the E3 order (E1-E3); write_events() and the history trigger only';

-- write_events(): the events of a statement, checked (every array given,
-- of one length, each event with its tenant, type, payload with its
-- version, and time), then insert_events().  Only the extension's owner
-- calls it: no role is granted it.
CREATE FUNCTION subscription.write_events(tenant_ids bigint[], types text[], account_ids bigint[],
                                          subscription_ids bigint[], payloads jsonb[], ats timestamptz[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := pg_catalog.cardinality(types);
    bad jsonb;
BEGIN
    PERFORM subscription.require_arguments('write_events',
        '{tenant_ids,types,account_ids,subscription_ids,payloads,ats}',
        ARRAY[tenant_ids IS NULL, types IS NULL, account_ids IS NULL, subscription_ids IS NULL,
              payloads IS NULL, ats IS NULL]);
    IF pg_catalog.array_ndims(types) > 1
       OR n IS DISTINCT FROM pg_catalog.cardinality(tenant_ids) OR n IS DISTINCT FROM pg_catalog.cardinality(account_ids)
       OR n IS DISTINCT FROM pg_catalog.cardinality(subscription_ids) OR n IS DISTINCT FROM pg_catalog.cardinality(payloads)
       OR n IS DISTINCT FROM pg_catalog.cardinality(ats) THEN
        RAISE EXCEPTION 'the arrays of write_events() must be of one dimension and of the same length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.array_position(tenant_ids, NULL) IS NOT NULL OR pg_catalog.array_position(types, NULL) IS NOT NULL
       OR pg_catalog.array_position(payloads, NULL) IS NOT NULL OR pg_catalog.array_position(ats, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'an event must have its tenant, type, payload and time'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT p INTO bad FROM pg_catalog.unnest(payloads) AS p
     WHERE pg_catalog.jsonb_typeof(p OPERATOR(pg_catalog.->) 'version') IS DISTINCT FROM 'number' LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the payload of an event must carry its version'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The payload was %s.', bad);
    END IF;
    RETURN subscription.insert_events(tenant_ids, types, account_ids, subscription_ids, payloads, ats);
END
$$;

COMMENT ON FUNCTION subscription.write_events(bigint[], text[], bigint[], bigint[], jsonb[], timestamptz[]) IS
'Internal: write a statement''s events with one INSERT, in the transaction of the change (E1-E3); the extension''s own functions only';

-- One event: write_events() with one (NULL: a renewal.upcoming already
-- written for its period).
CREATE FUNCTION subscription.write_event(tenant_id bigint, type text, account_id bigint, subscription_id bigint,
                                         payload jsonb, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (subscription.write_events(ARRAY[write_event.tenant_id], ARRAY[write_event.type], ARRAY[write_event.account_id],
                                      ARRAY[write_event.subscription_id], ARRAY[write_event.payload],
                                      ARRAY[write_event.at]))[1];
END
$$;

COMMENT ON FUNCTION subscription.write_event(bigint, text, bigint, bigint, jsonb, timestamptz) IS
'Internal: write one event in the transaction of the change (write_events, E1-E3); the extension''s own functions only';

-- A time in an event's payload (C, events.c EventTime): UTC, ISO 8601
-- with a Z, whatever the session's TimeZone, so that a payload is the same
-- for every reader.  The history trigger's payloads show their times with
-- the same C function.
CREATE FUNCTION subscription.event_time(t timestamptz)
RETURNS text
AS 'MODULE_PATHNAME', 'event_time'
LANGUAGE C STABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION subscription.event_time(timestamptz) IS
'Internal: a time as an event payload shows it (UTC, ISO 8601, Z)';

CREATE FUNCTION subscription.event_interval(span interval)
RETURNS text
AS 'MODULE_PATHNAME', 'event_interval'
LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

COMMENT ON FUNCTION subscription.event_interval(interval) IS
'Internal: a duration as an event payload shows it (PostgreSQL''s default style, ''1 mon'', whatever the session''s IntervalStyle)';

-- The events of a history row (E1): one place for the mapping of an
-- operation to event types and versioned payloads (docs/integrating.md), in
-- C (events.c HistoryRowEvents), which the history trigger calls for each
-- row; this function shows it to SQL.  details is the history row's: the
-- row on insert, {"column": {"old", "new"}} on update, {"members": [...]}
-- for licenses.  ROWS 2: with the default estimate of 1,000 events a row, a
-- plan over a large statement could cost enough to be JIT-compiled.
CREATE FUNCTION subscription.history_events(operation text, details jsonb)
RETURNS TABLE (type text, payload jsonb)
AS 'MODULE_PATHNAME', 'history_events'
LANGUAGE C STABLE ROWS 2
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.history_events(text, jsonb) IS
'The events of a history row: event types and versioned payloads per operation (E1, docs/integrating.md)';

-- Trigger (C, events.c): the events of a statement's history rows, in its
-- transaction, with one write (InsertEvents, the writer of insert_events;
-- E1): in the order of the history rows, each row's in the order of the
-- mapping (HistoryRowEvents, history_events()).  Every history row is
-- written by RecordHistory() (history.c), whose rows of one RowWrites are
-- one statement here (rowwrite.c).  The transition rows are read alone,
-- without a query.  A restore copies the events with the history: none is
-- written again.  It writes as the extension's owner, its search_path
-- pinned (identity.c).
CREATE FUNCTION subscription.history_event()
RETURNS trigger
AS 'MODULE_PATHNAME', 'history_event'
LANGUAGE C;

COMMENT ON FUNCTION subscription.history_event() IS
'Trigger: the events of a statement''s history rows, written in its transaction with one INSERT (E1)';

CREATE TRIGGER history_events AFTER INSERT ON subscription.history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.history_event();

-- Trigger: data.trimmed, one event per statement of the archive and
-- subscription, with the count of rows per table (E1), with one
-- write_events().
CREATE FUNCTION subscription.trimmed_event()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tenants bigint[];
    accounts bigint[];
    subs bigint[];
    payloads jsonb[];
    ats timestamptz[];
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(e.tenant_id ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(e.account_id ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(e.subscription_id ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(pg_catalog.jsonb_build_object('version', 1, 'tables', e.tables)
                     ORDER BY e.tenant_id, e.account_id, e.subscription_id),
           array_agg(e.at ORDER BY e.tenant_id, e.account_id, e.subscription_id)
      INTO tenants, accounts, subs, payloads, ats
      FROM (SELECT t.tenant_id, t.account_id, t.subscription_id, pg_catalog.max(t.at) AS at,
                   pg_catalog.jsonb_object_agg(t.relation, t.n) AS tables
              FROM (SELECT n.tenant_id, n.account_id, n.subscription_id, n.relation,
                           pg_catalog.max(n.at) AS at, pg_catalog.count(*) AS n
                      FROM new_rows AS n GROUP BY 1, 2, 3, 4) AS t
             GROUP BY 1, 2, 3) AS e;
    IF tenants IS NOT NULL THEN
        PERFORM subscription.write_events(tenants, array_fill('data.trimmed'::text, ARRAY[cardinality(tenants)]),
                                          accounts, subs, payloads, ats);
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.trimmed_event() IS
'Trigger: a data.trimmed event per account and subscription with the rows trimmed per table (E1)';

CREATE TRIGGER trimmed_events AFTER INSERT ON subscription.trimmed
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.trimmed_event();

-- renewal.upcoming (E5): once per subscription and period, when it enters
-- the notice window, that is when it appears in renewal_notice (the one
-- definition of the window).  Idempotent: run it with the renewals, as
-- often as wanted.  Returns how many events it wrote.
CREATE FUNCTION subscription.announce_renewals()
RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    unannounced bigint[];
    trials bigint[];
    tenants bigint[];
    types text[];
    accounts bigint[];
    subs bigint[];
    payloads jsonb[];
BEGIN
    -- E5: renewal_notice (the window, the amounts) is read for the
    -- subscriptions not announced yet alone: its usage and prices cost
    -- a call per subscription, and every monthly subscription is in a
    -- 30-day window at every step (the 3-year simulation, issue 20)
    unannounced := ARRAY(SELECT s.id FROM subscription.subscription AS s
                          WHERE NOT EXISTS (SELECT FROM subscription.event AS e
                                             WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                               AND e.type = 'renewal.upcoming'
                                               AND e.payload ->> 'renews_at' = subscription.event_time(upper(s.period))));
    -- trial.ending: once per trial (one per subscription), when its end
    -- enters the notice window; then, what its product makes of it.  The
    -- view is read for the trials not announced yet alone.
    trials := ARRAY(SELECT s.id FROM subscription.subscription AS s
                     WHERE s.status = 'trialing'
                       AND NOT EXISTS (SELECT FROM subscription.event AS e
                                        WHERE e.tenant_id = s.tenant_id AND e.subscription_id = s.id
                                          AND e.type = 'trial.ending'));
    -- which of them renewal_notice shows (its rule: the window, a
    -- subscription that renews), by its own columns alone (the terms' and
    -- prices' join removed), then the renewals' terms and prices at once
    -- (renewal_notices: each price once for the run, not once a notice);
    -- the renewals' events, then the trials', each in the order of the
    -- tenant, account and subscription: one write_events (issue 20: one
    -- INSERT a run, not one a notice)
    SELECT array_agg(n.tenant_id ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.type ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.account_id ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.subscription_id ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id),
           array_agg(n.payload ORDER BY n.o, n.tenant_id, n.account_id, n.subscription_id)
      INTO tenants, types, accounts, subs, payloads
      FROM (SELECT 1 AS o, p.tenant_id, r.account_id, r.subscription_id, 'renewal.upcoming' AS type,
                   pg_catalog.jsonb_build_object('version', 1, 'renews_at', subscription.event_time(r.renews_at),
                       'plan', p.plan, 'plan_version', p.plan_version, 'cycle', subscription.event_interval(p.cycle),
                       'quantity', p.quantity,
                       'amount', p.amount, 'currency', p.currency, 'discount', p.discount, 'credit', p.credit) AS payload
              FROM subscription.renewal_notice AS r
              JOIN subscription.renewal_notices(ARRAY(SELECT r.subscription_id FROM subscription.renewal_notice AS r
                                                       WHERE NOT r.overdue AND r.subscription_id = ANY (unannounced)))
                   AS p ON p.subscription_id = r.subscription_id
             WHERE NOT r.overdue AND r.subscription_id = ANY (unannounced)
            UNION ALL
            SELECT 2, s.tenant_id, r.account_id, r.subscription_id, 'trial.ending',
                   pg_catalog.jsonb_build_object('version', 1, 'trial_end', subscription.event_time(r.renews_at),
                       'plan', s.plan, 'then', r.trial_end)
              FROM subscription.renewal_notice AS r
              JOIN subscription.subscription AS s ON s.id = r.subscription_id
             WHERE NOT r.overdue AND r.trial_end IS NOT NULL AND r.subscription_id = ANY (trials)) AS n;
    IF types IS NULL THEN
        RETURN 0;
    END IF;
    -- a renewal.upcoming already written for its period is not written again
    RETURN pg_catalog.cardinality(subscription.write_events(tenants, types, accounts, subs, payloads,
        pg_catalog.array_fill(subscription.now(), ARRAY[pg_catalog.cardinality(types)])));
END
$$;

COMMENT ON FUNCTION subscription.announce_renewals() IS
'Write renewal.upcoming once per subscription and period, and trial.ending once per trial, entering the notice window (renewal_notice); idempotent (E5)';

-- E3 on one node: the events of this node's shards (the whole table on a
-- single server) after a consumer's positions, by range of ids (id >> 48,
-- the node that numbered them, positions a JSON object of range to
-- position): in the range this node numbers, the prefix of the next ids
-- whose next_xid is below this node's oldest running transaction, up to
-- the first that is not (ids are not taken in the order next_xid is read:
-- write_events takes a statement's ids, then reads it once, so a later id
-- may be ready before an earlier one); in range 0 on a Citus worker, the
-- events distribute() copied there from before (committed), each ready.
-- At most max per range, in id order.  A shard of the event table moved
-- here from another worker holds that node's range: 55000 (docs/citus.md).
CREATE FUNCTION subscription.ready_events(positions jsonb, max integer)
RETURNS SETOF subscription.event
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shards bigint[] := subscription.local_shards('subscription.event');
    own bigint := 0;
    ranges bigint[] := '{0}';
    tables text[];
    parts text[];
    moved bigint;
BEGIN
    PERFORM subscription.require_arguments('ready_events', '{positions,max}', ARRAY[positions IS NULL, max IS NULL]);
    IF max < 1 OR pg_catalog.jsonb_typeof(positions) <> 'object' THEN
        RAISE EXCEPTION 'ready_events() takes positions as a JSON object and max from 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF shards = '{NULL}' THEN
        tables := '{subscription.event}';
    ELSE
        EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO own;
        tables := ARRAY(SELECT pg_catalog.shard_name('subscription.event'::pg_catalog.regclass, s) FROM unnest(shards) AS s);
        IF own > 0 THEN
            ranges := ARRAY[0, own];
        END IF;
        IF tables = '{}' THEN
            RETURN;
        END IF;
        EXECUTE (SELECT pg_catalog.string_agg(pg_catalog.format(
                            '(SELECT e.id FROM %s AS e WHERE (e.id >= 281474976710656 AND e.id < $1 << 48) OR e.id >= ($1 + 1) << 48 LIMIT 1)', t), ' UNION ALL ')
                   FROM unnest(tables) AS t) || ' LIMIT 1'
           INTO moved USING own;
        IF moved IS NOT NULL THEN
            RAISE EXCEPTION 'event % on node % was numbered by node %', moved, own, moved >> 48
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'A shard of subscription.event was moved here from another worker: a consumer''s position per node would skip its events.',
                      HINT = 'Claim events where every shard of subscription.event stays on the node that numbered its events (docs/citus.md).';
        END IF;
    END IF;
    -- the next max ids of each range, read with the index on id of each table
    SELECT pg_catalog.array_agg(pg_catalog.format(
               '(SELECT e.* FROM %s AS e WHERE e.id > %s AND e.id < %s ORDER BY e.id LIMIT %s)',
               t, GREATEST(coalesce((positions ->> r::text)::bigint, 0), r << 48), (r + 1) << 48, max))
      INTO parts
      FROM unnest(tables) AS t, unnest(ranges) AS r;
    RETURN QUERY EXECUTE pg_catalog.format($q$
        SELECT (h.event).* FROM (
            SELECT e AS event,
                   pg_catalog.row_number() OVER w AS n,
                   pg_catalog.bool_and(e.id >> 48 <> $1
                                       OR e.next_xid <= pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot())) OVER w AS ready
              FROM (%s) AS e
            WINDOW w AS (PARTITION BY e.id >> 48 ORDER BY e.id)) AS h
         WHERE h.ready AND h.n <= $2
         ORDER BY (h.event).id$q$, pg_catalog.array_to_string(parts, ' UNION ALL '))
      USING own, max;
END
$$;

COMMENT ON FUNCTION subscription.ready_events(jsonb, integer) IS
'Internal: the events of this node ready for a consumer after its positions per range of ids, at most max per range (E3); claim_events() only';

-- E4: hand out the next events of a consumer: those after its position
-- whose every earlier id has committed or ended (ready_events: next_xid
-- below the oldest running transaction of the node that numbered them,
-- events.c, for each of them and every earlier one), in id order, at most
-- max.  One claim per consumer at a time (E6): a claim in flight (until
-- acknowledged or until its lease ends) or another worker claiming this
-- instant gives nothing.  A new consumer starts at the oldest event.
-- On Citus (docs/citus.md) each node numbers the events it stores from its
-- own range (event_numbered_here), so the consumer keeps a position per
-- range (event_consumer.node), each node's events read there by
-- ready_events and held back by its own transactions; the ranges share
-- max, each in turn, and the events come out in id order (range by range).
CREATE FUNCTION subscription.claim_events(consumer text, max integer DEFAULT 100, lease interval DEFAULT '1 minute')
RETURNS SETOF subscription.event
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := claim_events.consumer;
    k subscription.event_consumer;
    distributed boolean := false;
    positions jsonb;
    got jsonb := '[]';
    failed text;
    batch subscription.event[];
    claimed record;
    until timestamptz;
BEGIN
    PERFORM subscription.require_arguments('claim_events', '{consumer,max,lease}',
                                           ARRAY[c IS NULL, max IS NULL, lease IS NULL]);
    IF c = '' THEN
        RAISE EXCEPTION 'a consumer''s name must not be empty'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF max < 1 OR max > 100000 THEN
        RAISE EXCEPTION 'max % is out of range', max
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Claim between 1 and 100000 events at a time.';
    END IF;
    IF lease <= interval '0' THEN
        RAISE EXCEPTION 'lease % is not a positive interval', lease
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition
                                 WHERE logicalrelid OPERATOR(pg_catalog.=) ''subscription.event''::pg_catalog.regclass)'
           INTO distributed;
    END IF;
    -- E6: the consumer's row of range 0 (its only one on a single server)
    -- is its claimers' turn: another worker of the consumer claiming now,
    -- nothing for this one, at once
    SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c AND x.node = 0 FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        IF EXISTS (SELECT FROM subscription.event_consumer AS x WHERE x.consumer = c AND x.node = 0) THEN
            RETURN;
        END IF;
        -- a new consumer, from the oldest event
        INSERT INTO subscription.event_consumer (consumer) VALUES (c) ON CONFLICT DO NOTHING;
        SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c AND x.node = 0 FOR UPDATE SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    until := pg_catalog.clock_timestamp();  -- wall time: a lease
    IF EXISTS (SELECT FROM subscription.event_consumer AS x WHERE x.consumer = c AND x.claimed_until > until) THEN
        RETURN;
    END IF;
    until := until + lease;
    SELECT pg_catalog.jsonb_object_agg(x.node, x.position) INTO positions
      FROM subscription.event_consumer AS x WHERE x.consumer = c;
    IF distributed THEN
        -- each node's ready events, read there (a connection of its own,
        -- outside this transaction: they are read, not written)
        EXECUTE 'SELECT pg_catalog.string_agg(w.nodeid || '': '' || w.result, ''; '') FILTER (WHERE NOT w.success),
                        coalesce(pg_catalog.jsonb_agg(e.e) FILTER (WHERE w.success AND e.e IS NOT NULL), ''[]'')
                   FROM run_command_on_all_nodes($1) AS w
                   LEFT JOIN LATERAL pg_catalog.jsonb_array_elements(CASE WHEN w.success THEN w.result::jsonb END) AS e (e) ON true'
           INTO failed, got
          USING pg_catalog.format('SELECT coalesce(pg_catalog.jsonb_agg(e ORDER BY e.id), ''[]'') FROM subscription.ready_events(%L, %s) AS e',
                                  positions, max);
        IF failed IS NOT NULL THEN
            RAISE EXCEPTION 'the events of every node could not be read'
                USING ERRCODE = 'connection_failure', DETAIL = failed;
        END IF;
        batch := ARRAY(SELECT e FROM pg_catalog.jsonb_populate_recordset(NULL::subscription.event, got) AS e);
    ELSE
        -- one range (0) on a single server: its ready prefix is the claim
        RETURN QUERY
        WITH ready AS (
            SELECT * FROM subscription.ready_events(positions, max)),
        claim AS (
            UPDATE subscription.event_consumer AS x
               SET claimed_up_to = b.up_to, claimed_until = until
              FROM (SELECT pg_catalog.max(r.id) AS up_to FROM ready AS r) AS b
             WHERE x.consumer = c AND x.node = 0 AND b.up_to IS NOT NULL)
        SELECT r.* FROM ready AS r ORDER BY r.id;
        RETURN;
    END IF;
    -- at most max: each range's next events in turn, each range a prefix
    batch := ARRAY(SELECT b FROM (SELECT b, pg_catalog.row_number() OVER (PARTITION BY b.id >> 48 ORDER BY b.id) AS n
                                    FROM unnest(batch) AS b) AS r
                    ORDER BY r.n, (r.b).id LIMIT max);
    -- the claim: up to its last id in each range, until the lease ends
    UPDATE subscription.event_consumer AS x SET claimed_up_to = NULL, claimed_until = NULL
     WHERE x.consumer = c AND x.claimed_up_to IS NOT NULL;
    FOR claimed IN SELECT b.id >> 48 AS node, pg_catalog.max(b.id) AS up_to FROM unnest(batch) AS b GROUP BY 1 LOOP
        UPDATE subscription.event_consumer AS x SET claimed_up_to = claimed.up_to, claimed_until = until
         WHERE x.consumer = c AND x.node = claimed.node;
        IF NOT FOUND THEN
            INSERT INTO subscription.event_consumer (consumer, node, claimed_up_to, claimed_until)
            VALUES (c, claimed.node, claimed.up_to, until);
        END IF;
    END LOOP;
    RETURN QUERY SELECT b.* FROM unnest(batch) AS b ORDER BY b.id;
END
$$;

COMMENT ON FUNCTION subscription.claim_events(text, integer, interval) IS
'The consumer''s next events in commit order, at most max, held for it until acknowledged or the lease ends (E4, E6); on Citus per node''s range of ids (E3)';

-- Acknowledge a consumer's events up to an id it claimed: its position
-- moves there (never back); the claim ends when all of it is acknowledged.
-- Returns the position.  On Citus the ids of a claim come range by range
-- (id >> 48, the node that numbered them), in id order: up to an id is
-- its range's position up to it, and every lower range's claim whole.
CREATE FUNCTION subscription.ack_events(consumer text, up_to bigint)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c text := ack_events.consumer;
    k subscription.event_consumer;
    range_of integer;
    acked timestamptz;
BEGIN
    PERFORM subscription.require_arguments('ack_events', '{consumer,up_to}', ARRAY[c IS NULL, up_to IS NULL]);
    -- its claimers' turn (claim_events)
    PERFORM FROM subscription.event_consumer AS x WHERE x.consumer = c AND x.node = 0 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'event consumer "%" does not exist', c
            USING ERRCODE = 'no_data_found', HINT = 'A consumer exists from its first claim_events().';
    END IF;
    range_of := GREATEST(up_to >> 48, 0);
    SELECT * INTO k FROM subscription.event_consumer AS x WHERE x.consumer = c AND x.node = range_of FOR UPDATE;
    IF up_to <= coalesce(k.position, 0) AND FOUND THEN
        RETURN k.position;
    END IF;
    IF k.claimed_up_to IS NULL OR up_to > k.claimed_up_to THEN
        RAISE EXCEPTION 'event % was not claimed by consumer "%"', up_to, c
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The consumer''s position is %s and its claim ends at %s.',
                                  coalesce(k.position, 0), coalesce(k.claimed_up_to::text, 'none')),
                  HINT = 'Acknowledge the events claim_events() returned, up to the last one delivered.';
    END IF;
    acked := pg_catalog.clock_timestamp();  -- wall time: when a consumer acknowledged
    UPDATE subscription.event_consumer AS x
       SET position = x.claimed_up_to, acked_at = acked, claimed_up_to = NULL, claimed_until = NULL
     WHERE x.consumer = c AND x.node < range_of AND x.claimed_up_to IS NOT NULL;
    UPDATE subscription.event_consumer AS x
       SET position = up_to, acked_at = acked,
           claimed_up_to = CASE WHEN up_to < k.claimed_up_to THEN k.claimed_up_to END,
           claimed_until = CASE WHEN up_to < k.claimed_up_to THEN k.claimed_until END
     WHERE x.consumer = c AND x.node = range_of;
    RETURN up_to;
END
$$;

COMMENT ON FUNCTION subscription.ack_events(text, bigint) IS
'Acknowledge a consumer''s claimed events up to an id: its position moves there (E6); on Citus every lower range''s claim with it';

-- E7: delete the events older than subscription.event_retention that every
-- consumer has acknowledged (with no consumer, every event older than it):
-- in each range of ids (on Citus, per node), up to the least position
-- there (a consumer that never claimed in a range acknowledged none of it).
CREATE PROCEDURE subscription.prune_events(INOUT pruned bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    consumers bigint;
    horizons jsonb;
    cutoff timestamptz;
BEGIN
    -- loads the module, which defines subscription.event_retention
    PERFORM subscription.event_next_xid();
    cutoff := subscription.now() - pg_catalog.current_setting('subscription.event_retention')::interval;
    SELECT pg_catalog.count(DISTINCT k.consumer) INTO consumers FROM subscription.event_consumer AS k;
    SELECT coalesce(pg_catalog.jsonb_object_agg(h.node, h.horizon), '{}') INTO horizons
      FROM (SELECT k.node, pg_catalog.min(k.position) AS horizon
              FROM subscription.event_consumer AS k
             GROUP BY k.node
            HAVING pg_catalog.count(*) = consumers) AS h;
    DELETE FROM subscription.event AS e
     WHERE e.at < cutoff
       AND (consumers = 0 OR e.id <= (horizons ->> (e.id >> 48)::text)::bigint);
    GET DIAGNOSTICS pruned = ROW_COUNT;
END
$$;

COMMENT ON PROCEDURE subscription.prune_events(bigint) IS
'Delete the events older than subscription.event_retention that every consumer has acknowledged (E7), per node''s range of ids on Citus';

-- On Citus (distribute()): an event stored on a node is numbered by it:
-- one written through the coordinator comes with the coordinator's id and
-- next_xid, and takes the node's own (E3 as in write_events: the
-- transaction's id here first, then the event's id, then next_xid), so
-- that each node's events are held back by its own transactions and come
-- out in the order of its commits.  An event the node numbered keeps its id.
CREATE FUNCTION subscription.event_numbered_here()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    own bigint;
BEGIN
    EXECUTE 'SELECT groupid FROM pg_catalog.pg_dist_local_group' INTO own;
    IF NEW.id >> 48 IS DISTINCT FROM own THEN
        PERFORM pg_catalog.pg_current_xact_id();
        NEW.id := pg_catalog.nextval('subscription.event_id_seq');
        NEW.next_xid := subscription.event_next_xid();
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.event_numbered_here() IS
'Trigger (Citus, made by distribute()): an event stored on a node takes the node''s own id and next_xid unless the node numbered it (E3)';

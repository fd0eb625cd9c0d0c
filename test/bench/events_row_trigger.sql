-- The outbox as it was before events were written per statement (issue 20):
-- a row trigger on history, one write_event() (one PL/pgSQL call, one
-- nextval, one event_next_xid, one INSERT, one pg_notify) per event.  Kept
-- here, in the bench schema, so that events_floor.sh and events_overhead.sh
-- time it against the statement trigger in the same run: the trigger
-- history_events_row is created disabled; a case enables it and disables
-- history_events for its "row" state.
SET client_min_messages = warning;
CREATE SCHEMA IF NOT EXISTS bench;
CREATE FUNCTION bench.write_event_row(tenant_id bigint, type text, account_id bigint, subscription_id bigint,
                                         payload jsonb, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
-- the conflict target names the table's columns
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    PERFORM subscription.require_arguments('write_event_row', '{tenant_id,type,payload,at}',
        ARRAY[write_event_row.tenant_id IS NULL, write_event_row.type IS NULL, write_event_row.payload IS NULL, write_event_row.at IS NULL]);
    IF jsonb_typeof(write_event_row.payload -> 'version') IS DISTINCT FROM 'number' THEN
        RAISE EXCEPTION 'the payload of an event must carry its version'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The payload was %s.', write_event_row.payload);
    END IF;
    new_id := pg_catalog.nextval('subscription.event_id_seq');
    INSERT INTO subscription.event AS e (id, type, account_id, subscription_id, payload, at, next_xid, tenant_id)
    VALUES (new_id, write_event_row.type, write_event_row.account_id, write_event_row.subscription_id, write_event_row.payload,
            write_event_row.at, subscription.event_next_xid(), write_event_row.tenant_id)
    ON CONFLICT (tenant_id, subscription_id, (payload ->> 'renews_at')) WHERE type = 'renewal.upcoming' DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    -- a Citus worker commits its part of a distributed transaction with
    -- PREPARE TRANSACTION, which refuses a NOTIFY: there consumers poll;
    -- and so do they where subscription.notify_events is off
    IF pg_catalog.current_setting('subscription.notify_events', true) IS DISTINCT FROM 'off'
       AND NOT subscription.on_citus_worker() THEN
        PERFORM pg_catalog.pg_notify('subscription_events', new_id::text);
    END IF;
    RETURN new_id;
END
$$;

CREATE FUNCTION bench.history_event_row()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    e record;
BEGIN
    IF subscription.restoring_role() THEN
        RETURN NULL;
    END IF;
    FOR e IN SELECT * FROM subscription.history_events(NEW.operation, NEW.details) LOOP
        PERFORM bench.write_event_row(NEW.tenant_id, e.type, NEW.account_id, NEW.subscription_id, e.payload, NEW.at);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER history_events_row AFTER INSERT ON subscription.history
    FOR EACH ROW EXECUTE FUNCTION bench.history_event_row();
ALTER TABLE subscription.history DISABLE TRIGGER history_events_row;

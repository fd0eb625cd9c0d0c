-- Idempotency keys (issue 20, item 4; docs/integrating.md#idempotency-keys).
-- The caller names its request with the setting subscription.idempotency_key
-- (SET LOCAL, per transaction), so that every signature honours it without
-- an overload.  Each mutating public function's keyed form (and the C ones)
-- starts with
--     IF subscription.idempotency_requested() THEN
--         RETURN <cast of> subscription.idempotent(<itself>, tenant_id, <its arguments>);
--     END IF;
-- and idempotent() does the rest, once for all of them.

-- Whether the call is made under a key (and is not the call idempotent()
-- itself makes, which runs with the key cleared); in C, for the C
-- functions too (src/licenses.c).
CREATE FUNCTION subscription.idempotency_requested()
RETURNS boolean
AS 'MODULE_PATHNAME', 'idempotency_requested'
LANGUAGE C STABLE;

COMMENT ON FUNCTION subscription.idempotency_requested() IS
'Internal: whether the call is made under subscription.idempotency_key (Q1)';

-- Q1-Q4: the call of fn (a keyed form: the tenant first) with arguments
-- (all of them, in order, as a JSON array), made under the request's key:
--   Q1 the first call under a key runs fn, with the key cleared (a call it
--      makes is its own, not a request), and keeps its arguments and result
--      with the key, in the caller's transaction: a rollback keeps nothing;
--   Q2 a later call under the key, with the same function and arguments
--      (but at: a retry comes later), runs nothing and returns the kept
--      result; a concurrent one waits for the first (the key's row) and
--      then returns its result, or runs if the first rolled back;
--   Q3 the key with another function, other arguments or another actor
--      (current_actor()) is refused (23505), naming the first call;
--   Q4 a key is not blank and at most 255 characters long (22023).
-- Not SECURITY DEFINER: it runs fn with the caller's rights (the mutating
-- functions call it as the extension's owner).
CREATE FUNCTION subscription.idempotent(fn regprocedure, tenant bigint, arguments jsonb)
RETURNS jsonb
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request text := pg_catalog.current_setting('subscription.idempotency_key', true);
    p record;
    compared jsonb;
    call text;
    first record;
    outcome jsonb;
BEGIN
    IF request IS NULL OR request = '' THEN
        RAISE EXCEPTION 'idempotent() runs under subscription.idempotency_key only'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF fn IS NULL THEN
        RAISE EXCEPTION 'argument "fn" of idempotent() must not be null' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    -- Q4
    IF pg_catalog.btrim(request) = '' THEN
        RAISE EXCEPTION 'an idempotency key must not be blank'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'RESET subscription.idempotency_key to call without a key.';
    END IF;
    IF pg_catalog.length(request) > 255 THEN
        RAISE EXCEPTION 'an idempotency key is at most 255 characters long'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('subscription.idempotency_key has %s characters.', pg_catalog.length(request));
    END IF;
    SELECT pr.proname, pr.proargnames, pr.proargtypes::oid[] AS types, pr.proretset,
           pr.prorettype, pr.pronargs
      INTO p FROM pg_catalog.pg_proc AS pr WHERE pr.oid = fn;
    -- the call, with its arguments cast back to their types
    call := format('SELECT %s FROM subscription.%I(%s) AS r',
                   CASE WHEN p.proretset OR p.prorettype = 'pg_catalog.record'::pg_catalog.regtype
                        THEN 'COALESCE(pg_catalog.jsonb_agg(pg_catalog.to_jsonb(r)), ''[]'')'
                        WHEN p.prorettype = 'pg_catalog.void'::pg_catalog.regtype THEN '''null''::pg_catalog.jsonb'
                        ELSE 'pg_catalog.to_jsonb(r)' END,
                   p.proname,
                   (SELECT pg_catalog.string_agg(format('($1 OPERATOR(pg_catalog.->>) %s)::%s', i - 1,
                                                        pg_catalog.format_type(p.types[i - 1], NULL)), ', ' ORDER BY i)
                      FROM pg_catalog.generate_series(1, p.pronargs) AS i));
    -- a NULL tenant (an unknown id): the function's own error, nothing kept
    IF idempotent.tenant IS NULL THEN
        PERFORM pg_catalog.set_config('subscription.idempotency_key', '', true);
        EXECUTE call INTO outcome USING arguments;
        PERFORM pg_catalog.set_config('subscription.idempotency_key', request, true);
        RETURN outcome;
    END IF;
    -- Q2: what a retry must repeat, the time of the call aside
    SELECT pg_catalog.jsonb_agg(a.value ORDER BY a.n) INTO compared
      FROM pg_catalog.jsonb_array_elements(arguments) WITH ORDINALITY AS a (value, n)
     WHERE p.proargnames[a.n] IS DISTINCT FROM 'at';
    -- the key's row: a concurrent call with the key waits here for the first
    INSERT INTO subscription.idempotency_key AS k (tenant_id, key, function, arguments, actor, at)
    VALUES (idempotent.tenant, request, fn::text, COALESCE(compared, '[]'), subscription.current_actor(), subscription.now())
    ON CONFLICT ON CONSTRAINT idempotency_key_pkey DO NOTHING;
    IF NOT FOUND THEN
        SELECT k.function, k.arguments, k.actor, k.result, k.at INTO first
          FROM subscription.idempotency_key AS k
         WHERE k.tenant_id = idempotent.tenant AND k.key = request;
        -- Q3
        IF first.function <> fn::text OR first.arguments <> COALESCE(compared, '[]')
           OR first.actor <> subscription.current_actor() THEN
            RAISE EXCEPTION 'idempotency key "%" was used by another call', request
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('The key was first used by %s with arguments %s, actor %s, at %s.',
                                      first.function, first.arguments, first.actor, subscription.event_time(first.at)),
                      HINT = 'A retry repeats the arguments of the first call; another call takes a new key.';
        END IF;
        -- Q2
        RETURN first.result;
    END IF;
    -- Q1
    PERFORM pg_catalog.set_config('subscription.idempotency_key', '', true);
    EXECUTE call INTO outcome USING arguments;
    PERFORM pg_catalog.set_config('subscription.idempotency_key', request, true);
    UPDATE subscription.idempotency_key AS k SET result = outcome
     WHERE k.tenant_id = idempotent.tenant AND k.key = request;
    RETURN outcome;
END
$$;

COMMENT ON FUNCTION subscription.idempotent(regprocedure, bigint, jsonb) IS
'Internal: a mutating function''s call under subscription.idempotency_key: run once and kept, or the kept result (Q1-Q4)';

-- Q5: the keys older than subscription.idempotency_retention are deleted
-- (a retry after that runs again).
CREATE PROCEDURE subscription.prune_idempotency_keys(INOUT pruned bigint DEFAULT NULL)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- loads the module, which defines subscription.idempotency_retention
    PERFORM subscription.event_next_xid();
    DELETE FROM subscription.idempotency_key AS k
     WHERE k.at < subscription.now() - pg_catalog.current_setting('subscription.idempotency_retention')::interval;
    GET DIAGNOSTICS pruned = ROW_COUNT;
END
$$;

COMMENT ON PROCEDURE subscription.prune_idempotency_keys(bigint) IS
'Delete the idempotency keys older than subscription.idempotency_retention (Q5)';

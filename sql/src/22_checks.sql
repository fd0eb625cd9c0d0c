-- Argument checks shared by the mutating functions.

CREATE FUNCTION subscription.require_arguments(fn text, names text[], is_null boolean[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    FOR i IN 1 .. cardinality(names) LOOP
        IF is_null[i] THEN
            RAISE EXCEPTION 'argument "%" of %() must not be null', names[i], fn
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.require_arguments(text, text[], boolean[]) IS 'Internal: 22004 for a NULL required argument';

-- The value checks that several functions share, each with its one message.
CREATE FUNCTION subscription.require_cycle(cycle interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT subscription.is_valid_cycle(cycle) THEN
        RAISE EXCEPTION 'cycle % is not a positive billing cycle', cycle
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an interval such as ''1 month'', ''1 year'', ''30 days'' or ''3 years''.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_cycle(interval) IS 'Internal: 22023 unless a positive billing cycle';

CREATE FUNCTION subscription.require_renewal(renewal text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT renewal OPERATOR(pg_catalog.=) ANY (subscription.renewal_options()) THEN
        RAISE EXCEPTION 'unknown renewal option "%"', renewal
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('The renewal options are %s.', subscription.renewal_options());
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_renewal(text) IS 'Internal: 22023 unless a renewal option (R6)';

CREATE FUNCTION subscription.require_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM subscription.account AS a WHERE a.id OPERATOR(pg_catalog.=) require_account.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_account(bigint) IS 'Internal: P0002 unless the account exists';

-- A closed account (close_account) takes nothing new: P0002 unless the
-- account exists, 55000 if it is closed.
CREATE FUNCTION subscription.require_open_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    closed timestamptz;
BEGIN
    PERFORM subscription.require_account(account_id);
    SELECT a.closed_at INTO closed FROM subscription.account AS a WHERE a.id OPERATOR(pg_catalog.=) require_open_account.account_id;
    IF closed IS NOT NULL THEN
        RAISE EXCEPTION 'account % is closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was closed at %s.', closed),
                  HINT = 'A closed account takes no new subscription; open a new account.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_open_account(bigint) IS 'Internal: P0002 unless the account exists, 55000 if it is closed';

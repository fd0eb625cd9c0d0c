-- Periods: a subscription's periods are computed from its anchor.

-- The k-th period (k >= 1) of a subscription anchored at anchor: computed
-- from the anchor, so month ends do not drift (Jan 31, Feb 28, Mar 31).
-- A cycle that is not positive, or an infinite anchor, is refused (22023).
CREATE FUNCTION subscription.nth_period(anchor timestamptz, cycle interval, k integer)
RETURNS tstzrange
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the check an expression (no statement per call: issue 18), its error require_cycle's
    IF NOT subscription.is_valid_cycle(cycle) THEN
        PERFORM subscription.require_cycle(cycle);
    END IF;
    IF NOT isfinite(anchor) THEN
        RAISE EXCEPTION 'the anchor of a period must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('nth_period() was given %s.', anchor);
    END IF;
    RETURN tstzrange(anchor + ((k - 1) * cycle),
                     anchor + (k * cycle), '[)');
END
$$;

COMMENT ON FUNCTION subscription.nth_period(timestamptz, interval, integer) IS 'The k-th period of an anchored cycle, computed from the anchor';

-- The k of the period [anchor + (k-1) cycle, anchor + k cycle) that holds
-- "at" (k may be 0 or less before the anchor; callers use k >= 0).  A cycle
-- that is not positive, or an infinite anchor or time, is refused (22023),
-- as by nth_period.
CREATE FUNCTION subscription.period_containing(anchor timestamptz, cycle interval, at timestamptz)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    k integer;
BEGIN
    PERFORM subscription.require_cycle(cycle);
    IF NOT isfinite(anchor) OR NOT isfinite(at) THEN
        RAISE EXCEPTION 'the anchor of a period and the time in it must be finite'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('period_containing() was given %s and %s.', anchor, at);
    END IF;
    -- a guess from the average length, then exact steps (months vary)
    k := floor(extract(epoch FROM at - anchor) / extract(epoch FROM cycle))::integer + 1;
    WHILE anchor + ((k - 1) * cycle) > at LOOP
        k := k - 1;
    END LOOP;
    WHILE anchor + (k * cycle) <= at LOOP
        k := k + 1;
    END LOOP;
    RETURN greatest(k, 0);
END
$$;

COMMENT ON FUNCTION subscription.period_containing(timestamptz, interval, timestamptz) IS 'The k of the anchored period that holds a time (L4)';

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
        RAISE EXCEPTION 'cycle % is not a positive billing cycle', subscription.cycle_text(cycle)
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
    IF NOT renewal = ANY (subscription.renewal_options()) THEN
        RAISE EXCEPTION 'unknown renewal option "%"', renewal
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('The renewal options are %s.', subscription.renewal_options());
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_renewal(text) IS 'Internal: 22023 unless a renewal option (R6)';

-- Bounds (issue 15), in C (src/bounds.c) so that they read their settings
-- typed: a quantity from 1 to subscription.max_quantity, an amount up to
-- subscription.max_amount, a time from subscription.now() - subscription.max_backdate
-- (and for renewals up to subscription.now() + subscription.max_ahead).
CREATE FUNCTION subscription.require_quantity(quantity integer)
RETURNS void
AS 'MODULE_PATHNAME', 'require_quantity'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.require_quantity(integer) IS 'Internal: 22023 below 1, 22003 above subscription.max_quantity';

CREATE FUNCTION subscription.require_amount(amount numeric, currency text)
RETURNS void
AS 'MODULE_PATHNAME', 'require_amount'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.require_amount(numeric, text) IS 'Internal: 22003 for an amount above subscription.max_amount';

CREATE FUNCTION subscription.require_time(fn text, at timestamptz, renewal boolean)
RETURNS void
AS 'MODULE_PATHNAME', 'require_time'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.require_time(text, timestamptz, boolean) IS 'Internal: a finite time, not before subscription.max_backdate, nor for renewals after subscription.max_ahead';

-- A time of a change to an active subscription must be in its current
-- period.  Past its end the subscription is overdue: the renewal that
-- ended it has not run, and the error says which (period end) and what to
-- run first.
CREATE FUNCTION subscription.require_in_period(fn text, s subscription.subscription, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF at <@ s.period THEN
        RETURN;
    ELSIF at >= upper(s.period) THEN
        RAISE EXCEPTION 'subscription % is overdue: its renewal at % has not run', s.id, upper(s.period)
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('%s() was given %s, after the current period %s.', fn, at, s.period),
                  HINT = format('Run subscription.renew_due() first: it renews the period that ended at %s.',
                                upper(s.period));
    END IF;
    RAISE EXCEPTION 'the time given to %() is before the current period of subscription %', fn, s.id
        USING ERRCODE = 'invalid_parameter_value',
              DETAIL = format('%s() was given %s; the current period is %s.', fn, at, s.period);
END
$$;

COMMENT ON FUNCTION subscription.require_in_period(text, subscription.subscription, timestamptz) IS 'Internal: 22023 unless a time is in the current period, saying which renewal is overdue';

-- 42704 for an unknown plan or add-on, with the closest codes as a HINT:
-- those sharing the most character pairs (bigrams, Dice coefficient), the
-- best three at 0.3 or more.
CREATE FUNCTION subscription.unknown_code(kind text, code text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
-- the planner estimates the hint's query far above its cost (a series over
-- a computed length counts as 1,000 rows): JIT would compile it for seconds
SET jit = off
AS $$
DECLARE
    closest text;
BEGIN
    WITH codes AS (
        SELECT p.code AS c FROM subscription.plan AS p WHERE unknown_code.kind = 'plan'
        UNION ALL
        SELECT a.code FROM subscription.addon AS a WHERE unknown_code.kind = 'add-on'),
    grams AS (
        SELECT n.c, substr(lower(n.c), i, 2) AS g
          FROM (SELECT codes.c FROM codes UNION SELECT unknown_code.code) AS n(c)
          CROSS JOIN LATERAL generate_series(1, length(n.c) - 1) AS i)
    SELECT string_agg(format('"%s"', s.c), ', ' ORDER BY s.score DESC, s.c) INTO closest
      FROM (SELECT k.c,
                   2.0 * (SELECT count(*) FROM (SELECT g FROM grams WHERE grams.c = k.c
                                            INTERSECT SELECT g FROM grams WHERE grams.c = unknown_code.code) AS both_)
                   / nullif((SELECT count(DISTINCT g) FROM grams WHERE grams.c = k.c)
                         + (SELECT count(DISTINCT g) FROM grams WHERE grams.c = unknown_code.code), 0) AS score
              FROM codes AS k
             ORDER BY 2 DESC, 1 LIMIT 3) AS s
     WHERE s.score >= 0.3;
    RAISE EXCEPTION '% "%" does not exist', kind, code
        USING ERRCODE = 'undefined_object',
              HINT = CASE WHEN closest IS NULL
                          THEN format('The %ss are the rows of subscription.%s.', kind, replace(kind, '-', ''))
                          ELSE format('Did you mean %s?', closest) END;
END
$$;

COMMENT ON FUNCTION subscription.unknown_code(text, text) IS 'Internal: 42704 for an unknown plan or add-on, hinting the closest codes';

CREATE FUNCTION subscription.require_account(tenant_id bigint, account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the tenant named: one shard on Citus (issue 17)
    PERFORM FROM subscription.account AS a
     WHERE a.tenant_id = require_account.tenant_id AND a.id = require_account.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id USING ERRCODE = 'no_data_found';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_account(bigint, bigint) IS
'Internal: P0002 unless the account exists (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form
CREATE FUNCTION subscription.require_account(account_id bigint)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_account(subscription.tenant_of('account', require_account.account_id),
                                         require_account.account_id);
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
    SELECT a.closed_at INTO closed FROM subscription.account AS a WHERE a.id = require_open_account.account_id;
    IF closed IS NOT NULL THEN
        RAISE EXCEPTION 'account % is closed', account_id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('It was closed at %s.', closed),
                  HINT = 'A closed account takes no new subscription; open a new account.';
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.require_open_account(bigint) IS 'Internal: P0002 unless the account exists, 55000 if it is closed';

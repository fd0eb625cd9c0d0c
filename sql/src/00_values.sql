-- Value checks shared by table constraints and functions: the tables'
-- CHECK constraints and indexes call them, so they come first.

-- Everything below is schema-qualified and every function pins its
-- search_path, so a hostile search_path at install or call time cannot
-- substitute objects (see "Security Considerations for Extensions").
-- SQL-standard bodies (RETURN ...) are the exception: they are parsed and
-- bound when created, and a SET clause would only stop them being inlined.
-- The functions that write are SECURITY DEFINER: they are the only write
-- path (S5); so are the reads that follow the actor (S7).

-- {months, days, microseconds}: the cycle exactly as written, because
-- '1 month' = '30 days' is true for interval but not for a billing cycle.
CREATE FUNCTION subscription.cycle_key(cycle interval)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'cycle_key'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.cycle_key(interval) IS
'The fields {months, days, microseconds} of a billing cycle, for exact comparison';

-- Every field zero or more, one more than zero (src/cycles.c: asked for
-- every row a renewal writes, issue 18).
CREATE FUNCTION subscription.is_valid_cycle(cycle interval)
RETURNS boolean
AS 'MODULE_PATHNAME', 'is_valid_cycle'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.is_valid_cycle(interval) IS 'Whether an interval is a positive billing cycle';

-- A cycle as a catalog writes it ('1 month', '1 year', '30 days',
-- '1 week'), not as interval output prints it ('1 mon', '7 days'): for
-- messages.  Whole years and weeks are named so.
CREATE FUNCTION subscription.cycle_text(cycle interval)
RETURNS text
LANGUAGE sql STRICT IMMUTABLE PARALLEL SAFE
RETURN (SELECT coalesce(nullif(concat_ws(' ',
            CASE WHEN k[1] = 0 THEN NULL
                 WHEN k[1] % 12 = 0 THEN (k[1] / 12)::text || CASE WHEN abs(k[1]) = 12 THEN ' year' ELSE ' years' END
                 ELSE k[1]::text || CASE WHEN abs(k[1]) = 1 THEN ' month' ELSE ' months' END END,
            CASE WHEN k[2] = 0 THEN NULL
                 WHEN k[2] % 7 = 0 THEN (k[2] / 7)::text || CASE WHEN abs(k[2]) = 7 THEN ' week' ELSE ' weeks' END
                 ELSE k[2]::text || CASE WHEN abs(k[2]) = 1 THEN ' day' ELSE ' days' END END,
            CASE WHEN k[3] = 0 THEN NULL ELSE (k[3] * interval '1 microsecond')::text END), ''), '0')
          FROM (SELECT subscription.cycle_key(cycle)) AS f(k));

COMMENT ON FUNCTION subscription.cycle_text(interval) IS 'A billing cycle as a catalog writes it, for messages (''1 month'', not ''1 mon'')';

CREATE FUNCTION subscription.renewal_options()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '{none,once,always,to_monthly}'::text[];

COMMENT ON FUNCTION subscription.renewal_options() IS
'Renewal options of a subscription (R6): none, once, always, to_monthly';

-- The downgrade policies of a limited table, read from the extension's C
-- table of them (src/policies.c), so that enforce_limit, limited_table's
-- constraints and the guards name the same ones.
CREATE FUNCTION subscription.downgrade_policies()
RETURNS text[]
AS 'MODULE_PATHNAME', 'downgrade_policies'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.downgrade_policies() IS
'The downgrade policies of enforce_limit: drop_newest, keep_most_referenced, scale, cap, detach, block';

CREATE FUNCTION subscription.value_policies()
RETURNS text[]
AS 'MODULE_PATHNAME', 'value_policies'
LANGUAGE C IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.value_policies() IS
'The downgrade policies that need a value column: scale, cap, detach';

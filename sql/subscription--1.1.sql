/* subscription--1.1.sql: subscription billing inside PostgreSQL */

\echo Use "CREATE EXTENSION subscription" to load this file. \quit

-- Everything below is schema-qualified and every function pins its
-- search_path, so a hostile search_path at install or call time cannot
-- substitute objects (see "Security Considerations for Extensions").
-- SQL-standard bodies (RETURN ...) are the exception: they are parsed and
-- bound when created, and a SET clause would only stop them being inlined.

------------------------------------------------------------------------
-- Value checks shared by table constraints and functions
------------------------------------------------------------------------

-- {months, days, microseconds}: the cycle exactly as written, because
-- '1 month' = '30 days' is true for interval but not for a billing cycle.
CREATE FUNCTION subscription.cycle_key(cycle interval)
RETURNS bigint[]
AS 'MODULE_PATHNAME', 'cycle_key'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.cycle_key(interval) IS
'The fields {months, days, microseconds} of a billing cycle, for exact comparison';

CREATE FUNCTION subscription.is_valid_cycle(cycle interval)
RETURNS boolean
LANGUAGE sql STRICT IMMUTABLE PARALLEL SAFE
RETURN (SELECT k[1] >= 0 AND k[2] >= 0 AND k[3] >= 0 AND k <> '{0,0,0}'
          FROM (SELECT subscription.cycle_key(cycle)) AS f(k));

CREATE FUNCTION subscription.renewal_options()
RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN '{none,once,always,to_monthly}'::text[];

COMMENT ON FUNCTION subscription.renewal_options() IS
'Renewal options of a subscription (R6): none, once, always, to_monthly';

------------------------------------------------------------------------
-- Catalog
------------------------------------------------------------------------

CREATE TABLE subscription.currency (
    code     text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    exponent integer NOT NULL CHECK (exponent BETWEEN 0 AND 6),
    -- seeded by the extension; only the other rows are user data for pg_dump
    iso4217  boolean NOT NULL DEFAULT false
);

INSERT INTO subscription.currency (code, exponent) VALUES
    ('AED', 2), ('AFN', 2), ('ALL', 2), ('AMD', 2), ('ANG', 2), ('AOA', 2), ('ARS', 2), ('AUD', 2),
    ('AWG', 2), ('AZN', 2), ('BAM', 2), ('BBD', 2), ('BDT', 2), ('BGN', 2), ('BHD', 3), ('BIF', 0),
    ('BMD', 2), ('BND', 2), ('BOB', 2), ('BRL', 2), ('BSD', 2), ('BTN', 2), ('BWP', 2), ('BYN', 2),
    ('BZD', 2), ('CAD', 2), ('CDF', 2), ('CHF', 2), ('CLP', 0), ('CNY', 2), ('COP', 2), ('CRC', 2),
    ('CUP', 2), ('CVE', 2), ('CZK', 2), ('DJF', 0), ('DKK', 2), ('DOP', 2), ('DZD', 2), ('EGP', 2),
    ('ERN', 2), ('ETB', 2), ('EUR', 2), ('FJD', 2), ('FKP', 2), ('GBP', 2), ('GEL', 2), ('GHS', 2),
    ('GIP', 2), ('GMD', 2), ('GNF', 0), ('GTQ', 2), ('GYD', 2), ('HKD', 2), ('HNL', 2), ('HTG', 2),
    ('HUF', 2), ('IDR', 2), ('ILS', 2), ('INR', 2), ('IQD', 3), ('IRR', 2), ('ISK', 0), ('JMD', 2),
    ('JOD', 3), ('JPY', 0), ('KES', 2), ('KGS', 2), ('KHR', 2), ('KMF', 0), ('KPW', 2), ('KRW', 0),
    ('KWD', 3), ('KYD', 2), ('KZT', 2), ('LAK', 2), ('LBP', 2), ('LKR', 2), ('LRD', 2), ('LSL', 2),
    ('LYD', 3), ('MAD', 2), ('MDL', 2), ('MGA', 2), ('MKD', 2), ('MMK', 2), ('MNT', 2), ('MOP', 2),
    ('MRU', 2), ('MUR', 2), ('MVR', 2), ('MWK', 2), ('MXN', 2), ('MYR', 2), ('MZN', 2), ('NAD', 2),
    ('NGN', 2), ('NIO', 2), ('NOK', 2), ('NPR', 2), ('NZD', 2), ('OMR', 3), ('PAB', 2), ('PEN', 2),
    ('PGK', 2), ('PHP', 2), ('PKR', 2), ('PLN', 2), ('PYG', 0), ('QAR', 2), ('RON', 2), ('RSD', 2),
    ('RUB', 2), ('RWF', 0), ('SAR', 2), ('SBD', 2), ('SCR', 2), ('SDG', 2), ('SEK', 2), ('SGD', 2),
    ('SHP', 2), ('SLE', 2), ('SOS', 2), ('SRD', 2), ('SSP', 2), ('STN', 2), ('SVC', 2), ('SYP', 2),
    ('SZL', 2), ('THB', 2), ('TJS', 2), ('TMT', 2), ('TND', 3), ('TOP', 2), ('TRY', 2), ('TTD', 2),
    ('TWD', 2), ('TZS', 2), ('UAH', 2), ('UGX', 0), ('USD', 2), ('UYU', 2), ('UZS', 2), ('VES', 2),
    ('VND', 0), ('VUV', 0), ('WST', 2), ('XAF', 0), ('XCD', 2), ('XOF', 0), ('XPF', 0), ('YER', 2),
    ('ZAR', 2), ('ZMW', 2), ('ZWL', 2), ('CLF', 4), ('UYW', 4);
UPDATE subscription.currency SET iso4217 = true;

CREATE TABLE subscription.product (
    code      text PRIMARY KEY,
    name      text NOT NULL,
    upgrade   text NOT NULL DEFAULT 'restart'
              CHECK (upgrade IN ('restart', 'prorate')),
    downgrade text NOT NULL DEFAULT 'end_of_period'
              CHECK (downgrade IN ('end_of_period', 'immediate'))
);

CREATE TABLE subscription.plan (
    code    text PRIMARY KEY,
    product text NOT NULL REFERENCES subscription.product (code) ON UPDATE CASCADE,
    name    text NOT NULL,
    rank    integer NOT NULL DEFAULT 0,
    kind    text NOT NULL DEFAULT 'service' CHECK (kind IN ('service', 'option'))
);
CREATE INDEX ON subscription.plan (product);

CREATE TABLE subscription.plan_price (
    plan        text NOT NULL REFERENCES subscription.plan (code)
                ON UPDATE CASCADE ON DELETE CASCADE,
    cycle       interval NOT NULL CHECK (subscription.is_valid_cycle(cycle)),
    tier        integer CHECK (tier > 0),
    amount      numeric NOT NULL CHECK (amount >= 0 AND amount < 'Infinity'),
    per_license boolean NOT NULL DEFAULT false,
    currency    text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code)
                ON UPDATE CASCADE,
    -- a tier price is the price of the whole tier (L12)
    CONSTRAINT plan_price_tier_is_flat CHECK (tier IS NULL OR NOT per_license)
);
CREATE UNIQUE INDEX plan_price_one_per_cycle_and_tier
    ON subscription.plan_price (plan, subscription.cycle_key(cycle), tier) NULLS NOT DISTINCT;

-- A plan is tiered (every price names a tier) or not (none does): a mix would
-- make the price of a quantity ambiguous (L12).
CREATE FUNCTION subscription.check_plan_price_tiering()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- serialize concurrent price writes of the same plan
    PERFORM FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) NEW.plan FOR UPDATE;
    PERFORM FROM subscription.plan_price AS pp
     WHERE pp.plan OPERATOR(pg_catalog.=) NEW.plan
       AND (pp.tier IS NULL) <> (NEW.tier IS NULL);
    IF FOUND THEN
        RAISE EXCEPTION 'plan "%" cannot mix tiered and untiered prices', NEW.plan
            USING ERRCODE = 'check_violation',
                  DETAIL = CASE WHEN NEW.tier IS NULL
                                THEN 'Its other prices name tiers; this one does not.'
                                ELSE 'Its other prices name no tier; this one names tier ' || NEW.tier || '.' END,
                  HINT = 'Give every price of a tiered plan a tier, or none.',
                  TABLE = 'plan_price', SCHEMA = 'subscription';
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER plan_price_tiered_or_not
    AFTER INSERT OR UPDATE OF plan, tier ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.check_plan_price_tiering();

CREATE TABLE subscription.plan_limit (
    plan        text NOT NULL REFERENCES subscription.plan (code)
                ON UPDATE CASCADE ON DELETE CASCADE,
    feature     text NOT NULL,
    value       bigint CHECK (value >= 0),          -- NULL: unlimited
    per_license boolean NOT NULL DEFAULT false,
    PRIMARY KEY (plan, feature)
);

CREATE TABLE subscription.addon (
    code     text PRIMARY KEY,
    product  text NOT NULL REFERENCES subscription.product (code) ON UPDATE CASCADE,
    name     text NOT NULL,
    one_time boolean NOT NULL DEFAULT false,
    feature  text,
    units    bigint NOT NULL DEFAULT 1 CHECK (units > 0)
);
CREATE INDEX ON subscription.addon (product);

CREATE TABLE subscription.addon_price (
    addon    text NOT NULL REFERENCES subscription.addon (code)
             ON UPDATE CASCADE ON DELETE CASCADE,
    cycle    interval CHECK (subscription.is_valid_cycle(cycle)),  -- NULL: one-time
    amount   numeric NOT NULL CHECK (amount >= 0 AND amount < 'Infinity'),
    currency text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code)
             ON UPDATE CASCADE
);
CREATE UNIQUE INDEX addon_price_one_per_cycle
    ON subscription.addon_price (addon, subscription.cycle_key(cycle)) NULLS NOT DISTINCT;

CREATE TABLE subscription.plan_addon (
    plan     text NOT NULL REFERENCES subscription.plan (code)
             ON UPDATE CASCADE ON DELETE CASCADE,
    addon    text NOT NULL REFERENCES subscription.addon (code)
             ON UPDATE CASCADE ON DELETE CASCADE,
    included boolean NOT NULL DEFAULT false,
    PRIMARY KEY (plan, addon)
);
CREATE INDEX ON subscription.plan_addon (addon);

CREATE TABLE subscription.coupon (
    code            text PRIMARY KEY,
    percent_off     numeric CHECK (percent_off > 0 AND percent_off <= 100),
    amount_off      numeric CHECK (amount_off > 0 AND amount_off < 'Infinity'),
    currency        text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code)
                    ON UPDATE CASCADE,
    cycles          integer CHECK (cycles > 0),       -- NULL: forever
    redeem_by       timestamptz,
    max_redemptions integer CHECK (max_redemptions > 0),
    CONSTRAINT coupon_percent_or_amount CHECK ((percent_off IS NULL) <> (amount_off IS NULL))
);

------------------------------------------------------------------------
-- Tenants and state
------------------------------------------------------------------------

CREATE TABLE subscription.account (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name           text NOT NULL,
    -- a sub-account (K7); deleting an account deletes its sub-accounts (K9)
    parent_id      bigint REFERENCES subscription.account (id) ON DELETE CASCADE,
    billing_anchor timestamptz,
    managed        boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT account_not_own_parent CHECK (parent_id <> id)
);
CREATE INDEX ON subscription.account (parent_id);

CREATE TABLE subscription.member (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES subscription.account (id) ON DELETE CASCADE,
    external_id text,
    role        text NOT NULL DEFAULT 'member' CHECK (role IN ('owner', 'admin', 'member')),
    rights      text[] NOT NULL DEFAULT '{}'
                CHECK (rights <@ '{increase_licenses,decrease_licenses,decrease_monthly_licenses,change_renewal}'::text[]
                       AND array_position(rights, NULL) IS NULL),
    UNIQUE (account_id, external_id)
);

CREATE TABLE subscription.subscription (
    id                   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id           bigint NOT NULL REFERENCES subscription.account (id) ON DELETE CASCADE,
    plan                 text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    cycle                interval NOT NULL CHECK (subscription.is_valid_cycle(cycle)),
    quantity             integer NOT NULL CHECK (quantity > 0),
    period               tstzrange NOT NULL
                         CHECK (NOT isempty(period) AND lower_inc(period) AND NOT upper_inc(period)
                                AND NOT lower_inf(period) AND NOT upper_inf(period)),
    anchor               timestamptz NOT NULL,
    -- k of the current period: it ends at anchor + k * cycle (0: the part
    -- of a period before an account's billing anchor, L4)
    period_number        integer NOT NULL DEFAULT 1 CHECK (period_number >= 0),
    renewal              text NOT NULL DEFAULT 'always'
                         CHECK (renewal = ANY (subscription.renewal_options())),
    status               text NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'cancelled', 'expired')),
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    pending_plan         text REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    pending_cycle        interval CHECK (subscription.is_valid_cycle(pending_cycle)),
    pending_quantity     integer CHECK (pending_quantity > 0),
    is_default           boolean NOT NULL DEFAULT false,
    -- licenses paid for the current period: a decrease refunds nothing, so
    -- increasing again up to this number is free (C2: never twice)
    paid_quantity        integer CHECK (paid_quantity > 0),
    coupon               text REFERENCES subscription.coupon (code) ON UPDATE CASCADE,
    -- periods the coupon still reduces (NULL: forever)
    coupon_periods_left  integer CHECK (coupon_periods_left >= 0),
    created_at           timestamptz NOT NULL DEFAULT now(),
    -- R10: at most one default subscription per account
    CONSTRAINT subscription_one_default_per_account
        EXCLUDE (account_id WITH =) WHERE (is_default)
);
CREATE INDEX ON subscription.subscription (account_id);
-- renew_due walks the due subscriptions in this order
CREATE INDEX ON subscription.subscription (upper(period), id) WHERE status = 'active';

CREATE TABLE subscription.license (
    subscription_id bigint NOT NULL REFERENCES subscription.subscription (id) ON DELETE CASCADE,
    member_id       bigint NOT NULL REFERENCES subscription.member (id) ON DELETE CASCADE,
    assigned_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, member_id)
);
CREATE INDEX ON subscription.license (member_id);

-- The seat counter of a subscription: the row that serializes its license
-- writes.  Every write of subscription.license moves "used" by one locked
-- UPDATE per subscription and statement, never past "capacity" (quantity
-- plus the license units of active add-on batches): that is the invariant,
-- and the CHECK keeps it whatever path writes.
CREATE TABLE subscription.license_counter (
    subscription_id bigint PRIMARY KEY
                    REFERENCES subscription.subscription (id) ON DELETE CASCADE,
    used            integer NOT NULL DEFAULT 0,
    capacity        integer NOT NULL,
    active          boolean NOT NULL,
    CONSTRAINT license_counter_within_capacity CHECK (used >= 0 AND used <= capacity)
);

-- R11 as a unique key: one row per service license, keyed by member and
-- product.  The license guard inserts it with ON CONFLICT DO NOTHING, so a
-- member's second service license of a product, even one written at the
-- same moment by another session, is refused by the index itself.
CREATE TABLE subscription.service_seat (
    member_id       bigint NOT NULL,
    product         text NOT NULL,
    subscription_id bigint NOT NULL,
    PRIMARY KEY (member_id, product)
);

CREATE TABLE subscription.addon_batch (
    id                   bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id      bigint NOT NULL REFERENCES subscription.subscription (id) ON DELETE CASCADE,
    addon                text NOT NULL REFERENCES subscription.addon (code) ON UPDATE CASCADE,
    quantity             integer NOT NULL CHECK (quantity > 0),
    purchased_at         timestamptz NOT NULL DEFAULT now(),
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    status               text NOT NULL DEFAULT 'active'
                         CHECK (status IN ('active', 'cancelled', 'expired'))
);
CREATE INDEX ON subscription.addon_batch (subscription_id);

CREATE TABLE subscription.ledger (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES subscription.account (id) ON DELETE CASCADE,
    subscription_id bigint REFERENCES subscription.subscription (id) ON DELETE CASCADE,
    addon_batch_id  bigint REFERENCES subscription.addon_batch (id) ON DELETE CASCADE,
    -- credit_used: credit of the account that pays a charge (L9, L10)
    kind            text NOT NULL CHECK (kind IN ('charge', 'refund', 'credit', 'discount', 'credit_used')),
    amount          numeric NOT NULL CHECK (amount >= 0 AND amount < 'Infinity'),
    currency        text NOT NULL REFERENCES subscription.currency (code) ON UPDATE CASCADE,
    period          tstzrange,
    -- what of the period is charged: 'plan', or the licenses a mid-period
    -- increase adds ('licenses 6-8'), so each is charged once (C2)
    item            text NOT NULL DEFAULT 'plan',
    -- the plan a subscription line is for (C3: the invoice names it)
    plan            text,
    -- a refund or discount line: the charge it gives back or reduces
    charge_id       bigint REFERENCES subscription.ledger (id) ON DELETE CASCADE,
    description     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_batch_needs_subscription
        CHECK (addon_batch_id IS NULL OR subscription_id IS NOT NULL),
    CONSTRAINT ledger_charge_id_for_refunds_and_discounts
        CHECK (charge_id IS NULL OR kind IN ('refund', 'discount', 'credit', 'credit_used'))
);
CREATE INDEX ON subscription.ledger (subscription_id, kind);
-- the unused part of a charge is given back once
CREATE UNIQUE INDEX ledger_one_refund_per_charge
    ON subscription.ledger (charge_id) WHERE kind IN ('refund', 'credit');
-- a coupon reduces a charge once; credit pays it once
CREATE UNIQUE INDEX ledger_one_discount_per_charge
    ON subscription.ledger (charge_id) WHERE kind = 'discount';
CREATE UNIQUE INDEX ledger_one_credit_use_per_charge
    ON subscription.ledger (charge_id) WHERE kind = 'credit_used';
CREATE INDEX ON subscription.ledger (account_id, created_at);
CREATE INDEX ON subscription.ledger (addon_batch_id);
-- C2: an item of a period of a subscription (or of one of its add-on
-- batches) is charged at most once; a one-time add-on (period NULL) once.
CREATE UNIQUE INDEX ledger_one_charge_per_period
    ON subscription.ledger (subscription_id, addon_batch_id, period, item) NULLS NOT DISTINCT
    WHERE kind = 'charge' AND subscription_id IS NOT NULL;

-- R8: no foreign keys, so that the record of an erased account (K9) stays.
CREATE TABLE subscription.history (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor           text,
    operation       text NOT NULL,
    account_id      bigint,
    subscription_id bigint,
    details         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ON subscription.history (account_id, at);
CREATE INDEX ON subscription.history (subscription_id, at);

CREATE FUNCTION subscription.refuse_history_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'history is append-only'
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('%s on subscription.history is not allowed.', TG_OP),
              HINT = 'Record a correction as a new history row.';
END
$$;

CREATE TRIGGER history_append_only
    BEFORE UPDATE OR DELETE ON subscription.history
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_history_change();
CREATE TRIGGER history_no_truncate
    BEFORE TRUNCATE ON subscription.history
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.refuse_history_change();

-- Rows removed or changed by a downgrade, as they were (C9-C12).
CREATE TABLE subscription.trimmed (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    account_id      bigint NOT NULL REFERENCES subscription.account (id) ON DELETE CASCADE,
    -- no foreign key: like the table's name, the record outlives the
    -- subscription (and one check less per archived row)
    subscription_id bigint,
    -- the name, not a regclass: the record outlives a dropped table
    relation        text NOT NULL,
    feature         text NOT NULL,
    -- cascade: deleted by the application's own foreign key along with a
    -- trimmed row
    action          text NOT NULL CHECK (action IN ('delete', 'scale', 'cap', 'detach', 'cascade')),
    row_id          text,
    old_row         jsonb NOT NULL
);
CREATE INDEX ON subscription.trimmed (account_id, at);

-- What each account uses of each limited feature, kept by the limit triggers.
CREATE TABLE subscription.usage_counter (
    account_id  bigint NOT NULL REFERENCES subscription.account (id) ON DELETE CASCADE,
    feature     text NOT NULL,
    used        bigint NOT NULL DEFAULT 0 CHECK (used >= 0),
    -- effective_limit(account_id, feature), kept here by triggers on what
    -- it depends on, so that a write is checked against one row (NULL:
    -- unlimited)
    limit_value bigint,
    PRIMARY KEY (account_id, feature)
);

------------------------------------------------------------------------
-- pg_dump keeps the rows users write (catalog and tenants)
------------------------------------------------------------------------

SELECT pg_catalog.pg_extension_config_dump('subscription.currency', 'WHERE NOT iso4217');
-- one call per statement: each call updates the same pg_extension row
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'product', 'plan', 'plan_price', 'plan_limit', 'addon', 'addon_price',
        'plan_addon', 'coupon', 'account', 'member', 'subscription', 'license',
        'addon_batch', 'ledger', 'history', 'trimmed', 'usage_counter', 'license_counter',
        'service_seat']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('subscription.' || t)::pg_catalog.regclass, '');
    END LOOP;
    -- and the identity sequences, so restored tables keep issuing fresh ids
    FOREACH t IN ARRAY ARRAY[
        'account', 'member', 'subscription', 'addon_batch', 'ledger', 'history', 'trimmed']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(
            pg_catalog.pg_get_serial_sequence('subscription.' || t, 'id')::pg_catalog.regclass, '');
    END LOOP;
END
$$;

------------------------------------------------------------------------
-- Pure functions (C)
------------------------------------------------------------------------

CREATE FUNCTION subscription.tier_for_hosts(
    hosts integer,
    tiers integer[] DEFAULT '{25,100,250,500,1000,2500}')
RETURNS integer
AS 'MODULE_PATHNAME', 'tier_for_hosts'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.tier_for_hosts(integer, integer[]) IS
'The smallest tier holding hosts (L3, L12)';

CREATE FUNCTION subscription.prorate_refund(
    amount numeric,
    period_start timestamptz,
    period_end timestamptz,
    at timestamptz,
    unit text DEFAULT 'day',
    scale integer DEFAULT 2)
RETURNS numeric
AS 'MODULE_PATHNAME', 'prorate_refund'
-- STABLE: whole days are counted in the session's TimeZone
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.prorate_refund(numeric, timestamptz, timestamptz, timestamptz, text, integer) IS
'Refund of the unused part [at, period_end) of amount, rounded once half away from zero';

------------------------------------------------------------------------
-- Catalog look-ups: one place for each rule
------------------------------------------------------------------------

-- A plan's tiers: the distinct tier values of its prices ('{}' if untiered).
CREATE FUNCTION subscription.plan_tiers(plan text)
RETURNS integer[]
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tiers integer[];
BEGIN
    PERFORM FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) plan_tiers.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan "%" does not exist', plan
            USING ERRCODE = 'undefined_object';
    END IF;
    SELECT coalesce(array_agg(DISTINCT pp.tier ORDER BY pp.tier), '{}')
      INTO tiers
      FROM subscription.plan_price AS pp
     WHERE pp.plan OPERATOR(pg_catalog.=) plan_tiers.plan AND pp.tier IS NOT NULL;
    RETURN tiers;
END
$$;

CREATE FUNCTION subscription.tier_for_hosts(plan text, hosts integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'tier_for_hosts_plan'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.tier_for_hosts(text, integer) IS
'The smallest tier of a tiered plan holding hosts (L3, L12)';

-- Rounds an amount to its currency's minor unit, half away from zero.
CREATE FUNCTION subscription.round_money(amount numeric, currency text)
RETURNS numeric
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    digits integer;
BEGIN
    SELECT c.exponent INTO digits
      FROM subscription.currency AS c
     WHERE c.code OPERATOR(pg_catalog.=) round_money.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency
            USING ERRCODE = 'undefined_object';
    END IF;
    RETURN round(amount, digits);
END
$$;

-- The exact gross price of one period of plan for quantity, not yet
-- rounded (callers round once, at the end): per-license prices times
-- quantity, tier prices flat; a tiered plan's quantity must be a tier (L12).
-- The price of a plan for a cycle and quantity, or why there is none
-- ('not_a_tier', 'no_price'): the lookup that period_price() raises on and
-- renew_due() checks without a subtransaction.
CREATE FUNCTION subscription.find_price(
    plan text, cycle interval, quantity integer,
    OUT amount numeric, OUT currency text, OUT problem text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    tiers integer[] := subscription.plan_tiers(plan);
    price subscription.plan_price;
BEGIN
    IF cardinality(tiers) > 0 AND NOT quantity OPERATOR(pg_catalog.=) ANY (tiers) THEN
        problem := 'not_a_tier';
        RETURN;
    END IF;
    SELECT * INTO price FROM subscription.plan_price AS pp
     WHERE pp.plan OPERATOR(pg_catalog.=) find_price.plan
       AND subscription.cycle_key(pp.cycle) OPERATOR(pg_catalog.=) subscription.cycle_key(find_price.cycle)
       AND pp.tier IS NOT DISTINCT FROM CASE WHEN cardinality(tiers) > 0 THEN quantity END;
    IF NOT FOUND THEN
        problem := 'no_price';
        RETURN;
    END IF;
    amount := CASE WHEN price.per_license THEN price.amount OPERATOR(pg_catalog.*) quantity
                   ELSE price.amount END;
    currency := price.currency;
END
$$;

CREATE FUNCTION subscription.period_price(
    plan text, cycle interval, quantity integer,
    OUT amount numeric, OUT currency text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_price record := subscription.find_price(plan, cycle, quantity);
BEGIN
    IF found_price.problem OPERATOR(pg_catalog.=) 'not_a_tier' THEN
        RAISE EXCEPTION 'quantity % is not a tier of plan "%"', quantity, plan
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('The tiers of plan "%s" are %s.', plan, subscription.plan_tiers(plan)),
                  HINT = format('Use subscription.tier_for_hosts(%L, %s) for the tier that holds %s hosts.',
                                plan, quantity, quantity);
    ELSIF found_price.problem OPERATOR(pg_catalog.=) 'no_price' THEN
        RAISE EXCEPTION 'plan "%" has no price for cycle %', plan, cycle
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The cycles of a plan are those of its rows in subscription.plan_price.';
    END IF;
    amount := found_price.amount;
    currency := found_price.currency;
END
$$;

-- The k-th period (k >= 1) of a subscription anchored at anchor: computed
-- from the anchor, so month ends do not drift (Jan 31, Feb 28, Mar 31).
CREATE FUNCTION subscription.nth_period(anchor timestamptz, cycle interval, k integer)
RETURNS tstzrange
LANGUAGE sql STRICT STABLE PARALLEL SAFE
RETURN tstzrange(anchor OPERATOR(pg_catalog.+) ((k OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) cycle),
                 anchor OPERATOR(pg_catalog.+) (k OPERATOR(pg_catalog.*) cycle), '[)');

------------------------------------------------------------------------
-- Argument checks shared by the mutating functions
------------------------------------------------------------------------

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

------------------------------------------------------------------------
-- Lifecycle
------------------------------------------------------------------------

-- The k of the period [anchor + (k-1) cycle, anchor + k cycle) that holds
-- "at" (k may be 0 or less before the anchor; callers use k >= 0).
CREATE FUNCTION subscription.period_containing(anchor timestamptz, cycle interval, at timestamptz)
RETURNS integer
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- a guess from the average length, then exact steps (months vary)
    k integer := floor(extract(epoch FROM at OPERATOR(pg_catalog.-) anchor)
                       OPERATOR(pg_catalog./) extract(epoch FROM cycle))::integer OPERATOR(pg_catalog.+) 1;
BEGIN
    WHILE anchor OPERATOR(pg_catalog.+) ((k OPERATOR(pg_catalog.-) 1) OPERATOR(pg_catalog.*) cycle) OPERATOR(pg_catalog.>) at LOOP
        k := k OPERATOR(pg_catalog.-) 1;
    END LOOP;
    WHILE anchor OPERATOR(pg_catalog.+) (k OPERATOR(pg_catalog.*) cycle) OPERATOR(pg_catalog.<=) at LOOP
        k := k OPERATOR(pg_catalog.+) 1;
    END LOOP;
    RETURN greatest(k, 0);
END
$$;

-- Z10: the coupon exists (42704), is not past its redeem-by date nor out
-- of redemptions (55000), and is in the plan's currency when it takes an
-- amount off (22023).  Locks the coupon: concurrent redemptions of the
-- last one queue.
CREATE FUNCTION subscription.redeemable_coupon(code text, at timestamptz, price_currency text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c subscription.coupon;
    redeemed bigint;
BEGIN
    SELECT * INTO c FROM subscription.coupon AS x WHERE x.code OPERATOR(pg_catalog.=) redeemable_coupon.code FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'coupon "%" does not exist', code USING ERRCODE = 'undefined_object';
    END IF;
    IF at OPERATOR(pg_catalog.>) c.redeem_by THEN
        RAISE EXCEPTION 'coupon "%" could be redeemed until %', code, c.redeem_by
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    SELECT count(*) INTO redeemed FROM subscription.subscription AS s WHERE s.coupon OPERATOR(pg_catalog.=) c.code;
    IF redeemed OPERATOR(pg_catalog.>=) c.max_redemptions THEN
        RAISE EXCEPTION 'coupon "%" has been redeemed % times, its maximum', code, redeemed
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF c.amount_off IS NOT NULL AND c.currency OPERATOR(pg_catalog.<>) price_currency THEN
        RAISE EXCEPTION 'coupon "%" takes % off, but the plan is priced in %', code, c.currency, price_currency
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE FUNCTION subscription.subscribe(
    account_id bigint,
    plan text,
    cycle interval,
    quantity integer DEFAULT 1,
    at timestamptz DEFAULT now(),
    renewal text DEFAULT 'always',
    coupon text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    price     record;
    period    tstzrange;
    new_id    bigint;
    anchor_at timestamptz;
    k         integer;
    full_period tstzrange;
BEGIN
    PERFORM subscription.require_arguments('subscribe',
        '{account_id,plan,cycle,quantity,at,renewal}',
        ARRAY[account_id IS NULL, plan IS NULL, cycle IS NULL, quantity IS NULL,
              at IS NULL, renewal IS NULL]);

    IF quantity < 1 THEN
        RAISE EXCEPTION 'quantity must be at least 1'
            USING ERRCODE = 'invalid_parameter_value',
                  DETAIL = format('The quantity was %s.', quantity);
    END IF;
    PERFORM subscription.require_cycle(cycle);
    PERFORM subscription.require_renewal(renewal);
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'subscription start must be finite'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT a.billing_anchor INTO anchor_at
      FROM subscription.account AS a
     WHERE a.id OPERATOR(pg_catalog.=) subscribe.account_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', account_id
            USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(account_id, 'purchase');
    price := subscription.period_price(plan, cycle, quantity);
    IF coupon IS NOT NULL THEN
        PERFORM subscription.redeemable_coupon(coupon, at, price.currency);
    END IF;
    IF anchor_at IS NULL THEN
        k := 1;
        anchor_at := at;
    ELSE
        -- L4: the first period runs to the account's next billing date, whose
        -- period (of this cycle) it is part of, and is charged for its days
        k := subscription.period_containing(anchor_at, cycle, at);
    END IF;
    full_period := subscription.nth_period(anchor_at, cycle, k);
    period := tstzrange(at, upper(full_period), '[)');

    -- R10: an account's first service subscription is its default one
    INSERT INTO subscription.subscription AS s
           (account_id, plan, cycle, quantity, paid_quantity, period, anchor, period_number, renewal, is_default,
            coupon, coupon_periods_left)
    SELECT subscribe.account_id, subscribe.plan, subscribe.cycle, subscribe.quantity, subscribe.quantity,
           period, anchor_at, k, subscribe.renewal,
           p.kind OPERATOR(pg_catalog.=) 'service' AND NOT EXISTS (
               SELECT FROM subscription.subscription AS d
                WHERE d.account_id OPERATOR(pg_catalog.=) subscribe.account_id AND d.is_default),
           subscribe.coupon, (SELECT c.cycles FROM subscription.coupon AS c WHERE c.code OPERATOR(pg_catalog.=) subscribe.coupon)
      FROM subscription.plan AS p
     WHERE p.code OPERATOR(pg_catalog.=) subscribe.plan
    RETURNING s.id INTO new_id;

    INSERT INTO subscription.ledger
           (account_id, subscription_id, kind, amount, currency, period, plan, description)
    VALUES (subscribe.account_id, new_id, 'charge',
            CASE WHEN period OPERATOR(pg_catalog.=) full_period
                 THEN subscription.round_money(price.amount, price.currency)
                 ELSE subscription.prorate_refund(price.amount, lower(full_period), upper(full_period), at, 'day',
                                                  subscription.money_scale(price.currency)) END,
            price.currency, period, plan,
            format('plan %s, cycle %s, quantity %s%s', plan, cycle, quantity,
                   CASE WHEN period OPERATOR(pg_catalog.=) full_period THEN ''
                        ELSE format(', to the billing date %s', upper(period)) END));

    RETURN new_id;
END
$$;

REVOKE ALL ON FUNCTION subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.require_arguments(text, text[], boolean[]) FROM PUBLIC;

------------------------------------------------------------------------
-- Who acts, and what they may do (Z1, R9, K8)
------------------------------------------------------------------------

-- The actor written to history: subscription.actor, else the session user.
-- In C: the license guard writes it without a query.
CREATE FUNCTION subscription.current_actor()
RETURNS text
AS 'MODULE_PATHNAME', 'current_actor'
LANGUAGE C STABLE PARALLEL SAFE;

-- The one permission check every mutating function calls.  With
-- subscription.actor empty the caller is trusted back-office code.
-- Actions: read, assign_licenses, increase_licenses, decrease_licenses,
-- change_renewal, purchase, pay, change_plan, cancel.
--   owner: everything on the own account, except buying and paying from a
--          sub-account (K8);
--   admin: read and assign_licenses, plus the rights in member.rights (R9);
--          decrease_monthly_licenses allows decrease_licenses on monthly
--          subscriptions only;
--   member: nothing; nobody acts on another account.
CREATE FUNCTION subscription.authorize(account_id bigint, action text, monthly boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    actor text := current_setting('subscription.actor', true);
    who record;
    refusal text;
BEGIN
    IF coalesce(actor, '') OPERATOR(pg_catalog.=) '' THEN
        RETURN;
    END IF;
    SELECT m.id, m.account_id, m.role, m.rights, a.parent_id INTO who
      FROM subscription.member AS m JOIN subscription.account AS a ON a.id OPERATOR(pg_catalog.=) m.account_id
     WHERE m.id::text OPERATOR(pg_catalog.=) actor;

    IF NOT FOUND THEN
        refusal := 'is not a member';
    ELSIF who.account_id IS DISTINCT FROM authorize.account_id THEN
        refusal := format('belongs to account %s, not to account %s', who.account_id, authorize.account_id);
    ELSIF who.parent_id IS NOT NULL AND action OPERATOR(pg_catalog.=) ANY ('{purchase,pay,increase_licenses}') THEN
        refusal := 'is a member of a sub-account, and only the main account buys and pays (K8)';
    ELSIF who.role OPERATOR(pg_catalog.=) 'owner' THEN
        RETURN;
    ELSIF who.role OPERATOR(pg_catalog.=) 'admin' AND (
            action OPERATOR(pg_catalog.=) ANY ('{read,assign_licenses}')
            OR action OPERATOR(pg_catalog.=) ANY (who.rights)
            OR (action OPERATOR(pg_catalog.=) 'decrease_licenses' AND monthly
                AND 'decrease_monthly_licenses' OPERATOR(pg_catalog.=) ANY (who.rights))) THEN
        RETURN;
    ELSIF action OPERATOR(pg_catalog.=) ANY ('{increase_licenses,decrease_licenses,change_renewal}') THEN
        refusal := format('is %s %s without the right "%s"',
                          CASE who.role WHEN 'admin' THEN 'an' ELSE 'a' END, who.role,
                          CASE WHEN action OPERATOR(pg_catalog.=) 'decrease_licenses' AND monthly
                               THEN 'decrease_licenses" or "decrease_monthly_licenses'
                               ELSE action END);
    ELSE
        refusal := format('is %s %s; only the account owner%s may %s',
                          CASE who.role WHEN 'admin' THEN 'an' ELSE 'a' END, who.role,
                          CASE WHEN action OPERATOR(pg_catalog.=) ANY ('{read,assign_licenses}')
                               THEN ' or an admin' ELSE '' END,
                          replace(action, '_', ' '));
    END IF;

    -- a refused transaction rolls back, so the refusal cannot stay in history
    RAISE LOG 'subscription: actor % refused % on account %: %', actor, action, account_id, refusal;
    RAISE EXCEPTION 'actor % may not % on account %', actor, replace(action, '_', ' '), account_id
        USING ERRCODE = 'insufficient_privilege',
              DETAIL = format('Actor %s %s.', actor, refusal),
              HINT = CASE WHEN action OPERATOR(pg_catalog.=) ANY ('{increase_licenses,decrease_licenses,change_renewal}')
                          THEN 'The account owner can do it, or grant the right in subscription.member.rights.'
                          ELSE 'The account owner can do it.' END;
END
$$;

------------------------------------------------------------------------
-- History (R8): one row per change, append-only
------------------------------------------------------------------------

-- Row trigger of subscription, account, member and addon_batch: the
-- changed columns as jsonb ({"column": {"old": .., "new": ..}} on UPDATE,
-- the row on INSERT and DELETE).  License writes are recorded per
-- statement and subscription by the license guard.
CREATE FUNCTION subscription.record_history()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    old_row jsonb;
    new_row jsonb;
    row_now jsonb;
    changed jsonb;
    account bigint;
    sub bigint;
BEGIN
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        old_row := to_jsonb(OLD);
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        new_row := to_jsonb(NEW);
    END IF;
    row_now := coalesce(new_row, old_row);
    changed := row_now;
    IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
        SELECT jsonb_object_agg(n.key, jsonb_build_object('old', old_row OPERATOR(pg_catalog.->) n.key, 'new', n.value))
          INTO changed
          FROM jsonb_each(new_row) AS n
         WHERE n.value IS DISTINCT FROM old_row OPERATOR(pg_catalog.->) n.key;
        IF changed IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;

    CASE TG_TABLE_NAME
        WHEN 'account' THEN
            account := (row_now OPERATOR(pg_catalog.->>) 'id')::bigint;
        WHEN 'subscription' THEN
            account := (row_now OPERATOR(pg_catalog.->>) 'account_id')::bigint;
            sub := (row_now OPERATOR(pg_catalog.->>) 'id')::bigint;
        WHEN 'addon_batch' THEN
            sub := (row_now OPERATOR(pg_catalog.->>) 'subscription_id')::bigint;
            SELECT s.account_id INTO account FROM subscription.subscription AS s WHERE s.id OPERATOR(pg_catalog.=) sub;
        ELSE
            account := (row_now OPERATOR(pg_catalog.->>) 'account_id')::bigint;
    END CASE;

    INSERT INTO subscription.history (actor, operation, account_id, subscription_id, details)
    VALUES (subscription.current_actor(), TG_TABLE_NAME || '_' || lower(TG_OP), account, sub, changed);
    RETURN NULL;
END
$$;

CREATE TRIGGER account_history AFTER INSERT OR UPDATE OR DELETE ON subscription.account
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history();
CREATE TRIGGER member_history AFTER INSERT OR UPDATE OR DELETE ON subscription.member
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history();
CREATE TRIGGER subscription_history AFTER INSERT OR UPDATE OR DELETE ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history();
CREATE TRIGGER addon_batch_history AFTER INSERT OR UPDATE OR DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history();

------------------------------------------------------------------------
-- Seats (Z4, R2, R10, R11, R12)
------------------------------------------------------------------------

-- Licenses a subscription may assign: its quantity plus the license units
-- of its active add-on batches (add-ons whose feature is 'licenses').
CREATE FUNCTION subscription.license_capacity(subscription_id bigint)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (SELECT s.quantity OPERATOR(pg_catalog.+) coalesce(
               (SELECT sum(b.quantity::bigint OPERATOR(pg_catalog.*) a.units)
                  FROM subscription.addon_batch AS b
                  JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon
                 WHERE b.subscription_id OPERATOR(pg_catalog.=) s.id
                   AND b.status OPERATOR(pg_catalog.=) 'active'
                   AND a.feature OPERATOR(pg_catalog.=) 'licenses'), 0)::integer
          FROM subscription.subscription AS s
         WHERE s.id OPERATOR(pg_catalog.=) license_capacity.subscription_id);

-- Keeps a subscription's seat counter in step with its quantity, status and
-- add-on batches.  Lowering the capacity below the licenses in use fails on
-- the counter's CHECK (23514): release licenses first.
CREATE FUNCTION subscription.sync_license_counter()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sub bigint;
BEGIN
    IF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'subscription' THEN
        sub := NEW.id;
    ELSIF TG_OP OPERATOR(pg_catalog.=) 'DELETE' THEN
        sub := OLD.subscription_id;
    ELSE
        sub := NEW.subscription_id;
    END IF;
    INSERT INTO subscription.license_counter AS c (subscription_id, capacity, active)
    SELECT s.id, subscription.license_capacity(s.id), s.status OPERATOR(pg_catalog.=) 'active'
      FROM subscription.subscription AS s WHERE s.id OPERATOR(pg_catalog.=) sub
    ON CONFLICT (subscription_id) DO UPDATE
       SET capacity = excluded.capacity, active = excluded.active
     WHERE (c.capacity, c.active) IS DISTINCT FROM (excluded.capacity, excluded.active);
    RETURN NULL;
END
$$;

CREATE TRIGGER subscription_license_counter
    AFTER INSERT OR UPDATE OF quantity, status ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.sync_license_counter();
CREATE TRIGGER addon_batch_license_counter
    AFTER INSERT OR UPDATE OR DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.sync_license_counter();

-- A subscription whose plan turns from a service into an option, or back, or
-- to another product, gets its licenses' service seats rebuilt (R11).
CREATE FUNCTION subscription.reseat_licenses(subscription_ids bigint[])
RETURNS void
AS 'MODULE_PATHNAME', 'reseat_licenses'
LANGUAGE C STRICT;

CREATE FUNCTION subscription.sync_service_seats()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'plan' THEN
        PERFORM subscription.reseat_licenses(ARRAY(
            SELECT s.id FROM subscription.subscription AS s WHERE s.plan OPERATOR(pg_catalog.=) NEW.code));
    ELSIF (SELECT (p.kind, p.product) FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) OLD.plan)
          IS DISTINCT FROM
          (SELECT (p.kind, p.product) FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) NEW.plan) THEN
        PERFORM subscription.reseat_licenses(ARRAY[NEW.id]);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscription_service_seats
    AFTER UPDATE OF plan ON subscription.subscription
    FOR EACH ROW WHEN (OLD.plan IS DISTINCT FROM NEW.plan)
    EXECUTE FUNCTION subscription.sync_service_seats();
CREATE TRIGGER plan_service_seats
    AFTER UPDATE OF kind, product ON subscription.plan
    FOR EACH ROW WHEN (OLD.kind IS DISTINCT FROM NEW.kind OR OLD.product IS DISTINCT FROM NEW.product)
    EXECUTE FUNCTION subscription.sync_service_seats();

-- The guard of subscription.license (C): per statement, over the transition
-- table, it checks every assigned row (the member belongs to the
-- subscription's account, 22023; at most one service license per member
-- and product, R11, 23514, through subscription.service_seat), moves each
-- subscription's counter once, in
-- subscription order (55000 when not active, 23514 when full), and writes
-- one history row per subscription and direction.
CREATE FUNCTION subscription.license_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'license_guard'
LANGUAGE C;

CREATE TRIGGER license_guard_insert AFTER INSERT ON subscription.license
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
CREATE TRIGGER license_guard_update AFTER UPDATE ON subscription.license
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
CREATE TRIGGER license_guard_delete AFTER DELETE ON subscription.license
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
CREATE TRIGGER license_guard_truncate AFTER TRUNCATE ON subscription.license
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();

CREATE FUNCTION subscription.license_consume(subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_consume'
LANGUAGE C;

CREATE FUNCTION subscription.license_release(subscription_id bigint, member_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'license_release'
LANGUAGE C;

CREATE FUNCTION subscription.licenses_left(subscription_id bigint)
RETURNS integer
AS 'MODULE_PATHNAME', 'licenses_left'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION subscription.license_consume(bigint, bigint) IS
'Assign one license of the subscription to the member; returns the licenses left (R11, Z4)';
COMMENT ON FUNCTION subscription.license_release(bigint, bigint) IS
'Take the member''s license of the subscription back; returns the licenses left';
COMMENT ON FUNCTION subscription.licenses_left(bigint) IS
'Licenses of the subscription not assigned yet (R11)';

-- R10: a new member gets a license of the account's default subscription
-- when one is free; otherwise the member is still created, with a WARNING.
CREATE FUNCTION subscription.assign_default_license()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    sub bigint;
BEGIN
    SELECT s.id INTO sub FROM subscription.subscription AS s
     WHERE s.account_id OPERATOR(pg_catalog.=) NEW.account_id AND s.is_default
       AND s.status OPERATOR(pg_catalog.=) 'active';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    BEGIN
        INSERT INTO subscription.license (subscription_id, member_id) VALUES (sub, NEW.id);
    EXCEPTION WHEN check_violation THEN
        RAISE WARNING 'member % was created without a license', NEW.id
            USING DETAIL = SQLERRM,
                  HINT = format('Raise the quantity of default subscription %s, or release a license.', sub);
    END;
    RETURN NULL;
END
$$;

CREATE TRIGGER member_default_license AFTER INSERT ON subscription.member
    FOR EACH ROW EXECUTE FUNCTION subscription.assign_default_license();

-- R7: the members holding licenses of each subscription
CREATE VIEW subscription.license_holder AS
SELECT l.subscription_id, s.plan, m.id AS member_id, m.external_id, m.role, l.assigned_at, s.account_id
  FROM subscription.license AS l
  JOIN subscription.member AS m ON m.id OPERATOR(pg_catalog.=) l.member_id
  JOIN subscription.subscription AS s ON s.id OPERATOR(pg_catalog.=) l.subscription_id;

-- More licenses take effect now and the rest of the period is charged for
-- the licenses above those already paid this period (prorate_refund's
-- fraction, rounded once); fewer take effect now too, refund nothing, and
-- cannot go below the licenses assigned (23514).  Returns the licenses left.
CREATE FUNCTION subscription.set_quantity(subscription_id bigint, quantity integer, at timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    counter subscription.license_counter;
    new_capacity integer;
    paid integer;
    monthly boolean;
    old_price record;
    new_price record;
    charge numeric;
BEGIN
    PERFORM subscription.require_arguments('set_quantity', '{subscription_id,quantity,at}',
        ARRAY[subscription_id IS NULL, quantity IS NULL, at IS NULL]);
    IF quantity < 1 THEN
        RAISE EXCEPTION 'quantity must be at least 1'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The quantity was %s.', quantity);
    END IF;

    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.id OPERATOR(pg_catalog.=) set_quantity.subscription_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    monthly := subscription.cycle_key(s.cycle) OPERATOR(pg_catalog.=) '{1,0,0}';
    PERFORM subscription.authorize(s.account_id,
        CASE WHEN quantity OPERATOR(pg_catalog.>) s.quantity THEN 'increase_licenses' ELSE 'decrease_licenses' END,
        monthly);
    IF s.status OPERATOR(pg_catalog.<>) 'active' THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF NOT at OPERATOR(pg_catalog.<@) s.period THEN
        RAISE EXCEPTION 'change time % is outside the current period %', at, s.period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF quantity OPERATOR(pg_catalog.=) s.quantity THEN
        RETURN subscription.licenses_left(subscription_id);
    END IF;

    -- the counter row is what concurrent license writes wait on
    SELECT * INTO counter FROM subscription.license_counter AS c
     WHERE c.subscription_id OPERATOR(pg_catalog.=) set_quantity.subscription_id FOR NO KEY UPDATE;
    -- the capacity keeps the add-on licenses and takes the new quantity
    new_capacity := counter.capacity OPERATOR(pg_catalog.-) s.quantity OPERATOR(pg_catalog.+) quantity;
    IF counter.used OPERATOR(pg_catalog.>) new_capacity THEN
        RAISE EXCEPTION 'subscription % cannot have fewer licenses than it has assigned', subscription_id
            USING ERRCODE = 'check_violation',
                  DETAIL = format('Limit %s, in use %s.', new_capacity, counter.used),
                  HINT = 'Release licenses with subscription.license_release() first.';
    END IF;

    -- on a tiered plan the quantity is a tier (55000 otherwise)
    new_price := subscription.period_price(s.plan, s.cycle, quantity);
    paid := coalesce(s.paid_quantity, s.quantity);
    IF quantity OPERATOR(pg_catalog.>) paid THEN
        old_price := subscription.period_price(s.plan, s.cycle, paid);
        charge := subscription.prorate_refund(new_price.amount OPERATOR(pg_catalog.-) old_price.amount,
                      lower(s.period), upper(s.period), at, 'day', subscription.money_scale(new_price.currency));
        INSERT INTO subscription.ledger
               (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
        VALUES (s.account_id, s.id, 'charge', charge, new_price.currency,
                tstzrange(at, upper(s.period), '[)'), format('licenses %s-%s', paid OPERATOR(pg_catalog.+) 1, quantity), s.plan,
                format('%s more licenses of plan %s for the rest of the period', quantity OPERATOR(pg_catalog.-) paid, s.plan));
    END IF;

    UPDATE subscription.subscription AS x
       SET quantity = set_quantity.quantity, paid_quantity = greatest(paid, set_quantity.quantity)
     WHERE x.id OPERATOR(pg_catalog.=) s.id;
    RETURN subscription.licenses_left(subscription_id);
END
$$;

REVOKE ALL ON FUNCTION subscription.license_consume(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.license_release(bigint, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.set_quantity(bigint, integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.license_guard() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.sync_license_counter() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.sync_service_seats() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.reseat_licenses(bigint[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.record_history() FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.assign_default_license() FROM PUBLIC;

------------------------------------------------------------------------
-- Plan limits: what an account may use, and what it uses
------------------------------------------------------------------------

-- A feature is named by a plan limit or an add-on; anything else is 42704.
CREATE FUNCTION subscription.require_feature(feature text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM FROM subscription.plan_limit AS l WHERE l.feature OPERATOR(pg_catalog.=) require_feature.feature
    UNION ALL
    SELECT FROM subscription.addon AS a WHERE a.feature OPERATOR(pg_catalog.=) require_feature.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" does not exist', feature
            USING ERRCODE = 'undefined_object',
                  HINT = 'Features are those of subscription.plan_limit and subscription.addon.';
    END IF;
END
$$;

-- The account's limit of a feature: over its active subscriptions, each
-- plan's value (times the quantity when per license: LogMeIn hosts are the
-- tier, L12), plus the units of active add-on batches (Z13, K1).  NULL is
-- unlimited: one unlimited plan makes the feature unlimited.  A feature no
-- active subscription defines has limit 0, plus its add-ons.  One
-- statement in PL/pgSQL, whose plan is cached per session: the limit
-- guard's hot path (a SQL function with a sub-select is planned per call).
CREATE FUNCTION subscription.limit_of(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (
    SELECT CASE WHEN bool_or(x.unlimited) THEN NULL
                -- numeric, so that an overflow is an error, not a wrap
                ELSE coalesce(sum(x.units), 0)::bigint END
      FROM (SELECT l.value IS NULL AS unlimited,
                   CASE WHEN l.per_license THEN l.value::numeric OPERATOR(pg_catalog.*) s.quantity
                        ELSE l.value::numeric END AS units
              FROM subscription.subscription AS s
              JOIN subscription.plan_limit AS l
                ON l.plan OPERATOR(pg_catalog.=) s.plan AND l.feature OPERATOR(pg_catalog.=) limit_of.feature
             WHERE s.account_id OPERATOR(pg_catalog.=) limit_of.account_id
               AND s.status OPERATOR(pg_catalog.=) 'active'
            UNION ALL
            SELECT false, b.quantity::numeric OPERATOR(pg_catalog.*) a.units
              FROM subscription.subscription AS s
              JOIN subscription.addon_batch AS b ON b.subscription_id OPERATOR(pg_catalog.=) s.id
              JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon
             WHERE s.account_id OPERATOR(pg_catalog.=) limit_of.account_id
               AND s.status OPERATOR(pg_catalog.=) 'active'
               AND b.status OPERATOR(pg_catalog.=) 'active'
               AND a.feature OPERATOR(pg_catalog.=) limit_of.feature) AS x);
END
$$;

-- limit_of() for callers: unknown accounts and features are errors.
CREATE FUNCTION subscription.effective_limit(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_account(effective_limit.account_id);
    PERFORM subscription.require_feature(effective_limit.feature);
    RETURN subscription.limit_of(account_id, feature);
END
$$;

COMMENT ON FUNCTION subscription.effective_limit(bigint, text) IS
'The account''s limit of a feature over its active subscriptions and add-ons (NULL: unlimited)';

-- What the account uses of a feature, as the limit triggers keep it.
CREATE FUNCTION subscription.usage(account_id bigint, feature text)
RETURNS bigint
LANGUAGE plpgsql STRICT STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    used bigint;
BEGIN
    PERFORM subscription.require_account(usage.account_id);
    SELECT u.used INTO used FROM subscription.usage_counter AS u
     WHERE u.account_id OPERATOR(pg_catalog.=) usage.account_id AND u.feature OPERATOR(pg_catalog.=) usage.feature;
    IF FOUND THEN
        RETURN used;
    END IF;
    PERFORM subscription.require_feature(usage.feature);
    RETURN 0;
END
$$;

COMMENT ON FUNCTION subscription.usage(bigint, text) IS
'What the account uses of a feature, from subscription.usage_counter';

------------------------------------------------------------------------
-- Plan limits on the application's own tables
------------------------------------------------------------------------

-- One row per (table, feature) the limit guard watches, in registration
-- order (apply_downgrade trims features in that order).
CREATE TABLE subscription.limited_table (
    relation       regclass NOT NULL,
    feature        text NOT NULL,
    account_column name NOT NULL,
    on_downgrade   text NOT NULL CHECK (on_downgrade IN
                   ('drop_newest', 'keep_most_referenced', 'scale', 'cap', 'detach', 'block')),
    order_column   name,
    value_column   name,
    position       bigint GENERATED ALWAYS AS IDENTITY,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (relation, feature),
    -- a feature's usage is one counter per account: one table per feature
    CONSTRAINT limited_table_one_table_per_feature UNIQUE (feature),
    CONSTRAINT limited_table_value_column_needed
        CHECK (value_column IS NOT NULL OR on_downgrade NOT IN ('scale', 'cap', 'detach'))
);
SELECT pg_catalog.pg_extension_config_dump('subscription.limited_table', '');
-- registration order survives a restore: new registrations come after
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('subscription.limited_table', 'position')::pg_catalog.regclass, '');

CREATE FUNCTION subscription.limit_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'limit_guard'
LANGUAGE C;

REVOKE ALL ON FUNCTION subscription.limit_guard() FROM PUBLIC;

-- The column "name" of "relation" with its type, or an error naming what is wrong.
CREATE FUNCTION subscription.limited_column(relation regclass, name name, purpose text, integer_only boolean)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    column_type regtype;
BEGIN
    SELECT a.atttypid::regtype INTO column_type
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid OPERATOR(pg_catalog.=) relation AND a.attname OPERATOR(pg_catalog.=) name
       AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', name, relation
            USING ERRCODE = 'undefined_column', DETAIL = format('It was given as the %s.', purpose);
    END IF;
    IF integer_only AND column_type NOT IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) THEN
        RAISE EXCEPTION 'column "%" of relation % must be an integer column to serve as the %', name, relation, purpose
            USING ERRCODE = 'datatype_mismatch', DETAIL = format('Its type is %s.', column_type);
    END IF;
END
$$;

CREATE FUNCTION subscription.enforce_limit(
    relation regclass,
    feature text,
    account_column name DEFAULT 'account_id',
    on_downgrade text DEFAULT 'drop_newest',
    order_column name DEFAULT NULL,
    value_column name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trigger_name text := left('subscription_limit_' || feature, 63);
    measure text;
    counted bigint;
    own_guard boolean;
BEGIN
    PERFORM subscription.require_arguments('enforce_limit', '{relation,feature,account_column,on_downgrade}',
        ARRAY[relation IS NULL, feature IS NULL, account_column IS NULL, on_downgrade IS NULL]);
    IF on_downgrade OPERATOR(pg_catalog.<>) ALL ('{drop_newest,keep_most_referenced,scale,cap,detach,block}') THEN
        RAISE EXCEPTION 'unknown downgrade policy "%"', on_downgrade
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The policies are drop_newest, keep_most_referenced, scale, cap, detach and block.';
    END IF;
    IF (SELECT c.relkind FROM pg_catalog.pg_class AS c WHERE c.oid OPERATOR(pg_catalog.=) relation)
       OPERATOR(pg_catalog.<>) ALL ('{r,p}') THEN
        RAISE EXCEPTION '% is not a table', relation USING ERRCODE = 'wrong_object_type';
    END IF;
    -- K7, K10: the one limit on the extension's own tables, sub-accounts
    -- per parent account, whose guard the extension attaches itself
    own_guard := relation OPERATOR(pg_catalog.=) 'subscription.account'::pg_catalog.regclass
                 AND feature OPERATOR(pg_catalog.=) 'sub_accounts'
                 AND account_column OPERATOR(pg_catalog.=) 'parent_id';
    IF NOT own_guard AND relation::oid IN (SELECT c.oid FROM pg_catalog.pg_class AS c
                          WHERE c.relnamespace OPERATOR(pg_catalog.=) 'subscription'::regnamespace) THEN
        RAISE EXCEPTION 'the extension''s own table % cannot be limited this way', relation
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Sub-accounts are limited with enforce_limit(''subscription.account'', ''sub_accounts'', ''parent_id'', ...).';
    END IF;
    PERFORM subscription.require_feature(enforce_limit.feature);

    PERFORM subscription.limited_column(relation, account_column, 'account column', true);
    IF on_downgrade OPERATOR(pg_catalog.=) ANY ('{scale,cap,detach}') THEN
        IF value_column IS NULL THEN
            RAISE EXCEPTION 'policy % needs a value column', on_downgrade
                USING ERRCODE = 'null_value_not_allowed';
        END IF;
        PERFORM subscription.limited_column(relation, value_column, 'value column',
                                            on_downgrade OPERATOR(pg_catalog.<>) 'detach');
    ELSIF value_column IS NOT NULL THEN
        PERFORM subscription.limited_column(relation, value_column, 'value column', false);
    END IF;
    IF order_column IS NOT NULL THEN
        PERFORM subscription.limited_column(relation, order_column, 'order column', false);
    END IF;
    IF on_downgrade OPERATOR(pg_catalog.=) 'keep_most_referenced' THEN
        IF (SELECT cardinality(c.conkey) FROM pg_catalog.pg_constraint AS c
             WHERE c.conrelid OPERATOR(pg_catalog.=) relation AND c.contype OPERATOR(pg_catalog.=) 'p')
           IS DISTINCT FROM 1 THEN
            RAISE EXCEPTION 'policy keep_most_referenced needs a single-column primary key on %', relation
                USING ERRCODE = 'invalid_table_definition';
        END IF;
        PERFORM FROM pg_catalog.pg_constraint AS c
         WHERE c.confrelid OPERATOR(pg_catalog.=) relation AND c.contype OPERATOR(pg_catalog.=) 'f';
        IF NOT FOUND THEN
            RAISE EXCEPTION 'policy keep_most_referenced needs a foreign key into %', relation
                USING ERRCODE = 'invalid_table_definition',
                      DETAIL = 'The rows kept are those most referenced through it (C5).';
        END IF;
    END IF;

    -- registering twice is refused: unenforce_limit first to change the options;
    -- a feature is one counter per account, so it lives on one table
    PERFORM FROM subscription.limited_table AS t WHERE t.feature OPERATOR(pg_catalog.=) enforce_limit.feature;
    IF FOUND THEN
        RAISE EXCEPTION 'feature "%" is already enforced', feature
            USING ERRCODE = 'duplicate_object',
                  HINT = 'subscription.unenforce_limit() removes a registration, to register it again with other options.';
    END IF;

    INSERT INTO subscription.limited_table AS t (relation, feature, account_column, on_downgrade, order_column, value_column)
    VALUES (relation, feature, account_column, on_downgrade, order_column, value_column);

    -- what the guard counts: rows, the sum of the values (scale), non-NULL values (detach)
    measure := CASE on_downgrade
                   WHEN 'scale' THEN format('sum(%I)', value_column)
                   WHEN 'detach' THEN format('count(%I)', value_column)
                   ELSE 'count(*)' END;
    -- lock the table against writes while the existing rows are counted
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', relation);
    IF on_downgrade OPERATOR(pg_catalog.<>) 'cap' THEN
        EXECUTE format(
            'INSERT INTO subscription.usage_counter (account_id, feature, used, limit_value)
             SELECT %1$I, %2$L, %3$s, subscription.limit_of(%1$I, %2$L)
               FROM %4$s WHERE %1$I IS NOT NULL GROUP BY %1$I
             ON CONFLICT (account_id, feature) DO UPDATE SET used = excluded.used, limit_value = excluded.limit_value',
            account_column, feature, measure, relation);
    END IF;

    IF own_guard THEN
        RETURN;                 -- the extension attached its guard already
    END IF;
    EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_i', relation, feature);
    EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_u', relation, feature);
    EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_d', relation, feature);
    EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard(%L)',
                   trigger_name || '_t', relation, feature);
END
$$;

COMMENT ON FUNCTION subscription.enforce_limit(regclass, text, name, text, name, name) IS
'Attach the limit guard of a feature to an application table and count its rows';

CREATE FUNCTION subscription.unenforce_limit(relation regclass, feature text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trigger_name text := left('subscription_limit_' || feature, 63);
    suffix text;
BEGIN
    PERFORM subscription.require_arguments('unenforce_limit', '{relation,feature}',
        ARRAY[relation IS NULL, feature IS NULL]);
    DELETE FROM subscription.limited_table AS t
     WHERE t.relation OPERATOR(pg_catalog.=) unenforce_limit.relation
       AND t.feature OPERATOR(pg_catalog.=) unenforce_limit.feature;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'feature "%" is not enforced on %', feature, relation USING ERRCODE = 'undefined_object';
    END IF;
    -- the extension's own guards stay attached, idle until registered again
    IF relation::oid NOT IN (SELECT c.oid FROM pg_catalog.pg_class AS c
                              WHERE c.relnamespace OPERATOR(pg_catalog.=) 'subscription'::regnamespace) THEN
        FOREACH suffix IN ARRAY '{_i,_u,_d,_t}'::text[] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name || suffix, relation);
        END LOOP;
    END IF;
    DELETE FROM subscription.usage_counter AS u WHERE u.feature OPERATOR(pg_catalog.=) unenforce_limit.feature;
END
$$;

-- A dropped table takes its registrations and counters along.  It fires on
-- every DROP in the database, whoever drops: SECURITY DEFINER, so that a
-- role without rights on the extension's tables can still drop its own.
CREATE FUNCTION subscription.forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    WITH gone AS (
        DELETE FROM subscription.limited_table AS t
         USING pg_catalog.pg_event_trigger_dropped_objects() AS d
         WHERE d.objid OPERATOR(pg_catalog.=) t.relation::oid AND d.object_type OPERATOR(pg_catalog.=) 'table'
        RETURNING t.feature)
    DELETE FROM subscription.usage_counter AS u USING gone
     WHERE u.feature OPERATOR(pg_catalog.=) gone.feature;
END
$$;

CREATE EVENT TRIGGER subscription_forget_dropped_tables ON sql_drop
    EXECUTE FUNCTION subscription.forget_dropped_tables();

-- K7, K10: sub-accounts per parent account.  The guard is attached here,
-- as part of the extension (so a dump keeps it), and idle until
-- enforce_limit('subscription.account', 'sub_accounts', 'parent_id',
-- 'drop_newest', 'created_at') registers the limit.
CREATE TRIGGER subscription_limit_sub_accounts_i AFTER INSERT ON subscription.account
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');
CREATE TRIGGER subscription_limit_sub_accounts_u AFTER UPDATE ON subscription.account
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');
CREATE TRIGGER subscription_limit_sub_accounts_d AFTER DELETE ON subscription.account
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');
CREATE TRIGGER subscription_limit_sub_accounts_t AFTER TRUNCATE ON subscription.account
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('sub_accounts');

REVOKE ALL ON FUNCTION subscription.enforce_limit(regclass, text, name, text, name, name) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.unenforce_limit(regclass, text) FROM PUBLIC;

-- The limits stored in the usage counters follow what they are computed
-- from: an account's subscriptions and add-on batches, a plan's limits, an
-- add-on's feature and units.
CREATE FUNCTION subscription.refresh_limits()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    accounts bigint[];
    only_feature text;
BEGIN
    -- an UPDATE can move the row: refresh for its old and its new self
    FOR i IN 1 .. CASE WHEN TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN 2 ELSE 1 END LOOP
        IF i OPERATOR(pg_catalog.=) 1 AND TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
            r := OLD;
        ELSE
            r := NEW;
        END IF;
        IF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'subscription' THEN
            accounts := ARRAY[r.account_id];
        ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'addon_batch' THEN
            SELECT array_agg(s.account_id) INTO accounts
              FROM subscription.subscription AS s WHERE s.id OPERATOR(pg_catalog.=) r.subscription_id;
        ELSIF TG_TABLE_NAME OPERATOR(pg_catalog.=) 'plan_limit' THEN
            only_feature := r.feature;
            SELECT array_agg(DISTINCT s.account_id) INTO accounts
              FROM subscription.subscription AS s WHERE s.plan OPERATOR(pg_catalog.=) r.plan;
        ELSE
            SELECT array_agg(DISTINCT s.account_id) INTO accounts
              FROM subscription.subscription AS s
              JOIN subscription.addon_batch AS b ON b.subscription_id OPERATOR(pg_catalog.=) s.id
             WHERE b.addon OPERATOR(pg_catalog.=) r.code;
        END IF;
        UPDATE subscription.usage_counter AS u
           SET limit_value = subscription.limit_of(u.account_id, u.feature)
         WHERE u.account_id OPERATOR(pg_catalog.=) ANY (accounts)
           AND (only_feature IS NULL OR u.feature OPERATOR(pg_catalog.=) only_feature)
           AND u.limit_value IS DISTINCT FROM subscription.limit_of(u.account_id, u.feature);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER subscription_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE OF account_id, plan, quantity, status ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits();
CREATE TRIGGER addon_batch_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits();
CREATE TRIGGER plan_limit_refresh_limits
    AFTER INSERT OR DELETE OR UPDATE ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits();
CREATE TRIGGER addon_refresh_limits
    AFTER UPDATE OF feature, units ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.refresh_limits();

REVOKE ALL ON FUNCTION subscription.refresh_limits() FROM PUBLIC;

-- C4-C12: the pending downgrade takes effect now and every registered
-- table of the account is trimmed to the new limits (src/downgrade.c).
CREATE FUNCTION subscription.apply_downgrade(subscription_id bigint, dry_run boolean DEFAULT false)
RETURNS TABLE (feature text, relation regclass, action text, row_id text, old_value bigint, new_value bigint)
AS 'MODULE_PATHNAME', 'apply_downgrade'
LANGUAGE C VOLATILE
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.apply_downgrade(bigint, boolean) IS
'Apply the pending downgrade and trim the account''s registered tables to the new limits; dry_run previews it (C4-C12)';

REVOKE ALL ON FUNCTION subscription.apply_downgrade(bigint, boolean) FROM PUBLIC;

------------------------------------------------------------------------
-- Lifecycle: what takes effect at the next period (Z7, Z8, R6)
------------------------------------------------------------------------

-- The subscription, locked for a change, with the actor's right checked;
-- 55000 unless it is active.
CREATE FUNCTION subscription.subscription_for_change(fn text, subscription_id bigint, action text)
RETURNS subscription.subscription
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    SELECT * INTO s FROM subscription.subscription AS x
     WHERE x.id OPERATOR(pg_catalog.=) subscription_for_change.subscription_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(s.account_id, action);
    IF s.status OPERATOR(pg_catalog.<>) 'active' THEN
        RAISE EXCEPTION 'subscription % is %', subscription_id, s.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('%s() changes active subscriptions only.', fn);
    END IF;
    RETURN s;
END
$$;

-- The add-ons of a subscription that renew with it (active, recurring,
-- not cancelled) and have no price for "cycle", as a list, or NULL.
CREATE FUNCTION subscription.unpriced_addons(subscription_id bigint, cycle interval)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT string_agg(DISTINCT b.addon, ', ')
      FROM subscription.addon_batch AS b
      JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon AND NOT a.one_time
     WHERE b.subscription_id OPERATOR(pg_catalog.=) unpriced_addons.subscription_id
       AND b.status OPERATOR(pg_catalog.=) 'active' AND NOT b.cancel_at_period_end
       AND NOT EXISTS (SELECT FROM subscription.addon_price AS ap
                        WHERE ap.addon OPERATOR(pg_catalog.=) b.addon
                          AND subscription.cycle_key(ap.cycle) OPERATOR(pg_catalog.=)
                              subscription.cycle_key(unpriced_addons.cycle));
END;

-- Z7: a new cycle takes effect when the next period starts (switching an
-- annual plan to monthly in its first month takes effect eleven months
-- later); the plan must have a price for it.  Returns when it takes effect.
CREATE FUNCTION subscription.change_cycle(subscription_id bigint, cycle interval)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    missing text;
BEGIN
    PERFORM subscription.require_arguments('change_cycle', '{subscription_id,cycle}',
        ARRAY[subscription_id IS NULL, cycle IS NULL]);
    PERFORM subscription.require_cycle(cycle);
    s := subscription.subscription_for_change('change_cycle', subscription_id, 'change_plan');
    -- the plan must sell this cycle for the quantity, and so must the
    -- add-ons that will renew with it (22023 otherwise)
    PERFORM subscription.period_price(coalesce(s.pending_plan, s.plan), cycle,
                                      coalesce(s.pending_quantity, s.quantity));
    missing := subscription.unpriced_addons(s.id, cycle);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'add-on "%" has no price for cycle %', missing, cycle
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The prices of an add-on are its rows in subscription.addon_price.';
    END IF;
    UPDATE subscription.subscription AS x
       SET pending_cycle = CASE WHEN subscription.cycle_key(change_cycle.cycle)
                                     OPERATOR(pg_catalog.=) subscription.cycle_key(s.cycle)
                                THEN NULL ELSE change_cycle.cycle END
     WHERE x.id OPERATOR(pg_catalog.=) s.id;
    RETURN upper(s.period);
END
$$;

-- R6: the renewal option; admins need the right change_renewal (R9).
CREATE FUNCTION subscription.set_renewal(subscription_id bigint, renewal text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('set_renewal', '{subscription_id,renewal}',
        ARRAY[subscription_id IS NULL, renewal IS NULL]);
    PERFORM subscription.require_renewal(renewal);
    PERFORM subscription.subscription_for_change('set_renewal', subscription_id, 'change_renewal');
    UPDATE subscription.subscription AS x SET renewal = set_renewal.renewal
     WHERE x.id OPERATOR(pg_catalog.=) set_renewal.subscription_id;
END
$$;

-- Z8: a cancellation takes effect at the end of the period; until then the
-- subscription stays active.  Returns when it ends.  Cancelling again is
-- harmless and returns the same time.
CREATE FUNCTION subscription.cancel(subscription_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
BEGIN
    PERFORM subscription.require_arguments('cancel', '{subscription_id}', ARRAY[subscription_id IS NULL]);
    s := subscription.subscription_for_change('cancel', subscription_id, 'cancel');
    UPDATE subscription.subscription AS x SET cancel_at_period_end = true
     WHERE x.id OPERATOR(pg_catalog.=) s.id AND NOT x.cancel_at_period_end;
    RETURN upper(s.period);
END
$$;

-- Z8: the whole account: every active subscription, each at its period end.
CREATE FUNCTION subscription.cancel_account(account_id bigint)
RETURNS TABLE (subscription_id bigint, ends_at timestamptz)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('cancel_account', '{account_id}', ARRAY[account_id IS NULL]);
    PERFORM subscription.require_account(cancel_account.account_id);
    PERFORM subscription.authorize(account_id, 'cancel');
    RETURN QUERY
    SELECT s.id, subscription.cancel(s.id)
      FROM subscription.subscription AS s
     WHERE s.account_id OPERATOR(pg_catalog.=) cancel_account.account_id
       AND s.status OPERATOR(pg_catalog.=) 'active'
     ORDER BY s.id;
END
$$;

REVOKE ALL ON FUNCTION subscription.change_cycle(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.set_renewal(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.cancel(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.cancel_account(bigint) FROM PUBLIC;

------------------------------------------------------------------------
-- Lifecycle: plan changes (C1-C4, Z5)
------------------------------------------------------------------------

-- Digits of a currency's minor unit, the scale prorate_refund rounds to.
CREATE FUNCTION subscription.money_scale(currency text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT c.exponent FROM subscription.currency AS c WHERE c.code OPERATOR(pg_catalog.=) money_scale.currency;
END;

-- Gives back the unused part [at, end) of every charge of the
-- subscription's current period not given back yet: the plan and the
-- licenses added since, each charge as it was really paid (less its
-- discounts), not at the list price.  kind 'refund' pays it back, 'credit'
-- keeps it on the account (L9).  One line per charge, linked to it, so
-- that no charge is given back twice.  Returns the total.
CREATE FUNCTION subscription.give_back_unused(s subscription.subscription, at timestamptz, kind text, reason text)
RETURNS numeric
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    total numeric;
BEGIN
    WITH open_charges AS (
        SELECT c.id, c.currency, c.period, c.plan, c.item,
               c.amount OPERATOR(pg_catalog.-) coalesce((
                   SELECT sum(d.amount) FROM subscription.ledger AS d
                    WHERE d.charge_id OPERATOR(pg_catalog.=) c.id
                      AND d.kind OPERATOR(pg_catalog.=) 'discount'), 0) AS paid
          FROM subscription.ledger AS c
         WHERE c.subscription_id OPERATOR(pg_catalog.=) s.id
           AND c.kind OPERATOR(pg_catalog.=) 'charge'
           AND c.addon_batch_id IS NULL
           AND c.period OPERATOR(pg_catalog.&&) s.period
           AND NOT EXISTS (SELECT FROM subscription.ledger AS r
                            WHERE r.charge_id OPERATOR(pg_catalog.=) c.id
                              AND r.kind OPERATOR(pg_catalog.=) ANY ('{refund,credit}'))),
    given AS (
        INSERT INTO subscription.ledger AS l
               (account_id, subscription_id, kind, amount, currency, period, item, plan, charge_id, description)
        SELECT s.account_id, s.id, give_back_unused.kind,
               subscription.prorate_refund(o.paid, lower(o.period), upper(o.period), at, 'day',
                                           subscription.money_scale(o.currency)),
               o.currency, tstzrange(at, upper(o.period), '[)'), o.item, o.plan, o.id,
               format('%s: unused part of charge %s (plan %s)', reason, o.id, o.plan)
          FROM open_charges AS o
         WHERE o.paid OPERATOR(pg_catalog.>) 0 AND at OPERATOR(pg_catalog.<) upper(o.period)
        RETURNING l.amount)
    SELECT coalesce(sum(g.amount), 0) INTO total FROM given AS g;
    RETURN total;
END
$$;

-- C1-C4, Z5.  A higher (or equal) rank is an upgrade, by the product's
-- upgrade mode: 'restart' gives back the unused part of what was paid and
-- starts a new full period now at the new price (C1); 'prorate' keeps the
-- period, gives back the unused part and charges the new price for the
-- rest of it.  An upgrade drops a pending downgrade.  A lower rank is a
-- downgrade, by the downgrade mode: 'end_of_period' stores it as
-- pending_plan for renew_due (C4); 'immediate' prorates like an upgrade
-- and trims the account's data now through apply_downgrade.  Changing to
-- the current plan drops a pending downgrade.
CREATE FUNCTION subscription.change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT now())
RETURNS TABLE (effective_at timestamptz, refund numeric, charge numeric)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    old_plan subscription.plan;
    new_plan subscription.plan;
    modes subscription.product;
    price record;
    new_period tstzrange;
BEGIN
    PERFORM subscription.require_arguments('change_plan', '{subscription_id,plan,at}',
        ARRAY[subscription_id IS NULL, plan IS NULL, at IS NULL]);
    SELECT * INTO new_plan FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) change_plan.plan;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'plan "%" does not exist', plan USING ERRCODE = 'undefined_object';
    END IF;
    s := subscription.subscription_for_change('change_plan', subscription_id, 'change_plan');
    IF NOT at OPERATOR(pg_catalog.<@) s.period THEN
        RAISE EXCEPTION 'change time % is outside the current period %', at, s.period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Renew the subscription first with subscription.renew_due().';
    END IF;
    SELECT * INTO old_plan FROM subscription.plan AS p WHERE p.code OPERATOR(pg_catalog.=) s.plan;
    IF new_plan.product OPERATOR(pg_catalog.<>) old_plan.product THEN
        RAISE EXCEPTION 'plan "%" is not a plan of product "%"', plan, old_plan.product
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Subscribe to the other product with subscription.subscribe().';
    END IF;

    effective_at := at;
    refund := 0;
    charge := 0;
    IF new_plan.code OPERATOR(pg_catalog.=) s.plan THEN
        UPDATE subscription.subscription AS x SET pending_plan = NULL
         WHERE x.id OPERATOR(pg_catalog.=) s.id AND x.pending_plan IS NOT NULL;
        RETURN NEXT;
        RETURN;
    END IF;

    SELECT * INTO modes FROM subscription.product AS p WHERE p.code OPERATOR(pg_catalog.=) new_plan.product;
    IF new_plan.rank OPERATOR(pg_catalog.<) old_plan.rank AND modes.downgrade OPERATOR(pg_catalog.=) 'end_of_period' THEN
        -- C4: the current plan runs to the end of the period; the new one
        -- must sell the cycle and quantity of the next (22023, 55000)
        PERFORM subscription.period_price(new_plan.code, coalesce(s.pending_cycle, s.cycle),
                                          coalesce(s.pending_quantity, s.quantity));
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code WHERE x.id OPERATOR(pg_catalog.=) s.id;
        effective_at := upper(s.period);
        RETURN NEXT;
        RETURN;
    END IF;

    -- the new plan must sell the cycle and the quantity (22023, 55000)
    price := subscription.period_price(new_plan.code, s.cycle, s.quantity);
    refund := subscription.give_back_unused(s, at, 'refund', format('change to plan %s', new_plan.code));
    IF new_plan.rank OPERATOR(pg_catalog.>=) old_plan.rank AND modes.upgrade OPERATOR(pg_catalog.=) 'restart' THEN
        -- C1: a new full period starts now
        new_period := subscription.nth_period(at, s.cycle, 1);
        charge := subscription.round_money(price.amount, price.currency);
    ELSE
        new_period := s.period;
        charge := subscription.prorate_refund(price.amount, lower(s.period), upper(s.period), at, 'day',
                                              subscription.money_scale(price.currency));
    END IF;
    INSERT INTO subscription.ledger
           (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.account_id, s.id, 'charge', charge, price.currency,
            tstzrange(at, upper(new_period), '[)'), format('change to %s', new_plan.code), new_plan.code,
            format('plan %s from %s, cycle %s, quantity %s', new_plan.code, at, s.cycle, s.quantity));

    IF new_plan.rank OPERATOR(pg_catalog.<) old_plan.rank THEN
        -- immediate downgrade: apply_downgrade moves to the plan and trims
        UPDATE subscription.subscription AS x SET pending_plan = new_plan.code, paid_quantity = x.quantity
         WHERE x.id OPERATOR(pg_catalog.=) s.id;
        PERFORM FROM subscription.apply_downgrade(s.id);
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = new_plan.code, pending_plan = NULL, paid_quantity = x.quantity,
               period = new_period,
               anchor = CASE WHEN new_period OPERATOR(pg_catalog.=) s.period THEN x.anchor ELSE at END
         WHERE x.id OPERATOR(pg_catalog.=) s.id;
    END IF;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION subscription.give_back_unused(subscription.subscription, timestamptz, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.change_plan(bigint, text, timestamptz) FROM PUBLIC;

-- C3: one row per billing event of a subscription, the lines effective at
-- one time (a change gives back from and charges from its time): the
-- plan, what was charged net of discounts (the invoice), what was given
-- back, and the balance paid (the receipt).
CREATE VIEW subscription.invoice AS
SELECT l.account_id,
       l.subscription_id,
       coalesce(lower(l.period), l.created_at) AS at,
       (array_agg(l.plan ORDER BY l.id DESC) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'))[1] AS plan,
       l.currency,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'), 0)
         OPERATOR(pg_catalog.-) coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'discount'), 0) AS charged,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'refund'), 0) AS refunded,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'credit'), 0) AS credited,
       coalesce(sum(CASE l.kind WHEN 'charge' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END), 0) AS balance,
       jsonb_agg(jsonb_build_object('kind', l.kind, 'amount', l.amount, 'item', l.item,
                                    'period', l.period, 'description', l.description) ORDER BY l.id) AS lines
  FROM subscription.ledger AS l
 WHERE l.subscription_id IS NOT NULL
 GROUP BY l.account_id, l.subscription_id, coalesce(lower(l.period), l.created_at), l.currency;

COMMENT ON VIEW subscription.invoice IS
'One row per billing event of a subscription: plan, charged, refunded, credited and the balance (C3)';

------------------------------------------------------------------------
-- What reduces a charge: coupons (Z10) and credits (L9, L10)
------------------------------------------------------------------------

-- After each charge line: the subscription's coupon reduces a period's
-- plan charge (its own 'discount' line, while it has periods left), then
-- the account's credit pays what remains ('credit_used' lines).  One
-- place for both, whatever function wrote the charge.
CREATE FUNCTION subscription.reduce_charge()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c subscription.coupon;
    discount numeric := 0;
    balance numeric;
    used numeric;
BEGIN
    IF NEW.subscription_id IS NOT NULL AND NEW.item OPERATOR(pg_catalog.=) 'plan' THEN
        discount := subscription.coupon_discount(NEW.subscription_id, NEW.amount, NEW.currency);
        IF discount OPERATOR(pg_catalog.>) 0 THEN
            SELECT x.* INTO c FROM subscription.subscription AS s
              JOIN subscription.coupon AS x ON x.code OPERATOR(pg_catalog.=) s.coupon
             WHERE s.id OPERATOR(pg_catalog.=) NEW.subscription_id;
            INSERT INTO subscription.ledger
                   (account_id, subscription_id, kind, amount, currency, period, item, plan, charge_id, description)
            VALUES (NEW.account_id, NEW.subscription_id, 'discount', discount, NEW.currency, NEW.period, NEW.item,
                    NEW.plan, NEW.id,
                    format('coupon %s: %s off', c.code,
                           coalesce(c.percent_off::text || '%', c.amount_off::text || ' ' || c.currency)));
            UPDATE subscription.subscription AS s
               SET coupon_periods_left = s.coupon_periods_left OPERATOR(pg_catalog.-) 1
             WHERE s.id OPERATOR(pg_catalog.=) NEW.subscription_id AND s.coupon_periods_left IS NOT NULL;
        END IF;
    END IF;

    -- credit: read without a lock first, the common case is none
    IF subscription.credit_balance(NEW.account_id, NEW.currency) OPERATOR(pg_catalog.>) 0 THEN
        -- concurrent charges of the account take its credit one at a time
        PERFORM FROM subscription.account AS a WHERE a.id OPERATOR(pg_catalog.=) NEW.account_id FOR NO KEY UPDATE;
        balance := subscription.credit_balance(NEW.account_id, NEW.currency);
        used := least(balance, NEW.amount OPERATOR(pg_catalog.-) discount);
        IF used OPERATOR(pg_catalog.>) 0 THEN
            INSERT INTO subscription.ledger
                   (account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description)
            VALUES (NEW.account_id, NEW.subscription_id, NEW.addon_batch_id, 'credit_used', used, NEW.currency,
                    NEW.period, NEW.item, NEW.plan, NEW.id, format('credit pays charge %s', NEW.id));
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER ledger_reduce_charge AFTER INSERT ON subscription.ledger
    FOR EACH ROW WHEN (NEW.kind = 'charge') EXECUTE FUNCTION subscription.reduce_charge();
REVOKE ALL ON FUNCTION subscription.reduce_charge() FROM PUBLIC;


-- L9, L10: credit an account, with a reason; the next charges use it.
CREATE FUNCTION subscription.credit_account(account_id bigint, amount numeric, reason text,
                                            currency text DEFAULT 'EUR')
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line bigint;
BEGIN
    PERFORM subscription.require_arguments('credit_account', '{account_id,amount,reason,currency}',
        ARRAY[account_id IS NULL, amount IS NULL, reason IS NULL, currency IS NULL]);
    PERFORM subscription.require_account(credit_account.account_id);
    PERFORM subscription.authorize(credit_account.account_id, 'pay');
    PERFORM FROM subscription.currency AS c WHERE c.code OPERATOR(pg_catalog.=) credit_account.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    IF amount OPERATOR(pg_catalog.<=) 0 OR amount OPERATOR(pg_catalog.>=) 'Infinity'
       OR amount OPERATOR(pg_catalog.<>) subscription.round_money(amount, currency) THEN
        RAISE EXCEPTION 'a credit must be a positive amount in the minor unit of %', currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    INSERT INTO subscription.ledger AS l (account_id, kind, amount, currency, item, description)
    VALUES (credit_account.account_id, 'credit', amount, currency, 'credit', reason)
    RETURNING l.id INTO line;
    RETURN line;
END
$$;

-- L9: end a subscription now to consolidate it into the account's
-- renewal: the unused days of what it paid become credit.
CREATE FUNCTION subscription.end_early(subscription_id bigint, at timestamptz DEFAULT now())
RETURNS numeric
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    credited numeric;
BEGIN
    PERFORM subscription.require_arguments('end_early', '{subscription_id,at}',
        ARRAY[subscription_id IS NULL, at IS NULL]);
    s := subscription.subscription_for_change('end_early', subscription_id, 'cancel');
    IF NOT at OPERATOR(pg_catalog.<@) s.period THEN
        RAISE EXCEPTION 'end time % is outside the current period %', at, s.period
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    credited := subscription.give_back_unused(s, at, 'credit', 'consolidation');
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.subscription_id OPERATOR(pg_catalog.=) s.id AND b.status OPERATOR(pg_catalog.=) 'active';
    UPDATE subscription.subscription AS x SET status = 'cancelled' WHERE x.id OPERATOR(pg_catalog.=) s.id;
    RETURN credited;
END
$$;

REVOKE ALL ON FUNCTION subscription.credit_account(bigint, numeric, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.end_early(bigint, timestamptz) FROM PUBLIC;

-- L10: the account's credits line by line, with the running balance.
CREATE VIEW subscription.credit_statement AS
SELECT l.account_id,
       l.id AS ledger_id,
       l.created_at,
       l.subscription_id,
       l.kind,
       CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END AS change,
       sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END)
           OVER (PARTITION BY l.account_id, l.currency ORDER BY l.id) AS balance,
       l.currency,
       l.description
  FROM subscription.ledger AS l
 WHERE l.kind OPERATOR(pg_catalog.=) ANY ('{credit,credit_used}');

COMMENT ON VIEW subscription.credit_statement IS
'Credits and their uses per account, line by line, with the running balance (L10)';

------------------------------------------------------------------------
-- Add-ons (K1-K5, Z6)
------------------------------------------------------------------------

-- The price of "quantity" units of an add-on for a cycle (NULL: the
-- one-time price); 22023 when the add-on is not sold so.
CREATE FUNCTION subscription.addon_period_price(addon text, cycle interval, quantity integer,
                                                OUT amount numeric, OUT currency text)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT ap.amount OPERATOR(pg_catalog.*) quantity, ap.currency INTO amount, currency
      FROM subscription.addon_price AS ap
     WHERE ap.addon OPERATOR(pg_catalog.=) addon_period_price.addon
       AND subscription.cycle_key(ap.cycle) IS NOT DISTINCT FROM subscription.cycle_key(addon_period_price.cycle);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on "%" has no price for %', addon,
                        coalesce('cycle ' || cycle::text, 'a one-time purchase')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'The prices of an add-on are its rows in subscription.addon_price.';
    END IF;
END
$$;

-- K1-K3, Z6: a batch of add-on units for the subscription.  A recurring
-- add-on is charged for the rest of the current period, prorated by day,
-- and renews with the plan; the ledger line names the full-cycle amount
-- (K3).  A one-time add-on is charged in full, once (K2).
CREATE FUNCTION subscription.purchase_addon(subscription_id bigint, addon text, quantity integer DEFAULT 1,
                                            at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    a subscription.addon;
    offer subscription.plan_addon;
    price record;
    plan_price record;
    batch bigint;
    one_time boolean;
BEGIN
    PERFORM subscription.require_arguments('purchase_addon', '{subscription_id,addon,quantity,at}',
        ARRAY[subscription_id IS NULL, addon IS NULL, quantity IS NULL, at IS NULL]);
    IF quantity < 1 THEN
        RAISE EXCEPTION 'quantity must be at least 1'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The quantity was %s.', quantity);
    END IF;
    SELECT * INTO a FROM subscription.addon AS x WHERE x.code OPERATOR(pg_catalog.=) purchase_addon.addon;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on "%" does not exist', addon USING ERRCODE = 'undefined_object';
    END IF;
    -- K8: members of a sub-account do not buy
    s := subscription.subscription_for_change('purchase_addon', subscription_id, 'purchase');
    IF NOT at OPERATOR(pg_catalog.<@) s.period THEN
        RAISE EXCEPTION 'purchase time % is outside the current period %', at, s.period
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Renew the subscription first with subscription.renew_due().';
    END IF;

    SELECT * INTO offer FROM subscription.plan_addon AS o
     WHERE o.plan OPERATOR(pg_catalog.=) s.plan AND o.addon OPERATOR(pg_catalog.=) a.code;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on "%" is not sold with plan "%"', a.code, s.plan
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'The add-ons a plan may buy are its rows in subscription.plan_addon.';
    ELSIF offer.included THEN
        RAISE EXCEPTION 'add-on "%" is already included in plan "%"', a.code, s.plan   -- Z6
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    plan_price := subscription.period_price(s.plan, s.cycle, s.quantity);
    IF plan_price.amount OPERATOR(pg_catalog.=) 0 THEN
        RAISE EXCEPTION 'add-ons are sold on paid plans only'                            -- K1
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = format('Plan "%s" is free.', s.plan);
    END IF;

    one_time := a.one_time;
    price := subscription.addon_period_price(a.code, CASE WHEN one_time THEN NULL ELSE s.cycle END, quantity);
    INSERT INTO subscription.addon_batch AS b (subscription_id, addon, quantity, purchased_at)
    VALUES (s.id, a.code, quantity, at)
    RETURNING b.id INTO batch;
    INSERT INTO subscription.ledger
           (account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
    SELECT s.account_id, s.id, batch, 'charge', c.amount, price.currency,
           CASE WHEN one_time THEN NULL ELSE tstzrange(at, upper(s.period), '[)') END, 'addon', s.plan,
           CASE WHEN one_time
                THEN format('add-on %s x %s, one-time', a.code, quantity)
                ELSE format('add-on %s x %s for the rest of the period; full cycle %s %s', a.code, quantity,
                            subscription.round_money(price.amount, price.currency), price.currency) END
      FROM (SELECT CASE WHEN one_time THEN subscription.round_money(price.amount, price.currency)
                        ELSE subscription.prorate_refund(price.amount, lower(s.period), upper(s.period), at, 'day',
                                                         subscription.money_scale(price.currency)) END) AS c(amount);
    RETURN batch;
END
$$;

-- K4, K5: the whole batch ends with the period and is not billed again;
-- it can be bought again.  Returns when it ends.
CREATE FUNCTION subscription.cancel_addon(batch_id bigint)
RETURNS timestamptz
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b subscription.addon_batch;
    s subscription.subscription;
BEGIN
    PERFORM subscription.require_arguments('cancel_addon', '{batch_id}', ARRAY[batch_id IS NULL]);
    SELECT * INTO b FROM subscription.addon_batch AS x WHERE x.id OPERATOR(pg_catalog.=) cancel_addon.batch_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'add-on batch % does not exist', batch_id USING ERRCODE = 'no_data_found';
    END IF;
    s := subscription.subscription_for_change('cancel_addon', b.subscription_id, 'cancel');
    IF b.status OPERATOR(pg_catalog.<>) 'active' THEN
        RAISE EXCEPTION 'add-on batch % is %', batch_id, b.status USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF (SELECT x.one_time FROM subscription.addon AS x WHERE x.code OPERATOR(pg_catalog.=) b.addon) THEN
        RAISE EXCEPTION 'add-on batch % was a one-time purchase', batch_id
            USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'Nothing renews, so nothing can be cancelled.';
    END IF;
    UPDATE subscription.addon_batch AS x SET cancel_at_period_end = true
     WHERE x.id OPERATOR(pg_catalog.=) b.id AND NOT x.cancel_at_period_end;
    RETURN upper(s.period);
END
$$;

REVOKE ALL ON FUNCTION subscription.purchase_addon(bigint, text, integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.cancel_addon(bigint) FROM PUBLIC;

------------------------------------------------------------------------
-- Previews (Z9): the lines a change would write, without writing them
------------------------------------------------------------------------

-- Runs "change" (one of the functions below) in a subtransaction that is
-- rolled back, and returns the ledger lines it wrote for the subscription:
-- the preview is the change itself, so it cannot drift from it.  Every
-- writer of a subscription's lines locks the subscription first, so the
-- lines after the last one are the change's.
CREATE FUNCTION subscription.ledger_lines_of(subscription_id bigint, change text)
RETURNS SETOF subscription.ledger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    last_line bigint;
    lines subscription.ledger[];
BEGIN
    PERFORM FROM subscription.subscription AS s
     WHERE s.id OPERATOR(pg_catalog.=) ledger_lines_of.subscription_id FOR NO KEY UPDATE;
    SELECT coalesce(max(l.id), 0) INTO last_line FROM subscription.ledger AS l
     WHERE l.subscription_id OPERATOR(pg_catalog.=) ledger_lines_of.subscription_id;
    BEGIN
        EXECUTE change;
        SELECT array_agg(l ORDER BY l.id) INTO lines FROM subscription.ledger AS l
         WHERE l.subscription_id OPERATOR(pg_catalog.=) ledger_lines_of.subscription_id
           AND l.id OPERATOR(pg_catalog.>) last_line;
        RAISE EXCEPTION 'preview' USING ERRCODE = 'SBPRV';  -- undoes the change
    EXCEPTION WHEN SQLSTATE 'SBPRV' THEN
        NULL;
    END;
    RETURN QUERY SELECT * FROM unnest(lines);
END
$$;

CREATE FUNCTION subscription.preview_change_plan(subscription_id bigint, plan text, at timestamptz DEFAULT now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT * FROM subscription.change_plan(%L, %L, %L)', subscription_id, plan, at));
END;

CREATE FUNCTION subscription.preview_set_quantity(subscription_id bigint, quantity integer, at timestamptz DEFAULT now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT subscription.set_quantity(%L, %L, %L)', subscription_id, quantity, at));
END;

CREATE FUNCTION subscription.preview_purchase_addon(subscription_id bigint, addon text, quantity integer DEFAULT 1,
                                                    at timestamptz DEFAULT now())
RETURNS SETOF subscription.ledger
LANGUAGE sql
BEGIN ATOMIC
    SELECT * FROM subscription.ledger_lines_of(subscription_id,
        format('SELECT subscription.purchase_addon(%L, %L, %L, %L)', subscription_id, addon, quantity, at));
END;

REVOKE ALL ON FUNCTION subscription.ledger_lines_of(bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.preview_change_plan(bigint, text, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.preview_set_quantity(bigint, integer, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.preview_purchase_addon(bigint, text, integer, timestamptz) FROM PUBLIC;

------------------------------------------------------------------------
-- Renewals (C4, Z7, Z8, R6, K2, K4, K10)
------------------------------------------------------------------------

-- One period of one due subscription, locked by the caller: the batches
-- cancelled for this period end (K4); a cancelled subscription (Z8) or
-- one that does not renew (R6 'none') ends; otherwise the pending plan,
-- cycle and quantity take effect (C4, Z7), the renewal option moves on
-- ('once' becomes 'none', 'to_monthly' continues monthly), the new period
-- is charged, the plan and each recurring add-on batch once (C2), and when
-- the limits may have dropped (may_trim: renewal_may_trim() asked by the
-- caller before anything moved), apply_downgrade trims the account's data
-- (C5-C11, K10).  Returns the new status.
CREATE FUNCTION subscription.renew_period(s subscription.subscription, may_trim boolean)
RETURNS text
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ends timestamptz := upper(s.period);
    next_plan text := coalesce(s.pending_plan, s.plan);
    next_quantity integer := coalesce(s.pending_quantity, s.quantity);
    next_cycle interval := CASE WHEN s.renewal OPERATOR(pg_catalog.=) 'to_monthly' THEN interval '1 month'
                                ELSE coalesce(s.pending_cycle, s.cycle) END;
    same_cycle boolean;
    next_period tstzrange;
    price record;
BEGIN
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.subscription_id OPERATOR(pg_catalog.=) s.id AND b.status OPERATOR(pg_catalog.=) 'active'
       AND (b.cancel_at_period_end OR s.cancel_at_period_end OR s.renewal OPERATOR(pg_catalog.=) 'none');
    IF s.cancel_at_period_end OR s.renewal OPERATOR(pg_catalog.=) 'none' THEN
        UPDATE subscription.subscription AS x
           SET status = CASE WHEN s.cancel_at_period_end THEN 'cancelled' ELSE 'expired' END
         WHERE x.id OPERATOR(pg_catalog.=) s.id
        RETURNING x.status INTO s.status;
        RETURN s.status;
    END IF;

    same_cycle := subscription.cycle_key(next_cycle) OPERATOR(pg_catalog.=) subscription.cycle_key(s.cycle);
    -- a new cycle counts from the start of its first period (Z7)
    next_period := subscription.nth_period(CASE WHEN same_cycle THEN s.anchor ELSE ends END, next_cycle,
                                           CASE WHEN same_cycle THEN s.period_number OPERATOR(pg_catalog.+) 1 ELSE 1 END);
    price := subscription.period_price(next_plan, next_cycle, next_quantity);
    IF same_cycle AND s.pending_plan IS NULL AND s.pending_quantity IS NULL THEN
        -- the common renewal: only the period moves, and the triggers on
        -- plan, quantity and status (limits, seats) have nothing to do
        UPDATE subscription.subscription AS x
           SET period_number = x.period_number OPERATOR(pg_catalog.+) 1, period = next_period,
               paid_quantity = next_quantity, pending_cycle = NULL,
               renewal = CASE x.renewal WHEN 'once' THEN 'none' ELSE x.renewal END
         WHERE x.id OPERATOR(pg_catalog.=) s.id;
    ELSE
        UPDATE subscription.subscription AS x
           SET plan = next_plan, cycle = next_cycle, quantity = next_quantity, paid_quantity = next_quantity,
               pending_plan = NULL, pending_cycle = NULL, pending_quantity = NULL,
               anchor = CASE WHEN same_cycle THEN x.anchor ELSE ends END,
               period_number = CASE WHEN same_cycle THEN x.period_number OPERATOR(pg_catalog.+) 1 ELSE 1 END,
               period = next_period,
               renewal = CASE x.renewal WHEN 'once' THEN 'none' WHEN 'to_monthly' THEN 'always' ELSE x.renewal END
         WHERE x.id OPERATOR(pg_catalog.=) s.id;
    END IF;

    -- C2: the constraint makes a second charge of the period impossible
    INSERT INTO subscription.ledger
           (account_id, subscription_id, kind, amount, currency, period, item, plan, description)
    VALUES (s.account_id, s.id, 'charge', subscription.round_money(price.amount, price.currency), price.currency,
            next_period, 'plan', next_plan,
            format('renewal: plan %s, cycle %s, quantity %s', next_plan, next_cycle, next_quantity))
    ON CONFLICT (subscription_id, addon_batch_id, period, item)
       WHERE kind OPERATOR(pg_catalog.=) 'charge' AND subscription_id IS NOT NULL DO NOTHING;
    INSERT INTO subscription.ledger
           (account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan, description)
    SELECT s.account_id, s.id, b.id, 'charge', subscription.round_money(p.amount, p.currency), p.currency,
           next_period, 'addon', next_plan, format('renewal: add-on %s x %s, cycle %s', b.addon, b.quantity, next_cycle)
      FROM subscription.addon_batch AS b
      JOIN subscription.addon AS a ON a.code OPERATOR(pg_catalog.=) b.addon AND NOT a.one_time
     CROSS JOIN LATERAL subscription.addon_period_price(b.addon, next_cycle, b.quantity) AS p
     WHERE b.subscription_id OPERATOR(pg_catalog.=) s.id AND b.status OPERATOR(pg_catalog.=) 'active'
     ORDER BY b.id
    ON CONFLICT (subscription_id, addon_batch_id, period, item)
       WHERE kind OPERATOR(pg_catalog.=) 'charge' AND subscription_id IS NOT NULL DO NOTHING;

    IF may_trim THEN
        PERFORM FROM subscription.apply_downgrade(s.id);
    END IF;
    RETURN 'active';
END
$$;

-- Why the next renewal of a subscription would fail (no price for its
-- plan, cycle and quantity, or for one of its add-on batches), or NULL.
-- A plain lookup: renew_due() checks every subscription without a
-- subtransaction.
CREATE FUNCTION subscription.renewal_problem(s subscription.subscription)
RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    next_cycle interval := CASE WHEN s.renewal OPERATOR(pg_catalog.=) 'to_monthly' THEN interval '1 month'
                                ELSE coalesce(s.pending_cycle, s.cycle) END;
    next_plan text := coalesce(s.pending_plan, s.plan);
    next_quantity integer := coalesce(s.pending_quantity, s.quantity);
    missing text;
BEGIN
    IF s.cancel_at_period_end OR s.renewal OPERATOR(pg_catalog.=) 'none' THEN
        RETURN NULL;
    END IF;
    CASE (subscription.find_price(next_plan, next_cycle, next_quantity)).problem
        WHEN 'not_a_tier' THEN
            RETURN format('quantity %s is not a tier of plan "%s"', next_quantity, next_plan);
        WHEN 'no_price' THEN
            RETURN format('plan "%s" has no price for cycle %s', next_plan, next_cycle);
        ELSE
    END CASE;
    missing := subscription.unpriced_addons(s.id, next_cycle);
    IF missing IS NOT NULL THEN
        RETURN format('add-on %s has no price for cycle %s', missing, next_cycle);
    END IF;
    RETURN NULL;
END
$$;

-- Can the next renewal lower the account's limits (and so trim, or be
-- refused by a 'block' limit)?
CREATE FUNCTION subscription.renewal_may_trim(s subscription.subscription)
RETURNS boolean
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.pending_plan IS NOT NULL OR s.pending_quantity OPERATOR(pg_catalog.<) s.quantity
        OR s.cancel_at_period_end OR s.renewal OPERATOR(pg_catalog.=) 'none'
        OR EXISTS (SELECT FROM subscription.addon_batch AS b
                    WHERE b.subscription_id OPERATOR(pg_catalog.=) s.id
                      AND b.status OPERATOR(pg_catalog.=) 'active' AND b.cancel_at_period_end);
END;

-- One batch of renew_due: at most batch_size due subscriptions after
-- (after_end, after_id) in (period end, id) order, taken FOR NO KEY UPDATE
-- SKIP LOCKED, so workers run side by side without waiting for each other
-- (a subscription locked by other work is left for the next run); each is
-- caught up one period at a time.  The keyset means that neither the rows
-- renewed nor those another worker holds are read twice.  A subscription
-- whose renewal cannot be done (a price missing, a 'block' limit exceeded)
-- stays due, with a WARNING.  Returns how many it took and handled, and
-- where the next batch starts.
CREATE FUNCTION subscription.renew_batch(
    at timestamptz, batch_size integer, after_end timestamptz, after_id bigint,
    OUT taken integer, OUT handled integer, OUT last_end timestamptz, OUT last_id bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    status text;
    problem text;
    may_trim boolean;
BEGIN
    taken := 0;
    handled := 0;
    last_end := after_end;
    last_id := after_id;
    FOR s IN
        SELECT * FROM subscription.subscription AS x
         WHERE x.status OPERATOR(pg_catalog.=) 'active' AND upper(x.period) OPERATOR(pg_catalog.<=) at
           AND (upper(x.period), x.id) OPERATOR(pg_catalog.>) (after_end, after_id)
         ORDER BY upper(x.period), x.id
         LIMIT batch_size
           FOR NO KEY UPDATE SKIP LOCKED
    LOOP
        taken := taken OPERATOR(pg_catalog.+) 1;
        last_end := upper(s.period);
        last_id := s.id;
        LOOP
            problem := subscription.renewal_problem(s);
            -- asked before anything moves: the batches it ends are part of the answer
            may_trim := problem IS NULL AND subscription.renewal_may_trim(s);
            IF may_trim THEN
                -- only here can the renewal be refused after writing: a subtransaction
                BEGIN
                    status := subscription.renew_period(s, true);
                EXCEPTION WHEN check_violation THEN
                    problem := SQLERRM;
                END;
            ELSIF problem IS NULL THEN
                status := subscription.renew_period(s, false);
            END IF;
            IF problem IS NOT NULL THEN
                RAISE WARNING 'subscription % was not renewed: %', s.id, problem
                    USING DETAIL = 'It stays due; renew_due() tries again on its next run.';
                EXIT;
            END IF;
            EXIT WHEN status OPERATOR(pg_catalog.<>) 'active';
            SELECT * INTO s FROM subscription.subscription AS x WHERE x.id OPERATOR(pg_catalog.=) s.id;
            EXIT WHEN upper(s.period) OPERATOR(pg_catalog.>) at;
        END LOOP;
        IF problem IS NULL THEN
            handled := handled OPERATOR(pg_catalog.+) 1;
        END IF;
    END LOOP;
END
$$;

-- renew_due() and run_renewals() are back-office work, up to a finite time
-- (catching up to infinity would never end).
CREATE FUNCTION subscription.require_renewal_run(fn text, at timestamptz)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT isfinite(at) THEN
        RAISE EXCEPTION 'renewal time must be finite'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('%s() was given %s.', fn, at);
    END IF;
    IF coalesce(current_setting('subscription.actor', true), '') OPERATOR(pg_catalog.<>) '' THEN
        RAISE EXCEPTION '%() is back-office work', fn
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('subscription.actor is set to %s.', current_setting('subscription.actor')),
                  HINT = 'Run it with subscription.actor empty.';
    END IF;
END
$$;

-- Renews, expires or cancels every subscription whose period ended by
-- "at", catching up missed periods, in one transaction; returns how many
-- it handled.  Safe to run concurrently and repeatedly: a period is
-- charged once whatever runs (C2).  Progress is a NOTICE every 10,000.
CREATE FUNCTION subscription.renew_due(at timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    b record;
    total integer := 0;
    next_notice integer := 10000;
    after_end timestamptz := '-infinity';
    after_id bigint := 0;
BEGIN
    PERFORM subscription.require_arguments('renew_due', '{at}', ARRAY[at IS NULL]);
    PERFORM subscription.require_renewal_run('renew_due', at);
    LOOP
        b := subscription.renew_batch(at, 500, after_end, after_id);
        EXIT WHEN b.taken OPERATOR(pg_catalog.=) 0;
        total := total OPERATOR(pg_catalog.+) b.handled;
        IF total OPERATOR(pg_catalog.>=) next_notice THEN
            RAISE NOTICE 'renew_due: % subscriptions handled', total;
            next_notice := next_notice OPERATOR(pg_catalog.+) 10000;
        END IF;
        after_end := b.last_end;
        after_id := b.last_id;
    END LOOP;
    RETURN total;
END
$$;

-- renew_due() for large runs: the same batches, each committed as it is
-- done, so that memory and locks stay bounded by one batch however many
-- subscriptions are due.  CALL it outside a transaction block.  A
-- procedure that commits cannot carry SET search_path: everything in it
-- is schema-qualified, and the functions it calls pin their own.
CREATE PROCEDURE subscription.run_renewals(at timestamptz DEFAULT now(), batch_size integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
    b record;
    total bigint := 0;
    after_end timestamptz := '-infinity';
    after_id bigint := 0;
BEGIN
    PERFORM subscription.require_arguments('run_renewals', '{at,batch_size}', ARRAY[at IS NULL, batch_size IS NULL]);
    PERFORM subscription.require_renewal_run('run_renewals', at);
    IF batch_size OPERATOR(pg_catalog.<) 1 THEN
        RAISE EXCEPTION 'batch size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    LOOP
        b := subscription.renew_batch(at, batch_size, after_end, after_id);
        COMMIT;
        EXIT WHEN b.taken OPERATOR(pg_catalog.=) 0;
        total := total OPERATOR(pg_catalog.+) b.handled;
        after_end := b.last_end;
        after_id := b.last_id;
        RAISE NOTICE 'run_renewals: % subscriptions handled', total;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION subscription.renew_batch(timestamptz, integer, timestamptz, bigint) FROM PUBLIC;
REVOKE ALL ON PROCEDURE subscription.run_renewals(timestamptz, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.renew_period(subscription.subscription, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.renewal_problem(subscription.subscription) FROM PUBLIC;
REVOKE ALL ON FUNCTION subscription.renew_due(timestamptz) FROM PUBLIC;

-- Z10: what the subscription's coupon takes off a period's plan charge of
-- "amount", rounded once; 0 without a coupon or once its periods are used.
CREATE FUNCTION subscription.coupon_discount(subscription_id bigint, amount numeric, currency text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce((
        SELECT subscription.round_money(
                   CASE WHEN c.percent_off IS NOT NULL
                        THEN amount OPERATOR(pg_catalog.*) c.percent_off OPERATOR(pg_catalog./) 100
                        ELSE least(c.amount_off, amount) END, currency)
          FROM subscription.subscription AS s
          JOIN subscription.coupon AS c ON c.code OPERATOR(pg_catalog.=) s.coupon
         WHERE s.id OPERATOR(pg_catalog.=) coupon_discount.subscription_id
           AND (s.coupon_periods_left IS NULL OR s.coupon_periods_left OPERATOR(pg_catalog.>) 0)), 0);
END;

-- The account's credit not used yet, in a currency (L10).
CREATE FUNCTION subscription.credit_balance(account_id bigint, currency text DEFAULT 'EUR')
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT coalesce(sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END), 0)
      FROM subscription.ledger AS l
     WHERE l.account_id OPERATOR(pg_catalog.=) credit_balance.account_id
       AND l.currency OPERATOR(pg_catalog.=) credit_balance.currency
       AND l.kind OPERATOR(pg_catalog.=) ANY ('{credit,credit_used}');
END;

-- L5, L8: the subscriptions that renew within subscription.notice_days
-- (default 30), with what the renewal will be: plan, cycle, quantity (the
-- tier on a tiered plan), the amount to be charged and the credit that
-- will apply (L10), after the coupon's discount (Z10).  A prepaid term renewed
-- "to_monthly" continues monthly; "none" and cancelled ones do not renew.
CREATE VIEW subscription.renewal_notice AS
SELECT s.id AS subscription_id,
       s.account_id,
       upper(s.period) AS renews_at,
       n.plan,
       n.cycle,
       n.quantity,
       CASE WHEN cardinality(subscription.plan_tiers(n.plan)) > 0 THEN n.quantity END AS tier,
       subscription.round_money(price.amount, price.currency) AS amount,
       price.currency,
       d.discount,
       least(subscription.credit_balance(s.account_id, price.currency),
             subscription.round_money(price.amount, price.currency) OPERATOR(pg_catalog.-) d.discount) AS credit
  FROM subscription.subscription AS s
  CROSS JOIN LATERAL (
       SELECT coalesce(s.pending_plan, s.plan) AS plan,
              CASE WHEN s.renewal OPERATOR(pg_catalog.=) 'to_monthly' THEN interval '1 month'
                   ELSE coalesce(s.pending_cycle, s.cycle) END AS cycle,
              coalesce(s.pending_quantity, s.quantity) AS quantity) AS n
  CROSS JOIN LATERAL subscription.period_price(n.plan, n.cycle, n.quantity) AS price
  CROSS JOIN LATERAL subscription.coupon_discount(s.id, subscription.round_money(price.amount, price.currency),
                                                  price.currency) AS d(discount)
 WHERE s.status OPERATOR(pg_catalog.=) 'active'
   AND NOT s.cancel_at_period_end
   AND s.renewal OPERATOR(pg_catalog.<>) 'none'
   AND upper(s.period) OPERATOR(pg_catalog.<=)
       (now() OPERATOR(pg_catalog.+) make_interval(days => current_setting('subscription.notice_days')::integer));

COMMENT ON VIEW subscription.renewal_notice IS
'Subscriptions renewing within subscription.notice_days, with the renewal''s plan, cycle, quantity and amount (L5, L8)';

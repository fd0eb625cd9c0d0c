-- Catalog: currencies, products, plans and their prices and limits,
-- add-ons, coupons.  The rows are the operator's (pg_dump keeps them, see
-- 19_config_dump.sql), except the ISO 4217 currencies seeded here.

CREATE TABLE subscription.currency (
    code     text PRIMARY KEY CHECK (code ~ '^[A-Z]{3}$'),
    exponent integer NOT NULL CHECK (exponent BETWEEN 0 AND 6),
    -- seeded by the extension; only the other rows are user data for pg_dump
    iso4217  boolean NOT NULL DEFAULT false
);

COMMENT ON TABLE subscription.currency IS 'Currencies and the digits of their minor unit (ISO 4217 seeded; add your own with iso4217 = false)';

-- Seeded where the extension is created, but not on a Citus worker, which
-- runs the coordinator's CREATE EXTENSION too: there the table stays an
-- empty shell, and distribute() copies the coordinator's rows to every node.
DO $seed$
DECLARE
    coordinator boolean := true;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        EXECUTE 'SELECT pg_catalog.citus_is_coordinator()' INTO coordinator;
    END IF;
    IF NOT coordinator THEN
        RETURN;
    END IF;
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
END
$seed$;

CREATE TABLE subscription.product (
    code      text PRIMARY KEY,
    name      text NOT NULL,
    upgrade   text NOT NULL DEFAULT 'restart'
              CHECK (upgrade IN ('restart', 'prorate')),
    downgrade text NOT NULL DEFAULT 'end_of_period'
              CHECK (downgrade IN ('end_of_period', 'immediate')),
    -- L7: what a renewal's quantity is: the current one ('keep'), or the
    -- account's use ('from_usage': the tier holding its use of the plan's
    -- per-license features, or the licenses assigned); see next_terms()
    renewal_quantity text NOT NULL DEFAULT 'keep'
              CHECK (renewal_quantity IN ('keep', 'from_usage')),
    -- what a trial becomes at its end (issue 19, 1.1): the plan's first
    -- period, charged ('convert'), the product's free plan through
    -- apply_downgrade ('downgrade'), or nothing ('expire')
    trial_end text NOT NULL DEFAULT 'convert'
              CHECK (trial_end IN ('convert', 'downgrade', 'expire')),
    -- the dunning ladder (issue 19, D3): the days from a subscription's
    -- becoming past due to its first step, then from each step to the
    -- next; every step but the last is a retry and a notice, the last
    -- takes the final action (D4): 'cancel', 'freeze', 'downgrade' (to the
    -- free plan) or 'keep'
    dunning_days integer[] NOT NULL DEFAULT '{3,5,7}'
              CHECK (cardinality(dunning_days) BETWEEN 1 AND 20 AND array_position(dunning_days, NULL) IS NULL
                     AND 0 < ALL (dunning_days) AND 366 >= ALL (dunning_days)),
    dunning_action text NOT NULL DEFAULT 'keep'
              CHECK (dunning_action IN ('cancel', 'freeze', 'downgrade', 'keep'))
);

COMMENT ON TABLE subscription.product IS 'Products sold, with how their upgrades (restart, prorate) and downgrades (end_of_period, immediate) take effect, and what quantity their renewals take (keep, from_usage: L7)';

CREATE TABLE subscription.plan (
    code    text PRIMARY KEY,
    product text NOT NULL REFERENCES subscription.product (code) ON UPDATE CASCADE,
    name    text NOT NULL,
    rank    integer NOT NULL DEFAULT 0,
    kind    text NOT NULL DEFAULT 'service' CHECK (kind IN ('service', 'option')),
    -- the version new subscriptions are sold: a price or limit change that
    -- a subscription holds makes a new one (version_catalog_row, 1.1)
    version integer NOT NULL DEFAULT 1 CHECK (version > 0),
    -- the catalog's limit version (stamp_limit_change, issue 17)
    limit_stamp bigint NOT NULL DEFAULT 0
);
CREATE INDEX ON subscription.plan (product);

COMMENT ON TABLE subscription.plan IS 'Plans (editions) of a product, ranked; kind service or option (R11)';

CREATE TABLE subscription.plan_price (
    plan        text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    cycle       interval NOT NULL CHECK (subscription.is_valid_cycle(cycle)),
    tier        integer CHECK (tier > 0),
    amount      numeric NOT NULL CHECK (amount >= 0 AND amount < 'Infinity'),
    per_license boolean NOT NULL DEFAULT false,
    currency    text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code)
                ON UPDATE CASCADE,
    -- a tier price is the price of the whole tier (L12)
    CONSTRAINT plan_price_tier_is_flat CHECK (tier IS NULL OR NOT per_license),
    -- the plan versions it prices (1.1): the current row's range is open
    versions    int4range NOT NULL DEFAULT '[1,)'
                CONSTRAINT plan_price_versions_valid CHECK (lower(versions) >= 1),
    -- the free trial a new subscription of this plan and cycle starts
    -- with (issue 19, 1.1; NULL: none), one per account and product
    trial       interval CHECK (trial > '0')
);
CREATE UNIQUE INDEX plan_price_one_per_cycle_and_tier
    ON subscription.plan_price (plan, subscription.cycle_key(cycle), tier, lower(versions)) NULLS NOT DISTINCT;

COMMENT ON TABLE subscription.plan_price IS 'A plan''s price per billing cycle, per license or flat, or per host tier (L12), for a range of plan versions';

-- The catalog's rules serialize their writers by an advisory transaction
-- lock, never by a row lock on another catalog table: on Citus the catalog
-- tables are reference tables, each write fires its triggers on every
-- node, and a row lock taken there on another reference table is taken on
-- every node from every node, which deadlocks (issue 17).  The key is a
-- hash of the name ('plan <code>'), the same on every node.
CREATE FUNCTION subscription.lock_catalog(name text, shared boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF shared THEN
        PERFORM pg_catalog.pg_advisory_xact_lock_shared(pg_catalog.hashtextextended('subscription ' || name, 0));
    ELSE
        PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('subscription ' || name, 0));
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.lock_catalog(text, boolean) IS
'Internal: the advisory transaction lock that serializes the writers of a part of the catalog (''plan <code>'')';

-- A plan is tiered (every price names a tier) or not (none does): a mix would
-- make the price of a quantity ambiguous (L12).
CREATE FUNCTION subscription.check_plan_price_tiering()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- serialize concurrent price writes of the same plan (no row lock: issue 17)
    PERFORM subscription.lock_catalog('plan ' || NEW.plan, false);
    PERFORM FROM subscription.plan_price AS pp
     WHERE pp.plan = NEW.plan
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

COMMENT ON FUNCTION subscription.check_plan_price_tiering() IS 'Trigger: a plan''s prices all name a tier, or none does (L12)';

CREATE CONSTRAINT TRIGGER plan_price_tiered_or_not
    AFTER INSERT OR UPDATE OF plan, tier ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.check_plan_price_tiering();

CREATE TABLE subscription.plan_limit (
    plan        text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    feature     text NOT NULL,
    value       bigint CHECK (value >= 0),          -- NULL: unlimited
    per_license boolean NOT NULL DEFAULT false,
    -- the plan versions it limits (1.1): the current row's range is open
    versions    int4range NOT NULL DEFAULT '[1,)'
                CONSTRAINT plan_limit_versions_valid CHECK (lower(versions) >= 1),
    -- the catalog's limit version (stamp_limit_change, issue 17)
    limit_stamp bigint NOT NULL DEFAULT 0,
    CONSTRAINT plan_limit_pkey PRIMARY KEY (plan, feature, versions)
);

COMMENT ON TABLE subscription.plan_limit IS 'How much of a feature a plan allows (NULL unlimited, 0 not included), optionally per license, for a range of plan versions';

-- The plan version from which a change of a current price or limit row of
-- the plan (over versions) takes effect: NULL when no subscription that
-- will still be charged (active, trialing or past due) holds one of its
-- versions (the row is changed in place); else the plan's
-- current version, or the next one when a subscription holds the current
-- one already.  A read of the tenant tables: on a single server from the
-- catalog's trigger (version_catalog_row), and from change_price() and
-- change_limit(), which on Citus decide on the coordinator (issue 17).
CREATE FUNCTION subscription.catalog_change_version(plan text, versions int4range)
RETURNS integer
LANGUAGE plpgsql STABLE
-- the extension's own bookkeeping: the catalog admin reads no subscription
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    current_version integer;
    held boolean;
    held_current boolean;
BEGIN
    SELECT p.version INTO current_version FROM subscription.plan AS p WHERE p.code = catalog_change_version.plan;
    SELECT coalesce(bool_or(true), false), coalesce(bool_or(h.version = current_version), false)
      INTO held, held_current
      FROM (SELECT s.plan_version AS version FROM subscription.subscription AS s
             WHERE s.plan = catalog_change_version.plan AND s.status IN ('active', 'trialing', 'past_due')
            UNION ALL
            SELECT s.migrate_version FROM subscription.subscription AS s
             WHERE s.migrate_to = catalog_change_version.plan AND s.status IN ('active', 'trialing', 'past_due')) AS h
     WHERE catalog_change_version.versions @> h.version;
    IF NOT held THEN
        RETURN NULL;
    END IF;
    RETURN current_version + CASE WHEN held_current THEN 1 ELSE 0 END;
END
$$;

COMMENT ON FUNCTION subscription.catalog_change_version(text, int4range) IS
'Internal: the plan version from which a change of a current price or limit row takes effect, NULL when no subscription holds it (grandfathering)';

-- Grandfathering: a price or limit that a subscription holds (its plan at
-- the version it was sold, or the version a migration moves it to) is
-- never changed in place.  A plain UPDATE of it closes the row at a new
-- version of the plan and inserts the changed row from that version on:
-- new subscriptions are sold the plan's current version at once, and the
-- others keep theirs until they are migrated (migrate_subscriptions).  A
-- row no subscription holds is updated in place; a closed row is history,
-- which an UPDATE leaves (its row count says so).  An INSERT may not overlap the versions of a row of the same
-- price or limit (23505).  Renaming a plan is no change of price.
-- On Citus (issue 17) the placements of a reference table cannot all read
-- the holders: the change of a held row is decided on the coordinator by
-- change_price() or change_limit(), which make the plan's new version,
-- close the held row at it (an UPDATE of its versions alone, which this
-- trigger checks against the catalog) and insert the change from it on.
-- A plain UPDATE of a held row is refused there (55000), by the
-- coordinator's placement, which reads the holders.
CREATE FUNCTION subscription.version_catalog_row()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the catalog admin reads no subscription
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- the logical table, as a trigger argument: a Citus shard has another name
    logical text := TG_ARGV[0];
    what text := CASE logical WHEN 'plan_price' THEN 'price' ELSE 'limit' END;
    new_version integer;
BEGIN
    -- the new version's row, inserted below while the old one is still open
    IF TG_OP = 'INSERT' AND pg_trigger_depth() > 1 THEN
        RETURN NEW;
    ELSIF TG_OP = 'INSERT' THEN
        -- no row lock (an INSERT makes no version; on Citus the rows of a
        -- reference table are copied through this trigger): two new rows
        -- of one price or limit from the same version meet in the unique
        -- index of their lower bound
        IF logical = 'plan_price' THEN
            PERFORM FROM subscription.plan_price AS pp
             WHERE pp.plan = NEW.plan AND pp.versions && NEW.versions
               AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(NEW.cycle)
               AND pp.tier IS NOT DISTINCT FROM NEW.tier;
        ELSE
            PERFORM FROM subscription.plan_limit AS pl
             WHERE pl.plan = NEW.plan AND pl.versions && NEW.versions AND pl.feature = NEW.feature;
        END IF;
        IF FOUND THEN
            RAISE EXCEPTION 'plan "%" already has this %', NEW.plan, what
                USING ERRCODE = 'unique_violation',
                      DETAIL = format('A row of the same %s holds versions overlapping %s.', what, NEW.versions),
                      HINT = format('UPDATE the current row of subscription.%s: a change that subscriptions hold makes a new version.', logical),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    IF NOT upper_inf(OLD.versions) THEN
        -- a closed row is history: an UPDATE changes the current rows only
        RETURN NULL;
    END IF;
    -- change_price()/change_limit() close the held row at the plan's
    -- current version, which they made, its terms as they were, and
    -- insert the change from that version on; nothing else moves the
    -- versions, nor the plan
    IF NEW.plan IS DISTINCT FROM OLD.plan
       OR (NEW.versions IS DISTINCT FROM OLD.versions
           AND (upper_inf(NEW.versions) OR lower(NEW.versions) IS DISTINCT FROM lower(OLD.versions)
                OR upper(NEW.versions) IS DISTINCT FROM (SELECT p.version FROM subscription.plan AS p WHERE p.code = OLD.plan)
                OR to_jsonb(NEW) - 'versions' - 'limit_stamp' IS DISTINCT FROM to_jsonb(OLD) - 'versions' - 'limit_stamp')) THEN
        RAISE EXCEPTION 'the plan and versions of a % are not changed with its terms', what
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Update the terms of the current row alone; the new version is made for you.',
                  TABLE = logical, SCHEMA = 'subscription';
    ELSIF NEW.versions IS DISTINCT FROM OLD.versions THEN
        -- the close keeps every version a subscription holds: none from
        -- its end on (change_price()/change_limit() close the row at a
        -- version nobody holds yet), else those subscriptions would lose
        -- their price or limit.  On a single server, and on Citus by the
        -- coordinator's placement, which reads the holders, for every node
        -- (a worker's cannot)
        IF subscription.catalog_reads_tenants()
           AND subscription.catalog_change_version(OLD.plan, int4range(upper(NEW.versions), NULL)) IS NOT NULL THEN
            RAISE EXCEPTION 'subscriptions hold version % of plan "%", which this % would no longer cover',
                            upper(NEW.versions), OLD.plan, what
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = format('Change it with subscription.change_%s(), which makes the plan''s new version.', what),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    ELSIF subscription.distributed() THEN
        -- Citus: a worker's placement cannot read the holders; the
        -- coordinator's refuses the change of a held row, for every node
        IF subscription.catalog_reads_tenants()
           AND subscription.catalog_change_version(OLD.plan, OLD.versions) IS NOT NULL THEN
            RAISE EXCEPTION 'subscriptions hold this % of plan "%"', what, OLD.plan
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      DETAIL = 'On Citus a plain UPDATE changes prices and limits that no subscription holds.',
                      HINT = format('Change it with subscription.change_%s(), which makes the plan''s new version on every node.', what),
                      TABLE = logical, SCHEMA = 'subscription';
        END IF;
        RETURN NEW;
    END IF;
    -- serialize the version changes of a plan, and its migrations, by the
    -- plan's advisory lock, not a row lock on plan (issue 17); each
    -- statement below reads what the previous holder committed
    PERFORM subscription.lock_catalog('plan ' || OLD.plan, false);
    new_version := subscription.catalog_change_version(OLD.plan, OLD.versions);
    IF new_version IS NULL THEN
        RETURN NEW;
    END IF;
    -- the versions held keep the old row; the change makes a new version
    UPDATE subscription.plan AS p SET version = new_version WHERE p.code = OLD.plan AND p.version <> new_version;
    NEW.versions := int4range(new_version, NULL);
    IF logical = 'plan_price' THEN
        INSERT INTO subscription.plan_price SELECT (NEW::subscription.plan_price).*;
    ELSE
        INSERT INTO subscription.plan_limit SELECT (NEW::subscription.plan_limit).*;
    END IF;
    OLD.versions := int4range(lower(OLD.versions), new_version);
    RETURN OLD;
END
$$;

COMMENT ON FUNCTION subscription.version_catalog_row() IS
'Trigger: a price or limit that subscriptions hold changes by a new plan version; the old row is kept and closed (grandfathering)';

CREATE TRIGGER plan_price_versions
    BEFORE INSERT OR UPDATE OF cycle, tier, amount, per_license, currency, versions ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.version_catalog_row('plan_price');
CREATE TRIGGER plan_limit_versions
    BEFORE INSERT OR UPDATE OF feature, value, per_license, versions ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.version_catalog_row('plan_limit');

-- A change of a plan's current price or limit, versioned as a plain UPDATE
-- is on a single server (grandfathering, above), decided before the
-- catalog is written: the holders read (catalog_change_version), the plan's
-- new version made, the held row closed at it and the changed row inserted
-- from it on.  On Citus the one way to change a price or limit that
-- subscriptions hold (issue 17): no placement of the catalog reads a
-- tenant table.  change_price() and change_limit() return the plan version
-- the change takes effect from.  Their first step: the plan, locked as
-- version_catalog_row locks it (22004, 42704).
CREATE FUNCTION subscription.lock_catalog_plan(plan text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF plan IS NULL THEN
        RAISE EXCEPTION 'plan must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT EXISTS (SELECT FROM subscription.plan AS p WHERE p.code = lock_catalog_plan.plan) THEN
        PERFORM subscription.unknown_code('plan', plan);
    END IF;
    PERFORM subscription.lock_catalog('plan ' || plan, false);
END
$$;

COMMENT ON FUNCTION subscription.lock_catalog_plan(text) IS
'Internal: change_price() and change_limit(): 22004 or 42704 unless the plan exists, then its catalog lock';

-- Then: the version the change of the current row (of versions; NULL: no
-- such row, P0002) takes effect from, the plan's new version made; NULL
-- when nobody holds the row (changed in place)
CREATE FUNCTION subscription.catalog_change_from(logical text, plan text, versions int4range)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    from_version integer;
BEGIN
    IF versions IS NULL THEN
        RAISE EXCEPTION 'plan "%" has no such current %', plan, CASE logical WHEN 'plan_price' THEN 'price' ELSE 'limit' END
            USING ERRCODE = 'no_data_found',
                  HINT = format('INSERT INTO subscription.%s adds one.', logical);
    END IF;
    -- on Citus the holders read over one connection per node, as the
    -- catalog's writes after it need (catalog_reads_tenants)
    PERFORM subscription.catalog_reads_tenants();
    from_version := subscription.catalog_change_version(plan, versions);
    UPDATE subscription.plan AS p SET version = from_version
     WHERE p.code = catalog_change_from.plan AND p.version <> from_version;
    RETURN from_version;
END
$$;

COMMENT ON FUNCTION subscription.catalog_change_from(text, text, int4range) IS
'Internal: change_price() and change_limit(): the plan version a change of a current row takes effect from (NULL: in place), made the plan''s';

CREATE FUNCTION subscription.change_price(plan text, cycle interval, amount numeric, tier integer DEFAULT NULL,
                                          per_license boolean DEFAULT NULL, currency text DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_versions int4range;
    from_version integer;
    held subscription.plan_price;
BEGIN
    IF cycle IS NULL OR amount IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', CASE WHEN cycle IS NULL THEN 'cycle' ELSE 'amount' END
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF NOT (amount >= 0 AND amount < 'Infinity') THEN
        RAISE EXCEPTION 'amount % is not a price', amount
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A price is 0 or more, and finite.';
    ELSIF currency IS NOT NULL AND NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = change_price.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM subscription.lock_catalog_plan(plan);
    SELECT pp.versions INTO row_versions FROM subscription.plan_price AS pp
     WHERE pp.plan = change_price.plan AND upper_inf(pp.versions) AND pp.tier IS NOT DISTINCT FROM change_price.tier
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(change_price.cycle);
    from_version := subscription.catalog_change_from('plan_price', plan, row_versions);
    IF from_version IS NULL THEN
        UPDATE subscription.plan_price AS pp
           SET amount = change_price.amount, per_license = coalesce(change_price.per_license, pp.per_license),
               currency = coalesce(change_price.currency, pp.currency)
         WHERE pp.plan = change_price.plan AND pp.versions = row_versions AND pp.tier IS NOT DISTINCT FROM change_price.tier
           AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(change_price.cycle);
        RETURN lower(row_versions);
    END IF;
    -- the held row closed, the change from the new version on
    UPDATE subscription.plan_price AS pp SET versions = int4range(lower(row_versions), from_version)
     WHERE pp.plan = change_price.plan AND pp.versions = row_versions AND pp.tier IS NOT DISTINCT FROM change_price.tier
       AND subscription.cycle_key(pp.cycle) = subscription.cycle_key(change_price.cycle)
    RETURNING pp.* INTO held;
    INSERT INTO subscription.plan_price (plan, cycle, tier, amount, per_license, currency, versions, trial)
    VALUES (held.plan, held.cycle, held.tier, change_price.amount, coalesce(change_price.per_license, held.per_license),
            coalesce(change_price.currency, held.currency), int4range(from_version, NULL), held.trial);
    RETURN from_version;
END
$$;

COMMENT ON FUNCTION subscription.change_price(text, interval, numeric, integer, boolean, text) IS
'Change the amount (and per_license, currency unless NULL) of a plan''s current price for a cycle and tier; subscriptions that hold it keep theirs (a new plan version). Returns the version it takes effect from';

CREATE FUNCTION subscription.change_limit(plan text, feature text, value bigint, per_license boolean DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    row_versions int4range;
    from_version integer;
    held subscription.plan_limit;
BEGIN
    IF feature IS NULL THEN
        RAISE EXCEPTION 'feature must not be NULL' USING ERRCODE = 'null_value_not_allowed';
    ELSIF value < 0 THEN
        RAISE EXCEPTION 'limit % is below 0', value
            USING ERRCODE = 'invalid_parameter_value', HINT = 'A limit is 0 or more, or NULL: unlimited.';
    END IF;
    PERFORM subscription.lock_catalog_plan(plan);
    SELECT pl.versions INTO row_versions FROM subscription.plan_limit AS pl
     WHERE pl.plan = change_limit.plan AND upper_inf(pl.versions) AND pl.feature = change_limit.feature;
    from_version := subscription.catalog_change_from('plan_limit', plan, row_versions);
    IF from_version IS NULL THEN
        UPDATE subscription.plan_limit AS pl
           SET value = change_limit.value, per_license = coalesce(change_limit.per_license, pl.per_license)
         WHERE pl.plan = change_limit.plan AND pl.versions = row_versions AND pl.feature = change_limit.feature;
        RETURN lower(row_versions);
    END IF;
    -- the held row closed, the change from the new version on
    UPDATE subscription.plan_limit AS pl SET versions = int4range(lower(row_versions), from_version)
     WHERE pl.plan = change_limit.plan AND pl.versions = row_versions AND pl.feature = change_limit.feature
    RETURNING pl.* INTO held;
    INSERT INTO subscription.plan_limit (plan, feature, value, per_license, versions)
    VALUES (held.plan, held.feature, change_limit.value, coalesce(change_limit.per_license, held.per_license),
            int4range(from_version, NULL));
    RETURN from_version;
END
$$;

COMMENT ON FUNCTION subscription.change_limit(text, text, bigint, boolean) IS
'Change a plan''s current limit of a feature (value NULL: unlimited; per_license unless NULL); subscriptions that hold it keep theirs (a new plan version). Returns the version it takes effect from';

CREATE TABLE subscription.addon (
    code     text PRIMARY KEY,
    product  text NOT NULL REFERENCES subscription.product (code) ON UPDATE CASCADE,
    name     text NOT NULL,
    one_time boolean NOT NULL DEFAULT false,
    feature  text,
    units    bigint NOT NULL DEFAULT 1 CHECK (units > 0),
    -- the catalog's limit version (stamp_limit_change, issue 17)
    limit_stamp bigint NOT NULL DEFAULT 0
);
CREATE INDEX ON subscription.addon (product);

COMMENT ON TABLE subscription.addon IS 'Add-ons of a product: units of a feature, recurring or one-time (K1-K5)';

CREATE TABLE subscription.addon_price (
    addon    text NOT NULL REFERENCES subscription.addon (code) ON UPDATE CASCADE,
    cycle    interval CHECK (subscription.is_valid_cycle(cycle)),  -- NULL: one-time
    amount   numeric NOT NULL CHECK (amount >= 0 AND amount < 'Infinity'),
    currency text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code)
             ON UPDATE CASCADE
);
CREATE UNIQUE INDEX addon_price_one_per_cycle
    ON subscription.addon_price (addon, subscription.cycle_key(cycle)) NULLS NOT DISTINCT;

COMMENT ON TABLE subscription.addon_price IS 'An add-on''s price per cycle (NULL cycle: one-time)';

CREATE TABLE subscription.plan_addon (
    plan     text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    addon    text NOT NULL REFERENCES subscription.addon (code) ON UPDATE CASCADE,
    included boolean NOT NULL DEFAULT false,
    PRIMARY KEY (plan, addon)
);
CREATE INDEX ON subscription.plan_addon (addon);

COMMENT ON TABLE subscription.plan_addon IS 'The add-ons a plan may buy, or includes (Z6)';

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

COMMENT ON TABLE subscription.coupon IS 'Coupons: a percentage or an amount off, for some cycles, until a date, a number of times (Z10)';

-- Z11: the versions of the terms of service.  The version in effect at a
-- time is the one with the latest effective_at not after it; an account
-- accepts it before its first subscription and at its next change once it
-- takes effect (require_terms).
CREATE TABLE subscription.terms (
    version      text PRIMARY KEY,
    effective_at timestamptz NOT NULL UNIQUE CHECK (isfinite(effective_at)),
    url          text
);

COMMENT ON TABLE subscription.terms IS 'Versions of the terms of service, each in effect from effective_at until the next one (Z11)';
-- Z3: a suite is a plan of its own product whose price covers plans of
-- other products, the plans listed here.  A service license of the suite
-- counts as a license of each included product (R11, src/licenses.c), and
-- the included plans' limits apply (limit_of).  bundle_into_suite moves an
-- account's separate subscriptions into one of the suite.
CREATE TABLE subscription.suite_component (
    suite_plan text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    plan       text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    PRIMARY KEY (suite_plan, plan),
    -- the catalog's limit version (stamp_limit_change, issue 17)
    limit_stamp bigint NOT NULL DEFAULT 0
);
CREATE INDEX ON subscription.suite_component (plan);

COMMENT ON TABLE subscription.suite_component IS 'The plans a suite plan includes, of other products, one per product (Z3)';

-- Z3: what is wrong with the suite of suite_plan including plan, or NULL:
-- a suite includes neither itself, nor another suite, nor a plan of its
-- own product or of a product it already includes, and is included in no
-- suite.  The rule's one statement: check_suite_component() asks it of
-- every row a change touches.
CREATE FUNCTION subscription.suite_problem(suite_plan text, plan text)
RETURNS text
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT CASE
        WHEN bad.suite_plan OPERATOR(pg_catalog.=) bad.plan
            THEN pg_catalog.format('suite "%s" cannot include itself', bad.suite_plan)
        WHEN EXISTS (SELECT FROM subscription.suite_component AS sc
                      WHERE sc.suite_plan OPERATOR(pg_catalog.=) bad.plan)
            THEN pg_catalog.format('suite "%s" cannot include plan "%s", which is a suite', bad.suite_plan, bad.plan)
        WHEN EXISTS (SELECT FROM subscription.suite_component AS sc
                      WHERE sc.plan OPERATOR(pg_catalog.=) bad.suite_plan)
            THEN pg_catalog.format('plan "%s" cannot be a suite: suite "%s" includes it', bad.suite_plan,
                        (SELECT pg_catalog.min(sc.suite_plan) FROM subscription.suite_component AS sc
                          WHERE sc.plan OPERATOR(pg_catalog.=) bad.suite_plan))
        WHEN ip.product OPERATOR(pg_catalog.=) sp.product
            THEN pg_catalog.format('suite "%s" cannot include plan "%s" of its own product "%s"',
                                   bad.suite_plan, bad.plan, sp.product)
        WHEN EXISTS (SELECT FROM subscription.suite_component AS sc
                       JOIN subscription.plan AS o ON o.code OPERATOR(pg_catalog.=) sc.plan
                      WHERE sc.suite_plan OPERATOR(pg_catalog.=) bad.suite_plan
                        AND sc.plan OPERATOR(pg_catalog.<>) bad.plan
                        AND o.product OPERATOR(pg_catalog.=) ip.product)
            THEN pg_catalog.format('suite "%s" cannot include two plans of product "%s"', bad.suite_plan, ip.product)
        END
      FROM (SELECT suite_problem.suite_plan, suite_problem.plan) AS bad (suite_plan, plan)
      JOIN subscription.plan AS sp ON sp.code OPERATOR(pg_catalog.=) bad.suite_plan
      JOIN subscription.plan AS ip ON ip.code OPERATOR(pg_catalog.=) bad.plan;
END;

COMMENT ON FUNCTION subscription.suite_problem(text, text) IS 'Internal: why a suite may not include a plan, or NULL (Z3)';

CREATE FUNCTION subscription.check_suite_component()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    a text;
    b text;
    c text;
BEGIN
    -- a suite row, or a plan that moved to another product (the logical
    -- table, from the trigger's argument: issue 17)
    IF TG_ARGV[0] = 'plan' THEN
        a := NEW.code;
        b := NEW.code;
    ELSE
        a := NEW.suite_plan;
        b := NEW.plan;
    END IF;
    -- serialize concurrent changes of the suites that involve these plans,
    -- in code order, by their advisory locks (no row lock: issue 17)
    FOR c IN SELECT DISTINCT x FROM unnest(ARRAY[a, b]) AS x ORDER BY 1 LOOP
        PERFORM subscription.lock_catalog('plan ' || c, false);
    END LOOP;
    FOR r IN SELECT sc.suite_plan, sc.plan, subscription.suite_problem(sc.suite_plan, sc.plan) AS problem
               FROM subscription.suite_component AS sc
              WHERE sc.suite_plan IN (a, b) OR sc.plan IN (a, b)
              -- the row written first: its problem is the one to tell
              ORDER BY (sc.suite_plan, sc.plan) = (a, b) DESC, 1, 2 LOOP
        IF r.problem IS NOT NULL THEN
            RAISE EXCEPTION '%', r.problem
                USING ERRCODE = 'check_violation',
                      DETAIL = 'A suite includes plans of other products, one per product, and no suite.',
                      TABLE = 'suite_component', SCHEMA = 'subscription';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.check_suite_component() IS 'Trigger: a suite includes plans of other products, one per product, and no suite (Z3)';

CREATE CONSTRAINT TRIGGER suite_component_valid
    AFTER INSERT OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.check_suite_component('suite_component');
CREATE CONSTRAINT TRIGGER plan_suite_component_valid
    AFTER UPDATE OF product ON subscription.plan
    FOR EACH ROW WHEN (OLD.product IS DISTINCT FROM NEW.product)
    EXECUTE FUNCTION subscription.check_suite_component('plan');

-- The catalog's limit version (issue 17).  An account's limit of a feature
-- (limit_of) is computed from plan_limit, addon, suite_component and plan;
-- each usage counter stores it with the version of the catalog it was
-- computed from, and the limit guard recomputes it when the catalog's
-- version differs (counter_limit, 40_limits.sql).  The version is (rows,
-- the exclusive or of the rows' stamps) over those four tables
-- (limit_catalog_version), and a row's stamp is a 64-bit hash of its own
-- content (its columns by name, the stamp left out), written by the
-- trigger below: the same rows make the same version, and two different
-- contents make different versions but with a chance of 2^-64.  A stamp
-- depends on nothing but the row: on Citus every node's placement of a
-- reference table stamps the same row alike, so a version read on a worker
-- is the coordinator's (the guard compares it on the shards).  No other
-- row is read, written or locked.
CREATE FUNCTION subscription.stamp_limit_change()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- by column name (jsonb), so that a table whose columns were added in
    -- another order (an upgraded database) stamps the same row alike
    NEW.limit_stamp := pg_catalog.hashtextextended(
        (pg_catalog.to_jsonb(NEW) OPERATOR(pg_catalog.-) 'limit_stamp'::text)::text, 0);
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.stamp_limit_change() IS
'Trigger: a catalog row a limit is computed from is stamped with a hash of its content, for the catalog''s limit version';

-- after version_catalog_row (BEFORE triggers fire in name order): the row
-- it closes is stamped too
CREATE TRIGGER plan_limit_with_stamp
    BEFORE INSERT OR UPDATE ON subscription.plan_limit
    FOR EACH ROW EXECUTE FUNCTION subscription.stamp_limit_change('plan_limit');
CREATE TRIGGER addon_with_stamp
    BEFORE INSERT OR UPDATE ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.stamp_limit_change('addon');
CREATE TRIGGER suite_component_with_stamp
    BEFORE INSERT OR UPDATE ON subscription.suite_component
    FOR EACH ROW EXECUTE FUNCTION subscription.stamp_limit_change('suite_component');
-- a suite counts its included plans at their current versions (limit_of)
CREATE TRIGGER plan_with_stamp
    BEFORE UPDATE OF version ON subscription.plan
    FOR EACH ROW WHEN (OLD.version IS DISTINCT FROM NEW.version)
    EXECUTE FUNCTION subscription.stamp_limit_change('plan');

-- Usage-based billing (issue 21): meters on registered tables, usage
-- prices, usage recorded without rows, and the per-period snapshots.

-- The meters' accumulators, kept in each usage counter by the guard's one
-- UPDATE (src/limits.c, METER_ACCUMULATORS): the peak of used since the
-- period's reset, and the integral of used over time in row-seconds up to
-- since, the time of the last change.  Added after the table's other
-- columns (an upgrade adds them last).  No CHECK on them nor on the
-- closed_* figures: PostgreSQL checks every CHECK of a row at each UPDATE,
-- and builds them again for each execution (the guard's largest cost,
-- docs/benchmarks.md); used >= 0 is checked, and the guard's UPDATE keeps
-- peak >= used and adds used times a time that does not run backwards to
-- the integral, whose figures close_usage keeps as they are.
ALTER TABLE subscription.usage_counter
    ADD COLUMN peak bigint NOT NULL DEFAULT 0,
    ADD COLUMN integral numeric NOT NULL DEFAULT 0,
    ADD COLUMN since timestamptz NOT NULL DEFAULT subscription.meter_now();

COMMENT ON COLUMN subscription.usage_counter.peak IS
'The largest use since the period began (a meter''s peak, issue 21)';
COMMENT ON COLUMN subscription.usage_counter.integral IS
'The use integrated over time since the period began, in row-seconds, up to since (a meter''s time_weighted, issue 21)';
COMMENT ON COLUMN subscription.usage_counter.since IS
'When the use last changed, or the period began: the integral runs to here';

-- U3: the end of the counter's billing period (closes), and the figures
-- of each period that ended before its renewal billed it: when a write
-- comes at or after closes, subscription.close_usage keeps them, one
-- element per ended period in the order of their ends (closed_at: the
-- period's end; NULL: none pending), and the counter goes on in the period
-- that holds the write.  bill_usage bills the first and takes it off;
-- open_usage sets closes.
ALTER TABLE subscription.usage_counter
    ADD COLUMN closes timestamptz,
    ADD COLUMN closed_at timestamptz[],
    ADD COLUMN closed_used bigint[],
    ADD COLUMN closed_peak bigint[],
    ADD COLUMN closed_integral numeric[];

COMMENT ON COLUMN subscription.usage_counter.closes IS
'The end of the billing period of the feature''s usage price (U3): a write at or after it keeps the ended periods'' figures first';
COMMENT ON COLUMN subscription.usage_counter.closed_at IS
'The ends of the ended periods whose figures are kept in closed_used, closed_peak and closed_integral until their renewals bill them, in order (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_used IS
'The use at each end of closed_at: each ended period''s count or sum (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_peak IS
'Each ended period''s peak (U3)';
COMMENT ON COLUMN subscription.usage_counter.closed_integral IS
'Each ended period''s integral in row-seconds, up to its end (U3)';

-- A meter: what of a registered table's counter a usage price bills
-- (issue 21).  One per feature, on the feature's registration.
CREATE TABLE subscription.meter (
    feature     text PRIMARY KEY
                REFERENCES subscription.limited_table (feature) ON DELETE CASCADE ON UPDATE CASCADE,
    aggregation text NOT NULL CHECK (aggregation IN ('count', 'peak', 'time_weighted', 'sum')),
    -- time_weighted: the unit of time its figure counts (row-days)
    unit        interval NOT NULL DEFAULT '1 day' CHECK (unit > interval '0')
);

COMMENT ON TABLE subscription.meter IS
'Meters on registered tables: the aggregation (count, peak, time_weighted, sum) a usage price bills (issue 21)';

-- A plan's price for the use of a feature beyond what it includes, billed
-- in arrears at each renewal (issue 21).  mode: graduated, volume or
-- package; tiers: for graduated and volume, a JSON array of
-- {"up_to": n (null: the last), "unit_amount": a, "flat_amount": f};
-- NULL prices every unit at unit_amount; for package, {"size": n}.
CREATE TABLE subscription.plan_usage_price (
    plan        text NOT NULL REFERENCES subscription.plan (code) ON UPDATE CASCADE,
    feature     text NOT NULL,
    included    bigint NOT NULL DEFAULT 0 CHECK (included >= 0),
    unit_amount numeric NOT NULL CHECK (unit_amount >= 0 AND unit_amount < 'Infinity'),
    tiers       jsonb,
    mode        text NOT NULL CHECK (mode IN ('graduated', 'volume', 'package')),
    currency    text NOT NULL DEFAULT 'EUR' REFERENCES subscription.currency (code) ON UPDATE CASCADE,
    PRIMARY KEY (plan, feature)
);

COMMENT ON TABLE subscription.plan_usage_price IS
'Usage prices: a plan''s price of the use of a feature beyond what it includes, billed in arrears (issue 21)';

-- Usage recorded without rows (record_usage), one row per key: a retry
-- with the same key counts once and returns the total it returned.
-- Kept for the period and subscription.usage_key_grace after it.
CREATE TABLE subscription.usage_record (
    tenant_id  bigint NOT NULL,
    account_id bigint NOT NULL,
    feature    text NOT NULL,
    key        text NOT NULL,
    quantity   bigint NOT NULL CHECK (quantity >= 0),
    total      bigint NOT NULL,
    at         timestamptz NOT NULL,
    CONSTRAINT usage_record_pkey PRIMARY KEY (tenant_id, account_id, feature, key),
    CONSTRAINT usage_record_account_id_fkey FOREIGN KEY (tenant_id, account_id)
        REFERENCES subscription.account (tenant_id, id) ON DELETE CASCADE
);
-- No index on at: its generic plan took it for record_usage's UPDATE of
-- the key's total (the account's every key scanned, issue 21); the
-- renewal's deletion of old keys reads the account's keys by the primary
-- key's prefix.

COMMENT ON TABLE subscription.usage_record IS
'Usage recorded without rows (record_usage), one row per idempotency key (issue 21)';

-- What each ended period of a subscription used of each priced feature,
-- and what it was billed: one row per (subscription, feature, period),
-- written with the overage line by bill_usage (append-only).
CREATE TABLE subscription.usage_period (
    tenant_id       bigint NOT NULL,
    subscription_id bigint NOT NULL,
    account_id      bigint NOT NULL,
    feature         text NOT NULL,
    period          tstzrange NOT NULL,
    plan            text NOT NULL,
    aggregation     text NOT NULL,
    used            bigint NOT NULL,
    peak            bigint NOT NULL,
    integral        numeric NOT NULL,
    aggregate       numeric NOT NULL,
    included        bigint NOT NULL,
    billable        numeric NOT NULL,
    amount          numeric NOT NULL,
    currency        text NOT NULL,
    ledger_id       bigint,
    CONSTRAINT usage_period_pkey PRIMARY KEY (tenant_id, subscription_id, feature, period),
    CONSTRAINT usage_period_subscription_id_fkey FOREIGN KEY (tenant_id, subscription_id)
        REFERENCES subscription.subscription (tenant_id, id)
);

COMMENT ON TABLE subscription.usage_period IS
'Per-period snapshots of the usage billed: the accumulators, the aggregate, the billable quantity and the amount (issue 21)';

-- One INSERT ... SELECT of 100k licenses into subscription.license (guard,
-- counter, R11 check, history) against the same insert into a table of the
-- same shape -- columns, primary key, index and foreign keys -- without the
-- guard (issue 3: at most 2.0 times its time).  A second baseline drops the
-- foreign keys too: PostgreSQL's own per-row foreign-key checks are most of
-- the gap there, and they stay.
SET search_path = subscription, public;
SET client_min_messages = warning;

INSERT INTO product (code, name) VALUES ('bulk', 'Bulk import');
INSERT INTO plan (code, product, name, kind) VALUES ('bulk_service', 'bulk', 'Service', 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('bulk_service', '1 month', 1, true);
INSERT INTO account (id, name) VALUES (100, 'Bulk');
INSERT INTO member (id, account_id, external_id) SELECT 1000000 + g, 100, 'm' || g FROM generate_series(1, 100000) AS g;
SELECT subscribe(100, 'bulk_service', '1 month', 100000, '2026-01-01') AS sub \gset

-- the shape of subscription.license since the tenant keys (issue 17): the
-- tenant first in the key and the foreign keys; the baselines are given
-- the member's tenant, the extension's insert fills it (its trigger)
CREATE TABLE bench.bare_license (
    subscription_id bigint NOT NULL,
    member_id bigint NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    tenant_id bigint NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, member_id));
CREATE INDEX ON bench.bare_license (member_id);
CREATE TABLE bench.same_shape_license (
    subscription_id bigint NOT NULL,
    member_id bigint NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    tenant_id bigint NOT NULL,
    PRIMARY KEY (tenant_id, subscription_id, member_id),
    FOREIGN KEY (tenant_id, subscription_id) REFERENCES subscription.subscription (tenant_id, id),
    FOREIGN KEY (tenant_id, member_id) REFERENCES subscription.member (tenant_id, id) ON DELETE CASCADE);
CREATE INDEX ON bench.same_shape_license (member_id);
VACUUM ANALYZE member;

-- best of 5, each run on empty tables, the three inserts alternating
CREATE FUNCTION bench.bulk_licenses(sub bigint, OUT extension_ms numeric, OUT same_shape_ms numeric, OUT no_fk_ms numeric)
LANGUAGE plpgsql AS $$
DECLARE
    t timestamptz;
BEGIN
    FOR i IN 1 .. 5 LOOP
        TRUNCATE subscription.license, bench.bare_license, bench.same_shape_license;
        t := clock_timestamp();
        INSERT INTO subscription.license (subscription_id, member_id)
        SELECT sub, id FROM subscription.member WHERE account_id = 100;
        extension_ms := least(extension_ms, extract(epoch FROM clock_timestamp() - t) * 1000);
        t := clock_timestamp();
        INSERT INTO bench.same_shape_license (subscription_id, member_id, tenant_id)
        SELECT sub, id, tenant_id FROM subscription.member WHERE account_id = 100;
        same_shape_ms := least(same_shape_ms, extract(epoch FROM clock_timestamp() - t) * 1000);
        t := clock_timestamp();
        INSERT INTO bench.bare_license (subscription_id, member_id, tenant_id)
        SELECT sub, id, tenant_id FROM subscription.member WHERE account_id = 100;
        no_fk_ms := least(no_fk_ms, extract(epoch FROM clock_timestamp() - t) * 1000);
    END LOOP;
    extension_ms := round(extension_ms, 1);
    same_shape_ms := round(same_shape_ms, 1);
    no_fk_ms := round(no_fk_ms, 1);
END
$$;

\pset footer off
SELECT 'INSERT ... SELECT of 100k licenses' AS case_name, b.extension_ms,
       b.same_shape_ms AS same_shape_baseline_ms, round(b.extension_ms / b.same_shape_ms, 2) AS ratio,
       2.0 AS target_at_most,
       b.no_fk_ms AS no_fk_baseline_ms, round(b.extension_ms / b.no_fk_ms, 2) AS ratio_no_fk
  FROM bench.bulk_licenses(:sub) AS b;
SELECT used AS counted, (SELECT count(*) FROM license) AS rows FROM license_counter WHERE subscription_id = :sub;

-- effective_limit and usage: the limits of an account's plans and add-ons
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central'), ('support', 'Zendesk Support'),
                                        ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_plus', 'central', 'Plus', 2),
    ('zd_professional', 'support', 'Professional', 2), ('zd_enterprise', 'support', 'Enterprise', 3),
    ('ch_starter', 'crowd', 'Starter', 1), ('ch_enterprise', 'crowd', 'Enterprise', 3);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 25, 1038), ('central_plus', '1 year', 250, 6878);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_professional', '1 month', 55, true), ('zd_enterprise', '1 month', 115, true),
    ('ch_starter', '1 month', 49, false), ('ch_enterprise', '1 month', 299, false);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('central_plus', 'hosts', 1, true),                  -- L12: one host per license of the tier
    ('zd_professional', 'custom_objects', 0, false),     -- Z13: not included
    ('zd_enterprise', 'custom_objects', 1000000, false), -- Z13: up to 1 million
    ('ch_starter', 'rooms', 2, false), ('ch_enterprise', 'rooms', NULL, false);
INSERT INTO addon (code, product, name, feature, units) VALUES
    ('zd_objects_100m', 'support', '100 million custom objects', 'custom_objects', 99000000);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Globex'), (3, 3, 'Tickets');

-- L12: the hosts of a tiered plan are its tier
SELECT subscribe(1, 'central_plus', '1 year', 250, '2026-01-01') AS central \gset
SELECT effective_limit(1, 'hosts') AS hosts_250;
-- two subscriptions add up
SELECT subscribe(1, 'central_plus', '1 year', 25, '2026-01-01') AS central2 \gset
SELECT effective_limit(1, 'hosts') AS hosts_275;
-- only active subscriptions count
UPDATE subscription SET status = 'expired' WHERE id = :central2;
SELECT effective_limit(1, 'hosts') AS hosts_back_to_250;

-- Z13: not included (0), 1 million in Enterprise, 100 million with the add-on
SELECT subscribe(2, 'zd_professional', '1 month', 5, '2026-01-01') AS pro \gset
SELECT effective_limit(2, 'custom_objects') AS professional;
SELECT subscribe(2, 'zd_enterprise', '1 month', 5, '2026-01-01') AS ent \gset
SELECT effective_limit(2, 'custom_objects') AS enterprise;
INSERT INTO addon_batch (tenant_id, subscription_id, addon, quantity) VALUES (2, :ent, 'zd_objects_100m', 1);
SELECT effective_limit(2, 'custom_objects') AS enterprise_with_addon;
-- an ended batch no longer counts
UPDATE addon_batch SET status = 'expired';
SELECT effective_limit(2, 'custom_objects') AS addon_ended;

-- a feature no active subscription defines has limit 0; NULL is unlimited
SELECT effective_limit(1, 'rooms') AS no_rooms_for_acme;
SELECT subscribe(3, 'ch_starter', '1 month', 1, '2026-01-01') AS starter \gset
SELECT effective_limit(3, 'rooms') AS starter_rooms;
SELECT subscribe(3, 'ch_enterprise', '1 month', 1, '2026-01-01') AS crowd_ent \gset
SELECT effective_limit(3, 'rooms') IS NULL AS unlimited_with_enterprise;

-- usage comes from the counters the limit triggers keep; 0 when none yet
SELECT usage(3, 'rooms') AS no_rooms_yet;
INSERT INTO usage_counter (tenant_id, account_id, feature, used) VALUES (3, 3, 'rooms', 7);
SELECT usage(3, 'rooms') AS seven_rooms;

-- errors
SELECT pg_temp.error_of($$SELECT effective_limit(1, 'teleporters')$$);    -- 42704
SELECT pg_temp.error_of($$SELECT effective_limit(99, 'hosts')$$);         -- P0002
SELECT pg_temp.error_of($$SELECT usage(1, 'teleporters')$$);              -- 42704
SELECT pg_temp.error_of($$SELECT usage(99, 'hosts')$$);                   -- P0002
SELECT effective_limit(NULL, 'hosts') IS NULL AS strict_limit, usage(1, NULL) IS NULL AS strict_usage;
-- an overflowing sum is an error, not a wrap: a catalog change that would
-- overflow an account's stored limit is refused when the subscriptions
-- move to its version (grandfathering: until then they keep theirs) ...
-- (on Citus a held limit changes by change_limit(), the same rows as the
-- UPDATE on a single server: catalog_changes; a plain UPDATE is refused there)
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
SELECT change_limit('ch_starter', 'rooms', 9223372036854775807) AS from_version \gset
\else
UPDATE plan_limit SET value = 9223372036854775807 WHERE plan = 'ch_starter';
\endif
UPDATE subscription AS s SET plan_version = p.version FROM plan AS p WHERE p.code = s.plan AND p.code = 'ch_starter';
\if :on_citus
SELECT change_limit('ch_enterprise', 'rooms', 9223372036854775807) AS from_version \gset
\else
UPDATE plan_limit SET value = 9223372036854775807 WHERE plan = 'ch_enterprise';
\endif
SELECT pg_temp.error_of($$UPDATE subscription AS s SET plan_version = p.version FROM plan AS p WHERE p.code = s.plan AND p.code = 'ch_enterprise'$$);
-- ... and, with no counter to refresh, effective_limit() says it
DELETE FROM usage_counter WHERE account_id = 3;
UPDATE subscription AS s SET plan_version = p.version FROM plan AS p WHERE p.code = s.plan AND p.code = 'ch_enterprise';
SELECT pg_temp.error_of($$SELECT effective_limit(3, 'rooms')$$);

ROLLBACK;

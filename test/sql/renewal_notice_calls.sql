-- renewal_notice's usage join on a single server (issue 20): its plan, not
-- its rows (renewal_notice.sql has those, on Citus too, where the join
-- is planned apart and this count differs)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';

-- announce_renewals takes no usage column: the view's usage join (one
-- row, joined on true) is removed from its query, and no preview_usage
-- runs for its notices; a reader of the usage calls it (issue 20)
BEGIN;
SET LOCAL track_functions = 'pl';
CREATE FUNCTION pg_temp.previews() RETURNS bigint
LANGUAGE sql AS $$
    SELECT coalesce((SELECT calls FROM pg_stat_xact_user_functions
                      WHERE schemaname = 'subscription' AND funcname = 'preview_usage'), 0)
$$;
INSERT INTO product (code, name) VALUES ('svc', 'Service');
INSERT INTO plan (code, product, name) VALUES ('metered', 'svc', 'Metered');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('metered', '1 month', 10, false);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('metered', 'calls', NULL, false);
SELECT plan_usage_price('metered', 'calls', 100, 0.01, NULL, 'graduated', 'EUR') IS NOT NULL AS priced;
INSERT INTO account (id, tenant_id, name) VALUES (7, 7, 'metered');
SELECT subscribe(7, 'metered', '1 month', 1, now() - interval '20 days') AS metered \gset
SELECT pg_temp.previews() AS p0 \gset
SELECT announce_renewals() AS notices;
SELECT pg_temp.previews() - :p0 AS previews_by_announce_renewals;
SELECT usage_amount FROM renewal_notice WHERE subscription_id = :metered;
SELECT pg_temp.previews() - :p0 AS previews_by_a_reader_of_usage;
ROLLBACK;

-- announce_renewals prices each plan, cycle, quantity and version once for
-- its run (renewal_notices), not once a notice; a reader of one
-- subscription prices that one alone (issue 20)
BEGIN;
SET LOCAL track_functions = 'pl';
CREATE FUNCTION pg_temp.prices() RETURNS bigint
LANGUAGE sql AS $$
    SELECT coalesce((SELECT calls FROM pg_stat_xact_user_functions
                      WHERE schemaname = 'subscription' AND funcname = 'period_price'), 0)
$$;
INSERT INTO product (code, name) VALUES ('svc', 'Service');
INSERT INTO plan (code, product, name) VALUES ('flat', 'svc', 'Flat'), ('seats', 'svc', 'Seats');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('flat', '1 month', 10, false), ('seats', '1 month', 4, true), ('seats', '30 days', 3, true);
INSERT INTO account (id, tenant_id, name) SELECT g, g, 'account ' || g FROM generate_series(11, 19) AS g;
-- six on one price, two at 2 seats a month, one at 2 seats for 30 days
-- (another price: 1 month is not 30 days)
SELECT count(subscribe(g, 'flat', '1 month', 1, now() - interval '20 days')) FROM generate_series(11, 16) AS g;
SELECT subscribe(17, 'seats', '1 month', 2, now() - interval '20 days') AS seats \gset
SELECT subscribe(18, 'seats', '1 month', 2, now() - interval '20 days') IS NOT NULL AS subscribed;
SELECT subscribe(19, 'seats', '30 days', 2, now() - interval '20 days') IS NOT NULL AS subscribed;
SELECT pg_temp.prices() AS p0 \gset
SELECT announce_renewals() AS notices;
SELECT pg_temp.prices() - :p0 AS prices_by_announce_renewals;
SELECT e.account_id, e.payload ->> 'cycle' AS cycle, e.payload -> 'amount' AS amount
  FROM event AS e WHERE e.type = 'renewal.upcoming' AND e.account_id >= 17 ORDER BY e.account_id;
SELECT amount, cycle FROM renewal_notice WHERE subscription_id = :seats;
SELECT pg_temp.prices() - :p0 AS prices_with_a_reader_of_one;
ROLLBACK;

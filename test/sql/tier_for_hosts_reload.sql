-- tier_for_hosts_reload: tier_for_hosts' kept plan (L3, L12) across a new
-- catalog.  Apart from tier_for_hosts, which runs on Citus too: this case
-- drops and creates the extension, which a distributed one's tables depend
-- on (test/citus.sh leaves it out, docs/citus.md).
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
BEGIN;
INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central');
INSERT INTO plan (code, product, name, rank) VALUES ('central_plus', 'central', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 25, 1299), ('central_plus', '1 year', 100, 3999), ('central_plus', '1 year', 250, 8999);
-- the kept plan, made in this backend
SELECT count(*) FROM generate_series(1, 1000) AS g WHERE tier_for_hosts('central_plus', g % 250) >= 25;
ROLLBACK;

-- the kept plan follows the catalog: after the extension is dropped and
-- created again in this session, the new plan_tiers() is the one called
DROP EXTENSION subscription;
CREATE EXTENSION subscription;
SELECT pg_temp.error_of($$SELECT subscription.tier_for_hosts('central_plus', 10)$$);
INSERT INTO subscription.product (code, name) VALUES ('p', 'P');
INSERT INTO subscription.plan (code, product, name) VALUES ('t', 'p', 'T');
INSERT INTO subscription.plan_price (plan, cycle, tier, amount) VALUES ('t', '1 year', 5, 1);
SELECT subscription.tier_for_hosts('t', 3);
DROP EXTENSION subscription;
CREATE EXTENSION subscription;

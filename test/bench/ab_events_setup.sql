-- The databases of test/bench/ab_events_cpu.sh and ab_events_callgrind.sh
-- (issue 20): one account, one subscription of 1,000,000 seats, :members
-- members to assign one a call (license_consume, one license.assigned
-- event each), bench.next the next member.
SET search_path = subscription, public;
INSERT INTO product (code, name) VALUES ('seats', 'Seats');
INSERT INTO plan (code, product, name, kind) VALUES ('seats_service', 'seats', 'Service', 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('seats_service', '1 month', 1, true);
INSERT INTO account (id, name) VALUES (200, 'client');
INSERT INTO member (id, account_id, external_id)
SELECT 2000000 + g, 200, 'm' || g FROM generate_series(1, :members) AS g;
SELECT setval(pg_get_serial_sequence('subscription.subscription', 'id'), 1000, false);
SELECT subscribe(200, 'seats_service', '1 month', 1000000, '2026-01-01');
CREATE SEQUENCE bench.next START 2000001;
VACUUM FULL history;
VACUUM ANALYZE;
CHECKPOINT;

-- change_cycle (Z7), set_renewal (R6, R9), cancel and cancel_account (Z8)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- the actor set below (SET LOCAL), and the style the history's intervals
-- are written in, reach the history's triggers on a Citus worker too
-- (docs/citus.md); on a single server they are this session's already
SET LOCAL citus.propagate_set_commands = 'local';
SET LOCAL IntervalStyle = 'postgres_verbose';

INSERT INTO product (code, name) VALUES ('support', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_pro', 'support', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_pro', '1 month', 55, true), ('zd_pro', '1 year', 588, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech');
INSERT INTO member (id, tenant_id, account_id, external_id, role, rights) VALUES
    (11, 1, 1, 'gus', 'owner', '{}'), (12, 1, 1, 'hal', 'admin', '{change_renewal}'), (13, 1, 1, 'ian', 'admin', '{}');
SELECT subscribe(1, 'zd_pro', '1 year', 5, '2026-01-15') AS annual \gset
SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-15') AS monthly \gset
SELECT subscribe(2, 'zd_pro', '1 month', 1, '2026-01-15') AS initech \gset

-- Z7: annual to monthly in the first month takes effect at the next period start
SELECT change_cycle(:annual, '1 month') AS takes_effect;
SELECT cycle, pending_cycle, period FROM subscription WHERE id = :annual;
-- asking for the current cycle again clears the pending change
SELECT change_cycle(:annual, '1 year') AS takes_effect;
SELECT cycle, pending_cycle FROM subscription WHERE id = :annual;
-- a cycle the plan does not sell, and bad input
SELECT pg_temp.error_of(format($$SELECT change_cycle(%s, '30 days')$$, :annual));      -- 22023
SELECT pg_temp.error_of(format($$SELECT change_cycle(%s, '-1 month')$$, :annual));     -- 22023
SELECT pg_temp.error_of($$SELECT change_cycle(999, '1 month')$$);                      -- P0002
SELECT pg_temp.error_of(format($$SELECT change_cycle(%s, NULL)$$, :annual));           -- 22004

-- R6: the renewal option; R9: an admin needs change_renewal
SELECT set_renewal(:monthly, 'once');
SET LOCAL subscription.actor = '12';
SELECT set_renewal(:monthly, 'none');
SET LOCAL subscription.actor = '13';
SELECT pg_temp.error_of(format($$SELECT set_renewal(%s, 'always')$$, :monthly));      -- 42501
RESET subscription.actor;
SELECT renewal FROM subscription WHERE id = :monthly;
SELECT pg_temp.error_of(format($$SELECT set_renewal(%s, 'forever')$$, :monthly));     -- 22023
SELECT pg_temp.error_of(format($$SELECT set_renewal(%s, NULL)$$, :monthly));          -- 22004

-- Z8: cancelling takes effect at period end; the subscription stays active until then
SELECT cancel(:monthly) AS ends_at, cancel(:monthly) AS again;
SELECT status, cancel_at_period_end FROM subscription WHERE id = :monthly;
-- Z1: an admin may not cancel; the owner cancels the whole account
SET LOCAL subscription.actor = '12';
SELECT pg_temp.error_of(format($$SELECT cancel(%s)$$, :annual));                      -- 42501
SELECT pg_temp.error_of($$SELECT * FROM cancel_account(1)$$);                          -- 42501
SET LOCAL subscription.actor = '11';
SELECT * FROM cancel_account(1);
SELECT pg_temp.error_of($$SELECT * FROM cancel_account(2)$$);                          -- 42501: not his account
RESET subscription.actor;
SELECT id, cancel_at_period_end FROM subscription ORDER BY id;
-- a subscription that is no longer active cannot be changed
UPDATE subscription SET status = 'expired' WHERE id = :initech;
SELECT pg_temp.error_of(format($$SELECT cancel(%s)$$, :initech));                     -- 55000
SELECT pg_temp.error_of($$SELECT * FROM cancel_account(999)$$);                        -- P0002

-- history records each change with its actor (R8)
-- (by subscription first: on Citus each tenant's ids come from its worker's range)
SELECT actor, operation, subscription_id, details FROM history
 WHERE operation = 'subscription_update' ORDER BY subscription_id, id;

ROLLBACK;

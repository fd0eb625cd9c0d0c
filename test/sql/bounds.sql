-- Bounds on time, quantities and amounts, and errors as a user wants them
-- (issue 15, items 6 and 8).  The suite runs with max_backdate and
-- max_ahead raised (test/check.sh: its other files are written at fixed
-- dates); here the defaults are set back explicitly.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET subscription.max_backdate = '5 years';
SET subscription.max_ahead = '1 year';
-- now()-dependent times in a message, masked
CREATE FUNCTION pg_temp.masked(statement text) RETURNS text LANGUAGE sql
RETURN regexp_replace(pg_temp.error_of(statement),
       '[A-Z][a-z]{2} [A-Z][a-z]{2} [0-9]{2} [0-9:.]+ [0-9]+ (UTC|LMT)', '(time)', 'g');
BEGIN;

INSERT INTO product (code, name) VALUES ('central', 'LogMeIn Central'), ('support', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_plus', 'central', 'Plus', 1), ('zd_team', 'support', 'Team', 1), ('zd_daily', 'support', 'Daily', 2);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 year', 25, 100.00), ('central_plus', '1 year', 100, 300.00);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 19.00, true), ('zd_team', '1 week', 5.00, true), ('zd_daily', '1 day', 1.00, false);
INSERT INTO addon (code, product, name, feature, units) VALUES ('zd_seats', 'support', 'Seats', 'licenses', 1000);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_seats', '1 month', 1.00);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_team', 'zd_seats');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Initech');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (1, 1, 1, 'ann@acme', 'owner');

-- the settings: intervals are checked when set
SHOW subscription.max_backdate;
SHOW subscription.max_catchup;
SELECT pg_temp.error_of($$SET subscription.max_backdate = 'soon'$$);
SELECT pg_temp.error_of($$SET subscription.max_ahead = '-1 day'$$);
SELECT pg_temp.error_of($$SET subscription.max_catchup = 0$$);

-- A typo bills decades: 0026 for 2026 is refused (22023, the setting named)
SELECT pg_temp.masked($$SELECT subscribe(1, 'zd_team', '1 month', 1, '0026-01-01')$$);
-- a time past year 9999 is ours, not timestamptz's 22008
SELECT pg_temp.error_of($$SELECT subscribe(1, 'zd_team', '1 month', 1, '294276-01-01')$$);
SELECT pg_temp.error_of($$SELECT subscribe(1, 'zd_team', '1 month', 1, 'infinity')$$);
-- every call with an "at"
SELECT subscribe(1, 'zd_team', '1 month', 2, now() - interval '10 days') AS team \gset
SELECT pg_temp.masked(format($$SELECT set_quantity(%s, 3, now() - interval '6 years')$$, :team));
SELECT pg_temp.masked(format($$SELECT * FROM change_plan(%s, 'zd_team', now() - interval '6 years')$$, :team));
SELECT pg_temp.masked(format($$SELECT purchase_addon(%s, 'zd_seats', 1, now() - interval '6 years')$$, :team));
SELECT pg_temp.masked(format($$SELECT end_early(%s, now() - interval '6 years')$$, :team));
SELECT pg_temp.masked($$SELECT renew_due(now() - interval '6 years')$$);
-- renewals refuse a time more than max_ahead after now()
SELECT pg_temp.masked($$SELECT renew_due(now() + interval '2 years')$$);
SELECT pg_temp.masked($$CALL run_renewals(now() + interval '2 years')$$);
-- raised, the same time is accepted
SAVEPOINT raised;
SET LOCAL subscription.max_backdate = '3000 years';
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 1, '0026-01-01')$$) AS typo_allowed;
ROLLBACK TO SAVEPOINT raised;
SHOW subscription.max_backdate;

-- one call catches up at most max_catchup periods; the next goes on
SELECT subscribe(1, 'zd_daily', '1 day', 1, date_trunc('day', now()) - interval '10 days') AS daily \gset
SET LOCAL subscription.max_catchup = 4;
\set VERBOSITY terse
SELECT renew_due() AS handled;
\set VERBOSITY default
SELECT period_number, upper(period) <= now() AS still_due FROM subscription WHERE id = :daily;
SELECT count(*) AS charges FROM ledger WHERE subscription_id = :daily AND kind = 'charge';
\set VERBOSITY terse
SELECT renew_due() AS handled;
SELECT renew_due() AS handled;
\set VERBOSITY default
SELECT period_number, upper(period) <= now() AS still_due FROM subscription WHERE id = :daily;
SELECT count(*) AS charges FROM ledger WHERE subscription_id = :daily AND kind = 'charge';

-- fat fingers: quantities and amounts (22003, the setting named)
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 2147483647)$$);
SELECT pg_temp.error_of($$SELECT credit_account(2, 1e300, 'typo')$$);
SET LOCAL subscription.max_amount = 1000;
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 month', 100)$$);
SELECT pg_temp.error_of($$SELECT credit_account(2, 1000.01, 'typo')$$);
SELECT credit_account(2, 1000.00, 'the largest') > 0 AS at_the_bound;
RESET subscription.max_amount;
-- a license add-on cannot overflow the seats (no "integer out of range")
SELECT subscribe(2, 'zd_team', '1 month', 1) AS seats \gset
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'zd_seats', 2147483)$$, :seats));
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'zd_seats', 1000)$$, :seats));
-- the bound is on the seats it would hold, capacity + quantity x units:
-- 2 + 999 x 1000 = 999,002 fits ((2 + 999) x 1000 would not)
SAVEPOINT fits;
SELECT purchase_addon(:team, 'zd_seats', 999, now()) > 0 AS bought;
SELECT license_capacity(:team);
ROLLBACK TO SAVEPOINT fits;
-- negative quantities have no price
SELECT pg_temp.error_of($$SELECT * FROM period_price('zd_team', '1 month', -3)$$);
SELECT pg_temp.error_of($$SELECT * FROM find_price('zd_team', '1 month', -3)$$);
SELECT pg_temp.error_of($$SELECT * FROM addon_period_price('zd_seats', '1 month', -3)$$);
-- nth_period refuses what is not a period
SELECT pg_temp.error_of($$SELECT nth_period('2026-01-01', '-1 month', 1)$$);
SELECT pg_temp.error_of($$SELECT nth_period('2026-01-01', '0 days', 1)$$);
SELECT pg_temp.error_of($$SELECT nth_period('infinity', '1 month', 1)$$);

-- errors a user can act on: the closest codes, cycles as written and sold
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_tema', '1 month')$$);
SELECT pg_temp.error_of($$SELECT subscribe(2, 'centrl_plus', '1 year', 25)$$);
SELECT pg_temp.error_of($$SELECT subscribe(2, 'xyz', '1 month')$$);
SELECT pg_temp.error_of(format($$SELECT purchase_addon(%s, 'zd_seat')$$, :seats));
SELECT pg_temp.error_of($$SELECT subscribe(2, 'zd_team', '1 year')$$);
SELECT pg_temp.error_of($$SELECT subscribe(2, 'central_plus', '1 year', 250)$$);
SELECT pg_temp.error_of($$SELECT subscribe(2, 'central_plus', '1 year', 50)$$);
SELECT c, cycle_text(c) FROM unnest('{1 month,1 year,3 years,18 months,30 days,1 week,2 weeks,1 day,1 year 2 days,2 hours}'::interval[]) AS c;

-- overdue: the default "at" says which renewal to run first
-- (the period computed first: on Citus an UPDATE may not call a STABLE
-- function, timestamptz - interval, on its row's columns)
SELECT tstzrange(lower(period) - interval '2 months', upper(period) - interval '2 months') AS moved
  FROM subscription WHERE id = :seats \gset
UPDATE subscription SET period = :'moved' WHERE id = :seats;
SELECT pg_temp.masked(format($$SELECT set_quantity(%s, 2)$$, :seats)) AS overdue;
SELECT subscription_id, overdue FROM renewal_notice ORDER BY subscription_id;
ROLLBACK;

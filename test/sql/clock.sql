-- The billing clock (issue 20, item 5): subscription.now() is the
-- transaction's start, or subscription.clock where the server allows it
-- (test/lib.sh turns subscription.allow_clock on for the test server;
-- test/clock.sh tests a server that does not allow it).
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';

-- the module defines the settings when it loads
SELECT subscription.now() IS NOT NULL AS loaded;
-- the server allows it; no session can change that (a server setting)
SHOW subscription.allow_clock;
SELECT pg_temp.error_of($$SET subscription.allow_clock = off$$);
SHOW subscription.clock;

-- unset: the transaction's start, as now()
BEGIN;
SELECT subscription.now() = now() AS real_time;
-- the meters' clock (issue 21): the statement's start, unless moved
SELECT subscription.meter_now() = statement_timestamp() AS statement_time;
-- set: the clock, for this transaction
SET LOCAL subscription.clock = '2031-05-01 12:00+00';
SELECT subscription.now(), subscription.meter_now() = subscription.now() AS meters_moved;
-- moved again in the same transaction: the new time (the kept parse follows)
SET LOCAL subscription.clock = '2031-06-01 00:00+00';
SELECT subscription.now();
-- a clock without a zone is read in the session's time zone, again when it changes
SET LOCAL subscription.clock = '2031-06-01 09:00';
SET LOCAL TimeZone = 'Asia/Tokyo';
SELECT subscription.now() = '2031-06-01 00:00+00' AS read_in_tokyo;
SET LOCAL TimeZone = 'UTC';
SELECT subscription.now() = '2031-06-01 09:00+00' AS read_in_utc;
COMMIT;
-- SET LOCAL ends with its transaction
SELECT subscription.now() = now() AS real_time_again;

-- defaults, bodies and views follow it
BEGIN;
-- I8: in one transaction, each invoice's opening is written at the end of
-- its statement (as at a commit), so that its history row is counted here
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
SET LOCAL subscription.clock = '2031-01-10 00:00+00';
INSERT INTO product (code, name) VALUES ('clocked', 'Clocked');
INSERT INTO plan (code, product, name) VALUES ('clk', 'clocked', 'Clocked');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('clk', '1 month', 10.00);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme') RETURNING created_at;
-- subscribe()'s at defaults to the clock; its rows' defaults read it too
SELECT subscribe(1, 'clk', '1 month') AS subscription_id;
SELECT lower(period), upper(period), created_at FROM subscription.subscription WHERE account_id = 1;
SELECT kind, amount, created_at FROM ledger WHERE account_id = 1;
SELECT operation, at FROM history WHERE account_id = 1 ORDER BY id;
-- renewal_notice: 30 days ahead of the clock, not of real time
SELECT subscription_id, renews_at, overdue FROM renewal_notice WHERE account_id = 1;
SET LOCAL subscription.clock = '2031-02-10 00:00+00';
SELECT subscription_id, renews_at, overdue FROM renewal_notice WHERE account_id = 1;
-- renew_due()'s at defaults to the clock: the period that ended is charged
SELECT renew_due() AS renewed;
SELECT kind, amount, created_at FROM ledger WHERE account_id = 1 ORDER BY id;
-- the bounds are around the clock: max_backdate before it (C, require_time)
SET LOCAL subscription.max_backdate = '1 year';
SELECT pg_temp.error_of($$SELECT subscribe(1, 'clk', '1 month', 1, '2029-12-31')$$);
ROLLBACK;

-- Bad input: a clock that is not a time (22007), or is out of range or
-- infinite (22008), is refused when it is read, with the setting named
BEGIN;
SET LOCAL subscription.clock = 'next tuesday';
SELECT pg_temp.error_of($$SELECT subscription.now()$$);
SET LOCAL subscription.clock = '2031-02-30';
SELECT pg_temp.error_of($$SELECT subscription.now()$$);
SET LOCAL subscription.clock = 'infinity';
SELECT pg_temp.error_of($$SELECT subscription.now()$$);
SET LOCAL subscription.clock = '294277-01-01';
SELECT pg_temp.error_of($$SELECT subscription.now()$$);
-- and wherever the extension reads it: a default
SELECT pg_temp.error_of($$INSERT INTO account (id, tenant_id, name) VALUES (2, 2, 'Initech')$$);
ROLLBACK;

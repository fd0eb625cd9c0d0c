-- The billing clock (issue 20): every "now" of the extension (defaults,
-- views, bodies, the bounds and meters in C) is subscription.now(), never
-- PostgreSQL's own clock functions (test/clock.sh lints for them).  It is
-- the transaction's start, unless the server allows sessions to move it
-- (subscription.allow_clock, a test server's configuration) and the
-- session sets subscription.clock (SET LOCAL): docs/integrating.md.
-- It comes first: the tables' defaults call it.
CREATE FUNCTION subscription.now()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'subscription_now'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.now() IS
'The billing clock: subscription.clock where subscription.allow_clock is on, else the transaction''s start';

-- The meters' clock (issue 21): the statement's start, so that a meter sees
-- time pass between the statements of one transaction; subscription.clock
-- where it is moved, as subscription.now().
CREATE FUNCTION subscription.meter_now()
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'subscription_meter_now'
LANGUAGE C STABLE PARALLEL SAFE;

COMMENT ON FUNCTION subscription.meter_now() IS
'The meters'' clock: subscription.clock where it is moved, else the statement''s start';

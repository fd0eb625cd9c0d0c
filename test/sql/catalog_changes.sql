-- change_price() and change_limit() (issue 17): a change of a plan's
-- current price or limit, decided before the catalog is written, versioned
-- as a plain UPDATE is on a single server (grandfathering: the
-- subscriptions that hold it keep theirs, new ones are sold the change).
-- On Citus the one way to change a held price or limit; test/citus.sh runs
-- this case there with the same output.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('rooms', 'Meeting rooms');
INSERT INTO plan (code, product, name, rank) VALUES ('rooms_basic', 'rooms', 'Basic', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('rooms_basic', '1 month', 29), ('rooms_basic', '1 year', 290);
INSERT INTO plan_limit (plan, feature, value) VALUES ('rooms_basic', 'rooms', 2);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Acme'), (2, 2, 'Globex'), (3, 3, 'Initech');
CREATE TABLE public.cc_room (account_id bigint NOT NULL, id int NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.cc_room
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.cc_room', 'rooms');

-- a price nobody holds changes in place, at the plan's version
SELECT change_price('rooms_basic', '1 month', 30) AS from_version;
SELECT plan, cycle, amount, versions FROM plan_price ORDER BY cycle, versions;

-- a price that a subscription holds: its version keeps the old row, the
-- change makes the plan's version 2; the other cycle's price holds on
SELECT subscribe(1, 'rooms_basic', '1 month', 1, '2026-01-01') AS acme \gset
SELECT change_price('rooms_basic', '1 month', 35) AS from_version;
SELECT plan, cycle, amount, versions FROM plan_price ORDER BY cycle, versions;
SELECT version FROM plan WHERE code = 'rooms_basic';
-- version 2 held by nobody yet: a second change stays in it
SELECT change_price('rooms_basic', '1 month', 36) AS from_version;
SELECT plan, cycle, amount, versions FROM plan_price WHERE cycle = '1 month' ORDER BY versions;
-- a subscription sold now holds version 2 at 36; Acme keeps 30
SELECT subscribe(2, 'rooms_basic', '1 month', 1, '2026-01-01') AS globex \gset
SELECT s.account_id, s.plan_version, l.amount FROM subscription AS s
  JOIN ledger AS l ON l.tenant_id = s.tenant_id AND l.subscription_id = s.id
 ORDER BY s.account_id;
-- per_license and currency, unless NULL
SELECT change_price('rooms_basic', '1 year', 300, NULL, true) AS from_version;
SELECT cycle, amount, per_license, currency, versions FROM plan_price WHERE cycle = '1 year' ORDER BY versions;

-- a limit: Acme and Globex hold versions 1 and 2, so the change makes 3
SELECT change_limit('rooms_basic', 'rooms', 3) AS from_version;
SELECT plan, feature, value, versions FROM plan_limit ORDER BY versions;
SELECT subscribe(3, 'rooms_basic', '1 month', 1, '2026-01-01') AS initech \gset
SELECT a, effective_limit(a, 'rooms') FROM generate_series(1, 3) AS a;
-- the guard holds each account to its version's limit
INSERT INTO public.cc_room VALUES (1, 1), (1, 2), (3, 1), (3, 2), (3, 3);
SELECT pg_temp.error_of($$INSERT INTO public.cc_room VALUES (1, 3)$$);
SELECT pg_temp.error_of($$INSERT INTO public.cc_room VALUES (3, 4)$$);
-- unlimited: NULL
SELECT change_limit('rooms_basic', 'rooms', NULL) AS from_version;
SELECT value, versions FROM plan_limit ORDER BY versions;

-- a trial holds its version too: it converts at the price it was sold,
-- not at a change made during the trial (so does a past-due subscription)
INSERT INTO plan (code, product, name, rank) VALUES ('hall_pro', 'rooms', 'Pro', 2);
INSERT INTO plan_price (plan, cycle, amount, trial) VALUES ('hall_pro', '1 month', 50, '14 days');
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Hooli');
SELECT subscribe(4, 'hall_pro', '1 month', 1, '2026-01-01') AS hooli \gset
SELECT status, plan_version FROM subscription WHERE id = :hooli;
SELECT change_price('hall_pro', '1 month', 60) AS from_version;
SELECT amount, versions FROM plan_price WHERE plan = 'hall_pro' ORDER BY versions;
SELECT renew_account(4, '2026-01-15') AS converted;
SELECT amount FROM ledger WHERE tenant_id = 4 AND subscription_id = :hooli ORDER BY id;

-- bad input: 22004, 22023, 42704, P0002
SELECT pg_temp.error_of($$SELECT subscription.change_price(NULL, '1 month', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_price('rooms_basic', '1 month', NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_limit('rooms_basic', NULL, 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_price('rooms_basik', '1 month', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_price('rooms_basic', '1 week', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_limit('rooms_basic', 'seats', 1)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_price('rooms_basic', '1 month', -1)$$);
SELECT pg_temp.error_of($$SELECT subscription.change_price('rooms_basic', '1 month', 'NaN')$$);
SELECT pg_temp.error_of($$SELECT subscription.change_price('rooms_basic', '1 month', 1, NULL, NULL, 'XXX')$$);
SELECT pg_temp.error_of($$SELECT subscription.change_limit('rooms_basic', 'rooms', -1)$$);
-- nothing written by a refusal
SELECT count(*) AS prices, max(version) AS version FROM plan_price JOIN plan ON plan.code = plan_price.plan;
ROLLBACK;

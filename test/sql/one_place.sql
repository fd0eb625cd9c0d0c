-- Each rule in one place (issue 15, item 7): the names of the downgrade
-- policies come from one C table (src/policies.c), which enforce_limit,
-- limited_table's constraints, the limit guards and the trimming all read
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

SELECT downgrade_policies(), value_policies();
-- the HINT lists the same policies
SELECT pg_temp.error_of($$SELECT enforce_limit('subscription.plan', 'x', 'account_id', 'newest')$$) AS unknown_policy;

INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_starter', 'crowd', 'Starter', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49);
INSERT INTO plan_limit (plan, feature, value)
SELECT 'ch_starter', 'rooms_' || p, 2 FROM unnest(downgrade_policies()) AS p;
INSERT INTO account (id, name) VALUES (1, 'Tickets');
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-01-01') AS sub \gset
CREATE TABLE public.room (id bigint PRIMARY KEY, account_id bigint NOT NULL, capacity integer);
CREATE TABLE public.visit (room_id bigint REFERENCES public.room (id) ON DELETE CASCADE);

-- every policy the table names is one enforce_limit accepts, that the guard
-- (limits.c) and the trimming (downgrade.c) know: each registered in turn,
-- then a row written and a downgrade applied
CREATE FUNCTION pg_temp.try_policy(p text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    used bigint;
BEGIN
    PERFORM subscription.enforce_limit('public.room', 'rooms_' || p, 'account_id', p, NULL,
        CASE WHEN p = ANY (subscription.value_policies()) THEN 'capacity' END);
    INSERT INTO public.room VALUES (1, 1, 1);
    used := subscription.usage(1, 'rooms_' || p);
    PERFORM subscription.apply_downgrade(1);
    DELETE FROM public.room;
    PERFORM subscription.unenforce_limit('public.room', 'rooms_' || p);
    RETURN 'ok, counted ' || used;
END
$$;
SELECT p AS policy, pg_temp.try_policy(p) AS result,
       p = ANY (value_policies()) AS needs_value
  FROM unnest(downgrade_policies()) AS p;

-- limited_table's constraints read the same lists
SELECT pg_temp.error_of($$INSERT INTO limited_table (relation, feature, account_column, on_downgrade)
                          VALUES ('public.room', 'rooms_x', 'account_id', 'newest')$$) AS stored_unknown;
SELECT pg_temp.error_of(format($$INSERT INTO limited_table (relation, feature, account_column, on_downgrade)
                          VALUES ('public.room', 'rooms_x', 'account_id', %L)$$, p)) AS stored_without_value
  FROM unnest(value_policies()) AS p;

-- "an empty actor is trusted" for back-office code only: one C function
-- (TrustedWithoutActor) that authorize (SQL) and license_consume (C) ask
SELECT actor_named() AS unset, trusted_without_actor() AS superuser_trusted;
SET LOCAL subscription.actor = '';
SELECT actor_named() AS empty, trusted_without_actor() AS empty_trusted;
SET LOCAL subscription.actor = '7';
SELECT actor_named() AS named, trusted_without_actor() AS named_not_decided_here;
SET LOCAL subscription.actor = '';
CREATE ROLE one_place_app;
GRANT USAGE ON SCHEMA subscription TO one_place_app;
GRANT EXECUTE ON FUNCTION trusted_without_actor(), authorize(bigint, text, boolean),
    license_consume(bigint, bigint) TO one_place_app;
SET LOCAL ROLE one_place_app;
SELECT pg_temp.error_of('SELECT subscription.trusted_without_actor()') AS rule;
SELECT pg_temp.error_of('SELECT subscription.authorize(1, ''read'')') AS sql_path;
SELECT pg_temp.error_of(format('SELECT subscription.license_consume(%s, 1)', :sub)) AS c_path;
RESET ROLE;
ROLLBACK;

-- R11, "a service plan takes a seat": one C rule that the statement guard
-- (WANTED_SEATS), the one-row path (ReadTarget) and sync_service_seats()
-- (through seat_product()) share; the seats each path writes must be the
-- ones seat_product() names
BEGIN;
SELECT k AS kind, seat_product(k, 'crowd') AS seat_of_crowd
  FROM unnest('{service,option}'::text[]) AS k;
INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('ch_service', 'crowd', 'Service', 1, 'service'), ('ch_option', 'crowd', 'Option', 2, 'option');
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_service', '1 month', 49), ('ch_option', '1 month', 9);
INSERT INTO account (id, name) VALUES (1, 'Tickets');
INSERT INTO member (id, account_id, external_id) SELECT g, 1, 'm' || g FROM generate_series(1, 4) AS g;
SELECT subscribe(1, 'ch_service', '1 month', 5, '2026-01-01') AS service \gset
SELECT subscribe(1, 'ch_option', '1 month', 5, '2026-01-01') AS option \gset
CREATE FUNCTION pg_temp.seats_disagreeing() RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(*) FROM subscription.license AS l
      JOIN subscription.subscription AS s ON s.id = l.subscription_id
      JOIN subscription.plan AS p ON p.code = s.plan
      LEFT JOIN subscription.service_seat AS x
        ON x.member_id = l.member_id AND x.subscription_id = l.subscription_id
     WHERE x.product IS DISTINCT FROM subscription.seat_product(p.kind, p.product)
$$;
-- one-row path: license_consume and a one-row INSERT
SELECT license_consume(:service, 1) >= 0 AS one_row_service, license_consume(:option, 1) >= 0 AS one_row_option;
INSERT INTO license (subscription_id, member_id) VALUES (:option, 2);
-- statement path: a multi-row INSERT
INSERT INTO license (subscription_id, member_id) VALUES (:service, 3), (:service, 4), (:option, 3);
SELECT count(*) AS licenses, (SELECT count(*) FROM service_seat) AS seats,
       pg_temp.seats_disagreeing() AS disagreeing FROM license;
-- sync_service_seats: the plan turns into an option, then back
UPDATE plan SET kind = 'option' WHERE code = 'ch_service';
SELECT (SELECT count(*) FROM service_seat) AS seats, pg_temp.seats_disagreeing() AS disagreeing;
UPDATE plan SET kind = 'service' WHERE code = 'ch_service';
SELECT (SELECT count(*) FROM service_seat) AS seats, pg_temp.seats_disagreeing() AS disagreeing;
-- a subscription moved to the option plan, and back
UPDATE subscription SET plan = 'ch_option' WHERE id = :service;
SELECT (SELECT count(*) FROM service_seat) AS seats, pg_temp.seats_disagreeing() AS disagreeing;
UPDATE subscription SET plan = 'ch_service' WHERE id = :service;
SELECT (SELECT count(*) FROM service_seat) AS seats, pg_temp.seats_disagreeing() AS disagreeing;
ROLLBACK;

-- a row's id text, one C helper (RowIdText) for the trimming (downgrade.c)
-- and the guard archiving a cascade's rows (limits.c): the primary key as
-- text, its columns in key order as a row when there are several
BEGIN;
INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_big', 'crowd', 'Big', 2), ('ch_small', 'crowd', 'Small', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_big', '1 month', 99), ('ch_small', '1 month', 49);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('ch_big', 'halls', 2), ('ch_small', 'halls', 1), ('ch_big', 'hall_seats', 10), ('ch_small', 'hall_seats', 10);
INSERT INTO account (id, name) VALUES (1, 'Tickets');
SELECT subscribe(1, 'ch_big', '1 month', 1, '2026-01-01') AS sub \gset
CREATE TABLE public.hall (id int PRIMARY KEY, account_id bigint NOT NULL);
CREATE TABLE public.hall_seat ("Row" int, account_id bigint NOT NULL,
    hall_id int REFERENCES public.hall ON DELETE CASCADE, PRIMARY KEY (hall_id, "Row"));
SELECT enforce_limit('public.hall', 'halls'), enforce_limit('public.hall_seat', 'hall_seats');
INSERT INTO public.hall VALUES (1, 1), (2, 1);
INSERT INTO public.hall_seat VALUES (1, 1, 2), (2, 1, 2);
UPDATE subscription SET pending_plan = 'ch_small' WHERE id = :sub;
SELECT count(*) AS changed FROM apply_downgrade(:sub);
SELECT relation, action, row_id FROM trimmed ORDER BY id;
ROLLBACK;

-- money: round_money rounds to the digits money_scale reads, the one
-- reader of the rounding rule; unused_part is the refund of a charge's
-- unused days (prorate_refund by day, at the currency's digits) that every
-- refund and part-period charge uses
BEGIN;
SELECT count(*) AS currencies,
       count(*) FILTER (WHERE round_money(2.0004999, c.code) <> round(2.0004999, money_scale(c.code))
                           OR scale(round_money(2.0004999, c.code)) <> money_scale(c.code)) AS disagreeing
  FROM currency AS c;
SELECT pg_temp.error_of($$SELECT subscription.round_money(1, 'XXX')$$) AS unknown_round,
       money_scale('XXX') AS unknown_scale;
SELECT c.code, unused_part(100, '[2026-01-01,2026-02-01)', '2026-01-15', c.code) AS part,
       unused_part(100, '[2026-01-01,2026-02-01)', '2026-01-15', c.code)
         = prorate_refund(100, '2026-01-01', '2026-02-01', '2026-01-15', 'day', money_scale(c.code)) AS same
  FROM currency AS c WHERE c.code IN ('EUR', 'JPY', 'KWD') ORDER BY c.code;
ROLLBACK;

-- the next terms of a renewal (fold 8): next_terms() is the one place;
-- renew_batch asks it once per period, and the check (renewal_problem),
-- the renewal (renew_period) and renewal_notice (through renewal_terms)
-- all read it: what the notice shows is what the renewal does, for each
-- kind of pending change, 'to_monthly' and a quantity from the use (L7)
BEGIN;
INSERT INTO product (code, name, renewal_quantity) VALUES ('rainbow', 'Rainbow', 'keep'), ('central', 'LogMeIn Central', 'from_usage');
INSERT INTO plan (code, product, name, rank) VALUES
    ('rb_essential', 'rainbow', 'Essential', 1), ('rb_business', 'rainbow', 'Business', 2),
    ('central_plus', 'central', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('rb_essential', '1 month', 2.99, true), ('rb_essential', '1 year', 29.9, true),
    ('rb_business', '1 month', 5.99, true), ('rb_business', '1 year', 64.69, true), ('rb_business', '3 years', 172.51, true);
-- tier 100 is sold yearly only
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_plus', '1 month', 25, 99), ('central_plus', '1 year', 25, 1000), ('central_plus', '1 year', 100, 3000);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('central_plus', 'hosts', 1, true);
INSERT INTO account (id, name) SELECT g, 'a' || g FROM generate_series(1, 7) AS g;
SELECT subscribe(1, 'rb_business', '1 month', 3, now() - interval '1 month' + interval '5 days') AS plain,
       subscribe(2, 'rb_business', '1 month', 3, now() - interval '1 month' + interval '5 days') AS to_plan,
       subscribe(3, 'rb_business', '1 month', 3, now() - interval '1 month' + interval '5 days') AS to_cycle,
       subscribe(4, 'rb_business', '1 month', 3, now() - interval '1 month' + interval '5 days') AS to_quantity,
       subscribe(5, 'rb_business', '3 years', 3, now() - interval '3 years' + interval '5 days', 'to_monthly') AS prepaid,
       subscribe(6, 'central_plus', '1 year', 100, now() - interval '1 year' + interval '5 days') AS from_use,
       subscribe(7, 'central_plus', '1 month', 25, now() - interval '1 month' + interval '5 days') AS unsold \gset
SELECT change_plan(:to_plan, 'rb_essential') IS NOT NULL AS downgraded,
       change_cycle(:to_cycle, '1 year') IS NOT NULL AS yearly;
UPDATE subscription SET pending_quantity = 2 WHERE id = :to_quantity;
CREATE TABLE public.host (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account_id bigint NOT NULL);
INSERT INTO public.host (account_id) SELECT a FROM (VALUES (6, 20), (7, 60)) AS h(a, n), generate_series(1, n);
SELECT enforce_limit('public.host', 'hosts');
-- the notice, before account 7's use is counted: its 60 hosts ask for
-- tier 100, which is not sold monthly (the notice could not price it)
UPDATE usage_counter SET used = 0 WHERE account_id = 7 AND feature = 'hosts';
CREATE TEMP TABLE notice AS SELECT subscription_id, plan, cycle, quantity, amount FROM renewal_notice;
UPDATE usage_counter SET used = 60 WHERE account_id = 7 AND feature = 'hosts';
SELECT s.id, t.plan, t.cycle, t.quantity, t.renewal, t.needed, renewal_problem(s, t) AS problem
  FROM subscription AS s, next_terms(s) AS t ORDER BY s.id;
-- the one whose price is missing stays due, with the check's WARNING; the
-- renewal of the others agrees with the notice
SELECT renew_due(now() + interval '6 days') AS renewed;
SELECT s.id, s.plan, s.cycle, s.quantity, s.renewal, l.amount,
       (s.plan, s.cycle, s.quantity, l.amount) IS NOT DISTINCT FROM (n.plan, n.cycle, n.quantity, n.amount) AS as_noticed
  FROM subscription AS s
  LEFT JOIN notice AS n ON n.subscription_id = s.id
  LEFT JOIN ledger AS l ON l.subscription_id = s.id AND l.kind = 'charge' AND l.item = 'plan' AND lower(l.period) > now()
 ORDER BY s.id;
ROLLBACK;

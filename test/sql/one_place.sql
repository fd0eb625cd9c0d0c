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
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets');
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
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets');
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
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets');
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

-- what a row counts for a limit policy (C4-C11, K7): one C definition
-- (limits.c: LimitCounting read by ReadLimitCounting, CountedRowsSql for
-- the sets, CountRow for one row) that the recount of enforce_limit,
-- apply_downgrade and verify, the statement guard's delta over the
-- transition tables, and the one-row path share.  For each kind of
-- registration, rows written one at a time and many at a time, updated,
-- deleted and truncated leave every counter equal to verify()'s recount and
-- to what enforce_limit counts on a new registration.
BEGIN;
INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_big', 'crowd', 'Big', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_big', '1 month', 99);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('ch_big', 'gadgets', 1000), ('ch_big', 'gadget_units', 1000), ('ch_big', 'gadget_tags', 1000),
    ('ch_big', 'gadget_sizes', 100), ('ch_big', 'gadget_rows', 1000), ('ch_big', 'sub_accounts', 1000);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets'), (2, 2, 'Venues');
SELECT count(subscribe(a, 'ch_big', '1 month', 1, '2026-01-01')) AS subscribed FROM generate_series(1, 2) AS a;
-- an integer account column, NULL accounts and NULL values
CREATE TABLE public.gadget (id int PRIMARY KEY, account_id integer, size smallint, tag text);
SELECT enforce_limit('public.gadget', 'gadgets'),                                            -- a row counts one
       enforce_limit('public.gadget', 'gadget_units', 'account_id', 'scale', NULL, 'size'),  -- its value
       enforce_limit('public.gadget', 'gadget_tags', 'account_id', 'detach', NULL, 'tag'),   -- one if not NULL
       enforce_limit('public.gadget', 'gadget_sizes', 'account_id', 'cap', NULL, 'size'),   -- nothing
       enforce_limit('public.gadget', 'gadget_rows', 'account_id', 'block', NULL, 'tag'),    -- one, value or not
       enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'drop_newest', 'created_at');

-- the counters that disagree with verify(), or with a new registration's count
CREATE FUNCTION pg_temp.paths_disagree() RETURNS TABLE (what text, account bigint, counter bigint, recounted bigint)
LANGUAGE plpgsql AS $$
DECLARE
    t subscription.limited_table;
BEGIN
    RETURN QUERY SELECT v."check" || ': ' || v.detail, v.account_id, NULL::bigint, NULL::bigint
                   FROM subscription.verify() AS v;
    CREATE TEMP TABLE counted_before AS SELECT u.account_id, u.feature, u.used FROM subscription.usage_counter AS u;
    FOR t IN SELECT * FROM subscription.limited_table AS l ORDER BY l.position LOOP
        PERFORM subscription.unenforce_limit(t.relation, t.feature);
        PERFORM subscription.enforce_limit(t.relation, t.feature, t.account_column, t.on_downgrade,
                                           t.order_column, t.value_column);
    END LOOP;
    RETURN QUERY SELECT coalesce(b.feature, u.feature), coalesce(b.account_id, u.account_id), b.used, u.used
                   FROM pg_temp.counted_before AS b
                   FULL JOIN subscription.usage_counter AS u
                     ON u.account_id = b.account_id AND u.feature = b.feature
                  WHERE coalesce(b.used, 0) <> coalesce(u.used, 0);
    DROP TABLE pg_temp.counted_before;
END
$$;
CREATE FUNCTION pg_temp.counters() RETURNS TABLE (feature text, used text)
LANGUAGE sql AS $$
    SELECT f, string_agg(format('%s:%s', u.account_id, u.used), ' ' ORDER BY u.account_id)
                FILTER (WHERE u.account_id IS NOT NULL)
      FROM unnest('{gadgets,gadget_units,gadget_tags,gadget_sizes,gadget_rows,sub_accounts}'::text[])
           WITH ORDINALITY AS x(f, n)
      LEFT JOIN subscription.usage_counter AS u ON u.feature = x.f AND u.used <> 0
     GROUP BY f, n ORDER BY n
$$;

-- one row per statement: the one-row path
INSERT INTO public.gadget VALUES (1, 1, 5, 'a');
INSERT INTO public.gadget VALUES (2, 1, NULL, NULL);
INSERT INTO public.gadget VALUES (3, NULL, 7, 'b');
INSERT INTO public.gadget VALUES (4, 2, 0, 'c');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (10, 1, 'Sub 10', 1);
INSERT INTO account (id, tenant_id, name) VALUES (11, 11, 'No parent');
SELECT * FROM pg_temp.counters();
SELECT * FROM pg_temp.paths_disagree();
-- several rows per statement: the delta over the transition tables
INSERT INTO public.gadget VALUES (5, 1, 3, NULL), (6, 2, NULL, 'd'), (7, NULL, 9, 'e'), (8, 2, 4, 'f');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (12, 1, 'Sub 12', 1), (13, 2, 'Sub 13', 2), (14, 14, 'No parent', NULL);
SELECT * FROM pg_temp.counters();
SELECT * FROM pg_temp.paths_disagree();
-- updates (the statement path, one row or several): rows that move to
-- another account, that gain or lose their account or their value
UPDATE public.gadget SET account_id = 2, size = 6 WHERE id = 1;
UPDATE public.gadget SET account_id = 1 WHERE id = 3;
UPDATE public.gadget SET account_id = NULL WHERE id = 4;
UPDATE public.gadget SET tag = NULL, size = size + 1 WHERE account_id = 2;
UPDATE account SET parent_id = 2 WHERE id = 10;
UPDATE account SET parent_id = 1 WHERE id IN (11, 13);
SELECT * FROM pg_temp.counters();
SELECT * FROM pg_temp.paths_disagree();
-- one-row deletes, of a row with and one without an account
DELETE FROM public.gadget WHERE id = 5;
DELETE FROM public.gadget WHERE id = 7;
DELETE FROM public.gadget WHERE id = 2;
DELETE FROM account WHERE id = 12;
DELETE FROM account WHERE id = 14;
SELECT * FROM pg_temp.counters();
SELECT * FROM pg_temp.paths_disagree();
-- several rows per delete
DELETE FROM public.gadget WHERE id IN (1, 3, 4);
DELETE FROM account WHERE id IN (10, 11, 13);
SELECT * FROM pg_temp.counters();
SELECT * FROM pg_temp.paths_disagree();
-- TRUNCATE, after rows of both paths
INSERT INTO public.gadget VALUES (20, 1, 2, 'x');
INSERT INTO public.gadget VALUES (21, 2, 2, 'y'), (22, 1, NULL, 'z');
TRUNCATE public.gadget;
SELECT * FROM pg_temp.counters();
SELECT * FROM pg_temp.paths_disagree();
-- both paths refuse alike: a negative value counted by its sum, a value
-- above its cap
SELECT pg_temp.error_of($$INSERT INTO public.gadget VALUES (30, 1, -1, NULL)$$) AS one_row_negative;
SELECT pg_temp.error_of($$INSERT INTO public.gadget VALUES (30, 1, 1, NULL), (31, 1, -1, NULL)$$) AS set_negative;
SELECT pg_temp.error_of($$INSERT INTO public.gadget VALUES (30, 1, 101, NULL)$$) AS one_row_cap;
SELECT pg_temp.error_of($$INSERT INTO public.gadget VALUES (30, 1, 1, NULL), (31, 1, 101, NULL)$$) AS set_cap;
ROLLBACK;
-- L11, "the member belongs to the subscription's account": one C check
-- (CheckMember in licenses.c) that every path asks; each path refuses a
-- member of another account with the same error, and a member of the
-- subscription's own account passes each of them.  The other account is a
-- sub-account (K7), of the same tenant: a member of another tenant is
-- refused before, by the license's key (below)
BEGIN;
INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_team', 'crowd', 'Team', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_team', '1 month', 49);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (2, 1, 'Other', 1);
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES
    (1, 1, 1, 'ann'), (2, 1, 1, 'bob'), (3, 1, 1, 'cy'), (4, 1, 1, 'dee'), (21, 1, 2, 'zed');
SELECT subscribe(1, 'ch_team', '1 month', 10, '2026-01-01') AS mine \gset
SELECT subscribe(2, 'ch_team', '1 month', 10, '2026-01-01') AS theirs \gset
INSERT INTO license (subscription_id, member_id) VALUES (:mine, 1), (:mine, 2);
CREATE TEMP TABLE license_path (path text, foreign_member text, own_member text);
INSERT INTO license_path VALUES
    ('license_consume', format('SELECT license_consume(%s, 21)', :mine),
                        format('SELECT license_consume(%s, 3)', :mine)),
    ('license_release', format('SELECT license_release(%s, 21)', :mine),
                        format('SELECT license_release(%s, 1)', :mine)),
    ('one-row INSERT',  format('INSERT INTO license (subscription_id, member_id) VALUES (%s, 21)', :mine),
                        format('INSERT INTO license (subscription_id, member_id) VALUES (%s, 3)', :mine)),
    ('bulk INSERT',     format('INSERT INTO license (subscription_id, member_id) VALUES (%s, 3), (%s, 21)', :mine, :mine),
                        format('INSERT INTO license (subscription_id, member_id) VALUES (%s, 3), (%s, 4)', :mine, :mine)),
    ('UPDATE of the member',
                        format('UPDATE license SET member_id = 21 WHERE subscription_id = %s AND member_id = 2', :mine),
                        format('UPDATE license SET member_id = 3 WHERE subscription_id = %s AND member_id = 2', :mine)),
    ('UPDATE of the subscription',
                        format('UPDATE license SET subscription_id = %s WHERE subscription_id = %s AND member_id = 2', :theirs, :mine),
                        format('UPDATE license SET subscription_id = %s WHERE subscription_id = %s AND member_id = 2', :mine, :mine));
-- each refusal names the subscription its statement writes
SELECT path, pg_temp.error_of(foreign_member) AS foreign_member
  FROM license_path ORDER BY path;
-- a member of another tenant: the license's foreign key (tenant_id,
-- member_id) refuses it, on a path that writes the row
INSERT INTO account (id, tenant_id, name) VALUES (3, 3, 'Elsewhere');
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (31, 3, 3, 'yan');
SELECT pg_temp.error_of(format('INSERT INTO license (subscription_id, member_id) VALUES (%s, 31)', :mine)) AS other_tenant;
-- the same paths with a member of the account: the check is the member's
-- account, not a refusal of everything (each undone after)
CREATE FUNCTION pg_temp.passes(statement text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE statement;
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN CASE WHEN SQLERRM = 'ok' THEN 'ok' ELSE SQLSTATE || ': ' || SQLERRM END;
END
$$;
SELECT path, pg_temp.passes(own_member) AS own_member FROM license_path ORDER BY path;
ROLLBACK;

-- R8, the history row: one writer (RecordHistory in src/history.c) for the
-- row trigger record_history() and erase_account(), through
-- write_history(), and for the license guard's statement, one-row and
-- TRUNCATE paths; the rows of every path have the same columns filled, and
-- the actor and the database roles recorded the same way
BEGIN;
INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_team', 'crowd', 'Team', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_team', '1 month', 49);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets'), (2, 2, 'Leaving');
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (1, 1, 1, 'ann'), (2, 1, 1, 'bob'), (3, 1, 1, 'cy');
SELECT subscribe(1, 'ch_team', '1 month', 10, '2026-01-01') AS sub \gset
CREATE ROLE one_place_office;
SELECT grant_backoffice('one_place_office');
GRANT INSERT, TRUNCATE ON license TO one_place_office;
CREATE TEMP TABLE history_path (path text, statement text, actor text, n serial);
GRANT ALL ON history_path TO one_place_office;
INSERT INTO history_path (path, statement, actor) VALUES
    ('record_history', 'UPDATE subscription.account SET name = ''Tickets Ltd'' WHERE id = 1', 'clerk-7'),
    ('one-row guard', format('INSERT INTO subscription.license VALUES (%s, 1)', :sub), 'clerk-7'),
    ('statement guard', format('INSERT INTO subscription.license VALUES (%s, 2), (%s, 3)', :sub, :sub), 'clerk-7'),
    ('TRUNCATE guard', 'TRUNCATE subscription.license', 'clerk-7'),
    ('record_history', 'SELECT subscription.close_account(2, ''2026-01-10'')', ''),
    ('erase_account', 'SELECT subscription.erase_account(2)', '');
-- run each as a back-office role: the actor named (or not), current_user
-- and session_user differ, so each column shows which one it recorded
CREATE FUNCTION pg_temp.history_shape(p history_path)
RETURNS TABLE (path text, operation text, filled text, actor boolean, db_user boolean, db_session_user boolean)
LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint := (SELECT coalesce(max(h.id), 0) FROM subscription.history AS h);
BEGIN
    PERFORM set_config('subscription.actor', p.actor, true);
    EXECUTE p.statement;
    RETURN QUERY
    SELECT p.path, h.operation,
           concat_ws(',', CASE WHEN h.at IS NOT NULL THEN 'at' END,
                          CASE WHEN h.account_id IS NOT NULL THEN 'account_id' END,
                          CASE WHEN h.subscription_id IS NOT NULL THEN 'subscription_id' END,
                          jsonb_typeof(h.details)),
           h.actor = subscription.current_actor(), h.db_user = current_user::text,
           h.db_session_user = session_user::text
      FROM subscription.history AS h WHERE h.id > last_id ORDER BY h.id;
END
$$;
SET LOCAL ROLE one_place_office;
SELECT s.* FROM history_path AS p, pg_temp.history_shape(p) AS s ORDER BY p.n;
-- the writer writes for the extension's own functions alone: no role is
-- granted it, and a role given it anyway is refused
SELECT pg_temp.error_of($$SELECT subscription.write_history('forged', 1, NULL, '{}')$$) AS office_writes;
RESET ROLE;
GRANT EXECUTE ON FUNCTION write_history(text, bigint, bigint, jsonb, bigint) TO one_place_office;
SET LOCAL ROLE one_place_office;
SELECT pg_temp.error_of($$SELECT subscription.write_history('forged', 1, NULL, '{}')$$) AS office_granted;
RESET ROLE;
SELECT pg_temp.error_of($$SELECT subscription.write_history(NULL, 1, NULL, '{}')$$) AS no_operation;
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

-- enforce_limit: plan limits on the application's own tables, at write time
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler'), ('central', 'LogMeIn Central');
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter', 'crowd', 'Starter', 1), ('ch_standard', 'crowd', 'Standard', 2),
    ('central_plus', 'central', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49), ('ch_standard', '1 month', 99);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES ('central_plus', '1 year', 25, 1038), ('central_plus', '1 year', 100, 3198);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('ch_starter', 'domains', 1, false),        ('ch_standard', 'domains', 3, false),
    ('ch_starter', 'rooms', 2, false),          ('ch_standard', 'rooms', 10, false),
    ('ch_starter', 'room_capacity', 500, false),('ch_standard', 'room_capacity', 5000, false),
    ('ch_starter', 'entry_rate', 10, false),    ('ch_standard', 'entry_rate', 100, false),
    ('ch_starter', 'custom_templates', 0, false), ('ch_standard', 'custom_templates', NULL, false),
    ('central_plus', 'hosts', 1, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('ch_rooms5', 'crowd', '5 more rooms', 'rooms', 5);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets Ltd'), (2, 2, 'Gigs Inc'), (3, 3, 'Acme IT');
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-01-01') AS starter \gset
SELECT subscribe(2, 'ch_standard', '1 month', 1, '2026-01-01') AS standard \gset
SELECT subscribe(3, 'central_plus', '1 year', 25, '2026-01-01') AS central \gset

-- the application's own tables; on Citus distributed by account_id and
-- colocated with the tenants (test/sql/include/app_tables.psql), their keys
-- and foreign keys starting with it, as Citus requires (the rooms without a
-- key: a row without an account is refused there, below)
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
CREATE TABLE public.domain (id bigserial, account_id bigint NOT NULL, name text NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.room (
    id bigserial,
    account_id bigint,
    domain_id bigint,
    activated_at timestamptz,
    capacity integer NOT NULL DEFAULT 100,
    template text,
    FOREIGN KEY (account_id, domain_id) REFERENCES public.domain ON DELETE CASCADE);
CREATE TABLE public.rate (id bigserial, account_id bigint NOT NULL, entry_rate integer NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.host (id bigserial, account_id bigint NOT NULL, name text, PRIMARY KEY (account_id, id));
\else
CREATE TABLE public.domain (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text NOT NULL);
CREATE TABLE public.room (
    id bigserial PRIMARY KEY,
    account_id bigint,
    domain_id bigint REFERENCES public.domain ON DELETE CASCADE,
    activated_at timestamptz,
    capacity integer NOT NULL DEFAULT 100,
    template text);
CREATE TABLE public.rate (id bigserial PRIMARY KEY, account_id bigint NOT NULL, entry_rate integer NOT NULL);
CREATE TABLE public.host (id bigserial PRIMARY KEY, account_id bigint NOT NULL, name text);
\endif
\set app_tables 'public.domain public.room public.rate public.host'
\i test/sql/include/app_tables.psql
CREATE TABLE public.no_key (account_id bigint, name text);
INSERT INTO public.domain (account_id, name) VALUES (2, 'gigs.example'), (2, 'tickets.gigs.example');

-- registration: existing rows are counted
SELECT enforce_limit('public.domain', 'domains', 'account_id', 'keep_most_referenced');
SELECT usage(2, 'domains') AS gigs_domains, usage(1, 'domains') AS tickets_domains;
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');
SELECT enforce_limit('public.rate', 'entry_rate', 'account_id', 'cap', NULL, 'entry_rate');
SELECT enforce_limit('public.host', 'hosts');
SELECT relation, feature, account_column, on_downgrade, order_column, value_column FROM limited_table ORDER BY position;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.room'::regclass AND NOT tgisinternal ORDER BY 1;

-- bad registrations
SELECT pg_temp.error_of($$SELECT enforce_limit('public.room', 'rooms')$$);                                   -- 42710 twice
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'teleporters')$$);                           -- 42704
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity', 'owner')$$);                -- 42703
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity', 'name')$$);                 -- 42804
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity', 'account_id', 'scale')$$);  -- needs a value column
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity', 'account_id', 'scale', NULL, 'name')$$); -- 42804
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity', 'account_id', 'shrink')$$); -- 22023
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity', 'account_id', 'keep_most_referenced')$$); -- no key
SELECT pg_temp.error_of($$SELECT enforce_limit('public.rate', 'room_capacity', 'account_id', 'keep_most_referenced')$$); -- no FK into it
SELECT pg_temp.error_of($$SELECT enforce_limit('subscription.ledger', 'room_capacity')$$);                   -- own table
SELECT pg_temp.error_of($$SELECT enforce_limit('public.domain_id_seq', 'room_capacity')$$);                  -- not a table
SELECT pg_temp.error_of($$SELECT enforce_limit(NULL, 'room_capacity')$$);                                    -- 22004
\if :on_citus
-- on Citus a table left local is refused: its
-- rows could not be counted on their tenant's shards
SELECT pg_temp.error_of($$SELECT enforce_limit('public.no_key', 'room_capacity')$$) AS local_table;         -- 55000
\endif

-- drop_newest / keep_most_referenced / block limit the number of rows
INSERT INTO public.domain (account_id, name) VALUES (2, 'shop.gigs.example');
SELECT pg_temp.error_of($$INSERT INTO public.domain (account_id, name) VALUES (2, 'four.example')$$);
SELECT pg_temp.error_of($$INSERT INTO public.domain (account_id, name) VALUES (1, 'a.example'), (1, 'b.example')$$);
INSERT INTO public.domain (account_id, name) VALUES (1, 'tickets.example');
SELECT usage(1, 'domains') AS tickets, usage(2, 'domains') AS gigs;
-- a bulk statement is all or nothing, per account
INSERT INTO public.room (account_id, domain_id, activated_at)
SELECT 1, (SELECT id FROM public.domain WHERE account_id = 1), ('2026-01-0' || g)::timestamptz FROM generate_series(1, 2) AS g;
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id) VALUES (1)$$);
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id) SELECT 2 FROM generate_series(1, 11)$$);
SELECT usage(2, 'rooms') AS gigs_rooms_after_refused_bulk;
INSERT INTO public.room (account_id) SELECT 2 FROM generate_series(1, 10);
-- an add-on raises the limit (K1, Z13): 5 more rooms
INSERT INTO addon_batch (tenant_id, subscription_id, addon, quantity) VALUES (1, :starter, 'ch_rooms5', 1);
INSERT INTO public.room (account_id) SELECT 1 FROM generate_series(1, 5);
SELECT usage(1, 'rooms') AS tickets_rooms, effective_limit(1, 'rooms') AS tickets_limit;
-- rows without an account are not limited; on Citus a table distributed
-- by its account has none: such a row is refused, nothing written
\if :on_citus
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id) VALUES (NULL)$$) AS without_account;
SELECT count(*) AS rooms_without_account FROM public.room WHERE account_id IS NULL;
\else
INSERT INTO public.room (account_id) VALUES (NULL);
\endif

-- UPDATE: moving a row to another account moves the usage, or is refused;
-- on Citus a row cannot change tenant (the column the table is distributed
-- by): the move is refused whatever the limits, and the counters stay
SELECT pg_temp.error_of($$UPDATE public.room SET account_id = 2 WHERE id = (SELECT min(id) FROM public.room WHERE account_id = 1)$$);
DELETE FROM public.room WHERE id IN (SELECT id FROM public.room WHERE account_id = 2 ORDER BY id LIMIT 2);
\if :on_citus
SELECT pg_temp.error_of($$UPDATE public.room SET account_id = 2 WHERE id = (SELECT min(id) FROM public.room WHERE account_id = 1)$$) AS moved;
\else
UPDATE public.room SET account_id = 2 WHERE id = (SELECT min(id) FROM public.room WHERE account_id = 1);
\endif
SELECT usage(1, 'rooms') AS tickets_rooms, usage(2, 'rooms') AS gigs_rooms;
UPDATE public.room SET capacity = 200;   -- touches no counted column: nothing moves
SELECT usage(1, 'rooms') AS tickets_rooms, usage(2, 'rooms') AS gigs_rooms;

-- a rolled-back write leaves the counter as it was
SAVEPOINT before;
DELETE FROM public.room WHERE account_id = 2;
SELECT usage(2, 'rooms') AS inside;
ROLLBACK TO SAVEPOINT before;
SELECT usage(2, 'rooms') AS after_rollback;

-- a cascade delete is a delete: the domain takes its rooms
DELETE FROM public.domain WHERE account_id = 1;
SELECT usage(1, 'domains') AS tickets_domains, usage(1, 'rooms') AS tickets_rooms;

-- TRUNCATE resets the counters
SAVEPOINT before_truncate;
TRUNCATE public.room;
SELECT usage(1, 'rooms') AS tickets, usage(2, 'rooms') AS gigs;
ROLLBACK TO SAVEPOINT before_truncate;

-- usage equals the real rows after all of that
WITH r AS (SELECT r.account_id, count(*) AS rows FROM public.room AS r GROUP BY 1)
SELECT u.account_id, u.used, coalesce(r.rows, 0) AS rows
  FROM usage_counter AS u LEFT JOIN r USING (account_id) WHERE u.feature = 'rooms' ORDER BY 1;

-- cap: each row's value within the limit (C8)
INSERT INTO public.rate (account_id, entry_rate) VALUES (1, 10), (2, 100);
SELECT pg_temp.error_of($$INSERT INTO public.rate (account_id, entry_rate) VALUES (1, 11)$$);
SELECT pg_temp.error_of($$UPDATE public.rate SET entry_rate = 101 WHERE account_id = 2$$);
UPDATE public.rate SET entry_rate = 5 WHERE account_id = 1;

-- one table carries several features: room capacity (scale, C7) and templates (detach, C11)
SELECT enforce_limit('public.room', 'room_capacity', 'account_id', 'scale', NULL, 'capacity');
SELECT enforce_limit('public.room', 'custom_templates', 'account_id', 'detach', NULL, 'template');
SELECT usage(1, 'room_capacity') AS tickets_capacity, usage(2, 'room_capacity') AS gigs_capacity;
-- scale limits the sum of the values: Starter allows 500 in all.  Rows over
-- the limit when registered are counted, not refused (a downgrade trims
-- them); a write that lowers the sum is always accepted: 1000 -> 505
SELECT pg_temp.error_of($$UPDATE public.room SET capacity = 101 WHERE account_id = 1$$);
UPDATE public.room SET capacity = 100 WHERE account_id = 1;
SELECT pg_temp.error_of($$UPDATE public.room SET capacity = 150 WHERE id = (SELECT min(id) FROM public.room WHERE account_id = 1)$$);
UPDATE public.room SET capacity = 50 WHERE id = (SELECT min(id) FROM public.room WHERE account_id = 1);
SELECT usage(1, 'room_capacity') AS tickets_capacity;
-- detach: no template where the plan has none (Starter: 0), any where it has (Standard: unlimited)
SELECT pg_temp.error_of($$UPDATE public.room SET template = 'dark' WHERE account_id = 1$$);
UPDATE public.room SET template = 'dark' WHERE account_id = 2;
UPDATE public.room SET template = NULL WHERE account_id = 1;
SELECT usage(2, 'custom_templates') AS gigs_templates;
SELECT feature, position FROM limited_table WHERE relation = 'public.room'::regclass ORDER BY position;

-- L12: a LogMeIn tier is a hard host limit: 25 hosts, not 26
INSERT INTO public.host (account_id, name) SELECT 3, 'pc' || g FROM generate_series(1, 25) AS g;
SELECT pg_temp.error_of($$INSERT INTO public.host (account_id, name) VALUES (3, 'pc26')$$);
SELECT set_quantity(:central, 100, '2026-06-01') AS next_tier;
INSERT INTO public.host (account_id, name) VALUES (3, 'pc26');
SELECT usage(3, 'hosts') AS hosts, effective_limit(3, 'hosts') AS host_limit;

-- the limit stored in each counter follows the catalog, the subscriptions
-- and the add-ons
-- (on Citus a held limit changes by change_limit(), the same rows as the
-- UPDATE on a single server: catalog_changes; a plain UPDATE is refused there)
\if :on_citus
SELECT change_limit('central_plus', 'hosts', 2) AS from_version \gset
\else
UPDATE plan_limit SET value = 2 WHERE plan = 'central_plus' AND feature = 'hosts';
\endif
-- grandfathering: the change makes a new version; the subscriptions move to it
UPDATE subscription AS s SET plan_version = p.version FROM plan AS p WHERE p.code = s.plan AND p.code = 'central_plus';
SELECT effective_limit(3, 'hosts') AS two_per_license,
       (SELECT limit_value FROM usage_counter WHERE account_id = 3 AND feature = 'hosts') AS stored;
UPDATE subscription SET status = 'expired' WHERE id = :central;
SELECT pg_temp.error_of($$INSERT INTO public.host (account_id, name) VALUES (3, 'pc27')$$);
UPDATE subscription SET status = 'active' WHERE id = :central;
UPDATE addon SET units = 10 WHERE code = 'ch_rooms5';
SELECT effective_limit(1, 'rooms') AS tickets_rooms_limit,
       (SELECT limit_value FROM usage_counter WHERE account_id = 1 AND feature = 'rooms') AS stored;
WITH u AS MATERIALIZED (SELECT account_id, feature, limit_value FROM usage_counter WHERE feature <> 'entry_rate')
SELECT count(*) AS stale_limits FROM u WHERE limit_value IS DISTINCT FROM limit_of(account_id, feature);

-- unenforce_limit removes the triggers and the counters
SELECT unenforce_limit('public.rate', 'entry_rate');
INSERT INTO public.rate (account_id, entry_rate) VALUES (1, 1000);
SELECT count(*) AS rate_triggers FROM pg_trigger WHERE tgrelid = 'public.rate'::regclass AND NOT tgisinternal;
SELECT pg_temp.error_of($$SELECT unenforce_limit('public.rate', 'entry_rate')$$);

-- the guard refuses to run where enforce_limit did not put it
CREATE TABLE public.misuse (account_id bigint);
CREATE TRIGGER by_hand AFTER INSERT ON public.misuse FOR EACH ROW EXECUTE FUNCTION subscription.limit_guard('rooms');
SELECT pg_temp.error_of($$INSERT INTO public.misuse VALUES (1)$$);
DROP TRIGGER by_hand ON public.misuse;
CREATE TRIGGER by_hand AFTER INSERT ON public.misuse REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_guard('rooms');
SELECT pg_temp.error_of($$INSERT INTO public.misuse VALUES (1)$$);
CREATE TRIGGER by_hand_too AFTER INSERT ON public.misuse FOR EACH ROW EXECUTE FUNCTION subscription.license_guard();
SELECT pg_temp.error_of($$INSERT INTO public.misuse VALUES (1)$$);
DROP TRIGGER by_hand_too ON public.misuse;
DROP TRIGGER by_hand ON public.misuse;
CREATE TRIGGER by_hand_too AFTER INSERT ON public.misuse REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.license_guard();
SELECT pg_temp.error_of($$INSERT INTO public.misuse VALUES (1)$$);

-- an application role writes its enforced table and drops its own tables
-- with no right on the extension's tables: the guard and the event trigger
-- do their work as the extension's owner
CREATE ROLE regress_subscription_app;
CREATE SCHEMA regress_app AUTHORIZATION regress_subscription_app;
GRANT INSERT, SELECT, DELETE ON public.room TO regress_subscription_app;
GRANT USAGE ON SEQUENCE public.room_id_seq TO regress_subscription_app;
SET ROLE regress_subscription_app;
\if :on_citus
-- on Citus a transaction cannot write a shard as two users: the shards this
-- transaction wrote as the superuser are refused to the role, by Citus,
-- before any guard runs (25001, nothing written)
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id) SELECT 2 FROM generate_series(1, 3)$$) AS other_user;
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id) VALUES (2)$$) AS other_user;
\else
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id) SELECT 2 FROM generate_series(1, 3)$$);
INSERT INTO public.room (account_id) VALUES (2);
\endif
CREATE TABLE regress_app.scratch (id int);
DROP TABLE regress_app.scratch;
RESET ROLE;
SELECT usage(2, 'rooms') AS gigs_rooms;
-- with INSERT on member alone, its history row and its default license (R10)
-- are written all the same
GRANT USAGE ON SCHEMA subscription TO regress_subscription_app;
GRANT INSERT ON subscription.member TO regress_subscription_app;
SELECT subscribe(2, 'ch_standard', '1 month', 3, '2026-01-01') IS NOT NULL AS has_subscriptions;
SELECT max(id) AS newest FROM subscription WHERE account_id = 2 \gset
-- two statements: the one-default rule (an EXCLUDE constraint, checked row by
-- row) would otherwise depend on the order the rows are visited in (Citus)
UPDATE subscription SET is_default = false WHERE account_id = 2 AND id <> :newest;
UPDATE subscription SET is_default = true WHERE account_id = 2 AND id = :newest;
SET ROLE regress_subscription_app;
\if :on_citus
SELECT pg_temp.error_of($$INSERT INTO subscription.member (id, tenant_id, account_id, external_id) VALUES (900, 2, 2, 'app-created')$$) AS other_user;
\else
INSERT INTO subscription.member (id, tenant_id, account_id, external_id) VALUES (900, 2, 2, 'app-created');
\endif
RESET ROLE;
SELECT operation, account_id FROM history WHERE details ->> 'external_id' = 'app-created';
SELECT count(*) AS default_license FROM license WHERE member_id = 900;

-- C5 on a key of several columns, as a distributed table's on Citus (its
-- tenant first, and so the foreign keys into it): the references are
-- counted through every column of the foreign key
INSERT INTO plan (code, product, name, rank) VALUES ('hall_small', 'crowd', 'Small hall', 3), ('hall_big', 'crowd', 'Big hall', 4);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('hall_small', '1 month', 5), ('hall_big', '1 month', 15);
INSERT INTO plan_limit (plan, feature, value) VALUES ('hall_small', 'halls', 1), ('hall_big', 'halls', 3);
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Venues'), (5, 5, 'Stages');
SELECT subscribe(4, 'hall_big', '1 month', 1, '2026-01-01') AS venues \gset
SELECT subscribe(5, 'hall_big', '1 month', 1, '2026-01-01') IS NOT NULL AS stages;
CREATE TABLE public.hall (account_id bigint NOT NULL, id int, PRIMARY KEY (account_id, id));
CREATE TABLE public.hall_booking (account_id bigint NOT NULL, hall_id int,
                                  FOREIGN KEY (account_id, hall_id) REFERENCES public.hall ON DELETE CASCADE);
\set app_tables 'public.hall public.hall_booking'
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.hall', 'halls', 'account_id', 'keep_most_referenced');
INSERT INTO public.hall VALUES (4, 1), (4, 2), (4, 3), (5, 1);
-- hall 2 of Venues is the most booked; hall 1 of another account more
INSERT INTO public.hall_booking VALUES (4, 2), (4, 2), (4, 3), (5, 1), (5, 1), (5, 1);
UPDATE subscription SET pending_plan = 'hall_small' WHERE id = :venues;
SELECT feature, action, row_id FROM apply_downgrade(:venues, true);

-- a dropped table takes its registration and counters along
DROP TABLE public.host;
SELECT count(*) AS host_registrations FROM limited_table WHERE feature = 'hosts';
SELECT count(*) AS host_counters FROM usage_counter WHERE feature = 'hosts';

ROLLBACK;

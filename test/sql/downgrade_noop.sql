-- apply_downgrade with nothing to trim writes nothing (issue 15): no counter,
-- no history, no trimmed row, in a dry run and in a real run
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES ('ch_starter', 'crowd', 'Starter', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('ch_starter', 'rooms', 3), ('ch_starter', 'room_capacity', 1000), ('ch_starter', 'entry_rate', 20),
    ('ch_starter', 'custom_templates', 0), ('ch_starter', 'api_keys', 2);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets Ltd'), (2, 2, 'Gigs Inc');
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-01-01') AS tickets \gset
SELECT subscribe(2, 'ch_starter', '1 month', 1, '2026-01-01') AS gigs \gset

CREATE TABLE public.room (id int, account_id bigint NOT NULL, activated_at timestamptz,
                          capacity integer NOT NULL, entry_rate integer NOT NULL, template_id int,
                          PRIMARY KEY (account_id, id));
CREATE TABLE public.api_key (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'public.room public.api_key'
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');
SELECT enforce_limit('public.room', 'room_capacity', 'account_id', 'scale', NULL, 'capacity');
SELECT enforce_limit('public.room', 'entry_rate', 'account_id', 'cap', NULL, 'entry_rate');
SELECT enforce_limit('public.room', 'custom_templates', 'account_id', 'detach', NULL, 'template_id');
SELECT enforce_limit('public.api_key', 'api_keys', 'account_id', 'block');
-- Tickets within its limits; Gigs has no rows (and so no counters) at all
INSERT INTO public.room VALUES (1, 1, '2026-01-02', 500, 10, NULL), (2, 1, '2026-01-03', 400, 20, NULL);
INSERT INTO public.api_key VALUES (1, 1);

-- the md5 of every table of the extension, and of the application's rooms
\set sums_schema pg_temp
\i test/sql/include/table_sums.psql
CREATE FUNCTION pg_temp.all_sums() RETURNS text LANGUAGE sql
    AS $$ SELECT pg_temp.sums() || 'room=' || (SELECT md5(string_agg(x::text, ',' ORDER BY x.id)) FROM public.room AS x) $$;
SELECT account_id, feature, used, limit_value FROM usage_counter ORDER BY 1, 2;
SELECT pg_temp.all_sums() AS before \gset

SELECT * FROM apply_downgrade(:tickets, dry_run => true);
SELECT * FROM apply_downgrade(:gigs, dry_run => true);
SELECT pg_temp.all_sums() = :'before' AS dry_runs_wrote_nothing;
SELECT * FROM apply_downgrade(:tickets);
SELECT * FROM apply_downgrade(:gigs);
SELECT pg_temp.all_sums() = :'before' AS real_runs_wrote_nothing;
SELECT account_id, feature, used, limit_value FROM usage_counter ORDER BY 1, 2;

-- Gigs' first rows still meet their limits, with counters created as they come
INSERT INTO public.room VALUES (11, 2, '2026-01-02', 900, 20, NULL);
SELECT pg_temp.error_of($$INSERT INTO public.room VALUES (12, 2, '2026-01-03', 200, 10, NULL)$$);
SELECT pg_temp.error_of($$INSERT INTO public.room VALUES (12, 2, '2026-01-03', 100, 30, NULL)$$);
SELECT account_id, feature, used, limit_value FROM usage_counter WHERE account_id = 2 ORDER BY 1, 2;

-- a counter that drifted (rows written with the guards off) is made exact: that is a write
SET LOCAL session_replication_role = replica;
INSERT INTO public.api_key VALUES (21, 2);
SET LOCAL session_replication_role = DEFAULT;
SELECT * FROM apply_downgrade(:gigs);
SELECT account_id, feature, used, limit_value FROM usage_counter WHERE account_id = 2 ORDER BY 1, 2;

-- with something to trim, the downgrade trims as before
INSERT INTO public.room VALUES (13, 2, '2026-01-04', 0, 5, NULL), (14, 2, '2026-01-05', 0, 5, NULL);
-- (on Citus a held limit changes by change_limit(), the same rows as this
-- UPDATE on a single server: catalog_changes; a plain UPDATE is refused there)
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
SELECT change_limit('ch_starter', 'rooms', 2) AS from_version \gset
\else
UPDATE plan_limit SET value = 2 WHERE plan = 'ch_starter' AND feature = 'rooms';
\endif
-- grandfathering: the change makes a new version; the subscriptions move to it
UPDATE subscription AS s SET plan_version = p.version FROM plan AS p WHERE p.code = s.plan AND p.code = 'ch_starter';
SELECT feature, action, row_id FROM apply_downgrade(:gigs);
SELECT count(*) AS archived FROM trimmed;
SELECT account_id, feature, used, limit_value FROM usage_counter WHERE account_id = 2 ORDER BY 1, 2;

ROLLBACK;

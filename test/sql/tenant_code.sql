-- The application's code as the extension runs it (1.1): an account's own
-- triggers cannot hold back other accounts' renewals, references are counted
-- as one owner, feature names of any length, the database roles in history,
-- and counters that drifted while the guards were off.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
CREATE ROLE regress_tenant;
CREATE ROLE regress_neighbour;

INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter', 'crowd', 'Starter', 1), ('ch_standard', 'crowd', 'Standard', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49), ('ch_standard', '1 month', 99);
INSERT INTO plan_limit (plan, feature, value) VALUES ('ch_starter', 'rooms', 1), ('ch_standard', 'rooms', 10),
    ('ch_starter', repeat('x', 70) || '_a', 1), ('ch_standard', repeat('x', 70) || '_a', 2),
    ('ch_starter', repeat('x', 70) || '_b', 1), ('ch_standard', repeat('x', 70) || '_b', 2);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Blocks its trim'), (2, 2, 'Renews');
SELECT subscribe(1, 'ch_standard', '1 month', 1, '2026-01-01') AS first \gset
SELECT subscribe(2, 'ch_standard', '1 month', 1, '2026-01-01') AS second \gset

-- on Citus the application's tables are distributed by their account and
-- colocated with the tenants (test/sql/include/app_tables.psql), their
-- keys starting with it, as Citus requires
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
CREATE TABLE public.room (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.seen (who name, account bigint);
SELECT create_distributed_table('public.seen', 'account', colocate_with := 'subscription.account') IS NULL AS seen_local \gset
\set app_tables 'public.room'
\else
CREATE TABLE public.room (id int PRIMARY KEY, account_id bigint NOT NULL);
CREATE TABLE public.seen (who name, account bigint);
\set app_tables 'public.room'
\endif
\i test/sql/include/app_tables.psql
ALTER TABLE public.room OWNER TO regress_tenant;
SELECT enforce_limit('public.room', 'rooms');
INSERT INTO public.room VALUES (11, 1), (12, 1), (21, 2), (22, 2);

-- the tenant's trigger refuses to lose account 1's rooms, and notes who it runs as
ALTER TABLE public.seen OWNER TO regress_tenant;
CREATE FUNCTION public.keep_rooms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.seen VALUES (current_user, OLD.account_id);
    IF OLD.account_id = 1 THEN
        RAISE EXCEPTION 'account 1 keeps its rooms';
    END IF;
    RETURN OLD;
END $$;
ALTER FUNCTION public.keep_rooms() OWNER TO regress_tenant;
CREATE TRIGGER keep_rooms BEFORE DELETE ON public.room FOR EACH ROW EXECUTE FUNCTION public.keep_rooms();

-- both downgrade at the end of January (C4); renewing them trims (C6)
SELECT effective_at FROM change_plan(:first, 'ch_starter', '2026-01-10');
SELECT effective_at FROM change_plan(:second, 'ch_starter', '2026-01-10');
SELECT renew_due('2026-02-01');
-- account 1 stays due on its old plan; account 2 renewed and was trimmed
SELECT id, plan, pending_plan, upper(period) AS ends FROM subscription.subscription ORDER BY id;
SELECT account_id, count(*) FROM public.room GROUP BY 1 ORDER BY 1;
SELECT account_id, used FROM usage_counter WHERE feature = 'rooms' ORDER BY 1;
-- the trigger ran as the table's owner, not as the superuser who renewed
SELECT DISTINCT who, account FROM public.seen ORDER BY 2;
DROP TRIGGER keep_rooms ON public.room;

-- keep_most_referenced counts references as the limited table's owner: a
-- referencing table of another owner is refused, not read with other rights
\if :on_citus
CREATE TABLE public.booking (id int, room_id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id),
                             FOREIGN KEY (account_id, room_id) REFERENCES public.room);
\set app_tables 'public.booking'
\i test/sql/include/app_tables.psql
\else
CREATE TABLE public.booking (id int PRIMARY KEY, room_id int REFERENCES public.room, account_id bigint);
\endif
ALTER TABLE public.booking OWNER TO regress_neighbour;
SELECT unenforce_limit('public.room', 'rooms');
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'keep_most_referenced');
UPDATE subscription.subscription SET pending_plan = 'ch_starter' WHERE id = :first;
SELECT pg_temp.error_of(format('SELECT * FROM apply_downgrade(%s)', :first));
ALTER TABLE public.booking OWNER TO regress_tenant;
SELECT feature, relation, action, row_id FROM apply_downgrade(:first, true);

-- feature names of any length: distinct guards, distinct counters (the
-- guards' triggers: Citus adds one of its own to a distributed table)
\if :on_citus
CREATE TABLE public.gadget (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.widget (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'public.gadget public.widget'
\i test/sql/include/app_tables.psql
\else
CREATE TABLE public.gadget (id int PRIMARY KEY, account_id bigint NOT NULL);
CREATE TABLE public.widget (id int PRIMARY KEY, account_id bigint NOT NULL);
\endif
SELECT enforce_limit('public.gadget', repeat('x', 70) || '_a');
SELECT enforce_limit('public.widget', repeat('x', 70) || '_b');
SELECT tgrelid::regclass, length(tgname) <= 63 AS fits FROM pg_trigger
 WHERE tgrelid IN ('public.gadget'::regclass, 'public.widget'::regclass)
   AND tgfoid = 'subscription.limit_guard'::regproc ORDER BY tgname;
SELECT count(DISTINCT left(tgname, -2)) AS distinct_guard_names FROM pg_trigger
 WHERE tgrelid IN ('public.gadget'::regclass, 'public.widget'::regclass)
   AND tgfoid = 'subscription.limit_guard'::regproc;
INSERT INTO public.gadget VALUES (1, 2);
INSERT INTO public.widget VALUES (1, 2);
SELECT pg_temp.error_of($$INSERT INTO public.gadget VALUES (2, 2)$$);
SELECT feature = repeat('x', 70) || '_b' AS other_feature, used FROM usage_counter
 WHERE account_id = 2 AND feature LIKE 'xxx%' ORDER BY feature;

-- history names the database roles; a row copied in replica mode does not
SELECT set_quantity(:second, 2, '2026-02-05') AS left;
SELECT actor, db_user, db_session_user FROM history WHERE operation = 'subscription_update' ORDER BY id DESC LIMIT 1;
\if :on_citus
-- on Citus the replica mode reaches the workers' connections (SET LOCAL
-- propagated), and a row names its tenant for the coordinator to route it
SET LOCAL citus.propagate_set_commands = 'local';
SET LOCAL session_replication_role = replica;
INSERT INTO history (tenant_id, operation, account_id) VALUES (2, 'copied', 2);
\else
SET LOCAL session_replication_role = replica;
INSERT INTO history (operation, account_id) VALUES ('copied', 2);
\endif
-- the guards are off in replica mode, so rooms go in uncounted
INSERT INTO public.room VALUES (23, 2), (24, 2), (25, 2);
RESET session_replication_role;
SELECT db_user, db_session_user FROM history WHERE operation = 'copied';

-- the drifted counter is recounted on demand, and before a downgrade trims
-- (the use read first: on Citus a statement on the room's shard calls no
-- function that reads the extension's tables)
SELECT usage(2, 'rooms') AS used \gset
SELECT :used AS counted, (SELECT count(*) FROM public.room WHERE account_id = 2) AS rows;
SELECT recount_usage('public.room', 'rooms', 2) AS counters_changed;
SELECT usage(2, 'rooms') AS counted;
-- more rows uncounted: the trim would take the counter below zero (S6)
SET LOCAL session_replication_role = replica;
INSERT INTO public.room VALUES (26, 2), (27, 2), (28, 2);
RESET session_replication_role;
SELECT usage(2, 'rooms') AS used \gset
SELECT :used AS stale, (SELECT count(*) FROM public.room WHERE account_id = 2) AS rows;
SELECT feature, action, row_id FROM apply_downgrade(:second);
SELECT usage(2, 'rooms') AS used \gset
SELECT :used AS counted, (SELECT count(*) FROM public.room WHERE account_id = 2) AS rows;
SELECT pg_temp.error_of($$SELECT recount_usage('public.seen', 'rooms')$$);

-- the nodes' parts of the recount and of the trim on Citus (shard_usage,
-- shard_trim): given a shard of account on their node, and the trim run
-- only as the extension's owner (a back-office role executes every
-- function), nothing trimmed
SELECT pg_temp.error_of($$SELECT * FROM shard_usage('subscription.account', 'public.room', 'rooms', NULL)$$) AS not_a_shard;
SELECT pg_temp.error_of($$SELECT * FROM shard_trim('subscription.account', 'public.room', 'rooms', 2, 0)$$) AS not_a_shard;
SELECT grant_backoffice('regress_neighbour') IS NOT NULL AS granted;
SET LOCAL ROLE regress_neighbour;
SELECT pg_temp.error_of($$SELECT * FROM shard_trim('subscription.account', 'public.room', 'rooms', 2, 0)$$) AS not_the_owner;
RESET ROLE;
SELECT count(*) AS rooms_left FROM public.room WHERE account_id = 2;
ROLLBACK;

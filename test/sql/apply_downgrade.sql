-- apply_downgrade: the CrowdHandler downgrade of C4-C12, with exact final states
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('crowd', 'CrowdHandler');
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter', 'crowd', 'Starter', 1), ('ch_standard', 'crowd', 'Standard', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('ch_starter', '1 month', 49), ('ch_standard', '1 month', 99);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('ch_starter', 'domains', 1),          ('ch_standard', 'domains', 3),
    ('ch_starter', 'rooms', 3),            ('ch_standard', 'rooms', 10),
    ('ch_starter', 'room_capacity', 1000), ('ch_standard', 'room_capacity', 5000),
    ('ch_starter', 'entry_rate', 20),      ('ch_standard', 'entry_rate', 100),
    ('ch_starter', 'custom_templates', 0), ('ch_standard', 'custom_templates', NULL),
    ('ch_starter', 'priority_groups', 0),  ('ch_standard', 'priority_groups', NULL),
    ('ch_starter', 'firewall_ips', 0),     ('ch_standard', 'firewall_ips', 50),
    ('ch_starter', 'api_keys', 2),         ('ch_standard', 'api_keys', 5);
INSERT INTO addon (code, product, name, feature, units) VALUES ('ch_rooms1', 'crowd', 'One more room', 'rooms', 1);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets Ltd'), (2, 2, 'Gigs Inc');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (10, 1, 1, 'owner@tickets', 'owner'), (11, 1, 1, 'admin@tickets', 'admin');
SELECT subscribe(1, 'ch_standard', '1 month', 1, '2026-01-01') AS tickets \gset
SELECT subscribe(2, 'ch_standard', '1 month', 1, '2026-01-01') AS gigs \gset

-- the application's own tables; on Citus distributed by account_id,
-- colocated with the tenants, their keys and foreign keys starting with it
-- (as Citus requires): the trimmed rows' ids then name the account too
-- (test/expected_citus/apply_downgrade.out)
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
\if :on_citus
CREATE TABLE public.domain (id int, account_id bigint NOT NULL, name text NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE public.template (id int, account_id bigint NOT NULL, name text NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'public.domain public.template'
\i test/sql/include/app_tables.psql
CREATE TABLE public.room (
    id int,
    account_id bigint NOT NULL,
    domain_id int NOT NULL,
    activated_at timestamptz,
    capacity integer NOT NULL,
    entry_rate integer NOT NULL,
    template_id int,
    PRIMARY KEY (account_id, id),
    FOREIGN KEY (account_id, domain_id) REFERENCES public.domain ON DELETE CASCADE,
    FOREIGN KEY (account_id, template_id) REFERENCES public.template);
CREATE INDEX ON public.room (account_id, domain_id);
CREATE TABLE public.priority_group (id int, account_id bigint NOT NULL, name text, PRIMARY KEY (account_id, id));
CREATE TABLE public.firewall_ip (account_id bigint NOT NULL, ip inet NOT NULL, PRIMARY KEY (account_id, ip));
CREATE TABLE public.api_key (id int, account_id bigint NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables 'public.room public.priority_group public.firewall_ip public.api_key'
\i test/sql/include/app_tables.psql
\else
CREATE TABLE public.domain (id int PRIMARY KEY, account_id bigint NOT NULL, name text NOT NULL);
CREATE TABLE public.template (id int PRIMARY KEY, account_id bigint NOT NULL, name text NOT NULL);
CREATE TABLE public.room (
    id int PRIMARY KEY,
    account_id bigint NOT NULL,
    domain_id int NOT NULL REFERENCES public.domain ON DELETE CASCADE,
    activated_at timestamptz,
    capacity integer NOT NULL,
    entry_rate integer NOT NULL,
    template_id int REFERENCES public.template);
CREATE INDEX ON public.room (domain_id);
CREATE TABLE public.priority_group (id int PRIMARY KEY, account_id bigint NOT NULL, name text);
CREATE TABLE public.firewall_ip (account_id bigint NOT NULL, ip inet NOT NULL, PRIMARY KEY (account_id, ip));
CREATE TABLE public.api_key (id int PRIMARY KEY, account_id bigint NOT NULL);
\endif

-- features in registration order: apply_downgrade trims them in this order
SELECT enforce_limit('public.domain', 'domains', 'account_id', 'keep_most_referenced');          -- C5
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');       -- C6
SELECT enforce_limit('public.room', 'room_capacity', 'account_id', 'scale', NULL, 'capacity');   -- C7
SELECT enforce_limit('public.room', 'entry_rate', 'account_id', 'cap', NULL, 'entry_rate');      -- C8
SELECT enforce_limit('public.room', 'custom_templates', 'account_id', 'detach', NULL, 'template_id'); -- C11
SELECT enforce_limit('public.priority_group', 'priority_groups');                                -- C9
SELECT enforce_limit('public.firewall_ip', 'firewall_ips');                                      -- C10
SELECT enforce_limit('public.api_key', 'api_keys', 'account_id', 'block');

-- Tickets on Standard: 3 domains, 9 rooms, 2 groups, 3 firewall IPs, 3 API keys
INSERT INTO public.domain VALUES (1, 1, 'tickets.example'), (2, 1, 'shop.tickets.example'), (3, 1, 'news.tickets.example'),
                                 (9, 2, 'gigs.example');
INSERT INTO public.template VALUES (1, 1, 'Tickets branding'), (9, 2, 'Gigs branding');
INSERT INTO public.room (id, account_id, domain_id, activated_at, capacity, entry_rate, template_id) VALUES
    -- domain 1: 2 rooms; domain 2: 5 rooms (the most); domain 3: 2 rooms
    (101, 1, 1, '2026-01-01', 900, 90, NULL),
    (102, 1, 1, '2026-01-02', 900, 90, NULL),
    (201, 1, 2, '2026-01-01', 500, 50, 1),
    (202, 1, 2, '2026-01-02', 300, 10, NULL),
    (203, 1, 2, '2026-01-03', 400, 25, 1),
    (204, 1, 2, NULL,         100, 5,  NULL),
    (205, 1, 2, '2026-01-03', 100, 5,  NULL),
    (301, 1, 3, '2026-01-01', 200, 30, NULL),
    (302, 1, 3, '2026-01-05', 200, 30, NULL),
    (901, 2, 9, '2026-01-01', 4000, 100, 9);
INSERT INTO public.priority_group VALUES (1, 1, 'VIP'), (2, 1, 'Press'), (9, 2, 'Gigs VIP');
INSERT INTO public.firewall_ip VALUES (1, '10.0.0.1'), (1, '10.0.0.2'), (1, '192.168.1.1'), (2, '10.9.9.9');
INSERT INTO public.api_key VALUES (1, 1), (2, 1), (3, 1), (9, 2);

-- C4: the downgrade is pending until the period ends (change_plan stores it)
UPDATE subscription SET pending_plan = 'ch_starter' WHERE id = :tickets;

-- block: refused while Tickets has more API keys than Starter allows, naming what to remove;
-- nothing changed, the plan included
SELECT pg_temp.error_of(format('SELECT * FROM apply_downgrade(%s, true)', :tickets));
SELECT pg_temp.error_of(format('SELECT * FROM apply_downgrade(%s)', :tickets));
SELECT plan, pending_plan FROM subscription WHERE id = :tickets;
DELETE FROM public.api_key WHERE id = 3;

-- C12: the preview changes nothing and returns exactly what the real run returns
CREATE TEMP TABLE preview AS SELECT * FROM apply_downgrade(:tickets, true);
SELECT * FROM preview;
SELECT plan, pending_plan FROM subscription WHERE id = :tickets;
SELECT count(*) AS rooms_after_preview, count(*) FILTER (WHERE template_id IS NOT NULL) AS attached FROM public.room WHERE account_id = 1;
SELECT count(*) AS trimmed_after_preview FROM trimmed;

CREATE TEMP TABLE real_run AS SELECT * FROM apply_downgrade(:tickets);
SELECT (SELECT count(*) FROM (TABLE preview EXCEPT ALL TABLE real_run) AS a)
     + (SELECT count(*) FROM (TABLE real_run EXCEPT ALL TABLE preview) AS b) AS preview_differs_by,
       (SELECT count(*) FROM real_run) AS rows_changed;
SELECT plan, pending_plan FROM subscription WHERE id = :tickets;

-- exact final state of Tickets
-- C5: domain 2 had the most rooms; domains 1 and 3 went, their rooms with them (ON DELETE CASCADE)
SELECT id, name FROM public.domain WHERE account_id = 1 ORDER BY id;
-- C6: of domain 2's five rooms, 204 (no activation date) and 205 (newest, tie with 203 on the higher key) went
-- C7: capacities 500/300/400 (1200) scaled to 1000: 416.67 -> 417 (largest remainder), 250, 333.33 -> 333
-- C8: entry rates capped at 20; C11: the template detached
SELECT id, activated_at::date, capacity, entry_rate, template_id FROM public.room WHERE account_id = 1 ORDER BY id;
SELECT sum(capacity) AS total_capacity FROM public.room WHERE account_id = 1;
-- C9, C10: priority groups and firewall IPs are gone
WITH g AS (SELECT count(*) AS n FROM public.priority_group WHERE account_id = 1),
     f AS (SELECT count(*) AS n FROM public.firewall_ip WHERE account_id = 1),
     k AS (SELECT count(*) AS n FROM public.api_key WHERE account_id = 1)
SELECT g.n AS groups, f.n AS firewall_ips, k.n AS api_keys FROM g, f, k;
-- templates themselves stay (C11: unusable, not deleted)
SELECT id, name FROM public.template ORDER BY id;

-- nothing lost silently: every deleted or changed row, as it was
SELECT relation, feature, action, row_id, old_row FROM trimmed WHERE account_id = 1 ORDER BY id;
WITH a AS (SELECT count(*) AS n FROM trimmed), r AS (SELECT count(*) AS n FROM real_run)
SELECT a.n AS archived_rows, r.n AS returned_rows FROM a, r;

-- the counters equal the rows; no limit is exceeded
SELECT u.feature, u.used, u.limit_value FROM usage_counter AS u WHERE u.account_id = 1 ORDER BY u.feature;
SELECT usage(1, 'domains') AS used_domains, usage(1, 'rooms') AS used_rooms,
       usage(1, 'room_capacity') AS used_capacity, usage(1, 'custom_templates') AS used_templates \gset
WITH d AS (SELECT count(*) AS n FROM public.domain WHERE account_id = 1),
     r AS (SELECT count(*) AS n, sum(capacity) AS capacity, count(template_id) AS templates
             FROM public.room WHERE account_id = 1)
SELECT d.n = :used_domains AS domains_exact,
       r.n = :used_rooms AS rooms_exact,
       r.capacity = :used_capacity AS capacity_exact,
       r.templates = :used_templates AS templates_exact
  FROM d, r;

-- Gigs was not touched
WITH r AS (SELECT count(*) AS n FROM public.room WHERE account_id = 2),
     c AS (SELECT capacity FROM public.room WHERE account_id = 2 AND id = 901),
     t AS (SELECT count(*) AS n FROM trimmed WHERE account_id = 2)
SELECT r.n AS gigs_rooms, c.capacity AS gigs_capacity, t.n AS gigs_trimmed FROM r, c, t;

-- at write time, the new limits hold
SELECT pg_temp.error_of($$INSERT INTO public.domain VALUES (4, 1, 'again.example')$$);
SELECT pg_temp.error_of($$UPDATE public.room SET template_id = 1 WHERE id = 201$$);
SELECT pg_temp.error_of($$INSERT INTO public.priority_group VALUES (3, 1, 'VIP again')$$);
SELECT pg_temp.error_of($$UPDATE public.room SET entry_rate = 21 WHERE id = 202$$);

-- applying again changes nothing: the account is within its limits
SELECT count(*) AS second_run_rows FROM apply_downgrade(:tickets);

-- C9-C11 after a re-upgrade: templates can be attached again, deleted groups stay deleted
UPDATE subscription SET plan = 'ch_standard' WHERE id = :tickets;
UPDATE public.room SET template_id = 1 WHERE id = 201;
SELECT id, template_id FROM public.room WHERE account_id = 1 ORDER BY id;
SELECT count(*) AS groups_after_upgrade FROM public.priority_group WHERE account_id = 1;

-- without a pending plan, it trims to the current limits: an add-on's room
-- ends (K4) and the newest room goes
UPDATE subscription SET plan = 'ch_starter' WHERE id = :tickets;
INSERT INTO addon_batch (tenant_id, subscription_id, addon, quantity) VALUES (1, :tickets, 'ch_rooms1', 1) RETURNING id AS batch \gset
INSERT INTO public.room VALUES (206, 1, 2, '2026-02-01', 0, 1, NULL);
UPDATE addon_batch SET status = 'expired' WHERE id = :batch;
SELECT * FROM apply_downgrade(:tickets);

-- errors
SELECT pg_temp.error_of($$SELECT * FROM apply_downgrade(999)$$);                 -- P0002
SELECT pg_temp.error_of($$SELECT * FROM apply_downgrade(-9223372036854775808)$$); -- P0002
SELECT pg_temp.error_of($$SELECT * FROM apply_downgrade(NULL)$$);                -- 22004
SELECT pg_temp.error_of(format('SELECT * FROM apply_downgrade(%s, NULL)', :tickets)); -- 22004
SET LOCAL subscription.actor = '11';                                            -- Z1: an admin may not
SELECT pg_temp.error_of(format('SELECT * FROM apply_downgrade(%s)', :tickets));
SET LOCAL subscription.actor = '10';                                            -- the owner may
SELECT count(*) AS owner_run FROM apply_downgrade(:tickets);
RESET subscription.actor;
UPDATE subscription SET status = 'expired' WHERE id = :gigs;
SELECT pg_temp.error_of(format('SELECT * FROM apply_downgrade(%s)', :gigs));     -- 55000

-- a table without a primary key is trimmed by its physical order, newest first
CREATE TABLE public.note (account_id bigint, body text);
\set app_tables public.note
\i test/sql/include/app_tables.psql
INSERT INTO plan_limit (plan, feature, value) VALUES ('ch_starter', 'notes', 1), ('ch_standard', 'notes', 5);
SELECT enforce_limit('public.note', 'notes');
UPDATE subscription SET plan = 'ch_standard' WHERE id = :tickets;
INSERT INTO public.note VALUES (1, 'first'), (1, 'second'), (1, 'third');
UPDATE subscription SET pending_plan = 'ch_starter' WHERE id = :tickets;
SELECT feature, action, row_id FROM apply_downgrade(:tickets) WHERE feature = 'notes';
SELECT body FROM public.note;

-- on Citus a trim's DELETE runs in a worker's session, told of the trim by
-- subscription.trimming ('subscription tenant account relation', set by
-- apply_downgrade): the guards on the shards archive at once what a cascade
-- deletes, and nothing of the table trimmed (docs/citus.md).  Any session
-- can set it (issue 17): a single server ignores it entirely (its trims
-- run in the trimming backend), and on a shard the rows archived must be
-- of the account named, the subscription named that account's (42501).
SELECT coalesce(max(id), 0) AS last_archived FROM trimmed \gset
\if :on_citus
SET LOCAL citus.propagate_set_commands = 'local';                              -- as apply_downgrade sends it
\endif
SAVEPOINT elsewhere;
\set trimming :tickets ' 1 1 public.domain'
SET LOCAL subscription.trimming = :'trimming';
DELETE FROM public.domain WHERE id = 2;
-- the rooms of domain 2 as its cascade on Citus; none on a single server
SELECT relation, feature, action, row_id, subscription_id = :tickets AS of_the_trim FROM trimmed WHERE id > :last_archived ORDER BY id;
ROLLBACK TO SAVEPOINT elsewhere;
-- another account's subscription named, or another account: on a shard
-- 42501 and nothing deleted; on a single server deleted, nothing archived
\set trimming :gigs ' 1 1 public.domain'
SET LOCAL subscription.trimming = :'trimming';
SELECT pg_temp.error_of($$DELETE FROM public.domain WHERE id = 2$$);
WITH a AS (SELECT count(*) AS archived FROM trimmed WHERE id > :last_archived), r AS (SELECT count(*) AS room_left FROM public.room WHERE id = 201) SELECT * FROM a, r;
ROLLBACK TO SAVEPOINT elsewhere;
\set trimming :gigs ' 2 2 public.domain'
SET LOCAL subscription.trimming = :'trimming';
SELECT pg_temp.error_of($$DELETE FROM public.domain WHERE id = 2$$);
WITH a AS (SELECT count(*) AS archived FROM trimmed WHERE id > :last_archived), r AS (SELECT count(*) AS room_left FROM public.room WHERE id = 201) SELECT * FROM a, r;
ROLLBACK TO SAVEPOINT elsewhere;
SET LOCAL subscription.trimming = 'public.domain';                              -- on a shard 22023
SELECT pg_temp.error_of($$DELETE FROM public.room WHERE id = 201$$);
ROLLBACK TO SAVEPOINT elsewhere;
SELECT count(*) AS archived_by_hand FROM trimmed WHERE id > :last_archived;

ROLLBACK;

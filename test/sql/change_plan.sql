-- change_plan: upgrades (C1, prorate), downgrades (C4, immediate), the invoice (C3)
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

-- CrowdHandler restarts the period on an upgrade and defers downgrades;
-- Zendesk prorates upgrades and applies downgrades at once
INSERT INTO product (code, name, upgrade, downgrade) VALUES
    ('crowd', 'CrowdHandler', 'restart', 'end_of_period'),
    ('desk', 'Zendesk Support', 'prorate', 'immediate'),
    ('central', 'LogMeIn Central', 'restart', 'end_of_period');
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter', 'crowd', 'Starter', 1), ('ch_standard', 'crowd', 'Standard', 2), ('ch_pro', 'crowd', 'Pro', 3),
    ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2),
    ('central_basic', 'central', 'Basic', 1), ('central_plus', 'central', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('ch_starter', '1 month', 49, false), ('ch_standard', '1 month', 99, false), ('ch_pro', '1 month', 199, false),
    ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 49, true);
INSERT INTO plan_price (plan, cycle, tier, amount) VALUES
    ('central_basic', '1 year', 25, 500), ('central_basic', '1 year', 100, 1500),
    ('central_plus', '1 year', 25, 1038), ('central_plus', '1 year', 250, 6998);
INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_team', 'macros', 2), ('zd_pro', 'macros', 10);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Tickets Ltd'), (2, 2, 'Helpdesk Co'), (3, 3, 'Acme IT');
INSERT INTO member (id, tenant_id, account_id, external_id, role, rights) VALUES
    (10, 1, 1, 'owner@tickets', 'owner', '{}'), (11, 1, 1, 'admin@tickets', 'admin', '{increase_licenses,change_renewal}');
CREATE TABLE public.macro (id int, account_id bigint NOT NULL, created_at timestamptz NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.macro
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.macro', 'macros', 'account_id', 'drop_newest', 'created_at');

-- C1: Starter from March 1 (31 days); Standard on March 11: the 21 unused
-- days of Starter are refunded (49 x 21/31 = 33.19) and a full month of
-- Standard starts that day
SELECT subscribe(1, 'ch_starter', '1 month', 1, '2026-03-01') AS crowd \gset
SELECT * FROM change_plan(:crowd, 'ch_standard', '2026-03-11');
SELECT plan, period, anchor, pending_plan FROM subscription WHERE id = :crowd;

-- C4: a downgrade waits for the end of the period; nothing is charged or refunded
SELECT * FROM change_plan(:crowd, 'ch_starter', '2026-03-15');
SELECT plan, pending_plan FROM subscription WHERE id = :crowd;

-- an upgrade drops the pending downgrade; this second change in the new
-- period gives back what was really paid: 21 of the 31 days of the 99 paid
-- on March 11 (67.06), not the list price
SELECT * FROM change_plan(:crowd, 'ch_pro', '2026-03-21');
SELECT plan, period, pending_plan FROM subscription WHERE id = :crowd;
-- C2: each period's charge once; the refunds link to what they give back
SELECT kind, amount, item, plan, period, charge_id FROM ledger WHERE subscription_id = :crowd ORDER BY id;
-- C3: per billing event, the new plan, the amount paid, the refund and the balance
SELECT plan, charged, refunded, balance FROM invoice WHERE subscription_id = :crowd ORDER BY at;
SELECT jsonb_pretty(lines) FROM invoice WHERE subscription_id = :crowd ORDER BY at DESC LIMIT 1;

-- a later downgrade replaces a pending one; changing to the current plan drops it
SELECT * FROM change_plan(:crowd, 'ch_standard', '2026-04-01');
SELECT * FROM change_plan(:crowd, 'ch_starter', '2026-04-02');
SELECT plan, pending_plan FROM subscription WHERE id = :crowd;
SELECT * FROM change_plan(:crowd, 'ch_pro', '2026-04-03');
SELECT plan, pending_plan FROM subscription WHERE id = :crowd;
SELECT count(*) AS ledger_lines_unchanged FROM ledger WHERE subscription_id = :crowd;

-- Zendesk: 5 Team agents from January 1 (95 a month); Professional on
-- January 16 keeps the period: 16 of 31 days of Team back (49.03), 16 of 31
-- days of Professional charged (245 x 16/31 = 126.45)
SELECT subscribe(2, 'zd_team', '1 month', 5, '2026-01-01') AS desk \gset
INSERT INTO public.macro SELECT g, 2, timestamptz '2026-01-01' + g * interval '1 day' FROM generate_series(1, 2) AS g;
SELECT pg_temp.error_of($$INSERT INTO public.macro VALUES (3, 2, '2026-01-03')$$);  -- Team: 2 macros
SELECT * FROM change_plan(:desk, 'zd_pro', '2026-01-16');
SELECT plan, period FROM subscription WHERE id = :desk;
INSERT INTO public.macro SELECT g, 2, timestamptz '2026-01-01' + g * interval '1 day' FROM generate_series(3, 4) AS g;
-- an immediate downgrade on January 26: 6 of the 16 days paid for
-- Professional back (126.45 x 6/16 = 47.42), 6 of 31 days of Team charged
-- (95 x 6/31 = 18.39), and the macros trimmed to Team's 2 now (C6)
SELECT * FROM change_plan(:desk, 'zd_team', '2026-01-26');
SELECT plan, pending_plan FROM subscription WHERE id = :desk;
SELECT id FROM public.macro WHERE account_id = 2 ORDER BY id;
SELECT relation, action, row_id FROM trimmed WHERE account_id = 2 ORDER BY id;
SELECT kind, amount, item, period FROM ledger WHERE subscription_id = :desk ORDER BY id;
SELECT sum(CASE kind WHEN 'charge' THEN amount ELSE -amount END) AS paid_for_january FROM ledger WHERE subscription_id = :desk;

-- L3, L12: a tiered plan's quantity must be one of its tiers
SELECT subscribe(3, 'central_basic', '1 year', 100, '2026-01-01') AS central \gset
SELECT pg_temp.error_of(format($$SELECT * FROM change_plan(%s, 'central_plus', '2026-02-01')$$, :'central'));

-- errors
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, 'ch_platinum', '2026-04-05')$$);            -- 42704
SELECT pg_temp.error_of($$SELECT * FROM change_plan(999, 'ch_pro', '2026-04-05')$$);               -- P0002
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, NULL, '2026-04-05')$$);                     -- 22004
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, 'zd_pro', '2026-04-05')$$);                 -- 22023 other product
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, 'ch_standard', '2026-06-01')$$);            -- 22023 after the period
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, 'ch_standard', 'infinity')$$);              -- 22023
UPDATE plan_price SET cycle = '1 year' WHERE plan = 'ch_standard';
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, 'ch_standard', '2026-04-05')$$);            -- 22023 no monthly price
SET LOCAL subscription.actor = '11';                                                              -- Z1: admins look, owners change
SELECT pg_temp.error_of($$SELECT * FROM change_plan(1, 'ch_starter', '2026-04-05')$$);
RESET subscription.actor;
UPDATE subscription SET status = 'expired' WHERE id = :desk;
SELECT pg_temp.error_of(format($$SELECT * FROM change_plan(%s, 'zd_pro', '2026-01-27')$$, :'desk')); -- 55000

ROLLBACK;

-- Z9: a change can be previewed: the lines it would write, nothing written
BEGIN;
INSERT INTO product (code, name, upgrade) VALUES ('desk', 'Zendesk Support', 'prorate');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 49, true);
INSERT INTO addon (code, product, name) VALUES ('zd_collab', 'desk', 'Collaboration');
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'zd_collab');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Helpdesk Co');
SELECT subscribe(1, 'zd_team', '1 month', 5, '2026-01-01') AS desk \gset
SELECT kind, amount, item, period FROM preview_change_plan(:desk, 'zd_pro', '2026-01-16');
SELECT sum(CASE kind WHEN 'charge' THEN amount ELSE -amount END) AS new_total
  FROM preview_change_plan(:desk, 'zd_pro', '2026-01-16');
SELECT plan, (SELECT count(*) FROM ledger) AS lines FROM subscription WHERE id = :desk;
-- the preview is the change: the real one writes the same lines
SELECT kind, amount FROM preview_set_quantity(:desk, 8, '2026-01-16');
SELECT set_quantity(:desk, 8, '2026-01-16') AS licenses_left;
SELECT kind, amount FROM ledger WHERE subscription_id = :desk ORDER BY id DESC LIMIT 1;
SELECT * FROM change_plan(:desk, 'zd_pro', '2026-01-20');
SELECT kind, amount, description FROM preview_purchase_addon(:desk, 'zd_collab', 2, '2026-01-21');
SELECT count(*) AS batches FROM addon_batch;
-- a change that would fail fails the same way in preview
SELECT pg_temp.error_of(format($$SELECT * FROM preview_purchase_addon(%s, 'zd_nothing')$$, :'desk'));
SELECT pg_temp.error_of($$SELECT * FROM preview_change_plan(NULL, 'zd_pro')$$);
SELECT pg_temp.error_of(format($$SELECT * FROM preview_set_quantity(%s, NULL)$$, :'desk'));
ROLLBACK;

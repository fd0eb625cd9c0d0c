-- Z3 suites: suite_component and its checks, a suite's licenses as
-- licenses of each included product (R11), the included plans' limits,
-- bundle_into_suite (L9 credit, seats carried over, all or nothing) and
-- its preview (Z9).
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
INSERT INTO product (code, name) VALUES
    ('support', 'Zendesk Support'), ('chat', 'Zendesk Chat'), ('talk', 'Zendesk Talk'),
    ('zd_suite', 'Zendesk Suite');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('support_pro', 'support', 'Support Professional', 2, 'service'),
    ('support_team', 'support', 'Support Team', 1, 'service'),
    ('chat_pro', 'chat', 'Chat Professional', 2, 'service'),
    ('talk_pro', 'talk', 'Talk Professional', 2, 'service'),
    ('suite_pro', 'zd_suite', 'Suite Professional', 2, 'service'),
    ('suite_team', 'zd_suite', 'Suite Team', 1, 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('support_pro', '1 month', 49, true), ('support_pro', '1 year', 490, true),
    ('support_team', '1 month', 19, true), ('chat_pro', '1 month', 29, true),
    ('talk_pro', '1 month', 39, true),
    ('suite_pro', '1 month', 69, true), ('suite_pro', '1 year', 690, true),
    ('suite_team', '1 month', 49, true);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('support_pro', 'macros', 100, false), ('chat_pro', 'chats', 10, true),
    ('chat_pro', 'macros', 20, false), ('suite_pro', 'light_agents', NULL, false);

-- Z3: a suite includes plans of other products, one per product, and no suite
INSERT INTO suite_component (suite_plan, plan) VALUES
    ('suite_pro', 'support_pro'), ('suite_pro', 'chat_pro'), ('suite_team', 'support_team');
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('suite_pro', 'suite_pro')$$);    -- Z3
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('suite_pro', 'suite_team')$$);   -- Z3
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('talk_pro', 'suite_pro')$$);    -- Z3
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('support_pro', 'talk_pro')$$);  -- Z3: included, not a suite
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('suite_pro', 'support_team')$$); -- Z3
-- a plan of a suite that moves to a product the suite includes already
SELECT pg_temp.error_of($$UPDATE subscription.plan SET product = 'support' WHERE code = 'chat_pro'$$);     -- Z3
SELECT pg_temp.error_of($$UPDATE subscription.plan SET product = 'zd_suite' WHERE code = 'chat_pro'$$);    -- Z3
SELECT suite_plan, plan FROM suite_component ORDER BY 1, 2;
-- nothing lost: a plan in a suite, or a suite, is not deleted while the suite names it
INSERT INTO plan (code, product, name) VALUES ('chat_lite', 'chat', 'Chat Lite');
INSERT INTO suite_component VALUES ('suite_team', 'chat_lite');
SELECT pg_temp.error_of($$DELETE FROM subscription.plan WHERE code = 'chat_lite'$$);              -- Z3
DELETE FROM suite_component WHERE plan = 'chat_lite';
DELETE FROM plan WHERE code = 'chat_lite';

INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Initech'), (2, 2, 'Globex'), (3, 3, 'Hooli');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (11, 1, 1, 'ida', 'owner'), (12, 1, 1, 'jon', 'member'), (13, 1, 1, 'kim', 'member'), (14, 1, 1, 'lea', 'member'),
    (21, 2, 2, 'gus', 'owner'), (22, 2, 2, 'hal', 'member'), (23, 2, 2, 'ivy', 'member');

-- the included plans' limits: Globex's suite gives Support's and Chat's,
-- Chat's per license at the suite's quantity, besides the suite's own
SELECT subscribe(2, 'suite_pro', '1 month', 4, '2026-03-01') AS suite2 \gset
SELECT f, effective_limit(2, f) FROM unnest('{macros,chats,light_agents}'::text[]) AS f;     -- Z3
-- with a separate subscription of an included product they add up, like any two
SELECT subscribe(2, 'chat_pro', '1 month', 1, '2026-03-01') AS chat2 \gset
SELECT f, effective_limit(2, f) FROM unnest('{macros,chats}'::text[]) AS f;                  -- Z3
-- the stored limits follow a change of an included plan's limit, and of the suite
INSERT INTO usage_counter (tenant_id, account_id, feature, used, limit_value) VALUES (2, 2, 'macros', 0, limit_of(2, 'macros'));
UPDATE plan_limit SET value = 150 WHERE plan = 'support_pro' AND feature = 'macros';
SELECT limit_value FROM usage_counter WHERE account_id = 2 AND feature = 'macros';            -- Z3: 150 + 20 + 20
DELETE FROM suite_component WHERE suite_plan = 'suite_pro' AND plan = 'support_pro';
SELECT limit_value FROM usage_counter WHERE account_id = 2 AND feature = 'macros';            -- Z3: 20 + 20
INSERT INTO suite_component VALUES ('suite_pro', 'support_pro');
SELECT limit_value FROM usage_counter WHERE account_id = 2 AND feature = 'macros';
DELETE FROM usage_counter WHERE account_id = 2;

-- R11 per product: a suite license takes a seat of the suite's product and of each included one
SELECT license_consume(:suite2, 21);
SELECT member_id, product, subscription_id FROM service_seat WHERE member_id = 21 ORDER BY 2;  -- Z3
SELECT pg_temp.error_of(format('SELECT subscription.license_consume(%s, 21)', :chat2));        -- R11, Z3
-- and the reverse: hal holds a separate Chat license, then no suite license
SELECT license_consume(:chat2, 22);
SELECT pg_temp.error_of(format('SELECT subscription.license_consume(%s, 22)', :suite2));       -- R11, Z3
-- the statement path (a bulk INSERT) checks the same key
SELECT pg_temp.error_of(format('INSERT INTO subscription.license (tenant_id, subscription_id, member_id) VALUES (2, %s, 23), (2, %s, 22)',
                               :suite2, :suite2));                                              -- R11, Z3
SELECT pg_temp.error_of(format('INSERT INTO subscription.license (tenant_id, subscription_id, member_id) VALUES (2, %s, 23), (2, %s, 23)',
                               :suite2, :chat2));                                               -- R11, Z3
-- a catalog change that would give a member two seats of a product is
-- refused; one that takes a product out of the suite frees its seats
SELECT license_release(:chat2, 22);
SELECT license_consume(:suite2, 22);
SELECT subscribe(2, 'talk_pro', '1 month', 1, '2026-03-01') AS talk2 \gset
SELECT license_consume(:talk2, 22);
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('suite_pro', 'talk_pro')$$);    -- R11, Z3
DELETE FROM suite_component WHERE suite_plan = 'suite_pro' AND plan = 'chat_pro';
SELECT member_id, product FROM service_seat WHERE subscription_id = :suite2 ORDER BY 1, 2;    -- Z3: no Chat seat
SELECT license_consume(:chat2, 22);
SELECT pg_temp.error_of($$INSERT INTO subscription.suite_component VALUES ('suite_pro', 'chat_pro')$$);    -- R11, Z3
SELECT license_release(:chat2, 22);
INSERT INTO suite_component VALUES ('suite_pro', 'chat_pro');
SELECT member_id, product FROM service_seat WHERE subscription_id = :suite2 ORDER BY 1, 2;
-- a suite subscription moved to another suite plan (as a renewal does) seats that plan's products
UPDATE subscription SET plan = 'suite_team' WHERE id = :suite2;
SELECT member_id, product FROM service_seat WHERE subscription_id = :suite2 ORDER BY 1, 2;    -- Z3: no Chat seat
UPDATE subscription SET plan = 'suite_pro' WHERE id = :suite2;
SELECT member_id, product FROM service_seat WHERE subscription_id = :suite2 ORDER BY 1, 2;

-- bundle_into_suite: NULL, bad values, unknown ids, wrong state
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(NULL, 'suite_pro')$$);
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, 'suite_pro', 3, NULL)$$);
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, 'suite_pro', 0)$$);
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(99, 'suite_pro')$$);
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, 'suite_prof')$$);
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, 'chat_pro')$$);                  -- Z3: not a suite
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(3, 'suite_pro', 1, '2026-03-15')$$); -- Z3: nothing to bundle

-- Initech has Support (3 licenses) and Chat (2) separately, since March 1st
SELECT subscribe(1, 'support_pro', '1 month', 3, '2026-03-01') AS support \gset
SELECT subscribe(1, 'chat_pro', '1 month', 2, '2026-03-01') AS chat \gset
SELECT license_consume(:support, 11), license_consume(:support, 12), license_consume(:chat, 12), license_consume(:chat, 13);
-- 3 members hold a seat of an included product: 2 licenses are too few, all or nothing
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, 'suite_pro', 2, '2026-03-16')$$);  -- Z3
SELECT id, plan, status, quantity, is_default FROM subscription WHERE account_id = 1 ORDER BY id;
-- Z9: the preview is the lines the bundle writes, and nothing stays written
SELECT count(*) AS ledger_lines FROM ledger \gset
SELECT subscription_id, kind, amount, item, description FROM preview_bundle_into_suite(1, 'suite_pro', NULL, '2026-03-16') ORDER BY id;
SELECT count(*) = :ledger_lines AS nothing_written FROM ledger;
SELECT pg_temp.error_of($$SELECT * FROM subscription.preview_bundle_into_suite(1, 'suite_pro', 2, '2026-03-16')$$);
-- quantity NULL: the largest of those replaced (3); their unused days are
-- credited (L9) and pay the suite's first charge; seats carried over
SELECT bundle_into_suite(1, 'suite_pro', NULL, '2026-03-16') AS suite \gset
SELECT id, plan, status, quantity, is_default, cycle FROM subscription WHERE account_id = 1 ORDER BY id;
SELECT subscription_id, kind, amount, item, description FROM ledger WHERE account_id = 1 ORDER BY id;   -- L9
SELECT credit_balance(1);
SELECT l.member_id, s.plan FROM license AS l JOIN subscription AS s ON s.tenant_id = l.tenant_id AND s.id = l.subscription_id
 WHERE s.account_id = 1 ORDER BY 1, 2;
SELECT member_id, product FROM service_seat WHERE subscription_id = :suite ORDER BY 1, 2;   -- R11, Z3
SELECT licenses_left(:suite);
SELECT operation, subscription_id, details FROM history
 WHERE account_id = 1 AND operation IN ('bundle_into_suite', 'license_assign', 'license_release')
 ORDER BY id;
-- the suite's limits replace the separate ones
SELECT f, effective_limit(1, f) FROM unnest('{macros,chats}'::text[]) AS f;
-- nothing left to bundle
SELECT pg_temp.error_of($$SELECT subscription.bundle_into_suite(1, 'suite_pro', 3, '2026-03-17')$$);
SELECT * FROM verify();
ROLLBACK;

-- A sample catalog of the five source systems (DOMAIN.md: L, C, Z, R, K).
-- Prices are illustrative; the structure follows the articles in seeds/.
SET search_path = subscription, public;

INSERT INTO product (code, name, upgrade, downgrade) VALUES
    ('central',      'LogMeIn Central',  'restart', 'end_of_period'),   -- L
    ('crowdhandler', 'CrowdHandler',     'restart', 'end_of_period'),   -- C1, C4
    ('support',      'Zendesk Support',  'prorate', 'end_of_period'),   -- Z5
    ('rainbow',      'Rainbow',          'prorate', 'end_of_period'),   -- R
    ('clickmeeting', 'ClickMeeting',     'prorate', 'end_of_period');   -- K

-- L2: editions ranked Basic < Plus < Premier; L3: host tiers, priced per tier
INSERT INTO plan (code, product, name, rank) VALUES
    ('central_basic',   'central', 'Central Basic',   1),
    ('central_plus',    'central', 'Central Plus',    2),
    ('central_premier', 'central', 'Central Premier', 3);
INSERT INTO plan_price (plan, cycle, tier, amount, currency)
SELECT p.code, '1 year', t.tier, round(t.base * p.factor), 'USD'
  FROM (VALUES ('central_basic', 1.0), ('central_plus', 1.6), ('central_premier', 2.4)) AS p(code, factor),
       (VALUES (25, 649), (100, 1999), (250, 4299), (500, 7999), (1000, 13999), (2500, 29999)) AS t(tier, base);
-- L12: one host per license of the tier; L2: automation only in Premier
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES
    ('central_basic', 'hosts', 1, true), ('central_plus', 'hosts', 1, true), ('central_premier', 'hosts', 1, true),
    ('central_basic', 'automation_jobs', 0, false), ('central_plus', 'automation_jobs', 0, false),
    ('central_premier', 'automation_jobs', NULL, false);

-- C: monthly plans whose limits the downgrade rules C5-C11 trim
INSERT INTO plan (code, product, name, rank) VALUES
    ('ch_starter',    'crowdhandler', 'Starter',    1),
    ('ch_standard',   'crowdhandler', 'Standard',   2),
    ('ch_enterprise', 'crowdhandler', 'Enterprise', 3);
INSERT INTO plan_price (plan, cycle, amount) VALUES
    ('ch_starter', '1 month', 49.00), ('ch_standard', '1 month', 99.00), ('ch_enterprise', '1 month', 299.00);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('ch_starter', 'domains', 1),          ('ch_standard', 'domains', 3),          ('ch_enterprise', 'domains', NULL),
    ('ch_starter', 'rooms', 2),            ('ch_standard', 'rooms', 10),           ('ch_enterprise', 'rooms', NULL),
    ('ch_starter', 'room_capacity', 500),  ('ch_standard', 'room_capacity', 5000), ('ch_enterprise', 'room_capacity', NULL),
    ('ch_starter', 'entry_rate', 10),      ('ch_standard', 'entry_rate', 100),     ('ch_enterprise', 'entry_rate', 1000),
    ('ch_starter', 'priority_groups', 0),  ('ch_standard', 'priority_groups', 5),  ('ch_enterprise', 'priority_groups', NULL),
    ('ch_starter', 'firewall_ips', 0),     ('ch_standard', 'firewall_ips', 10),    ('ch_enterprise', 'firewall_ips', NULL),
    ('ch_starter', 'custom_templates', 0), ('ch_standard', 'custom_templates', 0), ('ch_enterprise', 'custom_templates', NULL);

-- Z: per-agent editions, monthly or annual (annual is cheaper, Z7)
INSERT INTO plan (code, product, name, rank) VALUES
    ('zd_team',         'support', 'Team',         1),
    ('zd_professional', 'support', 'Professional', 2),
    ('zd_enterprise',   'support', 'Enterprise',   3);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 25.00, true),         ('zd_team', '1 year', 228.00, true),
    ('zd_professional', '1 month', 55.00, true), ('zd_professional', '1 year', 588.00, true),
    ('zd_enterprise', '1 month', 115.00, true),  ('zd_enterprise', '1 year', 1188.00, true);
-- Z13: Enterprise includes 1 million custom objects
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('zd_team', 'custom_objects', 0), ('zd_professional', 'custom_objects', 0),
    ('zd_enterprise', 'custom_objects', 1000000);
-- Z6: add-ons depend on the edition
INSERT INTO addon (code, product, name, feature, units) VALUES
    ('zd_collaboration', 'support', 'Collaboration', NULL, 1),
    ('zd_productivity',  'support', 'Productivity Pack', NULL, 1),
    ('zd_objects_100m',  'support', '100 million custom objects', 'custom_objects', 99000000);
INSERT INTO addon_price (addon, cycle, amount) VALUES
    ('zd_collaboration', '1 month', 9.00), ('zd_collaboration', '1 year', 90.00),
    ('zd_productivity', '1 month', 19.00), ('zd_productivity', '1 year', 190.00),
    ('zd_objects_100m', '1 month', 500.00), ('zd_objects_100m', '1 year', 5000.00);
INSERT INTO plan_addon (plan, addon, included) VALUES
    ('zd_professional', 'zd_collaboration', false), ('zd_professional', 'zd_productivity', false),
    ('zd_enterprise', 'zd_collaboration', false),   ('zd_enterprise', 'zd_productivity', true),
    ('zd_enterprise', 'zd_objects_100m', false);

-- R: service plans and options per license, monthly or prepaid 1, 3, 5 years
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('rb_essential',  'rainbow', 'Essential',  0, 'service'),
    ('rb_business',   'rainbow', 'Business',   1, 'service'),
    ('rb_enterprise', 'rainbow', 'Enterprise', 2, 'service'),
    ('rb_attendant',  'rainbow', 'Attendant',  3, 'service'),
    ('rb_recording',  'rainbow', 'Recording option', 0, 'option');
INSERT INTO plan_price (plan, cycle, amount, per_license)
SELECT p.code, c.cycle, round(p.monthly * c.months * c.factor, 2), true
  FROM (VALUES ('rb_essential', 0.00), ('rb_business', 5.99), ('rb_enterprise', 9.99),
               ('rb_attendant', 14.99), ('rb_recording', 2.00)) AS p(code, monthly),
       (VALUES ('1 month'::interval, 1, 1.00), ('1 year', 12, 0.90), ('3 years', 36, 0.80), ('5 years', 60, 0.70))
           AS c(cycle, months, factor);

-- K: 30- or 365-day cycles, add-ons on paid plans only (K1)
INSERT INTO plan (code, product, name, rank) VALUES
    ('cm_free',      'clickmeeting', 'Free',      0),
    ('cm_live',      'clickmeeting', 'Live',      1),
    ('cm_automated', 'clickmeeting', 'Automated', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES
    ('cm_free', '30 days', 0), ('cm_live', '30 days', 29.00), ('cm_live', '365 days', 300.00),
    ('cm_automated', '30 days', 49.00), ('cm_automated', '365 days', 480.00);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('cm_free', 'parallel_events', 1), ('cm_live', 'parallel_events', 1), ('cm_automated', 'parallel_events', 1),
    ('cm_free', 'presenters', 1),      ('cm_live', 'presenters', 2),      ('cm_automated', 'presenters', 4),
    ('cm_free', 'sub_accounts', 0),    ('cm_live', 'sub_accounts', 0),    ('cm_automated', 'sub_accounts', 0),
    ('cm_free', 'storage_gb', 1),      ('cm_live', 'storage_gb', 5),      ('cm_automated', 'storage_gb', 10);
INSERT INTO addon (code, product, name, one_time, feature, units) VALUES
    ('cm_recording',       'clickmeeting', 'Recording space (10 h)', false, 'recording_hours', 10),
    ('cm_username_change', 'clickmeeting', 'Username change',        true,  NULL, 1),
    ('cm_parallel_events', 'clickmeeting', 'Parallel events',        false, 'parallel_events', 1),
    ('cm_presenters',      'clickmeeting', 'Presenter seat',         false, 'presenters', 1),
    ('cm_sub_accounts',    'clickmeeting', 'Sub-account',            false, 'sub_accounts', 1),
    ('cm_storage',         'clickmeeting', 'Storage (10 GB)',        false, 'storage_gb', 10);
INSERT INTO addon_price (addon, cycle, amount) VALUES
    ('cm_recording', '30 days', 10.00),       ('cm_recording', '365 days', 100.00),
    ('cm_username_change', NULL, 15.00),
    ('cm_parallel_events', '30 days', 20.00), ('cm_parallel_events', '365 days', 200.00),
    ('cm_presenters', '30 days', 5.00),       ('cm_presenters', '365 days', 50.00),
    ('cm_sub_accounts', '30 days', 8.00),     ('cm_sub_accounts', '365 days', 80.00),
    ('cm_storage', '30 days', 3.00),          ('cm_storage', '365 days', 30.00);
INSERT INTO plan_addon (plan, addon)
SELECT p, a FROM unnest('{cm_live,cm_automated}'::text[]) AS p,
                 unnest('{cm_recording,cm_username_change,cm_parallel_events,cm_presenters,cm_sub_accounts,cm_storage}'::text[]) AS a;

-- (Z3: the Zendesk Suite is added by scenario.sql, section 16: this catalog
-- also loads on 1.0, in test/upgrade/fixture.sql.)

-- Z10: promotional codes
INSERT INTO coupon (code, percent_off, amount_off, cycles, redeem_by, max_redemptions) VALUES
    ('WELCOME20', 20, NULL, 2, '2026-12-31', 1000),
    ('LOYAL10', NULL, 10.00, NULL, NULL, NULL);

-- tenants: one account per system
INSERT INTO account (id, name) VALUES
    (1, 'Acme IT (LogMeIn Central)'), (2, 'Tickets Ltd (CrowdHandler)'), (3, 'Globex (Zendesk)'),
    (4, 'Initech (Rainbow)'), (5, 'Webinars SA (ClickMeeting)');
INSERT INTO member (account_id, external_id, role, rights) VALUES
    (1, 'ana@acme',      'owner', '{}'),
    (3, 'gus@globex',    'owner', '{}'),
    (3, 'hal@globex',    'admin', '{}'),
    (4, 'ida@initech',   'owner', '{}'),
    (4, 'jon@initech',   'admin', '{increase_licenses,change_renewal}'),
    (5, 'kim@webinars',  'owner', '{}');
SELECT setval(pg_get_serial_sequence('subscription.account', 'id'), 5);

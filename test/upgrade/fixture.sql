-- test/upgrade/fixture.sql: a database in use, written through the 1.0 API,
-- so that test/upgrade.sh can show that ALTER EXTENSION UPDATE (and a 1.0
-- dump restored into 1.1) keeps every row and every guard.  Every table of
-- the extension gets rows: catalog, accounts with a sub-account, members of
-- each role, subscriptions of several plans and cycles, licenses, a license
-- increase, a coupon, a credit, add-ons, a downgrade that trims, a renewal
-- run, and two application tables under plan limits.
-- Runs as a superuser against CREATE EXTENSION subscription VERSION '1.0'.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET TimeZone = 'UTC';

-- the sample catalog of the five source systems, accounts 1-5 and their first members
\ir ../demo/catalog.sql
SET search_path = subscription, public;

-- a plain member of Initech next to its owner (ida) and its admin with rights (jon)
INSERT INTO member (account_id, external_id, role) VALUES (4, 'max@initech', 'member');

-- subscriptions of several plans and cycles, in this order (ids 1-6):
-- LogMeIn Central, a tiered annual plan (100 hosts)
SELECT subscribe(1, 'central_plus', '1 year', 100, '2026-01-15 10:00');
-- CrowdHandler Standard, monthly
SELECT subscribe(2, 'ch_standard', '1 month', 1, '2026-01-01');
-- Zendesk Professional, 10 agents monthly, with a coupon (a discount line)
SELECT subscribe(3, 'zd_professional', '1 month', 10, '2026-01-31 12:00', 'always', 'WELCOME20');
-- Rainbow Business, 25 licenses prepaid for 3 years, then monthly; and the recording option
SELECT subscribe(4, 'rb_business', '3 years', 25, '2026-02-01', 'to_monthly');
SELECT subscribe(4, 'rb_recording', '1 month', 5, '2026-02-01');
-- ClickMeeting Live, a 30-day cycle
SELECT subscribe(5, 'cm_live', '30 days', 1, '2026-01-31');

-- R10: members created now get a license of their account's default subscription
INSERT INTO member (account_id, external_id, role)
SELECT 3, 'agent' || g || '@globex', 'member' FROM generate_series(1, 3) AS g;
INSERT INTO member (account_id, external_id, role) VALUES (4, 'una@initech', 'member');

-- licenses through the C functions: a service license and an option for ida
SELECT license_consume(4, (SELECT id FROM member WHERE external_id = 'ida@initech'));
SELECT license_consume(5, (SELECT id FROM member WHERE external_id = 'ida@initech'));
SELECT license_consume(5, (SELECT id FROM member WHERE external_id = 'jon@initech'));

-- more licenses mid-period: a prorated charge of the licenses added
SELECT set_quantity(4, 30, '2026-03-01');
-- a credit, used by the next charge of Acme: 100 -> 250 hosts
SELECT credit_account(1, 50.00, 'goodwill', 'USD');
SELECT set_quantity(1, 250, '2026-06-01');
-- add-ons: Zendesk collaboration; a ClickMeeting sub-account seat
SELECT purchase_addon(3, 'zd_collaboration', 2, '2026-02-10');
SELECT purchase_addon(6, 'cm_sub_accounts', 1, '2026-02-05');
-- an upgrade that prorates (refund and charge lines): Zendesk Enterprise
SELECT * FROM change_plan(3, 'zd_enterprise', '2026-02-15');

-- a sub-account of Webinars with its own member; the sub-account limit (K7)
INSERT INTO account (name, parent_id) VALUES ('Webinars Brest', 5);
INSERT INTO member (account_id, external_id, role)
SELECT id, 'lea@brest', 'member' FROM account WHERE name = 'Webinars Brest';
SELECT enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'drop_newest', 'created_at');

-- application tables under plan limits: Acme's devices (hosts), Tickets' rooms
CREATE TABLE public.device (id serial PRIMARY KEY, account_id bigint NOT NULL);
INSERT INTO public.device (account_id) SELECT 1 FROM generate_series(1, 30);
SELECT enforce_limit('public.device', 'hosts');
CREATE TABLE public.room (id int PRIMARY KEY, account_id bigint NOT NULL, activated_at timestamptz);
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');
INSERT INTO public.room VALUES
    (1, 2, '2026-01-02'), (2, 2, '2026-01-03'), (3, 2, '2026-01-04'), (4, 2, NULL), (5, 2, '2026-01-05');

-- a downgrade to Starter (2 rooms), pending until the period ends (C4),
-- applied now: three rooms are trimmed into subscription.trimmed
SELECT * FROM change_plan(2, 'ch_starter', '2026-01-10');
SELECT * FROM apply_downgrade(2);

-- the renewals due by March 1: CrowdHandler and the recording option
SELECT renew_due('2026-03-01 00:00');

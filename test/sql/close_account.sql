-- Nothing lost (issue 15): close_account, erase_account and the DELETEs
-- they replace.  An account that holds anything is closed, never deleted;
-- its ledger keeps every amount and date.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 49, false), ('zd_pro', '1 month', 55, true), ('zd_pro', '1 year', 588, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('zd_light', 'desk', 'Light agents', 'light_agents', 10);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_light', '1 year', 120);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'zd_light');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech');
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (3, 1, 'Globex Europe', 1);
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (10, 1, 1, 'owner@globex', 'owner'), (11, 1, 1, 'agent@globex', 'member'), (30, 1, 3, 'owner@globex.eu', 'owner'),
    (20, 2, 2, 'owner@initech', 'owner');
SELECT subscribe(1, 'zd_pro', '1 year', 3, '2026-01-01') AS pro \gset
SELECT subscribe(1, 'zd_team', '1 month', 1, '2026-01-01') AS team \gset
SELECT subscribe(3, 'zd_team', '1 month', 1, '2026-01-01') AS europe \gset
SELECT purchase_addon(:pro, 'zd_light', 1, '2026-01-01') AS light \gset
SELECT license_consume(:pro, 11) IS NOT NULL AS agent_seated;
CREATE TEMP TABLE ledger_before AS SELECT * FROM ledger;

-- the DELETEs that erased the money before 1.1: refused, naming what is held (2BP01)
SELECT pg_temp.error_of($$DELETE FROM account WHERE id = 1$$);
SELECT pg_temp.error_of($$DELETE FROM account WHERE id = 3$$);
SELECT pg_temp.error_of(format('DELETE FROM subscription WHERE id = %s', :pro));
SELECT pg_temp.error_of(format('DELETE FROM addon_batch WHERE id = %s', :light));
SELECT pg_temp.error_of($$DELETE FROM plan WHERE code = 'zd_pro'$$);
SELECT pg_temp.error_of($$DELETE FROM plan_price WHERE plan = 'zd_pro' AND cycle = '1 year'$$);
SELECT pg_temp.error_of($$DELETE FROM addon WHERE code = 'zd_light'$$);
SELECT pg_temp.error_of($$DELETE FROM addon_price WHERE addon = 'zd_light'$$);
-- a price nobody was charged at may go
DELETE FROM plan_price WHERE plan = 'zd_pro' AND cycle = '1 month';

-- close_account: the owner (Z1) or back-office code; a member may not (42501)
SET subscription.actor = '11';
SELECT pg_temp.error_of($$SELECT * FROM close_account(1, '2026-01-20')$$);
SET subscription.actor = '10';
SELECT pg_temp.error_of($$SELECT * FROM close_account(NULL)$$);                    -- 22004
SELECT pg_temp.error_of($$SELECT * FROM close_account(99, '2026-03-01')$$);        -- P0002
SELECT pg_temp.error_of($$SELECT * FROM close_account(1, 'infinity')$$);           -- 22023
-- a typed year, at the default max_backdate: 22023 naming the setting
SET subscription.max_backdate = '5 years';
SELECT pg_temp.error_of($$SELECT * FROM close_account(1, '0026-01-20')$$) ~ 'max_backdate' AS refused;
RESET subscription.max_backdate;
-- K9: the sub-accounts first, by whom may act on them
SELECT pg_temp.error_of($$SELECT * FROM close_account(1, '2026-01-20')$$);
SELECT pg_temp.error_of($$SELECT * FROM close_account(3, '2026-01-20')$$);
SET subscription.actor = '30';
SELECT * FROM close_account(3, '2026-01-20');
-- L9: each active subscription ends now, its unused days credited
SET subscription.actor = '10';
SELECT * FROM close_account(1, '2026-01-20') ORDER BY subscription_id;
RESET subscription.actor;
SELECT id, closed_at FROM account ORDER BY id;
SELECT id, account_id, status FROM subscription ORDER BY id;
SELECT id, status FROM addon_batch;
-- the seats are released, the counters follow (Z4)
SELECT l.licenses, c.seats_used
  FROM (SELECT count(*) AS licenses FROM license) AS l, (SELECT sum(used) AS seats_used FROM license_counter) AS c;
SELECT kind, amount, charge_id IS NOT NULL AS names_its_charge, description FROM ledger
 WHERE id > (SELECT max(id) FROM ledger_before) ORDER BY id;
-- R8: history records it
SELECT operation, account_id, details FROM history WHERE operation = 'account_update' AND details ? 'closed_at' ORDER BY id;
-- a closed account takes nothing new (55000), and is not closed twice
SELECT pg_temp.error_of($$SELECT subscribe(1, 'zd_team', '1 month', 1, '2026-01-21')$$);
SELECT pg_temp.error_of($$SELECT * FROM close_account(1, '2026-01-21')$$);
-- an overdue subscription must be renewed first (end_early's 22023)
SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-01-01') AS initech \gset
SELECT pg_temp.error_of($$SELECT * FROM close_account(2, '2026-03-01')$$);
-- still not deleted once closed: it holds its ledger
SELECT pg_temp.error_of($$DELETE FROM account WHERE id = 1$$);

-- erase_account: back-office code only, of a closed account
SET subscription.actor = '20';
SELECT pg_temp.error_of($$SELECT erase_account(2)$$);                              -- 42501
RESET subscription.actor;
SELECT pg_temp.error_of($$SELECT erase_account(2)$$);                              -- 55000: open
SELECT pg_temp.error_of($$SELECT erase_account(99)$$);                             -- P0002
SELECT pg_temp.error_of($$SELECT erase_account(NULL)$$);                           -- 22004
SELECT erase_account(1);
-- the names and the members are gone, with their sub-account's
SELECT id, name, parent_id FROM account ORDER BY id;
SELECT account_id, external_id FROM member ORDER BY id;
-- the ledger keeps every line, amount and date
SELECT count(*) AS ledger_lines_changed_or_lost
  FROM ledger_before AS b LEFT JOIN ledger AS l USING (id)
 WHERE l IS NULL OR (l.amount, l.period, l.created_at, l.kind) IS DISTINCT FROM (b.amount, b.period, b.created_at, b.kind);
-- history keeps every row; its personal fields are erased (R8)
SELECT count(*) AS history_rows_naming_them FROM history
 WHERE details::text ~ 'Globex|@globex';
SELECT operation, account_id, details FROM history WHERE operation = 'account_erase' ORDER BY id;
SELECT details FROM history WHERE operation = 'member_insert' AND account_id = 1 ORDER BY id LIMIT 1;
-- the one change history allows is that erasure; any other is refused
SELECT pg_temp.error_of($$UPDATE history SET details = '{}' WHERE account_id = 1$$);
SELECT pg_temp.error_of($$UPDATE history SET operation = 'x', details = erased_details(details) WHERE account_id = 1$$);
SELECT erased_details('{"name": "A", "x": [{"external_id": "e"}], "name2": {"name": null}}');

-- D6 (issue 19): a past-due subscription is ended too, without credit (its
-- unpaid period gives nothing back); its invoice stays open, still owed,
-- its dunning stops, and a later payment settles it
UPDATE product SET dunning_days = '{3,5,7}', dunning_action = 'keep' WHERE code = 'desk';
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Hooli');
SELECT subscribe(4, 'zd_team', '1 month', 1, '2026-02-01') AS owing \gset
SELECT run_dunning_tenant(4, '2026-02-02') AS past_due;
SELECT * FROM close_account(4, '2026-02-05');
-- (credit_balance() called apart: on Citus a function that reads a
-- distributed table cannot run inside a query of the tenant's shard)
SELECT credit_balance(4) AS credit \gset
SELECT s.status, s.past_due_invoice_id, s.dunning_step, i.status AS invoice, i.total - i.paid AS owed,
       :'credit'::numeric AS credit
  FROM subscription AS s JOIN invoice_record AS i ON i.tenant_id = s.tenant_id AND i.subscription_id = s.id
 WHERE s.tenant_id = 4 AND s.id = :owing;
SELECT run_dunning_tenant(4, '2026-03-01') AS dunning_after_close,
       (SELECT count(*) FROM history WHERE subscription_id = :owing AND operation = 'dunning_step') AS steps;
SELECT id AS owed_invoice FROM invoice_record WHERE tenant_id = 4 AND subscription_id = :owing \gset
SELECT record_payment(:owed_invoice, 49, 'paid-after-close', '2026-03-02') IS NOT NULL AS paid;
SELECT s.status, i.status AS invoice
  FROM subscription AS s JOIN invoice_record AS i ON i.tenant_id = s.tenant_id AND i.subscription_id = s.id
 WHERE s.tenant_id = 4 AND s.id = :owing;

-- a trial ends with its account, charged nothing: its end (convert) then
-- charges nothing on the closed account, and its seat is released
UPDATE product SET trial_end = 'convert' WHERE code = 'desk';
INSERT INTO plan_price (plan, cycle, amount, trial) VALUES ('zd_team', '1 year', 490, '14 days');
INSERT INTO account (id, tenant_id, name) VALUES (5, 5, 'Pied Piper');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (50, 5, 5, 'owner@piper', 'owner');
SELECT subscribe(5, 'zd_team', '1 year', 1, '2026-04-01') AS trying \gset
SELECT license_consume(:trying, 50) IS NOT NULL AS owner_seated;
SELECT * FROM close_account(5, '2026-04-05');
SELECT renew_account(5, '2026-05-01') AS settled_after_close;
SELECT status, upper(period) AS trial_ended FROM subscription WHERE id = :trying;
SELECT amount, description FROM ledger WHERE subscription_id = :trying ORDER BY id;
SELECT count(*) AS seats_held FROM license WHERE subscription_id = :trying;
SELECT details FROM history WHERE subscription_id = :trying AND operation = 'subscription_update' ORDER BY id;

-- the rights: close_account like cancel, erase_account for back-office only
SELECT r.kind, p.object FROM unnest('{application,backoffice}'::text[]) AS r(kind),
       LATERAL role_rights(r.kind) AS p
 WHERE p.object ~ '(close|erase)_account' ORDER BY 1, 2;

ROLLBACK;

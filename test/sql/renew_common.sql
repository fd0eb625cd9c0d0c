-- Set-based renewals (issue 18): renew_due renews the tenants whose due
-- subscriptions all renew the common way in a few statements
-- (renew_common), the others one by one (renew_account).  Both ways write
-- the same rows: the same mixed population renewed by renew_due and by
-- renew_account tenant by tenant gives the same ledger lines, history,
-- events and subscriptions, row for row (ids and clock times aside).
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET client_min_messages = warning;
BEGIN;
-- I8: in one transaction, each invoice's opening is written at the end of
-- its statement (as at a commit), so that its history row is counted here
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;

INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 49, false), ('zd_pro', '1 month', 55, true), ('zd_pro', '1 year', 588, true);
INSERT INTO addon (code, product, name) VALUES ('collab', 'desk', 'Collaboration'), ('light', 'desk', 'Light agents');
INSERT INTO addon (code, product, name, one_time) VALUES ('setup', 'desk', 'Onboarding', true);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('collab', '1 month', 10), ('collab', '1 year', 100), ('light', '1 month', 3.333), ('setup', NULL, 500);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'collab'), ('zd_pro', 'light'), ('zd_pro', 'setup');
INSERT INTO coupon (code, percent_off, amount_off, currency, cycles) VALUES
    ('WELCOME20', 20, NULL, 'EUR', 2), ('TENOFF', NULL, 10, 'EUR', NULL);
-- tenants 1-5 renew the common way; 6-11 one by one
INSERT INTO account (tenant_id, id, name) SELECT g, g, 'tenant ' || g FROM generate_series(1, 11) AS g;
INSERT INTO account (tenant_id, id, name, parent_id) VALUES (1, 21, 'sub-account of 1', 1), (4, 24, 'sub-account of 4', 4);
SELECT count(*) AS subscribed FROM (
    SELECT subscribe(1, 'zd_pro', '1 month', 3, '2026-01-01'),
           subscribe(1, 'zd_team', '1 month', 1, '2026-01-05', 'always', 'WELCOME20'),
           subscribe(21, 'zd_pro', '1 month', 2, '2026-01-20', 'always', 'TENOFF'),
           subscribe(2, 'zd_pro', '1 month', 1, '2026-01-03'),
           subscribe(3, 'zd_team', '1 month', 1, '2026-01-31', 'always', 'TENOFF'),
           subscribe(4, 'zd_pro', '1 month', 4, '2026-01-02', 'always', 'WELCOME20'),
           subscribe(24, 'zd_team', '1 month', 1, '2026-01-02'),
           subscribe(5, 'zd_pro', '1 year', 2, '2025-02-10'),
           -- 6: one common, one with a pending quantity (C4)
           subscribe(6, 'zd_pro', '1 month', 2, '2026-01-01'),
           subscribe(6, 'zd_pro', '1 month', 5, '2026-01-01'),
           -- 7: two periods to catch up
           subscribe(7, 'zd_pro', '1 month', 1, '2025-12-01'),
           -- 8: cancelled at the period end (Z8)
           subscribe(8, 'zd_team', '1 month', 1, '2026-01-10'),
           -- 9: renews once more (R6)
           subscribe(9, 'zd_team', '1 month', 1, '2026-01-10', 'once'),
           -- 10: a batch cancelled at the period end (K4)
           subscribe(10, 'zd_pro', '1 month', 2, '2026-01-10'),
           -- 11: a cycle change (Z7)
           subscribe(11, 'zd_pro', '1 month', 2, '2026-01-10')) AS s;
SELECT count(purchase_addon(s.id, a.addon, a.quantity, lower(s.period) + interval '1 day')) AS batches
  FROM subscription AS s
  JOIN (VALUES (1, 'collab', 2), (1, 'light', 3), (1, 'setup', 1), (21, 'light', 1), (2, 'collab', 1),
               (4, 'collab', 1), (4, 'light', 7), (5, 'collab', 2), (6, 'collab', 1), (10, 'collab', 1), (10, 'light', 1))
       AS a(account_id, addon, quantity) ON a.account_id = s.account_id AND s.plan = 'zd_pro';
-- credit that pays part of the charges of tenants 1 and 4 (L10)
SELECT count(credit_account(a, 70, 'goodwill')) AS credited FROM unnest('{1,24,6}'::bigint[]) AS a;
SELECT set_quantity(id, 3, '2026-01-15') IS NOT NULL AS pending
  FROM subscription WHERE account_id = 6 AND quantity = 5;
SELECT cancel(id) IS NOT NULL AS cancelled FROM subscription WHERE account_id = 8;
SELECT cancel_addon(b.id) IS NOT NULL AS batch_cancelled
  FROM addon_batch AS b JOIN subscription AS s ON s.id = b.subscription_id WHERE s.account_id = 10 AND b.addon = 'light';
SELECT change_cycle(id, '1 year') IS NOT NULL AS cycle_changed FROM subscription WHERE account_id = 11;
-- usage billed in arrears (issue 21, U3): tenant 12's one metered
-- subscription renews set-based (renew_common_group bills its usage by
-- bill_usage); tenant 13's two (with credit, paid in renewal order) one by one
INSERT INTO plan (code, product, name, rank) VALUES ('zd_metered', 'desk', 'Metered', 3);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('zd_metered', '1 month', 20);
INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_metered', 'api_calls', NULL);
SELECT plan_usage_price('zd_metered', 'api_calls', 1000, 0.01);
INSERT INTO account (tenant_id, id, name) VALUES (12, 12, 'tenant 12'), (13, 13, 'tenant 13');
SELECT count(*) AS metered FROM (
    SELECT subscribe(12, 'zd_metered', '1 month', 1, '2026-01-03'),
           subscribe(13, 'zd_metered', '1 month', 1, '2026-01-04'),
           subscribe(13, 'zd_metered', '1 month', 1, '2026-01-06')) AS s;
SELECT record_usage(12, 'api_calls', 3000, 'k12', '2026-01-20') AS calls_12,
       record_usage(13, 'api_calls', 2500, 'k13', '2026-01-20') AS calls_13,
       credit_account(13, 25, 'goodwill') IS NOT NULL AS credited;

-- what renews which way: renew_common renews tenants 1-5 and 12 set-based and
-- the others (and 3, not due) by renew_account
SAVEPOINT ways;
SELECT * FROM renew_common('{1,2,3,4,5,6,7,8,9,10,11,12,13}', '2026-02-12');
ROLLBACK TO ways;

-- every row that a renewal writes, without its ids and clock times
CREATE FUNCTION pg_temp.written() RETURNS SETOF text LANGUAGE sql AS $$
    SELECT format('ledger %s', row(l.tenant_id, l.account_id, l.subscription_id, l.addon_batch_id, l.kind, l.amount,
                                   l.currency, l.period, l.item, l.plan,
                                   regexp_replace(l.description, 'charge \d+', 'charge #'),
                                   c.subscription_id, c.addon_batch_id, c.item, c.period, c.kind))
      FROM ledger AS l LEFT JOIN ledger AS c ON c.tenant_id = l.tenant_id AND c.id = l.charge_id
    UNION ALL
    -- each subscription's history in its order
    -- (invoices' ids come from a sequence that a rollback does not take
    -- back: the invoices are compared by their numbers, below)
    SELECT format('history %s', row(h.tenant_id, h.actor, h.operation, h.account_id, h.subscription_id,
                                    h.details - '{invoice_id,corrects_invoice_id}'::text[],
                                    h.db_user, h.db_session_user,
                                    row_number() OVER (PARTITION BY h.tenant_id, h.subscription_id, h.account_id, h.operation
                                                       ORDER BY h.id)))
      FROM history AS h
    UNION ALL
    SELECT format('event %s', row(e.tenant_id, e.type, e.account_id, e.subscription_id,
                                  e.payload - '{id,at,ledger_id,charge_id,invoice_id,corrects_invoice_id}'::text[],
                                  row_number() OVER (PARTITION BY e.tenant_id, e.subscription_id, e.type ORDER BY e.id)))
      FROM event AS e
    UNION ALL
    SELECT format('invoice %s', row(i.tenant_id, i.account_id, i.subscription_id, i.issuer, i.number, i.currency,
                                    i.total, i.paid, i.status, i.at, i.due_at))
      FROM invoice_record AS i
    UNION ALL
    SELECT format('subscription %s', s) FROM subscription AS s
    UNION ALL
    SELECT format('usage %s', row(p.tenant_id, p.subscription_id, p.feature, p.period, p.used, p.aggregate, p.amount,
                                  p.ledger_id IS NULL))
      FROM usage_period AS p
    UNION ALL
    SELECT format('counter %s', row(c.tenant_id, c.account_id, c.feature, c.used, c.peak, c.closes, c.closed_at))
      FROM usage_counter AS c
$$;
CREATE TEMP TABLE ways (way text, line text);
DO $$
DECLARE
    set_based text[];
    one_by_one text[];
    t bigint;
    handled integer := 0;
BEGIN
    BEGIN
        handled := subscription.renew_due('2026-02-12');
        set_based := ARRAY(SELECT pg_temp.written()) || format('handled %s', handled);
        RAISE EXCEPTION USING ERRCODE = 'P0004';
    EXCEPTION WHEN assert_failure THEN
    END;
    BEGIN
        handled := 0;
        FOR t IN SELECT a.id FROM subscription.account AS a WHERE a.parent_id IS NULL ORDER BY a.id LOOP
            handled := handled + subscription.renew_account(t, '2026-02-12');
        END LOOP;
        one_by_one := ARRAY(SELECT pg_temp.written()) || format('handled %s', handled);
        RAISE EXCEPTION USING ERRCODE = 'P0004';
    EXCEPTION WHEN assert_failure THEN
    END;
    INSERT INTO ways SELECT 'set-based', unnest(set_based);
    INSERT INTO ways SELECT 'one by one', unnest(one_by_one);
END
$$;
-- the rows of each way; none of one way only
SELECT way, count(*) AS rows, count(*) FILTER (WHERE line LIKE 'ledger%') AS ledger,
       count(*) FILTER (WHERE line LIKE 'history%') AS history, count(*) FILTER (WHERE line LIKE 'event%') AS events
  FROM ways GROUP BY way ORDER BY way;
(SELECT line FROM ways WHERE way = 'set-based' EXCEPT ALL SELECT line FROM ways WHERE way = 'one by one')
UNION ALL
(SELECT line FROM ways WHERE way = 'one by one' EXCEPT ALL SELECT line FROM ways WHERE way = 'set-based');

-- the renewal itself, set-based: the new periods' charges, their
-- discounts and credit uses
SELECT renew_due('2026-02-12') AS handled;
SELECT account_id, kind, amount, period, item, description FROM ledger
 WHERE tenant_id <= 5 AND lower(period) BETWEEN '2026-02-01' AND '2026-02-12'
 ORDER BY account_id, subscription_id, id;
-- a second run charges nothing (C2)
SELECT renew_due('2026-02-12') AS handled_again;
SELECT count(*) AS still_due FROM subscription WHERE status IN ('active', 'trialing') AND upper(period) <= '2026-02-12';
ROLLBACK;

-- Issue 18: renew_common_group opens each invoice with the total of the
-- lines it writes into it, and invoice_totals does not write it again.  A
-- line charged already (C2: here the next period's plan line, written in
-- another currency, so on an invoice of its own) is not written: an
-- invoice left with some of its lines holds their sum, one left with none
-- holds none
BEGIN;
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
INSERT INTO product (code, name) VALUES ('desk', 'Zendesk Support');
INSERT INTO plan (code, product, name) VALUES ('zd_pro', 'desk', 'Professional');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_pro', '1 month', 55, true);
INSERT INTO addon (code, product, name) VALUES ('collab', 'desk', 'Collaboration');
INSERT INTO addon_price (addon, cycle, amount) VALUES ('collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'collab');
INSERT INTO account (tenant_id, id, name) SELECT g, g, 'tenant ' || g FROM generate_series(1, 3) AS g;
SELECT count(*) AS subscribed FROM (
    SELECT subscribe(1, 'zd_pro', '1 month', 2, '2026-01-01'),
           subscribe(2, 'zd_pro', '1 month', 1, '2026-01-01'),
           subscribe(3, 'zd_pro', '1 month', 3, '2026-01-01')) AS s;
SELECT count(purchase_addon(s.id, 'collab', 1, '2026-01-02')) AS batches FROM subscription AS s WHERE s.account_id IN (1, 3);
INSERT INTO ledger (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, description)
SELECT s.tenant_id, s.account_id, s.id, 'charge', 1, 'USD', nth_period(s.anchor, s.cycle, 2), 'plan', s.plan, 'charged before'
  FROM subscription AS s WHERE s.account_id IN (1, 2);
SAVEPOINT common;
SELECT handled, rest FROM renew_common('{1,2,3}', '2026-02-01');
-- each February invoice: its total, its lines' sum and count, as announced
SELECT i.account_id, i.currency, i.total, (SELECT sum(line_amount(l.kind, l.amount)) FROM ledger AS l
                                            WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id) AS lines_sum,
       (SELECT count(*) FROM ledger AS l WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id) AS lines,
       (SELECT h.details ->> 'total' FROM history AS h
         WHERE h.operation = 'invoice_open' AND (h.details ->> 'invoice_id')::bigint = i.id) AS announced
  FROM invoice_record AS i WHERE i.at = '2026-02-01' ORDER BY i.account_id, i.currency;
ROLLBACK TO common;
-- the same renewals one by one give the same totals
SELECT renew_account(t, '2026-02-01') AS handled FROM generate_series(1, 3) AS t;
SELECT i.account_id, i.currency, i.total FROM invoice_record AS i WHERE i.at = '2026-02-01' ORDER BY i.account_id, i.currency;
ROLLBACK;

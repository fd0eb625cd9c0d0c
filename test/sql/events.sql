-- The outbox (issue 20): every billing change writes its events in its
-- own transaction (E1), renewal.upcoming once per period (E5), data.trimmed
-- with its counts, claim_events / ack_events (E4, E6), prune_events (E7),
-- and the bad input of each.  In a database of its own: claims only see
-- committed events.
\set VERBOSITY default
\set regress_db :DBNAME
CREATE DATABASE subscription_events;
\c subscription_events
SET client_min_messages = warning;
CREATE EXTENSION subscription;
RESET client_min_messages;
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET subscription.max_backdate = '100 years';
SET subscription.max_ahead = '100 years';

INSERT INTO product (code, name, upgrade, downgrade) VALUES ('desk', 'Zendesk Support', 'prorate', 'immediate');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_team', '1 month', 19, true), ('zd_pro', '1 month', 55, true);
INSERT INTO addon (code, product, name, one_time, feature, units) VALUES ('zd_collab', 'desk', 'Collaboration', false, NULL, 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_collab', '1 month', 10);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_pro', 'zd_collab');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Globex'), (2, 2, 'Initech'), (3, 3, 'Hooli'), (4, 4, 'Umbrella');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (10, 1, 1, 'gus@globex', 'owner'), (11, 1, 1, 'ann@globex', 'admin');

-- E1: each change, its events, in the change's transaction
SELECT subscribe(1, 'zd_team', '1 month', 2, '2026-01-01') AS team \gset
SELECT subscribe(2, 'zd_pro', '1 month', 1, '2026-01-01') AS other \gset
SELECT subscribe(3, 'zd_team', '1 month', 1, '2026-01-01') AS third \gset
SELECT set_quantity(:team, 3, '2026-01-05');
SELECT count(*) FROM change_plan(:team, 'zd_pro', '2026-01-10');
SELECT license_consume(:team, 10);
INSERT INTO license (subscription_id, member_id) VALUES (:team, 11);
SELECT license_release(:team, 10);
SELECT count(*) FROM purchase_addon(:other, 'zd_collab', 2, '2026-01-12');
SELECT renew_due('2026-02-01') AS renewed;
SELECT cancel(:other) IS NOT NULL AS cancel_scheduled;
SELECT set_renewal(:third, 'none');
SELECT renew_due('2026-03-01') AS renewed;
SELECT id, type, account_id, subscription_id, payload FROM event ORDER BY id;

-- a rolled-back change leaves no event (and no notification)
SELECT max(id) AS last FROM event \gset
BEGIN;
SELECT set_quantity(:team, 5, '2026-03-02');
SELECT count(*) AS inside FROM event WHERE id > :last;
-- I8: the invoice is there, its invoice.opened not yet (written at the commit)
SELECT (SELECT count(*) FROM invoice_record WHERE NOT announced) AS unannounced_invoices,
       (SELECT count(*) FROM event WHERE id > :last AND type = 'invoice.opened') AS opened_inside;
ROLLBACK;
SELECT count(*) AS after_rollback FROM event WHERE id > :last;
SELECT count(*) AS unannounced_after_rollback FROM invoice_record WHERE NOT announced;
-- I8: an invoice that gets lines in two statements of one transaction: one
-- invoice.opened, at the commit, with the total and lines of both; a
-- payment in the same transaction: invoice.paid after it, never before
BEGIN;
SELECT set_quantity(:team, 4, '2026-03-05');
SELECT count(*) FROM purchase_addon(:team, 'zd_collab', 1, '2026-03-05');
SELECT max(id) AS opened_invoice FROM invoice_record WHERE subscription_id = :team \gset
-- the lines of both statements, on one invoice
SELECT kind, item, amount FROM ledger WHERE invoice_id = :opened_invoice ORDER BY id;
SELECT count(*) AS opened_inside FROM event WHERE id > :last AND type = 'invoice.opened';
COMMIT;
SELECT type, payload FROM event WHERE id > :last AND payload -> 'invoice_id' = to_jsonb(:opened_invoice) ORDER BY id;
SELECT (SELECT (payload ->> 'total')::numeric FROM event WHERE type = 'invoice.opened' AND payload -> 'invoice_id' = to_jsonb(:opened_invoice))
       = (SELECT sum(line_amount(kind, amount)) FROM ledger WHERE invoice_id = :opened_invoice) AS total_of_all_lines;
SELECT max(id) AS last FROM event \gset
BEGIN;
SELECT set_quantity(:team, 5, '2026-03-06');
SELECT max(id) AS paid_invoice FROM invoice_record WHERE subscription_id = :team \gset
SELECT record_payment(:paid_invoice, total, 'evt-i8', '2026-03-06') IS NOT NULL AS paid FROM invoice_record WHERE id = :paid_invoice;
COMMIT;
SELECT type, payload FROM event WHERE id > :last AND type ~ '^(invoice|payment)[.]' ORDER BY id;
-- a change that fails leaves none either
SELECT pg_temp.error_of(format('SELECT set_quantity(%s, 0)', :team)) AS failed_change;
SELECT count(*) AS after_error FROM event WHERE id > :last;
-- every payload has its version
SELECT count(*) AS without_version FROM event WHERE NOT payload ? 'version';

-- E5: renewal.upcoming once per subscription and period, in the notice window
-- (renewal_notice reads now(): a subscription of today's, renewed in a month)
SELECT subscribe(4, 'zd_team', '1 month', 1, now()) AS today \gset
SET subscription.notice_days = 40;
SELECT announce_renewals() AS announced;
SELECT announce_renewals() AS announced_again;
SELECT type, subscription_id = :today AS today, payload - 'renews_at' AS payload,
       (payload ->> 'renews_at')::timestamptz = (SELECT upper(period) FROM subscription WHERE id = :today) AS renews_at
  FROM event WHERE type = 'renewal.upcoming' ORDER BY id;
-- out of the window: nothing
RESET subscription.notice_days;
SET subscription.notice_days = 0;
SELECT announce_renewals() AS outside_window;
RESET subscription.notice_days;

-- E4, E6: a consumer's claims, acknowledgements and position
SELECT id, type FROM claim_events('mailer', 3);
-- the claim is held: nothing more until it is acknowledged or its lease ends
SELECT count(*) AS while_held FROM claim_events('mailer');
SELECT ack_events('mailer', 2) AS position;
SELECT count(*) AS partly_acked FROM claim_events('mailer');
SELECT ack_events('mailer', 3) AS position;
SELECT ack_events('mailer', 1) AS never_back;
-- another consumer keeps its own position
SELECT count(*) AS billing_sees FROM claim_events('billing', 1000);
SELECT id, type FROM claim_events('mailer', 2);
-- a lease that ends gives the events again (at least once)
SELECT consumer, position, claimed_up_to FROM event_consumer ORDER BY consumer;
UPDATE event_consumer SET claimed_until = now() - interval '1 second' WHERE consumer = 'mailer';
SELECT id, type FROM claim_events('mailer', 2);
SELECT ack_events('mailer', 5) AS position;

-- bad input
SELECT pg_temp.error_of($$SELECT * FROM claim_events(NULL)$$) AS null_consumer;
SELECT pg_temp.error_of($$SELECT * FROM claim_events('x', NULL)$$) AS null_max;
SELECT pg_temp.error_of($$SELECT * FROM claim_events('x', 1, NULL)$$) AS null_lease;
SELECT pg_temp.error_of($$SELECT * FROM claim_events('')$$) AS empty_consumer;
SELECT pg_temp.error_of($$SELECT * FROM claim_events('x', 0)$$) AS zero_max;
SELECT pg_temp.error_of($$SELECT * FROM claim_events('x', 100001)$$) AS huge_max;
SELECT pg_temp.error_of($$SELECT * FROM claim_events('x', 1, '-1 second')$$) AS negative_lease;
SELECT pg_temp.error_of($$SELECT ack_events(NULL, 1)$$) AS ack_null_consumer;
SELECT pg_temp.error_of($$SELECT ack_events('mailer', NULL)$$) AS ack_null_up_to;
SELECT pg_temp.error_of($$SELECT ack_events('nobody', 1)$$) AS ack_unknown;
SELECT pg_temp.error_of($$SELECT ack_events('mailer', 1000000)$$) AS ack_unclaimed;
SELECT pg_temp.error_of($$SET subscription.event_retention = '-1 day'$$) AS bad_retention;

-- E7: prune what is older than the retention and acknowledged by every consumer
SELECT count(*) AS events FROM event;
CALL prune_events();
SET subscription.event_retention = '1 microsecond';
SELECT position AS slowest FROM event_consumer ORDER BY position LIMIT 1;
CALL prune_events();
SELECT min(id) AS oldest_left FROM event;
SELECT ack_events('billing', claimed_up_to) AS billing_done FROM event_consumer WHERE consumer = 'billing';
CALL prune_events();
SELECT min(id) AS oldest_left FROM event;
RESET subscription.event_retention;

-- data.trimmed: a downgrade trims rows of the application's table, one
-- event with the count per table (C6's drop_newest)
INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_team', 'rooms', 1), ('zd_pro', 'rooms', 5);
CREATE TABLE public.room (id int PRIMARY KEY, account_id bigint NOT NULL, activated_at timestamptz);
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');
INSERT INTO public.room SELECT g, 1, '2026-01-01'::timestamptz + g * interval '1 day' FROM generate_series(1, 3) AS g;
SELECT count(*) FROM change_plan(:team, 'zd_team', '2026-03-10');
SELECT count(*) AS trimmed FROM apply_downgrade(:team);
SELECT type, account_id, subscription_id, payload FROM event WHERE type IN ('data.trimmed', 'subscription.plan_changed')
   AND id > :last ORDER BY id;
SELECT count(*) AS rooms_left FROM public.room;

-- E1: each type from each change the catalogue names for it
-- (docs/integrating.md#event-catalogue), beyond those above: a pending plan
-- applied at renewal (plan_changed), an add-on batch cancelled, which ends
-- with the period (addon.ended, its batch_id), cancel_account and end_early
-- (cancelled), a migration
-- (plan_changed)
SELECT max(id) AS last FROM event \gset
INSERT INTO product (code, name, downgrade) VALUES ('books', 'Bookkeeping', 'end_of_period');
INSERT INTO plan (code, product, name, rank) VALUES ('bk_basic', 'books', 'Basic', 1), ('bk_plus', 'books', 'Plus', 2);
INSERT INTO plan_price (plan, cycle, amount) VALUES ('bk_basic', '1 month', 10), ('bk_plus', '1 month', 20);
INSERT INTO addon (code, product, name, one_time, feature, units) VALUES ('bk_payroll', 'books', 'Payroll', false, NULL, 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('bk_payroll', '1 month', 5);
INSERT INTO plan_addon (plan, addon) VALUES ('bk_plus', 'bk_payroll'), ('bk_basic', 'bk_payroll');
INSERT INTO account (id, tenant_id, name) VALUES (5, 5, 'Stark'), (6, 6, 'Wayne'), (7, 7, 'Acme'), (8, 8, 'Tyrell');
SELECT subscribe(5, 'bk_plus', '1 month', 1, '2027-01-01') AS books \gset
SELECT purchase_addon(:books, 'bk_payroll', 1, '2027-01-02') AS payroll \gset
SELECT cancel_addon(:payroll) AS payroll_ends;
SELECT effective_at FROM change_plan(:books, 'bk_basic', '2027-01-03');
SELECT subscribe(6, 'bk_basic', '1 month', 1, '2027-01-01') AS wayne \gset
SELECT * FROM cancel_account(6);
SELECT subscribe(7, 'bk_basic', '1 month', 1, '2027-01-01') AS acme \gset
SELECT end_early(:acme, '2027-01-10') AS refund;
SELECT subscribe(8, 'bk_basic', '1 month', 1, '2027-01-01') AS tyrell \gset
SELECT migrate_subscriptions('bk_basic', 'bk_plus', '2027-01-05', '0 days') AS migrating;
SELECT renew_due('2027-02-01') > 0 AS renewed;
SELECT account_id, type, payload - 'version' AS payload FROM event
 WHERE id > :last AND type IN ('subscription.plan_changed', 'addon.ended', 'subscription.cancelled')
 ORDER BY account_id, id;
SELECT (SELECT payload -> 'batch_id' FROM event WHERE id > :last AND type = 'addon.ended') = to_jsonb(:payroll) AS names_its_batch;

\c :regress_db
DROP DATABASE subscription_events;

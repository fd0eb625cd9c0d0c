-- Past due and dunning (issue 19, item 5; rules D1-D5): the whole ladder
-- on a simulated timeline (explicit times), with exact amounts; access
-- while past due; a payment arriving mid-ladder; each final action
-- (freeze, downgrade, cancel, keep); a void ending it; the retries view;
-- the events; bad input with its SQLSTATE and nothing written.
\set VERBOSITY default
\i test/sql/include/setup.psql
-- the invoices' ids too start at 1 (events and hints name them)
SELECT setval(pg_get_serial_sequence('subscription.invoice_record', 'id'), 1, false) IS NOT NULL AS reset;
-- (on Citus the invoices are written on the tenant's shard, numbered from
-- the worker's range: there too from its start, test/expected_citus)
\set worker_id_tables invoice_record
\i test/sql/include/worker_ids.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- on Citus the workers' parts of the transaction take its SET LOCALs too:
-- the payment terms, the actor
SET LOCAL citus.propagate_set_commands = 'local';
-- the events' payloads show the cycle in this session's IntervalStyle there too
SET LOCAL IntervalStyle = 'postgres_verbose';
SET LOCAL subscription.payment_terms = 7;
-- I8: the case runs in one transaction: each invoice's opening (and the
-- status it reached) is written at the end of its statement, not at the commit
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;

INSERT INTO product (code, name, dunning_days, dunning_action) VALUES
    ('desk', 'Zendesk Support', '{3,5,7}', 'freeze'),
    ('meet', 'ClickMeeting', '{3,5,7}', 'downgrade'),
    ('crowd', 'CrowdHandler', '{2,2}', 'cancel'),
    ('notes', 'Notes', '{1}', 'keep');
INSERT INTO plan (code, product, name, rank) VALUES
    ('zd_team', 'desk', 'Team', 1),
    ('cm_free', 'meet', 'Free', 0), ('cm_live', 'meet', 'Live', 1),
    ('ch_starter', 'crowd', 'Starter', 1),
    ('nt_plus', 'notes', 'Plus', 1);
INSERT INTO plan_price (plan, cycle, amount) VALUES
    ('zd_team', '30 days', 30), ('cm_free', '30 days', 0), ('cm_live', '30 days', 25),
    ('ch_starter', '30 days', 49), ('nt_plus', '30 days', 9);
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('zd_team', 'rooms', 5), ('cm_free', 'rooms', 1), ('cm_live', 'rooms', 3), ('ch_starter', 'rooms', 2),
    ('nt_plus', 'rooms', 2);
INSERT INTO account (id, tenant_id, name) VALUES
    (1, 1, 'Helpdesk Ltd'), (2, 2, 'Webinars SA'), (3, 3, 'Queue Ltd'), (4, 4, 'Queue Two'), (5, 5, 'Scribes'),
    (6, 6, 'Voided Inc');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (10, 1, 1, 'agent1@helpdesk', 'owner'), (11, 1, 1, 'agent2@helpdesk', 'member'), (40, 4, 4, 'ops@queue2', 'owner');
CREATE TABLE public.room (id bigserial, account_id bigint NOT NULL, activated_at timestamptz NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.room
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');

-- D1: the Zendesk renewal of 30.00 on January 1st, due on the 8th (payment_terms 7)
SELECT subscribe(1, 'zd_team', '30 days', 2, '2026-01-01') AS zd \gset
SELECT id AS zd_invoice, total, due_at FROM invoice_record WHERE subscription_id = :zd \gset
SELECT :'total' AS total, :'due_at' AS due_at;
SELECT run_dunning_tenant(1, '2026-01-07') AS before_due;
SELECT status FROM subscription WHERE id = :zd;
SELECT run_dunning_tenant(1, '2026-01-08') AS at_due, run_dunning_tenant(1, '2026-01-08') AS again;
SELECT status, past_due_since, past_due_invoice_id = :zd_invoice AS for_invoice, dunning_step, dunning_frozen
  FROM subscription WHERE id = :zd;
-- D2: past due keeps the plan's rooms and seats
INSERT INTO public.room (account_id, activated_at)
SELECT 1, '2026-01-09'::timestamptz + n * interval '1 hour' FROM generate_series(1, 3) AS n;
SELECT license_consume(:zd, 10) AS seats_left;
SELECT effective_limit(1, 'rooms') AS rooms_limit;
-- and changes nothing until paid (55000), nor renews
SELECT pg_temp.error_of(format('SELECT change_plan(%s, %L, %L)', :zd, 'zd_team', '2026-01-09'));
-- no retry is due before the ladder's first step (January 11th)
SELECT count(*) AS retries FROM dunning_retry;
SELECT run_dunning_tenant(1, '2026-01-10') AS before_step_1;
-- D3: step 1 on the 11th, a retry; the view lists it for the payment job
SELECT run_dunning_tenant(1, '2026-01-11') AS step_1, run_dunning_tenant(1, '2026-01-11') AS same_step;
SELECT subscription_id = :zd AS zd, document_number, due, currency, step, steps, retry_at FROM dunning_retry;
-- the job tries and fails: the retry is answered, and leaves the view
SELECT record_payment_failure(:zd_invoice, 'card_declined', '2026-01-11 12:00');
SELECT count(*) AS retries FROM dunning_retry;
-- a late run takes the fallen steps, each once: step 2 (the 16th), then
-- the last (the 23rd), the final action 'freeze'
SELECT run_dunning_tenant(1, '2026-01-25') AS late_run, run_dunning_tenant(1, '2026-02-20') AS after_end;
SELECT status, dunning_step, dunning_frozen FROM subscription WHERE id = :zd;
SELECT details ->> 'step' AS step, details ->> 'action' AS action, details ->> 'due' AS due, details ->> 'at' AS step_at
  FROM history WHERE operation = 'dunning_step' AND subscription_id = :zd ORDER BY id;
-- D4 freeze: growing writes refused (55000, naming the invoice), shrinking ones not, nothing deleted
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id, activated_at) VALUES (1, '2026-01-26')$$);
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 11)', :zd));
SELECT effective_limit(1, 'rooms') AS frozen_limit;
SELECT count(*) AS rooms, (SELECT count(*) FROM license WHERE subscription_id = :zd) AS seats
  FROM public.room WHERE account_id = 1;
-- not renewed while past due: its period ended on January 31st
SELECT renew_account(1, '2026-02-05') AS renewed;
SELECT count(*) AS charges FROM ledger WHERE subscription_id = :zd AND kind = 'charge';
-- D5: a partial payment changes nothing; the full one makes it active and
-- lifts the freeze in the same transaction
SELECT record_payment(:zd_invoice, 10, 'ch_zd_1', '2026-02-06') IS NOT NULL AS partly_paid;
SELECT status, dunning_frozen FROM subscription WHERE id = :zd;
SELECT record_payment(:zd_invoice, 20, 'ch_zd_2', '2026-02-06') IS NOT NULL AS paid;
SELECT status, past_due_since, past_due_invoice_id, dunning_step, dunning_frozen FROM subscription WHERE id = :zd;
SELECT status, total, paid FROM invoice_record WHERE id = :zd_invoice;
INSERT INTO public.room (account_id, activated_at) VALUES (1, '2026-02-07');
SELECT license_consume(:zd, 11) AS seats_left;
SELECT effective_limit(1, 'rooms') AS rooms_limit;
-- renewed again from where its period ended
SELECT renew_account(1, '2026-02-07') AS renewed;
SELECT amount, period FROM ledger WHERE subscription_id = :zd AND kind = 'charge' ORDER BY id;
-- the events of its dunning, in order
SELECT type, payload - 'version' AS payload FROM event
 WHERE subscription_id = :zd AND (type LIKE 'subscription.%' OR type LIKE 'payment.failed' OR type = 'invoice.paid')
 ORDER BY id;

-- D1: a failed charge makes it past due at once; D4 downgrade: on the last
-- step (day 15) to the free plan, the newest rooms trimmed to its 1, the
-- invoice of 25.00 uncollectible, and the subscription active on cm_free
SELECT subscribe(2, 'cm_live', '30 days', 1, '2026-03-01') AS cm \gset
SELECT id AS cm_invoice FROM invoice_record WHERE subscription_id = :cm \gset
INSERT INTO public.room (account_id, activated_at)
SELECT 2, '2026-03-01'::timestamptz + n * interval '1 hour' FROM generate_series(1, 3) AS n;
SELECT record_payment_failure(:cm_invoice, 'insufficient_funds', '2026-03-02');
SELECT status, past_due_since FROM subscription WHERE id = :cm;
SELECT run_dunning_tenant(2, '2026-03-16') AS two_steps;
SELECT status, plan, dunning_step FROM subscription WHERE id = :cm;
SELECT run_dunning_tenant(2, '2026-03-17') AS last_step;
SELECT status, plan, pending_plan, past_due_since, dunning_step FROM subscription WHERE id = :cm;
SELECT status, total, paid FROM invoice_record WHERE id = :cm_invoice;
SELECT count(*) AS rooms_left, min(activated_at) AS kept FROM public.room WHERE account_id = 2;
SELECT effective_limit(2, 'rooms') AS rooms_limit;
SELECT type, payload ->> 'amount' AS amount, payload ->> 'uncollectible_at' AS at FROM event
 WHERE type = 'invoice.uncollectible' AND account_id = 2;
-- an uncollectible invoice takes no payment (55000)
SELECT pg_temp.error_of(format('SELECT record_payment(%s, 25, %L, %L)', :cm_invoice, 'late', '2026-03-20'));

-- a payment arriving mid-ladder: 49.00 due March 8th, step 1 on the 10th,
-- paid on the 11th: active again, and later runs take no step
SELECT subscribe(3, 'ch_starter', '30 days', 1, '2026-03-01') AS ch \gset
SELECT id AS ch_invoice FROM invoice_record WHERE subscription_id = :ch \gset
SELECT run_dunning_tenant(3, '2026-03-10') AS past_due_and_step_1;
SELECT status, dunning_step FROM subscription WHERE id = :ch;
SELECT record_payment(:ch_invoice, 49, 'ch_ch_1', '2026-03-11') IS NOT NULL AS paid;
SELECT run_dunning_tenant(3, '2026-04-30') AS later;
SELECT status, dunning_step FROM subscription WHERE id = :ch;
SELECT count(*) AS steps FROM history WHERE operation = 'dunning_step' AND subscription_id = :ch;

-- D4 cancel: on the last step (March 12th) cancelled, its seat released
-- from the counter, the invoice uncollectible
SELECT subscribe(4, 'ch_starter', '30 days', 1, '2026-03-01') AS ch2 \gset
SELECT license_consume(:ch2, 40) AS seats_left;
SELECT run_dunning_tenant(4, '2026-03-12') AS to_the_end;
SELECT s.status, i.status AS invoice_status FROM subscription AS s JOIN invoice_record AS i ON i.tenant_id = s.tenant_id AND i.subscription_id = s.id
 WHERE s.id = :ch2;
SELECT type FROM event WHERE subscription_id = :ch2 AND type LIKE 'subscription.%' ORDER BY id;

-- D4 keep: the invoice of 9.00 written off on the last step (March 9th),
-- the subscription active with its access, and it renews
SELECT subscribe(5, 'nt_plus', '30 days', 1, '2026-03-01') AS nt \gset
SELECT run_dunning_tenant(5, '2026-03-09') AS to_the_end;
-- (the limit asked apart from the rows: on Citus a function that reads
-- accounts is not run inside a query of the shards)
WITH x AS MATERIALIZED (
    SELECT s.status, i.status AS invoice_status
      FROM subscription AS s JOIN invoice_record AS i ON i.tenant_id = s.tenant_id AND i.subscription_id = s.id WHERE s.id = :nt)
SELECT x.status, x.invoice_status, effective_limit(5, 'rooms') AS rooms_limit FROM x;
SELECT renew_account(5, '2026-03-31') AS renewed;

-- D5: a void of the invoice ends it too
SELECT subscribe(6, 'nt_plus', '30 days', 1, '2026-03-01') AS v \gset
SELECT id AS v_invoice FROM invoice_record WHERE subscription_id = :v \gset
SELECT run_dunning_tenant(6, '2026-03-08') AS past_due;
SELECT status FROM subscription WHERE id = :v;
SELECT void_invoice(:v_invoice, 'sold by mistake', '2026-03-08') IS NOT NULL AS voided;
SELECT status, past_due_invoice_id FROM subscription WHERE id = :v;

-- bad input: the SQLSTATE, and nothing written
SELECT (SELECT count(*) FROM history) AS history_before,
       (SELECT count(*) FROM subscription WHERE status = 'past_due') AS past_due_before \gset
SELECT pg_temp.error_of($$SELECT run_dunning_tenant(NULL, '2026-03-01')$$);              -- 22004
SELECT pg_temp.error_of($$SELECT run_dunning_tenant(1, NULL)$$);                          -- 22004
SELECT pg_temp.error_of($$SELECT run_dunning_tenant(1, 'infinity')$$);                    -- 22023
SELECT run_dunning_tenant(999, '2026-03-01') AS unknown_tenant;                            -- nothing to do
SELECT pg_temp.error_of($$CALL run_dunning(NULL)$$);                                      -- 22004
SELECT pg_temp.error_of($$CALL run_dunning('2026-03-01', 0)$$);                           -- 22023
SELECT pg_temp.error_of($$CALL run_dunning('2026-03-01')$$);                              -- 2D000: in a transaction block
SELECT pg_temp.error_of($$UPDATE product SET dunning_days = '{}' WHERE code = 'desk'$$);  -- 23514
SELECT pg_temp.error_of($$UPDATE product SET dunning_days = '{3,0}' WHERE code = 'desk'$$); -- 23514
SELECT pg_temp.error_of($$UPDATE product SET dunning_days = '{3,NULL}' WHERE code = 'desk'$$); -- 23514
SELECT pg_temp.error_of($$UPDATE product SET dunning_action = 'email' WHERE code = 'desk'$$); -- 23514
-- back-office work: not as an actor (42501)
SET LOCAL subscription.actor = '10';
SELECT pg_temp.error_of($$SELECT run_dunning_tenant(1, '2026-03-01')$$);                  -- 42501
RESET subscription.actor;
SELECT (SELECT count(*) FROM history) = :history_before AS no_history,
       (SELECT count(*) FROM subscription WHERE status = 'past_due') = :past_due_before AS no_change;
-- the rows keep the state whole (23514)
SELECT pg_temp.error_of(format('UPDATE subscription SET status = %L WHERE id = %s', 'past_due', :nt));

ROLLBACK;

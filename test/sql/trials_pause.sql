-- Trials and pause (issue 19): trials converting, downgrading and
-- expiring; one trial per account and product; pause across a renewal in
-- both modes, with exact amounts; a freeze refusing writes on an enforced
-- table and a seat, then resume; bad input with its SQLSTATE and nothing
-- written.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- on Citus (test/citus.sh) the events are written on the tenant's worker:
-- their payloads show the cycle in this session's IntervalStyle there too
SET LOCAL citus.propagate_set_commands = 'local';
SET LOCAL IntervalStyle = 'postgres_verbose';

INSERT INTO product (code, name, trial_end) VALUES
    ('meet', 'ClickMeeting', 'convert'), ('desk', 'Zendesk Support', 'downgrade'), ('notes', 'Notes', 'expire');
INSERT INTO plan (code, product, name, rank) VALUES
    ('cm_free', 'meet', 'Free', 0), ('cm_live', 'meet', 'Live', 1),
    ('zd_free', 'desk', 'Free', 0), ('zd_team', 'desk', 'Team', 1), ('zd_pro', 'desk', 'Professional', 2),
    ('nt_plus', 'notes', 'Plus', 1);
INSERT INTO plan_price (plan, cycle, amount, trial) VALUES
    ('cm_free', '30 days', 0, NULL), ('cm_live', '30 days', 25, '14 days'),
    ('zd_free', '30 days', 0, NULL), ('zd_team', '30 days', 30, NULL), ('zd_pro', '30 days', 55, '7 days'),
    ('nt_plus', '30 days', 9, '10 days');
INSERT INTO plan_limit (plan, feature, value) VALUES
    ('cm_free', 'rooms', 1), ('cm_live', 'rooms', 3),
    ('zd_free', 'rooms', 1), ('zd_team', 'rooms', 5), ('zd_pro', 'rooms', 3), ('nt_plus', 'rooms', 2);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Webinars SA'), (2, 2, 'Helpdesk Ltd'), (3, 3, 'Scribes'), (4, 4, 'Globex'), (5, 5, 'Initech');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (50, 5, 5, 'owner@initech', 'owner'), (51, 5, 5, 'ann@initech', 'member'),
    (10, 1, 1, 'host@webinars', 'owner'), (11, 1, 1, 'guest@webinars', 'member');

CREATE TABLE public.room (id bigserial, account_id bigint NOT NULL, activated_at timestamptz NOT NULL, PRIMARY KEY (account_id, id));
\set app_tables public.room
\i test/sql/include/app_tables.psql
SELECT enforce_limit('public.room', 'rooms', 'account_id', 'drop_newest', 'activated_at');

-- a trial: trialing, charged 0.00, with its plan's limits (3 rooms)
SELECT subscribe(1, 'cm_live', '30 days', 1, '2026-01-01') AS live \gset
SELECT status, period, anchor, period_number, trial_ends FROM subscription WHERE id = :live;
SELECT amount, period, description FROM ledger WHERE subscription_id = :live ORDER BY id;
INSERT INTO public.room (account_id, activated_at)
SELECT 1, '2026-01-02'::timestamptz + n * interval '1 hour' FROM generate_series(1, 3) AS n;
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id, activated_at) VALUES (1, '2026-01-03')$$);
-- and its plan's seats: one license (quantity 1), assigned during the trial
SELECT license_consume(:live, 10) AS left_in_trial;
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 11)', :live));
-- renewal_notice lists the trial ending, and what its product makes of it
SELECT subscription_id, renews_at, plan, amount, trial_end FROM renewal_notice WHERE account_id = 1;
-- one trial per account and product (55000), a product's other plan too
SELECT pg_temp.error_of($$SELECT subscribe(1, 'cm_live', '30 days', 1, '2026-01-05')$$);
-- a trial changes nothing until it ends, and is not paused (55000)
SELECT pg_temp.error_of(format('SELECT set_renewal(%s, %L)', :live, 'once'));
SELECT pg_temp.error_of(format('SELECT pause(%s, %L)', :live, '2026-01-05'));
-- 'convert': the first period starts at the trial's end and is charged 25.00
SELECT renew_due('2026-01-14') AS before_end, renew_due('2026-01-15') AS at_end;
SELECT status, period, anchor, period_number, trial_ends FROM subscription WHERE id = :live;
SELECT amount, period, description FROM ledger WHERE subscription_id = :live ORDER BY id;
SELECT renew_due('2026-02-14') AS next_period;
SELECT amount, period FROM ledger WHERE subscription_id = :live ORDER BY id;

-- 'downgrade': to the free plan through apply_downgrade, trimming the
-- newest rooms (drop_newest) to its limit of 1, charged 0.00
SELECT subscribe(2, 'zd_pro', '30 days', 1, '2026-01-01') AS pro \gset
INSERT INTO public.room (account_id, activated_at)
SELECT 2, '2026-01-02'::timestamptz + n * interval '1 hour' FROM generate_series(1, 3) AS n;
SELECT subscription_id, renews_at, plan, amount, trial_end FROM renewal_notice WHERE account_id = 2;
SELECT renew_due('2026-01-08') AS at_end;
SELECT status, plan, period, pending_plan FROM subscription WHERE id = :pro;
SELECT amount, period, plan, description FROM ledger WHERE subscription_id = :pro ORDER BY id;
SELECT count(*) AS rooms_left, min(activated_at) AS kept FROM public.room WHERE account_id = 2;
SELECT action, subscription_id = :pro AS by_trial, old_row ->> 'activated_at' AS activated_at
  FROM trimmed WHERE account_id = 2 ORDER BY id;

-- 'expire': nothing is charged, the limits go with it
SELECT subscribe(3, 'nt_plus', '30 days', 1, '2026-01-01') AS plus \gset
SELECT renew_due('2026-01-11') AS at_end;
SELECT status, period FROM subscription WHERE id = :plus;
SELECT sum(amount) AS charged FROM ledger WHERE subscription_id = :plus;
SELECT effective_limit(3, 'rooms') AS rooms_limit;

-- pause 'keep_access' across a renewal: paid 30.00 for January 1-31,
-- paused on the 21st (10 days unused) to February 10: the period is
-- extended by the 20 days paused to February 20, that extension is a
-- 0.00 line, and the next 30.00 is charged on February 20, not January 31
SELECT subscribe(4, 'zd_team', '30 days', 1, '2026-01-01') AS team \gset
SELECT pause(:team, '2026-01-21', '2026-02-10') AS resumes_at;
SELECT period, paused_at, resume_at, pause_mode, paused_period_end FROM subscription WHERE id = :team;
-- access is kept: seats and limits as before
INSERT INTO public.room (account_id, activated_at) VALUES (4, '2026-01-22');
SELECT effective_limit(4, 'rooms') AS rooms_limit;
-- a paused subscription changes nothing else, and is not listed as renewing
SELECT pg_temp.error_of(format('SELECT cancel(%s)', :team));
SELECT count(*) AS in_notice FROM renewal_notice WHERE subscription_id = :team;
SELECT renew_due('2026-01-31') AS at_old_end, renew_due('2026-02-09') AS before_resume;
SELECT count(*) AS lines FROM ledger WHERE subscription_id = :team;
-- resume_at honoured by renew_due
SELECT renew_due('2026-02-10') AS at_resume;
SELECT period, anchor, period_number, paused_at FROM subscription WHERE id = :team;
SELECT renew_due('2026-02-20') AS at_new_end;
SELECT amount, period, description FROM ledger WHERE subscription_id = :team ORDER BY id;
SELECT sum(amount) AS charged_to_march_22 FROM ledger WHERE subscription_id = :team;
-- history records both
SELECT operation, details ? 'paused_at' AS pause_columns, details -> 'pause_mode' AS pause_mode
  FROM history WHERE subscription_id = :team AND details ? 'paused_at' ORDER BY id;

-- pause 'freeze' across a renewal, resumed by resume(): the account's
-- growing writes (a room, a seat) are refused with 55000, shrinking ones
-- are not, nothing is deleted; resume restores the limits as they were
SELECT subscribe(5, 'zd_team', '30 days', 2, '2026-01-01') AS frozen \gset
INSERT INTO public.room (account_id, activated_at) VALUES (5, '2026-01-02'), (5, '2026-01-03');
SELECT license_consume(:frozen, 50) AS left_before;
SELECT pause(:frozen, '2026-01-21', NULL, 'freeze') AS resumes_at;
SELECT upper(period) AS period_ends FROM subscription WHERE id = :frozen;
SELECT pg_temp.error_of($$INSERT INTO public.room (account_id, activated_at) VALUES (5, '2026-01-22')$$);
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 51)', :frozen));
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (5, %s, 51)', :frozen));
DELETE FROM public.room WHERE account_id = 5 AND activated_at = '2026-01-03';
SELECT count(*) AS rooms, (SELECT count(*) FROM license WHERE subscription_id = :frozen) AS seats
  FROM public.room WHERE account_id = 5;
-- not resumed by renew_due without a resume_at: nothing is charged
SELECT renew_due('2026-03-01') AS renewed;
SELECT count(*) AS lines FROM ledger WHERE subscription_id = :frozen;
SELECT resume(:frozen, '2026-02-15') AS period_ends;
INSERT INTO public.room (account_id, activated_at) VALUES (5, '2026-02-16');
SELECT license_consume(:frozen, 51) AS left_after;
SELECT effective_limit(5, 'rooms') AS rooms_limit;
SELECT renew_due('2026-02-25') AS at_new_end;
SELECT amount, period, description FROM ledger WHERE subscription_id = :frozen ORDER BY id;

-- bad input: the SQLSTATE, and nothing written
SELECT (SELECT count(*) FROM history) AS history_before, (SELECT count(*) FROM ledger) AS ledger_before \gset
SELECT pg_temp.error_of($$SELECT pause(NULL)$$);                                                -- 22004
SELECT pg_temp.error_of($$SELECT pause(999, '2026-03-01')$$);                                   -- P0002
SELECT pg_temp.error_of(format('SELECT pause(%s, %L, NULL, %L)', :team, '2026-03-01', 'nap'));  -- 22023
SELECT pg_temp.error_of(format('SELECT pause(%s, %L, NULL, NULL)', :team, '2026-03-01'));       -- 22004
SELECT pg_temp.error_of(format('SELECT pause(%s, NULL)', :team));                               -- 22004
SELECT pg_temp.error_of(format('SELECT pause(%s, %L, %L)', :team, '2026-03-01', '2026-03-01')); -- 22023
SELECT pg_temp.error_of(format('SELECT pause(%s, %L)', :team, '2026-01-01'));                   -- 22023
SELECT pg_temp.error_of(format('SELECT pause(%s, %L)', :team, '2026-04-01'));                   -- 22023
SELECT pg_temp.error_of(format('SELECT pause(%s, %L)', :plus, '2026-01-05'));                   -- 55000
SELECT pg_temp.error_of(format('SELECT pause(%s, %s, %L, NULL, %L)', 1, :team, '2026-03-01', 'freeze')); -- 22023
SELECT pg_temp.error_of($$SELECT resume(NULL)$$);                                               -- 22004
SELECT pg_temp.error_of($$SELECT resume(999, '2026-03-01')$$);                                  -- P0002
SELECT pg_temp.error_of(format('SELECT resume(%s, %L)', :team, '2026-03-01'));                  -- 55000
SELECT (SELECT count(*) FROM history) - :history_before AS history_written,
       (SELECT count(*) FROM ledger) - :ledger_before AS ledger_written;
SELECT pause(:team, '2026-03-01', '2026-03-10') AS resumes_at;
SELECT (SELECT count(*) FROM history) AS history_paused \gset
SELECT pg_temp.error_of(format('SELECT pause(%s, %L)', :team, '2026-03-02'));                   -- 55000
SELECT pg_temp.error_of(format('SELECT resume(%s, %L)', :team, '2026-02-28'));                  -- 22023
SELECT pg_temp.error_of(format('SELECT resume(%s, %L)', :team, '2026-03-11'));                  -- 22023
SELECT pg_temp.error_of(format('SELECT resume(%s, %s, %L)', 1, :team, '2026-03-05'));           -- 22023
SELECT (SELECT count(*) FROM history) - :history_paused AS history_written,
       (SELECT count(*) FROM ledger) - :ledger_before AS ledger_written;
-- the keyed forms (docs/design.md#keyed-forms)
SELECT resume(4, :team, '2026-03-05') AS period_ends;
SELECT amount, period, description FROM ledger WHERE subscription_id = :team ORDER BY id DESC LIMIT 1;

-- trial.ending (issue 20, E5): announce_renewals writes it once per trial,
-- when the trial's end enters the notice window (renewal_notice reads now():
-- a trial started today), with the renewal.upcoming of its first charge
INSERT INTO account (id, tenant_id, name) VALUES (6, 6, 'Hooli');
SELECT subscribe(6, 'nt_plus', '30 days', 1, now()) AS trial \gset
SET subscription.notice_days = 15;
SELECT announce_renewals() AS announced;
SELECT announce_renewals() AS announced_again;
-- the trial's end computed first: in a query of event, Citus would compute
-- now() on the worker, in its own transaction
SELECT now() + interval '10 days' AS trial_end \gset
SELECT type, subscription_id = :trial AS the_trial, payload - 'trial_end' - 'renews_at' AS payload,
       coalesce(payload ->> 'trial_end', payload ->> 'renews_at')::timestamptz = :'trial_end' AS at_trial_end
  FROM event WHERE account_id = 6 AND type IN ('trial.ending', 'renewal.upcoming') ORDER BY type;
RESET subscription.notice_days;

-- a trial cancelled (Z8): cancel() takes a trial, which then ends at its end,
-- cancelled and charged nothing, whatever its product makes of trials
-- (desk's is a downgrade); it leaves renewal_notice; other changes are
-- still refused; cancel_account() cancels an account's trial too
INSERT INTO account (id, tenant_id, name) VALUES (7, 7, 'Umbrella'), (8, 8, 'Vandelay');
SELECT subscribe(7, 'zd_pro', '30 days', 1, '2026-05-01') AS quitting \gset
SELECT cancel(:quitting) AS ends_at, cancel(:quitting) AS ends_at_again;
SELECT count(*) AS noticed FROM renewal_notice WHERE subscription_id = :quitting;
SELECT pg_temp.error_of(format('SELECT set_renewal(%s, %L)', :quitting, 'once'));             -- 55000
SELECT pg_temp.error_of(format('SELECT end_early(%s, %L)', :quitting, '2026-05-02'));          -- 55000
SELECT renew_account(7, '2026-05-07') AS before_end, renew_account(7, '2026-05-08') AS at_end;
SELECT status, cancel_at_period_end, pending_plan, plan FROM subscription WHERE id = :quitting;
SELECT amount, description FROM ledger WHERE subscription_id = :quitting ORDER BY id;
SELECT type FROM event WHERE subscription_id = :quitting ORDER BY id;
SELECT subscribe(8, 'cm_live', '30 days', 1, '2026-05-01') AS leaving \gset
SELECT subscription_id = :leaving AS the_trial, ends_at FROM cancel_account(8);
SELECT renew_account(8, '2026-05-15') AS settled;
SELECT status FROM subscription WHERE id = :leaving;
SELECT count(*) AS charged FROM ledger WHERE subscription_id = :leaving AND amount <> 0;

SELECT * FROM verify();
ROLLBACK;

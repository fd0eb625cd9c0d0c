-- The narrated scenario: what subscription does, step by step.
\set ON_ERROR_STOP on
\pset footer off
SET search_path = subscription, public;
SET TimeZone = 'UTC';

-- show_error(statement): run a statement that must be refused and show why
CREATE FUNCTION pg_temp.show_error(statement text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE state text; message text; hint text;
BEGIN
    EXECUTE statement;
    RETURN 'accepted (unexpected)';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN format('refused %s: %s%s', state, message, CASE WHEN hint <> '' THEN ' (' || hint || ')' END);
END
$f$;

\echo
\echo '=== 1. The catalog: five products, editions ranked, prices per cycle'
SELECT p.product, p.code AS plan, p.rank, p.kind,
       string_agg(DISTINCT pp.cycle::text, ', ') AS cycles,
       string_agg(DISTINCT pp.tier::text, ', ') AS tiers
  FROM plan AS p JOIN plan_price AS pp ON pp.plan = p.code
 GROUP BY p.product, p.code, p.rank, p.kind
 ORDER BY p.product, p.rank;

\echo
\echo '=== 2. LogMeIn Central (L3, L12): Acme has 180 computers; which tier?'
SELECT tier_for_hosts(180) AS tier_for_180_hosts,
       tier_for_hosts('central_premier', 26) AS premier_tier_for_26_hosts;
\echo 'More hosts than the largest tier is refused, with a hint (L3):'
SELECT pg_temp.show_error($$SELECT tier_for_hosts(2600)$$) AS result;
\echo 'A tiered plan is sold only in its tiers (L12): 180 is not a tier, 250 is'
SELECT pg_temp.show_error($$SELECT subscribe(1, 'central_plus', '1 year', 180, '2026-01-15')$$) AS result;
SELECT subscribe(1, 'central_plus', '1 year', tier_for_hosts('central_plus', 180), '2026-01-15 09:00') AS acme_subscription;

\echo
\echo '=== 3. Zendesk (Z4, Z7): 10 agents of Professional, monthly; and the same seats annually'
SELECT subscribe(3, 'zd_professional', '1 month', 10, '2026-01-31 12:00') AS globex_monthly,
       subscribe(3, 'zd_professional', '1 year', 10, '2026-01-31 12:00') AS globex_annual;
\echo 'A month from January 31 ends on February 28: periods come from the anchor'

\echo
\echo '=== 4. Rainbow (R2, R6): 25 Business licenses prepaid for 3 years, then monthly'
SELECT subscribe(4, 'rb_business', '3 years', 25, '2026-02-01', 'to_monthly') AS initech_prepaid;

\echo
\echo '=== 5. ClickMeeting (K2): a 30-day cycle is not a month'
SELECT subscribe(5, 'cm_live', '30 days', 1, '2026-01-31') AS webinars_30_days;
SELECT pg_temp.show_error($$SELECT subscribe(5, 'cm_live', '1 month')$$) AS result;

\echo
\echo '=== 6. The ledger: one gross charge per first period, rounded once to the currency'
SELECT a.name AS account, s.plan, s.cycle, s.quantity, s.period, l.amount, l.currency, s.renewal
  FROM ledger AS l JOIN subscription AS s ON s.id = l.subscription_id JOIN account AS a ON a.id = s.account_id
 ORDER BY l.id;
\echo 'Charging the same period twice is refused by a constraint (C2):'
SELECT pg_temp.show_error($$INSERT INTO ledger (account_id, subscription_id, kind, amount, currency, period, description)
                            SELECT account_id, subscription_id, 'charge', amount, currency, period, 'again'
                              FROM ledger ORDER BY id LIMIT 1$$) AS result;

\echo
\echo '=== 7. CrowdHandler (C1): Standard at 99.00 for January, upgraded on January 15'
\echo 'The unused days, January 15 to 31 (17 of 31, the day of the change included), are refunded:'
SELECT prorate_refund(99.00, '2026-01-01', '2026-02-01', '2026-01-15') AS refund,
       99.00 - prorate_refund(99.00, '2026-01-01', '2026-02-01', '2026-01-15') AS used;
\echo 'Days are calendar days in the session time zone: 23:30 UTC on January 14 is'
\echo 'still the 14th in UTC (18 days unused) but already the 15th in Tokyo (17 days):'
SELECT prorate_refund(31, '2026-01-01 00:00+00', '2026-02-01 00:00+00', '2026-01-14 23:30+00') AS refund_in_utc;
SET TimeZone = 'Asia/Tokyo';
SELECT prorate_refund(31, '2026-01-01 00:00+00', '2026-02-01 00:00+00', '2026-01-14 23:30+00') AS refund_in_tokyo;
SET TimeZone = 'UTC';

\echo
\echo '=== 8. Seats (Z4, R10, R11): Globex''s 10 Professional agents'
\echo 'The first service subscription of an account is its default: new members get its licenses (R10).'
SELECT id, plan, cycle, quantity, is_default FROM subscription WHERE account_id = 3 ORDER BY id;
INSERT INTO member (account_id, external_id, role)
SELECT 3, 'agent' || g || '@globex', 'member' FROM generate_series(1, 7) AS g;
SELECT subscription_id, count(*) AS holders, licenses_left(subscription_id) AS left
  FROM license_holder WHERE account_id = 3 GROUP BY 1;
\echo 'Three more agents take the last licenses; the fourth is still created, with a WARNING:'
INSERT INTO member (account_id, external_id)
SELECT 3, 'agent' || g || '@globex' FROM generate_series(8, 11) AS g;
SELECT licenses_left(2) AS monthly_left;
\echo 'No license is ever oversold, whatever path writes: license_consume says why (23514):'
SELECT pg_temp.show_error($$SELECT license_consume(2, (SELECT id FROM member WHERE external_id = 'agent11@globex'))$$) AS result;
\echo 'A bulk import is all or nothing (R12): 12 new agents into the annual subscription of 10 licenses'
\echo '(each new agent gets the same WARNING as above: the default subscription is full; muted here)'
SET client_min_messages = error;
INSERT INTO member (account_id, external_id)
SELECT 3, 'support' || g || '@globex' FROM generate_series(1, 12) AS g;
RESET client_min_messages;
SELECT pg_temp.show_error($$INSERT INTO license (subscription_id, member_id)
                            SELECT 3, id FROM member WHERE external_id LIKE 'support%'$$) AS bulk_of_12;
INSERT INTO license (subscription_id, member_id)
SELECT 3, id FROM member WHERE external_id LIKE 'support%' ORDER BY id LIMIT 10;
SELECT licenses_left(3) AS annual_left_after_10;

\echo
\echo '=== 9. Rainbow (R11, R9): one service per member and product, options at will; admins need rights'
INSERT INTO member (account_id, external_id, role) VALUES (4, 'lou@initech', 'member');
SELECT subscribe(4, 'rb_enterprise', '1 month', 5, '2026-02-01') AS initech_enterprise \gset
SELECT subscribe(4, 'rb_recording', '1 month', 5, '2026-02-01') AS initech_recording \gset
\echo 'lou got a Business license on arrival (R10); an Enterprise one would be a second service:'
SELECT pg_temp.show_error(format('SELECT license_consume(%s, (SELECT id FROM member WHERE external_id = %L))',
                                 :initech_enterprise, 'lou@initech')) AS second_service;
SELECT license_consume(:initech_enterprise, id) AS enterprise_left FROM member WHERE external_id = 'ida@initech';
SELECT license_consume(:initech_recording, id) AS recording_left FROM member WHERE external_id = 'ida@initech';
SELECT subscription_id, plan, external_id FROM license_holder WHERE account_id = 4 ORDER BY 1, 3;
\echo 'jon@initech is an admin with increase_licenses and change_renewal (R9):'
SELECT set_config('subscription.actor', id::text, false) AS acting_as FROM member WHERE external_id = 'jon@initech';
SELECT set_quantity(:initech_enterprise, 8, '2026-02-15') AS enterprise_left_after_8;
SELECT pg_temp.show_error(format($$SELECT set_quantity(%s, 6, '2026-02-16')$$, :initech_enterprise)) AS decrease;
\echo 'jon ticks the star beside Enterprise (R10): the next new member gets an Enterprise license'
SELECT set_default(:initech_enterprise);
RESET subscription.actor;
INSERT INTO member (account_id, external_id) VALUES (4, 'max@initech');
SELECT plan, external_id FROM license_holder WHERE external_id = 'max@initech';
\echo 'The increase is charged for the rest of the period: 3 more licenses x 9.99 x 14/28 days:'
SELECT kind, amount, item, period FROM ledger WHERE subscription_id = :initech_enterprise ORDER BY id;

\echo
\echo '=== 10. History (R8): who did what, when'
SELECT at::time(0) AS at, actor, operation, subscription_id, left(details::text, 70) AS details
  FROM history WHERE account_id = 4 ORDER BY id;

\echo
\echo '=== 11. CrowdHandler: the plan''s limits on the application''s own tables'
\echo 'Tickets Ltd subscribes to Starter (1 domain, 2 rooms, 500 places, entry rate 10, no templates).'
SELECT subscribe(2, 'ch_starter', '1 month', 1, '2026-01-01') AS tickets_starter \gset
CREATE TABLE public.waiting_room (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL,
    activated_at timestamptz DEFAULT now(),
    capacity integer NOT NULL,
    entry_rate integer NOT NULL,
    template text);
DO $$
BEGIN
    PERFORM subscription.enforce_limit('public.waiting_room', 'rooms', 'account_id', 'drop_newest', 'activated_at');
    PERFORM subscription.enforce_limit('public.waiting_room', 'room_capacity', 'account_id', 'scale', NULL, 'capacity');
    PERFORM subscription.enforce_limit('public.waiting_room', 'entry_rate', 'account_id', 'cap', NULL, 'entry_rate');
    PERFORM subscription.enforce_limit('public.waiting_room', 'custom_templates', 'account_id', 'detach', NULL, 'template');
END
$$;
INSERT INTO public.waiting_room (account_id, capacity, entry_rate) VALUES (2, 300, 10), (2, 200, 5);
\echo 'Any SQL the application runs is held to the plan (23514, with the way out):'
SELECT pg_temp.show_error($$INSERT INTO public.waiting_room (account_id, capacity, entry_rate) VALUES (2, 0, 1)$$) AS third_room;
SELECT pg_temp.show_error($$UPDATE public.waiting_room SET capacity = capacity + 1$$) AS more_places;
SELECT pg_temp.show_error($$UPDATE public.waiting_room SET entry_rate = 50$$) AS faster_entry;
SELECT pg_temp.show_error($$UPDATE public.waiting_room SET template = 'dark'$$) AS custom_template;
SELECT feature, effective_limit(2, feature) AS plan_limit, usage(2, feature) AS in_use
  FROM limited_table ORDER BY position;

\echo
\echo '=== 12. Zendesk (Z5, Z9, C3): Globex upgrades its monthly agents to Enterprise on February 14'
SELECT id AS globex_monthly FROM subscription WHERE account_id = 3 AND cycle = '1 month' \gset
\echo 'Z9: the summary of the change before it is made (support prorates: same period)'
SELECT kind, amount, item, period FROM preview_change_plan(:globex_monthly, 'zd_enterprise', '2026-02-14');
SELECT * FROM change_plan(:globex_monthly, 'zd_enterprise', '2026-02-14');
\echo 'C3: the invoice and receipt of each billing event'
SELECT at::date, plan, charged, refunded, balance FROM invoice WHERE subscription_id = :globex_monthly ORDER BY at;
\echo 'Z6: the Productivity Pack is part of Enterprise already; Collaboration is sold (K3: prorated, full price named)'
SELECT pg_temp.show_error(format($$SELECT purchase_addon(%s, 'zd_productivity', 1, '2026-02-15')$$, :globex_monthly)) AS result;
SELECT purchase_addon(:globex_monthly, 'zd_collaboration', 10, '2026-02-15') AS collaboration \gset
SELECT amount, description FROM ledger WHERE addon_batch_id = :collaboration;

\echo
\echo '=== 13. ClickMeeting (K2-K10): presenters, a username change, sub-accounts'
SELECT id AS webinars_30_days FROM subscription WHERE account_id = 5 \gset
SELECT purchase_addon(:webinars_30_days, 'cm_presenters', 2, '2026-02-10') AS presenters,
       purchase_addon(:webinars_30_days, 'cm_username_change', 1, '2026-02-10') AS username,
       purchase_addon(:webinars_30_days, 'cm_sub_accounts', 1, '2026-02-10') AS sub_first,
       purchase_addon(:webinars_30_days, 'cm_sub_accounts', 1, '2026-02-11') AS sub_second \gset
SELECT addon_batch_id, amount, description FROM ledger WHERE addon_batch_id IS NOT NULL AND account_id = 5 ORDER BY id;
\echo 'K7: sub-accounts count against the sub_accounts limit (the guard ships with the extension)'
SELECT enforce_limit('subscription.account', 'sub_accounts', 'parent_id', 'drop_newest', 'created_at');
INSERT INTO account (id, name, parent_id, created_at) VALUES
    (7, 'Webinars Lyon', 5, '2026-02-11'), (8, 'Webinars Lille', 5, '2026-02-12');
SELECT pg_temp.show_error($$INSERT INTO account (id, name, parent_id) VALUES (9, 'Webinars Brest', 5)$$) AS third_sub_account;
\echo 'K8: the sub-account''s own owner cannot buy'
INSERT INTO member (id, account_id, external_id, role) VALUES (80, 8, 'lea@lille', 'owner');
SET subscription.actor = '80';
SELECT pg_temp.show_error(format($$SELECT purchase_addon(%s, 'cm_presenters', 1, '2026-02-12')$$, :webinars_30_days)) AS result;
RESET subscription.actor;
\echo 'K4, K5, K10: the second sub-account batch is cancelled, whole; at the end of the cycle the newest'
\echo 'sub-account beyond the new limit is erased with its data'
SELECT cancel_addon(:sub_second) AS ends_at;
SELECT renew_due('2026-03-02') AS renewed;
SELECT id, name FROM account WHERE parent_id = 5 ORDER BY id;
SELECT relation, action, old_row->>'name' AS erased FROM trimmed WHERE feature = 'sub_accounts';

\echo
\echo '=== 14. CrowdHandler (C4-C12): Gigs Inc moves from Enterprise down to Starter'
INSERT INTO account (id, name) VALUES (6, 'Gigs Inc (CrowdHandler)');
SELECT subscribe(6, 'ch_enterprise', '1 month', 1, '2026-03-01') AS gigs \gset
INSERT INTO public.waiting_room (account_id, activated_at, capacity, entry_rate, template) VALUES
    (6, '2026-03-02', 900, 80, 'neon'), (6, '2026-03-03', 600, 40, NULL), (6, '2026-03-04', 300, 8, 'neon'),
    (6, '2026-03-05', 200, 5, NULL), (6, NULL, 100, 5, NULL);
\echo 'C4: the downgrade waits for the end of the period; nothing is charged or refunded now'
SELECT * FROM change_plan(:gigs, 'ch_starter', '2026-03-10');
\echo 'C12: the trimming can be previewed; nothing changes'
SELECT feature, action, row_id, old_value, new_value FROM apply_downgrade(:gigs, dry_run => true);
SELECT count(*) AS rooms_still FROM public.waiting_room WHERE account_id = 6;
\echo 'At the renewal (renew_due), the account moves to Starter and its rooms are trimmed:'
\echo 'no activation date first, then the newest (C6); places scaled to 500, largest remainders (C7);'
\echo 'entry rates capped at 10 (C8); templates detached (C11)'
SELECT renew_due('2026-04-01') AS renewed;
SELECT id, activated_at::date, capacity, entry_rate, template FROM public.waiting_room WHERE account_id = 6 ORDER BY id;
\echo 'Nothing is lost silently: every row removed or changed is in trimmed, as it was'
SELECT feature, action, row_id, old_row->>'capacity' AS old_capacity, old_row->>'entry_rate' AS old_rate
  FROM trimmed WHERE account_id = 6 ORDER BY id;

\echo
\echo '=== 15. A year of renewals: coupons (Z10), credits (L9, L10), renewal options (R6)'
SELECT subscribe(3, 'zd_team', '1 month', 3, '2026-03-01', 'always', 'WELCOME20') AS globex_team \gset
SELECT credit_account(1, 150.00, 'goodwill: the March outage', 'USD') > 0 AS acme_credited;
\echo 'L5, L8: what renews in the next 60 days (from today), at what price, and the credit that will apply'
SET subscription.notice_days = 60;
SELECT r.subscription_id, a.name AS account, r.renews_at::date, r.plan, r.cycle, r.quantity, r.tier, r.amount,
       r.currency, r.credit
  FROM renewal_notice AS r JOIN account AS a ON a.id = r.account_id
 ORDER BY r.renews_at, r.subscription_id;
SELECT renew_due('2027-03-01') AS subscriptions_renewed;
\echo 'Every period charged once (C2); the coupon ended after two periods; the credit paid Acme''s renewal'
SELECT count(*) AS charges, count(DISTINCT (subscription_id, addon_batch_id, period, item)) AS distinct_periods
  FROM ledger WHERE kind = 'charge';
SELECT a.name AS account, count(*) FILTER (WHERE l.kind = 'charge') AS charges,
       sum(l.amount) FILTER (WHERE l.kind = 'charge') AS charged,
       sum(l.amount) FILTER (WHERE l.kind = 'discount') AS discounts,
       sum(l.amount) FILTER (WHERE l.kind = 'refund') AS refunds,
       sum(l.amount) FILTER (WHERE l.kind = 'credit_used') AS credit_used, l.currency
  FROM ledger AS l JOIN account AS a ON a.id = l.account_id
 GROUP BY a.name, l.currency ORDER BY a.name;
SELECT ledger_id, kind, change, balance, description FROM credit_statement WHERE account_id = 1 ORDER BY ledger_id;
SELECT s.id, a.name AS account, s.plan, s.cycle, s.status, s.renewal, s.period
  FROM subscription AS s JOIN account AS a ON a.id = s.account_id ORDER BY s.id;

\echo
\echo '=== 16. Zendesk Suite (Z3, L9, Z9): Support and Chat bought apart, then bundled'
\echo 'The Suite bundles Support Professional and Chat Professional (a catalog of 1.1)'
INSERT INTO product (code, name) VALUES ('chat', 'Zendesk Chat'), ('zd_suite', 'Zendesk Suite');
INSERT INTO plan (code, product, name, rank) VALUES
    ('chat_professional', 'chat', 'Chat Professional', 2),
    ('suite_professional', 'zd_suite', 'Suite Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('chat_professional', '1 month', 29.00, true), ('suite_professional', '1 month', 69.00, true);
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('chat_professional', 'chat_widgets', 5, true);
INSERT INTO suite_component (suite_plan, plan) VALUES
    ('suite_professional', 'zd_professional'), ('suite_professional', 'chat_professional');
INSERT INTO account (id, name) SELECT max(id) + 1, 'Hooli (Zendesk Suite)' FROM account RETURNING id AS hooli \gset
INSERT INTO member (account_id, external_id, role) VALUES (:hooli, 'liz@hooli', 'owner'), (:hooli, 'max@hooli', 'member');
SELECT subscribe(:hooli, 'zd_professional', '1 month', 2, '2027-03-01') AS hooli_support,
       subscribe(:hooli, 'chat_professional', '1 month', 3, '2027-03-01') AS hooli_chat \gset
SELECT license_consume(:hooli_chat, m.id) FROM member AS m WHERE m.external_id = 'max@hooli';
\echo 'The preview: both are credited for their unused days (L9), and the credit pays the suite'
SELECT subscription_id, kind, amount, description FROM preview_bundle_into_suite(:hooli, 'suite_professional', NULL, '2027-03-16');
SELECT bundle_into_suite(:hooli, 'suite_professional', NULL, '2027-03-16') AS hooli_suite \gset
SELECT s.id, s.plan, s.quantity, s.status FROM subscription AS s WHERE s.account_id = :hooli ORDER BY s.id;
\echo 'The seats came along; each suite license is a seat of Support and of Chat (R11)'
SELECT m.external_id, x.product FROM service_seat AS x JOIN member AS m ON m.id = x.member_id
 WHERE x.subscription_id = :hooli_suite ORDER BY 1, 2;
SELECT effective_limit(:hooli, 'chat_widgets') AS chat_widgets;

\echo
\echo '=== 17. Terms of service (Z11): new terms from 2027-03-15; Globex accepts before its next change'
INSERT INTO terms (version, effective_at, url) VALUES ('2027-03', '2027-03-15', 'https://example.com/terms');
SELECT pg_temp.show_error(format($$SELECT set_quantity(%s, 4, '2027-03-16')$$, :globex_team)) AS before_accepting;
SELECT accept_terms(3, '2027-03', '2027-03-16');
SELECT set_quantity(:globex_team, 4, '2027-03-16') AS licenses_left;

\echo
\echo '=== 18. Grandfathering and migrations (L5, L6, L8): a price rise, and LogMeIn''s move to editions'
\echo 'Zendesk Team goes up; Globex keeps the price it was sold (version 1), a new subscriber pays the new one'
UPDATE plan_price SET amount = amount + 6 WHERE plan = 'zd_team' AND cycle = '1 month';
SELECT plan, cycle, amount, versions FROM plan_price WHERE plan = 'zd_team' AND cycle = '1 month' ORDER BY versions;
SELECT subscribe(2, 'zd_team', '1 month', 3, '2027-03-01') AS newcomer \gset
SELECT renew_due('2027-04-01') >= 2 AS renewed;
SELECT s.id, a.name AS account, s.plan_version, l.amount AS april_charge
  FROM subscription AS s JOIN account AS a ON a.id = s.account_id
  JOIN ledger AS l ON l.subscription_id = s.id AND l.kind = 'charge' AND lower(l.period) = '2027-04-01'
 WHERE s.id IN (:globex_team, :newcomer) ORDER BY s.id;
\echo 'The migration moves Globex at its first renewal 30 days after notice; until then it pays the old price'
SELECT migrate_subscriptions('zd_team', 'zd_team', '2027-04-02') AS migrated;
SELECT renew_due('2027-06-01') >= 2 AS renewed;
SELECT to_char(lower(period), 'YYYY-MM-DD') AS renewal, amount FROM ledger
 WHERE subscription_id = :globex_team AND kind = 'charge' AND lower(period) >= '2027-04-01' ORDER BY 1;
\echo 'LogMeIn Pro becomes Central Basic, or Premier where Basic would take a feature in use (L6)'
INSERT INTO plan (code, product, name, rank) VALUES ('lmi_pro', 'central', 'Pro', 0);
INSERT INTO plan_price (plan, cycle, tier, amount, currency) VALUES ('lmi_pro', '1 year', 25, 599, 'USD');
INSERT INTO plan_limit (plan, feature, value, per_license) VALUES ('lmi_pro', 'hosts', 1, true), ('lmi_pro', 'automation_jobs', 10, false);
CREATE TABLE public.automation_job (id bigserial PRIMARY KEY, account_id bigint NOT NULL);
SELECT enforce_limit('public.automation_job', 'automation_jobs');
SELECT subscribe(2, 'lmi_pro', '1 year', 25, '2027-01-01') AS pro_hosts_only,
       subscribe(4, 'lmi_pro', '1 year', 25, '2027-01-01') AS pro_automating \gset
INSERT INTO public.automation_job (account_id) VALUES (4), (4);
SELECT subscription_id, takes_effect_at::date, plan, amount, feature, used, new_limit
  FROM preview_migration('lmi_pro', 'central_basic', '2027-06-01');
SELECT migrate_subscriptions('lmi_pro', 'central_basic', '2027-06-01') AS to_basic;
SELECT migrate_subscriptions('lmi_pro', 'central_premier', '2027-06-01') AS to_premier;
-- the demo's calendar runs ahead of today: allow renewals further ahead than the default year
SET subscription.max_ahead = '3 years';
SELECT renew_due('2028-01-01') >= 2 AS renewed;
SELECT s.id, a.name AS account, s.plan, l.amount AS renewal_2028, effective_limit(s.account_id, 'automation_jobs') AS automation_limit,
       usage(s.account_id, 'automation_jobs') AS automation_used
  FROM subscription AS s JOIN account AS a ON a.id = s.account_id
  JOIN ledger AS l ON l.subscription_id = s.id AND l.kind = 'charge' AND lower(l.period) = '2028-01-01'
 WHERE s.id IN (:pro_hosts_only, :pro_automating) ORDER BY s.id;

\echo
\echo '=== 19. Trials and dunning (issue 19): a ClickMeeting trial converts; a Zendesk account falls past due, is frozen, then pays'
\echo 'ClickMeeting Live with a 14-day trial: trialing, charged nothing, converted at its end and charged its first period'
UPDATE plan_price SET trial = '14 days' WHERE plan = 'cm_live' AND cycle = '30 days';
INSERT INTO account (id, name) VALUES (60, 'Webinar Works') RETURNING id AS webinar_works \gset
SELECT accept_terms(:webinar_works, '2027-03', '2028-01-01');
SELECT subscribe(:webinar_works, 'cm_live', '30 days', 1, '2028-01-01') AS trial \gset
SELECT status, trial_ends::date, (SELECT sum(amount) FROM ledger WHERE subscription_id = :trial) AS charged
  FROM subscription WHERE id = :trial;
SELECT renew_account(:webinar_works, '2028-01-15') AS converted;
SELECT status, period, (SELECT sum(amount) FROM ledger WHERE subscription_id = :trial) AS charged
  FROM subscription WHERE id = :trial;
\echo 'Zendesk Team for 3 agents, due 7 days later; the ladder: a retry 3 days after the failure, another 5 days later, a freeze 7 days after that (D1-D4)'
UPDATE product SET dunning_days = '{3,5,7}', dunning_action = 'freeze' WHERE code = 'support';
SET subscription.payment_terms = 7;
INSERT INTO account (id, name) VALUES (61, 'Helpdesk Heroes') RETURNING id AS heroes \gset
SELECT accept_terms(:heroes, '2027-03', '2028-01-01');
INSERT INTO member (id, account_id, external_id, role) VALUES (610, :heroes, 'lead@heroes', 'owner') RETURNING id AS lead \gset
INSERT INTO member (id, account_id, external_id, role) VALUES (611, :heroes, 'agent@heroes', 'member') RETURNING id AS agent \gset
SELECT subscribe(:heroes, 'zd_team', '1 month', 3, '2028-01-01') AS heroes_team \gset
SELECT license_consume(:heroes_team, :lead) AS seats_left;
SELECT id AS heroes_invoice, document_number, total, due_at::date FROM invoice_record WHERE subscription_id = :heroes_team \gset
\echo 'The charge on the due date fails: past due at once, still with its seats'
SELECT record_payment_failure(:heroes_invoice, 'card_declined', '2028-01-08');
SELECT status, past_due_since::date, licenses_left(:heroes_team) AS seats_left FROM subscription WHERE id = :heroes_team;
SELECT run_dunning_tenant(:heroes, '2028-01-11') AS moved;
SELECT document_number, due, step, steps, retry_at::date FROM dunning_retry WHERE account_id = :heroes;
SELECT record_payment_failure(:heroes_invoice, 'card_declined', '2028-01-11 09:00');
\echo 'The last step (January 23rd) freezes the account: no seat is assigned until it pays'
SELECT run_dunning_tenant(:heroes, '2028-01-23') AS moved;
SELECT status, dunning_step, dunning_frozen FROM subscription WHERE id = :heroes_team;
SELECT pg_temp.show_error(format('SELECT license_consume(%s, %s)', :heroes_team, :agent)) AS frozen_seat;
\echo 'It pays in full: active again and the freeze lifted in the same transaction (D5)'
SELECT record_payment(:heroes_invoice, :total, 'ch_heroes_1', '2028-01-24') IS NOT NULL AS paid;
SELECT status, dunning_frozen FROM subscription WHERE id = :heroes_team;
SELECT license_consume(:heroes_team, :agent) AS seats_left;
SELECT type FROM event WHERE account_id = :heroes AND (type LIKE 'subscription.%' OR type LIKE 'payment.%' OR type LIKE 'invoice.paid')
 ORDER BY id;

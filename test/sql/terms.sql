-- Z11: terms of service.  When a version is in effect, an account accepts
-- it before its first subscription and, once a later version takes effect,
-- at its next change (subscribe, change_plan, change_cycle, set_quantity,
-- purchase_addon); accept_terms() records who accepted.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- the actor set below (SET LOCAL) reaches the history's triggers on a
-- Citus worker too (docs/citus.md); on a single server it is this
-- session's already
SET LOCAL citus.propagate_set_commands = 'local';

INSERT INTO product (code, name) VALUES ('zendesk', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'zendesk', 'Team', 1), ('zd_pro', 'zendesk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 19, true), ('zd_team', '1 year', 190, true),
    ('zd_pro', '1 month', 49, true), ('zd_pro', '1 year', 490, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('zd_agents', 'zendesk', 'Extra agents', 'licenses', 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_agents', '1 month', 15), ('zd_agents', '1 year', 150);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_team', 'zd_agents');
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Before the terms'), (2, 2, 'New'), (3, 3, 'Closed'), (4, 4, 'Only renews');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (11, 1, 1, 'owner@one', 'owner'), (21, 2, 2, 'owner@two', 'owner'), (22, 2, 2, 'admin@two', 'admin');

-- Z11: no terms version in effect: nothing to accept
SELECT subscribe(1, 'zd_team', '1 year', 5, '2026-01-01') AS old_sub,
       subscribe(4, 'zd_team', '1 year', 5, '2026-01-01') AS renewing_sub \gset

INSERT INTO terms (version, effective_at, url) VALUES
    ('2026-02', '2026-02-01', 'https://example.com/terms/2026-02'),
    ('2026-06', '2026-06-01', 'https://example.com/terms/2026-06');

-- Z11: the version in effect at a time: the latest effective_at not after it
SELECT terms_in_effect('2026-01-31') IS NULL AS none_yet, (terms_in_effect('2026-02-01')).version AS on_the_day,
       (terms_in_effect('2026-05-31 23:59')).version AS day_before_next, (terms_in_effect('2027-01-01')).url AS later,
       terms_in_effect(NULL) IS NULL AS at_null;

-- Z11: the first subscription of an account is checked (55000, the version in the DETAIL, the call in the HINT)
SELECT pg_temp.error_of($$SELECT subscription.subscribe(2, 'zd_team', '1 month', 1, '2026-02-10')$$) AS first_subscription;
-- before the version takes effect there is nothing to accept yet
SELECT subscribe(2, 'zd_team', '1 year', 1, '2026-01-20') AS new_sub \gset
SELECT :new_sub IS NOT NULL AS before_effective;

-- Z11: the owner accepts; the actor is recorded, in the table and in history
SET LOCAL subscription.actor = '21';
SELECT accept_terms(2, '2026-02', '2026-02-10');
RESET subscription.actor;
SELECT account_id, version, accepted_at, accepted_by FROM terms_acceptance ORDER BY 1, 2;
SELECT actor, operation, account_id, details - 'accepted_at' AS details FROM history WHERE operation LIKE 'terms%';
SELECT subscribe(2, 'zd_team', '1 month', 1, '2026-02-10') IS NOT NULL AS accepted_then_subscribed;
-- accepting again changes nothing and writes no history
SELECT count(*) AS history_before FROM history \gset
SELECT accept_terms(2, '2026-02', '2026-02-11');
SELECT count(*) - :history_before AS new_history_rows FROM history;

-- Z11: an existing account is asked at its next change, once the version is in effect
SELECT pg_temp.error_of(format($$SELECT subscription.change_plan(%s, 'zd_pro', '2026-02-10')$$, :old_sub)) AS change_plan;
SELECT pg_temp.error_of(format($$SELECT subscription.set_quantity(%s, 6, '2026-02-10')$$, :old_sub)) AS set_quantity;
SELECT pg_temp.error_of(format($$SELECT subscription.purchase_addon(%s, 'zd_agents', 1, '2026-02-10')$$, :old_sub)) AS purchase_addon;
-- change_cycle takes no time: it is asked for the terms in effect now
SELECT pg_temp.error_of(format($$SELECT subscription.change_cycle(%s, '1 month')$$, :old_sub)) AS change_cycle;
SELECT pg_temp.error_of(format($$SELECT subscription.subscribe(1, 'zd_pro', '1 month', 1, '2026-02-10')$$)) AS subscribe;
-- a change dated before the version took effect is not asked
SELECT set_quantity(:old_sub, 6, '2026-01-20') AS quantity_before_effective;
-- Z11: what is not a change is not asked: the same quantity, the renewal option, licenses, cancelling
SELECT set_quantity(:old_sub, 6, '2026-02-10') AS same_quantity;
SELECT set_renewal(:old_sub, 'always');
SELECT license_consume(:old_sub, 11) AS licenses_left;
SELECT cancel(:old_sub) AS cancelled_until;

-- Z11: a later version asks again, from its effective date; accepting it ahead counts
SELECT pg_temp.error_of(format($$SELECT subscription.set_quantity(%s, 3, '2026-05-31')$$, :new_sub)) AS day_before;
SELECT pg_temp.error_of(format($$SELECT subscription.set_quantity(%s, 4, '2026-06-05')$$, :new_sub)) AS later_version;
SELECT accept_terms(2, '2026-06', '2026-05-20');
SELECT subscribe(2, 'zd_pro', '1 month', 1, '2026-06-05') IS NOT NULL AS accepted_ahead;

-- Z11: back-office code accepting records the session user
SELECT accept_terms(1, '2026-06', '2026-06-02');
SELECT accepted_by = session_user AS by_the_session_user FROM terms_acceptance WHERE account_id = 1;

-- Z11: accept_terms refuses NULLs (22004), an unknown account (P0002) or
-- version (42704), a closed account and a version replaced at "at" (55000),
-- an admin (42501)
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(NULL, '2026-06')$$) AS null_account;
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(2, NULL)$$) AS null_version;
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(2, '2026-06', NULL)$$) AS null_at;
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(999, '2026-06')$$) AS unknown_account;
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(2, '2027-01')$$) AS unknown_version;
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(2, '2026-02', '2026-06-02')$$) AS replaced_version;
UPDATE account SET closed_at = '2026-01-15' WHERE id = 3;
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(3, '2026-06')$$) AS closed_account;
SET LOCAL subscription.actor = '22';
SELECT pg_temp.error_of($$SELECT subscription.accept_terms(2, '2026-06')$$) AS admin_refused;
RESET subscription.actor;
-- Z11: who accepted is a record: an accepted version cannot be deleted (2BP01), an unaccepted one can
SELECT pg_temp.error_of($$DELETE FROM terms WHERE version = '2026-06'$$) AS accepted_version;
INSERT INTO terms (version, effective_at) VALUES ('2099-01', '2099-01-01');
DELETE FROM terms WHERE version = '2099-01' RETURNING version AS deleted_unaccepted;

-- Z11: renewals are not changes: account 4 never accepted, and renews
SELECT renew_due('2027-01-02') > 0 AS renewed;
SELECT status, upper(period) AS renewed_to FROM subscription WHERE id = :renewing_sub;

ROLLBACK;

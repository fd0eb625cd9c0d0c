-- Z2: managed (sales-assisted) accounts.  With an actor, a managed account
-- buys licenses, products and add-ons as a self-service one does; changing
-- the cycle or the renewal option, cancelling and ending early are refused
-- (42501, the HINT names the sales representative).  Back-office code,
-- without an actor, does everything.  Every public function that acts on
-- an account is called on both kinds of account, table-driven.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;

INSERT INTO product (code, name) VALUES ('zendesk', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_team', 'zendesk', 'Team', 1), ('zd_pro', 'zendesk', 'Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('zd_team', '1 month', 19, true), ('zd_team', '1 year', 190, true),
    ('zd_pro', '1 month', 49, true), ('zd_pro', '1 year', 490, true);
INSERT INTO plan_limit (plan, feature, value) VALUES ('zd_team', 'triggers', 10), ('zd_pro', 'triggers', 100);
INSERT INTO addon (code, product, name, feature, units) VALUES ('zd_agents', 'zendesk', 'Extra agents', 'licenses', 1);
INSERT INTO addon_price (addon, cycle, amount) VALUES ('zd_agents', '1 month', 15), ('zd_agents', '1 year', 150);
INSERT INTO plan_addon (plan, addon) VALUES ('zd_team', 'zd_agents'), ('zd_pro', 'zd_agents');
-- Z3: a suite that includes zd_team's product, for bundle_into_suite
INSERT INTO product (code, name) VALUES ('zd_suite', 'Zendesk Suite');
INSERT INTO plan (code, product, name, rank) VALUES ('zd_suite_pro', 'zd_suite', 'Suite Professional', 2);
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('zd_suite_pro', '1 month', 69, true);
INSERT INTO suite_component (suite_plan, plan) VALUES ('zd_suite_pro', 'zd_pro');
INSERT INTO terms (version, effective_at) VALUES ('2025-01', '2025-01-01');
-- account 1 is self-service, account 2 is managed: otherwise the same
INSERT INTO account (id, tenant_id, name, managed) VALUES (1, 1, 'Self-service', false), (2, 2, 'Managed', true);
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (11, 1, 1, 'owner@self', 'owner'), (12, 1, 1, 'agent@self', 'member'),
    (21, 2, 2, 'owner@managed', 'owner'), (22, 2, 2, 'agent@managed', 'member');
CREATE TEMP TABLE fixture (account_id bigint PRIMARY KEY, owner bigint, agent bigint, sub bigint, batch bigint);
INSERT INTO fixture (account_id, owner, agent) VALUES (1, 11, 12), (2, 21, 22);
SELECT count(accept_terms(account_id, '2025-01', '2026-01-01')) AS accepted FROM fixture;
UPDATE fixture SET sub = subscribe(account_id, 'zd_team', '1 month', 5, '2026-01-01');
UPDATE fixture SET batch = purchase_addon(sub, 'zd_agents', 1, '2026-01-01');
SELECT count(license_consume(sub, agent)) AS seated FROM fixture;

-- outcome(statement, actor): 'ok' or the SQLSTATE, the statement rolled back either way
CREATE FUNCTION pg_temp.outcome(statement text, actor text) RETURNS text
LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM set_config('subscription.actor', coalesce(actor, ''), true);
    EXECUTE statement;
    RAISE SQLSTATE 'ZZ001';
EXCEPTION
    WHEN SQLSTATE 'ZZ001' THEN RETURN 'ok';
    WHEN OTHERS THEN RETURN SQLSTATE;
END
$f$;

-- Z2: every public function acting on an account, {a} the account, {s} its
-- subscription, {b} its add-on batch, {o} its owner, {m} a member holding a license
CREATE TEMP TABLE call (fn text PRIMARY KEY, statement text NOT NULL);
INSERT INTO call VALUES
    ('subscribe',              $$SELECT subscription.subscribe({a}, 'zd_pro', '1 month', 1, '2026-01-05')$$),
    ('set_quantity',           $$SELECT subscription.set_quantity({s}, 7, '2026-01-05')$$),
    ('set_quantity (fewer)',   $$SELECT subscription.set_quantity({s}, 4, '2026-01-05')$$),
    ('change_plan',            $$SELECT subscription.change_plan({s}, 'zd_pro', '2026-01-05')$$),
    ('purchase_addon',         $$SELECT subscription.purchase_addon({s}, 'zd_agents', 2, '2026-01-05')$$),
    ('license_consume',        $$SELECT subscription.license_consume({s}, {o})$$),
    ('license_release',        $$SELECT subscription.license_release({s}, {m})$$),
    ('licenses_left',          $$SELECT subscription.licenses_left({s})$$),
    ('set_default',            $$SELECT subscription.set_default({s})$$),
    ('renewal_terms',          $$SELECT subscription.renewal_terms({s})$$),
    ('cancel_migration',       $$SELECT subscription.cancel_migration({s})$$),
    ('preview_migration',      $$SELECT subscription.preview_migration('zd_team', 'zd_pro', '2026-01-05')$$),
    ('bundle_into_suite',      $$SELECT subscription.bundle_into_suite({a}, 'zd_suite_pro', NULL, '2026-01-05')$$),
    ('preview_bundle_into_suite', $$SELECT subscription.preview_bundle_into_suite({a}, 'zd_suite_pro', NULL, '2026-01-05')$$),
    ('accept_terms',           $$SELECT subscription.accept_terms({a}, '2025-01', '2026-01-05')$$),
    ('credit_account',         $$SELECT subscription.credit_account({a}, 10, 'goodwill')$$),
    ('add_payment_method',     $$SELECT subscription.add_payment_method({a}, 'card', 'tok_visa', 'Visa 4242')$$),
    ('credit_balance',         $$SELECT subscription.credit_balance({a})$$),
    ('effective_limit',        $$SELECT subscription.effective_limit({a}, 'triggers')$$),
    ('usage',                  $$SELECT subscription.usage({a}, 'triggers')$$),
    ('has_feature',            $$SELECT subscription.has_feature({a}, 'triggers')$$),
    ('record_usage',           $$SELECT subscription.record_usage({a}, 'triggers', 1, 'call-1')$$),
    ('correct_usage',          $$SELECT subscription.record_usage({a}, 'triggers', 1, 'call-2'), subscription.correct_usage({a}, 'triggers', 'call-2', 0, 'a test call')$$),
    ('preview_change_plan',    $$SELECT subscription.preview_change_plan({s}, 'zd_pro', '2026-01-05')$$),
    ('preview_set_quantity',   $$SELECT subscription.preview_set_quantity({s}, 7, '2026-01-05')$$),
    ('preview_usage',          $$SELECT count(*) FROM subscription.preview_usage({a})$$),
    ('preview_purchase_addon', $$SELECT subscription.preview_purchase_addon({s}, 'zd_agents', 1, '2026-01-05')$$),
    ('apply_downgrade',        $$SELECT subscription.apply_downgrade({s}, true)$$),
    ('change_cycle',           $$SELECT subscription.change_cycle({s}, '1 year')$$),
    ('set_renewal',            $$SELECT subscription.set_renewal({s}, 'none')$$),
    ('cancel',                 $$SELECT subscription.cancel({s})$$),
    ('pause',                  $$SELECT subscription.pause({s}, '2026-01-05')$$),
    ('resume',                 $$SELECT subscription.resume({s}, '2026-01-06') FROM (SELECT subscription.pause({s}, '2026-01-05')) AS p$$),
    ('cancel_account',         $$SELECT subscription.cancel_account({a})$$),
    ('cancel_addon',           $$SELECT subscription.cancel_addon({b})$$),
    ('end_early',              $$SELECT subscription.end_early({s}, '2026-01-05')$$),
    ('close_account',          $$SELECT subscription.close_account({a}, '2026-01-05')$$),
    ('erase_account',          $$SELECT subscription.erase_account({a})$$),
    ('verify',                 $$SELECT subscription.verify({a})$$);

-- the table leaves out no function of the schema that takes an account,
-- a subscription or a batch: the internal ones aside, and the permission
-- check itself (authorize, actor_refusal, may_read), the helpers the views
-- and the C code read (coupon_discount, license_capacity) and the
-- back-office repair recount_usage
SELECT p.proname AS missing_from_the_table
  FROM pg_proc AS p
 WHERE p.pronamespace = 'subscription'::regnamespace
   AND p.proargnames && '{account_id,subscription_id,batch_id}'::text[]
   AND coalesce(obj_description(p.oid, 'pg_proc'), '') NOT LIKE 'Internal%'
   AND p.prorettype <> 'trigger'::regtype
   AND p.proname NOT IN ('authorize', 'actor_refusal', 'may_read', 'coupon_discount', 'license_capacity', 'recount_usage')
   AND p.proname NOT IN (SELECT split_part(fn, ' ', 1) FROM call)
 ORDER BY 1;

CREATE FUNCTION pg_temp.run(statement text, f fixture, actor text) RETURNS text
LANGUAGE sql AS $f$
    SELECT pg_temp.outcome(replace(replace(replace(replace(replace(statement,
               '{a}', f.account_id::text), '{s}', f.sub::text), '{b}', f.batch::text),
               '{o}', f.owner::text), '{m}', f.agent::text), actor)
$f$;

-- Z2: as the owner, each kind of account; and back-office code on the managed one
CREATE TEMP TABLE result AS
SELECT c.fn,
       pg_temp.run(c.statement, s, s.owner::text) AS self_service_owner,
       pg_temp.run(c.statement, m, m.owner::text) AS managed_owner,
       pg_temp.run(c.statement, m, NULL) AS managed_backoffice
  FROM call AS c, fixture AS s, fixture AS m
 WHERE s.account_id = 1 AND m.account_id = 2;
SELECT * FROM result ORDER BY self_service_owner = managed_owner DESC, fn;

-- Z2: exactly the cycle, the renewal option, the cancellations and a suite
-- bundle (it ends the bundled subscriptions early, Z3) differ,
-- each refused with 42501 on the managed account only
SELECT string_agg(fn, ', ' ORDER BY fn) AS refused_on_managed_only
  FROM result WHERE self_service_owner = 'ok' AND managed_owner = '42501';
SELECT count(*) AS other_differences FROM result
 WHERE self_service_owner <> managed_owner AND NOT (self_service_owner = 'ok' AND managed_owner = '42501');

-- Z2: the refusal, with its HINT; an admin with the right change_renewal is refused too
SET subscription.actor = '21';
SELECT pg_temp.error_of(format('SELECT subscription.change_cycle(%s, %L)', sub, '1 year')) AS change_cycle
  FROM fixture WHERE account_id = 2;
INSERT INTO member (id, tenant_id, account_id, external_id, role, rights) VALUES (23, 2, 2, 'admin@managed', 'admin', '{change_renewal}');
SET subscription.actor = '23';
SELECT pg_temp.error_of(format('SELECT subscription.set_renewal(%s, %L)', sub, 'none')) AS admin_set_renewal
  FROM fixture WHERE account_id = 2;
RESET subscription.actor;
-- Z2: back-office code makes the change: the sales representative's, in history without an actor
SELECT set_renewal(sub, 'none') FROM fixture WHERE account_id = 2;
SELECT actor = session_user AS by_the_session_user, details FROM history
 WHERE account_id = 2 AND operation = 'subscription_update' AND details ? 'renewal';

ROLLBACK;

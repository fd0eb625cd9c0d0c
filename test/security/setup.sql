-- Security suite, run once as a superuser after CREATE EXTENSION subscription
-- (test/security.sh does it in a fresh database).  Idempotent.
--
-- The roles of the threat model:
--   tenant_a, tenant_b  own application tables that a plan limit guards
--                       (CREATE on schema public, nothing in schema subscription):
--                       the attacker who owns a limited table
--   app                 the application: subscription.grant_application('app')
--   backoffice          back-office code and cron: subscription.grant_backoffice('backoffice')
-- Until grant_application / grant_backoffice exist (1.0), their rights are
-- emulated below with the plain GRANTs an operator had to give 1.0 for the
-- application and the back office to work at all (the functions were
-- invoker-rights, so the roles needed DML on the extension's tables): the
-- suite then sees 1.0 as it was deployed.
--
-- Schema security_test holds what the test files share:
--   security_test.fixture()          a catalog, four accounts, their members and subscriptions
--   security_test.witness(owner)     the attacker's payload, called by every piece of tenant code
--   security_test.no_escalation(what) the outcome checks after an attack (two pgTAP lines)
--   security_test.attempt(statement) an attack step whose own success does not matter
--   security_test.sub_of(account)    the account's first subscription
--   security_test.trapped_table(name, columns) a limited table whose trigger is the attacker's
-- The test files run one at a time (pg_prove without -j): the witness's
-- counters are shared.

\set ON_ERROR_STOP 1
SET client_min_messages = warning;

-- the roles, created if missing; attributes and memberships reset, in case an
-- attack of an earlier run against a vulnerable build committed
DO $$
DECLARE
    r text;
    m record;
BEGIN
    FOREACH r IN ARRAY '{tenant_a,tenant_b,app,backoffice}'::text[] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
        EXECUTE format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOLOGIN', r);
        FOR m IN SELECT g.rolname AS granted FROM pg_catalog.pg_auth_members AS a
                   JOIN pg_catalog.pg_roles AS g ON g.oid = a.roleid
                   JOIN pg_catalog.pg_roles AS u ON u.oid = a.member
                  WHERE u.rolname = r LOOP
            EXECUTE format('REVOKE %I FROM %I', m.granted, r);
        END LOOP;
    END LOOP;
END
$$;

-- table owners create their tables, types, casts and functions in public
GRANT USAGE, CREATE ON SCHEMA public TO tenant_a, tenant_b;

-- the application and the back office
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_proc
                WHERE pronamespace = 'subscription'::regnamespace AND proname = 'grant_application') THEN
        PERFORM subscription.grant_application('app');
    ELSE
        -- 1.0: what the invoker-rights functions needed
        GRANT USAGE ON SCHEMA subscription TO app;
        GRANT SELECT ON ALL TABLES IN SCHEMA subscription TO app;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA subscription TO app;
        GRANT INSERT, UPDATE ON subscription.account, subscription.member, subscription.subscription,
                                subscription.license_counter, subscription.ledger, subscription.addon_batch
              TO app;
        GRANT INSERT, DELETE ON subscription.license TO app;
        GRANT DELETE ON subscription.member TO app;
        -- row locks taken by the functions (FOR UPDATE) and the trim of an immediate downgrade
        GRANT UPDATE ON subscription.coupon TO app;
        GRANT INSERT, UPDATE ON subscription.usage_counter TO app;
        GRANT INSERT ON subscription.trimmed TO app;
        GRANT EXECUTE ON FUNCTION
            subscription.subscribe(bigint, text, interval, integer, timestamptz, text, text),
            subscription.set_quantity(bigint, integer, timestamptz),
            subscription.change_plan(bigint, text, timestamptz),
            subscription.change_cycle(bigint, interval),
            subscription.set_renewal(bigint, text),
            subscription.cancel(bigint),
            subscription.cancel_account(bigint),
            subscription.purchase_addon(bigint, text, integer, timestamptz),
            subscription.cancel_addon(bigint),
            subscription.license_consume(bigint, bigint),
            subscription.license_release(bigint, bigint),
            subscription.preview_change_plan(bigint, text, timestamptz),
            subscription.preview_set_quantity(bigint, integer, timestamptz),
            subscription.preview_purchase_addon(bigint, text, integer, timestamptz),
            -- called by the functions above with the caller's rights
            subscription.require_arguments(text, text[], boolean[]),
            subscription.give_back_unused(subscription.subscription, timestamptz, text, text),
            subscription.ledger_lines_of(bigint, text),
            subscription.apply_downgrade(bigint, boolean)
            TO app;
    END IF;

    IF EXISTS (SELECT FROM pg_catalog.pg_proc
                WHERE pronamespace = 'subscription'::regnamespace AND proname = 'grant_backoffice') THEN
        PERFORM subscription.grant_backoffice('backoffice');
    ELSE
        -- 1.0: everything, but SELECT on the sequences, which nobody thought of
        GRANT USAGE ON SCHEMA subscription TO backoffice;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA subscription TO backoffice;
        GRANT USAGE ON ALL SEQUENCES IN SCHEMA subscription TO backoffice;
        GRANT EXECUTE ON ALL ROUTINES IN SCHEMA subscription TO backoffice;
    END IF;
END
$$;

------------------------------------------------------------------------
-- What the test files share
------------------------------------------------------------------------

DROP SCHEMA IF EXISTS security_test CASCADE;
CREATE SCHEMA security_test;
GRANT USAGE ON SCHEMA security_test TO PUBLIC;

-- Non-transactional evidence: a sequence keeps its nextval() through the
-- rollback of a dry run, a preview, a subtransaction or the whole test.
CREATE SEQUENCE security_test.ran_as_other;      -- tenant code ran as a role other than its owner
CREATE SEQUENCE security_test.ran_as_superuser;  -- ... as a superuser
CREATE SEQUENCE security_test.became_superuser;  -- a role of the suite was a superuser after an attack
CREATE SEQUENCE security_test.settings_changed;  -- an attack changed the caller's session settings
GRANT USAGE ON SEQUENCE security_test.ran_as_other, security_test.ran_as_superuser,
                        security_test.became_superuser, security_test.settings_changed TO PUBLIC;

-- The attacker's payload.  Every function, cast, operator and trigger that a
-- tenant plants calls it with its own name; run as anyone else, it leaves
-- evidence, and run as a superuser it makes tenant_b one.
CREATE FUNCTION security_test.witness(owner name)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_user <> owner THEN
        PERFORM nextval('security_test.ran_as_other');
    END IF;
    IF (SELECT r.rolsuper FROM pg_roles AS r WHERE r.rolname = current_user) THEN
        PERFORM nextval('security_test.ran_as_superuser');
        ALTER ROLE tenant_b SUPERUSER;
    END IF;
END
$$;

-- A payload that poisons the session it runs in: settings that outlive the
-- statement (a superuser cron's next query would resolve operators in public).
CREATE FUNCTION security_test.poison()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
    PERFORM pg_catalog.set_config('subscription.actor', '21', false);
END
$$;

CREATE FUNCTION security_test.reset_marks()
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM setval('security_test.ran_as_other', 1, false);
    PERFORM setval('security_test.ran_as_superuser', 1, false);
    PERFORM setval('security_test.became_superuser', 1, false);
    PERFORM setval('security_test.settings_changed', 1, false);
    ALTER ROLE tenant_a NOSUPERUSER;
    ALTER ROLE tenant_b NOSUPERUSER;
    ALTER ROLE app NOSUPERUSER;
    ALTER ROLE backoffice NOSUPERUSER;
END
$$;

CREATE FUNCTION security_test.suite_superusers()
RETURNS text
LANGUAGE sql STABLE
RETURN (SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) FROM pg_catalog.pg_roles AS r
         WHERE r.rolname IN ('tenant_a', 'tenant_b', 'app', 'backoffice') AND r.rolsuper);

CREATE FUNCTION security_test.session_settings()
RETURNS text
LANGUAGE sql STABLE
RETURN (SELECT string_agg(s.name || '=' || s.setting, ', ' ORDER BY s.name) FROM pg_catalog.pg_settings AS s
         WHERE s.name IN ('search_path', 'subscription.actor', 'role', 'session_authorization',
                          'session_replication_role', 'row_security'));

-- An attack, run as the current role in a subtransaction that is always
-- rolled back, so that every attack of a file starts from the same rows;
-- whatever it raises (a refusal is fine: the outcome checks decide).  Before
-- the rollback it notes what the rollback would hide: a role of the suite
-- that became a superuser, the session's settings changed.  Prints nothing.
CREATE FUNCTION security_test.attack(statement text)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    settings_before text := security_test.session_settings();
BEGIN
    BEGIN
        EXECUTE statement;
    EXCEPTION WHEN OTHERS THEN
        NULL;
    END;
    IF security_test.suite_superusers() IS NOT NULL THEN
        PERFORM nextval('security_test.became_superuser');
    END IF;
    IF security_test.session_settings() IS DISTINCT FROM settings_before THEN
        PERFORM nextval('security_test.settings_changed');
    END IF;
    RAISE EXCEPTION 'undo the attack' USING ERRCODE = 'SECUN';
EXCEPTION WHEN SQLSTATE 'SECUN' THEN
    NULL;
END
$$;

-- An attack step whose effects stay (a DDL step that 1.1 refuses, say).
-- Prints nothing.
CREATE FUNCTION security_test.attempt(statement text)
RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE statement;
EXCEPTION WHEN OTHERS THEN
    NULL;
END
$$;

-- The outcome of the attacks since the last check, as two pgTAP assertions:
-- the tenant's code ran as its owner only (or not at all), and no role
-- became a superuser.  Call it as the superuser, before the transaction
-- rolls back; it resets the evidence for the next attack.
CREATE FUNCTION security_test.no_escalation(what text)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    other bigint;
    super bigint;
    became bigint;
    supers text := security_test.suite_superusers();
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user) THEN
        RAISE EXCEPTION 'security_test.no_escalation() runs as a superuser (RESET ROLE / RESET SESSION AUTHORIZATION first)';
    END IF;
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO other FROM security_test.ran_as_other;
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO super FROM security_test.ran_as_superuser;
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO became FROM security_test.became_superuser;
    RETURN NEXT public.ok(other = 0, what || ': the tenant''s code ran as its owner only');
    IF other > 0 THEN
        RETURN NEXT public.diag(format('it ran %s times as another role, %s of them as a superuser', other, super));
    END IF;
    RETURN NEXT public.ok(supers IS NULL AND became = 0, what || ': no role became a superuser');
    IF supers IS NOT NULL OR became > 0 THEN
        RETURN NEXT public.diag(format('superusers: %s', coalesce(supers, 'tenant_b, inside the attack')));
    END IF;
    PERFORM security_test.reset_marks();
END
$$;

-- The attacks since the last check left the caller's session settings as
-- they were (one pgTAP assertion); resets that evidence.
CREATE FUNCTION security_test.settings_kept(what text)
RETURNS SETOF text
LANGUAGE plpgsql
AS $$
DECLARE
    changed bigint;
BEGIN
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO changed FROM security_test.settings_changed;
    RETURN NEXT public.ok(changed = 0, what || ': the caller''s session settings are unchanged');
    PERFORM setval('security_test.settings_changed', 1, false);
END
$$;

-- A limited application table whose BEFORE DELETE OR UPDATE trigger is the
-- attacker's: it calls the witness, poisons the session, and tries what a
-- restricted operation refuses (SET ROLE, a temporary table NAME_leftover).
-- Call it as the owner to be (SET ROLE tenant_a): the table, its trigger
-- function and its trigger are theirs.
CREATE FUNCTION security_test.trapped_table(name text, more_columns text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    EXECUTE format('CREATE TABLE public.%I (id int PRIMARY KEY, account_id bigint NOT NULL, %s)', name, more_columns);
    EXECUTE format($f$
        CREATE FUNCTION public.%I() RETURNS trigger LANGUAGE plpgsql AS $t$
        BEGIN
            PERFORM security_test.witness(%L);
            PERFORM security_test.poison();
            BEGIN
                EXECUTE 'SET ROLE postgres';
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
            BEGIN
                CREATE TEMP TABLE %I (x int);
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
            RETURN coalesce(NEW, OLD);
        END
        $t$$f$, name || '_trap', current_user, name || '_leftover');
    EXECUTE format('CREATE TRIGGER %I BEFORE DELETE OR UPDATE ON public.%I FOR EACH ROW EXECUTE FUNCTION public.%I()',
                   name || '_trap', name, name || '_trap');
END
$fn$;

-- The SQLSTATE a statement raises, '00000' if none.
CREATE FUNCTION security_test.sqlstate_of(statement text)
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    EXECUTE statement;
    RETURN '00000';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;

-- The number of rows a query returns, 0 when it is refused.
CREATE FUNCTION security_test.rows_seen(query text)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM (%s) AS q', query) INTO n;
    RETURN n;
EXCEPTION WHEN insufficient_privilege THEN
    RETURN 0;
END
$$;

CREATE FUNCTION security_test.sub_of(account bigint)
RETURNS bigint
LANGUAGE sql STABLE
RETURN (SELECT s.id FROM subscription.subscription AS s WHERE s.account_id = account ORDER BY s.id LIMIT 1);

-- The shared fixture, built by the superuser inside a test's transaction:
--   product sec (downgrades at the period end): plans sec_big (rank 2), sec_small (rank 1)
--   product sec_now (downgrades at once):      plans now_big, now_small
--   features, big / small limit: widgets, gadgets, parts, boxes 10 / 2 rows;
--     volume 1000 / 100 (scale); speed 100 / 10 (cap); theme unlimited / 0 (detach)
--   add-on sec_seats (1 license, 2.00 a month) for sec_big
--   account 1 Alpha: sec_big x 5, members 11 owner, 12 admin, 13 member; licenses of 11 and 12
--   account 2 Beta:  sec_big x 5, members 21 owner, 22 member; license of 21
--   account 3 Gamma: sec_small x 1, member 31 owner
--   account 4 Delta: now_big x 1, member 41 owner
--   every subscription monthly from 2026-01-01 (period [Jan 1, Feb 1)); 5.00 credit
--   on accounts 1 and 2
CREATE FUNCTION security_test.fixture()
RETURNS text
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM security_test.reset_marks();
    INSERT INTO subscription.product (code, name, downgrade) VALUES
        ('sec', 'Security', 'end_of_period'), ('sec_now', 'Security, immediate', 'immediate');
    INSERT INTO subscription.plan (code, product, name, rank) VALUES
        ('sec_big', 'sec', 'Big', 2), ('sec_small', 'sec', 'Small', 1),
        ('now_big', 'sec_now', 'Big', 2), ('now_small', 'sec_now', 'Small', 1);
    INSERT INTO subscription.plan_price (plan, cycle, amount, per_license) VALUES
        ('sec_big', '1 month', 10, true), ('sec_small', '1 month', 5, true),
        ('now_big', '1 month', 10, true), ('now_small', '1 month', 5, true);
    INSERT INTO subscription.plan_limit (plan, feature, value)
    SELECT p.plan, f.feature, CASE WHEN p.big THEN f.big ELSE f.small END
      FROM (VALUES ('sec_big', true), ('sec_small', false), ('now_big', true), ('now_small', false)) AS p(plan, big)
     CROSS JOIN (VALUES ('widgets', 10::bigint, 2::bigint), ('gadgets', 10, 2), ('parts', 10, 2), ('boxes', 10, 2),
                        ('volume', 1000, 100), ('speed', 100, 10), ('theme', NULL, 0)) AS f(feature, big, small);
    INSERT INTO subscription.addon (code, product, name, feature, units) VALUES ('sec_seats', 'sec', 'One more seat', 'licenses', 1);
    INSERT INTO subscription.addon_price (addon, cycle, amount) VALUES ('sec_seats', '1 month', 2);
    INSERT INTO subscription.plan_addon (plan, addon) VALUES ('sec_big', 'sec_seats');

    INSERT INTO subscription.account (id, name) VALUES (1, 'Alpha'), (2, 'Beta'), (3, 'Gamma'), (4, 'Delta');
    INSERT INTO subscription.member (id, account_id, external_id, role) VALUES
        (11, 1, 'owner@alpha', 'owner'), (12, 1, 'admin@alpha', 'admin'), (13, 1, 'member@alpha', 'member'),
        (21, 2, 'owner@beta', 'owner'), (22, 2, 'member@beta', 'member'),
        (31, 3, 'owner@gamma', 'owner'), (41, 4, 'owner@delta', 'owner');
    PERFORM subscription.subscribe(1, 'sec_big', '1 month', 5, '2026-01-01');
    PERFORM subscription.subscribe(2, 'sec_big', '1 month', 5, '2026-01-01');
    PERFORM subscription.subscribe(3, 'sec_small', '1 month', 1, '2026-01-01');
    PERFORM subscription.subscribe(4, 'now_big', '1 month', 1, '2026-01-01');
    PERFORM subscription.license_consume(security_test.sub_of(1), 11);
    PERFORM subscription.license_consume(security_test.sub_of(1), 12);
    PERFORM subscription.license_consume(security_test.sub_of(2), 21);
    PERFORM subscription.credit_account(1, 5, 'goodwill');
    PERFORM subscription.credit_account(2, 5, 'goodwill');
    RETURN NULL;
END
$$;

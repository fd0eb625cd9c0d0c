-- The data model of API.md: every table, key and constraint of the contract.
BEGIN;
SELECT plan(215);
SET search_path = subscription, public;

SELECT has_schema('subscription');
SELECT tables_are('subscription', ARRAY[
    'currency', 'product', 'plan', 'plan_price', 'plan_limit', 'addon', 'addon_price',
    'plan_addon', 'coupon', 'account', 'member', 'subscription', 'license', 'addon_batch',
    'ledger', 'history', 'trimmed', 'usage_counter', 'license_counter', 'service_seat', 'granted_role',
    'limited_table', 'terms', 'terms_acceptance', 'suite_component',
    -- the features each account is granted, for has_feature (issue 21)
    'entitlement',
    -- the outbox (issue 20)
    'event', 'event_consumer',
    -- idempotency keys (issue 20, item 4)
    'idempotency_key',
    -- usage-based billing (issue 21)
    'meter', 'plan_usage_price', 'usage_record', 'usage_period',
    -- invoices and payments (issue 19)
    'payment_method', 'invoice_series', 'invoice_record', 'payment']);

-- every column the contract names, with its type
SELECT has_column('subscription', t, c, format('%s.%s exists', t, c))
  FROM (VALUES ('currency','code'), ('currency','exponent'),
               ('product','upgrade'), ('product','downgrade'),
               ('plan','product'), ('plan','rank'), ('plan','kind'),
               ('plan_price','tier'), ('plan_price','per_license'), ('plan_price','currency'),
               ('plan_limit','value'), ('plan_limit','per_license'),
               ('addon','one_time'), ('addon','feature'), ('addon','units'),
               ('plan_addon','included'),
               ('coupon','percent_off'), ('coupon','amount_off'), ('coupon','cycles'),
               ('coupon','redeem_by'), ('coupon','max_redemptions'),
               ('account','parent_id'), ('account','billing_anchor'), ('account','managed'),
               ('member','external_id'), ('member','role'), ('member','rights'),
               ('subscription','period'), ('subscription','anchor'), ('subscription','renewal'),
               ('subscription','status'), ('subscription','cancel_at_period_end'),
               ('subscription','pending_plan'), ('subscription','pending_cycle'),
               ('subscription','pending_quantity'), ('subscription','is_default'),
               ('license','assigned_at'), ('addon_batch','purchased_at'),
               ('ledger','addon_batch_id'), ('ledger','period'), ('ledger','kind'),
               ('history','actor'), ('history','operation'), ('history','details'),
               ('trimmed','old_row'), ('trimmed','row_id'), ('usage_counter','used'),
               -- versions and migrations (issue 16)
               ('plan','version'), ('plan_price','versions'), ('plan_limit','versions'),
               ('subscription','plan_version'), ('subscription','migrate_to'), ('subscription','migrate_version'),
               ('subscription','migrate_at'), ('subscription','migrate_trim')) AS x(t, c);

SELECT col_type_is('subscription', 'plan_price', 'amount', 'numeric', 'money is numeric, never float');
SELECT col_type_is('subscription', 'ledger', 'amount', 'numeric', 'ledger amounts are numeric');
SELECT col_type_is('subscription', 'subscription', 'cycle', 'interval', 'cycles are intervals');
SELECT col_type_is('subscription', 'subscription', 'period', 'tstzrange', 'periods are tstzranges');
SELECT col_type_is('subscription', 'plan_limit', 'value', 'bigint', 'limits are bigint');
SELECT col_type_is('subscription', 'history', 'details', 'jsonb', 'history details are jsonb');
SELECT col_type_is('subscription', 'member', 'rights', 'text[]', 'rights are a text array');

-- primary keys
SELECT col_is_pk('subscription', t, c, format('%s has primary key %s', t, c))
  FROM (VALUES ('currency', ARRAY['code']), ('product', ARRAY['code']), ('plan', ARRAY['code']),
               ('addon', ARRAY['code']), ('coupon', ARRAY['code']),
               -- tenant tables: the tenant key first (issue 17, docs/design.md#tenant-keys)
               ('account', ARRAY['tenant_id', 'id']),
               ('member', ARRAY['tenant_id', 'id']), ('subscription', ARRAY['tenant_id', 'id']),
               ('addon_batch', ARRAY['tenant_id', 'id']), ('ledger', ARRAY['tenant_id', 'id']),
               ('history', ARRAY['tenant_id', 'id']), ('trimmed', ARRAY['tenant_id', 'id']),
               ('plan_limit', ARRAY['plan', 'feature', 'versions']), ('plan_addon', ARRAY['plan', 'addon']),
               ('license', ARRAY['tenant_id', 'subscription_id', 'member_id']),
               ('license_counter', ARRAY['tenant_id', 'subscription_id']),
               -- R11 is this key: one service license per member and product
               ('service_seat', ARRAY['tenant_id', 'member_id', 'product']),
               ('usage_counter', ARRAY['tenant_id', 'account_id', 'feature']),
               -- Z11: the terms versions, and each account's acceptances
               ('terms', ARRAY['version']), ('terms_acceptance', ARRAY['tenant_id', 'account_id', 'version']),
               -- Z3: a suite includes a plan once
               ('suite_component', ARRAY['suite_plan', 'plan'])) AS x(t, c);

-- foreign keys and their deliberate ON DELETE actions:
-- c = cascade (derived data: counters; a member's seats), a = refuse while in use (nothing lost,
-- refuse_delete_in_use names what), n = set null; account.parent_id and ledger.charge_id are
-- checked by a trigger instead (no circular foreign key for pg_dump).  A key between tenant
-- tables is (tenant_id, column): its last column is named here
SELECT is(
    (SELECT string_agg(f, ' ' ORDER BY f) FROM (
       SELECT format('%s.%s->%s:%s', c.conrelid::regclass, a.attname, c.confrelid::regclass, c.confdeltype) AS f
       FROM pg_constraint AS c
       JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[cardinality(c.conkey)]
      WHERE c.contype = 'f' AND c.connamespace = 'subscription'::regnamespace
        AND c.conrelid = x.t::regclass) AS fks),
    x.expected, format('foreign keys of %s', x.t))
  FROM (VALUES
    ('subscription.plan', 'plan.product->product:a'),
    ('subscription.plan_price', 'plan_price.currency->currency:a plan_price.plan->plan:a'),
    ('subscription.plan_limit', 'plan_limit.plan->plan:a'),
    ('subscription.addon', 'addon.product->product:a'),
    ('subscription.addon_price', 'addon_price.addon->addon:a addon_price.currency->currency:a'),
    ('subscription.plan_addon', 'plan_addon.addon->addon:a plan_addon.plan->plan:a'),
    ('subscription.coupon', 'coupon.currency->currency:a'),
    ('subscription.member', 'member.account_id->account:a'),
    -- Z11: history keeps the record of an acceptance; an account deleted held nothing else
    ('subscription.terms_acceptance', 'terms_acceptance.account_id->account:c terms_acceptance.version->terms:a'),
    ('subscription.subscription', 'subscription.account_id->account:a subscription.coupon->coupon:a subscription.migrate_to->plan:a subscription.pending_plan->plan:a subscription.plan->plan:a'),
    ('subscription.license', 'license.member_id->member:c license.subscription_id->subscription:a'),
    ('subscription.addon_batch', 'addon_batch.addon->addon:a addon_batch.subscription_id->subscription:a'),
    -- I2 (issue 18): a line's account is its invoice's, by its key to the invoice (tenant_id, invoice_id, account_id)
    ('subscription.ledger', 'ledger.account_id->invoice_record:a ledger.addon_batch_id->addon_batch:a ledger.corrects_invoice_id->invoice_record:a ledger.currency->currency:a ledger.subscription_id->subscription:a'),
    ('subscription.trimmed', 'trimmed.account_id->account:a'),
    ('subscription.usage_counter', 'usage_counter.account_id->account:c'),
    ('subscription.license_counter', 'license_counter.subscription_id->subscription:c'),
    ('subscription.suite_component', 'suite_component.plan->plan:a suite_component.suite_plan->plan:a')) AS x(t, expected);
-- issue 17: every key of a tenant table (primary, unique, exclusion, and foreign to another
-- tenant table) starts with the tenant key, so that Citus can distribute them all by it
SELECT is((SELECT string_agg(format('%s %s', c.conrelid::regclass, c.conname), ', ' ORDER BY c.conname)
             FROM pg_constraint AS c
            WHERE c.connamespace = 'subscription'::regnamespace AND c.contype IN ('p', 'u', 'x', 'f')
              AND EXISTS (SELECT FROM pg_attribute AS t WHERE t.attrelid = c.conrelid AND t.attname = 'tenant_id')
              AND (c.contype <> 'f' OR EXISTS (SELECT FROM pg_attribute AS t
                                                WHERE t.attrelid = c.confrelid AND t.attname = 'tenant_id'))
              AND c.conkey[1] <> (SELECT t.attnum FROM pg_attribute AS t
                                   WHERE t.attrelid = c.conrelid AND t.attname = 'tenant_id')),
          NULL, 'every key of a tenant table starts with tenant_id');
SELECT is((SELECT count(*)::int FROM pg_class AS r
            WHERE r.relnamespace = 'subscription'::regnamespace AND r.relkind = 'r'
              AND EXISTS (SELECT FROM pg_attribute AS t WHERE t.attrelid = r.oid AND t.attname = 'tenant_id' AND t.attnotnull)),
          21, 'the 21 tenant tables carry tenant_id NOT NULL (usage''s two and the entitlements, issue 21; the invoices'' four, issue 19; idempotency keys, issue 20)');
SELECT is((SELECT string_agg(i.indexrelid::regclass::text, ', ')
             FROM pg_index AS i JOIN pg_attribute AS t ON t.attrelid = i.indrelid AND t.attname = 'tenant_id'
            WHERE i.indisunique AND i.indrelid::regclass::text LIKE 'subscription.%' AND i.indkey[0] <> t.attnum),
          NULL, 'no unique index of a tenant table leaves the tenant key out (Citus refuses one)');
SELECT is((SELECT count(*)::int FROM pg_constraint WHERE conrelid = 'subscription.history'::regclass AND contype = 'f'),
          0, 'history has no foreign key: the record of an erased account stays (K9, R8)');
-- nothing lost (issue 15): no self-referencing key (pg_dump would warn of a circular one),
-- a trigger checks each instead; every table a DELETE could take money or catalog from refuses
SELECT is((SELECT count(*)::int FROM pg_constraint
            WHERE contype = 'f' AND conrelid = confrelid AND connamespace = 'subscription'::regnamespace),
          0, 'no table of the extension references itself by a foreign key');
SELECT has_trigger('subscription', 'account', 'account_parent_exists', 'an account''s parent is checked by a trigger');
SELECT has_trigger('subscription', 'ledger', 'ledger_charge_exists', 'a line''s charge is checked by a trigger');
SELECT is((SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
            WHERE t.tgfoid = 'subscription.refuse_delete_in_use()'::regprocedure),
          'account addon addon_batch addon_price ledger plan plan_price subscription terms',
          'the tables whose rows a DELETE could take money or catalog from refuse it while in use');

-- CHECKs on the text enums and values
SELECT col_has_check('subscription', t, c, format('%s.%s is checked', t, c))
  FROM (VALUES ('product','upgrade'), ('product','downgrade'), ('plan','kind'),
               ('plan_price','amount'), ('plan_price','cycle'), ('plan_price','tier'),
               ('plan_limit','value'), ('addon','units'), ('addon_price','amount'),
               ('coupon','percent_off'), ('coupon','amount_off'), ('member','role'),
               ('member','rights'), ('subscription','renewal'), ('subscription','status'),
               ('subscription','quantity'), ('subscription','period'), ('subscription','cycle'),
               ('addon_batch','status'), ('addon_batch','quantity'), ('ledger','kind'),
               ('ledger','amount'), ('trimmed','action'), ('usage_counter','used'),
               ('currency','exponent')) AS x(t, c);

-- R10 and C2 are constraints, not care
SELECT is((SELECT contype::text FROM pg_constraint WHERE conname = 'subscription_one_default_per_account'),
          'x', 'R10: one default subscription per account is an exclusion constraint');
SELECT is((SELECT indisunique FROM pg_index WHERE indexrelid = 'subscription.ledger_one_charge_per_period'::regclass),
          true, 'C2: one charge per period is a unique index');
SELECT is((SELECT indnullsnotdistinct FROM pg_index WHERE indexrelid = 'subscription.ledger_one_charge_per_period'::regclass),
          true, 'C2: a one-time charge (no period) is unique too');
SELECT has_trigger('subscription', 'history', 'history_append_only', 'R8: history refuses UPDATE and DELETE');
SELECT has_trigger('subscription', 'history', 'history_no_truncate', 'R8: history refuses TRUNCATE');
SELECT has_trigger('subscription', 'plan_price', 'plan_price_tiered_or_not', 'L12: a plan is tiered or not, never both');
SELECT has_trigger('subscription', 'license', t, format('R12: %s guards every write path', t))
  FROM unnest('{license_guard_insert,license_guard_update,license_guard_delete,license_guard_truncate}'::text[]) AS t;
SELECT has_trigger('subscription', t, t || '_history', format('R8: %s changes are recorded', t))
  FROM unnest('{account,member,subscription,addon_batch}'::text[]) AS t;
SELECT has_trigger('subscription', 'member', 'member_default_license', 'R10: a new member gets the default license');
SELECT col_has_check('subscription', 'license_counter', ARRAY['used', 'capacity'], 'the seat counter never exceeds its capacity');
SELECT has_view('subscription', 'license_holder', 'R7: the members holding licenses');
SELECT has_view('subscription', 'renewal_notice', 'L5, L8: what renews soon, and for how much');

-- ISO 4217 seed
SELECT is((SELECT exponent FROM currency WHERE code = 'EUR'), 2, 'EUR has 2 decimals');
SELECT is((SELECT exponent FROM currency WHERE code = 'JPY'), 0, 'JPY has none');
SELECT is((SELECT exponent FROM currency WHERE code = 'KWD'), 3, 'KWD has 3');
SELECT cmp_ok((SELECT count(*)::int FROM currency WHERE iso4217), '>=', 150, 'the ISO 4217 list is seeded');

-- pg_dump keeps user rows: every catalog and tenant table and the id sequences are config tables
SELECT set_eq(
    $$SELECT format('%s.%s', n.nspname, c.relname)
        FROM pg_extension AS e, unnest(e.extconfig) AS t(oid)
        JOIN pg_class AS c ON c.oid = t.oid JOIN pg_namespace AS n ON n.oid = c.relnamespace
       WHERE e.extname = 'subscription'$$,
    $$VALUES ('subscription.currency'), ('subscription.product'), ('subscription.plan'),
             ('subscription.plan_price'), ('subscription.plan_limit'), ('subscription.addon'),
             ('subscription.addon_price'), ('subscription.plan_addon'), ('subscription.coupon'),
             ('subscription.account'), ('subscription.member'), ('subscription.subscription'),
             ('subscription.license'), ('subscription.addon_batch'), ('subscription.ledger'),
             ('subscription.history'), ('subscription.trimmed'), ('subscription.usage_counter'),
             ('subscription.license_counter'), ('subscription.service_seat'),
             ('subscription.limited_table'), ('subscription.granted_role'),
             ('subscription.terms'), ('subscription.terms_acceptance'),
             ('subscription.suite_component'),
             ('subscription.account_id_seq'), ('subscription.member_id_seq'),
             ('subscription.subscription_id_seq'), ('subscription.addon_batch_id_seq'),
             ('subscription.ledger_id_seq'), ('subscription.history_id_seq'),
             ('subscription.trimmed_id_seq'), ('subscription.limited_table_position_seq'),
             -- the outbox and its consumers' positions (issue 20)
             ('subscription.event'), ('subscription.event_id_seq'), ('subscription.event_consumer'),
             ('subscription.idempotency_key'),
             -- usage-based billing (issue 21)
             ('subscription.meter'), ('subscription.plan_usage_price'), ('subscription.usage_record'),
             ('subscription.usage_period'),
             -- invoices and payments (issue 19)
             ('subscription.payment_method'), ('subscription.invoice_series'), ('subscription.invoice_record'),
             ('subscription.payment'), ('subscription.payment_method_id_seq'), ('subscription.invoice_record_id_seq'),
             ('subscription.payment_id_seq'),
             -- the features each account is granted (issue 21)
             ('subscription.entitlement')$$,
    'catalog, tenant tables and their sequences are registered with pg_extension_config_dump');

-- functions: signatures, volatility, search_path pinned
SELECT function_returns('subscription', 'tier_for_hosts', ARRAY['integer', 'integer[]'], 'integer');
SELECT function_returns('subscription', 'tier_for_hosts', ARRAY['text', 'integer'], 'integer');
SELECT function_returns('subscription', 'prorate_refund',
    ARRAY['numeric', 'timestamp with time zone', 'timestamp with time zone', 'timestamp with time zone', 'text', 'integer'], 'numeric');
SELECT function_returns('subscription', 'license_consume', ARRAY['bigint', 'bigint'], 'integer');
SELECT function_returns('subscription', 'effective_limit', ARRAY['bigint', 'text'], 'bigint');
SELECT function_returns('subscription', 'usage', ARRAY['bigint', 'text'], 'bigint');
SELECT function_returns('subscription', 'enforce_limit', ARRAY['regclass', 'text', 'name', 'text', 'name', 'name'], 'void');
SELECT function_returns('subscription', 'unenforce_limit', ARRAY['regclass', 'text'], 'void');
SELECT function_returns('subscription', 'change_cycle', ARRAY['bigint', 'interval'], 'timestamp with time zone');
SELECT function_returns('subscription', 'set_renewal', ARRAY['bigint', 'text'], 'void');
SELECT function_returns('subscription', 'cancel', ARRAY['bigint'], 'timestamp with time zone');
SELECT col_is_unique('subscription', 'limited_table', ARRAY['feature'], 'a feature is enforced on one table');
SELECT function_returns('subscription', 'license_release', ARRAY['bigint', 'bigint'], 'integer');
SELECT function_returns('subscription', 'licenses_left', ARRAY['bigint'], 'integer');
SELECT function_returns('subscription', 'set_quantity', ARRAY['bigint', 'integer', 'timestamp with time zone'], 'integer');
SELECT ok(NOT has_function_privilege('public', p, 'EXECUTE'), format('PUBLIC may not call %s', p))
  FROM unnest('{subscription.license_consume(bigint\,bigint),subscription.license_release(bigint\,bigint),subscription.set_quantity(bigint\,integer\,timestamptz),subscription.change_cycle(bigint\,interval),subscription.set_renewal(bigint\,text),subscription.cancel(bigint),subscription.cancel_account(bigint)}'::text[]) AS p;
SELECT function_returns('subscription', 'subscribe',
    ARRAY['bigint', 'text', 'interval', 'integer', 'timestamp with time zone', 'text', 'text'], 'bigint');
-- the lifecycle and downgrade functions of API.md, with their signatures
SELECT function_returns('subscription', 'apply_downgrade', ARRAY['bigint', 'boolean'], 'setof record');
SELECT function_returns('subscription', 'change_plan', ARRAY['bigint', 'text', 'timestamp with time zone'], 'setof record');
SELECT function_returns('subscription', 'purchase_addon', ARRAY['bigint', 'text', 'integer', 'timestamp with time zone'], 'bigint');
SELECT function_returns('subscription', 'cancel_addon', ARRAY['bigint'], 'timestamp with time zone');
SELECT function_returns('subscription', 'renew_due', ARRAY['timestamp with time zone'], 'integer');
SELECT function_returns('subscription', 'credit_account', ARRAY['bigint', 'numeric', 'text', 'text'], 'bigint');
SELECT function_returns('subscription', 'end_early', ARRAY['bigint', 'timestamp with time zone'], 'numeric');
SELECT ok(NOT has_function_privilege('public', p, 'EXECUTE'), format('PUBLIC may not call %s', p))
  FROM unnest('{subscription.apply_downgrade(bigint\,boolean),subscription.change_plan(bigint\,text\,timestamptz),subscription.purchase_addon(bigint\,text\,integer\,timestamptz),subscription.cancel_addon(bigint),subscription.renew_due(timestamptz),subscription.run_renewals(timestamptz\,integer),subscription.credit_account(bigint\,numeric\,text\,text),subscription.end_early(bigint\,timestamptz),subscription.preview_change_plan(bigint\,text\,timestamptz),subscription.preview_set_quantity(bigint\,integer\,timestamptz),subscription.preview_purchase_addon(bigint\,text\,integer\,timestamptz),subscription.enforce_limit(regclass\,text\,name\,text\,name\,name),subscription.unenforce_limit(regclass\,text),subscription.reseat_licenses(bigint[]),subscription.bundle_into_suite(bigint\,text\,integer\,timestamptz),subscription.preview_bundle_into_suite(bigint\,text\,integer\,timestamptz)}'::text[]) AS p;
SELECT volatility_is('subscription', 'tier_for_hosts', ARRAY['integer', 'integer[]'], 'immutable');
SELECT volatility_is('subscription', 'tier_for_hosts', ARRAY['text', 'integer'], 'stable');
SELECT volatility_is('subscription', 'prorate_refund',
    ARRAY['numeric', 'timestamp with time zone', 'timestamp with time zone', 'timestamp with time zone', 'text', 'integer'], 'stable');
SELECT is_strict('subscription', 'tier_for_hosts', ARRAY['integer', 'integer[]']);
SELECT is_strict('subscription', 'prorate_refund',
    ARRAY['numeric', 'timestamp with time zone', 'timestamp with time zone', 'timestamp with time zone', 'text', 'integer']);
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
       WHERE p.pronamespace = 'subscription'::regnamespace
         AND p.prolang <> (SELECT oid FROM pg_language WHERE lanname = 'c')
         AND p.prosqlbody IS NULL
         AND NOT coalesce(p.proconfig, '{}') @> '{"search_path=pg_catalog, pg_temp"}'
         -- a procedure that commits cannot carry SET; it qualifies everything
         AND p.oid NOT IN ('subscription.run_renewals(timestamptz, integer)'::regprocedure,
                           'subscription.renew_local_tenants(timestamptz, integer)'::regprocedure,
                           'subscription.renew_in_batches(text, timestamptz, integer, bigint[])'::regprocedure,
                           'subscription.run_dunning(timestamptz, integer)'::regprocedure)$$,
    'every SQL and PL/pgSQL function with a body in a string pins search_path to pg_catalog, pg_temp');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
       WHERE p.oid IN ('subscription.write_history(text, bigint, bigint, jsonb, bigint)'::regprocedure,
                       'subscription.write_histories(text[], bigint, bigint, jsonb[], bigint)'::regprocedure)
         AND NOT coalesce(p.proconfig, '{}') @> '{"search_path=pg_catalog, pg_temp"}'$$,
    'the C writers of history pin search_path to pg_catalog, pg_temp too');
SELECT is_empty(
    $$SELECT p.oid::regprocedure::text FROM pg_proc AS p
       WHERE p.pronamespace = 'subscription'::regnamespace AND p.prosqlbody IS NOT NULL
         AND p.proconfig IS NOT NULL$$,
    'SQL-standard bodies, bound at creation, carry no SET clause, so they are inlined');
SELECT is((SELECT extnamespace::regnamespace::text || ' ' || extrelocatable FROM pg_extension WHERE extname = 'subscription'),
          'subscription false', 'the extension lives in schema subscription and is not relocatable');
SELECT is_empty(
    $$SELECT d.objid FROM pg_depend AS d JOIN pg_class AS c ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
       WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'subscription')
         AND d.deptype = 'e' AND c.relnamespace <> 'subscription'::regnamespace$$,
    'nothing is created outside the schema');
SELECT ok(NOT has_function_privilege('public', 'subscription.subscribe(bigint,text,interval,integer,timestamptz,text,text)', 'EXECUTE'),
          'PUBLIC may not call subscribe');

SELECT * FROM finish();
ROLLBACK;

-- pg_dump keeps the rows users write: the one list of the extension's
-- configuration relations (catalog, tenants, seats, ledger, history,
-- limits, roles), after the tables above.

-- the seeded ISO 4217 currencies are the extension's; the others are the user's
SELECT pg_catalog.pg_extension_config_dump('subscription.currency', 'WHERE NOT iso4217');
-- one call per statement: each call updates the same pg_extension row
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'product', 'plan', 'plan_price', 'plan_limit', 'addon', 'addon_price',
        'plan_addon', 'coupon', 'account', 'member', 'subscription', 'license',
        'addon_batch', 'ledger', 'history', 'trimmed', 'usage_counter', 'license_counter',
        'service_seat', 'limited_table', 'granted_role', 'terms', 'terms_acceptance', 'suite_component',
        'payment_method', 'invoice_series', 'invoice_record', 'payment', 'entitlement']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(('subscription.' || t)::pg_catalog.regclass, '');
    END LOOP;
    -- and the identity sequences, so restored tables keep issuing fresh ids
    -- (and limited_table its registration order: new registrations come after)
    FOREACH t IN ARRAY ARRAY[
        'account.id', 'member.id', 'subscription.id', 'addon_batch.id', 'ledger.id', 'history.id',
        'trimmed.id', 'limited_table.position',
        'payment_method.id', 'invoice_record.id', 'payment.id']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(
            pg_catalog.pg_get_serial_sequence('subscription.' || pg_catalog.split_part(t, '.', 1), pg_catalog.split_part(t, '.', 2))
                ::pg_catalog.regclass, '');
    END LOOP;
END
$$;
-- the outbox and its consumers' positions (issue 20)
SELECT pg_catalog.pg_extension_config_dump('subscription.event', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.event_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.event_consumer', '');
-- idempotency keys (issue 20, item 4)
SELECT pg_catalog.pg_extension_config_dump('subscription.idempotency_key', '');
-- usage-based billing (issue 21): meters, usage prices, keys, snapshots
SELECT pg_catalog.pg_extension_config_dump('subscription.meter', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.plan_usage_price', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.usage_record', '');
SELECT pg_catalog.pg_extension_config_dump('subscription.usage_period', '');

-- The tenant key (docs/design.md#tenant-keys): every tenant table carries
-- tenant_id, the root account's id, first in its primary and foreign keys,
-- so that Citus distributes them all by it and keeps an account, its
-- sub-accounts (K7) and what they hold in one shard group.  The extension's
-- functions write it; a row inserted without it takes the tenant of the
-- account or subscription it names (src/tenants.c).

CREATE FUNCTION subscription.fill_tenant_id()
RETURNS trigger
AS 'MODULE_PATHNAME', 'fill_tenant_id'
LANGUAGE C;

COMMENT ON FUNCTION subscription.fill_tenant_id() IS
'Trigger (C): a row inserted without tenant_id takes the tenant of the account or subscription it names';

CREATE TRIGGER account_fill_tenant_id BEFORE INSERT ON subscription.account
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('account', 'parent_id', 'account');
CREATE TRIGGER member_fill_tenant_id BEFORE INSERT ON subscription.member
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('member', 'account_id', 'account');
CREATE TRIGGER terms_acceptance_fill_tenant_id BEFORE INSERT ON subscription.terms_acceptance
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('terms_acceptance', 'account_id', 'account');
CREATE TRIGGER subscription_fill_tenant_id BEFORE INSERT ON subscription.subscription
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('subscription', 'account_id', 'account');
CREATE TRIGGER addon_batch_fill_tenant_id BEFORE INSERT ON subscription.addon_batch
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('addon_batch', 'subscription_id', 'subscription');
CREATE TRIGGER license_fill_tenant_id BEFORE INSERT ON subscription.license
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('license', 'subscription_id', 'subscription');
CREATE TRIGGER license_counter_fill_tenant_id BEFORE INSERT ON subscription.license_counter
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('license_counter', 'subscription_id', 'subscription');
CREATE TRIGGER service_seat_fill_tenant_id BEFORE INSERT ON subscription.service_seat
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('service_seat', 'subscription_id', 'subscription');
CREATE TRIGGER ledger_fill_tenant_id BEFORE INSERT ON subscription.ledger
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('ledger', 'account_id', 'account');
CREATE TRIGGER history_fill_tenant_id BEFORE INSERT ON subscription.history
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('history', 'account_id', 'account');
CREATE TRIGGER usage_counter_fill_tenant_id BEFORE INSERT ON subscription.usage_counter
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('usage_counter', 'account_id', 'account');
CREATE TRIGGER trimmed_fill_tenant_id BEFORE INSERT ON subscription.trimmed
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('trimmed', 'account_id', 'account');

-- also in replica mode: a restore of a dump without the tenant key (1.0's)
ALTER TABLE subscription.account ENABLE ALWAYS TRIGGER account_fill_tenant_id;
ALTER TABLE subscription.member ENABLE ALWAYS TRIGGER member_fill_tenant_id;
ALTER TABLE subscription.terms_acceptance ENABLE ALWAYS TRIGGER terms_acceptance_fill_tenant_id;
ALTER TABLE subscription.subscription ENABLE ALWAYS TRIGGER subscription_fill_tenant_id;
ALTER TABLE subscription.addon_batch ENABLE ALWAYS TRIGGER addon_batch_fill_tenant_id;
ALTER TABLE subscription.license ENABLE ALWAYS TRIGGER license_fill_tenant_id;
ALTER TABLE subscription.license_counter ENABLE ALWAYS TRIGGER license_counter_fill_tenant_id;
ALTER TABLE subscription.service_seat ENABLE ALWAYS TRIGGER service_seat_fill_tenant_id;
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_fill_tenant_id;
ALTER TABLE subscription.history ENABLE ALWAYS TRIGGER history_fill_tenant_id;
ALTER TABLE subscription.usage_counter ENABLE ALWAYS TRIGGER usage_counter_fill_tenant_id;
ALTER TABLE subscription.trimmed ENABLE ALWAYS TRIGGER trimmed_fill_tenant_id;

-- A new account with its tenant key, in one INSERT that names it: on Citus
-- the coordinator routes the row by tenant_id, which an INSERT that leaves
-- it to fill_tenant_id() does not give (a root account is its own tenant,
-- by an id the sequence has not issued yet).  On a single server the same
-- as an INSERT into account.
CREATE FUNCTION subscription.create_account(name text, parent_id bigint DEFAULT NULL,
                                            billing_anchor timestamptz DEFAULT NULL,
                                            managed boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
-- the caller may insert accounts (grant_application); the id comes from the
-- account's own sequence, which it need not use
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint := pg_catalog.nextval('subscription.account_id_seq');
    tenant bigint := new_id;
BEGIN
    IF create_account.name IS NULL THEN
        RAISE EXCEPTION 'argument "name" of create_account() must not be null'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF create_account.parent_id IS NOT NULL THEN
        -- K7: a sub-account is of its parent's tenant
        SELECT a.tenant_id INTO tenant FROM subscription.account AS a WHERE a.id = create_account.parent_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'parent account % does not exist', create_account.parent_id
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    INSERT INTO subscription.account (tenant_id, id, name, parent_id, billing_anchor, managed)
    VALUES (tenant, new_id, create_account.name, create_account.parent_id, create_account.billing_anchor,
            coalesce(create_account.managed, false));
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.create_account(text, bigint, timestamptz, boolean) IS
'A new account (a sub-account of parent_id, K7) with its tenant key; its id';

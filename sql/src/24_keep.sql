-- Nothing lost (issue 15): a DELETE never takes money or what it names
-- along.  The foreign keys into accounts, subscriptions, add-on batches,
-- the ledger and the catalog are NO ACTION; before one of their rows is
-- deleted, refuse_delete_in_use() names what still refers to it (2BP01),
-- instead of the raw 23503 or, before 1.1, a cascade.  Only derived data
-- (usage_counter, license_counter) and a member's seats still cascade.
-- The two references of a table to itself (account.parent_id,
-- ledger.charge_id) are checked by check_reference() instead of a foreign
-- key: pg_dump reported them as circular foreign keys.

-- "1 ledger line", "3 ledger lines", or NULL for none
CREATE FUNCTION subscription.count_phrase(n bigint, noun text, nouns text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN n OPERATOR(pg_catalog.=) 0 THEN NULL
            WHEN n OPERATOR(pg_catalog.=) 1 THEN '1 ' OPERATOR(pg_catalog.||) noun
            ELSE n::text OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) nouns END;

COMMENT ON FUNCTION subscription.count_phrase(bigint, text, text) IS 'Internal: "1 ledger line", "3 ledger lines", or NULL for none';

-- The rows of account (its sub-accounts) or ledger (the lines of a charge)
-- that name a row, read with the latest snapshot as a foreign key's check
-- reads them (src/references.c): the references that are not foreign keys
-- are then kept under REPEATABLE READ too.  In the tenant given (on Citus,
-- the statement of a trigger on a shard), or in every tenant when NULL (a
-- single server, where a sub-account may have been moved under an account
-- of another tenant).
CREATE FUNCTION subscription.self_referrers(relation text, id bigint, in_tenant bigint)
RETURNS bigint
AS 'MODULE_PATHNAME', 'self_referrers'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION subscription.self_referrers(text, bigint, bigint) IS
'Internal (C): the sub-accounts of an account, or the lines of a charge, read with the latest snapshot, in a tenant or all';

-- Before a row of account, subscription, addon_batch, ledger, plan,
-- plan_price, addon, addon_price or terms is deleted: 2BP01 naming what still
-- refers to it.  The row is locked first, so that a writer that names it
-- (its foreign key check holds FOR KEY SHARE) commits before the count.
CREATE FUNCTION subscription.refuse_delete_in_use()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the deleter needs no right on the ledger
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    what text;
    held text[];
    hint text;
    ledger_lines bigint;
    -- the logical table, from the trigger's argument (issue 17: a shard's
    -- name is not its table's)
    logical text := TG_ARGV[0];
    tenants_readable boolean := true;
    tenant_rows bigint;
BEGIN
    IF logical IN ('plan', 'plan_price', 'addon', 'addon_price', 'terms') THEN
        -- each placement of the catalog checks the catalog, and the
        -- coordinator's the tenant tables too (issue 17)
        tenants_readable := subscription.catalog_reads_tenants();
    END IF;
    CASE logical
    WHEN 'account' THEN
        PERFORM FROM subscription.account AS a WHERE a.tenant_id = OLD.tenant_id AND a.id = OLD.id FOR UPDATE;
        what := format('account %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l
         WHERE l.tenant_id = OLD.tenant_id AND l.account_id = OLD.id;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'active subscription', 'active subscriptions')
               FROM subscription.subscription AS s
              WHERE s.tenant_id = OLD.tenant_id AND s.account_id = OLD.id AND s.status = 'active'),
            (SELECT subscription.count_phrase(count(*), 'ended subscription', 'ended subscriptions')
               FROM subscription.subscription AS s
              WHERE s.tenant_id = OLD.tenant_id AND s.account_id = OLD.id AND s.status <> 'active'),
            (SELECT subscription.count_phrase(count(*), 'member', 'members')
               FROM subscription.member AS m WHERE m.tenant_id = OLD.tenant_id AND m.account_id = OLD.id),
            subscription.count_phrase(subscription.self_referrers('account', OLD.id,
                                                                   CASE WHEN subscription.distributed() THEN OLD.tenant_id END),
                                      'sub-account', 'sub-accounts'),
            (SELECT subscription.count_phrase(count(*), 'archived row', 'archived rows')
               FROM subscription.trimmed AS t WHERE t.tenant_id = OLD.tenant_id AND t.account_id = OLD.id)];
        hint := 'Close it with subscription.close_account(); subscription.erase_account() then removes its personal data and keeps the ledger.';
    WHEN 'subscription' THEN
        what := format('subscription %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l
         WHERE l.tenant_id = OLD.tenant_id AND l.subscription_id = OLD.id;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            (SELECT subscription.count_phrase(count(*), 'add-on batch', 'add-on batches')
               FROM subscription.addon_batch AS b WHERE b.tenant_id = OLD.tenant_id AND b.subscription_id = OLD.id),
            (SELECT subscription.count_phrase(count(*), 'license', 'licenses')
               FROM subscription.license AS x WHERE x.tenant_id = OLD.tenant_id AND x.subscription_id = OLD.id)];
        hint := 'End it with subscription.cancel() or subscription.end_early(), or close its account; the ledger keeps its lines.';
    WHEN 'addon_batch' THEN
        what := format('add-on batch %s', OLD.id);
        SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l
         WHERE l.tenant_id = OLD.tenant_id AND l.addon_batch_id = OLD.id;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'End it with subscription.cancel_addon(); the ledger keeps its lines.';
    WHEN 'ledger' THEN
        what := format('ledger line %s', OLD.id);
        ledger_lines := subscription.self_referrers('ledger', OLD.id, OLD.tenant_id);
        held := ARRAY[subscription.count_phrase(ledger_lines, 'line that gives back or pays it', 'lines that give back or pay it')];
        hint := 'The ledger is a record: correct it with a new line.';
    WHEN 'plan' THEN
        what := format('plan "%s"', OLD.code);
        IF tenants_readable THEN
            SELECT count(*) INTO ledger_lines FROM subscription.ledger AS l WHERE l.plan = OLD.code;
            SELECT count(*) INTO tenant_rows FROM subscription.subscription AS s
             WHERE s.plan = OLD.code OR s.pending_plan = OLD.code OR s.migrate_to = OLD.code;
        END IF;
        held := ARRAY[
            subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines'),
            subscription.count_phrase(tenant_rows, 'subscription', 'subscriptions'),
            (SELECT subscription.count_phrase(count(*), 'price', 'prices')
               FROM subscription.plan_price AS pp WHERE pp.plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'limit', 'limits')
               FROM subscription.plan_limit AS pl WHERE pl.plan = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'add-on', 'add-ons')
               FROM subscription.plan_addon AS pa WHERE pa.plan = OLD.code),
            -- Z3: the suite it is, or the suites it is in
            (SELECT subscription.count_phrase(count(*), 'suite component', 'suite components')
               FROM subscription.suite_component AS sc WHERE OLD.code IN (sc.suite_plan, sc.plan))];
        hint := CASE WHEN ledger_lines > 0
                     THEN 'A plan that was billed stays in the catalog: the ledger names it.'
                     ELSE 'Delete its prices, limits and add-ons first.' END;
    WHEN 'plan_price' THEN
        what := format('a price of plan "%s" in %s%s', OLD.plan, OLD.currency,
                       CASE WHEN OLD.tier IS NOT NULL THEN format(' (tier %s)', OLD.tier) ELSE '' END);
        -- the lines charged for this plan, in this currency, to a subscription of this cycle
        IF tenants_readable THEN
            SELECT count(*) INTO ledger_lines
              FROM subscription.ledger AS l
              JOIN subscription.subscription AS s ON s.tenant_id = l.tenant_id AND s.id = l.subscription_id
             WHERE l.plan = OLD.plan AND l.currency = OLD.currency
               AND l.addon_batch_id IS NULL
               AND subscription.cycle_key(s.cycle) = subscription.cycle_key(OLD.cycle);
        END IF;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'A price that was billed stays; change its amount, which applies from the next charge.';
    WHEN 'addon' THEN
        what := format('add-on "%s"', OLD.code);
        IF tenants_readable THEN
            SELECT count(*) INTO tenant_rows FROM subscription.addon_batch AS b WHERE b.addon = OLD.code;
        END IF;
        held := ARRAY[
            subscription.count_phrase(tenant_rows, 'batch', 'batches'),
            (SELECT subscription.count_phrase(count(*), 'price', 'prices')
               FROM subscription.addon_price AS ap WHERE ap.addon = OLD.code),
            (SELECT subscription.count_phrase(count(*), 'plan', 'plans')
               FROM subscription.plan_addon AS pa WHERE pa.addon = OLD.code)];
        hint := 'An add-on that was sold stays in the catalog; delete the prices and plans of one that was not first.';
    WHEN 'addon_price' THEN
        what := format('a price of add-on "%s" in %s', OLD.addon, OLD.currency);
        IF tenants_readable THEN
            SELECT count(*) INTO ledger_lines
              FROM subscription.ledger AS l
              JOIN subscription.addon_batch AS b ON b.tenant_id = l.tenant_id AND b.id = l.addon_batch_id
             WHERE b.addon = OLD.addon AND l.currency = OLD.currency;
        END IF;
        held := ARRAY[subscription.count_phrase(ledger_lines, 'ledger line', 'ledger lines')];
        hint := 'A price that was billed stays; change its amount, which applies from the next charge.';
    WHEN 'terms' THEN
        -- Z11: who accepted a version is a record
        what := format('terms version "%s"', OLD.version);
        IF tenants_readable THEN
            SELECT count(*) INTO tenant_rows FROM subscription.terms_acceptance AS t WHERE t.version = OLD.version;
        END IF;
        held := ARRAY[subscription.count_phrase(tenant_rows, 'acceptance', 'acceptances')];
        hint := 'Terms that were accepted stay; publish a new version instead.';
    END CASE;
    held := array_remove(held, NULL);
    IF cardinality(held) > 0 AND NOT tenants_readable THEN
        -- a worker's placement of the catalog (issue 17): the coordinator's
        -- placement, in the same distributed transaction and with the same
        -- catalog rows, refuses this DELETE naming the tenants' rows too;
        -- this placement keeps its row and leaves the refusal to it, so
        -- that the error is always that one, whichever placement answers
        -- first (and no foreign key of the catalog fails here instead)
        RETURN NULL;
    END IF;
    IF cardinality(held) > 0 THEN
        RAISE EXCEPTION '% cannot be deleted', what
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = format('It still has %s.',
                                  CASE WHEN cardinality(held) = 1 THEN held[1]
                                       ELSE array_to_string(held[1:cardinality(held) - 1], ', ')
                                            || ' and ' || held[cardinality(held)] END),
                  HINT = hint, TABLE = logical, SCHEMA = 'subscription';
    END IF;
    RETURN OLD;
END
$$;

COMMENT ON FUNCTION subscription.refuse_delete_in_use() IS
'Trigger: 2BP01 naming what still refers to a row being deleted (ledger lines, subscriptions, members, prices...): nothing lost';

CREATE TRIGGER account_refuse_delete_in_use BEFORE DELETE ON subscription.account
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('account');
CREATE TRIGGER subscription_refuse_delete_in_use BEFORE DELETE ON subscription.subscription
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('subscription');
CREATE TRIGGER addon_batch_refuse_delete_in_use BEFORE DELETE ON subscription.addon_batch
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('addon_batch');
CREATE TRIGGER ledger_refuse_delete_in_use BEFORE DELETE ON subscription.ledger
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('ledger');
CREATE TRIGGER plan_refuse_delete_in_use BEFORE DELETE ON subscription.plan
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('plan');
CREATE TRIGGER plan_price_refuse_delete_in_use BEFORE DELETE ON subscription.plan_price
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('plan_price');
CREATE TRIGGER addon_refuse_delete_in_use BEFORE DELETE ON subscription.addon
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('addon');
CREATE TRIGGER addon_price_refuse_delete_in_use BEFORE DELETE ON subscription.addon_price
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('addon_price');
CREATE TRIGGER terms_refuse_delete_in_use BEFORE DELETE ON subscription.terms
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('terms');

-- The references of a table to itself, as a foreign key would check them
-- (23503), without the dependency loop pg_dump warns of: an account's
-- parent, a line's charge.  The referenced row is locked FOR KEY SHARE, so
-- that refuse_delete_in_use() of a concurrent delete waits for us.  An
-- AFTER ROW trigger runs at the end of the statement, so that one COPY or
-- INSERT may hold both rows in any order.
CREATE FUNCTION subscription.check_reference()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- the logical table, from the trigger's argument (issue 17)
    IF TG_ARGV[0] = 'account' THEN
        -- K7: in the tenant first, the one statement Citus runs on a shard;
        -- on a single server a parent set later may be of another tenant
        PERFORM FROM subscription.account AS a
         WHERE a.tenant_id = NEW.tenant_id AND a.id = NEW.parent_id FOR KEY SHARE;
        IF NOT FOUND AND NOT subscription.distributed() THEN
            PERFORM FROM subscription.account AS a WHERE a.id = NEW.parent_id FOR KEY SHARE;
        ELSIF NOT FOUND AND NEW.tenant_id = NEW.id THEN
            -- on Citus a root account (its tenant's own) finds only its
            -- tenant on its shard: a parent there would be its own
            -- sub-account, so the parent named is of another tenant or of
            -- none, which the shard cannot tell (another node's rows, the
            -- transaction's included, are not seen from it), and a root
            -- does not move under another tenant either way
            RAISE EXCEPTION 'parent account % does not exist in tenant %', NEW.parent_id, NEW.tenant_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Account %s, a root account, names it as its parent (parent_id).', NEW.id),
                      HINT = 'On Citus a root account does not move under an account of another tenant: create_account() makes a sub-account in its parent''s tenant.',
                      TABLE = 'account', SCHEMA = 'subscription';
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'parent account % does not exist', NEW.parent_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Account %s names it as its parent (parent_id).', NEW.id),
                      TABLE = 'account', SCHEMA = 'subscription';
        END IF;
    ELSE
        PERFORM FROM subscription.ledger AS l
         WHERE l.tenant_id = NEW.tenant_id AND l.id = NEW.charge_id FOR KEY SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger line % does not exist', NEW.charge_id
                USING ERRCODE = 'foreign_key_violation',
                      DETAIL = format('Ledger line %s names it as its charge (charge_id).', NEW.id),
                      TABLE = 'ledger', SCHEMA = 'subscription';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.check_reference() IS
'Trigger: an account''s parent and a ledger line''s charge exist (23503), as a foreign key to the same table would check';

CREATE TRIGGER account_parent_exists AFTER INSERT OR UPDATE OF parent_id ON subscription.account
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference('account');
CREATE TRIGGER ledger_charge_exists AFTER INSERT OR UPDATE OF charge_id ON subscription.ledger
    FOR EACH ROW WHEN (NEW.charge_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference('ledger');

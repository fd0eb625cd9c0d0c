-- What reduces a charge: coupons (Z10) and credits (L9, L10).

-- Z10: what the subscription's coupon takes off a period's plan charge of
-- "amount", rounded once; 0 without a coupon or once its periods are used.
CREATE FUNCTION subscription.coupon_discount(tenant_id bigint, subscription_id bigint, amount numeric, currency text)
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
-- renewal_notice shows the coupon's discount to its reader
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- PL/pgSQL, its read naming the tenant: on Citus it runs on the
    -- tenant's shard, from the ledger's trigger too (issue 17)
    RETURN coalesce((
        SELECT subscription.round_money(
                   CASE WHEN c.percent_off IS NOT NULL
                        THEN coupon_discount.amount * c.percent_off / 100
                        ELSE least(c.amount_off, coupon_discount.amount) END, coupon_discount.currency)
          FROM subscription.subscription AS s
          JOIN subscription.coupon AS c ON c.code = s.coupon
         WHERE s.tenant_id = coupon_discount.tenant_id AND s.id = coupon_discount.subscription_id
           AND (s.coupon_periods_left IS NULL OR s.coupon_periods_left > 0)), 0);
END
$$;

COMMENT ON FUNCTION subscription.coupon_discount(bigint, bigint, numeric, text) IS
'What the subscription''s coupon takes off a plan charge, rounded once (Z10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form
CREATE FUNCTION subscription.coupon_discount(subscription_id bigint, amount numeric, currency text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
SECURITY DEFINER
RETURN subscription.coupon_discount(subscription.tenant_of('subscription', coupon_discount.subscription_id),
                                    coupon_discount.subscription_id, coupon_discount.amount, coupon_discount.currency);

COMMENT ON FUNCTION subscription.coupon_discount(bigint, numeric, text) IS 'What the subscription''s coupon takes off a plan charge, rounded once (Z10)';

-- The account's credit not used yet, in a currency (L10).
CREATE FUNCTION subscription.credit_balance(tenant_id bigint, account_id bigint, currency text)
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.authorize(credit_balance.tenant_id, credit_balance.account_id, 'read', false);
    RETURN (SELECT coalesce(sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE -l.amount END), 0)
              FROM subscription.ledger AS l
             WHERE l.tenant_id = credit_balance.tenant_id
               AND l.account_id = credit_balance.account_id
               AND l.currency = credit_balance.currency
               AND l.kind = ANY ('{credit,credit_used}'));
END
$$;

COMMENT ON FUNCTION subscription.credit_balance(bigint, bigint, text) IS
'The account''s credit not used yet, in a currency (L10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form
CREATE FUNCTION subscription.credit_balance(account_id bigint, currency text DEFAULT 'EUR')
RETURNS numeric
LANGUAGE plpgsql STABLE PARALLEL SAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.credit_balance(subscription.tenant_of('account', credit_balance.account_id),
                                       credit_balance.account_id, credit_balance.currency);
END
$$;

COMMENT ON FUNCTION subscription.credit_balance(bigint, text) IS 'The account''s credit not used yet, in a currency (L10)';

-- After each charge line: the subscription's coupon reduces a period's
-- plan charge (its own 'discount' line, while it has periods left), then
-- the account's credit pays what remains ('credit_used' lines).  One
-- place for both, whatever function wrote the charge.
CREATE FUNCTION subscription.reduce_charge()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    c subscription.coupon;
    discount numeric := 0;
    balance numeric;
    used numeric;
BEGIN
    -- a restore copies the charge's discount and credit lines, and the
    -- coupon's periods left, with it (restored_copy)
    IF subscription.restored_copy('subscription.ledger_id_seq', NEW.id) THEN
        RETURN NULL;
    END IF;
    IF NEW.subscription_id IS NOT NULL AND NEW.item = 'plan' THEN
        discount := subscription.coupon_discount(NEW.tenant_id, NEW.subscription_id, NEW.amount, NEW.currency);
        IF discount > 0 THEN
            SELECT x.* INTO c FROM subscription.subscription AS s
              JOIN subscription.coupon AS x ON x.code = s.coupon
             WHERE s.tenant_id = NEW.tenant_id AND s.id = NEW.subscription_id;
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, kind, amount, currency, period, item, plan, charge_id, description)
            VALUES (NEW.tenant_id, NEW.account_id, NEW.subscription_id, 'discount', discount, NEW.currency, NEW.period, NEW.item,
                    NEW.plan, NEW.id,
                    format('coupon %s: %s off', c.code,
                           coalesce(c.percent_off::text || '%', c.amount_off::text || ' ' || c.currency)));
            UPDATE subscription.subscription AS s
               SET coupon_periods_left = s.coupon_periods_left - 1
             WHERE s.tenant_id = NEW.tenant_id AND s.id = NEW.subscription_id AND s.coupon_periods_left IS NOT NULL;
        END IF;
    END IF;

    -- credit: read without a lock first, the common case is none
    -- every statement names the tenant: on Citus this trigger runs on the
    -- ledger's shard (issue 17)
    IF subscription.credit_balance(NEW.tenant_id, NEW.account_id, NEW.currency) > 0 THEN
        -- concurrent charges of the account take its credit one at a time
        PERFORM FROM subscription.account AS a WHERE a.tenant_id = NEW.tenant_id AND a.id = NEW.account_id
            FOR NO KEY UPDATE;
        balance := subscription.credit_balance(NEW.tenant_id, NEW.account_id, NEW.currency);
        used := least(balance, NEW.amount - discount);
        IF used > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description)
            VALUES (NEW.tenant_id, NEW.account_id, NEW.subscription_id, NEW.addon_batch_id, 'credit_used', used, NEW.currency,
                    NEW.period, NEW.item, NEW.plan, NEW.id, format('credit pays charge %s', NEW.id));
        END IF;
    END IF;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.reduce_charge() IS 'Trigger: a coupon''s discount and the account''s credit on every charge line';

CREATE TRIGGER ledger_reduce_charge AFTER INSERT ON subscription.ledger
    FOR EACH ROW WHEN (NEW.kind = 'charge') EXECUTE FUNCTION subscription.reduce_charge();

-- L9, L10: credit an account, with a reason; the next charges use it.
CREATE FUNCTION subscription.credit_account(tenant_id bigint, account_id bigint, amount numeric, reason text, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line bigint;
BEGIN
    PERFORM subscription.require_tenant('credit_account', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('credit_account', '{account_id,amount,reason,currency}',
        ARRAY[account_id IS NULL, amount IS NULL, reason IS NULL, currency IS NULL]);
    PERFORM subscription.require_account(credit_account.account_id);
    PERFORM subscription.authorize(credit_account.account_id, 'pay');
    PERFORM FROM subscription.currency AS c WHERE c.code = credit_account.currency;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity'
       OR amount <> subscription.round_money(amount, currency) THEN
        RAISE EXCEPTION 'a credit must be a positive amount in the minor unit of %', currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, currency);
    INSERT INTO subscription.ledger AS l (tenant_id, account_id, kind, amount, currency, item, description)
    VALUES (credit_account.tenant_id, credit_account.account_id, 'credit', amount, currency, 'credit', reason)
    RETURNING l.id INTO line;
    RETURN line;
END
$$;

COMMENT ON FUNCTION subscription.credit_account(bigint, bigint, numeric, text, text) IS
'Credit an account with a reason; the next charges use it (L9, L10) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the account, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.credit_account(account_id bigint, amount numeric, reason text,
                                            currency text DEFAULT 'EUR')
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.credit_account(subscription.tenant_of('account', credit_account.account_id), credit_account.account_id, credit_account.amount, credit_account.reason, credit_account.currency);
END
$$;

COMMENT ON FUNCTION subscription.credit_account(bigint, numeric, text, text) IS 'Credit an account with a reason; the next charges use it (L9, L10)';

-- L9: end a subscription now to consolidate it into the account's
-- renewal: the unused days of what it paid become credit.
CREATE FUNCTION subscription.end_early(tenant_id bigint, subscription_id bigint, at timestamptz)
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s subscription.subscription;
    credited numeric;
BEGIN
    PERFORM subscription.require_tenant('end_early', tenant_id, 'subscription', subscription_id);
    PERFORM subscription.require_arguments('end_early', '{subscription_id,at}',
        ARRAY[subscription_id IS NULL, at IS NULL]);
    PERFORM subscription.require_time('end_early', at, false);
    s := subscription.subscription_for_change(end_early.tenant_id, 'end_early', subscription_id, 'cancel');
    PERFORM subscription.require_in_period('end_early', s, at);
    -- U3: the usage up to the end
    PERFORM subscription.bill_usage(s, at);
    credited := subscription.give_back_unused(s, at, 'credit', 'consolidation');
    UPDATE subscription.addon_batch AS b SET status = 'expired'
     WHERE b.tenant_id = end_early.tenant_id AND b.subscription_id = s.id AND b.status = 'active';
    UPDATE subscription.subscription AS x SET status = 'cancelled' WHERE x.tenant_id = end_early.tenant_id AND x.id = s.id;
    RETURN credited;
END
$$;

COMMENT ON FUNCTION subscription.end_early(bigint, bigint, timestamptz) IS
'End a subscription now; its unused days become credit (L9) (keyed form: the tenant first, docs/design.md#keyed-forms)';

-- the tenant of the subscription, then the keyed form (docs/design.md#keyed-forms)
CREATE FUNCTION subscription.end_early(subscription_id bigint, at timestamptz DEFAULT now())
RETURNS numeric
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.end_early(subscription.tenant_of('subscription', end_early.subscription_id), end_early.subscription_id, end_early.at);
END
$$;

COMMENT ON FUNCTION subscription.end_early(bigint, timestamptz) IS 'End a subscription now; its unused days become credit (L9)';

-- L10: the account's credits line by line, with the running balance.
CREATE VIEW subscription.credit_statement WITH (security_barrier) AS
SELECT l.account_id,
       l.id AS ledger_id,
       l.created_at,
       l.subscription_id,
       l.kind,
       CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END AS change,
       sum(CASE l.kind WHEN 'credit' THEN l.amount ELSE OPERATOR(pg_catalog.-) l.amount END)
           OVER (PARTITION BY l.account_id, l.currency ORDER BY l.id) AS balance,
       l.currency,
       l.description
  FROM subscription.ledger AS l
 WHERE l.kind OPERATOR(pg_catalog.=) ANY ('{credit,credit_used}') AND subscription.may_read(l.account_id);

COMMENT ON VIEW subscription.credit_statement IS
'Credits and their uses per account, line by line, with the running balance (L10)';

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
DECLARE
    off numeric;
BEGIN
    -- PL/pgSQL, its read naming the tenant: on Citus it runs on the
    -- tenant's shard, from the ledger's trigger too; rounded after it, as
    -- Citus refuses a read of the catalog from a statement sent to a
    -- shard (renewal_notice on the coordinator: issue 17)
    SELECT CASE WHEN c.percent_off IS NOT NULL
                THEN coupon_discount.amount * c.percent_off / 100
                ELSE least(c.amount_off, coupon_discount.amount) END INTO off
      FROM subscription.subscription AS s
      JOIN subscription.coupon AS c ON c.code = s.coupon
     WHERE s.tenant_id = coupon_discount.tenant_id AND s.id = coupon_discount.subscription_id
       AND (s.coupon_periods_left IS NULL OR s.coupon_periods_left > 0);
    RETURN coalesce(subscription.round_money(off, coupon_discount.currency), 0);
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

-- After each statement that writes charge lines, for each of them in the
-- order of their ids: the subscription's coupon reduces a period's plan
-- charge (its own 'discount' line, while it has periods left), then the
-- account's credit pays what remains ('credit_used' lines).  One place for
-- both, whatever function wrote the charges.  Per statement over the
-- transition table (issue 18): the statement's charges are read into local
-- arrays first (on Citus a transition table is never joined with a
-- distributed table), then every statement names the charges' tenants:
-- the coupon's periods used by one UPDATE per round over the tenants (one
-- per tenant on Citus), taking the subscriptions in the charges' order (a
-- nested loop over the key: no hash or merge join for that statement; its
-- triggers turn hash joins on again), and the discount and
-- credit lines written by one INSERT, each charge's discount then its
-- credit, in the order of the charges.
CREATE FUNCTION subscription.reduce_charge()
RETURNS trigger
LANGUAGE plpgsql
-- the extension's own bookkeeping: the writer needs no right on its tables
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- one UPDATE per tenant where the tables are distributed
    per_tenant boolean := subscription.distributed();
    joins text[] := ARRAY[current_setting('enable_hashjoin'), current_setting('enable_mergejoin')];
    c subscription.coupon;
    ids bigint[];
    tenants bigint[];
    accounts bigint[];
    subs bigint[];
    batches bigint[];
    amounts numeric[];
    currencies text[];
    periods tstzrange[];
    items text[];
    plans text[];
    -- the rank of a plan charge among the statement's plan charges of its
    -- subscription: the coupon's periods are used in that order
    ranks bigint[];
    discounts numeric[];
    notes text[];
    i integer;
    -- the charges in the order of their accounts, then ids (L10 below)
    by_account integer[];
    credits_used numeric[];
    balance numeric;
    discount numeric;
    used numeric;
    rounds bigint;
    -- the charges a round's coupons reduce
    reduced integer[];
    g record;
    -- whether any discount or credit line is to be written
    any_line boolean := false;
    -- whether each charge's subscription has a coupon, and its account
    -- ever had credit in the charge's currency
    couponed boolean[];
    credited boolean[];
BEGIN
    -- a restore copies the charge's discount and credit lines, and the
    -- coupon's periods left, with it (restored_copy); the lines written
    -- here are no charges and end the nested statement at once
    SELECT array_agg(x.id ORDER BY x.id), array_agg(x.tenant_id ORDER BY x.id), array_agg(x.account_id ORDER BY x.id),
           array_agg(x.subscription_id ORDER BY x.id), array_agg(x.addon_batch_id ORDER BY x.id),
           array_agg(x.amount ORDER BY x.id), array_agg(x.currency ORDER BY x.id), array_agg(x.period ORDER BY x.id),
           array_agg(x.item ORDER BY x.id), array_agg(x.plan ORDER BY x.id), array_agg(x.rank ORDER BY x.id)
      INTO ids, tenants, accounts, subs, batches, amounts, currencies, periods, items, plans, ranks
      FROM (SELECT n.id, n.tenant_id, n.account_id, n.subscription_id, n.addon_batch_id, n.amount, n.currency,
                   n.period, n.item, n.plan,
                   CASE WHEN n.subscription_id IS NOT NULL AND n.item = 'plan'
                        THEN row_number() OVER (PARTITION BY n.tenant_id, n.subscription_id, n.item = 'plan'
                                                ORDER BY n.id) END AS rank
              FROM new_rows AS n
             WHERE n.kind = 'charge'
               AND NOT subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS x;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    discounts := array_fill(0::numeric, ARRAY[cardinality(ids)]);
    notes := array_fill(NULL::text, ARRAY[cardinality(ids)]);
    -- the charges a coupon or a credit may reduce, read at once (issue
    -- 18: a renewal of 10,000 charges, a tenth with a coupon, asked
    -- coupon_discount and credit_balance for every one): a plan charge of
    -- a subscription with a coupon, a charge of an account with a credit
    -- line in its currency; on Citus, where each statement names its
    -- tenant and a transition table's charges are not joined with a
    -- distributed table, every charge, asked one by one
    IF per_tenant THEN
        couponed := array_fill(true, ARRAY[cardinality(ids)]);
        credited := couponed;
    ELSE
        SELECT array_agg(x.rank IS NOT NULL
                         AND EXISTS (SELECT FROM subscription.subscription AS s
                                      WHERE s.tenant_id = x.tenant_id AND s.id = x.subscription_id
                                        AND s.coupon IS NOT NULL) ORDER BY x.k),
               array_agg(EXISTS (SELECT FROM subscription.ledger AS l
                                  WHERE l.tenant_id = x.tenant_id AND l.account_id = x.account_id
                                    AND l.currency = x.currency AND l.kind = 'credit') ORDER BY x.k)
          INTO couponed, credited
          FROM unnest(tenants, subs, accounts, currencies, ranks) WITH ORDINALITY
               AS x(tenant_id, subscription_id, account_id, currency, rank, k);
    END IF;

    -- Z10: the coupon, a round per rank, so that a second plan charge of a
    -- subscription finds the periods the first one used
    SELECT coalesce(max(k), 0) INTO rounds FROM unnest(ranks) AS k;
    FOR r IN 1 .. rounds LOOP
        reduced := '{}';
        FOR i IN 1 .. cardinality(ids) LOOP
            CONTINUE WHEN ranks[i] IS DISTINCT FROM r OR NOT couponed[i];
            discount := subscription.coupon_discount(tenants[i], subs[i], amounts[i], currencies[i]);
            CONTINUE WHEN discount <= 0;
            SELECT x.* INTO c FROM subscription.subscription AS s
              JOIN subscription.coupon AS x ON x.code = s.coupon
             WHERE s.tenant_id = tenants[i] AND s.id = subs[i];
            discounts[i] := discount;
            notes[i] := format('coupon %s: %s off', c.code,
                               coalesce(c.percent_off::text || '%', c.amount_off::text || ' ' || c.currency));
            reduced := reduced || i;
            any_line := true;
        END LOOP;
        -- a period of each coupon used (a subscription once a round)
        FOR g IN
            SELECT array_agg(DISTINCT tenants[u.i]) AS tenant_set, array_agg(tenants[u.i] ORDER BY u.k) AS ts,
                   array_agg(subs[u.i] ORDER BY u.k) AS ss
              FROM unnest(reduced) WITH ORDINALITY AS u(i, k)
             GROUP BY CASE WHEN per_tenant THEN tenants[u.i] END
             ORDER BY min(u.k)
        LOOP
            PERFORM set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true);
            UPDATE subscription.subscription AS s
               SET coupon_periods_left = s.coupon_periods_left - 1
              FROM (SELECT d.tenant_id, d.id FROM unnest(g.ts, g.ss) WITH ORDINALITY AS d(tenant_id, id, k)
                     ORDER BY d.k) AS d
             WHERE s.tenant_id = ANY (g.tenant_set) AND s.tenant_id = d.tenant_id AND s.id = d.id
               AND s.coupon_periods_left IS NOT NULL;
            PERFORM set_config('enable_hashjoin', joins[1], true), set_config('enable_mergejoin', joins[2], true);
        END LOOP;
    END LOOP;

    -- L10: an account's credit in a currency, read once per statement,
    -- without a lock first (the common case is none); what one charge uses
    -- is gone for the next.  Accounts are independent, so one pass over
    -- the charges sorted by account (ids in order within each) gives each
    -- charge what the id order would, at a cost that grows with the
    -- charges, not with their square; the lines follow in the ids' order.
    credits_used := array_fill(0::numeric, ARRAY[cardinality(ids)]);
    SELECT array_agg(x.o ORDER BY x.tenant_id, x.account_id, x.currency, x.o) INTO by_account
      FROM ROWS FROM (unnest(tenants), unnest(accounts), unnest(currencies)) WITH ORDINALITY
           AS x(tenant_id, account_id, currency, o);
    FOR k IN 1 .. cardinality(by_account) LOOP
        i := by_account[k];
        IF k = 1 OR (tenants[i], accounts[i], currencies[i])
                    IS DISTINCT FROM (tenants[by_account[k - 1]], accounts[by_account[k - 1]], currencies[by_account[k - 1]]) THEN
            balance := CASE WHEN credited[i] THEN subscription.credit_balance(tenants[i], accounts[i], currencies[i])
                            ELSE 0 END;
            IF balance > 0 THEN
                -- concurrent charges of the account take its credit one at a time
                PERFORM FROM subscription.account AS a WHERE a.tenant_id = tenants[i] AND a.id = accounts[i]
                    FOR NO KEY UPDATE;
                balance := subscription.credit_balance(tenants[i], accounts[i], currencies[i]);
            END IF;
        END IF;
        used := least(balance, amounts[i] - discounts[i]);
        IF used > 0 THEN
            credits_used[i] := used;
            balance := balance - used;
            any_line := true;
        END IF;
    END LOOP;

    -- each charge's discount, then its credit, in the order of the
    -- charges: one INSERT from the arrays, read in one pass (none, and so
    -- no statement triggers, without a line)
    IF NOT any_line THEN
        RETURN NULL;
    END IF;
    INSERT INTO subscription.ledger
           (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
            charge_id, description)
    SELECT x.tenant_id, x.account_id, x.subscription_id, l.batch, l.kind, l.amount, x.currency, x.period, x.item, x.plan,
           x.id, l.description
      FROM ROWS FROM (unnest(ids), unnest(tenants), unnest(accounts), unnest(subs), unnest(batches), unnest(currencies),
                      unnest(periods), unnest(items), unnest(plans), unnest(discounts), unnest(notes),
                      unnest(credits_used)) WITH ORDINALITY
           AS x(id, tenant_id, account_id, subscription_id, batch, currency, period, item, plan, discount, note, used, k)
     CROSS JOIN LATERAL (VALUES (1, 'discount', x.discount, NULL::bigint, x.note),
                                (2, 'credit_used', x.used, x.batch, format('credit pays charge %s', x.id)))
           AS l(o, kind, amount, batch, description)
     WHERE l.amount > 0
     ORDER BY x.k, l.o;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.reduce_charge() IS 'Trigger: a coupon''s discount and the account''s credit on every charge line';

CREATE TRIGGER ledger_reduce_charge AFTER INSERT ON subscription.ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.reduce_charge();

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
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.credit_account(bigint,bigint,numeric,text,text)', credit_account.tenant_id,
            pg_catalog.jsonb_build_array(credit_account.tenant_id, credit_account.account_id, credit_account.amount, credit_account.reason, credit_account.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
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
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.end_early(bigint,bigint,timestamptz)', end_early.tenant_id,
            pg_catalog.jsonb_build_array(end_early.tenant_id, end_early.subscription_id, end_early.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
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
CREATE FUNCTION subscription.end_early(subscription_id bigint, at timestamptz DEFAULT subscription.now())
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
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
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
  CROSS JOIN readable
 WHERE l.kind OPERATOR(pg_catalog.=) ANY ('{credit,credit_used}')
   AND (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) l.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) l.account_id));

COMMENT ON VIEW subscription.credit_statement IS
'Credits and their uses per account, line by line, with the running balance (L10)';

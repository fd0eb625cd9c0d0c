-- Invoices and payments (issue 19, 1.1; docs/invoices.md): the invoice a
-- billing event's lines belong to (I1-I3), voiding it (I3), payments,
-- failures and payment methods (I4-I7), and what the customer downloads.

-- I1: a new invoice of the account, numbered in its issuer's series in this
-- transaction: the series row stays locked until the commit, so a
-- concurrent invoice of the series waits and takes the next number, and a
-- rollback gives the number back.  Its due date is subscription.payment_terms
-- days later; the method to charge is the account's default now.  Its
-- opening is recorded at the commit (invoice_opened, I8), with its total;
-- quiet (a restore) records nothing, which invoice_opened sees by itself
-- (a restoring role).  The checks of its arguments, then open_invoices_of.
CREATE FUNCTION subscription.open_invoice(tenant_id bigint, account_id bigint, subscription_id bigint,
                                          currency text, at timestamptz, plan text, corrects bigint,
                                          quiet boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('open_invoice', '{tenant_id,account_id,currency,at}',
        ARRAY[tenant_id IS NULL, account_id IS NULL, currency IS NULL, at IS NULL]);
    PERFORM subscription.require_account(open_invoice.tenant_id, open_invoice.account_id);
    IF subscription_id IS NOT NULL
       AND NOT EXISTS (SELECT FROM subscription.subscription AS s
                        WHERE s.tenant_id = open_invoice.tenant_id AND s.id = open_invoice.subscription_id) THEN
        RAISE EXCEPTION 'subscription % does not exist', subscription_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT EXISTS (SELECT FROM subscription.currency AS c WHERE c.code = open_invoice.currency) THEN
        RAISE EXCEPTION 'currency "%" does not exist', currency USING ERRCODE = 'undefined_object';
    END IF;
    RETURN (subscription.open_invoices_of(ARRAY[open_invoice.tenant_id], ARRAY[open_invoice.account_id],
                                          ARRAY[open_invoice.subscription_id], ARRAY[open_invoice.currency],
                                          ARRAY[open_invoice.at], ARRAY[open_invoice.plan], ARRAY[open_invoice.corrects]))[1];
END
$$;

COMMENT ON FUNCTION subscription.open_invoice(bigint, bigint, bigint, text, timestamptz, text, bigint, boolean) IS
'Internal: a new invoice, numbered gapless in its issuer''s series in this transaction, due after subscription.payment_terms days; its opening recorded at the commit (I1, I3, I8)';

-- I1: new invoices of one tenant: open_invoices_of with the tenant named
-- for each.  Kept for the callers naming one tenant (open_invoice).
CREATE FUNCTION subscription.open_invoices(tenant_id bigint, account_ids bigint[], subscription_ids bigint[],
                                           currencies text[], ats timestamptz[], plans text[], corrects bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.require_arguments('open_invoices', '{tenant_id,account_ids,currencies,ats}',
        ARRAY[tenant_id IS NULL, account_ids IS NULL, currencies IS NULL, ats IS NULL]);
    RETURN subscription.open_invoices_of(array_fill(open_invoices.tenant_id, ARRAY[cardinality(account_ids)]),
                                         account_ids, subscription_ids, currencies, ats, plans, corrects);
END
$$;

COMMENT ON FUNCTION subscription.open_invoices(bigint, bigint[], bigint[], text[], timestamptz[], text[], bigint[]) IS
'Internal: new invoices of one tenant, numbered gapless in their issuers'' series in the order given (open_invoices_of; I1, I3)';

-- I1: new invoices of any tenants, numbered in their issuers' series in
-- this transaction in the order given: one INSERT moving every series
-- (tenant and issuer) by its count, in (tenant, issuer) order (its row
-- stays locked until the commit, so a concurrent invoice of the series
-- waits and takes the next number, and a rollback gives the numbers back:
-- gapless, in order), one INSERT of the invoices.  Each is due
-- subscription.payment_terms days after its time; the method to charge is
-- its account's default now; its issuer the product of its plan (the
-- subscription's plan when none is named).  Their openings are recorded
-- at the commit (invoice_opened, I8).  Every statement on a tenant table
-- names the tenants given (tenant_id = ANY): on Citus, where a trigger or
-- a delegated call gives one tenant, it stays on that tenant's shards; on
-- a single server one call opens the invoices of every tenant of a batch
-- (issue 18).  No checks of the accounts, subscriptions and currencies:
-- the invoices' foreign keys refuse them (open_invoice checks them
-- first).  renew_common_group opens a batch's invoices with it, each
-- with the total of the lines it writes into it next (totals; 0 without:
-- invoice_totals adds the lines), invoice_line, open_invoice and
-- open_invoices those of one tenant.
CREATE FUNCTION subscription.open_invoices_of(tenant_ids bigint[], account_ids bigint[], subscription_ids bigint[],
                                              currencies text[], ats timestamptz[], plans text[], corrects bigint[],
                                              totals numeric[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(account_ids);
    terms interval := make_interval(days => coalesce(current_setting('subscription.payment_terms', true), '0')::integer);
    issuers text[];
    numbers bigint[];
    ids bigint[];
    methods bigint[];
    -- the series moved: tenant, issuer, last number taken
    st bigint[] := '{}';
    si text[] := '{}';
    sl bigint[] := '{}';
    tenant bigint;
    sub bigint;
    plan text;
    made record;
BEGIN
    PERFORM subscription.require_arguments('open_invoices_of', '{tenant_ids,account_ids,currencies,ats}',
        ARRAY[tenant_ids IS NULL, account_ids IS NULL, currencies IS NULL, ats IS NULL]);
    IF n = 0 THEN
        RETURN '{}';
    END IF;
    IF cardinality(tenant_ids) <> n OR cardinality(currencies) <> n OR cardinality(ats) <> n
       OR cardinality(coalesce(subscription_ids, '{}')) NOT IN (0, n) OR cardinality(coalesce(plans, '{}')) NOT IN (0, n)
       OR cardinality(coalesce(corrects, '{}')) NOT IN (0, n) OR cardinality(coalesce(totals, '{}')) NOT IN (0, n) THEN
        RAISE EXCEPTION 'the arrays of open_invoices() must be of one length' USING ERRCODE = 'array_subscript_error';
    END IF;
    IF array_position(tenant_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'open_invoices_of(): every invoice must name its tenant' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    plans := coalesce(plans, array_fill(NULL::text, ARRAY[n]));
    FOR k IN 1 .. n LOOP
        IF plans[k] IS NULL AND subscription_ids[k] IS NOT NULL THEN
            -- scalars first: Citus fails to parse an array element
            -- assigned a query of a distributed table
            tenant := tenant_ids[k];
            sub := subscription_ids[k];
            plan := (SELECT s.plan FROM subscription.subscription AS s
                      WHERE s.tenant_id = tenant AND s.id = sub);
            plans[k] := plan;
        END IF;
    END LOOP;
    -- the issuer of each, and the method to charge: its account's default now
    SELECT array_agg(coalesce(p.product, '') ORDER BY e.k), array_agg(m.id ORDER BY e.k) INTO issuers, methods
      FROM unnest(plans, account_ids, tenant_ids) WITH ORDINALITY AS e(plan, account_id, tenant_id, k)
      LEFT JOIN subscription.plan AS p ON p.code = e.plan
      LEFT JOIN subscription.payment_method AS m
        ON m.tenant_id = ANY (tenant_ids) AND m.tenant_id = e.tenant_id AND m.account_id = e.account_id AND m.is_default;
    -- each series moved once by its count, in (tenant, issuer) order, so
    -- that concurrent openings lock them in one order
    FOR made IN
        INSERT INTO subscription.invoice_series AS x (tenant_id, issuer, last_number)
        SELECT c.tenant_id, c.issuer, c.taken
          FROM (SELECT e.tenant_id, e.issuer, count(*) AS taken
                  FROM unnest(tenant_ids, issuers) AS e(tenant_id, issuer)
                 GROUP BY e.tenant_id, e.issuer) AS c
         ORDER BY c.tenant_id, c.issuer
        ON CONFLICT ON CONSTRAINT invoice_series_pkey DO UPDATE SET last_number = x.last_number + excluded.last_number
        RETURNING x.tenant_id, x.issuer, x.last_number
    LOOP
        st := st || made.tenant_id;
        si := si || made.issuer;
        sl := sl || made.last_number;
    END LOOP;
    -- then the invoices of each series numbered in their order: the last
    -- number taken, less those after them
    SELECT array_agg(e.number ORDER BY e.k) INTO numbers
      FROM (SELECT e.k, s.last - count(*) OVER (PARTITION BY e.tenant_id, e.issuer ORDER BY e.k DESC) + 1 AS number
              FROM unnest(tenant_ids, issuers) WITH ORDINALITY AS e(tenant_id, issuer, k)
              JOIN unnest(st, si, sl) AS s(tenant_id, issuer, last)
                ON s.tenant_id = e.tenant_id AND s.issuer = e.issuer) AS e;
    -- one INSERT, its rows (and so RETURNING's) in the order given; on
    -- Citus from no distributed table, no subquery
    ids := '{}';
    FOR made IN
        INSERT INTO subscription.invoice_record AS i
               (tenant_id, account_id, subscription_id, issuer, number, at, currency, due_at, payment_method_id,
                corrects_invoice_id, total)
        SELECT e.tenant_id, e.account_id, e.subscription_id, e.issuer, e.number, e.at, e.currency,
               e.at + terms, e.method, e.corrects, coalesce(e.total, 0)
          FROM unnest(tenant_ids, account_ids, coalesce(subscription_ids, array_fill(NULL::bigint, ARRAY[n])), issuers,
                      numbers, ats, currencies, methods, coalesce(corrects, array_fill(NULL::bigint, ARRAY[n])),
                      coalesce(totals, array_fill(NULL::numeric, ARRAY[n])))
               WITH ORDINALITY AS e(tenant_id, account_id, subscription_id, issuer, number, at, currency, method, corrects,
                                    total, k)
         ORDER BY e.k
        RETURNING i.id, i.tenant_id, i.issuer, i.number
    LOOP
        ids := ids || made.id;
        IF (made.tenant_id, made.issuer, made.number)
           IS DISTINCT FROM (tenant_ids[cardinality(ids)], issuers[cardinality(ids)], numbers[cardinality(ids)]) THEN
            RAISE EXCEPTION 'open_invoices(): invoice % returned out of order', made.id USING ERRCODE = 'internal_error';
        END IF;
    END LOOP;
    -- their history rows and events invoice.opened are written at the
    -- commit, once their lines are all there (invoice_opened, I8)
    RETURN ids;
END
$$;

COMMENT ON FUNCTION subscription.open_invoices_of(bigint[], bigint[], bigint[], text[], timestamptz[], text[], bigint[], numeric[]) IS
'Internal: new invoices of any tenants, numbered gapless in their issuers'' series in the order given, one INSERT moving the series and one of the invoices, each with the total of the lines to come if given (I1, I3; issue 18)';

-- I3, E1: the details of an invoice's change of status, the history row
-- invoice_status (and its event invoice.paid, .void or .uncollectible).
-- An invoice whose opening is not written yet (opened in this transaction)
-- has its status written at the commit, after its opening
-- (invoice_opened, I8), so that a consumer never reads a status before the
-- opening: here NULL (no row), unless at_commit (announce_invoice itself).
CREATE FUNCTION subscription.invoice_status_details(i subscription.invoice_record, new_status text, at timestamptz,
                                                    extra jsonb, at_commit boolean)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT at_commit AND NOT i.announced THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object('invoice_id', i.id, 'issuer', i.issuer, 'number', i.number,
                              'status', jsonb_build_object('old', CASE WHEN at_commit THEN 'open' ELSE i.status END,
                                                           'new', new_status),
                              'total', i.total, 'paid', i.paid, 'currency', i.currency, 'at', at) || extra;
END
$$;

COMMENT ON FUNCTION subscription.invoice_status_details(subscription.invoice_record, text, timestamptz, jsonb, boolean) IS
'Internal: the details of the history row of an invoice''s change of status, NULL for an invoice of this transaction not yet announced (I3, I8)';

-- The history row of an invoice's change of status (invoice_status_details).
CREATE FUNCTION subscription.invoice_status_history(i subscription.invoice_record, new_status text, at timestamptz,
                                                    extra jsonb, at_commit boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    details jsonb;
BEGIN
    PERFORM subscription.require_arguments('invoice_status_history', '{i,new_status,at,extra,at_commit}',
        ARRAY[(i).id IS NULL, new_status IS NULL, at IS NULL, extra IS NULL, at_commit IS NULL]);
    details := subscription.invoice_status_details(i, new_status, at, extra, at_commit);
    IF details IS NOT NULL THEN
        PERFORM subscription.write_history('invoice_status', i.account_id, i.subscription_id, details, i.tenant_id);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.invoice_status_history(subscription.invoice_record, text, timestamptz, jsonb, boolean) IS
'Internal: the history row of an invoice''s change of status; for an invoice of this transaction, written at its commit (I3, I8)';

-- The details of invoices' openings (invoice_open, the event
-- invoice.opened version 2), one for each invoice given, in its order,
-- with its total and its number of lines: one shape for invoice_opening
-- (one invoice) and invoice_announcements (the commit's batch).  Called
-- once a batch, not once an invoice: its SET search_path keeps it from
-- being inlined, and each call sets and restores the setting (about
-- 105,000 instructions, 3.6 % of a renewal called per invoice; issue 18).
CREATE FUNCTION subscription.invoice_open_details(invoices subscription.invoice_record[], totals numeric[],
                                                  lines bigint[])
RETURNS jsonb[]
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(array_agg(jsonb_build_object('invoice_id', x.id, 'issuer', x.issuer, 'number', x.number,
                                                 'currency', x.currency, 'corrects_invoice_id', x.corrects_invoice_id,
                                                 'due_at', x.due_at, 'total', t.total, 'lines', t.lines)
                              ORDER BY x.ordinality), '{}')
      FROM unnest(invoices) WITH ORDINALITY AS x
      JOIN unnest(totals, lines) WITH ORDINALITY AS t(total, lines, k) ON t.k = x.ordinality
$$;

COMMENT ON FUNCTION subscription.invoice_open_details(subscription.invoice_record[], numeric[], bigint[]) IS
'Internal: the details of invoices'' openings (invoice_open; the event invoice.opened, version 2), in the order given, with their totals and numbers of lines';

-- The details of the status an invoice reached in its opening's
-- transaction (paid at its last payment; a void's reason and correcting
-- invoice): one rule for invoice_opening and invoice_announcements.
-- PL/pgSQL, not LANGUAGE sql: Citus cannot plan a SQL function's
-- statement with parameters where invoice_announcements runs on a worker
-- ("could not create distributed plan"); PL/pgSQL's are planned with
-- their values.
CREATE FUNCTION subscription.invoice_opening_status(i subscription.invoice_record)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    reached_at timestamptz := i.at;
    extra jsonb := '{}';
BEGIN
    IF i.status = 'paid' THEN
        SELECT coalesce(max(p.at), i.at) INTO reached_at
          FROM subscription.payment AS p
         WHERE p.tenant_id = i.tenant_id AND p.invoice_id = i.id;
    ELSIF i.status = 'void' THEN
        extra := jsonb_build_object('reason', i.void_reason, 'correcting_invoice_id',
                                    (SELECT c.id FROM subscription.invoice_record AS c
                                      WHERE c.tenant_id = i.tenant_id AND c.corrects_invoice_id = i.id));
    END IF;
    RETURN subscription.invoice_status_details(i, i.status, reached_at, extra, true);
END
$$;

COMMENT ON FUNCTION subscription.invoice_opening_status(subscription.invoice_record) IS
'Internal: the details of the status an invoice reached in its opening''s transaction (invoice_status, I8)';

-- I8: an invoice's opening, written once, when its lines are all there:
-- the history row invoice_open with its total, number of lines, currency
-- and due date (the event invoice.opened, version 2), then, if its
-- transaction also paid, voided or wrote it off, that status
-- (invoice_status_details).  At the commit of the transaction that wrote
-- it (the trigger invoice_record_opened), or before a payment, a failure
-- or a void of it in that transaction (invoice_for_change, record_payment),
-- so that their events follow it.  A restore (a restoring role) marks it
-- without history.  Every statement names the tenant (Citus: on its shard).
-- invoice_opening returns the rows of an invoice in hand (none for a
-- restore), writing nothing; invoice_announcement marks it and returns its
-- rows (none if it was already): its operations and details, of the
-- invoice's account and subscription; announce_invoice writes them.
-- record_payment, which holds the invoice locked, takes its rows from
-- invoice_opening and has settle_invoice mark it in the UPDATE that
-- writes the payment (issue 20: one UPDATE of the invoice, not two).
CREATE FUNCTION subscription.invoice_opening(i subscription.invoice_record,
                                             OUT operations text[], OUT details jsonb[])
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    lines bigint;
    total numeric;
BEGIN
    IF (i).id IS NULL THEN
        PERFORM subscription.require_arguments('invoice_opening', '{i}', ARRAY[true]);
    END IF;
    operations := '{}';
    details := '{}';
    -- a restore copies rows already announced, and announces without
    -- history the invoices of a dump from before 1.1
    IF subscription.restoring_role() THEN
        RETURN;
    END IF;
    -- its lines, and their total: its total once invoice_totals has
    -- counted them, and none before them (an opening written at the end of
    -- its statement: SET CONSTRAINTS invoice_record_opened IMMEDIATE),
    -- though renew_common_group opens an invoice with the total of the
    -- lines it writes next (issue 18)
    SELECT count(*), coalesce(sum(subscription.line_amount(l.kind, l.amount)), 0) INTO lines, total
      FROM subscription.ledger AS l
     WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id;
    operations := ARRAY['invoice_open'];
    details := subscription.invoice_open_details(ARRAY[i], ARRAY[total], ARRAY[lines]);
    IF i.status <> 'open' THEN
        operations := operations || 'invoice_status'::text;
        details := details || subscription.invoice_opening_status(i);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.invoice_opening(subscription.invoice_record) IS
'Internal: the history rows of an invoice''s opening (and a status its transaction reached), of the row given, writing nothing (I8)';

-- I8, set-based (issue 18): the openings of many invoices, as
-- invoice_opening's of one, for the trigger invoice_record_opened at the
-- commit.  Marks the invoices given and returns their rows (none for one
-- already announced, or by a restore), invoice by invoice in the order
-- given: its tenant (not named tenant_id: only a first argument is),
-- account and subscription, each row's operation and details.  One UPDATE
-- marking them, one read of their lines; a status's details, rare at the
-- opening, read invoice by invoice.  Every statement names the tenants
-- (Citus: on the tenant's shard, where announce_invoices calls it tenant
-- by tenant).
CREATE FUNCTION subscription.invoice_announcements(tenant_ids bigint[], invoice_ids bigint[])
RETURNS TABLE (tenant bigint, account_id bigint, subscription_id bigint, operation text, details jsonb)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    marked subscription.invoice_record[];
    i subscription.invoice_record;
    -- the details of the status of those that are no longer open, by id
    status_ids bigint[] := '{}';
    status_details jsonb[] := '{}';
    -- each one's lines and their total, by its place in marked
    marked_count integer;
    line_counts bigint[];
    line_totals numeric[];
    open_details jsonb[];
    g record;
    plan_cache_mode text := current_setting('plan_cache_mode');
BEGIN
    -- its statements planned once, not at every call, on a single server
    -- (until it returns: set back at each RETURN, since a set_config()
    -- made here outlives the function's own SET clause): a custom plan of each
    -- made a payment in the invoice's own transaction (record_payment,
    -- through invoice_announcement) 0.9 ms slower; the generic plans read
    -- by key, for one invoice as for 1,000.  Citus plans no generic plan
    -- of a statement on a distributed table with parameters
    IF NOT subscription.distributed() THEN
        PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    END IF;
    -- once: a restore copies rows already announced, and announces
    -- without history the invoices of a dump from before 1.1
    WITH m AS (
        UPDATE subscription.invoice_record AS r SET announced = true
          FROM unnest(tenant_ids, invoice_ids) WITH ORDINALITY AS d(tenant_id, id, k)
         WHERE r.tenant_id = ANY (tenant_ids) AND r.tenant_id = d.tenant_id AND r.id = d.id AND NOT r.announced
        RETURNING r, d.k)
    SELECT array_agg(m.r ORDER BY m.k) INTO marked FROM m;
    IF marked IS NULL OR subscription.restoring_role() THEN
        PERFORM set_config('plan_cache_mode', plan_cache_mode, true);
        RETURN;
    END IF;
    FOR i IN SELECT * FROM unnest(marked) AS x WHERE x.status <> 'open' LOOP
        status_ids := status_ids || i.id;
        status_details := status_details || subscription.invoice_opening_status(i);
    END LOOP;
    -- each one's lines, and their total: its total once invoice_totals has
    -- counted them, and none before them (an opening written at the end of
    -- its statement: SET CONSTRAINTS invoice_record_opened IMMEDIATE),
    -- though renew_common_group opens an invoice with the total of the
    -- lines it writes next (issue 18).  Read into arrays by the invoice's
    -- place in marked, not joined back to it: the generic plan of that
    -- join (ten rows expected on each side) was a nested loop comparing
    -- every invoice with every other one's lines, 499,500 pairs for
    -- 1,000 invoices (issue 18)
    marked_count := cardinality(marked);
    line_counts := array_fill(0::bigint, ARRAY[marked_count]);
    line_totals := array_fill(0::numeric, ARRAY[marked_count]);
    FOR g IN
        WITH x AS (SELECT x.tenant_id, x.id, row_number() OVER () AS k FROM unnest(marked) AS x)
        SELECT x.k, count(*) AS lines, sum(subscription.line_amount(l.kind, l.amount)) AS total
          FROM x JOIN subscription.ledger AS l
            ON l.tenant_id = ANY (tenant_ids) AND l.tenant_id = x.tenant_id AND l.invoice_id = x.id
         GROUP BY x.k
    LOOP
        line_counts[g.k] := g.lines;
        line_totals[g.k] := g.total;
    END LOOP;
    -- their openings' details, in one call for the batch
    open_details := subscription.invoice_open_details(marked, line_totals, line_counts);
    RETURN QUERY
    WITH x AS (SELECT x.*, row_number() OVER () AS k FROM unnest(marked) AS x)
    SELECT x.tenant_id, x.account_id, x.subscription_id, o.operation, o.details
      FROM x
     CROSS JOIN LATERAL (VALUES (1, 'invoice_open', open_details[x.k]),
                                (2, 'invoice_status',
                                 CASE WHEN x.status <> 'open' THEN status_details[array_position(status_ids, x.id)] END))
           AS o(n, operation, details)
     WHERE o.details IS NOT NULL
     ORDER BY x.k, o.n;
    PERFORM set_config('plan_cache_mode', plan_cache_mode, true);
END
$$;

COMMENT ON FUNCTION subscription.invoice_announcements(bigint[], bigint[]) IS
'Internal: mark invoices announced and return their openings'' history rows (and a status their transaction reached), once each, in the order given (I8; issue 18)';


-- One invoice's rows, as invoice_for_change writes them (invoice_opening).
CREATE FUNCTION subscription.invoice_announcement(tenant_id bigint, invoice_id bigint,
                                                  OUT account_id bigint, OUT subscription_id bigint,
                                                  OUT operations text[], OUT details jsonb[])
RETURNS record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
BEGIN
    operations := '{}';
    details := '{}';
    -- once
    UPDATE subscription.invoice_record AS r SET announced = true
     WHERE r.tenant_id = invoice_announcement.tenant_id AND r.id = invoice_announcement.invoice_id AND NOT r.announced
    RETURNING * INTO i;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    account_id := i.account_id;
    subscription_id := i.subscription_id;
    SELECT o.operations, o.details INTO operations, details FROM subscription.invoice_opening(i) AS o;
END
$$;

COMMENT ON FUNCTION subscription.invoice_announcement(bigint, bigint) IS
'Internal: mark an invoice announced and return its opening''s history rows (and a status its transaction reached), once (I8)';

-- I8: the openings of invoices, in the order given, each once
-- (invoice_announcements), their history rows written by one statement
-- (write_histories): one write of their events.  Per tenant where the
-- tables are distributed.
CREATE FUNCTION subscription.announce_invoices(tenant_ids bigint[], invoice_ids bigint[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    per_tenant boolean := subscription.distributed();
    g record;
BEGIN
    PERFORM subscription.require_arguments('announce_invoices', '{tenant_ids,invoice_ids}',
        ARRAY[tenant_ids IS NULL, invoice_ids IS NULL]);
    IF cardinality(tenant_ids) <> cardinality(invoice_ids) THEN
        RAISE EXCEPTION 'the arrays of announce_invoices() must be of one length' USING ERRCODE = 'array_subscript_error';
    END IF;
    FOR g IN
        SELECT array_agg(d.tenant_id ORDER BY d.k) AS tenants, array_agg(d.id ORDER BY d.k) AS ids
          FROM unnest(tenant_ids, invoice_ids) WITH ORDINALITY AS d(tenant_id, id, k)
         GROUP BY CASE WHEN per_tenant THEN d.tenant_id END
         ORDER BY min(d.k)
    LOOP
        PERFORM subscription.write_histories(array_agg(a.operation ORDER BY a.k), array_agg(a.account_id ORDER BY a.k),
                                             array_agg(a.subscription_id ORDER BY a.k), array_agg(a.details ORDER BY a.k),
                                             array_agg(a.tenant ORDER BY a.k))
           FROM subscription.invoice_announcements(g.tenants, g.ids) WITH ORDINALITY
                AS a(tenant, account_id, subscription_id, operation, details, k)
         HAVING count(*) > 0;
    END LOOP;
END
$$;

COMMENT ON FUNCTION subscription.announce_invoices(bigint[], bigint[]) IS
'Internal: invoices'' openings with their totals and lines (the events invoice.opened), then a status their transaction reached, once each, in one statement (I8; issue 18)';

-- One invoice (invoice_for_change: before a failed payment or a void of
-- an invoice its transaction opened): its rows from invoice_announcement,
-- whose statements read the one invoice by its key, and one write_histories;
-- the same rows as announce_invoices' of that invoice (issue 20: through
-- invoice_announcements' plans, made for the commit's thousand invoices,
-- a failed payment's opening cost 6 ms in the 3-year simulation).
CREATE FUNCTION subscription.announce_invoice(tenant_id bigint, invoice_id bigint)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    a record;
BEGIN
    PERFORM subscription.require_arguments('announce_invoice', '{tenant_id,invoice_id}',
        ARRAY[tenant_id IS NULL, invoice_id IS NULL]);
    -- at the commit most were announced already (record_payment): no rows
    SELECT * INTO a FROM subscription.invoice_announcement(announce_invoice.tenant_id, announce_invoice.invoice_id);
    IF cardinality(a.operations) > 0 THEN
        PERFORM subscription.write_histories(a.operations, a.account_id, a.subscription_id, a.details,
                                             announce_invoice.tenant_id);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.announce_invoice(bigint, bigint) IS
'Internal: an invoice''s opening with its total and lines (the event invoice.opened), then a status its transaction reached, once (I8)';

-- I8: the invoices of this transaction whose openings are to be written
-- (src/openings.c, issue 18).  opening_pending, the WHEN clause of
-- invoice_record_opened, lists each invoice inserted and is true only for
-- the first of the list, so that one trigger event, not one per invoice,
-- writes them all; pending_openings returns the list, in the order of
-- the inserts (those of rolled back subtransactions left out), and empties
-- it.
CREATE FUNCTION subscription.opening_pending(tenant_id bigint, invoice_id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'opening_pending'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.opening_pending(bigint, bigint) IS
'Internal (C): list an invoice inserted in this transaction for its opening; true for the first of the list, whose trigger event writes them all (I8; issue 18)';

CREATE FUNCTION subscription.pending_openings(OUT tenant_ids bigint[], OUT invoice_ids bigint[])
RETURNS record
AS 'MODULE_PATHNAME', 'pending_openings'
LANGUAGE C
SET search_path = pg_catalog, pg_temp;

COMMENT ON FUNCTION subscription.pending_openings() IS
'Internal (C): the invoices of this transaction listed for their openings, in the order inserted, the list emptied (I8; issue 18)';

-- I8: at the commit of the transaction that wrote invoices (a deferred
-- constraint trigger, one event for the invoices listed by
-- opening_pending), their openings, whatever statements wrote their lines,
-- 1,000 invoices a statement (a transaction's 10,000 in one statement held
-- 37 MB more at the commit).  A rollback writes nothing.  SET CONSTRAINTS
-- invoice_record_opened IMMEDIATE writes them at the end of each
-- statement instead.
CREATE FUNCTION subscription.invoice_opened()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
    chunk constant integer := 1000;
BEGIN
    SELECT * INTO p FROM subscription.pending_openings();
    FOR k IN 0 .. (cardinality(p.invoice_ids) - 1) / chunk LOOP
        PERFORM subscription.announce_invoices(p.tenant_ids[k * chunk + 1 : (k + 1) * chunk],
                                               p.invoice_ids[k * chunk + 1 : (k + 1) * chunk]);
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.invoice_opened() IS
'Trigger, at the commit: the openings of the invoices listed, with their totals and lines (announce_invoices, I8)';

-- an invoice copied already announced (a restore) has none to write
CREATE CONSTRAINT TRIGGER invoice_record_opened AFTER INSERT ON subscription.invoice_record
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW
    WHEN (NOT NEW.announced AND subscription.opening_pending(NEW.tenant_id, NEW.id))
    EXECUTE FUNCTION subscription.invoice_opened();

-- I3: an invoice's status from its total and what was paid: paid once
-- nothing is due; a void or uncollectible invoice stays so.  The one place
-- of the rule: settle_invoice and invoice_totals read it.
CREATE FUNCTION subscription.invoice_status(status text, total numeric, paid numeric)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN invoice_status.status OPERATOR(pg_catalog.=) ANY ('{void,uncollectible}'::text[]) THEN invoice_status.status
            WHEN invoice_status.total OPERATOR(pg_catalog.-) invoice_status.paid OPERATOR(pg_catalog.<=) 0 THEN 'paid'
            ELSE 'open' END;

COMMENT ON FUNCTION subscription.invoice_status(text, numeric, numeric) IS
'Internal: an invoice''s status from its status, total and payments: paid once nothing is due, void and uncollectible stay (I3)';

-- I3: an invoice's status from its total and what was paid
-- (invoice_status).  A change of
-- status is a history row (and its event, E1).  Paid: the subscription
-- past due for it is active again, in this transaction (D5).  The
-- caller's own history rows of the invoice (before_operations and
-- before_details: record_payment's opening and payment) are written with
-- the status's, before it, in one statement (write_histories), whether
-- the status changes or not.  paid_now: what the caller's payment adds to
-- what was paid, written with the status in one UPDATE (record_payment,
-- which holds the invoice's row locked).  announce: the caller's rows
-- hold the invoice's opening (invoice_opening): the same UPDATE marks it
-- announced (I8), and its status row follows them.
CREATE FUNCTION subscription.settle_invoice(tenant_id bigint, invoice_id bigint, quiet boolean DEFAULT false,
                                            at timestamptz DEFAULT NULL, before_operations text[] DEFAULT '{}',
                                            before_details jsonb[] DEFAULT '{}', paid_now numeric DEFAULT 0,
                                            announce boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    new_status text;
    operations text[] := coalesce(before_operations, '{}');
    details jsonb[] := coalesce(before_details, '{}');
    status_details jsonb;
BEGIN
    IF paid_now < 0 OR paid_now >= 'Infinity' THEN
        RAISE EXCEPTION 'a payment''s part of an invoice must be a finite amount, not negative'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', paid_now);
    END IF;
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    IF NOT FOUND THEN
        -- no invoice, no rows of it (record_payment, which gives rows, has it locked)
        RETURN NULL;
    END IF;
    i.paid := i.paid + coalesce(paid_now, 0);
    new_status := subscription.invoice_status(i.status, i.total, i.paid);
    IF new_status IS DISTINCT FROM i.status OR paid_now <> 0 OR (announce AND NOT i.announced) THEN
        i.announced := i.announced OR announce IS TRUE;
        UPDATE subscription.invoice_record AS r SET status = new_status, paid = i.paid, announced = i.announced
         WHERE r.tenant_id = settle_invoice.tenant_id AND r.id = settle_invoice.invoice_id;
    END IF;
    IF new_status IS DISTINCT FROM i.status THEN
        IF NOT quiet THEN
            status_details := subscription.invoice_status_details(i, new_status, coalesce(settle_invoice.at, i.at),
                                                                  '{}', false);
        END IF;
        IF status_details IS NOT NULL THEN
            operations := operations || 'invoice_status'::text;
            details := details || status_details;
        END IF;
    END IF;
    IF cardinality(operations) > 0 THEN
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
    END IF;
    IF new_status IS DISTINCT FROM i.status AND NOT quiet AND new_status = 'paid' AND i.subscription_id IS NOT NULL THEN
        PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
    END IF;
    RETURN new_status;
END
$$;

COMMENT ON FUNCTION subscription.settle_invoice(bigint, bigint, boolean, timestamptz, text[], jsonb[], numeric, boolean) IS
'Internal: an invoice''s status from its total and payments (and what its caller''s payment adds, written with it, and its mark of announced), its change recorded in history unless quiet, after the caller''s rows of it (I3)';

-- I2: before each ledger line, the invoice it belongs to: the one this
-- transaction opened for the same account, subscription, time and
-- currency, or a new one; a refund or credit of a charge names the
-- charge's invoice as the one it corrects.  The one place lines meet
-- invoices, whatever function writes them.  Only what must be per line:
-- the invoice's total and status follow per statement (invoice_totals,
-- issue 18).
CREATE FUNCTION subscription.invoice_line()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    line_at timestamptz;
BEGIN
    -- a restore copies the invoices with their lines and totals; the lines
    -- of a dump from before 1.1 get theirs, as the upgrade gives them,
    -- without history (the dump's history is restored as it was); a
    -- restore, by a restoring role, or as the docs say, with
    -- session_replication_role = replica (this trigger fires ALWAYS)
    IF NEW.invoice_id IS NOT NULL
       AND (current_setting('session_replication_role') = 'replica'
            OR subscription.restored_copy('subscription.ledger_id_seq', NEW.id)) THEN
        RETURN NEW;
    END IF;
    IF NEW.corrects_invoice_id IS NULL AND NEW.charge_id IS NOT NULL AND NEW.kind IN ('refund', 'credit') THEN
        NEW.corrects_invoice_id := (SELECT l.invoice_id FROM subscription.ledger AS l
                                     WHERE l.tenant_id = NEW.tenant_id AND l.id = NEW.charge_id);
    END IF;
    IF NEW.invoice_id IS NOT NULL THEN
        RETURN NEW;
    END IF;
    line_at := coalesce(lower(NEW.period), NEW.created_at);
    NEW.invoice_id := (SELECT i.id FROM subscription.invoice_record AS i
                        WHERE i.tenant_id = NEW.tenant_id AND i.account_id = NEW.account_id
                          AND i.at = line_at AND i.currency = NEW.currency
                          AND i.subscription_id IS NOT DISTINCT FROM NEW.subscription_id
                          AND i.corrects_invoice_id IS NULL
                          AND i.xact = pg_current_xact_id()
                        ORDER BY i.id DESC LIMIT 1);
    IF NEW.invoice_id IS NULL THEN
        -- the line's foreign keys check its account, subscription and
        -- currency: no need to check them again here (open_invoice does)
        NEW.invoice_id := (subscription.open_invoices_of(ARRAY[NEW.tenant_id], ARRAY[NEW.account_id],
                                                         ARRAY[NEW.subscription_id], ARRAY[NEW.currency], ARRAY[line_at],
                                                         ARRAY[NEW.plan], NULL))[1];
    END IF;
    RETURN NEW;
END
$$;

COMMENT ON FUNCTION subscription.invoice_line() IS
'Trigger: the invoice each ledger line belongs to, opened by the billing event''s first line (I1, I2)';

-- only for a line that names no invoice, or a refund or credit of a charge
-- that names no corrected invoice: a line naming its invoice (the common
-- renewals', issue 18) has nothing to be given
CREATE TRIGGER ledger_invoice BEFORE INSERT ON subscription.ledger
    FOR EACH ROW
    WHEN (NEW.invoice_id IS NULL
          OR (NEW.corrects_invoice_id IS NULL AND NEW.charge_id IS NOT NULL AND NEW.kind IN ('refund', 'credit')))
    EXECUTE FUNCTION subscription.invoice_line();
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_invoice;

-- I2, I3: after each statement writing ledger lines, what invoice_line did
-- per line before issue 18, per statement: the statement's lines read from
-- the transition table grouped by invoice, then each invoice's total after
-- them, over every tenant of the statement (on a single server), or per
-- tenant (on Citus, where every statement names its tenant, and a
-- transition table is never joined with a distributed table), naming the
-- tenants of its group (tenant_id = ANY).  An invoice opened in this
-- transaction (every invoice its lines go to, but a restore's) holds the
-- sum of its lines (line_amount): what it holds already when its opening
-- gave it (renew_common_group opens a batch's invoices with their
-- totals), and it is not written again, for an UPDATE of a row its own
-- transaction inserted checks every foreign key of the row again (issue
-- 18); an older invoice adds the statement's part (one UPDATE, which a
-- concurrent one waits for).  Then settle_invoice for the invoices whose
-- status that changes (invoice_status), written or not, by tenant in the
-- order of its first line, each tenant's in the order of their first
-- lines.  A restore's lines (copied with their invoice and its total) add
-- nothing, except to the invoices opened for them in this transaction (a
-- dump from before 1.1); settled quietly.  Fires before
-- ledger_reduce_charge: the discount and credit lines it writes follow the
-- charges' totals, in statements of their own.
CREATE FUNCTION subscription.invoice_totals()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    replica boolean := current_setting('session_replication_role') = 'replica';
    -- one UPDATE per tenant where the tables are distributed
    per_tenant boolean := subscription.distributed();
    t record;
    changed record;
    -- the invoices (by first line): whether of this transaction, their
    -- status, total and payments; the sums of the lines of those of this
    -- transaction; those to write, and the totals of those of this
    -- transaction
    ks bigint[];
    mine boolean[];
    statuses text[];
    was numeric[];
    paids numeric[];
    sum_tenants bigint[];
    sum_invoices bigint[];
    sum_totals numeric[];
    written bigint[];
    sums numeric[];
    -- the invoices whose status changes, by first line
    settle bigint[];
    k bigint;
    -- the planner's setting, set back after the lines' sums
    seqscan text := current_setting('enable_seqscan');
    -- the group's one tenant where the tables are distributed, else NULL
    one_tenant bigint;
BEGIN
    -- per group (every tenant, or one), by tenant in the order of its
    -- first line, its invoices in the order of theirs: each one's lines'
    -- sum, the time of its last line (what settle_invoice records),
    -- whether all are a restore's
    FOR t IN
        SELECT array_agg(DISTINCT x.tenant_id) AS tenant_set,
               array_agg(x.tenant_id ORDER BY x.tenant_first, x.first) AS tenants,
               array_agg(x.invoice_id ORDER BY x.tenant_first, x.first) AS invoices,
               array_agg(x.part ORDER BY x.tenant_first, x.first) AS parts,
               array_agg(x.at ORDER BY x.tenant_first, x.first) AS ats,
               array_agg(x.quiet ORDER BY x.tenant_first, x.first) AS quiets
          FROM (SELECT x.*, min(x.first) OVER (PARTITION BY x.tenant_id) AS tenant_first
                  FROM (SELECT n.tenant_id, n.invoice_id, min(n.id) AS first,
                               sum(subscription.line_amount(n.kind, n.amount)) AS part,
                               (array_agg(coalesce(lower(n.period), n.created_at) ORDER BY n.id DESC))[1] AS at,
                               bool_and(replica OR subscription.restored_copy('subscription.ledger_id_seq', n.id)) AS quiet
                          FROM new_rows AS n
                         GROUP BY n.tenant_id, n.invoice_id) AS x) AS x
         GROUP BY CASE WHEN per_tenant THEN x.tenant_id END
         ORDER BY min(x.first)
    LOOP
        one_tenant := CASE WHEN per_tenant THEN t.tenant_set[1] END;
        -- each invoice, whether this transaction opened it; then the sum
        -- of the lines of those it did, each statement naming its tenants
        -- (no correlated read: on Citus each runs on the tenant's shard,
        -- and the first's decision is the one the UPDATE follows)
        SELECT array_agg(x.k ORDER BY x.k), array_agg(x.mine ORDER BY x.k), array_agg(x.status ORDER BY x.k),
               array_agg(x.total ORDER BY x.k), array_agg(x.paid ORDER BY x.k)
          INTO ks, mine, statuses, was, paids
          FROM (SELECT d.k, i.xact = pg_current_xact_id() AS mine, i.status, i.total, i.paid
                  FROM unnest(t.tenants, t.invoices, t.quiets) WITH ORDINALITY AS d(tenant_id, invoice_id, quiet, k)
                  JOIN subscription.invoice_record AS i
                    ON i.tenant_id = ANY (t.tenant_set) AND i.tenant_id = d.tenant_id AND i.id = d.invoice_id
                 WHERE NOT d.quiet OR i.xact = pg_current_xact_id()) AS x;
        -- each invoice's lines read by their key, one lookup of the
        -- ledger's (tenant_id, invoice_id) index an invoice, sequential
        -- scans off whatever the statistics say (issue 18: the lines of
        -- every tenant of the group were read and each tested against the
        -- array of invoices, 0.1 s a group of 1,000; a plan from lagging
        -- statistics scanned the whole ledger).  One statement for both
        -- (issue 18, h-ren8: it was two computing the same sum): on
        -- Citus the group's one tenant is a constant of the statement
        -- (coalesce of a non-null constant folds to it), so every read
        -- names it and runs on its shard; on a single server it is NULL
        -- and folds away, each lookup naming its invoice's tenant alone
        -- (naming the group's tenants with tenant_id = ANY walked the
        -- array at every lookup: 367 ms a group of 1,000)
        PERFORM set_config('enable_seqscan', 'off', true);
        SELECT array_agg(t.tenants[m.k]), array_agg(t.invoices[m.k]), array_agg(l.total)
          INTO sum_tenants, sum_invoices, sum_totals
          FROM unnest(ks, mine) AS m(k, mine)
         CROSS JOIN LATERAL (SELECT sum(subscription.line_amount(l.kind, l.amount)) AS total
                               FROM subscription.ledger AS l
                              WHERE l.tenant_id = coalesce(one_tenant, t.tenants[m.k])
                                AND l.invoice_id = t.invoices[m.k]) AS l
         WHERE m.mine AND l.total IS NOT NULL;
        PERFORM set_config('enable_seqscan', seqscan, true);
        -- written unless it holds that sum, in its scale too (0.00, not 0);
        -- the status of those left as they are
        SELECT coalesce(array_agg(x.k ORDER BY x.k) FILTER (WHERE x.write), '{}'),
               coalesce(array_agg(x.total ORDER BY x.k) FILTER (WHERE x.write), '{}'),
               coalesce(array_agg(x.k ORDER BY x.k)
                            FILTER (WHERE NOT x.write
                                      AND subscription.invoice_status(x.status, x.total, x.paid) IS DISTINCT FROM x.status),
                        '{}')
          INTO written, sums, settle
          FROM (SELECT x.*, x.total IS NULL OR x.total <> x.was OR scale(x.total) <> scale(x.was) AS write
                  FROM (SELECT x.k, x.status, x.paid, x.was, CASE WHEN x.mine THEN s.total END AS total
                          FROM unnest(ks, mine, statuses, was, paids) AS x(k, mine, status, was, paid)
                          LEFT JOIN unnest(sum_tenants, sum_invoices, sum_totals) AS s(tenant_id, invoice_id, total)
                            ON s.tenant_id = t.tenants[x.k] AND s.invoice_id = t.invoices[x.k]) AS x) AS x;
        FOR changed IN
            UPDATE subscription.invoice_record AS i
               SET total = coalesce(d.total, i.total + t.parts[d.k])
              FROM unnest(written, sums) AS d(k, total)
             WHERE i.tenant_id = ANY (t.tenant_set) AND i.tenant_id = t.tenants[d.k] AND i.id = t.invoices[d.k]
            RETURNING i.status, i.total, i.paid, d.k
        LOOP
            IF subscription.invoice_status(changed.status, changed.total, changed.paid) IS DISTINCT FROM changed.status THEN
                settle := settle || changed.k;
            END IF;
        END LOOP;
        FOREACH k IN ARRAY (SELECT coalesce(array_agg(x ORDER BY x), '{}') FROM unnest(settle) AS x) LOOP
            PERFORM subscription.settle_invoice(t.tenants[k], t.invoices[k], t.quiets[k], t.ats[k]);
        END LOOP;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION subscription.invoice_totals() IS
'Trigger, per statement: the totals of the invoices of the statement''s ledger lines, and the status of those it changes (I2, I3)';

CREATE TRIGGER ledger_invoice_total AFTER INSERT ON subscription.ledger
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.invoice_totals();
ALTER TABLE subscription.ledger ENABLE ALWAYS TRIGGER ledger_invoice_total;

-- the tenant of a row written without one, from its account (as the other
-- tenant tables, 17_tenant_keys.sql)
CREATE TRIGGER payment_method_fill_tenant_id BEFORE INSERT ON subscription.payment_method
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('payment_method', 'account_id', 'account');
CREATE TRIGGER invoice_record_fill_tenant_id BEFORE INSERT ON subscription.invoice_record
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('invoice_record', 'account_id', 'account');
CREATE TRIGGER payment_fill_tenant_id BEFORE INSERT ON subscription.payment
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('payment', 'account_id', 'account');
ALTER TABLE subscription.payment_method ENABLE ALWAYS TRIGGER payment_method_fill_tenant_id;
ALTER TABLE subscription.invoice_record ENABLE ALWAYS TRIGGER invoice_record_fill_tenant_id;
ALTER TABLE subscription.payment ENABLE ALWAYS TRIGGER payment_fill_tenant_id;

-- The tenant of an invoice or a payment, by its id alone (NULL if unknown),
-- for the unkeyed forms.
-- PL/pgSQL: Citus cannot plan an SQL function's parameter
CREATE FUNCTION subscription.tenant_of_invoice(invoice_id bigint)
RETURNS bigint
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT i.tenant_id FROM subscription.invoice_record AS i WHERE i.id = tenant_of_invoice.invoice_id);
END
$$;

COMMENT ON FUNCTION subscription.tenant_of_invoice(bigint) IS 'Internal: the tenant of an invoice, by its id (NULL if unknown)';

-- An invoice of the tenant, locked for a change: P0002 unless it exists,
-- 22023 if it is another tenant's.  One this transaction opened has its
-- opening written first (announce_invoice, I8), unless the caller writes
-- it with its own rows (announce false: record_payment, through
-- invoice_announcement).
CREATE FUNCTION subscription.invoice_for_change(fn text, tenant bigint, invoice_id bigint, announce boolean DEFAULT true)
RETURNS subscription.invoice_record
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    owner bigint;
BEGIN
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = invoice_for_change.tenant AND r.id = invoice_for_change.invoice_id FOR UPDATE;
    IF FOUND AND NOT i.announced AND announce IS NOT false THEN
        -- I8: opened in this transaction: its opening before the change's events
        PERFORM subscription.announce_invoice(i.tenant_id, i.id);
        SELECT * INTO i FROM subscription.invoice_record AS r WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    END IF;
    IF FOUND THEN
        RETURN i;
    END IF;
    owner := subscription.tenant_of_invoice(invoice_id);
    IF owner IS NULL THEN
        RAISE EXCEPTION 'invoice % does not exist', invoice_id USING ERRCODE = 'no_data_found';
    END IF;
    IF invoice_for_change.tenant IS NULL THEN
        RAISE EXCEPTION 'argument "tenant_id" of %() must not be null', fn USING ERRCODE = 'null_value_not_allowed';
    END IF;
    RAISE EXCEPTION 'invoice % is not of tenant %', invoice_id, invoice_for_change.tenant
        USING ERRCODE = 'invalid_parameter_value',
              HINT = format('subscription.%s(invoice_id, ...) without the tenant finds it.', fn);
END
$$;

COMMENT ON FUNCTION subscription.invoice_for_change(text, bigint, bigint, boolean) IS
'Internal: an invoice of the tenant, locked (P0002 unless it exists, 22023 if another tenant''s)';

-- A ledger line's part of an invoice's total: a charge adds, every other
-- kind takes off (the invoice view's balance, I2).
CREATE FUNCTION subscription.line_amount(kind text, amount numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE line_amount.kind WHEN 'charge' THEN line_amount.amount ELSE OPERATOR(pg_catalog.-) line_amount.amount END;

COMMENT ON FUNCTION subscription.line_amount(text, numeric) IS
'Internal: a ledger line''s part of its invoice''s total: a charge adds, every other kind takes off (I2)';

-- I3: void an open invoice that nothing paid: a correcting invoice gives
-- each charge back net of what was already taken off it (its coupon, the
-- credit that paid part of it, a refund or credit of it given before: a
-- refund line naming it), returns to the account as credit what the
-- invoice took off with the account's credit or gave back of earlier
-- charges (one credit line), and the invoice is void.  No line is deleted.
CREATE FUNCTION subscription.void_invoice(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    correction bigint;
    c record;
    returned numeric;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.void_invoice(bigint,bigint,text,timestamptz)', void_invoice.tenant_id,
            pg_catalog.jsonb_build_array(void_invoice.tenant_id, void_invoice.invoice_id, void_invoice.reason, void_invoice.at)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_arguments('void_invoice', '{invoice_id,reason,at}',
        ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL]);
    i := subscription.invoice_for_change('void_invoice', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('void_invoice', at, false);
    IF btrim(reason) = '' THEN
        RAISE EXCEPTION 'a void needs a reason' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status <> 'open' OR i.paid > 0 THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number,
                        CASE WHEN i.status = 'open' THEN 'partly paid' ELSE i.status END
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only an open invoice without payments can be voided; give money back with a refund or a credit.';
    END IF;
    correction := subscription.open_invoice(i.tenant_id, i.account_id, i.subscription_id, i.currency,
                                            void_invoice.at, NULL, i.id);
    -- each charge, net of what its coupon, the credit that paid it and
    -- the refunds and credits of it given before took off
    FOR c IN SELECT l.*, coalesce((SELECT sum(d.amount) FROM subscription.ledger AS d
                                    WHERE d.tenant_id = l.tenant_id AND d.charge_id = l.id
                                      AND d.kind IN ('discount', 'credit_used', 'refund', 'credit')), 0) AS off,
                    -- a charge is given back once by a line naming it (ledger_one_refund_per_charge)
                    EXISTS (SELECT FROM subscription.ledger AS g
                             WHERE g.tenant_id = l.tenant_id AND g.charge_id = l.id
                               AND g.kind IN ('refund', 'credit')) AS given_back
               FROM subscription.ledger AS l
              WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind = 'charge'
              ORDER BY l.id LOOP
        IF c.amount - c.off > 0 THEN
            INSERT INTO subscription.ledger
                   (tenant_id, account_id, subscription_id, addon_batch_id, kind, amount, currency, period, item, plan,
                    charge_id, description, invoice_id, corrects_invoice_id)
            VALUES (i.tenant_id, i.account_id, c.subscription_id, c.addon_batch_id, 'refund', c.amount - c.off,
                    c.currency, c.period, c.item, c.plan, CASE WHEN NOT c.given_back THEN c.id END,
                    format('void of invoice %s: %s', i.document_number, reason)
                      || CASE WHEN c.given_back THEN format(' (the rest of charge %s)', c.id) ELSE '' END,
                    correction, i.id);
        END IF;
    END LOOP;
    -- the account's credit this invoice used, and what it gave back of
    -- earlier charges, stay the account's: one credit line (L9)
    returned := (SELECT sum(l.amount) FROM subscription.ledger AS l
                  WHERE l.tenant_id = i.tenant_id AND l.invoice_id = i.id AND l.kind IN ('credit_used', 'refund', 'credit'));
    IF returned > 0 THEN
        INSERT INTO subscription.ledger
               (tenant_id, account_id, subscription_id, kind, amount, currency, item, description, invoice_id,
                corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, i.subscription_id, 'credit', subscription.round_money(returned, i.currency),
                i.currency, 'credit',
                format('void of invoice %s: credit used and given back returned to the account (%s)',
                       i.document_number, reason), correction, i.id);
    END IF;
    UPDATE subscription.invoice_record AS r SET status = 'void', void_reason = reason
     WHERE r.tenant_id = i.tenant_id AND r.id = i.id;
    PERFORM subscription.invoice_status_history(i, 'void', void_invoice.at,
        jsonb_build_object('reason', reason, 'correcting_invoice_id', correction), false);
    -- D5: nothing is owed on it any more
    IF i.subscription_id IS NOT NULL THEN
        PERFORM subscription.end_past_due(i.tenant_id, i.subscription_id, i.id);
    END IF;
    RETURN correction;
END
$$;

COMMENT ON FUNCTION subscription.void_invoice(bigint, bigint, text, timestamptz) IS
'Void an open unpaid invoice: a correcting invoice gives its charges back and returns credit used or given back to the account, nothing is deleted (I3) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.void_invoice(invoice_id bigint, reason text, at timestamptz DEFAULT subscription.now())
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.void_invoice(subscription.tenant_of_invoice(void_invoice.invoice_id), void_invoice.invoice_id,
                                     void_invoice.reason, void_invoice.at);
END
$$;

COMMENT ON FUNCTION subscription.void_invoice(bigint, text, timestamptz) IS
'Void an open unpaid invoice: a correcting invoice gives its charges back and returns credit used or given back to the account, nothing is deleted (I3)';

-- I4, I5: money received for an invoice.  Payments add up; what is above
-- what was due becomes the account's credit (L9: a credit line the next
-- charges use); a reference already recorded returns its payment and
-- changes nothing; the invoice's currency only.  Paid in full: status paid.
CREATE FUNCTION subscription.record_payment(tenant_id bigint, invoice_id bigint, amount numeric, reference text,
                                            at timestamptz, currency text)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    earlier subscription.payment;
    excess numeric;
    credit_line bigint;
    new_id bigint;
    -- the history rows of the invoice written with its status's, in one
    -- statement (settle_invoice): its opening (I8), then the payment
    opening record;
    operations text[];
    details jsonb[];
    -- its opening is among them and it is not marked announced yet
    unmarked boolean := false;
    missing boolean[] := ARRAY[invoice_id IS NULL, amount IS NULL, reference IS NULL, at IS NULL];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.record_payment(bigint,bigint,numeric,text,timestamptz,text)', record_payment.tenant_id,
            pg_catalog.jsonb_build_array(record_payment.tenant_id, record_payment.invoice_id, record_payment.amount, record_payment.reference, record_payment.at, record_payment.currency)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    -- 22004 (require_arguments) called on the way to it alone (issue 20:
    -- a call of a function with its SET clause a payment)
    IF true = ANY (missing) THEN
        PERFORM subscription.require_arguments('record_payment', '{invoice_id,amount,reference,at}', missing);
    END IF;
    i := subscription.invoice_for_change('record_payment', tenant_id, invoice_id, false);
    -- I8: opened in this transaction: its opening before the payment's rows
    -- (an invoice announced already, as most are, has none: its row is
    -- locked, so it stays so; no UPDATE of no row).  Its rows from the row
    -- in hand; settle_invoice marks it in the UPDATE of the payment, or,
    -- on the ways that write before that, invoice_announcement does
    operations := '{}';
    details := '{}';
    IF NOT i.announced THEN
        SELECT * INTO opening FROM subscription.invoice_opening(i);
        operations := opening.operations;
        details := opening.details;
        unmarked := true;
    END IF;
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    -- I5: once per reference
    SELECT * INTO earlier FROM subscription.payment AS p
     WHERE p.tenant_id = i.tenant_id AND p.reference = record_payment.reference;
    IF FOUND THEN
        IF earlier.invoice_id <> i.id THEN
            RAISE EXCEPTION 'payment reference "%" is already recorded for another invoice', reference
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('Payment %s of invoice %s has it.', earlier.id, earlier.invoice_id);
        END IF;
        IF unmarked THEN
            PERFORM subscription.invoice_announcement(i.tenant_id, i.id);
        END IF;
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        RETURN earlier.id;
    END IF;
    PERFORM subscription.require_time('record_payment', at, false);
    IF currency IS NOT NULL AND currency <> i.currency THEN
        RAISE EXCEPTION 'invoice % is in %, not %', i.document_number, i.currency, currency
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Record the payment in the invoice''s currency.';
    END IF;
    IF amount <= 0 OR amount >= 'Infinity' OR amount <> subscription.round_money(amount, i.currency) THEN
        RAISE EXCEPTION 'a payment must be a positive amount in the minor unit of %', i.currency
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The amount was %s.', amount);
    END IF;
    PERFORM subscription.require_amount(amount, i.currency);
    IF btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment needs the provider''s reference' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF i.status IN ('void', 'uncollectible') THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    excess := amount - greatest(i.total - i.paid, 0);
    IF excess > 0 THEN
        -- the credit's line may settle other invoices (invoice_totals): the
        -- opening before their rows
        IF unmarked THEN
            PERFORM subscription.invoice_announcement(i.tenant_id, i.id);
            unmarked := false;
        END IF;
        PERFORM subscription.write_histories(operations, i.account_id, i.subscription_id, details, i.tenant_id);
        operations := '{}';
        details := '{}';
        INSERT INTO subscription.ledger AS l
               (tenant_id, account_id, kind, amount, currency, item, description, corrects_invoice_id)
        VALUES (i.tenant_id, i.account_id, 'credit', excess, i.currency, 'credit',
                format('overpayment of invoice %s (%s)', i.document_number, reference), i.id)
        RETURNING l.id INTO credit_line;
    END IF;
    INSERT INTO subscription.payment AS p
           (tenant_id, invoice_id, account_id, amount, currency, reference, payment_method_id, at, credit_line_id)
    VALUES (i.tenant_id, i.id, i.account_id, amount, i.currency, reference, i.payment_method_id, at, credit_line)
    RETURNING p.id INTO new_id;
    operations := operations || 'payment'::text;
    details := details || jsonb_build_object('payment_id', new_id, 'invoice_id', i.id, 'amount', amount,
                                             'currency', i.currency, 'reference', reference,
                                             'credited', greatest(excess, 0));
    -- what is paid, written with the status in one UPDATE
    PERFORM subscription.settle_invoice(i.tenant_id, i.id, false, at, operations, details, amount - greatest(excess, 0),
                                        unmarked);
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.record_payment(bigint, bigint, numeric, text, timestamptz, text) IS
'Record a payment of an invoice: payments add up, an overpayment becomes credit, once per reference (I4, I5, L9) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.record_payment(invoice_id bigint, amount numeric, reference text,
                                            at timestamptz DEFAULT subscription.now(), currency text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.record_payment(subscription.tenant_of_invoice(record_payment.invoice_id), record_payment.invoice_id,
                                       record_payment.amount, record_payment.reference, record_payment.at,
                                       record_payment.currency);
END
$$;

COMMENT ON FUNCTION subscription.record_payment(bigint, numeric, text, timestamptz, text) IS
'Record a payment of an invoice: payments add up, an overpayment becomes credit, once per reference (I4, I5, L9)';

-- I6: a failed attempt to charge an invoice, in history (and its event
-- payment.failed, E1); its subscription is past due from then on (D1), and
-- what follows is the dunning's (61_dunning.sql).
CREATE FUNCTION subscription.record_payment_failure(tenant_id bigint, invoice_id bigint, reason text, at timestamptz)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    attempt bigint;
    missing boolean[] := ARRAY[invoice_id IS NULL, reason IS NULL, at IS NULL];
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        PERFORM subscription.idempotent('subscription.record_payment_failure(bigint,bigint,text,timestamptz)', record_payment_failure.tenant_id,
            pg_catalog.jsonb_build_array(record_payment_failure.tenant_id, record_payment_failure.invoice_id, record_payment_failure.reason, record_payment_failure.at));
        RETURN;
    END IF;
    IF true = ANY (missing) THEN
        PERFORM subscription.require_arguments('record_payment_failure', '{invoice_id,reason,at}', missing);
    END IF;
    i := subscription.invoice_for_change('record_payment_failure', tenant_id, invoice_id);
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'pay', false);
    PERFORM subscription.require_time('record_payment_failure', at, false);
    IF i.status <> 'open' THEN
        RAISE EXCEPTION 'invoice % is %', i.document_number, i.status
            USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'Only an open invoice can fail to be paid.';
    END IF;
    -- counted apart from the write: on Citus a query of history passed to
    -- write_history would run on the tenant's shard, and write_history's
    -- INSERT from there is a distributed query inside a shard's
    SELECT 1 + count(*) INTO attempt
      FROM subscription.history AS h
     WHERE h.tenant_id = i.tenant_id AND h.account_id = i.account_id
       AND h.operation = 'payment_failure'
       AND h.details -> 'invoice_id' = to_jsonb(i.id);
    PERFORM subscription.write_history('payment_failure', i.account_id, i.subscription_id,
        jsonb_build_object('invoice_id', i.id, 'reason', reason, 'at', at, 'payment_method_id', i.payment_method_id,
                           'due', i.total - i.paid, 'currency', i.currency, 'attempt', attempt),
        i.tenant_id);
    -- D1: a failed charge makes the subscription past due at once
    IF i.subscription_id IS NOT NULL THEN
        PERFORM subscription.enter_past_due(i.tenant_id, i.subscription_id, i.id, at);
    END IF;
END
$$;

COMMENT ON FUNCTION subscription.record_payment_failure(bigint, bigint, text, timestamptz) IS
'Record a failed charge of an open invoice in history, and its event payment.failed (I6) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.record_payment_failure(invoice_id bigint, reason text, at timestamptz DEFAULT subscription.now())
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM subscription.record_payment_failure(subscription.tenant_of_invoice(record_payment_failure.invoice_id),
                                                record_payment_failure.invoice_id, record_payment_failure.reason,
                                                record_payment_failure.at);
END
$$;

COMMENT ON FUNCTION subscription.record_payment_failure(bigint, text, timestamptz) IS
'Record a failed charge of an open invoice in history, and its event payment.failed (I6)';

-- I7: a payment method of an account; a default one takes over from the
-- previous default.  A card number in reference or label is refused (23514).
CREATE FUNCTION subscription.add_payment_method(tenant_id bigint, account_id bigint, kind text, reference text,
                                                label text, is_default boolean)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    new_id bigint;
BEGIN
    -- an idempotency key: the first call's result (Q1-Q4, docs/integrating.md#idempotency-keys)
    IF subscription.idempotency_requested() THEN
        RETURN subscription.idempotent('subscription.add_payment_method(bigint,bigint,text,text,text,boolean)', add_payment_method.tenant_id,
            pg_catalog.jsonb_build_array(add_payment_method.tenant_id, add_payment_method.account_id, add_payment_method.kind, add_payment_method.reference, add_payment_method.label, add_payment_method.is_default)) OPERATOR(pg_catalog.#>>) '{}';
    END IF;
    PERFORM subscription.require_tenant('add_payment_method', tenant_id, 'account', account_id);
    PERFORM subscription.require_arguments('add_payment_method', '{account_id,kind,reference,is_default}',
        ARRAY[account_id IS NULL, kind IS NULL, reference IS NULL, is_default IS NULL]);
    PERFORM subscription.require_account(add_payment_method.tenant_id, add_payment_method.account_id);
    PERFORM subscription.authorize(add_payment_method.tenant_id, add_payment_method.account_id, 'pay', false);
    IF subscription.has_card_number(reference) OR subscription.has_card_number(label) THEN
        RAISE EXCEPTION 'a payment method must not hold a card number'
            USING ERRCODE = 'check_violation',
                  DETAIL = 'The reference or the label holds a Luhn-valid run of 13 to 19 digits.',
                  HINT = 'Store the payment provider''s token, and at most the last four digits in the label.';
    END IF;
    IF kind !~ '^[a-z][a-z_]*$' OR btrim(reference) = '' THEN
        RAISE EXCEPTION 'a payment method needs a kind in lower case and the provider''s reference'
            USING ERRCODE = 'invalid_parameter_value', DETAIL = format('The kind was "%s".', kind);
    END IF;
    IF is_default THEN
        -- the account's row first: two new defaults of one account one after the other
        PERFORM FROM subscription.account AS a
         WHERE a.tenant_id = add_payment_method.tenant_id AND a.id = add_payment_method.account_id FOR NO KEY UPDATE;
        UPDATE subscription.payment_method AS m SET is_default = false
         WHERE m.tenant_id = add_payment_method.tenant_id AND m.account_id = add_payment_method.account_id
           AND m.is_default;
    END IF;
    INSERT INTO subscription.payment_method AS m (tenant_id, account_id, kind, reference, label, is_default)
    VALUES (add_payment_method.tenant_id, add_payment_method.account_id, kind, reference, label, is_default)
    RETURNING m.id INTO new_id;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION subscription.add_payment_method(bigint, bigint, text, text, text, boolean) IS
'Add a payment method (the provider''s token, never a card number) to an account, the default one if asked (I7) (keyed form: the tenant first, docs/design.md#keyed-forms)';

CREATE FUNCTION subscription.add_payment_method(account_id bigint, kind text, reference text, label text DEFAULT NULL,
                                                is_default boolean DEFAULT true)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN subscription.add_payment_method(subscription.tenant_of('account', add_payment_method.account_id),
                                           add_payment_method.account_id, add_payment_method.kind,
                                           add_payment_method.reference, add_payment_method.label,
                                           add_payment_method.is_default);
END
$$;

COMMENT ON FUNCTION subscription.add_payment_method(bigint, text, text, text, boolean) IS
'Add a payment method (the provider''s token, never a card number) to an account, the default one if asked (I7)';

-- C3, I2: one row per invoice: the columns of 1.0's view (the plan, what
-- was charged net of discounts, given back and credited, the balance and
-- the lines), then the invoice's own: number, status, total, paid, due date.
CREATE VIEW subscription.invoice WITH (security_barrier) AS
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
SELECT i.account_id,
       i.subscription_id,
       i.at,
       (array_agg(l.plan ORDER BY l.id DESC) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'))[1] AS plan,
       i.currency,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'charge'), 0)
         OPERATOR(pg_catalog.-) coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'discount'), 0) AS charged,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'refund'), 0) AS refunded,
       coalesce(sum(l.amount) FILTER (WHERE l.kind OPERATOR(pg_catalog.=) 'credit'), 0) AS credited,
       i.total AS balance,
       jsonb_agg(jsonb_build_object('kind', l.kind, 'amount', l.amount, 'item', l.item,
                                    'period', l.period, 'description', l.description) ORDER BY l.id) AS lines,
       i.id,
       i.issuer,
       i.number,
       i.document_number,
       i.status,
       i.total,
       i.paid,
       i.due_at,
       i.payment_method_id,
       i.corrects_invoice_id
  FROM subscription.invoice_record AS i
  JOIN subscription.ledger AS l ON l.tenant_id OPERATOR(pg_catalog.=) i.tenant_id AND l.invoice_id OPERATOR(pg_catalog.=) i.id
  CROSS JOIN readable
 WHERE (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) i.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) i.account_id))
 GROUP BY i.tenant_id, i.id;

COMMENT ON VIEW subscription.invoice IS
'One row per invoice (billing event): plan, charged, refunded, credited, balance and lines (C3), then number, status, total, paid and due date (I1-I3)';

-- I6: one row per payment, the receipt: what was paid for which invoice,
-- with what method, and what of it became credit.
CREATE VIEW subscription.receipt WITH (security_barrier) AS
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
SELECT p.id AS payment_id,
       p.account_id,
       p.invoice_id,
       i.document_number,
       p.at,
       p.amount,
       p.currency,
       p.reference,
       m.kind AS payment_method,
       m.label AS payment_method_label,
       coalesce(c.amount, 0) AS credited,
       i.total,
       i.status
  FROM subscription.payment AS p
  JOIN subscription.invoice_record AS i ON i.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND i.id OPERATOR(pg_catalog.=) p.invoice_id
  LEFT JOIN subscription.payment_method AS m
    ON m.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND m.id OPERATOR(pg_catalog.=) p.payment_method_id
  LEFT JOIN subscription.ledger AS c ON c.tenant_id OPERATOR(pg_catalog.=) p.tenant_id AND c.id OPERATOR(pg_catalog.=) p.credit_line_id
  CROSS JOIN readable
 WHERE (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) p.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) p.account_id));

COMMENT ON VIEW subscription.receipt IS
'One row per payment: its invoice, amount, method, and the part credited to the account (I6)';

-- I6: each account's open balance, invoice by invoice: what is still due on
-- each open invoice, and the account's running total, oldest due first.
CREATE VIEW subscription.open_balance WITH (security_barrier) AS
-- the accounts the actor may read, once (readable_accounts)
WITH readable AS MATERIALIZED (SELECT * FROM subscription.readable_accounts())
SELECT i.account_id,
       i.id AS invoice_id,
       i.document_number,
       i.at,
       i.due_at,
       i.currency,
       i.total,
       i.paid,
       i.total OPERATOR(pg_catalog.-) i.paid AS due,
       sum(i.total OPERATOR(pg_catalog.-) i.paid)
           OVER (PARTITION BY i.account_id, i.currency ORDER BY i.due_at, i.id) AS balance
  FROM subscription.invoice_record AS i
  CROSS JOIN readable
 WHERE i.status OPERATOR(pg_catalog.=) 'open'
   AND (readable.everything OR (readable.tenant_id OPERATOR(pg_catalog.=) i.tenant_id
                                 AND readable.account_id OPERATOR(pg_catalog.=) i.account_id));

COMMENT ON VIEW subscription.open_balance IS
'Each account''s open invoices, what is due on each and the running balance, oldest due first (I6)';

-- Text made safe for an HTML page.
CREATE FUNCTION subscription.html_escape(t text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(html_escape.t, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
                       '"', '&quot;'), '''', '&#39;');

COMMENT ON FUNCTION subscription.html_escape(text) IS 'Internal: text made safe for an HTML page';

-- An amount as the currency prints it: all the digits of its minor unit.
CREATE FUNCTION subscription.money_text(amount numeric, currency text)
RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
RETURN pg_catalog.round(money_text.amount, subscription.money_scale(money_text.currency))::text OPERATOR(pg_catalog.||) ' ' OPERATOR(pg_catalog.||) money_text.currency;

COMMENT ON FUNCTION subscription.money_text(numeric, text) IS 'Internal: an amount with every digit of its currency''s minor unit, and the currency';

-- A document (invoice or receipt) in a format: its title, its header
-- fields, its lines (label, detail, amount) and its closing fields, as a
-- self-contained HTML page or as text.  The one renderer of both.
CREATE FUNCTION subscription.render_document(format text, title text, head text[], lines text[], foot text[])
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out text;
    k integer;
BEGIN
    IF format = 'text' THEN
        out := title || E'\n' || repeat('=', length(title)) || E'\n';
        FOR k IN 1 .. coalesce(array_length(head, 1), 0) / 2 LOOP
            out := out || rpad(head[2 * k - 1] || ':', 16) || head[2 * k] || E'\n';
        END LOOP;
        out := out || E'\n';
        -- a line: its label and amount, then its detail below it
        FOR k IN 1 .. coalesce(array_length(lines, 1), 0) / 3 LOOP
            out := out || lines[3 * k - 2] || repeat(' ', greatest(1, 56 - length(lines[3 * k - 2])))
                       || lpad(lines[3 * k], 16) || E'\n'
                       || coalesce('    ' || nullif(lines[3 * k - 1], '') || E'\n', '');
        END LOOP;
        out := out || E'\n';
        FOR k IN 1 .. coalesce(array_length(foot, 1), 0) / 2 LOOP
            out := out || foot[2 * k - 1] || ':' || repeat(' ', greatest(1, 55 - length(foot[2 * k - 1])))
                       || lpad(foot[2 * k], 16) || E'\n';
        END LOOP;
        RETURN out;
    ELSIF format = 'html' THEN
        out := '<!DOCTYPE html>' || E'\n' || '<html><head><meta charset="utf-8"><title>'
            || subscription.html_escape(title) || '</title><style>'
            || 'body{font-family:sans-serif;margin:2em;color:#222}h1{font-size:1.4em}'
            || 'table{border-collapse:collapse;width:100%}td,th{padding:.3em .6em;border-bottom:1px solid #ddd;text-align:left}'
            || 'td.amount,th.amount{text-align:right;white-space:nowrap}dl{display:grid;grid-template-columns:10em auto}'
            || 'dt{font-weight:bold}tfoot td{font-weight:bold}'
            || '</style></head><body>' || E'\n<h1>' || subscription.html_escape(title) || E'</h1>\n<dl>';
        FOR k IN 1 .. coalesce(array_length(head, 1), 0) / 2 LOOP
            out := out || '<dt>' || subscription.html_escape(head[2 * k - 1]) || '</dt><dd>'
                       || subscription.html_escape(head[2 * k]) || '</dd>';
        END LOOP;
        out := out || E'</dl>\n<table><thead><tr><th>Item</th><th>Detail</th><th class="amount">Amount</th></tr></thead><tbody>\n';
        FOR k IN 1 .. coalesce(array_length(lines, 1), 0) / 3 LOOP
            out := out || '<tr><td>' || subscription.html_escape(lines[3 * k - 2]) || '</td><td>'
                       || subscription.html_escape(coalesce(lines[3 * k - 1], '')) || '</td><td class="amount">'
                       || subscription.html_escape(lines[3 * k]) || E'</td></tr>\n';
        END LOOP;
        out := out || '</tbody><tfoot>';
        FOR k IN 1 .. coalesce(array_length(foot, 1), 0) / 2 LOOP
            out := out || '<tr><td colspan="2">' || subscription.html_escape(foot[2 * k - 1])
                       || '</td><td class="amount">' || subscription.html_escape(foot[2 * k]) || '</td></tr>';
        END LOOP;
        RETURN out || E'</tfoot></table>\n</body></html>\n';
    END IF;
    RAISE EXCEPTION 'unknown document format "%"', format
        USING ERRCODE = 'invalid_parameter_value', HINT = 'The formats are html and text.';
END
$$;

COMMENT ON FUNCTION subscription.render_document(text, text, text[], text[], text[]) IS
'Internal: an invoice or receipt as a self-contained HTML page or as text';

-- I3: the invoice a customer downloads: issuer, number, dates, each line
-- with its plan and period, coupons and credits, the total, and what was
-- paid with which method.
CREATE FUNCTION subscription.invoice_document(invoice_id bigint, format text DEFAULT 'html')
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    i subscription.invoice_record;
    m subscription.payment_method;
    a subscription.account;
    lines text[] := '{}';
    l record;
    -- a value first: on Citus the lookup may not run inside the shard's query
    tenant bigint := subscription.tenant_of_invoice(invoice_document.invoice_id);
BEGIN
    PERFORM subscription.require_arguments('invoice_document', '{invoice_id,format}',
        ARRAY[invoice_id IS NULL, format IS NULL]);
    SELECT * INTO i FROM subscription.invoice_record AS r
     WHERE r.tenant_id = tenant AND r.id = invoice_document.invoice_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'invoice % does not exist', invoice_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(i.tenant_id, i.account_id, 'read', false);
    SELECT * INTO a FROM subscription.account AS x WHERE x.tenant_id = i.tenant_id AND x.id = i.account_id;
    SELECT * INTO m FROM subscription.payment_method AS x WHERE x.tenant_id = i.tenant_id AND x.id = i.payment_method_id;
    FOR l IN SELECT x.kind, x.amount, x.item, x.period, x.description, p.name AS plan_name
               FROM subscription.ledger AS x LEFT JOIN subscription.plan AS p ON p.code = x.plan
              WHERE x.tenant_id = i.tenant_id AND x.invoice_id = i.id ORDER BY x.id LOOP
        lines := lines || ARRAY[
            CASE l.kind WHEN 'charge' THEN coalesce(l.plan_name, l.description)
                        WHEN 'discount' THEN 'Coupon' WHEN 'credit_used' THEN 'Credit applied'
                        WHEN 'refund' THEN 'Refund' ELSE 'Credit' END
              || CASE WHEN l.kind = 'charge' AND l.item <> 'plan' THEN ' (' || l.item || ')' ELSE '' END,
            concat_ws(', ',
                CASE WHEN l.period IS NOT NULL
                     THEN to_char(lower(l.period) AT TIME ZONE 'UTC', 'YYYY-MM-DD') || ' to '
                          || to_char(upper(l.period) AT TIME ZONE 'UTC', 'YYYY-MM-DD') END,
                CASE WHEN l.kind <> 'charge' OR l.plan_name IS NOT NULL THEN l.description END),
            subscription.money_text(subscription.line_amount(l.kind, l.amount), i.currency)];
    END LOOP;
    RETURN subscription.render_document(format,
        CASE WHEN i.corrects_invoice_id IS NOT NULL THEN 'Credit note ' ELSE 'Invoice ' END || i.document_number,
        ARRAY['Issuer', coalesce((SELECT p.name FROM subscription.product AS p WHERE p.code = i.issuer), 'Account'),
              'Billed to', coalesce(a.name, 'account ' || a.id),
              'Date', to_char(i.at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              'Due', to_char(i.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              'Status', i.status],
        lines,
        ARRAY['Total', subscription.money_text(i.total, i.currency),
              'Paid' || coalesce(' by ' || m.kind || coalesce(' ' || m.label, ''), ''),
              subscription.money_text(i.paid, i.currency),
              'Due', subscription.money_text(greatest(i.total - i.paid, 0), i.currency)]);
END
$$;

COMMENT ON FUNCTION subscription.invoice_document(bigint, text) IS
'The invoice a customer downloads, as a self-contained HTML page or as text (I3)';

-- I6: the receipt of a payment, as a page or as text.
CREATE FUNCTION subscription.receipt_document(payment_id bigint, format text DEFAULT 'html')
RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    billed_to text;
    credited numeric;
BEGIN
    PERFORM subscription.require_arguments('receipt_document', '{payment_id,format}',
        ARRAY[payment_id IS NULL, format IS NULL]);
    SELECT p.*, i.document_number, i.issuer, i.total, i.paid AS invoice_paid, m.kind AS method, m.label
      INTO r
      FROM subscription.payment AS p
      JOIN subscription.invoice_record AS i ON i.tenant_id = p.tenant_id AND i.id = p.invoice_id
      LEFT JOIN subscription.payment_method AS m ON m.tenant_id = p.tenant_id AND m.id = p.payment_method_id
     WHERE p.id = receipt_document.payment_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'payment % does not exist', payment_id USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM subscription.authorize(r.tenant_id, r.account_id, 'read', false);
    -- the tenant's rows read first: on Citus a statement that reads one
    -- may not also call what reads the catalog (money_text)
    billed_to := coalesce((SELECT a.name FROM subscription.account AS a
                            WHERE a.tenant_id = r.tenant_id AND a.id = r.account_id), 'account ' || r.account_id);
    credited := (SELECT c.amount FROM subscription.ledger AS c WHERE c.tenant_id = r.tenant_id AND c.id = r.credit_line_id);
    RETURN subscription.render_document(format, 'Receipt for invoice ' || r.document_number,
        ARRAY['Issuer', coalesce((SELECT p.name FROM subscription.product AS p WHERE p.code = r.issuer), 'Account'),
              'Billed to', billed_to,
              'Paid on', to_char(r.at AT TIME ZONE 'UTC', 'YYYY-MM-DD'),
              'Reference', r.reference,
              'Method', coalesce(r.method || coalesce(' ' || r.label, ''), 'not recorded')],
        ARRAY['Payment', 'invoice ' || r.document_number, subscription.money_text(r.amount, r.currency)]
          || CASE WHEN r.credit_line_id IS NOT NULL
                  THEN ARRAY['Credited to the account', 'above what was due',
                             subscription.money_text(-credited, r.currency)]
                  ELSE '{}' END,
        ARRAY['Invoice total', subscription.money_text(r.total, r.currency),
              'Paid on the invoice', subscription.money_text(r.invoice_paid, r.currency)]);
END
$$;

COMMENT ON FUNCTION subscription.receipt_document(bigint, text) IS
'The receipt of a payment, as a self-contained HTML page or as text (I6)';

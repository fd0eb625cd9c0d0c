-- record_history() per statement (issue 18, item 1): one query over the
-- transition tables writes one history row per changed row (R8, Z11), in
-- the order the statement changed them, as the row trigger did.
BEGIN;
SELECT plan(13);
SET search_path = subscription, public;
SET TimeZone = 'UTC';

INSERT INTO product (code, name) VALUES ('hs', 'History');
INSERT INTO plan (code, product, name) VALUES ('hs_plan', 'hs', 'Plan');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES ('hs_plan', '1 month', 5, true);

-- R8: a statement of three rows writes three rows, in its order
INSERT INTO account (id, name) VALUES (991003, 'C'), (991001, 'A'), (991002, 'B');
SELECT results_eq(
    $$SELECT operation, account_id, subscription_id, details ->> 'name', tenant_id FROM history
       WHERE account_id BETWEEN 991001 AND 991003 ORDER BY id$$,
    $$VALUES ('account_insert', 991003::bigint, NULL::bigint, 'C', 991003::bigint),
             ('account_insert', 991001, NULL, 'A', 991001),
             ('account_insert', 991002, NULL, 'B', 991002)$$,
    'R8: an INSERT of three accounts writes three account_insert rows, in the statement''s order');
SELECT ok((SELECT bool_and(NOT details ? 'tenant_id' AND details ? 'id') FROM history
            WHERE account_id BETWEEN 991001 AND 991003),
          'R8: an inserted row is recorded whole, without its tenant key');

-- R8: an UPDATE records the changed columns of the rows it changed, only
INSERT INTO member (id, account_id, external_id) VALUES (991101, 991001, 'm1'), (991102, 991001, 'm2'),
                                                         (991103, 991001, 'm3');
UPDATE member SET role = CASE WHEN id = 991102 THEN role ELSE 'admin' END WHERE account_id = 991001;
SELECT results_eq(
    $$SELECT details FROM history WHERE account_id = 991001 AND operation = 'member_update' ORDER BY id$$,
    $$VALUES ('{"role": {"old": "member", "new": "admin"}}'::jsonb),
             ('{"role": {"old": "member", "new": "admin"}}'::jsonb)$$,
    'R8: an UPDATE of three members, two changed, writes two member_update rows of the changed column');
SELECT is((SELECT count(*)::int FROM history WHERE account_id = 991001 AND operation = 'member_update'
             AND details::text LIKE '%991102%'), 0, 'R8: the member the UPDATE left as it was has no row');
UPDATE member SET role = role WHERE account_id = 991001;
SELECT is((SELECT count(*)::int FROM history WHERE account_id = 991001 AND operation = 'member_update'), 2,
          'R8: an UPDATE that changes nothing writes nothing');

-- R8: a DELETE records each row as it was
DELETE FROM member WHERE account_id = 991001 AND external_id IN ('m1', 'm3');
SELECT results_eq(
    $$SELECT details ->> 'external_id' FROM history WHERE account_id = 991001 AND operation = 'member_delete' ORDER BY id$$,
    $$VALUES ('m1'), ('m3')$$,
    'R8: a DELETE of two members writes two member_delete rows');

-- R8: a subscription's rows name its account and itself; an add-on batch's
-- name its subscription's account (looked up by the tenant key)
SELECT set_config('t.s1', subscribe(991002, 'hs_plan', '1 month', 2, '2026-01-01')::text, true);
SELECT set_config('t.s2', subscribe(991002, 'hs_plan', '1 month', 3, '2026-01-01')::text, true);
UPDATE subscription SET quantity = quantity + 1 WHERE account_id = 991002;
SELECT results_eq(
    $$SELECT account_id, subscription_id, details FROM history
       WHERE account_id = 991002 AND operation = 'subscription_update' ORDER BY subscription_id$$,
    $$VALUES (991002::bigint, current_setting('t.s1')::bigint, '{"quantity": {"old": 2, "new": 3}}'::jsonb),
             (991002, current_setting('t.s2')::bigint, '{"quantity": {"old": 3, "new": 4}}'::jsonb)$$,
    'R8: an UPDATE of two subscriptions writes a subscription_update row for each');
INSERT INTO addon (code, product, name) VALUES ('hs_addon', 'hs', 'History add-on');
INSERT INTO addon_batch (subscription_id, addon, quantity)
SELECT s.id, 'hs_addon', 1 FROM subscription AS s WHERE s.account_id = 991002 ORDER BY s.id;
SELECT results_eq(
    $$SELECT account_id, subscription_id FROM history WHERE operation = 'addon_batch_insert'
       AND subscription_id IN (current_setting('t.s1')::bigint, current_setting('t.s2')::bigint) ORDER BY id$$,
    $$SELECT 991002::bigint, s.id FROM subscription AS s WHERE s.account_id = 991002 ORDER BY s.id$$,
    'Z11: an add-on batch''s row names its subscription''s account');

-- R8: an UPDATE's details are its rows' to_jsonb() without the tenant key,
-- compared column by column as jsonb (IS DISTINCT FROM), paired by place:
-- a NULL set, a value cleared, a time, a boolean, a column rewritten to
-- the same value (no key), over two rows changed differently
CREATE TEMP TABLE hs_before AS SELECT * FROM subscription WHERE account_id = 991002;
SELECT set_config('t.h', (SELECT max(id) FROM history)::text, true);
UPDATE subscription
   SET coupon_periods_left = CASE WHEN id = current_setting('t.s1')::bigint THEN 3 END,
       cancel_at_period_end = (id = current_setting('t.s2')::bigint),
       created_at = CASE WHEN id = current_setting('t.s2')::bigint THEN created_at + interval '1 second'
                         ELSE created_at END,
       renewal = renewal
 WHERE account_id = 991002;
CREATE TEMP TABLE hs_mid AS SELECT * FROM subscription WHERE account_id = 991002;
SELECT set_config('t.h2', (SELECT max(id) FROM history)::text, true);
UPDATE subscription SET coupon_periods_left = NULL WHERE id = current_setting('t.s1')::bigint;
SELECT results_eq(
    $$SELECT subscription_id, details FROM history
       WHERE account_id = 991002 AND operation = 'subscription_update' AND id > current_setting('t.h')::bigint
       ORDER BY id > current_setting('t.h2')::bigint, subscription_id$$,
    $$SELECT r.id, d.changed
        FROM (SELECT 1 AS n, m.id, to_jsonb(b) - 'tenant_id' AS o, to_jsonb(m) - 'tenant_id' AS r
                FROM hs_mid AS m JOIN hs_before AS b ON b.id = m.id
              UNION ALL
              SELECT 2, a.id, to_jsonb(m) - 'tenant_id', to_jsonb(a) - 'tenant_id'
                FROM subscription AS a JOIN hs_mid AS m ON m.id = a.id
               WHERE a.id = current_setting('t.s1')::bigint) AS r
       CROSS JOIN LATERAL (SELECT jsonb_object_agg(k.key, jsonb_build_object('old', r.o -> k.key, 'new', k.value)) AS changed
                             FROM jsonb_each(r.r) AS k WHERE k.value IS DISTINCT FROM r.o -> k.key) AS d
       WHERE d.changed IS NOT NULL
       ORDER BY r.n, r.id$$,
    'R8: an UPDATE''s details are the changed columns of each row, as to_jsonb() compares them');

-- the comparison is jsonb's: 1.0 and 1.00 are the same number (no row),
-- though stored differently; a dropped column is no column
ALTER TABLE account ADD COLUMN hs_amount numeric;
UPDATE account SET hs_amount = 1.0 WHERE id = 991003;
UPDATE account SET hs_amount = 1.00 WHERE id = 991003;
UPDATE account SET hs_amount = NULL WHERE id = 991003;
SELECT results_eq(
    $$SELECT details::text FROM history WHERE account_id = 991003 AND operation = 'account_update' ORDER BY id$$,
    $$VALUES ('{"hs_amount": {"new": 1.0, "old": null}}'), ('{"hs_amount": {"new": null, "old": 1.00}}')$$,
    'R8: a value stored differently but equal as jsonb (1.0, 1.00) is no change');
ALTER TABLE account DROP COLUMN hs_amount;
UPDATE account SET name = 'C2' WHERE id = 991003;
SELECT is((SELECT details FROM history WHERE account_id = 991003 AND operation = 'account_update' ORDER BY id DESC LIMIT 1),
          '{"name": {"old": "C", "new": "C2"}}'::jsonb, 'R8: an UPDATE after a column was dropped records the changed column alone');

-- the trigger protocol: per statement, over a table it records
CREATE TABLE public.hs_other (id bigint, tenant_id bigint);
CREATE TRIGGER hs_row AFTER INSERT ON public.hs_other
    FOR EACH ROW EXECUTE FUNCTION subscription.record_history('account');
SELECT throws_ok($$INSERT INTO public.hs_other VALUES (1, 1)$$, '39P01',
                 'record_history() must be fired AFTER ... FOR EACH STATEMENT',
                 'record_history() refuses to fire per row (39P01)');
DROP TRIGGER hs_row ON public.hs_other;
CREATE TRIGGER hs_statement AFTER INSERT ON public.hs_other REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('hs_other');
SELECT throws_ok($$INSERT INTO public.hs_other VALUES (1, 1)$$, '39P01',
                 'record_history() must be fired by an INSERT, UPDATE or DELETE of a table it records',
                 'record_history() refuses a table it does not record (39P01)');

SELECT * FROM finish();
ROLLBACK;

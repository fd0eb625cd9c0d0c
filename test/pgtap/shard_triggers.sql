-- Triggers that do not branch on a table's name (issue 17, item 3): on
-- Citus a trigger fires on a shard, whose name is its table's with a shard
-- id (account_102008).  Each trigger function reads the logical table from
-- its trigger's argument; tables named like shards, with the same triggers,
-- behave as the tables themselves.
BEGIN;
SELECT plan(10);
SET search_path = subscription, public;

-- no trigger function of the extension reads the table's name or OID
SELECT is_empty($$
    SELECT p.proname FROM pg_proc AS p
     WHERE p.pronamespace = 'subscription'::regnamespace
       AND p.prorettype = 'trigger'::regtype
       AND p.prosrc ~* 'TG_TABLE_NAME|TG_RELNAME|TG_RELID|TG_TABLE_SCHEMA'$$,
    'no trigger function of the extension reads TG_TABLE_NAME, TG_RELNAME, TG_RELID or TG_TABLE_SCHEMA');

-- every trigger whose function reads TG_ARGV[0] passes its own table's name
-- (record_history, in C, reads its trigger's argument: issue 18)
SELECT is((SELECT count(*)::int FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid
            WHERE p.pronamespace = 'subscription'::regnamespace
              AND (p.prosrc LIKE '%TG\_ARGV[0]%' OR p.proname = 'record_history')
              AND NOT t.tgisinternal),
          53, 'the 53 triggers of the 8 functions that read the logical table');
SELECT is_empty($$
    SELECT t.tgname, t.tgrelid::regclass, t.tgnargs, encode(t.tgargs, 'escape')
      FROM pg_trigger AS t JOIN pg_proc AS p ON p.oid = t.tgfoid
     WHERE p.pronamespace = 'subscription'::regnamespace
       AND (p.prosrc LIKE '%TG\_ARGV[0]%' OR p.proname = 'record_history')
       AND NOT t.tgisinternal
       AND (t.tgnargs <> 1
            OR split_part(encode(t.tgargs, 'escape'), '\000', 1) <> (SELECT c.relname FROM pg_class AS c WHERE c.oid = t.tgrelid)::text)$$,
    'each of them passes its own table''s name as its one argument');
-- the tenant key's fill trigger (C) names its table first, too
SELECT is((SELECT count(*)::int FROM pg_trigger AS t
            WHERE t.tgfoid = 'subscription.fill_tenant_id'::regproc AND t.tgnargs = 3
              AND split_part(encode(t.tgargs, 'escape'), '\000', 1) = (SELECT c.relname FROM pg_class AS c WHERE c.oid = t.tgrelid)::text),
          15, 'the 15 tenant tables written with an account fill their tenant key by a trigger naming its own table');

-- tables named as Citus names shards, with the extension's triggers
CREATE SCHEMA shard;
CREATE TABLE shard.account_102008 (LIKE subscription.account INCLUDING DEFAULTS);
CREATE TRIGGER account_fill_tenant_id BEFORE INSERT ON shard.account_102008
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('account', 'parent_id', 'account');
CREATE TRIGGER account_history AFTER INSERT ON shard.account_102008
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('account');
CREATE TRIGGER account_parent_exists AFTER INSERT OR UPDATE OF parent_id ON shard.account_102008
    FOR EACH ROW WHEN (NEW.parent_id IS NOT NULL) EXECUTE FUNCTION subscription.check_reference('account');
CREATE TABLE shard.member_102040 (LIKE subscription.member INCLUDING DEFAULTS);
CREATE TRIGGER member_fill_tenant_id BEFORE INSERT ON shard.member_102040
    FOR EACH ROW WHEN (NEW.tenant_id IS NULL) EXECUTE FUNCTION subscription.fill_tenant_id('member', 'account_id', 'account');
CREATE TRIGGER member_history AFTER INSERT ON shard.member_102040
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('member');
CREATE TRIGGER member_history_update AFTER UPDATE ON shard.member_102040
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('member');
CREATE TABLE shard.plan_102010 (LIKE subscription.plan INCLUDING DEFAULTS);
CREATE TRIGGER plan_refuse_delete_in_use BEFORE DELETE ON shard.plan_102010
    FOR EACH ROW EXECUTE FUNCTION subscription.refuse_delete_in_use('plan');

-- R8: the history rows are the logical table's, as on a single server
INSERT INTO shard.account_102008 (id, name) VALUES (990001, 'on a shard');
SELECT results_eq($$SELECT operation, account_id FROM subscription.history WHERE account_id = 990001 ORDER BY id$$,
                  $$VALUES ('account_insert', 990001::bigint)$$,
                  'R8: an insert into an account shard is recorded as account_insert, for its account');
-- a root account is its own tenant; on Citus a row names its tenant (the
-- coordinator routes it by the key), as this member does
SELECT is((SELECT tenant_id FROM shard.account_102008 WHERE id = 990001), 990001::bigint,
          'an account inserted into a shard without its tenant key is its own tenant');
INSERT INTO shard.member_102040 (id, account_id, external_id, tenant_id) VALUES (990101, 990001, 'shard-member', 990001);
UPDATE shard.member_102040 SET role = 'admin' WHERE external_id = 'shard-member';
SELECT results_eq($$SELECT operation FROM subscription.history WHERE account_id = 990001 ORDER BY id$$,
                  $$VALUES ('account_insert'), ('member_insert'), ('member_update')$$,
                  'R8: a member shard''s changes are member_insert and member_update, for the member''s account');

-- an account's parent is checked on a shard as on the table
SELECT throws_ok($$INSERT INTO shard.account_102008 (id, name, parent_id) VALUES (990002, 'orphan', 990999)$$,
                 '23503', 'parent account 990999 does not exist',
                 'an account shard checks the parent (23503)');

-- a plan with a price cannot be deleted, from a plan shard either (2BP01)
INSERT INTO subscription.product (code, name) VALUES ('shardp', 'Shard product');
INSERT INTO subscription.plan (code, product, name) VALUES ('shard-plan', 'shardp', 'Shard plan');
INSERT INTO subscription.plan_price (plan, cycle, amount) VALUES ('shard-plan', '1 month', 10);
INSERT INTO shard.plan_102010 (code, product, name) VALUES ('shard-plan', 'shardp', 'Shard plan');
SELECT throws_ok($$DELETE FROM shard.plan_102010 WHERE code = 'shard-plan'$$,
                 '2BP01', 'plan "shard-plan" cannot be deleted',
                 'a plan shard refuses to delete a plan in use (2BP01)');
CREATE FUNCTION pg_temp.error_table(command text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
    t text;
BEGIN
    EXECUTE command;
    RETURN NULL;
EXCEPTION WHEN dependent_objects_still_exist THEN
    GET STACKED DIAGNOSTICS t = TABLE_NAME;
    RETURN t;
END
$f$;
SELECT is(pg_temp.error_table($$DELETE FROM shard.plan_102010 WHERE code = 'shard-plan'$$), 'plan',
          'the refusal names the logical table (plan), not the shard');

SELECT * FROM finish();
ROLLBACK;

-- subscription.set_constraints (issue 17): the SET CONSTRAINTS of a
-- transaction on Citus' workers.  On Citus the extension sets it LOCAL
-- after each SET CONSTRAINTS in a transaction block, and Citus sends that
-- SET LOCAL to the workers; wherever it is set LOCAL, its clause is
-- applied, each name standing for the constraint and for its shards'
-- copies (<name>_<shard id>).  On a single server a SET CONSTRAINTS sets
-- nothing, and the setting set LOCAL by hand does what its clause says.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
SET client_min_messages = warning;
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
-- the openings written so far: the invoices announced, of the accounts
-- this file creates in each transaction (on Citus, history's ids are of
-- each worker's range: no id bounds what was written after another)
\set openings 'SELECT count(*) FILTER (WHERE announced) AS openings FROM invoice_record WHERE tenant_id IN (1, 2, 3);'
\set catalog 'INSERT INTO product (code, name) VALUES (''desk'', ''Zendesk Support''); INSERT INTO plan (code, product, name) VALUES (''zd_pro'', ''desk'', ''Professional''); INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES (''zd_pro'', ''1 month'', 55, true); INSERT INTO account (id, tenant_id, name) SELECT g, g, ''tenant '' || g FROM generate_series(1, 3) AS g;'

-- I8 by the setting: the opening of an invoice already written is written
-- when the setting makes the trigger immediate, the next one at the end of
-- its statement; set back to DEFERRED, at the commit again
BEGIN;
:catalog
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
:openings
SET LOCAL subscription.set_constraints = 'subscription.invoice_record_opened IMMEDIATE';
:openings
SELECT subscribe(2, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
:openings
SET LOCAL subscription.set_constraints = 'subscription.invoice_record_opened DEFERRED';
SELECT subscribe(3, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
:openings
SET LOCAL subscription.set_constraints = 'ALL IMMEDIATE';
:openings
ROLLBACK;

-- a SET CONSTRAINTS without Citus sets nothing: single-server behaviour
-- is PostgreSQL's; on Citus it sets the clause, its names qualified
BEGIN;
SET search_path = public, subscription;
SET CONSTRAINTS invoice_record_opened IMMEDIATE;
SELECT current_setting('subscription.set_constraints')
       = CASE WHEN :'on_citus'::boolean THEN 'subscription.invoice_record_opened IMMEDIATE' ELSE '' END AS as_expected;
ROLLBACK;

-- a name stands for itself and its shards' copies (an underscore and
-- digits), not for other names that begin with it; a name this node
-- does not have is left out
BEGIN;
CREATE SCHEMA set_constraints_test;
CREATE TABLE set_constraints_test.t (id int);
CREATE TABLE set_constraints_test.fired (name text);
CREATE FUNCTION set_constraints_test.note() RETURNS trigger LANGUAGE plpgsql AS
$$BEGIN INSERT INTO set_constraints_test.fired VALUES (TG_NAME); RETURN NULL; END$$;
CREATE CONSTRAINT TRIGGER note AFTER INSERT ON set_constraints_test.t DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION set_constraints_test.note();
CREATE CONSTRAINT TRIGGER note_102008 AFTER INSERT ON set_constraints_test.t DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION set_constraints_test.note();
CREATE CONSTRAINT TRIGGER note_x AFTER INSERT ON set_constraints_test.t DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION set_constraints_test.note();
CREATE CONSTRAINT TRIGGER notes AFTER INSERT ON set_constraints_test.t DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION set_constraints_test.note();
INSERT INTO set_constraints_test.t VALUES (1);
SET LOCAL subscription.set_constraints = 'set_constraints_test.note, public.no_such_constraint IMMEDIATE';
SELECT name FROM set_constraints_test.fired ORDER BY name;
SET LOCAL subscription.set_constraints = 'set_constraints_test.none_here IMMEDIATE';
SELECT count(*) AS fired FROM set_constraints_test.fired;
ROLLBACK;

-- set for the session, it is not applied (the extension sets it LOCAL)
BEGIN;
:catalog
SELECT subscribe(1, 'zd_pro', '1 month', 1, '2026-01-01') IS NOT NULL AS subscribed;
SET subscription.set_constraints = 'subscription.invoice_record_opened IMMEDIATE';
:openings
ROLLBACK;
RESET subscription.set_constraints;

-- bad input: a name without its schema, more than one statement, not a
-- clause of SET CONSTRAINTS: 22023, and the transaction goes on
BEGIN;
SELECT pg_temp.error_of($$SET LOCAL subscription.set_constraints = 'invoice_record_opened IMMEDIATE'$$);
SELECT pg_temp.error_of($$SET LOCAL subscription.set_constraints = 'ALL IMMEDIATE; SELECT 1'$$);
SELECT pg_temp.error_of($$SET LOCAL subscription.set_constraints = 'ALL SOON'$$);
SELECT 'still here' AS after_refusals;
ROLLBACK;

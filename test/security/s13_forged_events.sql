-- S13 (review h-rev3, issue 20): history_event() is a C trigger that
-- writes the outbox as the extension's owner, and the back office executes
-- it (as record_history()).  Fired on a table of the caller's own (a temp
-- table with history's columns), it wrote the events its rows map to, of
-- any tenant, type and payload: a forged payment.recorded, which neither
-- write_events() nor insert_events() lets the back office write.  It now
-- runs on tables of the extension's owner alone (39P01); nothing is written.  The
-- same for record_history(), whose rows of a table of the caller's own
-- became history written as the owner (and, through history_event, events).
-- fill_tenant_id() (the lead, the review's doubt 2) reads tenants as the
-- owner: on a table of the caller's own it told no more than tenant_of(),
-- which the back office may call, but it too is for the extension's tables.
-- limit_registrations_invalidate() too (review h-rev4): on Citus, a relation
-- cache flush of every backend of the node at each statement.
BEGIN;
SELECT plan(9);
SELECT security_test.fixture();
SELECT coalesce(max(id), 0) AS last_event FROM subscription.event \gset
SELECT coalesce(max(id), 0) AS last_history FROM subscription.history \gset
-- a table of the back office's own with an account's columns and a row of one
CREATE TEMP TABLE s13_accounts (LIKE subscription.account);
INSERT INTO s13_accounts SELECT * FROM subscription.account ORDER BY id LIMIT 1;
CREATE TEMP TABLE s13_more (LIKE subscription.account);
ALTER TABLE s13_accounts OWNER TO backoffice;
ALTER TABLE s13_more OWNER TO backoffice;

SET ROLE backoffice;
CREATE TEMP TABLE s13_forged (id bigint, tenant_id bigint, operation text, account_id bigint,
                              subscription_id bigint, details jsonb, at timestamptz);
SELECT lives_ok($$CREATE TRIGGER s13_forge AFTER INSERT ON s13_forged REFERENCING NEW TABLE AS new_rows
                  FOR EACH STATEMENT EXECUTE FUNCTION subscription.history_event()$$,
                'S13: the back office may name history_event() in a trigger of its own table');
SELECT is(security_test.sqlstate_of($$INSERT INTO s13_forged VALUES
              (1, 1, 'payment', 1, NULL, '{"payment_id": 1, "invoice_id": 1, "amount": 1000000, "currency": "EUR"}', now())$$),
          '39P01', 'S13: history_event() refuses a table of another role');
SELECT lives_ok($$CREATE TRIGGER s13_forge AFTER INSERT ON s13_more REFERENCING NEW TABLE AS new_rows
                  FOR EACH STATEMENT EXECUTE FUNCTION subscription.record_history('account')$$,
                'S13: nor record_history() in a trigger of its own table');
SELECT is(security_test.sqlstate_of($$INSERT INTO s13_more SELECT * FROM s13_accounts$$),
          '39P01', 'S13: record_history() refuses a table of another role');
CREATE TEMP TABLE s13_tenants (tenant_id bigint, account_id bigint);
SELECT lives_ok($$CREATE TRIGGER s13_fill BEFORE INSERT ON s13_tenants
                  FOR EACH ROW EXECUTE FUNCTION subscription.fill_tenant_id('ledger', 'account_id', 'account')$$,
                'S13: nor fill_tenant_id() in a trigger of its own table');
SELECT is(security_test.sqlstate_of(format('INSERT INTO s13_tenants (account_id) VALUES (%s)',
                                           (SELECT id FROM s13_accounts))),
          '39P01', 'S13: fill_tenant_id() refuses a table of another role');
-- limit_registrations_invalidate() (h-cit24a): on Citus it makes every
-- backend of the node drop its whole relation cache; on a table of the
-- caller's own, at each of its statements (review h-rev4)
CREATE TEMP TABLE s13_registrations (id bigint);
SELECT lives_ok($$CREATE TRIGGER s13_invalidate AFTER INSERT ON s13_registrations
                  FOR EACH STATEMENT EXECUTE FUNCTION subscription.limit_registrations_invalidate()$$,
                'S13: nor limit_registrations_invalidate() in a trigger of its own table');
SELECT is(security_test.sqlstate_of($$INSERT INTO s13_registrations VALUES (1)$$),
          '39P01', 'S13: limit_registrations_invalidate() refuses a table of another role');
RESET ROLE;
SELECT is((SELECT count(*) FROM subscription.event WHERE id > :last_event)
          + (SELECT count(*) FROM subscription.history WHERE id > :last_history), 0::bigint,
          'S13: no event and no history was forged');

SELECT * FROM finish();
ROLLBACK;

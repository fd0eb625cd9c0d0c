-- Seats: license_consume, license_release, licenses_left, the license guard
-- on every write path, R10 default license, R8 history, R7 holders,
-- set_quantity and the permissions of Z1, R9, K8.
\set VERBOSITY default
\i test/sql/include/setup.psql
-- (on Citus the subscriptions, members' licenses and history are written on
-- the tenant's shard, numbered from the worker's range: there too from its
-- start, test/expected_citus)
\set worker_id_tables 'subscription history'
\i test/sql/include/worker_ids.psql
SELECT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') AS on_citus \gset
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- on Citus the workers' parts of the transaction take its SET LOCALs too:
-- the actor of the history rows written on the tenant's shards (R8)
SET LOCAL citus.propagate_set_commands = 'local';
-- I8: in one transaction, each invoice's opening is written at the end of
-- its statement (as at a commit), so that its history row is counted here
SET CONSTRAINTS subscription.invoice_record_opened IMMEDIATE;
-- R11's unique key: a seat for each service license, and nothing else
CREATE VIEW pg_temp.seats_check AS
WITH service_license AS (
    SELECT l.tenant_id, l.member_id, p.product, l.subscription_id
      FROM license AS l JOIN subscription AS s ON s.tenant_id = l.tenant_id AND s.id = l.subscription_id
      JOIN plan AS p ON p.code = s.plan AND p.kind = 'service')
SELECT (SELECT count(*) FROM service_seat) AS seats,
       NOT EXISTS (SELECT * FROM service_license EXCEPT SELECT tenant_id, member_id, product, subscription_id FROM service_seat)
       AND NOT EXISTS (SELECT tenant_id, member_id, product, subscription_id FROM service_seat EXCEPT SELECT * FROM service_license)
       AS seats_are_the_service_licenses;

INSERT INTO product (code, name) VALUES ('rainbow', 'Rainbow'), ('support', 'Zendesk Support');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('rb_business', 'rainbow', 'Business', 1, 'service'),
    ('rb_enterprise', 'rainbow', 'Enterprise', 2, 'service'),
    ('rb_recording', 'rainbow', 'Recording option', 0, 'option'),
    ('zd_pro', 'support', 'Professional', 2, 'service');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('rb_business', '1 month', 6.00, true), ('rb_enterprise', '1 month', 10.00, true),
    ('rb_recording', '1 month', 2.00, true), ('zd_pro', '1 month', 55.00, true),
    ('zd_pro', '1 year', 588.00, true);
INSERT INTO addon (code, product, name, feature, units) VALUES ('zd_seats5', 'support', '5 agent seats', 'licenses', 5);
-- Initech EMEA, a sub-account (K7): on a single server a root account
-- moved under Initech (its tenant stays its own); on Citus, where a root
-- does not move to another tenant, made in its parent's tenant
\if :on_citus
INSERT INTO account (id, tenant_id, name, parent_id) VALUES (1, 1, 'Initech', NULL), (2, 2, 'Globex', NULL), (3, 1, 'Initech EMEA', 1);
\else
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Initech'), (2, 2, 'Globex'), (3, 3, 'Initech EMEA');
UPDATE account SET parent_id = 1 WHERE id = 3;
\endif
SELECT tenant_id AS t3 FROM account WHERE id = 3 \gset

-- subscriptions: the first service subscription of an account is its default (R10)
SELECT subscribe(1, 'rb_business', '1 month', 2, '2026-01-01') AS business \gset
SELECT subscribe(1, 'rb_enterprise', '1 month', 2, '2026-01-01') AS enterprise \gset
SELECT subscribe(1, 'rb_recording', '1 month', 3, '2026-01-01') AS recording \gset
-- Globex's people exist before its subscription, so they hold no license yet
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES (21, 2, 2, 'gus', 'owner'), (22, 2, 2, 'hal', 'member');
INSERT INTO member (id, tenant_id, account_id, external_id) SELECT 200 + g, 2, 2, 'agent' || g FROM generate_series(1, 5) AS g;
SELECT subscribe(2, 'zd_pro', '1 month', 2, '2026-01-10') AS zendesk \gset
SELECT id, plan, is_default FROM subscription ORDER BY id;
SELECT subscription_id, used, capacity, active FROM license_counter ORDER BY 1;

-- R10: new members get the default license while one is free; the third
-- is created all the same, with a WARNING
INSERT INTO member (id, tenant_id, account_id, external_id, role, rights) VALUES
    (11, 1, 1, 'ida', 'owner', '{}'),
    (12, 1, 1, 'jon', 'admin', '{increase_licenses}'),
    (13, 1, 1, 'kim', 'member', '{}');
INSERT INTO member (id, tenant_id, account_id, external_id, role, rights) VALUES
    (14, 1, 1, 'lea', 'admin', '{decrease_monthly_licenses,change_renewal}'),
    (31, :t3, 3, 'max', 'owner', '{}');
SELECT subscription_id, member_id FROM license ORDER BY 1, 2;
SELECT licenses_left(:business) AS business_left, licenses_left(:recording) AS recording_left;

-- R11: a service license consumes one license and the count can be checked
SELECT license_release(:business, 12) AS left_after_release;
SELECT license_consume(:business, 13) AS left_after_consume;
-- Z4: no license left is 23514, with the limit, the use and the way out
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 14)', :business));
-- R11: at most one service per member and product, any number of options
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 11)', :enterprise));
SELECT license_consume(:recording, 11), license_consume(:recording, 13);
SELECT license_consume(:enterprise, 12) AS jon_gets_enterprise;
-- the other errors of license_consume
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 11)', :business));      -- 23505: already holds it
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 21)', :business));      -- P0002: of another tenant
SELECT pg_temp.error_of('SELECT license_consume(999, 11)');                         -- P0002
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 999)', :business));     -- P0002
SELECT pg_temp.error_of('SELECT license_consume(NULL, 11)');                        -- 22004
SELECT pg_temp.error_of(format('SELECT license_consume(%s, NULL)', :business));    -- 22004
SELECT pg_temp.error_of(format('SELECT license_release(%s, 14)', :business));      -- P0002: holds none
SELECT pg_temp.error_of('SELECT license_release(NULL, 14)');                        -- 22004
SELECT pg_temp.error_of('SELECT licenses_left(999)');                               -- P0002
SELECT licenses_left(NULL) IS NULL AS strict_left;

-- the same rules on every write path (R12): a plain INSERT ...
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, %s, 14)', :business));
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (2, %s, 14)', :zendesk));
-- (lea holds no service license of rainbow yet: accepted)
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, %s, 14)', :enterprise));
-- ... with unknown ids the foreign keys answer first (23503)
SELECT pg_temp.error_of('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, 999, 14)');
-- ... INSERT ... SELECT is all or nothing: 7 members, 2 licenses
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) SELECT 2, %s, id FROM member WHERE tenant_id = 2 AND account_id = 2', :zendesk));
SELECT count(*) AS zendesk_licenses, licenses_left(:zendesk) FROM license WHERE subscription_id = :zendesk;
INSERT INTO license (tenant_id, subscription_id, member_id) SELECT 2, :zendesk, id FROM member WHERE tenant_id = 2 AND id IN (201, 202);
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 21)', :zendesk));
SELECT count(*) AS zendesk_licenses, licenses_left(:zendesk) FROM license WHERE subscription_id = :zendesk;
-- ... two service licenses of one product in the same statement
SELECT license_release(:enterprise, 14);
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, %s, 14), (1, %s, 14)', :enterprise, :recording));
SELECT license_release(:business, 13);
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, %s, 13), (1, %s, 13)', :enterprise, :business));
SELECT license_consume(:business, 13);
-- ... COPY
SELECT license_release(:zendesk, 201), license_release(:zendesk, 202);
-- (the subscription's id from a program: on Citus a worker numbers it)
SELECT format($$COPY license (tenant_id, subscription_id, member_id) FROM PROGRAM 'printf "2\t%s\t203\n2\t%s\t204\n"'$$, :zendesk, :zendesk) \gexec
SELECT count(*) AS copied, licenses_left(:zendesk) FROM license WHERE subscription_id = :zendesk;
SELECT pg_temp.error_of(format($$COPY license (tenant_id, subscription_id, member_id) FROM PROGRAM 'printf "2\t%s\t205\n"'$$, :zendesk));
SELECT licenses_left(:zendesk) AS after_refused_copy;
-- ... UPDATE moves a license: one counter down, the other up, or refused
SELECT license_release(:recording, 13);
SELECT subscription_id, used, capacity FROM license_counter WHERE subscription_id IN (:business, :recording) ORDER BY 1;
UPDATE license SET subscription_id = :recording WHERE tenant_id = 1 AND subscription_id = :business AND member_id = 13;
SELECT subscription_id, used, capacity FROM license_counter WHERE subscription_id IN (:business, :recording) ORDER BY 1;
SELECT pg_temp.error_of(format('UPDATE license SET subscription_id = %s WHERE tenant_id = 1 AND subscription_id = %s', :enterprise, :recording));
UPDATE license SET assigned_at = '2026-01-02' WHERE tenant_id = 1 AND subscription_id = :recording;
SELECT subscription_id, used FROM license_counter WHERE subscription_id = :recording;
-- ... DELETE
DELETE FROM license WHERE tenant_id = 1 AND subscription_id = :recording AND member_id = 11;
SELECT used FROM license_counter WHERE subscription_id = :recording;
-- ... a rolled-back write leaves the counter as it was
SAVEPOINT before_bulk;
INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, :recording, 12);
SELECT used FROM license_counter WHERE subscription_id = :recording;
ROLLBACK TO SAVEPOINT before_bulk;
SELECT used FROM license_counter WHERE subscription_id = :recording;
-- ... TRUNCATE resets every counter
SAVEPOINT before_truncate;
TRUNCATE license;
SELECT count(*) AS counters_in_use FROM license_counter WHERE used <> 0;
SELECT * FROM pg_temp.seats_check;
ROLLBACK TO SAVEPOINT before_truncate;
-- after all of that, the counters equal the rows, and the seats the service licenses
SELECT c.subscription_id, c.used, count(l.member_id) AS rows
  FROM license_counter AS c LEFT JOIN license AS l ON l.tenant_id = c.tenant_id AND l.subscription_id = c.subscription_id
 GROUP BY c.subscription_id, c.used ORDER BY 1;
SELECT * FROM pg_temp.seats_check;

-- 55000: no license is assigned on a subscription that is not active
UPDATE subscription SET status = 'cancelled' WHERE tenant_id = 1 AND id = :enterprise;
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 13)', :enterprise));
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, %s, 13)', :enterprise));
-- releasing is still possible
SELECT license_release(:enterprise, 12) AS released_on_cancelled;
UPDATE subscription SET status = 'active' WHERE tenant_id = 1 AND id = :enterprise;

-- R7: who holds the licenses of a subscription
SELECT subscription_id, plan, member_id, external_id, role FROM license_holder ORDER BY 1, 3;

-- set_quantity: more licenses now, the rest of the period charged for the
-- licenses above those paid (6.00 x 2 more x 17/31 days, from Jan 15)
SELECT set_quantity(:business, 4, '2026-01-15 10:00') AS left_after_increase;
SELECT kind, amount, period, item, description FROM ledger WHERE subscription_id = :business ORDER BY id;
-- fewer than assigned is 23514
SELECT license_consume(:business, 13) AS two_assigned;
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 1, '2026-01-16')$$, :business));
-- fewer take effect now and refund nothing; more again up to the 4 paid is free (C2)
SELECT set_quantity(:business, 2, '2026-01-16') AS left_after_decrease;
SELECT set_quantity(:business, 4, '2026-01-17') AS left_after_reincrease;
SELECT set_quantity(:business, 5, '2026-01-20') AS left_after_fifth;
SELECT amount, item FROM ledger WHERE subscription_id = :business ORDER BY id;
SELECT quantity, paid_quantity FROM subscription WHERE id = :business;
SELECT used, capacity FROM license_counter WHERE subscription_id = :business;
-- a license add-on batch raises the capacity
INSERT INTO addon_batch (tenant_id, subscription_id, addon, quantity) VALUES (2, :zendesk, 'zd_seats5', 1);
SELECT licenses_left(:zendesk) AS zendesk_left_with_addon;
-- errors
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 0, '2026-01-16')$$, :business));          -- 22023
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 6, '2026-03-01')$$, :business));          -- 22023 outside the period
SELECT pg_temp.error_of($$SELECT set_quantity(999, 6, '2026-01-16')$$);                            -- P0002
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, NULL, '2026-01-16')$$, :business));       -- 22004
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 6, NULL)$$, :business));                  -- 22004
UPDATE subscription SET status = 'expired' WHERE tenant_id = 1 AND id = :recording;
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 6, '2026-01-16')$$, :recording));         -- 55000
UPDATE subscription SET status = 'active' WHERE tenant_id = 1 AND id = :recording;

-- permissions (Z1, R9, K8): with subscription.actor set
SELECT subscribe(2, 'zd_pro', '1 year', 2, '2026-01-01') AS annual \gset
SET LOCAL subscription.actor = '11';  -- ida, owner of account 1
SELECT set_quantity(:business, 6, '2026-01-21') AS owner_may;
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 3, '2026-01-21')$$, :zendesk));           -- another account
SET LOCAL subscription.actor = '12';  -- jon, admin with increase_licenses
SELECT set_quantity(:business, 7, '2026-01-21') AS admin_with_right_may;
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 6, '2026-01-21')$$, :business));          -- no decrease right
SELECT pg_temp.error_of($$SELECT subscribe(1, 'rb_business', '1 month', 1, '2026-01-21')$$);       -- admins do not buy (Z1)
SELECT license_consume(:recording, 12) AS admin_assigns_licenses;
SET LOCAL subscription.actor = '11';  -- the rights are checked first, then the rest
SELECT pg_temp.error_of(format($$SELECT license_consume(%s, 21)$$, :recording));                  -- P0002
SELECT pg_temp.error_of('SELECT license_consume(999, 11)');                                       -- P0002
SELECT pg_temp.error_of(format($$SELECT license_consume(%s, 21)$$, :zendesk));                    -- 42501, nothing more
SET LOCAL subscription.actor = '14';  -- lea, admin with decrease_monthly_licenses
SELECT set_quantity(:business, 6, '2026-01-21') AS monthly_decrease;
SET LOCAL subscription.actor = '13';  -- kim, plain member
SELECT pg_temp.error_of(format($$SELECT license_release(%s, 14)$$, :recording));                   -- members: nothing
SET LOCAL subscription.actor = '31';  -- max, owner of sub-account 3
SELECT pg_temp.error_of($$SELECT subscribe(3, 'rb_business', '1 month', 1, '2026-01-21')$$);       -- K8
SET LOCAL subscription.actor = '999';
SELECT pg_temp.error_of(format($$SELECT license_consume(%s, 14)$$, :recording));                   -- not a member
SET LOCAL subscription.actor = DEFAULT;
SET LOCAL subscription.actor = '22';  -- hal, member of account 2
SELECT pg_temp.error_of(format($$SELECT set_quantity(%s, 1, '2026-01-02')$$, :annual));
SET LOCAL subscription.actor = '21';  -- gus, owner of account 2
SELECT set_quantity(:annual, 1, '2026-01-02') AS owner_decreases_annual;
SET LOCAL subscription.actor = DEFAULT;

-- deleting a member releases its licenses (the foreign key cascades, the guard counts)
SELECT licenses_left(:zendesk) AS before_member_deleted;
DELETE FROM member WHERE tenant_id = 2 AND id = 204;
SELECT licenses_left(:zendesk) AS after_member_deleted,
       (SELECT count(*) FROM license WHERE subscription_id = :zendesk) AS rows;

-- what license_consume checked for its own insert is never trusted for another one
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 21)', :enterprise));
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (1, %s, 21)', :enterprise));

-- R8: history, one row per change, with the actor (per account in the
-- order written: on Citus each tenant's rows are numbered on its node)
SELECT actor, operation, account_id, subscription_id, details
  FROM history
 WHERE operation LIKE 'license%' OR (operation = 'subscription_update' AND subscription_id = :business)
 ORDER BY account_id, id;
SELECT operation, count(*) FROM history GROUP BY 1 ORDER BY 1;

-- R11 when plans change: the seats follow the subscription's plan and the
-- plan's kind and product (subscription.service_seat)
SELECT l.subscription_id, s.plan, l.member_id FROM license AS l
  JOIN subscription AS s ON s.tenant_id = l.tenant_id AND s.id = l.subscription_id WHERE s.account_id = 1 ORDER BY 1, 3;
SELECT * FROM service_seat ORDER BY 1, 2;
-- a plan that becomes a service while its members hold other services of the product: refused
SELECT pg_temp.error_of('UPDATE plan SET kind = ''service'' WHERE code = ''rb_recording''');
SELECT * FROM pg_temp.seats_check;
-- Enterprise becomes an option: its seat is freed
UPDATE plan SET kind = 'option' WHERE code = 'rb_enterprise';
SELECT * FROM pg_temp.seats_check;
-- a subscription moved to an option plan frees its seats; back to a service, takes them again
UPDATE subscription SET plan = 'rb_recording' WHERE tenant_id = 1 AND id = :business;
SELECT * FROM pg_temp.seats_check;
UPDATE subscription SET plan = 'rb_business' WHERE tenant_id = 1 AND id = :business;
SELECT * FROM pg_temp.seats_check;
-- a renamed product: the seats follow the cascade
UPDATE product SET code = 'rainbow_v2' WHERE code = 'rainbow';
SELECT DISTINCT product FROM service_seat ORDER BY 1;
SELECT * FROM pg_temp.seats_check;
-- a subscription with ledger lines is not deleted (nothing lost); releasing
-- its licenses frees its seats
SELECT pg_temp.error_of(format('DELETE FROM subscription WHERE tenant_id = 1 AND id = %s', :business));
DELETE FROM license WHERE tenant_id = 1 AND subscription_id = :business;
SELECT * FROM pg_temp.seats_check;
-- A one-row change writes its seat (R11), counter (Z4, R2) and history row
-- (R8) without a query (src/rowwrite.c), and through what an INSERT or
-- UPDATE goes through: the tables' row triggers, their constraints, their
-- current column defaults.  (Not on Citus, where rowwrite.c writes through
-- SPI, a statement like any other: there Citus cancels this section's DDL
-- on the extension's distributed tables, in the case's transaction after
-- its writes on the workers, as a distributed deadlock, docs/citus.md.)
\if :on_citus
\else
CREATE FUNCTION public.tag_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.details := NEW.details || '{"tagged": true}'; RETURN NEW; END $$;
CREATE FUNCTION public.seat_taken() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'seat of member % taken', NEW.member_id; RETURN NULL; END $$;
CREATE TRIGGER tag_history BEFORE INSERT ON history FOR EACH ROW EXECUTE FUNCTION public.tag_history();
CREATE TRIGGER seat_taken AFTER INSERT ON service_seat FOR EACH ROW EXECUTE FUNCTION public.seat_taken();
INSERT INTO account (id, tenant_id, name) VALUES (4, 4, 'Hooli');
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (41, 4, 4, 'ann'), (42, 4, 4, 'bob');
SELECT subscribe(4, 'zd_pro', '1 month', 3, '2026-01-01') AS hooli \gset
SELECT license_consume(:hooli, 41) AS ann_consumes;
ALTER TABLE history ALTER COLUMN at SET DEFAULT '2030-01-01 00:00+00';
SELECT license_release(:hooli, 41) AS ann_releases;
SELECT operation, at >= '2030-01-01' AS new_default, details FROM history
 WHERE subscription_id = :hooli AND operation LIKE 'license%' ORDER BY id;
ALTER TABLE license_counter ADD CONSTRAINT hooli_at_most_none CHECK (subscription_id <> :hooli OR used = 0);
SELECT pg_temp.error_of(format('SELECT license_consume(%s, 42)', :hooli));
SELECT pg_temp.error_of(format('INSERT INTO license (tenant_id, subscription_id, member_id) VALUES (4, %s, 42)', :hooli));
SELECT licenses_left(:hooli), (SELECT count(*) FROM service_seat WHERE subscription_id = :hooli) AS seats;

\endif

-- reseat_licenses() is internal
SELECT has_function_privilege('public', 'subscription.reseat_licenses(bigint[])', 'EXECUTE') AS public_may_reseat;

ROLLBACK;

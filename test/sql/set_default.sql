-- R10: the default subscription is chosen with set_default(): the previous
-- default is unset and this one set in one call; the exclusion constraint
-- stays the invariant; new members get a license of the new default.
\set VERBOSITY default
\i test/sql/include/setup.psql
SET search_path = subscription, public;
SET TimeZone = 'UTC';
BEGIN;
-- the actor set below (SET LOCAL) reaches the history's triggers on a
-- Citus worker too (docs/citus.md); on a single server a setting unused
SET LOCAL citus.propagate_set_commands = 'local';

INSERT INTO product (code, name) VALUES ('rainbow', 'Rainbow');
INSERT INTO plan (code, product, name, rank, kind) VALUES
    ('rb_business', 'rainbow', 'Business', 1, 'service'), ('rb_enterprise', 'rainbow', 'Enterprise', 2, 'service'),
    ('rb_recording', 'rainbow', 'Recording', 1, 'option');
INSERT INTO plan_price (plan, cycle, amount, per_license) VALUES
    ('rb_business', '1 month', 6, true), ('rb_enterprise', '1 month', 10, true), ('rb_recording', '1 month', 2, true);
INSERT INTO account (id, tenant_id, name) VALUES (1, 1, 'Initech'), (2, 2, 'Globex');
INSERT INTO member (id, tenant_id, account_id, external_id, role) VALUES
    (11, 1, 1, 'owner@initech', 'owner'), (12, 1, 1, 'admin@initech', 'admin'), (13, 1, 1, 'ida@initech', 'member'),
    (21, 2, 2, 'owner@globex', 'owner');

-- R10: the first service subscription is the default; the others are not
SELECT subscribe(1, 'rb_business', '1 month', 5, '2026-01-01') AS business,
       subscribe(1, 'rb_enterprise', '1 month', 5, '2026-01-01') AS enterprise,
       subscribe(1, 'rb_recording', '1 month', 5, '2026-01-01') AS recording \gset
SELECT plan, is_default FROM subscription WHERE account_id = 1 ORDER BY id;

-- R10: a plain UPDATE cannot set a second default: the exclusion constraint refuses it
-- (on Citus the constraint's name has its shard's suffix: left out)
SELECT regexp_replace(pg_temp.error_of(format('UPDATE subscription.subscription SET is_default = true WHERE id = %s', :enterprise)),
                      '_1\d{5}"', '"') AS plain_update;

-- R10: set_default moves the star in one call, the owner acting
SET LOCAL subscription.actor = '11';
SELECT set_default(:enterprise);
RESET subscription.actor;
SELECT plan, is_default FROM subscription WHERE account_id = 1 ORDER BY id;
-- R10: history records it, with the actor: the previous default unset, this one set
SELECT actor, operation, subscription_id, details FROM history
 WHERE operation = 'subscription_update' AND details ? 'is_default' ORDER BY id;
-- R10: a new member then gets a license of the new default
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (14, 1, 1, 'joe@initech');
SELECT plan, member_id FROM license_holder WHERE member_id = 14;

-- R10: an option may be the default too (as in Rainbow), chosen by an admin (no extra right)
SET LOCAL subscription.actor = '12';
SELECT set_default(:recording);
RESET subscription.actor;
INSERT INTO member (id, tenant_id, account_id, external_id) VALUES (15, 1, 1, 'kim@initech');
SELECT plan, member_id FROM license_holder WHERE member_id = 15;
SELECT plan, is_default FROM subscription WHERE account_id = 1 ORDER BY id;

-- R10: choosing the default again changes nothing and writes no history
SELECT count(*) AS history_before FROM history \gset
SELECT set_default(:recording);
SELECT count(*) - :history_before AS new_history_rows FROM history;

-- R10: a member, or someone of another account, may not choose it (42501)
SET LOCAL subscription.actor = '13';
SELECT pg_temp.error_of(format('SELECT subscription.set_default(%s)', :business)) AS member_refused;
SET LOCAL subscription.actor = '21';
SELECT pg_temp.error_of(format('SELECT subscription.set_default(%s)', :business)) AS other_account_refused;
RESET subscription.actor;

-- R10: NULL (22004), an unknown subscription (P0002), one not active (55000)
SELECT pg_temp.error_of('SELECT subscription.set_default(NULL)') AS null_id;
SELECT pg_temp.error_of('SELECT subscription.set_default(999)') AS unknown_id;
SELECT end_early(:business, '2026-01-10') IS NOT NULL AS ended;
SELECT pg_temp.error_of(format('SELECT subscription.set_default(%s)', :business)) AS not_active;
-- nothing moved
SELECT plan, status, is_default FROM subscription WHERE account_id = 1 ORDER BY id;

-- R10: a managed account's default is chosen like a self-service one's (not a Z2 change)
UPDATE account SET managed = true WHERE id = 1;
SET LOCAL subscription.actor = '11';
SELECT set_default(:enterprise);
RESET subscription.actor;
SELECT plan, is_default FROM subscription WHERE account_id = 1 AND is_default;

ROLLBACK;
